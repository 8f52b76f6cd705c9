"""What the Cloud Functions do, behind the thin decorated functions of ``functions/main.py``.

Settings, credentials and sync Google clients are built once per instance, on first use (never at
import); async clients are built inside each tick (``batch_relay.wiring``).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from . import wiring
from .errors import SettingsError
from .log import configure, get_logger, log
from .poller import fanout
from .settings import load_settings

if TYPE_CHECKING:  # pragma: no cover
    from flask import Request  # what functions-framework hands an HTTP function

_log = get_logger("entrypoints")
_JSON = {"Content-Type": "application/json"}


def handle_poll(request: Request) -> tuple[str, int, dict[str, str]]:
    """HTTP handler of ``poll_jobs``: POST runs one tick and answers the A1 summary."""
    configure()
    headers = dict(_JSON)
    if request.method != "POST":
        headers["Allow"] = "POST"
        return json.dumps({"error": "method not allowed: use POST"}), 405, headers
    try:
        settings = load_settings()
    except SettingsError as exc:
        log(_log, logging.CRITICAL, "bad settings", error=str(exc))
        return json.dumps({"error": str(exc)}), 500, headers
    try:
        part = fanout.parse_body(_json_body(request))
    except ValueError as exc:
        return json.dumps({"error": str(exc)}), 400, headers
    try:
        summary = wiring.poll_once(settings, wiring.cached_firestore(settings), wiring.cached_publisher(settings),
                                   part=part)
    except Exception as exc:  # noqa: BLE001 - the tick could not run at all: 500, and say why
        log(_log, logging.ERROR, "tick failed", error=f"{type(exc).__name__}: {exc}"[:500])
        return json.dumps({"error": f"tick failed: {type(exc).__name__}"}), 500, headers
    return json.dumps(summary), 200, headers


def handle_webhook(request: Request) -> tuple[str, int, dict[str, str]]:
    """HTTP handler of ``on_gemini_webhook`` (A9): verify, then nudge; see ``batch_relay.webhooks.handler``."""
    from .webhooks import handler

    configure()
    if request.method != "POST":  # 405 first, as poll_jobs does, whatever the settings
        return json.dumps(handler.NOT_POST.body), handler.NOT_POST.status, {**_JSON, "Allow": "POST"}
    try:
        settings = load_settings()
    except SettingsError as exc:
        log(_log, logging.CRITICAL, "bad settings", error=str(exc))
        return json.dumps({"error": "misconfigured"}), 500, dict(_JSON)

    def nudge(name: str) -> str:
        return wiring.nudge(settings, wiring.cached_firestore(settings), wiring.cached_publisher(settings), name)

    reply = handler.handle(request.method, dict(request.headers), lambda: handler.read_body(request),
                           secrets=settings.gemini_webhook_secrets, nudge=nudge, recent=wiring.recent_webhook_ids(),
                           jwks=wiring.jwks_keys(settings.gemini_jwks_url) if settings.gemini_jwks_url else None)
    return json.dumps(reply.body), reply.status, dict(_JSON)


def _json_body(request: Request) -> Any:
    """The raw body as JSON, whatever its content type claims (a Pub/Sub push without wrapper may say
    ``application/x-www-form-urlencoded``, which would otherwise be parsed as a form and lost)."""
    raw = request.get_data(cache=True, parse_form_data=False)
    if not raw or not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ValueError("body must be JSON") from None


def handle_event(cloud_event: Any) -> None:
    """CloudEvent handler of ``on_job_event``: raises only for what Pub/Sub should redeliver."""
    configure()
    settings = load_settings()
    wiring.react_to_cloud_event(cloud_event, settings, wiring.cached_firestore(settings),
                                wiring.cached_publisher(settings))
