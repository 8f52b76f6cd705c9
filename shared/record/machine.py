"""The record's state machine, as pure functions: each takes a ``JobRecord`` (or ``None`` where the
record may be missing) and what happened, and returns one shape, an ``Outcome``: what it found or did
(``result``, typed per function) and what to write — a ``Change`` (the record after, the transition
documents, the events) — or ``None`` when nothing is to be written. Nothing here touches Firestore; the
store commits any ``Outcome`` the same way.

Two leases, two names: the **publish lease** (``publish_lease``: which tick or function publishes the
record's events now) and the **copy lease** (``copy_lease_until``: which reactor delivery copies the
outputs now).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any, Generic, NamedTuple, TypeVar

from ..batchapi import states
from ..batchapi.names import JobName
from ..batchapi.states import JobState
from ..batchapi.wire import JobStatus
from ..errors import UsageError
from ..events import event as events
from ..settings import Settings
from .model import EVERY_TICK, CopyState, CopyStatus, JobRecord, Lease, ResubmitClaim, TrackedBy, transition_id


class PollResult(enum.StrEnum):
    """What an observation did to a record."""

    UNCHANGED = "unchanged"  # nothing to write
    STALE = "stale"  # older than what the record holds: ignored
    CHANGED = "changed"  # a new state: version + 1, a transition, an event
    UPDATED = "updated"  # counts, error or output changed: written, no event
    ERROR = "error"  # the fetch failed; noted on the record
    LOST = "lost"  # 404 for RELAY_LOST_AFTER_S: given up, a lost event
    CONFLICT = "conflict"  # the record changed since it was read: nothing written, looked at again later


class ClaimResult(enum.StrEnum):
    """What claiming a record's copy found."""

    CLAIMED = "claimed"  # the caller copies now, under the copy lease
    DONE = "done"  # already done or not applicable: only make sure it is announced
    FAILED = "failed"  # already failed: only make sure it is announced
    BUSY = "busy"  # another delivery holds a live copy lease
    NOT_ENDED = "not_ended"  # the record's state is not a terminal one (nothing to copy yet, or ever)


@dataclasses.dataclass(frozen=True)
class TransitionWrite:
    """A write to ``transitions/{version}``: a whole new document, or some fields of an existing one."""

    version: int
    fields: dict[str, Any]
    create: bool = False

    @property
    def id(self) -> str:
        return transition_id(self.version)


@dataclasses.dataclass(frozen=True)
class Route:
    """Watch a job under a scope: its list observes it (``watch_part``: the scope's digest part)."""

    scope: str
    part: int


@dataclasses.dataclass(frozen=True)
class Change:
    """What to commit: the record after, transition writes, and the events this change put in the outbox.
    ``lease``: the change took the publish lease, so its writer publishes the events at once."""

    record: JobRecord
    transitions: tuple[TransitionWrite, ...] = ()
    events: tuple[events.Event, ...] = ()
    lease: bool = False
    guard: dt.datetime | None = None  # set by the store once committed: the record's update time as it left it


R = TypeVar("R")


class Outcome(NamedTuple, Generic[R]):
    """What every function of the machine returns: its ``result`` and the ``Change`` to commit (None:
    nothing to write). A tuple, so ``result, change = machine.apply_status(…)`` reads as it did."""

    result: R
    change: Change | None = None


@dataclasses.dataclass(frozen=True)
class Claim:
    """What claiming a record's copy found (``result``) and the record after: with the copy lease when
    ``CLAIMED``, as it is otherwise. A job that is not tracked has no ``Claim`` at all (None)."""

    result: ClaimResult
    record: JobRecord


# -- observations -------------------------------------------------------------------------------------------

def is_stale(record: JobRecord, status: JobStatus) -> bool:
    """Observations never go backwards (A4): one whose ``updateTime`` is older than the record's is stale."""
    return bool(status.update_time and record.update_time and status.update_time < record.update_time)


