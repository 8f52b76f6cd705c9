"""``track()`` for code that submits jobs: ``from batch_relay import track`` (and ``untrack``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    from .record.client import FirestoreClient
    from .record.store import JobStore


def _store(settings: Settings | None, db: FirestoreClient | None) -> JobStore:
    from .record.store import JobStore
    from .wiring import cached_firestore

    settings = settings or load_settings()
    return JobStore(db or cached_firestore(settings), settings)


def track(name: str, destination: str | None = None, labels: dict[str, str] | None = None, *,
          settings: Settings | None = None, db: FirestoreClient | None = None) -> dict[str, Any]:
    """Start tracking a job (same semantics as ``batch-relay track``); returns the public record (A4).

    Raises ``shared.errors.UsageError`` for a malformed name, an unknown API or a non-``gs://``
    destination, before anything is written. Tracking a tracked job updates only the options given.
    """
    record, _created = _store(settings, db).track(name, destination=destination, labels=labels)
    return record.public()


def untrack(name: str, *, settings: Settings | None = None, db: FirestoreClient | None = None) -> bool:
    """Stop tracking a job: its record and transitions are removed. Returns whether it was tracked."""
    return _store(settings, db).untrack(name)
