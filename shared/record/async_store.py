"""``AsyncStore``: the store for async code (the tick, the outbox, the reactor). Each method runs the
same method of the sync ``JobStore`` in a worker thread (the Firestore client blocks), so the event loop
goes on meanwhile. Reading a record the caller already holds costs no hop: use the snapshot it has."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

from ..batchapi.names import JobName
from ..batchapi.wire import JobStatus
from ..events.event import Event
from .base import Snapshot
from .digest import Digest
from .machine import Change, Claim, Outcome, PollResult, Route
from .model import JobRecord
from .store import JobStore

P = ParamSpec("P")
T = TypeVar("T")


class AsyncStore:
    def __init__(self, store: JobStore) -> None:
        self.sync = store

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` (a read or write of the sync store) in a worker thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- job records --------------------------------------------------------------------------------------
    async def load(self, name: str) -> JobRecord | None:
        return await asyncio.to_thread(self.sync.load, name)

    async def snapshot(self, name: str) -> Snapshot | None:
        return await asyncio.to_thread(self.sync.snapshot, name)

    async def snapshots(self, names: list[str]) -> dict[str, Snapshot]:
        return await asyncio.to_thread(self.sync.snapshots, names)

    async def unpublished(self) -> list[Snapshot]:
        return await asyncio.to_thread(lambda: list(self.sync.unpublished()))

    async def apply_status(self, snap: Snapshot, status: JobStatus, now: dt.datetime, owner: str,
                           route: Route | None = None, via: str = "get") -> Outcome[PollResult]:
        return await asyncio.to_thread(self.sync.apply_status, snap, status, now, owner, route, via)

    async def discover(self, job: JobName, status: JobStatus, now: dt.datetime, owner: str, route: Route,
                       via: str = "list") -> Change | None:
        return await asyncio.to_thread(self.sync.discover, job, status, now, owner, route, via)

    async def unwatch(self, snap: Snapshot) -> bool:
        return await asyncio.to_thread(self.sync.unwatch, snap)

    async def set_slot(self, snap: Snapshot, slot: str) -> bool:
        return await asyncio.to_thread(self.sync.set_slot, snap, slot)

    async def stall(self, snap: Snapshot, now: dt.datetime, owner: str) -> Change | None:
        return await asyncio.to_thread(self.sync.stall, snap, now, owner)

    async def record_error(self, snap: Snapshot, kind: str, message: str, now: dt.datetime,
                           owner: str) -> Outcome[PollResult]:
        return await asyncio.to_thread(self.sync.record_error, snap, kind, message, now, owner)

    # -- publishing ---------------------------------------------------------------------------------------
    async def take_publish_lease(self, snap: Snapshot, owner: str, now: dt.datetime, *,
                                 force: bool = False) -> bool:
        return await asyncio.to_thread(self.sync.take_publish_lease, snap, owner, now, force=force)

    async def give_back_publish_lease(self, name: str, owner: str) -> None:
        await asyncio.to_thread(self.sync.give_back_publish_lease, name, owner)

    async def pending_events(self, record: JobRecord) -> list[tuple[str, Event]]:
        return await asyncio.to_thread(self.sync.pending_events, record)

    async def mark_published(self, name: str, done: list[tuple[str, Event]], owner: str) -> None:
        await asyncio.to_thread(self.sync.mark_published, name, done, owner)

    async def mark_published_after(self, change: Change, done: list[tuple[str, Event]], owner: str) -> bool:
        return await asyncio.to_thread(self.sync.mark_published_after, change, done, owner)

    # -- the copy -----------------------------------------------------------------------------------------
    async def claim_copy(self, name: str, now: dt.datetime) -> Claim | None:
        return await asyncio.to_thread(self.sync.claim_copy, name, now)

    async def finish_copy(self, name: str, attempt: int, now: dt.datetime, **result: Any) -> Event | None:
        return await asyncio.to_thread(self.sync.finish_copy, name, attempt, now, **result)

    async def release_copy(self, name: str, attempt: int, now: dt.datetime | None = None, *,
                           waiting_since: dt.datetime | None = None) -> bool:
        return await asyncio.to_thread(self.sync.release_copy, name, attempt, now, waiting_since=waiting_since)

    async def save_rewrites(self, name: str, attempt: int, tokens: dict[str, str]) -> bool:
        return await asyncio.to_thread(self.sync.save_rewrites, name, attempt, tokens)

    async def recopy(self, name: str) -> JobRecord:
        return await asyncio.to_thread(self.sync.recopy, name)

    async def fail_stuck_copies(self, now: dt.datetime) -> int:
        return await asyncio.to_thread(self.sync.fail_stuck_copies, now)

    # -- watched scopes -----------------------------------------------------------------------------------
    async def load_scope(self, scope_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.sync.load_scope, scope_id)

    async def save_scope(self, scope_id: str, fields: dict[str, Any]) -> None:
        await asyncio.to_thread(self.sync.save_scope, scope_id, fields)

    async def known_scopes(self) -> dict[str, bool]:
        return await asyncio.to_thread(self.sync.known_scopes)

    async def retire_scope(self, scope_id: str) -> int:
        return await asyncio.to_thread(self.sync.retire_scope, scope_id)

    async def load_digest(self, scope_id: str) -> Digest:
        return await asyncio.to_thread(self.sync.load_digest, scope_id)

    async def save_digest(self, dig: Digest) -> int:
        return await asyncio.to_thread(self.sync.save_digest, dig)

    async def watched(self, scope_id: str, part: int | None = None) -> list[Snapshot]:
        return await asyncio.to_thread(lambda: list(self.sync.watched(scope_id, part)))

    async def tombstoned(self, names: list[str]) -> set[str]:
        return await asyncio.to_thread(self.sync.tombstoned, names)

    # -- heartbeats and the migration ---------------------------------------------------------------------
    async def heartbeat(self, summary: dict[str, Any], now: dt.datetime, part: int | None = None,
                        tick: int | None = None) -> None:
        await asyncio.to_thread(self.sync.heartbeat, summary, now, part, tick)

    async def part_heartbeats(self, tick: int, parts: Iterable[int]) -> dict[int, dict[str, Any]]:
        return await asyncio.to_thread(self.sync.part_heartbeats, tick, parts)

    async def migrated(self, ladder: tuple[int, ...]) -> bool:
        return await asyncio.to_thread(self.sync.migrated, ladder)

    async def migrate(self, now: dt.datetime, ladder: tuple[int, ...]) -> int:
        return await asyncio.to_thread(self.sync.migrate, now, ladder)
