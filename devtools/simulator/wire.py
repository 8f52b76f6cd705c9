"""What both APIs share on the wire: API and state names, gRPC statuses, timestamps, Google error bodies, and
the framing of an HTTP/1.1 reply (status line, the headers Google's front end sends, Content-Length)."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Iterator
from typing import Any

GEMINI = "gemini"
VERTEX = "vertex"

GEMINI_STATES = frozenset("UNSPECIFIED PENDING RUNNING SUCCEEDED FAILED CANCELLED EXPIRED".split())
VERTEX_STATES = frozenset(
    "UNSPECIFIED QUEUED PENDING RUNNING SUCCEEDED FAILED CANCELLING CANCELLED PAUSED EXPIRED UPDATING "
    "PARTIALLY_SUCCEEDED".split()
)
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "PARTIALLY_SUCCEEDED"})
SUCCESS = frozenset({"SUCCEEDED", "PARTIALLY_SUCCEEDED"})
STARTED = frozenset({"RUNNING", "UPDATING", "SUCCEEDED", "PARTIALLY_SUCCEEDED"})
PREFIX = {GEMINI: "BATCH_STATE_", VERTEX: "JOB_STATE_"}
ALLOWED = {GEMINI: GEMINI_STATES, VERTEX: VERTEX_STATES}

VERTEX_NAME = re.compile(r"^projects/([^/]+)/locations/([^/]+)/batchPredictionJobs/([^/:]+)$")
GEMINI_NAME = re.compile(r"^batches/([^/:]+)$")

GRPC_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
    501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}

REASONS = {
    200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 411: "Length Required",
    413: "Payload Too Large", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}
_STATUS_LINES: dict[int, bytes] = {}


def status_line(code: int) -> bytes:
    line = _STATUS_LINES.get(code)
    if line is None:
        line = _STATUS_LINES[code] = b"HTTP/1.1 %d %s\r\n" % (code, REASONS.get(code, "Status").encode())
    return line


JSON_TYPE = b"application/json; charset=UTF-8"
COMMON_HEADERS = b"Server: ESF\r\nVary: Origin, X-Origin, Referer\r\nX-Content-Type-Options: nosniff\r\n"

# wall-clock seconds = monotonic seconds + WALL_OFFSET (for the rendered timestamps)
WALL_OFFSET = time.time() - time.monotonic()


def stamp(t: float, digits: int) -> str:
    """RFC 3339 UTC timestamp of monotonic time ``t`` with ``digits`` (6 or 9) fractional digits."""
    ns = int((t + WALL_OFFSET) * 1e9)
    sec, frac = divmod(ns, 1_000_000_000)
    if digits == 6:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac // 1000:06d}Z"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


def google_error(code: int, message: str, status: str | None = None, **extra: Any) -> dict:
    err: dict[str, Any] = {"code": code, "message": message,
                           "status": status or GRPC_STATUS.get(code, "UNKNOWN")}
    err.update(extra)
    return {"error": err}


class SpecError(ValueError):
    """A bad admin request (answered with 400) or an unknown job (404 when ``code`` says so)."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code


# --- replies -----------------------------------------------------------------------------------------------


class Reply:
    """What to send: a complete payload, or headers plus a stream of body chunks, after ``delay`` seconds."""

    __slots__ = ("delay", "payload", "stream", "chunked", "drop")

    def __init__(self, delay: float, payload: bytes, stream: Iterator[bytes] | None = None,
                 chunked: bool = False, drop: bool = False) -> None:
        self.delay = delay
        self.payload = payload
        self.stream = stream
        self.chunked = chunked
        self.drop = drop


class _DateHeader:
    """The ``Date`` header's value, formatted once a second."""

    second = -1
    value = b""


def date() -> bytes:
    now = int(time.time())
    if now != _DateHeader.second:
        _DateHeader.second = now
        _DateHeader.value = email.utils.formatdate(now, usegmt=True).encode()
    return _DateHeader.value


def payload(code: int, body: bytes, keep_alive: bool, ctype: bytes = JSON_TYPE, extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 response with a Content-Length body."""
    return b"".join((
        status_line(code), COMMON_HEADERS, b"Date: ", date(), b"\r\nContent-Type: ", ctype,
        b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n", extra,
        b"" if keep_alive else b"Connection: close\r\n", b"\r\n", body,
    ))


def json_payload(code: int, obj: Any, keep_alive: bool, extra: bytes = b"") -> bytes:
    return payload(code, json.dumps(obj).encode(), keep_alive, extra=extra)


def err(code: int, message: str, keep_alive: bool, status: str | None = None,
        extra: bytes = b"") -> tuple[int, Reply]:
    """A Google error body with ``code`` (``status`` from the code unless given)."""
    return code, Reply(0.0, json_payload(code, google_error(code, message, status), keep_alive, extra))


def ok(body: bytes, keep_alive: bool) -> tuple[int, Reply]:
    return 200, Reply(0.0, payload(200, body, keep_alive))


def no_method(method: str, path: str, keep_alive: bool) -> tuple[int, Reply]:
    """What Google's front end answers for a path or method it does not serve."""
    return err(404, f"Method not found: {method} {path}", keep_alive)


def job_not_found(api: str, name: str, keep_alive: bool) -> tuple[int, Reply]:
    if api == GEMINI:
        return err(404, f"Requested entity was not found: {name} not found", keep_alive)
    return err(404, f"BatchPredictionJob {name} not found", keep_alive)
