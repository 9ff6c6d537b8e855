# ruff: noqa: F811 - the gateway and live_sandbox fixtures come from test_delivery, by import
"""Orders that Shopify and WooCommerce publish in their own documentation (tests/data/published,
origins in its README), through the webhook endpoints, the real queue and worker, to the sandbox.

Each is posted first exactly as published, then with the shopper's clicks added the way the
gateway's storefront script and WooCommerce snippet add them (cart attributes / order meta, or
clicks posted for the cart token), which is the only change made to them.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.sandbox import Sandbox
from tests.conftest import SHOP_ID, SHOP_URL
from tests.test_delivery import (  # noqa: F401 - fixtures, used by name
    GatewayFactory,
    delivered,
    gateway,
    live_sandbox,
    state_of,
    wait_for,
)
from tests.webhooks import clicks_cookie, shopify_headers, woocommerce_headers

PUBLISHED = Path(__file__).parent / "data" / "published"


def raw(name: str) -> bytes:
    return (PUBLISHED / name).read_bytes()


def load(name: str) -> dict[str, Any]:
    order: dict[str, Any] = json.loads(raw(name))
    return order


def post_shopify(client: TestClient, body: bytes) -> Any:
    return client.post("/v1/webhooks/shopify", content=body, headers=shopify_headers(body))


def post_woo(client: TestClient, body: bytes) -> Any:
    return client.post("/v1/webhooks/woocommerce", content=body, headers=woocommerce_headers(body))


def encode(order: dict[str, Any]) -> bytes:
    return json.dumps(order, ensure_ascii=False).encode()


def with_note_clicks(order: dict[str, Any], clicks: dict[str, str]) -> bytes:
    """As the storefront script leaves them: the cookie's value in a hidden cart attribute."""
    notes = [*order["note_attributes"], {"name": "_neuroon_clicks", "value": clicks_cookie(clicks)}]
    return encode({**order, "note_attributes": notes})


def conversion(sandbox: Sandbox, order_id: str) -> dict[str, Any]:
    sent: dict[str, Any] = sandbox.conversions(SHOP_ID)[order_id]
    return sent


AS_PUBLISHED = {
    "shopify_order_450789469_partially_refunded.json": "no line is attributable to a search",
    "shopify_order_450789469_refunded.json": "the payment was returned",
    "shopify_order_1073459976_paid_no_sku.json": "line 0: no product id",
    "shopify_order_1073459980_partially_paid.json": "no line is attributable to a search",
    "shopify_order_1073459981_paid_discounted.json": "no line is attributable to a search",
    "woocommerce_order_727.json": "line 0: the product id is blank; line 1: no search click recorded",
}


@pytest.mark.parametrize(("name", "reason"), AS_PUBLISHED.items(), ids=AS_PUBLISHED.keys())
def test_published_orders_as_published_are_answered_200_with_the_reason(
    gateway: GatewayFactory, name: str, reason: str
) -> None:
    # None of them carries clicks (nor is any refused): each is a 200 the platform will not retry.
    client = gateway(gateway_product_id_field="sku")
    post = post_woo if name.startswith("woocommerce") else post_shopify
    response = post(client, raw(name))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored"
    assert reason in response.json()["reason"]


def test_shopifys_example_order_reaches_neuroon_with_its_attributed_lines(
    gateway: GatewayFactory, live_sandbox: Sandbox
) -> None:
    client = gateway(gateway_product_id_field="sku")
    order = load("shopify_order_450789469_partially_refunded.json")
    # The storefront posted the shopper's clicks for the cart before checkout.
    posted = client.post(
        "/v1/attribution",
        json={
            "cartToken": order["cart_token"],
            "clicks": {"IPOD2008GREEN": "log_green", "IPOD2008BLACK": "log_black"},
        },
        headers={"Origin": SHOP_URL},
    )
    assert posted.status_code == 204, posted.text
    response = post_shopify(client, raw("shopify_order_450789469_partially_refunded.json"))
    assert response.json() == {"status": "accepted", "orderId": "450789469"}
    wait_for(lambda: delivered(client, "450789469"), "delivery")
    # Partially refunded after payment: what was paid at payment time is reported (README).
    assert conversion(live_sandbox, "450789469") == {
        "orderId": "450789469",
        "orderValue": Decimal("598.94"),
        "currency": "USD",
        "conversions": [
            # 199.00 less each line's share of the TENOFF discount
            {
                "productId": "IPOD2008GREEN",
                "searchLogId": "log_green",
                "quantity": 1,
                "lineTotal": Decimal("195.66"),
            },
            {
                "productId": "IPOD2008BLACK",
                "searchLogId": "log_black",
                "quantity": 1,
                "lineTotal": Decimal("195.67"),
            },
        ],
    }
    assert state_of(client, "450789469")["skippedLines"] == [
        {"line": 1, "productId": "IPOD2008RED", "reason": "no search click recorded for this product"}
    ]


def test_shopifys_partially_paid_example_reports_the_paid_amount(
    gateway: GatewayFactory, live_sandbox: Sandbox
) -> None:
    client = gateway(gateway_product_id_field="sku")
    order = load("shopify_order_1073459980_partially_paid.json")  # 199.00, 149.00 outstanding
    response = post_shopify(client, with_note_clicks(order, {"IPOD2009BLACK": "log_black"}))
    assert response.json()["status"] == "accepted"
    wait_for(lambda: delivered(client, "1073459980"), "delivery")
    sent = conversion(live_sandbox, "1073459980")
    assert sent["orderValue"] == Decimal("50.00")
    assert sent["conversions"] == [
        {
            "productId": "IPOD2009BLACK",
            "searchLogId": "log_black",
            "quantity": 1,
            "lineTotal": Decimal("50.00"),
        }
    ]


