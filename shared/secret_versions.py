"""Secret Manager, for the one thing batch-relay writes there: a new version of a secret — the signing
secret ``batch-relay webhook register --secret`` stores, so that it never passes through a terminal or a
shell command. REST with Application Default Credentials (``auth.endpoint_auth``: real ones only over
https), over an ``httpx.AsyncClient`` the caller builds (``wiring.secret_versions``).

``POST {base}/v1/projects/P/secrets/S:addVersion {"payload": {"data": base64}}`` answers the new version,
``{"name": "projects/NUMBER/secrets/S/versions/N", …}``. It is sent once: a retry after a lost reply could
store the value twice (harmless, but not what was asked); the caller reports a failure instead.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx

from .errors import BadResponseError, UsageError
from .retry import send

# projects/{project id, number or domain:project}/secrets/{secret id}
_SECRET = re.compile(r"^projects/[a-z0-9][a-z0-9.:-]{0,99}/secrets/[A-Za-z0-9_-]{1,255}$")
_VERSION = re.compile(r"^projects/[^/]+/secrets/[^/]+/versions/[0-9]+$")


def check_secret(name: str) -> str:
    """A secret's resource name, ``projects/P/secrets/S`` (not a version, not a bare id)."""
    if not _SECRET.match(name):
        raise UsageError(f"{name[:100]!r} is not a secret: expected projects/PROJECT/secrets/SECRET_ID")
    return name


class SecretVersions:
    """Adds versions to secrets over ``http`` (authenticated by the caller's client)."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")

    async def add(self, secret: str, data: bytes) -> str:
        """Store ``data`` as a new version of ``secret`` (``projects/P/secrets/S``); returns the version's
        name. Errors are those of ``batch_relay.errors`` (403: the caller may not add versions; 404: no
        such secret)."""
        url = f"{self._base}/v1/{check_secret(secret)}:addVersion"
        body = {"payload": {"data": base64.b64encode(data).decode("ascii")}}
        response = await send(self._http, "POST", url, json=body)
        try:
            reply: Any = response.json()
        except ValueError:
            raise BadResponseError("Secret Manager's reply to addVersion is not JSON") from None
        name = reply.get("name") if isinstance(reply, dict) else None
        if not isinstance(name, str) or not _VERSION.match(name):
            raise BadResponseError("Secret Manager's reply to addVersion names no secret version")
        return name
