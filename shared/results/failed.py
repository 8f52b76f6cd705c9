"""``failed.jsonl``: the requests to send again, one line each, in the API's own input format.

- ``FailedLines`` holds the lines as they are found (in memory up to ``SPOOL_BYTES``, then in a temporary
  file) and gives them back in chunks for the upload.
- Vertex AI: a failed prediction row echoes its request: its line is ``{"request": …}``, written as the
  row is read (``vertex_line``).
- Gemini API: a failed line names only its ``key``; the request is in the batch's input. ``GeminiJoin``
  reads that input once, after the outputs (a JSONL file of ``{"key", "request"}``, or the batch's inline
  ``{"request", "metadata": {"key"}}``), and writes ``{"key", "request"}`` for every input whose key failed
  — and, when asked to, for every input whose key has no result at all (a batch that ended before it
  finished). Keys are joined as a multiset of 16-byte digests, never by position.
"""

from __future__ import annotations

import collections
import hashlib
import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

from .chunks import MAX_LINE, LineSplitter

SPOOL_BYTES = 8 * 1024 * 1024
CHUNK = 256 * 1024


def key_digest(key: str) -> bytes:
    """A request key as the join holds it (16 bytes, whatever the key's length)."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _dumps(obj: dict[str, Any]) -> bytes | None:
    """One JSONL line; None for a value JSON cannot hold again (nested deeper than the encoder goes)."""
    try:
        try:
            return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        except UnicodeEncodeError:  # a lone surrogate from a \\ud800 escape: keep it escaped
            return json.dumps(obj, separators=(",", ":")).encode("ascii") + b"\n"
    except (ValueError, RecursionError):
        return None


class FailedLines:
    """The lines of ``failed.jsonl``: ``add`` as they are found, then ``chunks`` (or ``aiter_chunks``) to
    upload them, ``close`` when done."""

    def __init__(self, spool_bytes: int = SPOOL_BYTES) -> None:
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=spool_bytes)  # closed by close()
        self.count = 0
        self.size = 0

    def add(self, obj: dict[str, Any]) -> bool:
        """Append one line; False (nothing written) when ``obj`` cannot be written as JSON."""
        data = _dumps(obj)
        if data is None:
            return False
        self._file.write(data)
        self.count += 1
        self.size += len(data)
        return True

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        self._file.seek(0)
        while piece := self._file.read(size):
            yield piece
        self._file.seek(0, 2)

    async def aiter_chunks(self, size: int = CHUNK) -> AsyncIterator[bytes]:
        for piece in self.chunks(size):
            yield piece

    def getvalue(self) -> bytes:
        return b"".join(self.chunks())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FailedLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def vertex_line(request: dict[str, Any]) -> dict[str, Any]:
    """The ``failed.jsonl`` line of a failed Vertex row: its echoed request, as Vertex AI takes it again."""
    return {"request": request}


class GeminiJoin:
    """Joins a Gemini batch's input with what its outputs said, by key.

    ``failed``: the digests of the keys of failed lines (a multiset); ``succeeded``: the digests of the keys
    of successful lines, or None not to look for requests without a result. Each input line or inline
    request is fed once; ``failed_written`` and ``unfinished_written`` count what went to ``out``."""

    def __init__(self, failed: collections.Counter[bytes], succeeded: collections.Counter[bytes] | None,
                 out: FailedLines, *, max_line: int = MAX_LINE) -> None:
        self._failed = failed
        self._succeeded = succeeded
        self._out = out
        self._lines = LineSplitter(max_line)
        self.inputs = 0  # input requests read
        self.unreadable = 0  # input lines without a string key or an object request
        self.failed_written = 0
        self.unfinished_written = 0
        self.unwritable = 0  # requests JSON could not write again

    def feed_input_line(self, line: bytes) -> None:
        """One line of the input file (``{"key", "request"}``); never raises."""
        if not line.strip():
            return
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            self._one(obj.get("key"), obj.get("request"))
        else:
            self.inputs += 1
            self.unreadable += 1

    def feed_input_chunk(self, chunk: bytes) -> None:
        """Bytes of the input file as they arrive; ``end_input`` after the last."""
        for line in self._lines.feed(chunk):
            self.feed_input_line(line)

    def end_input(self) -> None:
        for line in self._lines.end():
            self.feed_input_line(line)

    def feed_inline_request(self, item: Any) -> None:
        """One of the batch's ``inputConfig.requests.requests[]`` (``{"request", "metadata": {"key"}}``)."""
        meta = item.get("metadata") if isinstance(item, dict) else None
        key = meta.get("key") if isinstance(meta, dict) else None
        self._one(key, item.get("request") if isinstance(item, dict) else None)

    def _one(self, key: Any, request: Any) -> None:
        self.inputs += 1
        if not isinstance(key, str) or not isinstance(request, dict):
            self.unreadable += 1
            return
        digest = key_digest(key)
        if self._failed[digest] > 0:
            self._failed[digest] -= 1
            if self._out.add({"key": key, "request": request}):
                self.failed_written += 1
            else:
                self.unwritable += 1
        elif self._succeeded is not None:
            if self._succeeded[digest] > 0:
                self._succeeded[digest] -= 1
            elif self._out.add({"key": key, "request": request}):
                self.unfinished_written += 1
            else:
                self.unwritable += 1

    @property
    def failed_not_found(self) -> int:
        """Failed keys the input did not hold (after every input was fed)."""
        return sum(n for n in self._failed.values() if n > 0)
