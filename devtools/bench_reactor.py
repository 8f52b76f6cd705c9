"""Benchmark of the reactor's copies through the local stack (fake-gcs-server, simulator, emulators).

- a Gemini responses file of ``--file-mib`` MiB (default 1024), streamed Files API -> resumable upload;
- ``--objects`` small Vertex output objects (default 1,000), copied server-side with objects.rewrite.

Each copy runs in a child process, so its peak RSS is the copy's own. Prints MB/s, requests made, peak
RSS, and the bytes of HTTP response bodies the process received (for Vertex: metadata only, no object
bytes pass through the function).

    python -m devtools.bench_reactor [--file-mib 1024] [--objects 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
import uuid

import httpx

from devtools import emulators
from devtools.simulator import SimulatorClient, gemini_spec, vertex_spec

PROJECT = "bench-reactor"


def child(argv: list[str]) -> int:
    """Run one copy (the record named in argv) in this process and print its figures as JSON."""
    from batch_relay import wiring
    from batch_relay.batchapi.client import BatchApiClient
    from batch_relay.batchapi.outputs import GeminiOutputs
    from batch_relay.events.outbox import Outbox
    from batch_relay.reactor.handler import Reactor
    from batch_relay.reactor.plans import Copier
    from batch_relay.reactor.storage import StorageClient, storage_base_url
    from batch_relay.record.store import JobStore
    from batch_relay.retry import RetryPolicy
    from batch_relay.settings import Settings

    name = argv[0]
    settings = Settings.from_env()
    db, publisher = wiring.make_firestore(settings), wiring.make_publisher(settings)
    store = JobStore(db, settings)
    received = {"bytes": 0}

    async def count(response: httpx.Response) -> None:
        received["bytes"] += int(response.headers.get("content-length") or 0)

    async def run() -> tuple[str, int, int]:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=120, limits=limits, event_hooks={"response": [count]}) as gcs, \
                httpx.AsyncClient(timeout=120) as gemini:
            storage = StorageClient(gcs, base_url=storage_base_url(settings.storage_emulator_host),
                                    retry=RetryPolicy(max_attempts=settings.max_attempts))
            outbox = Outbox(store, wiring.event_publisher(settings, publisher))
            api = BatchApiClient(gemini, settings, vertex_auth=wiring.vertex_auth(settings))
            reactor = Reactor(store, Copier(storage, GeminiOutputs(gemini, settings), api, settings), outbox)
            claim = store.claim_copy(name, dt.datetime.now(dt.UTC))
            assert claim is not None, f"{name} is not tracked"
            started = time.perf_counter()
            result = await reactor.run_copy(claim.record, dt.datetime.now(dt.UTC))
            return result, storage.requests, time.perf_counter() - started

    result, requests, seconds = asyncio.run(run())
    copy = store.get(name)["copy"]
    print(json.dumps({"result": result, "status": copy["status"], "objects": copy["objects"], "bytes": copy["bytes"],
                      "seconds": seconds, "storage_requests": requests, "received_body_bytes": received["bytes"],
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    publisher.stop()
    return 0


def run_child(env: dict[str, str], name: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "devtools.bench_reactor", "--child", name], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=3600, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file-mib", type=int, default=1024)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--object-bytes", type=int, default=2048)
    parser.add_argument("--child", nargs=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    services = [emulators.start_firestore(), emulators.start_pubsub(), emulators.start_fake_gcs(),
                emulators.start_simulator()]
    firestore, pubsub, gcs, sim_service = services
    try:
        env = {"GOOGLE_CLOUD_PROJECT": PROJECT, "FIRESTORE_EMULATOR_HOST": firestore.host,
               "PUBSUB_EMULATOR_HOST": pubsub.host, "STORAGE_EMULATOR_HOST": gcs.url,
               "RELAY_COLLECTION": f"bench_{uuid.uuid4().hex[:6]}", "RELAY_EVENTS_TOPIC": "bench-events",
               "RELAY_GEMINI_API_KEY": "bench-key", "RELAY_GEMINI_BASE_URL": sim_service.url,
               "RELAY_VERTEX_BASE_URL": sim_service.url, "RELAY_ALLOWED_BUCKETS": "*"}
        os.environ.update(env)
        from batch_relay import wiring
        from batch_relay.record.store import JobStore
        from batch_relay.settings import Settings

        settings = Settings.from_env(env)
        db, publisher = wiring.make_firestore(settings), wiring.make_publisher(settings)
        publisher.create_topic(name=f"projects/{PROJECT}/topics/bench-events")
        store = JobStore(db, settings)
        http = httpx.Client(base_url=gcs.url, timeout=60)
        for bucket in ("bench-src", "bench-dst"):
            http.post("/storage/v1/b", params={"project": PROJECT}, json={"name": bucket}).raise_for_status()
        src_dir = "vertex/prediction-bench"
        started = time.perf_counter()
        payload = b"x" * args.object_bytes
        for i in range(args.objects):
            http.post("/upload/storage/v1/b/bench-src/o", params={"uploadType": "media",
                      "name": f"{src_dir}/predictions_{i:05d}.jsonl"}, content=payload).raise_for_status()
        print(f"arranged {args.objects} source objects in {time.perf_counter() - started:.1f}s")
        sim = SimulatorClient(sim_service.url)
        line_bytes = 1024
        lines = args.file_mib * 1024 * 1024 // line_bytes
        sim.add_job(gemini_spec("bench-file", ["SUCCEEDED"], output={
            "kind": "file", "file_id": "batch-bench-file-" + "f" * 40, "lines": lines, "line_bytes": line_bytes}))
        sim.add_job(vertex_spec("bench", "us-central1", "9001", ["SUCCEEDED"],
                                output={"kind": "gcs", "uri": f"gs://bench-src/{src_dir}"}))
        gemini_name, vertex_name = "batches/bench-file", "projects/bench/locations/us-central1/batchPredictionJobs/9001"
        store.track(gemini_name, destination="gs://bench-dst/gemini")
        store.track(vertex_name, destination="gs://bench-dst/vertex")
        asyncio.run(wiring.run_tick(settings, db, publisher))
        for label, name in (("gemini responses file", gemini_name), ("vertex objects", vertex_name)):
            r = run_child(env, name)
            mb = r["bytes"] / 1e6
            print(f"{label}: {r['status']}, {r['objects']} object(s), {mb:.1f} MB in {r['seconds']:.1f}s = "
                  f"{mb / r['seconds']:.1f} MB/s; {r['storage_requests']} storage requests; "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB; "
                  f"response bodies received {r['received_body_bytes'] / 1e6:.2f} MB")
        publisher.stop()
    finally:
        for service in reversed(services):
            service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
