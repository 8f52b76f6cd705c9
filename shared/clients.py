"""Builders of the real Google clients. Only entry points and the CLI call these; everything else
receives its clients through constructors. Nothing here runs at import time."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud import firestore, pubsub_v1

def make_firestore(settings: Settings) -> firestore.Client:
    from google.cloud import firestore

    return firestore.Client(project=settings.project, database=settings.database)


def make_publisher(settings: Settings) -> pubsub_v1.PublisherClient:
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
    )


@functools.cache
def cached_firestore(settings: Settings) -> firestore.Client:
    """One Firestore client per warm instance (sync clients are safe to share)."""
    return make_firestore(settings)


@functools.cache
def cached_publisher(settings: Settings) -> pubsub_v1.PublisherClient:
    return make_publisher(settings)
