"""Copy plans (contract A6): what lands where for each kind of output, and the manifest written last.

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

from ..batchapi.outputs import Download, GeminiOutputs, SourceUnavailable
from ..errors import ForbiddenError, NotFoundError, PermanentError, TransientError
from ..record.model import CopyStatus, JobRecord, rfc3339
from ..retry import RetryPolicy, retry
from ..settings import Settings, split_gcs_uri
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


def destination_for(record: JobRecord, settings: Settings) -> str:
    """The job's destination, else ``RELAY_DEFAULT_DESTINATION/{api}/{job id}``; refused outside the
    allow-list."""
    dest = record.destination
    if not dest:
        if not settings.default_destination:
            raise PermanentError("the job has no destination and RELAY_DEFAULT_DESTINATION is not set",
                                 kind="no_destination")
        dest = f"{settings.default_destination}/{record.api}/{record.name.rsplit('/', 1)[-1]}"
    try:
        bucket, _prefix = split_gcs_uri(dest)
    except ValueError as exc:
        raise PermanentError(f"bad destination: {exc}", kind="bad_destination") from None
    if settings.allowed_buckets is not None and bucket not in settings.allowed_buckets:
        raise PermanentError(f"destination bucket {bucket!r} is not in RELAY_ALLOWED_BUCKETS",
                             kind="not_allowed")
    return dest


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


class Copier:
    """Runs the plan that fits a record's output. Clients come in; nothing is built here."""

    def __init__(self, storage: StorageClient, gemini: GeminiOutputs, settings: Settings, *,
                 retry: RetryPolicy | None = None) -> None:
        self._storage = storage
        self._gemini = gemini
        self._settings = settings
        self._retry = retry or RetryPolicy(max_attempts=settings.max_attempts)

    async def copy(self, record: JobRecord, now: dt.datetime) -> CopyResult:
        output = record.output
        if output.get("bigquery_uri") and not output.get("gcs_uri"):
            return CopyResult(CopyStatus.NOT_APPLICABLE, None, None, [])
        dest = destination_for(record, self._settings)
        bucket, prefix = split_gcs_uri(dest)
        if not await self._storage.bucket_exists(bucket):
            raise PermanentError(f"destination bucket {bucket!r} does not exist", kind="missing_bucket")
        if output.get("gcs_uri"):
            written = await self._copy_gcs_dir(output["gcs_uri"], bucket, prefix)
        elif output.get("file_name"):
            written = [await self._copy_responses_file(output["file_name"], bucket, prefix)]
        elif "inlined_count" in output:
            written = [await self._copy_inline(record.name, bucket, prefix)]
        else:
            raise PermanentError("the API reported no output location for this job", kind="no_output")
        manifest = {
            "job": record.name, "state": record.state,
            "objects": [{"name": o.name[len(prefix) + 1:] if prefix else o.name, "size": o.size,
                         "crc32c": o.crc32c} for o in written],
            "total_bytes": sum(o.size for o in written), "copied_at": rfc3339(now),
        }
        body = json.dumps(manifest, indent=1).encode()
        await self._storage.upload_bytes(bucket, _join(prefix, MANIFEST), body, content_type="application/json")
        return CopyResult(CopyStatus.DONE, dest, f"gs://{bucket}/{_join(prefix, MANIFEST)}", written)

    # -- Vertex: server-side copy of a directory ------------------------------------------------------
    async def _copy_gcs_dir(self, source_uri: str, bucket: str, prefix: str) -> list[ObjectInfo]:
        try:
            src_bucket, src_prefix = split_gcs_uri(source_uri)
        except ValueError as exc:
            raise PermanentError(f"bad gcsOutputDirectory: {exc}", kind="bad_source") from None
        start = f"{src_prefix}/" if src_prefix else ""
        sources = [o async for o in self._storage.list_objects(src_bucket, start, page_size=LIST_PAGE_SIZE)]
        if not sources:
            raise PermanentError(f"no objects under {source_uri}/", kind="missing_source")
        relatives = [safe_relative(o.name[len(start):]) for o in sources]
        # What an earlier, interrupted attempt already copied: one listing instead of a stat per object.
        present = {o.name: o async for o in self._storage.list_objects(
            bucket, f"{prefix}/" if prefix else "", page_size=LIST_PAGE_SIZE)}
        limit = asyncio.Semaphore(REWRITE_CONCURRENCY)

        async def one(src: ObjectInfo, rel: str) -> ObjectInfo:
            async with limit:
                target = _join(prefix, rel)
                existing = present.get(target)
                if existing and existing.crc32c and existing.crc32c == src.crc32c and existing.size == src.size:
                    return existing
                written = await self._storage.rewrite(src_bucket, src.name, bucket, target)
                if written.size != src.size or (src.crc32c and written.crc32c != src.crc32c):
                    raise TransientError(f"copy of {src.name!r} does not match its source (size/crc32c)")
                return written

        return list(await asyncio.gather(*(one(s, r) for s, r in zip(sources, relatives, strict=True))))

    # -- Gemini: the responses file, streamed -----------------------------------------------------------
    async def _copy_responses_file(self, file_name: str, bucket: str, prefix: str) -> ObjectInfo:
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
                        bucket, _join(prefix, RESPONSES), body(download), content_type="application/jsonl")
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
    async def _copy_inline(self, name: str, bucket: str, prefix: str) -> ObjectInfo:
        lines = [json.dumps(line, ensure_ascii=False, separators=(",", ":"))
                 for line in await self._gemini.inline_responses(name)]
        data = ("\n".join(lines) + "\n").encode() if lines else b""
        written = await self._storage.upload_bytes(bucket, _join(prefix, RESPONSES), data,
                                                   content_type="application/jsonl")
        if written.size != len(data):
            raise TransientError(f"responses.jsonl is {written.size} bytes, wrote {len(data)}")
        return written
