"""Shared fixtures: real emulators (Firestore, Pub/Sub, fake-gcs-server) and the batch-API simulator,
started once per test session and stopped by PID at the end. Each test gets uuid-named collections and
topics, so tests never see each other's data."""

from __future__ import annotations

import os
import uuid

import pytest

from batch_relay.settings import Settings
from devtools import emulators

PROJECT = "batch-relay-test"


@pytest.fixture(scope="session")
def firestore_emulator():
    service = emulators.start_firestore()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def pubsub_emulator():
    service = emulators.start_pubsub()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def gcs_emulator():
    service = emulators.start_fake_gcs()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def simulator_service():
    service = emulators.start_simulator()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def emulator_env(firestore_emulator, pubsub_emulator, gcs_emulator):
    """Point the Google libraries at the emulators for the whole session."""
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
        "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
        "STORAGE_EMULATOR_HOST": gcs_emulator.url,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def simulator(simulator_service):
    from devtools.simulator import SimulatorClient

    client = SimulatorClient(simulator_service.url)
    client.reset()
    yield client
    client.close()


@pytest.fixture
def gcs(gcs_emulator):
    """fake-gcs-server through the helper tests arrange buckets and objects with."""
    from devtools.fakegcs import FakeGcs

    g = FakeGcs(gcs_emulator.url)
    yield g
    g.http.close()


@pytest.fixture
def unique():
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(emulator_env, simulator_service, unique) -> Settings:
    """Settings for one test: its own collection and topic, the simulator as both APIs."""
    env = {
        **emulator_env,
        "RELAY_COLLECTION": f"jobs_{unique}",
        "RELAY_EVENTS_TOPIC": f"events-{unique}",
        "RELAY_GEMINI_API_KEY": "test-key-" + unique,
        "RELAY_GEMINI_BASE_URL": simulator_service.url,
        "RELAY_VERTEX_BASE_URL": simulator_service.url,
        "RELAY_TICK_DEADLINE_S": "60",
        "RELAY_REQUEST_TIMEOUT_S": "2",
        "RELAY_MAX_POLL_INTERVAL_S": "0",  # every tick: tests tick far faster than once a minute
    }
    return Settings.from_env(env)


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


@pytest.fixture
def relay(settings):
    r = Relay(settings)
    yield r
    r.close()


@pytest.fixture
def function_env(settings, monkeypatch):
    """Expose one test's settings to code that reads the environment (entry points, the CLI)."""
    from batch_relay import wiring
    from batch_relay.settings import load_settings

    env = {
        "GOOGLE_CLOUD_PROJECT": settings.project,
        "RELAY_COLLECTION": settings.collection,
        "RELAY_EVENTS_TOPIC": settings.events_topic,
        "RELAY_GEMINI_API_KEY": settings.gemini_api_key,
        "RELAY_GEMINI_BASE_URL": settings.gemini_base_url,
        "RELAY_VERTEX_BASE_URL": settings.vertex_base_url,
        "RELAY_TICK_DEADLINE_S": str(settings.tick_deadline_s),
        "RELAY_REQUEST_TIMEOUT_S": str(settings.request_timeout_s),
        "RELAY_MAX_POLL_INTERVAL_S": str(settings.max_poll_interval_s),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    load_settings.cache_clear()
    yield env
    load_settings.cache_clear()
    for cached in (wiring.cached_firestore, wiring.cached_publisher):
        cached.cache_clear()


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
