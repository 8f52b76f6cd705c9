"""Bytes as a download delivers them → JSONL lines, in bounded memory.

``LineSplitter.feed(chunk)`` returns every line a chunk completes (without its ``\\n``); ``end()`` returns
the last line when the data does not end with a newline. A line longer than ``max_line`` is not kept: it
is returned once as ``TOO_LONG`` (callers count it as unparsed) and its remaining bytes are skipped, so
memory stays at most ``max_line`` plus one chunk whatever the data holds.
"""

from __future__ import annotations

MAX_LINE = 32 * 1024 * 1024
TOO_LONG = b"\x00too long\x00"  # never a JSON line: it reads as unparsed


class LineSplitter:
    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max = max_line
        self._buf = bytearray()
        self._skipping = False  # inside a line already reported as TOO_LONG

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes, in order (one ``bytes.split`` of the chunk: no loop per line here)."""
        if self._skipping:
            end = chunk.find(b"\n")
            if end < 0:
                return []
            self._skipping = False
            chunk = chunk[end + 1:]
        longest = len(self._buf) + len(chunk)  # no line of this chunk can be longer
        lines = chunk.split(b"\n")
        rest = lines.pop()  # the line the chunk leaves unfinished (b"" when it ends with a newline)
        if self._buf and lines:
            self._buf += lines[0]
            lines[0] = bytes(self._buf)
            self._buf.clear()
        if longest > self._max and lines:
            limit = self._max
            lines = [TOO_LONG if len(line) > limit else line for line in lines]
        if rest:
            if len(self._buf) + len(rest) > self._max:
                self._buf.clear()
                self._skipping = True
                lines.append(TOO_LONG)
            else:
                self._buf += rest
        return lines

    def end(self) -> list[bytes]:
        """The last line, when the data does not end with a newline."""
        line = bytes(self._buf) if self._buf and not self._skipping else None
        self._buf.clear()
        self._skipping = False
        return [] if line is None else [line]
