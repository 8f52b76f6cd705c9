"""The one Firestore adapter: job records (contract A4), their transitions, the heartbeat and the meta
collection. Every decision is made by the pure functions of ``machine.py``; this module reads records,
hands them over, and commits the ``Change`` they return, in one of two ways:

- **the guarded commit** (polls): one atomic batch whose record write carries the update time the tick
  read (optimistic concurrency: if anything wrote the record since, nothing is written and the job is
  looked at again next tick);
- **the transaction** (leases, the copy, marking events published, tracking): read, decide, write.

A state change bumps ``version`` and sets ``transitions/{version}`` holding the complete event (the
outbox) in the same commit; publishing later marks it published.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ..batchapi.names import JobName, doc_id
from ..batchapi.wire import JobStatus
from ..errors import UsageError
from ..events.event import Event
from ..log import get_logger, log
from ..settings import Settings, normalize_destination
from . import machine
from .machine import Change, ClaimResult, PollResult
from .model import SHARDS, CopyStatus, JobRecord, TrackedBy, transition_id

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud import firestore

TRANSITIONS = "transitions"
HEARTBEAT = "heartbeat"
T = TypeVar("T")
_log = get_logger("store")

# Every composite index the queries below need (Terraform declares them; a test holds the two together).
# "{collection}" stands for RELAY_COLLECTION.
COMPOSITE_INDEXES = [
    {"collection": "{collection}", "fields": [("terminal", "ASCENDING"), ("shard", "ASCENDING")]},
]

# What the tick's query reads of each record: enough to decide whether a poll must write (most don't).
DUE_FIELDS = ("name", "api", "shard", "version", "state", "completion_stats", "error", "output",
              "last_poll_error", "update_time")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A record as read, with the update time that guards writes based on it. ``partial`` when only
    ``DUE_FIELDS`` were read: such a record is never written back."""

    id: str
    record: JobRecord
    update_time: Any
    partial: bool = False

    @property
    def name(self) -> str:
        return self.record.name or self.id


def _snap(doc, partial: bool = False) -> Snapshot:
    return Snapshot(doc.id, JobRecord.from_doc(doc.to_dict() or {}), doc.update_time, partial)


