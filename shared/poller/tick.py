"""One poll tick: publish what earlier ticks left unpublished, then observe every due job — by GET, or
by the list of its watched scope — and commit (and publish) only what changed.

The GET path's due records are read in chunks, each in a worker thread, and ``concurrency`` workers poll
a chunk before the next is read: memory and the number of tasks stay small whatever N is. The watched
scopes are listed at the same time (``watch.py``); a record a list shows is observed by the list
instead of a GET, and what the lists show is settled once the GET phase is over. Whatever path saw a job,
``apply.py`` applies the observation (commit, publish, count).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from ..batchapi.client import BatchApiClient
from ..batchapi.names import JobName
from ..batchapi.scopes import WatchScope
from ..errors import UsageError
from ..events.outbox import Outbox
from ..events.publisher import EventPublisher
from ..log import get_logger, log
from ..record import cadence, digest
from ..record.async_store import AsyncStore
from ..record.base import Snapshot
from ..record.machine import Route
from ..record.model import SHARDS
from ..record.store import JobStore
from ..settings import Settings
from .apply import Applier
from .fanout import Part
from .summary import TickSummary
from .watch import ScopeRun
from .webhook_health import no_check

__all__ = ["Poller", "TickSummary"]

_log = get_logger("poller")
_FIRST = 64  # due records read before the first GET: the GETs start at once, the next reads go on beside them
_CHUNK = 2000  # due records read at most at a time, and waiting at most (memory stays bounded whatever N is)
_migrated: set[tuple[str, str, str, tuple[int, ...]]] = set()  # collections (per process) known migrated, per ladder


def _first_size() -> int:
    return min(_FIRST, _CHUNK)


class Poller:
    """Runs ticks. Everything it talks to is passed in."""

    def __init__(self, settings: Settings, store: JobStore, api: BatchApiClient, publisher: EventPublisher,
                 *, now: Callable[[], dt.datetime] | None = None, clock: Callable[[], float] = time.monotonic,
                 sweep: bool = True, scopes: tuple[WatchScope, ...] | None = None,
                 webhook_check: Callable[[dt.datetime], Awaitable[object]] = no_check) -> None:
        self.settings = settings
        self._store = AsyncStore(store)
        self.api = api
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self.clock = clock
        self._sweep = sweep
        self._scopes = settings.watch if scopes is None else scopes
        self.webhook_check = webhook_check  # webhook_health: at most hourly, never fails the tick
        self.outbox = Outbox(store, publisher)
        self.owner = self.outbox.owner
        self.tick_no = cadence.tick_number(self._now(), settings)

    def now(self) -> dt.datetime:
        return self._now()

    def _applier(self, deadline: float) -> Applier:
        return Applier(self.settings, self._store, self.api, self.outbox, now=self._now, tick_no=self.tick_no,
                       deadline=deadline)

    async def tick(self, *, shard_lo: int = 0, shard_hi: int = SHARDS, tick_no: int | None = None,
                   part: Part | None = None) -> TickSummary:
        """One tick over a shard range, or one ``part`` of a fanned-out tick (its shard range, its share of
        the watched scopes; only part 0 does the tick's global work). ``tick_no``: the tick's number on the
        cadence's clock (default: now's, or the part's)."""
        started = self.clock()
        deadline = started + self.settings.tick_deadline_s
        summary = TickSummary()
        if part is not None:
            shard_lo, shard_hi, tick_no = part.shard_lo, part.shard_hi, part.tick if tick_no is None else tick_no
            if part.count > 1:
                self._scopes = part.scopes(self.settings)
        fanned = part if part is not None and part.count > 1 else None  # one part of several
        global_work = fanned is None or fanned.coordinator
        self.tick_no = cadence.tick_number(self._now(), self.settings) if tick_no is None else tick_no
        await self._migrate(summary)
        apply = self._applier(deadline)
        # The due-records query, the listings and the GETs start at once, beside the outbox work of
        # earlier ticks. What the GETs see is applied once that work is over (``Applier.outbox_done``): a
        # job's events are never flushed by both at once, and a new change is published after every older
        # unpublished event of its job.
        runs = [ScopeRun(scope, self.settings, self._store, self.api, apply, self.clock) for scope in self._scopes]
        listings = [asyncio.create_task(run.read_listing(summary, deadline)) for run in runs]
        take = self._due_reader(shard_lo, shard_hi)
        first = asyncio.create_task(self._store.run(take, _first_size()))
        apply.outbox_done = asyncio.Event()
        background: asyncio.Task[dict[str, bool] | None] | None = None
        if global_work:
            background = asyncio.create_task(self._global_work(summary, deadline, apply.outbox_done))
        else:
            apply.outbox_done.set()  # only the part that does the global work has an outbox phase
        try:
            await self._poll(first, take, runs, apply, summary, deadline)
        finally:
            known = await background if background is not None else None
        await asyncio.gather(*listings)
        for run in runs:
            await run.settle(summary)
        if known is not None:
            await self._retire_scopes(summary, known)
        if global_work:
            await self.webhook_check(self._now())
        summary.duration_s = self.clock() - started
        fields = {"part": fanned.index, "parts": fanned.count} if fanned is not None else {}
        await self._store.heartbeat(summary.as_dict(), self._now(), fanned.index if fanned is not None else None,
                                    self.tick_no)
        log(_log, logging.INFO, "tick finished", **summary.as_dict(), **fields)
        return summary

    async def _migrate(self, summary: TickSummary) -> None:
        """Records of an earlier version get their new fields (once per collection and ladder)."""
        ladder = cadence.ladder(self.settings)
        where = (self.settings.project, self.settings.database, self.settings.collection, ladder)
        if where not in _migrated and not await self._store.migrated(ladder):
            summary.migrated = await self._store.migrate(self._now(), ladder)
            log(_log, logging.INFO, "records of an earlier version given their new fields", records=summary.migrated)
        _migrated.add(where)

    async def _retire_scopes(self, summary: TickSummary, known: dict[str, bool]) -> None:
        """Scopes no longer in ``RELAY_WATCH`` (of the ``known`` ones): their watched records go back to the
        GET path."""
        watched = {scope.id for scope in self.settings.watch}
        try:
            for scope_id, retired in known.items():
                if scope_id not in watched and not retired:
                    moved = await self._store.retire_scope(scope_id)
                    log(_log, logging.INFO, "scope no longer watched; its jobs go back to the GET path",
                        scope=scope_id, jobs=moved)
        except Exception as exc:  # noqa: BLE001 - retried next tick
            summary.errors += 1
            log(_log, logging.ERROR, "retiring scopes failed", error=f"{type(exc).__name__}: {exc}"[:300])

    # -- phase 1: the outbox of earlier ticks ------------------------------------------------------------
    async def _global_work(self, summary: TickSummary, deadline: float, done: asyncio.Event) -> dict[str, bool] | None:
        """What only one part of a tick does, beside its GETs: the sweep of stuck copies and the republishing
        of what earlier ticks left unpublished (``done`` is set when they are over, whatever happened),
        then the read of the known scopes (returned; None if it failed) for ``_retire_scopes``."""
        try:
            if self._sweep:
                try:
                    summary.swept = await self._store.fail_stuck_copies(self._now())
                except Exception as exc:  # noqa: BLE001 - the sweep is retried next tick; polling goes on
                    summary.errors += 1
                    log(_log, logging.ERROR, "sweep failed", error=f"{type(exc).__name__}: {exc}"[:300])
            await self._republish(summary, deadline)
        finally:
            done.set()
        try:
            return await self._store.known_scopes()
        except Exception as exc:  # noqa: BLE001 - retried next tick
            summary.errors += 1
            log(_log, logging.ERROR, "retiring scopes failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return None

    async def _republish(self, summary: TickSummary, deadline: float) -> None:
        snaps = await self._store.unpublished()
        for snap in snaps:
            if self.clock() >= deadline:
                return
            try:
                if not await self._store.take_publish_lease(snap, self.owner, self._now()):
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
    def _due_reader(self, lo: int, hi: int) -> Callable[[int], list[Snapshot]]:
        """Reads the due records (each call, in a worker thread: up to ``size`` more, short or empty at the
        end). The reads go on beside the GETs; a thread decoding documents while the event loop polls slows
        both down (they take turns with the interpreter lock), which ``stream_snapshots`` keeps small by
        decoding each document once, straight from the protobuf (see docs/benchmarks.md)."""
        start = lo + secrets.randbelow(max(hi - lo, 1))
        records = self._store.sync.due(start=start, lo=lo, hi=hi,
                                       slots=cadence.due_slots(self.tick_no, self.settings))
        seen: set[str] = set()  # a job stepping up to a slot queried later in this tick is polled once

        def take(size: int) -> list[Snapshot]:
            chunk: list[Snapshot] = []
            for snap in records:
                if snap.id not in seen:
                    seen.add(snap.id)
                    chunk.append(snap)
                    if len(chunk) >= size:
                        break
            return chunk

        return take

    async def _poll(self, first: asyncio.Task[list[Snapshot]], take: Callable[[int], list[Snapshot]],
                    runs: list[ScopeRun], apply: Applier, summary: TickSummary, deadline: float) -> None:
        """Poll the due records as they are read, ``concurrency`` at a time; past the deadline the rest are
        counted as ``deferred``. ``first`` reads the first page: the GETs start as soon as it is there, and
        the next reads (4 times larger each, up to ``_CHUNK``) go on beside them while fewer than ``_CHUNK``
        records wait, so at most ``2 * _CHUNK`` are held whatever N is."""
        queue: asyncio.Queue[Snapshot | None] = asyncio.Queue()
        room = asyncio.Event()  # set when fewer than _CHUNK records wait
        workers = self.settings.poll_concurrency

        async def feed() -> None:
            size = _first_size()
            try:
                chunk = await first
                while True:
                    for snap in chunk:
                        queue.put_nowait(snap)
                    if len(chunk) < size:
                        return
                    size = min(size * 4, _CHUNK)
                    while queue.qsize() >= _CHUNK:
                        room.clear()
                        await room.wait()
                    chunk = await self._store.run(take, size)
            finally:
                for _ in range(workers):
                    queue.put_nowait(None)  # each worker stops after the records read before

        async def worker() -> None:
            while (snap := await queue.get()) is not None:
                if queue.qsize() < _CHUNK:
                    room.set()
                if self.clock() >= deadline:
                    summary.deferred += 1
                    continue
                await self._poll_one(snap, runs, apply, summary, deadline)

        feeder = asyncio.create_task(feed())
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        except BaseException:
            feeder.cancel()
            raise
        await feeder  # a failed read fails the tick, after the records read before it were polled

    async def _poll_one(self, snap: Snapshot, runs: list[ScopeRun], apply: Applier, summary: TickSummary,
                        deadline: float) -> None:
        try:
            job = JobName.parse(snap.name)
        except UsageError as exc:
            await apply.error(snap, "bad_name", str(exc), summary)
            return
        run = next((r for r in runs if r.scope.covers(job)), None)
        if run is not None:
            await run.listed.wait()
            item = run.match(job)
            if item is not None:
                run.handed[item.key] = snap  # the list observes it (after the GET phase), not a GET
                return
        await apply.fetch(snap, job, summary, deadline)

    # -- a webhook's nudge -----------------------------------------------------------------------------------
    async def nudge(self, name: str, deadline_s: float) -> str:
        """A webhook's nudge (A9): fetch this one batch now and apply it exactly as a tick's poll of it
        (commit, outbox, publish). A batch without a record is tracked first when ``gemini`` is a watched
        scope, and otherwise ignored (nothing written). Returns what happened: ``changed``, ``updated``,
        ``unchanged``, ``discovered``, ``ignored`` or ``fetch_failed``."""
        summary = TickSummary()
        apply = self._applier(self.clock() + deadline_s)
        job = JobName.parse(name)
        snap = await self._store.snapshot(job.name)
        if snap is None:
            return await self._nudge_untracked(job, apply, summary)
        if snap.record.terminal:
            return "unchanged"  # finished: nothing a fetch could change
        await apply.fetch(snap, job, summary, apply.deadline, via="webhook")
        after = await self._store.snapshot(job.name)
        if after is not None and after.record.poll_slot not in ("", cadence.EVERY_TICK):
            await self._store.set_slot(after, cadence.EVERY_TICK)  # nudged: due every tick
        if summary.errors or summary.deferred:
            return "fetch_failed"
        return "changed" if summary.changed else "updated" if summary.updated else "unchanged"

    async def _nudge_untracked(self, job: JobName, apply: Applier, summary: TickSummary) -> str:
        scope = next((s for s in self.settings.watch if s.api == job.api and s.covers(job)), None)
        if scope is None or await self._store.tombstoned([job.name]):
            return "ignored"
        try:
            status = await self.api.get_status(job, apply.deadline)
        except Exception as exc:  # noqa: BLE001 - nothing is written for a job we could not see
            log(_log, logging.WARNING, "nudged batch could not be fetched", job=job.name,
                error=f"{type(exc).__name__}: {exc}"[:300])
            return "fetch_failed"
        route = Route(scope.id, digest.part_of(job.job_id))
        change = await apply.discover(job, status, route, summary, via="webhook")
        return "unchanged" if change is None else "discovered"  # None: tracked meanwhile
