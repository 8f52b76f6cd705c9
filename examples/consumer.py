"""Subscribe to batch-relay's events and print them: a consumer to copy from.

    python examples/consumer.py SUBSCRIPTION [--json] [--create-on TOPIC [--filter EXPR]] [--timeout S]

SUBSCRIPTION is ``projects/P/subscriptions/S``, or just ``S`` with ``GOOGLE_CLOUD_PROJECT`` set.
Against the local stack set ``PUBSUB_EMULATOR_HOST`` (``make demo DEMO_ARGS=--keep`` prints it); against
Google Cloud use Application Default Credentials (``gcloud auth application-default login``) and an
account with ``roles/pubsub.subscriber`` on the subscription.

What a consumer must do, and this one does:

- **Streaming pull, message ordering on.** batch-relay publishes with the job name as ordering key; a
  subscription with ``enable_message_ordering`` delivers each job's events in order (``--create-on``
  creates such a subscription if it does not exist, with an optional filter).
- **Deduplicate on (ce-source, ce-id).** Pub/Sub delivers at least once and batch-relay may re-send an
  event after a failure; the same event always carries the same ``ce-id``.
- **Ack after handling.** A handler that raises nacks the message: Pub/Sub redelivers it.

Only ``google-cloud-pubsub`` is needed. ``EventConsumer`` is reusable (``devtools/demo.py`` uses it).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

STATE_CHANGED = "batchrelay.job.v1.stateChanged"
OUTPUTS_READY = "batchrelay.job.v1.outputsReady"
OUTPUTS_FAILED = "batchrelay.job.v1.outputsFailed"
LOST = "batchrelay.job.v1.lost"
STALLED = "batchrelay.job.v1.stalled"


@dataclasses.dataclass(frozen=True)
class Event:
    """One batch-relay CloudEvent, as received (binary mode: ``ce-*`` attributes, JSON data)."""

    id: str
    source: str
    type: str
    job: str
    state: str
    attributes: dict[str, str]
    data: dict[str, Any]
    ordering_key: str
    publish_time: float  # seconds since the epoch

    @property
    def short_type(self) -> str:
        return self.type.rsplit(".", 1)[-1]

    @classmethod
    def from_message(cls, message) -> Event:
        attributes = dict(message.attributes)
        try:
            data = json.loads(message.data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = {}
        published = message.publish_time.timestamp() if message.publish_time else time.time()
        return cls(id=attributes.get("ce-id", ""), source=attributes.get("ce-source", ""),
                   type=attributes.get("ce-type", ""), job=attributes.get("job") or attributes.get("ce-subject", ""),
                   state=attributes.get("state", ""), attributes=attributes,
                   data=data if isinstance(data, dict) else {}, ordering_key=message.ordering_key or "",
                   publish_time=published)


def describe(event: Event) -> str:
    """One line for a person."""
    data = event.data
    if event.type == STATE_CHANGED:
        previous = event.attributes.get("previous_state", "").removeprefix("JOB_STATE_")
        return f"{previous} -> {event.state.removeprefix('JOB_STATE_')} (version {data.get('version')})"
    if event.type == OUTPUTS_READY:
        if data.get("destination") is None:
            return "nothing to copy (BigQuery output: " + str((data.get("job") or {}).get("output", {})
                                                            .get("bigquery_uri")) + ")"
        return (f"{data.get('objects')} object(s), {human_bytes(int(data.get('bytes') or 0))} copied to "
                f"{data.get('destination')}/ (manifest {data.get('manifest_uri')})")
    if event.type == OUTPUTS_FAILED:
        error = data.get("error") or {}
        return f"copy failed: {error.get('kind')}: {error.get('message')}"
    if event.type == LOST:
        return f"the API no longer knows this job (still {event.state})"
    if event.type == STALLED:
        return (f"no change for {data.get('stalled_for_s')}s (since {data.get('since')}): still "
                f"{event.state.removeprefix('JOB_STATE_')}")
    return f"unknown event type {event.type}"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


class Deduplicator:
    """Remembers the last ``size`` event keys (ce-source, ce-id). In production keep this in your own
    store (e.g. a unique key in your database) so it survives restarts."""

    def __init__(self, size: int = 100_000) -> None:
        self._seen: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def seen(self, event: Event) -> bool:
        with self._lock:
            return (event.source, event.id) in self._seen

    def remember(self, event: Event) -> None:
        with self._lock:
            self._seen[(event.source, event.id)] = None
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)


class EventConsumer:
    """Streaming pull on one subscription; calls ``handle(event)`` once per distinct event."""

    def __init__(self, subscription: str, handle: Callable[[Event], None], *, subscriber=None,
                 dedup: Deduplicator | None = None, max_outstanding: int = 100) -> None:
        from google.cloud import pubsub_v1

        self.subscription = subscription
        self._handle = handle
        self._own_client = subscriber is None
        self._subscriber = subscriber or pubsub_v1.SubscriberClient()
        self._dedup = dedup or Deduplicator()
        self._flow = pubsub_v1.types.FlowControl(max_messages=max_outstanding)
        self._future = None
        self._lock = threading.Lock()
        self.received = 0
        self.duplicates = 0
        self.failures = 0

    def _callback(self, message) -> None:
        event = Event.from_message(message)
        if self._dedup.seen(event):
            with self._lock:
                self.duplicates += 1
            message.ack()
            return
        try:
            self._handle(event)
        except Exception as exc:  # noqa: BLE001 - a failing handler means "redeliver", not "crash"
            with self._lock:
                self.failures += 1
            print(f"handler failed for {event.id}: {type(exc).__name__}: {exc}", file=sys.stderr)
            message.nack()
            return
        self._dedup.remember(event)
        with self._lock:
            self.received += 1
        message.ack()

    def start(self) -> EventConsumer:
        self._future = self._subscriber.subscribe(self.subscription, self._callback, flow_control=self._flow)
        return self

    def stop(self) -> None:
        if self._future is not None:
            self._future.cancel()
            try:
                self._future.result(timeout=10)
            except Exception:  # noqa: BLE001, S110 - a cancelled stream ends with an error; nothing to do
                pass
            self._future = None
        if self._own_client:
            self._subscriber.close()

    def run(self, timeout: float | None = None) -> None:
        """Consume until ``timeout`` seconds pass (forever if None) or Ctrl-C."""
        self.start()
        try:
            self._future.result(timeout=timeout)
        except TimeoutError:
            pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()


def ensure_subscription(subscription: str, topic: str, filter_expr: str | None) -> None:
    """Create an ordered subscription on ``topic`` unless it exists."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    project = subscription.split("/")[1]
    topic_path = topic if topic.startswith("projects/") else f"projects/{project}/topics/{topic}"
    with pubsub_v1.SubscriberClient() as client:
        try:
            client.create_subscription(request={
                "name": subscription, "topic": topic_path, "enable_message_ordering": True,
                "ack_deadline_seconds": 60, **({"filter": filter_expr} if filter_expr else {})})
            print(f"created {subscription} on {topic_path}", file=sys.stderr)
        except exceptions.AlreadyExists:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print batch-relay events from a Pub/Sub subscription.")
    parser.add_argument("subscription", help="projects/P/subscriptions/S, or S with GOOGLE_CLOUD_PROJECT set")
    parser.add_argument("--json", action="store_true", help="one JSON object per event (attributes and data)")
    parser.add_argument("--create-on", metavar="TOPIC", help="create the subscription on TOPIC if missing")
    parser.add_argument("--filter", help="filter for --create-on, e.g. 'attributes.state = \"JOB_STATE_FAILED\"'")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds")
    args = parser.parse_args(argv)
    subscription = args.subscription
    if not subscription.startswith("projects/"):
        project = os.environ.get("GOOGLE_CLOUD_PROJECT")
        if not project:
            parser.error("give projects/P/subscriptions/S or set GOOGLE_CLOUD_PROJECT")
        subscription = f"projects/{project}/subscriptions/{subscription}"
    if args.create_on:
        ensure_subscription(subscription, args.create_on, args.filter)

    printing = threading.Lock()  # callbacks of different jobs run in parallel threads

    def show(event: Event) -> None:
        if args.json:
            line = json.dumps({"attributes": event.attributes, "data": event.data})
        else:
            when = time.strftime("%H:%M:%S", time.localtime(event.publish_time))
            line = f"{when}  {event.short_type:13} {event.job}  {describe(event)}  [ce-id {event.id}]"
        with printing:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    where = os.environ.get("PUBSUB_EMULATOR_HOST")
    print(f"listening on {subscription}" + (f" (emulator {where})" if where else "") + "; Ctrl-C to stop",
          file=sys.stderr)
    EventConsumer(subscription, show).run(args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
