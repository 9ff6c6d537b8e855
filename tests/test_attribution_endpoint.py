"""POST /v1/attribution (the storefront's clicks for a cart) and GET /v1/attribution.js."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from app.store.conversions import attribution_key
from tests.conftest import SHOP_ID, SHOP_URL, SettingsFactory


@pytest.fixture
def client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(gateway_run_worker=False))) as test_client:
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
        create_app(make_settings(gateway_attribution_rate_limit=3, gateway_run_worker=False))
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
