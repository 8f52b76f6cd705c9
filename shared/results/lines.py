"""One line of a batch's outputs, read into a ``Row``: what became of one request.

- ``parse_gemini_line``: a line of a Gemini responses file (``{"key", "response"}`` or ``{"key", "error":
  {"code", "message"}}``), also an inline response in that shape or in the API's own (``{"response" |
  "error", "metadata": {"key"}}``).
- ``parse_vertex_row``: a row of a Vertex AI ``predictions*.jsonl`` file (``{"status", "processed_time",
  "request", "response"}``; a failed row has a non-empty ``status``, e.g. ``"Bad Request: {…}"``, and no or
  an empty ``response``).

Neither ever raises: a line that is not JSON, not an object, or of a shape they do not know is an
``UNPARSED`` row; an empty line is ``BLANK`` (not a request). Token counts are read defensively (every
field optional, int64 as a string accepted, anything else ignored) into exact integers.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from typing import Any

# A count above this is not a token count (and would overflow what Firestore stores once summed).
MAX_COUNT = 10**15
_CODE_TEXT = re.compile(r"[^A-Za-z0-9 _.-]+")
CODE_MAX = 64


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNPARSED = "unparsed"
    BLANK = "blank"


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """A response's ``usageMetadata``. ``prompt`` includes ``cached``; ``total`` is the API's
    ``totalTokenCount`` or, where a row has none, prompt + candidates + tool-use prompt + thoughts."""

    prompt: int = 0
    candidates: int = 0
    thoughts: int = 0
    cached: int = 0
    tool_use_prompt: int = 0
    total: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt + other.prompt, self.candidates + other.candidates, self.thoughts + other.thoughts,
                     self.cached + other.cached, self.tool_use_prompt + other.tool_use_prompt,
                     self.total + other.total)


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One line read. ``usage`` is None for a successful row without ``usageMetadata``; ``error_code`` is
    set on failed rows; ``request`` is the request a failed Vertex row echoes (what ``failed.jsonl`` needs)."""

    outcome: Outcome
    key: str | None = None
    usage: Usage | None = None
    error_code: str | None = None
    request: dict[str, Any] | None = None


BLANK = Row(Outcome.BLANK)
UNPARSED = Row(Outcome.UNPARSED)


def count(value: Any) -> int | None:
    """A token count: a non-negative int (not bool) or its decimal string, at most ``MAX_COUNT``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_COUNT:
        return value
    return None


def parse_usage(metadata: Any) -> Usage | None:
    """``usageMetadata`` → ``Usage``; None when there is none (absent, or not an object)."""
    if not isinstance(metadata, dict):
        return None
    prompt = count(metadata.get("promptTokenCount")) or 0
    candidates = count(metadata.get("candidatesTokenCount")) or 0
    thoughts = count(metadata.get("thoughtsTokenCount")) or 0
    cached = min(count(metadata.get("cachedContentTokenCount")) or 0, prompt)
    tool_use = count(metadata.get("toolUsePromptTokenCount")) or 0
    total = count(metadata.get("totalTokenCount"))
    if total is None:
        total = prompt + candidates + tool_use + thoughts
    return Usage(prompt, candidates, thoughts, cached, tool_use, total)


def error_code(value: Any) -> str:
    """A short, printable code for the errors map: ``"3"``, ``"429"``, ``"INVALID_ARGUMENT"``,
    ``"Bad Request"``; ``"unknown"`` when there is nothing usable. Never of the shape ``__x__``: the map is
    stored in Firestore, which refuses such field names (the whole write would fail)."""
    if isinstance(value, bool) or value is None:
        return "unknown"
    if isinstance(value, int):
        return str(value) if -(10**12) < value < 10**12 else "unknown"
    if isinstance(value, str):
        text = _CODE_TEXT.sub(" ", value).strip()[:CODE_MAX].strip()
        if text.startswith("__") and text.endswith("__"):  # Firestore reserves field names of that shape
            text = text.strip("_").strip()
        return text or "unknown"
    return "unknown"


def _load(line: bytes | str) -> Any:
    """The JSON value of a line; ``UNPARSED`` (the sentinel row) when it is not JSON."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return UNPARSED


