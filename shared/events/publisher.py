"""Publishes events to Pub/Sub with the job name as ordering key, awaiting every future.

With message ordering on, a failed publish pauses its key inside the client: every later publish for
that job fails until ``resume_publish``. ``publish_in_order`` resumes the key after a failure, so a warm
instance is never stuck, and reports how many of the job's events went out (a prefix, in order).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..log import get_logger, log
from .event import Event

if TYPE_CHECKING:  # pragma: no cover
    import concurrent.futures

    from google.cloud import pubsub_v1

_log = get_logger("publisher")


class EventPublisher:
    def __init__(self, client: pubsub_v1.PublisherClient, project: str, topic: str, *,
                 timeout_s: float = 60.0) -> None:
        self._client = client
        self.topic_path = f"projects/{project}/topics/{topic}"
        self._timeout = timeout_s

    def _submit(self, event: Event) -> concurrent.futures.Future[str]:
        future: concurrent.futures.Future[str] = self._client.publish(
            self.topic_path, event.data.encode("utf-8"), ordering_key=event.job, **event.attributes)
        return future

    async def publish_in_order(self, events: list[Event]) -> int:
        """Publish one job's events in order; return how many (from the first) were accepted."""
        if not events:
            return 0
        futures = []
        try:
            for event in events:
                futures.append(self._submit(event))
        except Exception as exc:  # noqa: BLE001 - e.g. the key is paused by an earlier failure
            log(_log, logging.ERROR, "publish failed", job=events[0].job, event_id=events[len(futures)].id,
                error=f"{type(exc).__name__}: {exc}"[:300])
        ok = 0
        failure: BaseException | None = None
        for event, future in zip(events, futures, strict=False):
            try:
                await asyncio.wait_for(asyncio.wrap_future(future), self._timeout)
            except Exception as exc:  # noqa: BLE001 - any failure stops the job's sequence here
                failure = failure or exc
                log(_log, logging.ERROR, "publish failed", job=event.job, event_id=event.id,
                    error=f"{type(exc).__name__}: {exc}"[:300])
                continue
            if failure is None:
                ok += 1
        if ok < len(events):
            self._client.resume_publish(self.topic_path, events[0].job)
        return ok