def needs_write(record: JobRecord, status: JobStatus) -> bool:
    """Whether an observation must write the record (A4): the state, completion_stats, error or output
    differ, or an earlier poll error is to be cleared. ``update_time`` alone is not a change. A stale
    observation never writes."""
    if is_stale(record, status):
        return False
    return (
        status.state != record.state
        or status.completion_stats != record.completion_stats
        or status.error != record.error
        or (status.output or {}) != record.output
        or record.last_poll_error is not None
    )


def _expire_at(now: dt.datetime, settings: Settings) -> dt.datetime | None:
    return now + dt.timedelta(days=settings.retention_days) if settings.retention_days > 0 else None


def _publish_lease(owner: str, now: dt.datetime, settings: Settings) -> Lease:
    return Lease(owner, now + dt.timedelta(seconds=settings.publish_lease_s))


def _expire_transitions(upto: int, expire_at: dt.datetime | None) -> tuple[TransitionWrite, ...]:
    """A finished job's earlier transitions expire with it (the TTL policy deletes them too)."""
    if expire_at is None:
        return ()
    return tuple(TransitionWrite(v, {"expire_at": expire_at}) for v in range(1, upto + 1))


def _watched(record: JobRecord, route: Route) -> JobRecord:
    """The record observed by its scope's list from now on (and no longer by the GET path)."""
    return record.replace(watch_scope=route.scope, watch_part=route.part, poll_slot="")


def unwatch(record: JobRecord) -> Outcome[PollResult]:
    """Hand the record back to the GET path (its scope's list no longer shows it, or the scope is no
    longer watched): ``UPDATED``, or ``UNCHANGED`` (nothing to write) when it is not watched."""
    if not record.watch_scope:
        return Outcome(PollResult.UNCHANGED)
    after = record.replace(watch_scope="", watch_part=0, poll_slot="" if record.terminal else EVERY_TICK)
    return Outcome(PollResult.UPDATED, Change(after))


def _finished(record: JobRecord) -> JobRecord:
    """A terminal record is observed by no path any more."""
    return record.replace(watch_scope="", watch_part=0, poll_slot="")


def apply_status(record: JobRecord, status: JobStatus, now: dt.datetime, owner: str,
                 settings: Settings, route: Route | None = None, via: str = "get") -> Outcome[PollResult]:
    """Apply an observed status (``via``: a tick's ``get``, a ``list`` page or a ``webhook``'s fetch; the
    transition notes it). With ``route``, the observation came from a list that covers the job: the
    record is watched under it from now on."""
    result, change = outcome = _apply(record, status, now, owner, settings, via)
    if route is None:
        return outcome
    after = change.record if change else record
    if after.terminal or (after.watch_scope, after.watch_part) == (route.scope, route.part):
        return outcome
    if change is None:
        return Outcome(result, Change(_watched(after, route)))
    return Outcome(result, dataclasses.replace(change, record=_watched(after, route)))


def discover(job: JobName, status: JobStatus, now: dt.datetime, owner: str, settings: Settings,
             route: Route, via: str = "list") -> Outcome[PollResult]:
    """A job of a watched scope without a record (found in its list, or nudged by a webhook): tracked
    (``tracked_by = watch``, default destination) and its status applied at once: version 1 from
    UNSPECIFIED, as after ``track``."""
    fresh = JobRecord.new(job, destination=None, labels={}, now=now, tracked_by=TrackedBy.WATCH)
    result, change = apply_status(fresh, status, now, owner, settings, route, via)
    return Outcome(result, change or Change(_watched(fresh, route)))


