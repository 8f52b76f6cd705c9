"""The REST client against httpx.MockTransport: here the HTTP peer itself is the subject."""

import asyncio
import datetime as dt
import json
from pathlib import Path

import httpx
import pytest

from batch_relay import wiring
from batch_relay.auth import GoogleAuth
from batch_relay.batchapi.client import BatchApiClient
from batch_relay.batchapi.create import GeminiCreate, VertexCreate, vertex_job_body
from batch_relay.batchapi.endpoints import MissingApiKey, status_url
from batch_relay.batchapi.fields import GEMINI_STATUS, VERTEX_STATUS
from batch_relay.batchapi.http import USER_AGENT
from batch_relay.batchapi.inputs import BatchInput, GeminiInputs, batch_input
from batch_relay.batchapi.names import JobName
from batch_relay.batchapi.outputs import GeminiOutputs
from batch_relay.batchapi.quota import RegionLimiter
from batch_relay.batchapi.scopes import WatchScope
from batch_relay.batchapi.webhook_admin import WebhookAdmin
from batch_relay.batchapi.wire import JobStatus, inline_line
from batch_relay.errors import (
    BadResponseError,
    DeadlineExceeded,
    ForbiddenError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from batch_relay.retry import RetryPolicy
from batch_relay.settings import Settings

GEMINI = JobName.parse("batches/b1")
VERTEX = JobName.parse("projects/p/locations/europe-west4/batchPredictionJobs/9")
OK_GEMINI = {"name": "batches/b1", "metadata": {"name": "batches/b1", "state": "BATCH_STATE_RUNNING"}}
OK_VERTEX = {"name": VERTEX.name, "state": "JOB_STATE_QUEUED"}


def settings(**env):
    return Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "RELAY_GEMINI_API_KEY": "k-123456", **env})


class Clock:
    def __init__(self):
        self.t = 0.0
        self.sleeps = []

    def __call__(self):
        return self.t

    async def sleep(self, s):
        self.sleeps.append(s)
        self.t += s


def run(replies, job=GEMINI, deadline=1000.0, **kw):
    """Serve ``replies`` in order; return (status or exception, requests seen, sleeps)."""
    seen = []
    queue = list(replies)

    def handler(request):
        seen.append(httpx.Request(request.method, request.url, headers=request.headers.copy()))
        reply = queue.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    clock = Clock()
    s = kw.pop("settings", None) or settings()

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            api = BatchApiClient(http, s, clock=clock, sleep=clock.sleep, **kw)
            try:
                return await api.get_status(job, deadline)
            except Exception as exc:  # noqa: BLE001
                return exc

    return asyncio.run(go()), seen, clock.sleeps


def test_gemini_request_carries_the_key_header():
    result, seen, _ = run([httpx.Response(200, json=OK_GEMINI)])
    assert result.state == "JOB_STATE_RUNNING"
    assert seen[0].headers["x-goog-api-key"] == "k-123456"
    assert seen[0].url.copy_with(query=None) == "https://generativelanguage.googleapis.com/v1beta/batches/b1"
    assert seen[0].url.params["fields"] == GEMINI_STATUS  # the tick asks only for what it stores


def test_a_vertex_get_asks_for_the_fields_its_list_asks_for():
    result, seen, _ = run([httpx.Response(200, json=OK_VERTEX)], job=VERTEX)
    assert result.state == "JOB_STATE_QUEUED"
    assert seen[0].url.params["fields"] == VERTEX_STATUS


def test_a_field_mask_the_api_refuses_is_dropped_for_the_rest_of_the_client(caplog):
    refused = httpx.Response(400, json={"error": {"code": 400, "message": "Invalid field mask path",
                                                  "status": "INVALID_ARGUMENT"}})
    seen = []
    replies = [refused, httpx.Response(200, json=OK_GEMINI), httpx.Response(200, json={"operations": []})]

    def handler(request):
        seen.append(request.url)
        return replies.pop(0)

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            api = BatchApiClient(http, settings())
            status = await api.get_status(GEMINI, 1e12)
            page = await api.list_page(WatchScope.parse("gemini"), None, 1e12)
            return status, page

    status, page = asyncio.run(go())
    assert status.state == "JOB_STATE_RUNNING" and page.items == []
    assert [url.params.get("fields") for url in seen] == [GEMINI_STATUS, None, None]  # asked again, then no mask
    [line] = [r for r in caplog.records if "refused a field mask" in r.getMessage()]
    assert line.levelname == "WARNING"


