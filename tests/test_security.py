"""Security: the Gemini API key never leaves the process (logs, events, records), not even when the API
echoes it back or an error message quotes it; bearer tokens never reach a log line; copies outside the
allow-list and path-traversal names are refused; ``poll_jobs`` runs only on POST."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import http.server
import io
import json
import logging
import secrets
import sys
import threading
import uuid

import httpx
import pytest
from functions_framework import create_app
from hypothesis import example, given, settings
from hypothesis import strategies as st

from batch_relay import log as relay_log
from batch_relay.auth import GoogleAuth
from batch_relay.batchapi.client import BatchApiClient
from batch_relay.batchapi.http import make_http_pool
from batch_relay.errors import PermanentError
from batch_relay.events.publisher import EventPublisher
from batch_relay.poller.tick import Poller
from batch_relay.reactor.plans import MANIFEST, destination_for, safe_relative
from batch_relay.record.model import CopyState, JobRecord
from batch_relay.settings import Settings
from devtools import emulators
from devtools.simulator import gemini_spec, vertex_spec
from tests.helpers import deliver

MAIN = "functions/main.py"


# -- an API that echoes the key back ---------------------------------------------------------------------------


class EchoApi:
    """A Gemini API stand-in that quotes the caller's ``x-goog-api-key`` wherever a careless server might:
    error messages of every status, the fields a status reply is rejected for, a file download refusal."""

    def __init__(self) -> None:
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                key = self.headers.get("x-goog-api-key", "")
                code, body = api.answer(self.path.split("?", 1)[0], key)
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.port = emulators.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @staticmethod
    def answer(path: str, key: str) -> tuple[int, object]:
        if path.startswith("/download/"):
            return 403, {"error": {"code": 403, "message": f"API key {key} may not read this file",
                                   "status": "PERMISSION_DENIED"}}
        job = path.rsplit("/", 1)[-1]
        name = f"batches/{job}"
        kind = job.split("-", 1)[0]
        error_codes = {"e400": 400, "e403": 403, "e404": 404, "e429": 429, "e500": 500, "e418": 418}
        if kind in error_codes:
            code = error_codes[kind]
            return code, {"error": {"code": code, "message": f"API key not valid: {key} (key={key})"}}
        meta = {"name": name, "state": "BATCH_STATE_RUNNING"}
        if kind == "state":
            meta["state"] = key
        elif kind == "time":
            meta["createTime"] = key
        elif kind == "count":
            meta["batchStats"] = {"successfulRequestCount": key}
        elif kind == "name":
            meta["name"] = f"batches/{key}"
        elif kind == "text":
            return 200, f"not json, but the key: {key}".encode()
        elif kind == "done":
            meta.update(state="BATCH_STATE_SUCCEEDED", output={"responsesFile": "files/leaky"})
            return 200, {"name": name, "metadata": meta, "done": True, "response": {"responsesFile": "files/leaky"}}
        return 200, {"name": name, "metadata": meta}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def echo_api():
    api = EchoApi()
    yield api
    api.stop()


KEYS = {"aiza": lambda: "AIzaSy" + secrets.token_urlsafe(25)[:33],
        "plain": lambda: "k" + secrets.token_hex(12)}
ECHO_JOBS = ["e400", "e403", "e404", "e429", "e500", "e418", "state", "time", "count", "name", "text", "done"]


def everything_stored(relay) -> str:
    """Every record and transition of the test's collection, and the heartbeat, as one text."""
    parts = []
    for doc in relay.db.collection(relay.settings.collection).stream():
        parts.append(repr(doc.to_dict()))
        for t in doc.reference.collection("transitions").stream():
            parts.append(repr(t.to_dict()))
    parts.append(repr(relay.store.read_heartbeat()))
    return "\n".join(parts)


