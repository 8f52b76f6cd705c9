"""Benchmark: one tick over N due GET-path jobs by a single poller instance, and fanned out over K
instances (RELAY_TICK_FANOUT=K), side by side on the same local stack in one run.

The stack runs K ``poll_jobs`` instances (``--instances``, default K) behind one URL, each serving one
request at a time as on Cloud Run (a request finding every instance busy waits up to 10 s, then gets 429
and, if it is a pushed part, is pushed again with backoff), the Firestore and Pub/Sub emulators and the
simulator (50 ms per status call). N Gemini jobs are RUNNING and known (the steady state). Timed: a POST
of a one-range body (``{"shard_lo": 0, "shard_hi": 1024}``: one instance polls everything) and a POST of
Scheduler's ``{}`` (the coordinator publishes K-1 parts, runs one, waits for the others' heartbeats).
After each, once every job was fetched (or a minute passed), the simulator's per-job counts show every
job was fetched exactly once. A third tick, fanned out, runs after a tenth of the jobs ended: each must
publish exactly one ``stateChanged`` (its version 1), and no other job any. Printed at the end: what the
front end did (requests per instance, the most one instance had at once, 429s).

With a CPU share (``--cpu-share``, default ``$BENCH_CPU_SHARE`` or 512Mi, i.e. 1/3 vCPU) the whole bench
runs twice, one stack after the other: on whole cores, then with every function instance under that
share's CFS quota, one cgroup each (``devtools/cpushare.py``; emulators and simulator outside), and the
two are printed side by side.

    python -m devtools.bench_fanout               # N = 10000, K = 4 over 4 instances
    python -m devtools.bench_fanout --jobs 2000 --parts 2
    python -m devtools.bench_fanout --jobs 2000 --parts 4 --instances 2   # parts beyond the instances: 429s
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

import httpx

from devtools import cpushare
from devtools.seeding import write_records
from devtools.simulator import SimulatorClient, gemini_spec
from devtools.stack import LocalStack


def seed(stack: LocalStack, n: int) -> list[str]:
    from batch_relay import wiring
    from batch_relay.batchapi.names import JobName
    from batch_relay.record.model import JobRecord

    names = [f"batches/fan-{i:06d}" for i in range(n)]
    sim = SimulatorClient(stack.url("simulator"))
    sim.configure(latency_ms=50)
    stats = {"successful": 1, "failed": 0, "incomplete": 9}
    for i in range(0, n, 5000):
        sim.add_jobs([gemini_spec(name, [{"state": "RUNNING", "stats": stats}]) for name in names[i:i + 5000]])
    settings = stack.settings()
    db = wiring.make_firestore(settings)
    now = dt.datetime.now(dt.UTC)
    write_records(db, settings, (
        JobRecord.new(JobName.parse(name), destination=None, labels={}, now=now).replace(
            state="JOB_STATE_RUNNING", polled_at=now, changed_at=now,  # version 0: no transition documents
            completion_stats=stats)
        for name in names))
    db.close()
    return names


def timed_tick(stack: LocalStack, body: dict, names: list[str]) -> dict:
    sim = SimulatorClient(stack.url("simulator"))
    sim.reset_stats()
    started = time.perf_counter()
    reply = httpx.post(stack.url("poll_jobs") + "/", json=body, timeout=900).json()
    seconds = time.perf_counter() - started
    until = time.monotonic() + 60  # a part that did not report in time (or waits for an instance) still runs
    while len(per_job := sim.stats()["per_job_gets"]) < len(names) and time.monotonic() < until:
        time.sleep(0.5)
    time.sleep(1.0)
    per_job = sim.stats()["per_job_gets"]
    return {"seconds": round(seconds, 2), "reply": reply, "once": sum(1 for n in names if per_job.get(n) == 1),
            "more": sum(1 for n in names if (per_job.get(n) or 0) > 1),
            "never": sum(1 for n in names if not per_job.get(n))}


def events_of(stack: LocalStack) -> dict[str, list[int]]:
    """The stateChanged versions each job published (in delivery order), from the stack's console subscription."""
    from google.cloud import pubsub_v1

    from devtools.pubsub_drain import drain

    subscriber = pubsub_v1.SubscriberClient()
    try:
        messages = drain(subscriber, stack.console_subscription, quiet_s=2.0, batch=1000)
    finally:
        subscriber.close()
    by_job: dict[str, list[int]] = {}
    for m in messages:
        if m.attributes.get("ce-type") == "batchrelay.job.v1.stateChanged":
            by_job.setdefault(m.attributes["job"], []).append(json.loads(m.data)["version"])
    return by_job


