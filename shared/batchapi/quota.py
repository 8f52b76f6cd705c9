"""A token bucket per quota region: Vertex allows about 600 resource-management calls per minute per
region. The bucket holds one minute of calls, so a once-a-minute tick may spend them at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..errors import DeadlineExceeded


class RegionLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # region -> (tokens, last refill)

    def _take(self, region: str) -> float:
        """Take a token now and return 0, or return the seconds until one is available."""
        now = self._clock()
        tokens, last = self._buckets.get(region, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[region] = (tokens - 1.0, now)
            return 0.0
        self._buckets[region] = (tokens, now)
        return (1.0 - tokens) / self.rate

    async def acquire(self, region: str, deadline: float) -> None:
        while (wait := self._take(region)) > 0:
            if self._clock() + wait > deadline:
                raise DeadlineExceeded(f"quota for {region} exhausted until after the tick deadline")
            await asyncio.sleep(wait)
