"""What a record stores of its copy (the ``copy`` map and the copy lease): claiming it, its result, giving
it back, a new attempt, and the tick's sweep of copies stuck past their lease."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

from ..batchapi.names import JobName
from ..events.event import Event
from ..log import get_logger, log
from . import machine
from .base import Snapshot, StoreBase, snap_of
from .machine import Claim
from .model import CopyStatus, JobRecord

_log = get_logger("store")


class Copies(StoreBase):
    def claim_copy(self, name: str, now: dt.datetime) -> Claim | None:
        """Take the copy lease if the copy is to be done now; what was found (None: not tracked)."""
        return self._transact(name, lambda record: machine.claim_copy(record, now, self._settings))

    def finish_copy(self, name: str, attempt: int, now: dt.datetime, **result: Any) -> Event | None:
        """Commit a copy's result with its announcement in the outbox; the event, or None if this attempt
        no longer owns the copy."""
        return self._transact(name, lambda record: machine.finish_copy(record, attempt, now, self._settings,
                                                                       **result))

    def release_copy(self, name: str, attempt: int, now: dt.datetime | None = None, *,
                     waiting_since: dt.datetime | None = None) -> bool:
        """Give a claimed copy back after a transient failure (False: this attempt no longer owns it);
        ``waiting_since``: the copy waits for the API to show its output location (``machine.release_copy``)."""
        at = now or dt.datetime.now(dt.UTC)
        return self._transact(name, lambda record: machine.release_copy(record, attempt, at, waiting_since))

    def save_rewrites(self, name: str, attempt: int, tokens: dict[str, str]) -> bool:
        """Keep the rewrite tokens of a copy under way (False: this attempt no longer owns the copy)."""
        return self._transact(name, lambda record: machine.save_rewrites(record, attempt, tokens))

    def recopy(self, name: str) -> JobRecord:
        """A new attempt of a failed or stuck copy (``UsageError`` when there is none to make)."""
        job = JobName.parse(name)
        return self._transact(job.name, lambda record: machine.recopy(record, job.name))

    def _copying(self) -> Iterator[Snapshot]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        for doc in self._jobs.where(filter=FieldFilter("copy.status", "==", CopyStatus.COPYING.value)).stream():
            yield snap_of(doc)

    def fail_stuck_copies(self, now: dt.datetime) -> int:
        """The tick's sweep: fail and announce copies stuck in ``copying`` past their lease, one record at a
        time (a record a dead transaction holds locked must not stop the rest)."""
        failed = 0
        for snap in self._copying():
            if not machine.copy_stuck(snap.record, now, self._settings):
                continue
            try:
                failed += self._transact(snap.name, lambda record: machine.fail_stuck_copy(record, now,
                                                                                           self._settings))
            except Exception as exc:  # noqa: BLE001 - one record must not stop the sweep of the others
                log(_log, logging.ERROR, "sweep of a stuck copy failed", job=snap.name,
                    error=f"{type(exc).__name__}: {exc}"[:300])
        return failed