def _apply(record: JobRecord, status: JobStatus, now: dt.datetime, owner: str,
           settings: Settings, via: str) -> Outcome[PollResult]:
    if is_stale(record, status):
        return Outcome(PollResult.STALE)
    if not needs_write(record, status):
        return Outcome(PollResult.UNCHANGED)
    changed_state = status.state != record.state
    moved = changed_state or status.completion_stats != record.completion_stats
    after = record.replace(
        state=status.state, terminal=status.terminal, completion_stats=status.completion_stats,
        error=status.error, output=dict(status.output or {}), display_name=status.display_name,
        model=status.model, create_time=status.create_time, start_time=status.start_time,
        end_time=status.end_time, update_time=status.update_time, polled_at=now, last_poll_error=None,
    )
    if moved:
        after = after.replace(changed_at=now)
        if after.poll_slot:  # the GET path polls a job that just moved every tick again
            after = after.replace(poll_slot=EVERY_TICK)
    if status.terminal:
        after = _finished(after).replace(expire_at=_expire_at(now, settings))
    if not changed_state:
        return Outcome(PollResult.UPDATED, Change(after))
    version = record.version + 1
    take = record.publish_lease is None or not record.publish_lease.active(now)
    after = after.replace(version=version, has_unpublished=True, stalled_at=None,
                          publish_lease=_publish_lease(owner, now, settings) if take else record.publish_lease)
    event = events.state_changed(after, record.state or JobState.UNSPECIFIED, settings.event_source, now)
    transition = TransitionWrite(version, {
        "version": version, "from_state": record.state, "to_state": status.state, "observed_at": now,
        "event_id": event.id, "published": False, "event": event.to_doc(), "expire_at": after.expire_at,
        "via": via,
    }, create=True)
    expiring = _expire_transitions(version - 1, after.expire_at) if status.terminal else ()
    return Outcome(PollResult.CHANGED, Change(after, (transition, *expiring), (event,), take))


def record_poll_error(record: JobRecord, kind: str, message: str, now: dt.datetime, owner: str,
                      settings: Settings) -> Outcome[PollResult]:
    """Note why a status fetch failed; after ``lost_after_s`` of 404s give the job up as lost. The same
    error as last time writes nothing."""
    previous = record.last_poll_error or {}
    since = (previous.get("at") if previous.get("kind") == kind else None) or now
    lost = kind == "not_found" and (now - since).total_seconds() >= settings.lost_after_s
    if not lost and previous.get("kind") == kind and previous.get("message") == message:
        return Outcome(PollResult.ERROR)
    after = record.replace(last_poll_error={"kind": kind, "message": message, "at": since}, polled_at=now)
    if not lost:
        return Outcome(PollResult.ERROR, Change(after))
    take = record.publish_lease is None or not record.publish_lease.active(now)
    expire_at = _expire_at(now, settings)
    after = _finished(after).replace(terminal=True, has_unpublished=True, expire_at=expire_at,
                          publish_lease=_publish_lease(owner, now, settings) if take else record.publish_lease)
    event = events.lost(after, settings.event_source, now)
    after = after.replace(outbox={**after.outbox, "lost": event.to_doc()})
    return Outcome(PollResult.LOST, Change(after, _expire_transitions(record.version, expire_at), (event,), take))


# -- stalls -------------------------------------------------------------------------------------------------

def stall_due(record: JobRecord, now: dt.datetime, settings: Settings) -> bool:
    """A non-terminal job whose state and counts have not changed for ``RELAY_STALL_AFTER_S``, and whose
    current version has no ``stalled`` event yet (at most one per version; 0 turns stalls off)."""
    if settings.stall_after_s <= 0 or record.terminal or record.version == 0 or record.stalled_at is not None:
        return False
    since = record.changed_at
    return since is not None and (now - since).total_seconds() >= settings.stall_after_s


