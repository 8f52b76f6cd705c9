"""A Gemini batch's input, read back for ``failed.jsonl`` (``results.failed.GeminiJoin``).

- ``batch_input(body)``: where a batch's requests are, from its resource: ``inputConfig.fileName`` (a Files
  API file of ``{"key", "request"}`` lines) or ``inputConfig.requests.requests[]`` (``{"request",
  "metadata": {"key"}}``).
- ``GeminiInputs.batch_input(name)``: the batch fetched (retried) and read so; ``GeminiInputs.download``:
  the input file, streamed through the Files API download endpoint (the same door and redirect rules as
  the responses file). The Files API keeps a file 48 hours: a file gone is ``NotFoundError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..errors import BadResponseError
from ..retry import RetryPolicy, retry, send
from ..settings import Settings
from .endpoints import gemini_key, gemini_url
from .outputs import Download, GeminiOutputs


@dataclasses.dataclass(frozen=True)
class BatchInput:
    """Where a Gemini batch's requests are: ``file_name`` (``files/…``) or ``requests`` (the inline list)."""

    file_name: str | None = None
    requests: list[Any] | None = None


def batch_input(body: Any) -> BatchInput:
    """A batch's input from its resource (an Operation with the batch as ``metadata``, or the batch itself);
    ``BadResponseError`` when it names neither a file nor inline requests."""
    if not isinstance(body, dict):
        raise BadResponseError("the batch is not a JSON object")
    metadata = body.get("metadata")
    batch: dict[str, Any] = metadata if isinstance(metadata, dict) else body
    config = batch.get("inputConfig")
    if not isinstance(config, dict):
        raise BadResponseError("the batch has no inputConfig")
    file_name = config.get("fileName")
    if isinstance(file_name, str) and file_name:
        return BatchInput(file_name=file_name)
    requests = config.get("requests")
    items = requests.get("requests") if isinstance(requests, dict) else None
    if isinstance(items, list):
        return BatchInput(requests=items)
    raise BadResponseError("the batch's inputConfig names neither a file nor inline requests")


class GeminiInputs:
    """Reads Gemini batch inputs over ``http`` (an ``httpx.AsyncClient`` the caller builds and closes)."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, *,
                 retry_policy: RetryPolicy | None = None) -> None:
        self._http = http
        self._settings = settings
        self._retry = retry_policy or RetryPolicy(max_attempts=settings.max_attempts)
        self._files = GeminiOutputs(http, settings, retry_policy=self._retry)

    async def batch_input(self, name: str) -> BatchInput:
        """The input of batch ``name`` (``batches/…``), the batch fetched with retries."""
        url = gemini_url(self._settings, name)
        response = await retry(lambda: send(self._http, "GET", url, headers=gemini_key(self._settings)), self._retry)
        try:
            body = response.json()
        except ValueError:
            raise BadResponseError(f"{name}: the reply is not JSON") from None
        return batch_input(body)

    @contextlib.asynccontextmanager
    async def download(self, file_name: str) -> AsyncIterator[Download]:
        """The input file ``files/{id}``, streamed (``GeminiOutputs.download``'s errors; gone: ``NotFoundError``)."""
        async with self._files.download(file_name) as download:
            yield download
