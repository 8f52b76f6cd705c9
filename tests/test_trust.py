"""Trust boundaries of the copy, end to end (Firestore and Pub/Sub emulators, fake-gcs-server, the simulator):
the reactor copies what the batch API says at copy time, never what the record says; it reads Vertex
outputs only from RELAY_SOURCE_BUCKETS and writes only under RELAY_ALLOWED_BUCKETS; it never overwrites an
object it did not write; and it waits RELAY_OUTPUT_WAIT_S for an output location that is not there yet.

fake-gcs-server ignores ``ifGenerationMatch``, so the preconditions the copy sends are read off the wire
(``Wire``, a transport through ``batch_relay.wiring`` that records and can break requests), and the
refusals are tested by putting someone else's object where the copy would write."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from functions_framework import create_app

from batch_relay.batchapi.names import doc_id
from batch_relay.errors import TransientError
from batch_relay.reactor.allowlist import destination_allowed
from batch_relay.reactor.source import output_wait_left
from batch_relay.settings import Settings
from devtools.simulator import gemini_spec, vertex_spec
from tests.helpers import deliver, pubsub_envelope, validate_event

MAIN = "functions/main.py"
SALARIES = b"name,salary\nalice,100\nbob,200\n"


# -- helpers -------------------------------------------------------------------------------------------


def succeed(relay: Any, simulator: Any, spec: dict[str, Any], destination: str | None) -> tuple[Any, dict[str, Any]]:
    """Track a simulated job, tick it to its end, return (record, its success message)."""
    simulator.add_job(spec)
    relay.store.track(spec["name"], destination=destination)
    for _ in range(10):
        relay.tick()
        if relay.store.load(spec["name"]).terminal:
            break
    success = [m for m in relay.drain() if m["attributes"]["state"] == "JOB_STATE_SUCCEEDED"]
    assert success
    return relay.store.load(spec["name"]), success[-1]


def forge(relay: Any, name: str, **fields: Any) -> None:
    """Write the record directly, as anyone with write access to the jobs collection can."""
    relay.db.collection(relay.settings.collection).document(doc_id(name)).update(fields)


def vertex_job(job_id: str, source_uri: str, states: tuple[str, ...] = ("RUNNING", "SUCCEEDED")) -> dict[str, Any]:
    return vertex_spec("proj-t", "us-central1", job_id, list(states), output={"kind": "gcs", "uri": source_uri})


def function(monkeypatch: pytest.MonkeyPatch, **env: str | None) -> Any:
    """on_job_event served by functions-framework with these settings on top of the test's."""
    from batch_relay.settings import load_settings

    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    load_settings.cache_clear()
    return create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()


def copy_failed(relay: Any, name: str, kind: str) -> dict[str, Any]:
    """The copy failed with ``kind``, recorded and announced; the outputsFailed event."""
    copy = relay.store.load(name).copy
    assert copy.status == "failed" and copy.error["kind"] == kind and copy.announced, copy
    [failed] = [m for m in relay.drain() if m["attributes"]["ce-type"] == "batchrelay.job.v1.outputsFailed"]
    validate_event(failed)
    assert failed["data"]["error"]["kind"] == kind
    data: dict[str, Any] = failed
    return data


class Wire(httpx.AsyncBaseTransport):
    """The network, seen: every request is recorded; those ``fail`` matches are answered 503."""

    def __init__(self, fail: Callable[[httpx.Request], bool] | None = None) -> None:
        self.network = httpx.AsyncHTTPTransport()
        self.seen: list[httpx.Request] = []
        self.fail = fail

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.seen.append(request)
        if self.fail is not None and self.fail(request):
            return httpx.Response(503, json={"error": {"code": 503, "message": "injected"}})
        return await self.network.handle_async_request(request)

    async def aclose(self) -> None:
        await self.network.aclose()

    def writes(self) -> list[tuple[str, str | None, dict[str, str]]]:
        """Every object write sent: (object name, its ifGenerationMatch, the metadata it carried)."""
        out = []
        for request in self.seen:
            path, params = request.url.path, request.url.params
            if request.method != "POST" or "rewriteToken" in params:
                continue
            if "/rewriteTo/b/" in path:
                name = path.split("/rewriteTo/b/", 1)[1].split("/o/", 1)[1]
                resource = json.loads(request.content or b"{}")
            elif path.startswith("/upload/storage/v1/b/") and params.get("uploadType") == "multipart":
                resource = json.loads(request.content.split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0])
                name = resource["name"]
            elif path.startswith("/upload/storage/v1/b/"):
                resource = json.loads(request.content or b"{}")
                name = params["name"]
            else:
                continue
            out.append((name, params.get("ifGenerationMatch"), resource.get("metadata") or {}))
        return out


