"""Adaptive cadence of the GET path: how often a tick fetches an unchanged job.

A record's ``poll_slot`` is ``"{interval}:{phase}"``, in ticks: it is due on tick ``n`` when
``n % interval == phase`` (ticks are numbered from the epoch, ``n = floor(now / RELAY_TICK_INTERVAL_S)``,
so every poller instance and every part of a fan-out agrees on them). A job just tracked, just changed
(state or counts) or nudged by a webhook is due every tick (``"1:0"``); each poll that finds it
unchanged moves it one step up the ladder — 1, 4, 16, … ticks, each step at least four times the last,
capped at ``RELAY_MAX_POLL_INTERVAL_S / RELAY_TICK_INTERVAL_S`` — and a step up is the only write such
a poll makes. A job on the cap costs one read and one API call per interval, and nothing else.

The first poll on a new step comes one tick short of its interval (a step taken on tick ``n`` is never
due on ``n`` again, where this tick's query of the new slot would read the record a second time), and
every poll after it one interval apart: a state change is seen within one interval. A change costs one
extra poll (the tick after it) and the climb back; with the default ladder (1, 5) that is one poll and
one read per change. ``""`` is never due (watched, finished).

The tick's query is one equality per step of the ladder (``poll_slot == "{i}:{n % i}"``), every tick
first, and a shard range: the same composite index ``(poll_slot, shard)`` serves all of them.
"""

from __future__ import annotations

import datetime as dt

from ..settings import Settings

EVERY_TICK = "1:0"
GROWTH = 4


def ladder(settings: Settings) -> tuple[int, ...]:
    """The intervals (in ticks) a job climbs: 1, 4, 16, … and the cap, each step at least ``GROWTH``
    times the one before (1 alone: every tick, as before). With the default 300 s over one-minute ticks
    that is 1 then 5; with 3600 s, 1, 4, 60."""
    cap = max(1, int(settings.max_poll_interval_s // settings.tick_interval_s))
    steps, interval = [1], GROWTH
    while interval * GROWTH <= cap:
        steps.append(interval)
        interval *= GROWTH
    if cap > 1:
        steps.append(cap)
    return tuple(steps)


def tick_number(now: dt.datetime, settings: Settings) -> int:
    return int(now.timestamp() // settings.tick_interval_s)


def due_slots(tick: int, settings: Settings) -> list[str]:
    """The ``poll_slot`` values due on tick ``tick``, every-tick first: a job that changes during the
    tick moves to ``"1:0"``, whose query has then already run, so it is not read twice (each document
    a query returns is a billed read)."""
    return [f"{interval}:{tick % interval}" for interval in ladder(settings)]


def interval_of(slot: str) -> int | None:
    head, sep, _ = slot.partition(":")
    return int(head) if sep and head.isdigit() else None


def step_up(slot: str, tick: int, settings: Settings) -> str:
    """The slot after a poll on tick ``tick`` that found the job unchanged: one step up, or the same."""
    steps = ladder(settings)
    current = interval_of(slot)
    if current is None:
        return slot
    higher = [interval for interval in steps if interval > current]
    if not higher:
        return slot if current in steps else _slot(steps[-1], tick)
    return _slot(higher[0], tick)


def _slot(interval: int, tick: int) -> str:
    """The slot of ``interval`` whose next due tick after ``tick`` is ``tick + interval - 1``: never
    ``tick`` itself, so a job stepping up is not read a second time by this tick's query of its new slot."""
    return f"{interval}:{(tick - 1) % interval}"
