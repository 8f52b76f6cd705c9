"""The one Firestore adapter (contract A4): ``JobStore``, made of small parts named for what they store,
all on one base (``base.py``: the client, the collections, the transaction and the guarded commit):

- ``jobs.py``: job records and their transitions — tracking, reads and queries, what a poll writes;
- ``publishing.py``: the publish lease and the outbox's events;
- ``copies.py``: the copy of a job's outputs and its lease;
- ``scopes.py``: watched scopes, their digests, and the tombstones of untracked jobs;
- ``heartbeats.py``: the tick's heartbeat and the parts of a fan-out;
- ``migration.py``: the one-time migration of records of an earlier version;
- ``listeners.py``: listening to one record or to all of them (``wait``, ``list --follow``);
- ``lineage.py``: resubmits — a resubmit's claim, a lineage's retry counter, ``parent`` and ``resubmitted_as``.

Every decision is made by the pure functions of ``machine.py``; the store reads records, hands them over,
and commits the ``Outcome`` they return. ``AsyncStore`` (``async_store.py``) runs it from async code.
"""

from __future__ import annotations

from .base import Snapshot
from .copies import Copies
from .heartbeats import Heartbeats
from .jobs import JobRecords, check_track_options
from .lineage import Lineage
from .listeners import Listeners
from .migration import Migration
from .publishing import Publishing
from .scopes import Scopes

__all__ = ["JobStore", "Snapshot", "check_track_options"]


class JobStore(JobRecords, Publishing, Copies, Scopes, Heartbeats, Migration, Listeners, Lineage):
    """Job records, their transitions and the meta collection, over one Firestore client."""
