"""Reliability where it is hardest, at CI size: the poller SIGKILLed at random points while the simulator
injects faults; ticks overlapping; the reactor SIGKILLed mid-copy and its events redelivered.

The machinery is ``devtools/soak.py`` (the same code runs the long soak whose figures are in
docs/reliability.md); these tests run a small but real version of each phase on the session's emulators and
assert the guarantees: nothing lost, order kept, duplicates only with the same ``ce-id``, copies exactly once
in effect.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from devtools import soak
from devtools.simulator import gemini_spec


@pytest.fixture
def bench(relay, simulator, gcs_emulator):
    return soak.Bench(relay.settings, relay.db, relay.publisher, relay.subscriber, relay.subscription, simulator,
                      gcs_emulator.url)


def report(capsys, result: dict) -> None:
    with capsys.disabled():
        shown = {k: v for k, v in result.items() if k != "problems"}
        print(f"\n[figures] {json.dumps(shown)}")


def test_poller_survives_sigkill_at_random_points(bench, capsys):
    result = soak.poller_crash(bench, jobs=30, kills=5, fault_rate=0.15, slow_faults=6, drop_faults=4,
                               step_s=(0.5, 2.5), polls=(1, 2), targeted=0.5, seed=11)
    report(capsys, result)
    assert result["problems"] == []
    assert result["lost"] == 0 and result["out_of_order"] == 0 and result["duplicate_versions"] == 0
    assert result["records_mismatched"] == 0 and result["phantom_events"] == 0
    assert result["ticks_failed"] == 0, result["failed_tick_replies"]  # nothing crashes a tick
    assert result["kills"] == 5 and result["ticks_cut_by_kill"] >= 1
    assert result["kills_leaving_unpublished"] >= 1  # some kills fell between commit and publish
    assert result["faults_injected"] > 0 and result["faults_by_kind"]["slow_or_drop"] > 0
    # every transition arrived: distinct ids == transitions; anything more was a same-id duplicate
    assert result["messages_received"] == result["transitions_verified"] + result["duplicates_seen"]
    assert result["transitions_verified"] >= 30 * 2


def test_overlapping_ticks_commit_each_change_once(bench, capsys):
    result = soak.overlapping_ticks(bench, jobs=16, concurrency=3, rounds=6, step_s=0.6, seed=12, fault_rate=0.1)
    report(capsys, result)
    assert result["problems"] == []
    assert result["lost"] == 0 and result["duplicate_versions"] == 0 and result["out_of_order"] == 0
    assert result["ticks_failed"] == 0 and result["rounds_fully_overlapping"] >= 1
    assert result["messages_received"] == result["transitions_verified"] + result["duplicates_seen"]


def test_reactor_survives_sigkill_mid_copy(bench, capsys):
    result = soak.reactor_crash(bench, vertex_jobs=3, objects=50, gemini_jobs=1, file_lines=8000, kills=3,
                                copy_lease_s=4.0, seed=13)
    report(capsys, result)
    assert result["problems"] == []
    assert result["kills_mid_copy"] >= 2 and result["kills_with_partial_outputs"] >= 1
    assert result["takeovers_of_killed_copies"] >= 1
    assert result["outputs_ready_ids"] == result["jobs"] and result["outputs_failed_events"] == 0
    assert result["manifests"] == result["jobs"]


def test_a_record_locked_by_a_dead_transaction_does_not_stop_the_tick(relay, simulator):
    """A poller killed inside a Firestore transaction (marking a job's events published) leaves that record
    locked until the lock expires; plain writes to it fail with ABORTED meanwhile. That job waits; the
    tick goes on and every other job is polled and published; nothing is lost once the lock is gone."""
    from google.cloud import firestore

    names = [f"batches/locked-{i}" for i in range(3)]
    for name in names:
        simulator.add_job(gemini_spec(name, ["RUNNING", "SUCCEEDED"]))
        relay.store.track(name)
    relay.tick(dataclasses.replace(relay.settings, events_topic="no-such-topic"))  # committed, unpublished
    assert all(relay.store.load(n).has_unpublished for n in names)
    dead = firestore.Client(project=relay.settings.project, database=relay.settings.database)
    transaction = dead.transaction()
    transaction._begin()  # a transaction that never ends, holding the first record: what a SIGKILL leaves
    relay.store.ref(names[0]).get(transaction=transaction)
    try:
        summary = relay.tick()  # must complete (poll_jobs would answer 500 otherwise)
        assert summary["errors"] >= 1
        for name in names[1:]:
            record = relay.store.load(name)
            assert record.state == "JOB_STATE_SUCCEEDED" and not record.has_unpublished, record
    finally:
        transaction._rollback()
    for _ in range(3):
        relay.tick()
    by_job: dict[str, list[int]] = {}
    for m in relay.drain():
        by_job.setdefault(m["attributes"]["job"], []).append(m["data"]["version"])
    for name in names:
        assert sorted(set(by_job[name])) == [1, 2], (name, by_job.get(name))
        assert relay.store.load(name).state == "JOB_STATE_SUCCEEDED"
