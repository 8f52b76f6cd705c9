"""A faithful batch-API simulator: one HTTP server speaking the Gemini API batches (v1beta) and the Vertex AI
batchPredictionJobs (v1) wire formats (see docs/wire.md), with scripted job timelines and injectable
latency and faults.

Run it with ``python -m devtools.simulator --port N [--host 127.0.0.1] [--latency-ms X] [--api-key K]
[--seed S]``. The server is written on raw ``asyncio`` (an ``asyncio.Protocol`` with a minimal HTTP/1.1
parser, keep-alive, Content-Length request bodies, Content-Length or chunked responses) so it costs little
CPU per request; latency is injected with ``loop.call_later``. Stdlib only; ``SimulatorClient`` (the admin
helper at the bottom) uses httpx.

Admin API (JSON in and out, never delayed, never faulted, not counted in stats):

- ``GET  /_sim/health`` -> ``{"ok": true}``
- ``POST /_sim/reset`` clears jobs, files, faults, stats; config goes back to the command-line values
- ``POST /_sim/config`` ``{"latency_ms", "api_key", "random_faults": {"rate", "kinds", "seed", "delay_s"},
  "project_numbers": {"proj-a": "123456"}, "list_page_max": {"gemini": 1000, "vertex": 1000}}`` (keys left
  out are unchanged) -> the whole config. ``project_numbers``: Vertex renders those projects' job names with
  the number (as the real API does) and answers under either form. ``list_page_max``: the largest page a
  list returns whatever ``pageSize`` asks for (without ``pageSize``: 50 Gemini, 100 Vertex)
- ``POST /_sim/lists/faults`` ``{"api": "gemini"|"vertex", "faults": [{"kind", "count"}]}``: the next list
  pages of that API fail: ``429``/``500``/``503``/… (status), ``malformed`` (not JSON), ``wrong_shape``,
  ``no_names`` (items without names), ``foreign_names`` (items of another scope), ``endless`` (the same
  page again and again, always with a next page token)
- ``POST /_sim/lists/stale`` ``{"name", "count"}``: the job's next ``count`` list appearances show it as it
  was before its last change (an eventually consistent list)
- ``"webhooks": {"url", "secret", "ed25519", "delay_s", "jitter_s", "duplicates", "drop", "id_form",
  "attempts"}`` in ``/_sim/config``: signed Standard Webhooks deliveries when Gemini batches end (see
  ``Webhooks``); ``GET /_sim/webhooks/jwks.json`` publishes the Ed25519 key of ``v1a`` signatures. With
  webhooks on, Gemini batches end on their own time instead of when next looked at
- ``POST /_sim/jobs`` ``{"jobs": [spec, ...]}`` -> ``{"created": n}`` (all or nothing; a name that exists
  is replaced)
- ``POST /_sim/jobs/set`` ``{"name", "state", "stats"?, "error"?, "timeline"?}`` force a state now; the rest
  of the scripted timeline is dropped (or replaced by ``timeline``, whose steps follow from now)
- ``POST /_sim/jobs/faults`` ``{"name", "faults": [...]}`` append faults to a job
- ``POST /_sim/jobs/delete`` ``{"name"}``
- ``GET  /_sim/jobs/get?name=`` -> ``{"name", "api", "state", "polls", "step", "steps", "faults_left",
  "stats", "error", "gets"}``
- ``GET  /_sim/stats`` -> ``{"requests", "status_gets", "by_code", "max_in_flight", "in_flight",
  "user_projects", "per_job_gets", "connections_opened", "connections_open", "list_pages", "list_filters"}``;
  ``POST /_sim/stats/reset``
- ``GET  /_sim/config``

Job spec::

    {"name": "batches/abc" | "projects/p/locations/us-central1/batchPredictionJobs/123",
     "display_name": "...", "model": "...",
     "timeline": [{"state": "PENDING"},
                  {"state": "RUNNING", "after_polls": 1, "stats": {"successful": 1, "failed": 0,
                                                                   "incomplete": 9}},
                  {"state": "SUCCEEDED", "after_s": 2.5, "error": null}],
     "output": {"kind": "file", "file_id": "batch-abc", "lines": 100, "line_bytes": 200, "errors": 0,
                "chunked": false}
             | {"kind": "inline", "count": 5, "errors": 1}
             | {"kind": "gcs", "uri": "gs://bucket/prefix/prediction-model-..."}
             | {"kind": "bigquery", "table": "bq://proj.dataset.predictions_..."} | null,
     "faults": [{"kind": "429", "count": 2}, {"kind": "429", "retry_after": 1},
                {"kind": "500" | "503" | "404" | "403" | "malformed" | "garbage" | "slow" | "drop",
                 "count": n, "delay_s": 30}],
     "labels": {...}, "input": {...Vertex inputConfig}, "created_ago_s": 0}

Lists: ``GET /v1beta/batches`` (Gemini, ``operations``) and ``GET /v1/{parent}/batchPredictionJobs``
(Vertex, ``batchPredictionJobs``) with ``pageSize``, ``pageToken``, ``readMask`` (Vertex: top-level fields
kept) and ``filter`` (Vertex; Gemini answers 400): the AIP-160 subset of ``compile_filter`` — ``AND``,
``OR`` (binding tighter, as in AIP-160), ``NOT``, parentheses, ``state`` = !=, ``create_time`` = != < <= >
>=, ``display_name`` = != and ``:`` wildcards, ``labels.k=v``, ``labels.k:*``.

A step without ``after_polls``/``after_s`` takes effect after one poll. ``after_polls`` counts successful
status GETs of the job at the previous step (a faulted GET is not a poll); ``after_s`` counts from the
moment the previous step took effect. Transitions are evaluated lazily (status GET, list, admin get).
Result keys (inline and file) are ``req-1`` .. ``req-N``; the last ``errors`` of them are errors.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import datetime as dt
import email.utils
import gc
import json
import math
import operator
import random
import re
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote

# --------------------------------------------------------------------------------------------------------
# wire constants

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

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
DELETE_METADATA_TYPE = "type.googleapis.com/google.cloud.aiplatform.v1.DeleteOperationMetadata"
GEMINI_MODEL = "models/gemini-2.5-flash"
VERTEX_MODEL = "publishers/google/models/gemini-2.5-flash"

_VERTEX_NAME = re.compile(r"^projects/([^/]+)/locations/([^/]+)/batchPredictionJobs/([^/:]+)$")
_GEMINI_NAME = re.compile(r"^batches/([^/:]+)$")

GRPC_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
    501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
FAULT_MESSAGES = {
    400: "Request contains an invalid argument.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    408: "Request timed out.",
    409: "The operation was aborted.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "Internal error encountered.",
    502: "Bad gateway.",
    503: "The service is currently unavailable.",
    504: "Deadline exceeded.",
}
STATUS_FAULTS = frozenset(str(c) for c in FAULT_MESSAGES)
FAULT_KINDS = STATUS_FAULTS | {"malformed", "garbage", "slow", "drop"}
DEFAULT_SLOW_S = 30.0

REASONS = {
    200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 411: "Length Required",
    413: "Payload Too Large", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(code: int) -> bytes:
    line = _STATUS_LINES.get(code)
    if line is None:
        line = _STATUS_LINES[code] = b"HTTP/1.1 %d %s\r\n" % (code, REASONS.get(code, "Status").encode())
    return line


JSON_TYPE = b"application/json; charset=UTF-8"
COMMON_HEADERS = b"Server: ESF\r\nVary: Origin, X-Origin, Referer\r\nX-Content-Type-Options: nosniff\r\n"

# wall-clock seconds = monotonic seconds + _WALL_OFFSET (for the rendered timestamps)
_WALL_OFFSET = time.time() - time.monotonic()


def _stamp(t: float, digits: int) -> str:
    """RFC 3339 UTC timestamp of monotonic time ``t`` with ``digits`` (6 or 9) fractional digits."""
    ns = int((t + _WALL_OFFSET) * 1e9)
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


# --------------------------------------------------------------------------------------------------------
# jobs


def _short_state(api: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"state must be a non-empty string, not {value!r}")
    text = value.strip().upper()
    for prefix in ("BATCH_STATE_", "JOB_STATE_"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if text not in ALLOWED[api]:
        raise SpecError(f"state {value!r} does not exist in the {api} API; one of "
                        f"{', '.join(PREFIX[api] + s for s in sorted(ALLOWED[api]))}")
    return text


_STAT_KEYS = {"successful": "successful", "succeeded": "successful", "failed": "failed",
              "incomplete": "incomplete", "pending": "incomplete", "total": "total", "requests": "total"}


def _parse_stats(value: Any) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError(f"stats must be an object, not {value!r}")
    out: dict[str, int] = {}
    for key, count in value.items():
        field = _STAT_KEYS.get(key)
        if field is None:
            raise SpecError(f"unknown stats key {key!r}; use successful, failed, incomplete, total")
        if isinstance(count, bool) or not isinstance(count, int):
            raise SpecError(f"stats.{key} must be an integer, not {count!r}")
        out[field] = count
    return out


def _parse_error(value: Any) -> dict | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return {"code": value, "message": f"Error {value}."}
    if not isinstance(value, dict) or not isinstance(value.get("code", 0), int):
        raise SpecError(f"error must be {{'code': int, 'message': str}}, not {value!r}")
    return {"code": value.get("code", 2), "message": str(value.get("message", "Unknown error."))}


class Step:
    __slots__ = ("state", "after_polls", "after_s", "stats", "error")

    def __init__(self, state: str, after_polls: int | None, after_s: float | None,
                 stats: dict | None, error: dict | None) -> None:
        self.state = state
        self.after_polls = after_polls
        self.after_s = after_s
        self.stats = stats
        self.error = error


def _parse_steps(api: str, timeline: Any, where: str) -> list[Step]:
    if not isinstance(timeline, list):
        raise SpecError(f"{where}: timeline must be a list of steps")
    steps = []
    for i, raw in enumerate(timeline):
        if isinstance(raw, str):
            raw = {"state": raw}
        if not isinstance(raw, dict):
            raise SpecError(f"{where}: timeline[{i}] must be an object")
        try:
            state = _short_state(api, raw.get("state"))
            after_polls = raw.get("after_polls")
            after_s = raw.get("after_s")
            if after_polls is not None and (isinstance(after_polls, bool) or not isinstance(after_polls, int)
                                            or after_polls < 0):
                raise SpecError(f"after_polls must be a non-negative integer, not {after_polls!r}")
            if after_s is not None:
                if isinstance(after_s, bool) or not isinstance(after_s, int | float) or after_s < 0:
                    raise SpecError(f"after_s must be a non-negative number, not {after_s!r}")
                after_s = float(after_s)
            if after_polls is None and after_s is None:
                after_polls = 1
            steps.append(Step(state, after_polls, after_s, _parse_stats(raw.get("stats")),
                              _parse_error(raw.get("error"))))
        except SpecError as exc:
            raise SpecError(f"{where}: timeline[{i}]: {exc}") from None
    return steps


def _parse_faults(value: Any, where: str) -> collections.deque:
    faults: collections.deque = collections.deque()
    if value is None:
        return faults
    if not isinstance(value, list):
        raise SpecError(f"{where}: faults must be a list")
    for i, raw in enumerate(value):
        if isinstance(raw, str | int):
            raw = {"kind": str(raw)}
        if not isinstance(raw, dict):
            raise SpecError(f"{where}: faults[{i}] must be an object")
        kind = str(raw.get("kind"))
        if kind not in FAULT_KINDS:
            raise SpecError(f"{where}: faults[{i}]: unknown kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        count = raw.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise SpecError(f"{where}: faults[{i}]: count must be a non-negative integer")
        if count:
            faults.append([kind, count, raw])
    return faults


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


class Job:
    __slots__ = ("name", "api", "job_id", "display_name", "model", "steps", "step", "polls", "step_t",
                 "state", "stats", "error", "output", "faults", "labels", "input_config", "create_t",
                 "update_t", "start_t", "end_t", "cancel_pending", "output_ready", "cache", "total",
                 "_inline", "rendered_name", "prev_body", "stale_lists", "masked", "listener")

    def __init__(self, spec: dict, now: float) -> None:
        name = spec.get("name")
        if not isinstance(name, str):
            raise SpecError(f"job spec needs a string name, got {name!r}")
        where = name
        if m := _GEMINI_NAME.match(name):
            self.api = GEMINI
        elif m := _VERTEX_NAME.match(name):
            self.api = VERTEX
        else:
            raise SpecError(f"{name!r} is neither batches/ID nor "
                            "projects/P/locations/L/batchPredictionJobs/ID")
        self.name = name
        self.job_id = m.group(m.lastindex)
        self.display_name = str(spec.get("display_name") or spec.get("displayName") or "")
        self.model = str(spec.get("model") or (GEMINI_MODEL if self.api == GEMINI else VERTEX_MODEL))
        timeline = spec.get("timeline")
        if timeline is None:
            timeline = [{"state": "PENDING"}] if self.api == GEMINI else [{"state": "QUEUED"}]
        self.steps = _parse_steps(self.api, timeline, where)
        if not self.steps:
            raise SpecError(f"{where}: timeline is empty")
        self.faults = _parse_faults(spec.get("faults"), where)
        labels = spec.get("labels") or {}
        if not isinstance(labels, dict):
            raise SpecError(f"{where}: labels must be an object")
        self.labels = {str(k): str(v) for k, v in labels.items()}
        self.input_config = spec.get("input")
        self.output = self._parse_output(spec.get("output"), where)
        self.total: int | None = None
        if self.output and self.output["kind"] in ("file", "inline"):
            self.total = self.output["count"]
        self._inline: list | None = None
        self.stats: dict[str, int] | None = None
        self.error: dict | None = None
        self.state = ""
        self.start_t: float | None = None
        self.end_t: float | None = None
        self.cancel_pending = False
        self.output_ready = False
        self.cache: bytes | None = None
        self.masked: tuple[frozenset[str], bytes] | None = None
        self.rendered_name = name  # a Vertex name may be rendered with the project number (config)
        self.prev_body: bytes | None = None  # the rendering before the last change: what a stale page shows
        self.stale_lists = 0  # list appearances still to show prev_body
        self.listener = None  # called with (job, old state) after every state change (the webhook sender)
        ago = spec.get("created_ago_s", 0)
        if isinstance(ago, bool) or not isinstance(ago, int | float) or ago < 0:
            raise SpecError(f"{where}: created_ago_s must be a non-negative number")
        self.create_t = now - float(ago)
        self.update_t = now
        self._enter(0, now)

    def _parse_output(self, out: Any, where: str) -> dict | None:
        if out is None:
            if self.api == VERTEX:
                return {"kind": "gcs", "uri": f"gs://sim-output/{self.job_id}"}
            return None
        if not isinstance(out, dict):
            raise SpecError(f"{where}: output must be an object or null")
        kind = out.get("kind")
        allowed = ("file", "inline") if self.api == GEMINI else ("gcs", "bigquery")
        if kind not in allowed:
            raise SpecError(f"{where}: output.kind {kind!r} is not one of {allowed} for the {self.api} API")
        res = dict(out)
        if kind == "file":
            file_id = str(out.get("file_id") or f"batch-{self.job_id}")
            res["file_id"] = file_id.removeprefix("files/")
            res["count"] = int(out.get("lines", 10))
            res["line_bytes"] = int(out.get("line_bytes", 200))
            res["errors"] = int(out.get("errors", 0))
            res["chunked"] = bool(out.get("chunked", False))
            if res["count"] < 0 or res["line_bytes"] < 0 or res["errors"] < 0:
                raise SpecError(f"{where}: output lines, line_bytes and errors must be >= 0")
        elif kind == "inline":
            res["count"] = int(out.get("count", 1))
            res["errors"] = min(int(out.get("errors", 0)), res["count"])
        elif kind == "gcs":
            if not str(out.get("uri", "")).startswith("gs://"):
                raise SpecError(f"{where}: output.uri must be gs://...")
        elif not str(out.get("table", "")).startswith("bq://"):
            raise SpecError(f"{where}: output.table must be bq://...")
        return res

    # --- timeline ---------------------------------------------------------------------------------------

    def _enter(self, idx: int, t: float) -> None:
        step = self.steps[idx]
        self.step = idx
        self.polls = 0
        self.step_t = t
        self.set_state(step.state, step.stats, step.error, t)

    def set_state(self, state: str, stats: dict | None, error: dict | None, t: float) -> None:
        old = self.state
        if old:
            self.prev_body = self.body()
        self._set(state, stats, error, t)
        if self.listener is not None and old:
            self.listener(self, old)

    def _set(self, state: str, stats: dict | None, error: dict | None, t: float) -> None:
        self.state = state
        if stats is not None:
            self.stats = {**(self.stats or {}), **stats}
        if error is not None:
            self.error = error
        elif state == "FAILED":
            self.error = self.error or {"code": 8, "message": "Batch failed: resources exhausted."}
        elif state == "CANCELLED":
            self.error = {"code": 1, "message": "CANCELLED"}
        else:
            self.error = None
        if state in STARTED and self.start_t is None:
            self.start_t = t
        if state in TERMINAL:
            if self.end_t is None:
                self.end_t = t
        else:
            self.end_t = None
        if state in SUCCESS and (self.api == VERTEX or state == "SUCCEEDED"):
            self.output_ready = True
        self.update_t = t
        self.cache = None

    def advance(self, now: float) -> None:
        steps = self.steps
        while self.step + 1 < len(steps):
            nxt = steps[self.step + 1]
            if nxt.after_polls is not None and self.polls >= nxt.after_polls:
                self._enter(self.step + 1, now)
            elif nxt.after_s is not None and now - self.step_t >= nxt.after_s:
                self._enter(self.step + 1, self.step_t + nxt.after_s)
            else:
                return

    def settle(self, now: float) -> None:
        """What a status GET or a list sees: pending transitions and a requested cancel take effect."""
        if self.cancel_pending:
            self.cancel_pending = False
            self.set_state("CANCELLED", None, None, now)
        else:
            self.advance(now)

    def force(self, state: str, stats: dict | None, error: dict | None, steps: list[Step] | None,
              now: float) -> None:
        self.cancel_pending = False
        self.steps = [Step(state, None, None, stats, error), *(steps or [])]
        self._enter(0, now)

    def cancel(self, now: float) -> None:
        if self.state in TERMINAL or self.cancel_pending or self.state == "CANCELLING":
            return
        self.steps = self.steps[: self.step + 1]
        if self.api == GEMINI:
            self.set_state("CANCELLED", None, None, now)
        else:
            self.set_state("CANCELLING", None, None, now)
            self.cancel_pending = True

    # --- rendering --------------------------------------------------------------------------------------

    def full_state(self) -> str:
        return PREFIX[self.api] + self.state

    def counts(self) -> tuple[int, int, int, int | None]:
        """(successful, failed, incomplete, total or None)."""
        s = self.stats
        if s is None:
            total = self.total
            if total is None:
                return 0, 0, 0, None
            if self.state in SUCCESS:
                errors = self.output.get("errors", 0) if self.output else 0
                return total - errors, errors, 0, total
            return 0, 0, total, total
        return s.get("successful", 0), s.get("failed", 0), s.get("incomplete", 0), s.get("total")

    def body(self) -> bytes:
        if self.cache is None:
            self.cache = json.dumps(self.render()).encode()
            self.masked = None
        return self.cache

    def masked_body(self, mask: frozenset[str]) -> bytes:
        """The rendering with only the top-level fields of a ``readMask`` (cached like ``body``)."""
        body = self.body()
        if self.masked is None or self.masked[0] != mask:
            self.masked = (mask, json.dumps({k: v for k, v in json.loads(body).items() if k in mask}).encode())
        return self.masked[1]

    def render(self) -> dict:
        return self._render_gemini() if self.api == GEMINI else self._render_vertex()

    def _gemini_output(self) -> dict:
        out = self.output
        if out is None:
            return {}
        if out["kind"] == "file":
            return {"responsesFile": "files/" + out["file_id"]}
        if self._inline is None:
            n, errors = out["count"], out["errors"]
            items = []
            for i in range(1, n + 1):
                if i > n - errors:
                    items.append({"error": {"code": 3, "message": "Request contains an invalid argument."},
                                  "metadata": {"key": f"req-{i}"}})
                else:
                    items.append({"response": {
                        "candidates": [{"content": {"parts": [{"text": f"response {i}"}], "role": "model"},
                                        "finishReason": "STOP"}],
                        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 3,
                                          "totalTokenCount": 7},
                        "modelVersion": "gemini-2.5-flash"},
                        "metadata": {"key": f"req-{i}"}})
            self._inline = items
        return {"inlinedResponses": {"inlinedResponses": self._inline}}

    def _render_gemini(self) -> dict:
        ok, failed, pending, total = self.counts()
        if total is None:
            total = ok + failed + max(pending, 0)
        stats: dict[str, str] = {}
        for key, value in (("requestCount", total), ("successfulRequestCount", ok),
                           ("failedRequestCount", failed), ("pendingRequestCount", pending)):
            if value > 0:
                stats[key] = str(value)
        meta: dict[str, Any] = {"@type": BATCH_TYPE, "name": self.rendered_name, "model": self.model}
        if self.display_name:
            meta["displayName"] = self.display_name
        meta["inputConfig"] = {"fileName": f"files/input-{self.job_id}"}
        meta["state"] = self.full_state()
        meta["createTime"] = _stamp(self.create_t, 9)
        meta["updateTime"] = _stamp(self.update_t, 9)
        if self.end_t is not None:
            meta["endTime"] = _stamp(self.end_t, 9)
        meta["batchStats"] = stats
        success = self.state == "SUCCEEDED"
        if success:
            meta["output"] = self._gemini_output()
        meta["priority"] = "0"
        op: dict[str, Any] = {"name": self.rendered_name, "metadata": meta}
        if self.state in TERMINAL:
            op["done"] = True
            if self.error is not None:
                op["error"] = dict(self.error)
            elif success:
                op["response"] = {"@type": OUTPUT_TYPE, **meta["output"]}
        elif self.error is not None:
            op["error"] = dict(self.error)
        return op

    def _vertex_output(self) -> tuple[dict, dict, dict]:
        """(inputConfig, outputConfig, outputInfo)."""
        out = self.output or {}
        if out.get("kind") == "bigquery":
            table = out["table"]
            dataset = table.rsplit(".", 1)[0] if table.count(".") >= 2 else table
            cfg = {"predictionsFormat": "bigquery", "bigqueryDestination": {"outputUri": dataset}}
            info = {"bigqueryOutputDataset": dataset, "bigqueryOutputTable": table}
            default_in = {"instancesFormat": "bigquery",
                          "bigquerySource": {"inputUri": dataset + ".requests"}}
        else:
            uri = out["uri"].rstrip("/")
            head, _, last = uri.rpartition("/")
            if last.startswith("prediction-") and head.count("/") >= 2:
                prefix, directory = head, uri
            else:
                prefix, directory = uri, f"{uri}/prediction-model-{_stamp(self.create_t, 6)}"
            cfg = {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": prefix}}
            info = {"gcsOutputDirectory": directory}
            default_in = {"instancesFormat": "jsonl",
                          "gcsSource": {"uris": [f"gs://sim-input/{self.job_id}/requests.jsonl"]}}
        return self.input_config or default_in, cfg, info

    def _render_vertex(self) -> dict:
        input_cfg, output_cfg, output_info = self._vertex_output()
        job: dict[str, Any] = {"name": self.rendered_name, "displayName": self.display_name or self.job_id,
                               "model": self.model, "inputConfig": input_cfg, "outputConfig": output_cfg}
        if self.start_t is not None or self.state in SUCCESS:
            job["outputInfo"] = output_info
        job["state"] = self.full_state()
        if self.error is not None:
            job["error"] = {**self.error, "details": []}
        if self.stats is not None or self.total is not None:
            ok, failed, incomplete, _ = self.counts()
            job["completionStats"] = {"successfulCount": str(ok), "failedCount": str(failed),
                                      "incompleteCount": str(incomplete)}
        job["createTime"] = _stamp(self.create_t, 6)
        if self.start_t is not None:
            job["startTime"] = _stamp(self.start_t, 6)
        if self.end_t is not None:
            job["endTime"] = _stamp(self.end_t, 6)
        job["updateTime"] = _stamp(self.update_t, 6)
        job["labels"] = self.labels
        job["modelVersionId"] = "1"
        job["satisfiesPzs"] = False
        job["satisfiesPzi"] = False
        return job

    def admin_view(self) -> dict:
        return {"name": self.name, "api": self.api, "state": self.full_state(), "polls": self.polls,
                "step": self.step, "steps": len(self.steps), "faults_left": sum(f[1] for f in self.faults),
                "stats": self.stats, "error": self.error, "cancel_pending": self.cancel_pending}


# --------------------------------------------------------------------------------------------------------
# the simulator: state + request handling


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


class Simulator:
    def __init__(self, latency_ms: float = 0.0, api_key: str | None = None, seed: int | None = None) -> None:
        self.base_config = {"latency_ms": float(latency_ms or 0.0), "api_key": api_key, "random_faults": None,
                            "project_numbers": {}, "list_page_max": dict(LIST_PAGE_MAX), "webhooks": None}
        self.webhooks: Webhooks | None = None
        self.seed = seed
        self.jobs: dict[str, Job] = {}
        self.files: dict[str, FileOutput] = {}
        self.in_flight = 0
        self.connections: set[HttpProtocol] = set()
        self._date = b""
        self._date_sec = -1
        self.reset()

    # --- state ------------------------------------------------------------------------------------------

    def reset(self) -> None:
        self.jobs.clear()
        self.files.clear()
        self.list_faults: dict[str, collections.deque] = {GEMINI: collections.deque(), VERTEX: collections.deque()}
        self._listings: dict[tuple[str, str, str], list[Job]] = {}  # (parent, filter, page token) -> jobs
        self.registered: dict[str, tuple[dict, Webhooks]] = {}  # static webhooks: id -> (resource, sender)
        self.apply_config(dict(self.base_config), replace=True)
        self.reset_stats()

    def reset_stats(self) -> None:
        self.requests = 0
        self.status_gets = 0
        self.by_code: collections.Counter = collections.Counter()
        self.max_in_flight = self.in_flight
        self.user_projects: dict[str, None] = {}
        self.per_job_gets: collections.Counter = collections.Counter()
        self.connections_opened = 0
        self.list_pages: collections.Counter = collections.Counter()  # per api
        self.list_filters: list[str] = []  # the Vertex filters received, in order (the last 50)

    def apply_config(self, cfg: dict, replace: bool = False) -> None:
        if replace:
            self.latency = 0.0
            self.api_key = None
            self.random_faults = None
            self.project_numbers: dict[str, str] = {}
            self.list_page_max = dict(LIST_PAGE_MAX)
            self.rng = random.Random(self.seed)
        for key in cfg:
            if key not in ("latency_ms", "api_key", "random_faults", "project_numbers", "list_page_max", "webhooks"):
                raise SpecError(f"unknown config key {key!r}")
        if "webhooks" in cfg:
            self.webhooks = Webhooks.from_config(cfg["webhooks"], self.seed) if cfg["webhooks"] else None
        if "project_numbers" in cfg:
            numbers = cfg["project_numbers"] or {}
            if not isinstance(numbers, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.isdigit()
                                                        for k, v in numbers.items()):
                raise SpecError("project_numbers must map project ids to project numbers (digit strings)")
            self.project_numbers = dict(numbers)
            for job in self.jobs.values():
                self._render_name(job)
        if "list_page_max" in cfg:
            caps = cfg["list_page_max"] or {}
            if not isinstance(caps, dict) or any(k not in (GEMINI, VERTEX) or isinstance(v, bool)
                                                 or not isinstance(v, int) or v < 1 for k, v in caps.items()):
                raise SpecError('list_page_max must look like {"gemini": 100, "vertex": 1000}')
            self.list_page_max.update(caps)
        if "latency_ms" in cfg:
            value = cfg["latency_ms"] or 0
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise SpecError("latency_ms must be a non-negative number")
            self.latency = float(value) / 1000.0
        if "api_key" in cfg:
            value = cfg["api_key"]
            if value is not None and not isinstance(value, str):
                raise SpecError("api_key must be a string or null")
            self.api_key = value or None
        if "random_faults" in cfg:
            rf = cfg["random_faults"]
            if rf is None:
                self.random_faults = None
            else:
                if not isinstance(rf, dict):
                    raise SpecError("random_faults must be an object or null")
                rate = rf.get("rate", 0.0)
                kinds = rf.get("kinds") or ["503"]
                if not isinstance(rate, int | float) or not 0 <= rate <= 1:
                    raise SpecError("random_faults.rate must be between 0 and 1")
                kinds = [str(k) for k in kinds]
                bad = [k for k in kinds if k not in FAULT_KINDS]
                if bad:
                    raise SpecError(f"unknown random fault kinds {bad}; one of {sorted(FAULT_KINDS)}")
                self.random_faults = {"rate": float(rate), "kinds": kinds, "seed": rf.get("seed", self.seed),
                                      "delay_s": float(rf.get("delay_s", DEFAULT_SLOW_S))}
                self.rng = random.Random(self.random_faults["seed"])

    def config_view(self) -> dict:
        return {"latency_ms": self.latency * 1000.0, "api_key": self.api_key,
                "random_faults": self.random_faults, "project_numbers": self.project_numbers,
                "list_page_max": self.list_page_max,
                "webhooks": self.webhooks.view() if self.webhooks is not None else None}

    def on_transition(self, job: Job, old: str) -> None:
        """A Gemini batch that just ended gets its webhook deliveries: the configured sender's, and one per
        registered webhook subscribed to its event."""
        if job.api != GEMINI or job.state not in TERMINAL or old in TERMINAL:
            return
        if self.webhooks is not None:
            self.webhooks.batch_ended(job)
        for resource, sender in self.registered.values():
            if WEBHOOK_TYPES.get(job.state) in resource["subscribed_events"]:
                sender.batch_ended(job)

    def _render_name(self, job: Job) -> None:
        """Vertex renders names with the project number when one is configured (as the real API does)."""
        name = job.name
        if job.api == VERTEX and (m := _VERTEX_NAME.match(name)) and m.group(1) in self.project_numbers:
            number = self.project_numbers[m.group(1)]
            name = f"projects/{number}/locations/{m.group(2)}/batchPredictionJobs/{m.group(3)}"
        if name != job.rendered_name:
            job.rendered_name = name
            job.cache = None

    def find(self, name: str) -> Job | None:
        """A job by its name, with the project as id or as its configured number."""
        job = self.jobs.get(name)
        if job is None and self.project_numbers and (m := _VERTEX_NAME.match(name)):
            for project, number in self.project_numbers.items():
                if m.group(1) == number:
                    job = self.jobs.get(f"projects/{project}/locations/{m.group(2)}/batchPredictionJobs/{m.group(3)}")
        return job

    def stats_view(self) -> dict:
        return {"requests": self.requests, "status_gets": self.status_gets,
                "by_code": {str(k): v for k, v in sorted(self.by_code.items())},
                "max_in_flight": self.max_in_flight, "in_flight": self.in_flight,
                "user_projects": list(self.user_projects), "per_job_gets": dict(self.per_job_gets),
                "connections_opened": self.connections_opened, "connections_open": len(self.connections),
                "list_pages": dict(self.list_pages), "list_filters": list(self.list_filters),
                "webhooks": self.webhooks.stats() if self.webhooks is not None else None}

    def add_jobs(self, specs: Any) -> int:
        if not isinstance(specs, list):
            raise SpecError('expected {"jobs": [spec, ...]}')
        now = time.monotonic()
        built = []
        for spec in specs:
            if not isinstance(spec, dict):
                raise SpecError(f"job spec must be an object, not {spec!r}")
            built.append(Job(spec, now))
        for job in built:
            old = self.jobs.pop(job.name, None)
            if old is not None and old.output and old.output["kind"] == "file":
                self.files.pop(old.output["file_id"], None)
            self.jobs[job.name] = job
            job.listener = self.on_transition
            self._render_name(job)
            out = job.output
            if out and out["kind"] == "file":
                self.files[out["file_id"]] = FileOutput(out["file_id"], out["count"], out["line_bytes"],
                                                        out["errors"], out["chunked"], job)
        return len(built)

    def job(self, name: Any) -> Job:
        job = self.jobs.get(name) if isinstance(name, str) else None
        if job is None:
            raise SpecError(f"no job {name!r}", 404)
        return job

    # --- HTTP plumbing ----------------------------------------------------------------------------------

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._date_sec:
            self._date_sec = now
            self._date = email.utils.formatdate(now, usegmt=True).encode()
        return self._date

    def payload(self, code: int, body: bytes, keep_alive: bool, ctype: bytes = JSON_TYPE,
                extra: bytes = b"") -> bytes:
        return b"".join((
            _status_line(code), COMMON_HEADERS, b"Date: ", self.date(), b"\r\nContent-Type: ", ctype,
            b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n", extra,
            b"" if keep_alive else b"Connection: close\r\n", b"\r\n", body,
        ))

    def _json(self, code: int, obj: Any, keep_alive: bool, extra: bytes = b"") -> bytes:
        return self.payload(code, json.dumps(obj).encode(), keep_alive, extra=extra)

    # --- admin ------------------------------------------------------------------------------------------

    def handle_admin(self, method: str, path: str, query: str, body: bytes, keep_alive: bool) -> bytes:
        try:
            data = json.loads(body) if body else {}
            if method == "POST" and not isinstance(data, dict):
                raise SpecError("expected a JSON object")
            result = self._admin(method, path, query, data)
            return self._json(200, result, keep_alive)
        except SpecError as exc:
            return self._json(exc.code, google_error(exc.code, str(exc)), keep_alive)
        except (ValueError, TypeError, KeyError) as exc:
            return self._json(400, google_error(400, f"bad admin request: {exc}"), keep_alive)

    def _admin(self, method: str, path: str, query: str, data: dict) -> Any:
        now = time.monotonic()
        route = (method, path)
        if route == ("GET", "/_sim/health"):
            return {"ok": True, "jobs": len(self.jobs)}
        if route == ("POST", "/_sim/reset"):
            self.reset()
            return {}
        if route == ("POST", "/_sim/config"):
            self.apply_config(data)
            return self.config_view()
        if route == ("GET", "/_sim/config"):
            return self.config_view()
        if route == ("POST", "/_sim/jobs"):
            return {"created": self.add_jobs(data.get("jobs"))}
        if route == ("POST", "/_sim/jobs/set"):
            job = self.job(data.get("name"))
            state = _short_state(job.api, data.get("state"))
            steps = _parse_steps(job.api, data["timeline"], job.name) if data.get("timeline") else None
            job.force(state, _parse_stats(data.get("stats")), _parse_error(data.get("error")), steps, now)
            return job.admin_view()
        if route == ("POST", "/_sim/jobs/faults"):
            job = self.job(data.get("name"))
            job.faults.extend(_parse_faults(data.get("faults"), job.name))
            return job.admin_view()
        if route == ("POST", "/_sim/lists/faults"):
            api = data.get("api")
            if api not in (GEMINI, VERTEX):
                raise SpecError('lists/faults needs "api": "gemini" or "vertex"')
            self.list_faults[api].extend(_parse_list_faults(data.get("faults")))
            return {"queued": len(self.list_faults[api])}
        if route == ("POST", "/_sim/lists/stale"):
            job = self.job(data.get("name"))
            count = data.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise SpecError("count must be a non-negative integer")
            if job.prev_body is None:
                raise SpecError(f"{job.name} has no earlier rendering to show yet")
            job.stale_lists = count
            return job.admin_view()
        if route == ("POST", "/_sim/jobs/delete"):
            self.job(data.get("name"))
            del self.jobs[data["name"]]
            return {}
        if route == ("GET", "/_sim/jobs/get"):
            name = parse_qs(query).get("name", [None])[0]
            job = self.job(name)
            job.advance(now)
            view = job.admin_view()
            view["gets"] = self.per_job_gets.get(job.name, 0)
            return view
        if route == ("GET", "/_sim/stats"):
            return self.stats_view()
        if route == ("GET", "/_sim/webhooks/jwks.json"):
            if self.webhooks is None or self.webhooks.private_key is None:
                raise SpecError("no Ed25519 webhook key configured", 404)
            return self.webhooks.jwks()
        if route == ("POST", "/_sim/stats/reset"):
            self.reset_stats()
            return {}
        raise SpecError(f"no admin endpoint {method} {path}", 404)

    # --- API --------------------------------------------------------------------------------------------

    def handle_api(self, method: str, path: str, query: str, headers: dict[str, str],
                   keep_alive: bool, body: bytes = b"") -> Reply:
        """Answer one API request (counted in stats; latency is added to ``delay``)."""
        self.requests += 1
        code, reply = self._api(method, path, query, headers, keep_alive, body)
        if code:
            self.by_code[code] += 1
        reply.delay += self.latency
        return reply

    def _err(self, code: int, message: str, keep_alive: bool, status: str | None = None,
             extra: bytes = b"") -> tuple[int, Reply]:
        return code, Reply(0.0, self._json(code, google_error(code, message, status), keep_alive, extra))

    def _ok(self, body: bytes, keep_alive: bool) -> tuple[int, Reply]:
        return 200, Reply(0.0, self.payload(200, body, keep_alive))

    def _api(self, method: str, path: str, query: str, headers: dict[str, str],
             keep_alive: bool, body: bytes = b"") -> tuple[int, Reply]:
        if "%" in path:
            path = unquote(path)
        parts = path.split("/")
        root = parts[1] if len(parts) > 1 else ""
        project = headers.get("x-goog-user-project")
        if project is not None:
            self.user_projects[project] = None
        if root == "v1beta" and len(parts) > 2 and parts[2] == "webhooks":
            denied = self._gemini_auth(headers, query, keep_alive)
            return denied or self._webhooks_api(method, parts, query, body, keep_alive)
        if root == "v1beta" or (root == "download" and len(parts) == 5 and parts[2] == "v1beta"):
            return self._gemini(method, parts, query, headers, keep_alive)
        if root == "v1" and len(parts) in (7, 8) and parts[2] == "projects" and parts[4] == "locations" \
                and parts[6] == "batchPredictionJobs":
            return self._vertex(method, parts, query, headers, keep_alive)
        return self._not_found_path(method, path, keep_alive)

    def _not_found_path(self, method: str, path: str, keep_alive: bool) -> tuple[int, Reply]:
        return self._err(404, f"Method not found: {method} {path}", keep_alive)

    def _fault(self, kind: str, params: dict, api: str, job: Job | None,
               keep_alive: bool) -> tuple[int, Reply]:
        if kind in STATUS_FAULTS:
            code = int(kind)
            extra = b""
            err_extra: dict[str, Any] = {}
            retry_after = params.get("retry_after")
            if retry_after is not None:
                seconds = math.ceil(float(retry_after))
                extra = b"Retry-After: %d\r\n" % seconds
                err_extra["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                         "retryDelay": f"{seconds}s"}]
            message = FAULT_MESSAGES[code]
            if code == 403 and api == VERTEX and job is not None:
                message = (f"Permission 'aiplatform.batchPredictionJobs.get' denied on resource "
                           f"'//aiplatform.googleapis.com/{job.name}' (or it may not exist).")
            body = google_error(code, message, **err_extra)
            return code, Reply(0.0, self._json(code, body, keep_alive, extra))
        if kind == "malformed":
            body = b'{"name": "batc' if api == GEMINI else b'{"name": "projects/'
            return 200, Reply(0.0, self.payload(200, body, keep_alive))
        if kind == "garbage":
            if api == GEMINI:
                obj: Any = {"name": 42, "metadata": [1, 2], "done": "yes"}
            else:
                obj = {"name": ["x"], "state": 42, "completionStats": "lots", "createTime": 7}
            return 200, Reply(0.0, self._json(200, obj, keep_alive))
        if kind == "drop":
            return 0, Reply(0.0, b"", drop=True)
        # slow: the job's current (not advanced) rendering, late
        delay = float(params.get("delay_s", DEFAULT_SLOW_S))
        body = job.body() if job is not None else b"{}"
        return 200, Reply(delay, self.payload(200, body, keep_alive))

    def _random_fault(self, api: str, job: Job | None, keep_alive: bool) -> tuple[int, Reply] | None:
        rf = self.random_faults
        if rf is None or self.rng.random() >= rf["rate"]:
            return None
        kind = self.rng.choice(rf["kinds"])
        return self._fault(kind, {"delay_s": rf["delay_s"]}, api, job, keep_alive)

    def _status_get(self, api: str, name: str, keep_alive: bool) -> tuple[int, Reply]:
        self.status_gets += 1
        self.per_job_gets[name] += 1
        job = self.find(name)
        if job is not None and job.faults:
            head = job.faults[0]
            head[1] -= 1
            if head[1] <= 0:
                job.faults.popleft()
            return self._fault(head[0], head[2], api, job, keep_alive)
        if self.random_faults is not None:
            faulted = self._random_fault(api, job, keep_alive)
            if faulted is not None:
                return faulted
        if job is None:
            return self._job_not_found(api, name, keep_alive)
        job.settle(time.monotonic())
        body = job.body()
        job.polls += 1
        return self._ok(body, keep_alive)

    def _job_not_found(self, api: str, name: str, keep_alive: bool) -> tuple[int, Reply]:
        if api == GEMINI:
            return self._err(404, f"Requested entity was not found: {name} not found", keep_alive)
        return self._err(404, f"BatchPredictionJob {name} not found", keep_alive)

    def _page(self, api: str, jobs: list[Job], query: dict, key: str, keep_alive: bool,
              scope: str = "") -> tuple[int, Reply]:
        """One list page: ``pageSize`` capped at ``list_page_max``, opaque page tokens, ``readMask``
        (Vertex), stale renderings on demand, and the scripted list faults of ``/_sim/lists/faults``."""
        try:
            size = int(query.get("pageSize", ["0"])[0] or 0)
        except ValueError:
            return self._err(400, "Invalid value for pageSize", keep_alive)
        if size < 0:
            return self._err(400, "page_size must not be negative", keep_alive)
        if size == 0:
            size = 50 if api == GEMINI else 100
        size = min(size, self.list_page_max[api])
        token = query.get("pageToken", [""])[0]
        start = 0
        if token:
            try:
                text = base64.urlsafe_b64decode(token.encode() + b"==").decode()
                kind, _, rest = text.partition(":")
                where, _, offset = rest.rpartition(":")
                if kind != api or where != scope:
                    raise ValueError(text)
                start = int(offset)
            except ValueError:
                return self._err(400, "Invalid page token.", keep_alive)
        mask = None
        if api == VERTEX and query.get("readMask"):
            mask = frozenset(_camel(f.strip()) for f in query["readMask"][0].split(",") if f.strip())
        self.list_pages[api] += 1
        fault = None
        faults = self.list_faults[api]
        if faults:
            head = faults[0]
            head[1] -= 1
            if head[1] <= 0:
                faults.popleft()
            fault = head[0]
            if fault in STATUS_FAULTS:
                code = int(fault)
                return self._err(code, FAULT_MESSAGES[code], keep_alive)
            if fault == "malformed":
                return self._ok(b'{"' + key.encode() + b'": [{"name": "x', keep_alive)
            if fault == "wrong_shape":
                return self._ok(json.dumps({key: "not a list", "nextPageToken": 7}).encode(), keep_alive)
        now = time.monotonic()
        page = jobs[start:start + size]
        bodies = []
        for job in page:
            job.settle(now)
            if job.stale_lists and job.prev_body is not None:
                job.stale_lists -= 1
                body = job.prev_body
                if mask is not None:
                    body = json.dumps({k: v for k, v in json.loads(body).items() if k in mask}).encode()
            else:
                body = job.body() if mask is None else job.masked_body(mask)
            bodies.append(body)
        if fault in ("no_names", "foreign_names"):
            bodies = [json.dumps(_rename(json.loads(b), api, fault == "no_names")).encode() for b in bodies]
        parts = [b"{"]
        if bodies:
            parts += [b'"', key.encode(), b'": [', b", ".join(bodies), b"]"]
        next_start = start if fault == "endless" else start + size
        if fault == "endless" or start + size < len(jobs):
            token = base64.urlsafe_b64encode(f"{api}:{scope}:{next_start}".encode()).decode().rstrip("=")
            parts += [b", " if bodies else b"", b'"nextPageToken": "', token.encode(), b'"']
        parts.append(b"}")
        return self._ok(b"".join(parts), keep_alive)

    # Gemini API

    def _gemini_auth(self, headers: dict[str, str], query: str, keep_alive: bool) -> tuple[int, Reply] | None:
        key = headers.get("x-goog-api-key")
        if key is None and "key=" in query:
            key = parse_qs(query).get("key", [None])[0]
        if key is None:
            return self._err(403, "Method doesn't allow unregistered callers (callers without established "
                                  "identity). Please use API Key or other form of API consumer identity to "
                                  "call this API.", keep_alive)
        if self.api_key is not None and key != self.api_key:
            return self._err(400, "API key not valid. Please pass a valid API key.", keep_alive)
        return None

    def _gemini(self, method: str, parts: list[str], query: str, headers: dict[str, str],
                keep_alive: bool) -> tuple[int, Reply]:
        path = "/".join(parts)
        n = len(parts)
        if parts[1] == "download":  # /download/v1beta/files/{id}:download
            if parts[3] != "files" or not parts[4].endswith(":download") or method != "GET":
                return self._not_found_path(method, path, keep_alive)
            denied = self._gemini_auth(headers, query, keep_alive)
            if denied:
                return denied
            return self._download(parts[4][: -len(":download")], query, keep_alive)
        if n < 3 or parts[2] not in ("batches", "files") or n > 4:
            return self._not_found_path(method, path, keep_alive)
        denied = self._gemini_auth(headers, query, keep_alive)
        if denied:
            return denied
        if parts[2] == "files":
            if n == 4 and parts[3].endswith(":download") and method == "GET":
                location = f"/download{path}" + (f"?{query}" if query else "?alt=media")
                host = headers.get("host")
                if host:
                    location = f"http://{host}{location}"
                return 302, Reply(0.0, self.payload(302, b"", keep_alive, ctype=b"text/html; charset=UTF-8",
                                                   extra=b"Location: %s\r\n" % location.encode()))
            return self._not_found_path(method, path, keep_alive)
        if n == 3:
            if method != "GET":
                return self._not_found_path(method, path, keep_alive)
            if self.random_faults is not None:
                faulted = self._random_fault(GEMINI, None, keep_alive)
                if faulted is not None:
                    return faulted
            q = parse_qs(query) if query else {}
            if q.get("filter", [""])[0]:
                return self._err(400, "filter is not supported for the Gemini API batches list.", keep_alive)
            jobs = [j for j in self.jobs.values() if j.api == GEMINI]
            return self._page(GEMINI, jobs, q, "operations", keep_alive)
        ident = parts[3]
        if ident.endswith(":cancel"):
            if method != "POST":
                return self._not_found_path(method, path, keep_alive)
            job = self.jobs.get("batches/" + ident[: -len(":cancel")])
            if job is None:
                return self._job_not_found(GEMINI, "batches/" + ident[: -len(":cancel")], keep_alive)
            job.cancel(time.monotonic())
            return self._ok(b"{}", keep_alive)
        name = "batches/" + ident
        if method == "GET":
            return self._status_get(GEMINI, name, keep_alive)
        if method == "DELETE":
            if self.jobs.pop(name, None) is None:
                return self._job_not_found(GEMINI, name, keep_alive)
            return self._ok(b"{}", keep_alive)
        return self._not_found_path(method, path, keep_alive)

    # Gemini API: static webhooks (the project's registrations get real deliveries)

    def _webhooks_api(self, method: str, parts: list[str], query: str, body: bytes,
                      keep_alive: bool) -> tuple[int, Reply]:
        if len(parts) == 3 and method == "POST":
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                return self._err(400, "Invalid JSON payload received.", keep_alive)
            uri, events = data.get("uri") if isinstance(data, dict) else None, (data or {}).get("subscribed_events")
            if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                return self._err(400, "uri must be an http(s) URL.", keep_alive)
            if not isinstance(events, list) or not events or any(e not in WEBHOOK_EVENTS for e in events):
                return self._err(400, f"subscribed_events must be a non-empty list of {sorted(WEBHOOK_EVENTS)}.",
                                 keep_alive)
            ident = f"wh{self.rng.getrandbits(48):012x}"
            secret = "whsec_" + base64.b64encode(self.rng.randbytes(24)).decode()
            stamp = _stamp(time.monotonic(), 6)
            resource = {"id": ident, "name": data.get("name") or ident, "uri": uri, "subscribed_events": events,
                        "state": "enabled", "create_time": stamp, "update_time": stamp,
                        "signing_secrets": [{"truncated_secret": secret[:10] + "…", "expire_time": None}]}
            self.registered[ident] = (resource, Webhooks(uri, secret, False, 0.0, 0.0, 0, 0.0, "name", 5, None))
            return self._ok(json.dumps({**resource, "new_signing_secret": secret}).encode(), keep_alive)
        if len(parts) == 3 and method == "GET":
            q = parse_qs(query) if query else {}
            try:
                size = max(1, min(int(q.get("page_size", ["50"])[0]), 1000))
                start = int(q.get("page_token", ["0"])[0] or 0)
            except ValueError:
                return self._err(400, "Invalid page_size or page_token.", keep_alive)
            items = [r for r, _ in self.registered.values()]
            page: dict[str, Any] = {"webhooks": items[start:start + size]}
            if start + size < len(items):
                page["next_page_token"] = str(start + size)
            return self._ok(json.dumps(page).encode(), keep_alive)
        if len(parts) == 4 and method == "DELETE":
            if self.registered.pop(parts[3], None) is None:
                return self._err(404, f"Webhook {parts[3]} not found.", keep_alive)
            return self._ok(b"{}", keep_alive)
        return self._not_found_path(method, "/".join(parts), keep_alive)

    def _download(self, file_id: str, query: str, keep_alive: bool) -> tuple[int, Reply]:
        if self.random_faults is not None:
            faulted = self._random_fault(GEMINI, None, keep_alive)
            if faulted is not None:
                return faulted
        f = self.files.get(file_id)
        if f is not None and not f.job.output_ready:
            f.job.settle(time.monotonic())
        if f is None or not f.job.output_ready:
            return self._err(404, f"File files/{file_id} not found.", keep_alive)
        chunked = f.chunked or "chunked=1" in query
        head = [_status_line(200), COMMON_HEADERS, b"Date: ", self.date(),
                b"\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment\r\n"]
        if chunked:
            head.append(b"Transfer-Encoding: chunked\r\n")
        else:
            head.append(b"Content-Length: %d\r\n" % f.size())
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        return 200, Reply(0.0, b"".join(head), stream=f.chunks(), chunked=chunked)

    # Vertex AI

    def _vertex(self, method: str, parts: list[str], query: str, headers: dict[str, str],
                keep_alive: bool) -> tuple[int, Reply]:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return self._err(401, "Request is missing required authentication credential. Expected OAuth 2 "
                                  "access token, login cookie or other valid authentication credential.",
                             keep_alive)
        path = "/".join(parts)
        parent = "/".join(parts[2:7])
        if len(parts) == 7:
            if method != "GET":
                return self._not_found_path(method, path, keep_alive)
            if self.random_faults is not None:
                faulted = self._random_fault(VERTEX, None, keep_alive)
                if faulted is not None:
                    return faulted
            q = parse_qs(query) if query else {}
            prefixes = {parent + "/"}
            m = re.match(r"^projects/([^/]+)/locations/([^/]+)/batchPredictionJobs$", parent)
            if m:  # the parent's project as id or as its number
                for project, number in self.project_numbers.items():
                    if m.group(1) in (project, number):
                        prefixes |= {f"projects/{p}/locations/{m.group(2)}/batchPredictionJobs/"
                                     for p in (project, number)}
            jobs = [j for j in self.jobs.values() if j.api == VERTEX and any(j.name.startswith(p) for p in prefixes)]
            flt = q.get("filter", [""])[0].strip()
            token = q.get("pageToken", [""])[0]
            held = self._listings.get((parent, flt, token)) if token else None
            if held is not None:  # a later page of a listing: the jobs as its first page found them
                jobs = [j for j in held if j.name in self.jobs]
            elif flt:
                self.list_filters = [*self.list_filters[-49:], flt]
                try:
                    match = compile_filter(flt)
                except ValueError as exc:
                    return self._err(400, f"Invalid filter: {exc}", keep_alive)
                now = time.monotonic()
                for job in jobs:
                    job.settle(now)
                jobs = [j for j in jobs if match(j)]
            code, reply = self._page(VERTEX, jobs, q, "batchPredictionJobs", keep_alive, scope=parent)
            if code == 200 and (nxt := _NEXT_TOKEN.search(reply.payload[-300:])):
                self._listings[(parent, flt, nxt.group(1).decode())] = jobs
                while len(self._listings) > 64:
                    self._listings.pop(next(iter(self._listings)))
            return code, reply
        ident = parts[7]
        if ident.endswith(":cancel"):
            name = f"{parent}/{ident[: -len(':cancel')]}"
            if method != "POST":
                return self._not_found_path(method, path, keep_alive)
            job = self.jobs.get(name)
            if job is None:
                return self._job_not_found(VERTEX, name, keep_alive)
            job.cancel(time.monotonic())
            return self._ok(b"{}", keep_alive)
        name = f"{parent}/{ident}"
        if method == "GET":
            return self._status_get(VERTEX, name, keep_alive)
        if method == "DELETE":
            if self.jobs.pop(name, None) is None:
                return self._job_not_found(VERTEX, name, keep_alive)
            op = {"name": f"{parent}/operations/{abs(hash(name)) % 10**18}",
                  "metadata": {"@type": DELETE_METADATA_TYPE,
                               "genericMetadata": {"createTime": _stamp(time.monotonic(), 6),
                                                   "updateTime": _stamp(time.monotonic(), 6)}},
                  "done": True, "response": {"@type": "type.googleapis.com/google.protobuf.Empty"}}
            return 200, Reply(0.0, self._json(200, op, keep_alive))
        return self._not_found_path(method, path, keep_alive)


LIST_PAGE_MAX = {GEMINI: 1000, VERTEX: 1000}
_NEXT_TOKEN = re.compile(rb'"nextPageToken": "([^"]+)"')
LIST_FAULT_KINDS = STATUS_FAULTS | {"malformed", "wrong_shape", "no_names", "foreign_names", "endless"}


def _parse_list_faults(value: Any) -> list[list]:
    if not isinstance(value, list):
        raise SpecError("faults must be a list")
    out = []
    for fault in value:
        if not isinstance(fault, dict) or str(fault.get("kind")) not in LIST_FAULT_KINDS:
            raise SpecError(f"list fault {fault!r}: kind must be one of {sorted(LIST_FAULT_KINDS)}")
        count = fault.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise SpecError("a list fault's count must be a positive integer")
        out.append([str(fault["kind"]), count])
    return out


def _rename(item: dict, api: str, drop: bool) -> dict:
    """An item without its name (``drop``), or named as a job of another scope."""
    ident = str(item.get("name", "x")).rsplit("/", 1)[-1]
    foreign = (f"projects/elsewhere/locations/mars/batchPredictionJobs/{ident}" if api == VERTEX
               else f"tunedModels/{ident}")
    meta = item.get("metadata")
    for holder in (item, meta if isinstance(meta, dict) else None):
        if holder is not None and "name" in holder:
            if drop:
                del holder["name"]
            else:
                holder["name"] = foreign
    return item


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# -- the Vertex list filter: the subset of AIP-160 batch-relay and its users send --------------------------
# expression := factor { AND factor } ; factor := term { OR term } (OR binds tighter, as in AIP-160)
# term := [NOT | -] ( "(" expression ")" | field op value ) ; op := = != < <= > >= :
_TOKEN = re.compile(r'\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<op><=|>=|!=|=|<|>|:)|"(?P<q>[^"]*)"|(?P<w>[^\s()<>=!:"]+))')
_FIELDS = {"state", "display_name", "displayName", "create_time", "createTime", "model_display_name",
           "modelDisplayName"}


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"unexpected input at {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
    return out


def compile_filter(text: str):
    """A predicate over jobs for a Vertex ``filter``, or ``ValueError`` for what the subset refuses."""
    tokens = _tokens(text)
    pos = 0

    def peek() -> tuple[str, str] | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("unexpected end of filter")
        pos += 1
        return tokens[pos - 1]

    def word(value: str) -> bool:
        tok = peek()
        return tok is not None and tok[0] == "w" and tok[1] == value

    def expression():
        parts = [factor()]
        while word("AND"):
            take()
            parts.append(factor())
        return lambda job: all(p(job) for p in parts)

    def factor():
        parts = [term()]
        while word("OR"):
            take()
            parts.append(term())
        return lambda job: any(p(job) for p in parts)

    def term():
        negate = False
        if word("NOT") or word("-"):
            take()
            negate = True
        tok = peek()
        if tok is not None and tok[0] == "lp":
            take()
            inner = expression()
            if take()[0] != "rp":
                raise ValueError("missing )")
            return (lambda job: not inner(job)) if negate else inner
        kind, field = take()
        if kind != "w" or not (field in _FIELDS or field.startswith("labels.")):
            raise ValueError(f"unsupported field {field!r}")
        kind, op = take()
        if kind != "op":
            raise ValueError(f"expected a comparison after {field!r}")
        kind, value = take()
        if kind not in ("q", "w"):
            raise ValueError(f"expected a value after {field} {op}")
        test = _restriction(field, op, value)
        return (lambda job: not test(job)) if negate else test

    predicate = expression()
    if pos != len(tokens):
        raise ValueError(f"unexpected {tokens[pos][1]!r}")
    return predicate


def _restriction(field: str, op: str, value: str):
    if field.startswith("labels."):
        key = field[len("labels."):]
        if op == ":" and value == "*":
            return lambda job: key in job.labels
        if op not in ("=", "!="):
            raise ValueError("labels support = and :*")
        return lambda job: (job.labels.get(key) == value) == (op == "=")
    if field == "state":
        if op not in ("=", "!="):
            raise ValueError("state supports = and !=")
        want = value.upper().removeprefix("JOB_STATE_")
        return lambda job: (job.state == want) == (op == "=")
    if field in ("create_time", "createTime"):
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ValueError(f"create_time needs an RFC 3339 time, not {value!r}") from None
        compare = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
                   ">=": operator.ge}.get(op)
        if compare is None:
            raise ValueError("create_time supports = != < <= > >=")
        return lambda job: compare(job.create_t + _WALL_OFFSET, when)
    # display_name / model_display_name
    if op == ":":
        pattern = re.compile("^" + ".*".join(re.escape(p) for p in value.split("*")) + "$")
        return lambda job: bool(pattern.match(job.display_name or job.job_id))
    if op not in ("=", "!="):
        raise ValueError(f"{field} supports = != :")
    return lambda job: ((job.display_name or job.job_id) == value) == (op == "=")


# --------------------------------------------------------------------------------------------------------
# webhooks: signed Standard Webhooks deliveries when Gemini batches end

WEBHOOK_TYPES = {"SUCCEEDED": "batch.succeeded", "FAILED": "batch.failed", "CANCELLED": "batch.cancelled",
                 "EXPIRED": "batch.expired"}
WEBHOOK_EVENTS = frozenset({*WEBHOOK_TYPES.values(), "interaction.requires_action", "interaction.completed",
                            "interaction.failed", "video.generated"})


class Webhooks:
    """What the Gemini API does when a batch ends: POST a thin, signed event to the registered URL.

    Config (``POST /_sim/config {"webhooks": {...}}``, null to stop): ``url``; ``secret`` (``whsec_…``,
    signs ``v1``) and/or ``ed25519: true`` (signs ``v1a`` with a key of its own, published at
    ``GET /_sim/webhooks/jwks.json``); ``delay_s`` (before the first attempt), ``jitter_s`` (a random extra
    delay per delivery: deliveries of different batches arrive reordered), ``duplicates`` (extra copies of
    each delivery, same ``webhook-id``), ``drop`` (the share of deliveries never sent), ``id_form``
    (``name``: ``data.id = "batches/x"``, ``id``: ``"x"``, ``mixed``), ``attempts`` (at-least-once: a
    delivery is retried, 0.2 s apart, until a 2xx or this many attempts)."""

    def __init__(self, url: str, secret: str | None, ed25519: bool, delay_s: float, jitter_s: float,
                 duplicates: int, drop: float, id_form: str, attempts: int, seed: int | None) -> None:
        self.url = url
        self.secret = secret
        self.delay_s, self.jitter_s, self.duplicates, self.drop = delay_s, jitter_s, duplicates, drop
        self.id_form, self.attempts = id_form, attempts
        self.rng = random.Random(seed)
        self.private_key = None
        if ed25519:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            self.private_key = Ed25519PrivateKey.generate()
        self.sent = self.delivered = self.failed = self.dropped = 0
        self.log: list[dict] = []  # the last 500 deliveries

    @classmethod
    def from_config(cls, cfg: Any, seed: int | None) -> Webhooks:
        if not isinstance(cfg, dict) or not isinstance(cfg.get("url"), str) or not cfg["url"].startswith("http://"):
            raise SpecError('webhooks needs {"url": "http://127.0.0.1:PORT/...", ...}')
        secret = cfg.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret.startswith("whsec_")):
            raise SpecError("webhooks.secret must be a whsec_ secret")
        if secret is None and not cfg.get("ed25519"):
            raise SpecError("webhooks needs a secret (v1) or ed25519: true (v1a)")
        id_form = cfg.get("id_form", "name")
        if id_form not in ("name", "id", "mixed"):
            raise SpecError("webhooks.id_form is name, id or mixed")
        try:
            return cls(cfg["url"], secret, bool(cfg.get("ed25519")), float(cfg.get("delay_s", 0.0)),
                       float(cfg.get("jitter_s", 0.0)), int(cfg.get("duplicates", 0)), float(cfg.get("drop", 0.0)),
                       id_form, int(cfg.get("attempts", 5)), seed)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"bad webhooks config: {exc}") from None

    def view(self) -> dict:
        return {"url": self.url, "secret": self.secret, "ed25519": self.private_key is not None,
                "delay_s": self.delay_s, "jitter_s": self.jitter_s, "duplicates": self.duplicates,
                "drop": self.drop, "id_form": self.id_form, "attempts": self.attempts}

    def stats(self) -> dict:
        return {"sent": self.sent, "delivered": self.delivered, "failed": self.failed, "dropped": self.dropped,
                "log": list(self.log)}

    def jwks(self) -> dict:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        raw = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "use": "sig",
                          "x": base64.urlsafe_b64encode(raw).decode().rstrip("=")}]}

    def batch_ended(self, job: Job) -> None:
        kind = WEBHOOK_TYPES.get(job.state)
        if kind is None:
            return
        form = self.id_form if self.id_form != "mixed" else self.rng.choice(("name", "id"))
        data: dict[str, Any] = {"id": job.name if form == "name" else job.job_id}
        if kind == "batch.succeeded" and job.output and job.output["kind"] == "file":
            data["output_file_uri"] = "files/" + job.output["file_id"]
        elif kind == "batch.failed" and job.error:
            data.update(error_code=job.error.get("code"), error_message=job.error.get("message"))
        body = json.dumps({"type": kind, "version": "v1", "timestamp": _stamp(time.monotonic(), 6),
                           "data": data}).encode()
        msg_id = f"msg_{self.rng.getrandbits(96):024x}"
        ended = (job.end_t or time.monotonic()) + _WALL_OFFSET
        if self.rng.random() < self.drop:
            self.dropped += 1
            self._note(msg_id, kind, job.name, "dropped", ended)
            return
        loop = asyncio.get_running_loop()
        for _ in range(1 + self.duplicates):
            delay = self.delay_s + (self.rng.uniform(0, self.jitter_s) if self.jitter_s else 0.0)
            loop.call_later(delay, lambda: asyncio.ensure_future(self._deliver(msg_id, kind, job.name, body, ended)))

    def sign(self, msg_id: str, stamp: str, body: bytes) -> str:
        import hashlib
        import hmac

        content = f"{msg_id}.{stamp}.".encode() + body
        signatures = []
        if self.secret:
            key = base64.b64decode(self.secret[len("whsec_"):] + "==")
            signatures.append("v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode())
        if self.private_key is not None:
            signatures.append("v1a," + base64.b64encode(self.private_key.sign(content)).decode())
        return " ".join(signatures)

    async def _deliver(self, msg_id: str, kind: str, name: str, body: bytes, ended: float) -> None:
        status = 0
        for attempt in range(max(self.attempts, 1)):
            stamp = str(int(time.time()))
            self.sent += 1
            status = await _post(self.url, {"webhook-id": msg_id, "webhook-timestamp": stamp,
                                            "webhook-signature": self.sign(msg_id, stamp, body),
                                            "content-type": "application/json"}, body)
            if 200 <= status < 300:
                self.delivered += 1
                self._note(msg_id, kind, name, status, ended)
                return
            if attempt + 1 < self.attempts:
                await asyncio.sleep(0.2)
        self.failed += 1
        self._note(msg_id, kind, name, status, ended)

    def _note(self, msg_id: str, kind: str, name: str, status: Any, ended: float) -> None:
        self.log = [*self.log[-499:], {"id": msg_id, "type": kind, "job": name, "status": status,
                                       "ended_at": ended, "answered_at": time.time()}]


async def _post(url: str, headers: dict[str, str], body: bytes, timeout: float = 30.0) -> int:
    """One HTTP/1.1 POST (stdlib only); the status code, or 0 when the peer could not be reached."""
    m = re.match(r"^http://([^/:]+)(?::(\d+))?(/.*)?$", url)
    if not m:
        return 0
    host, port, path = m.group(1), int(m.group(2) or 80), m.group(3) or "/"
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
               f"Connection: close\r\n{head}\r\n").encode() + body
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        writer.close()
        return int(line.split()[1])
    except (TimeoutError, OSError, ValueError, IndexError):
        return 0


# --------------------------------------------------------------------------------------------------------
# HTTP/1.1 protocol

MAX_HEAD = 64 * 1024
MAX_BODY = 512 * 1024 * 1024


class HttpProtocol(asyncio.Protocol):
    """One connection. Requests are answered strictly in order (pipelined ones wait in the buffer)."""

    __slots__ = ("sim", "loop", "transport", "buf", "busy", "api", "close_after", "timer", "stream",
                 "chunked", "paused", "closed", "processing")

    def __init__(self, sim: Simulator, loop: asyncio.AbstractEventLoop) -> None:
        self.sim = sim
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.api = False
        self.close_after = False
        self.timer: asyncio.TimerHandle | None = None
        self.stream: Iterator[bytes] | None = None
        self.chunked = False
        self.paused = False
        self.closed = False
        self.processing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sim.connections.add(self)
        self.sim.connections_opened += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.sim.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.stream = None
        if self.busy and self.api:
            self.sim.in_flight -= 1
        self.busy = False
        self.buf.clear()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.stream is not None and not self.closed:
            self._pump()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()

    def _fail(self, code: int, message: str) -> None:
        body = json.dumps(google_error(code, message)).encode()
        self.transport.write(self.sim.payload(code, body, False))
        self.transport.close()
        self.closed = True

    def _process(self) -> None:
        if self.processing:
            return
        self.processing = True
        try:
            while not self.busy and not self.closed and self.buf:
                if not self._next_request():
                    return
        finally:
            self.processing = False

    def _next_request(self) -> bool:
        buf = self.buf
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._fail(431, "Request header fields too large.")
            return False
        lines = buf[:end].decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            self._fail(400, "Malformed request line.")
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = 0
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self._fail(400, "Bad Content-Length.")
                return False
        elif "transfer-encoding" in headers:
            self._fail(411, "Chunked request bodies are not supported; send Content-Length.")
            return False
        total = end + 4 + length
        if len(buf) < total:
            return False
        body = bytes(buf[end + 4:total]) if length else b""
        del buf[:total]
        conn = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            keep_alive = "keep-alive" in conn
        else:
            keep_alive = "close" not in conn
        self.close_after = not keep_alive
        self.busy = True
        path, _, query = target.partition("?")
        sim = self.sim
        if path.startswith("/_sim/"):
            self.api = False
            self._send(sim.handle_admin(method, path, query, body, keep_alive))
            return True
        self.api = True
        sim.in_flight += 1
        if sim.in_flight > sim.max_in_flight:
            sim.max_in_flight = sim.in_flight
        try:
            reply = sim.handle_api(method, path, query, headers, keep_alive, body)
        except Exception as exc:  # noqa: BLE001 - a simulator bug must not look like a dead server
            traceback.print_exc()
            body = json.dumps(google_error(500, f"simulator bug: {exc!r}")).encode()
            reply = Reply(0.0, sim.payload(500, body, keep_alive))
        if reply.delay > 0:
            self.timer = self.loop.call_later(reply.delay, self._deliver, reply)
        else:
            self._deliver(reply)
        return True

    def _deliver(self, reply: Reply) -> None:
        self.timer = None
        if self.closed:
            return
        if reply.drop:
            self._finish()
            self.closed = True
            self.transport.abort()
            return
        if reply.stream is None:
            self._send(reply.payload)
            return
        self.transport.write(reply.payload)
        self.stream = reply.stream
        self.chunked = reply.chunked
        self._pump()

    def _pump(self) -> None:
        transport = self.transport
        stream = self.stream
        chunked = self.chunked
        while not self.paused:
            chunk = next(stream, None)
            if chunk is None:
                self.stream = None
                if chunked:
                    transport.write(b"0\r\n\r\n")
                self._finish()
                if not self.busy:
                    self._process()
                return
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            if self.closed or transport.is_closing():  # the peer went away: stop generating
                self.stream = None
                return

    def _send(self, payload: bytes) -> None:
        self.transport.write(payload)
        self._finish()
        if not self.busy:
            self._process()

    def _finish(self) -> None:
        if self.api:
            self.sim.in_flight -= 1
            self.api = False
        self.busy = False
        if self.close_after:
            self.closed = True
            self.transport.close()


# --------------------------------------------------------------------------------------------------------
# entry point


async def _serve(host: str, port: int, sim: Simulator) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(sim, loop), host, port, backlog=2048,
                                      reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"batch-api simulator listening on http://{bound[0]}:{bound[1]}", flush=True)
    ticker = asyncio.ensure_future(_advance_ended_batches(sim))
    gc.freeze()
    try:
        await stop.wait()
    finally:
        ticker.cancel()
        server.close()
        for conn in list(sim.connections):
            if conn.transport is not None:
                conn.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)


async def _advance_ended_batches(sim: Simulator, step_s: float = 0.05) -> None:
    """With webhooks configured, Gemini batches end on their own time (as the real API's do) rather than
    when someone next looks, so their deliveries go out when they end."""
    while True:
        await asyncio.sleep(step_s)
        if sim.webhooks is None and not sim.registered:
            continue
        now = time.monotonic()
        for job in list(sim.jobs.values()):
            if job.api == GEMINI and job.state not in TERMINAL:
                job.settle(now)


def serve(host: str = "127.0.0.1", port: int = 8089, latency_ms: float = 0.0, api_key: str | None = None,
          seed: int | None = None) -> None:
    """Run the simulator until SIGTERM/SIGINT."""
    asyncio.run(_serve(host, port, Simulator(latency_ms, api_key, seed)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.simulator",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.latency_ms, args.api_key, args.seed)
    return 0


# --------------------------------------------------------------------------------------------------------
# client helper

_UNSET: Any = object()


def _steps(states: Any, after_polls: int | None, after_s: float | None) -> list[dict]:
    timeline: list[dict] = []
    for i, state in enumerate(states):
        step = dict(state) if isinstance(state, dict) else {"state": state}
        if i and "after_polls" not in step and "after_s" not in step:
            if after_s is not None:
                step["after_s"] = after_s
            else:
                step["after_polls"] = after_polls if after_polls is not None else 1
        timeline.append(step)
    return timeline


def gemini_spec(job_id: str, states: Any = ("PENDING", "RUNNING", "SUCCEEDED"), *, after_polls: int = 1,
                after_s: float | None = None, **kw: Any) -> dict:
    """A Gemini job spec whose timeline walks ``states`` one poll apart (or ``after_s`` apart).

    ``states`` items are state names or full step dicts; ``kw`` adds spec keys (display_name, model,
    output, faults, ...). ``job_id`` may be ``abc`` or ``batches/abc``."""
    name = job_id if job_id.startswith("batches/") else f"batches/{job_id}"
    return {"name": name, "timeline": _steps(states, after_polls, after_s), **kw}


def vertex_spec(project: str, location: str, job_id: str, states: Any = ("QUEUED", "RUNNING", "SUCCEEDED"),
                *, after_polls: int = 1, after_s: float | None = None, **kw: Any) -> dict:
    """A Vertex job spec ``projects/{project}/locations/{location}/batchPredictionJobs/{job_id}``."""
    name = f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}"
    return {"name": name, "timeline": _steps(states, after_polls, after_s), **kw}


class SimulatorClient:
    """Drive a running simulator through its admin API (``/_sim/...``)."""

    gemini_spec = staticmethod(gemini_spec)
    vertex_spec = staticmethod(vertex_spec)

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def _call(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        response = self._http.request(method, path, json=body, params=params)
        if response.status_code >= 400:
            raise RuntimeError(f"simulator {method} {path} -> {response.status_code}: {response.text}")
        return response.json()

    def health(self) -> dict:
        return self._call("GET", "/_sim/health")

    def reset(self) -> None:
        self._call("POST", "/_sim/reset", {})

    def configure(self, latency_ms: float | None = None, api_key: str | None = _UNSET,
                  random_faults: dict | None = _UNSET, **more: Any) -> dict:
        """Change only what is given; ``api_key=None``/``random_faults=None`` switch those off; ``more``:
        other config keys (``project_numbers``, ``list_page_max``, ``webhooks``)."""
        body: dict[str, Any] = dict(more)
        if latency_ms is not None:
            body["latency_ms"] = latency_ms
        if api_key is not _UNSET:
            body["api_key"] = api_key
        if random_faults is not _UNSET:
            body["random_faults"] = random_faults
        return self._call("POST", "/_sim/config", body)

    def add_jobs(self, specs: list[dict]) -> int:
        return self._call("POST", "/_sim/jobs", {"jobs": list(specs)})["created"]

    def add_job(self, spec: dict | None = None, **kw: Any) -> str:
        """Create one job (``add_job(spec)`` or ``add_job(name=..., timeline=...)``); returns its name."""
        spec = {**(spec or {}), **kw}
        self.add_jobs([spec])
        return spec["name"]

    def set_state(self, name: str, state: str, stats: dict | None = None, error: dict | None = None,
                  timeline: list | None = None) -> dict:
        body: dict[str, Any] = {"name": name, "state": state}
        if stats is not None:
            body["stats"] = stats
        if error is not None:
            body["error"] = error
        if timeline is not None:
            body["timeline"] = timeline
        return self._call("POST", "/_sim/jobs/set", body)

    def add_faults(self, name: str, faults: list[dict]) -> dict:
        return self._call("POST", "/_sim/jobs/faults", {"name": name, "faults": faults})

    def list_faults(self, api: str, faults: list[dict]) -> dict:
        """Queue faults for the next list pages of ``api`` (``gemini`` or ``vertex``)."""
        return self._call("POST", "/_sim/lists/faults", {"api": api, "faults": faults})

    def stale_lists(self, name: str, count: int = 1) -> dict:
        """The job's next ``count`` list appearances show it as it was before its last change."""
        return self._call("POST", "/_sim/lists/stale", {"name": name, "count": count})

    def delete(self, name: str) -> None:
        self._call("POST", "/_sim/jobs/delete", {"name": name})

    def get(self, name: str) -> dict:
        return self._call("GET", "/_sim/jobs/get", params={"name": name})

    def stats(self) -> dict:
        return self._call("GET", "/_sim/stats")

    def reset_stats(self) -> None:
        self._call("POST", "/_sim/stats/reset", {})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimulatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
