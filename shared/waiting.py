"""Waiting for a job without polling (contract A7): ``batch-relay wait`` and ``from batch_relay import wait``.

A listener on the job's record (``JobStore.listen_record``: a Firestore listener) delivers every change
of it; nothing calls the batch APIs and nothing reads the record in a loop. The listener reconnects by
itself after a dropped connection and then delivers the record as it is, so an end reached meanwhile is
not missed; should it stop for good, it is subscribed again.

Done: the job is terminal (or lost); with ``outputs``, the copy of a job that ended must also be ``done``,
``not_applicable`` or ``failed`` — whatever the ending, since a job that did not succeed may have partial
outputs (a lost job has none to wait for).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .batchapi import states
from .batchapi.names import JobName
from .record.model import CopyStatus, JobRecord
from .settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    from .record.client import FirestoreClient

_CHECK_S = 5.0  # how often the listener itself is checked to be alive (the record is not read)


def finished(record: JobRecord, outputs: bool = False) -> bool:
    if not record.terminal:
        return False
    if not outputs or not states.is_terminal(record.state):
        return True  # a lost job keeps the state it had: no copy is coming
    return record.copy.status in (CopyStatus.DONE, CopyStatus.NOT_APPLICABLE, CopyStatus.FAILED)


def succeeded(record: JobRecord, outputs: bool = False) -> bool:
    """Exit 0 of ``wait``: SUCCEEDED or PARTIALLY_SUCCEEDED (and, with ``outputs``, copied or nothing to
    copy). Lost, FAILED, CANCELLED, EXPIRED and a failed copy are the other endings (exit 3)."""
    if record.state not in states.SUCCESS or (record.last_poll_error or {}).get("kind") == "not_found":
        return False
    return not outputs or record.copy.status in (CopyStatus.DONE, CopyStatus.NOT_APPLICABLE)


def watch_record(db: FirestoreClient, settings: Settings, name: str, *, timeout: float | None = None,
                 outputs: bool = False, on_change: Callable[[JobRecord], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> JobRecord:
    """Block until the job is done; returns its record. ``TimeoutError`` when ``timeout`` seconds pass
    first, ``LookupError`` when it is not tracked (or stops being tracked while waited for)."""
    from .record.store import JobStore

    job = JobName.parse(name)
    deadline = None if timeout is None else clock() + timeout
    with JobStore(db, settings).listen_record(job.name) as feed:
        while True:
            wait_s = _CHECK_S if deadline is None else max(min(_CHECK_S, deadline - clock()), 0.0)
            try:
                record = feed.get(timeout=wait_s)  # on a quiet spell the listener is checked (not the record)
            except queue.Empty:
                if deadline is not None and clock() >= deadline:
                    raise TimeoutError(f"{job.name} is not done after {timeout:g}s") from None
                continue
            if record is None:
                raise LookupError(f"{job.name} is not tracked")
            if on_change is not None:
                on_change(record)
            if finished(record, outputs):
                return record


def wait(name: str, *, timeout: float | None = None, outputs: bool = False, settings: Settings | None = None,
         db: FirestoreClient | None = None) -> dict[str, Any]:
    """``from batch_relay import wait``: returns the public record (A4) once the job is done, as
    ``batch-relay wait`` does; raises ``TimeoutError`` when ``timeout`` passes first and ``LookupError``
    when the job is not tracked."""
    from .wiring import cached_firestore

    settings = settings or load_settings()
    return watch_record(db or cached_firestore(settings), settings, name, timeout=timeout, outputs=outputs).public()
