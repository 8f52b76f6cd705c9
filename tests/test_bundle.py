"""The deploy bundle (`python -m devtools.bundle`): exactly main.py, batch_relay/ (the
repository's shared/ folder) and a pinned requirements.txt,
reproducible, and self-contained: unpacked into an empty folder and served by functions-framework with the
repo NOT importable, it runs a real tick and a real reaction against the emulators."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx
import pytest

from devtools import bundle, emulators

REPO = Path(__file__).resolve().parents[1]
MAIN_PY = REPO / "functions" / "main.py"


def _expected_package_files() -> set[str]:
    names = set()
    source = REPO / "shared"
    for path in source.rglob("*"):
        rel = path.relative_to(source)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix not in (".pyc", ".pyo") \
                and not any(p.startswith(".") for p in rel.parts):
            names.add("batch_relay/" + rel.as_posix())
    return names


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return bundle.build_bundle(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def unpacked(built, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("bundle")
    with zipfile.ZipFile(built) as zf:
        zf.extractall(target)
    return target


def test_bundle_holds_exactly_main_the_package_and_requirements(built):
    with zipfile.ZipFile(built) as zf:
        names = set(zf.namelist())
        main = zf.read("main.py")
    assert names == {"main.py", "requirements.txt"} | _expected_package_files()
    assert main == MAIN_PY.read_bytes()
    assert not any(n.startswith(("tests/", "devtools/", "functions/", "infra/")) or n.endswith(".pyc")
                   for n in names)


def test_requirements_pin_the_runtime_closure(built):
    with zipfile.ZipFile(built) as zf:
        pins = bundle.parse_requirements(zf.read("requirements.txt").decode())
    from importlib.metadata import version

    from packaging.utils import canonicalize_name

    for req in bundle.runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} missing from requirements.txt"
        assert pins[name] == version(req.name)
    # The closure: what the direct dependencies need is pinned too.
    for transitive in ("flask", "grpcio", "proto-plus", "httpcore", "cloudevents"):
        assert transitive in pins, f"transitive dependency {transitive} not pinned"
    assert all(v and v[0].isdigit() for v in pins.values())


def test_requirements_are_the_hash_locked_runtime_file(built):
    """The Cloud Functions build installs requirements.txt with pip: with a hash on every requirement, pip
    checks every file it downloads (``--require-hashes`` mode)."""
    with zipfile.ZipFile(built) as zf:
        text = zf.read("requirements.txt").decode()
    assert text == (REPO / "requirements" / "runtime.txt").read_text()
    entries = [e for e in text.replace("\\\n", " ").splitlines() if e.strip() and not e.lstrip().startswith("#")]
    assert entries and all("==" in e and "--hash=sha256:" in e for e in entries), entries[:3]


def test_a_bundle_is_not_built_from_an_environment_that_differs_from_the_lock(tmp_path):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(REPO / "shared", repo / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "functions").mkdir()
    shutil.copy(MAIN_PY, repo / "functions" / "main.py")
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    (repo / "requirements").mkdir()
    lock = (REPO / "requirements" / "runtime.txt").read_text()
    name, version = next(iter(bundle.parse_requirements(lock).items()))
    (repo / "requirements" / "runtime.txt").write_text(lock.replace(f"{name}=={version}", f"{name}==0.0.1", 1))
    with pytest.raises(bundle.BundleError, match="differ from requirements/runtime.txt"):
        bundle.bundle_entries(repo)


def test_bundle_is_reproducible(built, tmp_path):
    again = bundle.build_bundle(tmp_path)
    assert again.read_bytes() == built.read_bytes()
    assert bundle.sha256_of(again) == bundle.sha256_of(built)


def test_bundle_cli_prints_path_and_sha256(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "devtools.bundle", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "function-source.zip"
    assert str(path) in proc.stdout
    assert bundle.sha256_of(path) in proc.stdout


# ------------------------------------------------------------------------ served from the bundle alone

def _isolated_env(bundle_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """Environment for `python -S` in the bundle dir: the bundle, then the venv's site-packages (without
    its .pth files, so an editable install of the repo is not on the path)."""
    site = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    return {**extra, "PYTHONPATH": os.pathsep.join([str(bundle_dir), *site]), "PYTHONNOUSERSITE": "1"}


def test_bundle_imports_nothing_from_the_repo(unpacked):
    probe = ("import importlib.util, json, batch_relay, main; print(json.dumps({"
             "'batch_relay': batch_relay.__file__, 'main': main.__file__,"
             "'shared': importlib.util.find_spec('shared') is not None,"
             "'devtools': importlib.util.find_spec('devtools') is not None,"
             "'tests': importlib.util.find_spec('tests') is not None}))")
    proc = subprocess.run([sys.executable, "-S", "-c", probe], cwd=unpacked, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **_isolated_env(unpacked, {})})
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(found["batch_relay"]).resolve().is_relative_to(unpacked.resolve())
    assert found["shared"] is False, "the bundle holds no package named shared"
    assert Path(found["main"]).resolve().is_relative_to(unpacked.resolve())
    assert found["devtools"] is False, "devtools importable: the repo leaks onto the bundle's path"
    assert found["tests"] is False


def _settings_env(settings, emulator_env) -> dict[str, str]:
    env = {
        **emulator_env,
        "GOOGLE_CLOUD_PROJECT": settings.project,
        "RELAY_COLLECTION": settings.collection,
        "RELAY_EVENTS_TOPIC": settings.events_topic,
        "RELAY_GEMINI_API_KEY": settings.gemini_api_key or "",
        "RELAY_GEMINI_BASE_URL": settings.gemini_base_url,
        "RELAY_VERTEX_BASE_URL": settings.vertex_base_url or "",
        "RELAY_TICK_DEADLINE_S": str(settings.tick_deadline_s),
        "RELAY_REQUEST_TIMEOUT_S": str(settings.request_timeout_s),
    }
    return {k: v for k, v in env.items() if v}


def _serve(target: str, bundle_dir: Path, env: dict[str, str]) -> emulators.Service:
    port = emulators.free_port()
    argv = [sys.executable, "-S", "-m", "functions_framework", "--target", target, "--source", "main.py",
            "--host", "127.0.0.1", "--port", str(port)]
    # Service runs from the current directory; run it from the bundle through `cwd` of a shell-less exec.
    service = emulators.Service(f"bundle-{target}", ["/usr/bin/env", "-C", str(bundle_dir), *argv], port,
                                env=_isolated_env(bundle_dir, env))
    return service.wait_ready(timeout=60)


@pytest.fixture
def events_subscription(settings):
    """The events topic in the emulator, with a subscription to read what the tick publishes."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(settings.project, settings.events_topic)
    sub = subscriber.subscription_path(settings.project, f"{settings.events_topic}-bundle")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(request={"name": sub, "topic": topic, "enable_message_ordering": True})
    yield subscriber, sub, topic
    subscriber.delete_subscription(subscription=sub)
    publisher.delete_topic(topic=topic)
    subscriber.close()