def cloud_event(message: dict[str, Any]) -> dict[str, Any]:
    return {"id": "1", "data": pubsub_envelope(message["attributes"], message["raw"])}


def react(relay: Any, message: dict[str, Any], settings: Settings | None = None,
          transport: httpx.AsyncBaseTransport | None = None) -> Any:
    """The body of on_job_event (``wiring.react_to_cloud_event``) with these settings and transport."""
    from batch_relay import wiring

    return wiring.react_to_cloud_event(cloud_event(message), settings or relay.settings, relay.db, relay.publisher,
                                       transport=transport)


# -- the source: the API's reply at copy time, never the record --------------------------------------------


def test_the_copy_takes_the_apis_output_location_not_the_records(relay, simulator, gcs, function_env, monkeypatch):
    """The probe: a record whose output points at another bucket's folder. The copy takes the location the
    API gives, and nothing of the other bucket lands in the destination."""
    src, other, dst = gcs.bucket("api-src"), gcs.bucket("hr"), gcs.bucket("dst")
    gcs.put(src, "run/prediction-1/predictions.jsonl", b'{"prediction": 1}\n')
    gcs.put(other, "payroll/salaries.csv", SALARIES)
    record, message = succeed(relay, simulator, vertex_job("probe-1", f"gs://{src}/run/prediction-1"),
                              f"gs://{dst}/out")
    forge(relay, record.name, output={"gcs_uri": f"gs://{other}/payroll"})
    assert relay.store.load(record.name).output == {"gcs_uri": f"gs://{other}/payroll"}
    assert deliver(function(monkeypatch), message).status_code == 200
    assert gcs.names(dst) == ["out/_manifest.json", "out/predictions.jsonl"]
    assert gcs.get(dst, "out/predictions.jsonl") == b'{"prediction": 1}\n'
    manifest = json.loads(gcs.get(dst, "out/_manifest.json"))
    assert [o["name"] for o in manifest["objects"]] == ["predictions.jsonl"]
    assert relay.store.load(record.name).copy.status == "done"


@pytest.mark.parametrize("forged", ["output", "state"])
def test_what_the_api_says_decides_and_a_source_outside_the_source_buckets_is_refused(forged, relay, simulator, gcs,
                                                                                      function_env, monkeypatch):
    """``output``: the API names a bucket outside RELAY_SOURCE_BUCKETS (the record, forged, names one inside):
    refused as ``source_not_allowed``. ``state``: a record forged to SUCCEEDED, with its event, while the API
    says the job is running: refused as ``state_mismatch``. Either way nothing lands in the destination."""
    allowed, other, dst = gcs.bucket("vertex-out"), gcs.bucket("hr"), gcs.bucket("dst")
    gcs.put(allowed, "run/prediction-1/predictions.jsonl", b'{"prediction": 1}\n')
    gcs.put(other, "payroll/prediction-hr/salaries.csv", SALARIES)
    if forged == "output":
        record, message = succeed(relay, simulator, vertex_job("src-1", f"gs://{other}/payroll/prediction-hr"),
                                  f"gs://{dst}/out")
        forge(relay, record.name, output={"gcs_uri": f"gs://{allowed}/run/prediction-1"})
        kind = "source_not_allowed"
    else:
        spec = vertex_job("run-1", f"gs://{allowed}/run/prediction-1", states=("RUNNING",))
        simulator.add_job(spec)
        relay.store.track(spec["name"], destination=f"gs://{dst}/out")
        relay.tick()
        relay.drain()
        forge(relay, spec["name"], state="JOB_STATE_SUCCEEDED", terminal=True)
        record = relay.store.load(spec["name"])
        data = json.dumps({"job": record.public(), "state": record.state, "version": 9}).encode()
        attributes = {"ce-type": "batchrelay.job.v1.stateChanged", "ce-id": f"{record.tracking_id}-9",
                      "job": record.name, "ce-subject": record.name, "api": "vertex", "state": record.state}
        message = {"attributes": attributes, "raw": data}
        kind = "state_mismatch"
    response = deliver(function(monkeypatch, RELAY_SOURCE_BUCKETS=allowed), message)
    assert response.status_code == 200  # acked: retrying cannot help
    copy_failed(relay, record.name, kind)
    assert gcs.names(dst) == []


