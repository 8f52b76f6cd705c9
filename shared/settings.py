"""Settings (contract A2), read from the environment once, into a frozen dataclass.

``Settings.from_env`` fails fast with one message naming the variable; ``load_settings`` caches the
result for the life of the process (a warm Cloud Functions instance reads the environment once). The
secrets among them are registered for log redaction here, where they are read, and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Literal, overload
from urllib.parse import urlsplit

from .batchapi.endpoints import GEMINI_BASE_URL
from .batchapi.scopes import WatchScope, parse_scopes
from .errors import SettingsError, UsageError
from .log import add_secret

SECRET_MANAGER_URL = "https://secretmanager.googleapis.com"  # noqa: S105 - an endpoint, not a secret
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
ANY_BUCKET = "*"  # RELAY_ALLOWED_BUCKETS=*: copies may go to any bucket (an explicit opt-in)


@dataclasses.dataclass(frozen=True)
class Settings:
    project: str
    database: str = "(default)"
    collection: str = "batch_jobs"
    events_topic: str = "batch-job-events"
    gemini_api_key: str | None = dataclasses.field(default=None, repr=False)
    gemini_base_url: str = GEMINI_BASE_URL
    vertex_base_url: str | None = None
    default_destination: str | None = None
    # Where copies may go: entries ``bucket`` or ``bucket/prefix``, or ``*`` (any bucket, an explicit opt-in);
    # None (unset) refuses every copy. Where Vertex outputs may be read from: None (unset) is any bucket.
    allowed_buckets: frozenset[str] | None = None
    source_buckets: frozenset[str] | None = None
    output_wait_s: float = 1800.0
    poll_concurrency: int = 32
    # Added settings (A2 allows more); defaults keep a tick inside the poller's 540 s ceiling.
    tick_deadline_s: float = 240.0
    request_timeout_s: float = 20.0
    max_attempts: int = 5
    vertex_region_qpm: int = 600
    lost_after_s: float = 24 * 3600.0
    copy_lease_s: float = 600.0
    publish_lease_s: float = 60.0
    retention_days: int = 30
    # This round's settings (A2): watched scopes, webhooks, stalls, cadence and fan-out.
    watch: tuple[WatchScope, ...] = ()
    watch_filter: str | None = None
    gemini_webhook_secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    gemini_jwks_url: str | None = None
    stall_after_s: float = 21600.0
    # Results (A10): the price table (a JSON file path or gs:// object; unset: the shipped one). How long a
    # finished job's copy waits for the API to show where its outputs are is ``output_wait_s``, above.
    prices: str | None = None
    max_poll_interval_s: float = 300.0
    tick_interval_s: float = 60.0
    tick_fanout: int = 1
    tick_parts_topic: str = "batch-relay-tick-parts"
    # Pub/Sub's endpoint, ``host:port`` (None: the global one). Message ordering holds per region: Terraform
    # sets the deployment's locational endpoint, ``{region}-pubsub.googleapis.com:443``, for every publisher.
    pubsub_endpoint: str | None = None
    firestore_emulator_host: str | None = None
    pubsub_emulator_host: str | None = None
    storage_emulator_host: str | None = None
    # Only the CLI writes to Secret Manager (``webhook register --secret``); tests point it at a local peer.
    secret_manager_url: str = SECRET_MANAGER_URL

    @property
    def meta_collection(self) -> str:
        return f"{self.collection}_meta"

    @property
    def event_source(self) -> str:
        return f"//batch-relay/projects/{self.project}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        get = _Reader(env)
        project = get.text("GOOGLE_CLOUD_PROJECT", required=True)
        return cls(
            project=project,
            database=get.text("RELAY_FIRESTORE_DATABASE") or "(default)",
            collection=get.name("RELAY_COLLECTION", "batch_jobs"),
            events_topic=get.name("RELAY_EVENTS_TOPIC", "batch-job-events"),
            gemini_api_key=get.text("RELAY_GEMINI_API_KEY"),
            gemini_base_url=get.url("RELAY_GEMINI_BASE_URL", secure=True) or GEMINI_BASE_URL,
            vertex_base_url=get.url("RELAY_VERTEX_BASE_URL", allow_location=True, secure=True),
            default_destination=get.gcs_uri("RELAY_DEFAULT_DESTINATION"),
            allowed_buckets=get.destinations("RELAY_ALLOWED_BUCKETS"),
            source_buckets=get.buckets("RELAY_SOURCE_BUCKETS"),
            output_wait_s=get.number("RELAY_OUTPUT_WAIT_S", 1800.0, low=0.0, high=7 * 86400.0),
            poll_concurrency=get.integer("RELAY_POLL_CONCURRENCY", 32, low=1, high=1000),
            tick_deadline_s=get.number("RELAY_TICK_DEADLINE_S", 240.0, low=1.0, high=3600.0),
            request_timeout_s=get.number("RELAY_REQUEST_TIMEOUT_S", 20.0, low=0.1, high=600.0),
            max_attempts=get.integer("RELAY_MAX_ATTEMPTS", 5, low=1, high=20),
            vertex_region_qpm=get.integer("RELAY_VERTEX_REGION_QPM", 600, low=1, high=1_000_000),
            lost_after_s=get.number("RELAY_LOST_AFTER_S", 24 * 3600.0, low=0.0, high=30 * 86400.0),
            copy_lease_s=get.number("RELAY_COPY_LEASE_S", 600.0, low=1.0, high=86400.0),
            publish_lease_s=get.number("RELAY_PUBLISH_LEASE_S", 60.0, low=0.0, high=3600.0),
            retention_days=get.integer("RELAY_RETENTION_DAYS", 30, low=0, high=3650),
            watch=get.scopes("RELAY_WATCH"),
            watch_filter=get.filter("RELAY_WATCH_FILTER"),
            gemini_webhook_secrets=get.webhook_secrets("RELAY_GEMINI_WEBHOOK_SECRETS"),
            gemini_jwks_url=get.url("RELAY_GEMINI_JWKS_URL", secure=True),
            stall_after_s=get.number("RELAY_STALL_AFTER_S", 21600.0, low=0.0, high=365 * 86400.0),
            prices=get.prices("RELAY_PRICES"),
            max_poll_interval_s=get.number("RELAY_MAX_POLL_INTERVAL_S", 300.0, low=0.0, high=86400.0),
            tick_interval_s=get.number("RELAY_TICK_INTERVAL_S", 60.0, low=0.1, high=86400.0),
            tick_fanout=get.integer("RELAY_TICK_FANOUT", 1, low=1, high=64),
            tick_parts_topic=get.name("RELAY_TICK_PARTS_TOPIC", "batch-relay-tick-parts"),
            pubsub_endpoint=get.endpoint("RELAY_PUBSUB_ENDPOINT"),
            firestore_emulator_host=get.text("FIRESTORE_EMULATOR_HOST"),
            pubsub_emulator_host=get.text("PUBSUB_EMULATOR_HOST"),
            storage_emulator_host=get.url("STORAGE_EMULATOR_HOST"),
            secret_manager_url=get.url("RELAY_SECRET_MANAGER_URL", secure=True) or SECRET_MANAGER_URL,
        ).register_secrets()


    def register_secrets(self) -> Settings:
        """Mask every secret among these settings in all log lines; returns self."""
        add_secret(self.gemini_api_key)
        for secret in self.gemini_webhook_secrets:
            add_secret(secret)
            add_secret(secret.removeprefix("whsec_"))
        return self


@functools.cache
def load_settings() -> Settings:
    """The process's settings, read once (their secrets registered for redaction)."""
    return Settings.from_env()


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    @overload
    def text(self, var: str, *, required: Literal[True]) -> str: ...
    @overload
    def text(self, var: str, *, required: bool = False) -> str | None: ...

    def text(self, var: str, *, required: bool = False) -> str | None:
        value = (self._env.get(var) or "").strip()
        if not value:
            if required:
                raise SettingsError(f"{var} is required but not set")
            return None
        return value

    def name(self, var: str, default: str) -> str:
        value = self.text(var) or default
        if not re.fullmatch(r"[A-Za-z0-9_.~+%-]{1,255}", value) or value.startswith("goog"):
            raise SettingsError(f"{var}={value!r} is not a valid resource id")
        return value

    def integer(self, var: str, default: int, *, low: int, high: int) -> int:
        raw = self.text(var)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{var}={raw!r} is not a whole number") from None
        if not low <= value <= high:
            raise SettingsError(f"{var}={value} is out of range ({low}..{high})")
        return value

    def number(self, var: str, default: float, *, low: float, high: float) -> float:
        raw = self.text(var)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{var}={raw!r} is not a number") from None
        if not low <= value <= high:
            raise SettingsError(f"{var}={value} is out of range ({low}..{high})")
        return value

    def url(self, var: str, *, allow_location: bool = False, secure: bool = False) -> str | None:
        """An http(s) URL; with ``secure``, plain http only to this machine (a key or the keys that
        authenticate deliveries would otherwise travel in clear)."""
        raw = self.text(var)
        if raw is None:
            return None
        probe = raw.replace("{location}", "loc") if allow_location else raw
        try:
            parts = urlsplit(probe)
            host = parts.hostname
        except ValueError:  # e.g. "http://[": Invalid IPv6 URL
            raise SettingsError(f"{var}={raw!r} is not an http(s) URL") from None
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise SettingsError(f"{var}={raw!r} is not an http(s) URL")
        if secure and parts.scheme == "http" and not is_loopback(host):
            raise SettingsError(f"{var}={raw!r}: plain http:// is refused except to this machine (127.0.0.1, "
                                "localhost, ::1); use https://")
        return raw.rstrip("/")

    def endpoint(self, var: str) -> str | None:
        """A gRPC endpoint, ``host`` or ``host:port`` (e.g. ``us-central1-pubsub.googleapis.com:443``)."""
        raw = self.text(var)
        if raw is None:
            return None
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:\d{1,5})?", raw):
            raise SettingsError(f"{var}={raw!r} is not host[:port] (e.g. us-central1-pubsub.googleapis.com:443)")
        return raw

    def gcs_uri(self, var: str) -> str | None:
        raw = self.text(var)
        if raw is None:
            return None
        try:
            return normalize_destination(raw)
        except ValueError as exc:
            raise SettingsError(f"{var}: {exc}") from None

    def buckets(self, var: str) -> frozenset[str] | None:
        """A comma list of bucket names (unset: None)."""
        raw = self.text(var)
        if raw is None:
            return None
        names = [b.strip() for b in raw.split(",") if b.strip()]
        if not names:
            raise SettingsError(f"{var}={raw!r} names no bucket (unset it to allow any bucket)")
        for name in names:
            if not _BUCKET_RE.match(name):
                raise SettingsError(f"{var}: {name!r} is not a bucket name")
        return frozenset(names)

    def destinations(self, var: str) -> frozenset[str] | None:
        """A comma list of ``bucket`` or ``bucket/prefix`` entries (no ``gs://``, no trailing ``/``), or ``*``
        for any bucket. Unset: None, which refuses every copy."""
        raw = self.text(var)
        if raw is None:
            return None
        entries = [e.strip() for e in raw.split(",") if e.strip()]
        if not entries:
            raise SettingsError(f"{var}={raw!r} names no bucket (unset, every copy is refused; '*' allows any "
                                "bucket)")
        out = set()
        for entry in entries:
            if entry == ANY_BUCKET:
                out.add(entry)
                continue
            if entry.startswith("gs://"):
                raise SettingsError(f"{var}: {entry!r}: write bucket or bucket/prefix, without gs://")
            try:
                out.add(normalize_destination(f"gs://{entry}").removeprefix("gs://"))
            except ValueError as exc:
                raise SettingsError(f"{var}: {entry!r} is not bucket or bucket/prefix: {exc}") from None
        return frozenset(out)


    def prices(self, var: str) -> str | None:
        """A price table: ``gs://bucket/object`` or a file path (any other ``scheme://`` is refused)."""
        raw = self.text(var)
        if raw is None:
            return None
        if any(ord(c) < 32 or ord(c) == 127 for c in raw):
            raise SettingsError(f"{var} contains control characters")
        if raw.startswith("gs://"):
            bucket, _, name = raw[5:].partition("/")
            if not _BUCKET_RE.match(bucket) or not name or name.endswith("/") or len(name) > 1024:
                raise SettingsError(f"{var}={raw[:120]!r} is not a gs://bucket/object URI of a JSON file")
            return raw
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", raw):
            raise SettingsError(f"{var}={raw[:120]!r}: a price table is a file path or a gs:// object")
        return raw

    def scopes(self, var: str) -> tuple[WatchScope, ...]:
        raw = self.text(var)
        if raw is None:
            return ()
        try:
            return parse_scopes(raw)
        except UsageError as exc:
            raise SettingsError(f"{var}: {exc}") from None

    def filter(self, var: str) -> str | None:
        raw = self.text(var)
        if raw is None:
            return None
        if len(raw) > 2000 or any(ord(c) < 32 for c in raw):
            raise SettingsError(f"{var} must be one line of at most 2000 characters (a Vertex AI list filter)")
        if raw.count("(") != raw.count(")") or raw.count('"') % 2:
            raise SettingsError(f"{var}={raw[:80]!r} has unbalanced parentheses or quotes")
        return raw

    def webhook_secrets(self, var: str) -> tuple[str, ...]:
        """Standard Webhooks signing secrets: ``whsec_`` + base64. The value is never echoed."""
        raw = self.text(var)
        if raw is None:
            return ()
        out = []
        for position, secret in enumerate((s.strip() for s in raw.split(",")), start=1):
            if not secret:
                continue
            if not secret.startswith("whsec_"):
                raise SettingsError(f"{var}: secret #{position} does not start with whsec_")
            try:
                key = base64.b64decode(secret[len("whsec_"):], validate=True)
            except (binascii.Error, ValueError):
                raise SettingsError(f"{var}: secret #{position} is not whsec_ followed by base64") from None
            if len(key) < 16:
                raise SettingsError(f"{var}: secret #{position} is too short ({len(key)} bytes of key)")
            out.append(secret)
        if not out:
            raise SettingsError(f"{var} names no secret (unset it to refuse every delivery)")
        return tuple(out)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a URL's hostname) is this machine: ``localhost`` or a loopback address."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_destination(uri: str) -> str:
    """Validate a ``gs://bucket[/prefix]`` URI and drop any trailing ``/``."""
    if not uri.startswith("gs://"):
        raise ValueError(f"{uri!r} is not a gs:// URI")
    bucket, _, prefix = uri[5:].partition("/")
    if not _BUCKET_RE.match(bucket):
        raise ValueError(f"{uri!r}: {bucket!r} is not a bucket name")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError(f"{uri!r} has an empty, '.' or '..' path segment")
    if any(ord(c) < 32 or ord(c) == 127 for c in prefix):
        raise ValueError(f"{uri!r} contains control characters")
    return f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    bucket, _, prefix = normalize_destination(uri)[5:].partition("/")
    return bucket, prefix
