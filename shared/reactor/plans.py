"""Copy plans (contract A6): what lands where for each kind of output, and the manifest written last.

- Vertex, GCS output: every object under ``gcsOutputDirectory/`` (not sibling prefixes), relative paths
  kept, copied server-side with objects.rewrite; objects already there with the same crc32c are skipped.
- Gemini, responses file: streamed from the Files API download endpoint into a resumable upload of
  ``responses.jsonl`` (memory stays flat whatever the size).
- Gemini, inline responses: ``responses.jsonl``, one ``{"key", "response" | "error"}`` object per line.
- Vertex, BigQuery output: nothing to copy (``not_applicable``).
- Last, ``_manifest.json``: name, size and crc32c of every object, as GCS reports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..errors import BadResponseError, ForbiddenError, NotFoundError, PermanentError, TransientError
from ..record.model import CopyStatus, JobRecord, rfc3339
from ..retry import RetryPolicy, retry, send
from ..settings import Settings, split_gcs_uri
from .storage import ObjectInfo, StorageClient

MANIFEST = "_manifest.json"
_REDIRECTS = (301, 302, 303, 307, 308)
RESPONSES = "responses.jsonl"
REWRITE_CONCURRENCY = 32
LIST_PAGE_SIZE = 1000


class SourceUnavailable(TransientError):
    """A download from the Gemini API failed transiently: the copier retries the whole download (the
    upload into Cloud Storage is retried by the storage client itself, never again here)."""


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

    def __init__(self, storage: StorageClient, gemini: httpx.AsyncClient, settings: Settings, *,
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
        if not file_name.startswith("files/") or "/" in file_name[6:] or ".." in file_name:
            raise PermanentError(f"unexpected responses file name {file_name[:100]!r}", kind="bad_source")
        url = f"{self._settings.gemini_base_url}/download/v1beta/{file_name}:download?alt=media"

        async def attempt() -> ObjectInfo:
            counted = 0

            async def body(response: httpx.Response) -> AsyncIterator[bytes]:
                nonlocal counted
                try:
                    async for chunk in response.aiter_bytes():
                        counted += len(chunk)
                        yield chunk
                except httpx.HTTPError as exc:
                    raise SourceUnavailable(f"responses file download broke: {type(exc).__name__}") from None

            try:
                async with self._download(url) as response:
                    expected = response.headers.get("content-length")
                    written = await self._storage.upload_stream(
                        bucket, _join(prefix, RESPONSES), body(response), content_type="application/jsonl")
            except NotFoundError as exc:
                raise PermanentError(f"responses file {file_name}: {exc}", kind="missing_source") from None
            except ForbiddenError as exc:
                raise PermanentError(f"responses file {file_name}: {exc}", kind="forbidden") from None
            if written.size != counted or (expected is not None and int(expected) != counted):
                raise TransientError(f"responses.jsonl is {written.size} bytes, read {counted}")
            return written

        return await retry(attempt, self._retry, retry_if=lambda exc: isinstance(exc, SourceUnavailable))

    @contextlib.asynccontextmanager
    async def _download(self, url: str) -> AsyncIterator[httpx.Response]:
        """GET ``url`` streamed, following up to 5 redirects by hand: the API key goes only to the
        configured Gemini origin, and a redirect may not downgrade https to http. A failure to reach the
        file is ``SourceUnavailable`` (transient) or the permanent error of its status."""
        base = httpx.URL(self._settings.gemini_base_url)
        for _ in range(6):
            target = httpx.URL(url)
            same_origin = (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)
            try:
                response = await send(self._gemini, "GET", target, stream=True, ok=_REDIRECTS,
                                      headers=self._key() if same_origin else None)
            except SourceUnavailable:
                raise
            except TransientError as exc:
                raise SourceUnavailable(str(exc), retry_after=exc.retry_after) from None
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or not location:
                try:
                    yield response
                finally:
                    await response.aclose()
                return
            await response.aclose()
            next_url = target.join(location)
            if target.scheme == "https" and next_url.scheme != "https":
                raise PermanentError("responses file download redirected from https to http", kind="bad_source")
            url = str(next_url)
        raise PermanentError("responses file download redirected too many times", kind="bad_source")

    # -- Gemini: inline responses --------------------------------------------------------------------
    async def _copy_inline(self, name: str, bucket: str, prefix: str) -> ObjectInfo:
        url = f"{self._settings.gemini_base_url}/v1beta/{name}"
        response = await retry(lambda: send(self._gemini, "GET", url, headers=self._key()), self._retry)
        try:
            body = response.json()
            meta = body.get("metadata") or {}
            holder = (meta.get("output") or {}).get("inlinedResponses") or (
                (body.get("response") or {}).get("inlinedResponses") or {})
            items = holder.get("inlinedResponses") or []
            if not isinstance(items, list):
                raise TypeError("inlinedResponses is not a list")
            lines = []
            for index, item in enumerate(items):
                key = ((item.get("metadata") or {}).get("key")) or str(index)
                entry: dict[str, Any] = {"key": key}
                if "error" in item:
                    entry["error"] = item["error"]
                else:
                    entry["response"] = item.get("response")
                lines.append(json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
        except (ValueError, TypeError, AttributeError) as exc:
            raise BadResponseError(f"inline responses of {name} are unreadable: {exc}") from None
        data = ("\n".join(lines) + "\n").encode() if lines else b""
        written = await self._storage.upload_bytes(bucket, _join(prefix, RESPONSES), data,
                                                   content_type="application/jsonl")
        if written.size != len(data):
            raise TransientError(f"responses.jsonl is {written.size} bytes, wrote {len(data)}")
        return written

    def _key(self) -> dict[str, str]:
        key = self._settings.gemini_api_key
        if not key:
            raise PermanentError("RELAY_GEMINI_API_KEY is not set; cannot read Gemini outputs", kind="forbidden")
        return {"x-goog-api-key": key}
