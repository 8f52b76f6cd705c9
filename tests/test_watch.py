"""Watched scopes (A8) end to end: the Firestore and Pub/Sub emulators, the simulator's list endpoints
over real HTTP, ticks through ``batch_relay.wiring``."""

from __future__ import annotations

import dataclasses
import datetime as dt

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from batch_relay.batchapi.scopes import WatchScope
from batch_relay.record import digest as digests
from batch_relay.record.store import JobStore
from devtools.simulator import gemini_spec, vertex_spec
from tests.helpers import validate_event

PROJECT = "proj-w"
LOC = "us-east1"
SCOPE = f"vertex:projects/{PROJECT}/locations/{LOC}"


def vname(job_id: str, project: str = PROJECT, location: str = LOC) -> str:
    return f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}"


def watching(relay, *scopes: str, **more):
    return dataclasses.replace(relay.settings, watch=tuple(WatchScope.parse(s) for s in scopes or (SCOPE,)), **more)


def ids(messages, name):
    return [m["attributes"]["ce-id"] for m in messages if m["attributes"]["job"] == name]


def test_listed_jobs_nobody_tracked_are_discovered_and_followed(relay, simulator):
    s = watching(relay)
    simulator.add_job(vertex_spec(PROJECT, LOC, "d1", ["RUNNING", "SUCCEEDED"]))
    simulator.add_job(vertex_spec(PROJECT, "europe-west4", "elsewhere", ["RUNNING"]))  # another scope
    summary = relay.tick(s)
    assert summary["discovered"] == 1 and summary["changed"] == 1 and summary["listed"] == 1
    record = relay.store.load(vname("d1"))
    assert record.tracked_by == "watch" and record.state == "JOB_STATE_RUNNING" and record.version == 1
    assert record.destination is None and record.watch_scope == SCOPE and record.poll_slot == ""
    assert relay.store.load(vname("elsewhere", location="europe-west4")) is None
    [first] = relay.drain()
    validate_event(first)
    assert first["attributes"]["previous_state"] == "JOB_STATE_UNSPECIFIED"
    assert first["data"]["job"]["tracked_by"] == "watch"
    assert first["attributes"]["ce-id"] == f"{record.tracking_id}-1"
    assert simulator.stats()["status_gets"] == 0  # lists are observations: no GET at all
    simulator.set_state(vname("d1"), "SUCCEEDED")
    relay.tick(s)
    record = relay.store.load(vname("d1"))
    assert record.state == "JOB_STATE_SUCCEEDED" and record.terminal and record.watch_scope == ""
    assert [m["attributes"]["state"] for m in relay.drain()] == ["JOB_STATE_SUCCEEDED"]
    assert simulator.stats()["status_gets"] == 0


def test_a_tracked_job_in_a_watched_scope_is_observed_by_the_list_not_fetched(relay, simulator):
    s = watching(relay)
    simulator.add_job(vertex_spec(PROJECT, LOC, "t1", ["QUEUED", "RUNNING"], after_s=600))
    relay.store.track(vname("t1"), destination="gs://mine/t1", labels={"team": "a"})
    relay.tick(s)
    record = relay.store.load(vname("t1"))
    assert record.tracked_by == "track" and record.state == "JOB_STATE_QUEUED"
    assert record.watch_scope == SCOPE and record.poll_slot == ""  # handed over to the list
    assert simulator.stats()["status_gets"] == 0
    # steady ticks: no GET, no write
    before = relay.store.snapshot(vname("t1")).update_time
    for _ in range(2):
        summary = relay.tick(s)
        assert (summary["changed"], summary["updated"], summary["errors"]) == (0, 0, 0)
    assert relay.store.snapshot(vname("t1")).update_time == before
    assert simulator.stats()["status_gets"] == 0
    assert len(relay.drain()) == 1


