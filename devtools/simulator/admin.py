"""The admin API under ``/_sim/`` (the server side of ``SimulatorClient``): health, reset, config, jobs
(create, force a state, add faults, delete, inspect, what their outputs hold), list faults and stale list
pages, stats, and the JWKS of the Ed25519 webhook key. JSON in and out; never delayed, never faulted, not
counted in stats."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from devtools.simulator import vertex
from devtools.simulator.faults import parse_faults, parse_list_faults
from devtools.simulator.jobs import parse_error, parse_stats, parse_steps, short_state
from devtools.simulator.webhooks import WEBHOOK_STATES
from devtools.simulator.wire import GEMINI, VERTEX, SpecError, google_error, json_payload

if TYPE_CHECKING:
    from devtools.simulator.app import Simulator


def handle(sim: Simulator, method: str, path: str, query: str, body: bytes, keep_alive: bool) -> bytes:
    """The whole HTTP response to an admin request: 200 with the result, or a Google error body."""
    try:
        data = json.loads(body) if body else {}
        if method == "POST" and not isinstance(data, dict):
            raise SpecError("expected a JSON object")
        route = _ROUTES.get((method, path))
        if route is None:
            raise SpecError(f"no admin endpoint {method} {path}", 404)
        return json_payload(200, route(sim, query, data), keep_alive)
    except SpecError as exc:
        return json_payload(exc.code, google_error(exc.code, str(exc)), keep_alive)
    except (ValueError, TypeError, KeyError) as exc:
        return json_payload(400, google_error(400, f"bad admin request: {exc}"), keep_alive)


def _health(sim: Simulator, query: str, data: dict) -> Any:
    return {"ok": True, "jobs": len(sim.jobs)}


def _reset(sim: Simulator, query: str, data: dict) -> Any:
    sim.reset()
    return {}


def _configure(sim: Simulator, query: str, data: dict) -> Any:
    sim.apply_config(data)
    return sim.config_view()


def _config(sim: Simulator, query: str, data: dict) -> Any:
    return sim.config_view()


def _add_jobs(sim: Simulator, query: str, data: dict) -> Any:
    return {"created": sim.add_jobs(data.get("jobs"))}


def _set_job(sim: Simulator, query: str, data: dict) -> Any:
    job = sim.job(data.get("name"))
    state = short_state(job.api, data.get("state"))
    steps = parse_steps(job.api, data["timeline"], job.name) if data.get("timeline") else None
    job.force(state, parse_stats(data.get("stats")), parse_error(data.get("error")), steps, time.monotonic())
    return job.admin_view()


def _add_job_faults(sim: Simulator, query: str, data: dict) -> Any:
    job = sim.job(data.get("name"))
    job.faults.extend(parse_faults(data.get("faults"), job.name))
    return job.admin_view()


def _add_list_faults(sim: Simulator, query: str, data: dict) -> Any:
    api = data.get("api")
    if api not in (GEMINI, VERTEX):
        raise SpecError('lists/faults needs "api": "gemini" or "vertex"')
    sim.list_faults[api].extend(parse_list_faults(data.get("faults")))
    return {"queued": len(sim.list_faults[api])}


def _stale_lists(sim: Simulator, query: str, data: dict) -> Any:
    job = sim.job(data.get("name"))
    count = data.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise SpecError("count must be a non-negative integer")
    if job.prev_body is None:
        raise SpecError(f"{job.name} has no earlier rendering to show yet")
    job.stale_lists = count
    return job.admin_view()


def _delete_job(sim: Simulator, query: str, data: dict) -> Any:
    sim.job(data.get("name"))
    del sim.jobs[data["name"]]
    return {}


def _get_job(sim: Simulator, query: str, data: dict) -> Any:
    job = sim.job(parse_qs(query).get("name", [None])[0])
    job.advance(time.monotonic())
    if job.new_rules:
        job.check_output(time.monotonic())
    view = job.admin_view()
    view["gets"] = sim.per_job_gets.get(job.name, 0)
    return view


def _outputs(sim: Simulator, query: str, data: dict) -> Any:
    """What a job with a ``results.Batch`` holds, whatever its state: ``{"done": n, "files": {name: text}}``
    (Gemini: ``responses.jsonl`` or ``inline.json``, and ``input.jsonl``; Vertex: its prediction shards)."""
    job = sim.job(parse_qs(query).get("name", [None])[0])
    if job.batch is None:
        raise SpecError(f"{job.name} has no requests spec: its outputs are not generated", 404)
    done = job.results_done or 0
    out: dict[str, str] = {}
    if job.api == GEMINI:
        if (job.output or {}).get("kind") == "inline":
            out["inline.json"] = json.dumps([job.batch.gemini_inline(i) for i in job.batch.order(done)])
        else:
            out["responses.jsonl"] = b"".join(job.batch.responses_file(done)).decode()
        out["input.jsonl"] = b"".join(job.batch.input_file()).decode()
    else:
        when = vertex.processed_time(job.end_t if job.end_t is not None else job.update_t)
        out.update({name: data.decode() for name, data in job.batch.vertex_shards(done, when)})
    return {"name": job.name, "done": done, "output_ready": job.output_ready, "files": out}


def _stats(sim: Simulator, query: str, data: dict) -> Any:
    return sim.stats_view()


def _jwks(sim: Simulator, query: str, data: dict) -> Any:
    if sim.webhooks is None or sim.webhooks.private_key is None:
        raise SpecError("no Ed25519 webhook key configured", 404)
    return sim.webhooks.jwks()


def _webhook_state(sim: Simulator, query: str, data: dict) -> Any:
    """Set a registered webhook's ``state`` as the Gemini API would (``enabled``, ``disabled``,
    ``disabled_due_to_failed_deliveries``); a webhook not enabled gets no deliveries."""
    from devtools.simulator.wire import stamp

    entry = sim.registered.get(data.get("id"))
    if entry is None:
        raise SpecError(f"no webhook {data.get('id')!r}", 404)
    if data.get("state") not in WEBHOOK_STATES:
        raise SpecError(f"state must be one of {sorted(WEBHOOK_STATES)}")
    entry[0]["state"] = data["state"]
    entry[0]["update_time"] = stamp(time.monotonic(), 6)
    return entry[0]


def _reset_stats(sim: Simulator, query: str, data: dict) -> Any:
    sim.reset_stats()
    return {}


_ROUTES: dict[tuple[str, str], Callable[[Simulator, str, dict], Any]] = {
    ("GET", "/_sim/health"): _health,
    ("POST", "/_sim/reset"): _reset,
    ("POST", "/_sim/config"): _configure,
    ("GET", "/_sim/config"): _config,
    ("POST", "/_sim/jobs"): _add_jobs,
    ("POST", "/_sim/jobs/set"): _set_job,
    ("POST", "/_sim/jobs/faults"): _add_job_faults,
    ("POST", "/_sim/lists/faults"): _add_list_faults,
    ("POST", "/_sim/lists/stale"): _stale_lists,
    ("POST", "/_sim/jobs/delete"): _delete_job,
    ("GET", "/_sim/jobs/get"): _get_job,
    ("GET", "/_sim/jobs/outputs"): _outputs,
    ("GET", "/_sim/stats"): _stats,
    ("GET", "/_sim/webhooks/jwks.json"): _jwks,
    ("POST", "/_sim/stats/reset"): _reset_stats,
    ("POST", "/_sim/webhooks/state"): _webhook_state,
}
