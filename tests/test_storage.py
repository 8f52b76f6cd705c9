"""batch_relay.reactor.storage against fake-gcs-server over real HTTP; retry and error classification (where the HTTP
peer itself is the subject) against ``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from batch_relay.auth import StaticToken
from batch_relay.errors import BadResponseError, ForbiddenError, NotFoundError, TransientError
from batch_relay.reactor.storage import ObjectInfo, StorageClient, storage_base_url
from batch_relay.retry import RetryPolicy
from devtools.crc32c import crc32c_of

FAST = RetryPolicy(max_attempts=3, initial_s=0.001, cap_s=0.01)
KIB = 1024
MIB = 1024 * KIB


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


# -- helpers: fake-gcs-server ----------------------------------------------------------------------------


def on_gcs(gcs_emulator, fn: Callable[[StorageClient, httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """Run ``fn(storage, http)`` in a fresh event loop with an anonymous client, as the caller would."""

    async def main() -> Any:
        async with httpx.AsyncClient() as http:
            storage = StorageClient(http, base_url=storage_base_url(gcs_emulator.url), retry=FAST, timeout=30)
            return await fn(storage, http)

    return asyncio.run(main())


async def make_bucket(http: httpx.AsyncClient, storage: StorageClient) -> str:
    name = f"bkt-{uuid.uuid4().hex[:12]}"
    response = await http.post(f"{storage.base_url}/storage/v1/b", params={"project": "x"},
                               json={"name": name}, timeout=10)
    response.raise_for_status()
    return name


async def read_all(storage: StorageClient, bucket: str, name: str) -> bytes:
    out = bytearray()
    async with storage.download(bucket, name) as chunks:
        async for chunk in chunks:
            out += chunk
    return bytes(out)


# -- pure helpers ----------------------------------------------------------------------------------------


def test_storage_base_url():
    assert storage_base_url(None) == "https://storage.googleapis.com"
    assert storage_base_url("") == "https://storage.googleapis.com"
    assert storage_base_url("http://127.0.0.1:4443/") == "http://127.0.0.1:4443"
    assert storage_base_url("localhost:4443") == "http://localhost:4443"


def test_crc32c_of_known_values():
    assert crc32c_of(b"123456789") == base64.b64encode(bytes.fromhex("e3069283")).decode()
    assert crc32c_of(b"") == "AAAAAA=="
    assert crc32c_of(b"hello") == "mnG7TA=="  # as fake-gcs-server reports it


def test_object_info_from_api():
    info = ObjectInfo.from_api({"bucket": "b", "name": "a/b:c", "size": "12345678901", "crc32c": "AAAAAA==",
                                "md5Hash": "x", "generation": 17, "contentType": "text/plain"})
    assert info == ObjectInfo("b", "a/b:c", 12345678901, "AAAAAA==", "x", "17", "text/plain")
    with pytest.raises(BadResponseError):
        ObjectInfo.from_api({"name": "no bucket"})
    with pytest.raises(BadResponseError):
        ObjectInfo.from_api(None)


# -- fake-gcs-server -------------------------------------------------------------------------------------


def test_upload_bytes_and_get_object(gcs_emulator):
    data = b'{"job": "x", "objects": []}\n' * 100

    async def body(storage: StorageClient, http: httpx.AsyncClient):
        bucket = await make_bucket(http, storage)
        assert await storage.bucket_exists(bucket)
        written = await storage.upload_bytes(bucket, "out/run:1/_manifest.json", data,
                                             content_type="application/json")
        return written, await storage.get_object(bucket, "out/run:1/_manifest.json")

    written, info = on_gcs(gcs_emulator, body)
    assert written.name == info.name == "out/run:1/_manifest.json"
    assert info.size == written.size == len(data)
    assert info.crc32c == written.crc32c == crc32c_of(data)
    assert info.md5_hash == md5_b64(data)
    assert info.content_type == "application/json"
    assert info.generation


def test_list_objects_paginates_and_keeps_odd_names(gcs_emulator):
    names = sorted(f"run/{i:02d}:part/file {i}.jsonl" for i in range(25))

    async def body(storage: StorageClient, http: httpx.AsyncClient):
        bucket = await make_bucket(http, storage)
        for i, name in enumerate(names):
            await storage.upload_bytes(bucket, name, b"x" * i)
        before = storage.requests
        listed = [info async for info in storage.list_objects(bucket, "run/", page_size=10)]
        return listed, storage.requests - before

    listed, list_requests = on_gcs(gcs_emulator, body)
    assert [info.name for info in listed] == names
    assert all(info.size == int(re.search(r"(\d+)\.jsonl$", info.name).group(1)) for info in listed)
    assert all(info.crc32c for info in listed)
    assert list_requests == 3


def test_list_objects_prefix_excludes_siblings(gcs_emulator):
    async def body(storage: StorageClient, http: httpx.AsyncClient):
        bucket = await make_bucket(http, storage)
        for name in ["out/a", "out/b/c", "out-2/x", "outx", "out2/y", "other/out/z"]:
            await storage.upload_bytes(bucket, name, b"1")
        listed = [info.name async for info in storage.list_objects(bucket, "out" + "/")]
        everything = [info.name async for info in storage.list_objects(bucket, "")]
        return listed, everything

    listed, everything = on_gcs(gcs_emulator, body)
    assert listed == ["out/a", "out/b/c"]
    assert len(everything) == 6


def test_rewrite_across_buckets(gcs_emulator):
    data = random.Random(1).randbytes(300 * KIB)

    async def body(storage: StorageClient, http: httpx.AsyncClient):
        src, dst = await make_bucket(http, storage), await make_bucket(http, storage)
        await storage.upload_bytes(src, "dir/pred:1.jsonl", data)
        copied = await storage.rewrite(src, "dir/pred:1.jsonl", dst, "gemini/job 1/dir/pred:1.jsonl")
        return copied, dst, await read_all(storage, dst, "gemini/job 1/dir/pred:1.jsonl")

    copied, dst, back = on_gcs(gcs_emulator, body)
    assert (copied.bucket, copied.name) == (dst, "gemini/job 1/dir/pred:1.jsonl")
    assert copied.size == len(data)
    assert copied.crc32c == crc32c_of(data)
    assert back == data


def test_download_streams_in_chunks(gcs_emulator):
    data = random.Random(2).randbytes(MIB + 17)

    async def body(storage: StorageClient, http: httpx.AsyncClient):
        bucket = await make_bucket(http, storage)
        await storage.upload_bytes(bucket, "big.bin", data)
        sizes: list[int] = []
        out = bytearray()
        async with storage.download(bucket, "big.bin", chunk_size=64 * KIB) as chunks:
            async for chunk in chunks:
                sizes.append(len(chunk))
                out += chunk
        return sizes, bytes(out)

    sizes, out = on_gcs(gcs_emulator, body)
    assert out == data
    assert len(sizes) > 10 and max(sizes) <= 64 * KIB


POOL = random.Random(3).randbytes(3_000_017)  # data at absolute offset i is POOL[i % len(POOL)]
ODD_SIZES = [1, 4097, 333_333, 65_535, 2_500_001, 7, 262_145]  # one piece is larger than a chunk


async def odd_chunks(total: int, digest: Any) -> AsyncIterator[bytes]:
    """``total`` bytes in pieces of awkward sizes, hashed as they are produced; each piece is made on
    demand, so the source itself holds one piece at a time."""
    sent = 0
    i = 0
    while sent < total:
        start = sent % len(POOL)  # a piece that would wrap around the pool ends at its end
        piece = POOL[start:start + min(ODD_SIZES[i % len(ODD_SIZES)], total - sent)]
        digest.update(piece)
        sent += len(piece)
        i += 1
        yield piece
        del piece


def test_upload_stream_large_in_odd_chunks(gcs_emulator):
    total = 20 * MIB + 12_345
    chunk_size = 256 * KIB * 4
    digest = hashlib.md5()

    async def body(storage: StorageClient, http: httpx.AsyncClient):
        bucket = await make_bucket(http, storage)
        before = storage.requests
        tracemalloc.start()
        try:
            written = await storage.upload_stream(bucket, "gemini/job/responses.jsonl",
                                                  odd_chunks(total, digest), chunk_size=chunk_size,
                                                  content_type="application/jsonl")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        requests = storage.requests - before
        info = await storage.get_object(bucket, "gemini/job/responses.jsonl")
        return written, info, requests, peak, await read_all(storage, bucket, "gemini/job/responses.jsonl")

    written, info, requests, peak, back = on_gcs(gcs_emulator, body)
    assert written.size == info.size == len(back) == total
    assert info.md5_hash == written.md5_hash == md5_b64(back)
    assert base64.b64encode(digest.digest()).decode() == info.md5_hash
    assert info.crc32c == written.crc32c == crc32c_of(back)
    assert info.content_type == "application/jsonl"
    assert requests == 1 + -(-total // chunk_size)  # session start + one PUT per chunk
    # One chunk, one source piece and a constant for httpx: nowhere near the 20 MiB object.
    assert peak < chunk_size + max(ODD_SIZES) + MIB, f"peak {peak} bytes: the upload is buffering"


def test_upload_stream_small_and_empty(gcs_emulator):
    async def empty() -> AsyncIterator[bytes]:
        for piece in (b"", b""):
            yield piece

    async def small() -> AsyncIterator[bytes]:
        for piece in (b"hel", b"", b"lo"):
            yield piece

    async def body(storage: StorageClient, http: httpx.AsyncClient):
        bucket = await make_bucket(http, storage)
        before = storage.requests
        nothing = await storage.upload_stream(bucket, "empty", empty())
        hello = await storage.upload_stream(bucket, "hello", small())
        return nothing, hello, storage.requests - before, await read_all(storage, bucket, "hello")

    nothing, hello, requests, back = on_gcs(gcs_emulator, body)
    assert (nothing.size, nothing.crc32c) == (0, "AAAAAA==")
    assert (hello.size, hello.crc32c, back) == (5, crc32c_of(b"hello"), b"hello")
    assert requests == 4


def test_missing_object_and_bucket(gcs_emulator):
    async def one() -> AsyncIterator[bytes]:
        yield b"x"

    async def body(storage: StorageClient, http: httpx.AsyncClient):
        bucket = await make_bucket(http, storage)
        missing = f"missing-{uuid.uuid4().hex[:12]}"
        assert await storage.get_object(bucket, "nope/x:y") is None
        with pytest.raises(NotFoundError):
            await read_all(storage, bucket, "nope/x:y")
        with pytest.raises(NotFoundError):
            await storage.rewrite(bucket, "nope", bucket, "copy")
        assert not await storage.bucket_exists(missing)
        assert await storage.get_object(missing, "x") is None
        with pytest.raises(NotFoundError):
            [info async for info in storage.list_objects(missing, "a/")]
        with pytest.raises(NotFoundError):
            await storage.upload_bytes(missing, "x", b"x")
        with pytest.raises(NotFoundError):
            await storage.upload_stream(missing, "x", one())
        with pytest.raises(ValueError):
            await storage.upload_stream(bucket, "x", one(), chunk_size=100 * KIB)
        return storage.requests

    assert on_gcs(gcs_emulator, body) == 8  # NotFound is permanent: nothing retried


# -- retry and classification against MockTransport ------------------------------------------------------


def on_mock(handler: Callable[[httpx.Request], httpx.Response], fn, *,
            retry: RetryPolicy = FAST) -> tuple[Any, StorageClient]:
    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler),
                                     auth=StaticToken("secret-token-123")) as http:
            storage = StorageClient(http, base_url="https://gcs.test", retry=retry, timeout=5)
            return await fn(storage), storage

    return asyncio.run(main())


OBJECT = {"bucket": "b", "name": "a/b:c", "size": "3", "crc32c": "AAAAAA==", "generation": "1"}


def test_503_then_200_is_retried():
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503 if len(calls) == 1 else 200, json=OBJECT)

    info, storage = on_mock(handler, lambda s: s.get_object("b", "a/b:c"))
    assert info == ObjectInfo.from_api(OBJECT)
    assert storage.requests == 2
    assert calls[0].url.raw_path.startswith(b"/storage/v1/b/b/o/a%2Fb%3Ac")


def test_429_retry_after_is_honoured():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "0.3"}, json={"error": {"message": "slow"}})
        return httpx.Response(200, json=OBJECT)

    # Without Retry-After the backoff would be 15-30 s.
    info, storage = on_mock(handler, lambda s: s.get_object("b", "a/b:c"),
                            retry=RetryPolicy(max_attempts=3, initial_s=30))
    assert info.name == "a/b:c" and storage.requests == 2
    assert 0.25 <= calls[1] - calls[0] < 5


def test_permanent_errors_are_not_retried_and_hide_the_token():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/forbidden"):
            return httpx.Response(403, json={"error": {"code": 403, "message": "no storage.objects.get"}})
        return httpx.Response(404, text="Not Found")

    async def body(storage: StorageClient):
        assert await storage.get_object("b", "gone") is None
        with pytest.raises(NotFoundError):
            async with storage.download("b", "gone"):
                pass
        with pytest.raises(ForbiddenError) as forbidden:
            await storage.get_object("b", "forbidden")
        return forbidden.value

    error, storage = on_mock(handler, body)
    assert storage.requests == 3
    assert "no storage.objects.get" in str(error) and "secret-token-123" not in str(error)
    assert error.kind == "forbidden"


def test_transport_errors_are_retried_then_raised():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def body(storage: StorageClient):
        with pytest.raises(TransientError) as caught:
            [info async for info in storage.list_objects("b", "p/")]
        return caught.value

    error, storage = on_mock(handler, body)
    assert storage.requests == FAST.max_attempts
    assert "ConnectError" in str(error) and "secret-token-123" not in str(error)


def test_5xx_until_attempts_run_out():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": "backend error"}})

    async def body(storage: StorageClient):
        with pytest.raises(TransientError, match="backend error"):
            await storage.upload_bytes("b", "m", b"{}", content_type="application/json")

    _, storage = on_mock(handler, body)
    assert storage.requests == FAST.max_attempts


def test_download_broken_mid_stream_is_transient():
    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b"first"
            raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["alt"] == "media"
        return httpx.Response(200, stream=Broken())

    async def body(storage: StorageClient):
        got = []
        with pytest.raises(TransientError, match="ReadError"):
            async with storage.download("b", "o") as chunks:
                async for chunk in chunks:
                    got.append(chunk)
        return got

    got, storage = on_mock(handler, body)
    assert got == [b"first"] and storage.requests == 1


def test_rewrite_follows_the_token():
    tokens = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.raw_path.startswith(b"/storage/v1/b/src/o/d%2Fx%3Ay/rewriteTo/b/dst/o/e%2Fx%3Ay")
        tokens.append(request.url.params.get("rewriteToken"))
        if len(tokens) < 3:
            return httpx.Response(200, json={"done": False, "rewriteToken": f"t{len(tokens)}"})
        return httpx.Response(200, json={"done": True, "resource": {**OBJECT, "bucket": "dst"}})

    info, _ = on_mock(handler, lambda s: s.rewrite("src", "d/x:y", "dst", "e/x:y"))
    assert tokens == [None, "t1", "t2"]
    assert info.bucket == "dst"


class ResumableSession:
    """A GCS resumable session with real semantics (offsets honoured, ``bytes */*`` queries, Range on 308),
    and scripted faults per PUT index: ``("fail", keep)`` keeps ``keep`` bytes then answers 503,
    ``("short", keep)`` keeps ``keep`` bytes and answers 308, ``("lost", None)`` keeps the chunk but the
    reply is lost (connection error)."""

    def __init__(self, faults: dict[int, tuple[str, int | None]]) -> None:
        self.faults = faults
        self.data = bytearray()
        self.puts: list[str] = []
        self.posts = 0
        self.finished = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.posts += 1
            assert request.url.params["uploadType"] == "resumable"
            return httpx.Response(200, headers={"Location": "https://gcs.test/upload/session?upload_id=S"})
        content_range = request.headers["content-range"]
        self.puts.append(content_range)
        body = request.content
        assert len(body) == int(request.headers["content-length"])
        fault, keep = self.faults.get(len(self.puts), ("", None))
        span, _, total = content_range.removeprefix("bytes ").partition("/")
        if span != "*":
            start, end = (int(v) for v in span.split("-"))
            assert start == len(self.data), f"resent from {start}, session holds {len(self.data)}"
            assert end - start + 1 == len(body)
            self.data += body[:keep] if keep is not None else body
        if fault == "fail":
            return httpx.Response(503, json={"error": {"message": "try again"}})
        if fault == "lost":
            if total != "*" and int(total) == len(self.data):
                self.finished = True
            raise httpx.ReadError("connection reset", request=request)
        if total != "*" and int(total) == len(self.data):
            self.finished = True
            return httpx.Response(200, json={**OBJECT, "size": str(len(self.data))})
        headers = {"Range": f"bytes=0-{len(self.data) - 1}"} if self.data else {}
        return httpx.Response(308, headers=headers)


def upload_with(session: ResumableSession, data: bytes, piece: int = 100_000):
    async def source() -> AsyncIterator[bytes]:
        for i in range(0, len(data), piece):
            yield data[i:i + piece]

    return on_mock(session, lambda s: s.upload_stream("b", "o", source(), chunk_size=512 * KIB))


def test_upload_chunk_failure_resumes_from_the_session_range():
    data = random.Random(4).randbytes(3 * 512 * KIB + 1000)
    session = ResumableSession({2: ("fail", 256 * KIB)})  # the 2nd PUT keeps half, then 503
    info, storage = upload_with(session, data)
    assert session.finished and bytes(session.data) == data and session.posts == 1
    assert session.puts == [
        f"bytes 0-{512 * KIB - 1}/*",
        f"bytes {512 * KIB}-{1024 * KIB - 1}/*",
        "bytes */*",  # the query, answered 308 Range bytes=0-(768 KiB - 1)
        f"bytes {768 * KIB}-{1280 * KIB - 1}/*",
        f"bytes {1280 * KIB}-{len(data) - 1}/{len(data)}",
    ]
    assert info.size == len(data) and storage.requests == 1 + 5


