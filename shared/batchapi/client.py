"""Status of batch jobs over REST: Gemini API (API key) and Vertex AI (a bearer token from the
``httpx.Auth`` it is given).

One ``BatchApiClient`` lives for one tick, over an HTTP pool the caller builds (and closes). Every
request goes through ``retry.retry`` and ``retry.send``: 408/429/5xx and transport errors are retried
with jittered exponential backoff and ``Retry-After``; the per-region Vertex quota is taken before each
attempt, and nothing runs past the tick's deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..errors import BadResponseError, DeadlineExceeded, PermanentError, UsageError
from ..log import get_logger, log, storable
from ..retry import RetryPolicy, retry, send
from ..settings import Settings
from .endpoints import gemini_key, list_url, status_url
from .fields import GEMINI_LIST, GEMINI_STATUS, VERTEX_STATUS
from .listing import PAGE_SIZE, Page, parse_page
from .names import Api, JobName
from .quota import RegionLimiter
from .scopes import WatchScope
from .wire import JobStatus

_log = get_logger("batchapi")


class BatchApiClient:
    def __init__(
        self,
        http: Any,
        settings: Settings,
        *,
        vertex_auth: httpx.Auth | None = None,
        retry_policy: RetryPolicy | None = None,
        limiter: RegionLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._http = http
        self._settings = settings
        self._vertex_auth = vertex_auth
        self._retry = retry_policy or RetryPolicy(max_attempts=settings.max_attempts)
        self._limiter = limiter or RegionLimiter(settings.vertex_region_qpm, clock=clock)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._masks_refused = False  # the API answered 400 to a field mask: none sent any more

    @property
    def limiter(self) -> RegionLimiter:
        return self._limiter

    async def get_status(self, job: JobName, deadline: float) -> JobStatus:
        """The job's status, or an error from ``batch_relay.errors`` (never anything else)."""
        status, _ = await self.get_reply(job, deadline)
        return status

    async def get_reply(self, job: JobName, deadline: float, *, fields: str = GEMINI_STATUS) -> tuple[JobStatus, Any]:
        """The job's status and the reply it was read from (the decoded JSON body): the copy reads a Gemini
        batch's input, and where its inline responses are, from the same reply as its state
        (``reactor.source``). ``fields``: the Gemini field mask (``batchapi.fields``; Vertex AI jobs get
        ``VERTEX_STATUS``)."""
        body = await self.get_json(job.api, status_url(self._settings, job), deadline,
                                   region=None if job.api == Api.GEMINI else job.region_key,
                                   fields=fields if job.api == Api.GEMINI else VERTEX_STATUS)
        status = (JobStatus.from_gemini if job.api == Api.GEMINI else JobStatus.from_vertex)(body)
        if status.name != job.name:
            try:
                same = job.same_job(JobName.parse(status.name))
            except UsageError:
                same = False
            if not same:
                raise BadResponseError(f"reply is for {status.name[:200]!r}, not {job.name!r}")
            status = dataclasses.replace(status, name=job.name)  # the record keeps the name it was tracked by
        return status, body

    async def list_page(self, scope: WatchScope, token: str | None, deadline: float, *,
                        filter: str | None = None, page_size: int = PAGE_SIZE) -> Page:
        """One page of a watched scope's list (``parse_page``), or an error of ``batch_relay.errors``."""
        params: dict[str, Any] = {"pageSize": page_size}
        if token:
            params["pageToken"] = token
        region = None
        if scope.api != Api.GEMINI:
            params["readMask"] = VERTEX_STATUS
            if filter:
                params["filter"] = filter
            region = scope.region_key
        body = await self.get_json(scope.api, list_url(self._settings, scope), deadline, region=region, params=params,
                                   fields=GEMINI_LIST if scope.api == Api.GEMINI else None)
        return parse_page(scope, body)

    async def get_json(self, api: Api, url: str, deadline: float, *, region: str | None = None,
                       params: dict[str, Any] | None = None, fields: str | None = None) -> Any:
        """GET ``url`` of ``api`` and decode its JSON body, retried; ``region``: the quota bucket to take
        a token from before each attempt (Vertex); ``fields``: a field mask (``batchapi.fields``). On a 400 the
        request is sent again without it; only when that one succeeds was it the mask, and the later requests
        go without masks (a 400 of another cause, a bad name, leaves the masks on)."""
        if fields is not None and not self._masks_refused:
            try:
                return await self._get_json(api, url, deadline, region, {**(params or {}), "fields": fields})
            except PermanentError as exc:
                if exc.kind != "bad_request":
                    raise
                refusal = exc
            body = await self._get_json(api, url, deadline, region, params)  # raises again: not the mask's fault
            self._masks_refused = True  # the same request answered without the mask: it was the mask
            log(_log, logging.WARNING, "the API refused a field mask (HTTP 400): asking without masks for the rest "
                "of this client's requests", api=api.value, url=httpx.URL(url).path,
                error={"kind": refusal.kind, "message": storable(str(refusal))})
            return body
        return await self._get_json(api, url, deadline, region, params)

    async def _get_json(self, api: Api, url: str, deadline: float, region: str | None,
                        params: dict[str, Any] | None) -> Any:
        gemini_headers = gemini_key(self._settings) if api == Api.GEMINI else None

        async def attempt() -> Any:
            if region is not None:
                await self._limiter.acquire(region, deadline)
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise DeadlineExceeded("tick deadline reached before the request")
            timeout = min(self._settings.request_timeout_s, remaining)
            auth = httpx.USE_CLIENT_DEFAULT if api == Api.GEMINI or self._vertex_auth is None else self._vertex_auth
            response = await send(self._http, "GET", url, params=params, headers=gemini_headers, timeout=timeout,
                                  auth=auth)
            try:
                return json.loads(response.content)
            except ValueError:
                raise BadResponseError(f"reply is not JSON ({len(response.content)} bytes)") from None

        return await retry(attempt, self._retry, deadline=deadline, clock=self._clock, sleep=self._sleep,
                           rng=self._rng)