def test_a_gemini_file_name_of_another_shape_is_refused_before_any_download(relay, simulator, gcs, function_env,
                                                                          monkeypatch):
    dst = gcs.bucket("dst")
    spec = gemini_spec("odd-file", ["SUCCEEDED"], output={"kind": "file", "file_id": "batch-1%2Fsecret"})
    record, message = succeed(relay, simulator, spec, f"gs://{dst}/out")
    assert record.output["file_name"] == "files/batch-1%2Fsecret"
    simulator.reset_stats()
    assert deliver(function(monkeypatch), message).status_code == 200
    copy_failed(relay, record.name, "bad_source")
    stats = simulator.stats()
    assert stats["requests"] == stats["status_gets"] == 1  # the batch's status; no download
    assert gcs.names(dst) == []


# -- the destination: RELAY_ALLOWED_BUCKETS --------------------------------------------------------------------


@pytest.mark.parametrize(("allowed", "where", "kind"), [
    ("{dst}/team-a", "team-a/job", None),  # under the allowed prefix
    ("{dst}/team-a", "team-a/nested/job", None),
    ("{dst}/team-a", "team-a-old/job", "not_allowed"),  # a sibling prefix is not under it
    ("{dst}/team-a", "", "not_allowed"),  # the bucket's root is not under it
    ("{other},{dst}/team-b", "team-a/job", "not_allowed"),
    ("*", "anywhere/job", None),  # the explicit opt-in
    (None, "team-a/job", "not_allowed"),  # unset: every copy refused
])
def test_destinations_are_allowed_by_bucket_and_prefix(allowed, where, kind, relay, simulator, gcs, function_env,
                                                       monkeypatch):
    src, dst, other = gcs.bucket("src"), gcs.bucket("dst"), gcs.bucket("other")
    gcs.put(src, "run/prediction-p/predictions.jsonl", b"{}\n")
    destination = f"gs://{dst}/{where}".rstrip("/")
    record, message = succeed(relay, simulator, vertex_job("allow-1", f"gs://{src}/run/prediction-p"), destination)
    value = allowed.format(dst=dst, other=other) if allowed else None
    assert deliver(function(monkeypatch, RELAY_ALLOWED_BUCKETS=value), message).status_code == 200
    if kind is None:
        assert relay.store.load(record.name).copy.status == "done"
        assert gcs.get(dst, f"{where}/predictions.jsonl") == b"{}\n"
    else:
        failed = copy_failed(relay, record.name, kind)
        assert "RELAY_ALLOWED_BUCKETS" in failed["data"]["error"]["message"]
        assert gcs.names(dst) == []


