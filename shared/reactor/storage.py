"""A small async Cloud Storage JSON API client on httpx: list, stat, rewrite, streamed download and
resumable upload, with the retry contract of ``batch_relay.errors``.

The ``httpx.AsyncClient`` is passed in: the caller owns its auth and its lifecycle (``batch_relay.wiring``
builds it). Every request goes through ``retry.send`` (failures mapped to ``errors.py``) and, where it
is safe to repeat, ``retry.retry``: transient failures (408/429/5xx, timeouts, connection errors) are
retried here, once, and raised as ``TransientError`` after the last attempt.

A bucket that is requester-pays answers 400 (``userProjectMissing``) or 403: that is ``PermanentError``
of kind ``requester_pays`` (the relay never pays for another project's bucket), never a retry.

A rewrite that needs many calls (across locations or storage classes) can be resumed from a saved
``rewriteToken`` and stopped before a deadline (``RewriteUnfinished``, carrying the token to resume from).

Writes take an optional ``if_generation_match`` (``0``: only if no object of that name exists; a
generation: only if the object is still that one) and custom ``metadata``. A precondition that does not
hold is ``PreconditionFailed``: transient, but never retried here (the object changed since the caller
looked at it, so the caller must look again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from ..errors import BadResponseError, NotFoundError, PermanentError, TransientError
from ..retry import RetryPolicy, classify, error_message, retry, send, transient

DEFAULT_BASE_URL = "https://storage.googleapis.com"
UPLOAD_QUANTUM = 256 * 1024  # resumable chunks (all but the last) are multiples of this
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
_OBJECT_FIELDS = "bucket,name,size,crc32c,md5Hash,generation,contentType,metadata"
_DEFAULT_RETRY = RetryPolicy()
FIND_BY_GET = 16  # find_objects: up to this many names, one GET each; more, one listing of their range
REQUESTER_PAYS = "requester_pays"


def storage_base_url(storage_emulator_host: str | None) -> str:
    """``STORAGE_EMULATOR_HOST`` (with its scheme) when set, else the public endpoint."""
    if not storage_emulator_host:
        return DEFAULT_BASE_URL
    host = storage_emulator_host.rstrip("/")
    return host if "://" in host else f"http://{host}"


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    name: str
    size: int
    crc32c: str | None = None
    md5_hash: str | None = None
    generation: str | None = None
    content_type: str | None = None
    metadata: Mapping[str, str] | None = None  # custom metadata (``x-goog-meta-*``)

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
                metadata=_metadata(data.get("metadata")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadResponseError(f"not an object resource: {type(exc).__name__}: {exc}") from exc


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError("metadata is not an object")
    return {str(k): str(v) for k, v in value.items()}


class PreconditionFailed(TransientError):
    """HTTP 412: a write's ``ifGenerationMatch`` did not hold (the object appeared or changed since the
    caller looked). Transient for the caller (look again, e.g. on redelivery), never retried here."""


class RewriteUnfinished(TransientError):
    """A rewrite stopped before its next call because the caller's time is up (``stop``); ``token`` is the
    ``rewriteToken`` to resume from (None: not started)."""

    kind = "rewrite_unfinished"

    def __init__(self, message: str, token: str | None) -> None:
        super().__init__(message)
        self.token = token


def _token_refused(exc: PermanentError) -> bool:
    """A resumed rewrite's first call refused: an invalid or expired token is 400 (or 404 for a token of
    another object)."""
    return isinstance(exc, NotFoundError) or exc.kind == "bad_request"


def requester_pays(body: Any) -> bool:
    """Whether a Cloud Storage error body says the bucket is requester-pays (reason ``userProjectMissing``,
    or a message naming requester pays)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return False
    reasons = [e.get("reason") for e in error.get("errors") or () if isinstance(e, dict)]
    message = str(error.get("message") or "").lower()
    return "userProjectMissing" in reasons or "requester pays" in message or "requester-pays" in message


