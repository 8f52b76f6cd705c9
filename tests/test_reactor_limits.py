"""The reactor against Cloud Storage's limits: a rewrite that needs more calls than one delivery has time for
(resumed on redelivery from the tokens kept on the record), a destination bucket full of other objects (looked
up by the names the copy writes, never listed whole), and a requester-pays source bucket (its own error kind).
The Firestore and Pub/Sub emulators, fake-gcs-server and the simulator over real HTTP; a transport in front of
fake-gcs answers what it cannot (``done: false`` with tokens, requester pays) where that answer is the subject."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from batch_relay import wiring
from batch_relay.reactor import plans as copy_plans
from batch_relay.reactor.handler import Reaction
from batch_relay.reactor.progress import MAX_TOKEN_CHARS, MAX_TOKENS, RewriteProgress, rewrite_budget_s
from batch_relay.reactor.storage import RewriteUnfinished
from tests.helpers import pubsub_envelope
from tests.test_reactor import succeed, vertex_job


class Network(httpx.AsyncBaseTransport):
    """The network, seen: every request goes on to its peer unless ``answer`` answers it first."""

    def __init__(self) -> None:
        self.network = httpx.AsyncHTTPTransport()
        self.seen: list[httpx.Request] = []

    async def answer(self, request: httpx.Request) -> httpx.Response | None:
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return await self.answer(request) or await self.network.handle_async_request(request)

    async def aclose(self) -> None:
        await self.network.aclose()


class LongRewrite(Network):
    """Cloud Storage's rewrite of one large object across locations: ``done: false`` with a new token for each
    call (``token-43``, ``token-44``, ...), forever, or ``more`` times more and then done (fake-gcs copies it)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.sent: list[str | None] = []
        self.more: int | None = None
        self.issued = 42

    async def answer(self, request: httpx.Request) -> httpx.Response | None:
        if request.method != "POST" or "/rewriteTo/" not in request.url.path or \
                not request.url.path.endswith(self.target):
            return None
        self.sent.append(request.url.params.get("rewriteToken"))
        if self.more is not None:
            if self.more == 0:
                return None
            self.more -= 1
        await asyncio.sleep(0.02)  # a call's worth of bytes
        self.issued += 1
        return httpx.Response(200, json={"kind": "storage#rewriteResponse", "done": False,
                                         "rewriteToken": f"token-{self.issued}"})


def event_of(message: dict) -> dict:
    return {"id": "1", "data": pubsub_envelope(message["attributes"], message["raw"])}


def test_a_long_rewrite_stops_at_the_deadline_and_the_redelivery_resumes_from_its_token(relay, simulator, gcs,
                                                                                         caplog):
    src, dst = gcs.bucket("lrsrc"), gcs.bucket("lrdst")
    run = "run/prediction-lr"
    gcs.put(src, f"{run}/predictions.jsonl", b'{"status": ""}\n')
    gcs.put(src, f"{run}/big.jsonl", b"big" * 1000)
    record, message = succeed(relay, simulator, vertex_job("lr-1", f"gs://{src}/{run}"), f"gs://{dst}/lr")
    settings = dataclasses.replace(relay.settings, copy_lease_s=2.0)  # rewrite calls stop after 1 s
    transport = LongRewrite("lr/big.jsonl")

    with pytest.raises(RewriteUnfinished):  # raised: Pub/Sub redelivers
        wiring.react_to_cloud_event(event_of(message), settings, relay.db, relay.publisher, transport=transport)
    first = list(transport.sent)
    assert first[0] is None and len(first) >= 2
    held = relay.store.load(record.name)
    assert held.copy.status == "copying" and held.copy_rewrites == {"lr/big.jsonl": f"token-{transport.issued}"}
    [stopped] = [r for r in caplog.records if getattr(r, "fields", {}).get("kind") == "rewrite_unfinished"]
    assert stopped.levelname == "WARNING" and stopped.fields["rewrites"] == 1 and stopped.fields["job"] == record.name
    assert gcs.meta(dst, "lr/big.jsonl") is None and gcs.get(dst, "lr/predictions.jsonl")

    saved = held.copy_rewrites["lr/big.jsonl"]
    transport.more = 2  # two more calls, then the rewrite is done
    reaction = wiring.react_to_cloud_event(event_of(message), settings, relay.db, relay.publisher, transport=transport)
    assert reaction == Reaction.COPIED
    resumed = transport.sent[len(first):]
    assert resumed == [saved, f"token-{transport.issued - 1}", f"token-{transport.issued}"]  # not [None, ...]
    done = relay.store.load(record.name)
    assert done.copy.status == "done" and done.copy.attempt == 1 and done.copy_rewrites == {}
    assert gcs.get(dst, "lr/big.jsonl") == b"big" * 1000


class RequesterPays(Network):
    """A source bucket that is requester-pays: Cloud Storage's 400 ``userProjectMissing`` for every request."""

    def __init__(self, bucket: str) -> None:
        super().__init__()
        self.bucket = bucket

    async def answer(self, request: httpx.Request) -> httpx.Response | None:
        if f"/b/{self.bucket}/" not in request.url.path:
            return None
        message = "Bucket is a requester pays bucket but no user project provided."
        return httpx.Response(400, json={"error": {"code": 400, "message": message, "errors": [
            {"message": message, "domain": "global", "reason": "userProjectMissing"}]}})


