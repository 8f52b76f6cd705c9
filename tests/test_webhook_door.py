"""The webhook's door (``on_gemini_webhook`` is public by design: the signature is its authentication).
Whatever a stranger sends, the answer is never a 5xx; refusals are logged with the delivery's id; a
repeated delivery costs no fetch; the key sources are https."""

from __future__ import annotations

import json
import time

import pytest
from functions_framework import create_app
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from batch_relay.errors import SettingsError
from batch_relay.settings import Settings, is_loopback, load_settings
from batch_relay.webhooks.jwks import JwksKeys
from batch_relay.webhooks.recent import RecentIds
from batch_relay.webhooks.verify import Refused, verify
from devtools.simulator import gemini_spec
from tests.test_webhooks import MAIN, OTHER, SECRET, delivery, signed


@pytest.fixture
def webhook_env(function_env, monkeypatch):
    monkeypatch.setenv("RELAY_GEMINI_WEBHOOK_SECRETS", f"{OTHER},{SECRET}")
    load_settings.cache_clear()
    yield function_env
    load_settings.cache_clear()


@pytest.fixture
def hook(webhook_env):
    return create_app(target="on_gemini_webhook", source=MAIN, signature_type="http").test_client()


# -- never a 5xx to a stranger ----------------------------------------------------------------------------------

