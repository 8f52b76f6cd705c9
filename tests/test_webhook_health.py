"""Webhook health: the tick notices, at most once an hour and from one instance, that the Gemini API disabled a
static webhook (``disabled_due_to_failed_deliveries``), and says so in the log line the alert counts; a check
that fails never fails the tick. Real emulators, the simulator's webhooks resource, real HTTP."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import httpx
import pytest

from batch_relay.log import configure
from batch_relay.poller import webhook_health

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


class Counting(httpx.AsyncBaseTransport):
    """The network, counting the webhook lists that go through it; ``fail`` answers them 500."""

    def __init__(self, lists: list[str], fail: bool = False) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._lists = lists
        self._fail = fail

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1beta/webhooks":
            self._lists.append(request.method)
            if self._fail:
                return httpx.Response(500, json={"error": {"code": 500, "message": "boom"}})
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _register(simulator, settings, uri: str, events: list[str]) -> str:
    reply = httpx.post(f"{settings.gemini_base_url}/v1beta/webhooks", json={"uri": uri, "subscribed_events": events},
                       headers={"x-goog-api-key": settings.gemini_api_key})
    reply.raise_for_status()
    return reply.json()["id"]


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.fixture(autouse=True)
def _fresh_instance():
    webhook_health.forget()  # each test starts as a new instance would
    yield
    webhook_health.forget()


def test_a_disabled_webhook_is_reported_at_most_once_an_hour(relay, simulator, capsys):
    configure()
    bad = _register(simulator, relay.settings, "https://relay.example/a", ["batch.succeeded", "batch.failed"])
    _register(simulator, relay.settings, "https://relay.example/b", ["batch.succeeded"])  # enabled
    other = _register(simulator, relay.settings, "https://other.example/v", ["video.generated"])  # not ours
    simulator.set_webhook_state(bad, "disabled_due_to_failed_deliveries")
    simulator.set_webhook_state(other, "disabled")
    lists: list[str] = []
    clock = [T0]

    def tick() -> dict:
        return relay.tick(transport=Counting(lists), now=lambda: clock[0])

    summary = tick()
    assert summary["errors"] == 0 and lists == ["GET"]
    lines = _lines(capsys)
    [warning] = [e for e in lines if e["message"] == "webhook disabled"]
    assert warning["severity"] == "WARNING" and warning["webhook"] == bad
    assert warning["state"] == "disabled_due_to_failed_deliveries" and warning["uri"] == "https://relay.example/a"
    assert [(e["webhooks"], e["disabled"]) for e in lines if e["message"] == "webhooks checked"] == [(2, 1)]

    clock[0] = T0 + dt.timedelta(minutes=59)
    tick()
    assert lists == ["GET"]  # within the hour: not again
    webhook_health.forget()  # another instance (or this one restarted): the meta document says it was done
    tick()
    assert lists == ["GET"] and not [e for e in _lines(capsys) if e["message"] == "webhook disabled"]

    clock[0] = T0 + dt.timedelta(minutes=61)
    tick()
    assert lists == ["GET", "GET"]
    assert [e["webhook"] for e in _lines(capsys) if e["message"] == "webhook disabled"] == [bad]
    simulator.set_webhook_state(bad, "enabled")
    clock[0] = T0 + dt.timedelta(minutes=122)
    tick()
    assert lists == ["GET"] * 3 and not [e for e in _lines(capsys) if e["message"] == "webhook disabled"]


def test_a_failing_check_never_fails_the_tick_nor_repeats_within_the_hour(relay, simulator, capsys):
    from devtools.simulator import gemini_spec

    configure()
    simulator.add_job(gemini_spec("wh-h1", ["RUNNING", "SUCCEEDED"]))
    relay.store.track("batches/wh-h1")
    lists: list[str] = []
    summary = relay.tick(transport=Counting(lists, fail=True), now=lambda: T0)
    assert summary["errors"] == 0 and summary["changed"] == 1 and lists == ["GET", "GET"]  # two attempts, no more
    failed = [e for e in _lines(capsys) if e["message"] == "webhook check failed"]
    assert len(failed) == 1 and failed[0]["severity"] == "WARNING" and "500" in failed[0]["error"]
    summary = relay.tick(transport=Counting(lists, fail=True), now=lambda: T0 + dt.timedelta(minutes=5))
    assert summary["changed"] == 1 and lists == ["GET", "GET"]


def test_no_check_without_the_api_key_nor_under_a_fanned_out_part(relay, simulator):
    from batch_relay.poller.fanout import plan

    lists: list[str] = []
    keyless = dataclasses.replace(relay.settings, gemini_api_key=None)
    relay.tick(keyless, transport=Counting(lists), now=lambda: T0)
    assert lists == []
    relay.tick(transport=Counting(lists), now=lambda: T0, part=plan(2, 0)[1])  # part 1: not the coordinator
    assert lists == []
    relay.tick(transport=Counting(lists), now=lambda: T0, part=plan(2, 0)[0])
    assert lists == ["GET"]
