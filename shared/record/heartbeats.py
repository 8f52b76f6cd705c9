"""What the meta collection stores of ticks: the heartbeat (``heartbeat``: the last tick's summary) and
the parts of a fanned-out tick (``heartbeat-part-{i}``), and the bounded read the CLI probes with."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from .base import StoreBase

HEARTBEAT = "heartbeat"


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

    def read_heartbeat(self) -> dict[str, Any] | None:
        doc = self._meta.document(HEARTBEAT).get()
        return doc.to_dict() if doc.exists else None

    def probe(self, deadline_s: float = 10.0) -> None:
        """One bounded read (of the heartbeat), so that an unreachable Firestore shows within seconds
        rather than after the client library's long default retries. Raises what the read raised."""
        from google.api_core.retry import Retry

        self._meta.document(HEARTBEAT).get(retry=Retry(initial=0.25, maximum=2.0, timeout=deadline_s),
                                           timeout=deadline_s)
