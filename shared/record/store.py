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
from urllib.parse import quote

from ..batchapi.names import JobName, doc_id
from ..batchapi.wire import JobStatus
from ..errors import UsageError
from ..events.event import Event
from ..log import get_logger, log
from ..settings import Settings, normalize_destination
from . import cadence, digest, machine
from .digest import Digest
from .machine import Change, ClaimResult, PollResult
from .model import EVERY_TICK, SHARDS, CopyStatus, JobRecord, TrackedBy, transition_id

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud import firestore

TRANSITIONS = "transitions"
HEARTBEAT = "heartbeat"
SCHEMA = "schema"
SCHEMA_VERSION = 2  # 2: poll_slot (which records the GET path polls), watch_scope
UNTRACKED = "untracked"  # {meta}/untracked/jobs/{doc id}: jobs untracked while perhaps watched
T = TypeVar("T")
_log = get_logger("store")

# Every composite index the queries below need (Terraform declares them; a test holds the two together).
# "{collection}" stands for RELAY_COLLECTION.
COMPOSITE_INDEXES = [
    {"collection": "{collection}", "fields": [("poll_slot", "ASCENDING"), ("shard", "ASCENDING")]},
]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A record as read, with the update time that guards writes based on it."""

    id: str
    record: JobRecord
    update_time: Any

    @property
    def name(self) -> str:
        return self.record.name or self.id


def _snap(doc) -> Snapshot:
    return Snapshot(doc.id, JobRecord.from_doc(doc.to_dict() or {}), doc.update_time)


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

    def _commit_guarded(self, snap: Snapshot, change: Change) -> Change | None:
        """Commit a Change based on ``snap`` atomically, only if the record is unchanged since it was read.
        Returns the change with its ``guard`` (None if the record had changed)."""
        from google.api_core import exceptions as gexc

        batch = self._db.batch()
        self._write(batch, snap.name, snap.record, change,
                    option=self._db.write_option(last_update_time=snap.update_time))
        try:
            results = batch.commit()
        except (gexc.FailedPrecondition, gexc.NotFound):
            return None
        return self._guarded(change, results, wrote_record=bool(change.record.changes_from(snap.record)))

    @staticmethod
    def _guarded(change: Change, results, wrote_record: bool) -> Change:
        """The change with the update time of its record write (the first write of its batch), if any."""
        if not wrote_record or not results:
            return change
        return dataclasses.replace(change, guard=results[0].update_time)

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

        record, created = self._transact(job.name, step)
        if created:
            self._tombstone(job.name).delete()  # tracked again: a watched scope may find it again later
        return record, created

    def untrack(self, name: str, now: dt.datetime | None = None) -> bool:
        """Remove the record and its transitions, and leave a tombstone so that no watched scope tracks
        the job again (until ``track`` does). Returns whether it existed."""
        job = JobName.parse(name)
        ref = self.ref(job.name)
        existed = ref.get().exists
        self._tombstone(job.name).set({"name": job.name, "untracked_at": now or dt.datetime.now(dt.UTC)})
        # The record first: every guarded write a tick may be about to make then fails, so no transition
        # can be set under a record that is going away; then the transitions.
        ref.delete()
        self._db.recursive_delete(ref)
        return existed

    def _tombstone(self, name: str):
        return self._meta.document(UNTRACKED).collection("jobs").document(doc_id(name))

    def tombstoned(self, names: list[str]) -> set[str]:
        """Which of ``names`` were untracked (and not tracked again since)."""
        if not names:
            return set()
        docs = self._db.get_all([self._tombstone(n) for n in names])
        return {d.get("name") for d in docs if d.exists}

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

    def snapshots(self, names: list[str]) -> dict[str, Snapshot]:
        """The records of ``names`` that exist, read in batches (one read each)."""
        out: dict[str, Snapshot] = {}
        for i in range(0, len(names), 300):
            for doc in self._db.get_all([self.ref(n) for n in names[i:i + 300]]):
                if doc.exists:
                    snap = _snap(doc)
                    out[snap.name] = snap
        return out

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
    def due(self, *, start: int = 0, lo: int = 0, hi: int = SHARDS, page_size: int = 1000,
            slots: list[str] | None = None) -> Iterator[Snapshot]:
        """Records the GET path polls now — those whose ``poll_slot`` is one of ``slots`` (default: every
        tick) — with ``lo <= shard < hi``, paged, beginning at shard ``start`` and wrapping around (so a tick
        cut short by its deadline does not always starve the same jobs). Terminal records and watched
        ones (their list observes them) are never among them."""
        start = min(max(start, lo), hi)
        for slot in slots or [EVERY_TICK]:
            yield from self._due_range(slot, start, hi, page_size)
            if start > lo:
                yield from self._due_range(slot, lo, start, page_size)

    def _due_range(self, slot: str, lo: int, hi: int, page_size: int) -> Iterator[Snapshot]:
        """Pages grow from 64 to ``page_size`` records: the first records reach the workers quickly,
        later pages amortise the per-query cost."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._jobs.where(filter=FieldFilter("poll_slot", "==", slot))
            .where(filter=FieldFilter("shard", ">=", lo))
            .where(filter=FieldFilter("shard", "<", hi))
            .order_by("shard")
        )
        last, size = None, min(64, page_size)
        while True:
            count = 0
            page = query.limit(size)
            for doc in (page.start_after(last) if last is not None else page).stream():
                count += 1
                last = doc
                yield _snap(doc)
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
    def _poll_write(self, snap: Snapshot, decide: Callable[[JobRecord], tuple[PollResult, Change | None]]
                    ) -> tuple[PollResult, Change | None]:
        """Commit what ``decide`` makes of the record, guarded by ``snap``. If the record was written since
        the query read it (this tick's outbox phase, a lease, the copy: not its state), decide again on a
        fresh read — the only read a poll adds, and only then. CONFLICT when its version or state moved on
        (another tick saw a newer state: ours may be stale; the next tick looks again)."""
        result, change = decide(snap.record)
        if change is None:
            return result, None
        committed = self._commit_guarded(snap, change)
        if committed is not None:
            return result, committed
        fresh = self.snapshot(snap.name)
        if fresh is None or (fresh.record.version, fresh.record.state) != (snap.record.version, snap.record.state):
            return PollResult.CONFLICT, None
        result, change = decide(fresh.record)
        if change is None:
            return result, None
        committed = self._commit_guarded(fresh, change)
        return (result, committed) if committed is not None else (PollResult.CONFLICT, None)

    def apply_status(self, snap: Snapshot, status: JobStatus, now: dt.datetime, owner: str,
                     route: machine.Route | None = None, via: str = "get") -> tuple[PollResult, Change | None]:
        """Write what an observation changed (nothing if nothing did, or if it is stale); with ``route``
        the record is watched under that scope from now on."""
        return self._poll_write(snap, lambda record: machine.apply_status(record, status, now, owner,
                                                                          self._settings, route, via))

    def discover(self, change: Change) -> Change | None:
        """Create a record found in a watched scope (with its first status applied); returns the committed
        change. None if a record appeared meanwhile (another tick, or ``track``): the next tick sees it."""
        from google.api_core import exceptions as gexc

        batch = self._db.batch()
        self._write(batch, change.record.name, None, change)
        try:
            results = batch.commit()
        except (gexc.AlreadyExists, gexc.Conflict):
            return None
        return self._guarded(change, results, wrote_record=True)

    def unwatch(self, snap: Snapshot) -> bool:
        """Hand a watched record back to the GET path (guarded)."""
        if not snap.record.watch_scope:
            return True
        return self._poll_write(snap, lambda record: (PollResult.UPDATED, Change(machine.unwatch(record))))[1] \
            is not None

    def set_slot(self, snap: Snapshot, slot: str) -> bool:
        """Move a record to another ``poll_slot`` (its cadence), guarded by the snapshot (only this field
        is written)."""
        from google.api_core import exceptions as gexc

        try:
            self.ref(snap.name).update({"poll_slot": slot},
                                       option=self._db.write_option(last_update_time=snap.update_time))
        except (gexc.FailedPrecondition, gexc.NotFound):
            return False
        return True

    def stall(self, snap: Snapshot, now: dt.datetime, owner: str) -> Change | None:
        """Commit the current version's ``stalled`` event if it is due (guarded like a poll's write)."""
        if not machine.stall_due(snap.record, now, self._settings):
            return None
        return self._poll_write(snap, lambda record: (PollResult.UPDATED,
                                                      machine.stall(record, now, owner, self._settings)))[1]

    def record_error(self, snap: Snapshot, kind: str, message: str, now: dt.datetime,
                     owner: str) -> tuple[PollResult, Change | None]:
        """Note why the status fetch failed (and give the job up as lost after long enough 404s)."""
        return self._poll_write(snap, lambda record: machine.record_poll_error(record, kind, message, now, owner,
                                                                               self._settings))

    # -- the publish lease and the outbox ---------------------------------------------------------------
    def take_publish_lease(self, snap: Snapshot, owner: str, now: dt.datetime, *, force: bool = False) -> bool:
        """Take the record's publish lease, unless another holds a live one (guarded by ``snap``)."""
        after = machine.take_publish_lease(snap.record, owner, now, self._settings, force=force)
        return after is not None and self._commit_guarded(snap, Change(after)) is not None

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
        return sorted(out, key=lambda item: machine.pending_order(item[0]))

    def mark_published(self, name: str, done: list[tuple[str, Event]], owner: str) -> None:
        """Record what was published (in one transaction) and give back the publish lease if it is ours."""

        def step(record: JobRecord | None) -> tuple[None, Change | None]:
            return None, (machine.mark_published(record, done, owner) if record else None)

        self._transact(name, step)

    def mark_published_after(self, change: Change, done: list[tuple[str, Event]], owner: str) -> bool:
        """``mark_published`` for the writer of ``change``, without reading the record again: guarded by
        the change's update time. False when the record was written since (then use ``mark_published``)."""
        if change.guard is None:
            return False
        snap = Snapshot(doc_id(change.record.name), change.record, change.guard)
        return self._commit_guarded(snap, machine.mark_published(change.record, done, owner)) is not None

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

    # -- watched scopes -----------------------------------------------------------------------------------
    def load_scope(self, scope_id: str) -> dict[str, Any] | None:
        """A watched scope's bookkeeping: ``started_at`` (first watched), ``window_at``, ``settled``."""
        doc = self._meta.document(_scope_doc(scope_id)).get()
        return doc.to_dict() if doc.exists else None

    def save_scope(self, scope_id: str, fields: dict[str, Any]) -> None:
        """Merge ``fields`` into the scope's bookkeeping (``started_at`` is never moved once set: callers
        pass what they read)."""
        self._meta.document(_scope_doc(scope_id)).set({"kind": "scope", "scope": scope_id, **fields}, merge=True)

    def known_scopes(self) -> dict[str, bool]:
        """Every scope that was ever watched (its bookkeeping exists), and whether it is retired."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        docs = self._meta.where(filter=FieldFilter("kind", "==", "scope")).stream()
        return {d.get("scope"): bool(d.to_dict().get("retired")) for d in docs}

    def load_digest(self, scope_id: str) -> Digest:
        refs = [self._meta.document(digest.part_id(scope_id, p)) for p in range(digest.PARTS)]
        found = {d.id: d for d in self._db.get_all(refs)}
        parts = {}
        for p, ref in enumerate(refs):
            doc = found.get(ref.id)
            exists = doc is not None and doc.exists
            parts[p] = digest.Part.from_doc(doc.to_dict() if exists else None, doc.update_time if exists else None)
        return Digest(scope_id, parts)

    def save_digest(self, dig: Digest) -> int:
        """Write back the parts that changed, each only if nobody wrote it since it was read (a part that
        lost the race is left as the other writer made it: an out-of-date entry only costs a read).
        Returns how many parts were written."""
        from google.api_core import exceptions as gexc

        written = 0
        for p, part in dig.parts.items():
            if not part.dirty:
                continue
            ref = self._meta.document(digest.part_id(dig.scope_id, p))
            option = (self._db.write_option(last_update_time=part.update_time) if part.update_time is not None
                      else self._db.write_option(exists=False))
            doc = part.to_doc(dig.scope_id)
            try:
                if part.update_time is None:
                    ref.create(doc)
                else:
                    ref.update(doc, option=option)
                written += 1
            except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.Conflict, gexc.NotFound):
                log(_log, logging.INFO, "digest part changed meanwhile; left as is", scope=dig.scope_id, part=p)
            part.dirty = False
        return written

    def watched(self, scope_id: str, part: int | None = None) -> Iterator[Snapshot]:
        """The records watched under a scope (of one digest part): what reconciling the digest reads."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._jobs.where(filter=FieldFilter("watch_scope", "==", scope_id))
        if part is not None:
            query = query.where(filter=FieldFilter("watch_part", "==", part))
        for doc in query.stream():
            yield _snap(doc)

    def retire_scope(self, scope_id: str) -> int:
        """A scope no longer watched: its records go back to the GET path. Returns how many."""
        moved = 0
        for snap in self.watched(scope_id):
            if self._commit_guarded(snap, Change(machine.unwatch(snap.record))) is not None:
                moved += 1
        self._meta.document(_scope_doc(scope_id)).set({"retired": True}, merge=True)
        return moved

    # -- records written before this version ------------------------------------------------------------
    def migrated(self, ladder: tuple[int, ...]) -> bool:
        """Whether every record is of this version and on this cadence ladder."""
        doc = self._meta.document(SCHEMA).get()
        data = doc.to_dict() if doc.exists else {}
        return (data.get("version") or 0) >= SCHEMA_VERSION and data.get("ladder") == list(ladder)

    def migrate(self, now: dt.datetime, ladder: tuple[int, ...]) -> int:
        """Give records written before ``poll_slot`` existed their fields, and move records whose
        interval is no longer on the cadence ladder (``RELAY_MAX_POLL_INTERVAL_S`` changed) to every
        tick, so the GET path's queries find them all (nothing to do by hand). Idempotent; returns how
        many records it wrote."""
        from google.api_core import exceptions as gexc
        from google.cloud.firestore_v1.base_query import FieldFilter

        fields = {"poll_slot": EVERY_TICK, "watch_scope": "", "watch_part": 0}
        written, pending = 0, []

        def flush() -> int:
            batch = self._db.batch()
            for doc in pending:
                batch.update(doc.reference, fields, option=self._db.write_option(last_update_time=doc.update_time))
            try:
                batch.commit()
                return len(pending)
            except (gexc.FailedPrecondition, gexc.NotFound):  # one record moved on meanwhile: one by one
                done = 0
                for doc in pending:
                    try:
                        doc.reference.update(fields, option=self._db.write_option(last_update_time=doc.update_time))
                        done += 1
                    except (gexc.FailedPrecondition, gexc.NotFound):
                        pass
                return done

        for doc in self._jobs.where(filter=FieldFilter("terminal", "==", False)).stream():
            data = doc.to_dict() or {}
            slot = data.get("poll_slot")
            if slot == "" or (slot is not None and cadence.interval_of(slot) in ladder):
                continue
            pending.append(doc)
            if len(pending) == 400:
                written += flush()
                pending = []
        if pending:
            written += flush()
        self._meta.document(SCHEMA).set({"version": SCHEMA_VERSION, "migrated_at": now, "ladder": list(ladder)})
        return written

    # -- heartbeat ----------------------------------------------------------------------------------------
    def heartbeat(self, summary: dict[str, Any], now: dt.datetime, part: int | None = None,
                  tick: int | None = None) -> None:
        """The tick's one write: ``heartbeat``, or ``heartbeat-part-{i}`` for a part of a fan-out."""
        doc = HEARTBEAT if part is None else f"{HEARTBEAT}-part-{part}"
        self._meta.document(doc).set({"last_tick": now, "summary": summary, "tick": tick, "part": part})

    def part_heartbeats(self, tick: int, parts: range) -> dict[int, dict[str, Any]]:
        """The summaries the parts of tick ``tick`` wrote (parts not done yet are missing)."""
        refs = [self._meta.document(f"{HEARTBEAT}-part-{i}") for i in parts]
        out = {}
        for doc in self._db.get_all(refs):
            data = doc.to_dict() if doc.exists else None
            if data and data.get("tick") == tick and isinstance(data.get("part"), int):
                out[data["part"]] = data.get("summary") or {}
        return out

    def read_heartbeat(self) -> dict[str, Any] | None:
        doc = self._meta.document(HEARTBEAT).get()
        return doc.to_dict() if doc.exists else None


def _scope_doc(scope_id: str) -> str:
    return f"scope-{quote(scope_id, safe='')}"


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
