"""Adaptive cadence of the GET path (RELAY_MAX_POLL_INTERVAL_S): pure rules, and ticks on the emulators
with the cadence's clock driven minute by minute."""

from __future__ import annotations

import dataclasses
import datetime as dt

from batch_relay.record import cadence
from batch_relay.settings import Settings
from devtools.simulator import gemini_spec

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def at_tick(k: int):
    when = T0 + dt.timedelta(minutes=k)
    return lambda: when


def test_the_ladder_and_the_slots():
    s = Settings(project="p", tick_interval_s=60, max_poll_interval_s=960)
    assert cadence.ladder(s) == (1, 4, 16)  # each step at least 4 times the last
    assert cadence.ladder(dataclasses.replace(s, max_poll_interval_s=300)) == (1, 5)
    assert cadence.ladder(dataclasses.replace(s, max_poll_interval_s=600)) == (1, 10)
    assert cadence.ladder(dataclasses.replace(s, max_poll_interval_s=3600)) == (1, 4, 60)
    assert cadence.ladder(dataclasses.replace(s, max_poll_interval_s=60)) == (1,)  # at the tick: every tick
    assert cadence.ladder(dataclasses.replace(s, max_poll_interval_s=0)) == (1,)
    assert cadence.due_slots(23, s) == ["1:0", "4:3", "16:7"]
    # a step taken on tick 23 is next due on 23 + 4 - 1 = 26, then every 4; on 26 to the cap: 41, 57, ...
    assert cadence.step_up("1:0", 23, s) == "4:2" and cadence.step_up("4:2", 26, s) == "16:9"
    assert cadence.step_up("16:9", 41, s) == "16:9"  # the cap
    assert cadence.step_up("10:2", 40, s) == "16:7"  # off the ladder (the setting changed): to the cap
    assert cadence.step_up("", 40, s) == ""
    for tick in range(100):  # a step is never due again on the tick that took it (its query would re-read it)
        for slot in ("1:0", "4:1", "10:2"):  # a step up, and back onto the ladder
            assert cadence.step_up(slot, tick, s) not in cadence.due_slots(tick, s)


def polls_in_a_day(settings: Settings, changes: list[int]) -> tuple[int, int]:
    """The cadence's rules alone, over a day of one-minute ticks: polls of one job changing at ``changes``
    (minutes), and the longest wait from a change to the poll that sees it."""
    slot, polls, seen, pending, worst = cadence.EVERY_TICK, 0, 0, None, 0
    for tick in range(1440):
        if tick in changes:
            pending = tick if pending is None else pending
        if slot not in cadence.due_slots(tick, settings):
            continue
        polls += 1
        if pending is not None:  # the poll sees the change: due every tick again
            worst, pending, slot = max(worst, tick - pending), None, cadence.EVERY_TICK
            seen += 1
        else:
            slot = cadence.step_up(slot, tick, settings)
    assert seen == len(changes)
    return polls, worst


def test_a_job_changing_four_times_a_day_costs_at_most_300_polls_or_150_at_600_s():
    import random

    rng = random.Random(5)
    for max_s, budget in ((300, 300), (600, 150), (60, 1440)):
        s = Settings(project="p", tick_interval_s=60, max_poll_interval_s=max_s)
        for _ in range(50):
            changes = sorted(rng.sample(range(1, 1400), 4))
            while min(b - a for a, b in zip(changes, changes[1:])) < 20:  # four separate changes
                changes = sorted(rng.sample(range(1, 1400), 4))
            polls, worst = polls_in_a_day(s, changes)
            assert polls <= budget, (max_s, changes, polls)
            assert worst <= max(max_s // 60, 1), (max_s, changes, worst)  # seen within one interval


def test_an_unchanged_job_is_polled_less_and_less_often_and_a_change_is_seen_within_an_interval(relay, simulator):
    s = dataclasses.replace(relay.settings, tick_interval_s=60, max_poll_interval_s=960)  # ladder 1, 4, 16
    simulator.add_job(gemini_spec("cad-1", [{"state": "RUNNING", "stats": {"successful": 1, "failed": 0,
                                                                           "incomplete": 9}}]))
    relay.store.track("batches/cad-1")
    gets = []
    for k in range(60):
        before = simulator.stats()["per_job_gets"].get("batches/cad-1", 0)
        if k == 22:
            simulator.set_state("batches/cad-1", "RUNNING", stats={"successful": 5, "failed": 0, "incomplete": 5})
        if k == 40:
            simulator.set_state("batches/cad-1", "SUCCEEDED")
        relay.tick(s, now=at_tick(k))
        if simulator.stats()["per_job_gets"].get("batches/cad-1", 0) > before:
            gets.append(k)
        if relay.store.load("batches/cad-1").terminal:
            break
    # tracked: every tick; unchanged: 4 ticks (less the one of the step), then the 16-tick cap
    assert gets[:5] == [0, 1, 4, 19, 35]
    # the count change at minute 22 is seen at the next poll (35: within one interval), then every tick again
    assert gets[gets.index(35) + 1] == 36
    record = relay.store.load("batches/cad-1")
    assert record.completion_stats["successful"] == 5 and record.state == "JOB_STATE_SUCCEEDED"
    assert gets[-1] - 40 <= 16  # the end, within one interval
    assert len(gets) <= 10  # against 55 polls at every tick
    assert [m["attributes"]["state"] for m in relay.drain()] == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]


