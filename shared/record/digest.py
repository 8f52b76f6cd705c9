"""The digest of a watched scope: what the tick last knew of each watched job, kept in a few documents
of the meta collection so that an unchanged job costs no record read.

An entry holds the fingerprint of the last observation checked against the job's record, the record's
version, when its state or counts last changed, the version whose ``stalled`` event is out, and which
form of the name the record has (Vertex may list a project by number). It is a cache of the record and
never the truth: a tick writes entries only after checking them against the record, and anything that
does not match (a changed fingerprint, a missing entry) costs one read of the record. A stale entry
costs a read; a lost one costs a read; neither can hide a change, because an entry is trusted only when
the list shows exactly the observation it was checked with. Membership (which watched records exist)
is reconciled against the records themselves, one part at a time, at least every ``RECONCILE_S``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zlib
from typing import Any
from urllib.parse import quote

from . import limits

PARTS = 16
# What a part may hold: Firestore's 1 MiB a document, less room for its name and other fields
# (``limits.document_size``). With ``entries`` exempt from indexing (``indexing.UNINDEXED``), a part has
# a handful of index entries whatever it holds; indexed, each entry would cost 7 of the 40,000.
PART_MAX_BYTES = limits.MAX_DOCUMENT_BYTES - 8 * 1024
RECONCILE_S = 6 * 3600.0  # membership of each part checked against the records at least this often
UNKNOWN = 0  # a fingerprint that matches no observation: the next listing reads the record


def part_of(key: str) -> int:
    return zlib.crc32(key.encode()) % PARTS


def part_id(scope_id: str, part: int) -> str:
    return f"digest-{quote(scope_id, safe='')}-{part:02d}"


@dataclasses.dataclass
class Entry:
    fingerprint: int
    version: int
    changed_at: float | None  # epoch seconds
    stalled_version: int = -1  # -1: none
    name: str = ""  # the record's name when it is not the scope's own form of it

    def to_doc(self) -> list[Any]:
        return [self.fingerprint, self.version, self.changed_at, self.stalled_version, self.name]

    def stored_bytes(self, key: str) -> int:
        """What this entry adds to its part's stored size: its key (a field name of ``entries``), and its
        array of three integers, a number or null, and a string (``limits.value_size``)."""
        return limits.string_size(key) + limits.value_size(self.to_doc())

    @classmethod
    def from_doc(cls, value: Any) -> Entry | None:
        if not isinstance(value, list) or len(value) < 5:
            return None
        fp, version, changed, stalled, name = value[:5]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (fp, version, stalled)):
            return None
        if (changed is not None and not isinstance(changed, (int, float))) or not isinstance(name, str):
            return None
        return cls(fp, version, changed, stalled, name)


@dataclasses.dataclass
class Part:
    entries: dict[str, Entry]
    update_time: Any = None  # as read; guards the write back (None: the document did not exist)
    reconciled_at: dt.datetime | None = None
    dirty: bool = False
    full: bool = False  # entries were left out to fit PART_MAX_BYTES: no new key is taken until one leaves

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None, update_time: Any) -> Part:
        if not doc:
            return cls({}, update_time)
        entries: dict[str, Entry] = {}
        for key, value in (doc.get("entries") or {}).items():
            entry = Entry.from_doc(value)
            if entry is not None:
                entries[key] = entry
        reconciled = doc.get("reconciled_at")
        return cls(entries, update_time, reconciled if isinstance(reconciled, dt.datetime) else None,
                   full=doc.get("full") is True)

    def to_doc(self, scope_id: str) -> dict[str, Any]:
        return {"scope": scope_id, "entries": {k: e.to_doc() for k, e in self.entries.items()},
                "reconciled_at": self.reconciled_at, "full": self.full}

    def fit(self, scope_id: str, path: list[str], max_bytes: int | None = None) -> int:
        """Leave entries out (the last keys in sorted order) until the part's document, at ``path``, is
        at most ``max_bytes`` (default ``PART_MAX_BYTES``). Returns how many were left out: each costs a
        record read whenever it is listed, and the part takes no new key until one leaves."""
        budget = PART_MAX_BYTES if max_bytes is None else max_bytes
        size = limits.document_size(path, {"scope": scope_id, "entries": {}, "reconciled_at": self.reconciled_at,
                                           "full": True})
        kept: dict[str, Entry] = {}
        for key in sorted(self.entries):
            entry = self.entries[key]
            size += entry.stored_bytes(key)
            if size > budget:
                break
            kept[key] = entry
        left_out = len(self.entries) - len(kept)
        if left_out:
            self.entries = kept
            self.full = True
        return left_out


@dataclasses.dataclass
class Digest:
    scope_id: str
    parts: dict[int, Part]

    def get(self, key: str) -> Entry | None:
        return self.parts[part_of(key)].entries.get(key)

    def put(self, key: str, entry: Entry) -> None:
        part = self.parts[part_of(key)]
        if part.full and key not in part.entries:
            return  # no room: the job costs a read whenever it is listed
        if part.entries.get(key) != entry:
            part.entries[key] = entry
            part.dirty = True

    def drop(self, key: str) -> None:
        part = self.parts[part_of(key)]
        if part.entries.pop(key, None) is not None:
            part.dirty = True
            part.full = False

    def keys(self) -> set[str]:
        return {k for part in self.parts.values() for k in part.entries}

    def due_for_reconcile(self, now: dt.datetime) -> int | None:
        """The part to reconcile now: never reconciled first, else the oldest past ``RECONCILE_S``."""
        oldest: int | None = None
        oldest_at: dt.datetime | None = None
        for index, part in sorted(self.parts.items()):
            if part.reconciled_at is None:
                return index
            if (now - part.reconciled_at).total_seconds() >= RECONCILE_S and (
                    oldest_at is None or part.reconciled_at < oldest_at):
                oldest, oldest_at = index, part.reconciled_at
        return oldest


def epoch(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None
