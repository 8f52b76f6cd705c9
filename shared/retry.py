"""Retries with jittered exponential backoff (python-genai's policy: 1 s initial, base 2, 60 s cap)."""

from __future__ import annotations

import dataclasses
import email.utils
import random
import time

import httpx

from .errors import BadResponseError, ForbiddenError, NotFoundError, PermanentError, TransientError

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


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
