"""Shared fixtures: real emulators (Firestore, Pub/Sub, fake-gcs-server) and the batch-API simulator,
started once per test session and stopped by PID at the end. Each test gets uuid-named collections and
topics, so tests never see each other's data."""

from __future__ import annotations

import os
import uuid

import pytest

from devtools import emulators
from shared.settings import Settings

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
    }
    return Settings.from_env(env)
