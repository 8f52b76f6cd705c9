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
from collections.abc import Awaitable, Callable, Iterator

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
_CHUNK = 2000  # due records read, then polled, at a time (memory stays bounded whatever N is)
_migrated: set[tuple[str, str, str, tuple[int, ...]]] = set()  # collections (per process) known migrated, per ladder


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
        # The due-records query and the listings start first: their first pages take a while, and the
        # outbox work below overlaps with them (ordering per job holds either way: a new change is
        # published after every older unpublished event of its job).
        runs = [ScopeRun(scope, self.settings, self._store, self.api, apply, self.clock) for scope in self._scopes]
        listings = [asyncio.create_task(run.read_listing(summary, deadline)) for run in runs]
        take = self._due_reader(shard_lo, shard_hi)
        first = asyncio.create_task(self._store.run(take))
        if self._sweep and global_work:
            try:
                summary.swept = await self._store.fail_stuck_copies(self._now())
            except Exception as exc:  # noqa: BLE001 - the sweep is retried next tick; polling goes on
                summary.errors += 1
                log(_log, logging.ERROR, "sweep failed", error=f"{type(exc).__name__}: {exc}"[:300])
        if global_work:
            await self._republish(summary, deadline)
        await self._poll(first, take, runs, apply, summary, deadline)
        await asyncio.gather(*listings)
        for run in runs:
            await run.settle(summary)
        if global_work:
            await self._retire_scopes(summary)
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

    async def _retire_scopes(self, summary: TickSummary) -> None:
        """Scopes no longer in ``RELAY_WATCH``: their watched records go back to the GET path."""
        watched = {scope.id for scope in self.settings.watch}
        try:
            known = await self._store.known_scopes()
            for scope_id, retired in known.items():
                if scope_id not in watched and not retired:
                    moved = await self._store.retire_scope(scope_id)
                    log(_log, logging.INFO, "scope no longer watched; its jobs go back to the GET path",
                        scope=scope_id, jobs=moved)
        except Exception as exc:  # noqa: BLE001 - retried next tick
            summary.errors += 1
            log(_log, logging.ERROR, "retiring scopes failed", error=f"{type(exc).__name__}: {exc}"[:300])

    # -- phase 1: the outbox of earlier ticks ------------------------------------------------------------
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
    def _due_reader(self, lo: int, hi: int) -> Callable[[], list[Snapshot]]:
        """Reads the due records ``_CHUNK`` at a time (each call: the next chunk, short or empty at the end).
        A chunk is read in a worker thread while the polls wait, not beside them: a thread decoding
        documents while the event loop polls makes both slower than the two one after the other (the
        threads take turns with the interpreter lock; see docs/benchmarks.md)."""
        start = lo + secrets.randbelow(max(hi - lo, 1))
        records = self._store.sync.due(start=start, lo=lo, hi=hi,
                                       slots=cadence.due_slots(self.tick_no, self.settings))
        seen: set[str] = set()  # a job stepping up to a slot queried later in this tick is polled once

        def take() -> list[Snapshot]:
            chunk: list[Snapshot] = []
            for snap in records:
                if snap.id not in seen:
                    seen.add(snap.id)
                    chunk.append(snap)
                    if len(chunk) == _CHUNK:
                        break
            return chunk

        return take

    async def _poll(self, first: asyncio.Task[list[Snapshot]], take: Callable[[], list[Snapshot]],
                    runs: list[ScopeRun], apply: Applier, summary: TickSummary, deadline: float) -> None:
        """Poll the due records chunk by chunk, ``concurrency`` at a time; past the deadline the rest are
        counted as ``deferred``."""
        async def worker(jobs: Iterator[Snapshot]) -> None:
            for snap in jobs:
                if self.clock() >= deadline:
                    summary.deferred += 1
                    continue
                await self._poll_one(snap, runs, apply, summary, deadline)

        chunk = await first
        while chunk:
            jobs = iter(chunk)  # shared by the workers: each record polled once
            await asyncio.gather(*(worker(jobs) for _ in range(min(self.settings.poll_concurrency, len(chunk)))))
            chunk = await self._store.run(take) if len(chunk) == _CHUNK else []

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
