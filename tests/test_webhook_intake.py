"""Order webhook intake through the real app and a real Redis: every outcome, per platform."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app.embedded_redis import free_port
from app.main import create_app
from app.store.conversions import order_key, pending_key, stream_key
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL, SettingsFactory
from tests.linear import best_time
from tests.webhooks import (
    SHOPIFY_SECRET,
    STANDARD_SECRET,
    WOO_SECRET,
    clicks_cookie,
    encode,
    generic_order,
    shopify_headers,
    shopify_order,
    standard_headers,
    woocommerce_headers,
    woocommerce_order,
)

CLICKS = {"SNOW-GRN-150": "log_snow", "WAX-01": "log_wax"}
WOO_CLICKS = {"HOODIE-M": "log_hoodie"}


def queued(redis_client: redis.Redis, order_id: str, shop_id: str = SHOP_ID) -> dict[str, Any]:
    raw = redis_client.hget(order_key(shop_id, order_id), "body")
    assert raw is not None, "the order is not queued"
    body: dict[str, Any] = orjson.loads(raw)
    return body


def stream_length(redis_client: redis.Redis, shop_id: str = SHOP_ID) -> int:
    return int(redis_client.xlen(stream_key(shop_id)))


def counter(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def post_shopify(client: TestClient, payload: Any, **kwargs: Any) -> Any:
    body = encode(payload)
    return client.post("/v1/webhooks/shopify", content=body, headers=shopify_headers(body, **kwargs))


def post_woo(client: TestClient, payload: Any, **kwargs: Any) -> Any:
    body = encode(payload)
    return client.post("/v1/webhooks/woocommerce", content=body, headers=woocommerce_headers(body, **kwargs))


def post_generic(client: TestClient, payload: Any, **kwargs: Any) -> Any:
    body = encode(payload)
    return client.post("/v1/webhooks/orders", content=body, headers=standard_headers(body, **kwargs))


# --- Shopify ------------------------------------------------------------------------------


def test_shopify_paid_order_is_accepted_with_attributed_lines_only(
    webhook_client: TestClient, redis_client: redis.Redis
) -> None:
    before = counter(
        "neuroon_gateway_webhooks_received_total", {"platform": "shopify", "outcome": "accepted"}
    )
    response = post_shopify(webhook_client, shopify_order(clicks=CLICKS))
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "orderId": "6200407294252"}
    body = queued(redis_client, "6200407294252")
    assert body == {
        "orderId": "6200407294252",
        "orderValue": 186.9,
        "currency": "EUR",
        "conversions": [
            # 99.00 - 14.10 discount allocation
            {"productId": "SNOW-GRN-150", "searchLogId": "log_snow", "quantity": 1, "lineTotal": 84.9},
            {"productId": "WAX-01", "searchLogId": "log_wax", "quantity": 2, "lineTotal": 100.0},
        ],
    }
    assert stream_length(redis_client) == 1
    after = counter("neuroon_gateway_webhooks_received_total", {"platform": "shopify", "outcome": "accepted"})
    assert after == before + 1


def test_shopify_duplicate_across_topics_queues_nothing(
    webhook_client: TestClient, redis_client: redis.Redis
) -> None:
    order = shopify_order(clicks=CLICKS)
    assert post_shopify(webhook_client, order, topic="orders/create").json()["status"] == "accepted"
    again = post_shopify(webhook_client, order, topic="orders/paid")
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "orderId": "6200407294252", "state": "accepted"}
    assert post_shopify(webhook_client, order).json()["status"] == "duplicate"  # a retry, new delivery id
    assert stream_length(redis_client) == 1
    assert redis_client.zcard(pending_key(SHOP_ID)) == 1


@pytest.mark.parametrize(
    ("topic", "status", "reason"),
    [
        ("orders/create", "pending", "not paid yet"),
        ("orders/create", "authorized", "not paid yet"),
        ("orders/updated", "paid", "not a paid-order topic"),
        ("orders/cancelled", "paid", "not a paid-order topic"),
    ],
)
def test_shopify_unpaid_orders_are_ignored(
    webhook_client: TestClient, redis_client: redis.Redis, topic: str, status: str, reason: str
) -> None:
    response = post_shopify(
        webhook_client, shopify_order(financial_status=status, clicks=CLICKS), topic=topic
    )
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert reason in response.json()["reason"]
    assert stream_length(redis_client) == 0


def test_shopify_test_orders_are_ignored_by_default(
    webhook_client: TestClient, redis_client: redis.Redis
) -> None:
    response = post_shopify(webhook_client, shopify_order(clicks=CLICKS, test=True))
    assert response.json() == {"status": "ignored", "reason": "test order", "orderId": "6200407294252"}
    assert stream_length(redis_client) == 0


def test_shopify_test_orders_are_accepted_when_configured(
    make_settings: SettingsFactory, redis_client: redis.Redis
) -> None:
    settings = make_settings(
        shopify_webhook_secret=SHOPIFY_SECRET, gateway_include_test_orders=True, gateway_run_worker=False
    )
    with TestClient(create_app(settings)) as client:
        assert post_shopify(client, shopify_order(clicks=CLICKS, test=True)).json()["status"] == "accepted"


def test_shopify_product_id_can_be_the_variant_id(
    make_settings: SettingsFactory, redis_client: redis.Redis
) -> None:
    settings = make_settings(
        shopify_webhook_secret=SHOPIFY_SECRET, gateway_product_id_field="variant_id", gateway_run_worker=False
    )
    with TestClient(create_app(settings)) as client:
        response = post_shopify(client, shopify_order(clicks={"50398373151020": "log_gloves"}))
        assert response.json()["status"] == "accepted"
    body = queued(redis_client, "6200407294252")
    assert body["conversions"] == [
        {"productId": "50398373151020", "searchLogId": "log_gloves", "quantity": 1, "lineTotal": 2.0}
    ]


@pytest.mark.parametrize("name", ["neuroon_clicks", "_neuroon_clicks"])
def test_shopify_clicks_from_url_encoded_note_attribute(
    webhook_client: TestClient, redis_client: redis.Redis, name: str
) -> None:
    value = clicks_cookie({"GLOVES-M": "log_gloves"}, url_encoded=True)
    response = post_shopify(webhook_client, shopify_order(note_value=value, attribute_name=name))
    assert response.json()["status"] == "accepted"
    assert [c["productId"] for c in queued(redis_client, "6200407294252")["conversions"]] == ["GLOVES-M"]


def test_shopify_truncated_cookie_keeps_its_complete_pairs(
    webhook_client: TestClient, redis_client: redis.Redis
) -> None:
    clicks = {"SNOW-GRN-150": "log_snow"}
    clicks |= {f"FILLER-{i:04d}": f"log_{'x' * 40}{i}" for i in range(80)}
    clicks["WAX-01"] = "log_wax"
    truncated = clicks_cookie(clicks)[:4096]  # the widget cuts the cookie at 4096 bytes
    assert '"WAX-01"' not in truncated
    response = post_shopify(webhook_client, shopify_order(note_value=truncated))
    assert response.json()["status"] == "accepted"
    assert [c["productId"] for c in queued(redis_client, "6200407294252")["conversions"]] == ["SNOW-GRN-150"]


def test_order_without_attributable_line_is_ignored_and_counted_once(
    webhook_client: TestClient, redis_client: redis.Redis
) -> None:
    labels = {"shop": SHOP_ID, "outcome": "ignored"}
    before = counter("neuroon_gateway_conversions_total", labels)
    for topic in ("orders/create", "orders/paid"):
        response = post_shopify(webhook_client, shopify_order(clicks={"OTHER": "log_x"}), topic=topic)
        assert response.json() == {
            "status": "ignored",
            "reason": "no line is attributable to a search",
            "orderId": "6200407294252",
        }
    assert counter("neuroon_gateway_conversions_total", labels) == before + 1
    assert stream_length(redis_client) == 0


def test_clicks_posted_for_the_cart_token_attribute_the_order(
    webhook_client: TestClient, redis_client: redis.Redis
) -> None:
    posted = webhook_client.post(
        "/v1/attribution",
        json={"cartToken": "cart-abc", "clicks": {"GLOVES-M": "log_gloves"}},
        headers={"Origin": SHOP_URL},
    )
    assert posted.status_code == 204
    response = post_shopify(
        webhook_client, shopify_order(clicks={"WAX-01": "log_wax"}, cart_token="cart-abc")
    )
    assert response.json()["status"] == "accepted"
    lines = queued(redis_client, "6200407294252")["conversions"]
    assert [(c["productId"], c["searchLogId"]) for c in lines] == [
        ("WAX-01", "log_wax"),
        ("GLOVES-M", "log_gloves"),
    ]


def test_payload_attribution_wins_over_posted_clicks(
    webhook_client: TestClient, redis_client: redis.Redis
) -> None:
    webhook_client.post(
        "/v1/attribution",
        json={"cartToken": "cart-abc", "clicks": {"WAX-01": "log_old"}},
        headers={"Origin": SHOP_URL},
    )
    post_shopify(webhook_client, shopify_order(clicks={"WAX-01": "log_new"}, cart_token="cart-abc"))
    assert queued(redis_client, "6200407294252")["conversions"][0]["searchLogId"] == "log_new"


def test_shopify_signature_from_a_rotated_secret_is_accepted(
    make_settings: SettingsFactory, redis_client: redis.Redis
) -> None:
    settings = make_settings(
        shopify_webhook_secret=f"new_secret_abcdef, {SHOPIFY_SECRET}", gateway_run_worker=False
    )
    with TestClient(create_app(settings)) as client:
        assert post_shopify(client, shopify_order(clicks=CLICKS)).json()["status"] == "accepted"
        assert (
            post_shopify(client, shopify_order(7, clicks=CLICKS), secret="new_secret_abcdef").status_code
            == 200
        )


@pytest.mark.parametrize(
    "signature",
    ["", "garbage!", "AAAA", "dGhpcyBpcyBub3QgdGhlIHNpZ25hdHVyZQ==", "Zm9v\n", "\u00e9t\u00e9"],
)
def test_shopify_bad_signatures_are_a_clean_401(
    webhook_client: TestClient, redis_client: redis.Redis, signature: str
) -> None:
    body = encode(shopify_order(clicks=CLICKS))
    headers = shopify_headers(body)
    headers["X-Shopify-Hmac-Sha256"] = signature
    raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
    response = webhook_client.post("/v1/webhooks/shopify", content=body, headers=raw_headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert stream_length(redis_client) == 0


def test_shopify_missing_signature_and_wrong_secret_are_401(webhook_client: TestClient) -> None:
    body = encode(shopify_order(clicks=CLICKS))
    headers = shopify_headers(body)
    del headers["X-Shopify-Hmac-Sha256"]
    assert webhook_client.post("/v1/webhooks/shopify", content=body, headers=headers).status_code == 401
    assert post_shopify(webhook_client, shopify_order(), secret="someone_elses").status_code == 401


def test_signature_is_checked_on_the_exact_bytes(webhook_client: TestClient) -> None:
    body = encode(shopify_order(clicks=CLICKS))
    headers = shopify_headers(body)
    reencoded = json.dumps(json.loads(body)).encode()  # same JSON, other bytes
    response = webhook_client.post("/v1/webhooks/shopify", content=reencoded, headers=headers)
    assert response.status_code == 401


def test_unconfigured_platform_secret_is_401(
    make_settings: SettingsFactory, redis_client: redis.Redis
) -> None:
    with TestClient(create_app(make_settings(gateway_run_worker=False))) as client:
        response = post_shopify(client, shopify_order(clicks=CLICKS))
        assert response.status_code == 401
        assert "no webhook secret" in response.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ([1, 2], "body must be a JSON object"),
        ({"financial_status": "paid"}, "id is required"),
        ({**shopify_order(), "line_items": "none"}, "line_items must be a list"),
        ({**shopify_order(), "total_price": "lots"}, "total_price must be a decimal amount"),
        ({**shopify_order(), "total_price": "NaN"}, "total_price must be a finite amount"),
        ({**shopify_order(), "currency": "euro"}, "currency must be an ISO 4217 code"),
        ({**shopify_order(), "id": {"nested": 1}}, "id must be a string or an integer"),
        ({**shopify_order(), "id": True}, "id must be a string or an integer"),
        ({**shopify_order(), "note_attributes": "x"}, "note_attributes must be a list"),
        ({**shopify_order(), "cart_token": 5}, "cart_token must be a string"),
    ],
)
def test_shopify_malformed_fields_are_a_400_naming_the_field(
    webhook_client: TestClient, redis_client: redis.Redis, payload: Any, detail: str
) -> None:
    response = post_shopify(webhook_client, payload)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_payload"
    assert detail in response.json()["detail"]
    assert stream_length(redis_client) == 0


@pytest.mark.parametrize("body", [b"", b"{", b'{"id": 1,}', b"\xff\xfe{}", b"null x"])
def test_malformed_json_is_a_400(webhook_client: TestClient, body: bytes) -> None:
    response = webhook_client.post("/v1/webhooks/shopify", content=body, headers=shopify_headers(body))
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_payload"
    assert "not valid JSON" in response.json()["detail"]


def test_missing_topic_header_is_a_400(webhook_client: TestClient) -> None:
    body = encode(shopify_order(clicks=CLICKS))
    headers = shopify_headers(body)
    del headers["X-Shopify-Topic"]
    response = webhook_client.post("/v1/webhooks/shopify", content=body, headers=headers)
    assert response.status_code == 400
    assert "X-Shopify-Topic" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/v1/webhooks/shopify", "/v1/webhooks/woocommerce", "/v1/webhooks/orders"])
def test_oversized_body_is_a_413(
    make_settings: SettingsFactory, redis_client: redis.Redis, path: str
) -> None:
    settings = make_settings(
        shopify_webhook_secret=SHOPIFY_SECRET, gateway_webhook_max_bytes=4096, gateway_run_worker=False
    )
    with TestClient(create_app(settings)) as client:
        body = b'{"pad": "' + b"x" * 5000 + b'"}'
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
            for _ in range(10):
                yield b"x" * 1000

        streamed = client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413


@pytest.mark.parametrize("path", ["/v1/webhooks/shopify", "/v1/webhooks/woocommerce", "/v1/webhooks/orders"])
@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_wrong_content_type_is_a_415(webhook_client: TestClient, path: str, content_type: str | None) -> None:
    body = encode(shopify_order(clicks=CLICKS))
    headers = {"X-Shopify-Topic": "orders/paid"}
    if content_type:
        headers["Content-Type"] = content_type
    response = webhook_client.post(path, content=body, headers=headers)
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


def test_json_with_charset_is_accepted(webhook_client: TestClient) -> None:
    body = encode(shopify_order(clicks=CLICKS))
    headers = shopify_headers(body) | {"Content-Type": "application/json; charset=utf-8"}
    assert (
        webhook_client.post("/v1/webhooks/shopify", content=body, headers=headers).json()["status"]
        == "accepted"
    )


def _shops_file(tmp_path: Path) -> Path:
    path = tmp_path / "shops.toml"
    path.write_text(
        f"""
