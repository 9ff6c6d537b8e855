"""Webhook intake, in the strict order: raw bytes → constant-time signature check → parse →
dedupe + durable enqueue (one atomic step) → answer.

Bad input of any kind is a ``GatewayError`` with a 4xx; nothing is queued for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from app import metrics
from app.conversions import lines, orders
from app.conversions.signatures import InvalidSignature, verify_hmac_base64, verify_standard_webhook
from app.errors import GatewayError
from app.product_identity import product_identity
from app.settings import Settings, origin_of
from app.shops import Shop, ShopRegistry
from app.store.conversions import ConversionStore
from app.store.deadline import RedisDeadline
from app.store.durability import NotDurable

log = logging.getLogger(__name__)

Platform = Literal["shopify", "woocommerce", "generic"]


@dataclass(frozen=True, slots=True)
class Intake:
    """What intake needs: the shops, the conversion store, the settings and the Redis deadline."""

    settings: Settings
    shops: ShopRegistry
    store: ConversionStore
    deadline: RedisDeadline  # webhooks: ~2 s, then 503


# --- reading the request --------------------------------------------------------------------


async def read_body(receive: Receive, headers: Mapping[str, str], max_bytes: int) -> bytes:
    """The raw body from the ASGI ``receive``, refused with 413 as soon as it is known to exceed
    ``max_bytes`` (before reading it when Content-Length says so). Raises ClientDisconnect."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise GatewayError(400, "malformed_payload", "Content-Length is not a number")
        if int(declared) > max_bytes:
            raise too_large(max_bytes)
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def too_large(max_bytes: int) -> GatewayError:
    return GatewayError(413, "payload_too_large", f"the body exceeds {max_bytes} bytes")


def media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_json(headers: Mapping[str, str]) -> None:
    kind = media_type(headers)
    if kind != "application/json" and not kind.endswith("+json"):
        raise GatewayError(
            415, "unsupported_media_type", f"expected Content-Type application/json, got {kind or 'none'}"
        )


def is_woocommerce_ping(headers: Mapping[str, str], body: bytes) -> bool:
    """WooCommerce's unsigned creation ping: a form body ``webhook_id=<n>`` and no signature."""
    if media_type(headers) != "application/x-www-form-urlencoded":
        return False
    name, sep, value = body.partition(b"=")
    return name == b"webhook_id" and bool(sep) and value.isdigit() and len(value) <= 20


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, "malformed_payload", f"the body is not valid JSON: {exc}") from None


# --- outcome accounting ---------------------------------------------------------------------

_OUTCOME_OF_CODE = {
    "invalid_signature": "invalid_signature",
    "malformed_payload": "malformed",
    "payload_too_large": "too_large",
    "unsupported_media_type": "unsupported_media_type",
    "unknown_shop": "unknown_shop",
    "unavailable": "unavailable",
}


class counted:
    """Count every webhook by platform and outcome, including the refused ones (the answered ones
    are counted by ``_reply``). A class, not a @contextmanager generator: a third of the cost, once
    per webhook."""

    __slots__ = ("platform",)

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if kind is None or not issubclass(kind, Exception):
            return
        outcome = _OUTCOME_OF_CODE.get(exc.code, "error") if isinstance(exc, GatewayError) else "error"
        metrics.webhook_received(self.platform, outcome).inc()


def _reply(platform: Platform, outcome: str, body: dict[str, Any]) -> dict[str, Any]:
    metrics.webhook_received(platform, outcome).inc()
    return body


# --- shop resolution ------------------------------------------------------------------------


def _unknown_shop(what: str) -> GatewayError:
    return GatewayError(404, "unknown_shop", f"no configured shop matches {what}")


def shopify_shop(shops: ShopRegistry, domain: str | None) -> Shop:
    wanted = (domain or "").strip().lower()
    for shop in shops:
        configured = shop.config.platform_domain
        if configured and wanted and configured.strip().lower() == wanted:
            return shop
    single = shops.single
    if single is not None and not single.config.platform_domain:
        return single
    raise _unknown_shop("X-Shopify-Shop-Domain")