def test_unchanged_watched_jobs_cost_no_record_reads(relay, simulator):
    """Once the digest knows them, a tick over unchanged watched jobs reads no record (the digest and
    the scope's bookkeeping are a few documents whatever their number)."""
    s = watching(relay)
    for i in range(30):
        simulator.add_job(vertex_spec(PROJECT, LOC, f"u{i}", ["RUNNING"]))
    relay.tick(s)
    relay.tick(s)  # the second tick fills the fingerprints in (the first one created the records)

    class Counting(JobStore):
        record_reads = 0

        def snapshots(self, names):
            Counting.record_reads += len(names)
            return super().snapshots(names)

        def due(self, **kw):
            for snap in super().due(**kw):
                Counting.record_reads += 1
                yield snap

        def watched(self, scope_id, part=None):
            for snap in super().watched(scope_id, part):
                Counting.record_reads += 1
                yield snap

    import asyncio

    from batch_relay import wiring
    from batch_relay.batchapi.http import make_http_pool

    async def tick():
        async with make_http_pool(4, 5) as http:
            poller = wiring.make_poller(s, relay.db, relay.publisher, http, store=Counting(relay.db, s))
            return (await poller.tick()).as_dict()

    summary = asyncio.run(tick())
    assert summary["listed"] == 30 and summary["changed"] == summary["updated"] == 0
    assert Counting.record_reads == 0
    # and a change is still seen: exactly one record read for the job that moved
    simulator.set_state(vname("u7"), "RUNNING", stats={"successful": 3, "failed": 0, "incomplete": 7})
    summary = asyncio.run(tick())
    assert summary["updated"] == 1 and Counting.record_reads == 1
    assert relay.store.load(vname("u7")).completion_stats == {"successful": 3, "failed": 0, "incomplete": 7}


def test_finished_history_is_left_alone_but_a_job_finished_between_ticks_is_caught(relay, simulator):
    s = watching(relay)
    simulator.add_job(vertex_spec(PROJECT, LOC, "old", ["SUCCEEDED"], created_ago_s=7200))
    relay.tick(s)  # the scope's first tick: its start is now
    assert relay.store.load(vname("old")) is None
    simulator.add_job(vertex_spec(PROJECT, LOC, "quick", ["SUCCEEDED"]))  # started and ended between ticks
    relay.tick(s)
    record = relay.store.load(vname("quick"))
    assert record.state == "JOB_STATE_SUCCEEDED" and record.version == 1 and record.tracked_by == "watch"
    [event] = relay.drain()
    assert event["attributes"]["previous_state"] == "JOB_STATE_UNSPECIFIED"
    assert relay.store.load(vname("old")) is None
    relay.tick(s)
    assert relay.drain() == []  # known now: nothing again


def test_untracked_watched_jobs_are_not_discovered_again_until_tracked(relay, simulator):
    s = watching(relay)
    simulator.add_job(vertex_spec(PROJECT, LOC, "gone", ["RUNNING"]))
    relay.tick(s)
    assert relay.store.load(vname("gone")).tracked_by == "watch"
    assert relay.store.untrack(vname("gone"))
    for _ in range(2):
        relay.tick(s)
        assert relay.store.load(vname("gone")) is None
    simulator.set_state(vname("gone"), "RUNNING", stats={"successful": 1, "failed": 0, "incomplete": 1})
    relay.tick(s)
    assert relay.store.load(vname("gone")) is None  # a change does not bring it back either
    relay.store.track(vname("gone"))
    relay.tick(s)
    record = relay.store.load(vname("gone"))
    assert record.tracked_by == "track" and record.state == "JOB_STATE_RUNNING"
    assert record.watch_scope == SCOPE


def test_a_stale_page_writes_nothing_and_publishes_nothing(relay, simulator):
    """Lists are eventually consistent: a page showing a job as it was before (an older updateTime) must
    not take the record back."""
    s = watching(relay)
    simulator.add_job(vertex_spec(PROJECT, LOC, "st", ["QUEUED"]))
    relay.tick(s)
    simulator.set_state(vname("st"), "RUNNING", stats={"successful": 4, "failed": 0, "incomplete": 6})
    relay.tick(s)
    record = relay.store.load(vname("st"))
    assert (record.state, record.version) == ("JOB_STATE_RUNNING", 2)
    before = relay.store.snapshot(vname("st")).update_time
    relay.drain()
    simulator.stale_lists(vname("st"), 3)  # the next pages show it QUEUED, with no counts
    for _ in range(3):
        summary = relay.tick(s)
        assert summary["changed"] == summary["updated"] == 0
    record = relay.store.load(vname("st"))
    assert (record.state, record.version) == ("JOB_STATE_RUNNING", 2)
    assert record.completion_stats == {"successful": 4, "failed": 0, "incomplete": 6}
    assert relay.store.snapshot(vname("st")).update_time == before and relay.drain() == []