def test_another_400_is_not_hidden_by_the_mask_fallback():
    bad = httpx.Response(400, json={"error": {"code": 400, "message": "bad name", "status": "INVALID_ARGUMENT"}})
    result, seen, _ = run([bad, bad])
    assert isinstance(result, PermanentError) and result.kind == "bad_request"
    assert [r.url.params.get("fields") for r in seen] == [GEMINI_STATUS, None]


def test_another_400_leaves_the_masks_on_for_the_next_requests():
    """One job answering 400 (a bad name) must not make the rest of the tick fetch whole batches, inline
    responses and all: the masks go off only when the unmasked request succeeds."""
    bad = httpx.Response(400, json={"error": {"code": 400, "message": "bad name", "status": "INVALID_ARGUMENT"}})
    replies, seen = [bad, bad, httpx.Response(200, json=OK_GEMINI)], []

    def handler(request):
        seen.append(request.url.params.get("fields"))
        return replies.pop(0)

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            api = BatchApiClient(http, settings(), clock=Clock(), sleep=Clock().sleep)
            with pytest.raises(PermanentError):
                await api.get_status(GEMINI, 1000.0)
            return await api.get_status(GEMINI, 1000.0)

    assert asyncio.run(go()).state == "JOB_STATE_RUNNING"
    assert seen == [GEMINI_STATUS, None, GEMINI_STATUS]


def test_vertex_hosts():
    s = settings()
    assert status_url(s, VERTEX) == f"https://europe-west4-aiplatform.googleapis.com/v1/{VERTEX.name}"
    g = JobName.parse("projects/p/locations/global/batchPredictionJobs/1")
    assert status_url(s, g).startswith("https://aiplatform.googleapis.com/v1/projects/p/locations/global/")
    custom = settings(RELAY_VERTEX_BASE_URL="http://127.0.0.1:9/{location}")
    assert status_url(custom, VERTEX) == f"http://127.0.0.1:9/europe-west4/v1/{VERTEX.name}"


def test_retries_429_and_5xx_then_succeeds_honouring_retry_after():
    replies = [httpx.Response(429, json={"error": {"code": 429, "message": "slow down"}}),
               httpx.Response(429, headers={"Retry-After": "7"}),
               httpx.Response(503), httpx.Response(200, json=OK_GEMINI)]
    result, seen, sleeps = run(replies)
    assert result.state == "JOB_STATE_RUNNING" and len(seen) == 4
    assert 0.5 <= sleeps[0] <= 1.0  # jittered first backoff
    assert sleeps[1] == 7.0  # Retry-After honoured
    assert 2.0 <= sleeps[2] <= 4.0


def test_transport_errors_are_retried_then_given_up():
    replies = [httpx.ConnectError("refused")] * 5
    result, seen, sleeps = run(replies)
    assert isinstance(result, TransientError) and len(seen) == 5 and len(sleeps) == 4


def test_timeouts_are_transient():
    result, _, _ = run([httpx.ReadTimeout("slow")] * 5)
    assert isinstance(result, TransientError) and "timed out" in str(result)


