"""Gemini API files: a batch's responses file, generated on the fly (deterministic JSONL, sized without being
generated), or written from its ``results.Batch``; a batch's input file (``files/input-{id}``, when its spec
has ``requests``); files uploaded through the Files API's resumable protocol (``POST /upload/v1beta/files``:
``start``, then ``upload``/``finalize`` or ``query`` on the returned upload URL); and the download of any of
them, ``GET /download/v1beta/files/{id}:download``, streamed with Content-Length or chunked."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from devtools.simulator import faults
from devtools.simulator.wire import COMMON_HEADERS, GEMINI, Reply, date, err, json_payload, stamp, status_line

if TYPE_CHECKING:
    from devtools.simulator.app import Simulator
    from devtools.simulator.jobs import Job


class FileOutput:
    """A deterministic JSONL responses file, generated on the fly."""

    __slots__ = ("file_id", "lines", "line_bytes", "errors", "chunked", "job", "_size")
    CHUNK = 256 * 1024
    _OK = ('{"key": "req-', '", "response": {"candidates": [{"content": {"parts": [{"text": "',
           '"}], "role": "model"}, "finishReason": "STOP"}], "modelVersion": "gemini-2.5-flash"}}\n')
    _ERR = ('{"key": "req-', '", "error": {"code": 3, "message": "Request contains an invalid argument.',
            '"}}\n')

    def __init__(self, file_id: str, lines: int, line_bytes: int, errors: int, chunked: bool,
                 job: Job) -> None:
        self.file_id = file_id
        self.lines = lines
        self.line_bytes = line_bytes
        self.errors = min(errors, lines)
        self.chunked = chunked
        self.job = job
        self._size: int | None = None

    def ready(self) -> bool:
        return self.job.output_ready

    @classmethod
    def of(cls, job: Job) -> FileOutput | None:
        """The responses file of a job whose output is a file, else None."""
        out = job.output
        if not out or out["kind"] != "file":
            return None
        return cls(out["file_id"], out["count"], out["line_bytes"], out["errors"], out["chunked"], job)

    def _base(self, error: bool) -> int:
        parts = self._ERR if error else self._OK
        return sum(len(p) for p in parts)

    def size(self) -> int:
        """The byte size, from the digit-count groups of the keys (no generation needed)."""
        if self._size is None:
            total = 0
            first_err = self.lines - self.errors + 1
            for lo, hi, error in ((1, first_err - 1, False), (first_err, self.lines, True)):
                base = self._base(error)
                digits = 1
                while lo <= hi:
                    top = min(hi, 10 ** digits - 1)
                    if top >= lo:
                        total += (top - lo + 1) * max(self.line_bytes, base + digits)
                        lo = top + 1
                    digits += 1
            self._size = total
        return self._size

    def chunks(self) -> Iterator[bytes]:
        first_err = self.lines - self.errors + 1
        target = self.CHUNK
        buf: list[str] = []
        size = 0
        pads: dict[tuple[int, bool], str] = {}
        for i in range(1, self.lines + 1):
            error = i >= first_err
            key = str(i)
            pad = pads.get((len(key), error))
            if pad is None:
                pad = pads[(len(key), error)] = "x" * max(0, self.line_bytes - self._base(error) - len(key))
            a, b, c = self._ERR if error else self._OK
            line = a + key + b + pad + c
            buf.append(line)
            size += len(line)
            if size >= target:
                yield "".join(buf).encode()
                buf.clear()
                size = 0
        if buf:
            yield "".join(buf).encode()


class ResultsFile:
    """The responses file of a job whose ``results.Batch`` says what it holds (all its requests' results, or a
    partial set), written once its outputs appear."""

    __slots__ = ("file_id", "job", "chunked", "_data")

    def __init__(self, file_id: str, job: Job) -> None:
        self.file_id = file_id
        self.job = job
        self.chunked = bool((job.output or {}).get("chunked", False))
        self._data: tuple[int | None, bytes] | None = None

    def ready(self) -> bool:
        return self.job.output_ready

    def _bytes(self) -> bytes:
        done = self.job.results_done
        if self._data is None or self._data[0] != done:
            assert self.job.batch is not None
            self._data = (done, b"".join(self.job.batch.responses_file(done or 0)))
        return self._data[1]

    def size(self) -> int:
        return len(self._bytes())

    def chunks(self) -> Iterator[bytes]:
        data = self._bytes()
        for start in range(0, len(data), FileOutput.CHUNK):
            yield data[start:start + FileOutput.CHUNK]


class InputFile:
    """A batch's input file (``{"key", "request"}`` lines), there from the start (its spec has ``requests``
    with ``input: file``)."""

    __slots__ = ("file_id", "job", "chunked", "_data")

    def __init__(self, file_id: str, job: Job) -> None:
        self.file_id = file_id
        self.job = job
        self.chunked = False
        self._data: bytes | None = None

    def ready(self) -> bool:
        return True

    def _bytes(self) -> bytes:
        if self._data is None:
            assert self.job.batch is not None
            self._data = b"".join(self.job.batch.input_file())
        return self._data

    def size(self) -> int:
        return len(self._bytes())

    def chunks(self) -> Iterator[bytes]:
        data = self._bytes()
        for start in range(0, len(data), FileOutput.CHUNK):
            yield data[start:start + FileOutput.CHUNK]


class UploadedFile:
    """A file uploaded through the Files API (a batch's input, for ``batchGenerateContent``)."""

    __slots__ = ("file_id", "display_name", "mime_type", "data", "create_t", "job", "chunked")

    def __init__(self, file_id: str, display_name: str, mime_type: str, data: bytes, create_t: float) -> None:
        self.file_id = file_id
        self.display_name = display_name
        self.mime_type = mime_type
        self.data = data
        self.create_t = create_t
        self.job = None
        self.chunked = False

    def ready(self) -> bool:
        return True

    def size(self) -> int:
        return len(self.data)

    def chunks(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), FileOutput.CHUNK):
            yield self.data[start:start + FileOutput.CHUNK]

    def resource(self) -> dict:
        """The ``File`` resource the Files API answers with."""
        created = stamp(self.create_t, 6)
        return {"name": f"files/{self.file_id}", "displayName": self.display_name, "mimeType": self.mime_type,
                "sizeBytes": str(len(self.data)), "createTime": created, "updateTime": created,
                "expirationTime": stamp(self.create_t + 48 * 3600, 6),
                "sha256Hash": hashlib.sha256(self.data).hexdigest(), "uri": f"files/{self.file_id}",
                "state": "ACTIVE", "source": "UPLOADED"}


