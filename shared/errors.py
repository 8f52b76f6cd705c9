"""The exception tree of batch-relay. Its shape is the retry contract.

- ``TransientError``: try again later. Inside a tick the HTTP client retries it with backoff; in the
  reactor it propagates so Pub/Sub redelivers the message.
- ``PermanentError``: retrying cannot help. It is recorded on the job's record (``last_poll_error`` or
  ``copy.error``), logged, and, in the reactor, announced with ``outputsFailed`` and acked.
- ``UsageError``: bad input from a person (CLI, ``track()``, settings). One clear line, nothing written.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error batch-relay raises on purpose."""

    kind = "error"


class UsageError(RelayError, ValueError):
    """Bad input from a user: a malformed job name, an unknown API, a bad URI or option."""

    kind = "usage"


class SettingsError(UsageError):
    """An environment setting is missing or malformed; names the variable."""

    kind = "settings"


class TransientError(RelayError):
    """Worth retrying: 408/429/5xx, timeouts, connection errors."""

    kind = "unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(RelayError):
    """Retrying will not help. ``kind`` is what lands in the record's error map."""

    kind = "permanent"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind:
            self.kind = kind


class NotFoundError(PermanentError):
    kind = "not_found"


class ForbiddenError(PermanentError):
    kind = "forbidden"


class BadResponseError(PermanentError):
    """The API answered something we cannot read (not JSON, wrong shape)."""

    kind = "bad_response"


class DeadlineExceeded(TransientError):
    """The tick's deadline ran out before this job could be fetched."""

    kind = "deadline"