@pytest.mark.parametrize(("reply", "error"), [
    (httpx.Response(404, json={"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}), NotFoundError),
    (httpx.Response(403), ForbiddenError),
    (httpx.Response(200, content=b'{"name": "batc'), BadResponseError),
    (httpx.Response(200, json={"metadata": [1]}), BadResponseError),
    (httpx.Response(200, json={**OK_GEMINI, "metadata": {"name": "batches/other", "state": "BATCH_STATE_RUNNING"}}),
     BadResponseError),
])
def test_permanent_errors_are_not_retried(reply, error):
    result, seen, _ = run([reply])
    assert isinstance(result, error) and len(seen) == 1


def test_deadline_stops_retrying():
    result, seen, _ = run([httpx.Response(503)] * 5, deadline=1.5)
    assert isinstance(result, TransientError) and len(seen) <= 2


def test_gemini_without_key_is_forbidden_without_a_request():
    s = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p"})
    result, seen, _ = run([], settings=s)
    assert isinstance(result, ForbiddenError) and seen == []


class FakeCredentials:
    def __init__(self):
        self.token = None
        self.expiry = None
        self.quota_project_id = "billing-proj"
        self.refreshes = 0

    def refresh(self, request):
        self.refreshes += 1
        self.token = f"tok-{self.refreshes}"
        self.expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).replace(tzinfo=None)


def test_vertex_bearer_token_refreshed_before_expiry_and_after_401():
    creds = FakeCredentials()  # GoogleAuth's own staleness check and locked refresh run for real
    auth = GoogleAuth(creds)
    result, seen, _ = run([httpx.Response(401), httpx.Response(200, json=OK_VERTEX)], job=VERTEX, vertex_auth=auth)
    assert result.state == "JOB_STATE_QUEUED"
    assert [r.headers["authorization"] for r in seen] == ["Bearer tok-1", "Bearer tok-2"]
    assert seen[0].headers["x-goog-user-project"] == "billing-proj"
    creds.expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).replace(tzinfo=None)  # about to expire
    _, seen, _ = run([httpx.Response(200, json=OK_VERTEX)], job=VERTEX, vertex_auth=auth)
    assert seen[0].headers["authorization"] == "Bearer tok-3"


def test_region_limiter_spends_a_minute_of_quota_then_waits():
    clock = Clock()
    limiter = RegionLimiter(60, clock=clock)

    async def go():
        for _ in range(60):
            await limiter.acquire("vertex:r", deadline=10)
        await limiter.acquire("gemini", deadline=10)  # other regions are separate
        with pytest.raises(DeadlineExceeded):
            await limiter.acquire("vertex:r", deadline=0.5)
        clock.t = 1.0
        await limiter.acquire("vertex:r", deadline=10)

    asyncio.run(go())


def test_error_bodies_do_not_leak_the_key():
    refused = httpx.Response(400, json={"error": {"message": "API key not valid"}})
    result, _, _ = run([refused, refused])  # asked again without the field mask, in case it was the mask
    assert isinstance(result, PermanentError) and "API key not valid" in str(result)
    assert "k-123456" not in str(result)


def test_without_the_key_nothing_is_sent_and_the_job_gets_one_forbidden_error():
    no_key = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p"})
    result, seen, _ = run([], settings=no_key)
    assert isinstance(result, MissingApiKey) and isinstance(result, ForbiddenError) and result.kind == "forbidden"
    assert "RELAY_GEMINI_API_KEY is not set" in str(result) and seen == []
    with pytest.raises(MissingApiKey):
        WebhookAdmin(httpx.AsyncClient(), no_key)


# -- webhooks, inline responses -------------------------------------------------------------------------------


def test_webhook_admin_through_wiring_with_a_transport():
    """register, list (two pages) and unregister: the URLs, the key, snake_case bodies, one client of wiring's."""
    seen = []
    pages = {None: {"webhooks": [{"id": "w1", "uri": "https://relay.example/hook"}], "next_page_token": "t2"},
             "t2": {"webhooks": [{"id": "w2", "uri": "https://other.example/"}]}}

    def handler(request):
        seen.append(request)
        if request.method == "POST":
            body = json.loads(request.content)
            return httpx.Response(200, json={"id": "w1", **body, "new_signing_secret": "whsec_x"})
        if request.method == "GET":
            return httpx.Response(200, json=pages[request.url.params.get("page_token")])
        return httpx.Response(200, content=b"")

    s = settings(RELAY_GEMINI_BASE_URL="https://gemini.example")

    async def go():
        async with wiring.webhook_admin(s, transport=httpx.MockTransport(handler)) as admin:
            created = await admin.register("https://relay.example/hook", name="relay")
            listed = await admin.list()
            await admin.unregister("webhooks/w1")
            return created, listed

    created, listed = asyncio.run(go())
    assert created["new_signing_secret"] == "whsec_x" and [h["id"] for h in listed] == ["w1", "w2"]
    assert [(r.method, str(r.url)) for r in seen] == [
        ("POST", "https://gemini.example/v1beta/webhooks"),
        ("GET", "https://gemini.example/v1beta/webhooks?page_size=100"),
        ("GET", "https://gemini.example/v1beta/webhooks?page_size=100&page_token=t2"),
        ("DELETE", "https://gemini.example/v1beta/webhooks/w1"),
    ]
    assert json.loads(seen[0].content) == {"uri": "https://relay.example/hook", "name": "relay",
                                           "subscribed_events": ["batch.succeeded", "batch.failed", "batch.expired"]}
    assert all(r.headers["x-goog-api-key"] == "k-123456" and r.headers["user-agent"] == USER_AGENT for r in seen)


def test_inline_responses_stream_from_a_get_of_them_alone_as_responses_jsonl_lines():
    items = [{"metadata": {"key": "a"}, "response": {"candidates": []}}, {"error": {"code": 3, "message": "bad"}}]
    body = {"name": "batches/b1", "metadata": {"name": "batches/b1", "state": "BATCH_STATE_SUCCEEDED", "output": {
        "inlinedResponses": {"inlinedResponses": items}}}}
    lines = [{"key": "a", "response": {"candidates": []}}, {"key": "1", "error": {"code": 3, "message": "bad"}}]
    assert [inline_line(index, item) for index, item in enumerate(items)] == lines
    assert JobStatus.from_gemini(body).output == {"inlined_count": 2}
    with pytest.raises(BadResponseError):
        inline_line(0, {"metadata": "k"})

    def handler(request):
        assert request.headers["x-goog-api-key"] == "k-123456"
        assert request.url.copy_with(query=None) == "https://gemini.example/v1beta/batches/b1"
        assert request.url.params["fields"] == "metadata.output.inlinedResponses.inlinedResponses"
        return httpx.Response(200, json=body) if request.url.host == "gemini.example" else httpx.Response(404)

    async def read(reply):
        async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as http:
            outputs = GeminiOutputs(http, settings(RELAY_GEMINI_BASE_URL="https://gemini.example"))
            async with outputs.inline_items("batches/b1") as got:
                return [item async for item in got]

    assert [inline_line(index, item) for index, item in enumerate(asyncio.run(read(handler)))] == lines
    with pytest.raises(BadResponseError):
        asyncio.run(read(lambda request: httpx.Response(200, content=b"<html>")))


# -- a batch's input, new batches (resubmit) -------------------------------------------------------------------


def _serve(handler, make):
    """Run ``make(http)`` (a coroutine) over a MockTransport serving ``handler``; return (result, requests)."""
    seen = []

    def record(request):
        request.read()
        seen.append(request)
        return handler(request)

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as http:
            return await make(http)

    return asyncio.run(go()), seen


GEMINI_BASE = {"RELAY_GEMINI_BASE_URL": "https://gemini.example"}


def test_a_batch_input_is_a_file_or_inline_requests():
    items = [{"request": {"contents": []}, "metadata": {"key": "a"}}]
    assert batch_input({"metadata": {"inputConfig": {"fileName": "files/in-1"}}}) == BatchInput(file_name="files/in-1")
    assert batch_input({"name": "batches/b", "inputConfig": {"requests": {"requests": items}}}) == BatchInput(
        requests=items)
    for bad in ([], {"metadata": {}}, {"metadata": {"inputConfig": {"fileName": ""}}},
                {"inputConfig": {"requests": {"requests": {}}}}):
        with pytest.raises(BadResponseError):
            batch_input(bad)

    def handler(request):
        if request.url.path == "/v1beta/batches/b1":
            return httpx.Response(200, json={"name": "batches/b1",
                                             "metadata": {"inputConfig": {"fileName": "files/x"}}})
        if request.url.path == "/download/v1beta/files/x:download":
            return httpx.Response(200, content=b'{"key": "a", "request": {}}\n')
        return httpx.Response(404, json={"error": {"code": 404, "message": "File files/gone not found."}})

    async def read(http):
        inputs = GeminiInputs(http, settings(**GEMINI_BASE))
        found = await inputs.batch_input("batches/b1")
        async with inputs.download(found.file_name) as download:
            data = b"".join([chunk async for chunk in download.chunks()])
        try:
            async with inputs.download("files/gone"):
                pass
        except NotFoundError as exc:
            return found, data, exc
        return found, data, None

    (found, data, gone), seen = _serve(handler, read)
    assert found.file_name == "files/x" and data == b'{"key": "a", "request": {}}\n'
    assert isinstance(gone, NotFoundError)  # the Files API keeps a file 48 hours
    assert all(r.headers["x-goog-api-key"] == "k-123456" for r in seen)
    assert [str(r.url) for r in seen] == ["https://gemini.example/v1beta/batches/b1",
                                          "https://gemini.example/download/v1beta/files/x:download?alt=media",
                                          "https://gemini.example/download/v1beta/files/gone:download?alt=media"]


def test_a_file_upload_is_resumable_and_stays_on_the_gemini_origin():
    starts = []

    def handler(request):
        if request.url.path == "/upload/v1beta/files" and "upload_id" not in request.url.params:
            starts.append(request)
            if len(starts) == 1:
                return httpx.Response(503)
            return httpx.Response(200, headers={"X-Goog-Upload-URL": "https://gemini.example/upload/v1beta/files"
                                                                     "?upload_id=U1&upload_protocol=resumable",
                                                "X-Goog-Upload-Status": "active"})
        return httpx.Response(200, json={"file": {"name": "files/abc", "sizeBytes": "11"}},
                              headers={"X-Goog-Upload-Status": "final"})

    async def upload(http):
        return await GeminiCreate(http, settings(**GEMINI_BASE), retry_policy=RetryPolicy(initial_s=0.001)
                                  ).upload_file(b'{"k": 1}\n\n\n', size=11, display_name="retry of batches/b1")

    name, seen = _serve(handler, upload)
    assert name == "files/abc" and len(starts) == 2  # the start is retried: it creates nothing
    start, finish = seen[1], seen[2]
    assert (start.method, str(start.url)) == ("POST", "https://gemini.example/upload/v1beta/files")
    assert start.headers["x-goog-upload-protocol"] == "resumable" and start.headers["x-goog-upload-command"] == "start"
    assert start.headers["x-goog-upload-header-content-length"] == "11"
    assert start.headers["x-goog-upload-header-content-type"] == "application/jsonl"
    assert json.loads(start.content) == {"file": {"display_name": "retry of batches/b1"}}
    assert str(finish.url).endswith("?upload_id=U1&upload_protocol=resumable")
    assert finish.headers["x-goog-upload-command"] == "upload, finalize"
    assert finish.headers["x-goog-upload-offset"] == "0"
    assert finish.content == b'{"k": 1}\n\n\n' and finish.headers["content-length"] == "11"

    def elsewhere(request):
        return httpx.Response(200, headers={"X-Goog-Upload-URL": "https://uploads.evil.example/u?upload_id=1"})

    with pytest.raises(BadResponseError, match="not on the Gemini API's origin"):
        _serve(elsewhere, upload)
    with pytest.raises(BadResponseError, match="without an X-Goog-Upload-URL"):
        _serve(lambda request: httpx.Response(200), upload)


def test_a_batch_is_created_once_from_a_file_or_inline_requests():
    created = {"name": "batches/new1", "metadata": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "name": "batches/new1", "model": "models/gemini-2.5-flash", "state": "BATCH_STATE_PENDING"}}

    async def create(http, **kw):
        return await GeminiCreate(http, settings(**GEMINI_BASE)).create_batch(
            "models/gemini-2.5-flash", display_name="retry", **kw)

    status, seen = _serve(lambda r: httpx.Response(200, json=created), lambda http: create(http, file_name="files/f"))
    assert status.name == "batches/new1" and status.state == "JOB_STATE_PENDING"
    assert str(seen[0].url) == "https://gemini.example/v1beta/models/gemini-2.5-flash:batchGenerateContent"
    assert json.loads(seen[0].content) == {"batch": {"displayName": "retry", "model": "models/gemini-2.5-flash",
                                                     "inputConfig": {"fileName": "files/f"}}}
    inline = [{"request": {"contents": []}, "metadata": {"key": "k"}}]
    status, seen = _serve(lambda r: httpx.Response(200, json=created["metadata"]),  # the batch, not an Operation
                          lambda http: create(http, requests=inline))
    assert status.name == "batches/new1"
    assert json.loads(seen[0].content)["batch"]["inputConfig"] == {"requests": {"requests": inline}}
    with pytest.raises(TransientError):  # never sent twice: a second create is a second batch
        _serve(lambda r: httpx.Response(503), lambda http: create(http, file_name="files/f"))
    _, seen = _serve(lambda r: httpx.Response(503), lambda http: _swallow(create(http, file_name="files/f")))
    assert len(seen) == 1
    with pytest.raises(PermanentError):
        _serve(lambda r: httpx.Response(200), lambda http: GeminiCreate(http, settings(**GEMINI_BASE)).create_batch(
            "models/../etc", display_name="x", file_name="files/f"))


