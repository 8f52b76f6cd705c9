"""Partial responses of the Gemini API routes and the Vertex AI job GET: the ``fields`` system parameter
(also ``$fields``, or the ``X-Goog-FieldMask`` header), as Google's REST APIs take it.

A mask is comma-separated paths, each a dotted (or ``/``-separated) chain of JSON field names, with Google's
``a(b,c)`` nesting (``metadata(name,state)`` = ``metadata.name,metadata.state``). A path keeps that field
and everything below it; a path through a list applies to each element (the list keeps its length). A field
the resource does not have is refused with 400 ``INVALID_ARGUMENT``, as the API does, even when the value is
absent from this reply (an unset time); below a free-form value (a response, a request, item metadata) any
name is accepted.
"""

from __future__ import annotations

from typing import Any

# The schema: field -> its sub-schema; LEAF has no fields; ANY accepts any path below it.
LEAF: dict[str, Any] = {}
ANY = None

_ITEM = {"response": ANY, "error": ANY, "metadata": ANY}
_OUTPUT = {"@type": LEAF, "responsesFile": LEAF, "inlinedResponses": {"inlinedResponses": _ITEM}}
_BATCH = {
    "@type": LEAF, "name": LEAF, "model": LEAF, "displayName": LEAF, "state": LEAF, "priority": LEAF,
    "createTime": LEAF, "updateTime": LEAF, "endTime": LEAF,
    "batchStats": {k: LEAF for k in ("requestCount", "successfulRequestCount", "failedRequestCount",
                                     "pendingRequestCount")},
    "inputConfig": {"fileName": LEAF, "requests": {"requests": {"request": ANY, "metadata": ANY}}},
    "output": _OUTPUT,
}
GEMINI_BATCH = {"name": LEAF, "done": LEAF, "metadata": _BATCH, "response": _OUTPUT,
                "error": {"code": LEAF, "message": LEAF, "details": ANY}}
GEMINI_LIST = {"operations": GEMINI_BATCH, "nextPageToken": LEAF}
VERTEX_JOB = {name: ANY for name in (  # a BatchPredictionJob's fields, anything below them
    "name", "displayName", "model", "modelVersionId", "unmanagedContainerModel", "inputConfig", "instanceConfig",
    "modelParameters", "outputConfig", "dedicatedResources", "serviceAccount", "manualBatchTuningParameters",
    "generateExplanation", "explanationSpec", "outputInfo", "state", "error", "partialFailures",
    "resourcesConsumed", "completionStats", "createTime", "startTime", "endTime", "updateTime", "labels",
    "encryptionSpec", "disableContainerLogging", "satisfiesPzs", "satisfiesPzi")}

Tree = dict[str, Any]  # field -> its Tree, or None: the whole value


class MaskError(ValueError):
    """A mask that cannot be parsed, or that names a field the resource does not have."""


def parse(text: str) -> Tree:
    """The mask as a tree (``Tree``); ``MaskError`` for bad syntax."""
    tree: Tree = {}
    pos = _paths(text, 0, tree, nested=False)
    if pos != len(text):
        raise MaskError(f"unexpected {text[pos]!r} at {pos} in field mask {text!r}")
    return tree


def _paths(text: str, pos: int, into: Tree, *, nested: bool) -> int:
    """Parse ``path(,path)*`` from ``pos`` into ``into``; the position after it (at ")" when ``nested``)."""
    while True:
        pos = _path(text, pos, into)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if nested and (pos >= len(text) or text[pos] != ")"):
            raise MaskError(f"unclosed '(' in field mask {text!r}")
        return pos


def _path(text: str, pos: int, into: Tree) -> int:
    names: list[str] = []
    while True:
        start = pos
        while pos < len(text) and text[pos] not in ".,/()":
            pos += 1
        name = text[start:pos].strip()
        if not name:
            raise MaskError(f"empty field name at {start} in field mask {text!r}")
        names.append(name)
        if pos < len(text) and text[pos] in "./":
            pos += 1
            continue
        break
    node = into
    for name in names[:-1]:
        node = _child(node, name)
        if node is None:
            break
    last = names[-1]
    if pos < len(text) and text[pos] == "(":
        if node is not None:
            sub = _child(node, last)
            pos = _paths(text, pos + 1, sub if sub is not None else {}, nested=True) + 1
        else:
            pos = _paths(text, pos + 1, {}, nested=True) + 1
    elif node is not None:
        node[last] = None  # the whole field
    return pos


def _child(node: Tree, name: str) -> Tree | None:
    """The sub-tree of ``name`` (created), or None when the whole field is already asked for."""
    if name in node and node[name] is None:
        return None
    return node.setdefault(name, {})


def check(tree: Tree, schema: dict[str, Any] | None, where: str = "") -> None:
    """``MaskError`` naming the first field of ``tree`` that ``schema`` does not have."""
    if schema is ANY:
        return
    for name, sub in tree.items():
        if name not in schema:
            raise MaskError(f"Invalid field mask path: {where}{name} is not a field of this resource")
        if sub is not None:
            check(sub, schema[name], f"{where}{name}.")


def apply(tree: Tree | None, value: Any) -> Any:
    """``value`` with only the fields ``tree`` keeps (each element of a list masked alike)."""
    if tree is None:
        return value
    if isinstance(value, list):
        return [apply(tree, element) for element in value]
    if not isinstance(value, dict):
        return value
    return {name: apply(sub, value[name]) for name, sub in tree.items() if name in value}


def from_request(query: dict[str, list[str]], headers: dict[str, str], schema: dict[str, Any]) -> Tree | None:
    """The request's mask, checked against ``schema``, or None when it has none (``MaskError``)."""
    text = (query.get("fields") or query.get("$fields") or [None])[0] or headers.get("x-goog-fieldmask")
    if not text:
        return None
    tree = parse(text)
    check(tree, schema)
    return tree