class _Upload:
    """A resumable upload under way: what ``start`` announced, the bytes received so far."""

    __slots__ = ("display_name", "mime_type", "size", "data")

    def __init__(self, display_name: str, mime_type: str, size: int | None) -> None:
        self.display_name = display_name
        self.mime_type = mime_type
        self.size = size
        self.data = bytearray()


def upload(sim: Simulator, method: str, query: str, headers: dict[str, str], body: bytes,
           keep_alive: bool) -> tuple[int, Reply]:
    """``POST /upload/v1beta/files``: ``X-Goog-Upload-Command: start`` (the API key required) answers an
    ``X-Goog-Upload-URL``; on it, ``upload`` appends at ``X-Goog-Upload-Offset``, ``finalize`` (possibly in
    the same request: ``upload, finalize``) creates the file, ``query`` tells how much arrived."""
    if method != "POST":
        return err(404, f"Method not found: {method} /upload/v1beta/files", keep_alive)
    command = {c.strip() for c in headers.get("x-goog-upload-command", "").lower().split(",") if c.strip()}
    upload_id = (parse_qs(query).get("upload_id") or [None])[0]
    if upload_id is None:
        return _start(sim, command, headers, body, keep_alive)
    session = sim.uploads.get(upload_id)
    if session is None:
        return err(404, "Upload session not found or expired.", keep_alive)
    if "query" in command:
        return 200, Reply(0.0, _status(b"active", keep_alive, size=len(session.data)))
    if "upload" in command:
        offset = headers.get("x-goog-upload-offset", "0")
        if not offset.isdigit() or int(offset) != len(session.data):
            return err(400, f"Upload offset {offset} does not match the {len(session.data)} bytes received.",
                       keep_alive)
        session.data += body
    if "finalize" not in command:
        return 200, Reply(0.0, _status(b"active", keep_alive))
    del sim.uploads[upload_id]
    if session.size is not None and session.size != len(session.data):
        return err(400, f"Upload announced {session.size} bytes but sent {len(session.data)}.", keep_alive)
    file_id = secrets.token_hex(6)
    created = UploadedFile(file_id, session.display_name, session.mime_type, bytes(session.data), time.monotonic())
    sim.files[file_id] = created
    return 200, Reply(0.0, json_payload(200, {"file": created.resource()}, keep_alive,
                                        extra=b"X-Goog-Upload-Status: final\r\n"))


