"""What each batch produced, through the reactor (Firestore and Pub/Sub emulators, fake-gcs-server, the simulator
over real HTTP): the results summary read while the outputs stream (each byte once), ``failed.jsonl`` beside the
outputs, partial outputs of jobs that ended CANCELLED, EXPIRED or FAILED, and the one ``results`` map that the
record, ``_manifest.json`` and ``outputsReady`` carry.

The copy runs as ``on_job_event`` runs it (``wiring.react_to_cloud_event``), over ``Recorder``: a transport that
passes every request to the network and notes it, so a test can count what was read; it may answer one kind of
request itself (a hostile responses file)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from batch_relay.batchapi.fields import GEMINI_COPY
from batch_relay.errors import TransientError
from devtools.simulator import gemini_spec, vertex_spec
from tests.helpers import pubsub_envelope, validate_event

USAGE = {"prompt": 100_000, "candidates": 20_000, "thoughts": 4_000, "cached": 40_000}


# -- helpers -------------------------------------------------------------------------------------------


class Recorder(httpx.AsyncBaseTransport):
    """The network, seen: every request is noted as (method, decoded path, query); ``answer(request)`` may
    return bytes to serve instead of the network's reply."""

    def __init__(self, answer: Callable[[httpx.Request], bytes | None] | None = None) -> None:
        self.network = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.answer = answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, unquote(request.url.path), dict(request.url.params)))
        if self.answer is not None and (body := self.answer(request)) is not None:
            return httpx.Response(200, content=body, headers={"content-type": "application/octet-stream"})
        return await self.network.handle_async_request(request)

    async def aclose(self) -> None:
        await self.network.aclose()

    def gets(self, path_end: str) -> int:
        """GETs whose path ends with ``path_end``."""
        return sum(1 for method, path, _ in self.seen if method == "GET" and path.endswith(path_end))


def end(relay: Any, simulator: Any, spec: dict[str, Any], destination: str | None) -> tuple[Any, dict[str, Any]]:
    """Track a simulated job, tick it to its end; (record, its last stateChanged message)."""
    simulator.add_job(spec)
    relay.store.track(spec["name"], destination=destination)
    for _ in range(10):
        relay.tick()
        if relay.store.load(spec["name"]).terminal:
            break
    changes = [m for m in relay.drain() if m["attributes"]["ce-type"] == "batchrelay.job.v1.stateChanged"]
    return relay.store.load(spec["name"]), changes[-1]


def react(relay: Any, message: dict[str, Any], settings: Any = None, transport: httpx.AsyncBaseTransport | None = None):
    """The body of on_job_event with these settings and transport."""
    from batch_relay import wiring

    event = {"id": "1", "data": pubsub_envelope(message["attributes"], message["raw"])}
    return wiring.react_to_cloud_event(event, settings or relay.settings, relay.db, relay.publisher,
                                       transport=transport)


def announced(relay: Any, name: str) -> dict[str, Any]:
    """The job's one outputsReady event, checked against its schema; the record's results are the event's."""
    [ready] = [m for m in relay.drain() if m["attributes"]["ce-type"] == "batchrelay.job.v1.outputsReady"]
    validate_event(ready)
    record = relay.store.load(name)
    assert record.copy.announced and ready["data"]["results"] == record.results == ready["data"]["job"]["results"]
    return ready["data"]


def manifest_of(gcs: Any, bucket: str, prefix: str) -> dict[str, Any]:
    return json.loads(gcs.get(bucket, f"{prefix}/_manifest.json"))


