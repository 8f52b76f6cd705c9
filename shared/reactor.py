"""The reactor: on a ``stateChanged`` to SUCCEEDED or PARTIALLY_SUCCEEDED, copy the job's outputs into
its destination, verify them, record the result and announce it (``outputsReady``/``outputsFailed``).

Errors are the retry contract: a transient failure releases the claim and raises, so Pub/Sub redelivers;
a permanent one is recorded on the record and announced, and the message is acked. A message that is not
ours, not a success, or garbage is logged and acked without touching Firestore.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime as dt
import json
import logging
from typing import Any

import httpx

from . import events, states
from .copy_ledger import CopyLedger
from .copy_plans import Copier
from .errors import PermanentError, TransientError, UsageError
from .jobnames import JobName
from .log import add_secret, get_logger, log, redact
from .outbox import Outbox
from .publisher import EventPublisher
from .retry import RetryPolicy
from .settings import Settings
from .storage import StorageClient, storage_base_url
from .store import JobStore

_log = get_logger("reactor")
MAX_MESSAGE_BYTES = 2 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Trigger:
    """What the reactor needs from a stateChanged event."""

    job: str
    tracking_id: str
    state: str
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
    if ce_type != events.STATE_CHANGED or attributes.get("state") not in states.SUCCESS:
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
    if not isinstance(tracking_id, str) or not tracking_id or record.get("name") != job.name:
        raise UsageError("event data does not carry the job's record")
    return Trigger(job.name, tracking_id, attributes["state"], attributes.get("ce-id", ""))


def _get(cloud_event: Any, key: str) -> Any:
    if isinstance(cloud_event, dict):
        return cloud_event.get(key)
    if key != "data" and callable(getattr(cloud_event, "get", None)):  # cloudevents' CloudEvent: event["id"]
        return cloud_event.get(key)
    return getattr(cloud_event, key, None)


class Reactor:
    """Copies one job's outputs. Clients come in; ``react_to_cloud_event`` and ``recopy`` build them."""

    def __init__(self, settings: Settings, store: JobStore, copier: Copier, outbox: Outbox) -> None:
        self._settings = settings
        add_secret(settings.gemini_api_key)
        self._store = store
        self._ledger = CopyLedger(store)
        self._copier = copier
        self._outbox = outbox

    async def handle(self, trigger: Trigger) -> str:
        """Returns what happened: copied, failed, already, busy (raises), ignored."""
        now = dt.datetime.now(dt.UTC)
        claim = await asyncio.to_thread(self._ledger.claim, trigger.job, now)
        record = claim.record
        fields = {"job": trigger.job, "event_id": trigger.event_id}
        if claim.result == "gone" or (record and record.get("tracking_id") != trigger.tracking_id):
            log(_log, logging.INFO, "event for a job no longer tracked as such: ignored", **fields)
            if claim.result == "claimed":
                await asyncio.to_thread(self._ledger.release, trigger.job, int(record["copy"]["attempt"]))
            return "ignored"
        if claim.result == "not_success":
            log(_log, logging.INFO, "record is not in a success state: ignored", state=record.get("state"), **fields)
            return "ignored"
        if claim.result in ("done", "failed"):
            if not (record.get("copy") or {}).get("announced"):
                await self._outbox.flush_name(trigger.job, force=True)
            log(_log, logging.INFO, "copy already finished", copy_status=record["copy"]["status"], **fields)
            return "already"
        if claim.result == "busy":
            raise TransientError(f"the copy of {trigger.job} is in progress in another delivery")
        return await self.run_copy(record, now)

    async def run_copy(self, record: dict[str, Any], now: dt.datetime) -> str:
        name = record["name"]
        attempt = int(record["copy"]["attempt"])
        fields = {"job": name, "api": record.get("api"), "attempt": attempt}
        try:
            result = await self._copier.copy(record, now)
        except PermanentError as exc:
            error = {"kind": exc.kind, "message": redact(str(exc))[:500]}
            log(_log, logging.ERROR, "copy failed", error=error, **fields)
            await asyncio.to_thread(self._ledger.finish, name, attempt, now, status="failed", error=error)
            await self._outbox.flush_name(name, force=True)
            return "failed"
        except BaseException as exc:
            log(_log, logging.WARNING, "copy interrupted; the event will be redelivered",
                error=f"{type(exc).__name__}: {exc}"[:500], **fields)
            await asyncio.to_thread(self._ledger.release, name, attempt)
            raise
        event = await asyncio.to_thread(
            self._ledger.finish, name, attempt, dt.datetime.now(dt.UTC), status=result.status, uri=result.uri,
            manifest_uri=result.manifest_uri, objects=len(result.objects), size=result.size)
        if event is not None:
            await self._outbox.flush_name(name, force=True)
        log(_log, logging.INFO, "outputs copied", status=result.status, destination=result.uri,
            objects=len(result.objects), bytes=result.size, **fields)
        return "copied"


def _http(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(settings.request_timeout_s, read=120.0),
                             limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))


def _storage_auth(settings: Settings) -> httpx.Auth | None:
    if settings.storage_emulator_host:
        return None
    from .auth import GoogleAuth, default_credentials

    return GoogleAuth(default_credentials())


async def _run(settings: Settings, db, publisher_client, work) -> Any:
    """Build the async clients of one invocation, run ``work(reactor)``, close them."""
    store = JobStore(db, settings)
    outbox = Outbox(store, EventPublisher(publisher_client, settings.project, settings.events_topic))
    async with _http(settings) as gcs_http, _http(settings) as gemini_http:
        gcs_http.auth = _storage_auth(settings)
        storage = StorageClient(gcs_http, base_url=storage_base_url(settings.storage_emulator_host),
                                retry=RetryPolicy(max_attempts=settings.max_attempts))
        reactor = Reactor(settings, store, Copier(storage, gemini_http, settings), outbox)
        return await work(reactor)


def react_to_cloud_event(cloud_event: Any, settings: Settings, db, publisher_client) -> str:
    """Entry of ``on_job_event``. Returns what happened; raises only to have the event redelivered."""
    try:
        trigger = decode(cloud_event)
    except Exception as exc:  # noqa: BLE001 - whatever an event does to the decoder, it is garbage: ack it
        log(_log, logging.WARNING, "unusable event acked", error=str(exc)[:300],
            event_id=str(_get(cloud_event, "id") or "")[:100])
        return "garbage"
    if trigger is None:
        return "ignored"
    return asyncio.run(_run(settings, db, publisher_client, lambda reactor: reactor.handle(trigger)))


def recopy(name: str, settings: Settings, db, publisher_client) -> dict[str, Any]:
    """``batch-relay recopy``: a new attempt of a failed or stuck copy, run here; returns the copy map."""
    store = JobStore(db, settings)
    record = CopyLedger(store).recopy(name)
    now = dt.datetime.now(dt.UTC)

    async def work(reactor: Reactor) -> None:
        claim = await asyncio.to_thread(CopyLedger(store).claim, record["name"], now)
        if claim.result != "claimed":
            raise UsageError(f"could not start the copy of {name}: {claim.result}")
        await reactor.run_copy(claim.record, now)

    asyncio.run(_run(settings, db, publisher_client, work))
    return (store.get(name) or {}).get("copy") or {}
