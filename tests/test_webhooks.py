"""Gemini API webhooks (A1 ``on_gemini_webhook``, A9): the signature schemes as pure functions, and the
function served by functions-framework against the emulators and the simulator over real HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import sys
import time
import uuid

import pytest
from functions_framework import create_app
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from batch_relay.settings import load_settings
from batch_relay.webhooks.jwks import JwksKeys
from batch_relay.webhooks.verify import Refused, ed25519_keys_from_jwks, verify
from devtools.simulator import gemini_spec
from tests.helpers import validate_event

MAIN = "functions/main.py"
SECRET = "whsec_" + base64.b64encode(b"batch-relay-test-secret-0123456789").decode()
OTHER = "whsec_" + base64.b64encode(b"another-secret-of-the-same-length!!").decode()


def signed(body: bytes | str, secret: str = SECRET, *, msg_id: str | None = None, stamp: int | None = None,
           scheme: str = "reference") -> dict[str, str]:
    """Headers of a delivery of ``body`` signed as the Gemini API signs it: with the Standard Webhooks
    reference library (``scheme="reference"``)."""
    text = body if isinstance(body, str) else body.decode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time()) if stamp is None else stamp
    signature = Webhook(secret).sign(msg_id, dt.datetime.fromtimestamp(stamp, dt.UTC), text)
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature,
            "content-type": "application/json"}


def delivery(kind: str, batch: str, **data) -> bytes:
    return json.dumps({"type": kind, "version": "v1", "timestamp": "2026-12-01T12:00:00Z",
                       "data": {"id": batch, **data}}).encode()


# -- the schemes, pure -------------------------------------------------------------------------------------

def test_v1_as_the_reference_library_signs_it():
    body = delivery("batch.succeeded", "batches/b1")
    headers = signed(body)
    assert verify(headers, body, secrets=[SECRET]).scheme == "v1"
    assert verify(headers, body, secrets=[OTHER, SECRET]).webhook_id == headers["webhook-id"]  # rotation


@pytest.mark.parametrize("case", ["wrong secret", "tampered body", "stale", "future", "no id", "no timestamp",
                                  "no signature", "raw secret", "v2 only", "not base64", "no secrets"])
def test_v1_refusals(case):
    body = delivery("batch.succeeded", "batches/b1")
    headers, secrets = signed(body), [SECRET]
    if case == "wrong secret":
        headers = signed(body, OTHER)
    elif case == "tampered body":
        body = body.replace(b"b1", b"b2")
    elif case == "stale":
        headers = signed(body, stamp=int(time.time()) - 301)
    elif case == "future":
        headers = signed(body, stamp=int(time.time()) + 301)
    elif case == "raw secret":  # keyed with the secret as written, not its base64-decoded part
        stamp = str(int(time.time()))
        mac = hmac.new(SECRET.encode(), f"m1.{stamp}.".encode() + body, hashlib.sha256).digest()
        headers = {"webhook-id": "m1", "webhook-timestamp": stamp,
                   "webhook-signature": "v1," + base64.b64encode(mac).decode()}
    elif case == "v2 only":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    elif case == "not base64":
        headers["webhook-signature"] = "v1,%%%%"
    elif case == "no secrets":
        secrets = []
    else:
        del headers[{"no id": "webhook-id", "no timestamp": "webhook-timestamp",
                     "no signature": "webhook-signature"}[case]]
    with pytest.raises(Refused):
        verify(headers, body, secrets=secrets)


def test_one_good_signature_among_garbage_entries_is_enough():
    body = delivery("batch.failed", "b1")
    headers = signed(body)
    headers["webhook-signature"] = f"junk v2,abc v1,AAAA {headers['webhook-signature']}"
    assert verify(headers, body, secrets=[SECRET]).scheme == "v1"


def test_v1a_ed25519_against_a_jwks_with_rotation():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    def jwk(key):
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).decode().rstrip("=")}

    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    served = {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}, jwk(old)]}
    fetches = []

    def fetch(url):
        fetches.append(url)
        return json.loads(json.dumps(served))

    clock = [0.0]
    keys = JwksKeys("https://keys.example/jwks.json", fetch, refresh_s=300, clock=lambda: clock[0])
    body = delivery("batch.succeeded", "b9")

    def headers_for(key):
        stamp = str(int(time.time()))
        sig = key.sign(f"m9.{stamp}.".encode() + body)
        return {"webhook-id": "m9", "webhook-timestamp": stamp,
                "webhook-signature": "v1a," + base64.b64encode(sig).decode()}

    assert verify(headers_for(old), body, ed25519_keys=keys.keys, refreshed_keys=keys.refreshed).scheme == "v1a"
    assert len(ed25519_keys_from_jwks(served)) == 1 and len(fetches) == 1
    served["keys"].append(jwk(new))  # the key server rotated; our cache does not know yet
    with pytest.raises(Refused):  # refreshed at most every 5 minutes: a forged delivery cannot make us hammer it
        verify(headers_for(Ed25519PrivateKey.generate()), body, ed25519_keys=keys.keys, refreshed_keys=keys.refreshed)
    clock[0] = 301.0
    assert verify(headers_for(new), body, ed25519_keys=keys.keys, refreshed_keys=keys.refreshed).scheme == "v1a"
    assert len(fetches) == 2



def test_the_jwks_fetch_of_wiring_takes_a_transport():
    """wiring.jwks_keys over an injected transport: the key server is the peer here (a redirect is not followed)."""
    import httpx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from batch_relay import wiring
    from batch_relay.batchapi.http import USER_AGENT

    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).decode().rstrip("=")}]}
    seen = []

    def handler(request):
        seen.append((request.url.path, request.headers["user-agent"]))
        if request.url.path == "/moved":
            return httpx.Response(302, headers={"location": "/jwks.json"})
        return httpx.Response(200, json=jwks)

    transport = httpx.MockTransport(handler)
    keys = wiring.jwks_keys(f"https://keys-{uuid.uuid4().hex}.example/jwks.json", transport=transport).keys()
    assert len(keys) == 1 and seen == [("/jwks.json", USER_AGENT)]
    assert wiring.jwks_keys(f"https://keys-{uuid.uuid4().hex}.example/moved", transport=transport).keys() == []
    assert seen[1:] == [("/moved", USER_AGENT)]


def test_a_body_that_is_not_utf8_verifies_by_v1a_only():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key, body, stamp = Ed25519PrivateKey.generate(), b'{"type": "batch.succeeded", "x": "\xff"}', str(int(time.time()))
    headers = {"webhook-id": "m1", "webhook-timestamp": stamp,
               "webhook-signature": "v1a," + base64.b64encode(key.sign(f"m1.{stamp}.".encode() + body)).decode()}
    # v1a signs the bytes: verified (the handler then answers 400, not a JSON object it can read)
    assert verify(headers, body, secrets=[SECRET], ed25519_keys=lambda: [key.public_key()]).scheme == "v1a"
    # v1 over the same bytes cannot be checked by the reference library, which verifies text
    mac = hmac.new(base64.b64decode(SECRET.removeprefix("whsec_")), f"m1.{stamp}.".encode() + body,
                   hashlib.sha256).digest()
    with pytest.raises(Refused):
        verify({**headers, "webhook-signature": "v1," + base64.b64encode(mac).decode()}, body, secrets=[SECRET])

# -- on_gemini_webhook, served --------------------------------------------------------------------------------

@pytest.fixture
def webhook_env(function_env, monkeypatch):
    monkeypatch.setenv("RELAY_GEMINI_WEBHOOK_SECRETS", f"{OTHER},{SECRET}")
    load_settings.cache_clear()
    yield function_env
    load_settings.cache_clear()


@pytest.fixture
def hook(webhook_env):
    return create_app(target="on_gemini_webhook", source=MAIN, signature_type="http").test_client()


def post(hook, body: bytes, headers: dict | None = None):
    return hook.post("/", data=body, headers=signed(body) if headers is None else headers)


def test_a_verified_delivery_publishes_the_change_without_any_tick(relay, simulator, hook):
    simulator.add_job(gemini_spec("wh-1", ["RUNNING"], output={"kind": "file", "file_id": "batch-wh-1", "lines": 3}))
    relay.store.track("batches/wh-1")
    relay.tick()
    relay.drain()
    simulator.set_state("batches/wh-1", "SUCCEEDED")
    response = post(hook, delivery("batch.succeeded", "batches/wh-1", output_file_uri="files/batch-wh-1"))
    assert response.status_code == 200 and response.get_json() == {"result": "changed", "job": "batches/wh-1"}
    [event] = relay.drain()  # published before the reply, by the webhook alone
    validate_event(event)
    assert event["attributes"]["state"] == "JOB_STATE_SUCCEEDED" and event["data"]["version"] == 2
    assert relay.store.transitions("batches/wh-1")[-1]["via"] == "webhook"
    # the id without its "batches/" prefix is the same batch; a repeat adds nothing
    again = delivery("batch.succeeded", "wh-1")
    headers = signed(again)
    for _ in range(2):
        assert post(hook, again, headers).status_code == 200
    assert relay.drain() == []


@pytest.mark.parametrize("case", ["wrong secret", "tampered", "stale", "future", "missing headers", "raw secret"])
def test_unverified_deliveries_are_401_and_fetch_nothing(relay, simulator, hook, case):
    simulator.add_job(gemini_spec("wh-2", ["RUNNING"]))
    relay.store.track("batches/wh-2")
    body = delivery("batch.succeeded", "batches/wh-2")
    now = int(time.time())
    headers = {"wrong secret": signed(body, "whsec_" + base64.b64encode(b"x" * 32).decode()),
               "stale": signed(body, stamp=now - 600), "future": signed(body, stamp=now + 600),
               "missing headers": {"content-type": "application/json"}}.get(case, signed(body))
    if case == "tampered":
        body = body.replace(b"succeeded", b"failed")
    if case == "raw secret":
        stamp = str(int(time.time()))
        mac = hmac.new(SECRET.encode(), f"m.{stamp}.".encode() + body, hashlib.sha256).digest()
        headers = {"webhook-id": "m", "webhook-timestamp": stamp,
                   "webhook-signature": "v1," + base64.b64encode(mac).decode()}
    response = post(hook, body, headers)
    assert response.status_code == 401
    assert simulator.stats()["status_gets"] == 0 and relay.store.load("batches/wh-2").version == 0


def test_the_payload_never_sets_a_state(relay, simulator, hook):
    simulator.add_job(gemini_spec("wh-3", ["RUNNING"]))
    relay.store.track("batches/wh-3")
    assert post(hook, delivery("batch.succeeded", "batches/wh-3")).status_code == 200
    record = relay.store.load("batches/wh-3")
    assert record.state == "JOB_STATE_RUNNING" and not record.terminal  # what the API says
    assert [m["attributes"]["state"] for m in relay.drain()] == ["JOB_STATE_RUNNING"]


def test_reordered_and_repeated_deliveries_add_no_events(relay, simulator, hook):
    simulator.add_job(gemini_spec("wh-4", ["RUNNING"]))
    relay.store.track("batches/wh-4")
    relay.tick()
    simulator.set_state("batches/wh-4", "FAILED", error={"code": 3, "message": "bad input"})
    late_first = delivery("batch.failed", "batches/wh-4", error_code=3, error_message="bad input")
    earlier = delivery("batch.succeeded", "batches/wh-4")  # a confused, older delivery arriving later
    for body in (late_first, earlier, late_first):
        assert post(hook, body).status_code == 200
    states = [m["attributes"]["state"] for m in relay.drain()]
    assert states == ["JOB_STATE_RUNNING", "JOB_STATE_FAILED"]
    relay.tick()
    assert relay.drain() == []


def test_batches_without_a_record_are_tracked_only_when_gemini_is_watched(relay, simulator, hook, monkeypatch):
    simulator.add_job(gemini_spec("wh-5", ["RUNNING"]))
    assert post(hook, delivery("batch.succeeded", "batches/wh-5")).get_json()["result"] == "ignored"
    assert relay.store.load("batches/wh-5") is None and list(relay.store.records()) == []
    monkeypatch.setenv("RELAY_WATCH", "gemini")
    load_settings.cache_clear()
    assert post(hook, delivery("batch.succeeded", "wh-5")).get_json()["result"] == "discovered"
    record = relay.store.load("batches/wh-5")
    assert record.tracked_by == "watch" and record.state == "JOB_STATE_RUNNING" and record.version == 1
    [event] = relay.drain()
    assert event["attributes"]["previous_state"] == "JOB_STATE_UNSPECIFIED"


def test_the_other_replies(relay, hook):
    assert hook.get("/").status_code == 405
    assert hook.put("/", data=b"{}").status_code == 405
    big = b'{"type": "batch.succeeded", "pad": "' + b"x" * (256 * 1024) + b'"}'
    assert post(hook, big).status_code == 413
    for body in (b"[1, 2]", b"not json", b'"text"', b"null"):
        assert post(hook, body).status_code == 400, body
    assert post(hook, b'{"type": "interaction.completed", "data": {"id": "i1"}}').status_code == 202
    assert post(hook, b'{"type": "batch.succeeded", "data": {"id": "../../etc"}}').status_code == 202
    assert list(relay.store.records()) == []



def test_bad_settings_answer_500_to_a_delivery_and_405_still_comes_first(webhook_env, monkeypatch):
    monkeypatch.setenv("RELAY_POLL_CONCURRENCY", "lots")
    load_settings.cache_clear()
    hook = create_app(target="on_gemini_webhook", source=MAIN, signature_type="http").test_client()
    assert hook.get("/").status_code == 405 and hook.get("/").headers["Allow"] == "POST"
    body = delivery("batch.succeeded", "b1")
    assert post(hook, body).status_code == 500

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                 max_size=4), max_leaves=15)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.one_of(_json, st.fixed_dictionaries({"type": st.sampled_from(["batch.succeeded", "batch.x", 7]),
                                                        "data": _json})))
def test_hostile_verified_bodies_never_5xx_and_never_write(relay, hook, payload):
    body = json.dumps(payload).encode()
    response = post(hook, body)
    assert response.status_code in (200, 202, 400), (payload, response.data)
    assert list(relay.store.records()) == []


def test_the_simulator_sends_signed_webhooks_that_the_served_function_takes(relay, simulator, webhook_env):
    """The whole path over real HTTP: the simulator ends a batch and POSTs a signed delivery to
    on_gemini_webhook under functions-framework, which publishes the change — no tick at all."""
    from devtools import emulators

    port = emulators.free_port()
    server = emulators.Service("webhook", [sys.executable, "-m", "functions_framework", "--target",
                                           "on_gemini_webhook", "--source", MAIN, "--host", "127.0.0.1",
                                           "--port", str(port)], port,
                               env={**webhook_env, "RELAY_GEMINI_WEBHOOK_SECRETS": SECRET})
    try:
        server.wait_ready()
        simulator.configure(webhooks={"url": f"{server.url}/", "secret": SECRET, "duplicates": 1, "id_form": "mixed"})
        simulator.add_job(gemini_spec("wh-6", ["RUNNING", {"state": "SUCCEEDED", "after_s": 0.5}],
                                      output={"kind": "inline", "count": 2}))
        relay.store.track("batches/wh-6")
        relay.tick()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and relay.store.load("batches/wh-6").state != "JOB_STATE_SUCCEEDED":
            time.sleep(0.1)
        assert relay.store.load("batches/wh-6").state == "JOB_STATE_SUCCEEDED", server.tail()
        stats = simulator.stats()["webhooks"]
        time.sleep(0.5)
        assert simulator.stats()["webhooks"]["delivered"] == 2 and stats["failed"] == 0  # the duplicate too
        assert [m["attributes"]["state"] for m in relay.drain()] == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    finally:
        simulator.configure(webhooks=None)
        server.stop()


def test_register_with_the_cli_then_deliveries_verify_end_to_end(relay, simulator, function_env, capsys):
    """``batch-relay webhook register URL`` → the secret it prints → the function's setting → a batch ends
    → the Gemini API (the simulator) delivers, signed with that secret → the event is published."""
    from batch_relay import cli
    from devtools import emulators

    port = emulators.free_port()
    url = f"http://127.0.0.1:{port}/"
    assert cli.main(["webhook", "register", url]) == 0
    out = capsys.readouterr().out
    secret = next(line.strip() for line in out.splitlines() if line.strip().startswith("whsec_"))
    server = emulators.Service("webhook-cli", [sys.executable, "-m", "functions_framework", "--target",
                                               "on_gemini_webhook", "--source", MAIN, "--host", "127.0.0.1",
                                               "--port", str(port)], port,
                               env={**function_env, "RELAY_GEMINI_WEBHOOK_SECRETS": secret})
    try:
        server.wait_ready()
        simulator.add_job(gemini_spec("wh-7", ["RUNNING", {"state": "FAILED", "after_s": 2.0,
                                                           "error": {"code": 8, "message": "quota"}}]))
        relay.store.track("batches/wh-7")
        relay.tick()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and relay.store.load("batches/wh-7").state != "JOB_STATE_FAILED":
            time.sleep(0.1)
        assert relay.store.load("batches/wh-7").state == "JOB_STATE_FAILED", server.tail()
        assert relay.store.transitions("batches/wh-7")[-1]["via"] == "webhook"
    finally:
        server.stop()


def test_v1a_deliveries_verify_against_the_jwks_end_to_end(relay, simulator, function_env):
    from devtools import emulators

    port = emulators.free_port()
    server = emulators.Service("webhook-v1a", [sys.executable, "-m", "functions_framework", "--target",
                                               "on_gemini_webhook", "--source", MAIN, "--host", "127.0.0.1",
                                               "--port", str(port)], port,
                               env={**function_env, "RELAY_GEMINI_JWKS_URL":
                                    f"{relay.settings.gemini_base_url}/_sim/webhooks/jwks.json"})
    try:
        server.wait_ready()
        simulator.configure(webhooks={"url": f"{server.url}/", "ed25519": True})
        simulator.add_job(gemini_spec("wh-8", ["RUNNING"]))
        relay.store.track("batches/wh-8")
        relay.tick()  # RUNNING seen; the batch ends only now, however long the tick took under load
        simulator.set_state("batches/wh-8", "SUCCEEDED")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and relay.store.load("batches/wh-8").state != "JOB_STATE_SUCCEEDED":
            time.sleep(0.1)
        assert relay.store.load("batches/wh-8").state == "JOB_STATE_SUCCEEDED", server.tail()
        while time.monotonic() < deadline and '"scheme": "v1a"' not in server.tail():
            time.sleep(0.1)  # the delivery's log line follows the commit it made
        assert '"scheme": "v1a"' in server.tail() and '"result": "changed"' in server.tail()
    finally:
        simulator.configure(webhooks=None)
        server.stop()