def stall(record: JobRecord, now: dt.datetime, owner: str, settings: Settings) -> Outcome[PollResult]:
    """The ``stalled`` event of the current version, through the record's outbox (``stalled_at`` set):
    ``UPDATED``, or ``UNCHANGED`` (nothing to write) when it is not due."""
    if not stall_due(record, now, settings):
        return Outcome(PollResult.UNCHANGED)
    take = record.publish_lease is None or not record.publish_lease.active(now)
    after = record.replace(stalled_at=now, has_unpublished=True,
                           publish_lease=_publish_lease(owner, now, settings) if take else record.publish_lease)
    event = events.stalled(after, settings.event_source, now)
    after = after.replace(outbox={**after.outbox, stalled_key(record.version): event.to_doc()})
    return Outcome(PollResult.UPDATED, Change(after, events=(event,), lease=take))


def stalled_key(version: int) -> str:
    """The outbox key of a version's ``stalled`` event (one per version: a newer one never replaces an
    older one still unpublished)."""
    return f"stalled-{transition_id(version)}"


# -- the publish lease and the outbox ------------------------------------------------------------------------

def take_publish_lease(record: JobRecord, owner: str, now: dt.datetime, settings: Settings, *,
                       force: bool = False) -> Outcome[bool]:
    """Take the publish lease (True), unless another holds a live one and not ``force`` (False)."""
    lease = record.publish_lease
    if not force and lease is not None and lease.active(now) and lease.owner != owner:
        return Outcome(False)
    return Outcome(True, Change(record.replace(publish_lease=_publish_lease(owner, now, settings))))


def give_back_publish_lease(record: JobRecord | None, owner: str) -> Outcome[bool]:
    """Drop our publish lease (True); False, and nothing to write, when it is not ours (or no record)."""
    if record is None or record.publish_lease is None or record.publish_lease.owner != owner:
        return Outcome(False)
    return Outcome(True, Change(record.replace(publish_lease=None)))


def unpublished_versions(record: JobRecord) -> range:
    """Versions whose transitions may still be unpublished."""
    return range(record.published_version + 1, record.version + 1)


def pending_order(key: str) -> tuple[float, int]:
    """Where an outbox entry goes among a job's events: a transition at its version, a version's
    ``stalled`` right after that version's transition, then ``lost``, then the copy's announcement."""
    if key.isdigit():
        return int(key), 0
    if key.startswith("stalled-"):
        return int(key.removeprefix("stalled-")), 1
    return float("inf"), {"lost": 0, "copy": 1}.get(key, 2)


def outbox_events(record: JobRecord) -> list[tuple[str, events.Event]]:
    """The record's own outbox entries (``lost``, ``stalled-{version}``, ``copy``), each with its key."""
    return [(key, events.Event.from_doc(doc)) for key, doc in record.outbox.items() if doc]


def pending_of_change(change: Change) -> list[tuple[str, events.Event]] | None:
    """What ``JobStore.pending_events`` would read back right after ``change`` was committed, from the
    change itself — or None when an older transition may still be unpublished (only the store knows)."""
    made = {write.version: write.fields for write in change.transitions if write.create and "event" in write.fields}
    versions = unpublished_versions(change.record)
    if any(version not in made for version in versions):
        return None
    out = [(transition_id(v), events.Event.from_doc(made[v]["event"])) for v in versions]
    out.extend(outbox_events(change.record))
    return sorted(out, key=lambda item: pending_order(item[0]))


def mark_published(record: JobRecord | None, done: list[tuple[str, events.Event]], owner: str) -> Outcome[None]:
    """Record what was published: transitions (keys are zero-padded versions) and outbox entries (by
    name, only if the entry is still the event published), and give back our publish lease. Nothing to
    write when the record is gone."""
    if record is None:
        return Outcome(None)
    published = record.published_version
    outbox = dict(record.outbox)
    marks: list[TransitionWrite] = []
    copy = record.copy
    for key, event in done:
        if key.isdigit():
            published = max(published, int(key))
            marks.append(TransitionWrite(int(key), {"published": True}))
        elif (outbox.get(key) or {}).get("id") == event.id:
            outbox.pop(key)
            if key == "copy":
                copy = dataclasses.replace(copy, announced=True)
    lease = None if record.publish_lease is not None and record.publish_lease.owner == owner \
        else record.publish_lease
    after = record.replace(published_version=published, outbox=outbox, copy=copy, publish_lease=lease,
                           has_unpublished=published < record.version or bool(outbox))
    return Outcome(None, Change(after, tuple(marks)))


