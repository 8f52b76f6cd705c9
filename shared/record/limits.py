"""Firestore's documented limits, and the two measures the store holds its documents to.

The emulator enforces none of these; production refuses a write or a request past them
(``InvalidArgument``). Sources, Firestore Standard edition:

- "Quotas and limits" (https://cloud.google.com/firestore/quotas): a document is at most 1 MiB; it has
  at most 40,000 index entries (single-field plus composite); an API request is at most 10 MiB; a
  collection whose documents hold sequential values in an indexed field takes at most 500 writes/s.
- "Storage size calculations" (https://cloud.google.com/firestore/docs/storage-size): how a document's
  size is counted (``document_size``).
- "Index overview" (https://cloud.google.com/firestore/docs/concepts/index-overview): which single-field
  index entries automatic indexing makes (``index_entries``).

Both measures err on the high side where the pages leave room (every array element is counted as an
array-contains entry, duplicates included; a map is counted like a document, with its 32 bytes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

MAX_DOCUMENT_BYTES = 1024 * 1024  # "Maximum size of a document": 1 MiB
MAX_INDEX_ENTRIES = 40_000  # "Maximum number of index entries for each document"
MAX_REQUEST_BYTES = 10 * 1024 * 1024  # "Maximum API request size": 10 MiB
MAX_DOCUMENT_ID_BYTES = 1500  # "Constraints on document IDs": no longer than 1,500 bytes
READ_BATCH = 300  # documents per batch read: 300 paths of at most ~3 KiB stay far below 10 MiB

T = TypeVar("T")


def string_size(text: str) -> int:
    """A string's stored size: its UTF-8 bytes + 1."""
    return len(text.encode("utf-8")) + 1


def value_size(value: Any) -> int:
    """A field value's stored size, by type (storage-size page)."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, (int, float, dt.datetime)):
        return 8
    if isinstance(value, str):
        return string_size(value)
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, Mapping):
        return fields_size(value) + 32
    if isinstance(value, (list, tuple)):
        return sum(value_size(v) for v in value)
    return 16  # a geographical point, a reference (short) or a vector: none is stored by batch-relay


def fields_size(fields: Mapping[str, Any]) -> int:
    return sum(string_size(str(name)) + value_size(value) for name, value in fields.items())


def document_size(path: Sequence[str], fields: Mapping[str, Any]) -> int:
    """The stored size of a document: its name (each collection and document id of ``path``, + 16), its
    fields, + 32. The limit is ``MAX_DOCUMENT_BYTES``."""
    return sum(string_size(part) for part in path) + 16 + fields_size(fields) + 32


def index_entries(fields: Mapping[str, Any], exempt: Collection[str] = (), composite: int = 0) -> int:
    """The index entries Firestore's automatic indexing makes for a document, fields under an exemption
    (a field path in ``exempt``: its indexes disabled, which its subfields inherit) not counted; plus
    ``composite`` (one entry per composite index the document is in). The limit is ``MAX_INDEX_ENTRIES``.

    Per the index overview: a field that is neither an array nor a map has an ascending and a descending
    index (2); a map has both on the whole map (2) and its subfields are indexed the same way, recursively;
    an array has both on the whole array (2) and an array-contains index (one entry per element)."""
    return _entries(fields, "", frozenset(exempt)) + composite


def _entries(fields: Mapping[str, Any], prefix: str, exempt: frozenset[str]) -> int:
    total = 0
    for name, value in fields.items():
        path = f"{prefix}{name}"
        if path in exempt:
            continue
        total += 2
        if isinstance(value, Mapping):
            total += _entries(value, f"{path}.", exempt)
        elif isinstance(value, (list, tuple)):
            total += len(value)
    return total


def chunks(items: Iterable[T], size: int = READ_BATCH) -> Iterator[list[T]]:
    """``items`` in lists of at most ``size`` (a batch read of more paths could pass ``MAX_REQUEST_BYTES``)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
