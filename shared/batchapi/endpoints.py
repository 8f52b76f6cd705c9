"""Where each batch-API call goes, and the Gemini API key that goes with it: the only place that writes a
Gemini API or Vertex AI URL.

- Gemini API: ``{RELAY_GEMINI_BASE_URL}/v1beta/…`` (batches, webhooks), files at
  ``/download/v1beta/files/{id}:download?alt=media``; the key in the ``x-goog-api-key`` header, sent only
  to that origin.
- Vertex AI: ``https://{location}-aiplatform.googleapis.com/v1/…`` (``aiplatform.googleapis.com`` for
  ``global``), or ``RELAY_VERTEX_BASE_URL`` with ``{location}`` filled in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ForbiddenError, PermanentError
from .names import GEMINI, JobName, is_file_name
from .scopes import WatchScope

if TYPE_CHECKING:  # pragma: no cover - settings imports this module (for the default below)
    import httpx

    from ..settings import Settings

GEMINI_BASE_URL = "https://generativelanguage.googleapis.com"
VERTEX_GLOBAL_URL = "https://aiplatform.googleapis.com"
API_KEY_HEADER = "x-goog-api-key"


class MissingApiKey(ForbiddenError):
    """A Gemini API call without ``RELAY_GEMINI_API_KEY``: on a job's record it is ``forbidden``; at the
    CLI's door, a usage error."""

    def __init__(self) -> None:
        super().__init__("RELAY_GEMINI_API_KEY is not set: the Gemini API is called with its API key")


def gemini_key(settings: Settings) -> dict[str, str]:
    """The header that carries the API key (``MissingApiKey`` without one)."""
    if not settings.gemini_api_key:
        raise MissingApiKey()
    return {API_KEY_HEADER: settings.gemini_api_key}


def gemini_url(settings: Settings, path: str) -> str:
    """``{base}/v1beta/{path}`` of the Gemini API (``path`` without a leading slash)."""
    return f"{settings.gemini_base_url}/v1beta/{path}"


def is_gemini_origin(settings: Settings, url: httpx.URL) -> bool:
    """Whether ``url`` is on the configured Gemini API's origin (scheme, host and port): the only place
    the API key may go."""
    import httpx  # here: settings imports this module, and batch_relay imports without its dependencies

    base = httpx.URL(settings.gemini_base_url)
    return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)


def file_download_url(settings: Settings, file_name: str) -> str:
    """The media download of a Files API file (``files/{id}``); a name of another shape is refused."""
    if not is_file_name(file_name):
        raise PermanentError(f"unexpected responses file name {file_name[:100]!r}", kind="bad_source")
    return f"{settings.gemini_base_url}/download/v1beta/{file_name}:download?alt=media"


def webhooks_url(settings: Settings, webhook_id: str | None = None) -> str:
    """The project's webhooks, or one of them (an id checked by ``webhook_admin.check_id``)."""
    return gemini_url(settings, f"webhooks/{webhook_id}" if webhook_id else "webhooks")


def vertex_base_url(settings: Settings, location: str) -> str:
    if settings.vertex_base_url:
        return settings.vertex_base_url.replace("{location}", location)
    if location == "global":
        return VERTEX_GLOBAL_URL
    return f"https://{location}-aiplatform.googleapis.com"


def status_url(settings: Settings, job: JobName) -> str:
    """The GET of one job."""
    if job.api == GEMINI:
        return gemini_url(settings, job.name)
    return f"{vertex_base_url(settings, job.location or 'global')}/v1/{job.name}"


def list_url(settings: Settings, scope: WatchScope) -> str:
    """The list of a watched scope's jobs."""
    if scope.api == GEMINI:
        return gemini_url(settings, "batches")
    return f"{vertex_base_url(settings, scope.location or 'global')}/v1/{scope.parent}/batchPredictionJobs"
