"""``on_gemini_webhook`` (contract A1, A9): a delivery is a nudge, never a state.

In order: 405 for anything but POST; 413 for a body over 256 KiB (before anything is hashed); 401 for a
delivery whose signature does not verify (missing headers, a wrong or tampered signature, a timestamp
more than 300 s off, no secret configured); 400 for a verified body that is not a JSON object. Every
other verified delivery is answered 2xx: a ``batch.*`` one after its batch was fetched and applied as a
tick's poll of it (commit, outbox, publish) — or after the fetch failed, since a 5xx would have the
Gemini API retry for a day and then disable the webhook, while the next tick catches up anyway — and
anything else at once. The payload's type never sets a state: only the API's reply does. Repeated
deliveries add no event (the same batch fetched again changes nothing).
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
           nudge: Callable[[str], str], jwks: Any = None, now: Callable[[], float] = time.time) -> Reply:
    """Answer one delivery. ``nudge(name)`` fetches and applies a batch, returning what happened."""
    if method != "POST":
        return NOT_POST
    body = read()
    if body is None:
        log(_log, logging.WARNING, "webhook delivery refused", result="too_large")
        return Reply(413, {"error": f"body over {MAX_BODY} bytes"})
    try:
        verified: Verified = verify(headers, body, secrets=secrets, now=now,
                                    ed25519_keys=jwks.keys if jwks is not None else None,
                                    refreshed_keys=jwks.refreshed if jwks is not None else None)
    except Refused as exc:
        log(_log, logging.WARNING, "webhook delivery refused", result="unauthorized", reason=str(exc),
            webhook_id=str(headers.get("webhook-id") or "")[:100])
        return Reply(401, {"error": "signature not verified"})
    fields: dict[str, Any] = {"webhook_id": verified.webhook_id[:100], "scheme": verified.scheme}
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
    log(_log, logging.INFO, "webhook delivery", result=result, **fields)
    return Reply(200, {"result": result, "job": name})
