"""Attribution: which search led to each order line, from the widget's ``neuroon_clicks`` cookie.

The cookie is a JSON object ``{externalId: searchLogId}``, maybe URL-encoded, and cut at 4096
bytes when it grows past that: a cut value still yields every complete pair before the cut.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson
from redis.exceptions import RedisError

from app import metrics
from app.errors import GatewayError
from app.identifiers import normalise_identifier
from app.shops import Shop

if TYPE_CHECKING:
    from app.store.conversions import ConversionStore
    from app.store.deadline import RedisDeadline

COOKIE_NAME = "neuroon_clicks"
# Order attributes (Shopify note_attributes, WooCommerce meta_data) that carry the cookie's value.
# The underscore form is hidden from the shopper in Shopify and protected in WooCommerce.
ATTRIBUTE_NAMES = frozenset({"neuroon_clicks", "_neuroon_clicks"})

MAX_CLICKS = 500
MAX_KEY_LENGTH = 256
MAX_RAW_LENGTH = 64 * 1024
MAX_BODY_BYTES = 16 * 1024
MAX_CART_TOKEN_LENGTH = 256

# What /v1/attribution stores must look like what the widget writes (README, "Running on the
# internet"): cart tokens are visible ASCII (Shopify's base64-like tokens, WooCommerce's hex
# cart_hash); searchLogIds are opaque ids Neuroon issues (`log_…` in its docs, the exact format is
# not documented), so any id-like token of up to 128 characters passes: letters, digits and the
# punctuation of UUIDs, base64(url) and prefixed ids. productIds are the merchant's own (SKUs with
# spaces or accents exist): printable, not blank, at most MAX_KEY_LENGTH characters.
_CART_TOKEN = re.compile(rf"[!-~]{{1,{MAX_CART_TOKEN_LENGTH}}}")
_SEARCH_LOG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:~+/=-]{0,127}")

# A JSON string literal at a known opening quote, matched possessively: it never backtracks, and
# _complete_pairs only ever tries it where the previous literal ended, so each character is read
# a bounded number of times. (A search for a whole `"key": "value"` pattern restarted at every
# quote of the text, which made a value of `"\` repeated quadratic: 64 KiB took 17 s.)
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_COLON = re.compile(r"[ \t\r\n]*+:[ \t\r\n]*+")


def parse_clicks(raw: Any) -> dict[str, str]:
    """productId → searchLogId from a cookie value, an attribute value or a decoded object.

    Never raises: what cannot be read is simply not attribution.
    """
    if isinstance(raw, Mapping):
        return _clean(raw.items())
    if not isinstance(raw, str) or not raw or len(raw) > MAX_RAW_LENGTH:
        return {}
    text = raw.strip()
    for candidate in (text, unquote(text)):
        try:
            value = orjson.loads(candidate)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, Mapping):
            return _clean(value.items())
        if isinstance(value, str):  # a JSON string holding the JSON object (double-encoded)
            return parse_clicks(value) if value != raw else {}
        return {}
    # Truncated (or otherwise broken): keep every complete pair.
    decoded = unquote(text) if "%" in text else text
    return _clean(_complete_pairs(decoded))


def _complete_pairs(text: str) -> Iterator[tuple[str, str]]:
    """Every complete ``"key": "value"`` pair of a cut JSON object, in one left-to-right pass.

    The text is read as JSON tokens: a string literal runs to its closing quote, and one left
    open is where the value was cut, so nothing after it can be a complete pair.
    """
    at = text.find('"')
    while at != -1:
        key = _STRING.match(text, at)
        if key is None:
            return
        colon = _COLON.match(text, key.end())
        value = _STRING.match(text, colon.end()) if colon else None
        if colon and value is None and text.startswith('"', colon.end()):
            return  # the value's literal is the one left open
        if value is not None:
            # A raw control character or a bad escape is not a pair JSON would read: skipped.
            with contextlib.suppress(orjson.JSONDecodeError):
                yield orjson.loads(key.group(0)), orjson.loads(value.group(0))
        at = text.find('"', (value or key).end())


def _clean(items: Any) -> dict[str, str]:
    """Pairs in the normal form of ids (the form order lines are matched in); blank ones dropped."""
    clicks: dict[str, str] = {}
    for key, value in items:
        if not (isinstance(key, str) and isinstance(value, str)):
            continue
        # Some invisible padding normalises away; much more than that is not an id (and not worth the work).
        if len(key) > 4 * MAX_KEY_LENGTH or len(value) > 4 * MAX_KEY_LENGTH:
            continue
        product_id, search_log_id = normalise_identifier(key), normalise_identifier(value)
        if 0 < len(product_id) <= MAX_KEY_LENGTH and 0 < len(search_log_id) <= MAX_KEY_LENGTH:
            clicks[product_id] = search_log_id
            if len(clicks) >= MAX_CLICKS:
                break
    return clicks


# --- POST /v1/attribution -----------------------------------------------------------------


async def remember(
    store: ConversionStore,
    deadline: RedisDeadline,
    shop: Shop,
    headers: Mapping[str, str],
    body: bytes,
    cookies: Mapping[str, str],
) -> None:
    """Keep the clicks of a cart for 7 days: from the body's ``clicks``, else the request's cookie."""
    kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    # text/plain is what navigator.sendBeacon sends, and needs no CORS preflight.
    if kind not in ("application/json", "text/plain"):
        raise GatewayError(415, "unsupported_media_type", "expected Content-Type application/json")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise GatewayError(400, "malformed_payload", "the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise GatewayError(400, "malformed_payload", "the body must be a JSON object")
    cart_token = payload.get("cartToken")
    if not isinstance(cart_token, str) or not _CART_TOKEN.fullmatch(cart_token):
        raise GatewayError(
            400,
            "malformed_payload",
            f"cartToken must be 1-{MAX_CART_TOKEN_LENGTH} visible ASCII characters",
        )
    raw = payload.get("clicks", cookies.get(COOKIE_NAME))
    if raw is not None and not isinstance(raw, (str, dict)):
        raise GatewayError(400, "malformed_payload", "clicks must be an object or the cookie's value")
    parsed = parse_clicks(raw)
    clicks = {k: v for k, v in parsed.items() if _storable(k, v)}
    if parsed and not clicks:
        raise GatewayError(
            400,
            "malformed_payload",
            "no click has the shape of a productId (printable, at most "
            f"{MAX_KEY_LENGTH} characters) and a searchLogId (an id of at most 128 characters)",
        )
    if clicks:
        try:
            await deadline.run(lambda: store.put_clicks(shop.id, cart_token, clicks))
        except (RedisError, OSError):
            metrics.redis_errors.labels("attribution").inc()
            raise GatewayError(
                503, "unavailable", "attribution storage is unavailable; retry later"
            ) from None


def _storable(product_id: str, search_log_id: str) -> bool:
    return (
        product_id.isprintable()
        and not product_id.isspace()
        and bool(_SEARCH_LOG_ID.fullmatch(search_log_id))
    )


@functools.cache
def script() -> bytes:
    return resources.files("app.conversions").joinpath("static/attribution.js").read_bytes()
