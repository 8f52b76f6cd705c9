"""The Ed25519 keys of dynamic webhooks (``v1a``), fetched from ``RELAY_GEMINI_JWKS_URL`` and cached.

Keys are kept for ``ttl_s`` (an hour); a signature none of them verifies may be signed with a new key,
so the document is fetched again then — at most once per ``refresh_s`` (five minutes), so forged
deliveries cannot make the function hammer the key server. A fetch that fails keeps the keys it had (until
the next fetch); a fetch that succeeds replaces them, even with none (a key set emptied on purpose is not
outlived by the keys it revoked).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from ..log import get_logger, log
from .verify import ed25519_keys_from_jwks

if TYPE_CHECKING:  # pragma: no cover
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_log = get_logger("jwks")
MAX_BYTES = 64 * 1024  # a JWKS of a few keys is about a kilobyte; a larger reply is refused unread


def read_jwks(http: httpx.Client, url: str, limit: int = MAX_BYTES) -> Any:
    """GET the JWKS document at ``url``, reading at most ``limit`` bytes of it (``ValueError`` past that)."""
    with http.stream("GET", url) as response:
        response.raise_for_status()
        length = response.headers.get("content-length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
            raise ValueError(f"JWKS document of {length} bytes is over {limit}")
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise ValueError(f"JWKS document over {limit} bytes")
    return json.loads(body)


class JwksKeys:
    def __init__(self, url: str, fetch: Callable[[str], object], *, ttl_s: float = 3600.0, refresh_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._url = url
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._refresh_s = refresh_s
        self._clock = clock
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def keys(self) -> list[Ed25519PublicKey]:
        """The cached keys, fetched first when there are none yet or they are older than ``ttl_s``."""
        with self._lock:
            if self._fetched_at is None or self._clock() - self._fetched_at >= self._ttl_s:
                self._load()
            return list(self._keys)

    def refreshed(self) -> list[Ed25519PublicKey]:
        """The keys fetched again (when the last fetch is at least ``refresh_s`` old), for a signature the
        cached ones did not verify."""
        with self._lock:
            if self._fetched_at is None or self._clock() - self._fetched_at >= self._refresh_s:
                self._load()
            return list(self._keys)

    def _load(self) -> None:
        self._fetched_at = self._clock()
        try:
            self._keys = ed25519_keys_from_jwks(self._fetch(self._url))
        except Exception as exc:  # noqa: BLE001 - keep the keys we had; the delivery is refused if none verify
            log(_log, logging.WARNING, "JWKS fetch failed", url=self._url, error=f"{type(exc).__name__}: {exc}"[:200])
