"""A simulated job of either API: its spec, parsed and checked; its scripted timeline (states reached after
polls or seconds, a forced state, a cancel); its counts; when its outputs appear (and, for a job with a
``requests`` spec or created through the API, what they hold: ``results.Batch``); and its rendering
(cached), which the ``gemini`` and ``vertex`` modules write."""

from __future__ import annotations

import json
from typing import Any

from devtools.simulator import fieldmask, gemini, vertex
from devtools.simulator.faults import parse_faults
from devtools.simulator.results import Batch
from devtools.simulator.wire import (
    ALLOWED,
    GEMINI,
    GEMINI_NAME,
    PREFIX,
    STARTED,
    SUCCESS,
    TERMINAL,
    VERTEX,
    VERTEX_NAME,
    SpecError,
)

FIELD_CACHE_MAX = 64 * 1024  # masked renderings kept per job up to this size (a big one is made per GET)

GEMINI_MODEL = "models/gemini-2.5-flash"
VERTEX_MODEL = "publishers/google/models/gemini-2.5-flash"


# --- spec parsing ----------------------------------------------------------------------------------------


def short_state(api: str, value: Any) -> str:
    """``RUNNING`` from ``RUNNING``, ``BATCH_STATE_RUNNING`` or ``JOB_STATE_RUNNING``, if ``api`` has it."""
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


def parse_stats(value: Any) -> dict[str, int] | None:
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


def parse_error(value: Any) -> dict | None:
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


def parse_steps(api: str, timeline: Any, where: str) -> list[Step]:
    if not isinstance(timeline, list):
        raise SpecError(f"{where}: timeline must be a list of steps")
    steps = []
    for i, raw in enumerate(timeline):
        if isinstance(raw, str):
            raw = {"state": raw}
        if not isinstance(raw, dict):
            raise SpecError(f"{where}: timeline[{i}] must be an object")
        try:
            steps.append(_parse_step(api, raw))
        except SpecError as exc:
            raise SpecError(f"{where}: timeline[{i}]: {exc}") from None
    return steps


def _parse_step(api: str, raw: dict) -> Step:
    state = short_state(api, raw.get("state"))
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
    return Step(state, after_polls, after_s, parse_stats(raw.get("stats")), parse_error(raw.get("error")))


def _parse_output(api: str, job_id: str, out: Any, where: str, batch: Batch | None = None) -> dict | None:
    if out is None:
        if api == VERTEX:
            return {"kind": "gcs", "uri": f"gs://sim-output/{job_id}"}
        if batch is None:
            return None
        out = {"kind": "file"}
    if not isinstance(out, dict):
        raise SpecError(f"{where}: output must be an object or null")
    kind = out.get("kind")
    allowed = ("file", "inline") if api == GEMINI else ("gcs", "bigquery")
    if kind not in allowed:
        raise SpecError(f"{where}: output.kind {kind!r} is not one of {allowed} for the {api} API")
    res = dict(out)
    if kind == "file":
        file_id = str(out.get("file_id") or f"batch-{job_id}")
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
        res["response_bytes"] = int(out.get("response_bytes", 0))  # each response's text padded to this size
        if res["count"] < 0 or res["response_bytes"] < 0:
            raise SpecError(f"{where}: output count and response_bytes must be >= 0")
    elif kind == "gcs":
        if not str(out.get("uri", "")).startswith("gs://"):
            raise SpecError(f"{where}: output.uri must be gs://...")
    elif not str(out.get("table", "")).startswith("bq://"):
        raise SpecError(f"{where}: output.table must be bq://...")
    if "delay_s" in out:
        delay = out["delay_s"]
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise SpecError(f"{where}: output.delay_s must be a non-negative number")
        res["delay_s"] = float(delay)
    if batch is not None and kind in ("file", "inline"):  # the batch says what the outputs hold
        res["count"], res["errors"] = batch.count, batch.failed
    return res


# --- the job ---------------------------------------------------------------------------------------------


