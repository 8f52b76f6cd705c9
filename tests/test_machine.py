"""The record model and its state machine as pure functions: no emulator, no network."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from batch_relay.batchapi.names import JobName
from batch_relay.batchapi.wire import JobStatus
from batch_relay.errors import UsageError
from batch_relay.record import machine
from batch_relay.record.machine import ClaimResult, PollResult
from batch_relay.record.model import PUBLIC_FIELDS, CopyState, CopyStatus, JobRecord, Lease, TrackedBy
from batch_relay.settings import Settings

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
S = Settings(project="p", publish_lease_s=60, copy_lease_s=600, lost_after_s=3600, retention_days=30)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def fresh(name: str = "batches/m1") -> JobRecord:
    return JobRecord.new(JobName.parse(name), destination=None, labels={}, now=T0, tracking_id="tid")


def status(state: str = "JOB_STATE_RUNNING", *, counts=None, updated: float = 10, name: str = "batches/m1",
           output=None, error=None) -> JobStatus:
    return JobStatus(name=name, api="gemini", state=state, completion_stats=counts, update_time=at(updated),
                     output=output or {}, error=error)


def test_a_new_record_is_unspecified_version_0_copy_pending():
    r = fresh()
    assert (r.state, r.version, r.terminal, r.tracked_by) == ("JOB_STATE_UNSPECIFIED", 0, False, TrackedBy.TRACK)
    assert r.copy == CopyState() and r.copy.status == CopyStatus.PENDING and r.copy.attempt == 1
    assert r.changed_at is None and r.stalled_at is None and 0 <= r.shard < 1024


def test_doc_round_trip_and_public_view():
    r = fresh().replace(publish_lease=Lease("me", at(60)), completion_stats={"successful": 1, "failed": 0,
                                                                               "incomplete": 2})
    assert JobRecord.from_doc(r.to_doc()) == r
    public = r.public()
    assert tuple(public) == PUBLIC_FIELDS
    assert "publish_lease" not in public and "shard" not in public and "outbox" not in public
    assert public["tracked_at"] == "2026-12-01T12:00:00.000000Z" and public["tracked_by"] == "track"
    json.dumps(public)  # JSON as is


def test_records_from_before_tracked_by_and_changed_at_read_with_defaults():
    doc = {k: v for k, v in fresh().to_doc().items() if k not in ("tracked_by", "changed_at", "stalled_at")}
    doc["polled_at"] = at(5)
    old = JobRecord.from_doc(doc)
    assert old.tracked_by == TrackedBy.TRACK and old.changed_at == at(5) and old.stalled_at is None


def test_first_observation_is_version_1_with_its_transition_event_and_lease():
    result, change = machine.apply_status(fresh(), status(), at(1), "tick-a", S)
    assert result == PollResult.CHANGED
    r = change.record
    assert (r.state, r.version, r.has_unpublished, r.changed_at, r.polled_at) == ("JOB_STATE_RUNNING", 1, True,
                                                                                   at(1), at(1))
    assert r.publish_lease == Lease("tick-a", at(61)) and change.lease
    [event] = change.events
    assert event.id == "tid-1" and event.attributes["previous_state"] == "JOB_STATE_UNSPECIFIED"
    [transition] = change.transitions
    assert transition.create and transition.id == "00000001"
    assert transition.fields["event"] == event.to_doc() and transition.fields["published"] is False


def test_counts_alone_update_without_event_and_update_time_alone_is_nothing():
    _, first = machine.apply_status(fresh(), status(counts={"successful": 1, "failed": 0, "incomplete": 9}), at(1),
                                    "t", S)
    r = first.record
    result, change = machine.apply_status(r, status(counts={"successful": 5, "failed": 0, "incomplete": 5},
                                                    updated=20), at(2), "t", S)
    assert result == PollResult.UPDATED and change.events == () and change.transitions == ()
    assert change.record.version == 1 and change.record.changed_at == at(2)
    result, change = machine.apply_status(change.record, status(counts={"successful": 5, "failed": 0,
                                                                        "incomplete": 5}, updated=30), at(3), "t", S)
    assert (result, change) == (PollResult.UNCHANGED, None)


def test_observations_never_go_backwards():
    _, change = machine.apply_status(fresh(), status("JOB_STATE_SUCCEEDED", updated=50), at(1), "t", S)
    older = status("JOB_STATE_RUNNING", updated=40)
    assert machine.is_stale(change.record, older) and not machine.needs_write(change.record, older)
    assert machine.apply_status(change.record, older, at(2), "t", S) == (PollResult.STALE, None)


def test_terminal_state_expires_the_record_and_its_earlier_transitions():
    _, one = machine.apply_status(fresh(), status("JOB_STATE_PENDING", updated=1), at(1), "t", S)
    _, two = machine.apply_status(one.record, status("JOB_STATE_RUNNING", updated=2), at(2), "t", S)
    _, three = machine.apply_status(two.record, status("JOB_STATE_SUCCEEDED", updated=3), at(3), "t", S)
    r = three.record
    assert r.terminal and r.version == 3 and r.expire_at == at(3) + dt.timedelta(days=30)
    assert [(t.version, t.create) for t in three.transitions] == [(3, True), (1, False), (2, False)]
    assert all(t.fields["expire_at"] == r.expire_at for t in three.transitions)


def test_a_live_lease_of_another_tick_is_not_taken():
    busy = fresh().replace(publish_lease=Lease("other", at(30)))
    _, change = machine.apply_status(busy, status(), at(1), "me", S)
    assert not change.lease and change.record.publish_lease == Lease("other", at(30))
    _, change = machine.apply_status(busy, status(), at(31), "me", S)  # expired: ours now
    assert change.lease and change.record.publish_lease.owner == "me"


def test_state_change_clears_stalled_at_but_counts_do_not():
    stalled = fresh().replace(state="JOB_STATE_RUNNING", version=1, stalled_at=at(0))
    _, counts = machine.apply_status(stalled, status(counts={"successful": 1, "failed": 0, "incomplete": 1}),
                                     at(1), "t", S)
    assert counts.record.stalled_at == at(0)
    _, state = machine.apply_status(stalled, status("JOB_STATE_SUCCEEDED"), at(1), "t", S)
    assert state.record.stalled_at is None


def test_poll_errors_are_noted_once_and_404_long_enough_is_lost():
    r = fresh().replace(state="JOB_STATE_RUNNING", version=2)
    result, change = machine.record_poll_error(r, "not_found", "HTTP 404", at(0), "t", S)
    assert result == PollResult.ERROR and change.record.last_poll_error == {"kind": "not_found",
                                                                            "message": "HTTP 404", "at": at(0)}
    again = machine.record_poll_error(change.record, "not_found", "HTTP 404", at(60), "t", S)
    assert again == (PollResult.ERROR, None)  # the same error as last time writes nothing
    result, lost = machine.record_poll_error(change.record, "not_found", "HTTP 404", at(3600), "t", S)
    assert result == PollResult.LOST and lost.record.terminal and lost.record.state == "JOB_STATE_RUNNING"
    assert lost.record.outbox["lost"]["id"] == "tid-lost" and lost.events[0].id == "tid-lost"
    assert [t.version for t in lost.transitions] == [1, 2]  # earlier transitions expire with it
    # a success clears the error
    _, ok = machine.apply_status(change.record, status(), at(10), "t", S)
    assert ok.record.last_poll_error is None


def test_the_writer_of_a_change_knows_its_pending_events_unless_an_older_one_is_unpublished():
    _, first = machine.apply_status(fresh(), status(), at(1), "me", S)
    assert machine.pending_of_change(first) == [("00000001", first.events[0])]
    # version 1 still unpublished when version 2 is committed: only the store's transitions know it
    _, second = machine.apply_status(first.record, status("JOB_STATE_SUCCEEDED", updated=20), at(2), "me", S)
    assert second.record.version == 2 and machine.pending_of_change(second) is None
    published = machine.mark_published(first.record, [("00000001", first.events[0])], "me").change.record
    _, third = machine.apply_status(published, status("JOB_STATE_SUCCEEDED", updated=20), at(2), "me", S)
    assert [key for key, _ in machine.pending_of_change(third)] == ["00000002"]
    # a change that made no transition (counts alone) has nothing the writer could know
    _, counts = machine.apply_status(published, status(counts={"successful": 1, "failed": 0, "incomplete": 1}),
                                     at(3), "me", S)
    assert counts.events == () and machine.pending_of_change(counts) == []


def test_publish_lease_take_and_give_back():
    r = fresh()
    mine = machine.take_publish_lease(r, "me", at(0), S).change.record
    assert mine.publish_lease == Lease("me", at(60))
    assert machine.take_publish_lease(mine, "other", at(1), S) == (False, None)
    assert machine.take_publish_lease(mine, "other", at(1), S, force=True).change.record.publish_lease.owner == "other"
    assert machine.give_back_publish_lease(mine, "other") == (False, None)
    assert machine.give_back_publish_lease(mine, "me").change.record.publish_lease is None


def test_mark_published_moves_the_watermark_and_empties_the_outbox():
    _, one = machine.apply_status(fresh(), status("JOB_STATE_SUCCEEDED"), at(1), "me", S)
    r = one.record
    claimed = machine.claim_copy(r, at(2), S).result.record
    _event, finished = machine.finish_copy(claimed, 1, at(3), S, status=CopyStatus.DONE, uri="gs://b/x", objects=1,
                                           size=3)
    r = finished.record
    assert r.has_unpublished and set(r.outbox) == {"copy"}
    pending = [("00000001", one.events[0]), *machine.outbox_events(r)]
    _, done = machine.mark_published(r, pending, "me")
    assert [t.id for t in done.transitions] == ["00000001"]
    after = done.record
    assert (after.published_version, after.outbox, after.has_unpublished) == (1, {}, False)
    assert after.copy.announced and after.publish_lease is None
    # half of it published: still something to publish
    half = machine.mark_published(r, pending[:1], "me").change.record
    assert half.has_unpublished and "copy" in half.outbox and not half.copy.announced


def test_claim_copy_results():
    ok = fresh().replace(state="JOB_STATE_SUCCEEDED", terminal=True, version=1)
    assert machine.claim_copy(None, at(0), S) == (None, None)  # not tracked: no claim, nothing written
    running = ok.replace(state="JOB_STATE_RUNNING", terminal=False)
    assert machine.claim_copy(running, at(0), S).result.result == ClaimResult.NOT_ENDED
    for ended in ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"):  # partial outputs: the API decides
        assert machine.claim_copy(ok.replace(state=ended), at(0), S).result.result == ClaimResult.CLAIMED
    claim, change = machine.claim_copy(ok, at(0), S)
    claimed = claim.record
    assert claim.result == ClaimResult.CLAIMED and claimed.copy.status == CopyStatus.COPYING
    assert claimed.copy_lease_until == at(600) and change.record == claimed
    assert machine.claim_copy(claimed, at(10), S).result.result == ClaimResult.BUSY
    assert machine.claim_copy(claimed, at(601), S).result.result == ClaimResult.CLAIMED  # an expired lease: ours
    for status_, expected in ((CopyStatus.DONE, ClaimResult.DONE), (CopyStatus.NOT_APPLICABLE, ClaimResult.DONE),
                              (CopyStatus.FAILED, ClaimResult.FAILED)):
        r = ok.replace(copy=dataclasses.replace(ok.copy, status=status_))
        assert machine.claim_copy(r, at(0), S) == (machine.Claim(expected, r), None)


def test_finish_release_stuck_and_recopy():
    ok = fresh().replace(state="JOB_STATE_PARTIALLY_SUCCEEDED", terminal=True, version=1)
    claimed = machine.claim_copy(ok, at(0), S).result.record
    assert machine.finish_copy(claimed, 2, at(1), S, status=CopyStatus.DONE) == (None, None)  # not this attempt's
    announced, failed = machine.finish_copy(claimed, 1, at(1), S, status=CopyStatus.FAILED,
                                            error={"kind": "missing_source", "message": "x"})
    assert failed.events[0].id == "tid-copy1-failed" and failed.record.copy_lease_until is None
    assert announced == failed.events[0]
    released = machine.release_copy(claimed, 1, at(5)).change.record
    assert released.copy.status == CopyStatus.COPYING and released.copy_lease_until == at(5)
    assert not machine.copy_stuck(released, at(600), S) and machine.copy_stuck(released, at(605), S)
    _, swept = machine.fail_stuck_copy(released, at(605), S)
    assert swept.record.copy.status == CopyStatus.FAILED and swept.record.copy.error["kind"] == "timeout"
    assert machine.fail_stuck_copy(claimed, at(10), S) == (False, None)
    again, change = machine.recopy(swept.record, ok.name)
    assert again.copy == CopyState(attempt=2) and change.record == again
    with pytest.raises(UsageError, match="already done"):
        machine.recopy(ok.replace(copy=CopyState(status=CopyStatus.DONE)), ok.name)
    with pytest.raises(UsageError, match="not tracked"):
        machine.recopy(None, ok.name)
    with pytest.raises(UsageError, match="only a job that ended"):
        machine.recopy(fresh(), ok.name)
    cancelled = ok.replace(state="JOB_STATE_CANCELLED", copy=CopyState(status=CopyStatus.FAILED))
    assert machine.recopy(cancelled, ok.name).result.copy == CopyState(attempt=2)  # partial outputs: recopied too


def test_track_again_changes_only_the_options_given():
    r = fresh().replace(labels={"a": "1"}, destination="gs://b/x")
    assert machine.update_tracking(r, destination=None, labels={}).change is None
    assert machine.update_tracking(r, destination="gs://b/x", labels={"a": "1"}).change is None
    after = machine.update_tracking(r, destination=None, labels={"b": "2"}).change.record
    assert after.labels == {"a": "1", "b": "2"} and after.destination == "gs://b/x"


def test_changes_from_lists_only_changed_fields():
    r = fresh()
    after = r.replace(state="JOB_STATE_RUNNING", copy=dataclasses.replace(r.copy, announced=True))
    assert set(after.changes_from(r)) == {"state", "copy"}


def test_stall_due_once_per_version_and_ordered_with_the_jobs_events():
    s = dataclasses.replace(S, stall_after_s=600)
    _, one = machine.apply_status(fresh(), status(), at(0), "me", s)
    r = machine.mark_published(one.record, [("00000001", one.events[0])], "me").change.record
    assert not machine.stall_due(r, at(599), s) and machine.stall_due(r, at(600), s)
    assert not machine.stall_due(r, at(10_000), dataclasses.replace(s, stall_after_s=0))
    _, change = machine.stall(r, at(700), "me", s)
    [event] = change.events
    assert event.id == "tid-1-stalled" and change.record.stalled_at == at(700) and change.lease
    data = json.loads(event.data)
    assert data["stalled_for_s"] == 700 and data["since"] == "2026-12-01T12:00:00.000000Z"
    assert not machine.stall_due(change.record, at(5000), s)  # at most one per version
    # unpublished stall of version 1, then transition 2: the stall goes out first
    _, two = machine.apply_status(change.record, status("JOB_STATE_PAUSED", updated=800), at(800), "me", s)
    keys = [*(t.id for t in two.transitions if t.create), *two.record.outbox]
    assert sorted(keys, key=machine.pending_order) == ["stalled-00000001", "00000002"]
    assert sorted(["copy", "lost", "00000003", "stalled-00000002", "00000002"], key=machine.pending_order) == [
        "00000002", "stalled-00000002", "00000003", "lost", "copy"]
    assert two.record.stalled_at is None


def test_track_creates_or_updates_through_one_outcome():
    job = JobName.parse("batches/m1")
    (record, created), change = machine.track(None, job, destination="gs://b/x", labels={"a": "1"}, now=at(0))
    assert created and change.record == record and (record.version, record.destination) == (0, "gs://b/x")
    assert machine.track(record, job, destination=None, labels={"a": "1"}, now=at(1)) == ((record, False), None)
    (after, created), change = machine.track(record, job, destination=None, labels={"b": "2"}, now=at(1))
    assert not created and change.record == after and after.labels == {"a": "1", "b": "2"}


def test_unwatch_writes_only_a_watched_record():
    watched = fresh().replace(watch_scope="gemini", watch_part=3, poll_slot="")
    result, change = machine.unwatch(watched)
    assert result == PollResult.UPDATED
    assert (change.record.watch_scope, change.record.watch_part, change.record.poll_slot) == ("", 0, "1:0")
    assert machine.unwatch(change.record) == (PollResult.UNCHANGED, None)
    # a discovered job is watched under its route, and its first status applied at once
    result, change = machine.discover(JobName.parse("batches/m1"), status(), at(1), "me", S, machine.Route("gemini", 5))
    assert result == PollResult.CHANGED and change.record.version == 1
    assert (change.record.watch_scope, change.record.watch_part, change.record.poll_slot) == ("gemini", 5, "")


def test_a_copy_waiting_for_its_output_keeps_its_first_try_and_is_not_swept_before_the_wait_ends():
    ok = fresh().replace(state="JOB_STATE_SUCCEEDED", terminal=True, version=1)
    s = dataclasses.replace(S, output_wait_s=1800)
    claimed = machine.claim_copy(ok, at(0), s).result.record
    waiting = machine.release_copy(claimed, 1, at(1), waiting_since=at(0)).change.record
    assert waiting.copy_waiting_since == at(0) and waiting.copy_lease_until == at(1)
    again = machine.claim_copy(waiting, at(100), s).result.record
    still = machine.release_copy(again, 1, at(101), waiting_since=at(100)).change.record
    assert still.copy_waiting_since == at(0)  # the first try is kept
    # an ordinary released copy is stuck a lease after its release; a waiting one a lease after its wait
    assert machine.copy_stuck(machine.release_copy(claimed, 1, at(1)).change.record, at(601), s)
    assert not machine.copy_stuck(still, at(1800 + 599), s) and machine.copy_stuck(still, at(1800 + 600), s)
    _, done = machine.finish_copy(still, 1, at(200), s, status=CopyStatus.DONE)
    assert done.record.copy_waiting_since is None
    assert machine.recopy(still, ok.name).result.copy_waiting_since is None


def test_rewrite_tokens_are_kept_by_the_copy_that_owns_them_and_cleared_when_it_ends():
    ok = fresh().replace(state="JOB_STATE_SUCCEEDED", terminal=True, version=1)
    claimed = machine.claim_copy(ok, at(0), S).result.record
    saved, change = machine.save_rewrites(claimed, 1, {"out/big.jsonl": "token-43"})
    assert saved and change.record.copy_rewrites == {"out/big.jsonl": "token-43"}
    held = change.record
    assert JobRecord.from_doc(held.to_doc()) == held  # stored as a map of strings
    assert machine.save_rewrites(held, 1, {"out/big.jsonl": "token-43"}) == (True, None)  # unchanged: no write
    assert machine.save_rewrites(held, 2, {}) == (False, None)  # another attempt's: nothing written
    released = machine.release_copy(held, 1, at(500)).change.record
    assert released.copy_rewrites == {"out/big.jsonl": "token-43"}  # the redelivery resumes from it
    again = machine.claim_copy(released, at(501), S).result.record
    assert again.copy_rewrites == {"out/big.jsonl": "token-43"}
    _, done = machine.finish_copy(again, 1, at(600), S, status=CopyStatus.DONE)
    assert done.record.copy_rewrites == {}


def test_a_copy_stopped_with_rewrites_unfinished_is_swept_two_leases_later_as_rewrite_unfinished():
    ok = fresh().replace(state="JOB_STATE_SUCCEEDED", terminal=True, version=1)
    claimed = machine.claim_copy(ok, at(0), S).result.record
    held = machine.save_rewrites(claimed, 1, {"out/big.jsonl": "token-43"}).change.record
    released = machine.release_copy(held, 1, at(510)).change.record
    # Pub/Sub's backoff grows up to 600 s, one lease: a copy with rewrites under way is left two leases
    assert not machine.copy_stuck(released, at(510 + 1199), S) and machine.copy_stuck(released, at(510 + 1200), S)
    swept, change = machine.fail_stuck_copy(released, at(510 + 1200), S)
    assert swept and change.record.copy.status == CopyStatus.FAILED
    assert change.record.copy.error["kind"] == "rewrite_unfinished" and "recopy" in change.record.copy.error["message"]
    again = machine.recopy(change.record, ok.name).result
    assert again.copy_rewrites == {"out/big.jsonl": "token-43"}  # recopy resumes the rewrite
    plain = machine.release_copy(claimed, 1, at(510)).change.record
    assert machine.fail_stuck_copy(plain, at(1110), S).change.record.copy.error["kind"] == "timeout"
