"""New batches, for ``resubmit``: a Files API upload and the two create calls.

- ``GeminiCreate.upload_file``: the Files API's resumable upload (``POST {base}/upload/v1beta/files`` with
  ``X-Goog-Upload-Command: start``, then ``upload, finalize`` of the whole body to the returned
  ``X-Goog-Upload-URL``, which must be on the Gemini API's own origin); returns the file's name
  (``files/…``).
- ``GeminiCreate.create_batch``: ``POST {base}/v1beta/models/{model}:batchGenerateContent`` with
  ``{"batch": {"displayName", "inputConfig": {"fileName"} | {"requests": {"requests": […]}}}}``.
- ``VertexCreate.create_job``: ``POST …/v1/projects/{p}/locations/{l}/batchPredictionJobs`` with the body
  ``vertex_job_body`` builds.

Both creates return the new job's ``JobStatus``. Only the upload's ``start`` is retried (it creates
nothing): an upload or a create that fails is not sent again here, since a second create is a second batch,
billed again. Their errors are those of ``retry.send``.

Neither create takes a request id, so a caller that does not know whether its create went through looks
for the batch first: ``GeminiCreate.find_batch`` (the batch of a display name, among those the API key
lists) and ``VertexCreate.find_job`` (the job with some labels, by a list ``filter``). Lists are read
(retried) page by page; one that does not end within ``MAX_FIND_PAGES`` is an error, never "not found".
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterable
from typing import Any

import httpx

from ..errors import BadResponseError
from ..retry import RetryPolicy, retry, send
from ..settings import Settings
from .endpoints import (
    batch_create_url,
    file_upload_url,
    gemini_key,
    is_gemini_origin,
    list_url,
    model_id,
    vertex_create_url,
)
from .listing import PAGE_SIZE, ListedJob, parse_page
from .names import Api
from .scopes import WatchScope
from .wire import JobStatus

JSONL = "application/jsonl"
MAX_FIND_PAGES = 500


async def _find(http: httpx.AsyncClient, url: str, scope: WatchScope, params: dict[str, Any], policy: RetryPolicy,
                match: Any, **kw: Any) -> JobStatus | None:
    """The first listed item ``match`` accepts, as a status; None when the whole list has none."""
    params = {"pageSize": PAGE_SIZE, **params}
    for _ in range(MAX_FIND_PAGES):
        response = await retry(functools.partial(send, http, "GET", url, params=dict(params), **kw), policy)
        page = parse_page(scope, _json(response, "list"))
        for item in page.items:
            if match(item):
                return item.status()
        if not page.next_token:
            return None
        params["pageToken"] = page.next_token
    raise BadResponseError(f"the list did not end within {MAX_FIND_PAGES} pages")


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        raise BadResponseError(f"{what}: the reply is not JSON ({len(response.content)} bytes)") from None


class GeminiCreate:
    """Uploads and batch creation over ``http`` (an ``httpx.AsyncClient`` the caller builds and closes)."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, *,
                 retry_policy: RetryPolicy | None = None) -> None:
        self._http = http
        self._settings = settings
        self._retry = retry_policy or RetryPolicy(max_attempts=settings.max_attempts)

    async def upload_file(self, content: bytes | AsyncIterable[bytes], *, size: int, display_name: str,
                          mime_type: str = JSONL) -> str:
        """Upload ``size`` bytes of ``content`` as a Files API file; returns its name (``files/…``)."""
        key = gemini_key(self._settings)
        start_headers = {**key, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
                         "X-Goog-Upload-Header-Content-Length": str(size),
                         "X-Goog-Upload-Header-Content-Type": mime_type}
        body = {"file": {"display_name": display_name}}
        started = await retry(lambda: send(self._http, "POST", file_upload_url(self._settings), json=body,
                                           headers=start_headers), self._retry)
        upload_url = started.headers.get("x-goog-upload-url")
        if not upload_url:
            raise BadResponseError("the Files API started an upload without an X-Goog-Upload-URL")
        target = httpx.URL(upload_url)
        if not is_gemini_origin(self._settings, target):
            raise BadResponseError(f"the Files API's upload URL is not on the Gemini API's origin ({target.host})")
        finished = await send(self._http, "POST", target, content=content, headers={
            **key, "X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0",
            "Content-Length": str(size)})
        reply = _json(finished, "upload")
        file = reply.get("file") if isinstance(reply, dict) else None
        name = file.get("name") if isinstance(file, dict) else None
        if not isinstance(name, str) or not name.startswith("files/"):
            raise BadResponseError("the Files API finished the upload without a file name")
        return name

    async def create_batch(self, model: str, *, display_name: str, file_name: str | None = None,
                           requests: list[dict[str, Any]] | None = None) -> JobStatus:
        """A new batch of ``model`` over the uploaded ``file_name`` or the inline ``requests``."""
        if (file_name is None) == (requests is None):
            raise ValueError("give file_name or requests, not both")
        config: dict[str, Any] = ({"fileName": file_name} if file_name is not None
                                  else {"requests": {"requests": requests}})
        body = {"batch": {"displayName": display_name, "model": f"models/{model_id(model)}", "inputConfig": config}}
        response = await send(self._http, "POST", batch_create_url(self._settings, model), json=body,
                              headers=gemini_key(self._settings))
        reply = _json(response, "batchGenerateContent")
        if isinstance(reply, dict) and "metadata" not in reply and isinstance(reply.get("name"), str):
            reply = {"name": reply["name"], "metadata": reply}  # the batch itself rather than its Operation
        return JobStatus.from_gemini(reply)

    async def find_batch(self, display_name: str) -> JobStatus | None:
        """The batch named ``display_name`` among every batch the API key lists (None: there is none)."""
        def named(item: ListedJob) -> bool:
            meta = item.raw.get("metadata")
            return isinstance(meta, dict) and meta.get("displayName") == display_name

        scope = WatchScope(Api.GEMINI)
        return await _find(self._http, list_url(self._settings, scope), scope, {}, self._retry, named,
                           headers=gemini_key(self._settings))