def lines_of(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


# -- Gemini API: the responses file, streamed once, and failed.jsonl joined with the input file ----------------


def test_gemini_responses_file_is_summarised_as_it_streams_and_failed_requests_join_the_input(relay, simulator, gcs):
    from batch_relay.reactor.handler import Reaction

    dst = gcs.bucket("gres")
    spec = gemini_spec("res-1", ["RUNNING", "SUCCEEDED"], requests={
        "count": 6, "failed": 2, "error_codes": [3, 13], "without_usage": 1, "usage": USAGE})
    record, message = end(relay, simulator, spec, f"gs://{dst}/run")
    wire = Recorder()
    assert react(relay, message, transport=wire) == Reaction.COPIED
    # each byte read once: the batch's reply once (state, output and input from it), the responses file once,
    # the input file once
    assert wire.gets("/v1beta/batches/res-1") == 1
    assert wire.gets("/files/batch-res-1:download") == 1 and wire.gets("/files/input-res-1:download") == 1
    files = simulator.outputs(record.name)["files"]
    assert gcs.get(dst, "run/responses.jsonl").decode() == files["responses.jsonl"]
    inputs = lines_of(files["input.jsonl"].encode())
    assert lines_of(gcs.get(dst, "run/failed.jsonl")) == inputs[4:]  # the failed keys' requests, as input lines
    results = announced(relay, record.name)["results"]
    assert results == {
        "requests": 6, "succeeded": 4, "failed": 2, "missing": 0, "unparsed": 0, "unfinished": 0,
        "missing_reason": None, "errors": {"3": 1, "13": 1},
        "usage": {"prompt_tokens": 300_000, "candidates_tokens": 60_000, "thoughts_tokens": 12_000,
                  "cached_tokens": 120_000, "tool_use_prompt_tokens": 0, "total_tokens": 372_000,
                  "rows_without_usage": 1},
        # (300k - 120k) x 0.30 x 0.5 + (60k + 12k) x 2.50 x 0.5 + 120k x 0.03, per million: the shipped table
        "cost": {"amount": 0.1206, "currency": "USD", "model": "gemini-2.5-flash",
                 "prices": results["cost"]["prices"]},
        "failed_uri": f"gs://{dst}/run/failed.jsonl"}
    manifest = manifest_of(gcs, dst, "run")
    assert manifest["results"] == results and manifest["state"] == "JOB_STATE_SUCCEEDED"
    assert [o["name"] for o in manifest["objects"]] == ["responses.jsonl", "failed.jsonl"]
    assert manifest["total_bytes"] == sum(o["size"] for o in manifest["objects"])
    ready = json.loads(relay.store.load(record.name).outbox.get("copy", {}).get("data") or "{}") or None
    assert ready is None  # announced: nothing left in the outbox
    copy = relay.store.load(record.name).copy
    assert copy.objects == 2 and copy.bytes == manifest["total_bytes"]


def test_a_gone_input_file_counts_the_failed_requests_as_missing_with_the_reason(relay, simulator, gcs):
    dst = gcs.bucket("ggone")
    spec = gemini_spec("gone-1", ["SUCCEEDED"], requests={"count": 3, "failed": 2, "input": "gone"})
    record, message = end(relay, simulator, spec, f"gs://{dst}/g")
    react(relay, message)
    results = announced(relay, record.name)["results"]
    assert (results["failed"], results["missing"], results["failed_uri"]) == (2, 2, None)
    assert "files/input-gone-1 could not be read" in results["missing_reason"]
    assert "48 hours" in results["missing_reason"]
    assert gcs.names(dst, "g/") == ["g/_manifest.json", "g/responses.jsonl"]  # no failed.jsonl: nothing to put in it


def test_inline_responses_in_another_order_join_the_inline_requests_by_key(relay, simulator, gcs):
    dst = gcs.bucket("ginl")
    spec = gemini_spec("inl-1", ["SUCCEEDED"], output={"kind": "inline"}, requests={
        "count": 12, "failed": 3, "input": "inline", "shuffle": True, "error_codes": [8]})
    record, message = end(relay, simulator, spec, f"gs://{dst}/i")
    wire = Recorder()
    react(relay, message, transport=wire)
    # The state, the input and where the responses are come from one GET that leaves the responses out; a
    # second GET, streamed, asks for the responses alone (batchapi.fields): neither reply is decoded whole.
    masks = [q.get("fields") for m, p, q in wire.seen if m == "GET" and p.endswith("/v1beta/batches/inl-1")]
    assert masks == [GEMINI_COPY, "metadata.output.inlinedResponses.inlinedResponses"]
    copied = lines_of(gcs.get(dst, "i/responses.jsonl"))
    assert len(copied) == 12 and sum("error" in line for line in copied) == 3
    failed = lines_of(gcs.get(dst, "i/failed.jsonl"))
    assert sorted(line["key"] for line in failed) == ["req-10", "req-11", "req-12"]
    first = failed[0]
    assert first["request"] == {"contents": [{"role": "user", "parts": [{"text": f"prompt {first['key'][4:]}"}]}]}
    results = announced(relay, record.name)["results"]
    assert (results["succeeded"], results["failed"], results["missing"], results["errors"]) == (9, 3, 0, {"8": 3})
    assert manifest_of(gcs, dst, "i")["results"] == results


class _BreaksOff(httpx.AsyncByteStream):
    """A reply body that breaks off after its first bytes, as a reset connection does."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __aiter__(self):
        async for chunk in self.inner:
            yield chunk[:200]
            raise httpx.ReadError("connection reset by peer")

    async def aclose(self) -> None:
        await self.inner.aclose()


class BreakFirstInline(Recorder):
    """The network, except that the first streamed GET of inline responses breaks off."""

    broken = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if not self.broken and request.url.params.get("fields", "").endswith("inlinedResponses.inlinedResponses"):
            self.broken = True
            return httpx.Response(response.status_code, headers=response.headers, stream=_BreaksOff(response.stream))
        return response


def test_inline_responses_that_break_off_are_read_again_whole_and_counted_once(relay, simulator, gcs):
    dst = gcs.bucket("gbrk")
    spec = gemini_spec("inl-b", ["SUCCEEDED"], output={"kind": "inline"}, requests={"count": 9, "failed": 2})
    record, message = end(relay, simulator, spec, f"gs://{dst}/b")
    wire = BreakFirstInline()
    react(relay, message, transport=wire)
    assert wire.broken and wire.gets("/v1beta/batches/inl-b") == 3  # the state, the broken read, the read again
    copied = lines_of(gcs.get(dst, "b/responses.jsonl"))
    assert len(copied) == 9 and sum("error" in line for line in copied) == 2
    results = announced(relay, record.name)["results"]
    assert (results["succeeded"], results["failed"]) == (7, 2)  # a new reader for the second read


def test_a_batch_with_an_empty_list_of_inline_responses_gets_an_empty_responses_jsonl(relay, simulator, gcs):
    dst = gcs.bucket("gempty")
    spec = gemini_spec("inl-0", ["SUCCEEDED"], output={"kind": "inline", "count": 0})
    record, message = end(relay, simulator, spec, f"gs://{dst}/e")
    assert record.output == {"inlined_count": 0}
    react(relay, message)
    assert gcs.get(dst, "e/responses.jsonl") == b""  # the streamed upload of nothing is an empty object
    assert manifest_of(gcs, dst, "e")["objects"][0] == {"name": "responses.jsonl", "size": 0,
                                                         "crc32c": "AAAAAA=="}


# -- Vertex AI: prediction files copied server-side and read beside the copy -------------------------------------


def test_vertex_prediction_shards_are_read_once_beside_the_server_side_copy(relay, simulator, gcs):
    src, dst = gcs.bucket("vsrc"), gcs.bucket("vdst")
    simulator.configure(storage_url=gcs.url)
    spec = vertex_spec("proj-r", "us-central1", "shards-1", ["RUNNING", "SUCCEEDED"], output={
        "kind": "gcs", "uri": f"gs://{src}/eval"}, requests={
        "count": 7, "failed": 3, "shards": 3, "without_total": 2, "usage": {"prompt": 9, "candidates": 4}})
    record, message = end(relay, simulator, spec, f"gs://{dst}/v")
    directory = record.output["gcs_uri"][len(f"gs://{src}/"):]
    shards = gcs.names(src, directory + "/")
    assert len(shards) == 3
    wire = Recorder()
    react(relay, message, transport=wire)
    for shard in shards:  # copied server-side (rewrite), and read once, streamed
        reads = [p for m, p, q in wire.seen if m == "GET" and p.endswith(shard) and q.get("alt") == "media"]
        rewrites = [p for m, p, _ in wire.seen if m == "POST" and "/rewriteTo/" in p and f"/o/{shard}/" in p]
        assert len(reads) == len(rewrites) == 1
    failed = lines_of(gcs.get(dst, "v/failed.jsonl"))  # the requests the failed rows echo, nulls dropped
    assert failed == [{"request": {"contents": [{"role": "user", "parts": [{"text": f"prompt {i}"}]}]}}
                      for i in (5, 6, 7)]
    results = announced(relay, record.name)["results"]
    assert (results["requests"], results["succeeded"], results["failed"], results["missing"]) == (7, 4, 3, 0)
    assert results["errors"] == {"400": 3}
    assert results["usage"]["total_tokens"] == 4 * 13 and results["usage"]["prompt_tokens"] == 36
    assert results["cost"]["model"] == "gemini-2.5-flash"
    manifest = manifest_of(gcs, dst, "v")
    assert manifest["results"] == results
    assert sorted(o["name"] for o in manifest["objects"]) == sorted(
        [s[len(directory) + 1:] for s in shards] + ["failed.jsonl"])


def test_vertex_bigquery_output_has_the_jobs_counts_and_no_usage(relay, simulator):
    spec = vertex_spec("proj-r", "us-central1", "bq-1", [{"state": "SUCCEEDED", "stats": {
        "successful": 8, "failed": 2, "incomplete": 0}}], output={"kind": "bigquery", "table": "bq://p.d.t"})
    record, message = end(relay, simulator, spec, None)
    react(relay, message)
    data = announced(relay, record.name)
    assert (data["destination"], data["objects"], data["partial"]) == (None, 0, False)
    assert data["results"] == {
        "requests": 10, "succeeded": 8, "failed": 2, "missing": 2, "unparsed": 0, "unfinished": 0,
        "missing_reason": "the outputs are in BigQuery: batch-relay does not read them", "errors": {},
        "usage": None, "cost": None, "failed_uri": None}
    assert relay.store.load(record.name).copy.status == "not_applicable"


def test_a_source_object_named_failed_jsonl_is_refused(relay, simulator, gcs):
    src, dst = gcs.bucket("vsrc"), gcs.bucket("vdst")
    gcs.put(src, "run/prediction-p/predictions.jsonl", b'{"status": "", "request": {}, "response": {}}\n')
    gcs.put(src, "run/prediction-p/failed.jsonl", b"not the relay's\n")
    record, message = end(relay, simulator, vertex_spec("proj-r", "us-central1", "clash-1", ["SUCCEEDED"], output={
        "kind": "gcs", "uri": f"gs://{src}/run/prediction-p"}), f"gs://{dst}/c")
    react(relay, message)
    copy = relay.store.load(record.name).copy
    assert copy.status == "failed" and copy.error["kind"] == "unsafe_name" and "failed.jsonl" in copy.error["message"]
    assert gcs.names(dst) == []


# -- failed.jsonl is written as every other object: never over someone else's ------------------------------------


def test_failed_jsonl_is_written_only_if_absent_marked_and_never_over_a_foreign_object(relay, simulator, gcs):
    dst = gcs.bucket("gown")
    spec = gemini_spec("own-1", ["SUCCEEDED"], requests={"count": 3, "failed": 1})
    record, message = end(relay, simulator, spec, f"gs://{dst}/o")
    gcs.put(dst, "o/failed.jsonl", b"someone else's\n")
    react(relay, message)
    copy = relay.store.load(record.name).copy
    assert copy.status == "failed" and copy.error["kind"] == "foreign_object"
    assert gcs.names(dst) == ["o/failed.jsonl"] and gcs.get(dst, "o/failed.jsonl") == b"someone else's\n"

    spec = gemini_spec("own-2", ["SUCCEEDED"], requests={"count": 3, "failed": 1})
    record, message = end(relay, simulator, spec, f"gs://{dst}/p")
    wire = Recorder()
    react(relay, message, transport=wire)
    starts = [q for m, path, q in wire.seen if m == "POST" and path.endswith(f"/b/{dst}/o")
              and q.get("name") == "p/failed.jsonl"]
    assert [q.get("ifGenerationMatch") for q in starts] == ["0"]  # only if nothing is there
    meta = gcs.meta(dst, "p/failed.jsonl")["metadata"]
    assert meta == {"batch-relay-job": record.name, "batch-relay-tracking-id": record.tracking_id}


# -- partial outputs: jobs that ended CANCELLED, EXPIRED or FAILED ------------------------------------------------


def test_a_cancelled_gemini_batch_has_its_partial_outputs_copied_and_its_unfinished_requests_recovered(
        relay, simulator, gcs):
    from batch_relay.reactor.handler import Reaction

    dst = gcs.bucket("gcx")
    spec = gemini_spec("cx-1", ["RUNNING", "CANCELLED"], requests={"count": 5, "failed": 2, "finished": 4})
    record, message = end(relay, simulator, spec, f"gs://{dst}/cx")
    assert message["attributes"]["state"] == "JOB_STATE_CANCELLED"
    assert react(relay, message) == Reaction.COPIED
    data = announced(relay, record.name)
    assert data["partial"] is True and data["destination"] == f"gs://{dst}/cx"
    results = data["results"]
    assert (results["requests"], results["succeeded"], results["failed"], results["unfinished"],
            results["missing"]) == (5, 3, 1, 1, 0)
    # the failed request and the one that never ran, both ready to send again
    assert sorted(line["key"] for line in lines_of(gcs.get(dst, "cx/failed.jsonl"))) == ["req-4", "req-5"]
    assert manifest_of(gcs, dst, "cx")["state"] == "JOB_STATE_CANCELLED"
    assert len(gcs.get(dst, "cx/responses.jsonl").splitlines()) == 4


def test_an_expired_vertex_job_has_its_partial_outputs_copied(relay, simulator, gcs):
    src, dst = gcs.bucket("vexp"), gcs.bucket("vdst")
    simulator.configure(storage_url=gcs.url)
    spec = vertex_spec("proj-r", "us-central1", "exp-1", ["RUNNING", "EXPIRED"], output={
        "kind": "gcs", "uri": f"gs://{src}/runs"}, requests={"count": 4, "finished": 2})
    record, message = end(relay, simulator, spec, f"gs://{dst}/e")
    react(relay, message)
    data = announced(relay, record.name)
    assert data["partial"] is True and data["objects"] == 1
    results = data["results"]
    assert (results["succeeded"], results["unfinished"], results["missing"], results["failed_uri"]) == (2, 2, 2, None)
    assert "cannot be matched to the input" in results["missing_reason"]
    assert len(gcs.get(dst, "e/predictions.jsonl").splitlines()) == 2


def test_a_job_that_ended_with_nothing_finished_has_nothing_to_copy(relay, simulator, gcs):
    from batch_relay.reactor.handler import Reaction

    dst = gcs.bucket("gnone")
    spec = gemini_spec("none-1", ["PENDING", "CANCELLED"], requests={"count": 5})
    record, message = end(relay, simulator, spec, f"gs://{dst}/n")
    assert "output" not in simulator.get(record.name) or not simulator.get(record.name).get("output_ready")
    assert react(relay, message) == Reaction.COPIED  # at once: no output wait, nothing written
    copy = relay.store.load(record.name).copy
    assert (copy.status, copy.uri, copy.objects) == ("not_applicable", None, 0)
    data = announced(relay, record.name)
    assert (data["destination"], data["manifest_uri"], data["partial"]) == (None, None, True)
    assert (data["results"]["unfinished"], data["results"]["missing"], data["results"]["usage"]) == (5, 5, None)
    assert "ended CANCELLED with no output location" in data["results"]["missing_reason"]
    assert gcs.names(dst) == []


def test_partial_outputs_that_lag_the_end_are_waited_for_then_copied_or_given_up(relay, simulator, gcs):
    from batch_relay.reactor.handler import Reaction

    dst = gcs.bucket("glag")
    waiting = dataclasses.replace(relay.settings, output_wait_s=3600)
    # 1. CANCELLED with finished requests, the output not shown yet: redelivered (the claim given back), then
    # copied once the API shows it
    late = {"count": 4, "finished": 2}
    spec = gemini_spec("lag-1", ["CANCELLED"], output={"kind": "file", "delay_s": 3600}, requests=late)
    record, message = end(relay, simulator, spec, f"gs://{dst}/lag")
    assert relay.store.load(record.name).completion_stats["successful"] == 2
    with pytest.raises(TransientError, match="no output location"):
        react(relay, message, waiting)
    held = relay.store.load(record.name)
    assert held.copy.status == "copying" and held.copy_waiting_since is not None
    simulator.add_job(gemini_spec("lag-1", ["CANCELLED"], requests=late))
    assert react(relay, message, waiting) == Reaction.COPIED
    data = announced(relay, record.name)
    assert data["partial"] is True and data["results"]["succeeded"] == 2
    assert len(gcs.get(dst, "lag/responses.jsonl").splitlines()) == 2
    # 2. The output never shows: once RELAY_OUTPUT_WAIT_S has passed, nothing to copy (a partial job is not
    # promised outputs: no failure), its counts as results
    spec = gemini_spec("lag-2", ["CANCELLED"], output={"kind": "file", "delay_s": 3600}, requests=late)
    record, message = end(relay, simulator, spec, f"gs://{dst}/never")
    with pytest.raises(TransientError):
        react(relay, message, waiting)
    short = dataclasses.replace(relay.settings, output_wait_s=1)
    ended = relay.store.load(record.name).end_time
    time.sleep(max(0.0, (ended + dt.timedelta(seconds=1.05) - dt.datetime.now(dt.UTC)).total_seconds()))
    assert react(relay, message, short) == Reaction.COPIED
    data = announced(relay, record.name)
    assert relay.store.load(record.name).copy.status == "not_applicable" and data["partial"] is True
    assert "RELAY_OUTPUT_WAIT_S" in data["results"]["missing_reason"]
    assert gcs.names(dst, "never") == []


# -- hostile outputs --------------------------------------------------------------------------------------------


GARBAGE = [
    b"not json at all",
    b"[1, 2, 3]",
    b"42",
    b'"a string"',
    b"\xff\xfe\x00 invalid utf-8",
    b'{"key": "k1"}',  # neither response nor error
    b'{"key": "k2", "response": "not an object"}',
    b"{" * 10_000 + b"}" * 10_000,  # deeper than the parser goes
    b'{"key": "k3", "response": {"usageMetadata": {"promptTokenCount": "99999999999999999999"}}}',  # absurd count
    b'{"key": "k4", "error": {"code": "__proto__", "message": "x"}}',  # Firestore reserves __x__ field names
    b'{"key": "k5", "response": {"candidates": []}}',
    b"",  # a blank line is not a request
    b'{"key": "k6", "error": {"status": "\\u001b[31mRED\\u0007"}}',
]


def test_a_responses_file_of_garbage_copies_as_it_is_and_counts_unparsed(relay, simulator, gcs):
    from batch_relay.reactor.handler import Reaction

    dst = gcs.bucket("ggarb")
    spec = gemini_spec("garb-1", ["SUCCEEDED"], output={"kind": "file", "file_id": "batch-garb-1"})
    record, message = end(relay, simulator, spec, f"gs://{dst}/x")
    body = b"\n".join(GARBAGE)  # and no newline at the end
    wire = Recorder(lambda request: body if request.url.path.endswith("/files/batch-garb-1:download") else None)
    assert react(relay, message, transport=wire) == Reaction.COPIED
    assert gcs.get(dst, "x/responses.jsonl") == body  # copied byte for byte, whatever it holds
    results = announced(relay, record.name)["results"]
    assert (results["unparsed"], results["succeeded"], results["failed"]) == (8, 2, 2)
    assert results["errors"] == {"proto": 1, "31mRED": 1}
    assert results["usage"]["prompt_tokens"] == 0  # the absurd count is ignored
    assert results["missing"] == 2 and results["failed_uri"] is None  # the input file holds no k4/k6
    assert manifest_of(gcs, dst, "x")["results"] == results


# -- the price table ------------------------------------------------------------------------------------------


def test_a_bad_price_table_gives_no_cost_and_an_error_log_never_a_failed_copy(relay, simulator, gcs, tmp_path,
                                                                            capsys):
    from batch_relay.log import configure
    from batch_relay.reactor.handler import Reaction

    configure()
    dst = gcs.bucket("gprice")
    bad = tmp_path / "prices.json"
    bad.write_text('{"version": "x", "models": {}}')
    spec = gemini_spec("price-1", ["SUCCEEDED"], requests={"count": 2, "usage": USAGE})
    record, message = end(relay, simulator, spec, f"gs://{dst}/p")
    capsys.readouterr()
    assert react(relay, message, dataclasses.replace(relay.settings, prices=str(bad))) == Reaction.COPIED
    results = announced(relay, record.name)["results"]
    assert results["cost"] is None and results["usage"]["prompt_tokens"] == 200_000
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [line] = [entry for entry in lines if "price table" in entry["message"]]
    assert line["severity"] == "ERROR" and line["job"] == record.name
    assert line["error"]["kind"] == "bad_prices" and str(bad) in line["error"]["message"]
    assert relay.store.load(record.name).copy.status == "done"


def test_a_price_table_in_cloud_storage_is_read_once_per_invocation(relay, simulator, gcs):
    import importlib.resources

    table_bucket, dst = gcs.bucket("prices"), gcs.bucket("gprice")
    shipped = json.loads((importlib.resources.files("batch_relay") / "results" / "prices.json").read_text())
    shipped["version"] = "2027-01-15 negotiated"
    gcs.put(table_bucket, "tables/prices.json", json.dumps(shipped).encode())
    spec = gemini_spec("price-2", ["SUCCEEDED"], requests={"count": 2, "failed": 1, "usage": USAGE})
    record, message = end(relay, simulator, spec, f"gs://{dst}/p")
    wire = Recorder()
    react(relay, message, dataclasses.replace(relay.settings, prices=f"gs://{table_bucket}/tables/prices.json"), wire)
    assert wire.gets(f"/b/{table_bucket}/o/tables/prices.json") == 1
    assert announced(relay, record.name)["results"]["cost"]["prices"] == "2027-01-15 negotiated"


# -- the trigger, the wait and the CLI ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_FAILED",
                                   "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"])
def test_the_reactor_acts_on_every_ending(state):
    from batch_relay.reactor.handler import TRIGGER_STATES, decode

    name = "batches/t-1"
    data = json.dumps({"job": {"name": name, "tracking_id": "tid"}}).encode()
    attributes = {"ce-type": "batchrelay.job.v1.stateChanged", "job": name, "state": state, "ce-id": "tid-2"}
    trigger = decode({"data": pubsub_envelope(attributes, data)})
    assert trigger is not None and trigger.state == state and state in TRIGGER_STATES
    for other in ("JOB_STATE_RUNNING", "JOB_STATE_CANCELLING", "JOB_STATE_PAUSED"):
        assert decode({"data": pubsub_envelope({**attributes, "state": other}, data)}) is None


def test_wait_outputs_waits_for_the_copy_of_a_job_that_ended_otherwise():
    from batch_relay.batchapi.names import JobName
    from batch_relay.record.model import CopyState, CopyStatus, JobRecord
    from batch_relay.waiting import finished, succeeded

    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    cancelled = JobRecord.new(JobName.parse("batches/w-1"), destination=None, labels={}, now=now).replace(
        state="JOB_STATE_CANCELLED", terminal=True)
    assert finished(cancelled) and not finished(cancelled, outputs=True)  # its partial outputs are on their way
    done = cancelled.replace(copy=CopyState(status=CopyStatus.DONE))
    assert finished(done, outputs=True) and not succeeded(done, outputs=True)  # exit 3: it ended otherwise
    lost = cancelled.replace(state="JOB_STATE_RUNNING", last_poll_error={"kind": "not_found"})
    assert finished(lost, outputs=True)  # no copy is coming


def test_show_prints_the_results_readably_and_json_carries_them(relay, simulator, gcs, function_env, capsys):
    from batch_relay import cli

    dst = gcs.bucket("gshow")
    spec = gemini_spec("show-1", ["SUCCEEDED"], requests={"count": 4, "failed": 1, "usage": USAGE})
    record, message = end(relay, simulator, spec, f"gs://{dst}/s")
    react(relay, message)
    capsys.readouterr()  # (the copy's log lines)
    assert cli.main(["show", record.name, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["results"] == relay.store.load(record.name).results
    assert shown["parent"] is None and shown["resubmitted_as"] is None
    assert cli.main(["show", record.name]) == 0
    out = capsys.readouterr().out
    assert "4 requests: 3 succeeded, 1 failed, 0 missing" in out
    assert re.search(r"^  errors +3 x1$", out, re.M)
    assert "372,000 total: 300,000 prompt (120,000 cached), 60,000 output, 12,000 thinking" in out
    assert "USD at list batch prices (gemini-2.5-flash" in out
    assert re.search(rf"^  failed_uri +gs://{dst}/s/failed.jsonl$", out, re.M)


# -- pure parts -----------------------------------------------------------------------------------------------


def test_source_of_decides_partial_outputs_nothing_to_copy_and_the_wait(settings):
    from batch_relay.batchapi.names import JobName
    from batch_relay.batchapi.wire import JobStatus
    from batch_relay.errors import PermanentError
    from batch_relay.reactor.source import OutputKind, OutputPending, source_of

    job = JobName.parse("batches/s-1")
    end_at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    soon, late = end_at + dt.timedelta(seconds=10), end_at + dt.timedelta(seconds=settings.output_wait_s + 1)

    def status(state, output=None, stats=None):
        return JobStatus(name=job.name, api=job.api, state=state, end_time=end_at, output=output or {},
                         completion_stats=stats)

    file = {"file_name": "files/batch-s-1"}
    for state, partial in (("JOB_STATE_SUCCEEDED", False), ("JOB_STATE_PARTIALLY_SUCCEEDED", False),
                           ("JOB_STATE_CANCELLED", True), ("JOB_STATE_EXPIRED", True), ("JOB_STATE_FAILED", True)):
        found = source_of(job, status(state, file), None, soon, settings)
        assert (found.kind, found.partial) == (OutputKind.FILE, partial)
    with pytest.raises(PermanentError, match="not ended") as refused:
        source_of(job, status("JOB_STATE_RUNNING", file), None, soon, settings)
    assert refused.value.kind == "state_mismatch"
    # no output location: a job that ended with nothing finished has nothing to copy, at once
    none = source_of(job, status("JOB_STATE_CANCELLED", stats={"successful": 0, "failed": 0, "incomplete": 5}),
                     None, soon, settings)
    assert none.kind is OutputKind.NONE and "no finished request" in none.reason
    # one with finished requests waits like a success; after the wait, nothing to copy (a success: no_output)
    some = {"successful": 2, "failed": 0, "incomplete": 3}
    for state in ("JOB_STATE_CANCELLED", "JOB_STATE_SUCCEEDED"):
        with pytest.raises(OutputPending):
            source_of(job, status(state, stats=some), None, soon, settings)
    gave_up = source_of(job, status("JOB_STATE_EXPIRED", stats=some), None, late, settings)
    assert gave_up.kind is OutputKind.NONE and "RELAY_OUTPUT_WAIT_S" in gave_up.reason
    with pytest.raises(PermanentError) as failed:
        source_of(job, status("JOB_STATE_SUCCEEDED", stats=some), None, late, settings)
    assert failed.value.kind == "no_output"


def test_the_list_and_show_views_of_partial_copies_and_results():
    from batch_relay.cli.views import copy_cell, results_lines

    done = {"status": "done", "objects": 2, "bytes": 2000}
    assert copy_cell({"terminal": True, "state": "JOB_STATE_CANCELLED", "copy": done}) == "done (partial) 2 obj 2.0 KB"
    assert copy_cell({"terminal": True, "state": "JOB_STATE_SUCCEEDED", "copy": done}) == "done 2 obj 2.0 KB"
    assert copy_cell({"terminal": True, "state": "JOB_STATE_FAILED", "copy": {"status": "pending"}}) == "- (no outputs)"
    assert copy_cell({"terminal": True, "state": "JOB_STATE_FAILED", "copy": {"status": "not_applicable"}}) \
        == "n/a (no outputs)"
    assert copy_cell({"terminal": True, "state": "JOB_STATE_SUCCEEDED", "output": {"bigquery_uri": "bq://p.d.t"},
                      "copy": {"status": "not_applicable"}}) == "n/a (BigQuery)"
    assert results_lines(None) == []
    bigquery = results_lines({"requests": 10, "succeeded": 8, "failed": 2, "missing": 2, "unparsed": 0,
                              "unfinished": 0, "missing_reason": "the outputs are in BigQuery\x1b[2J", "errors": {},
                              "usage": None, "cost": None, "failed_uri": None})
    assert bigquery[0] == "results           10 requests: 8 succeeded, 2 failed, 2 missing"
    assert any("not read" in line for line in bigquery) and any(line.endswith("failed_uri      -") for line in bigquery)
    assert all("\x1b" not in line for line in bigquery)  # what the outputs say is escaped for a terminal