def test_upload_short_308_resends_the_rest():
    data = random.Random(5).randbytes(2 * 512 * KIB)
    session = ResumableSession({1: ("short", 256 * KIB)})
    info, _ = upload_with(session, data, piece=512 * KIB + 3)
    assert bytes(session.data) == data and session.posts == 1
    assert session.puts == [f"bytes 0-{512 * KIB - 1}/*", f"bytes {256 * KIB}-{768 * KIB - 1}/*",
                            f"bytes {768 * KIB}-{len(data) - 1}/{len(data)}"]
    assert info.size == len(data)


def test_upload_lost_final_reply_is_finalized_by_the_query():
    data = b"tail" * 1000
    session = ResumableSession({1: ("lost", None)})
    info, storage = upload_with(session, data)
    assert session.puts == [f"bytes 0-{len(data) - 1}/{len(data)}", f"bytes */{len(data)}"]
    assert bytes(session.data) == data and info.size == len(data) and storage.requests == 3


def test_upload_gives_up_after_max_attempts():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, headers={"Location": "https://gcs.test/upload/session?upload_id=S"})
        if request.headers["content-range"].startswith("bytes */"):
            return httpx.Response(308)
        return httpx.Response(503, json={"error": {"message": "unavailable"}})

    async def body(storage: StorageClient):
        async def source() -> AsyncIterator[bytes]:
            yield b"x" * 10

        with pytest.raises(TransientError) as caught:
            await storage.upload_stream("b", "o", source())
        return caught.value

    error, storage = on_mock(handler, body)
    assert "upload_id" not in str(error) and "secret-token-123" not in str(error)
    # start + 3 failed PUTs + 2 queries between them
    assert storage.requests == 1 + FAST.max_attempts + FAST.max_attempts - 1


