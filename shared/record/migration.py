"""The one-time migration: records written before ``poll_slot`` existed (or on another cadence ladder)
are given their fields by the first tick, and the meta collection's ``schema`` document says it is done."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from . import cadence
from .base import StoreBase
from .model import EVERY_TICK

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
    from google.cloud.firestore_v1.document import DocumentReference

SCHEMA = "schema"
SCHEMA_VERSION = 2  # 2: poll_slot (which records the GET path polls), watch_scope


class Migration(StoreBase):
    def migrated(self, ladder: tuple[int, ...]) -> bool:
        """Whether every record is of this version and on this cadence ladder."""
        doc = self._meta.document(SCHEMA).get()
        data = (doc.to_dict() or {}) if doc.exists else {}
        return (data.get("version") or 0) >= SCHEMA_VERSION and data.get("ladder") == list(ladder)

    def migrate(self, now: dt.datetime, ladder: tuple[int, ...]) -> int:
        """Give records written before ``poll_slot`` existed their fields, and move records whose
        interval is no longer on the cadence ladder (``RELAY_MAX_POLL_INTERVAL_S`` changed) to every
        tick, so the GET path's queries find them all (nothing to do by hand). Idempotent; returns how
        many records it wrote."""
        from google.api_core import exceptions as gexc
        from google.cloud.firestore_v1.base_query import FieldFilter

        fields = {"poll_slot": EVERY_TICK, "watch_scope": "", "watch_part": 0}
        written = 0
        pending: list[DocumentSnapshot[DocumentReference]] = []

        def flush() -> int:
            batch = self._db.batch()
            for doc in pending:
                batch.update(doc.reference, fields, option=self._db.write_option(last_update_time=doc.update_time))
            try:
                batch.commit()
                return len(pending)
            except (gexc.FailedPrecondition, gexc.NotFound):  # one record moved on meanwhile: one by one
                done = 0
                for doc in pending:
                    try:
                        doc.reference.update(fields, option=self._db.write_option(last_update_time=doc.update_time))
                        done += 1
                    except (gexc.FailedPrecondition, gexc.NotFound):
                        pass
                return done

        for doc in self._jobs.where(filter=FieldFilter("terminal", "==", False)).stream():
            data = doc.to_dict() or {}
            slot = data.get("poll_slot")
            if slot == "" or (slot is not None and cadence.interval_of(slot) in ladder):
                continue
            pending.append(doc)
            if len(pending) == 400:
                written += flush()
                pending = []
        if pending:
            written += flush()
        self._meta.document(SCHEMA).set({"version": SCHEMA_VERSION, "migrated_at": now, "ladder": list(ladder)})
        return written
