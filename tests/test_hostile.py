"""Hostile input, property-based where it fits: whatever the batch API answers never stops a tick (it is
recorded as that job's error); whatever CloudEvent reaches ``on_job_event`` is acked (2xx), never retried
forever; the CLI and the settings reject bad values with one clear line.

Hypothesis runs few examples here (CI stays fast); the explicit ``@example``s are the cases found so far.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest
from functions_framework import create_app
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batch_relay import cli
from batch_relay.batchapi import states
from batch_relay.batchapi.wire import JobStatus
from batch_relay.errors import BadResponseError, SettingsError
from batch_relay.settings import Settings
from tests.helpers import cloud_event_headers

MAIN = "functions/main.py"
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
GEMINI_NAME = "batches/HOSTILE"
VERTEX_NAME = "projects/proj-h/locations/us-central1/batchPredictionJobs/HOSTILE"

# -- strategies: JSON a hostile or broken API could send -----------------------------------------------------

INT64 = 2**63
hostile_int = st.one_of(st.integers(), st.integers(INT64 - 3, INT64 + 3), st.integers(-INT64 - 3, -INT64 + 3),
                        st.integers(2**64, 2**90))
hostile_text = st.one_of(st.text(max_size=30), st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),
                         st.sampled_from(["", " ", "\x00", "null", "NaN", "9" * 30, "JOB_STATE_", "../.."]))
scalar = st.one_of(st.none(), st.booleans(), hostile_int, st.floats(), hostile_text)
json_any = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner,
                                                                                           max_size=3), max_leaves=8)


def field(*plausible):
    """A field's value: usually plausible, sometimes anything at all."""
    return st.one_of(*plausible, json_any)


count = field(st.integers(0, 10**6).map(str), st.from_regex(r"-?[0-9]{1,22}", fullmatch=True), hostile_int)
stamp = field(st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,12})?"
                            r"(Z|[+-][0-9]{2}:[0-9]{2})", fullmatch=True))
GEMINI_STATES = [f"BATCH_STATE_{s}" for s in "UNSPECIFIED PENDING RUNNING SUCCEEDED FAILED CANCELLED EXPIRED".split()]
VERTEX_STATES = sorted(states.KNOWN)
error = field(st.fixed_dictionaries({}, optional={"code": field(hostile_int), "message": field(hostile_text)}))


def gemini_body(name: str = GEMINI_NAME):
    stats = st.fixed_dictionaries({}, optional={k: count for k in (
        "requestCount", "successfulRequestCount", "failedRequestCount", "pendingRequestCount")})
    output = st.fixed_dictionaries({}, optional={
        "responsesFile": field(hostile_text),
        "inlinedResponses": field(st.fixed_dictionaries({}, optional={
            "inlinedResponses": field(st.lists(json_any, max_size=3))}))})
    meta = st.fixed_dictionaries({"name": field(st.just(name))}, optional={
        "state": field(st.sampled_from(GEMINI_STATES), hostile_text), "createTime": stamp, "updateTime": stamp,
        "endTime": stamp, "displayName": field(hostile_text), "model": field(hostile_text),
        "batchStats": field(stats), "output": field(output)})
    return st.fixed_dictionaries({"name": st.just(name), "metadata": field(meta)},
                                 optional={"done": json_any, "error": error, "response": field(output)})


def vertex_body(name: str = VERTEX_NAME):
    stats = st.fixed_dictionaries({}, optional={k: count for k in (
        "successfulCount", "failedCount", "incompleteCount")})
    info = st.fixed_dictionaries({}, optional={"gcsOutputDirectory": field(hostile_text),
                                               "bigqueryOutputTable": field(hostile_text)})
    return st.fixed_dictionaries({"name": field(st.just(name))}, optional={
        "state": field(st.sampled_from(VERTEX_STATES), hostile_text), "createTime": stamp, "startTime": stamp,
        "endTime": stamp, "updateTime": stamp, "displayName": field(hostile_text), "model": field(hostile_text),
        "completionStats": field(stats), "outputInfo": field(info), "error": error,
        "labels": field(st.dictionaries(hostile_text, hostile_text, max_size=3))})


OVERFLOWING_TIME = {"name": GEMINI_NAME, "metadata": {"name": GEMINI_NAME, "state": "BATCH_STATE_RUNNING",
                                                      "createTime": "9999-12-31T23:59:59-23:59"}}


