"""What the meta collection stores of watched scopes: each scope's bookkeeping, its digest (a cache of
its watched records: ``digest.py``), the records watched under it, and the tombstones of jobs untracked
while perhaps watched."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from ..log import get_logger, log
from . import digest, limits, machine
from .base import Snapshot, StoreBase, snap_of
from .digest import Digest

_log = get_logger("store")


def _scope_doc(scope_id: str) -> str:
    return f"scope-{quote(scope_id, safe='')}"


class Scopes(StoreBase):
    # -- a scope's bookkeeping ----------------------------------------------------------------------------
    def load_scope(self, scope_id: str) -> dict[str, Any] | None:
        """A watched scope's bookkeeping: ``started_at`` (first watched), ``window_at``, ``settled``."""
        doc = self._meta.document(_scope_doc(scope_id)).get()
        return doc.to_dict() if doc.exists else None

    def save_scope(self, scope_id: str, fields: dict[str, Any]) -> None:
        """Merge ``fields`` into the scope's bookkeeping (``started_at`` is never moved once set: callers
        pass what they read)."""
        self._meta.document(_scope_doc(scope_id)).set({"kind": "scope", "scope": scope_id, **fields}, merge=True)

    def known_scopes(self) -> dict[str, bool]:
        """Every scope that was ever watched (its bookkeeping exists), and whether it is retired."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        docs = self._meta.where(filter=FieldFilter("kind", "==", "scope")).stream()
        return {d.get("scope"): bool((d.to_dict() or {}).get("retired")) for d in docs}

    def retire_scope(self, scope_id: str) -> int:
        """A scope no longer watched: its records go back to the GET path. Returns how many."""
        moved = 0
        for snap in self.watched(scope_id):
            _result, change = machine.unwatch(snap.record)
            if change is not None and self._commit_guarded(snap, change) is not None:
                moved += 1
        self._meta.document(_scope_doc(scope_id)).set({"retired": True}, merge=True)
        return moved

    # -- the digest ---------------------------------------------------------------------------------------
    def load_digest(self, scope_id: str) -> Digest:
        refs = [self._meta.document(digest.part_id(scope_id, p)) for p in range(digest.PARTS)]
        found = {d.id: d for d in self._db.get_all(refs)}
        parts = {}
        for p, ref in enumerate(refs):
            doc = found.get(ref.id)
            exists = doc is not None and doc.exists
            parts[p] = digest.Part.from_doc(doc.to_dict() if doc is not None and exists else None,
                                            doc.update_time if doc is not None and exists else None)
        return Digest(scope_id, parts)

    def save_digest(self, dig: Digest) -> int:
        """Write back the parts that changed, each only if nobody wrote it since it was read (a part that
        lost the race is left as the other writer made it: an out-of-date entry only costs a read).

        Each part is held to Firestore's document limits first (``Part.fit``), and written on its own: a
        part the database refuses (``InvalidArgument``: too large, too many index entries) or fails to
        write is logged once and left as it was — the other parts, and the scope's bookkeeping the caller
        saves next, are written all the same. Returns how many parts were written."""
        from google.api_core import exceptions as gexc

        written = 0
        for p, part in dig.parts.items():
            if not part.dirty:
                continue
            part.dirty = False
            doc_id = digest.part_id(dig.scope_id, p)
            left_out = part.fit(dig.scope_id, [self._meta.id, doc_id])
            if left_out:
                log(_log, logging.WARNING, "digest part full; the jobs left out cost a record read when listed",
                    scope=dig.scope_id, part=p, left_out=left_out, kept=len(part.entries))
            ref = self._meta.document(doc_id)
            doc = part.to_doc(dig.scope_id)
            try:
                if part.update_time is None:
                    ref.create(doc)
                else:
                    ref.update(doc, option=self._db.write_option(last_update_time=part.update_time))
                written += 1
            except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.Conflict, gexc.NotFound):
                log(_log, logging.INFO, "digest part changed meanwhile; left as is", scope=dig.scope_id, part=p)
            except gexc.GoogleAPICallError as exc:
                log(_log, logging.ERROR, "digest part not written; its jobs cost a record read when listed",
                    scope=dig.scope_id, part=p, entries=len(part.entries),
                    error=f"{type(exc).__name__}: {exc}"[:300])
        return written

    def watched(self, scope_id: str, part: int | None = None) -> Iterator[Snapshot]:
        """The records watched under a scope (of one digest part): what reconciling the digest reads."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._jobs.where(filter=FieldFilter("watch_scope", "==", scope_id))
        if part is not None:
            query = query.where(filter=FieldFilter("watch_part", "==", part))
        for doc in query.stream():
            yield snap_of(doc)

    # -- tombstones ---------------------------------------------------------------------------------------
    def tombstoned(self, names: list[str]) -> set[str]:
        """Which of ``names`` were untracked (and not tracked again since)."""
        gone: set[str] = set()
        for batch in limits.chunks(names):  # one request for every name could pass the 10 MiB request limit
            gone |= {d.get("name") for d in self._db.get_all([self._tombstone(n) for n in batch]) if d.exists}
        return gone
