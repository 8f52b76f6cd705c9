"""Pull every message now on a Pub/Sub subscription (acking them), in delivery order: for tests, the
soak and the demo's checks, against the emulator."""

from __future__ import annotations

import time


def drain(subscriber, subscription: str, *, quiet_s: float = 0.3, limit_s: float = 120.0,
          batch: int = 500) -> list:
    """Pull until nothing has arrived for ``quiet_s`` seconds (or ``limit_s`` passed); return the
    received ``PubsubMessage`` objects, acked."""
    out = []
    started = quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet_s and time.monotonic() - started < limit_s:
        response = subscriber.pull(request={"subscription": subscription, "max_messages": batch,
                                            "return_immediately": True}, timeout=30)
        if not response.received_messages:
            time.sleep(0.05)
            continue
        quiet_since = time.monotonic()
        out.extend(m.message for m in response.received_messages)
        subscriber.acknowledge(request={"subscription": subscription,
                                        "ack_ids": [m.ack_id for m in response.received_messages]})
    return out
