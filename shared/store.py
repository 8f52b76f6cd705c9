"""Job records on Firestore (contract A4): tracking, the tick's queries, and every write a poll makes.

Writes happen only when something changed. A state change is one atomic commit, guarded by the
record's update time as read by the tick's query (optimistic concurrency: if anyone wrote the record
since, the commit fails and the job is looked at again next tick). It bumps ``version``, creates
``transitions/{version}`` holding the complete event (the outbox), and sets ``has_unpublished``.
Publishing later marks the transitions published.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import events, states
from .errors import UsageError
from .jobnames import JobName, doc_id
from .models import JobStatus
from .settings import Settings, normalize_destination

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud import firestore

SHARDS = 1024
TRANSITIONS = "transitions"
HEARTBEAT = "heartbeat"

# Every composite index the queries below need (Terraform declares them; a test holds the two together).
# "{collection}" stands for RELAY_COLLECTION.
COMPOSITE_INDEXES = [
    {"collection": "{collection}", "fields": [("terminal", "ASCENDING"), ("shard", "ASCENDING")]},
]


def shard_of(name: str) -> int:
    return zlib.crc32(name.encode()) % SHARDS


def transition_id(version: int) -> str:
    return f"{version:08d}"


def new_copy(attempt: int = 1) -> dict[str, Any]:
    return {"status": "pending", "attempt": attempt, "uri": None, "manifest_uri": None, "objects": 0,
            "bytes": 0, "error": None, "announced": False}


# What the tick's query reads of each record: enough to decide whether a poll must write (most don't).
DUE_FIELDS = ("name", "api", "shard", "version", "state", "completion_stats", "error", "output", "last_poll_error")


@dataclasses.dataclass
class Snapshot:
    """A record as read, with the update time that guards writes based on it. ``partial`` when only
    ``DUE_FIELDS`` were read."""

    id: str
    data: dict[str, Any]
    update_time: Any
    partial: bool = False

    @property
    def name(self) -> str:
        return self.data["name"]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a poll did to one record."""

    kind: str  # "unchanged" | "changed" | "updated" | "error" | "lost" | "conflict"
    events: tuple[events.Event, ...] = ()
    lease: bool = False


def _snap(doc, partial: bool = False) -> Snapshot:
    return Snapshot(doc.id, doc.to_dict() or {}, doc.update_time, partial)


def _lease_active(data: dict[str, Any], now: dt.datetime) -> bool:
    lease = data.get("publish_lease") or {}
    until = lease.get("until")
    return bool(until and until > now)