def test_a_job_gone_from_its_list_goes_back_to_get_and_can_be_lost(relay, simulator):
    s = watching(relay, lost_after_s=0)
    simulator.add_job(vertex_spec(PROJECT, LOC, "del", ["RUNNING"]))
    relay.tick(s)
    assert relay.store.load(vname("del")).watch_scope == SCOPE
    simulator.delete(vname("del"))
    relay.tick(s)  # not listed: back to the GET path
    record = relay.store.load(vname("del"))
    assert record.watch_scope == "" and record.poll_slot == "1:0"
    relay.drain()
    relay.tick(s)  # GET: 404, and with RELAY_LOST_AFTER_S=0 lost at once
    record = relay.store.load(vname("del"))
    assert record.terminal and record.last_poll_error["kind"] == "not_found"
    assert [m["attributes"]["ce-type"] for m in relay.drain()] == ["batchrelay.job.v1.lost"]


def test_vertex_names_by_project_number_match_records_tracked_by_id(relay, simulator):
    s = watching(relay)
    simulator.configure(project_numbers={PROJECT: "424242"})
    simulator.add_job(vertex_spec(PROJECT, LOC, "num", ["RUNNING", "SUCCEEDED"]))
    relay.store.track(vname("num"))
    relay.tick(s)
    simulator.set_state(vname("num"), "SUCCEEDED")
    relay.tick(s)
    assert relay.store.load(vname("num")).state == "JOB_STATE_SUCCEEDED"
    assert relay.store.load(vname("num", project="424242")) is None  # no second record under the number
    assert simulator.stats()["status_gets"] == 0
    # a GET of the id form answered with the number form is the same job
    s_get = dataclasses.replace(relay.settings)
    simulator.add_job(vertex_spec(PROJECT, "asia-east1", "g1", ["RUNNING"]))
    relay.store.track(vname("g1", location="asia-east1"))
    relay.tick(s_get)
    assert relay.store.load(vname("g1", location="asia-east1")).state == "JOB_STATE_RUNNING"


def test_the_filter_and_the_window_are_sent_and_a_refused_window_falls_back(relay, simulator):
    s = watching(relay, watch_filter="labels.team=evals")
    simulator.add_job(vertex_spec(PROJECT, LOC, "evals", ["RUNNING"], labels={"team": "evals"}))
    simulator.add_job(vertex_spec(PROJECT, LOC, "other", ["RUNNING"], labels={"team": "other"}))
    relay.tick(s)
    assert relay.store.load(vname("evals")) is not None and relay.store.load(vname("other")) is None
    relay.tick(s)
    filters = simulator.stats()["list_filters"]
    assert filters[0] == "labels.team=evals"
    assert filters[-1].startswith("(labels.team=evals) AND (") and 'create_time>="' in filters[-1]


def test_gemini_scope_lists_every_batch_the_key_lists(relay, simulator):
    s = watching(relay, "gemini")
    simulator.add_job(gemini_spec("g-w1", ["PENDING", "RUNNING"]))
    simulator.add_job(gemini_spec("g-w2", ["PENDING"]))
    simulator.configure(list_page_max={"gemini": 1})  # one batch per page
    summary = relay.tick(s)
    assert summary["discovered"] == 2 and summary["list_pages"] == 2
    assert relay.store.load("batches/g-w1").tracked_by == "watch"
    assert simulator.stats()["status_gets"] == 0


def test_the_region_quota_covers_lists_too(relay, simulator):
    s = watching(relay, vertex_region_qpm=2, tick_deadline_s=3)
    simulator.configure(list_page_max={"vertex": 1})
    for i in range(4):
        simulator.add_job(vertex_spec(PROJECT, LOC, f"q{i}", ["RUNNING"]))
    summary = relay.tick(s)  # two pages fit in the quota, the rest waits past the deadline
    assert summary["list_pages"] == 2 and summary["deferred"] >= 1
    # an incomplete listing discovers what it saw and hands nothing back
    assert summary["discovered"] == 2