# -- the status parsers: BadResponseError or a status, nothing else ---------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURES)
@given(api=st.sampled_from(["gemini", "vertex"]), body=st.one_of(json_any, gemini_body(), vertex_body()))
@example(api="gemini", body=OVERFLOWING_TIME)
@example(api="vertex", body={"name": VERTEX_NAME, "state": "JOB_STATE_RUNNING",
                             "startTime": "0001-01-01T00:00:00+01:00"})
def test_status_parsers_raise_only_bad_response(api, body):
    parse = JobStatus.from_gemini if api == "gemini" else JobStatus.from_vertex
    try:
        status = parse(body)
    except BadResponseError:
        return
    assert status.state.startswith("JOB_STATE_")
    status.to_record()


# -- a real tick against whatever the API answers -------------------------------------------------------------


def _rename(value: Any, placeholder: str, name: str) -> Any:
    if value == placeholder:
        return name
    if isinstance(value, dict):
        return {k: _rename(v, placeholder, name) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v, placeholder, name) for v in value]
    return value


def _good(name: str) -> dict:
    return {"name": name, "metadata": {"name": name, "state": "BATCH_STATE_RUNNING"}}


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(api=st.sampled_from(["gemini", "vertex"]), body=st.one_of(json_any, gemini_body(), vertex_body()),
       status_code=st.sampled_from([200, 200, 200, 201, 204, 302, 400, 404, 418, 500]),
       raw=st.one_of(st.none(), st.binary(max_size=40)))
@example(api="gemini", body={"name": GEMINI_NAME, "metadata": {"name": GEMINI_NAME, "state": "BATCH_STATE_RUNNING",
                                                               "batchStats": {"successfulRequestCount": "9" * 19}}},
         status_code=200, raw=None)
@example(api="vertex", body={"name": VERTEX_NAME, "state": "JOB_STATE_FAILED", "error": {"code": 2**70}},
         status_code=200, raw=None)
@example(api="gemini", body={"name": GEMINI_NAME, "metadata": {"name": GEMINI_NAME, "state": "BATCH_STATE_RUNNING",
                                                               "displayName": "\ud800"}}, status_code=200, raw=None)
@example(api="vertex", body={"name": VERTEX_NAME, "state": "JOB_STATE_RUNNING", "displayName": "x" * 1_100_000},
         status_code=200, raw=None)
@example(api="vertex", body={"name": VERTEX_NAME, "state": "JOB_STATE_RUNNING",
                             "error": {"code": 0, "message": "\ud800"}},
         status_code=302, raw=None)  # an error reply whose message Firestore could not store as such
@example(api="gemini", body=OVERFLOWING_TIME, status_code=200, raw=None)
def test_any_api_reply_is_recorded_as_that_jobs_error_and_the_tick_goes_on(relay, api, body, status_code, raw):
    tag = uuid.uuid4().hex[:10]
    if api == "gemini":
        name = f"batches/h-{tag}"
        body = _rename(body, GEMINI_NAME, name)
    else:
        name = f"projects/proj-h/locations/us-central1/batchPredictionJobs/h-{tag}"
        body = _rename(body, VERTEX_NAME, name)
    control = f"batches/ok-{tag}"
    content = raw if raw is not None else json.dumps(body).encode("utf-8", "surrogatepass")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(control):
            return httpx.Response(200, json=_good(control))
        return httpx.Response(status_code, content=content, headers={"content-type": "application/json"})

    relay.store.track(name)
    relay.store.track(control)
    try:
        summary = relay.tick(transport=httpx.MockTransport(handler))  # completes: no exception, a summary
        assert summary["polled"] == 2
        assert relay.store.load(control).state == "JOB_STATE_RUNNING"  # the healthy job was not held up
        record = relay.store.load(name)
        error = record.last_poll_error
        if error is None:  # the reply was a readable status after all, and it was stored
            parsed = (JobStatus.from_gemini if api == "gemini" else JobStatus.from_vertex)(json.loads(content))
            assert 200 <= status_code < 300 and record.state == parsed.state  # any 2xx carries a body
        elif status_code < 300:
            assert error["kind"] == "bad_response", error
        assert relay.store.read_heartbeat()["summary"]["polled"] == 2
    finally:
        relay.store.untrack(name)
        relay.store.untrack(control)
        relay.drain(wait=0.05)


