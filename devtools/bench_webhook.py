"""Benchmark: from the simulator ending a Gemini batch to its ``stateChanged`` on a subscription, by the
webhook path (measured) and by the tick path (computed from the deployed interval and a measured tick).

The webhook path runs for real: the Firestore and Pub/Sub emulators, the simulator (50 ms per API call)
sending signed webhooks, ``on_gemini_webhook`` under functions-framework, and a streaming-pull subscriber
with message ordering. No tick runs after the first one (which saw the batches RUNNING). Each latency is
the subscriber's receipt time minus the moment the simulator ended the batch.

The tick path is computed, not waited for: a batch that ends at a random moment waits for the next
Scheduler tick (uniform over the interval, 60 s deployed), then for that tick to reach and publish it
(at most the measured duration of a tick over the same batches): median = interval / 2 + tick,
p95 = 0.95 x interval + tick.

With a CPU share (``--cpu-share``, default ``$BENCH_CPU_SHARE`` or 512Mi, i.e. 1/3 vCPU) the webhook path
runs twice, a fresh set of services each time: ``on_gemini_webhook`` on whole cores, then under that share's
CFS quota (``devtools/cpushare.py``; emulators, simulator and this process outside it), side by side.

    python -m devtools.bench_webhook                 # 100 batches
    python -m devtools.bench_webhook --batches 20 --interval-s 60
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path

from batch_relay import wiring
from batch_relay.settings import Settings
from devtools import cpushare, emulators
from devtools.simulator import SimulatorClient, gemini_spec

SETUP_S = 15.0
PROJECT = "bench-webhook"
MAIN = Path(__file__).resolve().parent.parent / "functions" / "main.py"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(batches: int, latency_ms: float, interval_s: float, spread_s: float,
        quota: cpushare.Group | None = None) -> dict:
    firestore, pubsub, simulator = emulators.start_firestore(), emulators.start_pubsub(), emulators.start_simulator()
    services = [simulator, pubsub, firestore]
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    env = {"GOOGLE_CLOUD_PROJECT": PROJECT, "FIRESTORE_EMULATOR_HOST": firestore.host,
           "PUBSUB_EMULATOR_HOST": pubsub.host, "RELAY_COLLECTION": f"hooks_{int(time.time())}",
           "RELAY_EVENTS_TOPIC": "bench-events", "RELAY_GEMINI_API_KEY": "bench-key",
           "RELAY_GEMINI_BASE_URL": simulator.url, "RELAY_VERTEX_BASE_URL": simulator.url,
           "RELAY_GEMINI_WEBHOOK_SECRETS": secret}
    try:
        os.environ.update({k: v for k, v in env.items() if k.endswith("_HOST")})
        settings = Settings.from_env(env)
        db, publisher = wiring.make_firestore(settings), wiring.make_publisher(settings)
        from google.cloud import pubsub_v1

        topic = f"projects/{PROJECT}/topics/bench-events"
        subscription = f"projects/{PROJECT}/subscriptions/bench-latency"
        publisher.create_topic(name=topic)
        subscriber = pubsub_v1.SubscriberClient()
        subscriber.create_subscription(request={"name": subscription, "topic": topic,
                                                "enable_message_ordering": True, "ack_deadline_seconds": 60})
        port = emulators.free_port()
        argv = [sys.executable, "-m", "functions_framework", "--target", "on_gemini_webhook", "--source", str(MAIN),
                "--host", "127.0.0.1", "--port", str(port)]
        hook = emulators.Service("webhook", quota.wrap(argv) if quota else argv, port, env={**os.environ, **env})
        services.insert(0, hook)
        hook.wait_ready(60)
        sim = SimulatorClient(simulator.url)
        sim.configure(latency_ms=latency_ms)
        names = [f"batches/lat-{i:04d}" for i in range(batches)]
        # each batch ends at its own moment, spread over ``spread_s``, after SETUP_S: time enough (on a slow
        # machine too) to track them and run two ticks before the simulator is told where to send webhooks
        added = time.perf_counter()
        sim.add_jobs([gemini_spec(name, ["RUNNING", {"state": "SUCCEEDED",
                                                     "after_s": SETUP_S + spread_s * i / batches}])
                      for i, name in enumerate(names)])
        from batch_relay.record.store import JobStore

        store = JobStore(db, settings)
        for name in names:
            store.track(name)
        first = asyncio.run(wiring.run_tick(settings, db, publisher))  # the batches are RUNNING now
        started = time.perf_counter()
        asyncio.run(wiring.run_tick(settings, db, publisher))  # a steady tick over them, timed
        tick_s = time.perf_counter() - started
        received: dict[str, float] = {}
        done = threading.Event()

        def on_message(message) -> None:
            if message.attributes.get("state") == "JOB_STATE_SUCCEEDED":
                received.setdefault(message.attributes["job"], time.time())
                if len(received) == batches:
                    done.set()
            message.ack()

        future = subscriber.subscribe(subscription, on_message)
        sim.configure(webhooks={"url": f"{hook.url}/", "secret": secret})
        setup_s = time.perf_counter() - added  # above SETUP_S, the first batches ended without a webhook
        done.wait(timeout=SETUP_S + spread_s + 120)
        future.cancel()
        ended = {entry["job"]: entry["ended_at"] for entry in sim.stats()["webhooks"]["log"]}
        latencies = [received[n] - ended[n] for n in names if n in received and n in ended]
        subscriber.close()
        publisher.stop()
        return {"batches": batches, "received": len(latencies), "first_tick": first, "tick_s": round(tick_s, 3),
                "setup_s": round(setup_s, 1),
                "median_s": round(statistics.median(latencies), 3) if latencies else None,
                "p95_s": round(percentile(latencies, 0.95), 3) if latencies else None,
                "max_s": round(max(latencies), 3) if latencies else None,
                "tick_median_s": round(interval_s / 2 + tick_s, 1), "tick_p95_s": round(0.95 * interval_s + tick_s, 1),
                "interval_s": interval_s, "webhooks": {k: v for k, v in sim.stats()["webhooks"].items() if k != "log"}}
    finally:
        for service in services:
            service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--interval-s", type=float, default=60.0, help="the deployed Scheduler interval")
    parser.add_argument("--spread-s", type=float, default=20.0, help="the batches end over this many seconds")
    cpushare.add_argument(parser)
    args = parser.parse_args(argv)
    medians = []
    for value in cpushare.shares_to_measure(args.cpu_share):
        share = cpushare.CpuShare.for_memory(value) if value != "off" else None
        if value != "off" and share is None:
            break
        try:
            r = run(args.batches, args.latency_ms, args.interval_s, args.spread_s,
                    share.group("webhook") if share else None)
        finally:
            if share is not None:
                share.close()
        report(args, r, share.vcpu if share else None)
        medians.append((share.vcpu if share else None, r["median_s"], r["p95_s"]))
    if len(medians) == 2 and all(m[1] for m in medians):
        (_, whole, whole95), (vcpu, quota, quota95) = medians
        print(f"webhook path at {vcpu:.3g} vCPU against whole cores: median {quota:.3f}s vs {whole:.3f}s "
              f"({quota / whole:.2f}x), p95 {quota95:.3f}s vs {whole95:.3f}s")
    return 0


def report(args, r: dict, vcpu: float | None) -> None:
    print(f"{r['received']}/{r['batches']} batches ended in the simulator ({args.latency_ms:.0f} ms per API call), "
          f"each stateChanged received on an ordered subscription, on_gemini_webhook on {cpushare.label(vcpu)}:")
    print(f"    webhook path (measured): median {r['median_s']:.3f}s, p95 {r['p95_s']:.3f}s, max {r['max_s']:.3f}s "
          f"(goal: median < 1 s, p95 < 2 s); deliveries {r['webhooks']}")
    print(f"    tick path at a {r['interval_s']:.0f}s interval (computed: interval/2 + tick, 0.95 x interval + tick, "
          f"with a measured tick over the same {r['batches']} batches of {r['tick_s']:.2f}s): median "
          f"{r['tick_median_s']:.1f}s, p95 {r['tick_p95_s']:.1f}s")
    if r["setup_s"] > SETUP_S:
        print(f"    setting up took {r['setup_s']:.1f}s, more than {SETUP_S:g}s: batches that ended before it sent no "
              f"webhook and are not counted")
    if r["median_s"]:
        print(f"    the webhook path is {r['tick_median_s'] / r['median_s']:.0f}x faster at the median, "
              f"{r['tick_p95_s'] / r['p95_s']:.0f}x at p95")


if __name__ == "__main__":
    raise SystemExit(main())
