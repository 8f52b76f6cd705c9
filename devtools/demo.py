"""``make demo``: the whole batch-relay pipeline on this machine, in compressed time.

    python -m devtools.demo [--ci] [--keep] [--seconds N] [--tick-s S] [--result FILE]

It starts the local stack (``devtools/stack.py``: Firestore and Pub/Sub emulators, fake-gcs-server, the
batch-API simulator, both functions under functions-framework, a push subscription to the reactor and a
scheduler loop), arranges a dozen simulated jobs across both APIs whose states change over the next
minute, tracks them (with the CLI and with ``from batch_relay import track``) but one, which a watched scope
finds by itself, and shows a live view: the job
table as the records in Firestore change, and the event stream as a Pub/Sub subscriber receives it. It
ends with a summary and checks of the end state.

- ``--ci``: headless and time-bounded: plain progress lines, exit 1 if the end state is wrong or the
  time runs out. ``run_demo(ci=True)`` returns the same result as a dict.
- ``--keep``: after the summary, leave the stack up (until Ctrl-C) and print the environment to use
  ``batch-relay list/show`` and ``examples/consumer.py`` against it.
- ``--seconds N``: how long the scenario takes (default 60: the last job finishes at about 3/4 of it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import httpx

from batch_relay.cli import views
from batch_relay.cli.views import human_bytes
from devtools.fakegcs import FakeGcs
from devtools.stack import ROOT, LocalStack, alive_pids

PROJECT = "batch-relay-demo"
VERTEX_PROJECT = "demo-project"
SOURCE_BUCKET = "demo-vertex-output"  # where the simulated Vertex AI jobs "wrote" their predictions
OUTPUT_BUCKET = "demo-outputs"  # where batch-relay copies outputs to
DEFAULT_DESTINATION = f"gs://{OUTPUT_BUCKET}/default"
SUCCESS = ("JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED")
TERMINAL = (*SUCCESS, "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")  # every one is copied
COPY_SETTLED = ("done", "failed", "not_applicable")
WATCHED_LOCATION = "asia-northeast1"  # a watched scope: its jobs are found by listing, nobody tracks them
WATCH_SCOPE = f"vertex:projects/{VERTEX_PROJECT}/locations/{WATCHED_LOCATION}"
# Settings of the demo's functions, on top of the stack's (A2 names; the last three are added settings).
STACK_ENV = {
    "RELAY_WATCH": WATCH_SCOPE,
    "RELAY_DEFAULT_DESTINATION": DEFAULT_DESTINATION,
    "RELAY_ALLOWED_BUCKETS": OUTPUT_BUCKET,
    "RELAY_SOURCE_BUCKETS": SOURCE_BUCKET,  # the reactor reads Vertex AI outputs from this bucket only
    "RELAY_MAX_ATTEMPTS": "2",  # so the flaky job's faults outlast a tick and show as a poll error
    "RELAY_TICK_DEADLINE_S": "30",
    "RELAY_REQUEST_TIMEOUT_S": "5",
    # a job that ended early with finished requests may show its partial outputs late: the copy waits this
    # long for them (compressed time; the default is 1800 s), then has nothing to copy
    "RELAY_OUTPUT_WAIT_S": "4",
}


def _load_consumer():
    """examples/consumer.py, the consumer users copy: the demo's event stream goes through it."""
    spec = importlib.util.spec_from_file_location("batch_relay_example_consumer", ROOT / "examples" / "consumer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- the scenario --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DemoJob:
    name: str
    story: str  # what this job shows, in a few words
    expected: str  # its terminal state
    copy: str | None  # expected copy status ("not_applicable": nothing to copy); None: the job is never copied
    spec: dict[str, Any]  # the simulator's job spec
    destination: str | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    via: str = "python"  # tracked with "cli" or "python"; "watch": nobody tracks it, its scope is watched
    stalls: bool = False  # unchanged for RELAY_STALL_AFTER_S at some point: a stalled event is expected
    sources: dict[str, bytes] = dataclasses.field(default_factory=dict)  # objects under SOURCE_BUCKET

    @property
    def api(self) -> str:
        return "gemini" if self.name.startswith("batches/") else "vertex"


def vertex_name(location: str, job_id: str) -> str:
    return f"projects/{VERTEX_PROJECT}/locations/{location}/batchPredictionJobs/{job_id}"


def label(name: str) -> str:
    """Short form for the table: Vertex names become ``.../{location}/.../{id}``."""
    parts = name.split("/")
    if len(parts) == 6 and parts[0] == "projects":
        return f".../{parts[3]}/.../{parts[5]}"
    return name


def _predictions(n: int, *, failed_every: int = 0, seed: str = "") -> bytes:
    """Vertex AI Gemini-model output lines (docs/wire.md): status, processed_time, request, response."""
    lines = []
    for i in range(1, n + 1):
        request = {"contents": [{"role": "user", "parts": [{"text": f"{seed} item {i}: describe it"}]}]}
        if failed_every and i % failed_every == 0:
            line = {"status": "Bad Request: invalid image", "processed_time": "2026-01-05T10:00:00.000+00:00",
                    "request": request, "response": {}}
        else:
            line = {"status": "", "processed_time": "2026-01-05T10:00:00.000+00:00", "request": request,
                    "response": {"candidates": [{"content": {"role": "model", "parts": [
                        {"text": f"A short description of {seed} item {i}."}]}, "finishReason": "STOP"}]}}
        lines.append(json.dumps(line, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def scenario(seconds: float = 60.0) -> list[DemoJob]:
    """Thirteen jobs: six Gemini API batches, seven Vertex AI jobs (one of them in the watched scope, tracked
    by nobody). The times below are stretched so that the last job ends at 3/4 of
    ``seconds`` (the rest is for start-up, the last copies and the last events)."""
    jobs = [*_gemini_jobs(), *_vertex_jobs()]
    k = seconds * 0.75 / max(story_length(job) for job in jobs)
    for job in jobs:
        for step in job.spec["timeline"]:
            if "after_s" in step:
                step["after_s"] = round(step["after_s"] * k, 2)
    return jobs


def _timeline(*items: tuple[str, float] | tuple[str, float, dict[str, Any]]) -> list[dict[str, Any]]:
    """A simulator timeline: (state, seconds after the previous step[, more step keys]) items."""
    out = []
    for i, item in enumerate(items):
        state, after = item[0], item[1]
        step: dict[str, Any] = {"state": state, **(item[2] if len(item) > 2 else {})}
        if i:
            step["after_s"] = after
        out.append(step)
    return out


def _counts(ok: int, failed: int, left: int) -> dict[str, Any]:
    """A step's request counts."""
    return {"stats": {"successful": ok, "failed": failed, "incomplete": left, "total": ok + failed + left}}


NIGHTLY_FAILED = 6  # nightly-eval's failed requests (3 codes): its failed.jsonl, resubmitted by the demo
AB_COUNT, AB_FINISHED = 500, 10  # ab-test: cancelled with 10 of its 500 requests done
RUN_DIR = "prediction-model-2026-01-05T10:00:00.000000Z"  # ':' in object names, as Vertex writes them


def _gemini_jobs() -> list[DemoJob]:
    """Six Gemini API batches (API key; BATCH_STATE_* on the wire, JOB_STATE_* in batch-relay)."""
    return [
        DemoJob("batches/demo-nightly-eval", "tokens, cost, 6 failed by code; their failed.jsonl resubmitted",
                "JOB_STATE_SUCCEEDED",
                "done", {"name": "batches/demo-nightly-eval", "display_name": "nightly-eval",
                         "timeline": _timeline(("PENDING", 0), ("RUNNING", 6, _counts(0, 0, 2000)),
                                               ("RUNNING", 8, _counts(900, 2, 1098)),
                                               ("RUNNING", 8, _counts(1700, 4, 296)),
                                               ("SUCCEEDED", 8, _counts(1994, 6, 0))),
                         # what the responses hold: tokens (cost), 6 failures by code, an input file to join
                         "requests": {"count": 2000, "failed": NIGHTLY_FAILED, "error_codes": [3, 13, 8],
                                      "usage": {"prompt": 1800, "candidates": 420, "cached": 600, "thoughts": 90},
                                      "input": "file"},
                         "output": {"kind": "file", "file_id": "batch-demo-nightly-eval-" + "0" * 32}},
                destination=f"gs://{OUTPUT_BUCKET}/gemini/nightly-eval", labels={"team": "evals"}, via="cli"),
        DemoJob("batches/demo-support-replies", "inline responses -> responses.jsonl, default destination",
                "JOB_STATE_SUCCEEDED", "done",
                {"name": "batches/demo-support-replies", "display_name": "support-replies",
                 "timeline": _timeline(("PENDING", 0), ("RUNNING", 6), ("SUCCEEDED", 10)),
                 "output": {"kind": "inline", "count": 24, "errors": 2}},
                destination=None, labels={"team": "support"}, via="cli"),
        DemoJob("batches/demo-translation", "fails: a job error in the record and the event",
                "JOB_STATE_FAILED", "not_applicable",
                {"name": "batches/demo-translation", "display_name": "translation",
                 "timeline": _timeline(("PENDING", 0), ("RUNNING", 6),
                                       ("FAILED", 12, {"error": {"code": 3, "message":
                                                                 "Invalid JSONL input at line 17."}}))},
                destination=f"gs://{OUTPUT_BUCKET}/gemini/translation", via="cli"),
        DemoJob("batches/demo-ab-test", "cancelled at 10/500: partial outputs copied, 490 unfinished to resend",
                "JOB_STATE_CANCELLED", "done",
                {"name": "batches/demo-ab-test", "display_name": "ab-test",
                 "timeline": _timeline(("PENDING", 0), ("RUNNING", 8, _counts(AB_FINISHED, 0, AB_COUNT - AB_FINISHED)),
                                       ("CANCELLED", 14)),
                 "requests": {"count": AB_COUNT, "finished": AB_FINISHED, "input": "file"},
                 "output": {"kind": "file", "file_id": "batch-demo-ab-test-" + "2" * 32}},
                destination=f"gs://{OUTPUT_BUCKET}/gemini/ab-test", via="cli"),
        DemoJob("batches/demo-backfill", "stalls in the queue (a stalled event), then expires (48 h, compressed)",
                "JOB_STATE_EXPIRED", "not_applicable",
                {"name": "batches/demo-backfill", "display_name": "backfill",
                 "timeline": _timeline(("PENDING", 0), ("EXPIRED", 30))},
                destination=f"gs://{OUTPUT_BUCKET}/gemini/backfill", via="cli", stalls=True),
        DemoJob("batches/demo-flaky-quota", "API answers 429 (with/without Retry-After), 500, 503 first",
                "JOB_STATE_SUCCEEDED", "done",
                {"name": "batches/demo-flaky-quota", "display_name": "flaky-quota",
                 "timeline": _timeline(("PENDING", 0), ("RUNNING", 10), ("SUCCEEDED", 14)),
                 "faults": [{"kind": "429", "retry_after": 1}, {"kind": "429"}, {"kind": "500"},
                            {"kind": "503"}],
                 "output": {"kind": "file", "file_id": "batch-demo-flaky-quota-" + "1" * 32, "lines": 300,
                            "line_bytes": 250}},
                destination=f"gs://{OUTPUT_BUCKET}/gemini/flaky-quota", via="cli"),
    ]


def _vertex_jobs() -> list[DemoJob]:
    """Seven Vertex AI jobs (bearer token; the resource itself on the wire), one in the watched scope."""
    return [
        DemoJob(vertex_name("us-central1", "1001"), "GCS output copied server-side (rewrite)",
                "JOB_STATE_SUCCEEDED", "done",
                {"name": vertex_name("us-central1", "1001"), "display_name": "product-descriptions",
                 "timeline": _timeline(("QUEUED", 0), ("PENDING", 4), ("RUNNING", 6, _counts(0, 0, 1000)),
                                       ("RUNNING", 8, _counts(600, 0, 400)), ("SUCCEEDED", 10, _counts(1000, 0, 0))),
                 "output": {"kind": "gcs", "uri": f"gs://{SOURCE_BUCKET}/product-descriptions/{RUN_DIR}"}},
                destination=f"gs://{OUTPUT_BUCKET}/vertex/product-descriptions", labels={"team": "catalog"},
                sources={f"product-descriptions/{RUN_DIR}/predictions.jsonl": _predictions(1000, seed="product"),
                         f"product-descriptions/{RUN_DIR}-old/predictions.jsonl": b"a sibling prefix: not copied\n"}),
        DemoJob(vertex_name("europe-west4", "1002"), "partial success: outputs still copied",
                "JOB_STATE_PARTIALLY_SUCCEEDED", "done",
                {"name": vertex_name("europe-west4", "1002"), "display_name": "image-captions",
                 "timeline": _timeline(("QUEUED", 0), ("RUNNING", 8, _counts(0, 0, 600)),
                                       ("PARTIALLY_SUCCEEDED", 16, _counts(560, 40, 0))),
                 "output": {"kind": "gcs", "uri": f"gs://{SOURCE_BUCKET}/image-captions/{RUN_DIR}"}},
                destination=f"gs://{OUTPUT_BUCKET}/vertex/image-captions",
                sources={f"image-captions/{RUN_DIR}/predictions_0001.jsonl": _predictions(300, seed="image"),
                         f"image-captions/{RUN_DIR}/predictions_0002.jsonl": _predictions(300, failed_every=7,
                                                                                          seed="image-b"),
                         f"image-captions/{RUN_DIR}/errors_0001.jsonl": b'{"error": "40 instances failed"}\n'}),
        DemoJob(vertex_name("us-central1", "1003"), "fails after starting", "JOB_STATE_FAILED", "not_applicable",
                {"name": vertex_name("us-central1", "1003"), "display_name": "bad-input",
                 "timeline": _timeline(("QUEUED", 0), ("RUNNING", 6),
                                       ("FAILED", 10, {"error": {"code": 3, "message":
                                                                 "Unable to parse instance 12: invalid JSON."}})),
                 "output": {"kind": "gcs", "uri": f"gs://{SOURCE_BUCKET}/bad-input/{RUN_DIR}"}},  # left empty
                destination=f"gs://{OUTPUT_BUCKET}/vertex/bad-input"),
        DemoJob(vertex_name("us-east1", "1004"), "cancelled: CANCELLING, then CANCELLED", "JOB_STATE_CANCELLED",
                "not_applicable", {"name": vertex_name("us-east1", "1004"), "display_name": "superseded",
                                   "timeline": _timeline(("QUEUED", 0), ("RUNNING", 6), ("CANCELLING", 12),
                                                         ("CANCELLED", 6)),
                                   "output": {"kind": "gcs", "uri": f"gs://{SOURCE_BUCKET}/superseded/{RUN_DIR}"}},
                destination=f"gs://{OUTPUT_BUCKET}/vertex/superseded"),
        DemoJob(vertex_name("global", "1005"), "BigQuery output: nothing to copy", "JOB_STATE_SUCCEEDED",
                "not_applicable",
                {"name": vertex_name("global", "1005"), "display_name": "to-bigquery",
                 "timeline": _timeline(("QUEUED", 0), ("RUNNING", 8, _counts(0, 0, 50)),
                                       ("SUCCEEDED", 12, _counts(50, 0, 0))),
                 "output": {"kind": "bigquery", "table": f"bq://{VERTEX_PROJECT}.batch_out.predictions_1005"}}),
        DemoJob(vertex_name("us-central1", "1006"), "paused, resumed, then succeeds", "JOB_STATE_SUCCEEDED",
                "done",
                {"name": vertex_name("us-central1", "1006"), "display_name": "weekly-report",
                 "timeline": _timeline(("RUNNING", 0, _counts(0, 0, 200)), ("PAUSED", 8, _counts(80, 0, 120)),
                                       ("QUEUED", 8), ("RUNNING", 6), ("SUCCEEDED", 10, _counts(199, 1, 0))),
                 "output": {"kind": "gcs", "uri": f"gs://{SOURCE_BUCKET}/weekly-report/{RUN_DIR}"}},
                destination=f"gs://{OUTPUT_BUCKET}/vertex/weekly-report",
                sources={f"weekly-report/{RUN_DIR}/predictions.jsonl": _predictions(200, failed_every=200,
                                                                                    seed="report"),
                         f"weekly-report/{RUN_DIR}/charts/summary.jsonl": b'{"chart": "weekly"}\n'}),
        DemoJob(vertex_name(WATCHED_LOCATION, "2001"), "nobody tracks it: found by listing its watched scope",
                "JOB_STATE_SUCCEEDED", "done",
                {"name": vertex_name(WATCHED_LOCATION, "2001"), "display_name": "notebook-experiment",
                 "timeline": _timeline(("QUEUED", 0), ("RUNNING", 6, _counts(0, 0, 120)),
                                       ("RUNNING", 6, _counts(70, 0, 50)), ("SUCCEEDED", 8, _counts(120, 0, 0))),
                 "output": {"kind": "gcs", "uri": f"gs://{SOURCE_BUCKET}/notebook-experiment/{RUN_DIR}"}},
                via="watch", sources={f"notebook-experiment/{RUN_DIR}/predictions.jsonl":
                                      _predictions(120, seed="notebook")}),
    ]


def story_length(job: DemoJob) -> float:
    """Seconds from the job's creation in the simulator to its last state."""
    return sum(step.get("after_s", 0.0) for step in job.spec["timeline"])


# -- fake-gcs helpers ------------------------------------------------------------------------------------------
def split_gs(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("gs://").partition("/")
    return bucket, prefix


# -- the live view ----------------------------------------------------------------------------------------------
def event_line(event, t0: float) -> str:
    data = event.data
    kind = event.short_type
    if kind == "stateChanged":
        what = (f"{event.attributes.get('previous_state', '').removeprefix('JOB_STATE_')} -> "
                f"{event.state.removeprefix('JOB_STATE_')}  v{data.get('version')}")
    elif kind == "outputsReady":
        bigquery = "bigquery_uri" in ((data.get("job") or {}).get("output") or {})
        what = (f"nothing to copy{' (BigQuery)' if bigquery else ''}" if data.get("destination") is None else
                f"{data.get('objects')} obj, {human_bytes(int(data.get('bytes') or 0))} -> {data.get('destination')}/")
    elif kind == "outputsFailed":
        what = f"{(data.get('error') or {}).get('kind')}: {(data.get('error') or {}).get('message')}"
    elif kind == "stalled":
        what = f"no change for {data.get('stalled_for_s')}s in {str(data.get('state')).removeprefix('JOB_STATE_')}"
    else:
        what = kind
    return f"{max(event.publish_time - t0, 0):6.1f}s  {kind:13} {label(event.job):28} {what}"


class View:
    """The terminal. Interactive (a terminal, with ``rich``): the live table of ``batch-relay list --follow``
    (``batch_relay.cli.views``) with the event stream under it, redrawn in place. Otherwise plain lines."""

    def __init__(self, out: TextIO, interactive: bool, color: bool) -> None:
        self.out = out
        self.interactive = interactive and views.have_rich()
        self.color = color
        self._live = None

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and code else text

    def say(self, line: str = "") -> None:
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False)
            return
        self.out.write(line + "\n")
        self.out.flush()

    def frame(self, renderable) -> None:
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(renderable, console=Console(file=self.out), refresh_per_second=4, transient=False)
            self._live.start()
        else:
            self._live.update(renderable)

    def end_frame(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def render(jobs: list[DemoJob], records: dict[str, dict[str, Any]], events: list, t0: float, elapsed: float,
           seconds: float, stack: LocalStack, consumer):
    """One frame of the live view: the job table of ``list --follow``, then the last events."""
    from rich.console import Group
    from rich.text import Text

    ticks = stack.scheduler.totals() if stack.scheduler else {}
    terminal = sum(1 for r in records.values() if r.get("terminal"))
    rows = [records.get(job.name) or {"name": job.name, "api": job.api} for job in jobs]
    size = shutil.get_terminal_size((120, 40))
    room = max(size.lines - len(rows) - 10, 3)
    parts = [
        Text(f"batch-relay demo  t={elapsed:5.1f}s (scenario ~{seconds * 0.75:.0f}s)   ticks {ticks.get('ticks', 0)} "
             f"every {stack.tick_s:g}s   {terminal}/{len(jobs)} terminal", style="bold"),
        views.rich_table(rows, label=label),
        Text("... = projects/demo-project/locations/{location}/batchPredictionJobs/{id}", style="dim"),
        Text(f"\nEvents as a subscriber sees them ({stack.viewer_subscription.rsplit('/', 1)[-1]}, ordered per job, "
             f"deduplicated on ce-id): {len(events)} received, {consumer.duplicates} duplicates dropped", style="bold"),
        *(Text(event_line(event, t0), no_wrap=True, overflow="ellipsis") for event in events[-room:]),
        Text(f"\nticks: polled {ticks.get('polled', 0)}, changed {ticks.get('changed', 0)}, published "
             f"{ticks.get('published', 0)}, poll errors {ticks.get('errors', 0)}   (Ctrl-C stops everything)",
             style="dim"),
    ]
    return Group(*parts)


# -- the run ------------------------------------------------------------------------------------------------------
def expected_event_ids(record: dict[str, Any]) -> list[str]:
    """Every event this record's outbox has announced, by the A5 id rules."""
    tid = record["tracking_id"]
    ids = [f"{tid}-{v}" for v in range(1, int(record.get("version") or 0) + 1)]
    copy = record.get("copy") or {}
    if copy.get("announced"):
        ids.append(f"{tid}-copy{copy.get('attempt')}-{'failed' if copy.get('status') == 'failed' else 'ready'}")
    return ids


def stall_after_s(seconds: float) -> float:
    """The demo's RELAY_STALL_AFTER_S: short enough for the backfill job, which waits in the queue for
    most of the scenario, to stall (other jobs may stall too: a stalled event is allowed for any job)."""
    return round(seconds * 0.3, 1)


def settled(jobs: list[DemoJob], records: dict[str, dict[str, Any]], received: set[str]) -> bool:
    if any(job.name not in records for job in jobs):
        return False
    for record in records.values():
        if not record.get("terminal") or record.get("has_unpublished"):
            return False
        copy = record.get("copy") or {}
        if record.get("state") in TERMINAL and (copy.get("status") not in COPY_SETTLED or not copy.get("announced")):
            return False
        if not set(expected_event_ids(record)) <= received:
            return False
    return True


def _track(job: DemoJob, stack: LocalStack, settings, db, view: View) -> None:
    if job.via == "watch":
        view.say(view.paint(f"  (not tracked: {label(job.name)} is in the watched scope {WATCH_SCOPE})", "2"))
        return
    if job.via == "cli":
        from batch_relay import cli

        argv = ["track", job.name]
        if job.destination:
            argv += ["--destination", job.destination]
        for key, value in job.labels.items():
            argv += ["--label", f"{key}={value}"]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = cli.main(argv, env=stack.env)
        if code != 0:
            raise RuntimeError(f"batch-relay {' '.join(argv)} exited with {code}")
        view.say(f"  $ batch-relay {' '.join(argv)}")
        view.say(view.paint(f"    {buf.getvalue().strip()}", "2"))
    else:
        from batch_relay import track

        track(job.name, destination=job.destination, labels=job.labels or None, settings=settings, db=db)
        args = [repr(job.name)] + ([f"destination={job.destination!r}"] if job.destination else []) + \
               ([f"labels={job.labels!r}"] if job.labels else [])
        view.say(f"  >>> track({', '.join(args)})")


def verify(jobs: list[DemoJob], store, gcs: FakeGcs, events: list, sim_stats: dict[str, Any],
           records: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The end state, checked: returns (checks, per-job details)."""
    checks: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []

    def check(name: str, problems: list[str]) -> None:
        checks.append({"check": name, "ok": not problems, "problems": problems[:20]})

    by_job: dict[str, list] = {}
    for event in events:
        by_job.setdefault(event.job, []).append(event)
    states, chains, delivered, copies = [], [], [], []
    received_ids = [e.id for e in events]
    if len(received_ids) != len(set(received_ids)):
        delivered.append("an event was handed to the consumer twice (deduplication failed)")
    expected_all: set[str] = set()
    for job in jobs:
        record = records.get(job.name)
        if record is None:
            states.append(f"{job.name}: not tracked")
            continue
        transitions = store.transitions(job.name)
        got = by_job.get(job.name, [])
        details.append({"name": job.name, "api": job.api, "expected": job.expected, "state": record.get("state"),
                        "version": record.get("version"), "tracking_id": record.get("tracking_id"),
                        "transitions": [t["to_state"] for t in transitions], "copy": record.get("copy"),
                        "destination": record.get("destination"), "events": [e.id for e in got]})
        states += _state_problems(job, record)
        chains += _chain_problems(job, record, transitions)
        expected_all |= _check_events(job, record, transitions, got, delivered)
        copies += _copy_problems(job, record, got, gcs)
    extra = sorted({e.id for e in events} - expected_all)
    if extra:
        delivered.append(f"events nobody expected: {extra[:10]}")
    check("every job reached its expected terminal state", states)
    check("every state change is one transition in Firestore (versions 1..n, published)", chains)
    check("every transition was delivered as exactly one event, in order, and every copy announced", delivered)
    check("outputs copied with a manifest whose sizes and crc32c match the objects", copies)
    faults = {code: sim_stats.get("by_code", {}).get(code, 0) for code in ("429", "500", "503")}
    check("the flaky job's 429/500/503 answers were absorbed",
          [] if all(faults.values()) else [f"simulator answered {faults}"])
    via = webhook_endings(jobs, store, sim_stats)
    check("Gemini batch endings reached on_gemini_webhook, signed, and some were published before any tick",
          [] if via["delivered"] and via["via_webhook"] else [f"webhooks: {via}"])
    return checks, details


def _state_problems(job: DemoJob, record: dict[str, Any]) -> list[str]:
    """The job ended in its expected terminal state, tracked the way the scenario tracked it."""
    problems = []
    if record.get("state") != job.expected or not record.get("terminal"):
        problems.append(f"{job.name}: {record.get('state')} (terminal={record.get('terminal')}), "
                        f"expected {job.expected}")
    if record.get("tracked_by") != ("watch" if job.via == "watch" else "track"):
        problems.append(f"{job.name}: tracked_by {record.get('tracked_by')}, but it was {job.via}")
    return problems


def _chain_problems(job: DemoJob, record: dict[str, Any], transitions: list[dict[str, Any]]) -> list[str]:
    """Transitions: versions 1..n, a chain from UNSPECIFIED, all published, ending at the terminal state."""
    problems = []
    previous = "JOB_STATE_UNSPECIFIED"
    for number, t in enumerate(transitions, start=1):
        if t["version"] != number or t["from_state"] != previous or not t["published"]:
            problems.append(f"{job.name}: transition {t['version']} {t['from_state']}->{t['to_state']} "
                            f"(published={t['published']}) breaks the chain")
        if t["event_id"] != f"{record['tracking_id']}-{number}":
            problems.append(f"{job.name}: transition {number} has event_id {t['event_id']}")
        previous = t["to_state"]
    if len(transitions) != record.get("version"):
        problems.append(f"{job.name}: version {record.get('version')} but {len(transitions)} transitions")
    if transitions and transitions[-1]["to_state"] != record.get("state"):
        problems.append(f"{job.name}: last transition is {transitions[-1]['to_state']}")
    return problems


def _check_events(job: DemoJob, record: dict[str, Any], transitions: list[dict[str, Any]], got: list,
                  delivered: list[str]) -> set[str]:
    """Events: exactly one stateChanged per transition, in version order, then the copy's announcement; any
    job may stall (once per version), the backfill job must. Problems go to ``delivered``; returns the ids
    this job's events may have."""
    changed = [e for e in got if e.type.endswith("stateChanged")]
    want = [t["event_id"] for t in transitions]
    if [e.id for e in changed] != want:
        delivered.append(f"{job.name}: stateChanged events {[e.id for e in changed]} != transitions {want}")
    for e, t in zip(changed, transitions, strict=False):
        if e.state != t["to_state"] or e.attributes.get("previous_state") != t["from_state"]:
            delivered.append(f"{job.name}: event {e.id} says {e.attributes.get('previous_state')}->{e.state}")
    expected_ids = expected_event_ids(record)
    stalls = [e.id for e in got if e.type.endswith("stalled")]
    if sorted(e.id for e in got if not e.type.endswith("stalled")) != sorted(expected_ids):
        delivered.append(f"{job.name}: events {sorted(e.id for e in got)} != expected {sorted(expected_ids)}")
    if job.stalls and not stalls:
        delivered.append(f"{job.name}: no stalled event while it waited in the queue")
    if any(not re.fullmatch(rf"{record['tracking_id']}-\d+-stalled", s) for s in stalls):
        delivered.append(f"{job.name}: stalled event ids {stalls}")
    return {*expected_ids, *stalls}


def _copy_problems(job: DemoJob, record: dict[str, Any], got: list, gcs: FakeGcs) -> list[str]:
    """The copy: announced with the expected status; for a copy done, the manifest held against the bucket."""
    copy = record.get("copy") or {}
    if job.copy is None:
        if copy.get("status") != "pending" or any(e.type.endswith(("outputsReady", "outputsFailed")) for e in got):
            return [f"{job.name}: no outputs to copy, but copy is {copy.get('status')}"]
        return []
    if copy.get("status") != job.copy or not copy.get("announced"):
        return [f"{job.name}: copy {copy.get('status')} (announced={copy.get('announced')}), "
                f"expected {job.copy}: {copy.get('error')}"]
    if job.copy == "not_applicable":
        return []
    return _check_manifest(job, record, gcs)


def webhook_endings(jobs: list[DemoJob], store, sim_stats: dict[str, Any]) -> dict[str, Any]:
    """How the Gemini batches' last transitions were seen: by the webhook (and how soon after the batch
    ended, by the simulator's clock) or by a tick."""
    ended = {e["job"]: e["ended_at"] for e in (sim_stats.get("webhooks") or {}).get("log", [])}
    via_webhook, lags = 0, []
    endings = [job for job in jobs if job.api == "gemini"]
    for job in endings:
        transitions = store.transitions(job.name)
        if transitions and transitions[-1].get("via") == "webhook":
            via_webhook += 1
            if job.name in ended:
                lags.append(transitions[-1]["observed_at"].timestamp() - ended[job.name])
    hooks = sim_stats.get("webhooks") or {}
    return {"gemini_endings": len(endings), "via_webhook": via_webhook, "delivered": hooks.get("delivered", 0),
            "lag_s": sorted(round(x, 3) for x in lags)}


def _check_manifest(job: DemoJob, record: dict[str, Any], gcs: FakeGcs) -> list[str]:
    copy = record["copy"]
    expected_uri = job.destination or f"{DEFAULT_DESTINATION}/{job.api}/{job.name.rsplit('/', 1)[-1]}"
    problems = []
    if copy.get("uri") != expected_uri:
        problems.append(f"{job.name}: copied to {copy.get('uri')}, expected {expected_uri}")
    bucket, prefix = split_gs(copy.get("uri") or "")
    try:
        manifest = json.loads(gcs.get(bucket, f"{prefix}/_manifest.json"))
    except (httpx.HTTPError, ValueError) as exc:
        return [*problems, f"{job.name}: no readable manifest at {copy.get('manifest_uri')}: {exc}"]
    if manifest.get("job") != job.name or manifest.get("state") != job.expected:
        problems.append(f"{job.name}: manifest says {manifest.get('job')} {manifest.get('state')}")
    listed = {o["name"]: o for o in manifest.get("objects", [])}
    present = {n.removeprefix(prefix + "/") for n in gcs.names(bucket, prefix + "/")
               if not RETRY_FOLDER.match(n.removeprefix(prefix + "/"))} - {"_manifest.json"}
    if set(listed) != present:
        problems.append(f"{job.name}: manifest lists {sorted(listed)}, bucket holds {sorted(present)}")
    for name, entry in listed.items():
        meta = gcs.meta(bucket, f"{prefix}/{name}") or {}
        if int(meta.get("size") or -1) != entry.get("size") or meta.get("crc32c") != entry.get("crc32c"):
            problems.append(f"{job.name}: {name} is {meta.get('size')} bytes crc32c {meta.get('crc32c')}, manifest "
                            f"says {entry.get('size')} {entry.get('crc32c')}")
    if job.sources:  # Vertex: every source object under the output directory, nothing from sibling prefixes
        source_dir = next(iter(job.spec["output"]["uri"].split(f"gs://{SOURCE_BUCKET}/", 1)[1:]), "")
        wanted = {n[len(source_dir) + 1:] for n in job.sources if n.startswith(source_dir + "/")}
        if set(listed) - {"failed.jsonl"} != wanted:  # (failed.jsonl: the requests to send again, when any)
            problems.append(f"{job.name}: copied {sorted(listed)}, expected {sorted(wanted)}")
    if manifest.get("total_bytes") != copy.get("bytes") or len(listed) != copy.get("objects"):
        problems.append(f"{job.name}: manifest total {manifest.get('total_bytes')} B / {len(listed)} objects, "
                        f"record {copy.get('bytes')} B / {copy.get('objects')}")
    return problems


def _mirror_outputs(gcs: FakeGcs, target: Path) -> int:
    """Download what was copied into the output bucket, so it can be looked at after the stack stops."""
    count = 0
    for name in gcs.names(OUTPUT_BUCKET):
        path = target / OUTPUT_BUCKET / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gcs.get(OUTPUT_BUCKET, name))
        count += 1
    return count


def run_demo(*, ci: bool = False, keep: bool = False, seconds: float = 60.0, tick_s: float | None = None,
             timeout_s: float | None = None, out: TextIO | None = None, interactive: bool | None = None,
             workdir: str | os.PathLike | None = None,
             inspect: Callable[[LocalStack, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the demo; returns its result (``ok``, ``checks``, ``jobs``, ``events``, ``ticks``, ``copied``,
    ``outputs``, ``pids``, ``elapsed_s``, ``timed_out``). ``inspect(stack, result)`` runs while the
    stack is still up (tests look at the end state with it); every process is stopped on return."""
    out = out or sys.stdout
    if interactive is None:
        interactive = not ci and out.isatty() and os.environ.get("TERM") != "dumb"
    color = interactive and not os.environ.get("NO_COLOR")
    view = View(out, interactive, color)
    tick_s = tick_s or round(min(2.0, max(0.5, seconds / 30)), 1)
    timeout_s = timeout_s or max(90.0, seconds * 2.0)
    workdir = Path(workdir) if workdir else Path(os.environ.get("TMPDIR", "/tmp")) / f"batch-relay-demo-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = scenario(seconds)
    consumer_mod = _load_consumer()
    result: dict[str, Any] = {"ok": False, "timed_out": False, "checks": [], "jobs": [], "events": [],
                              "pids": [], "seconds": seconds, "tick_s": tick_s, "workdir": str(workdir)}
    started = time.monotonic()
    _intro(view, tick_s)
    stack = _demo_stack(view, seconds, tick_s, workdir)
    try:
        with stack, stack.environ(), contextlib.ExitStack() as cleanup:  # cleanup runs before the stack stops
            result["pids"] = list(stack.pids)
            result["env"] = dict(stack.env)
            run = _DemoRun(view, jobs, stack, cleanup, seconds, timeout_s, workdir)
            run.play(consumer_mod)
            result.update(run.conclude(started))
            _summary(view, result, jobs, run.records, stack)
            if inspect is not None:
                inspect(stack, result)
            if keep:
                _keep(view, stack)
    except KeyboardInterrupt:
        result["interrupted"] = True
    finally:
        view.end_frame()
    if result.get("interrupted"):
        view.say("\ninterrupted: every process the demo started was stopped")
    result["left_running"] = alive_pids(stack.pids)
    result["pids"] = list(stack.pids)
    if result["left_running"]:
        result["ok"] = False
        view.say(f"processes left running: {result['left_running']}")
    return result


def _intro(view: View, tick_s: float) -> None:
    view.say(view.paint("batch-relay demo: the whole pipeline on this machine, in compressed time", "1"))
    view.say(f"""
  scheduler loop --POST every {tick_s:g}s--> poll_jobs x2 (fan-out) --GET, list--> simulator (Gemini API, Vertex AI)
                                         |       (and the simulator --signed webhooks--> on_gemini_webhook)
                                         |--> Firestore: a record per job, a transition per state change
                                         '--> Pub/Sub topic batch-job-events (CloudEvents, ordered per job)
                                                |--push--> on_job_event --> Cloud Storage: outputs + _manifest.json
                                                '--pull--> a subscriber: the event stream on this screen
""")
    view.say(view.paint("Starting the local stand-ins (127.0.0.1, free ports; all stopped when the demo ends):", "1"))


def _demo_stack(view: View, seconds: float, tick_s: float, workdir: Path) -> LocalStack:
    """The local stack with the demo's settings (not started yet)."""
    # an unchanged job is polled less and less often, up to every 4th tick (the Vertex jobs show it)
    env = {**STACK_ENV, "RELAY_STALL_AFTER_S": str(stall_after_s(seconds)),
           "RELAY_MAX_POLL_INTERVAL_S": str(round(4 * tick_s, 2))}
    # two poll_jobs instances: every tick fans out (RELAY_TICK_FANOUT=2), one part pushed to the other
    return LocalStack(project=PROJECT, tick_s=tick_s, extra_env=env, log_dir=workdir / "logs", pollers=2,
                      on_progress=lambda message: view.say(f"  {message}"))


class _DemoRun:
    """One run of the scenario on a started stack: its clients (closed by ``cleanup``, before the stack
    stops), the event stream, and the end state."""

    def __init__(self, view: View, jobs: list[DemoJob], stack: LocalStack, cleanup: contextlib.ExitStack,
                 seconds: float, timeout_s: float, workdir: Path) -> None:
        from batch_relay import wiring
        from batch_relay.record.store import JobStore
        from devtools.simulator import SimulatorClient

        self.view, self.jobs, self.stack, self.cleanup = view, jobs, stack, cleanup
        self.seconds, self.timeout_s, self.workdir = seconds, timeout_s, workdir
        self.settings = stack.settings()
        self.db = wiring.make_firestore(self.settings)
        cleanup.callback(self.db.close)
        self.store = JobStore(self.db, self.settings)
        self.gcs = FakeGcs(stack.url("fake-gcs"), PROJECT)
        cleanup.callback(self.gcs.close)
        self.simulator = SimulatorClient(stack.url("simulator"))
        cleanup.callback(self.simulator.close)
        self.events: list = []
        self.lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {}
        self.resubmit: dict[str, Any] | None = None  # what `batch-relay resubmit` did

    def play(self, consumer_mod) -> None:
        """Arrange the jobs and their sources, subscribe, track, and watch until everything settles."""
        view, jobs, stack = self.view, self.jobs, self.stack
        self._arrange()
        self.consumer = consumer_mod.EventConsumer(stack.viewer_subscription, self._on_event).start()
        self.cleanup.callback(self.consumer.stop)
        self.simulator.add_jobs([job.spec for job in jobs])
        t0 = time.time()
        view.say("")
        view.say(view.paint("Tracking them: the CLI for the Gemini jobs, the Python API for the Vertex ones "
                            "(and one nobody tracks)", "1"))
        for job in jobs:
            _track(job, stack, self.settings, self.db, view)
        self.waiter = _start_wait(stack, self.workdir, view)
        self.cleanup.callback(self.waiter.stop)
        view.say("")
        self.timed_out = _watch(view, jobs, self.store, stack, self.consumer, self.events, self.lock, t0,
                                self.seconds, self.timeout_s, on_records=self._resubmit_when_copied,
                                also_done=lambda: self.waiter.ended is not None)

    def _resubmit_when_copied(self, records: dict[str, dict[str, Any]]) -> None:
        """Once nightly-eval's outputs are copied (its failed.jsonl among them): ``batch-relay resubmit`` it,
        once, and follow the new batch like the other jobs (it joins ``self.jobs``)."""
        copy = (records.get(RESUBMITTED) or {}).get("copy") or {}
        if self.resubmit is not None or copy.get("status") != "done" or not copy.get("announced"):
            return
        from batch_relay import cli
        from batch_relay.cli.resubmit import lines

        argv = ["resubmit", RESUBMITTED, "--json"]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = cli.main(argv, env=self.stack.env)
        self.view.say(f"  $ batch-relay resubmit {RESUBMITTED}   (its outputs are copied: failed.jsonl is there)")
        try:
            result = json.loads(buf.getvalue()) if code == 0 else {}
        except ValueError:
            result = {}
        self.resubmit = {"code": code, "batch": result.get("batch"), "status": result.get("status"),
                         "requests": (result.get("input") or {}).get("requests"),
                         "destination": result.get("destination"), "output": buf.getvalue()[-2000:]}
        if result.get("batch"):
            for line in lines(result):
                self.view.say(self.view.paint(f"    {line}", "2"))
            parent = next(job for job in self.jobs if job.name == RESUBMITTED)
            self.jobs.append(retry_job(result["batch"], parent))
        else:
            self.view.say(f"    resubmit failed (exit {code}): {buf.getvalue()[-300:]}")

    def _arrange(self) -> None:
        """Buckets, the Vertex jobs' prediction files, and the scenario on screen."""
        view, jobs, gcs = self.view, self.jobs, self.gcs
        gcs.create_bucket(SOURCE_BUCKET)
        gcs.create_bucket(OUTPUT_BUCKET)
        for job in jobs:
            for name, data in job.sources.items():
                gcs.put(SOURCE_BUCKET, name, data)
        view.say("")
        view.say(view.paint(f"The scenario: {len(jobs)} simulated batch jobs whose states change over the next "
                            f"~{self.seconds * 0.75:.0f}s", "1"))
        for job in jobs:
            view.say(f"  {label(job.name):28} {job.api:6}  {job.story}")

    def _on_event(self, event) -> None:  # the event stream, through examples/consumer.py
        with self.lock:
            self.events.append(event)

    def conclude(self, started: float) -> dict[str, Any]:
        """The checks of the end state, the outputs mirrored to the work dir, and the result's fields."""
        with self.lock:
            seen = list(self.events)
        self.records = records = {r.name: r.to_doc() for r in self.store.records()}
        sim_stats = self.simulator.stats()
        checks, details = verify(self.jobs, self.store, self.gcs, seen, sim_stats, records)
        checks.append(_results_check(self.jobs, records, seen, self.gcs, self.resubmit))
        waited = self.waiter.result(timeout_s=30)  # (the watch already waited for it to end, within the timeout)
        checks.append({"check": f"`batch-relay wait {WAITED} --outputs` returned 0 once the outputs were copied",
                       "ok": waited["code"] == 0, "problems": [] if waited["code"] == 0 else [str(waited)]})
        if self.timed_out:
            checks.insert(0, {"check": f"settled within {self.timeout_s:.0f}s", "ok": False,
                              "problems": ["timed out: see the checks below and the logs in "
                                           f"{self.workdir / 'logs'}"]})
        mirrored = _mirror_outputs(self.gcs, self.workdir / "outputs")
        result = _result(self.jobs, records, seen, self.consumer, self.stack, checks, details, sim_stats,
                         self.timed_out, started, mirrored, self.workdir)
        result["wait"] = waited
        result["resubmit"] = self.resubmit
        result["results"] = {name: records.get(name, {}).get("results") for name in (RESUBMITTED, PARTIAL)}
        return result


def _watch(view: View, jobs, store, stack: LocalStack, consumer, events: list, lock: threading.Lock, t0: float,
           seconds: float, timeout_s: float, on_records: Callable[[dict[str, dict[str, Any]]], None] | None = None,
           also_done: Callable[[], bool] | None = None) -> bool:
    """Live view (or plain progress lines) until settled (and ``also_done()``, when given); returns whether it
    timed out. ``on_records(records)`` sees each read of the records (it may add jobs to ``jobs``)."""
    if view.interactive:
        view.say(view.paint("Live (records read from Firestore, events from the subscription):", "1"))
    else:
        view.say("Progress (events as the subscriber receives them; poll errors as the records show them):")
    printed = 0
    errors_seen: dict[str, str | None] = {}
    last_progress = 0.0
    while True:
        elapsed = time.time() - t0
        typed = list(store.records())
        records = {r.name: r.to_doc() for r in typed}
        with lock:
            snapshot = list(events)
        received = {e.id for e in snapshot}
        if on_records is not None:
            on_records(records)
        done = settled(jobs, records, received) and (also_done is None or also_done())
        if view.interactive:
            view.frame(render(jobs, {r.name: r.public() for r in typed}, snapshot, t0, elapsed, seconds, stack,
                              consumer))
        else:
            for event in snapshot[printed:]:
                view.say(event_line(event, t0))
            printed = len(snapshot)
            for name, record in records.items():
                error = record.get("last_poll_error")
                text = f"{error.get('kind')}: {error.get('message')}" if error else None
                if errors_seen.get(name) != text:
                    if text:
                        view.say(f"{elapsed:6.1f}s  poll error    {label(name):28} {text} (the next tick retries)")
                    elif name in errors_seen:
                        view.say(f"{elapsed:6.1f}s  poll ok       {label(name):28} error cleared")
                    errors_seen[name] = text
            if elapsed - last_progress >= 10 or done:
                last_progress = elapsed
                terminal = sum(1 for r in records.values() if r.get("terminal"))
                ticks = stack.scheduler.totals() if stack.scheduler else {}
                view.say(f"{elapsed:6.1f}s  progress      {terminal}/{len(jobs)} jobs terminal, "
                         f"{len(snapshot)} events, {ticks.get('ticks', 0)} ticks")
        if done or elapsed > timeout_s:
            view.end_frame()
            return not done
        time.sleep(0.5 if view.interactive else 0.25)


WAITED = "batches/demo-nightly-eval"
RESUBMITTED = WAITED  # its failed requests are resubmitted once its outputs are copied
PARTIAL = "batches/demo-ab-test"  # cancelled: its partial outputs are copied


RETRY_FOLDER = re.compile(r"retry-\d+/")  # a resubmit's outputs are copied into the original's folder


def retry_job(batch: str, parent: DemoJob) -> DemoJob:
    """The batch ``batch-relay resubmit`` made of ``parent``'s failed requests: tracked with parent, it ends
    SUCCEEDED (the simulator's created batches walk PENDING, RUNNING, SUCCEEDED) and is copied to retry-1."""
    return DemoJob(batch, f"retry-1 of {label(parent.name)}: its failed requests", "JOB_STATE_SUCCEEDED", "done",
                   {"name": batch, "timeline": [], "output": {"kind": "file"},
                    "requests": {"count": NIGHTLY_FAILED}},
                   destination=f"{parent.destination}/retry-1", labels=dict(parent.labels), via="cli")


def expected_lines(job: DemoJob) -> int:
    """How many lines a Gemini job's copied responses.jsonl holds."""
    requests = job.spec.get("requests")
    if requests is not None:
        return requests["count"] if job.expected == "JOB_STATE_SUCCEEDED" else requests.get("finished", 0)
    output = job.spec["output"]
    return output.get("lines", output.get("count"))


def _jsonl(gcs: FakeGcs, uri: str | None) -> list[dict[str, Any]]:
    if not uri:
        return []
    bucket, name = split_gs(uri)
    try:
        return [json.loads(line) for line in gcs.get(bucket, name).splitlines() if line.strip()]
    except (httpx.HTTPError, ValueError):
        return []


def _results_check(jobs: list[DemoJob], records: dict[str, dict[str, Any]], events: list, gcs: FakeGcs,
                   resubmit: dict[str, Any] | None) -> dict[str, Any]:
    """Issue 18 end to end: nightly-eval's tokens, cost and failures by code, its failed.jsonl resubmitted and
    the retry tracked (parent, resubmitted_as) to its end and copied; ab-test's partial outputs, with its
    unfinished requests in failed.jsonl."""
    problems: list[str] = []
    nightly = records.get(RESUBMITTED) or {}
    results = nightly.get("results") or {}
    usage, cost = results.get("usage") or {}, results.get("cost") or {}
    errors = results.get("errors") or {}
    if (results.get("failed"), sum(errors.values()), len(errors)) != (NIGHTLY_FAILED, NIGHTLY_FAILED, 3):
        problems.append(f"{RESUBMITTED}: failed {results.get('failed')}, errors {errors}")
    if not usage.get("total_tokens") or not usage.get("cached_tokens") or not cost.get("amount"):
        problems.append(f"{RESUBMITTED}: usage {usage}, cost {cost}")
    failed = _jsonl(gcs, results.get("failed_uri"))
    if len(failed) != NIGHTLY_FAILED or not all("key" in line and "request" in line for line in failed):
        problems.append(f"{RESUBMITTED}: failed.jsonl at {results.get('failed_uri')} holds {len(failed)} requests")
    batch = (resubmit or {}).get("batch")
    if not batch or (resubmit or {}).get("requests") != NIGHTLY_FAILED:
        problems.append(f"`batch-relay resubmit {RESUBMITTED}`: {resubmit}")
    else:
        retry = records.get(batch) or {}
        if nightly.get("resubmitted_as") != batch or retry.get("parent") != RESUBMITTED:
            problems.append(f"{batch}: parent {retry.get('parent')}; {RESUBMITTED}: resubmitted_as "
                            f"{nightly.get('resubmitted_as')}")
        if (retry.get("results") or {}).get("succeeded") != NIGHTLY_FAILED:
            problems.append(f"{batch}: results {retry.get('results')}")
    partial = records.get(PARTIAL) or {}
    got = (partial.get("results") or {})
    ready = [e for e in events if e.job == PARTIAL and e.type.endswith("outputsReady")]
    if not ready or ready[-1].data.get("partial") is not True:
        problems.append(f"{PARTIAL}: outputsReady {[e.data for e in ready]} is not marked partial")
    unfinished = AB_COUNT - AB_FINISHED
    if (got.get("succeeded"), got.get("unfinished")) != (AB_FINISHED, unfinished) or \
            len(_jsonl(gcs, got.get("failed_uri"))) != unfinished:
        problems.append(f"{PARTIAL}: results {got}")
    return {"check": f"results: tokens, cost and {NIGHTLY_FAILED} failures by code; their resubmit tracked to its "
                     f"end; partial outputs of the cancelled job with its {unfinished} unfinished requests",
            "ok": not problems, "problems": problems}


class _Waiter:
    """``batch-relay wait WAITED --outputs`` in a process of its own, as a script that simply waits would
    run it: a Firestore listener, no batch-API call. Stopped by its PID if still running at the end."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc, self.log, self.started = proc, log, time.monotonic()
        self.ended: float | None = None
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        self.proc.wait()
        self.ended = time.monotonic()

    def result(self, timeout_s: float) -> dict[str, Any]:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout_s)
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return {"code": self.proc.poll(), "took_s": round((self.ended or time.monotonic()) - self.started, 1),
                "last_line": lines[-1].strip() if lines else "", "lines": len(lines)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()


def _start_wait(stack: LocalStack, workdir: Path, view: View) -> _Waiter:
    log = workdir / "wait.log"
    argv = [sys.executable, "-m", "batch_relay.cli", "wait", WAITED, "--outputs"]
    env = {**stack.child_env(), "PATH": os.environ.get("PATH", "")}
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    stack.pids.append(proc.pid)
    view.say(f"  $ batch-relay wait {WAITED} --outputs &   (a script that waits: output in {log})")
    return _Waiter(proc, log)


def _result(jobs, records, events, consumer, stack: LocalStack, checks, details, sim_stats, timed_out, started,
            mirrored, workdir: Path) -> dict[str, Any]:
    from batch_relay import wiring
    from batch_relay.record.store import JobStore

    by_type: dict[str, int] = {}
    for event in events:
        by_type[event.short_type] = by_type.get(event.short_type, 0) + 1
    copied = [r["copy"] for r in records.values() if (r.get("copy") or {}).get("status") == "done"]
    return {
        "ok": all(c["ok"] for c in checks) and not timed_out,
        "timed_out": timed_out,
        "elapsed_s": round(time.monotonic() - started, 1),
        "stack_start_s": stack.started_s,
        "checks": checks,
        "jobs": details,
        "transitions": sum(int(r.get("version") or 0) for r in records.values()),
        "events": [{"id": e.id, "type": e.type, "job": e.job, "state": e.state,
                    "previous_state": e.attributes.get("previous_state"), "source": e.source}
                   for e in events],
        "events_by_type": by_type,
        "duplicates_dropped": consumer.duplicates,
        "ticks": stack.scheduler.totals() if stack.scheduler else {},
        "api_answers": sim_stats.get("by_code", {}),
        "copied": {"objects": sum(int(c.get("objects") or 0) for c in copied),
                   "bytes": sum(int(c.get("bytes") or 0) for c in copied)},
        "outputs": [{"job": r["name"], "uri": r["copy"]["uri"], "manifest_uri": r["copy"]["manifest_uri"]}
                    for r in sorted(records.values(), key=lambda r: r["name"])
                    if (r.get("copy") or {}).get("status") == "done"],
        "local_copy": str(workdir / "outputs" / OUTPUT_BUCKET) if mirrored else None,
        "logs": str(workdir / "logs"),
        "webhooks": webhook_endings(jobs, JobStore(wiring.make_firestore(stack.settings()), stack.settings()),
                                    sim_stats),
    }


def _summary(view: View, result: dict[str, Any], jobs, records, stack: LocalStack) -> None:
    view.say("")
    view.say(view.paint(f"Summary ({result['elapsed_s']:.0f}s, stack started in {stack.started_s:.1f}s)", "1"))
    states: dict[str, int] = {}
    for record in records.values():
        key = record.get("state", "?").removeprefix("JOB_STATE_")
        states[key] = states.get(key, 0) + 1
    view.say(f"  jobs:        {len(records)} tracked: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    view.say(f"  transitions: {result['transitions']} state changes recorded "
             f"(Firestore {stack.collection}/{{job}}/transitions)")
    types = result["events_by_type"]
    view.say(f"  events:      {len(result['events'])} delivered to the subscriber: "
             + ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
             + f"; {result['duplicates_dropped']} duplicates dropped")
    ticks = result["ticks"]
    view.say(f"  ticks:       {ticks.get('ticks', 0)} (polled {ticks.get('polled', 0)} statuses, "
             f"{ticks.get('errors', 0)} poll errors, longest {ticks.get('max_duration_s', 0)}s)")
    view.say(f"  cadence:     an unchanged job is fetched less and less often, up to every 4th tick "
             f"(RELAY_MAX_POLL_INTERVAL_S={stack.env.get('RELAY_MAX_POLL_INTERVAL_S')}s here, 300 s by default)")
    view.say(f"  fan-out:     each tick split into {stack.pollers} parts over {stack.pollers} poll_jobs instances "
             f"(RELAY_TICK_FANOUT): {ticks.get('parts_reported', 0) + ticks.get('ok', 0)} of "
             f"{ticks.get('parts', 0)} parts reported back in time")
    hooks = result.get("webhooks") or {}
    lags = hooks.get("lag_s") or []
    view.say(f"  webhooks:    {hooks.get('delivered', 0)} signed deliveries; {hooks.get('via_webhook', 0)} of "
             f"{hooks.get('gemini_endings', 0)} Gemini batch endings applied by on_gemini_webhook before any tick"
             + (f", {lags[len(lags) // 2]:.2f}s after the batch ended (median)" if lags else ""))
    watched = [r for r in records.values() if r.get("tracked_by") == "watch"]
    view.say(f"  watched:     {len(watched)} job(s) nobody tracked, found by listing {WATCH_SCOPE}")
    stalled = result["events_by_type"].get("stalled", 0)
    view.say(f"  stalls:      {stalled} stalled event(s): no change for RELAY_STALL_AFTER_S "
             f"({stack.env.get('RELAY_STALL_AFTER_S')}s here, 6 h by default)")
    waited = result.get("wait") or {}
    view.say(f"  wait:        `batch-relay wait {WAITED} --outputs` exited {waited.get('code')} after "
             f"{waited.get('took_s')}s: {waited.get('last_line', '')[:90]}")
    results = result.get("results") or {}
    view.say(f"  results:     {label(RESUBMITTED)} (`batch-relay show` prints the same), counted as the outputs "
             "streamed past the copy:")
    for line in views.results_lines(results.get(RESUBMITTED)):
        view.say(f"                {line}")
    resubmitted = result.get("resubmit") or {}
    if resubmitted.get("batch"):
        retry = records.get(resubmitted["batch"]) or {}
        view.say(f"  resubmit:    its {resubmitted.get('requests')} failed requests sent again as "
                 f"{resubmitted['batch']} (parent {label(RESUBMITTED)}): "
                 f"{str(retry.get('state', '?')).removeprefix('JOB_STATE_')}, copied to "
                 f"{(retry.get('copy') or {}).get('uri')}/")
    else:
        view.say(f"  resubmit:    did not run: {resubmitted or 'the outputs were never copied'}")
    partial = results.get(PARTIAL) or {}
    view.say(f"  partial:     {label(PARTIAL)} cancelled: {partial.get('succeeded')} results copied (outputsReady "
             f"says partial), {partial.get('unfinished')} unfinished requests in {partial.get('failed_uri')}")
    answers = result["api_answers"]
    faults = ", ".join(f"{answers[c]}x {c}" for c in ("429", "500", "503") if answers.get(c))
    view.say(f"  API faults:  {faults or 'none'} answered by the simulator, retried (backoff, Retry-After)")
    view.say(f"  copied:      {result['copied']['objects']} objects, {human_bytes(result['copied']['bytes'])} "
             f"into gs://{OUTPUT_BUCKET} (fake-gcs-server), each job's folder with a _manifest.json:")
    for entry in result["outputs"]:
        view.say(f"                {label(entry['job']):28} {entry['uri']}/")
    if result.get("local_copy"):
        view.say(f"  local copy:  {result['local_copy']}  (the bucket, downloaded; fake-gcs keeps it in memory)")
    view.say(f"  logs:        {result['logs']}  (one file per process)")
    view.say("")
    for check in result["checks"]:
        mark = view.paint("ok  ", "32") if check["ok"] else view.paint("FAIL", "31")
        view.say(f"  {mark} {check['check']}")
        for problem in check["problems"]:
            view.say(f"         {problem}")
    view.say("")
    if result["ok"]:
        view.say("Next: `make demo DEMO_ARGS=--keep` keeps the stack up to explore it with `batch-relay list/show` "
                 "and examples/consumer.py; README.md shows how to track your own jobs.")


def _keep(view: View, stack: LocalStack) -> None:
    view.say(view.paint("The stack stays up (--keep). In another terminal, from this directory:", "1"))
    view.say("")
    view.say(stack.shell_exports())
    view.say(f"""
  .venv/bin/batch-relay list
  .venv/bin/batch-relay show batches/demo-nightly-eval
  .venv/bin/python examples/consumer.py {stack.console_subscription}     # every event again
  curl -s '{stack.url('fake-gcs')}/storage/v1/b/{OUTPUT_BUCKET}/o' | python3 -m json.tool | grep '"name"'

The scheduler keeps ticking every {stack.tick_s:g}s. Press Ctrl-C to stop everything.""")
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ci", action="store_true", help="headless, time-bounded, exit 1 on a wrong end state")
    parser.add_argument("--keep", action="store_true", help="leave the stack up after the summary (Ctrl-C ends)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the scenario (default 60)")
    parser.add_argument("--tick-s", type=float, default=None, help="seconds between ticks (default 2)")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    parser.add_argument("--result", help="write the result as JSON to this file")
    args = parser.parse_args(argv)
    if args.seconds < 10:
        parser.error("--seconds must be at least 10")
    try:
        result = run_demo(ci=args.ci, keep=args.keep and not args.ci, seconds=args.seconds, tick_s=args.tick_s,
                          timeout_s=args.timeout)
    except RuntimeError as exc:  # e.g. java or the Cloud SDK emulators are missing
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.result:
        Path(args.result).write_text(json.dumps(result, indent=2, default=str))
    if result.get("interrupted"):
        return 130
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