class Job:
    __slots__ = ("name", "api", "job_id", "display_name", "model", "steps", "step", "polls", "step_t",
                 "state", "stats", "error", "output", "faults", "labels", "input_config", "create_t",
                 "update_t", "start_t", "end_t", "cancel_pending", "output_ready", "cache", "total",
                 "inline_items", "rendered_name", "prev_body", "stale_lists", "masked", "field_bodies", "listener",
                 "batch", "new_rules", "output_delay", "output_due", "results_done", "outputs_written",
                 "written", "write_error", "gemini_input", "on_outputs")

    def __init__(self, spec: dict, now: float, batch: Batch | None = None,
                 gemini_input: dict | None = None) -> None:
        name = spec.get("name")
        if not isinstance(name, str):
            raise SpecError(f"job spec needs a string name, got {name!r}")
        where = name
        if m := GEMINI_NAME.match(name):
            self.api = GEMINI
        elif m := VERTEX_NAME.match(name):
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
        self.steps = parse_steps(self.api, timeline, where)
        if not self.steps:
            raise SpecError(f"{where}: timeline is empty")
        self.faults = parse_faults(spec.get("faults"), where)
        labels = spec.get("labels") or {}
        if not isinstance(labels, dict):
            raise SpecError(f"{where}: labels must be an object")
        self.labels = {str(k): str(v) for k, v in labels.items()}
        self.input_config = spec.get("input")
        if batch is None and spec.get("requests") is not None:
            batch = Batch.from_spec(self.api, spec["requests"], where, seed=name)
        self.batch = batch  # what the outputs hold (new spec field ``requests``, or a created job's requests)
        self.gemini_input = gemini_input  # a created Gemini batch's inputConfig, as it was sent
        self.output = _parse_output(self.api, self.job_id, spec.get("output"), where, batch)
        self.total: int | None = None
        if self.output and self.output["kind"] in ("file", "inline"):
            self.total = self.output["count"]
        elif batch is not None:
            self.total = batch.count
        # Jobs with new spec fields follow the new output rules (partial outputs, outputs that appear later);
        # every other job keeps the behaviour it always had.
        self.output_delay = float((self.output or {}).get("delay_s", 0.0))
        self.new_rules = batch is not None or "delay_s" in (self.output or {})
        self.output_due: float | None = None
        self.results_done: int | None = None  # requests with a result once the job has ended
        self.outputs_written = False
        self.written: list[str] = []  # the objects written to the storage emulator (Vertex)
        self.write_error: str | None = None
        self.on_outputs = None  # called once with the job when its outputs appear (the simulator writes Vertex rows)
        self.inline_items: list | None = None  # the Gemini inline results, rendered once
        self.stats: dict[str, int] | None = None
        self.error: dict | None = None
        self.state = ""
        self.start_t: float | None = None
        self.end_t: float | None = None
        self.cancel_pending = False
        self.output_ready = False
        self.cache: bytes | None = None
        self.masked: tuple[frozenset[str], bytes] | None = None
        self.field_bodies: tuple[bytes, dict[str, bytes]] | None = None  # (the body they match, mask -> body)
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
        if self.new_rules:
            self._results_on(state, t)
        self.update_t = t
        self.cache = None

    def _results_on(self, state: str, t: float) -> None:
        """New output rules: a job that ended has outputs when it succeeded, or when it ended otherwise with
        some requests finished (partial outputs); they appear ``output.delay_s`` after it ended."""
        self.output_ready = False
        self.output_due = None
        self.results_done = None
        if state not in TERMINAL:
            return
        success = state in SUCCESS and (self.api == VERTEX or state == "SUCCEEDED")
        done = self.batch.done(success) if self.batch is not None else 0
        if success or done:
            self.results_done = done if self.batch is not None else None
            self.output_due = t + self.output_delay
            self.outputs_written = False
            self.check_output(t)

    def check_output(self, now: float) -> None:
        """Outputs due by ``now`` appear."""
        if self.output_due is not None and now >= self.output_due:
            self.output_due = None
            self.output_ready = True
            self.cache = None
        if self.output_ready and not self.outputs_written and self.on_outputs is not None:
            self.outputs_written = True
            self.on_outputs(self)

    def show_output(self) -> bool:
        """Whether the rendering points to the outputs (Gemini ``output``; Vertex ``outputInfo`` follows the job's
        start unless its outputs appear late)."""
        return self.output_ready if self.new_rules else self.state == "SUCCEEDED"

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
        if self.new_rules:
            self.check_output(now)

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
            if self.batch is not None and self.results_done is not None:
                ok, failed = self.batch.counts(self.results_done)
                return ok, failed, total - self.results_done, total
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

    def fields_body(self, tree: fieldmask.Tree) -> bytes:
        """The rendering with only the fields of a ``fields`` mask; cached (small ones) until the job changes,
        so a masked GET costs the simulator what an unmasked one does."""
        body = self.body()
        if self.field_bodies is None or self.field_bodies[0] is not body:
            self.field_bodies = (body, {})
        key = repr(tree)
        cached = self.field_bodies[1].get(key)
        if cached is None:
            cached = json.dumps(fieldmask.apply(tree, self.render())).encode()
            if len(cached) <= FIELD_CACHE_MAX:
                self.field_bodies[1][key] = cached
        return cached

    def render(self) -> dict:
        return gemini.render(self) if self.api == GEMINI else vertex.render(self)

    def admin_view(self) -> dict:
        view = {"name": self.name, "api": self.api, "state": self.full_state(), "polls": self.polls,
                "step": self.step, "steps": len(self.steps), "faults_left": sum(f[1] for f in self.faults),
                "stats": self.stats, "error": self.error, "cancel_pending": self.cancel_pending}
        if self.new_rules:
            view.update({"output_ready": self.output_ready, "results": self.results_done, "written": self.written,
                         "write_error": self.write_error})
        return view
