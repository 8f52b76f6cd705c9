"""The reactor: on a ``stateChanged`` to a terminal state (``TRIGGER_STATES``), copy the job's outputs into
its destination, verify them, read what they hold (``results``), record the result and announce it
(``outputsReady``/``outputsFailed``). A job that ended CANCELLED, EXPIRED or FAILED is copied too when the
API shows an output location (its partial outputs). What is copied, and from where, is what the batch API
says at copy time (``reactor.source``); the record only says which job, to where, and which attempt.

Errors are the retry contract: a transient failure releases the claim and raises, so Pub/Sub redelivers;
a permanent one is recorded on the record and announced, and the message is acked. A message that is not
ours, not a job that ended, or garbage is logged and acked without touching Firestore. A copy whose rewrites
cannot finish within one delivery stops at its deadline, keeps their tokens on the record and is redelivered
(kind ``rewrite_unfinished``; ``reactor.progress``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime as dt
import enum
import json
import logging
from typing import Any

from ..batchapi import states
from ..batchapi.names import JobName
from ..batchapi.states import JobState
from ..errors import PermanentError, TransientError, UsageError
from ..events import event as events
from ..events.outbox import Outbox
from ..log import get_logger, log, storable
from ..record.async_store import AsyncStore
from ..record.machine import ClaimResult
from ..record.model import CopyStatus, JobRecord
from ..record.store import JobStore
from .plans import Copier
from .progress import RewriteProgress
from .source import OutputPending
from .storage import RewriteUnfinished

_log = get_logger("reactor")
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
# The states whose stateChanged event the reactor acts on (and the reactor's push subscription filters on,
# in infra/pubsub.tf): every terminal state, since a job that did not succeed may have partial outputs.
TRIGGER_STATES = states.TERMINAL


@dataclasses.dataclass(frozen=True)
class Trigger:
    """What the reactor needs from a stateChanged event."""

    job: str
    tracking_id: str
    state: JobState  # a terminal state
    event_id: str


def decode(cloud_event: Any) -> Trigger | None:
    """The trigger in a Pub/Sub CloudEvent, or None when the event is not one to act on.

    Raises ``UsageError`` for garbage (not a Pub/Sub message, bad attributes, a bad job name)."""
    data = _get(cloud_event, "data")
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except ValueError:
            raise UsageError("event data is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise UsageError("event is not a Pub/Sub messagePublished event (no message)")
    message = data["message"]
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise UsageError("message attributes are not a map of strings")
    ce_type = attributes.get("ce-type")
    if ce_type != events.STATE_CHANGED or attributes.get("state") not in TRIGGER_STATES:
        return None  # outputsReady/outputsFailed/lost, other states, other publishers: ack at once
    job = JobName.parse(attributes.get("job") or attributes.get("ce-subject"))
    raw = message.get("data") or ""
    if not isinstance(raw, str) or len(raw) > MAX_MESSAGE_BYTES * 4 // 3 + 4:
        raise UsageError("message data is missing or too large")
    try:
        body = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        raise UsageError("message data is not base64 JSON") from None
    record = body.get("job") if isinstance(body, dict) else None
    tracking_id = record.get("tracking_id") if isinstance(record, dict) else None
    if not isinstance(tracking_id, str) or not tracking_id or not isinstance(record, dict) \
            or record.get("name") != job.name:
        raise UsageError("event data does not carry the job's record")
    return Trigger(job.name, tracking_id, JobState(attributes["state"]), attributes.get("ce-id", ""))


def _get(cloud_event: Any, key: str) -> Any:
    if isinstance(cloud_event, dict):
        return cloud_event.get(key)
    if key != "data" and callable(getattr(cloud_event, "get", None)):  # cloudevents' CloudEvent: event["id"]
        return cloud_event.get(key)
    return getattr(cloud_event, key, None)


class Reaction(enum.StrEnum):
    """What the reactor did with one event."""

    COPIED = "copied"
    FAILED = "failed"  # the copy failed for good: recorded and announced
    ALREADY = "already"  # the copy had finished before: made sure it is announced
    IGNORED = "ignored"  # not an event to act on (or a job no longer tracked as such)
    GARBAGE = "garbage"  # not a usable event: logged and acked


class Reactor:
    """Copies one job's outputs. Clients come in; ``batch_relay.wiring`` builds them."""

    def __init__(self, store: JobStore, copier: Copier, outbox: Outbox) -> None:
        self._store = AsyncStore(store)
        self._copier = copier
        self._outbox = outbox

    async def handle(self, trigger: Trigger) -> Reaction:
        """React to one trigger; raises (``TransientError``) only for what should be redelivered."""
        now = dt.datetime.now(dt.UTC)
        claim = await self._store.claim_copy(trigger.job, now)
        fields = {"job": trigger.job, "event_id": trigger.event_id}
        if claim is None or claim.record.tracking_id != trigger.tracking_id:
            log(_log, logging.INFO, "event for a job no longer tracked as such: ignored", **fields)
            if claim is not None and claim.result == ClaimResult.CLAIMED:
                await self._store.release_copy(trigger.job, claim.record.copy.attempt)
            return Reaction.IGNORED
        result, record = claim.result, claim.record
        if result == ClaimResult.NOT_ENDED:
            log(_log, logging.INFO, "record is not in a terminal state: ignored", state=record.state, **fields)
            return Reaction.IGNORED
        if result in (ClaimResult.DONE, ClaimResult.FAILED):
            if not record.copy.announced:
                await self._outbox.flush_name(trigger.job, force=True)
            log(_log, logging.INFO, "copy already finished", copy_status=record.copy.status.value, **fields)
            return Reaction.ALREADY
        if result == ClaimResult.BUSY:
            raise TransientError(f"the copy of {trigger.job} is in progress in another delivery")
        return await self.run_copy(record, now)

    async def run_copy(self, record: JobRecord, now: dt.datetime) -> Reaction:
        """Copy under a claimed copy lease, commit the result and announce it."""
        name, attempt = record.name, record.copy.attempt
        fields = {"job": name, "api": record.api, "attempt": attempt}
        started = asyncio.get_running_loop().time()

        async def save(tokens: dict[str, str]) -> None:
            await self._store.save_rewrites(name, attempt, tokens)

        progress = RewriteProgress(record.copy_rewrites, save, self._copier.rewrite_budget_s, log_fields=fields)
        try:
            result = await self._copier.copy(record, now, progress)
        except PermanentError as exc:
            error = {"kind": exc.kind, "message": storable(str(exc))}
            log(_log, logging.ERROR, "copy failed", error=error, **fields)
            await self._store.finish_copy(name, attempt, now, status=CopyStatus.FAILED, error=error)
            await self._outbox.flush_name(name, force=True)
            return Reaction.FAILED
        except OutputPending as exc:
            log(_log, logging.INFO, "output location not shown yet; the event will be redelivered",
                error=str(exc)[:500], **fields)
            await self._store.release_copy(name, attempt, waiting_since=now)
            raise
        except RewriteUnfinished as exc:
            await progress.try_flush()
            log(_log, logging.WARNING, "copy stopped at its deadline with rewrites unfinished; their tokens are "
                "kept and the event will be redelivered", kind=exc.kind, rewrites=progress.pending,
                error=str(exc)[:500], duration_s=round(asyncio.get_running_loop().time() - started, 3), **fields)
            await self._store.release_copy(name, attempt)
            raise
        except BaseException as exc:
            if isinstance(exc, TransientError):  # what the rewrites reached helps the redelivery
                await progress.try_flush()
            log(_log, logging.WARNING, "copy interrupted; the event will be redelivered",
                error=f"{type(exc).__name__}: {exc}"[:500], **fields)
            await self._store.release_copy(name, attempt)
            raise
        event = await self._store.finish_copy(
            name, attempt, dt.datetime.now(dt.UTC), status=result.status, uri=result.uri,
            manifest_uri=result.manifest_uri, objects=len(result.objects), size=result.size, results=result.results,
            partial=result.partial)
        if event is not None:
            await self._outbox.flush_name(name, force=True)
        counts = {key: (result.results or {}).get(key) for key in ("requests", "succeeded", "failed", "missing")}
        log(_log, logging.INFO, "outputs copied", status=result.status.value, destination=result.uri,
            objects=len(result.objects), bytes=result.size, partial=result.partial, **counts,
            duration_s=round(asyncio.get_running_loop().time() - started, 3), **fields)
        return Reaction.COPIED

    async def recopy(self, name: str) -> dict[str, Any]:
        """``batch-relay recopy``: a new attempt of a failed or stuck copy, claimed and run here at once
        (``UsageError`` when there is nothing to recopy or the copy cannot start); the copy map after."""
        record = await self._store.recopy(name)
        now = dt.datetime.now(dt.UTC)
        claim = await self._store.claim_copy(record.name, now)
        if claim is None or claim.result != ClaimResult.CLAIMED:
            state = claim.result.value if claim is not None else "gone"
            raise UsageError(f"could not start the copy of {name}: {state}")
        await self.run_copy(claim.record, now)
        after = await self._store.load(record.name)
        copy: dict[str, Any] = after.public()["copy"] if after else {}
        return copy


def triage(cloud_event: Any) -> Trigger | Reaction:
    """The trigger to act on, or what to answer at once: ``IGNORED`` (not a terminal state change) or
    ``GARBAGE`` (logged; whatever an event does to the decoder, it is acked, never redelivered)."""
    try:
        trigger = decode(cloud_event)
    except Exception as exc:  # noqa: BLE001 - garbage of any shape is acked, never raised
        log(_log, logging.WARNING, "unusable event acked", error=str(exc)[:300],
            event_id=str(_get(cloud_event, "id") or "")[:100])
        return Reaction.GARBAGE
    return Reaction.IGNORED if trigger is None else trigger
