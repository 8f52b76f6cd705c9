"""Resubmits (``batch-relay resubmit``) on the records: the claim a resubmit holds on the job whose failed
requests it sends, the retry counter on the first job of its lineage, and — once the batch exists — the
job's ``resubmitted_as`` and the new batch's record (``parent``). Every write is a transaction over the
records it decides on (``machine.begin_resubmit`` and ``machine.finish_resubmit`` decide on two)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from ..batchapi.names import JobName
from . import machine
from .base import StoreBase
from .machine import Change, ResubmitFinish, ResubmitStart
from .model import JobRecord

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud.firestore_v1.transaction import Transaction

R = TypeVar("R")


class Lineage(StoreBase):
    def lineage_root(self, record: JobRecord) -> JobRecord | None:
        """The first job of ``record``'s lineage as stored (None: it starts none, or is no longer tracked)."""
        if not record.lineage or record.lineage == record.name:
            return None
        snap = self.snapshot(record.lineage)
        return snap.record if snap is not None else None

    def begin_resubmit(self, name: str, *, request_id: str, again: bool, now: dt.datetime,
                       lease_s: float) -> ResubmitStart:
        """Claim a resubmit of ``name``'s failed requests, or find why not (``machine.begin_resubmit``)."""
        job = JobName.parse(name)

        def decide(records: dict[str, JobRecord | None]) -> tuple[ResubmitStart, list[tuple[str, Change]]]:
            record = records[job.name]
            root = records.get(record.lineage) if record is not None and record.lineage else None
            start, change = machine.begin_resubmit(record, root, job.name, request_id=request_id, again=again,
                                                   now=now, lease_s=lease_s)
            writes = [(job.name, change)] if change is not None else []
            if start.root_change is not None:
                writes.append((start.root, start.root_change))
            return start, writes

        return self._transact_many(lambda get: [job.name, *self._lineage_of(get(job.name))], decide)

    def renew_resubmit(self, name: str, request_id: str, now: dt.datetime, lease_s: float) -> bool:
        """Hold our claim a lease longer; False when another resubmit has taken it over."""
        return self._transact(name, lambda record: machine.renew_resubmit(record, request_id, now, lease_s))

    def release_resubmit(self, name: str, request_id: str, now: dt.datetime) -> bool:
        """End our claim now (the batch was certainly not made); its retry number stays for the next one."""
        return self._transact(name, lambda record: machine.release_resubmit(record, request_id, now))

    def finish_resubmit(self, name: str, batch: str, *, n: int, root: str, destination: str | None,
                        labels: dict[str, str], now: dt.datetime) -> ResubmitFinish:
        """Link ``name`` to the batch made of its failed requests and track that batch
        (``machine.finish_resubmit``), in one transaction."""
        parent, made = JobName.parse(name), JobName.parse(batch)

        def decide(records: dict[str, JobRecord | None]) -> tuple[ResubmitFinish, list[tuple[str, Change]]]:
            result, change = machine.finish_resubmit(
                records[parent.name], records[made.name], parent=parent.name, batch=made, n=n, root=root,
                destination=destination, labels=labels, now=now)
            writes = [(parent.name, change)] if change is not None else []
            if result.child_change is not None:
                writes.append((made.name, result.child_change))
            return result, writes

        return self._transact_many(lambda _get: [parent.name, made.name], decide)

    @staticmethod
    def _lineage_of(record: JobRecord | None) -> list[str]:
        return [record.lineage] if record is not None and record.lineage and record.lineage != record.name else []

    def _transact_many(self, names: Callable[[Callable[[str], JobRecord | None]], Sequence[str]],
                       decide: Callable[[dict[str, JobRecord | None]],
                                        tuple[R, list[tuple[str, Change]]]]) -> R:
        """One transaction over several records: read the records ``names`` lists (it may read one to know
        which others), hand them to ``decide``, write the changes it returns, return its result."""
        from google.cloud import firestore

        @firestore.transactional
        def run(txn: Transaction) -> R:
            read: dict[str, JobRecord | None] = {}

            def get(name: str) -> JobRecord | None:
                if name not in read:
                    doc = self.ref(name).get(transaction=txn)
                    read[name] = JobRecord.from_doc(doc.to_dict() or {}) if doc.exists else None
                return read[name]

            for name in names(get):
                get(name)
            result, writes = decide(read)
            for name, change in writes:
                self._write(txn, name, read.get(name), change)
            return result

        result: R = run(self._db.transaction())
        return result