def test_shopifys_discounted_example_reports_the_line_after_its_discount(
    gateway: GatewayFactory, live_sandbox: Sandbox
) -> None:
    client = gateway(gateway_product_id_field="variant_id")
    order = load("shopify_order_1073459981_paid_discounted.json")
    response = post_shopify(client, with_note_clicks(order, {"447654529": "log_black"}))
    assert response.json()["status"] == "accepted"
    wait_for(lambda: delivered(client, "1073459981"), "delivery")
    assert conversion(live_sandbox, "1073459981") == {
        "orderId": "1073459981",
        "orderValue": Decimal("181.09"),
        "currency": "USD",
        "conversions": [
            {
                "productId": "447654529",
                "searchLogId": "log_black",
                "quantity": 1,
                "lineTotal": Decimal("181.09"),
            }
        ],
    }


def test_shopifys_refunded_example_is_not_a_sale(gateway: GatewayFactory, live_sandbox: Sandbox) -> None:
    client = gateway(gateway_product_id_field="sku")
    order = load("shopify_order_450789469_refunded.json")
    response = post_shopify(client, with_note_clicks(order, {"IPOD2008GREEN": "log_green"}))
    assert response.json()["status"] == "ignored"
    assert "450789469" not in live_sandbox.conversions(SHOP_ID)


def with_meta_clicks(order: dict[str, Any], clicks: dict[str, str]) -> bytes:
    """As the gateway's WooCommerce snippet leaves them: the cookie's value in the order's meta."""
    meta = [*order["meta_data"], {"id": 13107, "key": "neuroon_clicks", "value": clicks_cookie(clicks)}]
    return encode({**order, "meta_data": meta})


def test_woocommerces_example_order_reaches_neuroon_without_its_sku_less_line(
    gateway: GatewayFactory, live_sandbox: Sandbox
) -> None:
    client = gateway(gateway_product_id_field="sku")
    order = load("woocommerce_order_727.json")
    response = post_woo(client, with_meta_clicks(order, {"Bar3": "log_bar"}))
    assert response.json() == {"status": "accepted", "orderId": "727"}
    wait_for(lambda: delivered(client, "727"), "delivery")
    assert conversion(live_sandbox, "727") == {
        "orderId": "727",
        "orderValue": Decimal("29.35"),
        "currency": "USD",
        "conversions": [
            {"productId": "Bar3", "searchLogId": "log_bar", "quantity": 1, "lineTotal": Decimal("12.00")}
        ],
    }
    assert state_of(client, "727")["skippedLines"] == [
        {"line": 0, "productId": "", "reason": "the product id is blank"}
    ]


def test_woocommerces_example_order_by_product_id(gateway: GatewayFactory, live_sandbox: Sandbox) -> None:
    client = gateway(gateway_product_id_field="product_id")
    order = load("woocommerce_order_727.json")
    response = post_woo(client, with_meta_clicks(order, {"93": "log_93", "22": "log_22"}))
    assert response.json()["status"] == "accepted"
    wait_for(lambda: delivered(client, "727"), "delivery")
    assert conversion(live_sandbox, "727")["conversions"] == [
        {"productId": "93", "searchLogId": "log_93", "quantity": 2, "lineTotal": Decimal("6.00")},
        {"productId": "22", "searchLogId": "log_22", "quantity": 1, "lineTotal": Decimal("12.00")},
    ]


# Gift cards in WooCommerce come from extensions; their data below is what each one writes
# (app/conversions/orders.py names the keys and where they come from), added to the published order.
GIFT_CARD_META = {
    "woocommerce-gift-cards": {"id": 2101, "key": "wc_gc_giftcard_amount", "value": "6.00"},
    "pw-gift-cards": {"id": 2102, "key": "pw_gift_card_to", "value": "friend@example.com"},
}


@pytest.mark.parametrize("meta", GIFT_CARD_META.values(), ids=GIFT_CARD_META.keys())
def test_a_woocommerce_gift_card_line_is_not_reported_as_a_product_sale(
    gateway: GatewayFactory, live_sandbox: Sandbox, meta: dict[str, Any]
) -> None:
    client = gateway(gateway_product_id_field="product_id")
    order = load("woocommerce_order_727.json")
    order["line_items"][0]["meta_data"] = [meta]
    response = post_woo(client, with_meta_clicks(order, {"93": "log_93", "22": "log_22"}))
    assert response.json()["status"] == "accepted"
    wait_for(lambda: delivered(client, "727"), "delivery")
    assert [c["productId"] for c in conversion(live_sandbox, "727")["conversions"]] == ["22"]
    [skipped] = state_of(client, "727")["skippedLines"]
    assert (skipped["line"], skipped["productId"]) == (0, "93")
    assert skipped["reason"].startswith("a gift card")


def test_a_gift_card_redeemed_in_woocommerce_counts_in_the_order_value(
    gateway: GatewayFactory, live_sandbox: Sandbox
) -> None:
    """ "WooCommerce Gift Cards" takes a redeemed card off ``total`` and lists it in ``gift_cards``:
    the sale is still 29.35, as Shopify's total_price would say with a gift card as the payment."""
    client = gateway(gateway_product_id_field="sku")
    order = load("woocommerce_order_727.json") | {
        "total": "19.35",
        "gift_cards": [{"id": 7, "code": "AB12-CD34-EF56-GH78", "amount": "10.00"}],
    }
    response = post_woo(client, with_meta_clicks(order, {"Bar3": "log_bar"}))
    assert response.json()["status"] == "accepted"
    wait_for(lambda: delivered(client, "727"), "delivery")
    assert conversion(live_sandbox, "727")["orderValue"] == Decimal("29.35")
