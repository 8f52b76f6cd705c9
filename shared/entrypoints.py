"""What the Cloud Functions do, behind the thin decorated functions of ``functions/main.py``.

Settings, credentials and sync Google clients are built once per instance, on first use (never at
import); async clients are built inside each tick.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from . import clients, runtime
from .errors import SettingsError
from .log import add_secret, configure, get_logger, log
from .settings import Settings, load_settings

_log = get_logger("entrypoints")


def _settings() -> Settings:
    settings = load_settings()
    add_secret(settings.gemini_api_key)
    return settings


def handle_poll(request) -> tuple[str, int, dict[str, str]]:
    """HTTP handler of ``poll_jobs``: POST runs one tick and answers the A1 summary."""
    configure()
    headers = {"Content-Type": "application/json"}
    if request.method != "POST":
        headers["Allow"] = "POST"
        return json.dumps({"error": "method not allowed: use POST"}), 405, headers
    try:
        settings = _settings()
    except SettingsError as exc:
        log(_log, logging.CRITICAL, "bad settings", error=str(exc))
        return json.dumps({"error": str(exc)}), 500, headers
    try:
        summary = runtime.poll_once(settings, clients.cached_firestore(settings),
                                    clients.cached_publisher(settings))
    except Exception as exc:  # noqa: BLE001 - the tick could not run at all: 500, and say why
        log(_log, logging.ERROR, "tick failed", error=f"{type(exc).__name__}: {exc}"[:500])
        return json.dumps({"error": f"tick failed: {type(exc).__name__}"}), 500, headers
    return json.dumps(summary), 200, headers


def handle_event(cloud_event: Any) -> None:
    """CloudEvent handler of ``on_job_event``: raises only for what Pub/Sub should redeliver."""
    configure()
    from .reactor import react_to_cloud_event

    settings = _settings()
    react_to_cloud_event(cloud_event, settings, clients.cached_firestore(settings),
                         clients.cached_publisher(settings))
