"""The one wiring place: builds every real client the functions and the CLI use, and hands them to the
domain modules (which never build a client themselves).

- Sync Google clients (Firestore, the Pub/Sub publisher) are safe to share: ``cached_firestore`` and
  ``cached_publisher`` keep one per warm instance; ``make_*`` builds a fresh one (the CLI).
- Async clients (httpx) belong to one event loop: they are built inside each tick or reaction and
  closed with it (``run_tick``, ``reactor``).
- Credentials follow one rule (``auth.endpoint_auth``): real ones only over https to real endpoints.
Nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx

from .auth import endpoint_auth
from .batchapi.client import BatchApiClient
from .batchapi.endpoints import vertex_base_url
from .batchapi.http import USER_AGENT, HttpPool, make_http_pool
from .batchapi.quota import RegionLimiter, share
from .events.outbox import Outbox
from .events.publisher import EventPublisher
from .record.client import make_client
from .record.model import SHARDS
from .record.store import JobStore
from .retry import RetryPolicy
from .settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud.pubsub_v1 import PublisherClient

    from .batchapi.webhook_admin import WebhookAdmin
    from .poller.fanout import Part
    from .poller.tick import Poller
    from .reactor.handler import Reaction, Reactor
    from .record.client import FirestoreClient
    from .resubmits.runner import Resubmitter
    from .secret_versions import SecretVersions
    from .webhooks.jwks import JwksKeys
    from .webhooks.recent import RecentIds

# -- HTTP clients -------------------------------------------------------------------------------------------
# Every HTTP client built here takes ``transport``: None is the network; a test passes its own (an
# ``httpx.MockTransport``, or one that records or breaks what goes through it). Sync clients take an
# ``httpx.BaseTransport``, async ones (and the tick's pools, ``make_http_pool``) an ``httpx.AsyncBaseTransport``.

def http_client(timeout: httpx.Timeout, *, auth: httpx.Auth | None = None,
                transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An async client for one event loop (up to 64 connections); redirects are never followed (the callers
    that want them follow them by hand, under their own rules)."""
    return httpx.AsyncClient(timeout=timeout, auth=auth, transport=transport, follow_redirects=False,
                             limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
                             headers={"user-agent": USER_AGENT})


def sync_http_client(timeout: httpx.Timeout, *, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    return httpx.Client(timeout=timeout, transport=transport, follow_redirects=False,
                        headers={"user-agent": USER_AGENT})


# -- Google clients -----------------------------------------------------------------------------------------

def make_firestore(settings: Settings) -> FirestoreClient:
    return make_client(settings.project, settings.database)


def make_publisher(settings: Settings) -> PublisherClient:
    """A publisher with message ordering, on ``RELAY_PUBSUB_ENDPOINT`` when set (the deployment's region:
    ordering holds per region, so the functions and the CLI publish through the same one); the emulator,
    when ``PUBSUB_EMULATOR_HOST`` is set, wins (the client library reads it)."""
    from google.cloud import pubsub_v1

    options = {"api_endpoint": settings.pubsub_endpoint} if settings.pubsub_endpoint else None
    return pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
        client_options=options,
    )


@functools.cache
def cached_firestore(settings: Settings) -> FirestoreClient:
    """One Firestore client per warm instance (sync clients are safe to share)."""
    return make_firestore(settings)


@functools.cache
def cached_publisher(settings: Settings) -> PublisherClient:
    return make_publisher(settings)


def event_publisher(settings: Settings, publisher_client: PublisherClient) -> EventPublisher:
    return EventPublisher(publisher_client, settings.project, settings.events_topic)


# -- the poller ---------------------------------------------------------------------------------------------

def vertex_auth(settings: Settings) -> httpx.Auth:
    return endpoint_auth(vertex_base_url(settings, "global"))


def vertex_limiter(settings: Settings, part: Part | None = None) -> RegionLimiter:
    """The Vertex quota one invocation may spend: ``RELAY_VERTEX_REGION_QPM`` is the project's, so a part
    of a fan-out (side by side with the others) gets its share (``quota.share``); anything else, all of it."""
    per_minute = settings.vertex_region_qpm
    return RegionLimiter(per_minute if part is None else share(per_minute, part.index, part.count))