def test_request_bodies_are_json_where_expected():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"Location": "https://gcs.test/s?upload_id=1"}, json=OBJECT)

    async def body(storage: StorageClient):
        async def source() -> AsyncIterator[bytes]:
            yield b"abc"

        await storage.upload_stream("b", "dir/a:b", source(), content_type="text/csv")

    on_mock(handler, body)
    start = seen[0]
    assert start.url.params["name"] == "dir/a:b" and start.url.params["uploadType"] == "resumable"
    assert json.loads(start.content) == {"name": "dir/a:b", "contentType": "text/csv"}
    assert start.headers["authorization"] == "Bearer secret-token-123"
    assert seen[1].headers["content-range"] == "bytes 0-2/3" and seen[1].content == b"abc"


def test_a_source_that_breaks_ends_the_upload_unfinished(gcs_emulator):
    """The source's own error is the caller's to retry (it starts the whole download again): the upload neither
    retries it nor finishes the object with what it had read."""
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 100
        raise TransientError("the download broke")

    async def body(storage: StorageClient, http: httpx.AsyncClient):
        bucket = await make_bucket(http, storage)
        before = storage.requests
        with pytest.raises(TransientError, match="the download broke"):
            await storage.upload_stream(bucket, "cut", broken())
        return storage.requests - before, await storage.get_object(bucket, "cut")

    requests, info = on_gcs(gcs_emulator, body)
    assert info is None and requests == 1  # the session started; nothing was sent, nothing finished


