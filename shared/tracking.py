"""``track()`` for code that submits jobs: ``from shared import track``."""

from __future__ import annotations

from typing import Any

from .settings import Settings, load_settings


def track(name: str, destination: str | None = None, labels: dict[str, str] | None = None, *,
          settings: Settings | None = None, db=None) -> dict[str, Any]:
    """Start tracking a job (same semantics as ``batch-relay track``); returns the record.

    Raises ``shared.errors.UsageError`` for a malformed name, an unknown API or a non-``gs://``
    destination, before anything is written. Tracking a tracked job updates only the options given.
    """
    from .clients import cached_firestore
    from .store import JobStore

    settings = settings or load_settings()
    store = JobStore(db or cached_firestore(settings), settings)
    record, _created = store.track(name, destination=destination, labels=labels)
    return record


def untrack(name: str, *, settings: Settings | None = None, db=None) -> bool:
    from .clients import cached_firestore
    from .store import JobStore

    settings = settings or load_settings()
    return JobStore(db or cached_firestore(settings), settings).untrack(name)
