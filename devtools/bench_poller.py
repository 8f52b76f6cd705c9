"""Benchmark of one GET tick over N due jobs against the simulator (50 ms per status call), against the
same N GETs without the tick, in the same process, in the same run.

Each case seeds N Gemini jobs RUNNING and already known to their records (a tick over them changes
nothing: a deployment's steady state), runs one tick and a few plain GETs untimed (imports, channels,
the SSL context: a deployed instance has them), then, ``--repeats`` times, three runs one right after
the other, the order alternating (plain, pool, tick on odd repeats; tick, pool, plain on even ones):

- **tick**: ``wiring.make_poller(...).tick()`` with its own HTTP pool, as a deployment runs it (records
  read from the Firestore emulator, ``concurrency`` GETs at a time);
- **plain**: one ``httpx.AsyncClient`` with ``concurrency`` connections, ``concurrency`` tasks taking
  the same N names in order, each a ``GET`` with the API key header, ``raise_for_status`` and ``json()``;
- **pool**: the same GETs through the tick's own HTTP pool (``make_http_pool``), without the tick.

With a CPU share (``--cpu-share``, default ``$BENCH_CPU_SHARE`` or 512Mi: Cloud Run functions give 512 MiB
1/3 vCPU), each repeat also runs **tick @quota**: the same tick with this process under the CFS quota of
that share (``devtools/cpushare.py``; the emulators and the simulator stay outside it), and the report
gives it beside the whole-core tick: ``quota / whole``.

It prints each repeat's ``tick / plain`` and ``tick / pool`` and their medians (the machine is shared
and noisy: compare within a run), CPU per job, Firestore reads and writes, and two older figures: the
ratio to the bound N x latency / concurrency and the speed-up against a sequential loop that fetches
the jobs one at a time (extrapolated from ``--sample`` jobs). Speed goals live here, never in timed tests.

    python -m devtools.bench_poller                    # N=1000 @32 and N=10000 @64
    python -m devtools.bench_poller --cases 1000:32 --repeats 8
    python -m devtools.bench_poller --cases 1000:32 --profile   # the ticks' CPU (ratios then meaningless)
    python -m devtools.bench_poller --cases 10000:64 --repeats 1 --cpu-share 1   # whole cores vs 1 vCPU
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
import statistics
import time

import httpx

from batch_relay import wiring
from batch_relay.batchapi.fields import GEMINI_STATUS
from batch_relay.batchapi.http import make_http_pool
from batch_relay.batchapi.names import JobName
from batch_relay.record.model import JobRecord
from batch_relay.settings import Settings
from devtools import cpushare, emulators
from devtools.counting import CountingStore
from devtools.seeding import write_records
from devtools.simulator import SimulatorClient, gemini_spec

PROJECT = "bench"
FIELDS = {"fields": GEMINI_STATUS}  # the plain and pool GETs ask for what the tick asks for


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


async def plain_gets(settings: Settings, names: list[str]) -> int:
    """The same GETs with a plain ``httpx.AsyncClient``: one client, ``poll_concurrency`` connections and
    tasks. Returns how many succeeded."""
    concurrency = settings.poll_concurrency
    headers = {"x-goog-api-key": settings.gemini_api_key}
    base = f"{settings.gemini_base_url}/v1beta/"
    done = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=settings.request_timeout_s, limits=limits) as client:
        todo = iter(names)

        async def worker() -> None:
            nonlocal done
            for name in todo:
                response = await client.get(base + name, headers=headers, params=FIELDS)
                response.raise_for_status()
                response.json()
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def pool_gets(settings: Settings, names: list[str]) -> int:
    """The same GETs through the tick's own HTTP pool (``make_http_pool``: small pools behind one ``send``),
    each a ``GET`` with the API key header, ``raise_for_status`` and ``json()``: what the tick's HTTP costs
    without the tick. Returns how many succeeded."""
    headers = {"x-goog-api-key": settings.gemini_api_key}
    base = f"{settings.gemini_base_url}/v1beta/"
    done = 0
    async with make_http_pool(settings.poll_concurrency, settings.request_timeout_s) as http:
        todo = iter(names)

        async def worker() -> None:
            nonlocal done
            for name in todo:
                response = await http.send(http.build_request("GET", base + name, headers=headers, params=FIELDS))
                response.raise_for_status()
                response.json()
                done += 1

        await asyncio.gather(*(worker() for _ in range(settings.poll_concurrency)))
    return done


def count_writes(db, settings: Settings, since: dt.datetime) -> int:
    """Documents of the collection whose update time is after ``since``: what the ticks wrote."""
    return sum(1 for doc in db.collection(settings.collection).stream() if doc.update_time > since)


def sequential(settings: Settings, names: list[str]) -> float:
    """Today's loop: one ``batches.get`` after another. Returns seconds per job."""
    started = time.perf_counter()
    with httpx.Client(timeout=30) as http:
        for name in names:
            http.get(f"{settings.gemini_base_url}/v1beta/{name}",
                     headers={"x-goog-api-key": settings.gemini_api_key}).raise_for_status()
    return (time.perf_counter() - started) / len(names)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(run, profiler: cProfile.Profile | None = None):
    """(result, wall seconds, CPU seconds of this process) of ``asyncio.run(run())``."""
    cpu0, started = _cpu(), time.perf_counter()
    if profiler:
        profiler.enable()
    result = asyncio.run(run())
    if profiler:
        profiler.disable()
    return result, time.perf_counter() - started, _cpu() - cpu0


