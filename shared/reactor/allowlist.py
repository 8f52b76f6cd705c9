"""Where the reactor may write and read (contract A2).

- ``RELAY_ALLOWED_BUCKETS``: entries ``bucket`` or ``bucket/prefix``; a destination is allowed when its
  bucket is an entry's and its prefix is the entry's prefix or lies under it (``bucket/runs`` allows
  ``gs://bucket/runs/a``, not ``gs://bucket/runs-old``). ``*`` allows any bucket; unset refuses every copy.
- ``RELAY_SOURCE_BUCKETS``: the buckets Vertex AI outputs may be read from; unset, any.
"""

from __future__ import annotations

from collections.abc import Collection

from ..errors import PermanentError
from ..settings import ANY_BUCKET, Settings, split_gcs_uri


def destination_allowed(allowed: Collection[str] | None, bucket: str, prefix: str) -> bool:
    """Whether ``gs://bucket/prefix`` is covered by the allow-list ``allowed`` (None: nothing is)."""
    if allowed is None:
        return False
    if ANY_BUCKET in allowed:
        return True
    for entry in allowed:
        entry_bucket, _, entry_prefix = entry.partition("/")
        if entry_bucket == bucket and (not entry_prefix or prefix == entry_prefix
                                       or prefix.startswith(entry_prefix + "/")):
            return True
    return False


def check_destination(uri: str, settings: Settings) -> tuple[str, str]:
    """(bucket, prefix) of a destination the copy may write to; ``PermanentError`` otherwise:
    ``bad_destination`` (not a usable ``gs://`` URI) or ``not_allowed`` (outside RELAY_ALLOWED_BUCKETS,
    or that setting unset)."""
    try:
        bucket, prefix = split_gcs_uri(uri)
    except ValueError as exc:
        raise PermanentError(f"bad destination: {exc}", kind="bad_destination") from None
    if settings.allowed_buckets is None:
        raise PermanentError("RELAY_ALLOWED_BUCKETS is not set, so every copy is refused: list the buckets (or "
                             "bucket/prefix) copies may go to, or '*' for any bucket", kind="not_allowed")
    if not destination_allowed(settings.allowed_buckets, bucket, prefix):
        raise PermanentError(f"destination {uri[:300]} is not in RELAY_ALLOWED_BUCKETS", kind="not_allowed")
    return bucket, prefix


def check_source(bucket: str, settings: Settings) -> None:
    """``PermanentError`` (``source_not_allowed``) when Vertex outputs may not be read from ``bucket``."""
    if settings.source_buckets is not None and bucket not in settings.source_buckets:
        raise PermanentError(f"the API puts this job's outputs in bucket {bucket!r}, which is not in "
                             "RELAY_SOURCE_BUCKETS: nothing is copied", kind="source_not_allowed")
