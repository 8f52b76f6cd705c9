"""The one retry loop, and the one way an HTTP request's failure becomes an error of ``errors.py``.

- ``send``: one request; transport failures and timeouts become ``TransientError``, a status outside
  2xx (and outside ``ok``) its ``classify`` error. Messages name the method and path only — never a
  header, never a query (an upload session URI is a credential).
- ``retry``: run an attempt until it succeeds, raises something not worth retrying, runs out of
  attempts or would pass a deadline. Jittered exponential backoff (python-genai's policy: 1 s initial,
  base 2, 60 s cap), or ``Retry-After`` when the server gave one.

Every HTTP caller (batch-API GET and list, Cloud Storage, the copier's downloads) goes through these,
each at one level only: nothing retries what an inner ``retry`` already retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import httpx

from .errors import BadResponseError, DeadlineExceeded, ForbiddenError, NotFoundError, PermanentError, TransientError

if TYPE_CHECKING:  # pragma: no cover
    from .batchapi.http import HttpPool

# What ``send`` sends over: an ``httpx.AsyncClient``, or the tick's pool of them (``build_request``/``send``).
HttpSender: TypeAlias = "httpx.AsyncClient | HttpPool"

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_s: float = 1.0
    cap_s: float = 60.0
    base: float = 2.0

    def backoff(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempt counts from 1): full jitter, or
        ``Retry-After`` when the server gave one (capped)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cap_s)
        ceiling = min(self.cap_s, self.initial_s * self.base ** (attempt - 1))
        return (rng or random).uniform(ceiling / 2, ceiling)


def transient(exc: BaseException) -> bool:
    """The default retry predicate: transient errors, except a deadline that has already passed."""
    return isinstance(exc, TransientError) and not isinstance(exc, DeadlineExceeded)


async def retry(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, *,
                retry_if: Callable[[BaseException], bool] = transient, deadline: float | None = None,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], Awaitable[object]] = asyncio.sleep, rng: random.Random | None = None) -> T:
    """``await attempt()`` until it returns; retries what ``retry_if`` accepts, at most
    ``policy.max_attempts`` attempts in all, never sleeping past ``deadline`` (a ``clock`` time)."""
    tries = 0
    while True:
        tries += 1
        try:
            return await attempt()
        except Exception as exc:
            if tries >= policy.max_attempts or not retry_if(exc):
                raise
            wait = policy.backoff(tries, getattr(exc, "retry_after", None), rng)
            if deadline is not None and clock() + wait >= deadline:
                raise
            await sleep(wait)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def error_message(response: httpx.Response) -> str:
    """The Google error body's message, or a short reason."""
    try:
        body = response.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return f"HTTP {response.status_code}: {err['message'][:300]}"
    except ValueError:
        pass
    return f"HTTP {response.status_code} {response.reason_phrase}"


def classify(response: httpx.Response) -> Exception | None:
    """None for 2xx; otherwise the error this status means in the retry contract."""
    status = response.status_code
    if status < 300:
        return None
    message = error_message(response)
    if status in RETRY_STATUS:
        return TransientError(message, retry_after=parse_retry_after(response.headers.get("retry-after")))
    if status == 404:
        return NotFoundError(message)
    if status in (401, 403):
        return ForbiddenError(message)
    if status >= 500:
        return TransientError(message)
    if status == 400:
        return PermanentError(message, kind="bad_request")
    return BadResponseError(message)


async def send(http: HttpSender, method: str, url: str | httpx.URL, *, ok: Collection[int] = (), stream: bool = False,
               auth: Any = httpx.USE_CLIENT_DEFAULT, **kw: Any) -> httpx.Response:
    """One HTTP request over ``http`` (an ``httpx.AsyncClient`` or an ``HttpPool``), with failures mapped
    to ``errors.py``. With ``stream=True`` the caller closes the response (a failed one is read and closed
    here). ``auth``: an ``httpx.Auth``, or ``httpx.USE_CLIENT_DEFAULT`` (whose type httpx keeps private)."""
    request = http.build_request(method, url, **kw)
    where = f"{method} {request.url.path}"
    try:
        response = await http.send(request, stream=stream, auth=auth, follow_redirects=False)
    except httpx.TimeoutException as exc:
        raise TransientError(f"{where}: timed out ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise TransientError(f"{where}: {type(exc).__name__}: {str(exc)[:200]}") from None
    except (TransientError, PermanentError):
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a credentials refresh failing inside an httpx.Auth
        raise TransientError(f"{where}: request failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    if response.status_code < 300 or response.status_code in ok:
        return response
    try:
        await response.aread()
    except httpx.HTTPError as exc:
        raise TransientError(f"{where}: HTTP {response.status_code}, body lost: {type(exc).__name__}") from None
    finally:
        await response.aclose()
    error = classify(response) or BadResponseError(f"HTTP {response.status_code}")
    error.args = (f"{where}: {error}",)
    raise error