def _site(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return origin_of(url if "://" in url else f"https://{url}")
    except ValueError:
        return None


def woocommerce_shop(shops: ShopRegistry, source: str | None) -> Shop:
    wanted = _site(source)
    for shop in shops:
        configured = _site(shop.config.platform_domain) or _site(shop.config.shop_url)
        if wanted and configured == wanted:
            return shop
    single = shops.single
    if single is not None and not single.config.platform_domain:
        return single
    raise _unknown_shop("X-WC-Webhook-Source")


# --- the three receivers --------------------------------------------------------------------


def _signature_error(exc: InvalidSignature) -> GatewayError:
    return GatewayError(401, "invalid_signature", str(exc))


async def receive_shopify(intake: Intake, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    with counted("shopify"):
        require_json(headers)
        shop = shopify_shop(intake.shops, headers.get("x-shopify-shop-domain"))
        try:
            verify_hmac_base64(
                body, headers.get("x-shopify-hmac-sha256"), shop.config.shopify_webhook_secrets
            )
        except InvalidSignature as exc:
            raise _signature_error(exc) from None
        field = product_identity(shop)
        return await _accept(
            intake,
            "shopify",
            shop,
            lambda: orders.parse_shopify(_json(body), headers.get("x-shopify-topic"), field),
        )


async def receive_woocommerce(intake: Intake, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    with counted("woocommerce"):
        if is_woocommerce_ping(headers, body):
            return _reply("woocommerce", "ping", {"status": "ok"})
        require_json(headers)
        shop = woocommerce_shop(intake.shops, headers.get("x-wc-webhook-source"))
        try:
            verify_hmac_base64(
                body, headers.get("x-wc-webhook-signature"), shop.config.woocommerce_webhook_secrets
            )
        except InvalidSignature as exc:
            raise _signature_error(exc) from None
        field = product_identity(shop)
        return await _accept(
            intake,
            "woocommerce",
            shop,
            lambda: orders.parse_woocommerce(_json(body), headers.get("x-wc-webhook-topic"), field),
        )


async def receive_generic(
    intake: Intake, headers: Mapping[str, str], body: bytes, shop_id: str | None = None
) -> dict[str, Any]:
    """Standard Webhooks. The shop comes from the URL (``/v1/webhooks/orders/{shopId}``), else it
    is the only shop with a secret, else the body's ``shopId``: one shop's secrets are tried, so an
    unsigned body costs one HMAC per secret of one shop, however many shops are configured."""
    with counted("generic"):
        require_json(headers)
        payload: Any = None
        if shop_id is None:
            signing = [shop for shop in intake.shops if shop.config.webhook_secrets]
            if len(signing) > 1:
                # Read the body for its shopId before it is authenticated: a linear parse of at
                # most the body limit, cheaper than one HMAC per shop, and nothing is trusted yet.
                payload = _json(body)
                shop_id = _named_shop(payload)
                if shop_id is None:
                    raise GatewayError(
                        400,
                        "malformed_payload",
                        "shopId is required: several shops are configured "
                        "(or POST /v1/webhooks/orders/{shopId})",
                    )
            shop = intake.shops.get(shop_id) if shop_id else (signing[0] if signing else None)
        else:
            shop = intake.shops.get(shop_id)
        if shop is None:
            raise _unknown_shop("shopId")
        try:
            verify_standard_webhook(
                body,
                headers.get("webhook-id"),
                headers.get("webhook-timestamp"),
                headers.get("webhook-signature"),
                shop.config.webhook_secrets,
                now=time.time(),
                tolerance=intake.settings.gateway_webhook_tolerance_seconds,
            )
        except InvalidSignature as exc:
            raise _signature_error(exc) from None
        if payload is None:
            payload = _json(body)
        named = _named_shop(payload)
        if named is not None and named != shop.id:
            raise _unknown_shop("shopId (or the body is not signed with its secret)")
        return await _accept(intake, "generic", shop, lambda: orders.parse_generic(payload)[1])


def _named_shop(payload: Any) -> str | None:
    shop_id = payload.get("shopId") if isinstance(payload, dict) else None
    if shop_id is not None and not isinstance(shop_id, str):
        raise GatewayError(400, "malformed_payload", "shopId must be a string")
    return shop_id


async def _accept(intake: Intake, platform: Platform, shop: Shop, parse: Any) -> dict[str, Any]:
    try:
        order: orders.Order = parse()
    except orders.Malformed as exc:
        raise GatewayError(400, "malformed_payload", str(exc)) from None
    except orders.Ignored as exc:
        return _reply(platform, "ignored", {"status": "ignored", "reason": str(exc)})
    if order.test and not intake.settings.gateway_include_test_orders:
        return _reply(
            platform, "ignored", {"status": "ignored", "reason": "test order", "orderId": order.order_id}
        )
    try:
        return await intake.deadline.run(lambda: _queue(intake, platform, shop, order))
    except NotDurable as exc:
        # Written, perhaps, but not where a failover or a host crash would keep it: not acknowledged.
        # The platform's retry answers once it is (or claims it afresh if it was lost).
        metrics.redis_errors.labels("webhook").inc()
        log.warning("webhook_not_durable", extra={"shop": shop.id, "error": str(exc)})
        raise GatewayError(
            503, "unavailable", "the order could not be stored durably in time; retry later"
        ) from None
    except (RedisError, OSError) as exc:
        # Not the sender's fault, and nothing was promised: a 503 makes the platform retry.
        metrics.redis_errors.labels("webhook").inc()
        log.warning("webhook_redis_unavailable", extra={"shop": shop.id, "error": type(exc).__name__})
        raise GatewayError(503, "unavailable", "the queue is unavailable; retry later") from None


async def _queue(intake: Intake, platform: Platform, shop: Shop, order: orders.Order) -> dict[str, Any]:
    decision = _decide(order)
    claim = await intake.store.claim(
        shop.id,
        order.order_id,
        _body(decision),
        platform,
        cart_token=order.cart_token,
        # What clicks posted for the cart could still attribute (they are looked up only with a cart).
        unattributed=decision.unattributed if order.cart_token else (),
        skipped=_skipped(decision),
    )
    if claim.outcome == "needs_clicks":
        assert claim.clicks
        decision = _decide(order, claim.clicks)
        assert decision.conversion is not None  # the posted clicks attribute at least one line
        claim = await intake.store.claim(
            shop.id, order.order_id, _body(decision), platform, skipped=_skipped(decision)
        )
    if claim.outcome == "unattributed":
        if claim.first:
            metrics.conversions.labels(shop.id, "ignored").inc()
        reason = decision.reason
        log.info("order_ignored", extra={"shop": shop.id, "order_id": order.order_id, "reason": reason})
        return _reply(
            platform,
            "ignored",
            {"status": "ignored", "reason": reason, "orderId": order.order_id},
        )
    if claim.outcome == "duplicate":
        return _reply(
            platform, "duplicate", {"status": "duplicate", "orderId": order.order_id, "state": claim.state}
        )
    # Debug, not info: the access log already has a line per webhook, and a second JSON line costs
    # a tenth of the intake's CPU (make bench). GET /v1/admin/conversions/{orderId} answers for an order.
    log.debug("order_accepted", extra={"shop": shop.id, "order_id": order.order_id, "platform": platform})
    return _reply(platform, "accepted", {"status": "accepted", "orderId": order.order_id})


def _decide(order: orders.Order, posted: Mapping[str, str] | None = None) -> lines.Decision:
    try:
        return lines.decide(order, (posted,) if posted else ())
    except ValidationError as exc:  # the order's own fields, past what Neuroon's types hold
        fields = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        raise GatewayError(
            400, "malformed_payload", f"the order cannot be sent to Neuroon: {fields}"
        ) from None


def _body(decision: lines.Decision) -> bytes:
    return orjson.dumps(decision.conversion.to_wire()) if decision.conversion else b""


def _skipped(decision: lines.Decision) -> bytes:
    return orjson.dumps([s.to_json() for s in decision.skipped]) if decision.skipped else b""
