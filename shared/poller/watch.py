"""Watched scopes in a tick (contract A8): every page of each scope's list, used as observations.

For each scope, concurrently with the tick's record query:

1. **List** every page (the quota of the scope's region covers list calls as it covers GETs). Vertex
   lists are asked for ``RELAY_WATCH_FILTER`` and — to keep a project's history of finished jobs out of
   every tick — only jobs not finished or created since the scope's *window* (the start of an earlier
   complete listing, less a margin). A page that cannot be read, an item without a name or of another
   scope, or a page token that never ends makes the listing *incomplete*: counted in ``errors``, logged
   once per page, and the jobs it may hide are fetched with GET.
2. **Settle** what the list shows, after the tick's GET phase:
   - a job whose digest entry holds the listed observation's fingerprint is unchanged: nothing is read;
   - any other listed job of a record is an observation of it (the record is read, compared, written
     only if something changed — and never backwards: a stale page writes nothing);
   - a GET-path record the list shows is handed over to the list (it is not fetched with GET);
   - a listed job without a record is **discovered**: tracked (``tracked_by = watch``) and its status
     applied at once, version 1 from UNSPECIFIED — unless it was untracked, or was already finished when
     first listed and created before the scope was first watched (or finished longer ago than records are
     kept);
   - a watched job a complete list no longer shows goes back to the GET path (so 404s still end in
     ``lost``); one an incomplete list may have hidden is fetched with GET this tick.
3. **Write back** only what changed: digest parts, the scope's bookkeeping. An unchanged tick writes none.

What a listing observes is applied by the tick's ``Applier`` (``apply.py``), as a GET's status is.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from ..batchapi.client import BatchApiClient
from ..batchapi.listing import ListedJob, vertex_filter
from ..batchapi.names import Api, JobName, ProjectMatch, project_match
from ..batchapi.scopes import WatchScope
from ..errors import BadResponseError, DeadlineExceeded, PermanentError, RelayError
from ..log import get_logger, log
from ..record import digest as digests
from ..record import limits
from ..record.async_store import AsyncStore
from ..record.base import Snapshot
from ..record.digest import Digest, Entry
from ..record.machine import PollResult, Route
from ..record.model import JobRecord
from ..settings import Settings
from .apply import Applier
from .summary import TickSummary

_log = get_logger("watch")
MAX_PAGES = 1000  # a list longer than this is cut (incomplete): an endless page token ends here
WINDOW_MARGIN = dt.timedelta(minutes=10)  # lists are eventually consistent: look back this much more
WINDOW_STEP = dt.timedelta(hours=1)  # the window moves in steps, so the bookkeeping is not written every tick
# The ``settled`` list (finished jobs the lists still show) is cut to both bounds, so that the scope's
# bookkeeping stays far inside Firestore's 1 MiB a document and 40,000 index entries (``record.limits``).
SETTLED_MAX = 15000
SETTLED_MAX_BYTES = 512 * 1024
_refused_filters: set[str] = set()  # scopes whose windowed filter the API refused (per process)


def _naive_utc(value: Any) -> dt.datetime | None:
    return value if isinstance(value, dt.datetime) else None


class ScopeRun:
    """One watched scope in one tick: its listing (``read_listing``), then what it shows applied
    (``settle``) through the tick's ``Applier``."""

    def __init__(self, scope: WatchScope, settings: Settings, store: AsyncStore, api: BatchApiClient,
                 apply: Applier, clock: Callable[[], float]) -> None:
        self.scope = scope
        self.route_id = scope.id
        self._settings = settings
        self._store = store
        self._api = api
        self._apply = apply
        self._clock = clock
        self.items: dict[str, ListedJob] = {}
        self.complete = False
        self.listed = asyncio.Event()
        self.handed: dict[str, Snapshot] = {}  # GET-path records this list shows: observed by it instead
        self._meta: dict[str, Any] = {}
        self._digest: Digest | None = None
        self._listing_started: dt.datetime | None = None

    # -- 1. list ------------------------------------------------------------------------------------------
    async def read_listing(self, summary: TickSummary, deadline: float) -> None:
        """List every page of the scope (``listed`` is set when done, whatever happened)."""
        try:
            await self._list(summary, deadline)
        except Exception as exc:  # noqa: BLE001 - a broken scope must not stop the tick
            summary.errors += 1
            self.complete = False
            log(_log, logging.ERROR, "listing failed", scope=self.route_id, error=f"{type(exc).__name__}: {exc}"[:300])
        finally:
            self.listed.set()

    async def _list(self, summary: TickSummary, deadline: float) -> None:
        self._listing_started = self._apply.now()
        self._meta = await self._store.load_scope(self.route_id) or {}
        digest_task = asyncio.create_task(self._store.load_digest(self.route_id))
        window: dt.datetime | None = None
        if self.scope.api != Api.GEMINI and self.route_id not in _refused_filters:
            window = _naive_utc(self._meta.get("window_at"))
            if window is None and isinstance(self._meta.get("started_at"), dt.datetime):
                window = self._meta["started_at"] - WINDOW_MARGIN
        user_filter = self._settings.watch_filter if self.scope.api != Api.GEMINI else None
        flt = vertex_filter(user_filter, window) if self.scope.api != Api.GEMINI else None
        token: str | None = None
        seen: set[str] = set()
        pages, degraded = 0, False
        try:
            while True:
                if self._clock() >= deadline:
                    raise DeadlineExceeded("tick deadline reached while listing")
                try:
                    page = await self._api.list_page(self.scope, token, deadline, filter=flt)
                except PermanentError as exc:
                    if window is not None and token is None and exc.kind == "bad_request":
                        _refused_filters.add(self.route_id)
                        log(_log, logging.WARNING, "the API refused the windowed list filter; listing without it",
                            scope=self.route_id, error=str(exc)[:300])
                        window, flt = None, user_filter
                        continue
                    raise
                pages += 1
                summary.list_pages += 1
                if page.rejected:
                    degraded = True
                    summary.errors += 1
                    log(_log, logging.WARNING, "list page has unusable items; the jobs it may hide are fetched "
                        "with GET", scope=self.route_id, page=pages, rejected=page.rejected)
                for item in page.items:
                    known = self.items.get(item.key)
                    if known is None or _newer(item, known):
                        self.items[item.key] = item
                if not page.next_token:
                    self.complete = not degraded
                    break
                if page.next_token in seen or pages >= MAX_PAGES:
                    summary.errors += 1
                    log(_log, logging.WARNING, "list does not end; cut", scope=self.route_id, pages=pages)
                    break
                seen.add(page.next_token)
                token = page.next_token
        except DeadlineExceeded:
            summary.deferred += 1
            log(_log, logging.WARNING, "listing cut by the tick deadline", scope=self.route_id, pages=pages)
        except (RelayError, BadResponseError) as exc:
            summary.errors += 1
            log(_log, logging.WARNING, "list page failed; the scope's jobs are fetched with GET", scope=self.route_id,
                page=pages + 1, kind=exc.kind, error=str(exc)[:300])
        finally:
            self._digest = await digest_task
        summary.listed += len(self.items)

    def match(self, job: JobName) -> ListedJob | None:
        """The listed item of a record's job, if this (finished) listing shows it."""
        item = self.items.get(job.job_id)
        if item is None:
            return None
        if self.scope.api == Api.GEMINI:
            return item if item.name == job.name else None
        return item if project_match(job.project, self.scope.project, item.project) is ProjectMatch.SAME else None

    # -- 2. settle ----------------------------------------------------------------------------------------
    async def settle(self, summary: TickSummary) -> None:
        """Use the listing as observations (after the tick's GET phase handed over its records)."""
        try:
            await self._settle(summary)
        except Exception as exc:  # noqa: BLE001 - one scope must not stop the others (or the heartbeat)
            summary.errors += 1
            log(_log, logging.ERROR, "settling a listing failed", scope=self.route_id,
                error=f"{type(exc).__name__}: {exc}"[:300])

    async def _settle(self, summary: TickSummary) -> None:
        dig = self._digest
        if dig is None:
            return
        now = self._apply.now()
        settled: set[str] = set(self._meta.get("settled") or [])
        settled_before = set(settled)
        known: list[tuple[str, ListedJob, Entry]] = []
        unknown: list[tuple[str, ListedJob]] = []
        stalls: list[tuple[str, Entry]] = []
        stall_after = self._settings.stall_after_s
        for key, item in self.items.items():
            if key in self.handed:
                continue
            entry = dig.get(key)
            if entry is not None:
                if entry.fingerprint != digests.UNKNOWN and entry.fingerprint == item.fingerprint:
                    # unchanged: nothing read, nothing written — unless its stall is due
                    if (stall_after > 0 and entry.changed_at is not None and entry.stalled_version != entry.version
                            and now.timestamp() - entry.changed_at >= stall_after):
                        stalls.append((key, entry))
                    continue
                known.append((key, item, entry))
            elif key not in settled:
                unknown.append((key, item))
        for key, snap in self.handed.items():
            await self._observe(dig, settled, key, self.items[key], snap, summary)
        if known:
            names = {key: self._record_name(key, entry) for key, _item, entry in known}
            snaps = await self._store.snapshots(list(set(names.values())))
            for key, item, _entry in known:
                found = snaps.get(names[key])
                if found is None:
                    dig.drop(key)
                    unknown.append((key, item))
                else:
                    await self._observe(dig, settled, key, item, found, summary)
        if unknown:
            await self._settle_unknown(dig, settled, unknown, now, summary)
        if stalls:
            await self._stalls(dig, stalls, summary)
        await self._unlisted(dig, summary)
        if not self._meta:  # a scope watched for the first time: no record is watched under it yet
            for part in dig.parts.values():
                part.reconciled_at, part.dirty = now, True
        await self._reconcile(dig, now)
        if self.complete:
            settled &= set(self.items)
        settled = bound_settled(settled)
        await self._store.save_digest(dig)
        await self._save_meta(now, settled if settled != settled_before else None)

    def _record_name(self, key: str, entry: Entry | None) -> str:
        return (entry.name if entry is not None else "") or self.scope.job_name(key)

    def _entry(self, key: str, item: ListedJob | None, record: JobRecord, previous: Entry | None = None) -> Entry:
        """What the digest keeps of a record just checked (against ``item``, when it was listed)."""
        fp = item.fingerprint if item is not None else digests.UNKNOWN
        stalled = record.version if record.stalled_at is not None else -1
        name = "" if record.name == self.scope.job_name(key) else record.name
        return Entry(fp, record.version, digests.epoch(record.changed_at), stalled, name)

    async def _observe(self, dig: Digest, settled: set[str], key: str, item: ListedJob, snap: Snapshot,
                       summary: TickSummary) -> None:
        """Apply one listed item to its record (handing a GET-path record over to the list)."""
        if snap.record.terminal:
            dig.drop(key)
            settled.add(key)
            return
        try:
            status = item.status()
        except BadResponseError as exc:
            summary.errors += 1
            log(_log, logging.WARNING, "listed job unreadable; fetched with GET", scope=self.route_id, job=snap.name,
                error=str(exc)[:300])
            await self._apply.poll_snapshot(snap, summary)
            return
        route = Route(self.route_id, digests.part_of(key))
        result, after = await self._apply.observe(snap, status, summary, route=route, via="list")
        if after is None:  # conflict: the next tick looks again
            return
        if after.terminal:
            dig.drop(key)
            settled.add(key)
        elif result != PollResult.STALE:
            dig.put(key, self._entry(key, item, after, dig.get(key)))

    async def _settle_unknown(self, dig: Digest, settled: set[str], unknown: list[tuple[str, ListedJob]],
                              now: dt.datetime, summary: TickSummary) -> None:
        """Listed jobs with no digest entry: a record under either form of the name, a tombstone, or new."""
        forms = {key: list(dict.fromkeys([self.scope.job_name(key), item.name])) for key, item in unknown}
        every = [name for names in forms.values() for name in names]
        snaps = await self._store.snapshots(every)
        missing = [name for name in every if name not in snaps]
        gone = await self._store.tombstoned(missing)
        started = _naive_utc(self._meta.get("started_at")) or self._listing_started or now
        retention = self._settings.retention_days
        for key, item in unknown:
            snap = next((snaps[n] for n in forms[key] if n in snaps), None)
            if snap is not None:
                await self._observe(dig, settled, key, item, snap, summary)
                continue
            if any(n in gone for n in forms[key]):
                settled.add(key)
                continue
            if item.terminal:
                created = item.time("createTime")
                updated = item.time("updateTime")
                if created is None or created < started or (
                        retention > 0 and updated is not None and now - updated > dt.timedelta(days=retention)):
                    settled.add(key)  # history: finished before the scope was watched, or long ago
                    continue
            await self._discover(dig, key, item, now, summary)

    async def _discover(self, dig: Digest, key: str, item: ListedJob, now: dt.datetime,
                        summary: TickSummary) -> None:
        try:
            status = item.status()
        except BadResponseError as exc:
            summary.errors += 1
            log(_log, logging.WARNING, "listed job unreadable; not tracked", scope=self.route_id, job=item.name,
                error=str(exc)[:300])
            return
        job = JobName.parse(self.scope.job_name(key))
        route = Route(self.route_id, digests.part_of(key))
        change = await self._apply.discover(job, status, route, summary, now=now)
        if change is None:
            return  # tracked meanwhile: the next tick sees the record
        record = change.record
        if not record.terminal:
            dig.put(key, self._entry(key, item, record, None))

    async def _stalls(self, dig: Digest, stalls: list[tuple[str, Entry]], summary: TickSummary) -> None:
        """Unchanged watched jobs whose stall the digest says is due: read, checked, committed."""
        names = {key: self._record_name(key, entry) for key, entry in stalls}
        snaps = await self._store.snapshots(list(set(names.values())))
        for key, entry in stalls:
            snap = snaps.get(names[key])
            if snap is None or snap.record.terminal:
                dig.drop(key)
                continue
            if await self._apply.check_stall(snap, summary) or snap.record.stalled_at is not None:
                dig.put(key, Entry(entry.fingerprint, snap.record.version, digests.epoch(snap.record.changed_at),
                                   snap.record.version, entry.name))
            else:  # the record says otherwise (it changed meanwhile): learn it, and read it when next listed
                dig.put(key, self._entry(key, None, snap.record))

    async def _unlisted(self, dig: Digest, summary: TickSummary) -> None:
        """Watched jobs this listing does not show: back to the GET path (complete listing), or fetched
        with GET now (incomplete: the list may have hidden them)."""
        missing = [key for key in dig.keys() if key not in self.items]
        if not missing:
            return
        names = {key: self._record_name(key, dig.get(key)) for key in missing}
        snaps = await self._store.snapshots(list(set(names.values())))
        for key in missing:
            snap = snaps.get(names[key])
            if snap is None or snap.record.terminal or snap.record.watch_scope != self.route_id:
                dig.drop(key)
                continue
            if self.complete:
                if await self._store.unwatch(snap):
                    dig.drop(key)
                    log(_log, logging.INFO, "job no longer listed; back to the GET path", job=snap.name,
                        scope=self.route_id)
            else:
                await self._apply.poll_snapshot(snap, summary)

    async def _reconcile(self, dig: Digest, now: dt.datetime) -> None:
        """Check one digest part's membership against the records watched under it (a lost or stale
        entry would otherwise only cost reads; a missing one could hide a job the list stops showing)."""
        part_no = dig.due_for_reconcile(now)
        if part_no is None:
            return
        records = await self._store.watched(self.route_id, part_no)
        part = dig.parts[part_no]
        keys = set()
        for snap in records:
            key = snap.record.job.job_id
            if self.complete and key not in self.items and key not in part.entries and not snap.record.terminal:
                # watched, not listed, and no entry (a full part left it out, or the entry was lost): what
                # ``_unlisted`` does for the jobs the digest holds
                if await self._store.unwatch(snap):
                    log(_log, logging.INFO, "job no longer listed; back to the GET path", job=snap.name,
                        scope=self.route_id)
                    continue
            keys.add(key)
            entry = part.entries.get(key)
            if entry is None or entry.version != snap.record.version:
                dig.put(key, self._entry(key, None, snap.record, entry))
        for key in set(part.entries) - keys:
            dig.drop(key)
        part.reconciled_at = now
        part.dirty = True

    async def _save_meta(self, now: dt.datetime, settled: set[str] | None) -> None:
        fields: dict[str, Any] = {}
        if not isinstance(self._meta.get("started_at"), dt.datetime):
            fields["started_at"] = self._listing_started or now
        if self._meta.get("retired"):
            fields["retired"] = False
        if self.complete and self.scope.api != Api.GEMINI and self._listing_started is not None:
            window = self._listing_started - WINDOW_MARGIN
            stored = _naive_utc(self._meta.get("window_at"))
            if stored is None or window - stored >= WINDOW_STEP:
                fields["window_at"] = window
        if settled is not None:
            fields["settled"] = sorted(settled)
        if fields:
            await self._store.save_scope(self.route_id, fields)


def bound_settled(settled: set[str]) -> set[str]:
    """The first ids in sorted order, at most ``SETTLED_MAX`` of them and ``SETTLED_MAX_BYTES`` as stored
    (the ones left out cost a read each tick they are listed)."""
    kept: set[str] = set()
    size = 0
    for key in sorted(settled):
        size += limits.string_size(key)
        if len(kept) >= SETTLED_MAX or size > SETTLED_MAX_BYTES:
            break
        kept.add(key)
    return kept


def _newer(item: ListedJob, than: ListedJob) -> bool:
    a, b = item.time("updateTime"), than.time("updateTime")
    return a is not None and (b is None or a > b)
