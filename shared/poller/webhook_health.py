"""The health of the project's static Gemini API webhooks, looked at from the tick at most once an hour.

The Gemini API disables a webhook after a day of failed deliveries (``state``:
``disabled_due_to_failed_deliveries``) and tells nobody; the relay then silently falls back to polling.
So the tick's global work (the coordinator only, under fan-out) calls ``WebhookHealth.check``: it lists
the webhooks (``WebhookAdmin.list``: one page or a few) and logs a WARNING ``webhook disabled``
(``webhook``, ``state``, ``uri``) for each one subscribed to batch events that is not ``enabled`` — the
line the log-based metric ``webhooks_disabled`` and its alert count (infra/monitoring.tf).

Cheap by construction: nothing at all without the Gemini API key; otherwise each instance remembers when
the next check is due (no Firestore read on other ticks), and the meta document ``webhook-check``
(``record.heartbeats``) is claimed in a transaction before the list, so of many instances one checks
per hour. The check never fails the tick: any error is one WARNING ``webhook check failed``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..log import get_logger, log
from ..record.async_store import AsyncStore
from ..settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from ..batchapi.webhook_admin import WebhookAdmin
    from ..record.store import JobStore

__all__ = ["CHECK_EVERY", "DISABLED", "WebhookHealth", "no_check"]

CHECK_EVERY = dt.timedelta(hours=1)
RETRY_AFTER = dt.timedelta(minutes=5)  # when even the claim failed (Firestore): not again on every tick
TIMEOUT_S = 30.0
DISABLED = "webhook disabled"
_log = get_logger("poller")
# Per instance: when each collection's next check is due (a warm instance runs many ticks).
_next_check: dict[tuple[str, str, str], dt.datetime] = {}


async def no_check(now: dt.datetime) -> None:
    """The check of a Poller built without one (tests, the webhook's nudge)."""


def forget() -> None:
    """Drop what this instance remembers of past checks (as a fresh instance would start)."""
    _next_check.clear()


class WebhookHealth:
    """``check(now)`` at the end of a tick's global work; ``admin`` builds the webhook client (over the
    tick's HTTP pool) only when a check is due."""

    def __init__(self, settings: Settings, store: JobStore, admin: Callable[[], WebhookAdmin]) -> None:
        self._settings = settings
        self._store = AsyncStore(store)
        self._admin = admin
        self._where = (settings.project, settings.database, settings.meta_collection)

    async def check(self, now: dt.datetime) -> list[dict[str, Any]] | None:
        """The webhooks found not enabled (each logged), or None when no check was due or it failed.
        Never raises."""
        if not self._settings.gemini_api_key:
            return None
        due = _next_check.get(self._where)
        if due is not None and now < due:
            return None
        try:
            claimed, _next_check[self._where] = await self._store.run(self._store.sync.claim_webhook_check, now,
                                                                       CHECK_EVERY)
        except Exception as exc:  # noqa: BLE001 - the tick goes on; try again in a few minutes
            _next_check[self._where] = now + RETRY_AFTER
            log(_log, logging.WARNING, "webhook check failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return None
        if not claimed:  # another instance checked within the hour
            return None
        try:
            hooks = await asyncio.wait_for(self._admin().list(), TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - e.g. a key without access to webhooks: said once an hour
            log(_log, logging.WARNING, "webhook check failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return None
        return _report(hooks)


def _report(hooks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ours = [h for h in hooks if any(str(e).startswith("batch.") for e in h.get("subscribed_events") or [])]
    off = [h for h in ours if h.get("state") not in (None, "enabled")]
    for hook in off:
        log(_log, logging.WARNING, DISABLED, webhook=str(hook.get("id") or hook.get("name"))[:200],
            state=str(hook.get("state"))[:100], uri=str(hook.get("uri"))[:500])
    log(_log, logging.INFO, "webhooks checked", webhooks=len(ours), disabled=len(off))
    return off
