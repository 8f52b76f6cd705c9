"""The reactor end to end: Firestore and Pub/Sub emulators, fake-gcs-server and the simulator over real
HTTP; events delivered as CloudEvents through functions-framework and by a Pub/Sub push subscription."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import json
import sys
import time

import httpx
import pytest
from functions_framework import create_app

from batch_relay.reactor import plans as copy_plans
from devtools.crc32c import crc32c_of
from devtools.simulator import gemini_spec, vertex_spec
from tests.helpers import cloud_event_headers, deliver, pubsub_envelope, validate_event

MAIN = "functions/main.py"


@pytest.fixture
def event_client(function_env):
    return create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()


def succeed(relay, simulator, spec, destination=None, settings=None):
    """Track a simulated job, tick it to its terminal state, return (record, success message)."""
    simulator.add_job(spec)
    relay.store.track(spec["name"], destination=destination)
    for _ in range(10):
        relay.tick(settings)
        if relay.store.load(spec["name"]).terminal:
            break
    messages = relay.drain()
    success = [m for m in messages if m["attributes"]["state"] in
               ("JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED")]
    assert success, [m["attributes"] for m in messages]
    return relay.store.load(spec["name"]), success[-1]


def copy_events(relay) -> list[dict]:
    return [m for m in relay.drain() if m["attributes"]["ce-type"] != "batchrelay.job.v1.stateChanged"]


def vertex_job(job_id, source_uri, states=("RUNNING", "SUCCEEDED")):
    return vertex_spec("proj-a", "us-central1", job_id, list(states), output={"kind": "gcs", "uri": source_uri})


def test_vertex_gcs_output_is_copied_server_side_with_a_manifest(relay, simulator, gcs, event_client, monkeypatch):
    monkeypatch.setattr(copy_plans, "LIST_PAGE_SIZE", 4)  # the listing spans several pages
    src, dst = gcs.bucket("vsrc"), gcs.bucket("vdst")
    run_dir = "runs/prediction-model-2025-09-19T21:26:51.569037Z"
    files = {f"predictions_{i:04d}.jsonl": f'{{"i": {i}}}\n'.encode() * (i + 1) for i in range(9)}
    files["nested/errors_0001.jsonl"] = b'{"status": "bad"}\n'
    for name, data in files.items():
        gcs.put(src, f"{run_dir}/{name}", data)
    gcs.put(src, f"{run_dir}-sibling/predictions.jsonl", b"not mine")  # sibling prefix: not copied
    record, message = succeed(relay, simulator, vertex_job("701", f"gs://{src}/{run_dir}"), f"gs://{dst}/out/701")
    response = deliver(event_client, message)
    assert response.status_code == 200, response.data
    assert gcs.names(dst) == sorted([f"out/701/{n}" for n in files] + ["out/701/_manifest.json"])
    for name, data in files.items():
        assert gcs.get(dst, f"out/701/{name}") == data
    manifest = json.loads(gcs.get(dst, "out/701/_manifest.json"))
    assert manifest["job"] == record.name and manifest["state"] == "JOB_STATE_SUCCEEDED"
    assert sorted(o["name"] for o in manifest["objects"]) == sorted(files)
    for entry in manifest["objects"]:
        assert entry["size"] == len(files[entry["name"]]) and entry["crc32c"] == crc32c_of(files[entry["name"]])
    assert manifest["total_bytes"] == sum(len(d) for d in files.values())
    copy = relay.store.load(record.name).copy
    assert copy.to_doc() == {"status": "done", "attempt": 1, "uri": f"gs://{dst}/out/701",
                    "manifest_uri": f"gs://{dst}/out/701/_manifest.json", "objects": len(files),
                    "bytes": manifest["total_bytes"], "error": None, "announced": True}
    [ready] = copy_events(relay)
    validate_event(ready)
    assert ready["attributes"]["ce-type"] == "batchrelay.job.v1.outputsReady"
    assert ready["attributes"]["ce-id"] == f"{record.tracking_id}-copy1-ready"
    assert ready["data"]["manifest_uri"] == copy.manifest_uri and ready["data"]["objects"] == len(files)
    # the outputsReady event arrives on the same topic: the reactor acks it without acting
    assert deliver(event_client, ready).status_code == 200


def test_gemini_responses_file_is_streamed_into_the_bucket(relay, simulator, gcs, event_client, simulator_service):
    dst = gcs.bucket("gdst")
    spec = gemini_spec("file-1", ["RUNNING", "SUCCEEDED"],
                       output={"kind": "file", "file_id": "batch-file-1-" + "x" * 40, "lines": 3000, "line_bytes": 300})
    record, message = succeed(relay, simulator, spec, f"gs://{dst}/gem")
    assert deliver(event_client, message).status_code == 200
    original = httpx.get(f"{simulator_service.url}/download/v1beta/{record.output['file_name']}:download",
                         params={"alt": "media"}, headers={"x-goog-api-key": relay.settings.gemini_api_key}).content
    copied = gcs.get(dst, "gem/responses.jsonl")
    assert copied == original and len(copied.splitlines()) == 3000
    manifest = json.loads(gcs.get(dst, "gem/_manifest.json"))
    assert manifest["objects"] == [{"name": "responses.jsonl", "size": len(original), "crc32c": crc32c_of(original)}]
    [ready] = copy_events(relay)
    assert ready["data"]["bytes"] == len(original)


def test_gemini_inline_responses_become_responses_jsonl(relay, simulator, gcs, event_client):
    dst = gcs.bucket("idst")
    spec = gemini_spec("inline-1", ["SUCCEEDED"], output={"kind": "inline", "count": 5, "errors": 1})
    _, message = succeed(relay, simulator, spec, f"gs://{dst}/inl")
    assert deliver(event_client, message).status_code == 200
    lines = [json.loads(line) for line in gcs.get(dst, "inl/responses.jsonl").splitlines()]
    assert len(lines) == 5 and all("key" in line for line in lines)
    assert sum("error" in line for line in lines) == 1 and sum("response" in line for line in lines) == 4


def test_bigquery_output_is_not_applicable(relay, simulator, event_client):
    spec = vertex_spec("proj-a", "us-central1", "bq-1", ["SUCCEEDED"],
                       output={"kind": "bigquery", "table": "bq://proj-a.ds.predictions_1"})
    record, message = succeed(relay, simulator, spec)
    assert deliver(event_client, message).status_code == 200
    assert relay.store.load(record.name).copy.status == "not_applicable"
    [ready] = copy_events(relay)
    validate_event(ready)
    assert (ready["data"]["destination"], ready["data"]["manifest_uri"], ready["data"]["objects"]) == (None, None, 0)
    assert ready["data"]["job"]["output"]["bigquery_uri"] == "bq://proj-a.ds.predictions_1"


def test_duplicate_and_concurrent_deliveries_copy_once(relay, simulator, gcs, event_client, function_env):
    src, dst = gcs.bucket("dsrc"), gcs.bucket("ddst")
    for i in range(20):
        gcs.put(src, f"run/prediction-p/predictions_{i}.jsonl", b"x" * 1000)
    record, message = succeed(relay, simulator, vertex_job("dup", f"gs://{src}/run/prediction-p"), f"gs://{dst}/d")
    clients = [create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()
               for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        codes = list(pool.map(lambda c: deliver(c, message).status_code, clients))
    assert 200 in codes and set(codes) <= {200, 500}, codes  # a delivery that finds the copy in progress asks again
    manifest_gen = gcs.meta(dst, "d/_manifest.json")["generation"]
    for _ in range(2):  # the redeliveries find it done
        assert deliver(event_client, message).status_code == 200
    assert gcs.meta(dst, "d/_manifest.json")["generation"] == manifest_gen  # one manifest
    ready = copy_events(relay)
    assert {m["attributes"]["ce-id"] for m in ready} == {f"{record.tracking_id}-copy1-ready"}
    assert relay.store.load(record.name).copy.status == "done"


def test_storage_503_fails_the_delivery_and_the_redelivery_completes(relay, simulator, gcs, event_client, gcs_emulator,
                                                                    monkeypatch):
    from batch_relay.settings import load_settings
    from devtools.faultproxy import FaultProxy

    proxy = FaultProxy(gcs_emulator.url).start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        monkeypatch.setenv("RELAY_MAX_ATTEMPTS", "2")
        load_settings.cache_clear()
        src, dst = gcs.bucket("tsrc"), gcs.bucket("tdst")
        gcs.put(src, "run/prediction-p/predictions.jsonl", b"hello")
        record, message = succeed(relay, simulator, vertex_job("t503", f"gs://{src}/run/prediction-p"), f"gs://{dst}/t")
        proxy.fail_next(2, "rewriteTo")
        assert deliver(event_client, message).status_code == 500  # raised: Pub/Sub will redeliver
        released = relay.store.load(record.name)
        assert released.copy.status == "copying"  # claim given back: its lease ended now
        assert released.copy_lease_until <= dt.datetime.now(dt.UTC)
        assert proxy.failed == 2
        assert deliver(event_client, message).status_code == 200
        assert gcs.get(dst, "t/predictions.jsonl") == b"hello"
        assert relay.store.load(record.name).copy.status == "done"
    finally:
        proxy.stop()


@pytest.mark.parametrize("case", ["missing_source", "not_allowed", "unsafe_name", "missing_bucket"])
def test_permanent_copy_failures_are_recorded_announced_and_acked(case, relay, simulator, gcs, function_env,
                                                                 monkeypatch):
    src, dst = gcs.bucket("psrc"), gcs.bucket("pdst")
    destination = f"gs://{dst}/p"
    if case == "not_allowed":
        monkeypatch.setenv("RELAY_ALLOWED_BUCKETS", "some-other-bucket")
    if case == "unsafe_name":
        gcs.put(src, "run/prediction-p/ok.jsonl", b"1")
        gcs.put(src, "run/prediction-p/bad\x07name.jsonl", b"2")
    if case == "missing_bucket":
        gcs.put(src, "run/prediction-p/ok.jsonl", b"1")
        destination = "gs://no-such-bucket-here/p"
    from batch_relay.settings import load_settings

    load_settings.cache_clear()
    client = create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()
    record, message = succeed(relay, simulator, vertex_job(f"perm-{case}", f"gs://{src}/run/prediction-p"), destination)
    assert deliver(client, message).status_code == 200  # acked: retrying cannot help
    copy = relay.store.load(record.name).copy
    assert copy.status == "failed" and copy.error["kind"] == case and copy.announced
    [failed] = copy_events(relay)
    validate_event(failed)
    assert failed["attributes"]["ce-id"] == f"{record.tracking_id}-copy1-failed"
    assert failed["data"]["error"]["kind"] == case
    assert gcs.names(dst) == []


def test_other_events_and_garbage_are_acked_without_touching_firestore(function_env, monkeypatch):
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")  # any Firestore call would fail
    from batch_relay.settings import load_settings

    load_settings.cache_clear()
    client = create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()
    name = "batches/not-tracked"
    base = {"ce-type": "batchrelay.job.v1.stateChanged", "job": name, "ce-subject": name, "api": "gemini"}
    cases = [
        pubsub_envelope({**base, "state": "JOB_STATE_RUNNING"}, b"{}"),
        pubsub_envelope({**base, "ce-type": "batchrelay.job.v1.outputsReady", "state": "JOB_STATE_SUCCEEDED"}, b"{}"),
        pubsub_envelope({**base, "state": "JOB_STATE_SUCCEEDED", "job": "../../etc"}, b"{}"),
        pubsub_envelope({**base, "state": "JOB_STATE_SUCCEEDED"}, b"not json"),
        pubsub_envelope({**base, "state": "JOB_STATE_SUCCEEDED"}, json.dumps({"job": {"name": "x"}}).encode()),
        {"message": "nope"},
        {"no": "message"},
        {"message": {"attributes": {"ce-type": 5}, "data": "!!"}},
        pubsub_envelope({**base, "state": "JOB_STATE_SUCCEEDED"}, b"[" * 100_000 + b"]" * 100_000),  # too deep
    ]
    for envelope in cases:
        response = client.post("/", headers=cloud_event_headers(), data=json.dumps(envelope))
        assert response.status_code == 200, (envelope, response.data)


def test_push_subscription_delivers_to_a_served_reactor(relay, simulator, gcs, function_env, pubsub_emulator):
    from devtools import emulators

    src, dst = gcs.bucket("psrc"), gcs.bucket("pdst")
    gcs.put(src, "run/prediction-p/predictions.jsonl", b"pushed")
    port = emulators.free_port()
    topic = relay.settings.events_topic
    server = emulators.Service("reactor", [
        sys.executable, "-m", "functions_framework", "--target", "on_job_event", "--source", MAIN,
        "--signature-type", "cloudevent", "--host", "127.0.0.1", "--port", str(port)], port, env=function_env)
    try:
        server.wait_ready()
        relay.subscriber.create_subscription(request={
            "name": f"projects/{relay.settings.project}/subscriptions/push-{topic}", "topic": relay.topic,
            "push_config": {"push_endpoint": f"{server.url}/projects/{relay.settings.project}/topics/{topic}"},
            "ack_deadline_seconds": 30})
        record, _ = succeed(relay, simulator, vertex_job("push-1", f"gs://{src}/run/prediction-p"), f"gs://{dst}/x")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and relay.store.load(record.name).copy.status != "done":
            time.sleep(0.2)
        assert relay.store.load(record.name).copy.status == "done", server.tail()
        assert gcs.get(dst, "x/predictions.jsonl") == b"pushed"
    finally:
        server.stop()


def test_recopy_runs_a_new_attempt_and_the_sweep_fails_stuck_copies(relay, simulator, gcs, function_env):
    from batch_relay import cli

    src, dst = gcs.bucket("rsrc"), gcs.bucket("rdst")
    record, message = succeed(relay, simulator, vertex_job("re-1", f"gs://{src}/run/prediction-p"), f"gs://{dst}/r")
    client = create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()
    assert deliver(client, message).status_code == 200
    assert relay.store.load(record.name).copy.status == "failed"  # nothing to copy yet
    gcs.put(src, "run/prediction-p/predictions.jsonl", b"late")
    assert cli.main(["recopy", record.name]) == 0
    copy = relay.store.load(record.name).copy
    assert (copy.status, copy.attempt, copy.announced) == ("done", 2, True)
    ids = [m["attributes"]["ce-id"] for m in copy_events(relay)]
    assert ids == [f"{record.tracking_id}-copy1-failed", f"{record.tracking_id}-copy2-ready"]
    # a copy stuck in "copying" (the reactor died) is failed by a tick once its lease is long gone
    stuck, _ = succeed(relay, simulator, vertex_job("stuck-1", f"gs://{src}/run/prediction-p"), f"gs://{dst}/s")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    relay.store.claim_copy(stuck.name, long_ago)
    summary = relay.tick(dataclasses.replace(relay.settings, copy_lease_s=60))
    assert summary["swept"] == 1
    copy = relay.store.load(stuck.name).copy
    assert copy.status == "failed" and copy.error["kind"] == "timeout" and copy.announced
    assert [m["attributes"]["ce-type"] for m in copy_events(relay)] == ["batchrelay.job.v1.outputsFailed"]


def test_objects_already_copied_with_the_same_crc32c_are_skipped(relay, simulator, gcs, event_client):
    src, dst = gcs.bucket("ksrc"), gcs.bucket("kdst")
    for name, data in {"a.jsonl": b"same", "b.jsonl": b"new content", "c.jsonl": b"c"}.items():
        gcs.put(src, f"run/prediction-p/{name}", data)
    spec = vertex_job("skip-1", f"gs://{src}/run/prediction-p")
    gcs.put(dst, "k/a.jsonl", b"same")  # left by an interrupted attempt
    # a different object under the same name, left by an earlier attempt of this job's copy (the relay's mark)
    gcs.put(dst, "k/b.jsonl", b"stale", metadata={"batch-relay-job": spec["name"]})
    kept = gcs.meta(dst, "k/a.jsonl")["generation"]
    stale = gcs.meta(dst, "k/b.jsonl")["generation"]
    record, message = succeed(relay, simulator, spec, f"gs://{dst}/k")
    assert deliver(event_client, message).status_code == 200
    assert gcs.meta(dst, "k/a.jsonl")["generation"] == kept  # not copied again
    assert gcs.meta(dst, "k/b.jsonl")["generation"] != stale and gcs.get(dst, "k/b.jsonl") == b"new content"
    assert gcs.get(dst, "k/c.jsonl") == b"c"
    assert relay.store.load(record.name).copy.objects == 3


def test_a_dead_lettered_copy_is_failed_and_announced_by_the_sweep(relay, simulator, gcs, gcs_emulator, function_env,
                                                                   monkeypatch):
    """Every delivery hit a transient error and the message went to the dead-letter topic: the copy must
    not stay unannounced. The sweep fails it once its lease is a lease old."""
    from batch_relay.settings import load_settings
    from devtools.faultproxy import FaultProxy

    proxy = FaultProxy(gcs_emulator.url).start()
    try:
        for key, value in {"STORAGE_EMULATOR_HOST": proxy.url, "RELAY_MAX_ATTEMPTS": "1"}.items():
            monkeypatch.setenv(key, value)
        load_settings.cache_clear()
        client = create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()
        src, dst = gcs.bucket("dlsrc"), gcs.bucket("dldst")
        gcs.put(src, "run/prediction-p/a.jsonl", b"a")
        record, message = succeed(relay, simulator, vertex_job("dl-1", f"gs://{src}/run/prediction-p"),
                                  f"gs://{dst}/d")
        proxy.fail_next(100, "rewriteTo")
        for _ in range(3):  # the retry policy's deliveries, all transient failures
            assert deliver(client, message).status_code == 500
    finally:
        proxy.stop()
    assert relay.store.load(record.name).copy.status == "copying"
    relay.tick(dataclasses.replace(relay.settings, copy_lease_s=0.5))  # too early: lease + grace not over
    assert relay.store.load(record.name).copy.status == "copying"
    time.sleep(1.1)
    summary = relay.tick(dataclasses.replace(relay.settings, copy_lease_s=0.5))
    assert summary["swept"] == 1
    copy = relay.store.load(record.name).copy
    assert copy.status == "failed" and copy.error["kind"] == "timeout" and copy.announced
    [failed] = copy_events(relay)
    assert failed["attributes"]["ce-id"] == f"{record.tracking_id}-copy1-failed"


def test_an_announcement_that_could_not_be_published_is_sent_by_the_next_tick(relay, simulator, gcs, function_env,
                                                                              monkeypatch):
    from batch_relay.settings import load_settings

    src, dst = gcs.bucket("asrc"), gcs.bucket("adst")
    gcs.put(src, "run/prediction-p/a.jsonl", b"a")
    record, message = succeed(relay, simulator, vertex_job("ann-1", f"gs://{src}/run/prediction-p"), f"gs://{dst}/a")
    monkeypatch.setenv("RELAY_EVENTS_TOPIC", "topic-that-is-not-there")
    load_settings.cache_clear()
    client = create_app(target="on_job_event", source=MAIN, signature_type="cloudevent").test_client()
    assert deliver(client, message).status_code == 200
    stored = relay.store.load(record.name)
    assert stored.copy.status == "done" and not stored.copy.announced and stored.has_unpublished
    assert copy_events(relay) == []
    summary = relay.tick()
    assert summary["republished"] == 1
    [ready] = copy_events(relay)
    assert ready["attributes"]["ce-id"] == f"{record.tracking_id}-copy1-ready"
    assert relay.store.load(record.name).copy.announced


def test_responses_file_redirects_keep_the_key_at_home():
    import asyncio

    import httpx

    from batch_relay.batchapi.outputs import GeminiOutputs
    from batch_relay.errors import PermanentError
    from batch_relay.settings import Settings

    settings = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "RELAY_GEMINI_API_KEY": "AIzaKEYKEYKEYKEYKEYKEYKEY",
                                  "RELAY_GEMINI_BASE_URL": "https://gemini.example"})
    seen = []

    def handler(request):
        seen.append((str(request.url), request.headers.get("x-goog-api-key")))
        if request.url.host == "gemini.example" and request.url.path.startswith("/v1beta/"):
            return httpx.Response(302, headers={"location": "/download" + request.url.path + "?alt=media"})
        if request.url.host == "gemini.example":
            return httpx.Response(302, headers={"location": "https://blobs.example/signed?x=1"})
        if request.url.host == "blobs.example" and "downgrade" not in str(request.url):
            return httpx.Response(200, content=b"data")
        return httpx.Response(302, headers={"location": "http://plain.example/file"})

    async def fetch(url):
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            outputs = GeminiOutputs(http, settings)
            async with outputs._follow(url) as response:
                return await response.aread()

    assert asyncio.run(fetch("https://gemini.example/v1beta/files/f:download?alt=media")) == b"data"
    assert [key for _, key in seen] == ["AIzaKEYKEYKEYKEYKEYKEYKEY", "AIzaKEYKEYKEYKEYKEYKEYKEY", None]
    with pytest.raises(PermanentError, match="https to http"):
        asyncio.run(fetch("https://blobs.example/downgrade"))


class CutFirstDownload(httpx.AsyncBaseTransport):
    """The network, seen and cut: records every request, and cuts the first responses-file download off after
    its first bytes (without its Content-Length unless ``announce_size``: the copy cannot count on one)."""

    def __init__(self, announce_size: bool) -> None:
        self.network = httpx.AsyncHTTPTransport()
        self.announce_size = announce_size
        self.seen: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.netloc.decode(), request.url.path))
        response = await self.network.handle_async_request(request)
        downloads = [path for _, path in self.seen if path.endswith(":download")]
        if downloads == [request.url.path]:
            inner = response.stream

            class Cut(httpx.AsyncByteStream):
                async def __aiter__(self):
                    async for chunk in inner:
                        yield chunk[:100]
                        raise httpx.ReadError("connection cut")

                async def aclose(self) -> None:
                    await inner.aclose()

            headers = [(k, v) for k, v in response.headers.multi_items()
                       if self.announce_size or k.lower() != "content-length"]
            return httpx.Response(response.status_code, headers=headers, stream=Cut())
        return response

    async def aclose(self) -> None:
        await self.network.aclose()


@pytest.mark.parametrize("announce_size", [True, False])
def test_the_reactor_of_wiring_takes_a_transport_and_a_cut_download_starts_again(announce_size, relay, simulator, gcs,
                                                                                  simulator_service, gcs_emulator):
    """wiring's reactor sends Cloud Storage and the Gemini API through one injected transport; here it cuts the
    first download of the responses file, and the copy downloads it again (one delivery, the whole file)."""
    from batch_relay import wiring
    from batch_relay.reactor.handler import Reaction

    dst = gcs.bucket("cdst")
    spec = gemini_spec(f"cut-{announce_size}", ["SUCCEEDED"], output={"kind": "file", "file_id": f"cut-{announce_size}",
                                                                       "lines": 2000,
                                                       "line_bytes": 200})
    record, message = succeed(relay, simulator, spec, f"gs://{dst}/cut")
    cloud_event = {"id": "1", "data": pubsub_envelope(message["attributes"], message["raw"])}
    transport = CutFirstDownload(announce_size)
    reaction = wiring.react_to_cloud_event(cloud_event, relay.settings, relay.db, relay.publisher, transport=transport)
    assert reaction == Reaction.COPIED
    original = httpx.get(f"{simulator_service.url}/download/v1beta/{record.output['file_name']}:download",
                         params={"alt": "media"}, headers={"x-goog-api-key": relay.settings.gemini_api_key}).content
    assert gcs.get(dst, "cut/responses.jsonl") == original
    hosts = {host for host, _ in transport.seen}
    assert httpx.URL(simulator_service.url).netloc.decode() in hosts  # the Gemini API...
    assert httpx.URL(gcs_emulator.url).netloc.decode() in hosts  # ...and Cloud Storage, through the one transport
    assert sum(path.endswith(":download") for _, path in transport.seen) == 2
    assert relay.store.load(record.name).copy.attempt == 1
