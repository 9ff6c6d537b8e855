"""One internal order model, and a parser per platform that turns a verified payload into it.

A parser either returns an ``Order`` (a paid order), raises ``Ignored`` (a valid webhook that is
not a paid order, or a test order) or raises ``Malformed`` naming the field at fault (a 400).
``Malformed`` is only for an order unusable as a whole (interface.md §3.6): whatever is wrong with
one line makes that line an ``UnreadableLine``, left out of the conversion, never the order's loss.
Money is ``Decimal`` from the first parse on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
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
    """A line as the platform sent it; ``lines.decide`` says whether it can be sent."""

    index: int  # position in the payload's list of lines
    product_id: str | None  # as sent (not normalised yet)
    quantity: int
    line_total: Decimal
    search_log_id: str | None = None


@dataclass(frozen=True, slots=True)
class UnreadableLine:
    """A line the parser could not read (or that is no product sale): left out, with the reason."""

    index: int
    product_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    order_value: Decimal
    currency: str
    lines: tuple[OrderLine, ...]
    unreadable: tuple[UnreadableLine, ...] = ()
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
    # 2.0 is a whole number written by a JSON encoder that only has floats; 1.5 (a quantity plugin
    # selling by weight) is not: Neuroon's quantity is an integer.
    if type(value) is float and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise Malformed(f"{where} must be a whole number between 0 and 1000000, not {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A value for a message, cut short: line fields are the sender's data, of any size."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _line_identifier(value: Any, where: str) -> str | None:
    """A line's id as text, not yet normalised (``lines`` decides if it is usable); None if absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Malformed(f"{where} must be a string or an integer")
    return str(value)


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


# --- lines ---------------------------------------------------------------------------------

MAX_SHOWN_ID = 256  # a product id as recorded for a left-out line (the sender's data, of any size)


class NotASale(Exception):
    """A readable line that is no product sale (a gift card): left out, the message is the reason."""


def _read_lines(
    raw_lines: Any,
    where: str,
    id_key: str,
    read: Callable[[int, Mapping[str, Any], str], OrderLine],
) -> tuple[tuple[OrderLine, ...], tuple[UnreadableLine, ...]]:
    """Every line through ``read``; a line it cannot read is left out with the reason, never a 400."""
    lines: list[OrderLine] = []
    unreadable: list[UnreadableLine] = []
    for i, raw in enumerate(_list(raw_lines, where)):
        at = f"{where}[{i}]"
        try:
            line = read(i, _obj(raw, at), at)
        except (Malformed, NotASale) as exc:
            unreadable.append(UnreadableLine(i, _shown_id(raw, id_key), str(exc)))
            continue
        if line.quantity == 0:  # removed by an order edit, or a free placeholder: nothing was sold
            unreadable.append(UnreadableLine(i, shown_id(line.product_id), "quantity is 0"))
        else:
            lines.append(line)
    return tuple(lines), tuple(unreadable)


def _shown_id(raw: Any, id_key: str) -> str | None:
    value = raw.get(id_key) if isinstance(raw, dict) else None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return shown_id(str(value))


def shown_id(text: str | None) -> str | None:
    """A product id as recorded for a line left out: cut short, it is kept in Redis and shown."""
    if text is None or len(text) <= MAX_SHOWN_ID:
        return text
    return text[: MAX_SHOWN_ID - 3] + "..."


# --- Shopify ------------------------------------------------------------------------------

SHOPIFY_PAID_TOPICS = frozenset({"orders/paid"})
SHOPIFY_CREATED_TOPICS = frozenset({"orders/create"})
_SHOPIFY_ID_FIELD = {"sku": "sku", "product_id": "product_id", "variant_id": "variant_id"}
# Refunded or voided before the webhook reached us: whatever was paid went back, so no sale.
# (A refund after the conversion was sent is not ours to report: Neuroon has no call for it.)
SHOPIFY_UNDONE_STATUSES = frozenset({"refunded", "voided"})


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
    if isinstance(financial_status, str) and financial_status in SHOPIFY_UNDONE_STATUSES:
        raise Ignored(f"financial_status {financial_status!r}: the payment was returned, there is no sale")
    total = _money(order.get("total_price", order.get("current_total_price")), "total_price")
    key = _SHOPIFY_ID_FIELD[product_id_field]

    def read(i: int, item: Mapping[str, Any], where: str) -> OrderLine:
        product_id = _line_identifier(item.get(key), f"{where}.{key}")
        if item.get("gift_card") is True:
            raise NotASale("a gift card: money held for a later purchase, not a product sale")
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
        return OrderLine(i, product_id, quantity, price * quantity - discounts)

    lines, unreadable = _read_lines(order.get("line_items"), "line_items", key, read)
    paid = total
    if financial_status == "partially_paid":
        paid = _paid_so_far(order, total)
        lines = tuple(_scaled(line, paid, total) for line in lines)
    return Order(
        order_id=order_id,
        order_value=paid,
        currency=_currency(order.get("currency"), "currency"),
        lines=lines,
        unreadable=unreadable,
        clicks=(_attribute_clicks(order.get("note_attributes"), "note_attributes", "name", "value"),),
        cart_token=_text(order.get("cart_token"), "cart_token"),
        test=order.get("test") is True,
    )


def _paid_so_far(order: Mapping[str, Any], total: Decimal) -> Decimal:
    """What a partially paid order has received: the conversion reports the money paid at payment
    time, as analytics tools do, not what the shopper still owes (and may never pay)."""
    outstanding = order.get("total_outstanding")
    if outstanding is None:
        # Without it the paid share is unknown: ignoring this webhook leaves the order to the one
        # Shopify sends once it is paid in full, rather than reporting money never received.
        raise Ignored(
            "financial_status 'partially_paid' without total_outstanding: the paid amount is unknown"
        )
    owed = _money(outstanding, "total_outstanding")
    if not Decimal(0) <= owed <= total:
        raise Malformed("total_outstanding must be between 0 and total_price")
    if owed == total:
        raise Ignored("financial_status 'partially_paid' with nothing paid yet")
    return total - owed


