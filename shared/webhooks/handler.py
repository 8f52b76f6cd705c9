"""``on_gemini_webhook`` (contract A1, A9): a delivery is a nudge, never a state.

In order: 405 for anything but POST; 413 for a body over 256 KiB (before anything is hashed); 401 for a
delivery whose signature does not verify (missing or malformed headers, a wrong or tampered signature, a
timestamp more than 300 s off, no secret configured) — and for anything else that goes wrong before the
signature is verified: a stranger never gets a 5xx; 400 for a verified body that is not a JSON object.
Every other verified delivery is answered 2xx: a ``batch.*`` one (``batch.succeeded``, ``batch.completed``,
``batch.failed``, ``batch.expired``, …) after its batch was fetched and applied as a tick's poll of it
(commit, outbox, publish) — or after the fetch failed, since a 5xx would have the Gemini API retry for a
day and then disable the webhook, while the next tick catches up anyway — and anything else at once. The
payload's type never sets a state: only the API's reply does. A ``webhook-id`` this instance handled
lately is answered 200 at once (``repeated``) without another fetch; elsewhere a repeated delivery adds no
event either (the same batch fetched again changes nothing).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from ..batchapi.names import JobName
from ..errors import UsageError
from ..log import get_logger, log
from .recent import RecentIds
from .verify import Refused, Verified, verify

_log = get_logger("webhook")
MAX_BODY = 256 * 1024
BATCH_PREFIX = "batch."


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]


NOT_POST = Reply(405, {"error": "method not allowed: use POST"})


def read_body(request: Any) -> bytes | None:
    """The raw body, or None when it is over ``MAX_BODY`` (read no further than that)."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        return None
    data = request.stream.read(MAX_BODY + 1)
    return None if len(data) > MAX_BODY else data


def batch_name(data: Any) -> str | None:
    """``data.id`` as a batch name: ``batches/{id}`` or ``{id}`` (both are seen), else None."""
    ident = data.get("id") if isinstance(data, dict) else None
    if not isinstance(ident, str):
        return None
    try:
        return JobName.parse(ident if ident.startswith("batches/") else f"batches/{ident}").name
    except UsageError:
        return None


def handle(method: str, headers: dict[str, str], read: Callable[[], bytes | None], *, secrets: tuple[str, ...],
           nudge: Callable[[str], str], jwks: Any = None, recent: RecentIds | None = None,
           now: Callable[[], float] = time.time) -> Reply:
    """Answer one delivery. ``nudge(name)`` fetches and applies a batch, returning what happened; ``recent``
    remembers the webhook ids handled lately (a repeat is answered without a fetch)."""
    if method != "POST":
        return NOT_POST
    lower = {str(k).lower(): v for k, v in headers.items()}  # HTTP servers title-case header names
    claimed_id = str(lower.get("webhook-id") or "")[:100]
    try:
        body = read()
    except Exception as exc:  # noqa: BLE001 - a body that cannot be read is the sender's problem
        log(_log, logging.WARNING, "webhook delivery refused", result="unreadable", webhook_id=claimed_id,
            error=f"{type(exc).__name__}"[:100])
        return Reply(400, {"error": "body could not be read"})
    if body is None:
        log(_log, logging.WARNING, "webhook delivery refused", result="too_large", webhook_id=claimed_id)
        return Reply(413, {"error": f"body over {MAX_BODY} bytes"})
    try:
        verified: Verified = verify(lower, body, secrets=secrets, now=now,
                                    ed25519_keys=jwks.keys if jwks is not None else None,
                                    refreshed_keys=jwks.refreshed if jwks is not None else None)
    except Exception as exc:  # noqa: BLE001 - nothing unverified gets more than a 401, whatever it did
        reason = str(exc) if isinstance(exc, Refused) else f"verification failed: {type(exc).__name__}"
        log(_log, logging.WARNING, "webhook delivery refused", result="unauthorized", reason=reason[:200],
            webhook_id=claimed_id)
        return Reply(401, {"error": "signature not verified"})
    fields: dict[str, Any] = {"webhook_id": verified.webhook_id[:100], "scheme": verified.scheme}
    if recent is not None and recent.seen(verified.webhook_id):
        log(_log, logging.INFO, "webhook delivery", result="repeated", **fields)
        return Reply(200, {"result": "repeated"})
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        log(_log, logging.WARNING, "webhook delivery", result="bad_body", **fields)
        return Reply(400, {"error": "body is not a JSON object"})
    kind = payload.get("type")
    fields["type"] = kind[:100] if isinstance(kind, str) else None
    if not isinstance(kind, str) or not kind.startswith(BATCH_PREFIX):
        log(_log, logging.INFO, "webhook delivery", result="ignored", **fields)
        return Reply(202, {"result": "ignored"})
    name = batch_name(payload.get("data"))
    if name is None:
        log(_log, logging.WARNING, "webhook delivery", result="ignored", reason="no batch id", **fields)
        return Reply(202, {"result": "ignored"})
    fields["job"] = name
    try:
        result = nudge(name)
    except Exception as exc:  # noqa: BLE001 - verified: 2xx whatever happened; the next tick catches up
        log(_log, logging.ERROR, "webhook delivery", result="error", error=f"{type(exc).__name__}: {exc}"[:300],
            **fields)
        return Reply(202, {"result": "error"})
    if recent is not None:
        recent.add(verified.webhook_id)
    log(_log, logging.INFO, "webhook delivery", result=result, **fields)
    return Reply(200, {"result": result, "job": name})