def test_writes_send_their_precondition_and_metadata():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"Location": "https://gcs.test/s?upload_id=1"},
                              json={**OBJECT, "metadata": {"k": "v"}} if "rewriteTo" not in request.url.path
                              else {"done": True, "resource": OBJECT})

    mark = {"batch-relay-job": "batches/j"}

    async def body(storage: StorageClient):
        async def source() -> AsyncIterator[bytes]:
            yield b"abc"

        await storage.rewrite("src", "a", "dst", "b", if_generation_match=0, metadata=mark, content_type="text/csv")
        await storage.upload_stream("dst", "c", source(), if_generation_match="17", metadata=mark)
        info = await storage.upload_bytes("dst", "d/e.json", b'{"x": 1}', content_type="application/json",
                                          if_generation_match=0, metadata=mark)
        plain = await storage.upload_bytes("dst", "f", b"1")
        return info, plain

    (info, _), _ = on_mock(handler, body)
    rewrite, start, _put, multipart, media = seen
    assert rewrite.url.params["ifGenerationMatch"] == "0"
    assert json.loads(rewrite.content) == {"contentType": "text/csv", "metadata": mark}
    assert start.url.params["ifGenerationMatch"] == "17" and json.loads(start.content)["metadata"] == mark
    assert multipart.url.params["uploadType"] == "multipart" and multipart.url.params["ifGenerationMatch"] == "0"
    boundary = multipart.headers["content-type"].split("boundary=")[1]
    parts = multipart.content.split(f"--{boundary}".encode())
    assert json.loads(parts[1].split(b"\r\n\r\n", 1)[1]) == {"name": "d/e.json", "contentType": "application/json",
                                                             "metadata": mark}
    assert parts[2].split(b"\r\n\r\n", 1)[1] == b'{"x": 1}\r\n' and parts[3] == b"--\r\n"
    assert media.url.params["uploadType"] == "media" and "ifGenerationMatch" not in media.url.params
    assert info.metadata == {"k": "v"}