# -- arbitrary CloudEvents to on_job_event ------------------------------------------------------------------------

attr_text = st.text(max_size=30)
job_names = st.one_of(st.sampled_from(["batches/never-tracked", "projects/p/locations/l/batchPredictionJobs/9",
                                       "../../etc/passwd", "batches/../x", "", "batches/a/b", "batches/x\n"]),
                      attr_text)
attributes = st.one_of(
    st.fixed_dictionaries({}, optional={
        "ce-type": st.one_of(st.sampled_from(["batchrelay.job.v1.stateChanged", "batchrelay.job.v1.outputsReady",
                                              "batchrelay.job.v1.lost"]), attr_text),
        "state": st.one_of(st.sampled_from(["JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED",
                                            "JOB_STATE_RUNNING"]), attr_text),
        "job": job_names, "ce-subject": job_names, "ce-id": attr_text}),
    st.dictionaries(attr_text, attr_text, max_size=4),
)
plain_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False,
                                                                                      allow_infinity=False),
                                    st.text(max_size=20)),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3), max_leaves=8)
record_body = st.builds(lambda name, tid, extra: json.dumps({"job": {"name": name, "tracking_id": tid, **extra}}),
                        job_names, st.one_of(attr_text, plain_json), st.dictionaries(st.text(max_size=8), plain_json,
                                                                                       max_size=2))
payload = st.one_of(st.binary(max_size=64), plain_json.map(json.dumps).map(str.encode), record_body.map(str.encode))
data = st.one_of(payload.map(lambda b: base64.b64encode(b).decode()), attr_text, plain_json)
envelope = st.one_of(
    st.fixed_dictionaries({"message": st.fixed_dictionaries({}, optional={
        "attributes": st.one_of(attributes, plain_json), "data": data, "messageId": attr_text})},
        optional={"subscription": attr_text}),
    plain_json,
)


@pytest.fixture
def event_client(function_env):
    return create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES)
@given(envelope=envelope)
@example(envelope={"message": {"attributes": {"ce-type": "batchrelay.job.v1.stateChanged",
                                              "state": "JOB_STATE_SUCCEEDED", "job": "batches/never-tracked"},
                               "data": base64.b64encode(json.dumps({"job": {"name": "batches/never-tracked",
                                                                            "tracking_id": "t"}}).encode()).decode()}})
@example(envelope={"message": {"attributes": {"ce-type": "batchrelay.job.v1.stateChanged",
                                              "state": "JOB_STATE_SUCCEEDED", "job": "batches/x"},
                               "data": base64.b64encode(b"[1]").decode()}})
def test_any_cloud_event_is_acked(event_client, capsys, envelope):
    response = event_client.post("/", headers=cloud_event_headers(uuid.uuid4().hex), data=json.dumps(envelope))
    assert 200 <= response.status_code < 300, (envelope, response.data[:300])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    for line in out.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            assert entry["severity"] in ("INFO", "WARNING"), entry


GARBAGE = [{"message": "nope"}, {"message": {"attributes": {"ce-type": "batchrelay.job.v1.stateChanged",
                                                             "state": "JOB_STATE_SUCCEEDED", "job": "batches/x"},
                                              "data": "!!"}}]


def _acked_lines(event_client, capsys, body, event_id):
    assert event_client.post("/", headers=cloud_event_headers(event_id), data=json.dumps(body)).status_code == 200
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    return [x for x in lines if x["message"] == "unusable event acked"]


@pytest.mark.parametrize("body", GARBAGE)
def test_garbage_events_are_logged_once_with_a_reason(event_client, capsys, body):
    [acked] = _acked_lines(event_client, capsys, body, "m-1")
    assert acked["severity"] == "WARNING" and acked["error"]


@pytest.mark.parametrize("body", GARBAGE)
def test_garbage_event_log_names_the_message(event_client, capsys, body):
    """A poison message is found again by its id: the log line carries the CloudEvent's ``ce-id``."""
    [acked] = _acked_lines(event_client, capsys, body, "poison-42")
    assert acked["event_id"] == "poison-42"


# -- the command line: exit 2, one clear line, nothing written ------------------------------------------------------


