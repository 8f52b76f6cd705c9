"""Benchmark: a watched scope's steady tick against today's per-job GET tick, side by side in one run.

For N RUNNING Vertex jobs in one location (50 ms per API call, as for the GET benchmark):

- **GET tick**: the jobs tracked and polled one GET each (the Vertex quota lifted so that every job is
  polled; under the real 600 per minute only 600 would be);
- **watch tick**: the same jobs in a scope of ``RELAY_WATCH``, after two warm-up ticks (the first
  discovers them, the second fills the digest in), so what is timed is the steady state.

Prints, per N: API requests per tick, list pages, tick seconds, the bound (list pages x latency + the
Firestore time of the tick: digest, scope bookkeeping, query, heartbeat), record reads and writes, and
the ratios: requests against N/100 + 2, tick against the bound, GET tick against watch tick.

With a CPU share (``--cpu-share``, default ``$BENCH_CPU_SHARE`` or 512Mi, i.e. 1/3 vCPU), each steady
tick is run once more right after, with this process under that share's CFS quota (``devtools/cpushare.py``;
the emulators and the simulator outside it), and printed beside the whole-core one.

    python -m devtools.bench_watch                  # N = 1000 and 10000
    python -m devtools.bench_watch --cases 1000 --page-max 100
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import time

from batch_relay import wiring
from batch_relay.batchapi.http import make_http_pool
from batch_relay.batchapi.names import JobName
from batch_relay.batchapi.scopes import WatchScope
from batch_relay.record.model import JobRecord
from batch_relay.record.store import JobStore
from batch_relay.settings import Settings
from devtools import cpushare, emulators
from devtools.counting import CountingStore
from devtools.seeding import write_records
from devtools.simulator import SimulatorClient, vertex_spec

PROJECT = "bench-watch"
VERTEX_PROJECT = "proj-bench"
LOCATION = "us-central1"


async def tick(settings: Settings, db, publisher, store: JobStore | None = None) -> dict:
    async with make_http_pool(settings.poll_concurrency, settings.request_timeout_s) as http:
        poller = wiring.make_poller(settings, db, publisher, http, store=store)
        return (await poller.tick()).as_dict()


def writes_since(db, collection: str, since: dt.datetime) -> int:
    return sum(1 for doc in db.collection(collection).stream() if doc.update_time > since)


def firestore_time(settings: Settings, db, scope: WatchScope) -> float:
    """What the watch tick asks of Firestore, timed alone, one after the other: the digest, the scope's
    bookkeeping, the GET path's (empty) query, the outbox and sweep queries, the scopes, the heartbeat."""
    store = JobStore(db, settings)
    started = time.perf_counter()
    store.load_digest(scope.id)
    store.load_scope(scope.id)
    list(store.due())
    list(store.unpublished())
    store.fail_stuck_copies(dt.datetime.now(dt.UTC))
    store.known_scopes()
    store.heartbeat({}, dt.datetime.now(dt.UTC))
    return time.perf_counter() - started


def quota_tick(quota: cpushare.Group | None, settings: Settings, db, publisher) -> dict | None:
    """The same steady tick again, this process under the quota; None without one."""
    if quota is None:
        return None
    with quota.holding_self():
        started = time.perf_counter()
        summary = asyncio.run(tick(settings, db, publisher))
        return {"tick_s": round(time.perf_counter() - started, 3), "errors": summary["errors"]}


