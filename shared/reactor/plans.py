"""Copy plans (contract A6): what lands where for each kind of output, and the manifest written last.

The source is the output location in the batch API's reply at copy time (``reactor.source``), never the
record's; the destination must be in ``RELAY_ALLOWED_BUCKETS`` (``reactor.allowlist``); every write is
conditioned so that nothing the relay did not write is overwritten (``reactor.ownership``), and every
target is looked at before the first write, so a refusal leaves the destination untouched.

- Vertex, GCS output: every object under ``gcsOutputDirectory/`` (not sibling prefixes), relative paths
  kept, copied server-side with objects.rewrite; objects already there with the same crc32c are skipped.
- Gemini, responses file: streamed from the Gemini API (``batchapi.outputs``) into a resumable upload of
  ``responses.jsonl`` (memory stays flat whatever the size); a download that breaks is started again.
- Gemini, inline responses: ``responses.jsonl``, one ``{"key", "response" | "error"}`` object per line.
- Vertex, BigQuery output: nothing to copy (``not_applicable``).
- Last, ``_manifest.json``: name, size and crc32c of every object, as GCS reports them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator

from ..batchapi.client import BatchApiClient
from ..batchapi.names import JobName
from ..batchapi.outputs import Download, GeminiOutputs, SourceUnavailable
from ..errors import ForbiddenError, NotFoundError, PermanentError, TransientError
from ..record.model import CopyStatus, JobRecord, rfc3339
from ..retry import RetryPolicy, retry
from ..settings import Settings, split_gcs_uri
from .allowlist import check_destination
from .ownership import Ownership
from .source import OutputKind, job_of, read_source
from .storage import ObjectInfo, StorageClient

MANIFEST = "_manifest.json"
RESPONSES = "responses.jsonl"
REWRITE_CONCURRENCY = 32
LIST_PAGE_SIZE = 1000


@dataclasses.dataclass(frozen=True)
class CopyResult:
    status: CopyStatus  # DONE | NOT_APPLICABLE
    uri: str | None
    manifest_uri: str | None
    objects: list[ObjectInfo]

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
    if name == MANIFEST:
        raise PermanentError(f"source holds an object named {MANIFEST}", kind="unsafe_name")
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


class Copier:
    """Runs the plan that fits the job's output as the API reports it. Clients come in; nothing is built
    here: Cloud Storage, the Gemini API's outputs and the batch API (the job's status at copy time)."""

    def __init__(self, storage: StorageClient, gemini: GeminiOutputs, api: BatchApiClient, settings: Settings, *,
                 retry: RetryPolicy | None = None) -> None:
        self._storage = storage
        self._gemini = gemini
        self._api = api
        self._settings = settings
        self._retry = retry or RetryPolicy(max_attempts=settings.max_attempts)

    async def copy(self, record: JobRecord, now: dt.datetime) -> CopyResult:
        source = await read_source(self._api, record, now, self._settings)
        if source.kind is OutputKind.BIGQUERY:
            return CopyResult(CopyStatus.NOT_APPLICABLE, None, None, [])
        dest = destination_for(record, self._settings, source.job)
        bucket, prefix = split_gcs_uri(dest)
        if not await self._storage.bucket_exists(bucket):
            raise PermanentError(f"destination bucket {bucket!r} does not exist", kind="missing_bucket")
        owner = Ownership(source.job.name, record.tracking_id)
        manifest_name = _join(prefix, MANIFEST)
        if source.kind is OutputKind.GCS:
            written, manifest_at = await self._copy_gcs_dir(source.location, bucket, prefix, owner)
        else:
            target = _join(prefix, RESPONSES)
            at, manifest_at = [owner.precondition(await self._storage.get_object(bucket, name), f"gs://{bucket}/{name}")
                               for name in (target, manifest_name)]
            if source.kind is OutputKind.FILE:
                written = [await self._copy_responses_file(source.location, bucket, target, at, owner)]
            else:
                written = [await self._copy_inline(source.job.name, bucket, target, at, owner)]
        manifest = {
            "job": source.job.name, "state": source.state,
            "objects": [{"name": o.name[len(prefix) + 1:] if prefix else o.name, "size": o.size,
                         "crc32c": o.crc32c} for o in written],
            "total_bytes": sum(o.size for o in written), "copied_at": rfc3339(now),
        }
        body = json.dumps(manifest, indent=1).encode()
        await self._storage.upload_bytes(bucket, manifest_name, body, content_type="application/json",
                                         if_generation_match=manifest_at, metadata=owner.metadata)
        return CopyResult(CopyStatus.DONE, dest, f"gs://{bucket}/{manifest_name}", written)

    # -- Vertex: server-side copy of a directory ------------------------------------------------------
    async def _copy_gcs_dir(self, source_uri: str, bucket: str, prefix: str,
                            owner: Ownership) -> tuple[list[ObjectInfo], int | str]:
        """The objects written (or found already there), and the manifest's precondition."""
        src_bucket, src_prefix = split_gcs_uri(source_uri)
        start = f"{src_prefix}/" if src_prefix else ""
        sources = [o async for o in self._storage.list_objects(src_bucket, start, page_size=LIST_PAGE_SIZE)]
        if not sources:
            raise PermanentError(f"no objects under {source_uri}/", kind="missing_source")
        relatives = [safe_relative(o.name[len(start):]) for o in sources]
        # What is there already (an interrupted attempt's copies, or someone else's objects): one listing
        # instead of a stat per object, and every target decided before the first write.
        present = {o.name: o async for o in self._storage.list_objects(
            bucket, f"{prefix}/" if prefix else "", page_size=LIST_PAGE_SIZE)}
        plan: list[tuple[ObjectInfo, str, ObjectInfo | int | str]] = []
        for src, rel in zip(sources, relatives, strict=True):
            target = _join(prefix, rel)
            existing = present.get(target)
            if existing and existing.crc32c and existing.crc32c == src.crc32c and existing.size == src.size:
                plan.append((src, target, existing))  # already there, the same bytes: kept
            else:
                plan.append((src, target, owner.precondition(existing, f"gs://{bucket}/{target}")))
        manifest_name = _join(prefix, MANIFEST)
        manifest_at = owner.precondition(present.get(manifest_name), f"gs://{bucket}/{manifest_name}")
        limit = asyncio.Semaphore(REWRITE_CONCURRENCY)

        async def one(src: ObjectInfo, target: str, step: ObjectInfo | int | str) -> ObjectInfo:
            if isinstance(step, ObjectInfo):
                return step
            async with limit:
                written = await self._storage.rewrite(src_bucket, src.name, bucket, target, if_generation_match=step,
                                                      metadata=owner.metadata, content_type=src.content_type)
                if written.size != src.size or (src.crc32c and written.crc32c != src.crc32c):
                    raise TransientError(f"copy of {src.name!r} does not match its source (size/crc32c)")
                return written

        return list(await asyncio.gather(*(one(*step) for step in plan))), manifest_at

    # -- Gemini: the responses file, streamed -----------------------------------------------------------
    async def _copy_responses_file(self, file_name: str, bucket: str, target: str, at: int | str,
                                   owner: Ownership) -> ObjectInfo:
        async def attempt() -> ObjectInfo:
            counted = 0

            async def body(download: Download) -> AsyncIterator[bytes]:
                nonlocal counted
                async for chunk in download.chunks():
                    counted += len(chunk)
                    yield chunk

            try:
                async with self._gemini.download(file_name) as download:
                    written = await self._storage.upload_stream(
                        bucket, target, body(download), content_type="application/jsonl", if_generation_match=at,
                        metadata=owner.metadata)
                    expected = download.announced_size
            except NotFoundError as exc:
                raise PermanentError(f"responses file {file_name}: {exc}", kind="missing_source") from None
            except ForbiddenError as exc:
                raise PermanentError(f"responses file {file_name}: {exc}", kind="forbidden") from None
            if written.size != counted or (expected is not None and expected != counted):
                raise TransientError(f"responses.jsonl is {written.size} bytes, read {counted}")
            return written

        return await retry(attempt, self._retry, retry_if=lambda exc: isinstance(exc, SourceUnavailable))

    # -- Gemini: inline responses --------------------------------------------------------------------
    async def _copy_inline(self, name: str, bucket: str, target: str, at: int | str, owner: Ownership) -> ObjectInfo:
        lines = [json.dumps(line, ensure_ascii=False, separators=(",", ":"))
                 for line in await self._gemini.inline_responses(name)]
        data = ("\n".join(lines) + "\n").encode() if lines else b""
        written = await self._storage.upload_bytes(bucket, target, data, content_type="application/jsonl",
                                                   if_generation_match=at, metadata=owner.metadata)
        if written.size != len(data):
            raise TransientError(f"responses.jsonl is {written.size} bytes, wrote {len(data)}")
        return written