async def _swallow(coro):
    try:
        return await coro
    except TransientError:
        return None


def test_a_vertex_job_is_created_with_its_wire_body():
    name = "projects/123/locations/europe-west4/batchPredictionJobs/77"
    body = vertex_job_body(display_name="retry of 9", model="publishers/google/models/gemini-2.5-flash",
                           input_uris=["gs://out/x/failed.jsonl"], output_prefix="gs://out/x/retry",
                           labels={"batch-relay-parent": "9"})
    assert body == {"displayName": "retry of 9", "model": "publishers/google/models/gemini-2.5-flash",
                    "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": ["gs://out/x/failed.jsonl"]}},
                    "outputConfig": {"predictionsFormat": "jsonl",
                                     "gcsDestination": {"outputUriPrefix": "gs://out/x/retry"}},
                    "labels": {"batch-relay-parent": "9"}}

    class Token(httpx.Auth):
        def auth_flow(self, request):
            request.headers["Authorization"] = "Bearer t0k"
            yield request

    async def create(http):
        return await VertexCreate(http, settings(), vertex_auth=Token()).create_job("p", "europe-west4", body)

    status, seen = _serve(lambda r: httpx.Response(200, json={"name": name, "state": "JOB_STATE_PENDING"}), create)
    assert status.name == name and status.state == "JOB_STATE_PENDING"
    assert str(seen[0].url) == ("https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/"
                                "batchPredictionJobs")
    assert seen[0].headers["authorization"] == "Bearer t0k" and "x-goog-api-key" not in seen[0].headers
    assert json.loads(seen[0].content) == body
    with pytest.raises(PermanentError, match="not a Vertex AI location"):
        asyncio.run(VertexCreate(httpx.AsyncClient(), settings()).create_job("p/../q", "x", body))