def vertex_job_body(*, display_name: str, model: str, input_uris: list[str], output_prefix: str,
                    labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A ``batchPredictionJobs.create`` body: JSONL in from ``input_uris``, JSONL out under ``output_prefix``."""
    body: dict[str, Any] = {
        "displayName": display_name,
        "model": f"publishers/google/models/{model_id(model)}",
        "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": list(input_uris)}},
        "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": output_prefix}},
    }
    if labels:
        body["labels"] = dict(labels)
    return body


def labels_filter(labels: dict[str, str]) -> str:
    """A Vertex list ``filter`` for the jobs carrying every one of ``labels`` (keys and values as label
    rules allow them: lowercase letters, digits, ``_`` and ``-``)."""
    return " AND ".join(f'labels.{key}="{value}"' for key, value in sorted(labels.items()))


class VertexCreate:
    """``batchPredictionJobs.create`` over ``http``, authenticated with ``vertex_auth`` (an ``httpx.Auth``)."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, *, vertex_auth: httpx.Auth | None = None,
                 retry_policy: RetryPolicy | None = None) -> None:
        self._http = http
        self._settings = settings
        self._auth = vertex_auth
        self._retry = retry_policy or RetryPolicy(max_attempts=settings.max_attempts)

    async def find_job(self, project: str, location: str, labels: dict[str, str]) -> JobStatus | None:
        """The job of ``projects/{project}/locations/{location}`` carrying all of ``labels`` (None: none)."""
        def labelled(item: ListedJob) -> bool:
            have = item.raw.get("labels")
            return isinstance(have, dict) and all(have.get(k) == v for k, v in labels.items())

        scope = WatchScope(Api.VERTEX, project, location)
        auth: Any = httpx.USE_CLIENT_DEFAULT if self._auth is None else self._auth
        return await _find(self._http, list_url(self._settings, scope), scope, {"filter": labels_filter(labels)},
                           self._retry, labelled, auth=auth)

    async def create_job(self, project: str, location: str, body: dict[str, Any]) -> JobStatus:
        """A new job under ``projects/{project}/locations/{location}`` (``body``: ``vertex_job_body``)."""
        auth: Any = httpx.USE_CLIENT_DEFAULT if self._auth is None else self._auth
        response = await send(self._http, "POST", vertex_create_url(self._settings, project, location), json=body,
                              auth=auth)
        return JobStatus.from_vertex(_json(response, "batchPredictionJobs.create"))