# -- tracking -----------------------------------------------------------------------------------------------

def track(record: JobRecord | None, job: JobName, *, destination: str | None, labels: dict[str, str],
          now: dt.datetime, tracked_by: TrackedBy = TrackedBy.TRACK) -> Outcome[tuple[JobRecord, bool]]:
    """``track``: a new record (state UNSPECIFIED, version 0), or the options given applied to the
    tracked one (``update_tracking``). The result: the record after, and whether it was created."""
    if record is None:
        fresh = JobRecord.new(job, destination=destination, labels=labels, now=now, tracked_by=tracked_by)
        return Outcome((fresh, True), Change(fresh))
    after, change = update_tracking(record, destination=destination, labels=labels)
    return Outcome((after, False), change)


def update_tracking(record: JobRecord, *, destination: str | None, labels: dict[str, str]) -> Outcome[JobRecord]:
    """``track`` of a tracked job: only the options given change (labels merge). The result is the record
    after; no change when nothing changes."""
    after = record
    if destination is not None and destination != record.destination:
        after = after.replace(destination=destination)
    if labels:
        merged = {**record.labels, **labels}
        if merged != record.labels:
            after = after.replace(labels=merged)
    return Outcome(after, None if after is record else Change(after))


# -- the copy -----------------------------------------------------------------------------------------------

def claim_copy(record: JobRecord | None, now: dt.datetime, settings: Settings) -> Outcome[Claim | None]:
    """Take the copy lease (``pending``/expired ``copying`` -> ``copying``) of a job that ended, however it
    ended (a job that did not succeed may have partial outputs: the copy asks the API). The result: what was
    found and the record after (with the lease when ``CLAIMED``, the only case that writes); None: not
    tracked."""
    if record is None:
        return Outcome(None)
    status = record.copy.status
    if status.finished_ok:
        return Outcome(Claim(ClaimResult.DONE, record))
    if status == CopyStatus.FAILED:
        return Outcome(Claim(ClaimResult.FAILED, record))
    if not states.is_terminal(record.state):
        return Outcome(Claim(ClaimResult.NOT_ENDED, record))
    if status == CopyStatus.COPYING and record.copy_lease_until and record.copy_lease_until > now:
        return Outcome(Claim(ClaimResult.BUSY, record))
    after = record.replace(copy=dataclasses.replace(record.copy, status=CopyStatus.COPYING),
                           copy_lease_until=now + dt.timedelta(seconds=settings.copy_lease_s))
    return Outcome(Claim(ClaimResult.CLAIMED, after), Change(after))


def _owns_copy(record: JobRecord, attempt: int) -> bool:
    return record.copy.attempt == attempt and record.copy.status == CopyStatus.COPYING


def finish_copy(record: JobRecord | None, attempt: int, now: dt.datetime, settings: Settings, *,
                status: CopyStatus, uri: str | None = None, manifest_uri: str | None = None, objects: int = 0,
                size: int = 0, error: dict[str, Any] | None = None, results: dict[str, Any] | None = None,
                partial: bool | None = None) -> Outcome[events.Event | None]:
    """Commit a copy's result and put its announcement in the outbox (``announced=false``); the result is
    the announcement. ``results`` (A10) goes on the record and in ``outputsReady``; ``partial``: the job
    ended otherwise than by succeeding, as the API said at copy time (None: as the record says). None, and
    nothing to write, when this attempt no longer owns the copy."""
    if record is None or not _owns_copy(record, attempt):
        return Outcome(None)
    copy = dataclasses.replace(record.copy, status=status, uri=uri, manifest_uri=manifest_uri, objects=int(objects),
                               bytes=int(size), error=error, announced=False)
    after = record.replace(copy=copy, copy_lease_until=None, copy_waiting_since=None, copy_rewrites={})
    if status != CopyStatus.FAILED:
        after = after.replace(results=results)
        event = events.outputs_ready(after, settings.event_source, now, partial=partial)
    else:
        event = events.outputs_failed(after, settings.event_source, now)
    after = after.replace(outbox={**after.outbox, "copy": event.to_doc()}, has_unpublished=True)
    return Outcome(event, Change(after, events=(event,)))