def test_served_bundle_runs_a_tick_and_a_reaction(unpacked, settings, emulator_env, simulator, unique,
                                                  events_subscription):
    from batch_relay.cli import main as cli

    env = _settings_env(settings, emulator_env)
    name = simulator.add_job(simulator.gemini_spec(f"bundle-{unique}", ["RUNNING"]))
    assert cli(["track", name], env=env) == 0

    poller = _serve("poll_jobs", unpacked, env)
    try:
        assert httpx.get(poller.url, timeout=10).status_code == 405
        response = httpx.post(poller.url, json={}, timeout=120)
        assert response.status_code == 200, f"{response.status_code} {response.text}\n{poller.tail()}"
        summary = response.json()
    finally:
        poller.stop()
    assert set(summary) >= {"polled", "changed", "published", "errors", "duration_s"}, summary
    assert all(isinstance(summary[k], int) for k in ("polled", "changed", "published", "errors")), summary
    assert summary["polled"] >= 1 and summary["changed"] >= 1 and summary["published"] >= 1, summary

    subscriber, sub, topic = events_subscription
    pulled = subscriber.pull(request={"subscription": sub, "max_messages": 10}, timeout=30)
    messages = [m.message for m in pulled.received_messages if m.message.attributes.get("job") == name]
    assert messages, "the tick served from the bundle published no event for the job"
    event = messages[0]
    assert event.attributes["ce-type"] == "batchrelay.job.v1.stateChanged"
    assert event.attributes["state"] == "JOB_STATE_RUNNING"

    # The reactor, served the same way, gets that real (non-success) event: it must ack it (2xx) and do
    # nothing. Once as a binary-mode CloudEvent, once as the raw push body a push subscription sends.
    reactor = _serve("on_job_event", unpacked, env)
    try:
        push_body = {
            "message": {
                "data": base64.b64encode(event.data).decode(),
                "attributes": dict(event.attributes),
                "messageId": event.message_id or "1",
                "publishTime": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                "orderingKey": event.ordering_key,
            },
            "subscription": sub,
        }
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event.message_id or f"bundle-{unique}",
            "ce-source": f"//pubsub.googleapis.com/{topic}",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "ce-time": push_body["message"]["publishTime"],
            "content-type": "application/json",
        }
        binary = httpx.post(reactor.url, content=json.dumps(push_body), headers=headers, timeout=120)
        assert 200 <= binary.status_code < 300, f"{binary.status_code} {binary.text}\n{reactor.tail()}"
        raw = httpx.post(f"{reactor.url}/{topic}", json=push_body, timeout=120)
        assert 200 <= raw.status_code < 300, f"{raw.status_code} {raw.text}\n{reactor.tail()}"
    finally:
        reactor.stop()
