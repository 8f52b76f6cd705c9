"""The poller end to end: real Firestore and Pub/Sub emulators, the batch-API simulator over HTTP,
``poll_jobs`` through functions-framework."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest
from functions_framework import create_app

from batch_relay import wiring
from batch_relay.record import machine
from devtools.simulator import gemini_spec, vertex_spec
from tests.helpers import validate_event

MAIN = "functions/main.py"


def vname(job_id: str, location: str = "us-central1") -> str:
    return f"projects/proj-a/locations/{location}/batchPredictionJobs/{job_id}"


@pytest.fixture
def poll_client(function_env):
    return create_app(target="poll_jobs", source=MAIN, signature_type="http").test_client()


def tick_http(client) -> dict:
    response = client.post("/")
    assert response.status_code == 200, response.data
    summary = response.get_json()
    for key in ("polled", "changed", "published", "errors"):
        assert isinstance(summary[key], int)
    assert isinstance(summary["duration_s"], float)
    return summary


def ticks_until_terminal(client, relay, names, limit=15) -> list[dict]:
    summaries = []
    for _ in range(limit):
        summaries.append(tick_http(client))
        if all(relay.store.load(n).terminal for n in names):
            return summaries
    raise AssertionError(f"not terminal after {limit} ticks: {[relay.store.load(n).state for n in names]}")


def events_by_job(messages) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in messages:
        out.setdefault(m["attributes"]["job"], []).append(m)
    return out


def check_stream(relay, name, expected_states):
    """Exactly one event per transition, in version order, matching the transitions subcollection."""
    record = relay.store.load(name)
    transitions = relay.store.transitions(name)
    assert [t["to_state"] for t in transitions] == expected_states
    assert [t["version"] for t in transitions] == list(range(1, len(expected_states) + 1))
    assert all(t["published"] for t in transitions)
    assert record.version == len(expected_states) and not record.has_unpublished
    return record, transitions


def test_gemini_lifecycle_one_event_per_transition(relay, simulator, poll_client):
    simulator.add_job(gemini_spec("life-1", [
        "PENDING", {"state": "RUNNING", "after_polls": 1, "stats": {"successful": 1, "failed": 0, "incomplete": 2}},
        {"state": "RUNNING", "after_polls": 1, "stats": {"successful": 2, "failed": 1, "incomplete": 0}},
        {"state": "SUCCEEDED", "after_polls": 1}], output={"kind": "file", "file_id": "batch-life-1", "lines": 3}))
    simulator.add_job(gemini_spec("life-2", ["PENDING", "CANCELLED"]))
    simulator.add_job(gemini_spec("life-3", ["PENDING", "EXPIRED"]))
    names = ["batches/life-1", "batches/life-2", "batches/life-3"]
    for n in names:
        relay.store.track(n, destination="gs://out-bucket/x")
    ticks_until_terminal(poll_client, relay, names)
    messages = relay.drain()
    by_job = events_by_job(messages)
    rec, _ = check_stream(relay, names[0], ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"])
    assert rec.completion_stats == {"successful": 2, "failed": 1, "incomplete": 0}
    assert rec.output == {"file_name": "files/batch-life-1"}
    check_stream(relay, names[1], ["JOB_STATE_PENDING", "JOB_STATE_CANCELLED"])
    assert relay.store.load(names[1]).error["code"] == 1
    check_stream(relay, names[2], ["JOB_STATE_PENDING", "JOB_STATE_EXPIRED"])
    for name in names:
        record = relay.store.load(name)
        got = by_job[name]
        assert [m["attributes"]["ce-id"] for m in got] == [
            f"{record.tracking_id}-{v}" for v in range(1, record.version + 1)]
        previous = "JOB_STATE_UNSPECIFIED"
        for version, m in enumerate(got, start=1):
            validate_event(m)
            attrs = m["attributes"]
            assert attrs["ce-type"] == "batchrelay.job.v1.stateChanged"
            assert attrs["ce-source"] == f"//batch-relay/projects/{relay.settings.project}"
            assert attrs["previous_state"] == previous == m["data"]["previous_state"]
            assert m["data"]["version"] == version and m["data"]["job"]["version"] == version
            assert attrs["api"] == "gemini" and attrs["state"] == m["data"]["state"]
            previous = attrs["state"]
    assert len(messages) == 7


def test_vertex_lifecycle_paused_resumes_and_partial_success(relay, simulator, poll_client):
    states = ["QUEUED", "RUNNING", "PAUSED", "QUEUED", "RUNNING", "PARTIALLY_SUCCEEDED"]
    simulator.add_job(vertex_spec("proj-a", "us-central1", "501", states,
                                  output={"kind": "gcs", "uri": "gs://vertex-out/run-501/prediction-x"}))
    simulator.add_job(vertex_spec("proj-a", "europe-west4", "502", ["RUNNING", "CANCELLING", "CANCELLED"]))
    simulator.add_job(vertex_spec("proj-a", "global", "503", ["PENDING", "RUNNING", "FAILED"]))
    names = [vname("501"), vname("502", "europe-west4"), vname("503", "global")]
    for n in names:
        relay.store.track(n)
    ticks_until_terminal(poll_client, relay, names)
    full = [f"JOB_STATE_{s}" for s in states]
    rec, _ = check_stream(relay, names[0], full)
    assert rec.terminal and rec.output == {"gcs_uri": "gs://vertex-out/run-501/prediction-x"}
    check_stream(relay, names[1], ["JOB_STATE_RUNNING", "JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"])
    failed, _ = check_stream(relay, names[2], ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_FAILED"])
    assert failed.error["code"] != 0
    by_job = events_by_job(relay.drain())
    assert [m["attributes"]["state"] for m in by_job[names[0]]] == full
    paused = by_job[names[0]][2]
    assert paused["data"]["job"]["terminal"] is False  # PAUSED is not terminal
    for msgs in by_job.values():
        for m in msgs:
            validate_event(m)


def test_unchanged_tick_writes_nothing_and_counts_update_without_event(relay, simulator):
    simulator.add_job(gemini_spec("quiet", [
        {"state": "RUNNING", "stats": {"successful": 1, "failed": 0, "incomplete": 5}}]))
    relay.store.track("batches/quiet")
    assert relay.tick()["changed"] == 1
    before = relay.store.snapshot("batches/quiet").update_time
    heartbeat_before = relay.store.read_heartbeat()["last_tick"]
    summary = relay.tick()
    assert (summary["polled"], summary["changed"], summary["updated"]) == (1, 0, 0)
    assert relay.store.snapshot("batches/quiet").update_time == before  # no write at all
    assert relay.store.read_heartbeat()["last_tick"] > heartbeat_before  # the tick's one write
    relay.drain()
    # a count change alone updates the record, with no event and no version bump
    simulator.set_state("batches/quiet", "RUNNING", stats={"successful": 4, "failed": 0, "incomplete": 2})
    summary = relay.tick()
    assert (summary["changed"], summary["updated"], summary["published"]) == (0, 1, 0)
    record = relay.store.load("batches/quiet")
    assert record.completion_stats == {"successful": 4, "failed": 0, "incomplete": 2}
    assert record.version == 1
    assert relay.drain() == []


def test_untrack_and_retrack_never_reuse_an_event_id(relay, simulator):
    simulator.add_job(gemini_spec("again", ["RUNNING"]))
    relay.store.track("batches/again")
    relay.tick()
    first = relay.drain()
    assert relay.store.untrack("batches/again") is True
    assert relay.store.load("batches/again") is None and relay.store.transitions("batches/again") == []
    relay.store.track("batches/again")
    relay.tick()
    second = relay.drain()
    assert len(first) == len(second) == 1
    assert first[0]["attributes"]["ce-id"] != second[0]["attributes"]["ce-id"]
    assert second[0]["attributes"]["ce-id"].endswith("-1")


def test_overlapping_ticks_publish_no_duplicate_versions(relay, simulator):
    names = [f"batches/overlap-{i}" for i in range(6)]
    for n in names:
        simulator.add_job(gemini_spec(n, ["RUNNING", "SUCCEEDED"], after_polls=2))
        relay.store.track(n)

    async def two_ticks():
        return await asyncio.gather(
            wiring.run_tick(relay.settings, relay.db, relay.publisher),
            wiring.run_tick(relay.settings, relay.db, relay.publisher))

    for _ in range(4):
        asyncio.run(two_ticks())
    messages = relay.drain()
    for n in names:
        transitions = relay.store.transitions(n)
        assert [t["version"] for t in transitions] == [1, 2]
        assert [t["to_state"] for t in transitions] == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    ids = [m["attributes"]["ce-id"] for m in messages]
    assert len(set(ids)) == 2 * len(names)  # every transition delivered; duplicates only share an id
    for n, msgs in events_by_job(messages).items():
        firsts = []
        for m in msgs:
            if m["data"]["version"] not in firsts:
                firsts.append(m["data"]["version"])
        assert firsts == [1, 2], n


def test_publish_failure_is_delivered_later_before_newer_events(relay, simulator):
    simulator.add_job(gemini_spec("pubfail", ["PENDING", "RUNNING", "SUCCEEDED"]))
    relay.store.track("batches/pubfail")
    broken = dataclasses.replace(relay.settings, events_topic="no-such-topic")
    summary = relay.tick(broken)
    assert summary["changed"] == 1 and summary["published"] == 0
    record = relay.store.load("batches/pubfail")
    assert record.has_unpublished and record.publish_lease is None
    assert relay.drain() == []
    summary = relay.tick()  # republishes v1 first, then commits and publishes v2
    assert summary["republished"] == 1 and summary["changed"] == 1
    relay.tick()
    versions = [m["data"]["version"] for m in relay.drain()]
    assert versions == [1, 2, 3]
    assert relay.store.load("batches/pubfail").has_unpublished is False


def test_terminal_record_left_unpublished_is_republished(relay, simulator):
    simulator.add_job(gemini_spec("crashy", ["SUCCEEDED"], output={"kind": "inline", "count": 2}))
    relay.store.track("batches/crashy")
    relay.tick(dataclasses.replace(relay.settings, events_topic="missing-topic"))
    record = relay.store.load("batches/crashy")
    assert record.terminal and record.has_unpublished
    summary = relay.tick()
    assert summary["polled"] == 0 and summary["republished"] == 1
    [message] = relay.drain()
    assert message["attributes"]["state"] == "JOB_STATE_SUCCEEDED"
    assert message["data"]["job"]["output"] == {"inlined_count": 2}


def test_faults_on_some_jobs_leave_the_others_correct(relay, simulator):
    faults = {
        "f404": [{"kind": "404", "count": 10}],
        "f403": [{"kind": "403", "count": 10}],
        "fmal": [{"kind": "malformed", "count": 10}],
        "fgarb": [{"kind": "garbage", "count": 10}],
        "f503": [{"kind": "503", "count": 10}],
        "fslow": [{"kind": "slow", "count": 10, "delay_s": 5}],
        "f429": [{"kind": "429", "retry_after": 1, "count": 1}],
        "fok": [],
    }
    for job_id, f in faults.items():
        simulator.add_job(gemini_spec(job_id, ["RUNNING"], faults=f))
        relay.store.track(f"batches/{job_id}")
    relay.store.track("batches/not-in-simulator")
    fast = dataclasses.replace(relay.settings, max_attempts=2, request_timeout_s=0.5)
    started = time.monotonic()
    summary = relay.tick(fast)
    assert summary["changed"] == 2 and summary["errors"] == 7
    kinds = {n: (relay.store.load(f"batches/{n}").last_poll_error or {}).get("kind") for n in faults}
    assert kinds == {"f404": "not_found", "f403": "forbidden", "fmal": "bad_response", "fgarb": "bad_response",
                     "f503": "unavailable", "fslow": "unavailable", "f429": None, "fok": None}
    assert relay.store.load("batches/not-in-simulator").last_poll_error["kind"] == "not_found"
    assert relay.store.load("batches/fok").state == relay.store.load("batches/f429").state == "JOB_STATE_RUNNING"
    assert time.monotonic() - started >= 1.0  # the 429's Retry-After was honoured
    error = relay.store.load("batches/f503").last_poll_error
    assert "503" in error["message"] and error["at"] is not None
    # the same error again writes nothing
    before = relay.store.snapshot("batches/f503").update_time
    relay.tick(fast)
    assert relay.store.snapshot("batches/f503").update_time == before
    events = relay.drain()
    assert sorted(m["attributes"]["job"] for m in events) == ["batches/f429", "batches/fok"]


def test_job_unknown_for_long_enough_is_lost(relay, simulator):
    simulator.add_job(gemini_spec("vanish", ["RUNNING"]))
    relay.store.track("batches/vanish")
    relay.tick()
    simulator.delete("batches/vanish")
    quick = dataclasses.replace(relay.settings, lost_after_s=1.0)
    relay.tick(quick)
    record = relay.store.load("batches/vanish")
    assert record.last_poll_error["kind"] == "not_found" and not record.terminal
    time.sleep(1.1)
    summary = relay.tick(quick)
    assert summary["lost"] == 1
    record = relay.store.load("batches/vanish")
    assert record.terminal and record.state == "JOB_STATE_RUNNING"
    messages = relay.drain()
    assert [m["attributes"]["ce-type"] for m in messages] == ["batchrelay.job.v1.stateChanged",
                                                              "batchrelay.job.v1.lost"]
    lost = messages[-1]
    validate_event(lost)
    assert lost["attributes"]["ce-id"] == f"{record.tracking_id}-lost"
    assert not relay.store.load("batches/vanish").has_unpublished
    assert all(t["expire_at"] for t in relay.store.transitions("batches/vanish"))
    assert relay.tick(quick)["polled"] == 0  # terminal: no longer polled


def test_poll_jobs_accepts_only_post(poll_client):
    for method in ("get", "put", "delete"):
        response = getattr(poll_client, method)("/")
        assert response.status_code == 405
        assert response.headers["Allow"] == "POST"


def test_poll_jobs_reports_bad_settings_as_500(function_env, monkeypatch):
    monkeypatch.setenv("RELAY_POLL_CONCURRENCY", "lots")
    from batch_relay.settings import load_settings

    load_settings.cache_clear()
    client = create_app(target="poll_jobs", source=MAIN, signature_type="http").test_client()
    response = client.post("/")
    assert response.status_code == 500
    assert "RELAY_POLL_CONCURRENCY" in response.get_json()["error"]


def test_heartbeat_and_log_lines(relay, simulator, capsys):
    from batch_relay.log import configure

    configure()
    simulator.add_job(gemini_spec("hb", ["RUNNING"]))
    relay.store.track("batches/hb")
    summary = relay.tick()
    heartbeat = relay.store.read_heartbeat()
    assert heartbeat["summary"]["changed"] == summary["changed"] == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    changed = [entry for entry in lines if entry["message"] == "state changed"]
    assert changed and changed[0]["job"] == "batches/hb" and changed[0]["severity"] == "INFO"
    assert any(entry["message"] == "tick finished" for entry in lines)
    assert all(relay.settings.gemini_api_key not in json.dumps(entry) for entry in lines)


def test_tracking_same_job_twice_is_harmless(relay):
    record, created = relay.store.track("batches/twice", labels={"team": "a"})
    again, created_again = relay.store.track("batches/twice", destination="gs://bucket-b/p/")
    assert created and not created_again
    assert again.tracking_id == record.tracking_id
    stored = relay.store.load("batches/twice")
    assert stored.labels == {"team": "a"} and stored.destination == "gs://bucket-b/p"


def test_a_tick_can_cover_a_shard_range(relay, simulator, poll_client):
    from batch_relay.record.model import SHARDS, shard_of

    names = [f"batches/shard-{i}" for i in range(12)]
    for n in names:
        simulator.add_job(gemini_spec(n, ["RUNNING"]))
        relay.store.track(n)
    half = SHARDS // 2
    low = [n for n in names if shard_of(n) < half]
    response = poll_client.post("/", json={"shard_lo": 0, "shard_hi": half})
    assert response.status_code == 200 and response.get_json()["polled"] == len(low)
    assert {n for n in names if relay.store.load(n).version == 1} == set(low)
    rest = poll_client.post("/", json={"shard_lo": half, "shard_hi": SHARDS}).get_json()
    assert rest["polled"] == len(names) - len(low)
    for bad in ({"shard_lo": 5, "shard_hi": 5}, {"shard_lo": -1}, {"shard_hi": SHARDS + 1}, [1, 2], {"shard_lo": "0"}):
        assert poll_client.post("/", json=bad).status_code == 400


def test_finished_jobs_and_all_their_transitions_get_an_expiry(relay, simulator):
    simulator.add_job(gemini_spec("ttl-1", ["PENDING", "RUNNING", "SUCCEEDED"]))
    relay.store.track("batches/ttl-1")
    for _ in range(3):
        relay.tick()
    record = relay.store.load("batches/ttl-1")
    assert record.terminal and record.expire_at is not None
    days = (record.expire_at - record.polled_at).days
    assert days == relay.settings.retention_days == 30
    assert [t["expire_at"] for t in relay.store.transitions("batches/ttl-1")] == [record.expire_at] * 3
    keep = dataclasses.replace(relay.settings, retention_days=0)
    simulator.add_job(gemini_spec("ttl-2", ["SUCCEEDED"]))
    relay.store.track("batches/ttl-2")
    relay.tick(keep)
    assert relay.store.load("batches/ttl-2").expire_at is None


def test_a_failed_publish_pauses_the_job_key_and_is_resumed(relay, simulator):
    """With ordering on, a failed publish pauses (topic, job) inside the client; the same client must
    publish that job again once the topic is back (resume_publish), older events first."""
    simulator.add_job(gemini_spec("paused-key", ["PENDING", "RUNNING", "SUCCEEDED"]))
    relay.store.track("batches/paused-key")
    relay.publisher.delete_topic(request={"topic": relay.topic})
    relay.subscriber.delete_subscription(request={"subscription": relay.subscription})
    summary = relay.tick()  # same topic, same client: the publish fails and pauses the key
    assert summary["changed"] == 1 and summary["published"] == 0
    relay.publisher.create_topic(name=relay.topic)
    relay.subscriber.create_subscription(request={"name": relay.subscription, "topic": relay.topic,
                                                  "enable_message_ordering": True})
    summary = relay.tick()
    assert summary["republished"] == 1 and summary["published"] == 2
    assert [m["data"]["version"] for m in relay.drain()] == [1, 2]


def test_a_transition_left_by_an_earlier_tracking_does_not_block_a_retrack(relay, simulator):
    """A tick racing an untrack can leave a transition document behind; the job tracked again under
    the same name must still advance past that version."""
    simulator.add_job(gemini_spec("orphan", ["RUNNING", "SUCCEEDED"]))
    relay.store.track("batches/orphan")
    relay.store.untrack("batches/orphan")
    orphan = relay.store.ref("batches/orphan").collection("transitions").document("00000001")
    orphan.set({"version": 1, "to_state": "JOB_STATE_RUNNING", "event_id": "old-1", "published": True})
    relay.store.track("batches/orphan")
    relay.tick()
    relay.tick()
    transitions = relay.store.transitions("batches/orphan")
    assert [t["to_state"] for t in transitions] == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    assert transitions[0]["event_id"] != "old-1"


def test_the_writer_of_a_change_marks_it_published_without_reading_unless_the_record_moved(relay):
    import datetime as dt

    from batch_relay.batchapi.wire import JobStatus

    now = dt.datetime.now(dt.UTC)

    def commit(name: str, state: str):
        relay.store.track(name)
        observed = JobStatus(name=name, api="gemini", state=state, completion_stats=None, update_time=now,
                             output={}, error=None)
        _result, change = relay.store.apply_status(relay.store.snapshot(name), observed, now, "writer")
        assert change.guard is not None and change.lease
        return change, machine.pending_of_change(change)

    change, pending = commit("batches/guard-a", "JOB_STATE_RUNNING")
    assert relay.store.mark_published_after(change, pending, "writer")
    record = relay.store.load("batches/guard-a")
    assert (record.published_version, record.has_unpublished, record.publish_lease) == (1, False, None)
    assert relay.store.transitions("batches/guard-a")[0]["published"] is True
    # written in between (here: new labels): the guard refuses, nothing is marked, the transaction does it
    change, pending = commit("batches/guard-b", "JOB_STATE_RUNNING")
    relay.store.track("batches/guard-b", labels={"team": "x"})
    assert not relay.store.mark_published_after(change, pending, "writer")
    assert relay.store.load("batches/guard-b").has_unpublished is True
    relay.store.mark_published("batches/guard-b", pending, "writer")
    assert relay.store.load("batches/guard-b").published_version == 1


def test_due_records_read_in_several_chunks_are_each_polled_once(relay, simulator, monkeypatch):
    from batch_relay.poller import tick

    monkeypatch.setattr(tick, "_CHUNK", 4)  # 23 due records: five full chunks and a short one
    names = [f"batches/chunk-{i:02d}" for i in range(23)]
    for n in names:
        simulator.add_job(gemini_spec(n, ["RUNNING"]))
        relay.store.track(n)
    simulator.reset_stats()
    summary = relay.tick()
    assert (summary["polled"], summary["changed"], summary["deferred"]) == (23, 23, 0)
    assert simulator.stats()["per_job_gets"] == {n: 1 for n in names}
    assert {relay.store.load(n).version for n in names} == {1}
    # 24: a chunk that ends exactly at the end reads one more, empty chunk and stops
    simulator.add_job(gemini_spec("batches/chunk-23", ["RUNNING"]))
    relay.store.track("batches/chunk-23")
    simulator.reset_stats()
    assert relay.tick()["polled"] == 24
    assert set(simulator.stats()["per_job_gets"].values()) == {1}