@pytest.mark.parametrize("style", sorted(KEYS))
def test_gemini_key_never_reaches_logs_events_or_records(style, relay, function_env, echo_api, gcs_emulator,
                                                         monkeypatch, capfd):
    from batch_relay.settings import load_settings

    key = KEYS[style]()
    bucket = f"sec-{uuid.uuid4().hex[:8]}"
    httpx.post(f"{gcs_emulator.url}/storage/v1/b", params={"project": "p"}, json={"name": bucket}).raise_for_status()
    for var, value in {"RELAY_GEMINI_API_KEY": key, "RELAY_GEMINI_BASE_URL": echo_api.url,
                       "RELAY_MAX_ATTEMPTS": "2", "RELAY_LOST_AFTER_S": "0"}.items():
        monkeypatch.setenv(var, value)
    load_settings.cache_clear()
    tag = uuid.uuid4().hex[:6]
    names = [f"batches/{kind}-{tag}" for kind in ECHO_JOBS]
    for name in names:
        relay.store.track(name, destination=f"gs://{bucket}/out")
    poll = create_app(target="poll_jobs", source=MAIN, signature_type="http").test_client()
    for _ in range(2):
        assert poll.post("/").status_code == 200
    messages = relay.drain()
    success = [m for m in messages if m["attributes"]["state"] == "JOB_STATE_SUCCEEDED"]
    assert len(success) == 1
    reactor = create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()
    assert deliver(reactor, success[0]).status_code == 200  # the download is refused: a permanent failure
    messages += relay.drain()
    out, err = capfd.readouterr()
    done = relay.store.load(names[-1])
    assert done.copy.status == "failed" and done.copy.error["kind"] == "forbidden"
    assert relay.store.load(f"batches/e404-{tag}").terminal  # given up as lost: a lost event went out
    assert {m["attributes"]["ce-type"] for m in messages} >= {"batchrelay.job.v1.lost",
                                                               "batchrelay.job.v1.outputsFailed"}
    assert "status fetch failed" in out  # the errors were logged...
    assert key not in out + err  # ...without the key
    published = "\n".join(json.dumps(m["attributes"]) + m["raw"].decode() for m in messages)
    assert key not in published
    assert key not in everything_stored(relay)


def test_key_in_an_exception_is_not_logged_or_recorded(relay, capsys):
    """A transport that fails with the key in its exception message (e.g. a proxy error quoting headers)."""
    key = KEYS["plain"]()
    settings = dataclasses.replace(relay.settings, gemini_api_key=key, max_attempts=1)

    def handler(request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"proxy refused x-goog-api-key {request.headers['x-goog-api-key']} for {request.url}")

    relay_log.configure()
    relay_log.add_secret(key)  # as every entry point (poll_jobs, on_job_event, the CLI) does with its settings
    relay.store.track("batches/exc-1")
    relay.tick(settings, transport=httpx.MockTransport(handler))
    out, err = capsys.readouterr()
    assert "status fetch failed" in out
    assert key not in out + err
    assert key not in everything_stored(relay)


# -- bearer tokens ---------------------------------------------------------------------------------------------


