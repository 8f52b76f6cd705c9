"""The batch-API simulator over real HTTP: wire formats of both APIs, scripted timelines, faults, latency,
auth, streaming downloads and the admin API."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import httpx
import pytest

from devtools import emulators
from devtools.simulator import gemini_spec, vertex_spec

KEY = {"x-goog-api-key": "any-key"}
BEARER = {"Authorization": "Bearer token-123"}
NS_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
US_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
VJOB = "projects/p1/locations/us-central1/batchPredictionJobs/"


@pytest.fixture
def http(simulator_service):
    with httpx.Client(base_url=simulator_service.url, timeout=10) as client:
        yield client


def gget(http, job_id, **kw):
    return http.get(f"/v1beta/batches/{job_id}", headers=kw.pop("headers", KEY), **kw)


def vget(http, job_id, **kw):
    return http.get(f"/v1/{VJOB}{job_id}", headers=kw.pop("headers", BEARER), **kw)


# ---------------------------------------------------------------------------------------------- Gemini


def test_gemini_lifecycle_wire_details(simulator, http):
    simulator.add_job(gemini_spec("life", [
        "PENDING",
        {"state": "RUNNING", "stats": {"successful": 1, "failed": 0, "incomplete": 9}},
        {"state": "RUNNING", "stats": {"successful": 7, "failed": 1, "incomplete": 2}},
        {"state": "SUCCEEDED", "stats": {"successful": 9, "failed": 1, "incomplete": 0}},
    ], display_name="nightly", output={"kind": "file", "file_id": "batch-life", "lines": 10}))

    first = gget(http, "life")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/json")
    op = first.json()
    assert op["name"] == "batches/life"
    meta = op["metadata"]
    assert meta["@type"] == "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
    assert meta["name"] == "batches/life"
    assert meta["model"] == "models/gemini-2.5-flash"
    assert meta["displayName"] == "nightly"
    assert meta["state"] == "BATCH_STATE_PENDING"
    assert NS_STAMP.match(meta["createTime"]) and NS_STAMP.match(meta["updateTime"])
    assert "endTime" not in meta and "done" not in op and "output" not in meta and "response" not in op
    assert meta["priority"] == "0"  # an unknown field clients must ignore

    running = gget(http, "life").json()
    assert running["metadata"]["state"] == "BATCH_STATE_RUNNING"
    assert running["metadata"]["batchStats"] == {"requestCount": "10", "successfulRequestCount": "1",
                                                 "pendingRequestCount": "9"}  # failed 0: omitted
    assert "done" not in running

    running2 = gget(http, "life").json()
    assert running2["metadata"]["batchStats"] == {"requestCount": "10", "successfulRequestCount": "7",
                                                  "failedRequestCount": "1", "pendingRequestCount": "2"}

    done = gget(http, "life").json()
    meta = done["metadata"]
    assert meta["state"] == "BATCH_STATE_SUCCEEDED"
    assert done["done"] is True
    assert "error" not in done
    assert NS_STAMP.match(meta["endTime"])
    assert meta["batchStats"] == {"requestCount": "10", "successfulRequestCount": "9", "failedRequestCount": "1"}
    assert meta["output"] == {"responsesFile": "files/batch-life"}
    assert done["response"] == {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput",
        "responsesFile": "files/batch-life"}
    assert meta["createTime"] <= meta["updateTime"] == meta["endTime"]

    view = simulator.get("batches/life")
    assert view["state"] == "BATCH_STATE_SUCCEEDED" and view["step"] == 3 and view["polls"] == 1


def test_gemini_inline_results(simulator, http):
    simulator.add_job(gemini_spec("inl", ["SUCCEEDED"], output={"kind": "inline", "count": 3, "errors": 1}))
    op = gget(http, "inl").json()
    items = op["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert [i["metadata"]["key"] for i in items] == ["req-1", "req-2", "req-3"]
    assert items[0]["response"]["candidates"][0]["content"]["parts"][0]["text"]
    assert items[0]["response"]["candidates"][0]["content"]["role"] == "model"
    assert items[2]["error"]["code"] == 3 and "response" not in items[2]
    assert op["response"]["inlinedResponses"]["inlinedResponses"] == items
    # derived stats when the timeline gives none
    assert op["metadata"]["batchStats"] == {"requestCount": "3", "successfulRequestCount": "2",
                                            "failedRequestCount": "1"}


def test_gemini_field_masks_trim_gets_and_list_pages_and_refuse_unknown_fields(simulator, http):
    simulator.add_job(gemini_spec("fm", ["SUCCEEDED"], output={"kind": "inline", "count": 3, "errors": 1,
                                                               "response_bytes": 1000}))
    whole = gget(http, "fm")
    items = whole.json()["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert items[0]["response"]["candidates"][0]["content"]["parts"][1]["text"] == "x" * 1000  # padded
    keys = {"inlinedResponses": {"inlinedResponses": [{"metadata": {"key": f"req-{i}"}} for i in (1, 2, 3)]}}
    expected = {"name": "batches/fm", "metadata": {"state": "BATCH_STATE_SUCCEEDED", "output": keys}}
    mask = "name,metadata(state,output.inlinedResponses.inlinedResponses.metadata),metadata.endTime"
    assert gget(http, "fm", params={"fields": mask}).json() == {
        **expected, "metadata": {**expected["metadata"], "endTime": whole.json()["metadata"]["endTime"]}}
    dotted = "name,metadata.state,metadata.output.inlinedResponses.inlinedResponses.metadata"
    assert gget(http, "fm", params={"$fields": dotted}).json() == expected
    assert gget(http, "fm", headers={**KEY, "X-Goog-FieldMask": dotted}).json() == expected
    for bad in ("metadata.startTime", "metadata(", "nope"):
        refused = gget(http, "fm", params={"fields": bad})
        assert refused.status_code == 400 and refused.json()["error"]["status"] == "INVALID_ARGUMENT"
    page = http.get("/v1beta/batches", headers=KEY, params={"fields": "operations.name,nextPageToken"}).json()
    assert page == {"operations": [{"name": "batches/fm"}]}
    assert http.get("/v1beta/batches", headers=KEY, params={"fields": "operations.bogus"}).status_code == 400
    simulator.add_job(vertex_spec("p1", "us-central1", "77", ["SUCCEEDED"]))
    job = vget(http, "77", params={"fields": "name,state,outputInfo"}).json()
    assert job == {"name": VJOB + "77", "state": "JOB_STATE_SUCCEEDED", "outputInfo": job["outputInfo"]}
    assert vget(http, "77", params={"fields": "name,bogus"}).status_code == 400


def test_gemini_cancel_failed_and_terminal_states(simulator, http):
    simulator.add_jobs([
        gemini_spec("c1", ["PENDING", "RUNNING", "SUCCEEDED"]),
        gemini_spec("f1", ["FAILED"]),
        gemini_spec("f2", [{"state": "FAILED", "error": {"code": 13, "message": "boom"}}]),
        gemini_spec("e1", ["EXPIRED"]),
    ])
    assert gget(http, "c1").json()["metadata"]["state"] == "BATCH_STATE_PENDING"
    reply = http.post("/v1beta/batches/c1:cancel", headers=KEY)
    assert reply.status_code == 200 and reply.json() == {}
    op = gget(http, "c1").json()
    assert op["metadata"]["state"] == "BATCH_STATE_CANCELLED"
    assert op["done"] is True and op["error"]["code"] == 1 and "response" not in op
    assert "output" not in op["metadata"]
    # cancelling a terminal job changes nothing; the timeline stopped
    assert http.post("/v1beta/batches/c1:cancel", headers=KEY).json() == {}
    assert gget(http, "c1").json()["metadata"]["state"] == "BATCH_STATE_CANCELLED"

    failed = gget(http, "f1").json()
    assert failed["done"] is True and failed["error"]["code"] == 8 and failed["error"]["message"]
    assert gget(http, "f2").json()["error"] == {"code": 13, "message": "boom"}
    expired = gget(http, "e1").json()
    assert expired["done"] is True and expired["metadata"]["state"] == "BATCH_STATE_EXPIRED"
    assert http.post("/v1beta/batches/nope:cancel", headers=KEY).status_code == 404


def test_gemini_delete_then_404(simulator, http):
    simulator.add_job(gemini_spec("del", ["RUNNING"]))
    assert gget(http, "del").status_code == 200
    reply = http.delete("/v1beta/batches/del", headers=KEY)
    assert reply.status_code == 200 and reply.json() == {}
    gone = gget(http, "del")
    assert gone.status_code == 404
    assert gone.json()["error"]["status"] == "NOT_FOUND" and gone.json()["error"]["code"] == 404
    assert "not found" in gone.json()["error"]["message"]
    assert http.delete("/v1beta/batches/del", headers=KEY).status_code == 404
    # admin delete
    simulator.add_job(gemini_spec("del2", ["RUNNING"]))
    simulator.delete("batches/del2")
    assert gget(http, "del2").status_code == 404
    with pytest.raises(RuntimeError, match="404"):
        simulator.get("batches/del2")


def test_gemini_list_pagination(simulator, http):
    simulator.add_jobs([gemini_spec(f"l{i}", ["RUNNING"]) for i in range(5)])
    simulator.add_job(vertex_spec("p1", "us-central1", "v1", ["RUNNING"]))  # not listed by Gemini
    names, token, pages = [], None, 0
    while True:
        params = {"pageSize": 2, **({"pageToken": token} if token else {})}
        body = http.get("/v1beta/batches", params=params, headers=KEY).json()
        pages += 1
        assert len(body["operations"]) <= 2
        names += [op["name"] for op in body["operations"]]
        assert all(op["metadata"]["state"] == "BATCH_STATE_RUNNING" for op in body["operations"])
        token = body.get("nextPageToken")
        if not token:
            break
    assert pages == 3
    assert names == [f"batches/l{i}" for i in range(5)]
    assert http.get("/v1beta/batches", params={"pageToken": "garbage!"}, headers=KEY).status_code == 400
    assert http.get("/v1beta/batches", headers={}).status_code == 403


def test_gemini_states_validated(simulator):
    for bad in ("QUEUED", "PAUSED", "PARTIALLY_SUCCEEDED", "CANCELLING", "JOB_STATE_UPDATING", "NOPE"):
        with pytest.raises(RuntimeError, match="400"):
            simulator.add_job(gemini_spec("bad", ["PENDING", bad]))
    simulator.add_job(gemini_spec("ok", ["BATCH_STATE_PENDING", "JOB_STATE_RUNNING", "UNSPECIFIED"]))
    with pytest.raises(RuntimeError, match="400"):
        simulator.set_state("batches/ok", "PAUSED")
    with pytest.raises(RuntimeError, match="400"):
        simulator.add_jobs([{"name": "not-a-job-name"}])


# ---------------------------------------------------------------------------------------------- Vertex


def test_vertex_lifecycle(simulator, http):
    simulator.add_job(vertex_spec("p1", "us-central1", "123", [
        "QUEUED",
        {"state": "RUNNING", "stats": {"successful": 1, "failed": 0, "incomplete": -1}},
        {"state": "SUCCEEDED", "stats": {"successful": 10, "failed": 1, "incomplete": 0}},
    ], display_name="vjob", labels={"team": "ml"},
        output={"kind": "gcs", "uri": "gs://out/x/prediction-model-2025-09-19T21:26:51.569037Z"}))
    queued = vget(http, "123").json()
    assert queued["name"] == VJOB + "123"
    assert queued["state"] == "JOB_STATE_QUEUED"
    assert queued["displayName"] == "vjob" and queued["labels"] == {"team": "ml"}
    assert queued["model"] == "publishers/google/models/gemini-2.5-flash"
    assert queued["inputConfig"]["instancesFormat"] == "jsonl"
    assert queued["outputConfig"] == {"predictionsFormat": "jsonl",
                                      "gcsDestination": {"outputUriPrefix": "gs://out/x"}}
    assert "outputInfo" not in queued and "startTime" not in queued and "endTime" not in queued
    assert "done" not in queued and "metadata" not in queued and "error" not in queued
    assert US_STAMP.match(queued["createTime"]) and US_STAMP.match(queued["updateTime"])
    assert "satisfiesPzs" in queued  # an unknown field

    running = vget(http, "123").json()
    assert running["state"] == "JOB_STATE_RUNNING"
    assert running["completionStats"] == {"successfulCount": "1", "failedCount": "0", "incompleteCount": "-1"}
    assert running["outputInfo"] == {
        "gcsOutputDirectory": "gs://out/x/prediction-model-2025-09-19T21:26:51.569037Z"}
    assert US_STAMP.match(running["startTime"]) and "endTime" not in running

    done = vget(http, "123").json()
    assert done["state"] == "JOB_STATE_SUCCEEDED"
    assert done["completionStats"] == {"successfulCount": "10", "failedCount": "1", "incompleteCount": "0"}
    assert US_STAMP.match(done["endTime"]) and "error" not in done and "done" not in done


def test_vertex_bigquery_and_other_states(simulator, http):
    simulator.add_jobs([
        vertex_spec("p1", "us-central1", "bq", ["PARTIALLY_SUCCEEDED"],
                    output={"kind": "bigquery", "table": "bq://proj.ds.predictions_2025"}),
        vertex_spec("p1", "us-central1", "st", ["PENDING", "RUNNING", "UPDATING", "PAUSED", "EXPIRED"]),
        vertex_spec("p1", "us-central1", "fl", ["FAILED"]),
    ])
    bq = vget(http, "bq").json()
    assert bq["state"] == "JOB_STATE_PARTIALLY_SUCCEEDED"
    assert bq["outputConfig"]["bigqueryDestination"]["outputUri"] == "bq://proj.ds"
    assert bq["outputInfo"]["bigqueryOutputTable"] == "bq://proj.ds.predictions_2025"
    seen = [vget(http, "st").json()["state"] for _ in range(5)]
    assert seen == ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_UPDATING", "JOB_STATE_PAUSED",
                    "JOB_STATE_EXPIRED"]
    failed = vget(http, "fl").json()
    assert failed["error"] == {"code": 8, "message": failed["error"]["message"], "details": []}
    simulator.set_state(VJOB + "fl", "JOB_STATE_CANCELLING")
    assert vget(http, "fl").json()["state"] == "JOB_STATE_CANCELLING"


def test_vertex_cancel_goes_through_cancelling(simulator, http):
    simulator.add_job(vertex_spec("p1", "us-central1", "c", ["RUNNING", "SUCCEEDED"]))
    assert vget(http, "c").json()["state"] == "JOB_STATE_RUNNING"
    reply = http.post(f"/v1/{VJOB}c:cancel", headers=BEARER)
    assert reply.status_code == 200 and reply.json() == {}
    assert simulator.get(VJOB + "c")["state"] == "JOB_STATE_CANCELLING"
    job = vget(http, "c").json()
    assert job["state"] == "JOB_STATE_CANCELLED"
    assert job["error"]["code"] == 1 and job["error"]["details"] == []
    assert "endTime" in job
    assert vget(http, "c").json()["state"] == "JOB_STATE_CANCELLED"


def test_vertex_list_filter_and_pagination(simulator, http):
    specs = [vertex_spec("p1", "us-central1", f"r{i}", ["RUNNING"]) for i in range(5)]
    specs += [vertex_spec("p1", "us-central1", f"q{i}", ["QUEUED"]) for i in range(2)]
    specs += [vertex_spec("p1", "europe-west4", "other", ["RUNNING"])]
    simulator.add_jobs(specs)
    base = f"/v1/{VJOB[:-1]}"
    names, token = [], None
    for _ in range(10):
        params = {"filter": 'state="JOB_STATE_RUNNING"', "pageSize": 2, **({"pageToken": token} if token else {})}
        body = http.get(base, params=params, headers=BEARER).json()
        names += [job["name"] for job in body.get("batchPredictionJobs", [])]
        token = body.get("nextPageToken")
        if not token:
            break
    assert names == [VJOB + f"r{i}" for i in range(5)]
    everything = http.get(base, headers=BEARER).json()
    assert len(everything["batchPredictionJobs"]) == 7 and "nextPageToken" not in everything
    assert http.get(base, params={"filter": "state = (x"}, headers=BEARER).status_code == 400
    assert http.get(base, headers={}).status_code == 401


def test_vertex_auth_and_user_project(simulator, http):
    simulator.add_job(vertex_spec("p1", "us-central1", "a", ["RUNNING"]))
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        reply = vget(http, "a", headers=headers)
        assert reply.status_code == 401
        err = reply.json()["error"]
        assert err["code"] == 401 and err["status"] == "UNAUTHENTICATED"
        assert err["message"].startswith("Request is missing required authentication credential.")
    vget(http, "a", headers={**BEARER, "x-goog-user-project": "quota-proj"})
    assert vget(http, "missing").json()["error"]["status"] == "NOT_FOUND"
    stats = simulator.stats()
    assert stats["user_projects"] == ["quota-proj"]
    assert stats["by_code"] == {"200": 1, "401": 3, "404": 1}
    assert stats["per_job_gets"][VJOB + "a"] == 1  # auth failures never reach the job


# ---------------------------------------------------------------------------------------------- auth


def test_gemini_api_key(simulator, http):
    simulator.add_job(gemini_spec("k", ["RUNNING"]))
    missing = gget(http, "k", headers={})
    assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
    assert gget(http, "k", headers={"x-goog-api-key": "whatever"}).status_code == 200  # no key configured
    simulator.configure(api_key="sekrit")
    wrong = gget(http, "k", headers={"x-goog-api-key": "nope"})
    assert wrong.status_code == 400
    assert wrong.json() == {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                                      "status": "INVALID_ARGUMENT"}}
    assert gget(http, "k", headers={"x-goog-api-key": "sekrit"}).status_code == 200
    assert http.get("/v1beta/batches/k", params={"key": "sekrit"}).status_code == 200
    simulator.configure(api_key=None)
    assert gget(http, "k", headers={"x-goog-api-key": "nope"}).status_code == 200


def test_command_line_flags():
    service = emulators.start_simulator(extra_args=["--api-key", "cli-key", "--latency-ms", "150", "--seed", "3"])
    try:
        from devtools.simulator import SimulatorClient

        with SimulatorClient(service.url) as sim, httpx.Client(base_url=service.url, timeout=5) as http:
            sim.add_job(gemini_spec("x", ["RUNNING"]))
            assert gget(http, "x", headers={"x-goog-api-key": "bad"}).status_code == 400
            start = time.perf_counter()
            assert gget(http, "x", headers={"x-goog-api-key": "cli-key"}).status_code == 200
            assert time.perf_counter() - start >= 0.15
            sim.reset()  # back to the command-line config, not to nothing
            sim.add_job(gemini_spec("x", ["RUNNING"]))
            assert gget(http, "x", headers={"x-goog-api-key": "bad"}).status_code == 400
    finally:
        service.stop()
    assert not service.alive()


# ---------------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize(("kind", "code", "status"), [
    ("429", 429, "RESOURCE_EXHAUSTED"), ("500", 500, "INTERNAL"), ("503", 503, "UNAVAILABLE"),
    ("404", 404, "NOT_FOUND"), ("403", 403, "PERMISSION_DENIED"),
])
def test_status_faults(simulator, http, kind, code, status):
    simulator.add_job(gemini_spec("f", ["PENDING", "RUNNING"], faults=[{"kind": kind, "count": 2}]))
    for _ in range(2):
        reply = gget(http, "f")
        assert reply.status_code == code
        assert reply.json()["error"]["status"] == status and reply.json()["error"]["code"] == code
        assert "retry-after" not in reply.headers
    # faulted GETs are not polls: the job is still at its first step
    assert gget(http, "f").json()["metadata"]["state"] == "BATCH_STATE_PENDING"
    assert gget(http, "f").json()["metadata"]["state"] == "BATCH_STATE_RUNNING"
    assert simulator.stats()["per_job_gets"]["batches/f"] == 4


def test_retry_after_and_fault_order(simulator, http):
    simulator.add_job(vertex_spec("p1", "us-central1", "r", ["RUNNING"], faults=[
        {"kind": "429", "retry_after": 1, "count": 1}, {"kind": "503"}, {"kind": "429"}]))
    first = vget(http, "r")
    assert first.status_code == 429 and first.headers["retry-after"] == "1"
    assert first.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert vget(http, "r").status_code == 503
    third = vget(http, "r")
    assert third.status_code == 429 and "retry-after" not in third.headers
    assert vget(http, "r").status_code == 200
    assert simulator.get(VJOB + "r")["faults_left"] == 0


def test_malformed_and_garbage(simulator, http):
    simulator.add_jobs([
        gemini_spec("m", ["RUNNING"], faults=[{"kind": "malformed"}, {"kind": "garbage"}]),
        vertex_spec("p1", "us-central1", "g", ["RUNNING"], faults=["garbage"]),
    ])
    bad = gget(http, "m")
    assert bad.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad.text)
    garbage = gget(http, "m")
    assert garbage.status_code == 200 and not isinstance(garbage.json()["metadata"], dict)
    assert not isinstance(vget(http, "g").json()["state"], str)
    assert gget(http, "m").json()["metadata"]["state"] == "BATCH_STATE_RUNNING"


def test_slow_fault_times_out_and_does_not_advance(simulator, http):
    simulator.add_job(gemini_spec("s", ["PENDING", "RUNNING"], faults=[{"kind": "slow", "delay_s": 2}]))
    start = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        gget(http, "s", timeout=0.4)
    assert time.perf_counter() - start < 1.5
    assert gget(http, "s").json()["metadata"]["state"] == "BATCH_STATE_PENDING"
    assert gget(http, "s").json()["metadata"]["state"] == "BATCH_STATE_RUNNING"
    assert simulator.stats()["in_flight"] == 0  # the abandoned slow reply was dropped with its connection


def test_drop_fault(simulator, http):
    simulator.add_job(gemini_spec("d", ["RUNNING"], faults=["drop"]))
    with pytest.raises(httpx.TransportError):
        gget(http, "d")
    assert gget(http, "d").status_code == 200


def test_random_faults(simulator, http):
    simulator.add_jobs([gemini_spec(f"r{i}", ["RUNNING"]) for i in range(3)])
    simulator.configure(random_faults={"rate": 1.0, "kinds": ["503"], "seed": 1})
    assert {gget(http, f"r{i}").status_code for i in range(3)} == {503}
    assert http.get("/v1beta/batches", headers=KEY).status_code == 503
    simulator.configure(random_faults={"rate": 0.5, "kinds": ["429", "500"], "seed": 7})
    codes = [gget(http, "r0").status_code for _ in range(40)]
    assert 5 < codes.count(200) < 35 and set(codes) <= {200, 429, 500}
    simulator.configure(random_faults=None)
    assert all(gget(http, "r1").status_code == 200 for _ in range(5))


# ---------------------------------------------------------------------------------------------- timing


def test_latency_applied_to_api_not_admin(simulator, simulator_service, http):
    simulator.add_job(gemini_spec("lat", ["RUNNING"]))
    simulator.configure(latency_ms=200)
    start = time.perf_counter()
    assert gget(http, "lat").status_code == 200
    assert time.perf_counter() - start >= 0.2
    start = time.perf_counter()
    simulator.stats()
    assert time.perf_counter() - start < 0.15
    # concurrent requests overlap in the latency wait
    simulator.reset_stats()
    threads = [threading.Thread(target=lambda: httpx.get(f"{simulator_service.url}/v1beta/batches/lat",
                                                         headers=KEY, timeout=5)) for _ in range(8)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - start < 1.2
    stats = simulator.stats()
    assert stats["max_in_flight"] >= 4 and stats["requests"] == 8 and stats["status_gets"] == 8


def test_after_s_timeline(simulator, http):
    simulator.add_job(gemini_spec("t", ["PENDING", {"state": "RUNNING", "after_s": 0.3},
                                        {"state": "SUCCEEDED", "after_s": 0.3}]))
    assert gget(http, "t").json()["metadata"]["state"] == "BATCH_STATE_PENDING"
    time.sleep(0.35)
    assert gget(http, "t").json()["metadata"]["state"] == "BATCH_STATE_RUNNING"
    time.sleep(0.3)
    # a list sees timed transitions too, without counting a poll
    ops = http.get("/v1beta/batches", headers=KEY).json()["operations"]
    assert ops[0]["metadata"]["state"] == "BATCH_STATE_SUCCEEDED" and ops[0]["done"] is True
    assert simulator.get("batches/t")["polls"] == 0


def test_after_polls_counts(simulator, http):
    simulator.add_job(gemini_spec("p", ["PENDING", {"state": "RUNNING", "after_polls": 3}]))
    states = [gget(http, "p").json()["metadata"]["state"] for _ in range(4)]
    assert states == ["BATCH_STATE_PENDING"] * 3 + ["BATCH_STATE_RUNNING"]


# ---------------------------------------------------------------------------------------------- download


def test_file_download_streams(simulator, http):
    lines, line_bytes = 20_000, 256  # ~5 MiB
    simulator.add_job(gemini_spec("dl", ["RUNNING", "SUCCEEDED"], output={
        "kind": "file", "file_id": "batch-dl-" + "x" * 40, "lines": lines, "line_bytes": line_bytes,
        "errors": 5}))
    url = "/download/v1beta/files/batch-dl-" + "x" * 40 + ":download"
    assert http.get(url, params={"alt": "media"}, headers=KEY).status_code == 404  # not finished yet
    op = gget(http, "dl").json()
    assert gget(http, "dl").json()["metadata"]["output"]["responsesFile"] == "files/batch-dl-" + "x" * 40
    assert "output" not in op["metadata"]
    assert http.get(url, params={"alt": "media"}).status_code == 403

    count = errors = size = 0
    with http.stream("GET", url, params={"alt": "media"}, headers=KEY) as reply:
        assert reply.status_code == 200
        length = int(reply.headers["content-length"])
        for line in reply.iter_lines():
            if not line:
                continue
            record = json.loads(line)
            count += 1
            size += len(line) + 1
            assert record["key"] == f"req-{count}"
            errors += "error" in record
            assert ("response" in record) != ("error" in record)
    assert count == lines and errors == 5
    assert size == length == lines * line_bytes
    assert length > 5 * 1024 * 1024 - 200_000

    # the SDK's path redirects to the download path
    sdk = http.get("/v1beta/files/batch-dl-" + "x" * 40 + ":download", params={"alt": "media"}, headers=KEY)
    assert sdk.status_code == 302 and "/download/v1beta/files/" in sdk.headers["location"]
    followed = http.get("/v1beta/files/batch-dl-" + "x" * 40 + ":download", params={"alt": "media"},
                        headers=KEY, follow_redirects=True)
    assert followed.status_code == 200 and len(followed.content) == length


def test_chunked_download(simulator, http):
    simulator.add_job(gemini_spec("ck", ["SUCCEEDED"], output={
        "kind": "file", "file_id": "batch-ck", "lines": 3000, "line_bytes": 10, "chunked": True}))
    with http.stream("GET", "/download/v1beta/files/batch-ck:download", params={"alt": "media"},
                     headers=KEY) as reply:
        assert reply.headers["transfer-encoding"] == "chunked" and "content-length" not in reply.headers
        rows = [json.loads(line) for line in reply.iter_lines() if line]
    assert len(rows) == 3000 and rows[-1]["key"] == "req-3000"
    assert http.get("/download/v1beta/files/nope:download", headers=KEY).status_code == 404


# ---------------------------------------------------------------------------------------------- admin, HTTP


def test_admin_set_get_stats(simulator, http):
    name = simulator.add_job(gemini_spec("a", ["PENDING", "RUNNING", "SUCCEEDED"]))
    gget(http, "a")
    view = simulator.set_state(name, "RUNNING", stats={"successful": 2, "incomplete": 3})
    assert view["state"] == "BATCH_STATE_RUNNING"
    op = gget(http, "a").json()
    assert op["metadata"]["batchStats"] == {"requestCount": "5", "successfulRequestCount": "2",
                                            "pendingRequestCount": "3"}
    assert gget(http, "a").json()["metadata"]["state"] == "BATCH_STATE_RUNNING"  # timeline dropped
    got = simulator.get(name)
    assert got == {**got, "name": name, "state": "BATCH_STATE_RUNNING", "polls": 2, "step": 0}
    stats = simulator.stats()
    assert stats["requests"] == 3 and stats["status_gets"] == 3 and stats["by_code"] == {"200": 3}
    assert stats["per_job_gets"] == {name: 3} and stats["max_in_flight"] >= 1
    simulator.reset_stats()
    assert simulator.stats()["requests"] == 0
    unknown = http.get("/v2/nothing", headers=KEY)
    assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"
    assert http.get("/_sim/health").json()["ok"] is True
    assert http.post("/_sim/nothing", json={}).status_code == 404
    assert http.post("/_sim/jobs", content=b"{not json").status_code == 400


def test_bulk_create_is_fast(simulator, http):
    specs = [gemini_spec(f"b{i}", ["PENDING", "RUNNING", "SUCCEEDED"],
                         output={"kind": "file", "lines": 10}) for i in range(10_000)]
    start = time.perf_counter()
    assert simulator.add_jobs(specs) == 10_000
    assert time.perf_counter() - start < 3.0
    assert gget(http, "b9999").json()["metadata"]["state"] == "BATCH_STATE_PENDING"


def test_keep_alive_and_pipelining(simulator, simulator_service):
    simulator.add_job(gemini_spec("pl", ["RUNNING"]))
    port = int(simulator_service.url.rsplit(":", 1)[1])
    request = b"GET /v1beta/batches/pl HTTP/1.1\r\nHost: x\r\nx-goog-api-key: k\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request + request + b"GET /_sim/health HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.rstrip().endswith(b'"jobs": 1}')
    assert simulator.get("batches/pl")["polls"] == 2


def test_keep_alive_reuses_one_connection(simulator, simulator_service):
    simulator.add_job(gemini_spec("ka", ["RUNNING"]))
    simulator.reset_stats()
    with httpx.Client(base_url=simulator_service.url, headers=KEY) as client:
        for _ in range(20):
            assert client.get("/v1beta/batches/ka").status_code == 200
    stats = simulator.stats()
    assert stats["requests"] == 20
    assert stats["connections_opened"] <= 2  # the client's one connection (+ the stats call itself)


# ---------------------------------------------------------------------------------------------- lists


def vlist(http, params=None, parent=VJOB[:-1]):
    return http.get(f"/v1/{parent}", params=params or {}, headers=BEARER)


def test_vertex_filter_subset_as_aip160_reads_it(simulator, http):
    simulator.add_jobs([
        vertex_spec("p1", "us-central1", "run-old", ["RUNNING"], created_ago_s=7200, labels={"team": "a"}),
        vertex_spec("p1", "us-central1", "done-old", ["SUCCEEDED"], created_ago_s=7200, display_name="nightly-1"),
        vertex_spec("p1", "us-central1", "done-new", ["SUCCEEDED"], labels={"team": "b"}),
    ])
    cut = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))

    def names(flt):
        reply = vlist(http, {"filter": flt})
        assert reply.status_code == 200, reply.text
        return sorted(j["name"].rsplit("/", 1)[1] for j in reply.json().get("batchPredictionJobs", []))

    assert names(f'create_time>="{cut}"') == ["done-new"]
    assert names(f'state="JOB_STATE_RUNNING" OR create_time>="{cut}"') == ["done-new", "run-old"]
    # OR binds tighter than AND (AIP-160): a AND b OR c is a AND (b OR c)
    assert names(f'labels.team:* AND state="JOB_STATE_RUNNING" OR create_time>="{cut}"') == ["done-new", "run-old"]
    assert names(f'(labels.team=a) AND (state="JOB_STATE_RUNNING" OR create_time>="{cut}")') == ["run-old"]
    assert names('NOT state="JOB_STATE_SUCCEEDED"') == ["run-old"]
    assert names('display_name:"nightly-*"') == ["done-old"]
    for bad in ("state = (x", "owner=me", 'create_time>"yesterday"', "state<JOB_STATE_RUNNING", "(state=x"):
        assert vlist(http, {"filter": bad}).status_code == 400, bad
    assert simulator.stats()["list_filters"][-1] == "(state=x"


def test_list_page_caps_tokens_and_read_mask(simulator, http):
    simulator.add_jobs([vertex_spec("p1", "us-central1", f"m{i}", ["RUNNING"]) for i in range(5)])
    simulator.configure(list_page_max={"vertex": 2})
    first = vlist(http, {"pageSize": 1000, "readMask": "name,state,completion_stats"}).json()
    assert len(first["batchPredictionJobs"]) == 2  # capped, whatever was asked
    assert all(set(job) <= {"name", "state", "completionStats"} for job in first["batchPredictionJobs"])
    second = vlist(http, {"pageSize": 1000, "pageToken": first["nextPageToken"]}).json()
    assert len(second["batchPredictionJobs"]) == 2 and "inputConfig" in second["batchPredictionJobs"][0]
    # a token of one parent is refused by another
    other = vlist(http, {"pageToken": first["nextPageToken"]},
                  parent="projects/p1/locations/asia-east1/batchPredictionJobs")
    assert other.status_code == 400
    assert http.get("/v1beta/batches", params={"filter": 'state="x"'}, headers=KEY).status_code == 400


def test_stale_pages_and_list_faults(simulator, http):
    name = simulator.add_job(vertex_spec("p1", "us-central1", "s1", ["QUEUED"]))
    simulator.set_state(name, "RUNNING")
    simulator.stale_lists(name, 1)
    stale = vlist(http).json()["batchPredictionJobs"][0]
    fresh = vlist(http).json()["batchPredictionJobs"][0]
    assert stale["state"] == "JOB_STATE_QUEUED" and fresh["state"] == "JOB_STATE_RUNNING"
    assert stale["updateTime"] < fresh["updateTime"]
    assert vget(http, "s1").json()["state"] == "JOB_STATE_RUNNING"  # a GET is never stale
    simulator.list_faults("vertex", [{"kind": "malformed"}, {"kind": "foreign_names"}, {"kind": "no_names"},
                                     {"kind": "endless"}, {"kind": "503"}])
    with pytest.raises(ValueError):
        json.loads(vlist(http).content)
    assert vlist(http).json()["batchPredictionJobs"][0]["name"].startswith("projects/elsewhere/locations/mars/")
    assert "name" not in vlist(http).json()["batchPredictionJobs"][0]
    endless = vlist(http).json()
    assert endless["nextPageToken"] and vlist(http, {"pageToken": endless["nextPageToken"]}).status_code == 503
    assert vlist(http).json()["batchPredictionJobs"][0]["name"] == name


def test_vertex_names_with_project_numbers(simulator, http):
    simulator.configure(project_numbers={"p1": "123456"})
    simulator.add_job(vertex_spec("p1", "us-central1", "n1", ["RUNNING"]))
    by_id = vget(http, "n1").json()
    assert by_id["name"] == "projects/123456/locations/us-central1/batchPredictionJobs/n1"
    assert http.get("/v1/projects/123456/locations/us-central1/batchPredictionJobs/n1",
                    headers=BEARER).json()["name"] == by_id["name"]
    listed = vlist(http, parent="projects/123456/locations/us-central1/batchPredictionJobs").json()
    listed = listed["batchPredictionJobs"]
    assert [j["name"] for j in listed] == [by_id["name"]]
    assert [j["name"] for j in vlist(http).json()["batchPredictionJobs"]] == [by_id["name"]]


# ---------------------------------------------------------------------------------------------- results (A10)


def _until(check, timeout_s=30.0):
    """Poll ``check`` until it returns something truthy (no fixed sleep: a loaded machine only waits longer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def _read(api, lines, **kw):
    from batch_relay.results.summary import ResultsReader

    reader = ResultsReader(api, **kw)
    for line in lines:
        reader.feed(line if isinstance(line, bytes) else line.encode())
    return reader


def test_gemini_results_file_with_usage_errors_and_its_input_file(simulator, http):
    simulator.add_job(gemini_spec("res", ["RUNNING", "SUCCEEDED"], requests={
        "count": 6, "failed": 2, "error_codes": [3, 13], "without_usage": 1,
        "usage": {"prompt": 20, "candidates": 5, "thoughts": 2, "cached": 8}}))
    running = gget(http, "res").json()
    assert running["metadata"]["inputConfig"] == {"fileName": "files/input-res"}
    assert running["metadata"]["batchStats"] == {"requestCount": "6", "pendingRequestCount": "6"}
    done = gget(http, "res").json()
    assert done["metadata"]["batchStats"] == {"requestCount": "6", "successfulRequestCount": "4",
                                              "failedRequestCount": "2"}
    assert done["metadata"]["output"] == {"responsesFile": "files/batch-res"} == {
        k: v for k, v in done["response"].items() if k != "@type"}
    rows = [json.loads(x) for x in http.get("/download/v1beta/files/batch-res:download", headers=KEY).content.split(
        b"\n") if x]
    assert [r["key"] for r in rows] == [f"req-{i}" for i in range(1, 7)]
    assert [r["error"]["code"] for r in rows if "error" in r] == [3, 13]
    assert "usageMetadata" not in rows[0]["response"]
    assert rows[1]["response"]["usageMetadata"] == {"promptTokenCount": 20, "candidatesTokenCount": 5,
                                                    "thoughtsTokenCount": 2, "cachedContentTokenCount": 8,
                                                    "totalTokenCount": 27}
    inputs = http.get("/download/v1beta/files/input-res:download", params={"alt": "media"}, headers=KEY)
    assert inputs.status_code == 200
    requests = [json.loads(x) for x in inputs.content.splitlines()]
    assert requests[4] == {"key": "req-5", "request": {"contents": [{"role": "user", "parts": [
        {"text": "prompt 5"}]}]}}
    # what batch-relay reads from it: the counts, the usage, the failed requests joined with the input
    reader = _read("gemini", [json.dumps(r) for r in rows])
    reader.feed_input_chunk(inputs.content)
    summary = reader.finish()
    assert (summary.succeeded, summary.failed, summary.rows_without_usage) == (4, 2, 1)
    assert (summary.usage.prompt, summary.usage.total, summary.errors) == (60, 81, {"3": 1, "13": 1})
    assert [json.loads(x) for x in reader.failed_lines.getvalue().splitlines()] == requests[4:]
    assert simulator.outputs("batches/res")["files"]["responses.jsonl"].splitlines() == [
        json.dumps(r) for r in rows]


def test_gemini_inline_results_come_back_shuffled_with_inline_requests(simulator, http):
    simulator.add_job(gemini_spec("inl2", ["SUCCEEDED"], output={"kind": "inline"}, requests={
        "count": 12, "failed": 3, "input": "inline", "shuffle": True}))
    meta = gget(http, "inl2").json()["metadata"]
    items = meta["output"]["inlinedResponses"]["inlinedResponses"]
    keys = [item["metadata"]["key"] for item in items]
    assert sorted(keys, key=lambda k: int(k[4:])) == [f"req-{i}" for i in range(1, 13)]
    assert keys != sorted(keys, key=lambda k: int(k[4:]))  # another order than the requests
    assert {item["metadata"]["key"] for item in items if "error" in item} == {"req-10", "req-11", "req-12"}
    sent = meta["inputConfig"]["requests"]["requests"]
    assert sent[0] == {"request": {"contents": [{"role": "user", "parts": [{"text": "prompt 1"}]}]},
                       "metadata": {"key": "req-1"}}
    reader = _read("gemini", [])
    for item in items:
        reader.feed_inline(item)
    for item in sent:
        reader.feed_inline_request(item)
    summary = reader.finish()
    assert (summary.failed, summary.missing, summary.failed_lines) == (3, 0, 3)
    assert http.get("/download/v1beta/files/input-inl2:download", headers=KEY).status_code == 404


def test_gemini_input_file_gone(simulator, http):
    simulator.add_job(gemini_spec("gone", ["SUCCEEDED"], requests={"count": 2, "failed": 1, "input": "gone"}))
    assert gget(http, "gone").json()["metadata"]["inputConfig"] == {"fileName": "files/input-gone"}
    reply = http.get("/download/v1beta/files/input-gone:download", headers=KEY)
    assert reply.status_code == 404 and reply.json()["error"]["status"] == "NOT_FOUND"


def test_outputs_appear_a_while_after_success(simulator, http):
    simulator.add_jobs([
        gemini_spec("late", ["SUCCEEDED"], output={"kind": "file", "delay_s": 3600}, requests={"count": 2}),
        gemini_spec("soon", ["SUCCEEDED"], output={"kind": "file", "delay_s": 0.2}, requests={"count": 2}),
        vertex_spec("p1", "us-central1", "late", ["SUCCEEDED"], output={"kind": "gcs", "uri": "gs://b/x",
                                                                         "delay_s": 3600}),
    ])
    late = gget(http, "late").json()
    assert late["metadata"]["state"] == "BATCH_STATE_SUCCEEDED" and late["done"] is True
    assert "output" not in late["metadata"] and "response" not in late
    assert http.get("/download/v1beta/files/batch-late:download", headers=KEY).status_code == 404
    assert "outputInfo" not in vget(http, "late").json()
    soon = _until(lambda: gget(http, "soon").json()["metadata"].get("output"))
    assert soon == {"responsesFile": "files/batch-soon"}
    assert http.get("/download/v1beta/files/batch-soon:download", headers=KEY).status_code == 200
    assert simulator.get("batches/late")["output_ready"] is False


def test_partial_outputs_when_a_batch_is_cancelled_or_expires(simulator, http, gcs):
    bucket = gcs.bucket("sim-out")
    simulator.configure(storage_url=gcs.url)
    simulator.add_jobs([
        gemini_spec("cx", ["PENDING", "RUNNING"], requests={"count": 5, "failed": 1, "finished": 3}),
        gemini_spec("cx0", ["PENDING"], requests={"count": 5}),
        vertex_spec("p1", "us-central1", "exp", ["RUNNING", "EXPIRED"], output={
            "kind": "gcs", "uri": f"gs://{bucket}/runs"}, requests={"count": 4, "finished": 2}),
    ])
    gget(http, "cx")
    gget(http, "cx")
    assert http.post("/v1beta/batches/cx:cancel", headers=KEY).status_code == 200
    assert http.post("/v1beta/batches/cx0:cancel", headers=KEY).status_code == 200
    op = gget(http, "cx").json()
    assert op["error"]["code"] == 1 and op["metadata"]["output"] == {"responsesFile": "files/batch-cx"}
    assert op["metadata"]["batchStats"] == {"requestCount": "5", "successfulRequestCount": "3",
                                            "pendingRequestCount": "2"}
    rows = http.get("/download/v1beta/files/batch-cx:download", headers=KEY).content.splitlines()
    assert [json.loads(r)["key"] for r in rows] == ["req-1", "req-2", "req-3"]
    assert "output" not in gget(http, "cx0").json()["metadata"]  # nothing finished: no output (as before)

    vget(http, "exp")
    job = vget(http, "exp").json()
    assert job["state"] == "JOB_STATE_EXPIRED"
    assert job["completionStats"] == {"successfulCount": "2", "failedCount": "0", "incompleteCount": "2"}
    directory = job["outputInfo"]["gcsOutputDirectory"]
    prefix = directory[len(f"gs://{bucket}/"):]
    assert gcs.names(bucket, prefix + "/") == [f"{prefix}/predictions.jsonl"]
    got = gcs.get(bucket, f"{prefix}/predictions.jsonl").splitlines()
    assert len(got) == 2
    summary = _read("vertex", got, declared_requests=4).finish()
    assert (summary.succeeded, summary.unfinished, summary.missing) == (2, 2, 2)


def test_vertex_rows_in_shards_echo_their_requests(simulator, http, gcs):
    bucket = gcs.bucket("sim-out")
    simulator.configure(storage_url=gcs.url)
    name = simulator.add_job(vertex_spec("p1", "us-central1", "shards", ["RUNNING", "SUCCEEDED"], output={
        "kind": "gcs", "uri": f"gs://{bucket}/eval"}, requests={
        "count": 7, "failed": 3, "shards": 3, "without_total": 2, "usage": {"prompt": 9, "candidates": 4}}))
    assert simulator.get(name)["written"] == []  # rows are written when the job ends
    vget(http, "shards")
    job = vget(http, "shards").json()
    directory = job["outputInfo"]["gcsOutputDirectory"]
    assert directory.startswith(f"gs://{bucket}/eval/prediction-model-")
    prefix = directory[len(f"gs://{bucket}/"):]
    shards = gcs.names(bucket, prefix + "/")
    assert shards == [f"{prefix}/predictions_0000{k}.jsonl" for k in (1, 2, 3)]
    assert simulator.get(name)["written"] == [f"gs://{bucket}/{s}" for s in shards]
    rows = [line for s in shards for line in gcs.get(bucket, s).splitlines()]
    decoded = [json.loads(r) for r in rows]
    assert len(rows) == 7 and all(r["processed_time"].endswith("+00:00") for r in decoded)
    failed = [r for r in decoded if r["status"]]
    assert len(failed) == 3 and failed[0]["status"].startswith('Bad Request: {"error": {"code": 400')
    assert [("response" in r) for r in failed] == [True, False, True]  # an empty response, or none
    assert failed[0]["request"]["contents"][0]["parts"][0] == {"text": "prompt 5", "file_data": None}
    ok = [r for r in decoded if not r["status"]]
    assert [("totalTokenCount" in r["response"]["usageMetadata"]) for r in ok] == [False, False, True, True]
    reader = _read("vertex", rows)
    summary = reader.finish()
    assert (summary.succeeded, summary.failed, summary.usage.total, summary.errors) == (4, 3, 52, {"400": 3})
    assert [json.loads(x) for x in reader.failed_lines.getvalue().splitlines()] == [
        {"request": {"contents": [{"role": "user", "parts": [{"text": f"prompt {i}"}]}]}} for i in (5, 6, 7)]
    assert simulator.outputs(name)["files"]["predictions_00002.jsonl"] == gcs.get(bucket, shards[1]).decode()


def test_results_spec_is_checked(simulator):
    for bad in ({"count": -1}, {"count": 2, "input": "s3"}, {"count": 2, "usage": {"prompt": "x"}},
                {"count": 2, "error_codes": []}, {"count": 2, "colour": "red"}):
        with pytest.raises(RuntimeError, match="requests"):
            simulator.add_job(gemini_spec("bad", ["SUCCEEDED"], requests=bad))
    with pytest.raises(RuntimeError, match="delay_s"):
        simulator.add_job(gemini_spec("bad", ["SUCCEEDED"], output={"kind": "file", "delay_s": -1}))
    with pytest.raises(RuntimeError, match="storage_url"):
        simulator.configure(storage_url="gs://not-a-server")
    with pytest.raises(RuntimeError, match="create"):
        simulator.configure(create={"gemini": {"timeline": ["QUEUED"]}})


# ---------------------------------------------------------------------------------------------- uploads, creates


def test_files_api_resumable_upload(simulator, http):
    data = b'{"key": "a", "request": {"contents": []}}\n' * 3
    start = http.post("/upload/v1beta/files", headers={
        **KEY, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(len(data)), "X-Goog-Upload-Header-Content-Type":
        "application/jsonl"}, json={"file": {"display_name": "in"}})
    assert start.status_code == 200 and start.headers["x-goog-upload-status"] == "active"
    url = start.headers["x-goog-upload-url"]
    assert "upload_id=" in url
    half = http.post(url, headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"}, content=data[:10])
    assert half.status_code == 200
    wrong = http.post(url, headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "3"}, content=b"x")
    assert wrong.status_code == 400
    query = http.post(url, headers={"X-Goog-Upload-Command": "query"})
    assert query.headers["x-goog-upload-size-received"] == "10"
    done = http.post(url, headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "10"},
                     content=data[10:])
    assert done.status_code == 200 and done.headers["x-goog-upload-status"] == "final"
    file = done.json()["file"]
    assert file["name"].startswith("files/") and file["sizeBytes"] == str(len(data)) and file["state"] == "ACTIVE"
    assert file["displayName"] == "in" and file["mimeType"] == "application/jsonl"
    download = http.get(f"/download/v1beta/{file['name']}:download", params={"alt": "media"}, headers=KEY)
    assert download.content == data
    assert http.post(url, headers={"X-Goog-Upload-Command": "finalize"}).status_code == 404  # the session ended
    assert http.post("/upload/v1beta/files", headers={"X-Goog-Upload-Protocol": "resumable",
                                                      "X-Goog-Upload-Command": "start"}).status_code == 403
    assert http.post("/upload/v1beta/files", headers={**KEY, "X-Goog-Upload-Command": "start"}).status_code == 400


