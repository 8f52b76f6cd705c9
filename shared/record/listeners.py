"""Listening to records without reading them in a loop: Firestore listeners (what ``wait`` and
``list --follow`` use), each delivering typed records, in order, through a queue.

A listener is the client library's: it reconnects by itself after a dropped connection and then
delivers the records as they are, so nothing reached meanwhile is missed. Should it stop for good (a
non-recoverable error), ``Feed.get`` subscribes it again (and it delivers the records as they are).
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

from ..batchapi.states import State
from .base import StoreBase
from .model import JobRecord

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
    from google.cloud.firestore_v1.collection import CollectionReference
    from google.cloud.firestore_v1.document import DocumentReference
    from google.cloud.firestore_v1.query import Query
    from google.cloud.firestore_v1.watch import DocumentChange, Watch

T = TypeVar("T")


class RecordChange(NamedTuple):
    """One change a listener on the records saw: ``ADDED``, ``MODIFIED`` or ``REMOVED`` (untracked)."""

    kind: str
    record: JobRecord


class Feed(Generic[T]):
    """What one listener delivers, in order. ``get`` waits for the next delivery; use it as a context
    manager (or ``close`` it) to stop listening."""

    def __init__(self, subscribe: Callable[[Callable[[T], None]], Watch]) -> None:
        self._deliveries: queue.Queue[T] = queue.Queue()
        self._subscribe = subscribe
        self._watch = subscribe(self._deliveries.put)

    def get(self, timeout: float) -> T:
        """The next delivery; ``queue.Empty`` when none came within ``timeout`` seconds (the listener is
        then checked, and subscribed again if it stopped for good)."""
        try:
            return self._deliveries.get(timeout=timeout)
        except queue.Empty:
            if not self._watch.is_active:
                self._watch = self._subscribe(self._deliveries.put)
            raise

    def close(self) -> None:
        self._watch.unsubscribe()  # type: ignore[no-untyped-call]  # (the client library leaves it unannotated)

    def __enter__(self) -> Feed[T]:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Listeners(StoreBase):
    def listen_record(self, name: str) -> Feed[JobRecord | None]:
        """Every change of one record, as the typed record, or None once it is gone (untracked or never
        tracked). The first delivery is the record as it is now."""
        ref = self.ref(name)

        def subscribe(deliver: Callable[[JobRecord | None], None]) -> Watch:
            def callback(docs: Sequence[DocumentSnapshot[DocumentReference]], _changes: object,
                         _read_time: object) -> None:
                live = [d for d in docs if d.exists]
                deliver(JobRecord.from_doc(live[0].to_dict() or {}) if live else None)

            return ref.on_snapshot(callback)

        return Feed(subscribe)

    def listen_records(self, state: State | None = None, *, finished: bool = False) -> Feed[list[RecordChange]]:
        """Every change of the unfinished records (of the records in ``state``, when given; of every record
        with ``finished``), a batch at a time: at first, each of them ``ADDED``. A record that finishes
        leaves the unfinished ones: ``REMOVED``, as an untracked one does.

        Attaching a listener reads every record its query matches (one read each, on every attach): left to
        the unfinished records by default, it reads what is running, not the whole retained history."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query: Query | CollectionReference = self._jobs
        if state:
            query = self._jobs.where(filter=FieldFilter("state", "==", state))
        elif not finished:
            query = self._jobs.where(filter=FieldFilter("terminal", "==", False))

        def subscribe(deliver: Callable[[list[RecordChange]], None]) -> Watch:
            def callback(_docs: object, changes: Sequence[DocumentChange], _read_time: object) -> None:
                deliver([RecordChange(c.type.name, JobRecord.from_doc(c.document.to_dict() or {}))
                         for c in changes])

            return query.on_snapshot(callback)

        return Feed(subscribe)
