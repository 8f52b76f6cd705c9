"""The elements of one JSON array inside a JSON document, read one at a time as the bytes arrive (stdlib only).

A Gemini batch's inline responses can be hundreds of megabytes inside one reply; decoding the reply whole
holds the body, its text and every decoded response at once. ``ArrayStream`` walks the document instead:
objects on the way to the array are entered key by key, every other value is decoded and dropped, and each
element of the array is decoded on its own (``json.JSONDecoder.raw_decode``, C speed) and handed out. Memory
is about one element and one read of the body, whatever the array's length.

- ``paths``: where the array may be (tuples of object keys); the first one met is read, the elements of any
  other are decoded one by one and dropped (a reply may carry the same responses twice). A ``null`` there
  reads as no array.
- ``max_value``: the most characters one value may span (an element, or a value that is skipped whole);
  beyond it, or for a body that is not one JSON document, ``JsonStreamError``.
- While a value is incomplete, arriving text is kept in a list and joined to the buffer only once the
  buffer would double: a large element costs a number of joins and decoding attempts logarithmic in its
  size, never a copy of the buffer per chunk.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncIterable, Generator, Iterable, Iterator
from typing import Any

MAX_VALUE = 256 * 1024 * 1024
_WS = re.compile(r"[ \t\n\r]*")
_AFTER_NUMBER = " \t\n\r,]}"
_DECODER = json.JSONDecoder()


class JsonStreamError(ValueError):
    """The body is not one JSON document, or holds a value longer than ``max_value``."""


class _More(Exception):
    """Internal: the buffer ends before the value does."""


class ArrayStream:
    """Push parser: ``feed`` bytes, get the array elements completed so far; ``close`` at the end."""

    def __init__(self, paths: Iterable[tuple[str, ...]], *, max_value: int = MAX_VALUE) -> None:
        self._paths = {tuple(p) for p in paths}
        self._prefixes = {p[:i] for p in self._paths for i in range(len(p))}
        self._max = max_value
        self._text = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""
        self._pos = 0
        self._pending: list[str] = []  # text arrived since the buffer was last joined
        self._pending_len = 0
        self._eof = False
        self._want = 0  # characters the buffer must hold before the next attempt (doubling)
        self._out: list[Any] = []
        self.found: tuple[str, ...] | None = None  # the path read, once met
        self._walk = self._document()
        self._done = False

    def feed(self, data: bytes) -> list[Any]:
        """The elements completed by ``data`` (possibly none)."""
        try:
            self._hold(self._text.decode(data))
        except UnicodeDecodeError as exc:
            raise JsonStreamError(f"body is not UTF-8: {exc}") from None
        self._run()
        return self._take()

    def close(self) -> list[Any]:
        """The last elements; ``JsonStreamError`` when the body ended inside the document."""
        try:
            self._hold(self._text.decode(b"", final=True))
        except UnicodeDecodeError as exc:
            raise JsonStreamError(f"body is not UTF-8: {exc}") from None
        self._eof = True
        self._want = 0
        self._run()
        if not self._done:
            raise JsonStreamError("body ended inside the JSON document")
        return self._take()

    def _take(self) -> list[Any]:
        out, self._out = self._out, []
        return out

    def _hold(self, text: str) -> None:
        if text:
            self._pending.append(text)
            self._pending_len += len(text)

    def _run(self) -> None:
        if self._done or (not self._eof and len(self._buf) - self._pos + self._pending_len < self._want):
            return
        if self._pending:  # one join, dropping what was read
            self._buf = self._buf[self._pos:] + "".join(self._pending)
            self._pos, self._pending, self._pending_len = 0, [], 0
        try:
            next(self._walk)
        except StopIteration:
            self._done = True

    # -- the walk: a generator that yields when it needs more text ----------------------------------------
    def _need(self) -> Generator[None, None, None]:
        """Wait for more text than the buffer holds now (at least twice as much); at the end, an error."""
        if self._eof:
            raise JsonStreamError("body ended inside the JSON document")
        held = len(self._buf) - self._pos
        if held > self._max:
            raise JsonStreamError(f"a value is longer than {self._max} characters")
        self._want = max(2 * held, 1)
        yield

    def _peek(self) -> Generator[None, None, str]:
        """The next character that is not whitespace (the position left on it)."""
        while True:
            self._pos = _WS.match(self._buf, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            yield from self._need()

    def _decode(self) -> Generator[None, None, Any]:
        """The whole value at the position (more text read until it is complete)."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                if self._eof:
                    raise JsonStreamError(f"not JSON: {exc.msg} at character {exc.pos}") from None
            else:
                # A number is complete only once a delimiter follows it ("0" may go on as "0.5" or "0e1").
                number = isinstance(value, int | float) and not isinstance(value, bool)
                if self._eof or (end < len(self._buf) and (not number or self._buf[end] in _AFTER_NUMBER)):
                    self._pos = end
                    return value
            yield from self._need()

    def _expect(self, allowed: str) -> Generator[None, None, str]:
        c = yield from self._peek()
        if c not in allowed:
            raise JsonStreamError(f"expected one of {allowed!r} at character {self._pos}, found {c!r}")
        self._pos += 1
        return c

    def _document(self) -> Generator[None, None, None]:
        yield from self._value(())
        while True:  # nothing but whitespace may follow the document
            self._pos = _WS.match(self._buf, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._buf):
                raise JsonStreamError(f"text after the JSON document at character {self._pos}")
            if self._eof:
                return
            self._buf, self._pos, self._want = "", 0, 1
            yield

    def _value(self, path: tuple[str, ...]) -> Generator[None, None, None]:
        c = yield from self._peek()
        if path in self._paths and c == "[":
            yield from self._array(path)
        elif path in self._paths:
            if (yield from self._decode()) is not None:
                raise JsonStreamError(f"{'.'.join(path)} is not a list")
        elif path in self._prefixes and c == "{":
            yield from self._object(path)
        else:
            yield from self._decode()  # dropped

    def _object(self, path: tuple[str, ...]) -> Generator[None, None, None]:
        self._pos += 1  # "{"
        c = yield from self._peek()
        if c == "}":
            self._pos += 1
            return
        while True:
            c = yield from self._peek()
            if c != '"':
                raise JsonStreamError(f"expected a key at character {self._pos}")
            key = yield from self._decode()
            yield from self._expect(":")
            yield from self._value((*path, key))
            if (yield from self._expect(",}")) == "}":
                return

    def _array(self, path: tuple[str, ...]) -> Generator[None, None, None]:
        self._pos += 1  # "["
        keep = self.found is None
        if keep:
            self.found = path
        c = yield from self._peek()
        if c == "]":
            self._pos += 1
            return
        while True:
            yield from self._peek()
            element = yield from self._decode()
            if keep:
                self._out.append(element)
            if (yield from self._expect(",]")) == "]":
                return


def iter_array(chunks: Iterable[bytes], paths: Iterable[tuple[str, ...]], *,
               max_value: int = MAX_VALUE) -> Iterator[Any]:
    """The array's elements from a body given in pieces (``ArrayStream``)."""
    stream = ArrayStream(paths, max_value=max_value)
    for chunk in chunks:
        yield from stream.feed(chunk)
    yield from stream.close()


async def aiter_array(chunks: AsyncIterable[bytes], paths: Iterable[tuple[str, ...]], *,
                      max_value: int = MAX_VALUE) -> Any:
    """``iter_array`` over an async body (an ``httpx`` response's ``aiter_bytes``)."""
    stream = ArrayStream(paths, max_value=max_value)
    async for chunk in chunks:
        for element in stream.feed(chunk):
            yield element
    for element in stream.close():
        yield element
