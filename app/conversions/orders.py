"""One internal order model, and a parser per platform that turns a verified payload into it.

A parser either returns an ``Order`` (a paid order), raises ``Ignored`` (a valid webhook that is
not a paid order, or a test order) or raises ``Malformed`` naming the field at fault (a 400).
Money is ``Decimal`` from the first parse on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from app.conversions.attribution import ATTRIBUTE_NAMES, parse_clicks
from app.settings import ProductIdentity as ProductIdField

MAX_ID_LENGTH = 256
MAX_LINES = 1000
MAX_DIGITS = 15  # what a JSON number carries exactly (neuroon.models.Money)


class Malformed(Exception):
    """The payload is not what the platform sends; the message names the field."""


class Ignored(Exception):
    """A valid webhook that produces no conversion; the message is the reason."""


@dataclass(frozen=True, slots=True)
class OrderLine:
    product_id: str | None
    quantity: int
    line_total: Decimal
    search_log_id: str | None = None


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    order_value: Decimal
    currency: str
    lines: tuple[OrderLine, ...]
    # productId → searchLogId maps carried by the payload, most authoritative first.
    clicks: tuple[Mapping[str, str], ...] = ()
    cart_token: str | None = None
    test: bool = False


# --- field readers: every failure names the field ----------------------------------------


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{where} must be a JSON object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise Malformed(f"{where} must be a list")
    if len(value) > MAX_LINES:
        raise Malformed(f"{where} has more than {MAX_LINES} entries")
    return value


def _identifier(value: Any, where: str, *, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise Malformed(f"{where} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Malformed(f"{where} must be a string or an integer")
    text = str(value)
    if len(text) > MAX_ID_LENGTH or not text.isprintable():
        raise Malformed(f"{where} must be at most {MAX_ID_LENGTH} printable characters")
    return text


def _money(value: Any, where: str) -> Decimal:
    kind = type(value)  # exact types: bool is an int, and JSON parsers give no subclasses
    if kind is str:
        text = value.strip()
    elif kind is float:
        text = repr(value)  # a JSON number's shortest repr is exactly the digits that were sent
    elif kind is int:
        text = str(value)
    else:
        raise Malformed(f"{where} must be a decimal amount")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise Malformed(f"{where} must be a decimal amount") from None
    # Written in at most MAX_DIGITS characters without an exponent, an amount cannot have more
    # digits than that: most amounts skip the count (make bench).
    long = len(text) > MAX_DIGITS or "e" in text or "E" in text
    if not amount.is_finite() or (long and _digits(amount) > MAX_DIGITS):
        raise Malformed(f"{where} must be a finite amount of at most {MAX_DIGITS} digits")
    return amount


def _digits(amount: Decimal) -> int:
    """Significant places as Neuroon's Money type counts them (integer digits + decimals)."""
    _sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    return len(digits) + exponent if exponent >= 0 else max(len(digits), -exponent)


