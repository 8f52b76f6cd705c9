"""Standard Webhooks signatures (contract A9): who may nudge ``on_gemini_webhook``.

- **v1** — the Gemini API's static webhooks: HMAC-SHA256, keyed with the base64-decoded part of a
  ``whsec_`` secret, over ``{webhook-id}.{webhook-timestamp}.{raw body}``. Checked with the reference
  implementation (the ``standardwebhooks`` package, no dependencies of its own), once per secret of
  ``RELAY_GEMINI_WEBHOOK_SECRETS`` (several while a rotated secret is still valid), in constant time.
- **v1a** — dynamic (per-batch) webhooks: Ed25519 over the same content, checked against the public keys
  of the JWKS at ``RELAY_GEMINI_JWKS_URL`` (OKP / Ed25519 keys). The reference library does not implement
  v1a, so this part is written here on ``cryptography`` (already a dependency of google-auth).

A timestamp more than 300 s from now is refused either way. Every refusal is a ``Refused`` with a short
reason for the log; none of them says which part failed beyond that, and no secret is ever in one.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - imported where used: only v1a needs cryptography
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOLERANCE_S = 300
_STAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


class Refused(Exception):
    """A delivery that is not verified: answered 401."""


@dataclasses.dataclass(frozen=True)
class Verified:
    webhook_id: str
    timestamp: int
    scheme: str  # "v1" | "v1a"


def _signatures(header: str) -> list[tuple[str, bytes]]:
    out = []
    for entry in header.split():
        version, sep, value = entry.partition(",")
        if not sep:
            continue
        try:
            out.append((version, base64.b64decode(value, validate=True)))
        except (binascii.Error, ValueError):
            continue
    return out


def verify(headers: Mapping[str, str], body: bytes, *, secrets: Sequence[str] = (),
           ed25519_keys: Callable[[], Sequence[Ed25519PublicKey]] | None = None,
           refreshed_keys: Callable[[], Sequence[Ed25519PublicKey]] | None = None,
           now: Callable[[], float] = time.time) -> Verified:
    """Check one delivery; raises ``Refused``. ``ed25519_keys`` returns the JWKS keys (cached by the
    caller), ``refreshed_keys`` fetches them again; both are only called for a ``v1a`` signature."""
    lower = {str(k).lower(): v for k, v in headers.items()}
    msg_id, stamp, header = (lower.get("webhook-id"), lower.get("webhook-timestamp"), lower.get("webhook-signature"))
    if not (isinstance(msg_id, str) and isinstance(stamp, str) and isinstance(header, str)
            and msg_id and stamp and header):
        raise Refused("missing webhook-id, webhook-timestamp or webhook-signature")
    if not _STAMP.fullmatch(stamp):
        raise Refused("webhook-timestamp is not Unix seconds")
    if abs(now() - int(stamp)) > TOLERANCE_S:
        raise Refused("webhook-timestamp is more than 300 s from now")
    signatures = _signatures(header)
    v1 = [sig for version, sig in signatures if version == "v1"]
    # the reference library verifies text: a body that is not UTF-8 can only be verified by v1a (bytes)
    text = _utf8(body) if v1 and secrets else None
    if text is not None and _verify_v1(msg_id, stamp, text, v1, secrets):
        return Verified(msg_id, int(stamp), "v1")
    v1a = [sig for version, sig in signatures if version == "v1a"]
    if v1a and ed25519_keys is not None:
        content = f"{msg_id}.{stamp}.".encode() + body
        if _verify_v1a(content, v1a, ed25519_keys()) or (
                refreshed_keys is not None and _verify_v1a(content, v1a, refreshed_keys())):
            return Verified(msg_id, int(stamp), "v1a")
    raise Refused("no signature matches")


def _utf8(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _verify_v1(msg_id: str, stamp: str, text: str, signatures: list[bytes], secrets: Sequence[str]) -> bool:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    # only well-formed v1 entries reach the library (it gives up on the first entry it cannot split)
    header = " ".join("v1," + base64.b64encode(sig).decode() for sig in signatures)
    headers = {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": header}
    for secret in secrets:
        try:
            Webhook(secret).verify(text, headers, json_parse=False)
            return True
        except (WebhookVerificationError, ValueError, binascii.Error):
            continue
    return False


def _verify_v1a(content: bytes, signatures: list[bytes], keys: Sequence[Ed25519PublicKey]) -> bool:
    from cryptography.exceptions import InvalidSignature

    for key in keys:
        for signature in signatures:
            try:
                key.verify(signature, content)
                return True
            except (InvalidSignature, ValueError, TypeError):
                continue
    return False


def ed25519_keys_from_jwks(document: object) -> list[Ed25519PublicKey]:
    """The Ed25519 public keys of a JWKS (``{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": …}]}``);
    other keys are skipped."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: list[Ed25519PublicKey] = []
    entries = document.get("keys") if isinstance(document, dict) else None
    for jwk in entries if isinstance(entries, list) else []:
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        x = jwk.get("x")
        if not isinstance(x, str):
            continue
        try:
            raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
        except (binascii.Error, ValueError):
            continue
    return keys
