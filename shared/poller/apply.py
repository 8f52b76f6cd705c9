"""Applying observations: what the tick (``tick.py``), the watched scopes' listings (``watch.py``) and a
webhook's nudge do with what they saw of a job — a status fetched with GET, an item of a list page, a
job found in a watched scope, a stall to check — is the same, and lives here: commit what changed (only
that), publish at once what the commit put in the outbox, count it in the tick's summary, and log it.

An unchanged job costs nothing here: the record the caller read, no write, no thread hop (unless its
stall is due or its cadence steps up).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from ..batchapi.client import BatchApiClient
from ..batchapi.names import JobName
from ..batchapi.wire import JobStatus
from ..errors import BadResponseError, DeadlineExceeded, RelayError, UsageError
from ..events.outbox import Outbox
from ..log import get_logger, log, storable
from ..record import cadence, machine
from ..record.async_store import AsyncStore
from ..record.base import Snapshot
from ..record.machine import Change, PollResult, Route
from ..record.model import JobRecord
from ..settings import Settings
from .summary import TickSummary

_log = get_logger("poller")
_list_log = get_logger("watch")  # what a watched scope's listing does is logged as the listing's


class Applier:
    """Applies observations during one tick (``tick_no``, whose GETs end at ``deadline``), or one nudge."""

    def __init__(self, settings: Settings, store: AsyncStore, api: BatchApiClient, outbox: Outbox, *,
                 now: Callable[[], dt.datetime], tick_no: int, deadline: float) -> None:
        self.settings = settings
        self.store = store
        self.api = api
        self.outbox = outbox
        self.owner = outbox.owner
        self.now = now
        self.tick_no = tick_no
        self.deadline = deadline
        # A tick's GETs start before its outbox phase (``Poller._republish``) is over; what they saw is
        # applied (committed, published) only after it, so that no job's events are flushed twice at once.
        self.outbox_done: asyncio.Event | None = None

    # -- observing with GET ---------------------------------------------------------------------------------
    async def poll_snapshot(self, snap: Snapshot, summary: TickSummary) -> None:
        """Observe one record with GET now (e.g. a watched job its list may have hidden)."""
        try:
            job = JobName.parse(snap.name)
        except UsageError as exc:
            await self.error(snap, "bad_name", str(exc), summary)
            return
        await self.fetch(snap, job, summary, self.deadline)

    async def fetch(self, snap: Snapshot, job: JobName, summary: TickSummary, deadline: float,
                    via: str = "get") -> None:
        """GET the job's status and apply it; a failed fetch is noted on the record."""
        try:
            status = await self.api.get_status(job, deadline)
        except DeadlineExceeded:
            summary.deferred += 1
            return
        except RelayError as exc:
            summary.polled += 1
            await self.error(snap, exc.kind, str(exc), summary)
            return
        except Exception as exc:  # noqa: BLE001 - garbage from an API must never stop the tick
            summary.polled += 1
            await self.error(snap, BadResponseError.kind, f"{type(exc).__name__}: {exc}", summary)
            return
        summary.polled += 1
        await self.observe(snap, status, summary, via=via)

    async def _after_outbox(self) -> None:
        """Wait, if the tick's outbox phase is not over yet (before anything is written)."""
        if self.outbox_done is not None and not self.outbox_done.is_set():
            await self.outbox_done.wait()

    # -- applying -------------------------------------------------------------------------------------------
    async def observe(self, snap: Snapshot, status: JobStatus, summary: TickSummary, *,
                      route: Route | None = None, via: str = "get") -> tuple[PollResult, JobRecord | None]:
        """Apply one observation of a job (from any path) and publish what it changed. Returns the result
        and the record after (None after a conflict or an error). ``route``: the observation came from
        that scope's list, which observes the job from now on."""
        await self._after_outbox()
        if route is None and not machine.needs_write(snap.record, status):
            # the common case: one read, no write, no thread hop (unless the job has stalled)
            if machine.is_stale(snap.record, status):
                return PollResult.STALE, snap.record
            if not await self.check_stall(snap, summary) and via == "get" and snap.record.poll_slot:
                slot = cadence.step_up(snap.record.poll_slot, self.tick_no, self.settings)
                if slot != snap.record.poll_slot:  # unchanged again: polled less often from now on
                    await self.store.set_slot(snap, slot)
            return PollResult.UNCHANGED, snap.record
        try:
            result, change = await self.store.apply_status(snap, status, self.now(), self.owner, route, via)
        except Exception as exc:  # noqa: BLE001 - a reply Firestore cannot store must not stop the tick
            await self.error(snap, BadResponseError.kind,
                             f"reply cannot be stored: {type(exc).__name__}: {exc}", summary)
            return PollResult.ERROR, None
        name = snap.name
        if result == PollResult.CHANGED and change is not None:
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
        now = self.now()
        if not machine.stall_due(snap.record, now, self.settings):
            return snap.record.stalled_at is not None
        try:
            change = await self.store.stall(snap, now, self.owner)
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

    async def discover(self, job: JobName, status: JobStatus, route: Route, summary: TickSummary, *,
                       via: str = "list", now: dt.datetime | None = None) -> Change | None:
        """Track a job found in a watched scope (its status applied at once) and publish its first event;
        the committed change, or None when a record appeared meanwhile (the next tick sees it)."""
        change = await self.store.discover(job, status, now or self.now(), self.owner, route, via)
        if change is None:
            return None
        record = change.record
        summary.discovered += 1
        log(_list_log if via == "list" else _log, logging.INFO, "job discovered", job=record.name, api=record.api,
            scope=route.scope, state=record.state, version=record.version,
            **({"via": via} if via != "list" else {}))
        if change.events:
            summary.changed += 1
        await self.after_commit(record.name, change, summary)
        return change

    async def error(self, snap: Snapshot, kind: str, message: str, summary: TickSummary) -> None:
        """Note on the record why its status fetch failed (a ``lost`` event after long enough 404s)."""
        await self._after_outbox()
        summary.errors += 1
        message = storable(message)  # stored on the record (and in a lost event)
        log(_log, logging.WARNING, "status fetch failed", job=snap.name, api=snap.record.api, kind=kind,
            error=message)
        try:
            result, change = await self.store.record_error(snap, kind, message, self.now(), self.owner)
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