def _valid_spelling(text: str) -> bool:
    t = text.strip().upper()
    return any(t in (s[len("JOB_STATE_"):], s, "BATCH_STATE_" + s[len("JOB_STATE_"):]) for s in states.KNOWN)


bad_names = st.one_of(
    st.text(max_size=40).filter(lambda t: not t.strip().startswith(("batches/", "projects/"))),
    st.builds(lambda a, c, b: f"batches/{a}{c}{b}", st.text("abc", min_size=1, max_size=5),
              st.sampled_from(list(" \t\n:/?#%\\é")), st.text("xyz", min_size=1, max_size=5)),
    st.builds(lambda loc: f"projects/p/locations/{loc}/batchPredictionJobs/1",
              st.sampled_from(["", "A", "a b", "x/y"])),
).filter(lambda t: not t.startswith("-"))
bad_states = st.text(min_size=1, max_size=30).filter(lambda t: not _valid_spelling(t) and not t.startswith("-"))
bad_destinations = st.one_of(
    st.text(max_size=30).filter(lambda t: not t.startswith(("gs://", "-"))),
    st.builds(lambda b: f"gs://{b}/x", st.sampled_from(["", "A", "a", "-ab", "ab-", "a b", "a/b", "x" * 300])),
    st.builds(lambda p: f"gs://good-bucket/{p}", st.sampled_from(["a/../b", "..", "./a", "a//b", "a/\x07", "a\nb"])),
)
bad_labels = st.one_of(
    st.text(max_size=20).filter(lambda t: "=" not in t and not t.startswith("-")),
    st.builds(lambda k, v: f"{k}={v}", st.one_of(st.just(""), st.just("k" * 64), st.sampled_from(["a b", "a:b", "a.b",
                                                                                                "a/b"])),
              st.text("xyz", max_size=4)),
    st.builds(lambda v: f"team={v}", st.one_of(st.just("v" * 257), st.sampled_from(["a\x00", "\n", "a\x1fb"]))),
)


def run_cli(capsys, argv, env) -> tuple[int, str, str]:
    code = cli.main(argv, env=env)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str) -> None:
    assert code == 2, (code, out, err)
    assert out == ""
    assert err.startswith("error: ") and err.endswith("\n") and len(err.splitlines()) == 1, repr(err)


@pytest.fixture
def cli_env(settings, function_env):
    return {**function_env, "FIRESTORE_EMULATOR_HOST": settings.firestore_emulator_host,
            "PUBSUB_EMULATOR_HOST": settings.pubsub_emulator_host}


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURES)
@given(command=st.sampled_from(["track", "untrack", "show", "republish", "recopy"]), name=bad_names)
def test_cli_rejects_bad_job_names(capsys, cli_env, relay, command, name):
    assert_one_line_error(*run_cli(capsys, [command, name], cli_env))
    assert list(relay.store.records()) == []


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(state=bad_states)
def test_cli_rejects_bad_states(capsys, cli_env, state):
    assert_one_line_error(*run_cli(capsys, ["list", "--state", state], cli_env))


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(destination=bad_destinations)
def test_cli_rejects_bad_destinations(capsys, cli_env, relay, destination):
    assert_one_line_error(*run_cli(capsys, ["track", "batches/dest-1", "--destination", destination], cli_env))
    assert list(relay.store.records()) == []


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(label=bad_labels)
def test_cli_rejects_bad_labels(capsys, cli_env, relay, label):
    assert_one_line_error(*run_cli(capsys, ["track", "batches/label-1", "--label", label], cli_env))
    assert list(relay.store.records()) == []


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(extra=st.lists(st.text(min_size=1, max_size=12).filter(lambda t: not t.startswith("-")), min_size=1,
                      max_size=3))
@example(extra=["a\nb"])
def test_cli_rejects_unexpected_arguments_in_one_line(capsys, cli_env, extra):
    assert_one_line_error(*run_cli(capsys, ["list", *extra], cli_env))


