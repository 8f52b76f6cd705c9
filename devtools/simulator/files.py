"""Gemini API files: a batch's responses file, generated on the fly (deterministic JSONL, sized without being
generated), and its download, ``GET /download/v1beta/files/{id}:download``, streamed with Content-Length or
chunked. The simulator takes no uploads: a job's input file is only named in its rendering."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from devtools.simulator import faults
from devtools.simulator.wire import COMMON_HEADERS, GEMINI, Reply, date, err, status_line

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


def download(sim: Simulator, file_id: str, query: str, keep_alive: bool) -> tuple[int, Reply]:
    """The file's bytes once its batch has succeeded (404 before); ``chunked=1`` asks for chunked encoding."""
    if sim.random_faults is not None:
        faulted = faults.random_reply(sim.random_faults, sim.rng, GEMINI, None, keep_alive)
        if faulted is not None:
            return faulted
    f = sim.files.get(file_id)
    if f is not None and not f.job.output_ready:
        f.job.settle(time.monotonic())
    if f is None or not f.job.output_ready:
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