# -- one door ----------------------------------------------------------------------------------------------------


def test_only_batchapi_writes_a_batch_api_url_or_the_key_header():
    """Every Gemini API and Vertex AI URL, and the API key header, are written in shared/batchapi/ alone."""
    shared = Path(__file__).parent.parent / "shared"
    needles = ("/v1beta", "aiplatform", "x-goog-api-key", "generativelanguage")
    allowed = {("log.py", "x-goog-api-key")}  # the redaction pattern that masks the header's value in logs
    found = [(str(path.relative_to(shared)), needle)
             for path in sorted(shared.rglob("*.py")) if path.relative_to(shared).parts[0] != "batchapi"
             for needle in needles if needle in path.read_text().lower()]
    assert [hit for hit in found if hit not in allowed] == []
    assert ("log.py", "x-goog-api-key") in found  # the scan reads what it should


def test_inline_responses_are_streamed_from_a_get_of_them_alone_or_the_whole_batch_if_the_mask_is_refused():
    items = [{"response": {"text": "a ] }"}, "metadata": {"key": "a"}},
             {"error": {"code": 3}, "metadata": {"key": "b"}}]
    inlined = {"inlinedResponses": {"inlinedResponses": items}}
    whole = {"name": "batches/b1", "metadata": {"name": "batches/b1", "output": inlined}, "response": inlined}
    asked = []

    def handler(request):
        asked.append(request.url.params.get("fields"))
        if request.url.params.get("fields"):
            return httpx.Response(400, json={"error": {"code": 400, "message": "bad mask"}})
        return httpx.Response(200, content=json.dumps(whole).encode())

    async def read():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            outputs = GeminiOutputs(http, settings(RELAY_GEMINI_BASE_URL="https://gemini.example"))
            async with outputs.inline_items("batches/b1", ("response", "inlinedResponses", "inlinedResponses")) as got:
                return [item async for item in got]

    assert asyncio.run(read()) == items  # once: the copy in `response` is read past, not handed out again
    assert asked == ["response.inlinedResponses.inlinedResponses", None]
