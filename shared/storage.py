"""A small async Cloud Storage JSON API client on httpx: list, stat, rewrite, streamed download and
resumable upload, with the retry contract of ``shared.errors``.

The ``httpx.AsyncClient`` is passed in: the caller owns its auth (``GoogleAuth`` for real GCS, none for
fake-gcs-server) and its lifecycle. Transient failures (408/429/5xx, timeouts, connection errors) are
retried here with ``RetryPolicy`` backoff, then raised as ``TransientError``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Collection
from typing import Any
from urllib.parse import quote

import httpx

from .errors import BadResponseError, NotFoundError, TransientError
from .retry import RetryPolicy, classify

DEFAULT_BASE_URL = "https://storage.googleapis.com"
UPLOAD_QUANTUM = 256 * 1024  # resumable chunks (all but the last) are multiples of this
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
_OBJECT_FIELDS = "bucket,name,size,crc32c,md5Hash,generation,contentType"
_DEFAULT_RETRY = RetryPolicy()


def storage_base_url(storage_emulator_host: str | None) -> str:
    """``STORAGE_EMULATOR_HOST`` (with its scheme) when set, else the public endpoint."""
    if not storage_emulator_host:
        return DEFAULT_BASE_URL
    host = storage_emulator_host.rstrip("/")
    return host if "://" in host else f"http://{host}"


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c_of(data: bytes) -> str:
    """CRC32C (Castagnoli) as GCS reports it: base64 of the big-endian 4 bytes. Pure Python: slow, so
    for tests and small manifests only."""
    crc, table = 0xFFFFFFFF, _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return base64.b64encode((crc ^ 0xFFFFFFFF).to_bytes(4, "big")).decode()


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    name: str
    size: int
    crc32c: str | None = None
    md5_hash: str | None = None
    generation: str | None = None
    content_type: str | None = None

    @classmethod
    def from_api(cls, data: Any) -> ObjectInfo:
        """From an object resource (int64 values arrive as strings)."""
        try:
            return cls(
                bucket=data["bucket"],
                name=data["name"],
                size=int(data.get("size") or 0),
                crc32c=data.get("crc32c"),
                md5_hash=data.get("md5Hash"),
                generation=str(data["generation"]) if data.get("generation") is not None else None,
                content_type=data.get("contentType"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadResponseError(f"not an object resource: {type(exc).__name__}: {exc}") from exc


def _path(name: str) -> str:
    return quote(name, safe="")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise BadResponseError(f"HTTP {response.status_code}: body is not JSON") from exc
    if not isinstance(body, dict):
        raise BadResponseError(f"HTTP {response.status_code}: body is not a JSON object")
    return body


_EMPTY = memoryview(b"")


def _view(piece: bytes) -> memoryview:
    return memoryview(piece if isinstance(piece, bytes) else bytes(piece))


def _persisted(response: httpx.Response) -> int:
    """Bytes the upload session holds, from a 308's ``Range: bytes=0-N`` (absent: none)."""
    value = response.headers.get("range")
    if not value:
        return 0
    try:
        return int(value.strip().rpartition("-")[2]) + 1
    except ValueError as exc:
        raise BadResponseError(f"unreadable Range header in 308: {value[:50]!r}") from exc


class _Window:
    """``buf[:size]`` as a re-sendable request body, copied out in small pieces: no second chunk-sized
    copy. The caller must not change ``buf`` while a request is reading it."""

    piece = 64 * 1024

    def __init__(self, buf: memoryview, size: int) -> None:
        self.buf = buf
        self.size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, self.size, self.piece):
            yield bytes(self.buf[start:min(start + self.piece, self.size)])