def test_at_or_below_the_tick_interval_every_tick_as_before(relay, simulator):
    s = dataclasses.replace(relay.settings, tick_interval_s=60, max_poll_interval_s=60)
    simulator.add_job(gemini_spec("cad-2", ["RUNNING"]))
    relay.store.track("batches/cad-2")
    for k in range(6):
        relay.tick(s, now=at_tick(k))
    assert simulator.stats()["per_job_gets"]["batches/cad-2"] == 6
    assert relay.store.load("batches/cad-2").poll_slot == "1:0"


def test_stalls_and_lost_still_work_with_a_cadence(relay, simulator):
    s = dataclasses.replace(relay.settings, tick_interval_s=60, max_poll_interval_s=600, stall_after_s=30 * 60,
                            lost_after_s=30 * 60)
    simulator.add_job(gemini_spec("cad-3", ["RUNNING"]))
    relay.store.track("batches/cad-3")
    simulator.add_job(gemini_spec("cad-4", ["RUNNING"]))
    relay.store.track("batches/cad-4")
    relay.tick(s, now=at_tick(0))
    simulator.delete("batches/cad-4")  # 404 from now on
    for k in range(1, 60):
        relay.tick(s, now=at_tick(k))
    messages = relay.drain()
    stalls = [m for m in messages if m["attributes"]["ce-type"] == "batchrelay.job.v1.stalled"]
    assert [m["attributes"]["job"] for m in stalls] == ["batches/cad-3"]
    assert stalls[0]["data"]["stalled_for_s"] <= 40 * 60  # seen at the first poll past 30 min
    lost = relay.store.load("batches/cad-4")
    assert lost.terminal and lost.last_poll_error["kind"] == "not_found"
    assert [m["attributes"]["job"] for m in messages if m["attributes"]["ce-type"] == "batchrelay.job.v1.lost"] == [
        "batches/cad-4"]


def test_a_webhook_nudge_makes_a_job_due_every_tick_again(relay, simulator, function_env, monkeypatch):
    from batch_relay import wiring

    s = dataclasses.replace(relay.settings, tick_interval_s=60, max_poll_interval_s=600)
    simulator.add_job(gemini_spec("cad-5", ["RUNNING"]))
    relay.store.track("batches/cad-5")
    for k in range(6):
        relay.tick(s, now=at_tick(k))
    assert relay.store.load("batches/cad-5").poll_slot.startswith("10:")
    assert wiring.nudge(s, relay.db, relay.publisher, "batches/cad-5") == "unchanged"
    assert relay.store.load("batches/cad-5").poll_slot == "1:0"


def test_records_off_the_ladder_are_brought_back_when_the_setting_changes(relay, simulator):
    long = dataclasses.replace(relay.settings, tick_interval_s=60, max_poll_interval_s=3600)
    simulator.add_job(gemini_spec("cad-6", ["RUNNING"]))
    relay.store.track("batches/cad-6")
    for k in (0, 1, 4, 19):
        relay.tick(long, now=at_tick(k))
    assert relay.store.load("batches/cad-6").poll_slot.startswith("60:")
    short = dataclasses.replace(long, max_poll_interval_s=300)  # 60 is no longer on the ladder
    summary = relay.tick(short, now=at_tick(22))
    assert summary["migrated"] == 1 and summary["polled"] == 1
    assert relay.store.load("batches/cad-6").poll_slot.split(":")[0] in ("1", "5")
