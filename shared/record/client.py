"""Building the Firestore client: the one place that names the client library's entry point (the store
modules of this package are the only ones that use the client it builds)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud.firestore import Client

    FirestoreClient: TypeAlias = Client  # what the store modules are built on

def make_client(project: str, database: str) -> FirestoreClient:
    """A Firestore client of ``database`` in ``project`` (the emulator when ``FIRESTORE_EMULATOR_HOST``
    is set: the client library reads it)."""
    from google.cloud import firestore

    return firestore.Client(project=project, database=database)
