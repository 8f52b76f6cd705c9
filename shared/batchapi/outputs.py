"""A finished Gemini batch's outputs, read from the Gemini API for the copy (``reactor.plans``).

- The responses file: a streamed GET of the Files API download, its redirects followed by hand (at most
  ``MAX_REDIRECTS``): the API key goes only to the configured Gemini origin, and a redirect may not
  downgrade https to http. A download that cannot start or breaks off is ``SourceUnavailable``
  (transient): the copier retries the whole download.
- The inline responses: the batch fetched again, asking only for them (the ``fields`` mask of
  ``batchapi.fields``; without it if the API refuses the mask), the body read streamed and taken apart one
  response at a time (``batchapi.jsonstream``): a copy holds one response, never the whole list. A reply
  that breaks off is ``SourceUnavailable``, like a download.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx

from ..errors import BadResponseError, PermanentError, TransientError
from ..retry import RetryPolicy, send
from ..settings import Settings
from .endpoints import file_download_url, gemini_key, gemini_url, is_gemini_origin
from .fields import INLINE_PATHS, inline_fields
from .jsonstream import JsonStreamError, aiter_array

MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)


class SourceUnavailable(TransientError):
    """A download from the Gemini API failed transiently: the copier retries the whole download (the
    upload into Cloud Storage is retried by the storage client itself, never again here)."""


class Download:
    """An open responses-file download: the size its server announced, and its bytes."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def announced_size(self) -> int | None:
        """``Content-Length``, when the server sent one."""
        value = self._response.headers.get("content-length")
        return int(value) if value is not None else None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; a break is ``SourceUnavailable``."""
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"responses file download broke: {type(exc).__name__}") from None


class GeminiOutputs:
    """Reads Gemini batch outputs over ``http`` (an ``httpx.AsyncClient`` the caller builds and closes)."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, *,
                 retry_policy: RetryPolicy | None = None) -> None:
        self._http = http
        self._settings = settings
        self._retry = retry_policy or RetryPolicy(max_attempts=settings.max_attempts)

    @contextlib.asynccontextmanager
    async def download(self, file_name: str) -> AsyncIterator[Download]:
        """The responses file ``files/{id}``, streamed (closed when the block ends). Errors: a bad name or
        a bad redirect ``PermanentError``; a status its ``retry.classify`` error; unreachable or 5xx
        ``SourceUnavailable``."""
        async with self._follow(file_download_url(self._settings, file_name)) as response:
            yield Download(response)

    @contextlib.asynccontextmanager
    async def _follow(self, url: str) -> AsyncIterator[httpx.Response]:
        """GET ``url`` streamed, following redirects by hand under the rules above."""
        for _ in range(MAX_REDIRECTS + 1):
            target = httpx.URL(url)
            try:
                response = await send(self._http, "GET", target, stream=True, ok=_REDIRECTS,
                                      headers=gemini_key(self._settings) if is_gemini_origin(self._settings, target)
                                      else None)
            except SourceUnavailable:
                raise
            except TransientError as exc:
                raise SourceUnavailable(str(exc), retry_after=exc.retry_after) from None
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or not location:
                try:
                    yield response
                finally:
                    await response.aclose()
                return
            await response.aclose()
            next_url = target.join(location)
            if target.scheme == "https" and next_url.scheme != "https":
                raise PermanentError("responses file download redirected from https to http", kind="bad_source")
            url = str(next_url)
        raise PermanentError("responses file download redirected too many times", kind="bad_source")

    @contextlib.asynccontextmanager
    async def inline_items(self, name: str, path: tuple[str, ...] = INLINE_PATHS[0]
                           ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """The inline responses of batch ``name`` as the API gives them (``{"response" | "error",
        "metadata"}``), one at a time, from a GET of only ``path`` (``fields.inline_path`` of the batch's
        reply). Errors: as ``download``; an item that is not an object, or a body that is not JSON,
        ``BadResponseError``."""
        url = gemini_url(self._settings, name)
        headers = gemini_key(self._settings)
        try:
            try:
                response = await send(self._http, "GET", url, stream=True, headers=headers,
                                      params={"fields": inline_fields(path)})
            except PermanentError as exc:
                if exc.kind != "bad_request":
                    raise
                response = await send(self._http, "GET", url, stream=True, headers=headers)  # the mask refused
        except SourceUnavailable:
            raise
        except TransientError as exc:
            raise SourceUnavailable(str(exc), retry_after=exc.retry_after) from None
        try:
            yield _items(response, name)
        finally:
            await response.aclose()


async def _items(response: httpx.Response, name: str) -> AsyncIterator[dict[str, Any]]:
    index = 0
    try:
        async for item in aiter_array(response.aiter_bytes(), INLINE_PATHS):
            if not isinstance(item, dict):
                raise BadResponseError(f"inline responses of {name} are unreadable: "
                                       f"inlinedResponses[{index}] is not an object")
            yield cast(dict[str, Any], item)
            index += 1
    except JsonStreamError as exc:
        raise BadResponseError(f"inline responses of {name} are unreadable: {exc}") from None
    except httpx.HTTPError as exc:
        raise SourceUnavailable(f"inline responses of {name} broke off: {type(exc).__name__}") from None
