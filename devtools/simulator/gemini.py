"""The Gemini API batches (v1beta): a batch rendered as its long-running Operation (``BATCH_STATE_*``, int64
strings, inline results or a responses file), the API-key check, and the routes ``GET /v1beta/batches``,
``GET|DELETE /v1beta/batches/{id}``, ``POST /v1beta/batches/{id}:cancel`` and the ``files/{id}:download``
redirect (the download itself is in ``files``; static webhooks in ``webhooks``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from devtools.simulator import faults, files, lists
from devtools.simulator.wire import (
    GEMINI,
    TERMINAL,
    Reply,
    err,
    job_not_found,
    no_method,
    ok,
    payload,
    stamp,
)

if TYPE_CHECKING:
    from devtools.simulator.app import Simulator
    from devtools.simulator.jobs import Job

BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"


# --- rendering -------------------------------------------------------------------------------------------


def _output(job: Job) -> dict:
    out = job.output
    if out is None:
        return {}
    if out["kind"] == "file":
        return {"responsesFile": "files/" + out["file_id"]}
    if job.inline_items is None:
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
        job.inline_items = items
    return {"inlinedResponses": {"inlinedResponses": job.inline_items}}


def render(job: Job) -> dict:
    """The batch as ``GET /v1beta/batches/{id}`` returns it: an Operation with the batch as metadata."""
    ok_count, failed, pending, total = job.counts()
    if total is None:
        total = ok_count + failed + max(pending, 0)
    stats: dict[str, str] = {}
    for key, value in (("requestCount", total), ("successfulRequestCount", ok_count),
                       ("failedRequestCount", failed), ("pendingRequestCount", pending)):
        if value > 0:
            stats[key] = str(value)
    meta: dict[str, Any] = {"@type": BATCH_TYPE, "name": job.rendered_name, "model": job.model}
    if job.display_name:
        meta["displayName"] = job.display_name
    meta["inputConfig"] = {"fileName": f"files/input-{job.job_id}"}
    meta["state"] = job.full_state()
    meta["createTime"] = stamp(job.create_t, 9)
    meta["updateTime"] = stamp(job.update_t, 9)
    if job.end_t is not None:
        meta["endTime"] = stamp(job.end_t, 9)
    meta["batchStats"] = stats
    success = job.state == "SUCCEEDED"
    if success:
        meta["output"] = _output(job)
    meta["priority"] = "0"
    op: dict[str, Any] = {"name": job.rendered_name, "metadata": meta}
    if job.state in TERMINAL:
        op["done"] = True
        if job.error is not None:
            op["error"] = dict(job.error)
        elif success:
            op["response"] = {"@type": OUTPUT_TYPE, **meta["output"]}
    elif job.error is not None:
        op["error"] = dict(job.error)
    return op


# --- routes ----------------------------------------------------------------------------------------------


def auth(sim: Simulator, headers: dict[str, str], query: str, keep_alive: bool) -> tuple[int, Reply] | None:
    """None when the request carries an API key the simulator accepts, else the refusal."""
    key = headers.get("x-goog-api-key")
    if key is None and "key=" in query:
        key = parse_qs(query).get("key", [None])[0]
    if key is None:
        return err(403, "Method doesn't allow unregistered callers (callers without established "
                        "identity). Please use API Key or other form of API consumer identity to "
                        "call this API.", keep_alive)
    if sim.api_key is not None and key != sim.api_key:
        return err(400, "API key not valid. Please pass a valid API key.", keep_alive)
    return None


def handle(sim: Simulator, method: str, parts: list[str], query: str, headers: dict[str, str],
           keep_alive: bool) -> tuple[int, Reply]:
    """``/v1beta/batches…``, ``/v1beta/files/{id}:download`` and ``/download/v1beta/files/{id}:download``."""
    path = "/".join(parts)
    n = len(parts)
    if parts[1] == "download":  # /download/v1beta/files/{id}:download
        if parts[3] != "files" or not parts[4].endswith(":download") or method != "GET":
            return no_method(method, path, keep_alive)
        denied = auth(sim, headers, query, keep_alive)
        if denied:
            return denied
        return files.download(sim, parts[4][: -len(":download")], query, keep_alive)
    if n < 3 or parts[2] not in ("batches", "files") or n > 4:
        return no_method(method, path, keep_alive)
    denied = auth(sim, headers, query, keep_alive)
    if denied:
        return denied
    if parts[2] == "files":
        return _files(method, parts, path, query, headers, keep_alive)
    if n == 3:
        return _list(sim, method, path, query, keep_alive)
    return _batch(sim, method, parts[3], path, keep_alive)


def _files(method: str, parts: list[str], path: str, query: str, headers: dict[str, str],
           keep_alive: bool) -> tuple[int, Reply]:
    """``GET /v1beta/files/{id}:download`` redirects to the download host, as the real API does."""
    if len(parts) == 4 and parts[3].endswith(":download") and method == "GET":
        location = f"/download{path}" + (f"?{query}" if query else "?alt=media")
        host = headers.get("host")
        if host:
            location = f"http://{host}{location}"
        return 302, Reply(0.0, payload(302, b"", keep_alive, ctype=b"text/html; charset=UTF-8",
                                       extra=b"Location: %s\r\n" % location.encode()))
    return no_method(method, path, keep_alive)


def _list(sim: Simulator, method: str, path: str, query: str, keep_alive: bool) -> tuple[int, Reply]:
    if method != "GET":
        return no_method(method, path, keep_alive)
    if sim.random_faults is not None:
        faulted = faults.random_reply(sim.random_faults, sim.rng, GEMINI, None, keep_alive)
        if faulted is not None:
            return faulted
    q = parse_qs(query) if query else {}
    if q.get("filter", [""])[0]:
        return err(400, "filter is not supported for the Gemini API batches list.", keep_alive)
    jobs = [j for j in sim.jobs.values() if j.api == GEMINI]
    return lists.page(sim, GEMINI, jobs, q, "operations", keep_alive)


def _batch(sim: Simulator, method: str, ident: str, path: str, keep_alive: bool) -> tuple[int, Reply]:
    if ident.endswith(":cancel"):
        if method != "POST":
            return no_method(method, path, keep_alive)
        job = sim.jobs.get("batches/" + ident[: -len(":cancel")])
        if job is None:
            return job_not_found(GEMINI, "batches/" + ident[: -len(":cancel")], keep_alive)
        job.cancel(time.monotonic())
        return ok(b"{}", keep_alive)
    name = "batches/" + ident
    if method == "GET":
        return sim.status_get(GEMINI, name, keep_alive)
    if method == "DELETE":
        if sim.jobs.pop(name, None) is None:
            return job_not_found(GEMINI, name, keep_alive)
        return ok(b"{}", keep_alive)
    return no_method(method, path, keep_alive)