def run(args, instances: int, share: cpushare.CpuShare | None) -> dict:
    env = {"RELAY_TICK_FANOUT": str(args.parts), "RELAY_TICK_DEADLINE_S": "600", "RELAY_POLL_CONCURRENCY": "32",
           "RELAY_MAX_POLL_INTERVAL_S": "0"}  # every job due on both ticks
    with LocalStack(project="bench-fanout", tick_s=None, webhooks=False, pollers=instances, extra_env=env,
                    cpu_share=share) as stack:
        with stack.environ():
            names = seed(stack, args.jobs)
            single = timed_tick(stack, {"shard_lo": 0, "shard_hi": 1024}, names)
            fanned = timed_tick(stack, {}, names)
            # then a tenth of the jobs end before another fan-out tick: each must publish its version 1, once
            changed = names[::10]
            sim = SimulatorClient(stack.url("simulator"))
            for name in changed:
                sim.set_state(name, "FAILED", error={"code": 13, "message": "bench"})
            events_of(stack)  # nothing before this tick
            moving = timed_tick(stack, {}, names)
            published = events_of(stack)
            front = stack.balancer
    return {"single": single, "fanned": fanned, "moving": moving, "changed": changed, "published": published,
            "front": front}


def report(args, instances: int, vcpu: float | None, out: dict) -> None:
    single, fanned, moving, changed, published, front = (
        out[k] for k in ("single", "fanned", "moving", "changed", "published", "front"))
    r = fanned["reply"]
    print(f"N={args.jobs} due GET-path jobs, 50 ms per status call, {args.parts} parts over {instances} poll_jobs "
          f"instances (one request each at a time) on this machine, {cpushare.label(vcpu)} per instance:")
    for label, run in (("one instance", single), (f"fan-out x{args.parts}", fanned),
                       (f"fan-out, {len(changed)} ending", moving)):
        print(f"    {label:22} {run['seconds']:7.2f}s   fetched once: {run['once']}, more than once: {run['more']}, "
              f"never: {run['never']}")
    wrong = [n for n in changed if published.get(n) != [1]]
    extra = [n for n in published if n not in set(changed)]
    print(f"    that last tick's events: {sum(len(v) for v in published.values())} stateChanged for {len(changed)} "
          f"jobs that changed; exactly one (version 1) each: {len(changed) - len(wrong)}, otherwise: {len(wrong)}, "
          f"events of unchanged jobs: {len(extra)}")
    print(f"    the coordinator reported {r.get('parts_reported')}/{r.get('parts', 1) - 1} other parts, "
          f"{r.get('polled')} jobs polled in all;  one instance / fan-out = "
          f"{single['seconds'] / fanned['seconds']:.2f}x")
    if front is not None:
        print(f"    front end: requests served per instance {front.served}, the most one instance had at once "
              f"{max(front.peak)}, refused with 429 (every instance busy for {front.pending_s:g}s): {front.refused}",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--instances", type=int, default=None, help="poll_jobs instances (default: --parts)")
    cpushare.add_argument(parser)
    args = parser.parse_args(argv)
    instances = args.instances or args.parts
    shares = cpushare.shares_to_measure(args.cpu_share)
    results = []
    for value in shares:
        share = cpushare.CpuShare.for_memory(value) if value != "off" else None
        if value != "off" and share is None:
            break
        try:
            out = run(args, instances, share)
        finally:
            if share is not None:
                share.close()
        vcpu = share.vcpu if share else None
        report(args, instances, vcpu, out)
        results.append((vcpu, out))
    if len(results) == 2:
        (_, whole), (vcpu, quota) = results
        print(f"at {vcpu:.3g} vCPU per instance against whole cores: " + ", ".join(
            f"{label} {quota[key]['seconds']:.2f}s vs {whole[key]['seconds']:.2f}s "
            f"({quota[key]['seconds'] / whole[key]['seconds']:.2f}x)"
            for label, key in (("one instance", "single"), (f"fan-out x{args.parts}", "fanned"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