def test_a_failed_precondition_is_raised_at_once_not_retried():
    from batch_relay.reactor.storage import PreconditionFailed

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(412, json={"error": {"code": 412, "message": "conditionNotMet"}})

    async def body(storage: StorageClient):
        with pytest.raises(PreconditionFailed) as caught:
            await storage.rewrite("src", "a", "dst", "b", if_generation_match=0)
        return caught.value

    error, storage = on_mock(handler, body)
    assert storage.requests == 1 and isinstance(error, TransientError) and "412" in str(error)


# -- long rewrites, requester pays, bounded lookups -------------------------------------------------------


def test_a_rewrite_resumes_from_a_saved_token_and_stops_when_told():
    from batch_relay.reactor.storage import RewriteUnfinished

    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.params.get("rewriteToken"))
        if len(sent) == 6:
            return httpx.Response(200, json={"done": True, "resource": {**OBJECT, "bucket": "dst"}})
        return httpx.Response(200, json={"done": False, "rewriteToken": f"token-{40 + len(sent)}"})

    noted: list[str] = []

    async def note(token: str) -> None:
        noted.append(token)

    async def first(storage: StorageClient) -> RewriteUnfinished:
        with pytest.raises(RewriteUnfinished) as caught:
            await storage.rewrite("src", "o", "dst", "o", on_token=note, stop=lambda: len(sent) >= 3)
        return caught.value

    stopped, _ = on_mock(handler, first)
    assert sent == [None, "token-41", "token-42"] and noted == ["token-41", "token-42", "token-43"]
    assert stopped.token == "token-43" and stopped.kind == "rewrite_unfinished"
    info, _ = on_mock(handler, lambda s: s.rewrite("src", "o", "dst", "o", token=stopped.token))
    assert sent[3:] == ["token-43", "token-44", "token-45"]  # resumed: not [None, ...]
    assert info.bucket == "dst"


