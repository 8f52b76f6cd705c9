"""Field masks: what the relay asks the Gemini API for, so a batch's inline responses (up to hundreds of
megabytes inside the batch resource) are never sent to a tick that only stores its state.

Sent as the ``fields`` system parameter (comma-separated dotted paths, as Google's REST APIs take it). A
Gemini batch is an Operation whose ``metadata`` is the batch; the inline responses sit in
``metadata.output.inlinedResponses.inlinedResponses[]`` and again in the Operation's ``response``.

- ``GEMINI_STATUS`` (the tick's GET) and ``GEMINI_LIST`` (each item of a list page): name, state, counts,
  times, error and output location, and of each inline response only its ``metadata`` (the request's key):
  the record's ``inlined_count`` stays exact while the responses themselves stay at the API.
- ``GEMINI_COPY`` (the reactor's GET at copy time): the same and the batch's ``inputConfig`` (its input
  file, or its inline requests, for ``failed.jsonl``).
- ``inline_fields``: the copy's second GET, streamed, of the one place the reply holds the responses in.

- ``VERTEX_STATUS`` (a Vertex AI job's GET, tick and copy alike): the fields its list already asks for
  (its ``readMask``). A Vertex job has no large field (its inputs and outputs are in Cloud Storage
  or BigQuery); the mask keeps ``partialFailures``, ``inputConfig`` and the rest out all the same.

A mask the API refuses (HTTP 400) must not stop polling: ``BatchApiClient`` asks again without it, and
without masks for the rest of its life (one tick), and logs it.
"""

from __future__ import annotations

from typing import Any

# Where the inline responses of a Gemini batch may be, in the order the wire parser reads them.
INLINE_PATHS: tuple[tuple[str, ...], ...] = (
    ("metadata", "output", "inlinedResponses", "inlinedResponses"),
    ("response", "inlinedResponses", "inlinedResponses"),
)

_BATCH = (
    "name", "done", "error",
    "metadata.name", "metadata.model", "metadata.displayName", "metadata.state", "metadata.createTime",
    "metadata.updateTime", "metadata.endTime", "metadata.batchStats",
    "metadata.output.responsesFile", "metadata.output.inlinedResponses.inlinedResponses.metadata",
    "response.responsesFile", "response.inlinedResponses.inlinedResponses.metadata",
)
GEMINI_STATUS = ",".join(_BATCH)
GEMINI_COPY = ",".join((*_BATCH, "metadata.inputConfig"))
GEMINI_LIST = ",".join((*(f"operations.{path}" for path in _BATCH), "nextPageToken"))
# A Vertex AI job's GET: what ``JobStatus.from_vertex`` reads, as its list asks (its ``readMask``).
VERTEX_STATUS = ("name,state,completionStats,outputInfo,error,createTime,startTime,endTime,updateTime,"
                 "displayName,model,labels")


def inline_path(reply: Any) -> tuple[str, ...]:
    """Where ``reply`` (read with one of the masks above) holds its inline responses: the first of
    ``INLINE_PATHS`` present, else the first."""
    for path in INLINE_PATHS:
        node = reply
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            return path
    return INLINE_PATHS[0]


def inline_fields(path: tuple[str, ...]) -> str:
    """The mask of a GET that returns only the inline responses at ``path``."""
    return ".".join(path)