def _created_settings(simulator_service):
    from batch_relay.settings import Settings

    return Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "RELAY_GEMINI_API_KEY": "any-key",
                              "RELAY_GEMINI_BASE_URL": simulator_service.url,
                              "RELAY_VERTEX_BASE_URL": simulator_service.url})


def test_batch_relay_uploads_and_creates_a_gemini_batch(simulator, simulator_service, http):
    import asyncio

    from batch_relay.batchapi.create import GeminiCreate

    simulator.configure(create={"fail_marker": "sim:fail"})
    lines = [{"key": "q-a", "request": {"contents": [{"parts": [{"text": "fine"}]}]}},
             {"key": "q-b", "request": {"contents": [{"parts": [{"text": "sim:fail please"}]}]}},
             {"key": "q-c", "request": {"contents": [{"parts": [{"text": "also fine"}]}]}}]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)

    async def create():
        async with httpx.AsyncClient(timeout=10) as client:
            maker = GeminiCreate(client, _created_settings(simulator_service))
            file_name = await maker.upload_file(data, size=len(data), display_name="resubmit")
            by_file = await maker.create_batch("gemini-2.5-flash", display_name="again", file_name=file_name)
            inline = await maker.create_batch("models/gemini-2.5-pro", display_name="inline", requests=[
                {"request": line["request"], "metadata": {"key": line["key"]}} for line in lines])
            return file_name, by_file, inline

    file_name, by_file, inline = asyncio.run(create())
    assert by_file.name.startswith("batches/") and by_file.state == "JOB_STATE_PENDING"
    assert by_file.model == "models/gemini-2.5-flash" and by_file.display_name == "again"
    job_id = by_file.name.split("/")[1]
    op = _until(lambda: (lambda o: o if o["metadata"]["state"] == "BATCH_STATE_SUCCEEDED" else None)(
        gget(http, job_id).json()))
    assert op["metadata"]["inputConfig"] == {"fileName": file_name}
    assert op["metadata"]["batchStats"] == {"requestCount": "3", "successfulRequestCount": "2",
                                            "failedRequestCount": "1"}
    rows = [json.loads(x) for x in http.get(f"/download/v1beta/{op['metadata']['output']['responsesFile']}:download",
                                            headers=KEY).content.splitlines()]
    assert [(r["key"], "error" in r) for r in rows] == [("q-a", False), ("q-b", True), ("q-c", False)]
    inline_id = inline.name.split("/")[1]
    final = _until(lambda: (lambda o: o if o.get("done") else None)(gget(http, inline_id).json()))
    items = final["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert [i["metadata"]["key"] for i in items] == ["q-a", "q-b", "q-c"] and "error" in items[1]
    assert final["metadata"]["model"] == "models/gemini-2.5-pro"
    assert final["metadata"]["inputConfig"]["requests"]["requests"][0]["metadata"] == {"key": "q-a"}


def test_create_refuses_bad_batches(simulator, http):
    url = "/v1beta/models/gemini-2.5-flash:batchGenerateContent"
    assert http.post(url, json={"batch": {}}, headers=KEY).status_code == 400
    missing = http.post(url, json={"batch": {"inputConfig": {"fileName": "files/nope"}}}, headers=KEY)
    assert missing.status_code == 404
    assert http.post(url, content=b"{", headers=KEY).status_code == 400
    assert http.post(url, json={"batch": {"inputConfig": {"requests": {"requests": [{"x": 1}]}}}},
                     headers=KEY).status_code == 400
    assert http.post(url, json={"batch": {}}).status_code == 403
    assert http.get(url, headers=KEY).status_code == 404
    parent = "/v1/projects/p1/locations/us-central1/batchPredictionJobs"
    assert http.post(parent, json={"displayName": "x"}, headers=BEARER).status_code == 400
    assert http.post(parent, json={"displayName": "x", "model": "m", "inputConfig": {"gcsSource": {"uris": ["x"]}},
                                   "outputConfig": {"gcsDestination": {"outputUriPrefix": "gs://b/o"}}},
                     headers=BEARER).status_code == 400
    assert http.post(parent, json={}).status_code == 401
    assert simulator.stats()["status_gets"] == 0


def test_batch_relay_creates_a_vertex_job_that_answers_its_input(simulator, simulator_service, http, gcs):
    import asyncio

    from batch_relay.batchapi.create import VertexCreate, vertex_job_body

    bucket = gcs.bucket("sim-in")
    requests = [{"request": {"contents": [{"role": "user", "parts": [{"text": f"again {i}"}]}]}} for i in range(3)]
    gcs.put(bucket, "retry/failed.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in requests))
    simulator.configure(storage_url=gcs.url)
    body = vertex_job_body(display_name="retry", model="gemini-2.5-flash",
                           input_uris=[f"gs://{bucket}/retry/failed.jsonl"], output_prefix=f"gs://{bucket}/retry/out",
                           labels={"batch-relay-parent": "1"})

    async def create():
        async with httpx.AsyncClient(timeout=10, headers=BEARER) as client:
            return await VertexCreate(client, _created_settings(simulator_service)).create_job(
                "p1", "us-central1", body)

    created = asyncio.run(create())
    assert created.name.startswith("projects/p1/locations/us-central1/batchPredictionJobs/")
    assert created.state == "JOB_STATE_PENDING" and created.labels == {"batch-relay-parent": "1"}
    job_id = created.name.rsplit("/", 1)[1]
    job = _until(lambda: (lambda j: j if j["state"] == "JOB_STATE_SUCCEEDED" else None)(vget(http, job_id).json()))
    assert job["model"] == "publishers/google/models/gemini-2.5-flash"
    assert job["inputConfig"] == body["inputConfig"] and job["outputConfig"] == body["outputConfig"]
    prefix = job["outputInfo"]["gcsOutputDirectory"][len(f"gs://{bucket}/"):]
    rows = gcs.get(bucket, f"{prefix}/predictions.jsonl").splitlines()
    summary = _read("vertex", rows).finish()
    assert (summary.succeeded, summary.failed) == (3, 0)
    assert sorted(json.loads(r)["request"]["contents"][0]["parts"][0]["text"] for r in rows) == [
        "again 0", "again 1", "again 2"]
