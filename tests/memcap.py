"""One step of the relay in a process of its own under an address-space cap, as a function instance with
that much memory runs it (``tests/test_memory.py``)::

    python -m tests.memcap tick CAP_MIB
    python -m tests.memcap copy CAP_MIB MESSAGE_JSON_FILE

Settings come from the environment (``Settings.from_env``). The cap (``RLIMIT_AS``) is set before anything
is imported; run it with ``MALLOC_ARENA_MAX=2`` so that malloc's per-thread arenas (64 MiB of address space
each) do not use up a cap meant for data. Prints one JSON line: ``{"ok", "result", "error", "peak_rss_mib", "seconds"}``
(``VmHWM``, the peak RSS of this process; the seconds it ran, imports included).
"""

from __future__ import annotations

import resource
import sys


def _peak_rss_mib() -> float:
    """This process's peak RSS: ``VmHWM`` (of its own address space; ``ru_maxrss`` may report the parent's
    size at the fork that started it), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    step, cap_mib = sys.argv[1], int(sys.argv[2])
    cap = cap_mib * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import asyncio
    import base64
    import json
    import os
    import time
    import traceback

    started = time.monotonic()
    ok, result, error = False, None, None
    try:
        from batch_relay import wiring
        from batch_relay.settings import Settings

        settings = Settings.from_env(os.environ)
        db, publisher = wiring.make_firestore(settings), wiring.make_publisher(settings)
        if step == "tick":
            result = asyncio.run(wiring.run_tick(settings, db, publisher))
        else:
            from tests.helpers import pubsub_envelope

            with open(sys.argv[3]) as f:
                message = json.load(f)
            event = {"id": "1", "data": pubsub_envelope(message["attributes"], base64.b64decode(message["raw"]))}
            result = repr(wiring.react_to_cloud_event(event, settings, db, publisher))
        ok = True
    except BaseException as exc:  # noqa: BLE001 - reported to the test, MemoryError above all
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
        traceback.print_exc(limit=4)
    peak = _peak_rss_mib()
    print(json.dumps({"ok": ok, "result": result, "error": error, "peak_rss_mib": round(peak, 1),
                      "seconds": round(time.monotonic() - started, 1)}, default=str), flush=True)
    os._exit(0)  # no teardown of gRPC threads under the cap


if __name__ == "__main__":
    main()