@pytest.mark.parametrize(("allowed", "bucket", "prefix", "expected"), [
    (None, "b", "x", False),
    (frozenset(), "b", "x", False),
    (frozenset({"*"}), "any-bucket", "", True),
    (frozenset({"b"}), "b", "", True),
    (frozenset({"b"}), "b", "x/y", True),
    (frozenset({"b"}), "bb", "x", False),
    (frozenset({"b/x"}), "b", "x", True),
    (frozenset({"b/x"}), "b", "x/y", True),
    (frozenset({"b/x"}), "b", "xy", False),
    (frozenset({"b/x"}), "b", "", False),
    (frozenset({"b/x/y"}), "b", "x", False),
    (frozenset({"c", "b/x"}), "c", "anything", True),
])
def test_destination_allowed(allowed, bucket, prefix, expected):
    assert destination_allowed(allowed, bucket, prefix) is expected


# -- what is in the way: never overwritten unless the relay wrote it for this job -------------------------------


@pytest.mark.parametrize("case", ["someone_elses_object", "another_jobs_object", "someone_elses_manifest"])
def test_a_foreign_object_in_the_way_is_refused_and_left_untouched(case, relay, simulator, gcs, function_env,
                                                                   monkeypatch):
    src, dst = gcs.bucket("src"), gcs.bucket("dst")
    for name in ("a.jsonl", "b.jsonl"):
        gcs.put(src, f"run/prediction-p/{name}", b"the job's " + name.encode())
    if case == "someone_elses_manifest":
        spec = gemini_spec(f"in-the-way-{case}", ["SUCCEEDED"], output={"kind": "inline", "count": 3})
        target = "out/_manifest.json"
    else:
        spec = vertex_job(f"in-the-way-{case.replace('_', '-')}", f"gs://{src}/run/prediction-p")
        target = "out/b.jsonl"
    mark = {"batch-relay-job": "batches/another-job"} if case == "another_jobs_object" else None
    gcs.put(dst, target, b"theirs", metadata=mark)
    before = gcs.meta(dst, target)
    record, message = succeed(relay, simulator, spec, f"gs://{dst}/out")
    assert deliver(function(monkeypatch), message).status_code == 200
    failed = copy_failed(relay, record.name, "foreign_object")
    assert target in failed["data"]["error"]["message"]
    assert gcs.meta(dst, target)["generation"] == before["generation"] and gcs.get(dst, target) == b"theirs"
    assert gcs.names(dst) == [target]  # nothing else written either: every target is looked at first


def test_new_objects_are_written_only_if_absent_and_marked_as_the_relays(relay, simulator, gcs):
    src, dst = gcs.bucket("src"), gcs.bucket("dst")
    for name in ("a.jsonl", "sub/b.jsonl"):
        gcs.put(src, f"run/prediction-p/{name}", b"x" * 10)
    record, message = succeed(relay, simulator, vertex_job("fresh-1", f"gs://{src}/run/prediction-p"), f"gs://{dst}/out")
    wire = Wire()
    from batch_relay.reactor.handler import Reaction

    assert react(relay, message, transport=wire) == Reaction.COPIED
    mark = {"batch-relay-job": record.name, "batch-relay-tracking-id": record.tracking_id}
    assert sorted(wire.writes()) == [(f"out/{n}", "0", mark) for n in ("_manifest.json", "a.jsonl", "sub/b.jsonl")]
    for name in ("a.jsonl", "sub/b.jsonl", "_manifest.json"):
        assert gcs.meta(dst, f"out/{name}")["metadata"] == mark


