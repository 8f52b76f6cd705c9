"""List pages of both APIs: ``pageSize`` (capped at the ``list_page_max`` config), opaque page tokens bound
to their API and scope, ``readMask`` (Vertex: top-level fields kept), stale renderings on demand
(``/_sim/lists/stale``) and the scripted list faults of ``/_sim/lists/faults``."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import TYPE_CHECKING

from devtools.simulator import faults, fieldmask
from devtools.simulator.wire import GEMINI, VERTEX, Reply, err, ok

if TYPE_CHECKING:
    from devtools.simulator.app import Simulator
    from devtools.simulator.jobs import Job

LIST_PAGE_MAX = {GEMINI: 1000, VERTEX: 1000}
DEFAULT_PAGE = {GEMINI: 50, VERTEX: 100}
_NEXT_TOKEN = re.compile(rb'"nextPageToken": "([^"]+)"')


def camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def next_token(response: bytes) -> str | None:
    """The ``nextPageToken`` of a page this module wrote (it ends the body), or None on the last page."""
    found = _NEXT_TOKEN.search(response[-300:])
    return found.group(1).decode() if found else None


def _token(api: str, scope: str, start: int) -> str:
    return base64.urlsafe_b64encode(f"{api}:{scope}:{start}".encode()).decode().rstrip("=")


def _start(api: str, scope: str, token: str) -> int:
    """The offset a page token stands for; ValueError for a token of another API or scope, or none of ours."""
    text = base64.urlsafe_b64decode(token.encode() + b"==").decode()
    kind, _, rest = text.partition(":")
    where, _, offset = rest.rpartition(":")
    if kind != api or where != scope:
        raise ValueError(text)
    return int(offset)


def page(sim: Simulator, api: str, jobs: list[Job], query: dict, key: str, keep_alive: bool,
         scope: str = "", fields: fieldmask.Tree | None = None) -> tuple[int, Reply]:
    """One page of ``jobs`` under ``key`` (``operations`` or ``batchPredictionJobs``); ``fields``: the
    request's field mask (``fieldmask``, Gemini), applied to each item and to the page."""
    try:
        size = int(query.get("pageSize", ["0"])[0] or 0)
    except ValueError:
        return err(400, "Invalid value for pageSize", keep_alive)
    if size < 0:
        return err(400, "page_size must not be negative", keep_alive)
    size = min(size or DEFAULT_PAGE[api], sim.list_page_max[api])
    token = query.get("pageToken", [""])[0]
    start = 0
    if token:
        try:
            start = _start(api, scope, token)
        except ValueError:
            return err(400, "Invalid page token.", keep_alive)
    mask = None
    if api == VERTEX and query.get("readMask"):
        mask = frozenset(camel(f.strip()) for f in query["readMask"][0].split(",") if f.strip())
    sim.list_pages[api] += 1
    fault = faults.take(sim.list_faults[api])[0] if sim.list_faults[api] else None
    if fault in faults.STATUS_FAULTS:
        code = int(fault)
        return err(code, faults.FAULT_MESSAGES[code], keep_alive)
    if fault == "malformed":
        return ok(b'{"' + key.encode() + b'": [{"name": "x', keep_alive)
    if fault == "wrong_shape":
        return ok(json.dumps({key: "not a list", "nextPageToken": 7}).encode(), keep_alive)
    bodies = [] if fields is not None and key not in fields else _bodies(
        jobs[start:start + size], mask, fields.get(key) if fields is not None else None)
    if fault in ("no_names", "foreign_names"):
        bodies = [json.dumps(faults.misname(json.loads(b), api, fault == "no_names")).encode() for b in bodies]
    parts = [b"{"]
    if bodies:
        parts += [b'"', key.encode(), b'": [', b", ".join(bodies), b"]"]
    next_start = start if fault == "endless" else start + size
    if (fault == "endless" or start + size < len(jobs)) and (fields is None or "nextPageToken" in fields):
        parts += [b", " if bodies else b"", b'"nextPageToken": "', _token(api, scope, next_start).encode(), b'"']
    parts.append(b"}")
    return ok(b"".join(parts), keep_alive)


def _bodies(jobs: list[Job], mask: frozenset[str] | None, fields: fieldmask.Tree | None = None) -> list[bytes]:
    """The page's jobs, settled, rendered (a stale one as it was before its last change), masked (``readMask``
    or a ``fields`` tree: rendered again with only those fields, the full body never parsed)."""
    now = time.monotonic()
    bodies = []
    for job in jobs:
        job.settle(now)
        if job.stale_lists and job.prev_body is not None:
            job.stale_lists -= 1
            body = job.prev_body
            if mask is not None:
                body = json.dumps({k: v for k, v in json.loads(body).items() if k in mask}).encode()
            if fields is not None:
                body = json.dumps(fieldmask.apply(fields, json.loads(body))).encode()
        elif fields is not None:
            body = job.fields_body(fields)
        else:
            body = job.body() if mask is None else job.masked_body(mask)
        bodies.append(body)
    return bodies
