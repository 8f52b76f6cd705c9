"""The Gemini API batches (v1beta): a batch rendered as its long-running Operation (``BATCH_STATE_*``, int64
strings, inline results or a responses file, its input file or inline requests), the API-key check, and the
routes ``GET /v1beta/batches``, ``GET|DELETE /v1beta/batches/{id}``, ``POST /v1beta/batches/{id}:cancel``,
``POST /v1beta/models/{model}:batchGenerateContent`` (``create``) and the ``files/{id}:download`` redirect
(the download itself and uploads are in ``files``; static webhooks in ``webhooks``)."""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from devtools.simulator import faults, fieldmask, files, lists
from devtools.simulator.results import Batch
from devtools.simulator.wire import (
    GEMINI,
    TERMINAL,
    Reply,
    SpecError,
    err,
    job_not_found,
    json_payload,
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
    if job.batch is not None:  # the batch's own results, possibly fewer (partial) and in another order
        done = job.results_done or 0
        return {"inlinedResponses": {"inlinedResponses": [job.batch.gemini_inline(i) for i in job.batch.order(done)]}}
    if job.inline_items is None:
        n, errors = out["count"], out["errors"]
        pad = "x" * out.get("response_bytes", 0)  # one string shared by every item: big replies, small memory
        items = []
        for i in range(1, n + 1):
            if i > n - errors:
                items.append({"error": {"code": 3, "message": "Request contains an invalid argument."},
                              "metadata": {"key": f"req-{i}"}})
            else:
                items.append({"response": {
                    "candidates": [{"content": {"parts": [{"text": f"response {i}"}, {"text": pad}] if pad else [
                        {"text": f"response {i}"}], "role": "model"},
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
    meta["inputConfig"] = _input(job)
    meta["state"] = job.full_state()
    meta["createTime"] = stamp(job.create_t, 9)
    meta["updateTime"] = stamp(job.update_t, 9)
    if job.end_t is not None:
        meta["endTime"] = stamp(job.end_t, 9)
    meta["batchStats"] = stats
    success = job.state == "SUCCEEDED"
    if job.show_output():
        meta["output"] = _output(job)
    meta["priority"] = "0"
    op: dict[str, Any] = {"name": job.rendered_name, "metadata": meta}
    if job.state in TERMINAL:
        op["done"] = True
        if job.error is not None:
            op["error"] = dict(job.error)
        elif success and "output" in meta:
            op["response"] = {"@type": OUTPUT_TYPE, **meta["output"]}
    elif job.error is not None:
        op["error"] = dict(job.error)
    return op


def input_file_id(job: Job) -> str:
    return f"input-{job.job_id}"


def _input(job: Job) -> dict:
    """``inputConfig``: what a created batch was sent, a batch spec's inline requests, or its input file."""
    if job.gemini_input is not None:
        return job.gemini_input
    if job.batch is not None and job.batch.input == "inline":
        return {"requests": {"requests": job.batch.inline_requests()}}
    return {"fileName": f"files/{input_file_id(job)}"}


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
    q = parse_qs(query) if query else {}
    try:
        mask = fieldmask.from_request(q, headers, fieldmask.GEMINI_LIST if n == 3 else fieldmask.GEMINI_BATCH)
    except fieldmask.MaskError as exc:
        return err(400, str(exc), keep_alive)
    if n == 3:
        return _list(sim, method, path, q, keep_alive, mask)
    return _batch(sim, method, parts[3], path, keep_alive, mask)


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


def _list(sim: Simulator, method: str, path: str, q: dict[str, list[str]], keep_alive: bool,
          mask: fieldmask.Tree | None) -> tuple[int, Reply]:
    if method != "GET":
        return no_method(method, path, keep_alive)
    if sim.random_faults is not None:
        faulted = faults.random_reply(sim.random_faults, sim.rng, GEMINI, None, keep_alive)
        if faulted is not None:
            return faulted
    if q.get("filter", [""])[0]:
        return err(400, "filter is not supported for the Gemini API batches list.", keep_alive)
    jobs = [j for j in sim.jobs.values() if j.api == GEMINI]
    return lists.page(sim, GEMINI, jobs, q, "operations", keep_alive, fields=mask)


def _batch(sim: Simulator, method: str, ident: str, path: str, keep_alive: bool,
           mask: fieldmask.Tree | None) -> tuple[int, Reply]:
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
        return sim.status_get(GEMINI, name, keep_alive, mask)
    if method == "DELETE":
        if sim.jobs.pop(name, None) is None:
            return job_not_found(GEMINI, name, keep_alive)
        return ok(b"{}", keep_alive)
    return no_method(method, path, keep_alive)


# --- batchGenerateContent ---------------------------------------------------------------------------------


def _requests_of(sim: Simulator, config: Any) -> list[tuple[str | None, dict]]:
    """The (key, request) pairs an ``inputConfig`` names: an uploaded file's lines, or inline requests."""
    if not isinstance(config, dict):
        raise SpecError("batch.inputConfig is required.")
    file_name = config.get("fileName") or config.get("file_name")
    if isinstance(file_name, str):
        f = sim.files.get(file_name.removeprefix("files/"))
        if f is None or not isinstance(f, files.UploadedFile):
            raise SpecError(f"File {file_name} not found.", 404)
        items = []
        for number, line in enumerate(f.data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise SpecError(f"Invalid JSON in {file_name} at line {number}.") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("request"), dict):
                raise SpecError(f"Line {number} of {file_name} has no request object.")
            key = obj.get("key")
            items.append((key if isinstance(key, str) else None, obj["request"]))
        return items
    requests = config.get("requests")
    inline = requests.get("requests") if isinstance(requests, dict) else None
    if not isinstance(inline, list):
        raise SpecError("batch.inputConfig needs fileName or requests.requests.")
    items = []
    for number, item in enumerate(inline):
        if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
            raise SpecError(f"requests[{number}] has no request object.")
        meta = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
        key = meta.get("key")
        items.append((key if isinstance(key, str) else None, item["request"]))
    return items


def create(sim: Simulator, model: str, body: bytes, keep_alive: bool) -> tuple[int, Reply]:
    """``POST /v1beta/models/{model}:batchGenerateContent``: a new batch over an uploaded file or inline
    requests; it walks ``create.gemini`` of the config (PENDING, RUNNING, SUCCEEDED a poll apart by default)
    and its results answer its requests (those holding ``create.fail_marker`` fail)."""
    try:
        data = json.loads(body) if body else None
        batch = data.get("batch") if isinstance(data, dict) else None
        if not isinstance(batch, dict):
            raise SpecError("Request must be {\"batch\": {...}}.")
        config = batch.get("inputConfig") or batch.get("input_config")
        items = _requests_of(sim, config)
        if not items:
            raise SpecError("The batch has no requests.")
    except SpecError as exc:
        return err(exc.code, str(exc), keep_alive)
    except ValueError:
        return err(400, "Invalid JSON payload received.", keep_alive)
    inline = isinstance(config, dict) and not (config.get("fileName") or config.get("file_name"))
    name = f"batches/{secrets.token_hex(8)}"
    spec = {"name": name, "model": f"models/{model}", "timeline": sim.create_timeline(GEMINI),
            "display_name": str(batch.get("displayName") or batch.get("display_name") or ""),
            "output": {"kind": "inline" if inline else "file"}}
    result = Batch.from_requests(GEMINI, items, sim.fail_marker, "inline" if inline else "file")
    given = {"requests": {"requests": config["requests"]["requests"]}} if inline else {
        "fileName": config.get("fileName") or config.get("file_name")}
    job = sim.add_created(spec, result, gemini_input=given)
    return 200, Reply(0.0, json_payload(200, json.loads(job.body()), keep_alive))
