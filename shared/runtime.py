"""Wires the real pieces together for one tick. Only entry points and the CLI call this."""

from __future__ import annotations

import asyncio

import httpx

from .auth import GoogleAuth, StaticToken, default_credentials
from .batch_api import BatchApiClient, make_http_client
from .errors import ForbiddenError
from .publisher import EventPublisher
from .settings import Settings
from .store import SHARDS, JobStore


def vertex_auth(settings: Settings) -> httpx.Auth:
    """ADC bearer tokens for Vertex. A plain-http base URL (the local simulator) gets a dummy token:
    a real token is never sent over an unencrypted connection."""
    if settings.vertex_base_url and settings.vertex_base_url.startswith("http://"):
        return StaticToken()
    return GoogleAuth(default_credentials())


def make_poller(settings: Settings, db, publisher_client, http, *, store: JobStore | None = None):
    """The tick's Poller over real clients (``store`` may be given, e.g. an instrumented one)."""
    from .copy_ledger import CopySweeper
    from .poller import Poller

    store = store or JobStore(db, settings)
    api = BatchApiClient(http, settings, vertex_auth=LazyAuth(settings))
    publisher = EventPublisher(publisher_client, settings.project, settings.events_topic)
    sweeper = CopySweeper(store)
    return Poller(settings, store, api, publisher, sweeper=sweeper.sweep)


async def run_tick(settings: Settings, db, publisher_client, *,
                   transport: httpx.AsyncBaseTransport | None = None,
                   shards: tuple[int, int] | None = None) -> dict:
    """One tick with clients that belong to this event loop (built here, closed here)."""
    async with make_http_client(settings, transport=transport) as http:
        poller = make_poller(settings, db, publisher_client, http)
        lo, hi = shards or (0, SHARDS)
        summary = await poller.tick(shard_lo=lo, shard_hi=hi)
    return summary.as_dict()


def poll_once(settings: Settings, db, publisher_client, *, shards: tuple[int, int] | None = None) -> dict:
    return asyncio.run(run_tick(settings, db, publisher_client, shards=shards))


class LazyAuth(httpx.Auth):
    """Builds the Vertex credentials on the first Vertex request, so a tick with only Gemini jobs (or
    none) never looks for Application Default Credentials."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._auth: httpx.Auth | None = None

    def _inner(self) -> httpx.Auth:
        if self._auth is None:
            from google.auth.exceptions import DefaultCredentialsError

            try:
                self._auth = vertex_auth(self._settings)
            except DefaultCredentialsError as exc:
                raise ForbiddenError(f"no Google credentials for Vertex AI: {str(exc)[:200]}") from None
        return self._auth

    def sync_auth_flow(self, request):
        return self._inner().sync_auth_flow(request)

    def async_auth_flow(self, request):
        return self._inner().async_auth_flow(request)
