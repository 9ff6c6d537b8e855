# ruff: noqa: F811 - the gateway and live_sandbox fixtures come from test_delivery, by import
"""One line the gateway cannot use never costs the order (interface.md §3.6, issue 9 items 1-5).

End to end: webhook in, real Redis, the real worker, out to the sandbox, which refuses what
Neuroon's contract refuses; the order's record (admin API) lists the lines left out and why.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from app.conversions.lines import MAX_ID_LENGTH
from app.identifiers import normalise_identifier
from app.sandbox import Sandbox
from app.store.conversions import ConversionStore, ignored_key
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL
from tests.test_dead_letter_cli import run
from tests.test_delivery import (  # noqa: F401 - fixtures, used by name
    GatewayFactory,
    admin_headers,
    delivered,
    gateway,
    live_sandbox,
    state_of,
    wait_for,
)
from tests.webhooks import (
    encode,
    generic_order,
    shopify_headers,
    shopify_order,
    standard_headers,
    woocommerce_headers,
    woocommerce_order,
)

CLICKS = {"SNOW-GRN-150": "log_snow", "WAX-01": "log_wax"}
SHOPIFY_ID = "6200407294252"


ENDPOINTS: dict[str, tuple[str, Callable[..., dict[str, str]]]] = {
    "shopify": ("/v1/webhooks/shopify", shopify_headers),
    "woocommerce": ("/v1/webhooks/woocommerce", woocommerce_headers),
    "generic": ("/v1/webhooks/orders", standard_headers),
}


def post(client: TestClient, platform: str, payload: Any, **kwargs: Any) -> Any:
    body = encode(payload)
    path, headers = ENDPOINTS[platform]
    return client.post(path, content=body, headers=headers(body, **kwargs))


def sent(sandbox: Sandbox, order_id: str) -> dict[str, Any]:
    conversion: dict[str, Any] = sandbox.conversions(SHOP_ID)[order_id]
    return conversion


def refused(sandbox: Sandbox) -> list[int]:
    """Statuses of the conversions the sandbox refused (it refuses what Neuroon's contract does)."""
    return [r.status for r in sandbox.requests if r.operation == "track_conversion" and r.status >= 400]


def with_line(payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``payload`` (a Shopify order) with one more line: the third one, changed by ``fields``."""
    extra = {**payload["line_items"][2], "id": 15518907990316, **fields}
    return {**payload, "line_items": [*payload["line_items"], extra]}


# --- item 1: an odd line that is not even attributed never costs the order -------------------------

ODD_SKUS = {
    "nbsp": "GLOVES\u00a0M",
    "zero-width": "GLOVES\u200b-M",
    "tab": "GLOVES\t-M",
    "newline": "GLOVES-M\n",
    "over 256": "G" * 300,
    "control": "GLOVES\x00M",
    "line separator": "GLOVES\u2028M",
    "only invisible": "\u200b\u00a0\t",
}


@pytest.mark.parametrize("sku", ODD_SKUS.values(), ids=ODD_SKUS.keys())
def test_an_unattributed_line_with_an_odd_sku_does_not_cost_the_order(
    gateway: GatewayFactory, live_sandbox: Sandbox, sku: str
) -> None:
    client = gateway()
    response = post(client, "shopify", with_line(shopify_order(clicks=CLICKS), sku=sku))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted", "orderId": SHOPIFY_ID}
    wait_for(lambda: delivered(client, SHOPIFY_ID), "delivery")
    assert [c["productId"] for c in sent(live_sandbox, SHOPIFY_ID)["conversions"]] == [
        "SNOW-GRN-150",
        "WAX-01",
    ]
    assert refused(live_sandbox) == []
    skipped = state_of(client, SHOPIFY_ID)["skippedLines"]
    assert [s["line"] for s in skipped] == [2, 3]  # GLOVES-M (no click) and the odd line
    assert len(skipped[1]["productId"]) <= 256  # what is recorded of an id is bounded


def test_a_decimal_quantity_leaves_out_that_line_only(gateway: GatewayFactory, live_sandbox: Sandbox) -> None:
    client = gateway()
    payload = woocommerce_order(clicks={"HOODIE-M": "log_hoodie", "CAP-1": "log_cap"})
    payload["line_items"][1]["quantity"] = 1.5  # a quantity plugin selling by weight
    response = post(client, "woocommerce", payload)
    assert response.json() == {"status": "accepted", "orderId": "897"}
    wait_for(lambda: delivered(client, "897"), "delivery")
    assert sent(live_sandbox, "897")["conversions"] == [
        {"productId": "HOODIE-M", "searchLogId": "log_hoodie", "quantity": 2, "lineTotal": Decimal("15.00")}
    ]
    [skipped] = state_of(client, "897")["skippedLines"]
    assert skipped["line"] == 1
    assert skipped["productId"] == "CAP-1"
    assert "quantity must be a whole number" in skipped["reason"]
    assert "1.5" in skipped["reason"]


def test_a_whole_quantity_written_as_a_float_is_a_quantity(
    gateway: GatewayFactory, live_sandbox: Sandbox
) -> None:
    client = gateway()
    payload = woocommerce_order(clicks={"HOODIE-M": "log_hoodie"})
    payload["line_items"][0]["quantity"] = 2.0
    assert post(client, "woocommerce", payload).json()["status"] == "accepted"
    wait_for(lambda: delivered(client, "897"), "delivery")
    assert sent(live_sandbox, "897")["conversions"][0]["quantity"] == 2


LINE_PROBLEMS = {
    "quantity as text": ({"quantity": "1"}, "quantity must be a whole number"),
    "negative quantity": ({"quantity": -3}, "quantity must be a whole number"),
    "no price": ({"price": None}, "price must be a decimal amount"),
    "bad discount": ({"discount_allocations": [{"amount": "x"}]}, "discount_allocations[0].amount"),
    "sku of a wrong type": ({"sku": {"a": 1}}, "sku must be a string or an integer"),
    "price past 15 digits": ({"price": "1e20"}, "price must be a finite amount of at most 15 digits"),
    "quantity 0": ({"quantity": 0}, "quantity is 0"),
    "blank sku": ({"sku": " \u00a0"}, "the product id is blank"),
    "no sku": ({"sku": None}, "no product id"),
    "sku too long": ({"sku": "S" * (MAX_ID_LENGTH + 1)}, f"longer than {MAX_ID_LENGTH} characters"),
}


@pytest.mark.parametrize(("fields", "reason"), LINE_PROBLEMS.values(), ids=LINE_PROBLEMS.keys())
def test_whatever_is_wrong_with_an_attributed_line_leaves_out_that_line(
    gateway: GatewayFactory, live_sandbox: Sandbox, fields: dict[str, Any], reason: str
) -> None:
    client = gateway()
    payload = shopify_order(clicks={**CLICKS, "GLOVES-M": "log_gloves"})
    payload["line_items"][2].update(fields)
    response = post(client, "shopify", payload)
    assert response.json() == {"status": "accepted", "orderId": SHOPIFY_ID}, response.text
    wait_for(lambda: delivered(client, SHOPIFY_ID), "delivery")
    assert [c["productId"] for c in sent(live_sandbox, SHOPIFY_ID)["conversions"]] == [
        "SNOW-GRN-150",
        "WAX-01",
    ]
    [skipped] = state_of(client, SHOPIFY_ID)["skippedLines"]
    assert skipped["line"] == 2
    assert reason in skipped["reason"]


def test_a_line_that_is_not_an_object_is_left_out(gateway: GatewayFactory, live_sandbox: Sandbox) -> None:
    client = gateway()
    payload = shopify_order(clicks=CLICKS)
    payload["line_items"].append("a line")
    assert post(client, "shopify", payload).json()["status"] == "accepted"
    wait_for(lambda: delivered(client, SHOPIFY_ID), "delivery")
    assert state_of(client, SHOPIFY_ID)["skippedLines"][-1] == {
        "line": 3,
        "productId": None,
        "reason": "line_items[3] must be a JSON object",
    }


def test_an_order_whose_every_line_is_unusable_is_ignored_with_the_reasons(gateway: GatewayFactory) -> None:
    client = gateway()
    payload = shopify_order(clicks=CLICKS)
    payload["line_items"] = [
        {**payload["line_items"][0], "quantity": 0.5},
        {**payload["line_items"][1], "gift_card": True},
    ]
    response = post(client, "shopify", payload)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ignored"
    assert body["reason"].startswith("no line can be sent to Neuroon: line 0: line_items[0].quantity")
    assert "line 1: a gift card" in body["reason"]
    # Nothing queued; the admin API says why, for the 7 days the order is remembered as ignored.
    state = state_of(client, SHOPIFY_ID)
    assert state["state"] == "ignored"
    assert state["reason"] == body["reason"]
    assert state["platform"] == "shopify"
    assert state["ignoredAt"] is not None
    assert [(s["line"], s["productId"]) for s in state["skippedLines"]] == [
        (0, "SNOW-GRN-150"),
        (1, "WAX-01"),
    ]
    assert state["attempts"] == 0


# --- item 2: a blank click id is never sent --------------------------------------------------------

BLANK = ["", " ", "\u00a0", "\u200b", "\t\n", "\u3000"]


@pytest.mark.parametrize(
    "blank", BLANK, ids=["empty", "space", "nbsp", "zero-width", "tab-newline", "ideographic"]
)
def test_a_blank_click_id_leaves_out_its_line_and_the_rest_is_delivered(
    gateway: GatewayFactory, live_sandbox: Sandbox, blank: str
) -> None:
    client = gateway()
    order = generic_order(
        lines=[
            {"productId": "SKU-001", "quantity": 2, "lineTotal": "79.98", "searchLogId": "log_aaa"},
            {"productId": "SKU-042", "quantity": 1, "lineTotal": "119.97", "searchLogId": blank},
        ]
    )
    assert post(client, "generic", order).json() == {"status": "accepted", "orderId": "ORD-2026-0001"}
    wait_for(lambda: delivered(client, "ORD-2026-0001"), "delivery")
    assert [c["productId"] for c in sent(live_sandbox, "ORD-2026-0001")["conversions"]] == ["SKU-001"]
    assert refused(live_sandbox) == []
    [skipped] = state_of(client, "ORD-2026-0001")["skippedLines"]
    assert skipped == {
        "line": 1,
        "productId": "SKU-042",
        "reason": "its searchLogId is blank (Neuroon refuses a blank one)",
    }


def test_a_blank_click_id_falls_back_to_the_clicks_map(
    gateway: GatewayFactory, live_sandbox: Sandbox
) -> None:
    client = gateway()
    order = generic_order(
        lines=[{"productId": "SKU-042", "quantity": 1, "lineTotal": "119.97", "searchLogId": " "}],
        clicks={"SKU-042": "log_bbb"},
    )
    assert post(client, "generic", order).json()["status"] == "accepted"
    wait_for(lambda: delivered(client, "ORD-2026-0001"), "delivery")
    assert sent(live_sandbox, "ORD-2026-0001")["conversions"][0]["searchLogId"] == "log_bbb"


def test_blank_values_in_the_clicks_cookie_attribute_nothing(gateway: GatewayFactory) -> None:
    client = gateway()
    payload = shopify_order(clicks={"SNOW-GRN-150": " ", "WAX-01": "\u200b"})
    assert post(client, "shopify", payload).json() == {
        "status": "ignored",
        "reason": "no line is attributable to a search",
        "orderId": SHOPIFY_ID,
    }
    state = state_of(client, SHOPIFY_ID)
    assert (state["state"], state["reason"]) == ("ignored", "no line is attributable to a search")
    assert [s["reason"] for s in state["skippedLines"]] == ["no search click recorded for this product"] * 3


@pytest.mark.parametrize("product_id", [" ", "\u00a0\u200b", ""])
def test_a_whitespace_product_id_on_the_generic_endpoint_is_left_out(
    gateway: GatewayFactory, live_sandbox: Sandbox, product_id: str
) -> None:
    client = gateway()
    order = generic_order(
        lines=[
            {"productId": product_id, "quantity": 1, "lineTotal": "10.00", "searchLogId": "log_x"},
            {"productId": "SKU-001", "quantity": 2, "lineTotal": "79.98", "searchLogId": "log_aaa"},
        ]
    )
    assert post(client, "generic", order).json()["status"] == "accepted"
    wait_for(lambda: delivered(client, "ORD-2026-0001"), "delivery")
    assert [c["productId"] for c in sent(live_sandbox, "ORD-2026-0001")["conversions"]] == ["SKU-001"]
    assert state_of(client, "ORD-2026-0001")["skippedLines"][0]["line"] == 0


GENERIC_LINE_PROBLEMS = {
    "no lineTotal": ({"productId": "A", "quantity": 1, "searchLogId": "l"}, "data.lines[0].lineTotal"),
    "no productId": ({"quantity": 1, "lineTotal": "1", "searchLogId": "l"}, "no product id"),
    "decimal quantity": (
        {"productId": "A", "quantity": 1.5, "lineTotal": "1", "searchLogId": "l"},
        "quantity",
    ),
    "huge lineTotal": (
        {"productId": "A", "quantity": 1, "lineTotal": "1e20", "searchLogId": "l"},
        "lineTotal",
    ),
    "tiny lineTotal": (
        {"productId": "A", "quantity": 1, "lineTotal": "0.0000000000000001", "searchLogId": "l"},
        "lineTotal",
    ),
    "searchLogId of a wrong type": (
        {"productId": "A", "quantity": 1, "lineTotal": "1", "searchLogId": []},
        "searchLogId",
    ),
}


@pytest.mark.parametrize(("line", "reason"), GENERIC_LINE_PROBLEMS.values(), ids=GENERIC_LINE_PROBLEMS.keys())
def test_generic_line_problems_are_the_lines_not_the_orders(
    gateway: GatewayFactory, line: dict[str, Any], reason: str
) -> None:
    client = gateway()
    response = post(client, "generic", generic_order(lines=[line]))
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert "line 0: " in response.json()["reason"]
    assert reason in response.json()["reason"]


# --- item 3: gift cards are not product sales ------------------------------------------------------


def test_a_gift_card_line_is_not_reported_as_a_product_sale(
    gateway: GatewayFactory, live_sandbox: Sandbox
) -> None:
    client = gateway()
    payload = shopify_order(clicks={**CLICKS, "GLOVES-M": "log_gloves"})
    payload["line_items"][2]["gift_card"] = True
    assert post(client, "shopify", payload).json()["status"] == "accepted"
    wait_for(lambda: delivered(client, SHOPIFY_ID), "delivery")
    assert [c["productId"] for c in sent(live_sandbox, SHOPIFY_ID)["conversions"]] == [
        "SNOW-GRN-150",
        "WAX-01",
    ]
    [skipped] = state_of(client, SHOPIFY_ID)["skippedLines"]
    assert skipped["productId"] == "GLOVES-M"
    assert skipped["reason"].startswith("a gift card")


# --- item 4: what was paid, at payment time --------------------------------------------------------


def test_a_partially_paid_order_reports_what_was_paid(gateway: GatewayFactory, live_sandbox: Sandbox) -> None:
    client = gateway()
    payload = shopify_order(financial_status="partially_paid", clicks=CLICKS)
    payload["total_outstanding"] = "93.45"  # half of 186.90 still owed
    assert post(client, "shopify", payload).json()["status"] == "accepted"
    wait_for(lambda: delivered(client, SHOPIFY_ID), "delivery")
    conversion = sent(live_sandbox, SHOPIFY_ID)
    assert conversion["orderValue"] == Decimal("93.45")
    # Each line's share of the payment: half of 84.90 and of 100.00.
    assert [c["lineTotal"] for c in conversion["conversions"]] == [Decimal("42.45"), Decimal("50.00")]


def test_a_partially_paid_order_without_the_amount_owed_waits_for_full_payment(
    gateway: GatewayFactory,
) -> None:
    client = gateway()
    response = post(client, "shopify", shopify_order(financial_status="partially_paid", clicks=CLICKS))
    assert response.json()["status"] == "ignored"
    assert "the paid amount is unknown" in response.json()["reason"]
    # Shopify's webhook once the order is paid in full is then reported, in full.
    assert post(client, "shopify", shopify_order(clicks=CLICKS)).json()["status"] == "accepted"


@pytest.mark.parametrize("status", ["refunded", "voided"])
@pytest.mark.parametrize("topic", ["orders/paid", "orders/create"])
def test_an_order_refunded_before_it_is_reported_is_no_sale(
    gateway: GatewayFactory, live_sandbox: Sandbox, status: str, topic: str
) -> None:
    client = gateway()
    response = post(client, "shopify", shopify_order(financial_status=status, clicks=CLICKS), topic=topic)
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert SHOPIFY_ID not in live_sandbox.conversions(SHOP_ID)


def test_a_partially_refunded_order_reports_what_was_paid_at_payment_time(
    gateway: GatewayFactory, live_sandbox: Sandbox
) -> None:
    client = gateway()
    payload = shopify_order(financial_status="partially_refunded", clicks=CLICKS)
    payload["current_total_price"] = "100.00"
    assert post(client, "shopify", payload).json()["status"] == "accepted"
    wait_for(lambda: delivered(client, SHOPIFY_ID), "delivery")
    assert sent(live_sandbox, SHOPIFY_ID)["orderValue"] == Decimal("186.90")


# --- item 5: ids in one normal form on both sides --------------------------------------------------


def test_skus_are_trimmed_and_match_the_clicks(gateway: GatewayFactory, live_sandbox: Sandbox) -> None:
    client = gateway()
    payload = shopify_order(clicks={"SNOW-GRN-150": "log_snow", "WAX-01\u200b": " log_wax "})
    payload["line_items"][0]["sku"] = "  SNOW-GRN-150\u00a0"
    payload["line_items"][1]["sku"] = "\ufeffWAX-01\t"
    assert post(client, "shopify", payload).json()["status"] == "accepted"
    wait_for(lambda: delivered(client, SHOPIFY_ID), "delivery")
    assert [(c["productId"], c["searchLogId"]) for c in sent(live_sandbox, SHOPIFY_ID)["conversions"]] == [
        ("SNOW-GRN-150", "log_snow"),
        ("WAX-01", "log_wax"),
    ]


def test_a_decomposed_accent_matches_its_composed_click(
    gateway: GatewayFactory, live_sandbox: Sandbox
) -> None:
    client = gateway()
    payload = shopify_order(clicks={"CAFE\u0301-1": "log_cafe"})  # macOS writes é as e + U+0301
    payload["line_items"][0]["sku"] = "CAF\u00c9-1"
    assert post(client, "shopify", payload).json()["status"] == "accepted"
    wait_for(lambda: delivered(client, SHOPIFY_ID), "delivery")
    assert sent(live_sandbox, SHOPIFY_ID)["conversions"][0]["productId"] == "CAF\u00c9-1"


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (" SKU-1 ", "SKU-1"),
        ("SKU-1\u00a0", "SKU-1"),
        ("\u200bSKU-1\ufeff", "SKU-1"),
        ("SKU\t-1\r\n", "SKU-1"),
        ("e\u0301", "\u00e9"),
        ("A\u00a0B", "A\u00a0B"),  # inside an id a space is the merchant's
        ("\u202eSKU", "SKU"),  # a bidi override
        ("\u00a0\u200b\t", ""),
    ],
)
def test_the_identifier_normal_form(raw: str, normal: str) -> None:
    assert normalise_identifier(raw) == normal
    assert normalise_identifier(normal) == normal


# --- the sandbox refuses what Neuroon's contract refuses --------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        {"productId": "SKU-1", "searchLogId": " "},
        {"productId": "SKU-1", "searchLogId": "\u200b"},
        {"productId": " ", "searchLogId": "log_a"},
        {"productId": "SKU-1 ", "searchLogId": "log_a"},
        {"productId": "SKU\t1", "searchLogId": "log_a"},
        {"productId": "e\u0301", "searchLogId": "log_a"},
        {"productId": "SKU-1", "searchLogId": "log_a", "quantity": 1.5},
        {"productId": "SKU-1", "searchLogId": "log_a", "quantity": "2"},
        {"productId": "SKU-1", "searchLogId": "log_a", "quantity": 0},
    ],
)
def test_the_sandbox_refuses_a_conversion_neuroon_would_refuse(
    live_sandbox: Sandbox, item: dict[str, Any]
) -> None:
    with TestClient(live_sandbox.app) as neuroon:
        response = neuroon.post(
            f"/api/plugin/shops/{SHOP_ID}/track/conversion",
            json={"orderId": "O-1", "orderValue": 1, "currency": "EUR", "conversions": [item]},
            headers={"X-Shop-API-Key": CANARY_KEY, "Origin": SHOP_URL},
        )
    assert response.status_code == 400, response.text
    assert live_sandbox.conversions(SHOP_ID) == {}


# --- orders queued before these rules --------------------------------------------------------------


def test_a_dead_letter_queued_with_a_blank_click_id_is_replayed_without_that_line(
    gateway: GatewayFactory, live_sandbox: Sandbox, redis_url: str
) -> None:
    # What an earlier version queued and Neuroon refused: replayed, it must not be refused again.
    legacy = (
        b'{"orderId":"OLD-1","orderValue":30.0,"currency":"EUR","conversions":['
        b'{"productId":"SKU-1","searchLogId":"log_1","quantity":1,"lineTotal":10.0},'
        b'{"productId":"SKU-2","searchLogId":" ","quantity":1,"lineTotal":20.0},'
        b'{"productId":" SKU-3\\u00a0","searchLogId":"log_3","quantity":2,"lineTotal":0.5}]}'
    )

    async def step(store: ConversionStore) -> None:
        await store.enqueue(SHOP_ID, "OLD-1", legacy, "generic")
        await store.dead_letter(SHOP_ID, "OLD-1", None, "HTTP 400: searchLogId must not be blank")

    run(redis_url, step)
    client = gateway()
    replayed = client.post(f"/v1/admin/dead-letters/{SHOP_ID}:OLD-1/replay", headers=admin_headers())
    assert replayed.status_code == 200, replayed.text
    wait_for(lambda: delivered(client, "OLD-1"), "delivery")
    assert [(c["productId"], c["searchLogId"]) for c in sent(live_sandbox, "OLD-1")["conversions"]] == [
        ("SKU-1", "log_1"),
        ("SKU-3", "log_3"),
    ]
    assert refused(live_sandbox) == []


def test_an_order_ignored_by_an_earlier_version_still_answers_ignored(
    gateway: GatewayFactory, redis_client: redis.Redis
) -> None:
    redis_client.set(ignored_key(SHOP_ID, "OLD-2"), "a1b2c3d4e5f6a7b8", ex=60)  # its claim id alone
    state = state_of(gateway(), "OLD-2")
    assert (state["state"], state["reason"], state["skippedLines"]) == (
        "ignored",
        "no line is attributable to a search",
        [],
    )
    assert state_of(gateway(), "NEVER-SEEN")["error"] == "not_found"
