"""``make demo`` headless (issue 5): the whole local pipeline, from the scheduler loop to copied outputs.

The demo runs in-process with ``--ci`` semantics and a compressed scenario; while its stack is still up,
the test looks at the end state itself (Firestore records and transitions, every event on an ordered
subscription nobody else consumed, the objects and manifests in fake-gcs-server). Afterwards no process
the demo started may be left.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from devtools import demo
from devtools.crc32c import crc32c_of
from devtools.stack import alive_pids
from tests.helpers import validate_event

ROOT = Path(__file__).resolve().parent.parent
STATE_CHANGED = "batchrelay.job.v1.stateChanged"


def drain(subscription: str) -> list[dict]:
    """Every message on a pull subscription, acked, in delivery order."""
    from google.cloud import pubsub_v1

    from devtools.pubsub_drain import drain as pull_all

    with pubsub_v1.SubscriberClient() as subscriber:
        return [{"attributes": dict(m.attributes), "data": json.loads(m.data), "ordering_key": m.ordering_key}
                for m in pull_all(subscriber, subscription, quiet_s=1.0)]


def gcs_get(base: str, uri: str, media: bool = True):
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    response = httpx.get(f"{base}/storage/v1/b/{bucket}/o/{quote(name, safe='')}",
                         params={"alt": "media"} if media else None, timeout=30)
    response.raise_for_status()
    return response.content if media else response.json()


def gcs_names(base: str, bucket: str, prefix: str) -> list[str]:
    body = httpx.get(f"{base}/storage/v1/b/{bucket}/o", params={"prefix": prefix}, timeout=30).json()
    return sorted(item["name"] for item in body.get("items", []))


def check_end_state(stack, jobs: list[demo.DemoJob]) -> dict:
    """What the test sees by itself while the stack is up."""
    from batch_relay import wiring
    from batch_relay.record.store import JobStore

    settings = stack.settings()
    store = JobStore(wiring.make_firestore(settings), settings)
    gcs = stack.url("fake-gcs")
    messages = drain(stack.console_subscription)  # created with the stack, consumed by nobody
    by_job: dict[str, list[dict]] = {}
    for message in messages:
        validate_event(message)  # A5 attributes and the published JSON Schema of its type
        assert message["attributes"]["ce-source"] == f"//batch-relay/projects/{stack.project}"
        by_job.setdefault(message["attributes"]["job"], []).append(message)
    assert set(by_job) == {job.name for job in jobs}
    for job in jobs:
        record = store.load(job.name)
        assert record.terminal and record.state == job.expected, (job.name, record.state)
        assert record.tracked_by == ("watch" if job.via == "watch" else "track"), job.name
        tid = record.tracking_id
        transitions = store.transitions(job.name)
        # transitions: versions 1..n, a chain from UNSPECIFIED to the terminal state, all published
        assert [t["version"] for t in transitions] == list(range(1, record.version + 1))
        assert [t["from_state"] for t in transitions] == ["JOB_STATE_UNSPECIFIED"] + [
            t["to_state"] for t in transitions[:-1]]
        assert transitions[-1]["to_state"] == job.expected
        assert all(t["published"] for t in transitions) and not record.has_unpublished
        # every transition delivered as exactly one event, in version order, with the A5 ids
        got = by_job[job.name]
        changed = [m for m in got if m["attributes"]["ce-type"] == STATE_CHANGED]
        assert [m["attributes"]["ce-id"] for m in changed] == [t["event_id"] for t in transitions] == [
            f"{tid}-{v}" for v in range(1, record.version + 1)]
        assert [(m["attributes"]["previous_state"], m["attributes"]["state"]) for m in changed] == [
            (t["from_state"], t["to_state"]) for t in transitions]
        stalls = [m["attributes"]["ce-id"] for m in got if m["attributes"]["ce-type"] == "batchrelay.job.v1.stalled"]
        assert all(re.fullmatch(rf"{tid}-\d+-stalled", s) for s in stalls) and (stalls or not job.stalls), job.name
        others = [m["attributes"]["ce-id"] for m in got
                  if m["attributes"]["ce-type"] not in (STATE_CHANGED, "batchrelay.job.v1.stalled")]
        copy = record.copy
        if job.copy is None:
            assert others == [] and copy.status == "pending", (job.name, others, copy)
            bucket, _, prefix = (job.destination or "gs://x/").removeprefix("gs://").partition("/")
            assert gcs_names(gcs, bucket, prefix + "/") == []  # nothing copied for it
            continue
        assert others == [f"{tid}-copy1-ready"], (job.name, others)
        assert got[-1]["attributes"]["ce-type"] == "batchrelay.job.v1.outputsReady"  # after the success
        assert copy.status == job.copy and copy.announced, (job.name, copy)
        if job.copy == "not_applicable":
            assert copy.manifest_uri is None and copy.objects == 0
            continue
        # outputs copied, with a manifest whose entries match the objects fake-gcs holds
        manifest = json.loads(gcs_get(gcs, copy.manifest_uri))
        assert manifest["job"] == job.name and manifest["state"] == job.expected
        bucket, _, prefix = copy.uri.removeprefix("gs://").partition("/")
        names = sorted(o["name"] for o in manifest["objects"])
        held = [n for n in gcs_names(gcs, bucket, prefix + "/") if not demo.RETRY_FOLDER.match(n[len(prefix) + 1:])]
        assert held == sorted(f"{prefix}/{n}" for n in [*names, "_manifest.json"])  # (retry-1/: the resubmit's)
        for entry in manifest["objects"]:
            data = gcs_get(gcs, f"{copy.uri}/{entry['name']}")
            assert (len(data), crc32c_of(data)) == (entry["size"], entry["crc32c"]), (job.name, entry["name"])
        assert manifest["total_bytes"] == copy.bytes and len(names) == copy.objects
        results = record.results  # failed.jsonl: the requests to resend (those it cannot hold are missing)
        failed = results["failed"] + results["unfinished"] - results["missing"]
        assert ("failed.jsonl" in names) == bool(failed), (job.name, names, results)
        if failed:
            assert copy.uri + "/failed.jsonl" == record.results["failed_uri"] == manifest["results"]["failed_uri"]
            assert len(gcs_get(gcs, record.results["failed_uri"]).splitlines()) == failed
        if job.sources:  # Vertex: the objects under the output directory, byte for byte; not the sibling
            directory = job.spec["output"]["uri"].split("/", 3)[3]
            expected = {n[len(directory) + 1:]: d for n, d in job.sources.items() if n.startswith(directory + "/")}
            assert [n for n in names if n != "failed.jsonl"] == sorted(expected)
            for name, data in expected.items():
                assert gcs_get(gcs, f"{copy.uri}/{name}") == data
        else:  # Gemini: responses.jsonl, one line per request that has a result
            assert [n for n in names if n != "failed.jsonl"] == ["responses.jsonl"]
            lines = gcs_get(gcs, f"{copy.uri}/responses.jsonl").decode().splitlines()
            assert len(lines) == demo.expected_lines(job)
            assert all("key" in json.loads(line) for line in lines)
    return {"messages": messages}


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_demo_ci_ends_with_every_job_terminal_every_event_delivered_and_outputs_copied(tmp_path):
    jobs = demo.scenario(30)
    seen: dict = {}

    def inspect(stack, result):
        # the batch `batch-relay resubmit` made of nightly-eval's failed requests is followed too
        retry = demo.retry_job(result["resubmit"]["batch"], next(j for j in jobs if j.name == demo.RESUBMITTED))
        seen.update(check_end_state(stack, [*jobs, retry]))

    out = io.StringIO()
    started = time.monotonic()
    result = demo.run_demo(ci=True, seconds=30, out=out, workdir=tmp_path, inspect=inspect)
    took = time.monotonic() - started
    log = out.getvalue()
    assert result["ok"], log[-4000:]
    assert not result["timed_out"] and all(c["ok"] for c in result["checks"])
    assert seen["messages"], "the end-state check did not run"
    # the demo's own subscriber (examples/consumer.py) saw exactly what the untouched subscription holds
    assert sorted(e["id"] for e in result["events"]) == sorted(m["attributes"]["ce-id"] for m in seen["messages"])
    # the scenario covers what the issue asks for
    states = {j["expected"] for j in result["jobs"]}
    assert {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
            "JOB_STATE_PARTIALLY_SUCCEEDED"} <= states
    assert {j["api"] for j in result["jobs"]} == {"gemini", "vertex"} and len(result["jobs"]) == 14  # 13 + a retry
    # issue 18: tokens, cost and failures by code; the resubmit of the failed requests, tracked to its end
    nightly, partial = result["results"][demo.RESUBMITTED], result["results"][demo.PARTIAL]
    assert nightly["failed"] == demo.NIGHTLY_FAILED and len(nightly["errors"]) == 3 and nightly["cost"]["amount"] > 0
    assert nightly["usage"]["total_tokens"] > 0 and result["resubmit"]["requests"] == demo.NIGHTLY_FAILED
    retry = next(j for j in result["jobs"] if j["name"] == result["resubmit"]["batch"])
    assert retry["state"] == "JOB_STATE_SUCCEEDED" and retry["copy"]["uri"].endswith("/nightly-eval/retry-1")
    assert (partial["succeeded"], partial["unfinished"]) == (demo.AB_FINISHED, demo.AB_COUNT - demo.AB_FINISHED)
    assert re.search(r"^  results: .*\n(.*\n)*  resubmit: .*SUCCEEDED", log, re.M)
    assert sum(1 for job in jobs if job.via == "watch") == 1  # one job nobody tracked, found by its scope
    assert all(result["api_answers"].get(code) for code in ("429", "500", "503"))
    assert result["copied"]["objects"] >= 9 and result["copied"]["bytes"] > 1_000_000
    assert result["ticks"]["ticks"] > 5 and result["ticks"]["failed"] == 0
    # plain progress lines (no ANSI) and a summary
    assert "\x1b[" not in log and "Summary" in log and not re.search(r"^  FAIL ", log, re.M)
    assert log.count("\n  ok   ") == len(result["checks"])
    # the local copy of the outputs
    assert (Path(result["local_copy"]) / "gemini" / "nightly-eval" / "_manifest.json").exists()
    # no process left behind
    # the stack's seven, a second poll_jobs instance (every tick fans out over two) and the demo's `batch-relay wait`
    assert len(result["pids"]) == 9
    assert result["wait"]["code"] == 0
    assert alive_pids(result["pids"]) == [] and result["left_running"] == []
    assert took < 120, took


@pytest.mark.timeout(90)
def test_stack_launcher_stops_every_process_on_ctrl_c(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "devtools.stack", "--keep", "--tick-s", "1"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "Press Ctrl-C" in text, text
        pids = [int(p) for p in re.findall(r"pid (\d+)", text)]
        assert len(pids) == 7 and set(pids) <= set(alive_pids(pids))
        assert "export FIRESTORE_EMULATOR_HOST=127.0.0.1:" in text and "RELAY_GEMINI_BASE_URL=http://" in text
        poll_url = re.search(r"scheduler: POST (\S+)", text).group(1)
        assert httpx.post(poll_url, timeout=30).status_code == 200  # the functions serve
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert alive_pids(pids) == []
