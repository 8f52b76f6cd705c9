"""One poll tick: publish what earlier ticks left unpublished, then fetch every due job's status
concurrently and commit (and publish) only what changed.

The record query runs in a worker thread and feeds a queue; ``concurrency`` workers take jobs from it,
so fetching starts with the first page and the number of tasks stays small whatever N is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..batchapi.client import BatchApiClient
from ..batchapi.names import JobName
from ..batchapi.wire import JobStatus
from ..errors import BadResponseError, DeadlineExceeded, RelayError, UsageError
from ..events.outbox import Outbox
from ..events.publisher import EventPublisher
from ..log import get_logger, log, redact
from ..record import machine
from ..record.machine import Change, PollResult
from ..record.model import SHARDS
from ..record.store import JobStore, Snapshot
from ..settings import Settings

_log = get_logger("poller")
_DONE = object()


@dataclasses.dataclass
class TickSummary:
    polled: int = 0
    changed: int = 0
    published: int = 0
    errors: int = 0
    duration_s: float = 0.0
    updated: int = 0
    deferred: int = 0
    republished: int = 0
    lost: int = 0
    swept: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["duration_s"] = round(self.duration_s, 3)
        return out


class Poller:
    """Runs ticks. Everything it talks to is passed in."""

    def __init__(self, settings: Settings, store: JobStore, api: BatchApiClient, publisher: EventPublisher,
                 *, now: Callable[[], dt.datetime] | None = None, clock: Callable[[], float] = time.monotonic,
                 sweep: bool = True) -> None:
        self._settings = settings
        self._store = store
        self._api = api
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._clock = clock
        self._sweep = sweep
        self.outbox = Outbox(store, publisher)
        self.owner = self.outbox.owner

    async def tick(self, *, shard_lo: int = 0, shard_hi: int = SHARDS) -> TickSummary:
        started = self._clock()
        deadline = started + self._settings.tick_deadline_s
        summary = TickSummary()
        # The due-records query starts first: its first page takes the emulator/Firestore a while, and
        # the outbox work below overlaps with it (ordering per job holds either way: a new change is
        # published after every older unpublished event of its job).
        queue, producer = self._start_query(shard_lo, shard_hi)
        if self._sweep:
            try:
                summary.swept = await asyncio.to_thread(self._store.fail_stuck_copies, self._now())
            except Exception as exc:  # noqa: BLE001 - the sweep is retried next tick; polling goes on
                summary.errors += 1
                log(_log, logging.ERROR, "sweep failed", error=f"{type(exc).__name__}: {exc}"[:300])
        await self._republish(summary, deadline)
        await self._poll(queue, producer, summary, deadline)
        summary.duration_s = self._clock() - started
        await asyncio.to_thread(self._store.heartbeat, summary.as_dict(), self._now())
        log(_log, logging.INFO, "tick finished", **summary.as_dict())
        return summary

    # -- phase 1: the outbox of earlier ticks ------------------------------------------------------------
    async def _republish(self, summary: TickSummary, deadline: float) -> None:
        snaps = await asyncio.to_thread(lambda: list(self._store.unpublished()))
        for snap in snaps:
            if self._clock() >= deadline:
                return
            try:
                if not await asyncio.to_thread(self._store.take_publish_lease, snap, self.owner, self._now()):
                    continue
                sent, _left = await self.outbox.flush(snap.record)
            except Exception as exc:  # noqa: BLE001 - e.g. ABORTED on a record a dead instance holds locked
                summary.errors += 1
                log(_log, logging.ERROR, "republish failed", job=snap.name,
                    error=f"{type(exc).__name__}: {exc}"[:300])
                continue
            summary.republished += sent
            summary.published += sent

    # -- phase 2: poll the due jobs ------------------------------------------------------------------------
    def _start_query(self, lo: int, hi: int) -> tuple[asyncio.Queue, asyncio.Task]:
        """Stream due records from a worker thread into a queue, ending with one _DONE per worker."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        start = lo + secrets.randbelow(max(hi - lo, 1))
        workers_n = self._settings.poll_concurrency

        def produce() -> None:
            try:
                for snap in self._store.due(start=start, lo=lo, hi=hi):
                    loop.call_soon_threadsafe(queue.put_nowait, snap)
            finally:
                for _ in range(workers_n):
                    loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        return queue, asyncio.create_task(asyncio.to_thread(produce))

    async def _poll(self, queue: asyncio.Queue, producer: asyncio.Task, summary: TickSummary,
                    deadline: float) -> None:
        async def worker() -> None:
            while (snap := await queue.get()) is not _DONE:
                if self._clock() >= deadline:
                    summary.deferred += 1
                    continue
                await self._poll_one(snap, summary, deadline)

        await asyncio.gather(*(worker() for _ in range(self._settings.poll_concurrency)))
        await producer

    async def _poll_one(self, snap: Snapshot, summary: TickSummary, deadline: float) -> None:
        try:
            job = JobName.parse(snap.name)
        except UsageError as exc:
            await self._error(snap, "bad_name", str(exc), summary)
            return
        try:
            status = await self._api.get_status(job, deadline)
        except DeadlineExceeded:
            summary.deferred += 1
            return
        except RelayError as exc:
            summary.polled += 1
            await self._error(snap, exc.kind, str(exc), summary)
            return
        except Exception as exc:  # noqa: BLE001 - garbage from an API must never stop the tick
            summary.polled += 1
            await self._error(snap, BadResponseError.kind, f"{type(exc).__name__}: {exc}", summary)
            return
        summary.polled += 1
        await self.observe(snap, status, summary)

    async def observe(self, snap: Snapshot, status: JobStatus, summary: TickSummary) -> PollResult:
        """Apply one observation of a job (from any path) and publish what it changed."""
        if not machine.needs_write(snap.record, status):
            return PollResult.UNCHANGED  # the common case: one read, no write, no thread hop
        try:
            result, change = await asyncio.to_thread(self._store.apply_status, snap, status, self._now(), self.owner)
        except Exception as exc:  # noqa: BLE001 - a reply Firestore cannot store must not stop the tick
            await self._error(snap, BadResponseError.kind,
                              f"reply cannot be stored: {type(exc).__name__}: {exc}", summary)
            return PollResult.ERROR
        name = snap.name
        if result == PollResult.CHANGED:
            summary.changed += 1
            log(_log, logging.INFO, "state changed", job=name, api=snap.record.api, state=status.state,
                previous_state=snap.record.state, version=change.record.version)
        elif result == PollResult.UPDATED:
            summary.updated += 1
        elif result == PollResult.CONFLICT:
            log(_log, logging.INFO, "record changed since it was read; the next tick looks again", job=name)
        await self._after_commit(name, change, summary)
        return result

    async def _error(self, snap: Snapshot, kind: str, message: str, summary: TickSummary) -> None:
        summary.errors += 1
        message = redact(message)[:500]  # stored on the record (and in a lost event): redacted, then cut
        log(_log, logging.WARNING, "status fetch failed", job=snap.name, api=snap.record.api, kind=kind,
            error=message)
        try:
            result, change = await asyncio.to_thread(self._store.record_error, snap, kind, message,
                                                     self._now(), self.owner)
        except Exception as exc:  # noqa: BLE001 - one record's write must not stop the others
            log(_log, logging.ERROR, "could not record poll error", job=snap.name, error=repr(exc)[:300])
            return
        if result == PollResult.LOST:
            summary.lost += 1
            log(_log, logging.WARNING, "job lost", job=snap.name, api=snap.record.api)
        await self._after_commit(snap.name, change, summary)

    async def _after_commit(self, name: str, change: Change | None, summary: TickSummary) -> None:
        """Publish at once what a commit put in the outbox, if the commit took the publish lease."""
        if change is None or not (change.events and change.lease):
            return
        try:
            sent, _left = await self.outbox.flush(change.record)
            summary.published += sent
        except Exception as exc:  # noqa: BLE001 - unpublished events stay in the outbox for the next tick
            summary.errors += 1
            log(_log, logging.ERROR, "publish step failed", job=name, error=f"{type(exc).__name__}: {exc}"[:300])
