"""Copy plans (contract A6): what lands where for each kind of output, and the manifest written last.

The source is the output location in the batch API's reply at copy time (``reactor.source``), never the
record's; the destination must be in ``RELAY_ALLOWED_BUCKETS`` (``reactor.allowlist``); every write is
conditioned so that nothing the relay did not write is overwritten (``reactor.ownership``), and every
target is looked at before the first write, so a refusal leaves the destination untouched.

- Vertex, GCS output: every object under ``gcsOutputDirectory/`` (not sibling prefixes), relative paths
  kept, copied server-side with objects.rewrite; objects already there with the same crc32c are skipped.
  The prediction files (``predictions*.jsonl``) are read once, streamed, beside the copy, for the results.
- Gemini, responses file: streamed from the Gemini API (``batchapi.outputs``) into a resumable upload of
  ``responses.jsonl`` (memory stays flat whatever the size), each chunk read into the results as it passes;
  a download that breaks is started again (with a new count).
- Gemini, inline responses: ``responses.jsonl``, one ``{"key", "response" | "error"}`` object per line,
  streamed like a responses file: a second GET of the batch asks only for its inline responses
  (``batchapi.outputs``), each is read into the results and written as one line on its way to the bucket.
- Vertex, BigQuery output: nothing to copy (``not_applicable``); the results are the job's counts.
- A job that ended CANCELLED, EXPIRED or FAILED is copied the same way when the reply has an output location
  (its partial outputs); without one there is nothing to copy (``not_applicable``, its counts as results).
- ``failed.jsonl``: the requests to send again (``reactor.summarize``), when there are any.
- What is already at the destination is looked up by the names the copy writes (``find_objects``), never by
  listing the destination prefix (which may be a whole bucket of other objects).
- A rewrite that needs more calls than one delivery has time for stops at the deadline with its tokens kept
  on the record (``reactor.progress``); the redelivery resumes it, objects left unfinished first.
- Last, ``_manifest.json``: name, size and crc32c of every object, as GCS reports them, and the results.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from ..batchapi.client import BatchApiClient
from ..batchapi.fields import inline_path
from ..batchapi.inputs import GeminiInputs
from ..batchapi.names import JobName
from ..batchapi.outputs import Download, GeminiOutputs, SourceUnavailable
from ..batchapi.wire import inline_line
from ..errors import ForbiddenError, NotFoundError, PermanentError, TransientError
from ..record.model import CopyStatus, JobRecord, rfc3339
from ..results.lines import is_prediction_file
from ..results.summary import ResultsReader, Summary
from ..retry import RetryPolicy, retry
from ..settings import Settings, split_gcs_uri
from .allowlist import check_destination
from .ownership import Ownership
from .progress import RewriteProgress, rewrite_budget_s
from .source import OutputKind, Source, job_of, read_source
from .storage import ObjectInfo, StorageClient
from .summarize import Prices, counts_summary, new_reader, read_gemini_input, read_objects, results_map

T = TypeVar("T")
MANIFEST = "_manifest.json"
RESPONSES = "responses.jsonl"
FAILED = "failed.jsonl"
RESERVED = (MANIFEST, FAILED)  # names the relay writes at the top of a destination: not copied from a source
REWRITE_CONCURRENCY = 32
LIST_PAGE_SIZE = 1000
INLINE_PIECE = 1024 * 1024  # inline response lines are handed to the upload in pieces of about this size


@dataclasses.dataclass(frozen=True)
class CopyResult:
    status: CopyStatus  # DONE | NOT_APPLICABLE
    uri: str | None
    manifest_uri: str | None
    objects: list[ObjectInfo]
    results: dict[str, Any] | None = None  # the A10 map: the record's, the event's and the manifest's
    partial: bool = False  # the job ended otherwise than by succeeding

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)


def safe_relative(name: str) -> str:
    """Refuse object names that could escape the destination or confuse consumers."""
    if not name or name.startswith("/") or "\\" in name:
        raise PermanentError(f"unsafe object name {name[:200]!r}: absolute or empty", kind="unsafe_name")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise PermanentError(f"unsafe object name {name[:200]!r}: '.', '..' or empty segment", kind="unsafe_name")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise PermanentError(f"unsafe object name {name[:200]!r}: control characters", kind="unsafe_name")
    if name in RESERVED:
        raise PermanentError(f"source holds an object named {name}, a name the relay writes itself",
                             kind="unsafe_name")
    return name


def destination_for(record: JobRecord, settings: Settings, job: JobName | None = None) -> str:
    """The job's destination, else ``RELAY_DEFAULT_DESTINATION/{api}/{job id}``; refused outside the
    allow-list (``reactor.allowlist``). ``job``: the record's name, already checked."""
    dest = record.destination
    if not dest:
        if not settings.default_destination:
            raise PermanentError("the job has no destination and RELAY_DEFAULT_DESTINATION is not set",
                                 kind="no_destination")
        job = job or job_of(record)
        dest = f"{settings.default_destination}/{job.api}/{job.job_id}"
    check_destination(dest, settings)
    return dest


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


