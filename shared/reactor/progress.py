"""A copy's rewrites that outlive one delivery: the ``rewriteToken`` of each object still being rewritten,
kept on the record (``copy_rewrites``) so that a redelivery resumes each rewrite where the last one stood,
and the deadline past which the copy issues no more rewrite calls (the delivery then ends unfinished and
Pub/Sub redelivers it: kind ``rewrite_unfinished``).

A cross-location or cross-storage-class rewrite of a large object takes many calls, longer than the
reactor's timeout; without the tokens every redelivery would start it over. The map is bounded so the
record stays far below Firestore's 1 MiB document limit: at most ``MAX_TOKENS`` entries (the rewrite
concurrency), tokens of at most ``MAX_TOKEN_CHARS`` (a longer one is not kept: that object would start over).
It is written at most every ``SAVE_EVERY_S`` during the copy, and once more when the copy stops unfinished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..log import get_logger, log

_log = get_logger("reactor")

SAVE_EVERY_S = 30.0
MAX_TOKENS = 32
MAX_TOKEN_CHARS = 4096
DEADLINE_MARGIN_S = 90.0  # between the last rewrite call and the copy lease's end: the save, the release


def rewrite_budget_s(copy_lease_s: float) -> float:
    """How long a delivery issues rewrite calls: the copy lease less ``DEADLINE_MARGIN_S``, at least half
    the lease (with the default 600 s lease, 510 s: inside the reactor's 540 s timeout)."""
    return max(copy_lease_s - DEADLINE_MARGIN_S, copy_lease_s / 2)


def bounded(tokens: Mapping[str, str]) -> dict[str, str]:
    """The tokens a record may hold: strings, at most ``MAX_TOKENS``, none longer than ``MAX_TOKEN_CHARS``."""
    kept: dict[str, str] = {}
    for name, token in tokens.items():
        if len(kept) >= MAX_TOKENS:
            break
        if isinstance(name, str) and isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_CHARS:
            kept[name] = token
    return kept


class RewriteProgress:
    """The rewrite tokens of one copy delivery, by destination object name. ``saved``: what the record holds
    (the last delivery's); ``save``: writes the map on the record (the caller checks it still owns the copy);
    ``budget_s``: from now, when ``stopped`` turns True."""

    def __init__(self, saved: Mapping[str, str], save: Callable[[dict[str, str]], Awaitable[object]],
                 budget_s: float, *, clock: Callable[[], float] = time.monotonic,
                 save_every_s: float = SAVE_EVERY_S, log_fields: Mapping[str, Any] | None = None) -> None:
        self._tokens = bounded(saved)
        self._stored = dict(self._tokens)
        self._save = save
        self._clock = clock
        self._deadline = clock() + budget_s
        self._save_every_s = save_every_s
        self._last_save = clock()
        self._lock = asyncio.Lock()
        self._log_fields = dict(log_fields or {})

    def resume(self, name: str) -> str | None:
        """The token to resume ``name``'s rewrite from, if the last delivery left one."""
        return self._tokens.get(name)

    def stopped(self) -> bool:
        """Whether the delivery is past its deadline: no more rewrite calls."""
        return self._clock() >= self._deadline

    @property
    def pending(self) -> int:
        """Objects whose rewrite has a token kept (started, not finished)."""
        return len(self._tokens)

    async def note(self, name: str, token: str) -> None:
        """A new token for ``name``; the map is saved if the last save is ``SAVE_EVERY_S`` old."""
        if len(token) > MAX_TOKEN_CHARS or (name not in self._tokens and len(self._tokens) >= MAX_TOKENS):
            self._tokens.pop(name, None)
        else:
            self._tokens[name] = token
        if self._clock() - self._last_save >= self._save_every_s:
            await self.try_flush()

    def done(self, name: str) -> None:
        """``name``'s rewrite finished: its token is dropped (from the record at the next save)."""
        self._tokens.pop(name, None)

    async def flush(self) -> None:
        """Save the map if it changed since the last save."""
        async with self._lock:
            self._last_save = self._clock()
            if self._tokens == self._stored:
                return
            tokens = dict(self._tokens)
            await self._save(tokens)
            self._stored = tokens

    async def try_flush(self) -> bool:
        """``flush``, a failure logged and left to the next save: the tokens only help a redelivery resume,
        so a failed save never stops the copy (the redelivery resumes from the last save that went through)."""
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - any failure of the save: logged, the copy goes on
            log(_log, logging.WARNING, "rewrite tokens not saved; a redelivery resumes from the last save",
                rewrites=len(self._tokens), error=f"{type(exc).__name__}: {exc}"[:300], **self._log_fields)
            return False
        return True