@pytest.mark.parametrize("status", [400, 404])
def test_a_refused_saved_token_starts_the_rewrite_again(status):
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        token = request.url.params.get("rewriteToken")
        sent.append(token)
        if token == "stale":
            return httpx.Response(status, json={"error": {"code": status, "message": "Invalid rewrite token."}})
        return httpx.Response(200, json={"done": True, "resource": {**OBJECT, "bucket": "dst"}})

    info, _ = on_mock(handler, lambda s: s.rewrite("src", "o", "dst", "o", token="stale"))
    assert sent == ["stale", None] and info.bucket == "dst"


@pytest.mark.parametrize("status,body", [
    (400, {"error": {"code": 400, "message": "Bucket is a requester pays bucket but no user project provided.",
                     "errors": [{"reason": "userProjectMissing", "domain": "global"}]}}),
    (403, {"error": {"code": 403, "message": "Bucket is requester pays: access denied."}}),
])
def test_a_requester_pays_bucket_is_its_own_kind_and_never_retried(status, body):
    from batch_relay.errors import PermanentError

    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(status, json=body)

    async def run(storage: StorageClient) -> PermanentError:
        with pytest.raises(PermanentError) as caught:
            await anext(storage.list_objects("paid", "run/"))
        return caught.value

    error, _ = on_mock(handler, run)
    assert error.kind == "requester_pays" and "requester-pays" in str(error) and len(calls) == 1
    assert "no-requester-pays" in str(error)


