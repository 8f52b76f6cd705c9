"""One poll tick: publish what earlier ticks left unpublished, then observe every due job — by GET, or
by the list of its watched scope — and commit (and publish) only what changed.

The GET path's due records are read in chunks, each in a worker thread, and ``concurrency`` workers poll
a chunk before the next is read: memory and the number of tasks stay small whatever N is. The watched
scopes are listed at the same time (``watch.py``); a record a list shows is observed by the list
instead of a GET, and what the lists show is settled once the GET phase is over.
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
from ..batchapi.scopes import WatchScope
from ..batchapi.wire import JobStatus
from ..errors import BadResponseError, DeadlineExceeded, RelayError, UsageError
from ..events.outbox import Outbox
from ..events.publisher import EventPublisher
from ..log import get_logger, log, storable
from ..record import cadence, machine
from ..record.machine import Change, PollResult, Route
from ..record.model import SHARDS, JobRecord
from ..record.store import JobStore, Snapshot
from ..settings import Settings
from .fanout import Part
from .watch import ScopeRun

_log = get_logger("poller")
_CHUNK = 2000  # due records read, then polled, at a time (memory stays bounded whatever N is)
_migrated: set[tuple] = set()  # collections (per process) known to hold this version's records, on this ladder


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
    listed: int = 0  # jobs the watched scopes' lists showed
    list_pages: int = 0
    discovered: int = 0  # jobs found in a watched scope and tracked
    stalled: int = 0  # stalled events committed
    migrated: int = 0  # records written before this version, given their new fields

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["duration_s"] = round(self.duration_s, 3)
        return out


class Poller:
    """Runs ticks. Everything it talks to is passed in."""

    def __init__(self, settings: Settings, store: JobStore, api: BatchApiClient, publisher: EventPublisher,
                 *, now: Callable[[], dt.datetime] | None = None, clock: Callable[[], float] = time.monotonic,
                 sweep: bool = True, scopes: tuple[WatchScope, ...] | None = None) -> None:
        self.settings = settings
        self._store = store
        self.api = api
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self.clock = clock
        self._sweep = sweep
        self._scopes = settings.watch if scopes is None else scopes
        self.outbox = Outbox(store, publisher)
        self.owner = self.outbox.owner
        self._runs: list[ScopeRun] = []
        self._deadline = 0.0
        self.tick_no = cadence.tick_number(self._now(), settings)

    @property
    def _settings(self) -> Settings:
        return self.settings

    def now(self) -> dt.datetime:
        return self._now()

    async def tick(self, *, shard_lo: int = 0, shard_hi: int = SHARDS, tick_no: int | None = None,
                   part: Part | None = None) -> TickSummary:
        """One tick over a shard range, or one ``part`` of a fanned-out tick (its shard range, its share of
        the watched scopes; only part 0 does the tick's global work). ``tick_no``: the tick's number on the
        cadence's clock (default: now's, or the part's)."""
        started = self.clock()
        deadline = self._deadline = started + self._settings.tick_deadline_s
        summary = TickSummary()
        if part is not None:
            shard_lo, shard_hi, tick_no = part.shard_lo, part.shard_hi, part.tick if tick_no is None else tick_no
            if part.count > 1:
                self._scopes = part.scopes(self.settings)
        fanned = part is not None and part.count > 1
        global_work = not fanned or part.coordinator
        self.tick_no = cadence.tick_number(self._now(), self.settings) if tick_no is None else tick_no
        ladder = cadence.ladder(self.settings)
        where = (self.settings.project, self.settings.database, self.settings.collection, ladder)
        if where not in _migrated and not await asyncio.to_thread(self._store.migrated, ladder):
            summary.migrated = await asyncio.to_thread(self._store.migrate, self._now(), ladder)
            log(_log, logging.INFO, "records of an earlier version given their new fields", records=summary.migrated)
        _migrated.add(where)
        # The due-records query and the listings start first: their first pages take a while, and the
        # outbox work below overlaps with them (ordering per job holds either way: a new change is
        # published after every older unpublished event of its job).
        self._runs = [ScopeRun(scope, self, self._store) for scope in self._scopes]
        listings = [asyncio.create_task(run.list(summary, deadline)) for run in self._runs]
        take = self._due_reader(shard_lo, shard_hi)
        first = asyncio.create_task(asyncio.to_thread(take))
        if self._sweep and global_work:
            try:
                summary.swept = await asyncio.to_thread(self._store.fail_stuck_copies, self._now())
            except Exception as exc:  # noqa: BLE001 - the sweep is retried next tick; polling goes on
                summary.errors += 1
                log(_log, logging.ERROR, "sweep failed", error=f"{type(exc).__name__}: {exc}"[:300])
        if global_work:
            await self._republish(summary, deadline)
        await self._poll(first, take, summary, deadline)
        await asyncio.gather(*listings)
        for run in self._runs:
            await run.settle(summary)
        if global_work:
            await self._retire_scopes(summary)
        summary.duration_s = self.clock() - started
        fields = {"part": part.index, "parts": part.count} if fanned else {}
        await asyncio.to_thread(self._store.heartbeat, summary.as_dict(), self._now(),
                                part.index if fanned else None, self.tick_no)
        log(_log, logging.INFO, "tick finished", **summary.as_dict(), **fields)
        return summary

    async def _retire_scopes(self, summary: TickSummary) -> None:
        """Scopes no longer in ``RELAY_WATCH``: their watched records go back to the GET path."""
        watched = {scope.id for scope in self.settings.watch}
        try:
            known = await asyncio.to_thread(self._store.known_scopes)
            for scope_id, retired in known.items():
                if scope_id not in watched and not retired:
                    moved = await asyncio.to_thread(self._store.retire_scope, scope_id)
                    log(_log, logging.INFO, "scope no longer watched; its jobs go back to the GET path",
                        scope=scope_id, jobs=moved)
        except Exception as exc:  # noqa: BLE001 - retried next tick
            summary.errors += 1
            log(_log, logging.ERROR, "retiring scopes failed", error=f"{type(exc).__name__}: {exc}"[:300])

    # -- phase 1: the outbox of earlier ticks ------------------------------------------------------------
    async def _republish(self, summary: TickSummary, deadline: float) -> None:
        snaps = await asyncio.to_thread(lambda: list(self._store.unpublished()))
        for snap in snaps:
            if self.clock() >= deadline:
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
    def _due_reader(self, lo: int, hi: int) -> Callable[[], list[Snapshot]]:
        """Reads the due records ``_CHUNK`` at a time (each call: the next chunk, short or empty at the end).
        A chunk is read in a worker thread while the polls wait, not beside them: a thread decoding
        documents while the event loop polls makes both slower than the two one after the other (the
        threads take turns with the interpreter lock; see docs/benchmarks.md)."""
        start = lo + secrets.randbelow(max(hi - lo, 1))
        records = self._store.due(start=start, lo=lo, hi=hi, slots=cadence.due_slots(self.tick_no, self.settings))
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

    async def _poll(self, first: asyncio.Task, take: Callable[[], list[Snapshot]], summary: TickSummary,
                    deadline: float) -> None:
        """Poll the due records chunk by chunk, ``concurrency`` at a time; past the deadline the rest are
        counted as ``deferred``."""
        async def worker(jobs) -> None:
            for snap in jobs:
                if self.clock() >= deadline:
                    summary.deferred += 1
                    continue
                await self._poll_one(snap, summary, deadline)

        chunk = await first
        while chunk:
            jobs = iter(chunk)  # shared by the workers: each record polled once
            await asyncio.gather(*(worker(jobs) for _ in range(min(self._settings.poll_concurrency, len(chunk)))))
            chunk = await asyncio.to_thread(take) if len(chunk) == _CHUNK else []

    async def _poll_one(self, snap: Snapshot, summary: TickSummary, deadline: float) -> None:
        try:
            job = JobName.parse(snap.name)
        except UsageError as exc:
            await self._error(snap, "bad_name", str(exc), summary)
            return
        run = next((r for r in self._runs if r.scope.covers(job)), None)
        if run is not None:
            await run.listed.wait()
            item = run.match(job)
            if item is not None:
                run.handed[item.key] = snap  # the list observes it (after the GET phase), not a GET
                return
        await self._fetch(snap, job, summary, deadline)

    async def poll_snapshot(self, snap: Snapshot, summary: TickSummary) -> None:
        """Observe one record with GET now (a watched job its list may have hidden)."""
        try:
            job = JobName.parse(snap.name)
        except UsageError as exc:
            await self._error(snap, "bad_name", str(exc), summary)
            return
        await self._fetch(snap, job, summary, self._deadline)

    async def nudge(self, name: str, deadline_s: float) -> str:
        """A webhook's nudge (A9): fetch this one batch now and apply it exactly as a tick's poll of it
        (commit, outbox, publish). A batch without a record is tracked first when ``gemini`` is a watched
        scope, and otherwise ignored (nothing written). Returns what happened: ``changed``, ``updated``,
        ``unchanged``, ``discovered``, ``ignored`` or ``fetch_failed``."""
        summary = TickSummary()
        self._deadline = self.clock() + deadline_s
        job = JobName.parse(name)
        snap = await asyncio.to_thread(self._store.snapshot, job.name)
        if snap is None:
            return await self._nudge_untracked(job, summary)
        if snap.record.terminal:
            return "unchanged"  # finished: nothing a fetch could change
        await self._fetch(snap, job, summary, self._deadline, via="webhook")
        after = await asyncio.to_thread(self._store.snapshot, job.name)
        if after is not None and after.record.poll_slot not in ("", cadence.EVERY_TICK):
            await asyncio.to_thread(self._store.set_slot, after, cadence.EVERY_TICK)  # nudged: due every tick
        if summary.errors or summary.deferred:
            return "fetch_failed"
        return "changed" if summary.changed else "updated" if summary.updated else "unchanged"

    async def _nudge_untracked(self, job: JobName, summary: TickSummary) -> str:
        scope = next((s for s in self.settings.watch if s.api == job.api and s.covers(job)), None)
        if scope is None or await asyncio.to_thread(self._store.tombstoned, [job.name]):
            return "ignored"
        try:
            status = await self.api.get_status(job, self._deadline)
        except Exception as exc:  # noqa: BLE001 - nothing is written for a job we could not see
            log(_log, logging.WARNING, "nudged batch could not be fetched", job=job.name,
                error=f"{type(exc).__name__}: {exc}"[:300])
            return "fetch_failed"
        from ..record import digest

        route = Route(scope.id, digest.part_of(job.job_id))
        _result, change = machine.discover(job, status, self._now(), self.owner, self.settings, route, via="webhook")
        change = await asyncio.to_thread(self._store.discover, change)
        if change is None:
            return "unchanged"  # tracked meanwhile
        log(_log, logging.INFO, "job discovered", job=job.name, api=job.api, scope=scope.id,
            state=change.record.state, version=change.record.version, via="webhook")
        await self.after_commit(job.name, change, summary)
        return "discovered"

    async def _fetch(self, snap: Snapshot, job: JobName, summary: TickSummary, deadline: float,
                     via: str = "get") -> None:
        try:
            status = await self.api.get_status(job, deadline)
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
        await self.observe(snap, status, summary, via=via)

    async def observe(self, snap: Snapshot, status: JobStatus, summary: TickSummary, *,
                      route: Route | None = None, via: str = "get") -> tuple[PollResult, JobRecord | None]:
        """Apply one observation of a job (from any path) and publish what it changed. Returns the result
        and the record after (None after a conflict). ``route``: the observation came from that scope's
        list, which observes the job from now on."""
        if route is None and not machine.needs_write(snap.record, status):
            # the common case: one read, no write, no thread hop (unless the job has stalled)
            if machine.is_stale(snap.record, status):
                return PollResult.STALE, snap.record
            if not await self.check_stall(snap, summary) and via == "get" and snap.record.poll_slot:
                slot = cadence.step_up(snap.record.poll_slot, self.tick_no, self.settings)
                if slot != snap.record.poll_slot:  # unchanged again: polled less often from now on
                    await asyncio.to_thread(self._store.set_slot, snap, slot)
            return PollResult.UNCHANGED, snap.record
        try:
            result, change = await asyncio.to_thread(self._store.apply_status, snap, status, self._now(),
                                                     self.owner, route, via)
        except Exception as exc:  # noqa: BLE001 - a reply Firestore cannot store must not stop the tick
            await self._error(snap, BadResponseError.kind,
                              f"reply cannot be stored: {type(exc).__name__}: {exc}", summary)
            return PollResult.ERROR, None
        name = snap.name
        if result == PollResult.CHANGED:
            summary.changed += 1
            log(_log, logging.INFO, "state changed", job=name, api=snap.record.api, state=status.state,
                previous_state=snap.record.state, version=change.record.version)
        elif result == PollResult.UPDATED:
            summary.updated += 1
        elif result == PollResult.CONFLICT:
            log(_log, logging.INFO, "record changed since it was read; the next tick looks again", job=name)
            return result, None
        await self.after_commit(name, change, summary)
        return result, (change.record if change is not None else snap.record)

    async def check_stall(self, snap: Snapshot, summary: TickSummary) -> bool:
        """Commit and publish a ``stalled`` event for a job looked at and found unchanged, if it is due.
        Returns whether the record now has one for its version."""
        now = self._now()
        if not machine.stall_due(snap.record, now, self.settings):
            return snap.record.stalled_at is not None
        try:
            change = await asyncio.to_thread(self._store.stall, snap, now, self.owner)
        except Exception as exc:  # noqa: BLE001 - the next tick looks again
            summary.errors += 1
            log(_log, logging.ERROR, "could not record a stall", job=snap.name,
                error=f"{type(exc).__name__}: {exc}"[:300])
            return False
        if change is None:
            return False
        record = change.record
        summary.stalled += 1
        log(_log, logging.WARNING, "job stalled", job=record.name, api=record.api, state=record.state,
            version=record.version, stalled_for_s=int((now - (record.changed_at or now)).total_seconds()))
        await self.after_commit(record.name, change, summary)
        return True

    async def _error(self, snap: Snapshot, kind: str, message: str, summary: TickSummary) -> None:
        summary.errors += 1
        message = storable(message)  # stored on the record (and in a lost event)
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
        await self.after_commit(snap.name, change, summary)

    async def after_commit(self, name: str, change: Change | None, summary: TickSummary) -> None:
        """Publish at once what a commit put in the outbox, if the commit took the publish lease."""
        if change is None or not (change.events and change.lease):
            return
        try:
            sent, _left = await self.outbox.flush(change.record, change)
            summary.published += sent
        except Exception as exc:  # noqa: BLE001 - unpublished events stay in the outbox for the next tick
            summary.errors += 1
            log(_log, logging.ERROR, "publish step failed", job=name, error=f"{type(exc).__name__}: {exc}"[:300])
