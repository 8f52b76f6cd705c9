"""The project's static Gemini API webhooks over REST, with the API key (``batch-relay webhook …``), and
the checks of what a person asks for (a URL the API can deliver to, a webhook id).

``POST /v1beta/webhooks {"name", "uri", "subscribed_events"}`` registers one (its reply holds the
signing secret, once: ``new_signing_secret``), ``GET /v1beta/webhooks`` lists them (paged),
``DELETE /v1beta/webhooks/{id}`` removes one. JSON is snake_case, as the API's generated client sends it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import BadResponseError, UsageError
from ..retry import RetryPolicy, retry, send
from ..settings import Settings
from .endpoints import gemini_key, webhooks_url
from .http import HttpPool

# The batch events of the Gemini API's webhook enum; batch-relay takes any batch.* delivery as a nudge.
BATCH_EVENTS = ("batch.succeeded", "batch.failed", "batch.expired")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_url(url: str) -> str:
    """A URL the Gemini API can deliver to: https (plain http only to this machine, for the local stack)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UsageError(f"{url[:100]!r} is not a URL") from None
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if not parts.hostname or parts.scheme not in ("https", "http") or (parts.scheme == "http" and not local):
        raise UsageError(f"{url[:100]!r}: the webhook URL must be https:// (the function's URL)")
    if parts.username or parts.password or parts.fragment:
        raise UsageError(f"{url[:100]!r}: no credentials or fragment in a webhook URL")
    return url


def check_id(webhook_id: str) -> str:
    ident = webhook_id.removeprefix("webhooks/")
    if not _ID.match(ident):
        raise UsageError(f"{webhook_id[:100]!r} is not a webhook id")
    return ident


def _webhook(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("id") or body.get("name"), str):
        raise BadResponseError("the Gemini API answered something that is not a webhook")
    return body


class WebhookAdmin:
    """Register, list and unregister over ``http`` (an ``httpx.AsyncClient`` or the tick's ``HttpPool``, which
    the caller builds and closes);
    ``endpoints.MissingApiKey`` without the API key. Lists (GET) are retried; a POST or DELETE is sent once."""

    def __init__(self, http: httpx.AsyncClient | HttpPool, settings: Settings, *,
                 retry_policy: RetryPolicy | None = None) -> None:
        self._headers = gemini_key(settings)
        self._http = http
        self._settings = settings
        self._retry = retry_policy or RetryPolicy(max_attempts=settings.max_attempts)

    async def _call(self, method: str, url: str, **kw: Any) -> Any:
        response = await retry(lambda: send(self._http, method, url, headers=self._headers, **kw), self._retry) \
            if method == "GET" else await send(self._http, method, url, headers=self._headers, **kw)
        try:
            return response.json() if response.content else {}
        except ValueError:
            raise BadResponseError(f"{method} webhooks: the reply is not JSON") from None

    async def register(self, url: str, *, name: str | None = None,
                       events: tuple[str, ...] = BATCH_EVENTS) -> dict[str, Any]:
        body: dict[str, Any] = {"uri": check_url(url), "subscribed_events": list(events)}
        if name:
            body["name"] = name
        created = _webhook(await self._call("POST", webhooks_url(self._settings), json=body))
        if not isinstance(created.get("new_signing_secret"), str):
            raise BadResponseError("the Gemini API registered the webhook but sent no signing secret")
        return created

    async def unregister(self, webhook_id: str) -> None:
        await self._call("DELETE", webhooks_url(self._settings, check_id(webhook_id)))

    async def list(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(100):
            params: dict[str, Any] = {"page_size": 100, **({"page_token": token} if token else {})}
            page = await self._call("GET", webhooks_url(self._settings), params=params)
            if not isinstance(page, dict) or not isinstance(page.get("webhooks", []), list):
                raise BadResponseError("the Gemini API's webhook list is not a list")
            out += [_webhook(item) for item in page.get("webhooks", [])]
            token = page.get("next_page_token")
            if not token:
                return out
        raise BadResponseError("the Gemini API's webhook list does not end")