async def _refused(where: str, response: httpx.Response) -> Exception:
    """The error of a 400/403 reply (read and closed here): ``requester_pays`` when the body says so."""
    try:
        await response.aread()
    except httpx.HTTPError as exc:
        return TransientError(f"{where}: HTTP {response.status_code}, body lost: {type(exc).__name__}")
    finally:
        await response.aclose()
    try:
        body = response.json()
    except ValueError:
        body = None
    if requester_pays(body):
        return PermanentError(
            f"{where}: {error_message(response)}: the bucket is requester-pays, and the relay does not pay for "
            "reading or writing another project's bucket; turn requester pays off on the bucket (gcloud storage "
            "buckets update gs://BUCKET --no-requester-pays), or have the job write to a bucket without it",
            kind=REQUESTER_PAYS)
    error = classify(response) or BadResponseError(f"HTTP {response.status_code}")
    error.args = (f"{where}: {error}",)
    return error


def _retryable(exc: BaseException) -> bool:
    return transient(exc) and not isinstance(exc, PreconditionFailed)


def _write_params(if_generation_match: int | str | None) -> dict[str, str]:
    return {} if if_generation_match is None else {"ifGenerationMatch": str(if_generation_match)}


def _resource(name: str | None, content_type: str | None, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    """An object resource for a request body: only the fields given."""
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if content_type is not None:
        body["contentType"] = content_type
    if metadata:
        body["metadata"] = dict(metadata)
    return body


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


@dataclasses.dataclass
class _UploadState:
    """Where a resumable upload (``upload_stream``) stands."""

    fill: int = 0  # bytes of the buffer in use
    offset: int = 0  # absolute position of buf[0]: everything before it is persisted
    pending: memoryview = _EMPTY  # the unread rest of the current source piece
    exhausted: bool = False  # the source has given its last piece
    unsure: bool = False  # the last PUT failed, so what the session holds is unknown
    source_failed: bool = False  # the source itself raised: never retried


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
        """One HTTP request (counted), failures mapped by ``retry.send``; 412 is ``PreconditionFailed``."""
        self.requests += 1
        response = await send(self.http, method, url, ok=(*ok, 400, 403, 412), stream=stream, timeout=self.timeout,
                              **kw)
        if response.status_code in (400, 403) and response.status_code not in ok:
            raise await _refused(f"{method} {response.request.url.path}", response)
        if response.status_code == 412 and 412 not in ok:
            await response.aclose()
            raise PreconditionFailed(f"{method} {response.request.url.path}: HTTP 412: the object changed since it "
                                     "was looked at (ifGenerationMatch)")
        return response

    async def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """``_send`` with transient errors (but a failed precondition) retried up to ``retry.max_attempts``."""
        return await retry(lambda: self._send(method, url, **kw), self.retry, retry_if=_retryable)

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

    async def find_objects(self, bucket: str, names: Collection[str], *,
                           page_size: int = 1000) -> dict[str, ObjectInfo]:
        """Those of ``names`` that exist, by name, without listing what was not asked for: a GET each for a
        few names (``FIND_BY_GET``), else one listing of the range they span (their common prefix, from the
        first name on, stopped past the last). The cost follows the names, not what else the bucket holds."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        if len(wanted) <= FIND_BY_GET:
            found = await asyncio.gather(*(self.get_object(bucket, name) for name in wanted))
            return {name: info for name, info in zip(wanted, found, strict=True) if info is not None}
        last, asked = wanted[-1], set(wanted)
        params: dict[str, str | int] = {"maxResults": page_size, "startOffset": wanted[0],
                                        "fields": f"items({_OBJECT_FIELDS}),nextPageToken"}
        prefix = os.path.commonprefix(wanted)
        if prefix:
            params["prefix"] = prefix
        url = self._url(f"b/{_path(bucket)}/o")
        present: dict[str, ObjectInfo] = {}
        while True:
            body = _json(await self._request("GET", url, params=params))
            for item in body.get("items") or ():
                info = ObjectInfo.from_api(item)
                if info.name > last:
                    return present
                if info.name in asked:
                    present[info.name] = info
            token = body.get("nextPageToken")
            if not token:
                return present
            params["pageToken"] = token

    async def rewrite(self, src_bucket: str, src_name: str, dst_bucket: str, dst_name: str, *,
                      if_generation_match: int | str | None = None, metadata: Mapping[str, str] | None = None,
                      content_type: str | None = None, token: str | None = None,
                      on_token: Callable[[str], Awaitable[object]] | None = None,
                      stop: Callable[[], bool] | None = None) -> ObjectInfo:
        """Server-side copy, looping on ``rewriteToken`` until done. With ``metadata`` (or ``content_type``)
        the destination gets those instead of the source's metadata. ``token``: resume a rewrite from a saved
        token (refused: started again from scratch); ``on_token``: called with each new token; ``stop``: asked
        before each call, True raises ``RewriteUnfinished`` with the token to resume from."""
        url = self._url(f"b/{_path(src_bucket)}/o/{_path(src_name)}/rewriteTo/b/{_path(dst_bucket)}"
                        f"/o/{_path(dst_name)}")
        resumed = token
        resource = _resource(None, content_type, metadata)
        extra: dict[str, Any] = {"json": resource} if resource else {}
        while True:
            if stop is not None and stop():
                raise RewriteUnfinished(f"rewrite of {src_name[:200]!r} stopped at the copy's deadline", token)
            params: dict[str, str] = _write_params(if_generation_match)
            if token:
                params["rewriteToken"] = token
            try:
                body = _json(await self._request("POST", url, params=params, **extra))
            except PermanentError as exc:
                if resumed is None or token != resumed or not _token_refused(exc):
                    raise
                token = resumed = None  # the saved token is no longer good: this object starts again
                continue
            if body.get("done"):
                return ObjectInfo.from_api(body.get("resource"))
            token = body.get("rewriteToken")
            if not isinstance(token, str) or not token:
                raise BadResponseError("rewrite reply is neither done nor carries a rewriteToken")
            if on_token is not None:
                await on_token(token)

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
    async def _body(response: httpx.Response, chunk_size: int | None) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in response.aiter_bytes(chunk_size):
                yield chunk
        except httpx.TransportError as exc:
            raise TransientError(f"GET {response.request.url.path}: {type(exc).__name__}: {exc}") from exc

    async def upload_bytes(self, bucket: str, name: str, data: bytes, *,
                           content_type: str = "application/octet-stream",
                           if_generation_match: int | str | None = None,
                           metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        """Single-request upload, for small objects: a media upload, or a multipart one (the object's
        resource, then its bytes) when it carries ``metadata``."""
        url = self._url(f"b/{_path(bucket)}/o", upload=True)
        params = _write_params(if_generation_match)
        if not metadata:
            response = await self._request("POST", url, params={"uploadType": "media", "name": name, **params},
                                           content=data, headers={"Content-Type": content_type})
            return ObjectInfo.from_api(_json(response))
        boundary = secrets.token_hex(16)
        head = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                f"{json.dumps(_resource(name, content_type, metadata))}\r\n"
                f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").encode()
        body = head + data + f"\r\n--{boundary}--\r\n".encode()
        response = await self._request("POST", url, params={"uploadType": "multipart", **params}, content=body,
                                       headers={"Content-Type": f"multipart/related; boundary={boundary}"})
        return ObjectInfo.from_api(_json(response))

    async def upload_stream(self, bucket: str, name: str, chunks: AsyncIterable[bytes], *,
                            content_type: str = "application/octet-stream",
                            chunk_size: int = DEFAULT_CHUNK_SIZE, if_generation_match: int | str | None = None,
                            metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        """Resumable upload from pieces of any size, ``chunk_size`` bytes per PUT. Holds about one chunk
        (plus one source piece), never the whole object. A failed PUT is retried by ``retry.retry``: the
        next attempt asks the session what it holds, keeps the rest of the buffer and sends on from there.
        Attempts are counted until the session makes progress. An error of ``chunks`` itself is never retried
        here (a source that broke has nothing more to give: the caller starts again); it ends the upload
        unfinished."""
        if chunk_size <= 0 or chunk_size % UPLOAD_QUANTUM:
            raise ValueError(f"chunk_size must be a positive multiple of {UPLOAD_QUANTUM}")
        session = await self._open_session(bucket, name, content_type, if_generation_match, metadata)
        source = aiter(chunks)
        buf = memoryview(bytearray(chunk_size))  # fixed, filled up to ``fill``; writes are plain copies
        state = _UploadState()

        def keep(persisted: int) -> None:
            """Drop from the buffer what the session now holds (everything before ``persisted``)."""
            kept = persisted - state.offset
            if not 0 <= kept <= state.fill:
                raise BadResponseError(f"upload session holds {persisted} bytes, not "
                                       f"{state.offset}-{state.offset + state.fill}")
            if kept:
                buf[: state.fill - kept] = buf[kept:state.fill]  # keep the rest (memmove)
                state.fill -= kept
                state.offset = persisted

        async def refill() -> None:
            while state.fill < chunk_size or not (state.pending or state.exhausted):
                if not state.pending:
                    if state.exhausted:
                        return
                    try:
                        state.pending = _view(await anext(source))
                    except StopAsyncIteration:
                        state.exhausted = True
                    except BaseException:
                        state.source_failed = True
                        raise
                    continue
                pending, fill = state.pending, state.fill
                take = min(chunk_size - fill, len(pending))
                buf[fill:fill + take] = pending[:take]
                state.fill = fill + take
                state.pending = pending[take:] if take < len(pending) else _EMPTY  # let go of a used piece

        async def step() -> ObjectInfo | None:
            """One attempt: learn what the session holds if the last PUT failed, fill, PUT. Returns the
            object when the upload is complete, None when the session made progress."""
            if state.unsure:
                total = state.offset + state.fill if state.exhausted and not state.pending else None
                held = await self._query_session(session, total)
                if isinstance(held, ObjectInfo):
                    return held
                keep(held)
                state.unsure = False
            await refill()
            total = state.offset + state.fill if not state.pending else None  # last PUT: the total
            state.unsure = True
            result = await self._put_chunk(session, _Window(buf, state.fill), state.offset, total)
            state.unsure = False
            if isinstance(result, ObjectInfo):
                return result
            if result == state.offset:  # a 308 that kept nothing counts as a failed attempt
                raise TransientError(f"upload session keeps nothing past byte {state.offset}")
            keep(result)
            return None

        while True:
            done = await retry(step, self.retry, retry_if=lambda exc: _retryable(exc) and not state.source_failed)
            if done is not None:
                return done

    async def _open_session(self, bucket: str, name: str, content_type: str,
                            if_generation_match: int | str | None, metadata: Mapping[str, str] | None) -> str:
        response = await self._request(
            "POST", self._url(f"b/{_path(bucket)}/o", upload=True),
            params={"uploadType": "resumable", "name": name, **_write_params(if_generation_match)},
            json=_resource(name, content_type, metadata),
            headers={"X-Upload-Content-Type": content_type},
        )
        session: str | None = response.headers.get("location")
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
        """Ask the session what it holds (empty PUT, ``bytes */*``); finalizes it if it holds ``total``.
        One request: the upload's retry loop is the one that repeats it."""
        content_range = f"bytes */{'*' if total is None else total}"
        response = await self._send("PUT", session, content=b"", ok=(308,),
                                    headers={"Content-Range": content_range})
        return _persisted(response) if response.status_code == 308 else ObjectInfo.from_api(_json(response))
