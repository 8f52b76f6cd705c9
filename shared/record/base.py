"""What every part of the store shares: the Firestore client and its two collections (records, and the
meta collection of bookkeeping), the references, and the two ways of committing an ``Outcome`` of the
state machine (``machine.py``):

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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..batchapi.names import doc_id
from ..settings import Settings
from .machine import Change, Outcome, PollResult
from .model import JobRecord, transition_id

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
    from google.cloud.firestore_v1.batch import WriteBatch
    from google.cloud.firestore_v1.document import DocumentReference
    from google.cloud.firestore_v1.transaction import Transaction
    from google.cloud.firestore_v1.types.write import WriteResult

    from .client import FirestoreClient

TRANSITIONS = "transitions"
UNTRACKED = "untracked"  # {meta}/untracked/jobs/{doc id}: jobs untracked while perhaps watched
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A record as read, with the update time that guards writes based on it."""

    id: str
    record: JobRecord
    update_time: dt.datetime

    @property
    def name(self) -> str:
        return self.record.name or self.id


def snap_of(doc: DocumentSnapshot[DocumentReference]) -> Snapshot:
    update_time: dt.datetime = doc.update_time  # set on every document read
    return Snapshot(doc.id, JobRecord.from_doc(doc.to_dict() or {}), update_time)


class StoreBase:
    """The client, the collections, the references, and the commits every part of the store uses."""

    def __init__(self, db: FirestoreClient, settings: Settings) -> None:
        self._db = db
        self._settings = settings
        self._jobs = db.collection(settings.collection)
        self._meta = db.collection(settings.meta_collection)

    # -- references ---------------------------------------------------------------------------------------
    def ref(self, name: str) -> DocumentReference:
        return self._jobs.document(doc_id(name))

    def _transition_ref(self, name: str, version: int) -> DocumentReference:
        return cast("DocumentReference", self.ref(name).collection(TRANSITIONS).document(transition_id(version)))

    def _tombstone(self, name: str) -> DocumentReference:
        return cast("DocumentReference", self._meta.document(UNTRACKED).collection("jobs").document(doc_id(name)))

    def snapshot(self, name: str) -> Snapshot | None:
        """One record as read (None: not tracked), with the update time that guards writes based on it."""
        doc = self.ref(name).get()
        return snap_of(doc) if doc.exists else None

    # -- the two ways of writing --------------------------------------------------------------------------
    def _write(self, writer: WriteBatch | Transaction, name: str, before: JobRecord | None, change: Change,
               option: Any = None) -> None:
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

    def _commit_new(self, change: Change) -> Change | None:
        """Create a record with its transitions (one batch); None if a record of that name exists."""
        from google.api_core import exceptions as gexc

        batch = self._db.batch()
        self._write(batch, change.record.name, None, change)
        try:
            results = batch.commit()
        except (gexc.AlreadyExists, gexc.Conflict):
            return None
        return self._guarded(change, results, wrote_record=True)

    @staticmethod
    def _guarded(change: Change, results: Sequence[WriteResult], wrote_record: bool) -> Change:
        """The change with the update time of its record write (the first write of its batch), if any."""
        if not wrote_record or not results:
            return change
        return dataclasses.replace(change, guard=results[0].update_time)

    def _transact(self, name: str, decide: Callable[[JobRecord | None], Outcome[R]]) -> R:
        """Run ``decide`` on the current record (None: there is none) inside a transaction, commit the
        Change of its Outcome, and return the Outcome's result."""
        from google.cloud import firestore

        ref = self.ref(name)

        @firestore.transactional
        def run(txn: Transaction) -> R:
            doc = ref.get(transaction=txn)
            before = JobRecord.from_doc(doc.to_dict() or {}) if doc.exists else None
            result, change = decide(before)
            if change is not None:
                self._write(txn, name, before, change)
            return result

        result: R = run(self._db.transaction())
        return result

    def _poll_write(self, snap: Snapshot, decide: Callable[[JobRecord], Outcome[PollResult]]) -> Outcome[PollResult]:
        """Commit what ``decide`` makes of the record, guarded by ``snap``; the Outcome's change is the one
        committed (with its guard). If the record was written since the query read it (this tick's outbox
        phase, a lease, the copy: not its state), decide again on a fresh read — the only read a poll
        adds, and only then. CONFLICT when its version or state moved on (another tick saw a newer state:
        ours may be stale; the next tick looks again)."""
        result, change = outcome = decide(snap.record)
        if change is None:
            return outcome
        committed = self._commit_guarded(snap, change)
        if committed is not None:
            return Outcome(result, committed)
        fresh = self.snapshot(snap.name)
        if fresh is None or (fresh.record.version, fresh.record.state) != (snap.record.version, snap.record.state):
            return Outcome(PollResult.CONFLICT)
        result, change = outcome = decide(fresh.record)
        if change is None:
            return outcome
        committed = self._commit_guarded(fresh, change)
        return Outcome(result, committed) if committed is not None else Outcome(PollResult.CONFLICT)
