"""Memory at the deployed size (infra: the poller 512 MiB, the reactor 1 GiB): a Gemini batch holding 200 MB
of inline responses is polled by a tick of 32 batches at once under a 512 MiB address-space cap, and copied
under 1 GiB, each in a process of its own (``tests/memcap.py``) on the emulators and the simulator.

The tick asks only for what it stores (``batchapi.fields``), so the big batch costs it no more than a small
one; the copy streams the responses (``batchapi.jsonstream``) into ``responses.jsonl``. Peak RSS of each step
is printed (``pytest -s``) for docs/reliability.md."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from devtools.simulator import gemini_spec

ROOT = Path(__file__).resolve().parent.parent
POLLER_MIB, REACTOR_MIB = 512, 1024
COUNT, RESPONSE_BYTES = 2000, 100_000  # 2,000 inline responses of 100 kB: 200 MB


def _env(settings) -> dict[str, str]:
    return {
        **os.environ, "MALLOC_ARENA_MAX": "2", "PYTHONPATH": str(ROOT),
        "GOOGLE_CLOUD_PROJECT": settings.project, "RELAY_COLLECTION": settings.collection,
        "RELAY_EVENTS_TOPIC": settings.events_topic, "RELAY_GEMINI_API_KEY": settings.gemini_api_key,
        "RELAY_GEMINI_BASE_URL": settings.gemini_base_url, "RELAY_VERTEX_BASE_URL": settings.vertex_base_url,
        "RELAY_TICK_DEADLINE_S": "60", "RELAY_REQUEST_TIMEOUT_S": "30", "RELAY_MAX_POLL_INTERVAL_S": "0",
        "RELAY_POLL_CONCURRENCY": "32", "RELAY_ALLOWED_BUCKETS": "*",
    }


def _run(settings, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.memcap", *args], cwd=ROOT, env=_env(settings),
                          capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"memcap printed nothing (rc {done.returncode}): {done.stderr[-2000:]}"
    report = json.loads(lines[-1])
    print(f"memcap {args[0]} under {args[1]} MiB: {report}")
    assert report["ok"], f"{report['error']}\n{done.stderr[-2000:]}"
    return report


def _track(relay, simulator, name: str, output: dict, destination: str | None = None) -> None:
    simulator.add_job(gemini_spec(name, ["SUCCEEDED"], output=output))
    relay.store.track(name, destination=destination)


def test_a_batch_of_200_mb_of_inline_responses_in_a_512_mib_tick_and_a_1_gib_copy(relay, simulator, gcs, tmp_path):
    small = {"kind": "inline", "count": 3}
    for i in range(32):
        _track(relay, simulator, f"batches/mem-a-{i}", small)
    baseline = _run(relay.settings, "tick", str(POLLER_MIB))  # 32 small batches: the tick's own size
    assert baseline["result"]["polled"] == 32
    relay.drain()

    dst = gcs.bucket("mem")
    big = "batches/mem-big"
    _track(relay, simulator, big, {"kind": "inline", "count": COUNT, "errors": 1, "response_bytes": RESPONSE_BYTES},
           destination=f"gs://{dst}/big")
    for i in range(31):  # with the big one: 32 polled at once
        _track(relay, simulator, f"batches/mem-b-{i}", small)
    tick = _run(relay.settings, "tick", str(POLLER_MIB))
    record = relay.store.load(big)
    assert (tick["result"]["polled"], tick["result"]["errors"]) == (32, 0), record.error
    assert record.terminal and record.output == {"inlined_count": COUNT}  # the count, without the responses
    [message] = [m for m in relay.drain() if m["attributes"]["ce-type"] == "batchrelay.job.v1.stateChanged"
                 and m["data"]["job"]["name"] == big]

    path = tmp_path / "message.json"
    path.write_text(json.dumps({"attributes": message["attributes"], "raw": base64.b64encode(message["raw"]).decode()}))
    copy = _run(relay.settings, "copy", str(REACTOR_MIB), str(path))
    info = gcs.meta(dst, "big/responses.jsonl")
    assert info is not None and int(info["size"]) > COUNT * RESPONSE_BYTES
    results = relay.store.load(big).results
    assert (results["succeeded"], results["failed"]) == (COUNT - 1, 1)
    print(f"peak RSS MiB: tick {baseline['peak_rss_mib']} (32 small) -> {tick['peak_rss_mib']} (one of 200 MB), "
          f"copy {copy['peak_rss_mib']}")