def test_other_400_and_403_keep_their_kinds():
    from batch_relay.errors import PermanentError

    def handler(request: httpx.Request) -> httpx.Response:
        status = 400 if request.url.path.endswith("/bad") else 403
        return httpx.Response(status, json={"error": {"code": status, "message": "nope"}})

    async def run(storage: StorageClient) -> tuple[PermanentError, PermanentError]:
        with pytest.raises(PermanentError) as bad:
            await storage.get_object("b", "bad")
        with pytest.raises(ForbiddenError) as forbidden:
            await storage.get_object("b", "denied")
        return bad.value, forbidden.value

    (bad, forbidden), _ = on_mock(handler, run)
    assert bad.kind == "bad_request" and forbidden.kind == "forbidden"


class BigBucket:
    """A Cloud Storage peer holding ``count`` objects, sorted as GCS lists them: objects.list with prefix,
    startOffset, maxResults and pageToken, and objects.get. Counts the requests of each kind."""

    def __init__(self, names: list[str]) -> None:
        import bisect

        self.bisect = bisect
        self.names = sorted(names)
        self.lists = 0
        self.gets = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/o"):
            self.lists += 1
            params = request.url.params
            prefix, start = params.get("prefix", ""), params.get("startOffset", "")
            at = int(params.get("pageToken") or self.bisect.bisect_left(self.names, max(prefix, start)))
            size = int(params.get("maxResults") or 1000)
            page = []
            while at < len(self.names) and len(page) < size and self.names[at].startswith(prefix):
                page.append({**OBJECT, "name": self.names[at]})
                at += 1
            more = at < len(self.names) and self.names[at].startswith(prefix)
            return httpx.Response(200, json={"items": page, **({"nextPageToken": str(at)} if more else {})})
        self.gets += 1
        name = request.url.path.split("/o/", 1)[1]
        if name in self.names:
            return httpx.Response(200, json={**OBJECT, "name": name})
        return httpx.Response(404, json={"error": {"code": 404, "message": "No such object"}})


