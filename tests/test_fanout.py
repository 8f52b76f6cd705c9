"""Fan-out (RELAY_TICK_FANOUT): the part plan as pure functions, and a fanned-out tick on the local stack
with four poll_jobs instances behind one URL, the parts pushed over Pub/Sub."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import json
import threading
import time

import httpx
import pytest

from batch_relay.batchapi.quota import share
from batch_relay.batchapi.scopes import WatchScope
from batch_relay.poller import fanout
from batch_relay.record.model import SHARDS
from batch_relay.settings import Settings
from devtools.simulator import SimulatorClient, gemini_spec, vertex_spec
from devtools.stack import PARTS_MAX_DELIVERY_ATTEMPTS, PARTS_RETRY_BACKOFF_S, LocalStack


def test_the_plan_covers_every_shard_once_and_deals_the_scopes():
    for count in (1, 2, 3, 4, 7, 64):
        parts = fanout.plan(count, 99)
        assert [p.index for p in parts] == list(range(count)) and parts[0].shard_lo == 0
        assert parts[-1].shard_hi == SHARDS and all(a.shard_hi == b.shard_lo for a, b in zip(parts, parts[1:]))
    s = Settings(project="p", watch=tuple(WatchScope.parse(x) for x in (
        "gemini", "vertex:projects/p/locations/a", "vertex:projects/p/locations/b")))
    dealt = [scope.id for part in fanout.plan(2, 1) for scope in part.scopes(s)]
    assert sorted(dealt) == sorted(scope.id for scope in s.watch) and len(dealt) == 3


@pytest.mark.parametrize(("body", "expected"), [
    (None, None), ({}, None),
    ({"shard_lo": 0, "shard_hi": 512}, fanout.Part(0, 1, 0, 512, None)),
    ({"part": 2, "parts": 4, "shard_lo": 512, "shard_hi": 768, "tick": 7}, fanout.Part(2, 4, 512, 768, 7)),
    ({"message": {"data": "eyJwYXJ0IjogMSwgInBhcnRzIjogMiwgInNoYXJkX2xvIjogNTEyLCAic2hhcmRfaGkiOiAxMDI0fQ=="}},
     fanout.Part(1, 2, 512, 1024, None)),
])
def test_bodies_poll_jobs_takes(body, expected):
    assert fanout.parse_body(body) == expected


@pytest.mark.parametrize("body", [[1], {"shard_lo": 5, "shard_hi": 5}, {"part": 4, "parts": 4},
                                  {"part": True}, {"shard_hi": 2048}, {"message": {"data": "!!"}}, {"tick": "x"}])
def test_bad_bodies_are_refused(body):
    with pytest.raises(ValueError):
        fanout.parse_body(body)


def test_the_parts_shares_of_the_vertex_quota_add_up_to_it():
    for per_minute in (1, 7, 63, 64, 600, 1000):
        for count in range(1, 65):
            shares = [share(per_minute, part.index, part.count) for part in fanout.plan(count, 1)]
            assert sum(shares) == per_minute and max(shares) - min(shares) <= 1, (per_minute, count, shares)
    with pytest.raises(ValueError):
        share(600, 4, 4)


def test_the_parts_of_a_fanned_out_tick_spend_one_vertex_quota_not_one_each(relay, simulator):
    """Four parts side by side over 40 due Vertex jobs of one region, with 8 calls a minute: 8 status
    calls in all (each part its share of 2; the rest is deferred), not 8 per part."""
    settings = dataclasses.replace(relay.settings, tick_fanout=4, vertex_region_qpm=8, tick_deadline_s=3)
    names = [f"projects/proj-q/locations/us-east1/batchPredictionJobs/q{i}" for i in range(40)]
    simulator.add_jobs([vertex_spec("proj-q", "us-east1", name.rsplit("/", 1)[1], ["RUNNING"]) for name in names])
    for name in names:
        relay.store.track(name)

    async def side_by_side():
        from batch_relay import wiring

        return await asyncio.gather(*(wiring.run_tick(settings, relay.db, relay.publisher, part=part)
                                      for part in fanout.plan(4, 1)))

    summaries = asyncio.run(side_by_side())
    calls = sum(simulator.stats()["per_job_gets"].values())
    assert calls == 8, [s["polled"] for s in summaries]
    assert sum(s["deferred"] for s in summaries) == len(names) - 8


@pytest.mark.slow
def test_the_coordinator_reads_only_the_heartbeats_of_parts_still_missing(relay, unique):
    """64 parts: 61 reported before the coordinator looks, one reports while it waits, one is lost (its
    heartbeat is an older tick's). The coordinator waits its whole window (at least 10 s) for the lost
    part; reading each missing part at growing intervals that costs a few reads beyond the first 63,
    where reading every part every 0.5 s cost 63 a read, over 1,260."""
    from batch_relay import wiring
    from batch_relay.batchapi.http import make_http_pool
    from batch_relay.poller.coordinator import coordinate
    from batch_relay.record import cadence
    from devtools.counting import CountingStore

    settings = dataclasses.replace(relay.settings, tick_fanout=64, tick_parts_topic=f"parts-{unique}")
    relay.publisher.create_topic(name=f"projects/{settings.project}/topics/{settings.tick_parts_topic}")
    now = dt.datetime.now(dt.UTC)
    tick = cadence.tick_number(now, settings)
    store = CountingStore(relay.db, settings)
    for i in range(1, 62):
        store.heartbeat({"polled": 1}, now, i, tick)
    store.heartbeat({"polled": 1}, now, 63, tick - 1)  # the lost part's heartbeat of the tick before
    late = threading.Timer(2.0, store.heartbeat, ({"polled": 1}, now, 62, tick))

    async def coordinator():
        async with make_http_pool(4, settings.request_timeout_s) as http:
            poller = wiring.make_poller(settings, relay.db, relay.publisher, http, now=lambda: now)
            store.reset()
            late.start()
            return await coordinate(settings, poller, relay.publisher, store)

    reply = asyncio.run(coordinator())
    late.join()
    assert reply["parts_published"] == 63 and reply["parts_reported"] == 62 and reply["polled"] == 62
    asked = store.part_reads
    assert store.meta_reads <= 2 * 63, (store.meta_reads, [len(a) for a in asked])
    assert asked[0] == list(range(1, 64))
    for before, after in zip(asked, asked[1:]):  # each read asks again only for what the one before missed
        assert set(after) <= set(before) - set(range(1, 62)) and 63 in after


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_fanned_out_tick_polls_every_job_exactly_once_over_four_instances(tmp_path):
    with LocalStack(project="batch-relay-fanout", tick_s=None, webhooks=False, pollers=4, log_dir=tmp_path,
                    extra_env={"RELAY_TICK_FANOUT": "4"}) as stack:
        sim = SimulatorClient(stack.url("simulator"))
        names = [f"batches/fan-{i:04d}" for i in range(240)]
        sim.add_jobs([gemini_spec(n, ["RUNNING", "SUCCEEDED"]) for n in names])
        with stack.environ():
            from google.cloud import pubsub_v1

            from batch_relay import wiring
            from batch_relay.record.store import JobStore
            from devtools.pubsub_drain import drain

            settings = stack.settings()
            db = wiring.make_firestore(settings)
            store = JobStore(db, settings)
            for name in names:
                store.track(name)
            reply = httpx.post(stack.url("poll_jobs") + "/", json={}, timeout=120).json()  # what Scheduler sends
            assert reply["parts"] == 4 and reply["parts_published"] == 3, reply
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(store.load(n).version == 1 for n in names):
                time.sleep(0.5)
            per_job = sim.stats()["per_job_gets"]
            assert all(per_job.get(n) == 1 for n in names), {n: per_job.get(n) for n in names if per_job.get(n) != 1}
            beats = [db.collection(settings.meta_collection).document(f"heartbeat-part-{i}").get().to_dict()
                     for i in range(1, 4)]
            assert all(b and b["tick"] == beats[0]["tick"] and b["part"] == i + 1 for i, b in enumerate(beats))
            own = db.collection(settings.meta_collection).document("heartbeat").get().to_dict()["summary"]
            assert own["parts"] == 4 and own["polled"] == reply["polled"]
            if reply["parts_reported"] == 3:  # the coordinator's reply adds up every part's
                others = sum(b["summary"]["polled"] for b in beats)
                assert reply["polled"] == len(names) and 0 < others < len(names)
            assert sum(1 for served in stack.balancer.served if served) >= 2  # the parts ran on several instances
            # a part delivered twice at once, while the jobs move on: still one event per version, in order
            part = fanout.plan(4, None)[2]
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                replies = list(pool.map(lambda _: httpx.post(stack.url("poll_jobs") + "/",
                                                             content=part.to_message(), timeout=120), range(2)))
            assert all(r.status_code == 200 for r in replies)
            subscriber = pubsub_v1.SubscriberClient()
            messages = drain(subscriber, stack.console_subscription, quiet_s=1.0)
            subscriber.close()
            by_job: dict[str, list[int]] = {}
            for m in messages:
                if m.attributes["ce-type"] == "batchrelay.job.v1.stateChanged":
                    by_job.setdefault(m.attributes["job"], []).append(json.loads(m.data)["version"])
            for name in names:
                versions = by_job[name]
                firsts = [v for i, v in enumerate(versions) if v not in versions[:i]]
                assert firsts == sorted(firsts) and firsts[0] == 1, (name, versions)
                assert store.load(name).version == len(firsts)
            db.close()


def test_the_local_parts_subscription_retries_as_terraforms_does():
    from pathlib import Path

    from devtools.hcl import load_terraform, one, resources

    sub = resources(load_terraform(Path(__file__).resolve().parents[1] / "infra"),
                    "google_pubsub_subscription")["tick_parts"]
    retry = one(sub, "retry_policy")
    assert (retry["minimum_backoff"], retry["maximum_backoff"]) == tuple(f"{s}s" for s in PARTS_RETRY_BACKOFF_S)
    assert one(sub, "dead_letter_policy")["max_delivery_attempts"] == PARTS_MAX_DELIVERY_ATTEMPTS


def _served(log_path) -> list[tuple[float, float]]:
    """(start, end) of each tick or part an instance logged, from its ``tick finished`` lines."""
    out = []
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("message") == "tick finished":
            end = dt.datetime.fromisoformat(entry["time"]).timestamp()
            out.append((end - float(entry["duration_s"]), end))
    return sorted(out)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_parts_beyond_the_instances_get_429_and_are_pushed_again(tmp_path):
    """Two poll_jobs instances serving one request at a time, as Cloud Run functions do, and a tick in
    three parts: the coordinator holds one instance and a part the other, so the third part is refused
    with 429 (this front end lets no request wait) and the parts subscription pushes it again, with
    backoff, until an instance is free. Every job is still fetched exactly once, nothing dead-lettered;
    and an instance asked twice at once directly serves one request after the other."""
    with LocalStack(project="batch-relay-capacity", tick_s=None, webhooks=False, pollers=2, pending_s=0,
                    log_dir=tmp_path, extra_env={"RELAY_TICK_FANOUT": "3"}) as stack:
        sim = SimulatorClient(stack.url("simulator"))
        sim.configure(latency_ms=20)
        names = [f"batches/cap-{i:04d}" for i in range(150)]
        sim.add_jobs([gemini_spec(n, ["RUNNING", "SUCCEEDED"]) for n in names])
        with stack.environ():
            from google.cloud import pubsub_v1

            from batch_relay import wiring
            from batch_relay.record.store import JobStore
            from devtools.pubsub_drain import drain

            settings = stack.settings()
            db = wiring.make_firestore(settings)
            store = JobStore(db, settings)
            for name in names:
                store.track(name)
            reply = httpx.post(stack.url("poll_jobs") + "/", json={}, timeout=120).json()
            assert reply["parts"] == 3 and reply["parts_published"] == 2, reply
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline and not all(store.load(n).version == 1 for n in names):
                time.sleep(1.0)
            per_job = sim.stats()["per_job_gets"]
            assert all(per_job.get(n) == 1 for n in names), {n: per_job.get(n) for n in names if per_job.get(n) != 1}
            balancer = stack.balancer
            assert balancer.peak == [1, 1]
            refused = [body for status, body in balancer.answers if status == 429]
            assert refused and all(json.loads(body)["part"] in (1, 2) for body in refused)
            assert all((200, body) in balancer.answers for body in refused)  # each refused part was served later
            subscriber = pubsub_v1.SubscriberClient()
            assert drain(subscriber, stack.parts_dead_letter_subscription, quiet_s=1.0) == []
            subscriber.close()
            # straight to one instance, two parts at once: the second starts when the first has ended
            one_instance = stack.services["poll_jobs#1"].url + "/"
            parts = fanout.plan(3, None)[1:]
            before = len(_served(tmp_path / "poll_jobs#1.log"))
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                replies = list(pool.map(lambda p: httpx.post(one_instance, content=p.to_message(), timeout=120),
                                        parts))
            assert all(r.status_code == 200 for r in replies)
            (a_start, a_end), (b_start, b_end) = _served(tmp_path / "poll_jobs#1.log")[before:]
            assert b_start >= a_end
            db.close()
