"""``make cost``: what a day of batch-relay costs, for 1,000, 10,000 and 100,000 jobs, today's design and
this one side by side.

**Measured** on the local stack (Firestore and Pub/Sub emulators, the batch-API simulator), with an
instrumented store counting every document read and written and the simulator counting API requests:
a population of ``--jobs`` jobs run through ``--minutes`` ticks one minute apart (a virtual clock), each
job changing state once in that window (four times a day, scaled), in three set-ups:

- ``today``: every job on the GET path, fetched every tick (``RELAY_MAX_POLL_INTERVAL_S`` at or below the
  tick: the previous version's behaviour);
- ``cadence``: the GET path with ``RELAY_MAX_POLL_INTERVAL_S`` (300 s by default);
- ``watched``: Vertex AI jobs in one watched scope (listed, with its digest).

**Modelled**: the per-job-day figures of those runs, scaled to each population with the mix below
(``--watched``, ``--gemini`` shares; the rest Vertex jobs on the GET path), plus what a day adds that does
not depend on the jobs (1,440 ticks, their heartbeats and queries; a scope's digest reads per tick), and
dollars from the list prices given as parameters. Webhooks (``--webhooks``) add one invocation and one
GET per Gemini batch ending and take no poll away from running batches; they change latency (see
``devtools/bench_webhook.py``), not the daily counts, by more than that.

    python -m devtools.cost                       # 100 jobs over 360 minutes, default prices
    python -m devtools.cost --jobs 200 --minutes 240 --max-interval-s 600
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import random
import time

from batch_relay import wiring
from batch_relay.batchapi.http import make_http_pool
from batch_relay.settings import Settings
from devtools import emulators
from devtools.counting import CountingStore
from devtools.simulator import SimulatorClient, gemini_spec, vertex_spec

PROJECT = "cost-report"
VPROJECT = "proj-cost"
LOCATION = "us-central1"
T0 = dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC)


def run(kind: str, services, jobs: int, minutes: int, max_interval_s: float, seed: int) -> dict:
    """One measured set-up: ``jobs`` jobs through ``minutes`` one-minute ticks, each changing state once."""
    firestore, pubsub, simulator = services
    sim = SimulatorClient(simulator.url)
    sim.reset()
    rng = random.Random(seed)
    env = {"GOOGLE_CLOUD_PROJECT": PROJECT, "FIRESTORE_EMULATOR_HOST": firestore.host,
           "PUBSUB_EMULATOR_HOST": pubsub.host, "RELAY_COLLECTION": f"cost_{kind}_{int(time.time() * 1000)}",
           "RELAY_EVENTS_TOPIC": "cost-events", "RELAY_GEMINI_API_KEY": "k", "RELAY_GEMINI_BASE_URL": simulator.url,
           "RELAY_VERTEX_BASE_URL": simulator.url, "RELAY_TICK_INTERVAL_S": "60",
           "RELAY_MAX_POLL_INTERVAL_S": "0" if kind == "today" else str(max_interval_s),
           "RELAY_STALL_AFTER_S": "0"}
    if kind == "watched":
        env["RELAY_WATCH"] = f"vertex:projects/{VPROJECT}/locations/{LOCATION}"
    settings = Settings.from_env(env)
    db, publisher = wiring.make_firestore(settings), wiring.make_publisher(settings)
    store = CountingStore(db, settings)
    if kind == "watched":
        names = [f"projects/{VPROJECT}/locations/{LOCATION}/batchPredictionJobs/c{i:05d}" for i in range(jobs)]
        sim.add_jobs([vertex_spec(VPROJECT, LOCATION, f"c{i:05d}", ["QUEUED"]) for i in range(jobs)])
    else:
        names = [f"batches/cost-{i:05d}" for i in range(jobs)]
        sim.add_jobs([gemini_spec(n, ["PENDING"]) for n in names])
        for name in names:
            store.track(name)
    # each change early enough for its next poll to fall inside the window (the longest interval)
    last = max(3, minutes - int(max_interval_s // 60) - 1)
    change_at = {name: rng.randrange(2, last) for name in names}
    import asyncio

    async def tick(k: int) -> dict:
        when = T0 + dt.timedelta(minutes=k)
        async with make_http_pool(settings.poll_concurrency, settings.request_timeout_s) as http:
            poller = wiring.make_poller(settings, db, publisher, http, store=store, now=lambda: when)
            return (await poller.tick()).as_dict()

    asyncio.run(tick(0))  # warm-up (not counted): records created or first seen
    asyncio.run(tick(1))
    sim.reset_stats()
    store.reset()
    events = 0
    for k in range(2, minutes + 2):
        for name, at in change_at.items():
            if at == k:
                sim.set_state(name, "RUNNING")
        summary = asyncio.run(tick(k))
        events += summary["changed"]
    stats = sim.stats()
    seen = sum(1 for name in names if store.get(name)["state"] == "JOB_STATE_RUNNING")
    db.close()
    publisher.stop()
    return {"kind": kind, "jobs": jobs, "ticks": minutes, "changes_seen": seen, "reads": store.reads,
            "empty_queries": store.empty,
            "writes": store.writes, "api": stats["requests"], "events": events}


def per_job_day(m: dict, fixed: dict) -> dict:
    """What one job adds to a day: the run's counts less what its ticks cost with no job at all (documents
    only: the queries that return nothing are the tick's cost, see ``per_tick``)."""
    ticks, jobs = m["ticks"], m["jobs"]
    scale = 1440 / ticks / jobs
    return {key: round(max(m[key] - fixed[key] * ticks / fixed["ticks"], 0) * scale, 1)
            for key in ("reads", "writes", "api", "events")}


