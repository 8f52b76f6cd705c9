"""The job record (contract A4) as typed, frozen values, and its three views: the Firestore document
(``from_doc`` / ``to_doc``), and the public JSON record that events and the CLI carry (``public``).

Records written by older versions lack ``tracked_by`` and ``changed_at``: they read as
``tracked_by="track"`` and ``changed_at=polled_at``; nothing has to be migrated by hand. A projected
read (only some fields) reads as a record with defaults for the rest; the adapter never writes one back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import secrets
import zlib
from typing import Any

from ..batchapi import states
from ..batchapi.names import Api, JobName
from ..batchapi.states import JobState, State

SHARDS = 1024
EVERY_TICK = "1:0"  # ``poll_slot`` of a job the GET path polls every tick (see cadence.py)


class CopyStatus(enum.StrEnum):
    PENDING = "pending"
    COPYING = "copying"
    DONE = "done"
    FAILED = "failed"
    NOT_APPLICABLE = "not_applicable"

    @property
    def finished_ok(self) -> bool:
        return self in (CopyStatus.DONE, CopyStatus.NOT_APPLICABLE)


class TrackedBy(enum.StrEnum):
    TRACK = "track"
    WATCH = "watch"


def shard_of(name: str) -> int:
    return zlib.crc32(name.encode()) % SHARDS


def transition_id(version: int) -> str:
    return f"{version:08d}"


# -- JSON values --------------------------------------------------------------------------------------------

def rfc3339(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def to_json_value(value: Any) -> Any:
    """Firestore values -> JSON: timestamps RFC 3339, enums their value, maps and lists recursively."""
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _strings(value: Any) -> dict[str, str]:
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(value, dict) else {}


def _map(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, dict) else None


def _api(value: Any, name: str) -> Api:
    """The stored ``api``; a document without a valid one (never written so) takes its name's."""
    try:
        return Api(value)
    except ValueError:
        return Api.GEMINI if name.startswith("batches/") else Api.VERTEX


# -- parts of the record ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CopyState:
    """The ``copy`` map: where the outputs went, and whether its event is published (``announced``)."""

    status: CopyStatus = CopyStatus.PENDING
    attempt: int = 1
    uri: str | None = None
    manifest_uri: str | None = None
    objects: int = 0
    bytes: int = 0
    error: dict[str, Any] | None = None
    announced: bool = False

    @classmethod
    def from_doc(cls, doc: Any) -> CopyState:
        if not isinstance(doc, dict):
            return cls()
        try:
            status = CopyStatus(doc.get("status") or CopyStatus.PENDING)
        except ValueError:
            status = CopyStatus.PENDING
        return cls(status=status, attempt=_int(doc.get("attempt"), 1) or 1, uri=doc.get("uri"),
                   manifest_uri=doc.get("manifest_uri"), objects=_int(doc.get("objects")),
                   bytes=_int(doc.get("bytes")), error=_map(doc.get("error")), announced=bool(doc.get("announced")))

    def to_doc(self) -> dict[str, Any]:
        return {"status": self.status.value, "attempt": self.attempt, "uri": self.uri,
                "manifest_uri": self.manifest_uri, "objects": self.objects, "bytes": self.bytes,
                "error": self.error, "announced": self.announced}


@dataclasses.dataclass(frozen=True)
class Lease:
    """Who may publish a record's events (the publish lease), until when."""

    owner: str
    until: dt.datetime

    @classmethod
    def from_doc(cls, doc: Any) -> Lease | None:
        if isinstance(doc, dict) and isinstance(doc.get("until"), dt.datetime):
            return cls(str(doc.get("owner") or ""), doc["until"])
        return None

    def to_doc(self) -> dict[str, Any]:
        return {"owner": self.owner, "until": self.until}

    def active(self, now: dt.datetime) -> bool:
        return self.until > now


