"""Neuroon's widget-token format (neuroon-api.md §2.1), signed locally with the Shop API Key.

    token = Base64URL("<shopId>:<unixTs>:" + lowercase hex HMAC-SHA256(key, "<shopId>:<unixTs>"))

without "=" padding. Neuroon's backend also accepts standard Base64 and checks that the
timestamp lies within the last 24 hours, recomputing the HMAC with the key it has *now*.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

TOKEN_VALIDITY_SECONDS = 86_400


def sign_widget_token(shop_id: str, api_key: str, unix_ts: int) -> str:
    payload = f"{shop_id}:{unix_ts}"
    signature = hmac.new(api_key.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return base64.urlsafe_b64encode(f"{payload}:{signature}".encode()).rstrip(b"=").decode("ascii")


class InvalidWidgetToken(ValueError):
    """The token is malformed, forged, or outside its validity window."""


def verify_widget_token(
    token: str, shop_id: str, api_key: str, now: float, *, max_future_skew: int = 60
) -> int:
    """Check a token the way Neuroon's backend does; return its timestamp or raise InvalidWidgetToken.

    Neuroon does not document a tolerance for timestamps in the future; we allow a small skew.
    """
    padded = token + "=" * (-len(token) % 4)
    try:
        # Standard Base64 is accepted too, as Neuroon's backend does: map it onto the URL alphabet.
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidWidgetToken("not Base64 of UTF-8 text") from None
    payload, sep, signature = raw.rpartition(":")
    token_shop, sep2, ts_text = payload.rpartition(":")
    if not sep or not sep2 or not ts_text.isdigit():
        raise InvalidWidgetToken("not shopId:unixTs:signature")
    if token_shop != shop_id:
        raise InvalidWidgetToken("issued for another shop")
    expected = hmac.new(api_key.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise InvalidWidgetToken("signature does not match the shop's current key")
    ts = int(ts_text)
    if ts > now + max_future_skew:
        raise InvalidWidgetToken("timestamp is in the future")
    if now - ts > TOKEN_VALIDITY_SECONDS:
        raise InvalidWidgetToken("expired")
    return ts