def per_tick_of(fixed: dict, key: str) -> float:
    """What a tick costs with no job at all; its reads include every query that returned nothing (an
    upper bound: with jobs, some of those queries return documents, counted per job)."""
    return (fixed[key] + (fixed["empty_queries"] if key == "reads" else 0)) / fixed["ticks"]


@dataclasses.dataclass(frozen=True)
class Prices:
    read_per_100k: float
    write_per_100k: float
    pubsub_per_tib: float
    event_kib: float
    invocation_per_million: float

    def dollars(self, reads: float, writes: float, messages: float, invocations: float) -> float:
        return (reads / 1e5 * self.read_per_100k + writes / 1e5 * self.write_per_100k
                + messages * max(self.event_kib, 1.0) / 2 ** 30 * self.pubsub_per_tib
                + invocations / 1e6 * self.invocation_per_million)


def model(per: dict[str, dict], fixed: dict[str, dict], population: int, watched: float, gemini: float,
          scopes: int, webhooks: bool) -> dict:
    """A day at ``population`` jobs: today's design (every job fetched every tick) against this one (the
    mix). Per job: the measured per-job-day figures; per tick: the measured cost of a tick with no job
    (and, per watched scope, what a scope adds to it: its bookkeeping, its digest, its list call)."""
    get_jobs, watched_jobs = population * (1 - watched), population * watched
    day = {design: {} for design in ("today", "new")}
    per_tick = {k: per_tick_of(fixed["cadence"], k) for k in ("reads", "writes", "api")}
    per_scope = {k: max(per_tick_of(fixed["watched"], k) - per_tick[k], 0) for k in ("reads", "writes", "api")}
    today_tick = {k: per_tick_of(fixed["today"], k) for k in ("reads", "writes", "api")}
    for key in ("reads", "writes", "api"):
        day["today"][key] = population * per["today"][key] + 1440 * today_tick[key]
        day["new"][key] = (get_jobs * per["cadence"][key] + watched_jobs * per["watched"][key]
                           + 1440 * (per_tick[key] + scopes * per_scope[key]))
    hooks = population * gemini if webhooks else 0  # a delivery (and its GET) per Gemini batch ending (one a day)
    day["new"]["api"] += hooks
    day["new"]["reads"] += 2 * hooks
    for design in day:
        events = population * per[design if design == "today" else "cadence"]["events"]
        day[design]["messages"] = events + population  # + the copy's announcement, a job a day finishing
        day[design]["invocations"] = 1440 + population + (hooks if design == "new" else 0)
    return day


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="jobs in each measured set-up")
    parser.add_argument("--minutes", type=int, default=360, help="one-minute ticks measured")
    parser.add_argument("--max-interval-s", type=float, default=300.0,
                        help="RELAY_MAX_POLL_INTERVAL_S of the new design")
    parser.add_argument("--watched", type=float, default=0.6, help="share of jobs in watched scopes (Vertex)")
    parser.add_argument("--gemini", type=float, default=0.25, help="share of Gemini batches (GET path)")
    parser.add_argument("--scopes", type=int, default=10, help="watched scopes")
    parser.add_argument("--webhooks", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--read-usd-per-100k", type=float, default=0.06, help="Firestore document reads")
    parser.add_argument("--write-usd-per-100k", type=float, default=0.18, help="Firestore document writes")
    parser.add_argument("--pubsub-usd-per-tib", type=float, default=40.0)
    parser.add_argument("--event-kib", type=float, default=3.0, help="size of one event (Pub/Sub bills >= 1 KiB)")
    parser.add_argument("--invocation-usd-per-million", type=float, default=0.40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    prices = Prices(args.read_usd_per_100k, args.write_usd_per_100k, args.pubsub_usd_per_tib, args.event_kib,
                    args.invocation_usd_per_million)
    services = (emulators.start_firestore(), emulators.start_pubsub(), emulators.start_simulator())
    try:
        import os

        os.environ.update({"FIRESTORE_EMULATOR_HOST": services[0].host, "PUBSUB_EMULATOR_HOST": services[1].host})
        publisher = wiring.make_publisher(Settings.from_env({"GOOGLE_CLOUD_PROJECT": PROJECT}))
        publisher.create_topic(name=f"projects/{PROJECT}/topics/cost-events")
        kinds = ("today", "cadence", "watched")
        measured = {kind: run(kind, services, args.jobs, args.minutes, args.max_interval_s, seed=7) for kind in kinds}
        fixed = {kind: run(kind, services, 0, 30, args.max_interval_s, seed=7) for kind in kinds}
    finally:
        for service in reversed(services):
            service.stop()
    per = {kind: per_job_day(measured[kind], fixed[kind]) for kind in measured}
    rows = []
    for population in (1_000, 10_000, 100_000):
        day = model(per, fixed, population, args.watched, args.gemini, args.scopes, args.webhooks)
        for design in ("today", "new"):
            d = day[design]
            rows.append({"jobs": population, "design": design, **{k: int(v) for k, v in d.items()},
                         "usd": round(prices.dollars(d["reads"], d["writes"], d["messages"], d["invocations"]), 2)})
    if args.json:
        print(json.dumps({"measured": measured, "fixed": fixed, "per_job_day": per, "model": rows}, indent=2))
        return 0
    print(f"Measured on the local stack: {args.jobs} jobs over {args.minutes} one-minute ticks each, every job "
          f"changing state once ({1440 / args.minutes:g} a day), less what the same ticks cost with no job:")
    for kind, m in measured.items():
        p, f = per[kind], fixed[kind]
        print(f"    {kind:8} per job-day: {p['reads']:7.1f} reads, {p['writes']:6.1f} writes, {p['api']:7.1f} API "
              f"calls, {p['events']:.2f} events;  a tick with no job: {per_tick_of(f, 'reads'):.1f} reads, "
              f"{per_tick_of(f, 'writes'):.1f} writes, {per_tick_of(f, 'api'):.1f} API calls;  changes seen "
              f"{m['changes_seen']}/{m['jobs']}")
    print(f"\nModelled day ({args.watched:.0%} of the jobs Vertex in {args.scopes} watched scopes, {args.gemini:.0%} "
          f"Gemini and the rest Vertex on the GET path, RELAY_MAX_POLL_INTERVAL_S={args.max_interval_s:g}, webhooks "
          f"{'on' if args.webhooks else 'off'}; prices: reads ${args.read_usd_per_100k}/100k, writes "
          f"${args.write_usd_per_100k}/100k, Pub/Sub ${args.pubsub_usd_per_tib}/TiB at {args.event_kib:g} KiB an "
          f"event, invocations ${args.invocation_usd_per_million}/M):")
    print(f"    {'jobs':>8} {'design':7} {'API calls':>12} {'FS reads':>12} {'FS writes':>10} {'messages':>9} "
          f"{'invocations':>11} {'$/day':>8}")
    for r in rows:
        print(f"    {r['jobs']:>8} {r['design']:7} {r['api']:>12,} {r['reads']:>12,} {r['writes']:>10,} "
              f"{r['messages']:>9,} {r['invocations']:>11,} {r['usd']:>8.2f}")
    for population in (1_000, 10_000, 100_000):
        today, new = (r for r in rows if r["jobs"] == population)
        print(f"    {population:>8} jobs: Firestore reads {today['reads'] / new['reads']:.1f}x fewer, API calls "
              f"{today['api'] / new['api']:.1f}x fewer, dollars {today['usd'] / max(new['usd'], 0.01):.1f}x less")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