@dataclasses.dataclass(frozen=True)
class ResubmitClaim:
    """A resubmit under way (``batch-relay resubmit``), kept on the job whose failed requests it sends: its
    request ``id``, its retry number ``n`` (the batch's display name or labels follow from it, so a later
    attempt can look for the batch before creating one), and until when its owner holds it."""

    id: str
    n: int
    until: dt.datetime
    at: dt.datetime

    @classmethod
    def from_doc(cls, doc: Any) -> ResubmitClaim | None:
        if not isinstance(doc, dict) or not isinstance(doc.get("until"), dt.datetime):
            return None
        at = doc.get("at")
        return cls(str(doc.get("id") or ""), _int(doc.get("n"), 1) or 1, doc["until"],
                   at if isinstance(at, dt.datetime) else doc["until"])

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.id, "n": self.n, "until": self.until, "at": self.at}

    def active(self, now: dt.datetime) -> bool:
        return self.until > now


# The A4 fields, in order; everything else on the document is internal bookkeeping.
PUBLIC_FIELDS = (
    "name", "api", "state", "terminal", "version", "tracking_id", "display_name", "model",
    "create_time", "start_time", "end_time", "update_time", "completion_stats", "error", "output",
    "destination", "labels", "copy", "tracked_at", "polled_at", "last_poll_error", "tracked_by",
    "changed_at", "stalled_at", "results", "parent", "resubmitted_as",
)


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """One job's record. Maps (``completion_stats``, ``error``, ``output``, ``labels``, ``outbox``) are
    plain dicts as Firestore stores them: treat them as read-only, replace them to change them."""

    name: str
    api: Api
    tracking_id: str
    state: State = JobState.UNSPECIFIED
    terminal: bool = False
    version: int = 0
    display_name: str | None = None
    model: str | None = None
    create_time: dt.datetime | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    completion_stats: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    output: dict[str, Any] = dataclasses.field(default_factory=dict)
    destination: str | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    copy: CopyState = CopyState()
    tracked_at: dt.datetime | None = None
    polled_at: dt.datetime | None = None
    last_poll_error: dict[str, Any] | None = None
    tracked_by: TrackedBy = TrackedBy.TRACK
    changed_at: dt.datetime | None = None
    stalled_at: dt.datetime | None = None
    results: dict[str, Any] | None = None  # what the outputs hold (A10), set by the reactor's copy
    parent: str | None = None  # the job whose failed requests this batch resubmits
    resubmitted_as: str | None = None  # the latest batch made of this job's failed requests
    # -- internal bookkeeping (never in events) --
    shard: int = 0
    has_unpublished: bool = False
    published_version: int = 0
    outbox: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # key -> stored event
    publish_lease: Lease | None = None
    copy_lease_until: dt.datetime | None = None
    # When the reactor first found the API showing no output location for this copy attempt (the output
    # wait, RELAY_OUTPUT_WAIT_S, counts from it when the API gives no end time); None when not waiting.
    copy_waiting_since: dt.datetime | None = None
    # The rewriteToken of each destination object whose server-side copy a delivery left unfinished (by object
    # name; bounded by ``reactor.progress``): the next delivery resumes each rewrite from it. Empty otherwise.
    copy_rewrites: dict[str, str] = dataclasses.field(default_factory=dict)
    expire_at: dt.datetime | None = None
    # Which path observes the job: ``poll_slot`` (the GET path's schedule, "" = not polled by GET) and
    # ``watch_scope`` (the watched scope whose list observes it, "" = none; ``watch_part``: its digest part).
    poll_slot: str = EVERY_TICK
    watch_scope: str = ""
    watch_part: int = 0
    # Resubmits: ``lineage`` names the first job of the chain this batch resubmits (its root; "" for a job that
    # resubmits nothing); on that first job, ``resubmits`` counts the batches its lineage made (the ``n`` of
    # ``/retry-{n}``); ``resubmit_claim`` is a resubmit of this job's failed requests under way.
    lineage: str = ""
    resubmits: int = 0
    resubmit_claim: ResubmitClaim | None = None

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def new(cls, job: JobName, *, destination: str | None, labels: dict[str, str], now: dt.datetime,
            tracked_by: TrackedBy = TrackedBy.TRACK, tracking_id: str | None = None) -> JobRecord:
        """A freshly tracked job: state UNSPECIFIED, version 0, copy pending (attempt 1)."""
        return cls(name=job.name, api=job.api, tracking_id=tracking_id or secrets.token_hex(8),
                   destination=destination, labels=dict(labels), tracked_at=now, tracked_by=tracked_by,
                   shard=shard_of(job.name))

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> JobRecord:
        """From a stored document (whole or projected). Unknown fields are ignored."""
        name = doc.get("name") or ""
        polled_at = doc.get("polled_at")
        try:
            tracked_by = TrackedBy(doc.get("tracked_by") or TrackedBy.TRACK)
        except ValueError:
            tracked_by = TrackedBy.TRACK
        return cls(
            name=name, api=_api(doc.get("api"), name), tracking_id=doc.get("tracking_id") or "",
            state=states.stored(doc.get("state")), terminal=bool(doc.get("terminal")),
            version=_int(doc.get("version")), display_name=doc.get("display_name"), model=doc.get("model"),
            create_time=doc.get("create_time"), start_time=doc.get("start_time"), end_time=doc.get("end_time"),
            update_time=doc.get("update_time"), completion_stats=_map(doc.get("completion_stats")),
            error=_map(doc.get("error")), output=_map(doc.get("output")) or {},
            destination=doc.get("destination"), labels=_map(doc.get("labels")) or {},
            copy=CopyState.from_doc(doc.get("copy")), tracked_at=doc.get("tracked_at"), polled_at=polled_at,
            last_poll_error=_map(doc.get("last_poll_error")), tracked_by=tracked_by,
            changed_at=doc.get("changed_at", polled_at), stalled_at=doc.get("stalled_at"),
            results=_map(doc.get("results")), parent=_str(doc.get("parent")),
            resubmitted_as=_str(doc.get("resubmitted_as")),
            shard=_int(doc.get("shard"), shard_of(name)), has_unpublished=bool(doc.get("has_unpublished")),
            published_version=_int(doc.get("published_version")), outbox=_map(doc.get("outbox")) or {},
            publish_lease=Lease.from_doc(doc.get("publish_lease")), copy_lease_until=doc.get("copy_lease_until"),
            copy_waiting_since=doc.get("copy_waiting_since"), copy_rewrites=_strings(doc.get("copy_rewrites")),
            expire_at=doc.get("expire_at"),
            poll_slot=doc.get("poll_slot", "" if doc.get("terminal") else EVERY_TICK),
            watch_scope=doc.get("watch_scope") or "", watch_part=_int(doc.get("watch_part")),
            lineage=_str(doc.get("lineage")) or "", resubmits=_int(doc.get("resubmits")),
            resubmit_claim=ResubmitClaim.from_doc(doc.get("resubmit_claim")),
        )

    # -- views -----------------------------------------------------------------------------------------
    def to_doc(self) -> dict[str, Any]:
        """The whole Firestore document."""
        doc: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (CopyState, Lease, ResubmitClaim)):
                value = value.to_doc()
            elif isinstance(value, enum.Enum):
                value = value.value
            doc[field.name] = value
        return doc

    def public(self) -> dict[str, Any]:
        """The A4 record as JSON (timestamps RFC 3339), internal fields left out: what events carry."""
        out = {field: to_json_value(getattr(self, field)) for field in PUBLIC_FIELDS}
        out["copy"] = to_json_value(self.copy.to_doc())
        return out

    def changes_from(self, before: JobRecord) -> dict[str, Any]:
        """The document fields that differ from ``before`` (top-level: a changed map is written whole)."""
        old, new = before.to_doc(), self.to_doc()
        return {key: value for key, value in new.items() if old[key] != value}

    def replace(self, **changes: Any) -> JobRecord:
        return dataclasses.replace(self, **changes)

    @property
    def job(self) -> JobName:
        return JobName.parse(self.name)