def make_poller(settings: Settings, db: FirestoreClient, publisher_client: PublisherClient,
                http: HttpPool, *, store: JobStore | None = None,
                now: Callable[[], dt.datetime] | None = None, part: Part | None = None) -> Poller:
    """The tick's Poller over real clients (``store`` may be given, e.g. an instrumented one; ``now``, a
    clock, for tests of the cadence; ``part``, the fan-out part it runs, for its share of the Vertex quota)."""
    from .batchapi.webhook_admin import WebhookAdmin
    from .poller.tick import Poller
    from .poller.webhook_health import WebhookHealth

    store = store or JobStore(db, settings)
    api = BatchApiClient(http, settings, vertex_auth=vertex_auth(settings), limiter=vertex_limiter(settings, part))
    health = WebhookHealth(settings, store, lambda: WebhookAdmin(http, settings, retry_policy=RetryPolicy(
        max_attempts=2)))
    return Poller(settings, store, api, event_publisher(settings, publisher_client), now=now,
                  webhook_check=health.check)


async def run_tick(settings: Settings, db: FirestoreClient, publisher_client: PublisherClient, *,
                   transport: httpx.AsyncBaseTransport | None = None, shards: tuple[int, int] | None = None,
                   now: Callable[[], dt.datetime] | None = None, part: Part | None = None) -> dict[str, Any]:
    """One tick with clients that belong to this event loop (built here, closed here): the whole tick, one
    ``part`` of a fan-out, or — when ``RELAY_TICK_FANOUT`` > 1 and no part is given — the coordinator
    (``poller.coordinator``)."""
    from .poller.fanout import plan

    coordinator = part is None and shards is None and settings.tick_fanout > 1
    share_of = plan(settings.tick_fanout, None)[0] if coordinator else part  # the coordinator runs part 0
    async with make_http_pool(settings.poll_concurrency, settings.request_timeout_s, transport=transport) as http:
        poller = make_poller(settings, db, publisher_client, http, now=now, part=share_of)
        if coordinator:
            from .poller.coordinator import coordinate

            return await coordinate(settings, poller, publisher_client, JobStore(db, settings))
        if part is not None:
            summary = await poller.tick(part=part)
        else:
            lo, hi = shards or (0, SHARDS)
            summary = await poller.tick(shard_lo=lo, shard_hi=hi)
    return summary.as_dict()


def poll_once(settings: Settings, db: FirestoreClient, publisher_client: PublisherClient, *,
              shards: tuple[int, int] | None = None, part: Part | None = None) -> dict[str, Any]:
    return asyncio.run(run_tick(settings, db, publisher_client, shards=shards, part=part))


# -- the webhook --------------------------------------------------------------------------------------------

WEBHOOK_DEADLINE_S = 15.0  # the Gemini API expects a 2xx within a few seconds


def nudge(settings: Settings, db: FirestoreClient, publisher_client: PublisherClient, name: str, *,
          transport: httpx.AsyncBaseTransport | None = None) -> str:
    """A webhook's nudge: fetch one batch now and apply it as a tick would (``Poller.nudge``)."""

    async def run() -> str:
        async with make_http_pool(4, settings.request_timeout_s, transport=transport) as http:
            return await make_poller(settings, db, publisher_client, http).nudge(name, WEBHOOK_DEADLINE_S)

    return asyncio.run(run())


@functools.cache
def recent_webhook_ids() -> RecentIds:
    """The webhook ids this instance handled lately (a repeat is answered without another fetch)."""
    from .webhooks.recent import RecentIds

    return RecentIds()


@functools.cache
def jwks_keys(url: str, *, transport: httpx.BaseTransport | None = None) -> JwksKeys:
    """The Ed25519 keys of dynamic webhooks, cached per warm instance."""
    from .webhooks.jwks import JwksKeys, read_jwks

    def fetch(target: str) -> object:
        with sync_http_client(httpx.Timeout(5.0), transport=transport) as http:
            return read_jwks(http, target)

    return JwksKeys(url, fetch)


@contextlib.asynccontextmanager
async def webhook_admin(settings: Settings, *,
                        transport: httpx.AsyncBaseTransport | None = None) -> AsyncIterator[WebhookAdmin]:
    """The project's Gemini API webhooks (``batch-relay webhook …``) over a client of this event loop."""
    from .batchapi.webhook_admin import WebhookAdmin

    async with http_client(httpx.Timeout(settings.request_timeout_s), transport=transport) as http:
        yield WebhookAdmin(http, settings)