def test_a_recopy_replaces_the_relays_own_earlier_objects(relay, simulator, gcs):
    """The first attempt writes responses.jsonl, then cannot write its manifest; the recopy replaces that
    responses.jsonl (the relay's own: ifGenerationMatch = its generation) and writes the manifest."""
    from batch_relay import wiring

    dst = gcs.bucket("dst")
    spec = gemini_spec("again-1", ["SUCCEEDED"], output={"kind": "file", "file_id": "batch-again-1", "lines": 50})
    record, message = succeed(relay, simulator, spec, f"gs://{dst}/out")
    first = Wire(fail=lambda r: r.url.params.get("uploadType") == "multipart")  # the manifest's upload
    with pytest.raises(TransientError):
        react(relay, message, dataclasses.replace(relay.settings, max_attempts=1), transport=first)
    assert [(name, at) for name, at, _ in first.writes()] == [("out/responses.jsonl", "0"), ("out/_manifest.json", "0")]
    earlier = gcs.meta(dst, "out/responses.jsonl")
    assert earlier["metadata"]["batch-relay-job"] == record.name
    assert relay.store.load(record.name).copy.status == "copying"

    again = Wire()

    async def recopy() -> dict[str, Any]:
        async with wiring.reactor(relay.settings, relay.db, relay.publisher, transport=again) as reactor:
            return await reactor.recopy(record.name)

    copy = asyncio.run(recopy())
    assert (copy["status"], copy["attempt"]) == ("done", 2)
    assert [(name, at) for name, at, _ in again.writes()] == [
        ("out/responses.jsonl", earlier["generation"]), ("out/_manifest.json", "0")]
    assert gcs.meta(dst, "out/responses.jsonl")["generation"] != earlier["generation"]
    assert len(gcs.get(dst, "out/responses.jsonl").splitlines()) == 50
    assert json.loads(gcs.get(dst, "out/_manifest.json"))["objects"][0]["name"] == "responses.jsonl"


# -- the output wait: RELAY_OUTPUT_WAIT_S --------------------------------------------------------------------


def test_output_not_there_yet_is_redelivered_then_copied_or_failed_as_no_output(relay, simulator, gcs):
    from batch_relay.reactor.handler import Reaction

    dst = gcs.bucket("dst")
    waiting = dataclasses.replace(relay.settings, output_wait_s=3600)
    # 1. SUCCEEDED without an output location yet: the delivery raises (Pub/Sub redelivers), the claim is
    # given back and the first try remembered; once the API shows the output, the redelivery copies it.
    spec = gemini_spec("late-1", ["SUCCEEDED"], output=None)
    record, message = succeed(relay, simulator, spec, f"gs://{dst}/late")
    with pytest.raises(TransientError, match="no output location"):
        react(relay, message, waiting)
    held = relay.store.load(record.name)
    assert held.copy.status == "copying" and held.copy_lease_until <= dt.datetime.now(dt.UTC)
    assert held.copy_waiting_since is not None
    simulator.add_job(gemini_spec("late-1", ["SUCCEEDED"], output={"kind": "inline", "count": 2}))
    assert react(relay, message, waiting) == Reaction.COPIED
    done = relay.store.load(record.name)
    assert done.copy.status == "done" and done.copy_waiting_since is None
    assert len(gcs.get(dst, "late/responses.jsonl").splitlines()) == 2
    # 2. Still nothing once RELAY_OUTPUT_WAIT_S has passed since the job ended: no_output, announced.
    spec = gemini_spec("never-1", ["SUCCEEDED"], output=None)
    record, message = succeed(relay, simulator, spec, f"gs://{dst}/never")
    with pytest.raises(TransientError):
        react(relay, message, waiting)
    short = dataclasses.replace(relay.settings, output_wait_s=1)
    ended = relay.store.load(record.name).end_time
    time.sleep(max(0.0, (ended + dt.timedelta(seconds=1.05) - dt.datetime.now(dt.UTC)).total_seconds()))
    assert react(relay, message, short) == Reaction.FAILED
    failed = copy_failed(relay, record.name, "no_output")
    assert "RELAY_OUTPUT_WAIT_S" in failed["data"]["error"]["message"]
    assert gcs.names(dst, "never") == []


def test_output_wait_counts_from_the_end_time_else_the_first_try() -> None:
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    later = t0 + dt.timedelta(seconds=100)
    assert output_wait_left(t0, None, later, 1800) == 1700  # from the job's end
    assert output_wait_left(t0, later, later, 1800) == 1700  # the end time wins over the first try
    assert output_wait_left(None, t0, later, 1800) == 1700  # no end time: from the first try
    assert output_wait_left(None, None, later, 1800) == 1800  # this is the first try
    assert output_wait_left(t0, None, later, 60) < 0