def release_copy(record: JobRecord | None, attempt: int, now: dt.datetime,
                 waiting_since: dt.datetime | None = None) -> Outcome[bool]:
    """Give a claimed copy back after a transient failure: it stays ``copying`` with its lease ended now,
    so a redelivery takes it over at once, and if none ever comes (the dead-letter topic took the message)
    the sweep fails and announces it a lease later. ``waiting_since``: the copy found no output location
    yet; the first such time is kept (``copy_waiting_since``)."""
    if record is None or not _owns_copy(record, attempt):
        return Outcome(False)
    after = record.replace(copy_lease_until=now)
    if waiting_since is not None and record.copy_waiting_since is None:
        after = after.replace(copy_waiting_since=waiting_since)
    return Outcome(True, Change(after))


def save_rewrites(record: JobRecord | None, attempt: int, tokens: dict[str, str]) -> Outcome[bool]:
    """Keep the rewrite tokens of a copy under way (``copy_rewrites``), so the next delivery resumes them;
    False, and nothing written, when this attempt no longer owns the copy."""
    if record is None or not _owns_copy(record, attempt):
        return Outcome(False)
    if record.copy_rewrites == tokens:
        return Outcome(True)
    return Outcome(True, Change(record.replace(copy_rewrites=dict(tokens))))


def copy_stuck(record: JobRecord, now: dt.datetime, settings: Settings) -> bool:
    """A copy in ``copying`` whose lease ran out a whole lease ago: a redelivery had its chance to take
    the expired lease over; the reactor is taken to have died or the dead-letter topic to hold the message.
    A copy waiting for the API to show its output location is redelivered for up to ``RELAY_OUTPUT_WAIT_S``
    from its first try: it is stuck only a lease after that. A copy that stopped with rewrites unfinished
    (``copy_rewrites``) gets two leases: Pub/Sub's backoff between its deliveries grows up to 600 s."""
    if record.copy.status != CopyStatus.COPYING:
        return False
    lease = record.copy_lease_until
    if lease is None:
        return True
    if record.copy_waiting_since is not None:
        lease = max(lease, record.copy_waiting_since + dt.timedelta(seconds=settings.output_wait_s))
    leases = 2 if record.copy_rewrites else 1
    return lease + dt.timedelta(seconds=leases * settings.copy_lease_s) <= now


def fail_stuck_copy(record: JobRecord | None, now: dt.datetime, settings: Settings) -> Outcome[bool]:
    """Fail (and put in the outbox) a copy still stuck (True); one a redelivery or ``recopy`` took up is
    left alone (False)."""
    if record is None or not copy_stuck(record, now, settings):
        return Outcome(False)
    error = {"kind": "timeout", "message": "copy did not finish within its lease (RELAY_COPY_LEASE_S)"}
    if record.copy_rewrites:  # kept: ``recopy`` resumes them
        error = {"kind": "rewrite_unfinished", "message": (
            f"the server-side copy of {len(record.copy_rewrites)} object(s) was still unfinished when the "
            "deliveries stopped (a large object across locations or storage classes); recopy resumes it")}
    copy = dataclasses.replace(record.copy, status=CopyStatus.FAILED, announced=False, error=error)
    after = record.replace(copy=copy, copy_lease_until=None)
    event = events.outputs_failed(after, settings.event_source, now)
    after = after.replace(outbox={**after.outbox, "copy": event.to_doc()}, has_unpublished=True)
    return Outcome(True, Change(after, events=(event,)))