def run_case(n: int, latency_ms: float, page_max: int, concurrency: int, services,
             quota: cpushare.Group | None = None) -> dict:
    firestore, pubsub, simulator = services
    sim = SimulatorClient(simulator.url)
    sim.reset()
    sim.configure(latency_ms=latency_ms, list_page_max={"vertex": page_max})
    names = [f"projects/{VERTEX_PROJECT}/locations/{LOCATION}/batchPredictionJobs/{i:08d}" for i in range(n)]
    specs = [vertex_spec(VERTEX_PROJECT, LOCATION, f"{i:08d}",
                         [{"state": "RUNNING", "stats": {"successful": 1, "failed": 0, "incomplete": 9}}])
             for i in range(n)]
    for i in range(0, n, 5000):
        sim.add_jobs(specs[i:i + 5000])
    stamp = int(time.time())
    base = {"GOOGLE_CLOUD_PROJECT": PROJECT, "FIRESTORE_EMULATOR_HOST": firestore.host,
            "PUBSUB_EMULATOR_HOST": pubsub.host, "RELAY_EVENTS_TOPIC": "bench-events",
            "RELAY_VERTEX_BASE_URL": simulator.url, "RELAY_GEMINI_BASE_URL": simulator.url,
            "RELAY_POLL_CONCURRENCY": str(concurrency), "RELAY_TICK_DEADLINE_S": "600",
            "RELAY_VERTEX_REGION_QPM": "1000000",
            "RELAY_MAX_POLL_INTERVAL_S": "0"}  # the GET tick compared: every job due, as at every tick
    os.environ.update({k: v for k, v in base.items() if k.endswith("_HOST")})
    scope = WatchScope.parse(f"vertex:projects/{VERTEX_PROJECT}/locations/{LOCATION}")
    watch_settings = Settings.from_env({**base, "RELAY_COLLECTION": f"watch_{n}_{stamp}",
                                        "RELAY_WATCH": scope.id, "RELAY_VERTEX_REGION_QPM": "600"})
    get_settings = Settings.from_env({**base, "RELAY_COLLECTION": f"get_{n}_{stamp}"})
    db, publisher = wiring.make_firestore(watch_settings), wiring.make_publisher(watch_settings)
    out: dict = {"n": n, "latency_ms": latency_ms, "page_max": page_max, "concurrency": concurrency}

    # -- the GET tick: records known (first tick), then a steady tick timed ---------------------------------
    now = dt.datetime.now(dt.UTC)  # the records track() would write, in bulk
    write_records(db, get_settings, (JobRecord.new(JobName.parse(name), destination=None, labels={}, now=now)
                                     for name in names))
    asyncio.run(tick(get_settings, db, publisher))  # version 1 for every job
    sim.reset_stats()
    since = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    started = time.perf_counter()
    summary = asyncio.run(tick(get_settings, db, publisher))
    out["get"] = {"tick_s": round(time.perf_counter() - started, 3), "requests": sim.stats()["requests"],
                  "polled": summary["polled"], "writes": writes_since(db, get_settings.collection, since)}
    out["get"]["quota"] = quota_tick(quota, get_settings, db, publisher)

    # -- the watch tick: discover, fill the digest in, then a steady tick timed ---------------------------
    asyncio.run(tick(watch_settings, db, publisher))
    asyncio.run(tick(watch_settings, db, publisher))
    sim.reset_stats()
    store = CountingStore(db, watch_settings)
    since = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    started = time.perf_counter()
    summary = asyncio.run(tick(watch_settings, db, publisher, store))
    seconds = time.perf_counter() - started
    stats = sim.stats()
    pages = stats["list_pages"].get("vertex", 0)
    fs_s = min(firestore_time(watch_settings, db, scope) for _ in range(3))
    bound = pages * latency_ms / 1000.0 + fs_s
    out["watch"] = {"tick_s": round(seconds, 3), "requests": stats["requests"], "list_pages": pages,
                    "status_gets": stats["status_gets"], "listed": summary["listed"],
                    "changed": summary["changed"], "updated": summary["updated"], "errors": summary["errors"],
                    "record_reads": store.record_reads, "meta_reads": store.meta_reads,
                    "record_writes": writes_since(db, watch_settings.collection, since),
                    "firestore_s": round(fs_s, 3), "bound_s": round(bound, 3)}
    # under the quota only now: its writes and reads are not the timed tick's
    out["watch"]["quota"] = quota_tick(quota, watch_settings, db, publisher)
    out["ratios"] = {
        "requests_vs_allowed": round(stats["requests"] / (n / 100 + 2), 3),
        "tick_vs_bound": round(seconds / bound, 2),
        "get_tick_vs_watch_tick": round(out["get"]["tick_s"] / seconds, 1),
        "quota_minutes_per_tick": round(stats["requests"] / 600, 3),
        "get_jobs_polled_under_quota": min(n, 600),
    }
    db.close()
    publisher.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="1000,10000", help="N,...")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--page-max", type=int, default=1000, help="the simulator's largest Vertex page")
    parser.add_argument("--concurrency", type=int, default=64, help="RELAY_POLL_CONCURRENCY of the GET tick")
    cpushare.add_argument(parser)
    args = parser.parse_args(argv)
    shares = cpushare.shares_to_measure(args.cpu_share)
    share = cpushare.CpuShare.for_memory(shares[-1]) if len(shares) > 1 else None
    services = (emulators.start_firestore(), emulators.start_pubsub(), emulators.start_simulator())
    try:
        os.environ["PUBSUB_EMULATOR_HOST"] = services[1].host
        publisher = wiring.make_publisher(Settings.from_env({"GOOGLE_CLOUD_PROJECT": PROJECT}))
        publisher.create_topic(name=f"projects/{PROJECT}/topics/bench-events")
        for case in args.cases.split(","):
            r = run_case(int(case), args.latency_ms, args.page_max, args.concurrency, services,
                         share.group(f"watch-{case}") if share else None)
            g, w, q = r["get"], r["watch"], r["ratios"]
            print(f"N={r['n']:>6} Vertex jobs, one watched location, {r['latency_ms']:.0f} ms per call, "
                  f"pages of at most {r['page_max']}:")
            print(f"    GET tick   @{r['concurrency']}: {g['tick_s']:.2f}s, {g['requests']} requests, "
                  f"{g['writes']} record writes")
            print(f"    watch tick: {w['tick_s']:.2f}s, {w['requests']} requests ({w['list_pages']} list pages, "
                  f"{w['status_gets']} GETs), {w['record_reads']} record reads + {w['meta_reads']} digest/"
                  f"bookkeeping reads, {w['record_writes']} record writes, errors {w['errors']}")
            print(f"    requests / (N/100 + 2) = {q['requests_vs_allowed']:.3f} (goal <= 1);  tick / bound "
                  f"({w['list_pages']} x {r['latency_ms']:.0f} ms + Firestore {w['firestore_s']:.2f}s = "
                  f"{w['bound_s']:.2f}s) = {q['tick_vs_bound']:.2f} (goal <= 1.5);  GET tick / watch tick = "
                  f"{q['get_tick_vs_watch_tick']:.1f}x (goal >= 10 at N=10000)")
            print(f"    quota: the watch tick spends {w['requests']} of the region's 600 per minute "
                  f"({q['quota_minutes_per_tick']:.3f} min); a GET tick polls {q['get_jobs_polled_under_quota']} "
                  f"jobs a minute under it")
            if share is not None and g["quota"] and w["quota"]:
                print(f"    at {share.vcpu:.3g} vCPU (CFS quota, this process): GET tick {g['quota']['tick_s']:.2f}s "
                      f"(whole cores {g['tick_s']:.2f}s, {g['quota']['tick_s'] / g['tick_s']:.2f}x, errors "
                      f"{g['quota']['errors']}), watch tick {w['quota']['tick_s']:.2f}s (whole cores "
                      f"{w['tick_s']:.2f}s, "
                      f"{w['quota']['tick_s'] / w['tick_s']:.2f}x, errors {w['quota']['errors']})", flush=True)
    finally:
        if share is not None:
            share.close()
        for service in reversed(services):
            service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
