"""A token bucket per quota region: Vertex allows about 600 resource-management calls per minute per
region of a project. The bucket holds one minute of calls, so a once-a-minute tick may spend them at once.

The quota is the project's, not an invocation's: the K parts of a fanned-out tick run side by side, so
each gets its ``share`` of ``RELAY_VERTEX_REGION_QPM``, and the shares add up to it exactly."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from ..errors import DeadlineExceeded


def share(per_minute: int, index: int, count: int) -> int:
    """Part ``index`` of ``count``'s whole share of ``per_minute`` calls: ``per_minute // count``, one more
    for the first ``per_minute % count`` parts, so the ``count`` shares add up to ``per_minute``."""
    if not 0 <= index < count:
        raise ValueError(f"part {index} is not one of {count}")
    return per_minute // count + (1 if index < per_minute % count else 0)


class RegionLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # region -> (tokens, last refill)

    def _take(self, region: str) -> float:
        """Take a token now and return 0, or return the seconds until one is available (infinite for a
        share of nothing: a part of more parts than the quota has calls a minute)."""
        now = self._clock()
        tokens, last = self._buckets.get(region, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[region] = (tokens - 1.0, now)
            return 0.0
        self._buckets[region] = (tokens, now)
        return (1.0 - tokens) / self.rate if self.rate > 0 else math.inf

    async def acquire(self, region: str, deadline: float) -> None:
        while (wait := self._take(region)) > 0:
            if self._clock() + wait > deadline:
                raise DeadlineExceeded(f"quota for {region} exhausted until after the tick deadline")
            await asyncio.sleep(wait)
