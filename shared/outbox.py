"""Publishing from the outbox: a record's unpublished transitions (by version), then its outbox map
(``lost``, ``copy``). Used by the poller, the reactor and ``batch-relay republish``.

The caller holds the record's publish lease (``flush``) or lets ``flush_name`` take it. Published
events are marked in one transaction; on a failure the lease is released so the next tick retries,
and nothing newer of that job goes out before the failed event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from typing import Any

from .publisher import EventPublisher
from .store import JobStore


class Outbox:
    def __init__(self, store: JobStore, publisher: EventPublisher, owner: str | None = None) -> None:
        self._store = store
        self._publisher = publisher
        self.owner = owner or secrets.token_hex(6)

    async def flush(self, data: dict[str, Any]) -> tuple[int, int]:
        """Publish one record's pending events. Returns (published, still pending)."""
        pending = await asyncio.to_thread(self._store.pending_events, data)
        if not pending:
            await asyncio.to_thread(self._store.release, data["name"], self.owner)
            return 0, 0
        ok = await self._publisher.publish_in_order([event for _, event in pending])
        if ok:
            await asyncio.to_thread(self._store.mark_published, data["name"], pending[:ok], self.owner)
        if ok < len(pending):
            await asyncio.to_thread(self._store.release, data["name"], self.owner)
        return ok, len(pending) - ok

    async def flush_name(self, name: str, *, force: bool = False) -> tuple[int, int] | None:
        """Take the lease of ``name`` and flush it; None if the record is gone or another holds it."""
        snap = await asyncio.to_thread(self._store.snapshot, name)
        if snap is None:
            return None
        now = dt.datetime.now(dt.UTC)
        if not await asyncio.to_thread(self._store.claim, snap, self.owner, now, force=force):
            return None
        return await self.flush(snap.data)