def _scaled(line: OrderLine, paid: Decimal, total: Decimal) -> OrderLine:
    """The line's share of what was paid, to the cent (to the places of its own amount)."""
    exponent = line.line_total.as_tuple().exponent
    assert isinstance(exponent, int)  # a finite amount (_money)
    places = Decimal(1).scaleb(min(exponent, -2))
    share = (line.line_total * paid / total).quantize(places, rounding=ROUND_HALF_EVEN)
    return replace(line, line_total=share)


# --- WooCommerce --------------------------------------------------------------------------

WOOCOMMERCE_ORDER_TOPICS = frozenset({"order.created", "order.updated"})
WOOCOMMERCE_PAID_STATUSES = frozenset({"processing", "completed"})
# WooCommerce itself has no gift card flag. The extensions that sell gift cards mark the purchased
# line with meta of their own, under public keys (no leading "_"), so the REST payload a webhook
# carries shows them: "WooCommerce Gift Cards" (woocommerce.com) always sets wc_gc_giftcard_amount,
# with wc_gc_giftcard_to/_to_multiple/_from/_message; "PW WooCommerce Gift Cards" (Pimwick) sets
# pw_gift_card_to/_from/_message/_amount, and pw_gift_card_number once the card is issued (it may
# hide _amount outside the admin, hence any of its keys). Others, such as YITH's (keys "_ywgc_…",
# hidden from REST payloads), cannot be told from an ordinary line: README, "What gets sent".
WOOCOMMERCE_GIFT_CARD_META = ("wc_gc_giftcard_", "pw_gift_card_")


def _woocommerce_gift_card(item: Mapping[str, Any]) -> bool:
    meta = item.get("meta_data")
    return isinstance(meta, list) and any(
        isinstance(entry, dict)
        and isinstance(entry.get("key"), str)
        and entry["key"].startswith(WOOCOMMERCE_GIFT_CARD_META)
        for entry in meta
    )


def _redeemed_gift_cards(value: Any) -> Decimal:
    """What gift cards paid of the order, from "WooCommerce Gift Cards"' ``gift_cards`` field
    ([{id, code, amount}], read by WooCommerce's own mobile app). That extension takes redeemed cards
    off the order's ``total``, as a payment would be; the conversion reports the sale whatever paid
    for it, as Shopify's ``total_price`` does (a gift card is a payment there). Lenient: an entry
    whose amount cannot be read adds nothing (the field is the extension's, not WooCommerce's)."""
    paid = Decimal(0)
    for entry in value if isinstance(value, list) else []:
        try:
            amount = _money(entry.get("amount") if isinstance(entry, dict) else None, "gift_cards")
        except Malformed:
            continue
        paid += max(amount, Decimal(0))
    return paid


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
    total = _money(order.get("total"), "total") + _redeemed_gift_cards(order.get("gift_cards"))

    def key_of(item: Mapping[str, Any]) -> str:
        if product_id_field == "variant_id":
            # Simple products have variation_id 0: their product id is the variant.
            variation = item.get("variation_id")
            return "variation_id" if variation not in (None, 0, "0", "") else "product_id"
        return product_id_field

    def read(i: int, item: Mapping[str, Any], where: str) -> OrderLine:
        if _woocommerce_gift_card(item):  # before the id: a gift card product often has no SKU
            raise NotASale("a gift card: money held for a later purchase, not a product sale")
        key = key_of(item)
        product_id = _line_identifier(item.get(key), f"{where}.{key}")
        quantity = _quantity(item.get("quantity"), f"{where}.quantity")
        line_total = _money(item.get("total"), f"{where}.total")  # after discounts, before tax
        return OrderLine(i, product_id, quantity, line_total)

    id_key = "sku" if product_id_field == "sku" else "product_id"
    lines, unreadable = _read_lines(order.get("line_items"), "line_items", id_key, read)
    return Order(
        order_id=order_id,
        order_value=total,
        currency=_currency(order.get("currency"), "currency"),
        lines=lines,
        unreadable=unreadable,
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
    order_value = _money(data.get("orderValue"), "data.orderValue")

    def read(i: int, item: Mapping[str, Any], where: str) -> OrderLine:
        product_id = _line_identifier(item.get("productId"), f"{where}.productId")
        quantity = _quantity(item.get("quantity"), f"{where}.quantity")
        line_total = _money(item.get("lineTotal"), f"{where}.lineTotal")
        search_log_id = _line_identifier(item.get("searchLogId"), f"{where}.searchLogId")
        return OrderLine(i, product_id, quantity, line_total, search_log_id)

    lines, unreadable = _read_lines(data.get("lines"), "data.lines", "productId", read)
    clicks_raw = data.get("clicks")
    if clicks_raw is not None:
        clicks_obj = _obj(clicks_raw, "data.clicks")
        if not all(isinstance(v, str) for v in clicks_obj.values()):
            raise Malformed("data.clicks must map productId to a searchLogId string")
    order = Order(
        order_id=order_id,
        order_value=order_value,
        currency=_currency(data.get("currency"), "data.currency"),
        lines=lines,
        unreadable=unreadable,
        clicks=(parse_clicks(clicks_raw),) if clicks_raw is not None else (),
        cart_token=_text(data.get("cartToken"), "data.cartToken"),
    )
    return shop_id, order
