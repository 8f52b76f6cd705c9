"""The ``copy`` part of a record (A4) and its outbox: claim, finish, recopy, and the sweep of copies
stuck in ``copying``. Every change is one Firestore transaction, so concurrent deliveries of the same
event agree on one copier and one announcement.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from . import events, states
from .errors import UsageError
from .jobnames import JobName
from .log import get_logger, log
from .store import JobStore, new_copy

DONE_STATES = ("done", "not_applicable")
_log = get_logger("copy_ledger")


@dataclasses.dataclass(frozen=True)
class Claim:
    """Result of ``claim``: ``claimed`` (we copy), ``done``/``failed`` (already finished: just make
    sure it is announced), ``busy`` (another delivery holds a live lease), ``gone`` (not tracked),
    ``not_success`` (the record is not in a success state)."""

    result: str
    record: dict[str, Any] | None = None


class CopyLedger:
    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._db = store.db
        self._lease_s = store.settings.copy_lease_s
        self._source = store.settings.event_source

    def claim(self, name: str, now: dt.datetime) -> Claim:
        from google.cloud import firestore

        ref = self._store.ref(name)

        @firestore.transactional
        def run(txn) -> Claim:
            doc = ref.get(transaction=txn)
            if not doc.exists:
                return Claim("gone")
            data = doc.to_dict()
            copy = data.get("copy") or new_copy()
            status = copy.get("status")
            if status in DONE_STATES:
                return Claim("done", data)
            if status == "failed":
                return Claim("failed", data)
            if data.get("state") not in states.SUCCESS:
                return Claim("not_success", data)
            lease = data.get("copy_lease_until")
            if status == "copying" and lease and lease > now:
                return Claim("busy", data)
            updates = {"copy.status": "copying", "copy_lease_until": now + dt.timedelta(seconds=self._lease_s)}
            txn.update(ref, updates)
            data["copy"] = {**copy, "status": "copying"}
            data["copy_lease_until"] = updates["copy_lease_until"]
            return Claim("claimed", data)

        return run(self._db.transaction())

    def finish(self, name: str, attempt: int, now: dt.datetime, *, status: str, uri: str | None = None,
               manifest_uri: str | None = None, objects: int = 0, size: int = 0,
               error: dict[str, Any] | None = None) -> events.Event | None:
        """Commit the copy's result and put its announcement in the outbox (``copy.announced=false``).
        Returns the event to publish, or None if this attempt no longer owns the copy."""
        from google.cloud import firestore

        ref = self._store.ref(name)

        @firestore.transactional
        def run(txn) -> events.Event | None:
            doc = ref.get(transaction=txn)
            if not doc.exists:
                return None
            data = doc.to_dict()
            copy = dict(data.get("copy") or new_copy())
            if int(copy.get("attempt") or 1) != attempt or copy.get("status") != "copying":
                return None
            copy.update(status=status, uri=uri, manifest_uri=manifest_uri, objects=int(objects),
                        bytes=int(size), error=error, announced=False)
            record = {**data, "copy": copy}
            build = events.outputs_failed if status == "failed" else events.outputs_ready
            event = build(record, self._source, now)
            txn.update(ref, {"copy": copy, "copy_lease_until": None, "outbox.copy": event.to_doc(),
                             "has_unpublished": True})
            return event

        return run(self._db.transaction())

    def release(self, name: str, attempt: int, now: dt.datetime | None = None) -> None:
        """Give a claimed copy back after a transient failure: it stays ``copying`` with its lease ended
        now, so the redelivery of the event takes it over at once, and if no redelivery ever comes (the
        dead-letter topic took the message) the sweep fails and announces it a lease later."""
        from google.cloud import firestore

        ref = self._store.ref(name)

        @firestore.transactional
        def run(txn) -> None:
            doc = ref.get(transaction=txn)
            if not doc.exists:
                return
            copy = doc.to_dict().get("copy") or {}
            if copy.get("status") == "copying" and int(copy.get("attempt") or 1) == attempt:
                txn.update(ref, {"copy_lease_until": now or dt.datetime.now(dt.UTC)})

        run(self._db.transaction())

    def recopy(self, name: str) -> dict[str, Any]:
        """Start a new attempt of a failed or stuck copy: ``attempt + 1``, status ``pending``."""
        from google.cloud import firestore

        job = JobName.parse(name)
        ref = self._store.ref(job.name)

        @firestore.transactional
        def run(txn) -> dict[str, Any]:
            doc = ref.get(transaction=txn)
            if not doc.exists:
                raise UsageError(f"{job.name} is not tracked")
            data = doc.to_dict()
            if data.get("state") not in states.SUCCESS:
                raise UsageError(f"{job.name} is {data.get('state')}: only succeeded jobs have outputs to copy")
            copy = data.get("copy") or new_copy()
            if copy.get("status") in DONE_STATES:
                raise UsageError(f"the copy of {job.name} is already {copy.get('status')}")
            fresh = new_copy(int(copy.get("attempt") or 1) + 1)
            txn.update(ref, {"copy": fresh, "copy_lease_until": None})
            return {**data, "copy": fresh}

        return run(self._db.transaction())

    def _is_stuck(self, data: dict[str, Any], now: dt.datetime) -> bool:
        if (data.get("copy") or {}).get("status") != "copying":
            return False
        lease = data.get("copy_lease_until")
        return lease is None or lease + dt.timedelta(seconds=self._lease_s) <= now

    def fail_if_stuck(self, name: str, now: dt.datetime) -> events.Event | None:
        """Fail (and put in the outbox) a copy still stuck when looked at inside the transaction; a copy
        a redelivery or ``recopy`` has taken up meanwhile is left alone."""
        from google.cloud import firestore

        ref = self._store.ref(name)

        @firestore.transactional
        def run(txn) -> events.Event | None:
            doc = ref.get(transaction=txn)
            if not doc.exists or not self._is_stuck(doc.to_dict(), now):
                return None
            data = doc.to_dict()
            copy = {**(data.get("copy") or new_copy()), "status": "failed", "announced": False,
                    "error": {"kind": "timeout",
                              "message": "copy did not finish within its lease (RELAY_COPY_LEASE_S)"}}
            event = events.outputs_failed({**data, "copy": copy}, self._source, now)
            txn.update(ref, {"copy": copy, "copy_lease_until": None, "outbox.copy": event.to_doc(),
                             "has_unpublished": True})
            return event

        return run(self._db.transaction())

    def stuck(self, now: dt.datetime) -> list[str]:
        """Names of copies in ``copying`` whose lease ran out a whole lease ago: a redelivery of the
        event gets the first chance to take an expired lease over and finish the copy; after that the
        reactor is taken to have died or the dead-letter topic to hold the message."""
        return [snap.name for snap in self._store.copying() if self._is_stuck(snap.data, now)]


class CopySweeper:
    """Run by each tick: fails copies stuck in ``copying`` past their lease, announcing it."""

    def __init__(self, store: JobStore) -> None:
        self._ledger = CopyLedger(store)

    def sweep(self, now: dt.datetime) -> int:
        failed = 0
        for name in self._ledger.stuck(now):
            try:
                if self._ledger.fail_if_stuck(name, now):
                    failed += 1
            except Exception as exc:  # noqa: BLE001 - one record (e.g. locked by a dead transaction) must not stop the rest
                log(_log, logging.ERROR, "sweep of a stuck copy failed", job=name,
                    error=f"{type(exc).__name__}: {exc}"[:300])
        return failed