def run_case(n: int, concurrency: int, latency_ms: float, repeats: int, sample: int, profile: bool,
             services, quota: cpushare.Group | None = None) -> dict:
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
    since = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    profiler = cProfile.Profile() if profile else None
    timed(lambda: one_tick(settings, db, publisher))  # warm-up, untimed: imports, channels, the SSL context
    timed(lambda: plain_gets(settings, names[:concurrency]))
    rounds = []
    for r in range(repeats):
        order = ("plain", "pool", "tick") if r % 2 == 0 else ("tick", "pool", "plain")
        if quota is not None:
            order = (*order, "quota") if r % 2 == 0 else ("quota", *order)
        row: dict = {"order": order}
        for which in order:
            sim.reset_stats()
            if which == "tick":
                (summary, reads), seconds, cpu = timed(lambda: one_tick(settings, db, publisher), profiler)
                row.update(tick_s=seconds, tick_cpu_s=cpu, polled=summary["polled"], errors=summary["errors"],
                           reads=reads, tick_max_in_flight=sim.stats().get("max_in_flight"))
            elif which == "quota" and quota is not None:
                with quota.holding_self():
                    (summary, _), seconds, cpu = timed(lambda: one_tick(settings, db, publisher))
                row.update(quota_s=seconds, quota_cpu_s=cpu, quota_polled=summary["polled"],
                           quota_errors=summary["errors"])
            else:
                gets = plain_gets if which == "plain" else pool_gets
                ok, seconds, cpu = timed(lambda: gets(settings, names))  # noqa: B023 - called at once
                row.update({f"{which}_s": seconds, f"{which}_cpu_s": cpu, f"{which}_ok": ok})
        row["ratio"] = row["tick_s"] / row["plain_s"]
        row["ratio_pool"] = row["tick_s"] / row["pool_s"]
        rounds.append(row)
    writes = count_writes(db, settings, since)
    seq_per_job = sequential(settings, names[:min(sample, n)]) if sample else None
    bound = n * latency_ms / 1000.0 / concurrency
    tick_s = statistics.median(r["tick_s"] for r in rounds)
    result = {
        "n": n, "concurrency": concurrency, "latency_ms": latency_ms, "rounds": rounds,
        "ratio_median": statistics.median(r["ratio"] for r in rounds),
        "ratio_pool_median": statistics.median(r["ratio_pool"] for r in rounds),
        "tick_s": tick_s, "plain_s": statistics.median(r["plain_s"] for r in rounds),
        "pool_s": statistics.median(r["pool_s"] for r in rounds),
        "cpu_ms_per_job": 1000 * statistics.median(r["tick_cpu_s"] for r in rounds) / n,
        "plain_cpu_ms_per_job": 1000 * statistics.median(r["plain_cpu_s"] for r in rounds) / n,
        "pool_cpu_ms_per_job": 1000 * statistics.median(r["pool_cpu_s"] for r in rounds) / n,
        "firestore_reads": [r["reads"] for r in rounds], "firestore_writes_jobs": writes,
        "heartbeat_writes": repeats + 1, "bound_s": bound, "ratio_to_bound": tick_s / bound,
        "sequential_s": seq_per_job * n if seq_per_job else None, "sequential_measured_jobs": min(sample, n),
        "quota_s": statistics.median(r["quota_s"] for r in rounds) if quota is not None else None,
        "quota_vcpu": None,
    }
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        result["profile"] = out.getvalue()
    db.close()
    publisher.stop()
    return result


