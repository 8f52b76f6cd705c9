"""What the meta collection stores of ticks: the heartbeat (``heartbeat``: the last tick's summary), the
parts of a fanned-out tick (``heartbeat-part-{i}``), when the webhooks' health was last checked
(``webhook-check``), and the bounded read the CLI probes with."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .base import StoreBase

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud.firestore_v1.transaction import Transaction

HEARTBEAT = "heartbeat"
WEBHOOK_CHECK = "webhook-check"


class Heartbeats(StoreBase):
    def heartbeat(self, summary: dict[str, Any], now: dt.datetime, part: int | None = None,
                  tick: int | None = None) -> None:
        """The tick's one write: ``heartbeat``, or ``heartbeat-part-{i}`` for a part of a fan-out."""
        doc = HEARTBEAT if part is None else f"{HEARTBEAT}-part-{part}"
        self._meta.document(doc).set({"last_tick": now, "summary": summary, "tick": tick, "part": part})

    def part_heartbeats(self, tick: int, parts: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The summaries parts ``parts`` of tick ``tick`` wrote (parts not done yet are missing): one
        document read per part asked for."""
        refs = [self._meta.document(f"{HEARTBEAT}-part-{i}") for i in parts]
        out = {}
        for doc in self._db.get_all(refs):
            data = doc.to_dict() if doc.exists else None
            if data and data.get("tick") == tick and isinstance(data.get("part"), int):
                out[data["part"]] = data.get("summary") or {}
        return out

    def claim_webhook_check(self, now: dt.datetime, every: dt.timedelta) -> tuple[bool, dt.datetime]:
        """Whether the caller checks the webhooks now — none was checked within ``every`` — and when the
        next check is due. The claim is written in a transaction before the check, so of many instances
        one checks, and a check that fails is not retried before ``every`` is up either."""
        from google.cloud import firestore

        ref = self._meta.document(WEBHOOK_CHECK)

        @firestore.transactional
        def run(txn: Transaction) -> tuple[bool, dt.datetime]:
            doc = ref.get(transaction=txn)
            last = (doc.to_dict() or {}).get("checked_at") if doc.exists else None
            if isinstance(last, dt.datetime) and last <= now < last + every:
                return False, last + every
            txn.set(ref, {"checked_at": now})
            return True, now + every

        claimed: tuple[bool, dt.datetime] = run(self._db.transaction())
        return claimed

    def read_heartbeat(self) -> dict[str, Any] | None:
        doc = self._meta.document(HEARTBEAT).get()
        return doc.to_dict() if doc.exists else None

    def probe(self, deadline_s: float = 10.0) -> None:
        """One bounded read (of the heartbeat), so that an unreachable Firestore shows within seconds
        rather than after the client library's long default retries. Raises what the read raised."""
        from google.api_core.retry import Retry

        self._meta.document(HEARTBEAT).get(retry=Retry(initial=0.25, maximum=2.0, timeout=deadline_s),
                                           timeout=deadline_s)
