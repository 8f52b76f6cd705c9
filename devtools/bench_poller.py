"""Benchmark of one poll tick over N due jobs against the simulator (50 ms per status call).

Prints tick seconds, jobs/s, Firestore reads and writes, and two ratios: against a sequential loop that
fetches the same jobs one at a time (what users run today; extrapolated from a sample when N is large),
and against the bound N x latency / concurrency. Speed goals live here, never in timed tests.

    python -m devtools.bench_poller                    # N=1000 @32 and N=10000 @64
    python -m devtools.bench_poller --cases 1000:32 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import io
import os
import pstats
import resource
import time

import httpx

from batch_relay import wiring
from batch_relay.batchapi.http import make_http_pool
from batch_relay.batchapi.names import JobName
from batch_relay.record.model import JobRecord
from batch_relay.settings import Settings
from devtools import emulators
from devtools.counting import CountingStore
from devtools.seeding import write_records
from devtools.simulator import SimulatorClient, gemini_spec

PROJECT = "bench"


def seed(db, settings: Settings, sim: SimulatorClient, n: int) -> list[str]:
    """N Gemini jobs RUNNING in the simulator, and records that already know it (version 1): a tick
    over them changes nothing, which is the steady state of a real deployment."""
    names = [f"batches/bench-{i:06d}" for i in range(n)]
    specs = [gemini_spec(name, [{"state": "RUNNING", "stats": {"successful": 1, "failed": 0, "incomplete": 9}}])
             for name in names]
    for i in range(0, n, 5000):
        sim.add_jobs(specs[i:i + 5000])
    now = dt.datetime.now(dt.UTC)
    write_records(db, settings, (
        JobRecord.new(JobName.parse(name), destination=None, labels={}, now=now).replace(
            state="JOB_STATE_RUNNING", version=1, published_version=1, polled_at=now, changed_at=now,
            completion_stats={"successful": 1, "failed": 0, "incomplete": 9})
        for name in names))
    return names


async def one_tick(settings: Settings, db, publisher) -> tuple[dict, int]:
    async with make_http_pool(settings.poll_concurrency, settings.request_timeout_s) as http:
        store = CountingStore(db, settings)
        summary = await wiring.make_poller(settings, db, publisher, http, store=store).tick()
    return summary.as_dict(), store.record_reads


def count_writes(db, settings: Settings, since: dt.datetime) -> int:
    """Documents of the collection whose update time is after ``since``: what the tick wrote."""
    return sum(1 for doc in db.collection(settings.collection).stream() if doc.update_time > since)


def sequential(settings: Settings, names: list[str]) -> float:
    """Today's loop: one ``batches.get`` after another. Returns seconds per job."""
    started = time.perf_counter()
    with httpx.Client(timeout=30) as http:
        for name in names:
            http.get(f"{settings.gemini_base_url}/v1beta/{name}",
                     headers={"x-goog-api-key": settings.gemini_api_key}).raise_for_status()
    return (time.perf_counter() - started) / len(names)


def run_case(n: int, concurrency: int, latency_ms: float, sample: int, profile: bool, services) -> dict:
    firestore, pubsub, simulator = services
    collection = f"bench_{n}_{concurrency}_{int(time.time())}"
    env = {"GOOGLE_CLOUD_PROJECT": PROJECT, "FIRESTORE_EMULATOR_HOST": firestore.host,
           "PUBSUB_EMULATOR_HOST": pubsub.host, "RELAY_COLLECTION": collection,
           "RELAY_EVENTS_TOPIC": "bench-events", "RELAY_GEMINI_API_KEY": "bench-key",
           "RELAY_GEMINI_BASE_URL": simulator.url, "RELAY_VERTEX_BASE_URL": simulator.url,
           "RELAY_POLL_CONCURRENCY": str(concurrency), "RELAY_TICK_DEADLINE_S": "600",
           "RELAY_MAX_POLL_INTERVAL_S": "0"}  # every seeded job due: the tick measured is a full one
    os.environ.update({k: v for k, v in env.items() if k.endswith("_HOST")})
    settings = Settings.from_env(env)
    db, publisher = wiring.make_firestore(settings), wiring.make_publisher(settings)
    sim = SimulatorClient(simulator.url)
    sim.reset()
    sim.configure(latency_ms=latency_ms)
    names = seed(db, settings, sim, n)
    sim.reset_stats()
    since = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    summary, reads = asyncio.run(one_tick(settings, db, publisher))
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    writes = count_writes(db, settings, since)
    stats = sim.stats()
    seq_per_job = sequential(settings, names[:min(sample, n)])
    bound = n * latency_ms / 1000.0 / concurrency
    result = {
        "n": n, "concurrency": concurrency, "latency_ms": latency_ms, "tick_s": round(seconds, 3),
        "jobs_per_s": round(n / seconds, 1), "polled": summary["polled"], "errors": summary["errors"],
        "firestore_reads": reads, "firestore_writes_jobs": writes, "heartbeat_writes": 1,
        "status_requests": stats.get("status_gets"), "max_in_flight": stats.get("max_in_flight"),
        "tick_cpu_s": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 3),
        "cpu_ms_per_job": round(1000 * ((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)) / n, 3),
        "sequential_s": round(seq_per_job * n, 1),
        "sequential_measured_jobs": min(sample, n),
        "speedup_vs_sequential": round(seq_per_job * n / seconds, 1),
        "bound_s": round(bound, 3), "ratio_to_bound": round(seconds / bound, 3),
    }
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        result["profile"] = out.getvalue()
    db.close()
    publisher.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="1000:32,10000:64", help="N:concurrency,...")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--sample", type=int, default=200, help="jobs timed in the sequential loop")
    parser.add_argument("--profile", action="store_true", help="print where the tick's CPU goes")
    args = parser.parse_args(argv)
    firestore, pubsub = emulators.start_firestore(), emulators.start_pubsub()
    simulator = emulators.start_simulator()
    try:
        os.environ["PUBSUB_EMULATOR_HOST"] = pubsub.host
        publisher = wiring.make_publisher(Settings.from_env({"GOOGLE_CLOUD_PROJECT": PROJECT}))
        publisher.create_topic(name=f"projects/{PROJECT}/topics/bench-events")
        for case in args.cases.split(","):
            n, concurrency = (int(x) for x in case.split(":"))
            r = run_case(n, concurrency, args.latency_ms, args.sample, args.profile, (firestore, pubsub, simulator))
            print(f"N={r['n']:>6} concurrency={r['concurrency']:>3} latency={r['latency_ms']:.0f}ms: "
                  f"tick {r['tick_s']:.2f}s, {r['jobs_per_s']:.0f} jobs/s, "
                  f"Firestore reads {r['firestore_reads']}, writes {r['firestore_writes_jobs']} job records "
                  f"+ {r['heartbeat_writes']} heartbeat, CPU {r['cpu_ms_per_job']:.2f} ms/job, "
                  f"max in flight {r['max_in_flight']}")
            print(f"    vs sequential loop ({r['sequential_s']:.1f}s, from {r['sequential_measured_jobs']} jobs): "
                  f"{r['speedup_vs_sequential']:.1f}x faster;  vs bound N*latency/concurrency "
                  f"({r['bound_s']:.2f}s): {r['ratio_to_bound']:.2f}x")
            if "profile" in r:
                print(r["profile"])
    finally:
        for service in (simulator, pubsub, firestore):
            service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