@pytest.mark.parametrize("var, value", [
    ("RELAY_POLL_CONCURRENCY", "lots"), ("RELAY_POLL_CONCURRENCY", "0"), ("RELAY_TICK_DEADLINE_S", "nan"),
    ("RELAY_GEMINI_BASE_URL", "ftp://x"), ("RELAY_GEMINI_BASE_URL", "http://["), ("RELAY_VERTEX_BASE_URL", "x"),
    ("RELAY_DEFAULT_DESTINATION", "s3://b"), ("RELAY_ALLOWED_BUCKETS", "ok-bucket,Bad Bucket"),
    ("RELAY_COLLECTION", "a/b"), ("RELAY_EVENTS_TOPIC", "goog-x"), ("GOOGLE_CLOUD_PROJECT", ""),
    ("STORAGE_EMULATOR_HOST", "127.0.0.1:4443"),
])
def test_cli_rejects_bad_settings_naming_the_variable(capsys, cli_env, var, value):
    code, out, err = run_cli(capsys, ["list"], {**cli_env, var: value})
    assert_one_line_error(code, out, err)
    assert var in err


# -- settings, fuzzed --------------------------------------------------------------------------------------------

VARIABLES = ["GOOGLE_CLOUD_PROJECT", "RELAY_FIRESTORE_DATABASE", "RELAY_COLLECTION", "RELAY_EVENTS_TOPIC",
             "RELAY_GEMINI_API_KEY", "RELAY_GEMINI_BASE_URL", "RELAY_VERTEX_BASE_URL", "RELAY_DEFAULT_DESTINATION",
             "RELAY_ALLOWED_BUCKETS", "RELAY_POLL_CONCURRENCY", "RELAY_TICK_DEADLINE_S", "RELAY_REQUEST_TIMEOUT_S",
             "RELAY_MAX_ATTEMPTS", "RELAY_VERTEX_REGION_QPM", "RELAY_LOST_AFTER_S", "RELAY_COPY_LEASE_S",
             "RELAY_PUBLISH_LEASE_S", "RELAY_RETENTION_DAYS", "STORAGE_EMULATOR_HOST"]
setting_value = st.one_of(
    st.text(max_size=25),
    st.from_regex(r"-?[0-9]{0,6}(\.[0-9]{0,3})?(e[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["nan", "inf", "-0", "1_000", "http://[", "http://[::1]:80", "https://h/p?q=1", "gs://b/../x",
                     "gs://ok-bucket/p/", "http://127.0.0.1:1/{location}", "a,,b", " 7 "]),
)


@settings(max_examples=300, deadline=None)
@given(env=st.dictionaries(st.sampled_from(VARIABLES), setting_value, max_size=4))
@example(env={"RELAY_GEMINI_BASE_URL": "http://["})
@example(env={"STORAGE_EMULATOR_HOST": "https://[::1"})
def test_settings_accept_or_fail_with_one_line_naming_the_variable(env):
    env = {"GOOGLE_CLOUD_PROJECT": "proj", **env}
    try:
        loaded = Settings.from_env(env)
    except SettingsError as exc:
        message = str(exc)
        assert "\n" not in message and len(message.splitlines()) == 1, message
        assert any(message.startswith(var) for var in env), message
        return
    assert 1 <= loaded.poll_concurrency <= 1000 and 1 <= loaded.max_attempts <= 20
    assert 1.0 <= loaded.tick_deadline_s <= 3600.0 and 0.0 <= loaded.publish_lease_s <= 3600.0
    for url in (loaded.gemini_base_url, loaded.vertex_base_url, loaded.storage_emulator_host):
        assert url is None or url.startswith(("http://", "https://"))


def test_a_tick_with_hostile_replies_runs_through_poll_jobs(relay, simulator, function_env):
    """The entry point too answers 200 with a summary when one job's reply is garbage (the simulator
    answers it over real HTTP), and the other job is polled as usual."""
    from devtools.simulator import gemini_spec

    simulator.add_job(gemini_spec("garbage-1", ["RUNNING"], faults=[{"kind": "garbage", "count": 1}]))
    simulator.add_job(gemini_spec("fine-1", ["RUNNING"]))
    relay.store.track("batches/garbage-1")
    relay.store.track("batches/fine-1")
    client = create_app(target="poll_jobs", source=MAIN, signature_type="http").test_client()
    response = client.post("/")
    assert response.status_code == 200, response.data
    summary = response.get_json()
    assert summary["errors"] == 1 and summary["changed"] == 1
    assert relay.store.load("batches/garbage-1").last_poll_error["kind"] == "bad_response"
    assert relay.store.load("batches/fine-1").state == "JOB_STATE_RUNNING"