def _start(sim: Simulator, command: set[str], headers: dict[str, str], body: bytes,
           keep_alive: bool) -> tuple[int, Reply]:
    if command != {"start"} or headers.get("x-goog-upload-protocol", "").lower() != "resumable":
        return err(400, "Only resumable uploads are supported: X-Goog-Upload-Protocol: resumable, "
                        "X-Goog-Upload-Command: start.", keep_alive)
    try:
        meta = json.loads(body) if body else {}
    except ValueError:
        return err(400, "Invalid JSON payload received.", keep_alive)
    file = meta.get("file") if isinstance(meta, dict) else None
    display = file.get("display_name") or file.get("displayName") if isinstance(file, dict) else None
    size = headers.get("x-goog-upload-header-content-length")
    upload_id = secrets.token_urlsafe(12)
    sim.uploads[upload_id] = _Upload(str(display or ""), headers.get("x-goog-upload-header-content-type",
                                                                     "application/octet-stream"),
                                     int(size) if size and size.isdigit() else None)
    host = headers.get("host", "127.0.0.1")
    url = f"http://{host}/upload/v1beta/files?upload_id={upload_id}&upload_protocol=resumable"
    return 200, Reply(0.0, _status(b"active", keep_alive, url=url))


def _status(status: bytes, keep_alive: bool, *, url: str | None = None, size: int | None = None) -> bytes:
    extra = b"X-Goog-Upload-Status: " + status + b"\r\n"
    if url is not None:
        extra += b"X-Goog-Upload-URL: " + url.encode() + b"\r\nX-Goog-Upload-Chunk-Granularity: 8388608\r\n"
    if size is not None:
        extra += b"X-Goog-Upload-Size-Received: %d\r\n" % size
    return json_payload(200, {}, keep_alive, extra=extra)


def download(sim: Simulator, file_id: str, query: str, keep_alive: bool) -> tuple[int, Reply]:
    """The file's bytes once it is there (a batch's outputs: once they appeared; 404 before);
    ``chunked=1`` asks for chunked encoding."""
    if sim.random_faults is not None:
        faulted = faults.random_reply(sim.random_faults, sim.rng, GEMINI, None, keep_alive)
        if faulted is not None:
            return faulted
    f = sim.files.get(file_id)
    if f is not None and not f.ready() and f.job is not None:
        f.job.settle(time.monotonic())
    if f is None or not f.ready():
        return err(404, f"File files/{file_id} not found.", keep_alive)
    chunked = f.chunked or "chunked=1" in query
    head = [status_line(200), COMMON_HEADERS, b"Date: ", date(),
            b"\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment\r\n"]
    if chunked:
        head.append(b"Transfer-Encoding: chunked\r\n")
    else:
        head.append(b"Content-Length: %d\r\n" % f.size())
    if not keep_alive:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    return 200, Reply(0.0, b"".join(head), stream=f.chunks(), chunked=chunked)