def test_a_requester_pays_source_fails_the_copy_as_requester_pays_at_once(relay, simulator, gcs):
    src, dst = gcs.bucket("rpsrc"), gcs.bucket("rpdst")
    gcs.put(src, "run/prediction-rp/predictions.jsonl", b"{}\n")
    record, message = succeed(relay, simulator, vertex_job("rp-1", f"gs://{src}/run/prediction-rp"), f"gs://{dst}/rp")
    transport = RequesterPays(src)
    reaction = wiring.react_to_cloud_event(event_of(message), relay.settings, relay.db, relay.publisher,
                                           transport=transport)
    assert reaction == Reaction.FAILED  # acked: no redelivery loop
    copy = relay.store.load(record.name).copy
    assert copy.status == "failed" and copy.error["kind"] == "requester_pays"
    assert "requester-pays" in copy.error["message"] and "no-requester-pays" in copy.error["message"]
    assert sum(f"/b/{src}/" in r.url.path for r in transport.seen) == 1  # asked once, not retried
    assert gcs.names(dst) == []


def test_the_destination_is_looked_up_by_the_names_the_copy_writes_not_listed(relay, simulator, gcs, monkeypatch):
    monkeypatch.setattr(copy_plans, "LIST_PAGE_SIZE", 4)
    src, dst = gcs.bucket("blsrc"), gcs.bucket("bldst")
    run = "run/prediction-bl"
    files = [f"predictions_{i:02d}.jsonl" for i in range(20)]  # more than FIND_BY_GET: one listing of their range
    for name in files:
        gcs.put(src, f"{run}/{name}", b'{"status": ""}\n')
    for i in range(24):  # the user's other objects, before and after the job's names (no destination prefix)
        gcs.put(dst, f"aaa/{i:02d}", b"x")
        gcs.put(dst, f"zzz/{i:02d}", b"x")
    record, message = succeed(relay, simulator, vertex_job("bl-1", f"gs://{src}/{run}"), f"gs://{dst}")
    transport = Network()
    reaction = wiring.react_to_cloud_event(event_of(message), relay.settings, relay.db, relay.publisher,
                                           transport=transport)
    assert reaction == Reaction.COPIED
    lookups = [r for r in transport.seen if r.method == "GET" and f"/b/{dst}/o" in r.url.path]
    lists = [r for r in lookups if r.url.path.endswith(f"/b/{dst}/o") and "maxResults" in r.url.params
             and r.url.params["maxResults"] != "1"]  # not the bucket's existence check
    assert [(r.url.params.get("prefix"), r.url.params.get("startOffset")) for r in lists] == \
        [("predictions_", "predictions_00.jsonl")]  # one page: nothing of this copy's there yet
    gets = sorted(r.url.path.rsplit("/", 1)[1] for r in lookups if r not in lists and "/o/" in r.url.path)
    assert gets == ["_manifest.json", "failed.jsonl"]
    assert len(lists) + len(gets) <= 3  # listing the bucket at this page size: 12 requests
    assert relay.store.load(record.name).copy.objects == 20


# -- the rewrite progress, as a pure object (a clock of its own) --------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rewrite_progress_saves_at_most_every_30_s_and_stays_bounded():
    clock, saves = Clock(), []

    async def save(tokens: dict[str, str]) -> None:
        saves.append(dict(tokens))

    async def run() -> RewriteProgress:
        progress = RewriteProgress({"a": "token-1", "b": "x" * (MAX_TOKEN_CHARS + 1)}, save, 510, clock=clock)
        assert progress.resume("a") == "token-1" and progress.resume("b") is None  # too long: never kept
        await progress.note("a", "token-2")
        clock.now = 29.9
        await progress.note("a", "token-3")
        assert saves == []
        clock.now = 30.0
        await progress.note("c", "token-9")
        assert saves == [{"a": "token-3", "c": "token-9"}]
        progress.done("a")
        for i in range(MAX_TOKENS + 5):
            await progress.note(f"n{i}", f"t{i}")
        assert progress.pending == MAX_TOKENS  # beyond the bound, an object's progress is not kept
        assert not progress.stopped()
        clock.now = 510.0
        assert progress.stopped()
        await progress.flush()
        await progress.flush()  # unchanged: not written again
        return progress

    asyncio.run(run())
    assert len(saves) == 2 and "a" not in saves[1] and len(saves[1]) == MAX_TOKENS


def test_a_failed_save_of_the_tokens_does_not_stop_the_copy(caplog):
    """The tokens only help a redelivery: a save that fails (Firestore busy) is logged and tried again at the
    next save, never raised into the rewrite that noted the token (it would cancel every other rewrite)."""
    clock, saves, failures = Clock(), [], [RuntimeError("firestore unavailable")]

    async def save(tokens: dict[str, str]) -> None:
        if failures:
            raise failures.pop()
        saves.append(dict(tokens))

    async def run() -> None:
        progress = RewriteProgress({}, save, 510, clock=clock, log_fields={"job": "batches/x"})
        clock.now = 30.0
        await progress.note("a", "token-1")  # the save fails: no exception here
        clock.now = 60.0
        await progress.note("a", "token-2")  # the next save goes through
        assert await progress.try_flush()

    asyncio.run(run())
    assert saves == [{"a": "token-2"}]
    [line] = [r for r in caplog.records if "tokens not saved" in r.getMessage()]
    assert line.levelname == "WARNING" and line.fields["job"] == "batches/x"
    assert "firestore unavailable" in line.fields["error"]


def test_the_rewrite_deadline_leaves_room_inside_the_lease():
    assert rewrite_budget_s(600) == 510  # the default lease: inside the reactor's 540 s timeout
    assert rewrite_budget_s(120) == 60 and rewrite_budget_s(2) == 1  # short leases: half of it