def recopy(record: JobRecord | None, name: str) -> Outcome[JobRecord]:
    """A new attempt of a failed or stuck copy: ``attempt + 1``, status ``pending``."""
    if record is None:
        raise UsageError(f"{name} is not tracked")
    if not states.is_terminal(record.state):
        raise UsageError(f"{name} is {record.state}: only a job that ended has outputs to copy")
    if record.copy.status.finished_ok:
        raise UsageError(f"the copy of {name} is already {record.copy.status.value}")
    after = record.replace(copy=CopyState(attempt=record.copy.attempt + 1), copy_lease_until=None,
                           copy_waiting_since=None)
    return Outcome(after, Change(after))


# -- resubmits ----------------------------------------------------------------------------------------------
# ``batch-relay resubmit``: a new batch from a job's failed requests. The job keeps a claim while the batch is
# being made (``resubmit_claim``: a request id, the retry number ``n``, a lease), so that two resubmits never
# both create one, and an interrupted one is finished — its batch looked for first — rather than started
# again. Retry numbers count the batches of a lineage: the first job of a chain of resubmits holds the counter.

class ResubmitStep(enum.StrEnum):
    """What beginning a resubmit found."""

    FRESH = "fresh"  # a new retry number is ours: create the batch
    RESUME = "resume"  # an interrupted resubmit (its claim ran out) is ours to finish: look for its batch first
    EXISTING = "existing"  # already resubmitted, and not ``--again``: that batch is the answer
    BUSY = "busy"  # another resubmit holds a live claim: look for its batch; if none is listed, wait


@dataclasses.dataclass(frozen=True)
class ResubmitStart:
    """What ``begin_resubmit`` decided: the step, the retry number, the claim (ours, or the live one of
    another resubmit when ``BUSY``), the batch already made (``EXISTING``), the lineage's first job (whose
    counter numbered it) and that record's change when it is another record than the job's."""

    step: ResubmitStep
    n: int = 0
    claim: ResubmitClaim | None = None
    existing: str | None = None
    root: str = ""
    root_change: Change | None = None


@dataclasses.dataclass(frozen=True)
class ResubmitFinish:
    """What ``finish_resubmit`` did: whether the job's ``resubmitted_as`` names the batch now (``linked``;
    False when a later resubmit of the job has taken its place), and the batch's record after (created when
    ``created``), with the change that writes it."""

    linked: bool
    record: JobRecord
    created: bool
    child_change: Change | None = None


def lineage_root(record: JobRecord, root: JobRecord | None) -> JobRecord:
    """The record that numbers a resubmit of ``record``: the first job of its lineage (``root``, as read),
    or the job itself when it starts one, or when that first job is no longer tracked."""
    if record.lineage and root is not None and root.name == record.lineage:
        return root
    return record


def next_retry(record: JobRecord, root: JobRecord | None) -> int:
    """The retry number a resubmit of ``record`` would take now: the interrupted one's, or the next free."""
    if record.resubmit_claim is not None:
        return record.resubmit_claim.n
    return lineage_root(record, root).resubmits + 1