[[shops]]
id = "shop_one"
api_key = "{CANARY_KEY}"
shop_url = "https://one.example"
platform_domain = "one.myshopify.com"
shopify_webhook_secrets = ["{SHOPIFY_SECRET}"]
woocommerce_webhook_secrets = ["{WOO_SECRET}"]
webhook_secrets = ["{STANDARD_SECRET}"]

[[shops]]
id = "shop_two"
api_key = "sk_{"b" * 32}"
shop_url = "https://two.example"
platform_domain = "https://two.example/"
shopify_webhook_secrets = ["two_shopify_secret"]
woocommerce_webhook_secrets = ["two_woo_secret"]
webhook_secrets = ["whsec_dHdvX3N0YW5kYXJkX3NlY3JldA=="]
"""
    )
    return path


@pytest.fixture
def multi_client(make_settings: SettingsFactory, tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        neuroon_shop_id=None,
        neuroon_api_key=None,
        neuroon_shop_url=None,
        gateway_shops_file=_shops_file(tmp_path),
        gateway_run_worker=False,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_multi_shop_resolves_the_shop_per_platform(
    multi_client: TestClient, redis_client: redis.Redis
) -> None:
    assert (
        post_shopify(multi_client, shopify_order(1, clicks=CLICKS), domain="one.myshopify.com").status_code
        == 200
    )
    assert (
        post_woo(
            multi_client,
            woocommerce_order(2, clicks=WOO_CLICKS),
            secret="two_woo_secret",
            source="https://two.example/",
        ).json()["status"]
        == "accepted"
    )
    generic = post_generic(
        multi_client, generic_order("G-3", shop_id="shop_two"), secret="whsec_dHdvX3N0YW5kYXJkX3NlY3JldA=="
    )
    assert generic.json()["status"] == "accepted"
    assert queued(redis_client, "1", "shop_one")["orderId"] == "1"
    assert queued(redis_client, "2", "shop_two")["orderId"] == "2"
    assert queued(redis_client, "G-3", "shop_two")["orderId"] == "G-3"


def test_multi_shop_unknown_domain_is_404_and_other_shops_secret_is_401(multi_client: TestClient) -> None:
    unknown = post_shopify(multi_client, shopify_order(clicks=CLICKS), domain="stranger.myshopify.com")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_shop"
    crossed = post_shopify(
        multi_client, shopify_order(clicks=CLICKS), domain="one.myshopify.com", secret="two_shopify_secret"
    )
    assert crossed.status_code == 401


def test_multi_shop_generic_body_must_be_signed_by_the_named_shop(multi_client: TestClient) -> None:
    # Signed with shop_one's secret but claiming to be shop_two: only shop_two's secret is tried.
    response = post_generic(multi_client, generic_order(shop_id="shop_two"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    unknown = post_generic(multi_client, generic_order(shop_id="shop_nobody"))
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_shop"


def test_multi_shop_generic_body_without_shop_id_names_the_url_to_use(multi_client: TestClient) -> None:
    missing = post_generic(multi_client, generic_order(shop_id=None))
    assert missing.status_code == 400
    assert "/v1/webhooks/orders/{shopId}" in missing.json()["detail"]


def post_generic_to(client: TestClient, shop_id: str, payload: Any, **kwargs: Any) -> Any:
    body = encode(payload)
    return client.post(
        f"/v1/webhooks/orders/{shop_id}", content=body, headers=standard_headers(body, **kwargs)
    )


def test_generic_webhook_of_one_shop(multi_client: TestClient, redis_client: redis.Redis) -> None:
    two = "whsec_dHdvX3N0YW5kYXJkX3NlY3JldA=="
    accepted = post_generic_to(multi_client, "shop_two", generic_order("G-9", shop_id=None), secret=two)
    assert accepted.json()["status"] == "accepted"
    assert queued(redis_client, "G-9", "shop_two")["orderId"] == "G-9"
    same = post_generic_to(multi_client, "shop_two", generic_order("G-10", shop_id="shop_two"), secret=two)
    assert same.json()["status"] == "accepted"
    crossed = post_generic_to(multi_client, "shop_two", generic_order("G-11", shop_id="shop_one"), secret=two)
    assert crossed.status_code == 404  # the body names another shop than the URL
    wrong_secret = post_generic_to(multi_client, "shop_two", generic_order("G-12", shop_id=None))
    assert wrong_secret.status_code == 401
    unknown = post_generic_to(multi_client, "shop_nobody", generic_order("G-13", shop_id=None))
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_shop"


def test_an_unsigned_body_costs_one_shops_hmac_however_many_shops(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """Issue 10 item 9: 50 shops made an unsigned 2 MiB post compute 50 HMACs (157 ms)."""

    def client_with(shops: int) -> TestClient:
        path = tmp_path / f"shops-{shops}.toml"
        path.write_text(
            "".join(
                f'[[shops]]\nid = "shop_{i}"\napi_key = "sk_{i:032x}"\n'
                f'webhook_secrets = ["whsec_{base64.b64encode(bytes([i]) * 32).decode()}"]\n'
                for i in range(shops)
            )
        )
        settings = make_settings(
            neuroon_shop_id=None,
            neuroon_api_key=None,
            neuroon_shop_url=None,
            gateway_shops_file=path,
            gateway_run_worker=False,
        )
        return TestClient(create_app(settings))

    body = encode(generic_order(shop_id="shop_1") | {"padding": "x" * (2 * 1024 * 1024 - 400)})
    headers = standard_headers(body, secret="whsec_" + base64.b64encode(b"\0" * 32).decode())

    def unsigned_posts(client: TestClient) -> Callable[[], object]:
        def post() -> None:
            assert client.post("/v1/webhooks/orders", content=body, headers=headers).status_code == 401

        return post

    with client_with(2) as two, client_with(50) as fifty:
        ratio = best_time(unsigned_posts(fifty)) / best_time(unsigned_posts(two))
    assert ratio < 3, f"50 shops cost {ratio:.1f}x what 2 shops cost"


# --- WooCommerce --------------------------------------------------------------------------


def test_woocommerce_creation_ping_gets_200(webhook_client: TestClient, redis_client: redis.Redis) -> None:
    response = webhook_client.post(
        "/v1/webhooks/woocommerce",
        content=b"webhook_id=12",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert stream_length(redis_client) == 0


def test_woocommerce_other_form_bodies_are_415(webhook_client: TestClient) -> None:
    response = webhook_client.post(
        "/v1/webhooks/woocommerce",
        content=b"webhook_id=12&x=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415


def test_woocommerce_processing_order_is_accepted(
    webhook_client: TestClient, redis_client: redis.Redis
) -> None:
    response = post_woo(webhook_client, woocommerce_order(clicks=WOO_CLICKS), topic="order.created")
    assert response.json() == {"status": "accepted", "orderId": "897"}
    assert queued(redis_client, "897") == {
        "orderId": "897",
        "orderValue": 28.44,
        "currency": "USD",
        "conversions": [
            {"productId": "HOODIE-M", "searchLogId": "log_hoodie", "quantity": 2, "lineTotal": 15.0}
        ],
    }


def test_woocommerce_status_updates_are_deduplicated(
    webhook_client: TestClient, redis_client: redis.Redis
) -> None:
    assert (
        post_woo(webhook_client, woocommerce_order(status="pending", clicks=WOO_CLICKS)).json()["status"]
        == "ignored"
    )
    assert (
        post_woo(webhook_client, woocommerce_order(status="processing", clicks=WOO_CLICKS)).json()["status"]
        == "accepted"
    )
    assert (
        post_woo(webhook_client, woocommerce_order(status="completed", clicks=WOO_CLICKS)).json()["status"]
        == "duplicate"
    )
    assert stream_length(redis_client) == 1


@pytest.mark.parametrize(
    "status", ["pending", "on-hold", "cancelled", "refunded", "failed", "checkout-draft"]
)
def test_woocommerce_unpaid_statuses_are_ignored(webhook_client: TestClient, status: str) -> None:
    response = post_woo(webhook_client, woocommerce_order(status=status, clicks=WOO_CLICKS))
    assert response.json()["status"] == "ignored"
    assert status in response.json()["reason"]


def test_woocommerce_other_topics_are_ignored(webhook_client: TestClient) -> None:
    response = post_woo(webhook_client, woocommerce_order(clicks=WOO_CLICKS), topic="product.updated")
    assert response.json()["status"] == "ignored"


def test_woocommerce_meta_value_may_be_a_decoded_object(
    webhook_client: TestClient, redis_client: redis.Redis
) -> None:
    order = woocommerce_order(meta_value={"CAP-1": "log_cap"}, meta_key="_neuroon_clicks")
    assert post_woo(webhook_client, order).json()["status"] == "accepted"
    assert queued(redis_client, "897")["conversions"][0]["productId"] == "CAP-1"


def test_woocommerce_variant_ids_fall_back_to_the_product_id(
    make_settings: SettingsFactory, redis_client: redis.Redis
) -> None:
    settings = make_settings(
        woocommerce_webhook_secret=WOO_SECRET, gateway_product_id_field="variant_id", gateway_run_worker=False
    )
    with TestClient(create_app(settings)) as client:
        post_woo(client, woocommerce_order(clicks={"95": "log_var", "40": "log_simple"}))
    assert [c["productId"] for c in queued(redis_client, "897")["conversions"]] == ["95", "40"]


def test_woocommerce_cart_hash_joins_posted_clicks(
    webhook_client: TestClient, redis_client: redis.Redis
) -> None:
    webhook_client.post(
        "/v1/attribution",
        json={"cartToken": "9ef751eb3a1c4b7e8b51e0a2c0f44b9a", "clicks": {"CAP-1": "log_cap"}},
        headers={"Origin": SHOP_URL},
    )
    assert post_woo(webhook_client, woocommerce_order()).json()["status"] == "accepted"
    assert queued(redis_client, "897")["conversions"][0]["searchLogId"] == "log_cap"


def test_woocommerce_bad_signature_is_401(webhook_client: TestClient) -> None:
    response = post_woo(webhook_client, woocommerce_order(clicks=WOO_CLICKS), secret="wrong")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ({**woocommerce_order(), "total": None}, "total must be a decimal amount"),
        ({**woocommerce_order(), "meta_data": ["x"]}, "meta_data[0] must be a JSON object"),
        ({**woocommerce_order(), "id": None}, "id is required"),
    ],
)
def test_woocommerce_malformed_fields_are_400(webhook_client: TestClient, payload: Any, detail: str) -> None:
    response = post_woo(webhook_client, payload)
    assert response.status_code == 400
    assert detail in response.json()["detail"]


# --- Generic (Standard Webhooks) -----------------------------------------------------------


def test_generic_order_uses_line_ids_then_the_clicks_map(
    webhook_client: TestClient, redis_client: redis.Redis
) -> None:
    response = post_generic(
        webhook_client, generic_order(clicks={"SKU-042": "log_bbb", "SKU-001": "log_ignored"})
    )
    assert response.json() == {"status": "accepted", "orderId": "ORD-2026-0001"}
    body = queued(redis_client, "ORD-2026-0001")
    assert body["conversions"] == [
        {"productId": "SKU-001", "searchLogId": "log_aaa", "quantity": 2, "lineTotal": 79.98},
        {"productId": "SKU-042", "searchLogId": "log_bbb", "quantity": 1, "lineTotal": 119.97},
    ]
    assert Decimal(str(body["orderValue"])) == Decimal("199.95")


def test_generic_duplicate_with_a_new_webhook_id_is_duplicate(webhook_client: TestClient) -> None:
    assert post_generic(webhook_client, generic_order()).json()["status"] == "accepted"
    assert post_generic(webhook_client, generic_order()).json()["status"] == "duplicate"


def test_generic_other_types_are_ignored(webhook_client: TestClient) -> None:
    response = post_generic(webhook_client, generic_order(event_type="order.refunded"))
    assert response.json()["status"] == "ignored"


def test_generic_stale_or_future_timestamp_is_401(webhook_client: TestClient) -> None:
    for ts in (int(time.time()) - 3600, int(time.time()) + 3600):
        response = post_generic(webhook_client, generic_order(), timestamp=ts)
        assert response.status_code == 401
        assert "tolerance" in response.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {"webhook-signature": "v1"},
        {"webhook-signature": "v1,"},
        {"webhook-signature": "nonsense"},
        {"webhook-signature": "v1,@@@@ v2,abc"},
        {"webhook-timestamp": "soon"},
        {"webhook-timestamp": "1e9"},
        {"webhook-id": ""},
    ],
)
def test_generic_malformed_signature_headers_are_a_clean_401(
    webhook_client: TestClient, headers: dict[str, str]
) -> None:
    body = encode(generic_order())
    response = webhook_client.post(
        "/v1/webhooks/orders", content=body, headers=standard_headers(body) | headers
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"


def test_generic_shop_id_of_another_shop_is_404(webhook_client: TestClient) -> None:
    response = post_generic(webhook_client, generic_order(shop_id="shop_other"))
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ({"data": {}}, "type is required"),
        ({"type": "order.paid"}, "data must be a JSON object"),
        (generic_order(clicks={"A": 1}), "data.clicks must map productId"),  # type: ignore[dict-item]
        ({**generic_order(), "data": {**generic_order()["data"], "orderId": ""}}, "data.orderId is required"),
        ({**generic_order(), "data": {**generic_order()["data"], "orderId": "a\nb"}}, "data.orderId must be"),
        ({**generic_order(), "data": {**generic_order()["data"], "orderValue": "1e400"}}, "data.orderValue"),
    ],
)
def test_generic_malformed_fields_are_400(webhook_client: TestClient, payload: Any, detail: str) -> None:
    response = post_generic(webhook_client, payload)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_payload"
    assert detail in response.json()["detail"]


# --- secrets ------------------------------------------------------------------------------


def test_webhook_secrets_never_reach_responses_or_logs(
    webhook_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts = []
    for response in (
        post_shopify(webhook_client, shopify_order(clicks=CLICKS)),
        post_shopify(webhook_client, shopify_order(), secret="wrong"),
        post_woo(webhook_client, woocommerce_order(), secret="wrong"),
        post_generic(webhook_client, generic_order(), secret="whsec_" + "A" * 44),
        webhook_client.get("/metrics"),
    ):
        texts.append(response.text)
    texts.append(caplog.text)
    for secret in (
        SHOPIFY_SECRET,
        WOO_SECRET,
        STANDARD_SECRET,
        STANDARD_SECRET.removeprefix("whsec_"),
        CANARY_KEY,
    ):
        assert all(secret not in text for text in texts)


def test_redis_down_is_a_503_that_the_platform_retries(make_settings: SettingsFactory) -> None:
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        shopify_webhook_secret=SHOPIFY_SECRET,
        gateway_run_worker=False,
    )
    with TestClient(create_app(settings)) as client:
        response = post_shopify(client, shopify_order(clicks=CLICKS))
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        posted = client.post(
            "/v1/attribution", json={"cartToken": "c", "clicks": {"A": "log"}}, headers={"Origin": SHOP_URL}
        )
        assert posted.status_code == 503