def _is_blank(line: bytes | str) -> bool:
    return not line.strip()


def _key(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _gemini_error_code(error: Any) -> str:
    if isinstance(error, dict):
        code = error.get("code")
        if code is None or isinstance(code, bool) or not isinstance(code, int | str):
            code = error.get("status")
        return error_code(code)
    return "unknown"


def parse_gemini_line(line: bytes | str) -> Row:
    """A Gemini responses-file line (or inline response) → ``Row``; never raises."""
    if _is_blank(line):
        return BLANK
    obj = _load(line)
    return gemini_row(obj)


def gemini_row(obj: Any) -> Row:
    """A decoded Gemini responses-file line or inline response → ``Row``; never raises."""
    if not isinstance(obj, dict):
        return UNPARSED
    key = _key(obj.get("key"))
    if key is None and isinstance(obj.get("metadata"), dict):
        key = _key(obj["metadata"].get("key"))
    if obj.get("error") is not None:
        return Row(Outcome.FAILED, key=key, error_code=_gemini_error_code(obj["error"]))
    response = obj.get("response")
    if isinstance(response, dict):
        return Row(Outcome.SUCCEEDED, key=key, usage=parse_usage(response.get("usageMetadata")))
    return UNPARSED


def _vertex_status_code(status: str) -> str:
    """``"Bad Request: {"error": {"code": 400, …}}"`` → ``"400"``; else the text before the first colon."""
    head, sep, rest = status.partition(":")
    if sep:
        inner = _load(rest.strip())
        if isinstance(inner, dict):
            err = inner.get("error", inner)
            if isinstance(err, dict):
                code = err.get("code")
                if isinstance(code, int) and not isinstance(code, bool):
                    return error_code(code)
                if isinstance(err.get("status"), str):
                    return error_code(err["status"])
    return error_code(head)


def _drop_nulls(value: Any, depth: int = 0) -> Any:
    """The echoed request without ``null`` members (Vertex echoes unset fields as null; in proto JSON a null
    is the field's default, so the request means the same without them)."""
    if depth > 200:
        return value
    if isinstance(value, dict):
        return {k: _drop_nulls(v, depth + 1) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v, depth + 1) for v in value]
    return value


def parse_vertex_row(line: bytes | str) -> Row:
    """A Vertex AI prediction row → ``Row``; never raises."""
    if _is_blank(line):
        return BLANK
    return vertex_row(_load(line))


def vertex_row(obj: Any) -> Row:
    """A decoded Vertex AI prediction row → ``Row``; never raises."""
    if not isinstance(obj, dict):
        return UNPARSED
    status = obj.get("status")
    response = obj.get("response")
    request = obj.get("request")
    echoed = _drop_nulls(request) if isinstance(request, dict) else None
    if isinstance(status, str) and status.strip():
        return Row(Outcome.FAILED, error_code=_vertex_status_code(status), request=echoed)
    if status is not None and not isinstance(status, str):
        return UNPARSED
    if isinstance(response, dict) and response:
        return Row(Outcome.SUCCEEDED, usage=parse_usage(response.get("usageMetadata")))
    if "prediction" in obj:  # a classic model's row: no usage
        return Row(Outcome.SUCCEEDED)
    if response is None or response == {}:
        if isinstance(request, dict):  # an echoed request without a result: it did not succeed
            return Row(Outcome.FAILED, error_code="no response", request=echoed)
        return UNPARSED
    return UNPARSED


def is_prediction_file(name: str) -> bool:
    """Whether an object of a Vertex output directory holds prediction rows (``predictions*.jsonl``)."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith("predictions") and base.endswith(".jsonl")
