"""GET /v1/widget-token through the real app and a real Redis."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.neuroon.signing import verify_widget_token
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL, SettingsFactory


def test_token_body_follows_the_contract_and_verifies_with_the_key(client: TestClient) -> None:
    response = client.get("/v1/widget-token")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "shopId", "issuedAt", "expiresAt", "refreshAfter"}
    assert body["shopId"] == SHOP_ID
    assert body["expiresAt"] == body["issuedAt"] + 86_400
    assert body["refreshAfter"] == body["expiresAt"] - 300
    assert abs(body["issuedAt"] - time.time()) < 5
    assert verify_widget_token(body["token"], SHOP_ID, CANARY_KEY, now=time.time()) == body["issuedAt"]


def test_token_headers_allow_private_caching_until_refresh(client: TestClient) -> None:
    response = client.get("/v1/widget-token")
    body = response.json()
    max_age = int(response.headers["cache-control"].removeprefix("private, max-age="))
    assert response.headers["cache-control"].startswith("private, max-age=")
    assert abs(max_age - (body["refreshAfter"] - time.time())) <= 2
    assert response.headers["vary"] == "Origin"
    assert response.headers["content-type"] == "application/json"


def test_every_request_gets_the_same_token_until_refresh(client: TestClient) -> None:
    tokens = {client.get("/v1/widget-token").json()["token"] for _ in range(20)}
    assert len(tokens) == 1


def test_allowed_origin_gets_cors_header(client: TestClient) -> None:
    response = client.get("/v1/widget-token", headers={"Origin": SHOP_URL})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == SHOP_URL


def test_extra_cors_origin_is_allowed(make_settings: SettingsFactory) -> None:
    settings = make_settings(gateway_cors_origins="https://staging.shop.example, http://localhost:3000")
    with TestClient(create_app(settings)) as client:
        for origin in ("https://staging.shop.example", "http://localhost:3000"):
            response = client.get("/v1/widget-token", headers={"Origin": origin})
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == origin


def test_disallowed_origin_is_refused(client: TestClient) -> None:
    for origin in ("https://evil.example", "http://shop.example", "https://shop.example:8443", "null"):
        response = client.get("/v1/widget-token", headers={"Origin": origin})
        assert response.status_code == 403
        assert response.json()["error"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in response.headers


def test_request_without_origin_is_served(client: TestClient) -> None:
    assert client.get("/v1/widget-token").status_code == 200


def test_preflight_from_allowed_origin(client: TestClient) -> None:
    response = client.options(
        "/v1/widget-token",
        headers={"Origin": SHOP_URL, "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == SHOP_URL
    assert "GET" in response.headers["access-control-allow-methods"]
    assert response.headers["vary"] == "Origin"


def test_preflight_from_disallowed_origin_is_refused(client: TestClient) -> None:
    response = client.options(
        "/v1/widget-token",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 403
    assert response.json()["error"] == "origin_not_allowed"


def test_preflight_without_origin_is_a_clear_400(client: TestClient) -> None:
    response = client.options("/v1/widget-token")
    assert response.status_code == 400
    assert response.json()["error"] == "not_a_preflight"


def _two_shops_file(tmp_path: Path) -> Path:
    path = tmp_path / "shops.toml"
    path.write_text(
        f"""
[[shops]]
id = "shop_one"
api_key = "{CANARY_KEY}"
shop_url = "https://one.example"

[[shops]]
id = "shop_two"
api_key = "sk_{"b" * 32}"
shop_url = "https://two.example"
cors_origins = ["https://staging.two.example"]
"""
    )
    return path


def test_multi_shop_picks_the_shop_by_id_or_origin(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings(
        neuroon_shop_id=None,
        neuroon_api_key=None,
        neuroon_shop_url=None,
        gateway_shops_file=_two_shops_file(tmp_path),
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/widget-token?shopId=shop_two").json()["shopId"] == "shop_two"
        by_origin = client.get("/v1/widget-token", headers={"Origin": "https://staging.two.example"})
        assert by_origin.json()["shopId"] == "shop_two"
        assert (
            client.get("/v1/widget-token", headers={"Origin": "https://one.example"}).json()["shopId"]
            == "shop_one"
        )
        missing = client.get("/v1/widget-token")
        assert missing.status_code == 400
        assert missing.json()["error"] == "shop_required"
        unknown = client.get("/v1/widget-token?shopId=shop_nope")
        assert unknown.status_code == 404
        assert unknown.json()["error"] == "unknown_shop"
        crossed = client.get("/v1/widget-token?shopId=shop_one", headers={"Origin": "https://two.example"})
        assert crossed.status_code == 403


def test_overlong_shop_id_is_a_400(client: TestClient) -> None:
    response = client.get("/v1/widget-token", params={"shopId": "x" * 200})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "shopId" in response.json()["detail"]


def test_rate_limit_answers_429_with_retry_after(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(gateway_token_rate_limit=5))) as client:
        statuses = [client.get("/v1/widget-token").status_code for _ in range(7)]
        assert statuses == [200] * 5 + [429] * 2
        refused = client.get("/v1/widget-token")
        assert refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_rate_limit_zero_turns_it_off(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(gateway_token_rate_limit=0))) as client:
        assert all(client.get("/v1/widget-token").status_code == 200 for _ in range(30))


def test_forwarded_for_is_believed_only_from_trusted_proxies(make_settings: SettingsFactory) -> None:
    # TestClient's peer address is "testclient", which is not an IP: never a trusted proxy.
    with TestClient(create_app(make_settings(gateway_token_rate_limit=2))) as client:
        for i in range(3):
            response = client.get("/v1/widget-token", headers={"X-Forwarded-For": f"203.0.113.{i}"})
        assert response.status_code == 429  # spoofed addresses do not dodge the limit


def test_rotated_key_file_is_used_while_running(make_settings: SettingsFactory, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(CANARY_KEY)
    new_key = "sk_" + "5a" * 16
    settings = make_settings(
        neuroon_api_key=None, neuroon_api_key_file=key_file, gateway_key_reload_interval=0.05
    )
    with TestClient(create_app(settings)) as client:
        old = client.get("/v1/widget-token").json()
        verify_widget_token(old["token"], SHOP_ID, CANARY_KEY, now=time.time())
        key_file.write_text(new_key)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            token = client.get("/v1/widget-token").json()["token"]
            if token != old["token"]:
                break
            time.sleep(0.05)
        verify_widget_token(token, SHOP_ID, new_key, now=time.time())
        for _ in range(5):
            assert client.get("/v1/widget-token").json()["token"] == token