def _quantity(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise Malformed(f"{where} must be an integer between 0 and 1000000")
    return value


def _currency(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isascii() or not value.isalpha():
        raise Malformed(f"{where} must be an ISO 4217 code such as EUR")
    return value.upper()


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Malformed(f"{where} must be a string")
    return value


def _attribute_clicks(entries: Any, where: str, name_key: str, value_key: str) -> dict[str, str]:
    """Clicks from Shopify ``note_attributes`` / WooCommerce ``meta_data`` entries."""
    if entries is None:
        return {}
    clicks: dict[str, str] = {}
    for i, entry in enumerate(_list(entries, where)):
        name = entry.get(name_key) if isinstance(entry, dict) else None
        if isinstance(name, str) and name in ATTRIBUTE_NAMES:
            clicks.update(parse_clicks(entry.get(value_key)))
        elif not isinstance(entry, dict):
            raise Malformed(f"{where}[{i}] must be a JSON object")
    return clicks


# --- Shopify ------------------------------------------------------------------------------

SHOPIFY_PAID_TOPICS = frozenset({"orders/paid"})
SHOPIFY_CREATED_TOPICS = frozenset({"orders/create"})
_SHOPIFY_ID_FIELD = {"sku": "sku", "product_id": "product_id", "variant_id": "variant_id"}


def parse_shopify(payload: Any, topic: str | None, product_id_field: ProductIdField) -> Order:
    order = _obj(payload, "body")
    if not topic:
        raise Malformed("the X-Shopify-Topic header is missing")
    order_id = _identifier(order.get("id"), "id")
    assert order_id is not None
    financial_status = order.get("financial_status")
    if topic in SHOPIFY_CREATED_TOPICS:
        if financial_status != "paid":
            raise Ignored(f"orders/create with financial_status {financial_status!r} is not paid yet")
    elif topic not in SHOPIFY_PAID_TOPICS:
        raise Ignored(f"topic {topic!r} is not a paid-order topic")
    total = order.get("total_price", order.get("current_total_price"))
    lines = []
    for i, raw in enumerate(_list(order.get("line_items"), "line_items")):
        where = f"line_items[{i}]"
        item = _obj(raw, where)
        quantity = _quantity(item.get("quantity"), f"{where}.quantity")
        price = _money(item.get("price"), f"{where}.price")
        discounts = Decimal(0)
        for j, alloc in enumerate(
            _list(item.get("discount_allocations") or [], f"{where}.discount_allocations")
        ):
            discounts += _money(
                _obj(alloc, f"{where}.discount_allocations[{j}]").get("amount"),
                f"{where}.discount_allocations[{j}].amount",
            )
        key = _SHOPIFY_ID_FIELD[product_id_field]
        product_id = _identifier(item.get(key), f"{where}.{key}", required=False)
        if quantity > 0:
            lines.append(OrderLine(product_id, quantity, price * quantity - discounts))
    return Order(
        order_id=order_id,
        order_value=_money(total, "total_price"),
        currency=_currency(order.get("currency"), "currency"),
        lines=tuple(lines),
        clicks=(_attribute_clicks(order.get("note_attributes"), "note_attributes", "name", "value"),),
        cart_token=_text(order.get("cart_token"), "cart_token"),
        test=order.get("test") is True,
    )


# --- WooCommerce --------------------------------------------------------------------------

WOOCOMMERCE_ORDER_TOPICS = frozenset({"order.created", "order.updated"})
WOOCOMMERCE_PAID_STATUSES = frozenset({"processing", "completed"})


def parse_woocommerce(payload: Any, topic: str | None, product_id_field: ProductIdField) -> Order:
    order = _obj(payload, "body")
    if not topic:
        raise Malformed("the X-WC-Webhook-Topic header is missing")
    if topic not in WOOCOMMERCE_ORDER_TOPICS:
        raise Ignored(f"topic {topic!r} is not an order topic")
    order_id = _identifier(order.get("id"), "id")
    assert order_id is not None
    status = order.get("status")
    if not isinstance(status, str) or status not in WOOCOMMERCE_PAID_STATUSES:
        raise Ignored(f"order status {status!r} is not a paid status")
    lines = []
    for i, raw in enumerate(_list(order.get("line_items"), "line_items")):
        where = f"line_items[{i}]"
        item = _obj(raw, where)
        quantity = _quantity(item.get("quantity"), f"{where}.quantity")
        if product_id_field == "variant_id":
            # Simple products have variation_id 0: their product id is the variant.
            variation = item.get("variation_id")
            key = "variation_id" if variation not in (None, 0, "0", "") else "product_id"
        else:
            key = product_id_field
        product_id = _identifier(item.get(key), f"{where}.{key}", required=False)
        line_total = _money(item.get("total"), f"{where}.total")  # after discounts, before tax
        if quantity > 0:
            lines.append(OrderLine(product_id, quantity, line_total))
    return Order(
        order_id=order_id,
        order_value=_money(order.get("total"), "total"),
        currency=_currency(order.get("currency"), "currency"),
        lines=tuple(lines),
        clicks=(_attribute_clicks(order.get("meta_data"), "meta_data", "key", "value"),),
        cart_token=_text(order.get("cart_hash"), "cart_hash"),
    )


# --- Generic (Standard Webhooks) ----------------------------------------------------------

GENERIC_PAID_TYPE = "order.paid"


def parse_generic(payload: Any) -> tuple[str | None, Order]:
    """The generic body of interface.md §3.2; also returns its ``shopId`` (for multi-shop)."""
    body = _obj(payload, "body")
    shop_id = _text(body.get("shopId"), "shopId")
    event_type = body.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise Malformed("type is required")
    data = _obj(body.get("data"), "data")
    if event_type != GENERIC_PAID_TYPE:
        raise Ignored(f"type {event_type!r} is not {GENERIC_PAID_TYPE!r}")
    order_id = _identifier(data.get("orderId"), "data.orderId")
    assert order_id is not None
    lines = []
    for i, raw in enumerate(_list(data.get("lines"), "data.lines")):
        where = f"data.lines[{i}]"
        item = _obj(raw, where)
        quantity = _quantity(item.get("quantity"), f"{where}.quantity")
        product_id = _identifier(item.get("productId"), f"{where}.productId")
        line_total = _money(item.get("lineTotal"), f"{where}.lineTotal")
        search_log_id = _identifier(item.get("searchLogId"), f"{where}.searchLogId", required=False)
        if quantity > 0:
            lines.append(OrderLine(product_id, quantity, line_total, search_log_id))
    clicks_raw = data.get("clicks")
    if clicks_raw is not None:
        clicks_obj = _obj(clicks_raw, "data.clicks")
        if not all(isinstance(v, str) for v in clicks_obj.values()):
            raise Malformed("data.clicks must map productId to a searchLogId string")
    order = Order(
        order_id=order_id,
        order_value=_money(data.get("orderValue"), "data.orderValue"),
        currency=_currency(data.get("currency"), "data.currency"),
        lines=tuple(lines),
        clicks=(parse_clicks(clicks_raw),) if clicks_raw is not None else (),
        cart_token=_text(data.get("cartToken"), "data.cartToken"),
    )
    return shop_id, order