@pytest.mark.parametrize("kind", ["malformed", "wrong_shape", "no_names", "foreign_names", "endless", "503"])
def test_garbage_list_pages_write_nothing_and_the_jobs_fall_back_to_get(relay, simulator, kind):
    s = watching(relay, max_attempts=1)
    simulator.add_job(vertex_spec(PROJECT, LOC, "known", ["RUNNING"]))
    relay.store.track(vname("known"))
    simulator.add_job(vertex_spec(PROJECT, LOC, "new", ["RUNNING"]))
    simulator.list_faults("vertex", [{"kind": kind, "count": 50}])
    summary = relay.tick(s)
    assert summary["errors"] >= 1
    known = relay.store.load(vname("known"))
    assert known.state == "JOB_STATE_RUNNING"
    if kind == "endless":  # the first page was fine: what it showed is used, the endless rest cut
        assert relay.store.load(vname("new")).tracked_by == "watch"
    else:  # nothing usable listed: no discovery, and the tracked job fetched with GET instead
        assert relay.store.load(vname("new")) is None
        assert simulator.stats()["per_job_gets"] == {vname("known"): 1}
    assert relay.store.load(vname("x", project="elsewhere", location="mars")) is None
    names = {r.name for r in relay.store.records()}
    assert names <= {vname("known"), vname("new")}


_garbage = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                    max_size=3), max_leaves=12)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(_garbage, st.fixed_dictionaries({"batchPredictionJobs": st.lists(_garbage, max_size=4)},
                                                      optional={"nextPageToken": _garbage})))
def test_hostile_list_pages_never_stop_the_tick_or_write(relay, body):
    """Whatever a list page holds, the tick ends with a summary, and only a listed job of the scope
    with a readable status could ever be tracked."""
    s = watching(relay)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/batchPredictionJobs"):
            return httpx.Response(200, json=body)
        return httpx.Response(404, json={"error": {"code": 404, "message": "no"}})

    summary = relay.tick(s, transport=httpx.MockTransport(handler))
    assert isinstance(summary["errors"], int)
    for record in relay.store.records():
        assert record.name.startswith(f"projects/{PROJECT}/locations/{LOC}/batchPredictionJobs/")


def test_a_lost_or_stale_digest_costs_reads_never_events(relay, simulator):
    s = watching(relay)
    for i in range(5):
        simulator.add_job(vertex_spec(PROJECT, LOC, f"dg{i}", ["RUNNING"]))
    relay.tick(s)
    relay.tick(s)
    relay.drain()
    meta = relay.db.collection(s.meta_collection)
    parts = [meta.document(digests.part_id(SCOPE, p)) for p in range(digests.PARTS)]
    saved = {ref.id: ref.get().to_dict() for ref in parts}
    # lost: every digest part deleted, and one job moves meanwhile
    for ref in parts:
        ref.delete()
    simulator.set_state(vname("dg1"), "SUCCEEDED")
    relay.tick(s)
    assert [m["attributes"]["state"] for m in relay.drain()] == ["JOB_STATE_SUCCEEDED"]
    # stale: an old digest put back claims jobs are as they were; another moves
    for ref in parts:
        if saved[ref.id]:
            ref.set(saved[ref.id])
    simulator.set_state(vname("dg2"), "FAILED")
    relay.tick(s)
    assert [m["attributes"]["state"] for m in relay.drain()] == ["JOB_STATE_FAILED"]
    relay.tick(s)
    assert relay.drain() == []
    states = {relay.store.load(vname(f"dg{i}")).state for i in (0, 3, 4)}
    assert states == {"JOB_STATE_RUNNING"}


def test_a_scope_no_longer_watched_hands_its_jobs_back_to_get(relay, simulator):
    s = watching(relay)
    simulator.add_job(vertex_spec(PROJECT, LOC, "ret", ["RUNNING"]))
    relay.tick(s)
    assert relay.store.load(vname("ret")).poll_slot == ""
    relay.tick(relay.settings)  # RELAY_WATCH no longer names the scope
    record = relay.store.load(vname("ret"))
    assert record.watch_scope == "" and record.poll_slot == "1:0"
    simulator.set_state(vname("ret"), "SUCCEEDED")
    relay.tick(relay.settings)
    assert relay.store.load(vname("ret")).state == "JOB_STATE_SUCCEEDED"


def test_records_of_the_previous_version_are_polled_after_the_upgrade(relay, simulator):
    simulator.add_job(gemini_spec("legacy", ["RUNNING"]))
    relay.store.track("batches/legacy")
    ref = relay.store.ref("batches/legacy")
    from google.cloud import firestore

    ref.update({"poll_slot": firestore.DELETE_FIELD, "watch_scope": firestore.DELETE_FIELD,
                "watch_part": firestore.DELETE_FIELD, "tracked_by": firestore.DELETE_FIELD,
                "changed_at": firestore.DELETE_FIELD, "stalled_at": firestore.DELETE_FIELD})
    relay.db.collection(relay.settings.meta_collection).document("schema").delete()
    summary = relay.tick()
    assert summary["migrated"] == 1 and summary["changed"] == 1
    record = relay.store.get("batches/legacy")  # the stored document: the migration wrote the fields
    assert record["state"] == "JOB_STATE_RUNNING" and record["poll_slot"] == "1:0"
    assert relay.drain()[0]["data"]["job"]["tracked_by"] == "track"
    assert dt.datetime.now(dt.UTC) - record["changed_at"] < dt.timedelta(minutes=5)