def test_find_objects_asks_for_the_names_only_in_a_bucket_of_100000_objects():
    foreign = [f"data/{i:06d}.bin" for i in range(50_000)] + [f"zzz/{i:06d}.bin" for i in range(50_000)]
    ours = [f"predictions_{i:03d}.jsonl" for i in range(40)]
    bucket = BigBucket(foreign + ours[:30])  # 30 of the 40 there already (an interrupted attempt's)

    async def everything(storage: StorageClient) -> int:
        return len([o async for o in storage.list_objects("b", "")])

    listed, storage = on_mock(bucket, everything)
    assert listed == 100_030 and storage.requests == 101  # what listing the destination cost

    bucket.lists = 0
    found, storage = on_mock(bucket, lambda s: s.find_objects("b", ours))
    assert sorted(found) == ours[:30] and found[ours[0]].name == ours[0]
    assert storage.requests == bucket.lists == 1  # one page: the range the 40 names span
    few = ["predictions_000.jsonl", "_manifest.json", "failed.jsonl"]
    found, storage = on_mock(bucket, lambda s: s.find_objects("b", few))
    assert list(found) == ["predictions_000.jsonl"] and storage.requests == bucket.gets == 3


def test_find_objects_on_fake_gcs_finds_the_names_and_nothing_else(gcs_emulator):
    async def fn(storage: StorageClient, http: httpx.AsyncClient) -> dict[str, ObjectInfo]:
        bucket = await make_bucket(http, storage)
        for name in ["a/x", "a/y", "p/0", "p/1", "p/10", "p/2", "p/20", "q"]:
            await storage.upload_bytes(bucket, name, name.encode())
        wanted = [f"p/{i}" for i in range(20)] + ["p/3x"]  # more than FIND_BY_GET: one listing
        return await storage.find_objects(bucket, wanted, page_size=2)

    found = on_gcs(gcs_emulator, fn)
    assert sorted(found) == ["p/0", "p/1", "p/10", "p/2"] and found["p/10"].size == 4