class StorageClient:
    """Cloud Storage JSON API over a caller-owned ``httpx.AsyncClient``. ``requests`` counts HTTP
    requests sent, retries included."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str = DEFAULT_BASE_URL,
                 retry: RetryPolicy = _DEFAULT_RETRY, timeout: float = 60.0) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.timeout = timeout
        self.requests = 0

    # -- transport -------------------------------------------------------------------------------------

    def _url(self, path: str, *, upload: bool = False) -> str:
        return f"{self.base_url}/{'upload/' if upload else ''}storage/v1/{path}"

    async def _send(self, method: str, url: str, *, ok: Collection[int] = (), stream: bool = False,
                    **kw: Any) -> httpx.Response:
        """One HTTP request; a non-2xx status not in ``ok`` raises its ``classify`` error. Messages carry
        the method and path only (no headers, no query: a session URI is a credential)."""
        request = self.http.build_request(method, url, timeout=self.timeout, **kw)
        where = f"{method} {request.url.path}"
        self.requests += 1
        try:
            response = await self.http.send(request, stream=stream, follow_redirects=False)
        except httpx.TransportError as exc:
            raise TransientError(f"{where}: {type(exc).__name__}: {exc}") from exc
        if response.status_code < 300 or response.status_code in ok:
            return response
        try:
            await response.aread()
        except httpx.TransportError as exc:
            raise TransientError(f"{where}: HTTP {response.status_code}, body lost: {exc}") from exc
        finally:
            await response.aclose()
        error = classify(response) or BadResponseError(f"HTTP {response.status_code}")
        error.args = (f"{where}: {error}",)
        raise error

    async def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """``_send`` with transient errors retried up to ``retry.max_attempts``."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._send(method, url, **kw)
            except TransientError as exc:
                if attempt >= self.retry.max_attempts:
                    raise
                await asyncio.sleep(self.retry.backoff(attempt, exc.retry_after))

    # -- metadata --------------------------------------------------------------------------------------

    async def bucket_exists(self, bucket: str) -> bool:
        """Whether the bucket exists, asked with objects.list (one result at most), so object-level roles
        such as ``roles/storage.objectUser`` suffice: buckets.get would need ``storage.buckets.get``."""
        try:
            await self._request("GET", self._url(f"b/{_path(bucket)}/o"),
                                params={"maxResults": 1, "fields": "nextPageToken"})
        except NotFoundError:
            return False
        return True

    async def get_object(self, bucket: str, name: str) -> ObjectInfo | None:
        """The object's metadata, or None when it (or its bucket) does not exist."""
        try:
            response = await self._request("GET", self._url(f"b/{_path(bucket)}/o/{_path(name)}"),
                                           params={"fields": _OBJECT_FIELDS})
        except NotFoundError:
            return None
        return ObjectInfo.from_api(_json(response))

    async def list_objects(self, bucket: str, prefix: str = "", *,
                           page_size: int = 1000) -> AsyncIterator[ObjectInfo]:
        """Every object whose name starts with ``prefix`` (pass ``dir + "/"`` to exclude siblings)."""
        params: dict[str, str | int] = {"maxResults": page_size,
                                        "fields": f"items({_OBJECT_FIELDS}),nextPageToken"}
        if prefix:
            params["prefix"] = prefix
        url = self._url(f"b/{_path(bucket)}/o")
        while True:
            body = _json(await self._request("GET", url, params=params))
            for item in body.get("items") or ():
                yield ObjectInfo.from_api(item)
            token = body.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    async def rewrite(self, src_bucket: str, src_name: str, dst_bucket: str, dst_name: str) -> ObjectInfo:
        """Server-side copy, looping on ``rewriteToken`` until done."""
        url = self._url(f"b/{_path(src_bucket)}/o/{_path(src_name)}/rewriteTo/b/{_path(dst_bucket)}"
                        f"/o/{_path(dst_name)}")
        params: dict[str, str] = {}
        while True:
            body = _json(await self._request("POST", url, params=params))
            if body.get("done"):
                return ObjectInfo.from_api(body.get("resource"))
            token = body.get("rewriteToken")
            if not token:
                raise BadResponseError("rewrite reply is neither done nor carries a rewriteToken")
            params["rewriteToken"] = token

    # -- data ------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def download(self, bucket: str, name: str, *,
                       chunk_size: int | None = None) -> AsyncIterator[AsyncIterator[bytes]]:
        """``async with client.download(b, n) as chunks: async for chunk in chunks: ...`` (streamed)."""
        url = self._url(f"b/{_path(bucket)}/o/{_path(name)}")
        response = await self._request("GET", url, params={"alt": "media"}, stream=True)
        chunks = self._body(response, chunk_size)
        try:
            yield chunks
        finally:
            await chunks.aclose()
            await response.aclose()

    @staticmethod
    async def _body(response: httpx.Response, chunk_size: int | None) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_bytes(chunk_size):
                yield chunk
        except httpx.TransportError as exc:
            raise TransientError(f"GET {response.request.url.path}: {type(exc).__name__}: {exc}") from exc

    async def upload_bytes(self, bucket: str, name: str, data: bytes, *,
                           content_type: str = "application/octet-stream") -> ObjectInfo:
        """Simple (single request) media upload, for small objects."""
        response = await self._request(
            "POST", self._url(f"b/{_path(bucket)}/o", upload=True),
            params={"uploadType": "media", "name": name}, content=data,
            headers={"Content-Type": content_type},
        )
        return ObjectInfo.from_api(_json(response))

    async def upload_stream(self, bucket: str, name: str, chunks: AsyncIterable[bytes], *,
                            content_type: str = "application/octet-stream",
                            chunk_size: int = DEFAULT_CHUNK_SIZE) -> ObjectInfo:
        """Resumable upload from pieces of any size, ``chunk_size`` bytes per PUT. Holds about one chunk
        (plus one source piece), never the whole object; a failed PUT asks the session what it holds and
        resumes from there."""
        if chunk_size <= 0 or chunk_size % UPLOAD_QUANTUM:
            raise ValueError(f"chunk_size must be a positive multiple of {UPLOAD_QUANTUM}")
        session = await self._open_session(bucket, name, content_type)
        source = aiter(chunks)
        buf = memoryview(bytearray(chunk_size))  # fixed, filled up to ``fill``; writes are plain copies
        fill = 0
        pending = _EMPTY  # the unread rest of the current source piece
        offset = 0  # absolute position of buf[0]: everything before it is persisted
        exhausted = False
        failures = 0
        while True:
            while fill < chunk_size or not (pending or exhausted):
                if not pending:
                    if exhausted:
                        break
                    try:
                        pending = _view(await anext(source))
                    except StopAsyncIteration:
                        exhausted = True
                    continue
                take = min(chunk_size - fill, len(pending))
                buf[fill:fill + take] = pending[:take]
                fill += take
                pending = pending[take:] if take < len(pending) else _EMPTY  # let go of a used piece
            total = offset + fill if not pending else None  # nothing follows: this PUT carries the total
            try:
                result = await self._put_chunk(session, _Window(buf, fill), offset, total)
            except TransientError as exc:
                failures += 1
                if failures >= self.retry.max_attempts:
                    raise
                await asyncio.sleep(self.retry.backoff(failures, exc.retry_after))
                result = await self._query_session(session, total)
            else:
                if result == offset:  # a 308 that kept nothing counts as a failed attempt
                    failures += 1
                    if failures >= self.retry.max_attempts:
                        raise TransientError(f"upload session keeps nothing past byte {offset}")
                    await asyncio.sleep(self.retry.backoff(failures))
            if isinstance(result, ObjectInfo):
                return result
            kept = result - offset
            if not 0 <= kept <= fill:
                raise BadResponseError(f"upload session holds {result} bytes, not {offset}-{offset + fill}")
            if kept:
                failures = 0
                buf[: fill - kept] = buf[kept:fill]  # keep what the session has not persisted (memmove)
                fill -= kept
                offset = result

    async def _open_session(self, bucket: str, name: str, content_type: str) -> str:
        response = await self._request(
            "POST", self._url(f"b/{_path(bucket)}/o", upload=True),
            params={"uploadType": "resumable", "name": name},
            json={"name": name, "contentType": content_type},
            headers={"X-Upload-Content-Type": content_type},
        )
        session = response.headers.get("location")
        if not session:
            raise BadResponseError("resumable upload start returned no Location")
        return session

    async def _put_chunk(self, session: str, body: _Window, offset: int,
                         total: int | None) -> ObjectInfo | int:
        """One PUT: the object when the upload completed, else the bytes persisted (308 ``Range``)."""
        if body.size:
            content_range = f"bytes {offset}-{offset + body.size - 1}/{'*' if total is None else total}"
        else:
            content_range = f"bytes */{total}"
        headers = {"Content-Range": content_range, "Content-Length": str(body.size)}
        response = await self._send("PUT", session, content=body, ok=(308,), headers=headers)
        return _persisted(response) if response.status_code == 308 else ObjectInfo.from_api(_json(response))

    async def _query_session(self, session: str, total: int | None) -> ObjectInfo | int:
        """Ask the session what it holds (empty PUT, ``bytes */*``); finalizes it if it holds ``total``."""
        content_range = f"bytes */{'*' if total is None else total}"
        response = await self._request("PUT", session, content=b"", ok=(308,),
                                       headers={"Content-Range": content_range})
        return _persisted(response) if response.status_code == 308 else ObjectInfo.from_api(_json(response))
