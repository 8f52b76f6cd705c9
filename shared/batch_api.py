"""Status of batch jobs over REST: Gemini API (API key) and Vertex AI (google-auth bearer token).

One ``BatchApiClient`` lives for one tick, over an ``httpx.AsyncClient`` the caller builds (and closes).
``get_status`` retries 408/429/5xx and transport errors with jittered exponential backoff, honours
``Retry-After``, respects the per-region Vertex quota and never runs past the tick's deadline.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from .errors import BadResponseError, DeadlineExceeded, ForbiddenError, RelayError, TransientError
from .jobnames import GEMINI, JobName
from .models import JobStatus
from .ratelimit import RegionLimiter
from .retry import RetryPolicy, classify
from .settings import Settings


def vertex_base_url(settings: Settings, location: str) -> str:
    if settings.vertex_base_url:
        return settings.vertex_base_url.replace("{location}", location)
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def status_url(settings: Settings, job: JobName) -> str:
    if job.api == GEMINI:
        return f"{settings.gemini_base_url}/v1beta/{job.name}"
    return f"{vertex_base_url(settings, job.location or 'global')}/v1/{job.name}"


CONNECTIONS_PER_CLIENT = 4


def _fast_failed_sniffio_import() -> None:
    """httpcore asks ``import sniffio`` on every request and falls back to asyncio when it is missing;
    a failed import walks sys.path each time (about 0.5 ms of CPU per request here). Marking the absent
    module as absent makes that failure immediate. Nothing changes where sniffio is installed."""
    if "sniffio" not in sys.modules:
        try:
            import sniffio  # noqa: F401
        except ImportError:
            sys.modules["sniffio"] = None  # type: ignore[assignment]


@functools.cache
def shared_ssl_context():
    """One SSL context per process (loading the CA bundle costs ~20 ms): safe to share across ticks and
    event loops, unlike the clients themselves."""
    return httpx.create_ssl_context()


class HttpPool:
    """Several small ``httpx.AsyncClient`` pools behind one ``get``; each request goes to the least busy.

    httpcore's pool inspects every connection (a ``poll`` syscall each) whenever it assigns a request,
    so one pool of 32-64 connections costs milliseconds of CPU per request; pools of a few connections
    keep that cost flat. All clients share one SSL context."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self._clients = clients
        self._busy = [0] * len(clients)

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        i = min(range(len(self._clients)), key=self._busy.__getitem__)
        self._busy[i] += 1
        try:
            return await self._clients[i].get(url, **kw)
        finally:
            self._busy[i] -= 1

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    async def __aenter__(self) -> HttpPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def make_http_client(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None,
                     connections: int | None = None) -> HttpPool:
    """The tick's HTTP clients: keep-alive pools sized to the concurrency, a timeout on everything."""
    _fast_failed_sniffio_import()
    size = connections or settings.poll_concurrency
    per = min(CONNECTIONS_PER_CLIENT, size)
    count = -(-size // per)
    ssl_context = shared_ssl_context()
    clients = [
        httpx.AsyncClient(
            timeout=httpx.Timeout(settings.request_timeout_s),
            limits=httpx.Limits(max_connections=per, max_keepalive_connections=per, keepalive_expiry=30),
            transport=transport,
            verify=ssl_context,
            follow_redirects=False,
            headers={"user-agent": "batch-relay/0.1"},
        )
        for _ in range(count)
    ]
    return HttpPool(clients)


class BatchApiClient:
    def __init__(
        self,
        http: httpx.AsyncClient | HttpPool,
        settings: Settings,
        *,
        vertex_auth: httpx.Auth | None = None,
        retry: RetryPolicy | None = None,
        limiter: RegionLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._http = http
        self._settings = settings
        self._vertex_auth = vertex_auth
        self._retry = retry or RetryPolicy(max_attempts=settings.max_attempts)
        self._limiter = limiter or RegionLimiter(settings.vertex_region_qpm, clock=clock)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._gemini_headers = {"x-goog-api-key": settings.gemini_api_key} if settings.gemini_api_key else {}
        self.requests = 0

    async def get_status(self, job: JobName, deadline: float) -> JobStatus:
        """The job's status, or an error from ``shared.errors`` (never anything else)."""
        if job.api == GEMINI and not self._settings.gemini_api_key:
            raise ForbiddenError("RELAY_GEMINI_API_KEY is not set; cannot poll Gemini API batches")
        url = status_url(self._settings, job)
        attempt = 0
        while True:
            attempt += 1
            try:
                if job.api != GEMINI:
                    await self._limiter.acquire(job.region_key, deadline)
                body = await self._get_json(job, url, deadline)
                status = (JobStatus.from_gemini if job.api == GEMINI else JobStatus.from_vertex)(body)
                if status.name != job.name:
                    raise BadResponseError(f"reply is for {status.name[:200]!r}, not {job.name!r}")
                return status
            except TransientError as exc:
                if attempt >= self._retry.max_attempts:
                    raise
                wait = self._retry.backoff(attempt, exc.retry_after, self._rng)
                if isinstance(exc, DeadlineExceeded) or self._clock() + wait >= deadline:
                    raise
                await self._sleep(wait)

    async def _get_json(self, job: JobName, url: str, deadline: float) -> Any:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise DeadlineExceeded("tick deadline reached before the request")
        timeout = min(self._settings.request_timeout_s, remaining)
        self.requests += 1
        try:
            if job.api == GEMINI:
                response = await self._http.get(url, headers=self._gemini_headers, timeout=timeout)
            else:
                response = await self._http.get(url, auth=self._vertex_auth or httpx.USE_CLIENT_DEFAULT,
                                                timeout=timeout)
        except httpx.TimeoutException as exc:
            raise TransientError(f"timed out after {timeout:.1f}s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientError(f"transport error: {type(exc).__name__}") from None
        except RelayError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a credentials refresh failing inside auth
            raise TransientError(f"request failed: {type(exc).__name__}: {str(exc)[:200]}") from None
        if (error := classify(response)) is not None:
            raise error
        try:
            return json.loads(response.content)
        except ValueError:
            raise BadResponseError(f"reply is not JSON ({len(response.content)} bytes)") from None
