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
