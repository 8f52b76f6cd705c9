"""Resubmitting a job's failed requests (contract A7): ``batch-relay resubmit NAME [--again] [--dry-run]`` and
``from batch_relay import resubmit``. A new batch from the job's ``failed.jsonl``, on the same model (Gemini
API: a Files API upload and ``batchGenerateContent``; Vertex AI: ``batchPredictionJobs.create`` reading the
file where it lies), tracked with ``parent``; the job keeps ``resubmitted_as``, and a second resubmit returns
that batch unless ``again``. ``plan``: what is sent and where it goes; ``runner``: the protocol that sends a
create at most once."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    from ..record.client import FirestoreClient


def resubmit(name: str, *, again: bool = False, dry_run: bool = False, settings: Settings | None = None,
             db: FirestoreClient | None = None) -> dict[str, Any]:
    """A new batch from ``name``'s failed requests (same semantics as ``batch-relay resubmit``); returns
    ``{"job", "status", "batch", "n", "input", "destination", "record"}`` — ``status``: ``created``,
    ``existing`` (made before: by an earlier call, or by one that was interrupted), ``nothing`` (no failed
    request) or ``dry_run`` (then also ``requests``, ``lookup`` and ``track``: what would be sent, how the
    batch would be found again, how it would be tracked; nothing is sent or written).

    Raises ``batch_relay.errors.UsageError`` (a ``ValueError``) for a job that is not tracked or has no
    ``failed.jsonl`` to read yet, before anything is written; ``batch_relay.errors.TransientError`` when
    another resubmit of the job is under way, or an API could not be reached (running it again is safe)."""
    from .. import wiring

    settings = settings or load_settings()

    async def run() -> dict[str, Any]:
        async with wiring.resubmitter(settings, db or wiring.cached_firestore(settings)) as resubmitter:
            return await resubmitter.resubmit(name, again=again, dry_run=dry_run)

    return asyncio.run(run())
