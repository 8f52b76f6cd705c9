"""Bytes as a download delivers them → JSONL lines, in bounded memory.

``LineSplitter.feed(chunk)`` yields every line a chunk completes (without its ``\\n``); ``end()`` yields
the last line when the data does not end with a newline. A line longer than ``max_line`` is not kept: it
is yielded once as ``TOO_LONG`` (callers count it as unparsed) and its remaining bytes are skipped, so
memory stays at most ``max_line`` plus one chunk whatever the data holds.
"""

from __future__ import annotations

from collections.abc import Iterator

MAX_LINE = 32 * 1024 * 1024
TOO_LONG = b"\x00too long\x00"  # never a JSON line: it reads as unparsed


class LineSplitter:
    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max = max_line
        self._buf = bytearray()
        self._skipping = False  # inside a line already reported as TOO_LONG

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            elif len(self._buf) + end - start > self._max:
                self._buf.clear()
                yield TOO_LONG
            else:
                if self._buf:
                    self._buf += chunk[start:end]
                    line = bytes(self._buf)
                    self._buf.clear()
                else:
                    line = chunk[start:end]
                yield line
            start = end + 1
        rest = len(chunk) - start
        if rest and not self._skipping:
            if len(self._buf) + rest > self._max:
                self._buf.clear()
                self._skipping = True
                yield TOO_LONG
            else:
                self._buf += chunk[start:]

    def end(self) -> Iterator[bytes]:
        if self._buf and not self._skipping:
            line = bytes(self._buf)
            self._buf.clear()
            yield line
        self._skipping = False
