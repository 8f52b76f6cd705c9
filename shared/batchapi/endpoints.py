"""Where each batch-API call goes, and the Gemini API key that goes with it: the only place that writes a
Gemini API or Vertex AI URL.

- Gemini API: ``{RELAY_GEMINI_BASE_URL}/v1beta/…`` (batches, webhooks, ``models/{model}:batchGenerateContent``),
  files at ``/download/v1beta/files/{id}:download?alt=media``, uploads at ``/upload/v1beta/files``; the key
  in the ``x-goog-api-key`` header, sent only to that origin.
- Vertex AI: ``https://{location}-aiplatform.googleapis.com/v1/…`` (``aiplatform.googleapis.com`` for
  ``global``), or ``RELAY_VERTEX_BASE_URL`` with ``{location}`` filled in.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..errors import ForbiddenError, PermanentError
from .names import Api, JobName, is_file_name
from .scopes import WatchScope

if TYPE_CHECKING:  # pragma: no cover - settings imports this module (for the default below)
    import httpx

    from ..settings import Settings

GEMINI_BASE_URL = "https://generativelanguage.googleapis.com"
VERTEX_GLOBAL_URL = "https://aiplatform.googleapis.com"
API_KEY_HEADER = "x-goog-api-key"
_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_PROJECT = re.compile(r"^(?:[a-z0-9][a-z0-9-]{0,62}|[0-9]{1,20})$")  # as in job names (names.py)
_LOCATION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


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


def file_upload_url(settings: Settings) -> str:
    """Where a Files API upload starts (the resumable protocol's ``start``)."""
    return f"{settings.gemini_base_url}/upload/v1beta/files"


def model_id(model: str) -> str:
    """``gemini-2.5-flash`` from ``models/gemini-2.5-flash``, ``publishers/google/models/gemini-2.5-flash`` or
    itself; ``PermanentError`` for anything that is not a model id (it goes into a URL path)."""
    text = model.strip()
    for prefix in ("models/", "publishers/google/models/"):
        text = text.removeprefix(prefix)
    if not _MODEL_ID.match(text):
        raise PermanentError(f"{model[:100]!r} is not a model id", kind="bad_request")
    return text


def batch_create_url(settings: Settings, model: str) -> str:
    """``models/{model}:batchGenerateContent``: a new Gemini batch of ``model``."""
    return gemini_url(settings, f"models/{model_id(model)}:batchGenerateContent")


def vertex_create_url(settings: Settings, project: str, location: str) -> str:
    """``batchPredictionJobs.create`` under ``projects/{project}/locations/{location}``."""
    if not _PROJECT.match(project) or not _LOCATION.match(location):
        raise PermanentError(f"projects/{project[:64]}/locations/{location[:64]} is not a Vertex AI location",
                             kind="bad_request")
    return f"{vertex_base_url(settings, location)}/v1/projects/{project}/locations/{location}/batchPredictionJobs"


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
    if job.api == Api.GEMINI:
        return gemini_url(settings, job.name)
    return f"{vertex_base_url(settings, job.location or 'global')}/v1/{job.name}"


def list_url(settings: Settings, scope: WatchScope) -> str:
    """The list of a watched scope's jobs."""
    if scope.api == Api.GEMINI:
        return gemini_url(settings, "batches")
    return f"{vertex_base_url(settings, scope.location or 'global')}/v1/{scope.parent}/batchPredictionJobs"
