"""The due query's fast decoding (record/fast_stream.py) gives the records ``Query.stream()`` gives, and
the due query pages through every due record once."""

from __future__ import annotations

import datetime as dt

from devtools.simulator import gemini_spec


def _query(relay):
    return relay.store._jobs.order_by("shard")


def test_records_decoded_from_the_protobuf_equal_those_of_stream(relay, simulator):
    from google.cloud.firestore_v1 import GeoPoint
    from google.cloud.firestore_v1.vector import Vector

    from batch_relay.record.base import snap_of
    from batch_relay.record.fast_stream import stream_snapshots

    for i, state in enumerate(["RUNNING", "SUCCEEDED", "FAILED"]):
        name = f"batches/fast-{i}"
        simulator.add_job(gemini_spec(name, [state]))
        relay.store.track(name, labels={"team": "a", "n": str(i)}, destination="gs://bucket/p")
    relay.tick()  # records with state, counts, outbox and transitions, errors, timestamps
    # every kind of value Firestore stores, some a record never holds, in nested maps and arrays
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    relay.store.ref("batches/fast-odd").set({
        "name": "batches/fast-odd", "api": "gemini", "shard": 7, "version": 3, "terminal": False,
        "completion_stats": {"successful": 2**40, "failed": 0, "incomplete": None},
        "output": {"list": [1, 2.5, "x", None, True, {"deep": [b"\x00\xff"]}], "at": at},
        "error": {"code": 3, "message": "é ☃"}, "labels": {},
        "outbox": {"1": {"where": GeoPoint(1.5, -2.25), "v": Vector([1.0, 2.0])}},
        "polled_at": dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "poll_slot": "1:0", "extra": [],
    })
    slow = [snap_of(doc) for doc in _query(relay).stream()]
    fast = list(stream_snapshots(_query(relay)))
    assert len(fast) == 4
    assert fast == slow
    assert repr(fast) == repr(slow)  # the same types too (a DatetimeWithNanoseconds equals a datetime)
    assert fast[0].record.copy == slow[0].record.copy


def test_the_due_query_pages_through_every_due_record_once(relay):
    from batch_relay.batchapi.names import JobName
    from batch_relay.record.model import JobRecord
    from devtools.seeding import write_records

    now = dt.datetime.now(dt.UTC)
    names = [f"batches/page-{i:03d}" for i in range(400)]  # pages of 64, 256, then 1,000: three pages
    write_records(relay.db, relay.settings, (
        JobRecord.new(JobName.parse(n), destination=None, labels={}, now=now).replace(state="JOB_STATE_RUNNING")
        for n in names))
    for start in (0, 300, 1023):
        ids = [snap.id for snap in relay.store.due(start=start)]
        assert len(ids) == len(set(ids)) == 400
        assert sorted(snap.name for snap in relay.store.due(start=start)) == names
    by_shard = sorted((snap.record.shard, snap.id) for snap in relay.store.due())
    assert [snap.id for snap in relay.store.due()] == [i for _, i in by_shard]  # start 0: in shard order
