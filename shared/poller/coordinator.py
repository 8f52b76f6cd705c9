"""The coordinator of a fanned-out tick (``fanout.py``, ``RELAY_TICK_FANOUT`` > 1): it publishes parts
1..K-1, runs part 0 itself, then waits (a little, within the deadline) for the other parts' heartbeats
and adds up what they reported into the tick's heartbeat and reply."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from ..log import get_logger, log
from ..record import cadence
from ..record.async_store import AsyncStore
from ..record.store import JobStore
from ..settings import Settings
from . import fanout
from .tick import Poller

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud.pubsub_v1 import PublisherClient

_log = get_logger("fanout")


async def coordinate(settings: Settings, poller: Poller, publisher_client: PublisherClient,
                     store: JobStore) -> dict[str, Any]:
    """Run one fanned-out tick as its coordinator; returns the summed summary (with ``parts``,
    ``parts_published`` and ``parts_reported``)."""
    records = AsyncStore(store)
    started = poller.clock()
    tick = cadence.tick_number(poller.now(), settings)
    parts = fanout.plan(settings.tick_fanout, tick)
    topic = f"projects/{settings.project}/topics/{settings.tick_parts_topic}"
    futures = [publisher_client.publish(topic, p.to_message(), part=str(p.index), tick=str(tick)) for p in parts[1:]]
    published = 0
    for part, future in zip(parts[1:], futures, strict=True):
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), 60)
            published += 1
        except Exception as exc:  # noqa: BLE001 - that part's shards wait for the next tick
            log(_log, logging.ERROR, "tick part not published", part=part.index,
                error=f"{type(exc).__name__}: {exc}"[:300])
    summary = (await poller.tick(part=parts[0])).as_dict()
    own_s = poller.clock() - started
    deadline = started + settings.tick_deadline_s
    until = min(deadline, poller.clock() + max(10.0, 3 * own_s))
    reported: dict[int, dict[str, Any]] = {}
    while len(reported) < len(parts) - 1 and poller.clock() < until:
        reported = await records.part_heartbeats(tick, range(1, len(parts)))
        if len(reported) < len(parts) - 1:
            await asyncio.sleep(0.5)
    total = fanout.add_up(summary, list(reported.values()))
    total.update(duration_s=round(poller.clock() - started, 3), parts=len(parts), parts_published=published,
                 parts_reported=len(reported))
    total["errors"] += len(parts) - 1 - published
    await records.heartbeat(total, dt.datetime.now(dt.UTC), None, tick)
    return total
