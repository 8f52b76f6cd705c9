"""Shared fixtures: real emulators (Firestore, Pub/Sub, fake-gcs-server) and the batch-API simulator,
started once per test session and stopped by PID at the end. Each test gets uuid-named collections and
topics, so tests never see each other's data."""

from __future__ import annotations

import os
import uuid

import pytest

from batch_relay.settings import Settings
from devtools import emulators
from tests.helpers import Relay

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
        "RELAY_ALLOWED_BUCKETS": "*",  # tests make uniquely named buckets: any bucket (the explicit opt-in)
    }
    return Settings.from_env(env)


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
        "RELAY_ALLOWED_BUCKETS": ",".join(sorted(settings.allowed_buckets or ())),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    load_settings.cache_clear()
    yield env
    load_settings.cache_clear()
    for cached in (wiring.cached_firestore, wiring.cached_publisher):
        cached.cache_clear()
