"""Benchmark: the webhook's cold reply. A fresh interpreter serving ``on_gemini_webhook`` (functions-framework,
as ``devtools/stack.py`` runs it) gets one signed delivery as soon as it listens; timed from the spawn to
the reply, on whole cores and under the CPU quota of the function's memory (``--cpu-share``), side by side.

What an instance does for the first delivery after idle: start the interpreter and functions-framework,
import the relay (settings, Firestore, Pub/Sub, HTTP clients) on the first request, verify the signature,
fetch the batch from the simulator (50 ms per call), commit the change, write and publish the event, then
reply. The job is tracked and RUNNING in its record and SUCCEEDED in the simulator, so the reply must be
``{"result": "changed"}`` (anything else is printed). The emulators and the simulator stay outside the quota
(they stand for Google's services). Runs alternate whole / quota, ``--repeats`` times each.

Printed per run: seconds from the spawn until the port listens, until the reply; the delivery's own seconds
(POST to reply); the CPU seconds of the function's processes at the reply, and of the reply alone (after
the port listened). Cloud Run's own start-up (container, sandbox) comes on top and is not measured here.

    python -m devtools.bench_webhook_cold                   # 3 repeats, whole cores and 512Mi (1/3 vCPU)
    python -m devtools.bench_webhook_cold --repeats 5 --cpu-share 1
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import statistics
import sys
import time
from pathlib import Path

import httpx

from devtools import cpushare, emulators
from devtools.simulator import SimulatorClient, gemini_spec
from devtools.stack import proc_stats

PROJECT = "bench-cold"
MAIN = Path(__file__).resolve().parent.parent / "functions" / "main.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def signed(secret: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers (v1, HMAC-SHA256) for ``body``, as the Gemini API sends them."""
    msg_id = f"msg_{secrets.token_hex(12)}"
    stamp = str(int(time.time()))
    key = base64.b64decode(secret[len("whsec_"):] + "==")
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": stamp,
            "webhook-signature": "v1," + base64.b64encode(mac).decode(), "content-type": "application/json"}


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system, with reaped children) of every process in the process group ``pgid``."""
    total = sum(sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
                for _, fields in proc_stats() if int(fields[2]) == pgid)
    return total / CLOCK_TICKS


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def one_run(env: dict[str, str], secret: str, sim: SimulatorClient, name: str,
            group: cpushare.Group | None) -> dict:
    from batch_relay import wiring
    from batch_relay.record.store import JobStore
    from batch_relay.settings import Settings

    settings = Settings.from_env(env)
    sim.add_jobs([gemini_spec(name, ["SUCCEEDED"])])
    db = wiring.make_firestore(settings)
    JobStore(db, settings).track(name)  # tracked, never polled: the nudge fetches it SUCCEEDED and publishes
    db.close()
    port = emulators.free_port()
    argv = [sys.executable, "-m", "functions_framework", "--target", "on_gemini_webhook", "--source", str(MAIN),
            "--host", "127.0.0.1", "--port", str(port)]
    body = json.dumps({"type": "batch.succeeded", "version": "v1", "data": {"id": name}}).encode()
    url = f"http://127.0.0.1:{port}/"
    spawned = time.perf_counter()
    service = emulators.Service("webhook-cold", group.wrap(argv) if group else argv, port, env=env)
    try:
        with httpx.Client(timeout=60) as client:
            while not listening(port):  # a bare TCP connect: no request reaches the function before the delivery
                if not service.alive():
                    raise RuntimeError(f"the webhook function exited: {service.tail()}")
                time.sleep(0.01)
            listened = time.perf_counter()
            cpu_listen = group_cpu_s(service.pid)
            posted = time.perf_counter()
            response = client.post(url, content=body, headers=signed(secret, body))
            replied = time.perf_counter()
        cpu_reply = group_cpu_s(service.pid)
        return {"listen_s": listened - spawned, "reply_s": replied - spawned, "delivery_s": replied - posted,
                "cpu_reply_total_s": cpu_reply, "cpu_reply_s": cpu_reply - cpu_listen,
                "status": response.status_code, "result": response.text.strip()[:200]}
    finally:
        service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    cpushare.add_argument(parser)
    args = parser.parse_args(argv)
    shares = cpushare.shares_to_measure(args.cpu_share)
    services = [emulators.start_firestore(), emulators.start_pubsub(), emulators.start_simulator()]
    firestore, pubsub, simulator = services
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    env = {"GOOGLE_CLOUD_PROJECT": PROJECT, "FIRESTORE_EMULATOR_HOST": firestore.host,
           "PUBSUB_EMULATOR_HOST": pubsub.host, "RELAY_COLLECTION": f"cold_{int(time.time())}",
           "RELAY_EVENTS_TOPIC": "bench-events", "RELAY_GEMINI_API_KEY": "bench-key",
           "RELAY_GEMINI_BASE_URL": simulator.url, "RELAY_VERTEX_BASE_URL": simulator.url,
           "RELAY_GEMINI_WEBHOOK_SECRETS": secret, "PYTHONUNBUFFERED": "1"}
    quota = None
    try:
        os.environ.update({k: v for k, v in env.items() if k.endswith("_HOST")})
        from batch_relay import wiring
        from batch_relay.settings import Settings

        publisher = wiring.make_publisher(Settings.from_env(env))
        publisher.create_topic(name=f"projects/{PROJECT}/topics/bench-events")
        publisher.stop()
        sim = SimulatorClient(simulator.url)
        sim.configure(latency_ms=args.latency_ms)
        if len(shares) > 1:
            quota = cpushare.CpuShare.for_memory(shares[1])
            if quota is None:
                shares = shares[:1]
        runs: dict[str, list[dict]] = {s: [] for s in shares}
        for r in range(args.repeats):
            for share in (shares if r % 2 == 0 else list(reversed(shares))):
                group = quota.group(f"webhook-{r}") if share != "off" and quota else None
                run = one_run(env, secret, sim, f"batches/cold-{r}-{share.replace('.', '_')}", group)
                runs[share].append(run)
                vcpu = cpushare.label(quota.vcpu if group and quota else None)
                print(f"    {r + 1}. {vcpu:>11}: listening {run['listen_s']:.2f}s, reply {run['reply_s']:.2f}s after "
                      f"the spawn (the delivery itself {run['delivery_s']:.2f}s), CPU {run['cpu_reply_total_s']:.2f}s "
                      f"at the reply ({run['cpu_reply_s']:.2f}s of it after listening); {run['status']} "
                      f"{run['result']}", flush=True)
    finally:
        if quota is not None:
            quota.close()
        for service in reversed(services):
            service.stop()
    print(f"cold reply of on_gemini_webhook ({args.latency_ms:.0f} ms per API call), median of {args.repeats}:")
    medians = {}
    for share, rows in runs.items():
        vcpu = cpushare.label(cpushare.vcpu_for(share))

        def med(key: str, rows: list[dict] = rows) -> float:
            return statistics.median(r[key] for r in rows)

        medians[share] = med("reply_s")
        print(f"    {vcpu:>11}: spawn -> reply {medians[share]:.2f}s ({min(r['reply_s'] for r in rows):.2f}-"
              f"{max(r['reply_s'] for r in rows):.2f}), listening {med('listen_s'):.2f}s, the delivery "
              f"{med('delivery_s'):.2f}s, CPU of the cold reply {med('cpu_reply_s'):.2f}s "
              f"(total {med('cpu_reply_total_s'):.2f}s)")
    if len(medians) == 2:
        print(f"    quota / whole cores: {medians[shares[1]] / medians['off']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