def begin_resubmit(record: JobRecord | None, root: JobRecord | None, name: str, *, request_id: str, again: bool,
                   now: dt.datetime, lease_s: float) -> Outcome[ResubmitStart]:
    """Begin a resubmit of ``record``'s failed requests (``root``: the first job of its lineage, as read;
    None when it has none or it is gone). A claim already there is finished first — a live one of another
    request is ``BUSY``, one that ran out is taken over (``RESUME``, the same ``n``) — with or without
    ``again``; then a job already resubmitted is ``EXISTING`` unless ``again``; else a new retry number is
    counted on the lineage's first job and claimed (``FRESH``). ``UsageError`` when the job is not tracked."""
    if record is None:
        raise UsageError(f"{name} is not tracked")
    until = now + dt.timedelta(seconds=lease_s)
    first = lineage_root(record, root)
    claim = record.resubmit_claim
    if claim is not None:
        if claim.active(now) and claim.id != request_id:
            return Outcome(ResubmitStart(ResubmitStep.BUSY, claim.n, claim, root=first.name))
        mine = ResubmitClaim(request_id, claim.n, until, claim.at)
        return Outcome(ResubmitStart(ResubmitStep.RESUME, claim.n, mine, root=first.name),
                       Change(record.replace(resubmit_claim=mine)))
    if record.resubmitted_as and not again:
        return Outcome(ResubmitStart(ResubmitStep.EXISTING, existing=record.resubmitted_as, root=first.name))
    n = first.resubmits + 1
    mine = ResubmitClaim(request_id, n, until, now)
    after = record.replace(resubmit_claim=mine)
    root_change = None
    if first is record:
        after = after.replace(resubmits=n)
    else:
        root_change = Change(first.replace(resubmits=n))
    return Outcome(ResubmitStart(ResubmitStep.FRESH, n, mine, root=first.name, root_change=root_change),
                   Change(after))


def renew_resubmit(record: JobRecord | None, request_id: str, now: dt.datetime, lease_s: float) -> Outcome[bool]:
    """Hold our claim a lease longer (True); False, and nothing to write, when it is no longer ours."""
    claim = record.resubmit_claim if record is not None else None
    if record is None or claim is None or claim.id != request_id:
        return Outcome(False)
    mine = dataclasses.replace(claim, until=now + dt.timedelta(seconds=lease_s))
    return Outcome(True, Change(record.replace(resubmit_claim=mine)))


def release_resubmit(record: JobRecord | None, request_id: str, now: dt.datetime) -> Outcome[bool]:
    """End our claim's lease now, keeping its retry number: the batch was certainly not created, so the next
    resubmit takes the claim over at once (and still looks for a batch first). False when it is not ours."""
    claim = record.resubmit_claim if record is not None else None
    if record is None or claim is None or claim.id != request_id:
        return Outcome(False)
    return Outcome(True, Change(record.replace(resubmit_claim=dataclasses.replace(claim, until=now))))


def finish_resubmit(record: JobRecord | None, child: JobRecord | None, *, parent: str, batch: JobName, n: int,
                    root: str, destination: str | None, labels: dict[str, str],
                    now: dt.datetime) -> Outcome[ResubmitFinish]:
    """Record a batch made of ``parent``'s failed requests (retry ``n`` of the lineage that starts at
    ``root``): the parent's ``resubmitted_as`` names it and its claim ends, when the claim is still the one
    of that retry number (whoever made the batch: a resubmit that found an interrupted one's batch finishes
    it too); and the batch is tracked (``tracked_by = track``) with ``parent``, the parent's labels and the
    retry's destination — or, already tracked (a watched scope found it first), given what it lacks. The
    parent's change is the Outcome's; the batch's is in its result. A parent no longer tracked only loses
    the link: the batch, made and paid for, is tracked all the same."""
    if child is None:
        fresh = JobRecord.new(batch, destination=destination, labels=labels, now=now, tracked_by=TrackedBy.TRACK)
        fresh = fresh.replace(parent=parent, lineage=root)
        made = ResubmitFinish(False, fresh, True, Change(fresh))
    else:
        after = child.replace(parent=child.parent or parent, lineage=child.lineage or root,
                              labels={**labels, **child.labels}, destination=child.destination or destination)
        made = ResubmitFinish(False, after, False, None if after == child else Change(after))
    claim = record.resubmit_claim if record is not None else None
    if record is not None and claim is not None and claim.n == n:
        linked = record.replace(resubmitted_as=batch.name, resubmit_claim=None)
        return Outcome(dataclasses.replace(made, linked=True), Change(linked))
    return Outcome(dataclasses.replace(made, linked=record is not None and record.resubmitted_as == batch.name))
