"""Waiting for a job without polling (contract A7): ``batch-relay wait`` and ``from batch_relay import wait``.

A Firestore listener on the job's record (``on_snapshot``) delivers every change of it; nothing calls the
batch APIs and nothing reads the record in a loop. The listener is the client library's: it reconnects
by itself after a dropped connection and then delivers the record as it is, so an end reached meanwhile
is not missed. Should it stop for good (a non-recoverable error), it is subscribed again.

Done: the job is terminal (or lost); with ``outputs``, a succeeded job's copy must also be ``done``,
``not_applicable`` or ``failed`` (a job that did not succeed has no outputs to wait for).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

from .batchapi import states
from .batchapi.names import JobName
from .record.model import CopyStatus, JobRecord
from .settings import Settings, load_settings

_GONE = object()
_CHECK_S = 5.0  # how often the listener itself is checked to be alive (the record is not read)


def finished(record: JobRecord, outputs: bool = False) -> bool:
    if not record.terminal:
        return False
    if not outputs or record.state not in states.SUCCESS:
        return True
    return record.copy.status in (CopyStatus.DONE, CopyStatus.NOT_APPLICABLE, CopyStatus.FAILED)


def succeeded(record: JobRecord, outputs: bool = False) -> bool:
    """Exit 0 of ``wait``: SUCCEEDED or PARTIALLY_SUCCEEDED (and, with ``outputs``, copied or nothing to
    copy). Lost, FAILED, CANCELLED, EXPIRED and a failed copy are the other endings (exit 3)."""
    if record.state not in states.SUCCESS or (record.last_poll_error or {}).get("kind") == "not_found":
        return False
    return not outputs or record.copy.status in (CopyStatus.DONE, CopyStatus.NOT_APPLICABLE)


def watch_record(db: Any, settings: Settings, name: str, *, timeout: float | None = None, outputs: bool = False,
                 on_change: Callable[[JobRecord], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> JobRecord:
    """Block until the job is done; returns its record. ``TimeoutError`` when ``timeout`` seconds pass
    first, ``LookupError`` when it is not tracked (or stops being tracked while waited for)."""
    from .record.store import JobStore

    job = JobName.parse(name)
    ref = JobStore(db, settings).ref(job.name)
    changes: queue.Queue = queue.Queue()

    def callback(docs, _changes, _read_time) -> None:
        live = [d for d in docs if d.exists]
        changes.put(JobRecord.from_doc(live[0].to_dict()) if live else _GONE)

    deadline = None if timeout is None else clock() + timeout
    watch = ref.on_snapshot(callback)
    try:
        while True:
            wait_s = _CHECK_S if deadline is None else max(min(_CHECK_S, deadline - clock()), 0.0)
            try:
                record = changes.get(timeout=wait_s)
            except queue.Empty:
                if deadline is not None and clock() >= deadline:
                    raise TimeoutError(f"{job.name} is not done after {timeout:g}s") from None
                if not watch.is_active:  # stopped for good: listen again (it delivers the record as it is)
                    watch = ref.on_snapshot(callback)
                continue
            if record is _GONE:
                raise LookupError(f"{job.name} is not tracked")
            if on_change is not None:
                on_change(record)
            if finished(record, outputs):
                return record
    finally:
        watch.unsubscribe()


def wait(name: str, *, timeout: float | None = None, outputs: bool = False, settings: Settings | None = None,
         db: Any = None) -> dict[str, Any]:
    """``from batch_relay import wait``: returns the public record (A4) once the job is done, as
    ``batch-relay wait`` does; raises ``TimeoutError`` when ``timeout`` passes first and ``LookupError``
    when the job is not tracked."""
    from .wiring import cached_firestore

    settings = settings or load_settings()
    return watch_record(db or cached_firestore(settings), settings, name, timeout=timeout, outputs=outputs).public()
