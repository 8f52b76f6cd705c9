"""Gemini API webhooks: signed Standard Webhooks deliveries when batches end (``v1`` HMAC with a ``whsec_``
secret, ``v1a`` Ed25519 with a key published as a JWKS), at least once, late, duplicated, dropped or reordered
as configured; the static webhooks a project registers (``/v1beta/webhooks``), which get real deliveries; and
the ticker that ends Gemini batches on their own time while anyone listens."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from devtools.simulator.wire import GEMINI, TERMINAL, WALL_OFFSET, Reply, SpecError, err, no_method, ok, stamp

if TYPE_CHECKING:
    from devtools.simulator.app import Simulator
    from devtools.simulator.jobs import Job

WEBHOOK_TYPES = {"SUCCEEDED": "batch.succeeded", "FAILED": "batch.failed", "CANCELLED": "batch.cancelled",
                 "EXPIRED": "batch.expired"}
WEBHOOK_STATES = ("enabled", "disabled", "disabled_due_to_failed_deliveries")  # a static webhook's ``state``
WEBHOOK_EVENTS = frozenset({*WEBHOOK_TYPES.values(), "interaction.requires_action", "interaction.completed",
                            "interaction.failed", "video.generated"})


class Webhooks:
    """What the Gemini API does when a batch ends: POST a thin, signed event to the registered URL.

    Config (``POST /_sim/config {"webhooks": {...}}``, null to stop): ``url``; ``secret`` (``whsec_…``,
    signs ``v1``) and/or ``ed25519: true`` (signs ``v1a`` with a key of its own, published at
    ``GET /_sim/webhooks/jwks.json``); ``delay_s`` (before the first attempt), ``jitter_s`` (a random extra
    delay per delivery: deliveries of different batches arrive reordered), ``duplicates`` (extra copies of
    each delivery, same ``webhook-id``), ``drop`` (the share of deliveries never sent), ``id_form``
    (``name``: ``data.id = "batches/x"``, ``id``: ``"x"``, ``mixed``), ``attempts`` (at-least-once: a
    delivery is retried, 0.2 s apart, until a 2xx or this many attempts)."""

    def __init__(self, url: str, secret: str | None, ed25519: bool, delay_s: float, jitter_s: float,
                 duplicates: int, drop: float, id_form: str, attempts: int, seed: int | None) -> None:
        self.url = url
        self.secret = secret
        self.delay_s, self.jitter_s, self.duplicates, self.drop = delay_s, jitter_s, duplicates, drop
        self.id_form, self.attempts = id_form, attempts
        self.rng = random.Random(seed)
        self.private_key = None
        if ed25519:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            self.private_key = Ed25519PrivateKey.generate()
        self.sent = self.delivered = self.failed = self.dropped = 0
        self.log: list[dict] = []  # the last 500 deliveries

    @classmethod
    def from_config(cls, cfg: Any, seed: int | None) -> Webhooks:
        if not isinstance(cfg, dict) or not isinstance(cfg.get("url"), str) or not cfg["url"].startswith("http://"):
            raise SpecError('webhooks needs {"url": "http://127.0.0.1:PORT/...", ...}')
        secret = cfg.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret.startswith("whsec_")):
            raise SpecError("webhooks.secret must be a whsec_ secret")
        if secret is None and not cfg.get("ed25519"):
            raise SpecError("webhooks needs a secret (v1) or ed25519: true (v1a)")
        id_form = cfg.get("id_form", "name")
        if id_form not in ("name", "id", "mixed"):
            raise SpecError("webhooks.id_form is name, id or mixed")
        try:
            return cls(cfg["url"], secret, bool(cfg.get("ed25519")), float(cfg.get("delay_s", 0.0)),
                       float(cfg.get("jitter_s", 0.0)), int(cfg.get("duplicates", 0)), float(cfg.get("drop", 0.0)),
                       id_form, int(cfg.get("attempts", 5)), seed)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"bad webhooks config: {exc}") from None

    def view(self) -> dict:
        return {"url": self.url, "secret": self.secret, "ed25519": self.private_key is not None,
                "delay_s": self.delay_s, "jitter_s": self.jitter_s, "duplicates": self.duplicates,
                "drop": self.drop, "id_form": self.id_form, "attempts": self.attempts}

    def stats(self) -> dict:
        return {"sent": self.sent, "delivered": self.delivered, "failed": self.failed, "dropped": self.dropped,
                "log": list(self.log)}

    def jwks(self) -> dict:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        raw = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "use": "sig",
                          "x": base64.urlsafe_b64encode(raw).decode().rstrip("=")}]}

    def batch_ended(self, job: Job) -> None:
        kind = WEBHOOK_TYPES.get(job.state)
        if kind is None:
            return
        form = self.id_form if self.id_form != "mixed" else self.rng.choice(("name", "id"))
        data: dict[str, Any] = {"id": job.name if form == "name" else job.job_id}
        if kind == "batch.succeeded" and job.output and job.output["kind"] == "file":
            data["output_file_uri"] = "files/" + job.output["file_id"]
        elif kind == "batch.failed" and job.error:
            data.update(error_code=job.error.get("code"), error_message=job.error.get("message"))
        body = json.dumps({"type": kind, "version": "v1", "timestamp": stamp(time.monotonic(), 6),
                           "data": data}).encode()
        msg_id = f"msg_{self.rng.getrandbits(96):024x}"
        ended = (job.end_t or time.monotonic()) + WALL_OFFSET
        if self.rng.random() < self.drop:
            self.dropped += 1
            self._note(msg_id, kind, job.name, "dropped", ended)
            return
        loop = asyncio.get_running_loop()
        for _ in range(1 + self.duplicates):
            delay = self.delay_s + (self.rng.uniform(0, self.jitter_s) if self.jitter_s else 0.0)
            loop.call_later(delay, lambda: asyncio.ensure_future(self._deliver(msg_id, kind, job.name, body, ended)))

    def sign(self, msg_id: str, timestamp: str, body: bytes) -> str:
        import hashlib
        import hmac

        content = f"{msg_id}.{timestamp}.".encode() + body
        signatures = []
        if self.secret:
            key = base64.b64decode(self.secret[len("whsec_"):] + "==")
            signatures.append("v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode())
        if self.private_key is not None:
            signatures.append("v1a," + base64.b64encode(self.private_key.sign(content)).decode())
        return " ".join(signatures)

    async def _deliver(self, msg_id: str, kind: str, name: str, body: bytes, ended: float) -> None:
        status = 0
        for attempt in range(max(self.attempts, 1)):
            timestamp = str(int(time.time()))
            self.sent += 1
            status = await post(self.url, {"webhook-id": msg_id, "webhook-timestamp": timestamp,
                                           "webhook-signature": self.sign(msg_id, timestamp, body),
                                           "content-type": "application/json"}, body)
            if 200 <= status < 300:
                self.delivered += 1
                self._note(msg_id, kind, name, status, ended)
                return
            if attempt + 1 < self.attempts:
                await asyncio.sleep(0.2)
        self.failed += 1
        self._note(msg_id, kind, name, status, ended)

    def _note(self, msg_id: str, kind: str, name: str, status: Any, ended: float) -> None:
        self.log = [*self.log[-499:], {"id": msg_id, "type": kind, "job": name, "status": status,
                                       "ended_at": ended, "answered_at": time.time()}]


async def post(url: str, headers: dict[str, str], body: bytes, timeout: float = 30.0) -> int:
    """One HTTP/1.1 POST (stdlib only); the status code, or 0 when the peer could not be reached."""
    m = re.match(r"^http://([^/:]+)(?::(\d+))?(/.*)?$", url)
    if not m:
        return 0
    host, port, path = m.group(1), int(m.group(2) or 80), m.group(3) or "/"
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
               f"Connection: close\r\n{head}\r\n").encode() + body
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        writer.close()
        return int(line.split()[1])
    except (TimeoutError, OSError, ValueError, IndexError):
        return 0


def notify(sim: Simulator, job: Job, old: str) -> None:
    """A Gemini batch that just ended gets its webhook deliveries: the configured sender's, and one per
    registered webhook subscribed to its event."""
    if job.api != GEMINI or job.state not in TERMINAL or old in TERMINAL:
        return
    if sim.webhooks is not None:
        sim.webhooks.batch_ended(job)
    for resource, sender in sim.registered.values():
        if resource["state"] != "enabled":  # disabled (POST /_sim/webhooks/state): nothing is delivered
            continue
        if WEBHOOK_TYPES.get(job.state) in resource["subscribed_events"]:
            sender.batch_ended(job)


async def advance_ended_batches(sim: Simulator, step_s: float = 0.05) -> None:
    """With webhooks configured, Gemini batches end on their own time (as the real API's do) rather than
    when someone next looks, so their deliveries go out when they end."""
    while True:
        await asyncio.sleep(step_s)
        if sim.webhooks is None and not sim.registered:
            continue
        now = time.monotonic()
        for job in list(sim.jobs.values()):
            if job.api == GEMINI and job.state not in TERMINAL:
                job.settle(now)


# --- static webhooks: the project's registrations (/v1beta/webhooks) ----------------------------------------


def handle(sim: Simulator, method: str, parts: list[str], query: str, body: bytes,
           keep_alive: bool) -> tuple[int, Reply]:
    """``POST|GET /v1beta/webhooks`` and ``DELETE /v1beta/webhooks/{id}`` (the caller checked the API key)."""
    if len(parts) == 3 and method == "POST":
        return _register(sim, body, keep_alive)
    if len(parts) == 3 and method == "GET":
        return _list(sim, query, keep_alive)
    if len(parts) == 4 and method == "DELETE":
        if sim.registered.pop(parts[3], None) is None:
            return err(404, f"Webhook {parts[3]} not found.", keep_alive)
        return ok(b"{}", keep_alive)
    return no_method(method, "/".join(parts), keep_alive)


def _register(sim: Simulator, body: bytes, keep_alive: bool) -> tuple[int, Reply]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return err(400, "Invalid JSON payload received.", keep_alive)
    uri, events = data.get("uri") if isinstance(data, dict) else None, (data or {}).get("subscribed_events")
    if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
        return err(400, "uri must be an http(s) URL.", keep_alive)
    if not isinstance(events, list) or not events or any(e not in WEBHOOK_EVENTS for e in events):
        return err(400, f"subscribed_events must be a non-empty list of {sorted(WEBHOOK_EVENTS)}.", keep_alive)
    ident = f"wh{sim.rng.getrandbits(48):012x}"
    secret = "whsec_" + base64.b64encode(sim.rng.randbytes(24)).decode()
    created = stamp(time.monotonic(), 6)
    resource = {"id": ident, "name": data.get("name") or ident, "uri": uri, "subscribed_events": events,
                "state": "enabled", "create_time": created, "update_time": created,
                "signing_secrets": [{"truncated_secret": secret[:10] + "…", "expire_time": None}]}
    sim.registered[ident] = (resource, Webhooks(uri, secret, False, 0.0, 0.0, 0, 0.0, "name", 5, None))
    return ok(json.dumps({**resource, "new_signing_secret": secret}).encode(), keep_alive)


def _list(sim: Simulator, query: str, keep_alive: bool) -> tuple[int, Reply]:
    q = parse_qs(query) if query else {}
    try:
        size = max(1, min(int(q.get("page_size", ["50"])[0]), 1000))
        start = int(q.get("page_token", ["0"])[0] or 0)
    except ValueError:
        return err(400, "Invalid page_size or page_token.", keep_alive)
    items = [r for r, _ in sim.registered.values()]
    page: dict[str, Any] = {"webhooks": items[start:start + size]}
    if start + size < len(items):
        page["next_page_token"] = str(start + size)
    return ok(json.dumps(page).encode(), keep_alive)