@contextlib.asynccontextmanager
async def secret_versions(settings: Settings, *,
                          transport: httpx.AsyncBaseTransport | None = None) -> AsyncIterator[SecretVersions]:
    """Secret Manager's secret versions (``webhook register --secret``), with Application Default Credentials
    (a placeholder token to a plain-http ``RELAY_SECRET_MANAGER_URL``: a local test peer)."""
    from .secret_versions import SecretVersions

    auth = endpoint_auth(settings.secret_manager_url)
    async with http_client(httpx.Timeout(settings.request_timeout_s), auth=auth, transport=transport) as http:
        yield SecretVersions(http, settings.secret_manager_url)


# -- the reactor --------------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def reactor(settings: Settings, db: FirestoreClient, publisher_client: PublisherClient, *,
                  store: JobStore | None = None,
                  transport: httpx.AsyncBaseTransport | None = None) -> AsyncIterator[Reactor]:
    """A Reactor over the async clients of one invocation (closed when the block ends): Cloud Storage, the
    batch APIs (each job's status and output location at copy time), the Gemini API for Gemini outputs and
    inputs, and the price table (read at most once in the invocation)."""
    from .batchapi.inputs import GeminiInputs
    from .batchapi.outputs import GeminiOutputs
    from .reactor.handler import Reactor
    from .reactor.plans import Copier
    from .reactor.storage import StorageClient, storage_base_url
    from .reactor.summarize import Prices

    store = store or JobStore(db, settings)
    outbox = Outbox(store, event_publisher(settings, publisher_client))
    gcs_base = storage_base_url(settings.storage_emulator_host)
    gcs_auth = endpoint_auth(gcs_base, emulator=settings.storage_emulator_host is not None)
    timeout = httpx.Timeout(settings.request_timeout_s, read=120.0)
    async with http_client(timeout, auth=gcs_auth, transport=transport) as gcs_http, \
            http_client(timeout, transport=transport) as gemini_http:
        storage = StorageClient(gcs_http, base_url=gcs_base, retry=RetryPolicy(max_attempts=settings.max_attempts))
        api = BatchApiClient(gemini_http, settings, vertex_auth=vertex_auth(settings))
        copier = Copier(storage, GeminiOutputs(gemini_http, settings), api, settings,
                        inputs=GeminiInputs(gemini_http, settings), prices=Prices(settings, storage))
        yield Reactor(store, copier, outbox)


def react_to_cloud_event(cloud_event: Any, settings: Settings, db: FirestoreClient,
                         publisher_client: PublisherClient, *,
                         transport: httpx.AsyncBaseTransport | None = None) -> Reaction:
    """Entry of ``on_job_event``. Returns what happened; raises only to have the event redelivered."""
    from .reactor.handler import Reaction, triage

    trigger = triage(cloud_event)
    if isinstance(trigger, Reaction):
        return trigger

    async def run() -> Reaction:
        async with reactor(settings, db, publisher_client, transport=transport) as r:
            return await r.handle(trigger)

    return asyncio.run(run())


# -- resubmit -----------------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def resubmitter(settings: Settings, db: FirestoreClient, *, store: JobStore | None = None,
                      transport: httpx.AsyncBaseTransport | None = None,
                      clock: Callable[[], dt.datetime] | None = None) -> AsyncIterator[Resubmitter]:
    """A Resubmitter over the async clients of one call (closed when the block ends): Cloud Storage (to read
    ``failed.jsonl``), the Gemini API (upload, create, list) and Vertex AI (create, list). ``store`` and
    ``clock`` may be given (tests: an instrumented store, a clock past a claim's lease)."""
    from .batchapi.create import GeminiCreate, VertexCreate
    from .reactor.storage import StorageClient, storage_base_url
    from .resubmits.runner import Resubmitter

    store = store or JobStore(db, settings)
    gcs_base = storage_base_url(settings.storage_emulator_host)
    gcs_auth = endpoint_auth(gcs_base, emulator=settings.storage_emulator_host is not None)
    timeout = httpx.Timeout(settings.request_timeout_s, read=120.0)
    async with http_client(timeout, auth=gcs_auth, transport=transport) as gcs_http, \
            http_client(timeout, transport=transport) as api_http:
        storage = StorageClient(gcs_http, base_url=gcs_base, retry=RetryPolicy(max_attempts=settings.max_attempts))
        yield Resubmitter(settings, store, storage, GeminiCreate(api_http, settings),
                          VertexCreate(api_http, settings, vertex_auth=vertex_auth(settings)), clock=clock)