async def _all(*steps: Awaitable[T]) -> list[T]:
    """``asyncio.gather``, except that the first failure cancels the other steps (nothing keeps copying
    after the attempt has failed)."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Copier:
    """Runs the plan that fits the job's output as the API reports it. Clients come in; nothing is built
    here: Cloud Storage, the Gemini API's outputs and inputs, the batch API (the job's status at copy time),
    and the price table of this invocation."""

    def __init__(self, storage: StorageClient, gemini: GeminiOutputs, api: BatchApiClient, settings: Settings, *,
                 inputs: GeminiInputs | None = None, prices: Prices | None = None,
                 retry: RetryPolicy | None = None) -> None:
        self._storage = storage
        self._gemini = gemini
        self._api = api
        self._settings = settings
        self._retry = retry or RetryPolicy(max_attempts=settings.max_attempts)
        self._inputs = inputs
        self._prices = prices or Prices(settings, storage)

    @property
    def rewrite_budget_s(self) -> float:
        """How long one delivery issues rewrite calls (``reactor.progress``)."""
        return rewrite_budget_s(self._settings.copy_lease_s)

    async def copy(self, record: JobRecord, now: dt.datetime, progress: RewriteProgress | None = None) -> CopyResult:
        """``progress``: the rewrite tokens to resume from and keep, and the deadline of rewrite calls."""
        source = await read_source(self._api, record, now, self._settings)
        if source.kind is OutputKind.BIGQUERY:
            return await self._nothing_to_copy(source, record, counts_summary(source))
        if source.kind is OutputKind.NONE:
            return await self._nothing_to_copy(source, record, counts_summary(source, source.reason))
        dest = destination_for(record, self._settings, source.job)
        bucket, prefix = split_gcs_uri(dest)
        if not await self._storage.bucket_exists(bucket):
            raise PermanentError(f"destination bucket {bucket!r} does not exist", kind="missing_bucket")
        sources: list[ObjectInfo] = []
        if source.kind is OutputKind.GCS:
            sources = await self._list_source(source)
            if not sources and source.partial:  # a job stopped before its first row: nothing to copy
                ended = source.state.removeprefix("JOB_STATE_")
                why = f"the job ended {ended} with no objects under {source.location}/"
                return await self._nothing_to_copy(source, record, counts_summary(source, why))
            if not sources:
                raise PermanentError(f"no objects under {source.location}/", kind="missing_source")
        owner = Ownership(source.job.name, record.tracking_id)
        manifest_name, failed_name = _join(prefix, MANIFEST), _join(prefix, FAILED)
        reader: ResultsReader | None = None
        try:
            if source.kind is OutputKind.GCS:
                reader = new_reader(source)
                written, at = await self._copy_gcs_dir(source, sources, bucket, prefix, owner, reader, progress)
            else:
                target = _join(prefix, RESPONSES)
                found = await self._storage.find_objects(bucket, (target, failed_name, manifest_name))
                at = {name: owner.precondition(found.get(name), f"gs://{bucket}/{name}")
                      for name in (target, failed_name, manifest_name)}
                if source.kind is OutputKind.FILE:
                    one, reader = await self._copy_responses_file(source, bucket, target, at[target], owner)
                else:
                    one, reader = await self._copy_inline(source, bucket, target, at[target], owner)
                written = [one]
                await self._read_input(reader, source)
            summary = reader.finish()
            failed_uri = None
            if summary.failed_lines:
                written.append(await self._write_failed(reader, bucket, failed_name, at[failed_name], owner))
                failed_uri = f"gs://{bucket}/{failed_name}"
        finally:
            if reader is not None:
                reader.failed_lines.close()
        results = await self._results(summary, source, record, failed_uri)
        manifest = {
            "job": source.job.name, "state": source.state,
            "objects": [{"name": o.name[len(prefix) + 1:] if prefix else o.name, "size": o.size,
                         "crc32c": o.crc32c} for o in written],
            "total_bytes": sum(o.size for o in written), "copied_at": rfc3339(now), "results": results,
        }
        body = json.dumps(manifest, indent=1).encode()  # ASCII: a lone surrogate cannot fail the encode
        await self._storage.upload_bytes(bucket, manifest_name, body, content_type="application/json",
                                         if_generation_match=at[manifest_name], metadata=owner.metadata)
        return CopyResult(CopyStatus.DONE, dest, f"gs://{bucket}/{manifest_name}", written, results, source.partial)

    async def _nothing_to_copy(self, source: Source, record: JobRecord, summary: Summary) -> CopyResult:
        """BigQuery output, or a job that did not succeed and has no outputs: its counts, nothing written."""
        return CopyResult(CopyStatus.NOT_APPLICABLE, None, None, [],
                          await self._results(summary, source, record, None), source.partial)

    async def _results(self, summary: Summary, source: Source, record: JobRecord,
                       failed_uri: str | None) -> dict[str, Any]:
        model = (source.status.model if source.status is not None else None) or record.model
        cost = await self._prices.cost(summary, model, job=source.job.name, api=source.job.api.value)
        return results_map(summary, cost, failed_uri)

    async def _write_failed(self, reader: ResultsReader, bucket: str, name: str, at: int | str,
                            owner: Ownership) -> ObjectInfo:
        lines = reader.failed_lines
        written = await self._storage.upload_stream(bucket, name, lines.aiter_chunks(),
                                                    content_type="application/jsonl", if_generation_match=at,
                                                    metadata=owner.metadata)
        if written.size != lines.size:
            raise TransientError(f"failed.jsonl is {written.size} bytes, wrote {lines.size}")
        return written

    # -- Vertex: server-side copy of a directory ------------------------------------------------------
    async def _list_source(self, source: Source) -> list[ObjectInfo]:
        src_bucket, src_prefix = split_gcs_uri(source.location)
        start = f"{src_prefix}/" if src_prefix else ""
        return [o async for o in self._storage.list_objects(src_bucket, start, page_size=LIST_PAGE_SIZE)]

    async def _copy_gcs_dir(self, source: Source, sources: list[ObjectInfo], bucket: str, prefix: str,
                            owner: Ownership, reader: ResultsReader,
                            progress: RewriteProgress | None) -> tuple[list[ObjectInfo], dict[str, int | str]]:
        """The objects written (or found already there), and the preconditions of failed.jsonl and the
        manifest. The prediction files are read into ``reader`` while the copies run."""
        src_bucket, src_prefix = split_gcs_uri(source.location)
        start = f"{src_prefix}/" if src_prefix else ""
        relatives = [safe_relative(o.name[len(start):]) for o in sources]
        # What is there already (an interrupted attempt's copies, or someone else's objects), looked up by the
        # names this copy writes (never the whole destination), and every target decided before the first write.
        targets = [_join(prefix, rel) for rel in relatives]
        own = (_join(prefix, FAILED), _join(prefix, MANIFEST))
        found, found_own = await _all(self._storage.find_objects(bucket, targets, page_size=LIST_PAGE_SIZE),
                                      self._storage.find_objects(bucket, own))
        present = {**found, **found_own}
        plan: list[tuple[ObjectInfo, str, ObjectInfo | int | str]] = []
        for src, rel in zip(sources, relatives, strict=True):
            target = _join(prefix, rel)
            existing = present.get(target)
            if existing and existing.crc32c and existing.crc32c == src.crc32c and existing.size == src.size:
                plan.append((src, target, existing))  # already there, the same bytes: kept
            else:
                plan.append((src, target, owner.precondition(existing, f"gs://{bucket}/{target}")))
        at = {name: owner.precondition(present.get(name), f"gs://{bucket}/{name}") for name in own}
        limit = asyncio.Semaphore(REWRITE_CONCURRENCY)

        async def one(src: ObjectInfo, target: str, step: ObjectInfo | int | str) -> ObjectInfo:
            if isinstance(step, ObjectInfo):
                if progress:  # a token left by a delivery that ended before it could drop it
                    progress.done(target)
                return step
            async with limit:
                written = await self._storage.rewrite(
                    src_bucket, src.name, bucket, target, if_generation_match=step, metadata=owner.metadata,
                    content_type=src.content_type, token=progress.resume(target) if progress else None,
                    stop=progress.stopped if progress else None,
                    on_token=functools.partial(progress.note, target) if progress else None)
                if progress:
                    progress.done(target)
                if written.size != src.size or (src.crc32c and written.crc32c != src.crc32c):
                    raise TransientError(f"copy of {src.name!r} does not match its source (size/crc32c)")
                return written

        # Rewrites a delivery left unfinished go first (they hold the kept tokens); results keep the plan's order.
        order = sorted(range(len(plan)), key=lambda i: progress is None or progress.resume(plan[i][1]) is None)

        async def copies() -> list[ObjectInfo]:
            done = await _all(*(one(*plan[i]) for i in order))
            by_index = dict(zip(order, done, strict=True))
            return [by_index[i] for i in range(len(plan))]

        async def reading() -> list[ObjectInfo]:
            await read_objects(self._storage, [o for o, rel in zip(sources, relatives, strict=True)
                                               if is_prediction_file(rel)], reader)
            return []

        written, _ = await _all(copies(), reading())
        return written, at

    # -- Gemini: the responses file, streamed -----------------------------------------------------------
    async def _copy_responses_file(self, source: Source, bucket: str, target: str, at: int | str,
                                   owner: Ownership) -> tuple[ObjectInfo, ResultsReader]:
        """The object written and the reader that read it (a new one for each download)."""
        file_name = source.location

        async def attempt() -> tuple[ObjectInfo, ResultsReader]:
            counted = 0
            reader = new_reader(source)

            async def body(download: Download) -> AsyncIterator[bytes]:
                nonlocal counted
                async for chunk in download.chunks():
                    counted += len(chunk)
                    reader.feed_chunk(chunk)  # the results, from the bytes on their way to the bucket
                    yield chunk

            try:
                async with self._gemini.download(file_name) as download:
                    written = await self._storage.upload_stream(
                        bucket, target, body(download), content_type="application/jsonl", if_generation_match=at,
                        metadata=owner.metadata)
                    expected = download.announced_size
                if written.size != counted or (expected is not None and expected != counted):
                    raise TransientError(f"responses.jsonl is {written.size} bytes, read {counted}")
                reader.end_file()
            except BaseException as exc:
                if (failed := _attempt_failed(reader, f"responses file {file_name}", exc, forbidden=True)) is exc:
                    raise
                raise failed from None
            return written, reader

        return await retry(attempt, self._retry, retry_if=_read_again)

    async def _read_input(self, reader: ResultsReader, source: Source) -> None:
        if self._inputs is None:
            if reader.needs_input:
                reader.input_unavailable("the batch's input was not read (no Gemini API client for it)")
            return
        await read_gemini_input(reader, source, self._inputs, self._retry)

    # -- Gemini: inline responses, streamed ----------------------------------------------------------
    async def _copy_inline(self, source: Source, bucket: str, target: str, at: int | str,
                           owner: Ownership) -> tuple[ObjectInfo, ResultsReader]:
        """The object written and the reader that read it (a new one for each attempt)."""
        name, path = source.job.name, inline_path(source.reply)

        async def attempt() -> tuple[ObjectInfo, ResultsReader]:
            counted = 0
            reader = new_reader(source)

            async def body(items: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
                nonlocal counted
                index, piece = 0, bytearray()
                async for item in items:
                    piece += json.dumps(inline_line(index, item), ensure_ascii=False, separators=(",", ":")).encode()
                    piece += b"\n"
                    reader.feed_inline(item)  # the results, from the responses on their way to the bucket
                    index += 1
                    if len(piece) >= INLINE_PIECE:
                        counted += len(piece)
                        yield bytes(piece)
                        piece.clear()
                if piece:
                    counted += len(piece)
                    yield bytes(piece)

            try:
                async with self._gemini.inline_items(name, path) as items:
                    written = await self._storage.upload_stream(
                        bucket, target, body(items), content_type="application/jsonl", if_generation_match=at,
                        metadata=owner.metadata)
                if written.size != counted:
                    raise TransientError(f"responses.jsonl is {written.size} bytes, wrote {counted}")
            except BaseException as exc:
                if (failed := _attempt_failed(reader, f"inline responses of {name}", exc)) is exc:
                    raise
                raise failed from None
            return written, reader

        return await retry(attempt, self._retry, retry_if=_read_again)


def _read_again(exc: BaseException) -> bool:
    """A streamed read of the outputs that broke off is started again, with a new reader."""
    return isinstance(exc, SourceUnavailable)


def _attempt_failed(reader: ResultsReader, what: str, exc: BaseException, *, forbidden: bool = False) -> BaseException:
    """What a failed attempt of a streamed copy raises, once its reader's ``failed.jsonl`` lines are let go: a
    source that is gone is ``missing_source`` (and, where ``forbidden``, one refused is ``forbidden``), for
    good; anything else as it came."""
    reader.failed_lines.close()
    if isinstance(exc, NotFoundError):
        return PermanentError(f"{what}: {exc}", kind="missing_source")
    if forbidden and isinstance(exc, ForbiddenError):
        return PermanentError(f"{what}: {exc}", kind="forbidden")
    return exc