class JobStore:
    def __init__(self, db: firestore.Client, settings: Settings) -> None:
        self._db = db
        self._settings = settings
        self._jobs = db.collection(settings.collection)
        self._meta = db.collection(settings.meta_collection)

    # -- references ---------------------------------------------------------------------------------------
    def ref(self, name: str):
        return self._jobs.document(doc_id(name))

    def _transition_ref(self, name: str, version: int):
        return self.ref(name).collection(TRANSITIONS).document(transition_id(version))

    # -- the two ways of writing --------------------------------------------------------------------------
    def _write(self, writer, name: str, before: JobRecord | None, change: Change, option=None) -> None:
        """Stage a Change on a batch or a transaction: the record (created, or its changed fields), then
        its transition documents."""
        ref = self.ref(name)
        if before is None:
            writer.create(ref, change.record.to_doc())
        else:
            fields = change.record.changes_from(before)
            if fields:
                writer.update(ref, fields, **({"option": option} if option is not None else {}))
        for write in change.transitions:
            tref = self._transition_ref(name, write.version)
            if write.create:
                # set, not create: the record's guard already makes this version ours alone, and a
                # transition left by an earlier tracking of the same name must not block this one forever.
                writer.set(tref, write.fields)
            else:
                writer.update(tref, write.fields)

    def _commit_guarded(self, snap: Snapshot, change: Change) -> bool:
        """Commit a Change based on ``snap`` atomically, only if the record is unchanged since it was read."""
        from google.api_core import exceptions as gexc

        batch = self._db.batch()
        self._write(batch, snap.name, snap.record, change,
                    option=self._db.write_option(last_update_time=snap.update_time))
        try:
            batch.commit()
        except (gexc.FailedPrecondition, gexc.NotFound):
            return False
        return True

    def _transact(self, name: str, step: Callable[[JobRecord | None], tuple[T, Change | None]]) -> T:
        """Run ``step`` on the current record inside a transaction and commit the Change it returns."""
        from google.cloud import firestore

        ref = self.ref(name)

        @firestore.transactional
        def run(txn) -> T:
            doc = ref.get(transaction=txn)
            before = JobRecord.from_doc(doc.to_dict()) if doc.exists else None
            value, change = step(before)
            if change is not None:
                self._write(txn, name, before, change)
            return value

        return run(self._db.transaction())

    # -- tracking -----------------------------------------------------------------------------------------
    def track(self, name: str, *, destination: str | None = None, labels: dict[str, str] | None = None,
              now: dt.datetime | None = None, tracked_by: TrackedBy = TrackedBy.TRACK) -> tuple[JobRecord, bool]:
        """Create the record (state UNSPECIFIED, version 0), or update only the options given.

        Returns (record, created). Raises ``UsageError`` on bad input, before anything is written."""
        job = JobName.parse(name)
        destination, labels = check_track_options(destination, labels)
        now = now or dt.datetime.now(dt.UTC)

        def step(record: JobRecord | None) -> tuple[tuple[JobRecord, bool], Change | None]:
            if record is None:
                fresh = JobRecord.new(job, destination=destination, labels=labels, now=now, tracked_by=tracked_by)
                return (fresh, True), Change(fresh)
            after = machine.update_tracking(record, destination=destination, labels=labels)
            return (after or record, False), (Change(after) if after else None)

        return self._transact(job.name, step)

    def untrack(self, name: str) -> bool:
        """Remove the record and its transitions. Returns whether it existed."""
        job = JobName.parse(name)
        ref = self.ref(job.name)
        existed = ref.get().exists
        # The record first: every guarded write a tick may be about to make then fails, so no transition
        # can be set under a record that is going away; then the transitions.
        ref.delete()
        self._db.recursive_delete(ref)
        return existed

    # -- reads --------------------------------------------------------------------------------------------
    def get(self, name: str) -> dict[str, Any] | None:
        """The stored document, internal fields included (``load`` gives the typed record)."""
        doc = self.ref(JobName.parse(name).name).get()
        return doc.to_dict() if doc.exists else None

    def load(self, name: str) -> JobRecord | None:
        doc = self.ref(name).get()
        return JobRecord.from_doc(doc.to_dict()) if doc.exists else None

    def snapshot(self, name: str) -> Snapshot | None:
        doc = self.ref(name).get()
        return _snap(doc) if doc.exists else None

    def transitions(self, name: str) -> list[dict[str, Any]]:
        docs = self.ref(name).collection(TRANSITIONS).order_by("version").stream()
        return [d.to_dict() for d in docs]

    def list(self, state: str | None = None) -> Iterator[JobRecord]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._jobs
        if state:
            query = query.where(filter=FieldFilter("state", "==", state))
        for doc in query.stream():
            yield JobRecord.from_doc(doc.to_dict())

    # -- the tick's queries -------------------------------------------------------------------------------
    def due(self, *, start: int = 0, lo: int = 0, hi: int = SHARDS, page_size: int = 1000) -> Iterator[Snapshot]:
        """Non-terminal records with ``lo <= shard < hi``, paged, beginning at shard ``start`` and
        wrapping around (so a tick cut short by its deadline does not always starve the same jobs)."""
        start = min(max(start, lo), hi)
        yield from self._due_range(start, hi, page_size)
        if start > lo:
            yield from self._due_range(lo, start, page_size)

    def _due_range(self, lo: int, hi: int, page_size: int) -> Iterator[Snapshot]:
        """Pages grow from 64 to ``page_size`` records: the first records reach the workers quickly,
        later pages amortise the per-query cost."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._jobs.where(filter=FieldFilter("terminal", "==", False))
            .where(filter=FieldFilter("shard", ">=", lo))
            .where(filter=FieldFilter("shard", "<", hi))
            .order_by("shard")
            .select(DUE_FIELDS)
        )
        last, size = None, min(64, page_size)
        while True:
            count = 0
            page = query.limit(size)
            for doc in (page.start_after(last) if last is not None else page).stream():
                count += 1
                last = doc
                yield _snap(doc, partial=True)
            if count < size:
                return
            size = min(size * 4, page_size)

    def unpublished(self) -> Iterator[Snapshot]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        for doc in self._jobs.where(filter=FieldFilter("has_unpublished", "==", True)).stream():
            yield _snap(doc)

    def _copying(self) -> Iterator[Snapshot]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        for doc in self._jobs.where(filter=FieldFilter("copy.status", "==", CopyStatus.COPYING.value)).stream():
            yield _snap(doc)

    # -- what a poll writes -------------------------------------------------------------------------------
    def _complete(self, snap: Snapshot) -> Snapshot | None:
        """The whole record behind a partial snapshot, or None if its state moved on since the query read
        it (another tick saw a newer state: ours may be stale). Writes of other fields in between (a
        publish lease, the copy) don't matter: the commit is then guarded by the fresh update time."""
        if not snap.partial:
            return snap
        doc = self._jobs.document(snap.id).get()
        if not doc.exists:
            return None
        fresh = _snap(doc)
        if (fresh.record.version, fresh.record.state) != (snap.record.version, snap.record.state):
            return None
        return fresh

    def _poll_write(self, snap: Snapshot, decide: Callable[[JobRecord], tuple[PollResult, Change | None]]
                    ) -> tuple[PollResult, Change | None]:
        full = self._complete(snap)
        if full is None:
            return PollResult.CONFLICT, None
        result, change = decide(full.record)
        if change is None:
            return result, None
        if not self._commit_guarded(full, change):
            return PollResult.CONFLICT, None
        return result, change

    def apply_status(self, snap: Snapshot, status: JobStatus, now: dt.datetime,
                     owner: str) -> tuple[PollResult, Change | None]:
        """Write what an observation changed (nothing if nothing did, or if it is stale)."""
        if not machine.needs_write(snap.record, status):
            return (PollResult.STALE if machine.is_stale(snap.record, status) else PollResult.UNCHANGED), None
        return self._poll_write(snap, lambda record: machine.apply_status(record, status, now, owner,
                                                                          self._settings))

    def record_error(self, snap: Snapshot, kind: str, message: str, now: dt.datetime,
                     owner: str) -> tuple[PollResult, Change | None]:
        """Note why the status fetch failed (and give the job up as lost after long enough 404s)."""
        result, change = machine.record_poll_error(snap.record, kind, message, now, owner, self._settings)
        if change is None:
            return result, None
        return self._poll_write(snap, lambda record: machine.record_poll_error(record, kind, message, now, owner,
                                                                               self._settings))

    # -- the publish lease and the outbox ---------------------------------------------------------------
    def take_publish_lease(self, snap: Snapshot, owner: str, now: dt.datetime, *, force: bool = False) -> bool:
        """Take the record's publish lease, unless another holds a live one (guarded by ``snap``)."""
        after = machine.take_publish_lease(snap.record, owner, now, self._settings, force=force)
        return after is not None and self._commit_guarded(snap, Change(after))

    def give_back_publish_lease(self, name: str, owner: str) -> None:
        """Drop our publish lease without publishing (after a publish failure), so the next tick retries."""

        def step(record: JobRecord | None) -> tuple[None, Change | None]:
            after = machine.give_back_publish_lease(record, owner) if record else None
            return None, (Change(after) if after else None)

        self._transact(name, step)

    def pending_events(self, record: JobRecord) -> list[tuple[str, Event]]:
        """Unpublished events of one record, in the order they must go out: transitions by version, then
        the record's outbox. Each comes with its outbox key (a zero-padded version or a name)."""
        out: list[tuple[str, Event]] = []
        versions = machine.unpublished_versions(record)
        if versions:
            refs = [self._transition_ref(record.name, v) for v in versions]
            docs = sorted((d for d in self._db.get_all(refs) if d.exists), key=lambda d: d.get("version"))
            for doc in docs:
                t = doc.to_dict()
                if not t.get("published"):
                    out.append((transition_id(t["version"]), Event.from_doc(t["event"])))
        out.extend(machine.outbox_events(record))
        return out

    def mark_published(self, name: str, done: list[tuple[str, Event]], owner: str) -> None:
        """Record what was published (in one transaction) and give back the publish lease if it is ours."""

        def step(record: JobRecord | None) -> tuple[None, Change | None]:
            return None, (machine.mark_published(record, done, owner) if record else None)

        self._transact(name, step)

    # -- the copy -----------------------------------------------------------------------------------------
    def claim_copy(self, name: str, now: dt.datetime) -> tuple[ClaimResult, JobRecord | None]:
        def step(record: JobRecord | None):
            result, after = machine.claim_copy(record, now, self._settings)
            return (result, after), (Change(after) if result == ClaimResult.CLAIMED else None)

        return self._transact(name, step)

    def finish_copy(self, name: str, attempt: int, now: dt.datetime, **result: Any) -> Event | None:
        """Commit a copy's result with its announcement in the outbox; the event, or None if this attempt
        no longer owns the copy."""

        def step(record: JobRecord | None):
            change = machine.finish_copy(record, attempt, now, self._settings, **result)
            return (change.events[0] if change else None), change

        return self._transact(name, step)

    def release_copy(self, name: str, attempt: int, now: dt.datetime | None = None) -> None:
        def step(record: JobRecord | None):
            after = machine.release_copy(record, attempt, now or dt.datetime.now(dt.UTC))
            return None, (Change(after) if after else None)

        self._transact(name, step)

    def recopy(self, name: str) -> JobRecord:
        job = JobName.parse(name)

        def step(record: JobRecord | None):
            after = machine.recopy(record, job.name)
            return after, Change(after)

        return self._transact(job.name, step)

    def fail_stuck_copies(self, now: dt.datetime) -> int:
        """The tick's sweep: fail and announce copies stuck in ``copying`` past their lease, one record at a
        time (a record a dead transaction holds locked must not stop the rest)."""
        failed = 0
        for snap in self._copying():
            if not machine.copy_stuck(snap.record, now, self._settings):
                continue

            def step(record: JobRecord | None):
                change = machine.fail_stuck_copy(record, now, self._settings)
                return change is not None, change

            try:
                failed += self._transact(snap.name, step)
            except Exception as exc:  # noqa: BLE001 - one record must not stop the sweep of the others
                log(_log, logging.ERROR, "sweep of a stuck copy failed", job=snap.name,
                    error=f"{type(exc).__name__}: {exc}"[:300])
        return failed

    # -- heartbeat ----------------------------------------------------------------------------------------
    def heartbeat(self, summary: dict[str, Any], now: dt.datetime) -> None:
        self._meta.document(HEARTBEAT).set({"last_tick": now, "summary": summary})

    def read_heartbeat(self) -> dict[str, Any] | None:
        doc = self._meta.document(HEARTBEAT).get()
        return doc.to_dict() if doc.exists else None


def check_track_options(destination: str | None, labels: dict[str, str] | None) -> tuple[str | None, dict[str, str]]:
    """Validate ``track``'s options (``UsageError``); returns the normalized destination and labels."""
    if destination is not None:
        try:
            destination = normalize_destination(destination)
        except ValueError as exc:
            raise UsageError(f"destination: {exc}") from None
    return destination, _check_labels(labels or {})


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not key or len(key) > 63 or not all(c.isalnum() or c in "_-" for c in key):
            raise UsageError(f"label key {key!r} must be 1-63 letters, digits, '_' or '-'")
        if not isinstance(value, str) or len(value) > 256 or any(ord(c) < 32 for c in value):
            raise UsageError(f"label {key!r}: value must be a string of at most 256 printable characters")
        out[key] = value
    return out