def report(r: dict) -> None:
    print(f"N={r['n']:>6} concurrency={r['concurrency']:>3} latency={r['latency_ms']:.0f}ms, "
          f"{len(r['rounds'])} repeats (order alternating):")
    for i, row in enumerate(r["rounds"], 1):
        print(f"    {i}. {' > '.join(row['order'])}: tick {row['tick_s']:.2f}s (CPU {row['tick_cpu_s']:.2f}s, "
              f"polled {row['polled']}, errors {row['errors']}, reads {row['reads']}, "
              f"max in flight {row['tick_max_in_flight']}), plain {row['plain_s']:.2f}s "
              f"(CPU {row['plain_cpu_s']:.2f}s, {row['plain_ok']} ok), pool {row['pool_s']:.2f}s "
              f"(CPU {row['pool_cpu_s']:.2f}s, {row['pool_ok']} ok): "
              f"tick/plain {row['ratio']:.3f}, tick/pool {row['ratio_pool']:.3f}")
    if r["quota_s"] is not None:
        runs = ", ".join(f"{row['quota_s']:.2f}s (CPU {row['quota_cpu_s']:.2f}s, polled {row['quota_polled']}, "
                         f"errors {row['quota_errors']})" for row in r["rounds"])
        print(f"    tick @{r['quota_vcpu']:.3g} vCPU: {runs}; median {r['quota_s']:.2f}s against {r['tick_s']:.2f}s on "
              f"whole cores: quota / whole {r['quota_s'] / r['tick_s']:.2f}x, {r['n'] / r['quota_s']:.0f} jobs/s "
              f"at {r['quota_vcpu']:.3g} vCPU")
    ratios = ", ".join(f"{row['ratio']:.2f}" for row in r["rounds"])
    print(f"    tick / plain: {ratios}; median {r['ratio_median']:.3f}x")
    ratios = ", ".join(f"{row['ratio_pool']:.2f}" for row in r["rounds"])
    print(f"    tick / pool:  {ratios}; median {r['ratio_pool_median']:.3f}x")
    print(f"    median tick {r['tick_s']:.2f}s ({r['n'] / r['tick_s']:.0f} jobs/s, "
          f"CPU {r['cpu_ms_per_job']:.2f} ms/job), plain {r['plain_s']:.2f}s (CPU {r['plain_cpu_ms_per_job']:.2f} "
          f"ms/job), pool {r['pool_s']:.2f}s (CPU {r['pool_cpu_ms_per_job']:.2f} ms/job); Firestore writes over "
          f"all ticks (warm-up too): {r['firestore_writes_jobs']} job records + {r['heartbeat_writes']} heartbeats")
    line = f"    vs bound N*latency/concurrency ({r['bound_s']:.2f}s): tick {r['ratio_to_bound']:.2f}x"
    line += f", plain {r['plain_s'] / r['bound_s']:.2f}x, pool {r['pool_s'] / r['bound_s']:.2f}x"
    if r["sequential_s"]:
        line += (f";  vs sequential loop ({r['sequential_s']:.1f}s, from {r['sequential_measured_jobs']} jobs): "
                 f"tick {r['sequential_s'] / r['tick_s']:.1f}x faster")
    print(line, flush=True)
    if "profile" in r:
        print(r["profile"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="1000:32,10000:64", help="N:concurrency,...")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--repeats", type=int, default=3, help="tick, pool and plain runs per case")
    parser.add_argument("--sample", type=int, default=200, help="jobs timed in the sequential loop (0: none)")
    parser.add_argument("--profile", action="store_true", help="print where the ticks' CPU goes")
    cpushare.add_argument(parser)
    args = parser.parse_args(argv)
    shares = cpushare.shares_to_measure(args.cpu_share)
    share = cpushare.CpuShare.for_memory(shares[-1]) if len(shares) > 1 else None
    firestore, pubsub = emulators.start_firestore(), emulators.start_pubsub()
    simulator = emulators.start_simulator()
    try:
        os.environ["PUBSUB_EMULATOR_HOST"] = pubsub.host
        publisher = wiring.make_publisher(Settings.from_env({"GOOGLE_CLOUD_PROJECT": PROJECT}))
        publisher.create_topic(name=f"projects/{PROJECT}/topics/bench-events")
        for case in args.cases.split(","):
            n, concurrency = (int(x) for x in case.split(":"))
            result = run_case(n, concurrency, args.latency_ms, args.repeats, args.sample, args.profile,
                              (firestore, pubsub, simulator), share.group(f"poller-{n}") if share else None)
            result["quota_vcpu"] = share.vcpu if share else None
            report(result)
    finally:
        if share is not None:
            share.close()
        for service in (simulator, pubsub, firestore):
            service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
