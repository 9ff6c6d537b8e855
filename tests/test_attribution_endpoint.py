"""POST /v1/attribution (the storefront's clicks for a cart) and GET /v1/attribution.js."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from app.store.conversions import MAX_CLICKS_PER_CART, attribution_key, attribution_order_key
from tests.conftest import SHOP_ID, SHOP_URL, SettingsFactory


@pytest.fixture
def client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    """A browser on the shop's storefront: every request carries its Origin."""
    app = create_app(make_settings(gateway_run_worker=False))
    with TestClient(app, headers={"Origin": SHOP_URL}) as test_client:
        yield test_client


def stored(redis_client: redis.Redis, cart_token: str) -> dict[str, str]:
    raw = redis_client.hgetall(attribution_key(SHOP_ID, cart_token))
    return {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]


def test_clicks_in_the_body_are_kept_for_seven_days(client: TestClient, redis_client: redis.Redis) -> None:
    response = client.post(
        "/v1/attribution",
        json={"cartToken": "c1", "clicks": {"SKU-1": "log_1"}},
        headers={"Origin": SHOP_URL},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == SHOP_URL
    assert stored(redis_client, "c1") == {"SKU-1": "log_1"}
    assert 7 * 86_400 - 10 <= int(redis_client.ttl(attribution_key(SHOP_ID, "c1"))) <= 7 * 86_400


def test_later_clicks_are_merged(client: TestClient, redis_client: redis.Redis) -> None:
    client.post("/v1/attribution", json={"cartToken": "c1", "clicks": {"SKU-1": "log_1"}})
    client.post("/v1/attribution", json={"cartToken": "c1", "clicks": '{"SKU-2":"log_2"}'})
    assert stored(redis_client, "c1") == {"SKU-1": "log_1", "SKU-2": "log_2"}


def test_clicks_from_the_cookie(client: TestClient, redis_client: redis.Redis) -> None:
    cookie = quote('{"SKU-9":"log_9"}', safe="")
    response = client.post(
        "/v1/attribution",
        content=b'{"cartToken": "c2"}',
        headers={"Content-Type": "application/json", "Cookie": f"neuroon_clicks={cookie}"},
    )
    assert response.status_code == 204
    assert stored(redis_client, "c2") == {"SKU-9": "log_9"}


def test_text_plain_beacons_are_accepted(client: TestClient, redis_client: redis.Redis) -> None:
    response = client.post(
        "/v1/attribution",
        content=b'{"cartToken": "c3", "clicks": {"A": "log_a"}}',
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert response.status_code == 204
    assert stored(redis_client, "c3") == {"A": "log_a"}


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{", 400, "malformed_payload"),
        (b"[]", 400, "malformed_payload"),
        (b'{"clicks": {}}', 400, "malformed_payload"),
        (b'{"cartToken": ""}', 400, "malformed_payload"),
        (b'{"cartToken": 5}', 400, "malformed_payload"),
        (b'{"cartToken": "' + b"x" * 300 + b'"}', 400, "malformed_payload"),
        (b'{"cartToken": "a\\nb"}', 400, "malformed_payload"),
        (b'{"cartToken": "c", "clicks": [1]}', 400, "malformed_payload"),
        (b'{"cartToken": "' + b"x" * 20_000 + b'"}', 413, "payload_too_large"),
    ],
)
def test_bad_bodies_are_clear_4xx(client: TestClient, body: bytes, status: int, error: str) -> None:
    response = client.post("/v1/attribution", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert response.json()["error"] == error


def test_wrong_content_type_is_415(client: TestClient) -> None:
    response = client.post(
        "/v1/attribution",
        content=b"cartToken=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415


def test_disallowed_origin_is_refused_and_preflight_works(client: TestClient) -> None:
    refused = client.post(
        "/v1/attribution", json={"cartToken": "c"}, headers={"Origin": "https://evil.example"}
    )
    assert refused.status_code == 403
    assert refused.json()["error"] == "origin_not_allowed"
    preflight = client.options(
        "/v1/attribution",
        headers={
            "Origin": SHOP_URL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == SHOP_URL
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type"


def test_rate_limited(make_settings: SettingsFactory, redis_client: redis.Redis) -> None:
    with TestClient(
        create_app(make_settings(gateway_attribution_rate_limit=3, gateway_run_worker=False)),
        headers={"Origin": SHOP_URL},
    ) as client:
        statuses = [client.post("/v1/attribution", json={"cartToken": "c"}).status_code for _ in range(5)]
    assert statuses == [204, 204, 204, 429, 429]


def test_script_is_served_as_javascript(client: TestClient) -> None:
    response = client.get("/v1/attribution.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "neuroon_clicks" in response.text
    assert "/cart/update.js" in response.text
    assert "/v1/attribution" in response.text


# --- hostile clients (issue 10: items 2 and 3) ---------------------------------------------------


def test_repeated_posts_never_grow_a_cart_past_the_cap(client: TestClient, redis_client: redis.Redis) -> None:
    def post(round_: int) -> None:
        clicks = {f"SKU-{round_}-{i}": f"log_{round_}_{i}" for i in range(100)}
        assert client.post("/v1/attribution", json={"cartToken": "c", "clicks": clicks}).status_code == 204

    def used() -> int:
        keys = [attribution_key(SHOP_ID, "c"), attribution_order_key(SHOP_ID, "c")]
        return sum(int(redis_client.memory_usage(k, samples=0) or 0) for k in keys)

    for round_ in range(3):
        post(round_)
    after_three = used()
    for round_ in range(3, 100):
        post(round_)
    kept = stored(redis_client, "c")
    assert len(kept) == MAX_CLICKS_PER_CART
    assert kept == {f"SKU-99-{i}": f"log_99_{i}" for i in range(100)}  # the newest post
    assert redis_client.zcard(attribution_order_key(SHOP_ID, "c")) == MAX_CLICKS_PER_CART
    assert used() <= after_three * 1.1


def test_the_newest_click_of_each_product_is_kept_and_the_oldest_products_go_first(
    client: TestClient, redis_client: redis.Redis
) -> None:
    client.post("/v1/attribution", json={"cartToken": "c", "clicks": {"OLD": "log_1", "KEPT": "log_1"}})
    client.post("/v1/attribution", json={"cartToken": "c", "clicks": {"KEPT": "log_2"}})
    filler = {f"F{i}": "log_f" for i in range(MAX_CLICKS_PER_CART - 1)}
    client.post("/v1/attribution", json={"cartToken": "c", "clicks": filler})
    kept = stored(redis_client, "c")
    assert "OLD" not in kept
    assert kept["KEPT"] == "log_2"
    assert len(kept) == MAX_CLICKS_PER_CART


def test_a_post_without_origin_is_refused_and_stores_nothing(
    make_settings: SettingsFactory, redis_client: redis.Redis
) -> None:
    body = b'{"cartToken": "c", "clicks": {"A": "log_a"}}'
    with TestClient(create_app(make_settings(gateway_run_worker=False))) as script:  # no Origin
        bare = script.post("/v1/attribution", content=body, headers={"Content-Type": "text/plain"})
        empty = script.post(
            "/v1/attribution", content=body, headers={"Content-Type": "text/plain", "Origin": ""}
        )
    assert bare.status_code == 403
    assert bare.json()["error"] == "origin_required"
    assert empty.status_code == 403  # an empty Origin is not the storefront's either
    assert stored(redis_client, "c") == {}


@pytest.mark.parametrize(
    ("clicks", "kept"),
    [
        ({"SKU-1": "log_1", "SKU-2": "log 2"}, {"SKU-1": "log_1"}),  # a space in a searchLogId
        # An invisible character is normalised away (app.identifiers): kept in the form lines match.
        ({"SKU-1": "log_1", "SKU\u200b2": "log_2"}, {"SKU-1": "log_1", "SKU2": "log_2"}),
        ({"SKU-1": "log_1", "   ": "log_2"}, {"SKU-1": "log_1"}),  # a blank productId
        ({"SKU-1": "log_1", "SKU-2": "x" * 129}, {"SKU-1": "log_1"}),  # an overlong searchLogId
        ({"SKU-1": "log_1", "SKU-2": '<img src=x onerror="1">'}, {"SKU-1": "log_1"}),
        (
            {"Ünï Pro 2": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "42": "bG9nX2E="},
            {"Ünï Pro 2": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "42": "bG9nX2E="},
        ),
    ],
)
def test_only_clicks_of_a_known_shape_are_stored(
    client: TestClient, redis_client: redis.Redis, clicks: dict[str, str], kept: dict[str, str]
) -> None:
    assert client.post("/v1/attribution", json={"cartToken": "c", "clicks": clicks}).status_code == 204
    assert stored(redis_client, "c") == kept


def test_clicks_none_of_which_has_a_known_shape_are_a_400(
    client: TestClient, redis_client: redis.Redis
) -> None:
    response = client.post("/v1/attribution", json={"cartToken": "c", "clicks": {"A": "log a"}})
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_payload"
    # Readable by the storefront's script (attribution.js does not resend a refused value).
    assert response.headers["access-control-allow-origin"] == SHOP_URL
    assert stored(redis_client, "c") == {}


@pytest.mark.parametrize("cart_token", ["a b", "caf\u00e9", "\u200bc"])
def test_cart_tokens_are_visible_ascii(client: TestClient, cart_token: str) -> None:
    response = client.post("/v1/attribution", json={"cartToken": cart_token, "clicks": {"A": "log_a"}})
    assert response.status_code == 400
