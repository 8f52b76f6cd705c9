"""Injected faults: the scripted faults of a job's status GETs, the random faults of ``random_faults``, the
faults of list pages (``/_sim/lists/faults``), and the replies each kind of fault gets. Latency is added to
every API reply by the app (``Simulator.handle_api``)."""

from __future__ import annotations

import collections
import math
import random
from typing import TYPE_CHECKING, Any

from devtools.simulator.wire import GEMINI, VERTEX, Reply, SpecError, google_error, json_payload, payload

if TYPE_CHECKING:
    from devtools.simulator.jobs import Job

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
LIST_FAULT_KINDS = STATUS_FAULTS | {"malformed", "wrong_shape", "no_names", "foreign_names", "endless"}
DEFAULT_SLOW_S = 30.0


# --- parsing ---------------------------------------------------------------------------------------------


def parse_faults(value: Any, where: str) -> collections.deque:
    """A job's faults: ``[kind, count left, params]`` items, in the order they strike."""
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


def parse_list_faults(value: Any) -> list[list]:
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


def parse_random_faults(rf: Any, seed: int | None) -> dict | None:
    """The ``random_faults`` config: ``{"rate", "kinds", "seed", "delay_s"}``, or None (off)."""
    if rf is None:
        return None
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
    return {"rate": float(rate), "kinds": kinds, "seed": rf.get("seed", seed),
            "delay_s": float(rf.get("delay_s", DEFAULT_SLOW_S))}


# --- striking --------------------------------------------------------------------------------------------


def take(queue: collections.deque) -> list:
    """The fault at the head of a non-empty queue, counted down (and dropped when used up)."""
    head = queue[0]
    head[1] -= 1
    if head[1] <= 0:
        queue.popleft()
    return head


def reply(kind: str, params: dict, api: str, job: Job | None, keep_alive: bool) -> tuple[int, Reply]:
    """The reply of a status GET (or a list, a download) that ``kind`` strikes."""
    if kind in STATUS_FAULTS:
        return _status_reply(int(kind), params, api, job, keep_alive)
    if kind == "malformed":
        body = b'{"name": "batc' if api == GEMINI else b'{"name": "projects/'
        return 200, Reply(0.0, payload(200, body, keep_alive))
    if kind == "garbage":
        if api == GEMINI:
            obj: Any = {"name": 42, "metadata": [1, 2], "done": "yes"}
        else:
            obj = {"name": ["x"], "state": 42, "completionStats": "lots", "createTime": 7}
        return 200, Reply(0.0, json_payload(200, obj, keep_alive))
    if kind == "drop":
        return 0, Reply(0.0, b"", drop=True)
    # slow: the job's current (not advanced) rendering, late
    delay = float(params.get("delay_s", DEFAULT_SLOW_S))
    body = job.body() if job is not None else b"{}"
    return 200, Reply(delay, payload(200, body, keep_alive))


def _status_reply(code: int, params: dict, api: str, job: Job | None, keep_alive: bool) -> tuple[int, Reply]:
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
    return code, Reply(0.0, json_payload(code, body, keep_alive, extra))


def random_reply(random_faults: dict | None, rng: random.Random, api: str, job: Job | None,
                 keep_alive: bool) -> tuple[int, Reply] | None:
    """A random fault's reply, as often as ``random_faults`` says; None when this request goes through."""
    if random_faults is None or rng.random() >= random_faults["rate"]:
        return None
    kind = rng.choice(random_faults["kinds"])
    return reply(kind, {"delay_s": random_faults["delay_s"]}, api, job, keep_alive)


def misname(item: dict, api: str, drop: bool) -> dict:
    """A list item without its name (``drop``: the ``no_names`` fault), or named as a job of another scope
    (``foreign_names``)."""
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
