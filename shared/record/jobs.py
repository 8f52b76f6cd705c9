"""Job records (contract A4) and their transitions: tracking, the reads and queries of records, and what
an observation writes (guarded by the update time it was read with)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from ..batchapi.names import JobName
from ..batchapi.states import State
from ..batchapi.wire import JobStatus
from ..errors import UsageError
from ..settings import normalize_destination, split_gcs_uri
from . import limits, machine
from .base import TRANSITIONS, Snapshot, StoreBase, snap_of
from .fast_stream import stream_snapshots
from .machine import Change, Outcome, PollResult, Route
from .model import EVERY_TICK, SHARDS, JobRecord, TrackedBy

# Cloud Storage object names are at most 1,024 bytes of UTF-8. The copy writes ``{prefix}/{relative name}``:
# the relay's own names (``responses.jsonl``, ``_manifest.json``) and Vertex AI's output files
# (``prediction-{model display name, <= 128}-{time}/predictions_{n}.jsonl``, about 190 bytes at most) fit in
# ``OUTPUT_NAME_RESERVE_BYTES``, so a destination's prefix may have the rest.
MAX_OBJECT_NAME_BYTES = 1024
OUTPUT_NAME_RESERVE_BYTES = 256
MAX_PREFIX_BYTES = MAX_OBJECT_NAME_BYTES - OUTPUT_NAME_RESERVE_BYTES - 1  # (the "/" before the relative name)


class JobRecords(StoreBase):
    # -- tracking -----------------------------------------------------------------------------------------
    def track(self, name: str, *, destination: str | None = None, labels: dict[str, str] | None = None,
              now: dt.datetime | None = None, tracked_by: TrackedBy = TrackedBy.TRACK) -> tuple[JobRecord, bool]:
        """Create the record (state UNSPECIFIED, version 0), or update only the options given.

        Returns (record, created). Raises ``UsageError`` on bad input, before anything is written."""
        job = JobName.parse(name)
        destination, labels = check_track_options(destination, labels)
        at = now or dt.datetime.now(dt.UTC)
        record, created = self._transact(job.name, lambda before: machine.track(
            before, job, destination=destination, labels=labels, now=at, tracked_by=tracked_by))
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

    # -- reads --------------------------------------------------------------------------------------------
    def get(self, name: str) -> dict[str, Any] | None:
        """The stored document, internal fields included (``load`` gives the typed record)."""
        doc = self.ref(JobName.parse(name).name).get()
        return doc.to_dict() if doc.exists else None

    def load(self, name: str) -> JobRecord | None:
        """The typed record (None: not tracked)."""
        doc = self.ref(JobName.parse(name).name).get()
        return JobRecord.from_doc(doc.to_dict() or {}) if doc.exists else None

    def snapshots(self, names: list[str]) -> dict[str, Snapshot]:
        """The records of ``names`` that exist, read in batches (one read each)."""
        out: dict[str, Snapshot] = {}
        for batch in limits.chunks(names):
            for doc in self._db.get_all([self.ref(n) for n in batch]):
                if doc.exists:
                    snap = snap_of(doc)
                    out[snap.name] = snap
        return out

    def transitions(self, name: str) -> list[dict[str, Any]]:
        docs = self.ref(name).collection(TRANSITIONS).order_by("version").stream()
        return [d.to_dict() or {} for d in docs]

    def records(self, state: State | None = None) -> Iterator[JobRecord]:
        """Every record (in ``state``, when given)."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._jobs.where(filter=FieldFilter("state", "==", state)) if state else self._jobs
        for doc in query.stream():
            yield JobRecord.from_doc(doc.to_dict() or {})

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
        later pages amortise the per-query cost. Decoded by ``stream_snapshots`` (half the CPU of
        ``stream()``: the tick reads every due record, every tick)."""
        from google.cloud.firestore_v1.base_query import FieldFilter
        from google.cloud.firestore_v1.document import DocumentSnapshot

        query = (
            self._jobs.where(filter=FieldFilter("poll_slot", "==", slot))
            .where(filter=FieldFilter("shard", ">=", lo))
            .where(filter=FieldFilter("shard", "<", hi))
            .order_by("shard")
        )
        last: Snapshot | None = None
        size = min(64, page_size)
        while True:
            count = 0
            page = query.limit(size)
            if last is not None:  # the cursor: the last record's shard, then its document id
                page = page.start_after(DocumentSnapshot(self._jobs.document(last.id), {"shard": last.record.shard},
                                                         exists=True, read_time=None, create_time=None,
                                                         update_time=None))
            for snap in stream_snapshots(page):
                count += 1
                last = snap
                yield snap
            if count < size:
                return
            size = min(size * 4, page_size)

    def unpublished(self) -> Iterator[Snapshot]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        for doc in self._jobs.where(filter=FieldFilter("has_unpublished", "==", True)).stream():
            yield snap_of(doc)

    # -- what an observation writes -----------------------------------------------------------------------
    def apply_status(self, snap: Snapshot, status: JobStatus, now: dt.datetime, owner: str,
                     route: Route | None = None, via: str = "get") -> Outcome[PollResult]:
        """Write what an observation changed (nothing if nothing did, or if it is stale); with ``route``
        the record is watched under that scope from now on."""
        return self._poll_write(snap, lambda record: machine.apply_status(record, status, now, owner,
                                                                          self._settings, route, via))

    def discover(self, job: JobName, status: JobStatus, now: dt.datetime, owner: str, route: Route,
                 via: str = "list") -> Change | None:
        """Create the record of a job found in a watched scope, with its first status applied; returns the
        committed change. None if a record appeared meanwhile (another tick, or ``track``): the next tick
        sees it."""
        _result, change = machine.discover(job, status, now, owner, self._settings, route, via)
        return self._commit_new(change) if change is not None else None

    def unwatch(self, snap: Snapshot) -> bool:
        """Hand a watched record back to the GET path (guarded)."""
        if not snap.record.watch_scope:
            return True
        return self._poll_write(snap, machine.unwatch).result != PollResult.CONFLICT

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
        return self._poll_write(snap, lambda record: machine.stall(record, now, owner, self._settings)).change

    def record_error(self, snap: Snapshot, kind: str, message: str, now: dt.datetime,
                     owner: str) -> Outcome[PollResult]:
        """Note why the status fetch failed (and give the job up as lost after long enough 404s)."""
        return self._poll_write(snap, lambda record: machine.record_poll_error(record, kind, message, now, owner,
                                                                               self._settings))


def check_track_options(destination: str | None, labels: dict[str, str] | None) -> tuple[str | None, dict[str, str]]:
    """Validate ``track``'s options (``UsageError``); returns the normalized destination and labels."""
    if destination is not None:
        try:
            destination = normalize_destination(destination)
        except ValueError as exc:
            raise UsageError(f"destination: {exc}") from None
        prefix = len(split_gcs_uri(destination)[1].encode("utf-8"))
        if prefix > MAX_PREFIX_BYTES:
            raise UsageError(f"destination: its object prefix is {prefix} bytes; at most {MAX_PREFIX_BYTES} leave "
                             f"room for the output names under it (Cloud Storage object names are at most "
                             f"{MAX_OBJECT_NAME_BYTES} bytes)")
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
