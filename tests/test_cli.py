"""The batch-relay CLI (A7) against the Firestore and Pub/Sub emulators and the simulator."""

from __future__ import annotations

import base64
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
    (["webhook", "register", "https://relay.example/", "--secret", "my-secret"], "projects/PROJECT/secrets/"),
    (["webhook", "register", "https://relay.example/", "--secret", "projects/p/secrets/s/versions/1"], "secrets/"),
    (["webhook", "register", "https://relay.example/", "--secret", "projects/p/secrets/s", "--secret-file", "f"],
     "not allowed with"),
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
    # shown once, on a line of its own, never inside a suggested command (shell history, ps, logs)
    assert out.count(secret) == 1 and f"  {secret}\n" in out
    assert "gcloud secrets versions add my-secrets --data-file=-" in out
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


# -- webhook register: where the signing secret goes ----------------------------------------------------------

class _SecretManager:
    """A local Secret Manager peer (addVersion only) on real HTTP: what it was sent, and what it answers."""

    def __init__(self) -> None:
        import http.server
        import threading

        peer = self
        self.requests: list[dict] = []
        self.status = 200

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                peer.requests.append({"path": self.path, "body": json.loads(body),
                                      "authorization": self.headers.get("authorization")})
                reply = ({"name": self.path.removeprefix("/v1/").removesuffix(":addVersion").replace(
                    "projects/p-1", "projects/123") + "/versions/7", "state": "ENABLED"}
                    if peer.status == 200 else {"error": {"code": peer.status, "message": "Permission denied"}})
                data = json.dumps(reply).encode()
                self.send_response(peer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def secret_manager(function_env, monkeypatch):
    peer = _SecretManager()
    monkeypatch.setenv("RELAY_SECRET_MANAGER_URL", peer.url)
    yield peer
    peer.close()


def _hooks(capsys) -> dict[str, dict]:
    return {h["id"]: h for h in json.loads(run(["webhook", "list", "--json"], capsys)[1])}


def test_webhook_register_stores_the_secret_in_secret_manager_unseen(simulator, secret_manager, capsys):
    code, out, err = run(["webhook", "register", "https://relay.example/sm", "--secret", "projects/p-1/secrets/hooks"],
                         capsys)
    assert code == 0, err
    [sent] = secret_manager.requests
    assert sent["path"] == "/v1/projects/p-1/secrets/hooks:addVersion"
    assert sent["authorization"] == "Bearer local-dev-token"  # plain http to this machine: never a real token
    stored = base64.b64decode(sent["body"]["payload"]["data"]).decode()
    hook_id = out.split()[2]
    assert stored.startswith("whsec_") and _hooks(capsys)[hook_id]["signing_secrets"][0]["truncated_secret"] == \
        stored[:10] + "…"
    assert stored not in out + err and "projects/123/secrets/hooks/versions/7" in out
    assert 'webhooks.signing_secrets.version = "7"' in out

    code, out, _ = run(["webhook", "register", "https://relay.example/sm2", "--secret", "projects/p-1/secrets/hooks",
                        "--json"], capsys)
    created = json.loads(out)
    stored = base64.b64decode(secret_manager.requests[-1]["body"]["payload"]["data"]).decode()
    assert code == 0 and "new_signing_secret" not in created and stored not in out
    assert created["signing_secret_version"] == "projects/123/secrets/hooks/versions/7"


def test_webhook_register_takes_the_webhook_back_when_the_secret_cannot_be_stored(simulator, secret_manager, capsys):
    before = set(_hooks(capsys))
    secret_manager.status = 403
    code, out, err = run(["webhook", "register", "https://relay.example/sm", "--secret", "projects/p-1/secrets/hooks"],
                         capsys)
    stored = base64.b64decode(secret_manager.requests[-1]["body"]["payload"]["data"]).decode()
    assert code == 1 and "Permission denied" in err and "unregistered again" in err
    assert stored not in out + err and "whsec_" not in out + err
    assert set(_hooks(capsys)) == before  # nothing left behind that nobody could verify


def test_webhook_register_writes_the_secret_to_a_new_private_file(simulator, function_env, tmp_path, capsys):
    path = tmp_path / "hook.secret"
    code, out, err = run(["webhook", "register", "https://relay.example/f", "--secret-id", "my-secrets",
                          "--secret-file", str(path)], capsys)
    assert code == 0, err
    secret = path.read_text()
    assert secret.startswith("whsec_") and "\n" not in secret
    assert path.stat().st_mode & 0o777 == 0o600
    assert secret not in out + err and f"gcloud secrets versions add my-secrets --data-file={path}" in out

    before = set(_hooks(capsys))
    code, out, err = run(["webhook", "register", "https://relay.example/f2", "--secret-file", str(path)], capsys)
    assert code == 2 and "exists" in err and err.count("\n") == 1
    assert path.read_text() == secret and set(_hooks(capsys)) == before  # refused before registering
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    assert run(["webhook", "register", "https://relay.example/f3", "--secret-file", str(link)], capsys)[0] == 2
    assert not (tmp_path / "elsewhere").exists()


# -- what an API says is shown, never obeyed ------------------------------------------------------------------

HOSTILE = "ok\x1b[2J\x1b]0;owned\x07\rgone\u202emid\x9b31m"


def _plain(text: str) -> bool:
    """No control character but newlines (ESC, BEL, CR, CSI, bidi overrides): what a terminal cannot act on."""
    return not any(not c.isprintable() and c != "\n" for c in text)


def test_list_and_show_escape_what_the_api_says(relay, simulator, function_env, capsys):
    simulator.add_job(gemini_spec("esc-1", [{"state": "FAILED", "error": {"code": 3, "message": HOSTILE}}],
                                  display_name=HOSTILE))
    assert run(["track", "batches/esc-1"], capsys)[0] == 0
    assert run(["poll"], capsys)[0] == 0
    for args in (["list"], ["show", "batches/esc-1"]):
        code, out, _ = run(args, capsys)
        assert code == 0 and _plain(out) and "\\x1b[2J" in out, args
    code, out, _ = run(["show", "batches/esc-1"], capsys)
    assert "ok\\x1b[2J\\x1b]0;owned\\x07\\rgone\\u202emid\\x9b31m" in out  # visible, in full
    code, out, _ = run(["show", "batches/esc-1", "--json"], capsys)
    assert json.loads(out)["display_name"] == HOSTILE  # JSON stays JSON: escaped by json.dumps


def test_follow_and_wait_escape_what_the_api_says(relay, simulator, function_env, capsys):
    import io
    import threading

    from batch_relay.cli import live, views

    simulator.add_job(gemini_spec("esc-2", [{"state": "FAILED", "error": {"code": 3, "message": HOSTILE}}]))
    relay.store.track("batches/esc-2")
    relay.tick()
    out = io.StringIO()
    assert live.wait_command(relay.db, relay.settings, "batches/esc-2", timeout=30, outputs=False, as_json=False,
                             out=out, err=out) == 3
    assert _plain(out.getvalue()) and "\\x1b[2J" in out.getvalue()
    stop = threading.Event()
    out = io.StringIO()
    follower = threading.Thread(target=live.follow_command, args=(relay.db, relay.settings),
                                kwargs={"out": out, "stop": stop, "finished": True})  # esc-2 is finished: --all
    follower.start()
    for _ in range(100):
        if "esc-2" in out.getvalue():
            break
        stop.wait(0.1)
    stop.set()
    follower.join(30)
    assert "esc-2" in out.getvalue() and _plain(out.getvalue()) and "\\x1b[2J" in out.getvalue()
    if views.have_rich():  # the drawn table: cells are text, never markup, and escaped
        from rich.console import Console

        console = Console(file=io.StringIO(), width=400, color_system=None)
        record = relay.store.load("batches/esc-2").public()
        console.print(views.rich_table([{**record, "api": "[link=https://x.example]gemini[/link]"}]))
        drawn = console.file.getvalue()
        assert _plain(drawn) and "\\x1b[2J" in drawn and "[link=https://x.example]" in drawn


def test_webhook_list_shows_states_and_escapes_what_the_api_says(simulator, function_env, capsys):
    import httpx

    created = httpx.post(f"{simulator.base_url}/v1beta/webhooks", headers={"x-goog-api-key": os.environ[
        "RELAY_GEMINI_API_KEY"]}, json={"uri": f"https://relay.example/{HOSTILE}", "subscribed_events": [
            "batch.succeeded"]}).json()
    simulator.set_webhook_state(created["id"], "disabled_due_to_failed_deliveries")
    code, out, _ = run(["webhook", "list"], capsys)
    line = next(line for line in out.splitlines() if line.startswith(created["id"]))
    assert code == 0 and _plain(out) and "\\x1b[2J" in line and "DISABLED (failed deliveries)" in line
    assert "not enabled" in out.splitlines()[-1]
    assert _hooks(capsys)[created["id"]]["state"] == "disabled_due_to_failed_deliveries"


def test_safe_leaves_nothing_a_terminal_would_act_on():
    from batch_relay.cli.views import safe

    everything = "".join(chr(c) for c in range(0x10000)) + "\U000e0001\U0010ffff"
    assert safe(everything).isprintable()
    assert safe("Grüße, 東京 [bold]x[/] \\ ok") == "Grüße, 東京 [bold]x[/] \\ ok"  # printable text unchanged
    assert safe("a\x1b[31mb\x07\x7f\x85\u2028") == "a\\x1b[31mb\\x07\\x7f\\x85\\u2028"
