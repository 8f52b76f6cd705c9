"""The batch-relay CLI (A7) against the Firestore and Pub/Sub emulators and the simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from batch_relay import cli
from devtools.simulator import gemini_spec


def run(args, capsys):
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(("args", "needle"), [
    (["track", "batches/a/b"], "not a job name"),
    (["track", "jobs/123"], "not a job name"),
    (["track", "batches/ok", "--destination", "s3://bucket/x"], "gs://"),
    (["track", "batches/ok", "--destination", "gs://bucket/../x"], "'..'"),
    (["track", "batches/ok", "--label", "novalue"], "KEY=VALUE"),
    (["track", "batches/ok", "--label", "bad key=1"], "label key"),
    (["list", "--state", "DONE"], "unknown state"),
    (["show", "projects/p/locations/l/customJobs/1"], "not a job name"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
    (["webhook", "register", "http://example.com/hook"], "https://"),
    (["webhook", "register", "ftp://x"], "https://"),
    (["webhook", "register", "https://user:pw@example.com/"], "credentials"),
    (["webhook", "unregister", "../../x"], "not a webhook id"),
    (["webhook"], "required"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, needle, relay, function_env, capsys):
    code, out, err = run(args, capsys)
    assert code == 2
    assert err.count("\n") == 1 and needle in err and err.startswith("error:")
    assert list(relay.store.records()) == []


def test_bad_settings_exit_2(function_env, monkeypatch, capsys):
    monkeypatch.setenv("RELAY_POLL_CONCURRENCY", "-3")
    code, _, err = run(["list"], capsys)
    assert code == 2 and "RELAY_POLL_CONCURRENCY" in err and err.count("\n") == 1


def test_track_list_show_poll_republish_untrack(relay, simulator, function_env, capsys):
    simulator.add_job(gemini_spec("cli-1", ["RUNNING", "SUCCEEDED"]))
    code, out, _ = run(["track", "batches/cli-1", "--destination", "gs://out-bkt/x/", "--label", "team=ml"], capsys)
    assert code == 0 and "tracking batches/cli-1" in out
    code, out, _ = run(["track", "batches/cli-1", "--label", "run=2"], capsys)  # harmless, updates options only
    assert code == 0 and "already tracked" in out
    record = relay.store.load("batches/cli-1")
    assert record.labels == {"team": "ml", "run": "2"} and record.destination == "gs://out-bkt/x"
    code, out, _ = run(["poll"], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["changed"] == 1 and set(summary) >= {"polled", "changed", "published", "errors",
                                                                       "duration_s"}
    code, out, _ = run(["list", "--state", "RUNNING", "--json"], capsys)
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["batches/cli-1"]
    code, out, _ = run(["list", "--state", "BATCH_STATE_SUCCEEDED", "--json"], capsys)
    assert json.loads(out) == []
    code, out, _ = run(["list"], capsys)
    assert "batches/cli-1" in out and "RUNNING" in out and "1 job(s)" in out
    run(["poll"], capsys)
    code, out, _ = run(["show", "batches/cli-1", "--json"], capsys)
    shown = json.loads(out)
    assert code == 0 and shown["state"] == "JOB_STATE_SUCCEEDED" and shown["version"] == 2
    assert "duration_s" in shown and "has_unpublished" not in shown
    code, out, _ = run(["show", "batches/cli-1"], capsys)
    assert "JOB_STATE_SUCCEEDED" in out
    code, out, _ = run(["republish", "batches/cli-1"], capsys)
    assert code == 0 and json.loads(out) == {"job": "batches/cli-1", "published": 0, "unpublished": 0}
    assert len(relay.drain()) == 2
    code, out, _ = run(["untrack", "batches/cli-1"], capsys)
    assert code == 0 and relay.store.load("batches/cli-1") is None
    code, _, err = run(["show", "batches/cli-1"], capsys)
    assert code == 2 and "not tracked" in err


def test_republish_sends_what_a_failed_publish_left(relay, simulator, function_env, capsys):
    import dataclasses

    simulator.add_job(gemini_spec("cli-2", ["RUNNING"]))
    relay.store.track("batches/cli-2")
    relay.tick(dataclasses.replace(relay.settings, events_topic="gone-topic"))
    code, out, _ = run(["republish", "batches/cli-2"], capsys)
    assert code == 0 and json.loads(out)["published"] == 1
    [message] = relay.drain()
    assert message["attributes"]["ce-id"].endswith("-1")


def test_python_track_api(relay, function_env):
    from batch_relay import track
    from batch_relay.errors import UsageError

    record = track("projects/p1/locations/us-central1/batchPredictionJobs/77", destination="gs://out-bkt/y")
    assert record["api"] == "vertex" and record["version"] == 0 and record["state"] == "JOB_STATE_UNSPECIFIED"
    assert relay.store.load(record["name"]).copy.attempt == 1
    with pytest.raises(UsageError):
        track("nope")


def test_unreachable_firestore_exits_1_quickly():
    import time

    env = {**os.environ, "GOOGLE_CLOUD_PROJECT": "p", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "batch_relay.cli", "list"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "Firestore is unreachable" in result.stderr
    assert result.stderr.count("\n") == 1
    assert time.monotonic() - started < 60


def test_missing_credentials_exit_1(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env.update(GOOGLE_CLOUD_PROJECT="p", GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "missing.json"),
               NO_GCE_CHECK="true", GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9")
    result = subprocess.run([sys.executable, "-m", "batch_relay.cli", "list"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and "could not run" in result.stderr


def test_console_script_is_installed():
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "batch-relay"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "track" in result.stdout


def test_webhook_register_list_unregister(simulator, function_env, capsys):
    code, out, err = run(["webhook", "register", "https://relay.example/hook", "--secret-id", "my-secrets"], capsys)
    assert code == 0, err
    hook_id = out.split()[2]
    secret = next(line.strip() for line in out.splitlines() if line.strip().startswith("whsec_"))
    assert "batch.succeeded, batch.failed, batch.expired" in out
    assert f"printf '%s' '{secret}' | gcloud secrets versions add my-secrets --data-file=-" in out
    code, out, _ = run(["webhook", "list"], capsys)
    assert code == 0 and hook_id in out and "https://relay.example/hook" in out and secret not in out
    code, out, _ = run(["webhook", "list", "--json"], capsys)
    [listed] = json.loads(out)
    assert listed["id"] == hook_id and listed["subscribed_events"] == ["batch.succeeded", "batch.failed",
                                                                        "batch.expired"]
    assert run(["webhook", "unregister", hook_id], capsys)[0] == 0
    code, _, err = run(["webhook", "unregister", hook_id], capsys)
    assert code == 2 and "no webhook" in err and err.count("\n") == 1
    assert json.loads(run(["webhook", "list", "--json"], capsys)[1]) == []


def test_webhook_commands_need_the_api_key(function_env, monkeypatch, capsys):
    monkeypatch.delenv("RELAY_GEMINI_API_KEY")
    code, _, err = run(["webhook", "list"], capsys)
    assert code == 2 and "RELAY_GEMINI_API_KEY" in err and err.count("\n") == 1