_header_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=40)
_names = st.sampled_from(["webhook-id", "Webhook-Id", "webhook-timestamp", "Webhook-Timestamp", "webhook-signature",
                          "WEBHOOK-SIGNATURE", "content-type", "content-length-ish", "x-anything"])


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.dictionaries(_names, _header_text, max_size=5), body=st.binary(max_size=300))
@example(headers={"webhook-id": "m1", "webhook-timestamp": "²", "webhook-signature": "v1,AAAA"}, body=b"{}")
@example(headers={"webhook-id": "m1", "webhook-timestamp": "١٢٣", "webhook-signature": "v1a,AAAA"}, body=b"{}")
@example(headers={"webhook-id": "m1", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,===="},
         body=b"\xff\xfe")
def test_no_request_a_stranger_can_send_gets_a_5xx(hook, headers, body):
    response = hook.post("/", data=body, headers=headers)
    assert response.status_code < 500, (headers, body, response.data)
    assert response.status_code == 401


def test_a_timestamp_of_non_ascii_digits_is_refused_not_raised():
    for stamp in ("²", "١٢٣", "1e9", " 123", "-5", "12345678901234"):
        with pytest.raises(Refused):
            verify({"webhook-id": "m", "webhook-timestamp": stamp, "webhook-signature": "v1,AAAA"}, b"{}",
                   secrets=[SECRET])


def test_refusals_are_logged_with_the_delivery_id(hook, capsys):
    capsys.readouterr()
    response = hook.post("/", data=b"{}", headers={"Webhook-Id": "msg_forged_1", "Webhook-Timestamp": "1",
                                                   "Webhook-Signature": "v1,AAAA"})
    assert response.status_code == 401
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    refused = [line for line in lines if line.get("message") == "webhook delivery refused"]
    assert refused and refused[-1]["webhook_id"] == "msg_forged_1" and refused[-1]["severity"] == "WARNING"


# -- repeats, and both names of the success event ------------------------------------------------------------

def test_a_repeated_delivery_is_answered_without_another_fetch(relay, simulator, hook):
    simulator.add_job(gemini_spec("door-1", ["RUNNING"]))
    relay.store.track("batches/door-1")
    body = delivery("batch.succeeded", "batches/door-1")
    headers = signed(body, msg_id="msg_repeat_1")
    first = hook.post("/", data=body, headers=headers)
    assert first.status_code == 200 and first.get_json()["result"] == "changed"
    gets = simulator.stats()["status_gets"]
    again = hook.post("/", data=body, headers=headers)
    assert again.status_code == 200 and again.get_json() == {"result": "repeated"}
    assert simulator.stats()["status_gets"] == gets
    other = signed(body, msg_id="msg_repeat_2")  # another delivery of the same batch is a nudge again
    assert hook.post("/", data=body, headers=other).get_json()["result"] == "unchanged"
    assert simulator.stats()["status_gets"] == gets + 1


@pytest.mark.parametrize("kind", ["batch.succeeded", "batch.completed"])
def test_both_names_of_the_success_event_nudge(relay, simulator, hook, kind):
    simulator.add_job(gemini_spec(f"door-{kind[6:]}", ["RUNNING"]))
    relay.store.track(f"batches/door-{kind[6:]}")
    body = delivery(kind, f"door-{kind[6:]}")
    response = hook.post("/", data=body, headers=signed(body))
    assert response.status_code == 200 and response.get_json()["result"] == "changed"


def test_recent_ids_expire_and_stay_bounded():
    now = [0.0]
    recent = RecentIds(ttl_s=10, capacity=3, clock=lambda: now[0])
    recent.add("a")
    assert recent.seen("a") and not recent.seen("b")
    now[0] = 11
    assert not recent.seen("a")
    for ident in "bcde":
        recent.add(ident)
    assert not recent.seen("b") and all(recent.seen(i) for i in "cde")


# -- the key sources ----------------------------------------------------------------------------------------------

def test_a_successful_fetch_of_an_empty_key_set_drops_the_old_keys():
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                 serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    documents = [{"keys": [jwk]}, {"keys": []}]
    now = [0.0]
    keys = JwksKeys("https://example/jwks", lambda _url: documents.pop(0), ttl_s=60, clock=lambda: now[0])
    assert len(keys.keys()) == 1
    now[0] = 61
    assert keys.keys() == []


def test_a_failed_fetch_keeps_the_keys_it_had():
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                 serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    calls = iter([{"keys": [jwk]}, OSError("down")])

    def fetch(_url: str) -> object:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    now = [0.0]
    keys = JwksKeys("https://example/jwks", fetch, ttl_s=60, clock=lambda: now[0])
    assert len(keys.keys()) == 1
    now[0] = 61
    assert len(keys.keys()) == 1


@pytest.mark.parametrize("var", ["RELAY_GEMINI_BASE_URL", "RELAY_VERTEX_BASE_URL", "RELAY_GEMINI_JWKS_URL"])
def test_api_and_key_urls_refuse_plain_http_except_to_this_machine(var):
    base = {"GOOGLE_CLOUD_PROJECT": "p"}
    with pytest.raises(SettingsError, match=var):
        Settings.from_env({**base, var: "http://generativelanguage.googleapis.com"})
    with pytest.raises(SettingsError, match="http://"):
        Settings.from_env({**base, var: "http://10.0.0.7:8080"})
    for ok in ("https://example.googleapis.com", "http://127.0.0.1:9000", "http://localhost:1", "http://[::1]:80"):
        Settings.from_env({**base, var: ok})


def test_loopback_is_this_machine_only():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("10.0.0.1", "localhost.example.com", "0.0.0.0", "", None, "::"))


def test_a_jwks_reply_over_the_size_cap_is_refused_unread():
    """The key server is the peer: a reply over 64 KiB (declared, or streamed without a length) is not read
    whole, and the keys the instance had are kept."""
    import httpx

    from batch_relay.webhooks.jwks import MAX_BYTES, read_jwks

    big = b'{"keys": [' + b" " * (MAX_BYTES + 10) + b"]}"
    read: list[int] = []

    def stream():
        for start in range(0, len(big), 4096):
            read.append(start)
            yield big[start:start + 4096]

    def handler(request):
        if request.url.path == "/declared":
            return httpx.Response(200, content=big, headers={"content-length": str(len(big))})
        if request.url.path == "/streamed":
            return httpx.Response(200, content=stream())
        return httpx.Response(200, json={"keys": []})

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(ValueError, match="over"):
            read_jwks(http, "https://keys.example/declared")
        with pytest.raises(ValueError, match="over"):
            read_jwks(http, "https://keys.example/streamed")
        assert len(read) * 4096 <= MAX_BYTES + 2 * 4096  # stopped at the cap, not at the end
        assert read_jwks(http, "https://keys.example/small") == {"keys": []}
