"""Realistic order payloads and their real signatures, shared by the webhook tests and the bench."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any
from urllib.parse import quote

from app.conversions.signatures import hmac_base64, sign_standard_webhook

SHOPIFY_SECRET = f"shpss_{secrets.token_hex(16)}"
WOO_SECRET = f"wcsecret{secrets.token_hex(12)}"
STANDARD_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
SHOP_DOMAIN = "canary-store.myshopify.com"


def clicks_cookie(clicks: dict[str, str], *, url_encoded: bool = False) -> str:
    raw = json.dumps(clicks, separators=(",", ":"))
    return quote(raw, safe="") if url_encoded else raw


def shopify_order(
    order_id: int = 6200407294252,
    *,
    financial_status: str = "paid",
    clicks: dict[str, str] | None = None,
    note_value: str | None = None,
    attribute_name: str = "_neuroon_clicks",
    cart_token: str = "Z2NwLWV1cm9wZS13ZXN0MTowMUpKN0Y3",  # noqa: S107 - a cart token, not a secret
    test: bool = False,
) -> dict[str, Any]:
    """An orders/paid payload shaped like a real capture (trimmed to the fields that matter)."""
    if note_value is None and clicks is not None:
        note_value = clicks_cookie(clicks)
    notes = [{"name": "gift_wrap", "value": "no"}]
    if note_value is not None:
        notes.append({"name": attribute_name, "value": note_value})
    return {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "name": "#1071",
        "order_number": 1071,
        "financial_status": financial_status,
        "currency": "EUR",
        "presentment_currency": "EUR",
        "total_price": "186.90",
        "current_total_price": "186.90",
        "subtotal_price": "184.90",
        "cart_token": cart_token,
        "checkout_token": "ae0ed4e40b4fe3c339cc9be09ea0d41b",
        "test": test,
        "source_name": "web",
        "updated_at": "2025-01-23T23:10:16-05:00",
        "note": None,
        "note_attributes": notes,
        "line_items": [
            {
                "id": 15518907892012,
                "product_id": 9782123692332,
                "variant_id": 50398373085484,
                "sku": "SNOW-GRN-150",
                "title": "Snowboard",
                "quantity": 1,
                "price": "99.00",
                "total_discount": "0.00",
                "discount_allocations": [{"amount": "14.10", "discount_application_index": 0}],
                "properties": [],
            },
            {
                "id": 15518907924780,
                "product_id": 9782123725100,
                "variant_id": 50398373118252,
                "sku": "WAX-01",
                "title": "Wax",
                "quantity": 2,
                "price": "50.00",
                "total_discount": "0.00",
                "discount_allocations": [],
                "properties": [],
            },
            {
                "id": 15518907957548,
                "product_id": 9782123757868,
                "variant_id": 50398373151020,
                "sku": "GLOVES-M",
                "title": "Gloves",
                "quantity": 1,
                "price": "2.00",
                "total_discount": "0.00",
                "discount_allocations": [],
                "properties": [],
            },
        ],
    }


def woocommerce_order(
    order_id: int = 897,
    *,
    status: str = "processing",
    clicks: dict[str, str] | None = None,
    meta_value: Any = None,
    meta_key: str = "neuroon_clicks",
    cart_hash: str = "9ef751eb3a1c4b7e8b51e0a2c0f44b9a",
) -> dict[str, Any]:
    """A REST v3 order as WooCommerce's webhook sends it (trimmed)."""
    if meta_value is None and clicks is not None:
        meta_value = clicks_cookie(clicks)
    meta = [{"id": 3549, "key": "_wc_order_attribution_source_type", "value": "typein"}]
    if meta_value is not None:
        meta.append({"id": 3550, "key": meta_key, "value": meta_value})
    return {
        "id": order_id,
        "parent_id": 0,
        "number": str(order_id),
        "order_key": "wc_order_Xn0e1Q8nJ1c3X",
        "created_via": "checkout",
        "status": status,
        "currency": "USD",
        "date_paid_gmt": "2021-09-06T18:05:12",
        "discount_total": "5.00",
        "total": "28.44",
        "total_tax": "0.00",
        "cart_hash": cart_hash,
        "line_items": [
            {
                "id": 31,
                "name": "Hoodie - M",
                "product_id": 93,
                "variation_id": 95,
                "quantity": 2,
                "subtotal": "20.00",
                "total": "15.00",
                "total_tax": "0.00",
                "sku": "HOODIE-M",
                "price": 7.5,
                "meta_data": [],
            },
            {
                "id": 32,
                "name": "Cap",
                "product_id": 40,
                "variation_id": 0,
                "quantity": 1,
                "subtotal": "13.44",
                "total": "13.44",
                "total_tax": "0.00",
                "sku": "CAP-1",
                "price": 13.44,
                "meta_data": [],
            },
        ],
        "meta_data": meta,
    }


def generic_order(
    order_id: str = "ORD-2026-0001",
    *,
    shop_id: str | None = "shop_test",
    lines: list[dict[str, Any]] | None = None,
    clicks: dict[str, str] | None = None,
    cart_token: str | None = None,
    event_type: str = "order.paid",
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "orderId": order_id,
        "orderValue": "199.95",
        "currency": "EUR",
        "lines": lines
        if lines is not None
        else [
            {"productId": "SKU-001", "quantity": 2, "lineTotal": "79.98", "searchLogId": "log_aaa"},
            {"productId": "SKU-042", "quantity": 1, "lineTotal": "119.97"},
        ],
    }
    if clicks is not None:
        data["clicks"] = clicks
    if cart_token is not None:
        data["cartToken"] = cart_token
    body: dict[str, Any] = {"type": event_type, "data": data}
    if shop_id is not None:
        body["shopId"] = shop_id
    return body


def encode(payload: Any) -> bytes:
    # Shopify escapes "/" in its JSON: the signature must be over these exact bytes, never a re-encoding.
    return json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()


def shopify_headers(
    body: bytes, *, topic: str = "orders/paid", secret: str = SHOPIFY_SECRET, domain: str = SHOP_DOMAIN
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": hmac_base64(secret.encode(), body),
        "X-Shopify-Shop-Domain": domain,
        "X-Shopify-API-Version": "2025-01",
        "X-Shopify-Webhook-Id": secrets.token_hex(8),
        "X-Shopify-Event-Id": secrets.token_hex(8),
    }


def woocommerce_headers(
    body: bytes,
    *,
    topic: str = "order.updated",
    secret: str = WOO_SECRET,
    source: str = "https://shop.example/",
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-WC-Webhook-Source": source,
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": "order",
        "X-WC-Webhook-Event": topic.split(".")[-1],
        "X-WC-Webhook-Signature": hmac_base64(secret.encode(), body),
        "X-WC-Webhook-ID": "12",
        "X-WC-Webhook-Delivery-ID": secrets.token_hex(16),
        "User-Agent": "WooCommerce/9.4.1 Hookshot (WordPress/6.7.1)",
    }


def standard_headers(
    body: bytes, *, secret: str = STANDARD_SECRET, msg_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{secrets.token_hex(12)}"
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_standard_webhook(secret, msg_id, ts, body),
    }
