"""The webhook ids this instance has handled lately: a repeated delivery (the Gemini API delivers at least
once, and retries what it thinks failed) is answered 2xx at once, without fetching the batch again.

Instance-local and bounded: a delivery is verified only within ``verify.TOLERANCE_S`` of its timestamp, so
an id needs remembering for about twice that long; past ``capacity`` ids the oldest are forgotten first. An
id this instance does not remember (another instance's, or one forgotten) only costs one more fetch,
which changes nothing: a nudge is never a state.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from .verify import TOLERANCE_S


class RecentIds:
    def __init__(self, *, ttl_s: float = 2 * TOLERANCE_S + 60, capacity: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._clock = clock
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def seen(self, webhook_id: str) -> bool:
        """Whether ``webhook_id`` was handled within the last ``ttl_s``."""
        with self._lock:
            self._expire()
            return webhook_id in self._seen

    def add(self, webhook_id: str) -> None:
        with self._lock:
            self._seen[webhook_id] = self._clock() + self._ttl_s
            self._seen.move_to_end(webhook_id)
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)

    def _expire(self) -> None:
        now = self._clock()
        while self._seen:
            first, until = next(iter(self._seen.items()))
            if until > now:
                return
            del self._seen[first]