class JobStore:
    def __init__(self, db: firestore.Client, settings: Settings) -> None:
        self._db = db
        self._settings = settings
        self._jobs = db.collection(settings.collection)
        self._meta = db.collection(settings.meta_collection)

    @property
    def db(self) -> firestore.Client:
        return self._db

    @property
    def settings(self) -> Settings:
        return self._settings

    # -- references -------------------------------------------------------------------------------
    def ref(self, name: str):
        return self._jobs.document(doc_id(name))

    def _transition_ref(self, name: str, version: int):
        return self.ref(name).collection(TRANSITIONS).document(transition_id(version))

    def _precondition(self, snap: Snapshot):
        return self._db.write_option(last_update_time=snap.update_time)

    def expire_at(self, now: dt.datetime) -> dt.datetime | None:
        days = self._settings.retention_days
        return now + dt.timedelta(days=days) if days > 0 else None

    # -- tracking ---------------------------------------------------------------------------------
    def track(self, name: str, *, destination: str | None = None, labels: dict[str, str] | None = None,
              now: dt.datetime | None = None) -> tuple[dict[str, Any], bool]:
        """Create the record (state UNSPECIFIED, version 0), or update only the options given.

        Returns (record, created). Raises ``UsageError`` on bad input, before anything is written.
        """
        from google.cloud import firestore

        job = JobName.parse(name)
        destination, labels = check_track_options(destination, labels)
        now = now or dt.datetime.now(dt.UTC)
        ref = self.ref(job.name)
        transaction = self._db.transaction()

        @firestore.transactional
        def run(txn) -> tuple[dict[str, Any], bool]:
            doc = ref.get(transaction=txn)
            if doc.exists:
                data = doc.to_dict()
                changes: dict[str, Any] = {}
                if destination is not None and destination != data.get("destination"):
                    changes["destination"] = destination
                if labels:
                    merged = {**(data.get("labels") or {}), **labels}
                    if merged != data.get("labels"):
                        changes["labels"] = merged
                if changes:
                    txn.update(ref, changes)
                return {**data, **changes}, False
            record = new_record(job, destination=destination, labels=labels, now=now)
            txn.create(ref, record)
            return record, True

        return run(transaction)

    def untrack(self, name: str) -> bool:
        """Remove the record and its transitions. Returns whether it existed."""
        job = JobName.parse(name)
        ref = self.ref(job.name)
        existed = ref.get().exists
        # The record first: every guarded write a tick may be about to make then fails, so no transition
        # can be created under a record that is going away; then the transitions.
        ref.delete()
        self._db.recursive_delete(ref)
        return existed

    def get(self, name: str) -> dict[str, Any] | None:
        doc = self.ref(JobName.parse(name).name).get()
        return doc.to_dict() if doc.exists else None

    def snapshot(self, name: str) -> Snapshot | None:
        doc = self.ref(name).get()
        return _snap(doc) if doc.exists else None

    def transitions(self, name: str) -> list[dict[str, Any]]:
        docs = self.ref(name).collection(TRANSITIONS).order_by("version").stream()
        return [d.to_dict() for d in docs]

    def list(self, state: str | None = None) -> Iterator[dict[str, Any]]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._jobs
        if state:
            query = query.where(filter=FieldFilter("state", "==", state))
        for doc in query.stream():
            yield doc.to_dict()

    # -- the tick's queries -------------------------------------------------------------------------
    def due(self, *, start: int = 0, lo: int = 0, hi: int = SHARDS, page_size: int = 1000) -> Iterator[Snapshot]:
        """Non-terminal records with ``lo <= shard < hi``, paged, beginning at shard ``start`` and
        wrapping around (so a tick cut short by its deadline does not always starve the same jobs)."""
        start = min(max(start, lo), hi)
        yield from self._due_range(start, hi, page_size)
        if start > lo:
            yield from self._due_range(lo, start, page_size)

    def _due_range(self, lo: int, hi: int, page_size: int) -> Iterator[Snapshot]:
        """Pages grow from 64 to ``page_size`` records: the first records reach the workers quickly,
        later pages amortise the per-query cost."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._jobs.where(filter=FieldFilter("terminal", "==", False))
            .where(filter=FieldFilter("shard", ">=", lo))
            .where(filter=FieldFilter("shard", "<", hi))
            .order_by("shard")
            .select(DUE_FIELDS)
        )
        last, size = None, min(64, page_size)
        while True:
            count = 0
            page = query.limit(size)
            for doc in (page.start_after(last) if last is not None else page).stream():
                count += 1
                last = doc
                yield _snap(doc, partial=True)
            if count < size:
                return
            size = min(size * 4, page_size)

    def unpublished(self) -> Iterator[Snapshot]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        for doc in self._jobs.where(filter=FieldFilter("has_unpublished", "==", True)).stream():
            yield _snap(doc)

    def copying(self) -> Iterator[Snapshot]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        for doc in self._jobs.where(filter=FieldFilter("copy.status", "==", "copying")).stream():
            yield _snap(doc)

    # -- what a poll writes ---------------------------------------------------------------------------
    def _complete(self, snap: Snapshot) -> Snapshot | None:
        """The whole record behind a partial snapshot, or None if its state moved on since the query
        read it (another tick saw a newer state: ours may be stale). Writes of other fields in between
        (a publish lease, the copy) don't matter: the write is then guarded by the fresh update time."""
        if not snap.partial:
            return snap
        doc = self._jobs.document(snap.id).get()
        if not doc.exists:
            return None
        fresh = _snap(doc)
        if fresh.data.get("version") != snap.data.get("version") or fresh.data.get("state") != snap.data.get("state"):
            return None
        return fresh

    def apply_status(self, snap: Snapshot, status: JobStatus, now: dt.datetime, owner: str) -> Outcome:
        """Write what changed (nothing if nothing did). Guarded by the snapshot's update time."""
        from google.api_core import exceptions as gexc

        if not needs_write(snap.data, status):
            return Outcome("unchanged")
        snap = self._complete(snap)
        if snap is None:
            return Outcome("conflict")
        data = snap.data
        changed_state = status.state != data.get("state")
        updates = {**status.to_record(), "polled_at": now, "last_poll_error": None}
        if status.terminal:
            updates["expire_at"] = self.expire_at(now)
        batch = self._db.batch()
        outcome = Outcome("updated")
        if changed_state:
            version = int(data.get("version") or 0) + 1
            take_lease = not _lease_active(data, now)
            updates.update(version=version, has_unpublished=True)
            if take_lease:
                updates["publish_lease"] = self.lease(owner, now)
            record = {**data, **updates}
            event = events.state_changed(record, data.get("state") or states.UNSPECIFIED,
                                         self._settings.event_source, now)
            # set, not create: the record's precondition already makes this version ours alone, and a
            # transition left by an earlier tracking of the same name must not block this one forever.
            batch.set(self._transition_ref(snap.name, version), {
                "version": version, "from_state": data.get("state"), "to_state": status.state,
                "observed_at": now, "event_id": event.id, "published": False, "event": event.to_doc(),
                "expire_at": updates.get("expire_at"),
            })
            outcome = Outcome("changed", (event,), take_lease)
            if status.terminal:
                self._expire_transitions(batch, snap.name, version - 1, updates["expire_at"])
        batch.update(self.ref(snap.name), updates, option=self._precondition(snap))
        try:
            batch.commit()
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.Conflict, gexc.NotFound):
            return Outcome("conflict")
        return outcome

    def record_error(self, snap: Snapshot, kind: str, message: str, now: dt.datetime, owner: str) -> Outcome:
        """Note why the status fetch failed; after ``lost_after_s`` of 404s give the job up as lost.
        The same error as last time writes nothing."""
        from google.api_core import exceptions as gexc

        previous = snap.data.get("last_poll_error") or {}
        since = (previous.get("at") if previous.get("kind") == kind else None) or now
        lost = kind == "not_found" and (now - since).total_seconds() >= self._settings.lost_after_s
        if not lost and previous.get("kind") == kind and previous.get("message") == message:
            return Outcome("error")
        snap = self._complete(snap)
        if snap is None:
            return Outcome("conflict")
        data = snap.data
        error = {"kind": kind, "message": message, "at": since}
        outcome = Outcome("error")
        updates: dict[str, Any] = {"last_poll_error": error, "polled_at": now}
        if lost:
            updates.update(terminal=True, has_unpublished=True, expire_at=self.expire_at(now))
            take_lease = not _lease_active(data, now)
            if take_lease:
                updates["publish_lease"] = self.lease(owner, now)
            event = events.lost({**data, **updates}, self._settings.event_source, now)
            updates["outbox.lost"] = event.to_doc()
            outcome = Outcome("lost", (event,), take_lease)
        batch = self._db.batch()
        if lost:
            self._expire_transitions(batch, snap.name, int(data.get("version") or 0), updates["expire_at"])
        batch.update(self.ref(snap.name), updates, option=self._precondition(snap))
        try:
            batch.commit()
        except (gexc.FailedPrecondition, gexc.NotFound):
            return Outcome("conflict")
        return outcome

    def _expire_transitions(self, batch, name: str, upto: int, expire_at: dt.datetime | None) -> None:
        """A finished job's earlier transitions expire with it (the TTL policy deletes them too)."""
        if expire_at is None:
            return
        for version in range(1, upto + 1):
            batch.update(self._transition_ref(name, version), {"expire_at": expire_at})

    # -- the outbox -------------------------------------------------------------------------------------
    def lease(self, owner: str, now: dt.datetime) -> dict[str, Any]:
        return {"owner": owner, "until": now + dt.timedelta(seconds=self._settings.publish_lease_s)}

    def claim(self, snap: Snapshot, owner: str, now: dt.datetime, *, force: bool = False) -> bool:
        """Take the record's publish lease, unless another tick holds a live one."""
        from google.api_core import exceptions as gexc

        lease = snap.data.get("publish_lease") or {}
        if not force and _lease_active(snap.data, now) and lease.get("owner") != owner:
            return False
        try:
            self.ref(snap.name).update({"publish_lease": self.lease(owner, now)},
                                       option=self._precondition(snap))
        except (gexc.FailedPrecondition, gexc.NotFound):
            return False
        return True

    def pending_events(self, data: dict[str, Any]) -> list[tuple[str, events.Event]]:
        """Unpublished events of one record, in the order they must go out: transitions by version,
        then the record's outbox (lost, copy). Each comes with its outbox key (a version or a name)."""
        name = data["name"]
        out: list[tuple[str, events.Event]] = []
        first, last = int(data.get("published_version") or 0) + 1, int(data.get("version") or 0)
        if last >= first:
            refs = [self._transition_ref(name, v) for v in range(first, last + 1)]
            docs = sorted((d for d in self._db.get_all(refs) if d.exists), key=lambda d: d.get("version"))
            for doc in docs:
                t = doc.to_dict()
                if not t.get("published"):
                    out.append((transition_id(t["version"]), events.Event.from_doc(t["event"])))
        for key in ("lost", "copy"):
            entry = (data.get("outbox") or {}).get(key)
            if entry:
                out.append((key, events.Event.from_doc(entry)))
        return out

    def mark_published(self, name: str, done: list[tuple[str, events.Event]], owner: str) -> None:
        """Record what was published (in one transaction) and release the lease if it is ours."""
        from google.cloud import firestore

        ref = self.ref(name)
        transaction = self._db.transaction()

        @firestore.transactional
        def run(txn) -> None:
            doc = ref.get(transaction=txn)
            if not doc.exists:
                return
            data = doc.to_dict()
            published = int(data.get("published_version") or 0)
            updates: dict[str, Any] = {}
            outbox = dict(data.get("outbox") or {})
            for key, event in done:
                if key.isdigit():
                    published = max(published, int(key))
                    txn.update(ref.collection(TRANSITIONS).document(key), {"published": True})
                elif (outbox.get(key) or {}).get("id") == event.id:
                    outbox.pop(key)
                    updates[f"outbox.{key}"] = firestore.DELETE_FIELD
                    if key == "copy":
                        updates["copy.announced"] = True
            updates["published_version"] = published
            updates["has_unpublished"] = published < int(data.get("version") or 0) or bool(outbox)
            if ((data.get("publish_lease") or {}).get("owner")) == owner:
                updates["publish_lease"] = None
            txn.update(ref, updates)

        run(transaction)

    def release(self, name: str, owner: str) -> None:
        """Drop our lease without publishing (after a publish failure), so the next tick retries."""
        from google.cloud import firestore

        ref = self.ref(name)
        transaction = self._db.transaction()

        @firestore.transactional
        def run(txn) -> None:
            doc = ref.get(transaction=txn)
            if doc.exists and ((doc.get("publish_lease") or {}).get("owner")) == owner:
                txn.update(ref, {"publish_lease": None})

        run(transaction)

    # -- heartbeat ---------------------------------------------------------------------------------------
    def heartbeat(self, summary: dict[str, Any], now: dt.datetime) -> None:
        self._meta.document(HEARTBEAT).set({"last_tick": now, "summary": summary})

    def read_heartbeat(self) -> dict[str, Any] | None:
        doc = self._meta.document(HEARTBEAT).get()
        return doc.to_dict() if doc.exists else None


