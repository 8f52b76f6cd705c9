"""What the outbox stores on a record: the publish lease, the events not yet published (transitions by
version, then the record's ``outbox`` map), and what was published."""

from __future__ import annotations

import datetime as dt

from ..batchapi.names import doc_id
from ..events.event import Event
from . import machine
from .base import Snapshot, StoreBase
from .machine import Change
from .model import JobRecord, transition_id


class Publishing(StoreBase):
    def take_publish_lease(self, snap: Snapshot, owner: str, now: dt.datetime, *, force: bool = False) -> bool:
        """Take the record's publish lease, unless another holds a live one (guarded by ``snap``)."""
        taken, change = machine.take_publish_lease(snap.record, owner, now, self._settings, force=force)
        return taken and change is not None and self._commit_guarded(snap, change) is not None

    def give_back_publish_lease(self, name: str, owner: str) -> None:
        """Drop our publish lease without publishing (after a publish failure), so the next tick retries."""
        self._transact(name, lambda record: machine.give_back_publish_lease(record, owner))

    def pending_events(self, record: JobRecord) -> list[tuple[str, Event]]:
        """Unpublished events of one record, in the order they must go out: transitions by version, then
        the record's outbox. Each comes with its outbox key (a zero-padded version or a name)."""
        out: list[tuple[str, Event]] = []
        versions = machine.unpublished_versions(record)
        if versions:
            refs = [self._transition_ref(record.name, v) for v in versions]
            docs = sorted((d for d in self._db.get_all(refs) if d.exists), key=lambda d: d.get("version"))
            for doc in docs:
                t = doc.to_dict() or {}
                if not t.get("published"):
                    out.append((transition_id(t["version"]), Event.from_doc(t["event"])))
        out.extend(machine.outbox_events(record))
        return sorted(out, key=lambda item: machine.pending_order(item[0]))

    def mark_published(self, name: str, done: list[tuple[str, Event]], owner: str) -> None:
        """Record what was published (in one transaction) and give back the publish lease if it is ours."""
        self._transact(name, lambda record: machine.mark_published(record, done, owner))

    def mark_published_after(self, change: Change, done: list[tuple[str, Event]], owner: str) -> bool:
        """``mark_published`` for the writer of ``change``, without reading the record again: guarded by
        the change's update time. False when the record was written since (then use ``mark_published``)."""
        if change.guard is None:
            return False
        snap = Snapshot(doc_id(change.record.name), change.record, change.guard)
        _result, marked = machine.mark_published(change.record, done, owner)
        return marked is not None and self._commit_guarded(snap, marked) is not None
