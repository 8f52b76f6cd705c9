"""The coordinator of a fanned-out tick (``fanout.py``, ``RELAY_TICK_FANOUT`` > 1): it publishes parts
1..K-1, runs part 0 itself, then waits (a little, within the deadline) for the other parts' heartbeats
and adds up what they reported into the tick's heartbeat and reply.

The wait reads only the heartbeats of published parts that have not reported yet, at growing intervals
(``FIRST_WAIT_S``, doubling up to ``MAX_WAIT_S``): a part is read once when it has reported, and a lost
part costs one read every ``MAX_WAIT_S`` (at 64 parts with one lost, over a 180 s wait: about 100 reads,
where reading every part every 0.5 s cost about 22,700)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
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
FIRST_WAIT_S = 0.25  # before the second read of the missing heartbeats; doubled after each read
MAX_WAIT_S = 5.0  # the longest between two reads


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
    published: list[int] = []
    for part, future in zip(parts[1:], futures, strict=True):
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), 60)
            published.append(part.index)
        except Exception as exc:  # noqa: BLE001 - that part's shards wait for the next tick
            log(_log, logging.ERROR, "tick part not published", part=part.index,
                error=f"{type(exc).__name__}: {exc}"[:300])
    summary = (await poller.tick(part=parts[0])).as_dict()
    own_s = poller.clock() - started
    deadline = started + settings.tick_deadline_s
    until = min(deadline, poller.clock() + max(10.0, 3 * own_s))
    reported = await _wait_for_parts(records, tick, published, until, poller.clock)
    total = fanout.add_up(summary, list(reported.values()))
    total.update(duration_s=round(poller.clock() - started, 3), parts=len(parts), parts_published=len(published),
                 parts_reported=len(reported))
    total["errors"] += len(parts) - 1 - len(published)
    await records.heartbeat(total, dt.datetime.now(dt.UTC), None, tick)
    return total


async def _wait_for_parts(records: AsyncStore, tick: int, parts: list[int], until: float,
                          clock: Callable[[], float]) -> dict[int, dict[str, Any]]:
    """The summaries of ``parts`` that report by ``until`` (on ``clock``): each read asks only for the
    parts still missing, and the reads grow apart (``FIRST_WAIT_S`` doubling to ``MAX_WAIT_S``)."""
    reported: dict[int, dict[str, Any]] = {}
    missing = sorted(parts)
    wait = FIRST_WAIT_S
    while missing:
        reported.update(await records.part_heartbeats(tick, missing))
        missing = [i for i in missing if i not in reported]
        left = until - clock()
        if not missing or left <= 0:
            break
        await asyncio.sleep(min(wait, left))
        wait = min(2 * wait, MAX_WAIT_S)
    return reported
