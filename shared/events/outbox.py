"""Publishing from the outbox: a record's unpublished transitions (by version), then its outbox map
(``lost``, ``stalled``, ``copy``). Used by the poller, the reactor, the webhook and ``batch-relay republish``.

The caller holds the record's publish lease (``flush``) or lets ``flush_name`` take it. Published
events are marked in one transaction; on a failure the lease is given back so the next tick retries,
and nothing newer of that job goes out before the failed event.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets

from ..log import get_logger, log
from ..record import machine
from ..record.async_store import AsyncStore
from ..record.machine import Change
from ..record.model import JobRecord
from ..record.store import JobStore
from .event import Event
from .publisher import EventPublisher

_log = get_logger("outbox")


def _lag(event: Event, published_at: dt.datetime) -> float | None:
    """Seconds from the event's making (``ce-time``: the observation, or the end of a copy) to its publish."""
    try:
        made = dt.datetime.fromisoformat(event.attributes["ce-time"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return round((published_at - made).total_seconds(), 3)


class Outbox:
    def __init__(self, store: JobStore, publisher: EventPublisher, owner: str | None = None) -> None:
        self._store = AsyncStore(store)
        self._publisher = publisher
        self.owner = owner or secrets.token_hex(6)

    async def flush(self, record: JobRecord, change: Change | None = None) -> tuple[int, int]:
        """Publish one record's pending events. Returns (published, still pending). ``change``: the
        committed change that left the record so; its writer knows the events and the record's update
        time, so neither is read again unless the record was written since (then the transaction)."""
        pending = machine.pending_of_change(change) if change is not None else None
        if pending is None:
            pending = await self._store.pending_events(record)
        if not pending:
            await self._store.give_back_publish_lease(record.name, self.owner)
            return 0, 0
        ok = await self._publisher.publish_in_order([event for _, event in pending])
        if ok:
            published_at = dt.datetime.now(dt.UTC)
            for _key, event in pending[:ok]:
                log(_log, logging.INFO, "event published", job=event.job, event_id=event.id,
                    type=event.type.rsplit(".", 1)[-1], lag_s=_lag(event, published_at))
            done = pending[:ok]
            if change is None or not await self._store.mark_published_after(change, done, self.owner):
                await self._store.mark_published(record.name, done, self.owner)
        if ok < len(pending):
            await self._store.give_back_publish_lease(record.name, self.owner)
        return ok, len(pending) - ok

    async def flush_name(self, name: str, *, force: bool = False) -> tuple[int, int] | None:
        """Take the publish lease of ``name`` and flush it; None if the record is gone or another holds it."""
        snap = await self._store.snapshot(name)
        if snap is None:
            return None
        now = dt.datetime.now(dt.UTC)
        if not await self._store.take_publish_lease(snap, self.owner, now, force=force):
            return None
        return await self.flush(snap.record)
