"""Stalled jobs (A2 RELAY_STALL_AFTER_S, A4 changed_at/stalled_at, A5 stalled) on the real emulators."""

from __future__ import annotations

import dataclasses
import time

from batch_relay.batchapi.scopes import WatchScope
from devtools.simulator import gemini_spec, vertex_spec
from tests.helpers import validate_event


def stalled_events(messages):
    return [m for m in messages if m["attributes"]["ce-type"] == "batchrelay.job.v1.stalled"]


def test_a_job_unchanged_for_stall_after_gets_one_stalled_event_per_version(relay, simulator):
    s = dataclasses.replace(relay.settings, stall_after_s=1.0)
    simulator.add_job(gemini_spec("st-1", [{"state": "RUNNING", "stats": {"successful": 1, "failed": 0,
                                                                           "incomplete": 9}}]))
    relay.store.track("batches/st-1")
    relay.tick(s)
    assert relay.tick(s)["stalled"] == 0  # not yet
    time.sleep(1.2)
    summary = relay.tick(s)
    assert summary["stalled"] == 1
    record = relay.store.load("batches/st-1")
    assert record.stalled_at is not None and record.version == 1 and not record.has_unpublished
    messages = relay.drain()
    [event] = stalled_events(messages)
    validate_event(event)
    assert event["attributes"]["ce-id"] == f"{record.tracking_id}-1-stalled"
    assert event["attributes"]["state"] == "JOB_STATE_RUNNING"
    assert event["data"]["state"] == "JOB_STATE_RUNNING" and event["data"]["stalled_for_s"] >= 1
    assert event["data"]["since"] == event["data"]["job"]["changed_at"]
    # once per version
    time.sleep(1.2)
    assert relay.tick(s)["stalled"] == 0 and stalled_events(relay.drain()) == []
    # a state change clears it, and the new version may stall again
    simulator.set_state("batches/st-1", "PENDING")
    relay.tick(s)
    record = relay.store.load("batches/st-1")
    assert record.version == 2 and record.stalled_at is None
    time.sleep(1.2)
    assert relay.tick(s)["stalled"] == 1
    assert [m["attributes"]["ce-id"] for m in stalled_events(relay.drain())] == [f"{record.tracking_id}-2-stalled"]


def test_counts_that_keep_moving_never_stall(relay, simulator):
    s = dataclasses.replace(relay.settings, stall_after_s=1.0)
    steps = [{"state": "RUNNING", "after_polls": 1, "stats": {"successful": i, "failed": 0, "incomplete": 20 - i}}
             for i in range(8)]
    simulator.add_job(gemini_spec("st-2", steps))
    relay.store.track("batches/st-2")
    started = time.monotonic()
    for _ in range(7):
        relay.tick(s)
        time.sleep(0.5)
    assert time.monotonic() - started > 2 * s.stall_after_s
    assert relay.store.load("batches/st-2").stalled_at is None and stalled_events(relay.drain()) == []


def test_stalls_are_off_at_zero_and_never_for_finished_jobs(relay, simulator):
    off = dataclasses.replace(relay.settings, stall_after_s=0.0)
    on = dataclasses.replace(relay.settings, stall_after_s=1.0)
    simulator.add_job(gemini_spec("st-3", ["RUNNING"]))
    simulator.add_job(gemini_spec("st-4", ["SUCCEEDED"]))
    relay.store.track("batches/st-3")
    relay.store.track("batches/st-4")
    relay.tick(off)
    time.sleep(1.2)
    assert relay.tick(off)["stalled"] == 0
    assert relay.tick(on)["stalled"] == 1  # only the running one
    assert relay.store.load("batches/st-4").stalled_at is None


def test_a_watched_job_that_stops_moving_stalls_too(relay, simulator):
    scope = "vertex:projects/proj-s/locations/us-west1"
    s = dataclasses.replace(relay.settings, stall_after_s=1.0, watch=(WatchScope.parse(scope),))
    name = "projects/proj-s/locations/us-west1/batchPredictionJobs/sw"
    simulator.add_job(vertex_spec("proj-s", "us-west1", "sw", ["RUNNING"]))
    relay.tick(s)  # discovered
    relay.tick(s)  # the digest knows it
    time.sleep(1.2)
    assert relay.tick(s)["stalled"] == 1
    assert relay.tick(s)["stalled"] == 0
    record = relay.store.load(name)
    assert record.stalled_at is not None and record.watch_scope == scope
    assert [m["attributes"]["ce-id"] for m in stalled_events(relay.drain())] == [f"{record.tracking_id}-1-stalled"]