def test_a_refused_digest_part_does_not_sink_the_other_parts_or_the_bookkeeping(relay, simulator, capsys):
    from batch_relay.log import configure

    configure()
    """Production refuses a part past 1 MiB or 40,000 index entries (``InvalidArgument``); the emulator
    never does, so a wrapper of the client refuses part 00 (the first written) as production would."""
    import asyncio
    import json

    from google.api_core import exceptions as gexc

    from batch_relay import wiring
    from tests.helpers import wrap_firestore, written_documents

    s = watching(relay)
    for i in range(6):
        simulator.add_job(vertex_spec(PROJECT, LOC, f"rf{i}", ["RUNNING"]))
    refused = digests.part_id(SCOPE, 0)

    def refuse(request):
        if any(path.endswith(f"/{refused}") for path in written_documents(request)):
            raise gexc.InvalidArgument("too many index entries for entity")

    db = wrap_firestore(wiring.make_firestore(s), on_commit=refuse)
    capsys.readouterr()
    summary = asyncio.run(wiring.run_tick(s, db, relay.publisher))
    assert summary["discovered"] == 6
    meta = relay.db.collection(s.meta_collection)
    written = [p for p in range(digests.PARTS) if meta.document(digests.part_id(SCOPE, p)).get().exists]
    assert written == list(range(1, digests.PARTS))  # every part of a first tick is written, but the refused one
    scope = relay.store.load_scope(SCOPE)
    assert scope is not None and scope.get("started_at") and scope.get("window_at")  # the bookkeeping too
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    refusals = [line for line in lines if line["message"].startswith("digest part not written")]
    assert len(refusals) == 1 and refusals[0]["severity"] == "ERROR" and refusals[0]["part"] == 0
    assert "InvalidArgument" in refusals[0]["error"]
    assert not any(line["message"] == "settling a listing failed" for line in lines)
    # the next tick, on a database that takes the part: written, and nothing published twice
    relay.drain()
    relay.tick(s)
    assert meta.document(refused).get().exists
    assert relay.drain() == []


def test_a_watched_job_left_out_of_a_full_digest_still_goes_back_to_get_when_unlisted(relay, simulator,
                                                                                      monkeypatch):
    monkeypatch.setattr(digests, "PART_MAX_BYTES", 0)  # every part full: no job gets an entry
    s = watching(relay)
    simulator.add_job(vertex_spec(PROJECT, LOC, "nx", ["RUNNING"]))
    start = dt.datetime.now(dt.UTC)
    relay.tick(s, now=lambda: start)
    assert relay.store.load(vname("nx")).watch_scope == SCOPE
    assert relay.store.load_digest(SCOPE).get("nx") is None
    relay.tick(s, now=lambda: start)  # listed, no entry: read, nothing written
    assert relay.store.load(vname("nx")).watch_scope == SCOPE
    simulator.delete(vname("nx"))
    later = start + dt.timedelta(seconds=digests.RECONCILE_S + 60)
    for _ in range(digests.PARTS):  # one part is reconciled per tick
        relay.tick(s, now=lambda: later)
        if relay.store.load(vname("nx")).watch_scope == "":
            break
    record = relay.store.load(vname("nx"))
    assert record.watch_scope == "" and record.poll_slot == "1:0"  # back to GET: a 404 can end in lost


def test_tombstones_are_read_in_batches_below_the_request_limit(relay):
    from batch_relay import wiring
    from batch_relay.record import limits
    from tests.helpers import wrap_firestore

    sizes = []
    db = wrap_firestore(wiring.make_firestore(relay.settings),
                        on_batch_get=lambda request: sizes.append(len(request["documents"])))
    names = [f"batches/tomb-{i}" for i in range(2 * limits.READ_BATCH + 7)]
    for name in names[::100]:
        relay.store.untrack(name)
    assert JobStore(db, relay.settings).tombstoned(names) == set(names[::100])
    assert sum(sizes) == len(names) and max(sizes) <= limits.READ_BATCH
