"""google-auth credentials as an ``httpx.Auth``: refresh before expiry, retry once on 401.

Credentials are cached per process (a warm instance reuses its token); the refresh runs in a worker thread
so it never blocks the event loop, and one lock keeps concurrent requests from refreshing at once.
``endpoint_auth`` is the one rule for which endpoint gets which credentials (``batch_relay.wiring`` uses it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import threading
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING

import httpx

from .errors import ForbiddenError

if TYPE_CHECKING:  # pragma: no cover
    from google.auth.credentials import Credentials

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_EARLY = dt.timedelta(minutes=5)


class GoogleAuth(httpx.Auth):
    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._lock = threading.Lock()
        self._alock: asyncio.Lock | None = None

    @property
    def quota_project(self) -> str | None:
        return getattr(self._credentials, "quota_project_id", None)

    def _stale(self) -> bool:
        creds = self._credentials
        if not getattr(creds, "token", None):
            return True
        expiry: dt.datetime | None = getattr(creds, "expiry", None)  # naive UTC in google-auth
        if expiry is None:
            return False
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        return expiry - _EARLY <= now

    def _refresh_sync(self, force: bool = False) -> None:
        with self._lock:
            if force or self._stale():
                from google.auth.transport.requests import Request

                self._credentials.refresh(Request())

    def _apply(self, request: httpx.Request) -> None:
        request.headers["Authorization"] = f"Bearer {self._credentials.token}"
        if self.quota_project:
            request.headers["x-goog-user-project"] = self.quota_project

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._stale():
            self._refresh_sync()
        self._apply(request)
        response = yield request
        if response.status_code == 401:
            self._refresh_sync(force=True)
            self._apply(request)
            yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._stale():
            await self._arefresh()
        self._apply(request)
        response = yield request
        if response.status_code == 401:
            await self._arefresh(force=True)
            self._apply(request)
            yield request

    async def _arefresh(self, force: bool = False) -> None:
        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:
            if force or self._stale():
                await asyncio.to_thread(self._refresh_sync, force)


class StaticToken(httpx.Auth):
    """A fixed bearer token: for emulators and the simulator, where nothing checks it."""

    def __init__(self, token: str = "local-dev-token") -> None:  # noqa: S107 - not a secret
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


@functools.cache
def default_credentials() -> Credentials:
    """Application Default Credentials for the cloud-platform scope, once per process."""
    import google.auth

    credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM])
    return credentials


class LazyAuth(httpx.Auth):
    """Builds its ``httpx.Auth`` on the first request, so a tick that never calls the endpoint (only
    Gemini jobs, or none) never looks for Application Default Credentials; missing credentials become a
    ``ForbiddenError`` on the job's record instead of an exception at start-up."""

    def __init__(self, build: Callable[[], httpx.Auth]) -> None:
        self._build = build
        self._auth: httpx.Auth | None = None

    def _inner(self) -> httpx.Auth:
        if self._auth is None:
            from google.auth.exceptions import DefaultCredentialsError

            try:
                self._auth = self._build()
            except DefaultCredentialsError as exc:
                raise ForbiddenError(f"no Google credentials: {str(exc)[:200]}") from None
        return self._auth

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        return self._inner().sync_auth_flow(request)

    def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        return self._inner().async_auth_flow(request)


def endpoint_auth(base_url: str, *, emulator: bool = False) -> httpx.Auth:
    """The one rule for credentials: real ones (ADC, lazily) only over https to a real endpoint. An
    emulator (its ``*_EMULATOR_HOST`` switch set) or a plain-http endpoint (the local simulator) gets a
    placeholder token, so a real token is never sent where it does not belong."""
    if emulator or base_url.startswith("http://"):
        return StaticToken()
    return LazyAuth(lambda: GoogleAuth(default_credentials()))
