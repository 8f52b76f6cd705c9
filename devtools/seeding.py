"""Records for the benchmarks: jobs a deployment already knows, written straight into Firestore.

``write_records`` commits them in batches of 500 and then does what a deployment's first tick does
once (``JobStore.migrate``: a scan of the unfinished records, to put records of an earlier version on
the cadence ladder), so that no timed tick pays for that one-off scan.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from batch_relay.record import cadence
from batch_relay.record.model import JobRecord
from batch_relay.record.store import JobStore
from batch_relay.settings import Settings


def write_records(db, settings: Settings, records: Iterable[JobRecord]) -> int:
    """Write ``records`` (replacing any with the same name) and migrate the collection once. Returns how
    many were written."""
    store = JobStore(db, settings)
    batch, pending, written = db.batch(), 0, 0
    for record in records:
        batch.set(store.ref(record.name), record.to_doc())
        pending += 1
        if pending == 500:
            batch.commit()
            written += pending
            batch, pending = db.batch(), 0
    if pending:
        batch.commit()
        written += pending
    store.migrate(dt.datetime.now(dt.UTC), cadence.ladder(settings))
    return written