class FakeCredentials:
    """google-auth credentials with a fixed, unexpired token (no refresh)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1)
        self.quota_project_id = None

    def refresh(self, request) -> None:  # pragma: no cover - never stale here
        raise AssertionError("no refresh expected")


def _vertex_tick(relay, token: str, handler) -> None:
    async def run():
        async with make_http_pool(relay.settings.poll_concurrency, relay.settings.request_timeout_s,
                                  transport=httpx.MockTransport(handler)) as http:
            api = BatchApiClient(http, dataclasses.replace(relay.settings, max_attempts=1),
                                 vertex_auth=GoogleAuth(FakeCredentials(token)))
            publisher = EventPublisher(relay.publisher, relay.settings.project, relay.settings.events_topic)
            await Poller(relay.settings, relay.store, api, publisher).tick()

    asyncio.run(run())


def _echo_token(request: httpx.Request) -> httpx.Response:
    auth = request.headers.get("authorization", "")
    if request.url.path.endswith("/1"):
        return httpx.Response(403, json={"error": {"code": 403, "message": f"token rejected: {auth}"}})
    if request.url.path.endswith("/2"):
        raise RuntimeError(f"upstream reset; the request carried {auth} and {len(request.headers)} more headers")
    return httpx.Response(200, json={"name": "x", "state": auth})


def test_bearer_tokens_never_reach_a_log_line(relay, capsys):
    token = "ya29." + secrets.token_urlsafe(40)
    for job_id in ("1", "2", "3"):
        relay.store.track(f"projects/proj-s/locations/us-central1/batchPredictionJobs/{job_id}")
    relay_log.configure()
    _vertex_tick(relay, token, _echo_token)
    out, err = capsys.readouterr()
    assert out.count("status fetch failed") == 3
    assert token not in out + err and token[5:25] not in out + err


def test_bearer_tokens_echoed_by_the_api_are_not_stored(relay):
    token = "ya29." + secrets.token_urlsafe(40)
    for job_id in ("1", "2", "3"):
        relay.store.track(f"projects/proj-s/locations/us-central1/batchPredictionJobs/{job_id}")
    _vertex_tick(relay, token, _echo_token)
    stored = everything_stored(relay)
    assert "last_poll_error" in stored
    assert token[5:25] not in stored


def test_a_stored_error_message_is_redacted_cut_and_valid_utf8():
    message = relay_log.storable("HTTP 302: \ud800 Authorization: Bearer ya29.secret-token-value " + "x" * 600)
    message.encode("utf-8")  # a lone surrogate from a hostile reply, escaped: Firestore can store it
    assert message.startswith("HTTP 302: \\ud800 ") and "ya29" not in message and "[REDACTED]" in message
    assert len(message) <= 500 + 5  # cut to 500 characters before the escape (a surrogate grows to 6)
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "reply \ud800", None, None)
    record.fields = {"error": "\udcff"}
    line = relay_log.JsonFormatter().format(record)
    line.encode("utf-8")  # a log line stdout can write
    assert json.loads(line)["error"] == "\udcff"  # as a JSON escape: the value itself survives


@pytest.mark.parametrize("line", [
    "Authorization: Bearer ya29.a0AfH6SMBx-secret_token.value",
    "{'authorization': 'Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl'}",
    "headers=[('Authorization', 'bearer abcdefghijklmnop')]",
    "token ya29.c.b0Aaek_plain_in_text",
])
def test_log_lines_redact_bearer_tokens(line):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(relay_log.JsonFormatter())
    logger = logging.getLogger(f"batch_relay.sectest.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise RuntimeError(line)
    except RuntimeError:
        logger.exception(line, extra={"fields": {"error": line, "nested": {"h": line}}})
    text = stream.getvalue()
    secret = line.split("Bearer ")[-1].split("bearer ")[-1].split("token ")[-1].rstrip("')]}")
    assert secret not in text and "[REDACTED]" in text
    entry = json.loads(text)
    assert entry["severity"] == "ERROR" and "exception" in entry


@settings(max_examples=100, deadline=None)
@given(secret=st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                      min_size=8, max_size=48),
       before=st.text(max_size=20), after=st.text(max_size=20))
def test_registered_secrets_are_masked_wherever_they_appear(secret, before, after):
    relay_log.add_secret(secret)
    text = relay_log.redact(f"{before}{secret}{after}")
    assert secret not in text


# -- copies: the allow-list and path traversal ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(name=st.one_of(st.text(max_size=30), st.lists(st.sampled_from(["a", "..", ".", "", "b.json", "\x00", "c\\d",
                                                                       "_manifest.json", "e\nf"]),
                                                      min_size=1, max_size=4).map("/".join)))
@example(name="../x")
@example(name="a/../../b")
def test_object_names_that_could_escape_are_refused(name):
    try:
        rel = safe_relative(name)
    except PermanentError as exc:
        assert exc.kind == "unsafe_name"
        return
    parts = rel.split("/")
    assert rel == name and rel != MANIFEST and not rel.startswith("/") and "\\" not in rel
    assert all(p not in ("", ".", "..") for p in parts)
    assert all(32 <= ord(c) != 127 for c in rel)


@settings(max_examples=200, deadline=None)
@given(dest=st.one_of(st.none(), st.text(max_size=30),
                      st.builds(lambda b, p: f"gs://{b}/{p}", st.sampled_from(["mine", "mine-2", "other", "MINE", ""]),
                                st.text(max_size=15))),
       default=st.sampled_from([None, "gs://mine/base", "gs://other/base"]))
@example(dest="gs://mine/../other", default=None)
@example(dest=None, default="gs://other/base")
def test_destinations_outside_the_allow_list_are_refused(dest, default):
    settings = Settings(project="p", allowed_buckets=frozenset({"mine", "mine-2"}), default_destination=default)
    record = JobRecord.from_doc({"destination": dest, "api": "gemini", "name": "batches/j1"})
    try:
        uri = destination_for(record, settings)
    except PermanentError as exc:
        assert exc.kind in ("not_allowed", "bad_destination", "no_destination")
        return
    bucket, _, prefix = uri[len("gs://"):].partition("/")
    assert bucket in settings.allowed_buckets
    assert all(p not in (".", "..") for p in prefix.split("/"))


def _gcs(gcs_emulator):
    return httpx.Client(base_url=gcs_emulator.url, timeout=30)


def _bucket(gcs, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    gcs.post("/storage/v1/b", params={"project": "p"}, json={"name": name}).raise_for_status()
    return name


def _names(gcs, bucket: str) -> list[str]:
    return sorted(i["name"] for i in gcs.get(f"/storage/v1/b/{bucket}/o").json().get("items", []))


def _succeed(relay, simulator, spec, destination=None):
    simulator.add_job(spec)
    relay.store.track(spec["name"], destination=destination)
    for _ in range(6):
        relay.tick()
        if relay.store.load(spec["name"]).terminal:
            break
    [message] = [m for m in relay.drain() if m["attributes"]["state"] == "JOB_STATE_SUCCEEDED"]
    return message


def _refused(relay, client, message, kind) -> CopyState:
    assert deliver(client, message).status_code == 200  # acked: a permanent failure
    copy = relay.store.load(message["attributes"]["job"]).copy
    assert copy.status == "failed" and copy.error["kind"] == kind, copy
    [failed] = [m for m in relay.drain() if m["attributes"]["ce-type"] == "batchrelay.job.v1.outputsFailed"]
    assert failed["data"]["error"]["kind"] == kind
    return copy


def test_traversal_names_in_the_source_are_refused_and_nothing_is_written(relay, simulator, gcs_emulator,
                                                                          function_env):
    with _gcs(gcs_emulator) as gcs:
        src, dst = _bucket(gcs, "tsrc"), _bucket(gcs, "tdst")
        for name in ("run/prediction-x/ok.jsonl", "run/prediction-x/../../escaped.jsonl"):
            gcs.post(f"/upload/storage/v1/b/{src}/o", params={"uploadType": "media", "name": name},
                     content=b"x").raise_for_status()
        assert "run/prediction-x/../../escaped.jsonl" in _names(gcs, src)  # stored literally by the emulator
        spec = vertex_spec("proj-s", "us-central1", "trav-1", ["SUCCEEDED"],
                           output={"kind": "gcs", "uri": f"gs://{src}/run/prediction-x"})
        message = _succeed(relay, simulator, spec, f"gs://{dst}/job")
        client = create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()
        _refused(relay, client, message, "unsafe_name")
        assert _names(gcs, dst) == []


def test_traversal_in_a_responses_file_name_is_refused_before_any_request(relay, simulator, gcs_emulator,
                                                                          function_env):
    with _gcs(gcs_emulator) as gcs:
        dst = _bucket(gcs, "fdst")
        spec = gemini_spec("trav-2", ["SUCCEEDED"], output={"kind": "file", "file_id": "../../v1beta/batches/x"})
        message = _succeed(relay, simulator, spec, f"gs://{dst}/job")
        assert relay.store.load("batches/trav-2").output["file_name"] == "files/../../v1beta/batches/x"
        simulator.reset_stats()
        client = create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()
        _refused(relay, client, message, "bad_source")
        stats = simulator.stats()  # the one request is the batch's status, read at copy time: no download
        assert stats["requests"] == stats["status_gets"] == 1
        assert _names(gcs, dst) == []


def test_default_destination_outside_the_allow_list_is_refused(relay, simulator, gcs_emulator, function_env,
                                                               monkeypatch):
    from batch_relay.settings import load_settings

    with _gcs(gcs_emulator) as gcs:
        src, other = _bucket(gcs, "asrc"), _bucket(gcs, "other")
        gcs.post(f"/upload/storage/v1/b/{src}/o", params={"uploadType": "media", "name": "run/prediction-x/a.jsonl"},
                 content=b"x").raise_for_status()
        monkeypatch.setenv("RELAY_ALLOWED_BUCKETS", "only-this-bucket")
        monkeypatch.setenv("RELAY_DEFAULT_DESTINATION", f"gs://{other}/all")
        load_settings.cache_clear()
        spec = vertex_spec("proj-s", "us-central1", "allow-1", ["SUCCEEDED"],
                           output={"kind": "gcs", "uri": f"gs://{src}/run/prediction-x"})
        message = _succeed(relay, simulator, spec)  # no destination of its own
        client = create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()
        _refused(relay, client, message, "not_allowed")
        assert _names(gcs, other) == []


# -- poll_jobs: POST only ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch", "head", "options"])
def test_poll_jobs_runs_only_on_post(method, relay, simulator, function_env):
    simulator.add_job(gemini_spec("post-only", ["RUNNING"]))
    relay.store.track("batches/post-only")
    simulator.reset_stats()
    client = create_app(target="poll_jobs", source=MAIN, signature_type="http").test_client()
    response = getattr(client, method)("/")
    if method != "options":  # OPTIONS is answered by Flask itself, without calling the function
        assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert response.status_code not in (200, 500) or method == "options"
    assert relay.store.read_heartbeat() is None  # no tick ran
    assert simulator.stats()["status_gets"] == 0
    assert relay.store.load("batches/post-only").version == 0
    assert client.post("/").status_code == 200  # and POST does run one
    assert relay.store.load("batches/post-only").state == "JOB_STATE_RUNNING"


def test_served_poll_jobs_refuses_get_over_http(relay, function_env):
    server = emulators.Service("poll-get", [sys.executable, "-m", "functions_framework", "--target", "poll_jobs",
                                            "--source", MAIN, "--signature-type", "http", "--host", "127.0.0.1",
                                            "--port", str(port := emulators.free_port())], port, env=function_env)
    try:
        server.wait_ready()
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            assert httpx.request(method, server.url, timeout=30).status_code == 405
        assert relay.store.read_heartbeat() is None
    finally:
        server.stop()
