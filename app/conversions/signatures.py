"""Webhook signatures: checked on the raw bytes, in constant time, against every current secret.

Several secrets may be configured at once so that one can be rotated without losing deliveries.
Every malformed header is an ``InvalidSignature`` (a clean 401), never another exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Sequence

from pydantic import SecretStr


class InvalidSignature(Exception):
    """The request is not signed by any configured secret. The message says why, never a secret."""


def hmac_base64(secret: bytes, body: bytes) -> str:
    """Shopify's and WooCommerce's scheme: base64(HMAC-SHA256(secret, raw body))."""
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode("ascii")


def verify_hmac_base64(body: bytes, header: str | None, secrets: Sequence[SecretStr]) -> None:
    if not secrets:
        raise InvalidSignature("no webhook secret is configured for this shop and platform")
    if not header:
        raise InvalidSignature("the signature header is missing")
    try:
        given = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature("the signature header is not base64") from None
    if not _any_matches(given, (hmac.new(_key(s), body, hashlib.sha256).digest() for s in secrets)):
        raise InvalidSignature("the signature does not match")


def standard_webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64 part of ``whsec_<base64>``."""
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def sign_standard_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature, as a Standard Webhooks sender computes it."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_webhook_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_standard_webhook(
    body: bytes,
    msg_id: str | None,
    timestamp: str | None,
    signature: str | None,
    secrets: Sequence[SecretStr],
    *,
    now: float,
    tolerance: int,
) -> None:
    """Standard Webhooks v1 (symmetric): a ``v1,`` entry signed by any secret, timestamp in tolerance."""
    if not secrets:
        raise InvalidSignature("no webhook secret is configured for this shop")
    if not msg_id or not timestamp or not signature:
        raise InvalidSignature("webhook-id, webhook-timestamp and webhook-signature headers are required")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise InvalidSignature("webhook-timestamp is not a Unix time in seconds")
    if abs(now - int(timestamp)) > tolerance:
        raise InvalidSignature("webhook-timestamp is outside the accepted tolerance")
    given: list[bytes] = []
    for entry in signature.split():
        version, sep, value = entry.partition(",")
        if not sep or version != "v1":
            continue  # other schemes (v1a) and garbled entries are ignored, as the reference library does
        try:
            given.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not given:
        raise InvalidSignature("webhook-signature has no v1 signature")
    content = f"{msg_id}.{timestamp}.".encode() + body
    expected = [
        hmac.new(standard_webhook_key(s.get_secret_value()), content, hashlib.sha256).digest()
        for s in secrets
    ]
    if not any(_any_matches(g, expected) for g in given):
        raise InvalidSignature("the signature does not match")


def _key(secret: SecretStr) -> bytes:
    return secret.get_secret_value().encode()


def _any_matches(given: bytes, expected: Iterable[bytes]) -> bool:
    # Compare against every secret, without stopping at the first match: the time taken does
    # not tell which secret (if any) matched.
    matched = False
    for candidate in expected:
        matched |= hmac.compare_digest(given, candidate)
    return matched
