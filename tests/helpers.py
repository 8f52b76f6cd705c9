"""Helpers the tests import (``from tests.helpers import …``): a module of its own, so that ``conftest.py``,
which pytest loads itself, is never imported a second time under another name."""

from __future__ import annotations

from batch_relay.settings import Settings


class Relay:
    """One test's view of the pipeline: its settings, real clients on the emulators, a subscription
    on its topic (ordering enabled), and ways to run ticks."""

    def __init__(self, settings: Settings):
        from google.cloud import pubsub_v1

        from batch_relay import wiring
        from batch_relay.record.store import JobStore

        self.settings = settings
        self.db = wiring.make_firestore(settings)
        self.publisher = wiring.make_publisher(settings)
        self.subscriber = pubsub_v1.SubscriberClient()
        self.store = JobStore(self.db, settings)
        self.topic = f"projects/{settings.project}/topics/{settings.events_topic}"
        self.publisher.create_topic(name=self.topic)
        self.subscription = f"projects/{settings.project}/subscriptions/all-{settings.events_topic}"
        self.subscriber.create_subscription(request={
            "name": self.subscription, "topic": self.topic, "enable_message_ordering": True,
            "ack_deadline_seconds": 60})

    def tick(self, settings: Settings | None = None, **kw) -> dict:
        """One tick through ``batch_relay.wiring`` (``kw``: ``transport``, ``shards``, ``now``)."""
        import asyncio

        from batch_relay import wiring

        return asyncio.run(wiring.run_tick(settings or self.settings, self.db, self.publisher, **kw))

    def drain(self, wait: float = 0.3) -> list[dict]:
        """Pull every message now on the subscription (acking them), in delivery order."""
        import json

        from devtools.pubsub_drain import drain

        return [{"attributes": dict(m.attributes), "data": json.loads(m.data), "ordering_key": m.ordering_key,
                 "raw": bytes(m.data), "message_id": m.message_id}
                for m in drain(self.subscriber, self.subscription, quiet_s=wait)]

    def close(self):
        import contextlib

        with contextlib.suppress(Exception):
            self.subscriber.delete_subscription(request={"subscription": self.subscription})
        with contextlib.suppress(Exception):
            self.publisher.delete_topic(request={"topic": self.topic})
        self.subscriber.close()
        self.publisher.stop()


def validate_event(message: dict) -> None:
    """Check a pulled message against A5 and the published JSON Schema of its type."""
    import json
    from pathlib import Path

    import jsonschema

    attrs = message["attributes"]
    for key in ("ce-specversion", "ce-id", "ce-source", "ce-type", "ce-subject", "ce-time", "content-type",
                "job", "api", "state"):
        assert key in attrs, f"missing attribute {key}"
    assert attrs["ce-specversion"] == "1.0" and attrs["content-type"] == "application/json"
    assert attrs["ce-subject"] == attrs["job"] == message["ordering_key"]
    schema_path = Path(__file__).parent.parent / "shared" / "events" / "schemas" / f"{attrs['ce-type']}.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(message["data"], schema, format_checker=jsonschema.FormatChecker())


def cloud_event_headers(message_id: str = "1") -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": message_id, "ce-source":
            "//pubsub.googleapis.com/projects/batch-relay-test/topics/t",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished", "Content-Type": "application/json"}


def pubsub_envelope(attributes: dict[str, str], data: bytes, message_id: str = "1") -> dict:
    """The data of a messagePublished CloudEvent, as Pub/Sub and Eventarc deliver it."""
    import base64

    return {"message": {"attributes": attributes, "data": base64.b64encode(data).decode(),
                        "messageId": message_id, "publishTime": "2026-01-01T00:00:00Z"},
            "subscription": "projects/batch-relay-test/subscriptions/reactor"}


def deliver(client, message: dict):
    """POST one pulled message to on_job_event as a binary-mode CloudEvent (what Eventarc sends)."""
    import json

    envelope = pubsub_envelope(message["attributes"], message["raw"], message.get("message_id") or "1")
    return client.post("/", headers=cloud_event_headers(message.get("message_id") or "1"),
                       data=json.dumps(envelope))


class _Gapic:
    """The Firestore client's GAPIC API, wrapped: each commit and batch read is shown to a hook first,
    which may record it or raise what production would (e.g. ``InvalidArgument``) instead of sending it."""

    def __init__(self, api, on_commit, on_batch_get):
        self._api, self._on_commit, self._on_batch_get = api, on_commit, on_batch_get

    def __getattr__(self, name):
        return getattr(self._api, name)

    def commit(self, request, **kw):
        if self._on_commit is not None:
            self._on_commit(request)
        return self._api.commit(request=request, **kw)

    def batch_get_documents(self, request, **kw):
        if self._on_batch_get is not None:
            self._on_batch_get(request)
        return self._api.batch_get_documents(request=request, **kw)


def wrap_firestore(db, *, on_commit=None, on_batch_get=None):
    """``db`` (a real Firestore client, here on the emulator) whose commits and batch reads pass through
    the hooks first: the emulator enforces none of production's limits, a hook can."""
    api = db._firestore_api  # built on first use
    db._firestore_api_internal = _Gapic(api, on_commit, on_batch_get)
    return db


def written_documents(request) -> list[str]:
    """The document paths a commit request writes."""
    return [w.update.name or w.delete for w in request["writes"]]