def needs_write(data: dict[str, Any], status: JobStatus) -> bool:
    """Whether a poll that saw ``status`` must write the record (A4): the state, completion_stats,
    error or output differ, or an earlier poll error is to be cleared. ``update_time`` alone is not."""
    fields = status.compared_fields()
    return (
        fields["state"] != data.get("state")
        or fields["completion_stats"] != data.get("completion_stats")
        or fields["error"] != data.get("error")
        or fields["output"] != (data.get("output") or {})
        or bool(data.get("last_poll_error"))
    )


def new_record(job: JobName, *, destination: str | None, labels: dict[str, str], now: dt.datetime,
               tracking_id: str | None = None) -> dict[str, Any]:
    """A freshly tracked job's record: state UNSPECIFIED, version 0, copy pending (attempt 1)."""
    return {
        "name": job.name, "api": job.api, "state": states.UNSPECIFIED, "terminal": False,
        "version": 0, "tracking_id": tracking_id or secrets.token_hex(8), "display_name": None, "model": None,
        "create_time": None, "start_time": None, "end_time": None, "update_time": None,
        "completion_stats": None, "error": None, "output": {}, "destination": destination,
        "labels": labels, "copy": new_copy(), "tracked_at": now, "polled_at": None,
        "last_poll_error": None,
        # internal bookkeeping
        "shard": shard_of(job.name), "has_unpublished": False, "published_version": 0,
        "outbox": {}, "publish_lease": None, "expire_at": None,
    }


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
