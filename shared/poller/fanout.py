"""Fan-out (``RELAY_TICK_FANOUT=K``): the scheduled tick splits into K parts that Cloud Run runs side by
side, each an invocation of ``poll_jobs`` over a disjoint shard range (and its share of the watched
scopes).

The tick Scheduler starts is the **coordinator**: it numbers the tick, publishes parts 1..K-1 to
``RELAY_TICK_PARTS_TOPIC`` (a Terraform-owned push subscription delivers each to ``poll_jobs``, with
OIDC and a dead-letter topic), runs part 0 itself — with the tick's global work: the outbox of earlier
ticks, the sweep of stuck copies, retiring scopes — and then waits, within its deadline, for the other
parts' heartbeat entries of the same tick and sums what it knows. Each part writes
``{RELAY_COLLECTION}_meta/heartbeat-part-{i}``. A part delivered twice, or overlapping another tick,
is just an overlapping tick: guarded commits and publish leases keep every job's events once and in order.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from typing import Any

from ..batchapi.scopes import WatchScope
from ..record.model import SHARDS
from ..settings import Settings


@dataclasses.dataclass(frozen=True)
class Part:
    index: int
    count: int
    shard_lo: int
    shard_hi: int
    tick: int | None = None

    def to_message(self) -> bytes:
        return json.dumps({"part": self.index, "parts": self.count, "shard_lo": self.shard_lo,
                           "shard_hi": self.shard_hi, "tick": self.tick}).encode()

    def scopes(self, settings: Settings) -> tuple[WatchScope, ...]:
        """This part's share of the watched scopes (each scope is listed by exactly one part)."""
        return tuple(scope for j, scope in enumerate(settings.watch) if j % self.count == self.index)

    @property
    def coordinator(self) -> bool:
        return self.index == 0


def plan(count: int, tick: int | None) -> list[Part]:
    """``count`` parts over contiguous shard ranges covering every shard once."""
    bounds = [SHARDS * i // count for i in range(count + 1)]
    return [Part(i, count, bounds[i], bounds[i + 1], tick) for i in range(count)]


def parse_body(body: Any) -> Part | None:
    """The part a POST to ``poll_jobs`` asks for: None for Scheduler's empty body (the whole tick, or the
    coordinator of a fan-out); a ``Part`` for ``{"part", "parts", "shard_lo", "shard_hi", "tick"}`` (pushed,
    as the message data or inside a Pub/Sub push envelope) or ``{"shard_lo", "shard_hi"}`` (one range, by
    hand). Raises ``ValueError`` for anything else."""
    if not body:
        return None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    message = body.get("message")
    if isinstance(message, dict) and "data" in message:  # a wrapped push delivery
        try:
            body = json.loads(base64.b64decode(message["data"], validate=True))
        except (binascii.Error, ValueError, TypeError):
            raise ValueError("push message data is not base64 JSON") from None
        if not isinstance(body, dict):
            raise ValueError("push message data must be a JSON object")
    lo, hi = body.get("shard_lo", 0), body.get("shard_hi", SHARDS)
    index, count, tick = body.get("part", 0), body.get("parts", 1), body.get("tick")
    numbers = (lo, hi, index, count) + ((tick,) if tick is not None else ())
    if any(not isinstance(v, int) or isinstance(v, bool) for v in numbers):
        raise ValueError("shard_lo, shard_hi, part, parts and tick must be integers")
    if not 0 <= lo < hi <= SHARDS:
        raise ValueError(f"shard_lo/shard_hi must be integers with 0 <= shard_lo < shard_hi <= {SHARDS}")
    if not 1 <= count <= 64 or not 0 <= index < count:
        raise ValueError("part must be in 0..parts-1, parts in 1..64")
    return Part(index, count, lo, hi, tick)


COUNTS = ("polled", "changed", "published", "errors", "updated", "deferred", "republished", "lost", "swept",
          "listed", "list_pages", "discovered", "stalled", "migrated")


def add_up(summary: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The coordinator's reply: its own part's counts plus those of the parts that reported."""
    out = dict(summary)
    for other in parts:
        for key in COUNTS:
            out[key] = int(out.get(key) or 0) + int(other.get(key) or 0)
    return out
