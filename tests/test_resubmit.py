"""``batch-relay resubmit`` and ``from batch_relay import resubmit`` (A4 parent/resubmitted_as, A7, A10) on the
real emulators and the simulator, over real HTTP: the simulator creates the batches (and counts its creates),
the new records are tracked with ``parent`` and reach their end through ticks."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import httpx
import pytest

from batch_relay import cli, resubmit, wiring
from batch_relay.errors import TransientError, UsageError
from batch_relay.record.model import CopyStatus
from batch_relay.record.store import JobStore
from devtools.simulator import gemini_spec, vertex_spec
from tests.helpers import validate_event

PROJECT, LOCATION = "proj-r", "us-central1"


def prompt(text):
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def jsonl(rows) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


GEMINI_FAILED = [{"key": "k-1", "request": prompt("again 1")}, {"key": "k-2", "request": prompt("again 2")},
                 {"key": "k-3", "request": prompt("sim:fail once more")}]
VERTEX_FAILED = [{"request": prompt("again a")}, {"request": prompt("again b")}]


def tick_until_terminal(relay, name, ticks=10):
    for _ in range(ticks):
        relay.tick()
        record = relay.store.load(name)
        if record.terminal:
            return record
    raise AssertionError(f"{name} did not end: {relay.store.load(name)}")


def copied(relay, gcs, name, destination, failed: bytes | None):
    """The job's outputs as the reactor leaves them: the copy done at ``destination`` (through the store, as
    the reactor commits it), with ``failed.jsonl`` there."""
    now = dt.datetime.now(dt.UTC)
    assert relay.store.claim_copy(name, now).result.value == "claimed"
    relay.store.finish_copy(name, 1, now, status=CopyStatus.DONE, uri=destination,
                            manifest_uri=f"{destination}/_manifest.json", objects=2, size=100)
    if failed is not None:
        bucket, _, prefix = destination[5:].partition("/")
        gcs.put(bucket, f"{prefix}/failed.jsonl", failed)


def finished_gemini(relay, simulator, gcs, job_id, failed=jsonl(GEMINI_FAILED), labels=None):
    name = simulator.add_job(gemini_spec(job_id, ["RUNNING", "SUCCEEDED"], display_name="nightly"))
    destination = f"gs://{gcs.bucket('dest')}/evals/{job_id}"
    relay.store.track(name, destination=destination, labels=labels or {"team": "evals"})
    tick_until_terminal(relay, name)
    copied(relay, gcs, name, destination, failed)
    return name, destination


def finished_vertex(relay, simulator, gcs, job_id, failed=jsonl(VERTEX_FAILED)):
    out = gcs.bucket("vx-out")
    name = simulator.add_job(vertex_spec(PROJECT, LOCATION, job_id, ["RUNNING", "SUCCEEDED"], display_name="captions",
                                         output={"kind": "gcs", "uri": f"gs://{out}/captions"}))
    destination = f"gs://{gcs.bucket('dest')}/vx/{job_id}"
    relay.store.track(name, destination=destination, labels={"team": "vision"})
    tick_until_terminal(relay, name)
    copied(relay, gcs, name, destination, failed)
    return name, destination, out


def creates(simulator, api=None):
    made = simulator.stats().get("creates") or {}
    return made.get(api, 0) if api else sum(made.values())


def run_cli(args, capsys):
    """``batch-relay ARGS``: exit code, stdout, and stderr without its JSON log lines (the ticks of a test
    log there too, once a command has pointed the logs at stderr)."""
    capsys.readouterr()
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, "".join(line for line in out.err.splitlines(keepends=True) if not line.startswith("{"))


def api_get(settings, path):
    headers = {"x-goog-api-key": settings.gemini_api_key, "authorization": "Bearer sim"}
    return httpx.get(f"{settings.gemini_base_url}/{path}", headers=headers, timeout=10).json()


def resubmit_with(relay, name, *, store=None, transport=None, clock=None, **kw):
    """A resubmit through ``wiring.resubmitter``, with what a test instruments."""
    async def run():
        async with wiring.resubmitter(relay.settings, relay.db, store=store, transport=transport,
                                      clock=clock) as resubmitter:
            return await resubmitter.resubmit(name, **kw)

    return asyncio.run(run())


# -- Gemini API ---------------------------------------------------------------------------------------------

def test_gemini_resubmit_creates_tracks_and_the_new_batch_ends(relay, simulator, gcs, function_env, capsys):
    simulator.configure(create={"fail_marker": "sim:fail"})
    name, destination = finished_gemini(relay, simulator, gcs, "orig-g1")
    code, out, err = run_cli(["resubmit", name, "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    new = result["batch"]
    assert result["status"] == "created" and result["n"] == 1 and new.startswith("batches/")
    assert result["input"] == {"uri": f"{destination}/failed.jsonl", "requests": 3, "bytes": len(jsonl(GEMINI_FAILED))}
    assert creates(simulator, "gemini") == 1

    # what the API got: the uploaded file is failed.jsonl, byte for byte, on the same model
    batch = api_get(relay.settings, f"v1beta/{new}")["metadata"]
    assert batch["model"] == "models/gemini-2.5-flash" and batch["displayName"] == f"retry-1 of {name}"
    file_name = batch["inputConfig"]["fileName"]
    uploaded = httpx.get(f"{relay.settings.gemini_base_url}/download/v1beta/{file_name}:download",
                         params={"alt": "media"}, headers={"x-goog-api-key": relay.settings.gemini_api_key})
    assert uploaded.content == jsonl(GEMINI_FAILED)

    original = relay.store.load(name)
    assert original.resubmitted_as == new and original.resubmit_claim is None and original.resubmits == 1
    child = relay.store.load(new)
    assert child.parent == name and child.tracked_by == "track" and child.labels == {"team": "evals"}
    assert child.destination == f"{destination}/retry-1" and child.lineage == name and child.version == 0
    assert result["record"] == child.public() and child.public()["parent"] == name

    done = tick_until_terminal(relay, new)
    assert done.state == "JOB_STATE_SUCCEEDED" and done.completion_stats == {"successful": 2, "failed": 1,
                                                                             "incomplete": 0}
    events = [m for m in relay.drain() if m["attributes"]["job"] == new]
    # (the test's own GET of the batch above counts as a poll of the simulator's timeline: PENDING may be skipped)
    assert [m["data"]["version"] for m in events] == list(range(1, done.version + 1)) and done.version >= 2
    assert events[-1]["data"]["state"] == "JOB_STATE_SUCCEEDED"
    for message in events:
        validate_event(message)
        assert message["data"]["job"]["parent"] == name and message["data"]["job"]["resubmitted_as"] is None


def test_a_second_resubmit_returns_the_same_batch_and_again_makes_the_next(relay, simulator, gcs, function_env,
                                                                           capsys):
    simulator.configure(create={"fail_marker": "sim:fail"})
    name, destination = finished_gemini(relay, simulator, gcs, "orig-g2")
    first = resubmit(name, settings=relay.settings, db=relay.db)
    code, out, _ = run_cli(["resubmit", name], capsys)
    assert code == 0 and f"{name} was resubmitted before, as {first['batch']}" in out
    again = resubmit(name, settings=relay.settings, db=relay.db)
    assert again["status"] == "existing" and again["batch"] == first["batch"] and again["record"] == first["record"]
    assert creates(simulator) == 1

    code, out, _ = run_cli(["resubmit", name, "--again", "--json"], capsys)
    second = json.loads(out)
    assert code == 0 and second["status"] == "created" and second["n"] == 2 and second["batch"] != first["batch"]
    assert second["destination"] == f"{destination}/retry-2" and creates(simulator) == 2
    assert relay.store.load(name).resubmitted_as == second["batch"]
    assert resubmit(name, settings=relay.settings, db=relay.db)["batch"] == second["batch"]  # the newest one

    # the lineage: the first retry's own failed request, resubmitted, is retry 3 of the first job's lineage
    tick_until_terminal(relay, first["batch"])
    copied(relay, gcs, first["batch"], first["destination"], jsonl(GEMINI_FAILED[2:]))
    third = resubmit(first["batch"], settings=relay.settings, db=relay.db)
    assert third["n"] == 3 and third["destination"] == f"{destination}/retry-3" and creates(simulator) == 3
    assert api_get(relay.settings, f"v1beta/{third['batch']}")["metadata"]["displayName"] == \
        f"retry-3 of {first['batch']}"
    grandchild = relay.store.load(third["batch"])
    assert grandchild.parent == first["batch"] and grandchild.lineage == name
    assert relay.store.load(name).resubmits == 3 and relay.store.load(first["batch"]).resubmitted_as == third["batch"]


# -- Vertex AI ----------------------------------------------------------------------------------------------

def test_vertex_resubmit_reads_failed_jsonl_where_it_lies_and_writes_beside_the_original(relay, simulator, gcs):
    simulator.configure(storage_url=gcs.url)
    name, destination, out = finished_vertex(relay, simulator, gcs, "7001")
    result = resubmit(name, settings=relay.settings, db=relay.db)
    new = result["batch"]
    assert result["status"] == "created" and new.startswith(f"projects/{PROJECT}/locations/{LOCATION}/")
    assert creates(simulator, "vertex") == 1

    job = api_get(relay.settings, f"v1/{new}")
    assert job["model"] == "publishers/google/models/gemini-2.5-flash" and job["displayName"] == "retry-1 of captions"
    assert job["inputConfig"] == {"instancesFormat": "jsonl", "gcsSource": {"uris": [f"{destination}/failed.jsonl"]}}
    assert job["outputConfig"]["gcsDestination"]["outputUriPrefix"] == f"gs://{out}/captions/retry-1"
    assert job["labels"] == {"batch_relay_retry_of": "7001", "batch_relay_retry": "1"}

    child = relay.store.load(new)
    assert child.parent == name and child.labels == {"team": "vision"} and child.destination == f"{destination}/retry-1"
    assert relay.store.load(name).resubmitted_as == new
    done = tick_until_terminal(relay, new)
    assert done.state == "JOB_STATE_SUCCEEDED" and done.output["gcs_uri"].startswith(f"gs://{out}/captions/retry-1/")
    rows = gcs.get(out, done.output["gcs_uri"][len(f"gs://{out}/"):] + "/predictions.jsonl").splitlines()
    assert sorted(json.loads(r)["request"]["contents"][0]["parts"][0]["text"] for r in rows) == ["again a", "again b"]

    assert resubmit(name, settings=relay.settings, db=relay.db)["batch"] == new and creates(simulator) == 1


# -- dry run ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("api", ["gemini", "vertex"])
def test_dry_run_sends_nothing_and_writes_nothing(api, relay, simulator, gcs, function_env, capsys):
    if api == "gemini":
        name, destination = finished_gemini(relay, simulator, gcs, "orig-d1", labels={"note": "rtl\u202etext"})
    else:
        name, destination, _out = finished_vertex(relay, simulator, gcs, "7002")
    before = relay.store.snapshot(name)
    simulator.reset_stats()
    code, out, err = run_cli(["resubmit", name, "--dry-run", "--json"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    lines = 3 if api == "gemini" else 2
    assert plan["status"] == "dry_run" and plan["n"] == 1 and plan["input"]["requests"] == lines
    assert plan["track"]["parent"] == name and plan["track"]["destination"] == f"{destination}/retry-1"
    if api == "gemini":
        assert [r["url"].rsplit("/", 1)[-1] for r in plan["requests"]] == [
            "files", "gemini-2.5-flash:batchGenerateContent"]
        assert plan["requests"][1]["body"]["batch"]["displayName"] == f"retry-1 of {name}"
    else:
        [create] = plan["requests"]
        assert create["url"].endswith(f"/v1/projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs")
        assert create["body"]["inputConfig"]["gcsSource"]["uris"] == [f"{destination}/failed.jsonl"]
    assert relay.settings.gemini_api_key not in out
    code, text, _ = run_cli(["resubmit", name, "--dry-run"], capsys)
    assert code == 0 and text.startswith("dry run: nothing is sent and nothing is written")
    if api == "gemini":
        assert "\u202e" not in text and "\\u202e" in text  # a label's control character, escaped
    assert simulator.stats()["requests"] == 0 and creates(simulator) == 0
    after = relay.store.snapshot(name)
    assert after.update_time == before.update_time and after.record == before.record
    assert [r.name for r in relay.store.records()] == [name]


# -- what a crash or a lost reply leaves behind -------------------------------------------------------------

class CrashAfterCreate(JobStore):
    """A store whose first write after the create fails, as a process dying there would leave things."""

    crashed = False

    def finish_resubmit(self, *args, **kw):
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("the process died after the create")
        return super().finish_resubmit(*args, **kw)


def finished(api, relay, simulator, gcs, job_id):
    if api == "gemini":
        return finished_gemini(relay, simulator, gcs, f"orig-{job_id}")[0]
    simulator.configure(storage_url=gcs.url)
    return finished_vertex(relay, simulator, gcs, job_id)[0]


@pytest.mark.parametrize("api", ["gemini", "vertex"])
def test_a_crash_after_the_create_never_leads_to_a_second_batch(api, relay, simulator, gcs, function_env, capsys):
    name = finished(api, relay, simulator, gcs, "7101")
    with pytest.raises(RuntimeError, match="died"):
        resubmit_with(relay, name, store=CrashAfterCreate(relay.db, relay.settings))
    assert creates(simulator) == 1
    record = relay.store.load(name)
    assert record.resubmitted_as is None and record.resubmit_claim is not None and record.resubmit_claim.n == 1

    # at once (the claim is still live): the retry finds the batch the crashed one made, and links it
    code, out, err = run_cli(["resubmit", name, "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "existing" and result["n"] == 1 and creates(simulator) == 1
    assert relay.store.load(name).resubmitted_as == result["batch"] and relay.store.load(name).resubmit_claim is None
    assert relay.store.load(result["batch"]).parent == name
    code, out, _ = run_cli(["resubmit", name], capsys)
    assert code == 0 and "resubmitted before" in out and creates(simulator) == 1


class BreakCreate(httpx.AsyncBaseTransport):
    """Forwards everything to the network, except the first create: ``lose`` sends it and loses the reply
    (the batch is made, the caller cannot know), ``refuse`` answers 400 without sending it."""

    def __init__(self, mode):
        self.mode = mode
        self.fired = False
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request):
        path = request.url.path
        if request.method == "POST" and not self.fired and (
                path.endswith(":batchGenerateContent") or path.endswith("/batchPredictionJobs")):
            self.fired = True
            if self.mode == "refuse":
                return httpx.Response(400, json={"error": {"code": 400, "message": "Request contains an invalid "
                                                           "argument.", "status": "INVALID_ARGUMENT"}})
            response = await self.inner.handle_async_request(request)
            await response.aread()
            await response.aclose()
            raise httpx.ReadTimeout("the reply was lost", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        await self.inner.aclose()


@pytest.mark.parametrize("api", ["gemini", "vertex"])
def test_a_lost_reply_is_found_again_not_created_again(api, relay, simulator, gcs):
    name = finished(api, relay, simulator, gcs, "7201")
    with pytest.raises(TransientError, match="timed out"):
        resubmit_with(relay, name, transport=BreakCreate("lose"))
    assert creates(simulator) == 1 and relay.store.load(name).resubmit_claim is not None

    # after the lease (the crash test covers the retry within it): the claim is taken over, the batch looked for
    # first, found and linked
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    result = resubmit_with(relay, name, clock=lambda: later)
    assert result["status"] == "existing" and result["n"] == 1 and creates(simulator) == 1
    assert relay.store.load(name).resubmitted_as == result["batch"]


@pytest.mark.parametrize("api", ["gemini", "vertex"])
def test_a_refused_create_gives_the_claim_back_and_the_next_one_keeps_its_number(api, relay, simulator, gcs,
                                                                                function_env, capsys):
    name = finished(api, relay, simulator, gcs, "7301")
    with pytest.raises(UsageError, match="refused"):
        resubmit_with(relay, name, transport=BreakCreate("refuse"))
    claim = relay.store.load(name).resubmit_claim
    assert creates(simulator) == 0 and claim.n == 1 and claim.until <= dt.datetime.now(dt.UTC)
    code, out, err = run_cli(["resubmit", name, "--json"], capsys)  # at once: nothing is under way any more
    result = json.loads(out)
    assert code == 0 and result["status"] == "created" and result["n"] == 1, err
    assert result["destination"].endswith("/retry-1") and creates(simulator) == 1


def test_a_resubmit_under_way_makes_another_stop_without_creating(relay, simulator, gcs, function_env, capsys):
    name = finished_gemini(relay, simulator, gcs, "orig-busy")[0]
    now = dt.datetime.now(dt.UTC)
    start = relay.store.begin_resubmit(name, request_id="another", again=False, now=now, lease_s=300)
    assert start.step == "fresh" and start.n == 1
    code, out, err = run_cli(["resubmit", name], capsys)
    assert code == 1 and "under way" in err and err.count("\n") == 1 and out == ""
    assert creates(simulator) == 0 and relay.store.load(name).resubmit_claim.id == "another"
    code, _out, err = run_cli(["resubmit", name, "--again"], capsys)  # --again finishes what is under way first
    assert code == 1 and "under way" in err and creates(simulator) == 0


# -- refusals and exit codes ---------------------------------------------------------------------------------

def test_refusals_exit_2_with_one_line_and_write_nothing(relay, simulator, gcs, function_env, capsys, monkeypatch):
    code, _, err = run_cli(["resubmit", "batches/nobody"], capsys)
    assert code == 2 and "is not tracked" in err and err.count("\n") == 1
    code, _, err = run_cli(["resubmit", "jobs/1"], capsys)
    assert code == 2 and "not a job name" in err

    simulator.add_job(gemini_spec("running-1", ["RUNNING"]))
    relay.store.track("batches/running-1")
    relay.tick()
    code, _, err = run_cli(["resubmit", "batches/running-1"], capsys)
    assert code == 2 and "known once it has ended" in err

    simulator.add_job(gemini_spec("uncopied-1", ["RUNNING", "SUCCEEDED"]))
    relay.store.track("batches/uncopied-1", destination=f"gs://{gcs.bucket('d')}/x")
    tick_until_terminal(relay, "batches/uncopied-1")
    code, _, err = run_cli(["resubmit", "batches/uncopied-1"], capsys)
    assert code == 2 and "not copied yet" in err

    name, destination, _out = finished_vertex(relay, simulator, gcs, "7401", failed=b'{"request": {}}\n' * 200_001)
    code, _, err = run_cli(["resubmit", name], capsys)
    assert code == 2 and "at most 200000 requests" in err

    gemini = finished_gemini(relay, simulator, gcs, "orig-nokey")[0]
    monkeypatch.delenv("RELAY_GEMINI_API_KEY")
    code, _, err = run_cli(["resubmit", gemini], capsys)
    assert code == 2 and "RELAY_GEMINI_API_KEY" in err
    assert creates(simulator) == 0
    assert all(r.resubmit_claim is None and r.resubmits == 0 and r.resubmitted_as is None
               for r in relay.store.records())
    with pytest.raises(UsageError, match="not tracked"):
        resubmit("batches/nobody", settings=relay.settings, db=relay.db)


def test_nothing_to_resubmit_exits_0(relay, simulator, gcs, function_env, capsys):
    absent = finished_gemini(relay, simulator, gcs, "all-good", failed=None)[0]
    empty = finished_gemini(relay, simulator, gcs, "all-good-2", failed=b"")[0]
    code, out, _ = run_cli(["resubmit", absent], capsys)
    assert code == 0 and out == f"nothing to resubmit: {absent} has no failed requests\n"
    result = resubmit(empty, settings=relay.settings, db=relay.db)
    assert result["status"] == "nothing" and result["batch"] is None and result["input"]["requests"] == 0
    assert creates(simulator) == 0 and relay.store.load(empty).resubmits == 0
