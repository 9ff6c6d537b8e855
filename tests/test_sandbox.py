"""The sandbox on its own, spoken to in raw HTTP: authentication, validation of every malformed input
(always a clear 4xx, never a 5xx), the documented limits and bodies, and its controls."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.neuroon.endpoints import Limit
from app.neuroon.signing import sign_widget_token
from app.sandbox import Sandbox, SandboxShop, create_sandbox
from tests.conftest import CANARY_KEY, OTHER_KEY, SHOP_ID, SHOP_URL, FakeClock

BASE = f"/api/plugin/shops/{SHOP_ID}"
ENVELOPE_KEYS = {"timestamp", "status", "error", "message", "path"}


@pytest.fixture(autouse=True)
def no_sandbox_crash(sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a test sends, the sandbox never answers 500 (its catch-all for its own bugs)."""
    yield
    assert 500 not in sandbox.statuses()
    assert not [r for r in caplog.records if r.getMessage() == "sandbox_handler_failed"]


@pytest.fixture
async def raw(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sandbox.app)
    async with httpx.AsyncClient(base_url="http://sandbox", transport=transport) as client:
        client.headers["X-Shop-API-Key"] = CANARY_KEY
        yield client


def product(external_id: str = "SKU-1", **fields: Any) -> dict[str, Any]:
    return {
        "externalId": external_id,
        "name": "Name",
        "price": 10.5,
        "url": "https://shop.example/p",
    } | fields


def sync_body(*products: dict[str, Any], sync_type: str = "INCREMENTAL") -> dict[str, Any]:
    return {"syncType": sync_type, "products": list(products) or [product()]}


def assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    body: dict[str, Any] = response.json()
    assert set(body) == ENVELOPE_KEYS
    assert body["status"] == status
    assert body["path"] == response.request.url.path
    assert not body["timestamp"].endswith("Z")  # LocalDateTime: no zone
    assert "+" not in body["timestamp"]
    return body


# --- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "status"),
    [
        (None, 401),
        ("", 401),
        ("sk_short", 401),
        ("pk_" + "a" * 32, 401),
        (f"sk_{'9' * 32}", 401),
        (OTHER_KEY, 403),
    ],
)
async def test_bad_keys(raw: httpx.AsyncClient, key: str | None, status: int) -> None:
    headers = {} if key is None else {"X-Shop-API-Key": key}
    raw.headers.pop("X-Shop-API-Key")
    assert_envelope(await raw.get(f"{BASE}/verification-data", headers=headers), status)


@pytest.mark.parametrize("header", ["Origin", "Referer"])
@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("https://shop.example", True),
        ("http://www.shop.example/", True),
        ("https://SHOP.example/checkout?x=1", True),
        ("https://evil.example", False),
        ("https://shop.example.evil.example", False),
        ("https://shop.example:8443", False),
        ("null", False),
    ],
)
async def test_origin_and_referer_are_normalised_and_compared(
    raw: httpx.AsyncClient, header: str, value: str, allowed: bool
) -> None:
    response = await raw.get("/api/plugin/shops/me", headers={header: value})
    if allowed:
        assert response.status_code == 200
    else:
        body = assert_envelope(response, 403)
        assert body["message"] == "Origin mismatch — API Key cannot be used from this domain"


async def test_no_origin_is_allowed(raw: httpx.AsyncClient) -> None:
    assert (await raw.get("/api/plugin/shops/me")).json()["id"] == SHOP_ID


# --- products: validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"syncType": "INCREMENTAL", "products": []}, "products: List should have at least 1 item"),
        ({"syncType": "INCREMENTAL", "products": [product(str(i)) for i in range(501)]}, "at most 500"),
        ({"syncType": "SOMETIMES", "products": [product()]}, "syncType"),
        ({"products": [product()]}, "syncType: Field required"),
        ({"syncType": "FULL"}, "products: Field required"),
        (sync_body(product(name="x" * 513)), "products[0].name"),
        (sync_body(product(name="   ")), "products[0].name: must not be blank"),
        (sync_body(product(description="d" * 5001)), "products[0].description"),
        (sync_body(product(price=-0.01)), "products[0].price"),
        (sync_body(product(price="abc")), "products[0].price"),
        (sync_body(product(salePrice=-1)), "products[0].salePrice"),
        (sync_body(product(rating=5.5)), "products[0].rating"),
        (sync_body(product(reviewCount=-1)), "products[0].reviewCount"),
        (sync_body(product(currency="eur")), "products[0].currency"),
        (sync_body({"name": "n", "price": 1, "url": "u"}), "products[0].externalId: Field required"),
        (sync_body(product(url="")), "products[0].url"),
        (sync_body(product(categories="shoes")), "products[0].categories"),
        (sync_body(product(attributes={"size": 42})), "products[0].attributes.size"),
        ({"syncType": "INCREMENTAL", "products": "all"}, "products"),
        (["not", "an", "object"], "body"),
        ("just a string", "body"),
    ],
)
async def test_invalid_sync_is_400_naming_the_field(raw: httpx.AsyncClient, body: Any, fragment: str) -> None:
    response = await raw.post(f"{BASE}/products/sync", json=body)
    assert fragment in assert_envelope(response, 400)["message"]


async def test_five_hundred_products_are_accepted(raw: httpx.AsyncClient, sandbox: Sandbox) -> None:
    response = await raw.post(f"{BASE}/products/sync", json=sync_body(*(product(str(i)) for i in range(500))))
    assert response.status_code == 200
    assert response.json()["synced"] == 500


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b'{"syncType": "FULL", "products": [\xff]}', {"Content-Type": "application/json"}, 400),
        (b"\xff\xfe", {"Content-Type": "application/json"}, 400),
        (b"", {"Content-Type": "application/json"}, 400),
        (b"null", {"Content-Type": "application/json"}, 400),
        (b'{"syncType":"FULL","products":[]}', {"Content-Type": "text/plain"}, 415),
        (b'{"syncType":"FULL","products":[]}', {}, 415),
    ],
)
async def test_malformed_bodies_are_clear_4xx(
    raw: httpx.AsyncClient, content: bytes, headers: dict[str, str], status: int
) -> None:
    response = await raw.post(f"{BASE}/products/sync", content=content, headers=headers)
    assert_envelope(response, status)


async def test_oversized_body_is_413(raw: httpx.AsyncClient) -> None:
    response = await raw.post(
        f"{BASE}/products/sync",
        content=b" " * (5 * 1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_envelope(response, 413)


async def test_duplicate_external_id_in_full_sync_is_409(raw: httpx.AsyncClient) -> None:
    response = await raw.post(
        f"{BASE}/products/sync", json=sync_body(product("A"), product("A"), sync_type="FULL")
    )
    assert_envelope(response, 409)


async def test_sync_answer_counts_and_quota(raw: httpx.AsyncClient) -> None:
    body = (await raw.post(f"{BASE}/products/sync", json=sync_body(product("A"), product("B")))).json()
    assert body["synced"] == 2
    assert body["productsCount"] == 2
    assert body["remainingProducts"] == 100_000 - 2


# --- products: reading and deleting ----------------------------------------------------------------


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=ten", "size=-1", "cursor=%%%", "cursor=_w"])
async def test_bad_listing_parameters_are_400(raw: httpx.AsyncClient, query: str) -> None:
    assert_envelope(await raw.get(f"{BASE}/products?{query}"), 400)


async def test_cursor_survives_deletions_between_pages(raw: httpx.AsyncClient) -> None:
    await raw.post(f"{BASE}/products/sync", json=sync_body(*(product(f"P{i}") for i in range(6))))
    first = (await raw.get(f"{BASE}/products?limit=3")).json()
    assert [p["externalId"] for p in first["products"]] == ["P0", "P1", "P2"]
    await raw.delete(f"{BASE}/products/P3")
    rest = (await raw.get(f"{BASE}/products", params={"limit": 3, "cursor": first["nextCursor"]})).json()
    assert [p["externalId"] for p in rest["products"]] == ["P4", "P5"]
    assert rest["nextCursor"] is None


async def test_get_missing_product_is_404_and_delete_is_204_twice(raw: httpx.AsyncClient) -> None:
    assert_envelope(await raw.get(f"{BASE}/products/none"), 404)
    for _ in range(2):
        response = await raw.delete(f"{BASE}/products/none")
        assert response.status_code == 204
        assert response.content == b""


# --- verification, shop info -----------------------------------------------------------------------


async def test_both_verify_paths_and_the_second_is_409(raw: httpx.AsyncClient) -> None:
    first = await raw.post("/api/plugin/shops/verify", json={"domain": "https://www.shop.example/"})
    assert first.status_code == 200
    assert set(first.json()) == {"shopId", "verificationCode", "domain", "name"}
    assert first.json()["shopId"] == SHOP_ID
    assert_envelope(await raw.post(f"{BASE}/verify", json={"domain": SHOP_URL}), 409)
    assert (await raw.delete(f"{BASE}/verify")).status_code == 204
    assert (await raw.post(f"{BASE}/verify")).status_code == 200  # no body: the registered URL


@pytest.mark.parametrize(
    ("content", "status"),
    [(b"{", 400), (b'{"domain": 5}', 400), (b'{"domain": "https://other.example"}', 403), (b"[]", 400)],
)
async def test_bad_verify_bodies(raw: httpx.AsyncClient, content: bytes, status: int) -> None:
    response = await raw.post(f"{BASE}/verify", content=content, headers={"Content-Type": "application/json"})
    assert_envelope(response, status)


async def test_me_has_plan_quotas(raw: httpx.AsyncClient) -> None:
    body = (await raw.get("/api/plugin/shops/me")).json()
    assert {"maxProducts", "maxSearchesPerMonth"} <= set(body)


# --- conversions -----------------------------------------------------------------------------------


def order(order_id: str = "ORD-1", **item: Any) -> dict[str, Any]:
    line = {"productId": "SKU-1", "searchLogId": "log_a", "quantity": 1, "lineTotal": 10.0} | item
    return {"orderId": order_id, "orderValue": 10.0, "currency": "EUR", "conversions": [line]}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (order(searchLogId=""), "conversions[0].searchLogId: must not be blank"),
        (order(searchLogId="  "), "conversions[0].searchLogId: must not be blank"),
        (order(searchLogId=None), "conversions[0].searchLogId"),
        ({k: v for k, v in order().items() if k != "conversions"}, "conversions: Field required"),
        (order() | {"conversions": []}, "conversions"),
        (order(order_id=" "), "orderId: must not be blank"),
        (order(quantity="two"), "conversions[0].quantity"),
        (order() | {"orderValue": "NaN"}, "orderValue"),
        (order() | {"currency": "euro"}, "currency"),
    ],
)
async def test_invalid_conversion_is_400(raw: httpx.AsyncClient, body: dict[str, Any], fragment: str) -> None:
    response = await raw.post(f"{BASE}/track/conversion", json=body)
    assert fragment in assert_envelope(response, 400)["message"]


async def test_resent_order_is_accepted_and_not_counted_twice(
    raw: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    first = await raw.post(f"{BASE}/track/conversion", json=order())
    again = await raw.post(f"{BASE}/track/conversion", json=order())
    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert len(sandbox.conversions(SHOP_ID)) == 1
    recorded = (await raw.get(f"/_sandbox/shops/{SHOP_ID}/conversions")).json()
    assert recorded["posts"] == 2
    assert [c["orderId"] for c in recorded["conversions"]] == ["ORD-1"]


# --- routing ---------------------------------------------------------------------------------------


async def test_unknown_route_and_method_get_spring_bodies(raw: httpx.AsyncClient) -> None:
    assert_envelope(await raw.get("/api/plugin/nothing"), 404)
    response = await raw.put(f"{BASE}/products/sync", json={})
    assert response.status_code == 405
    assert "message" not in response.json()  # Spring's default body, outside the handler


# --- rate limiting -----------------------------------------------------------------------------------


async def test_rate_limit_headers_and_429_body(
    raw: httpx.AsyncClient, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    sandbox.rate_limits.configure(True, {"shop_info": Limit(2, 60)})
    first = await raw.get("/api/plugin/shops/me")
    assert (first.headers["X-RateLimit-Limit"], first.headers["X-RateLimit-Remaining"]) == ("2", "1")
    assert (await raw.get("/api/plugin/shops/me")).headers["X-RateLimit-Remaining"] == "0"
    refused = await raw.get("/api/plugin/shops/me")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "60"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    body = refused.json()
    assert set(body) == {"error", "message", "retryAfter", "limit", "remaining", "timestamp"}
    assert (body["error"], body["retryAfter"], body["limit"], body["remaining"]) == (
        "rate_limit_exceeded",
        60,
        2,
        0,
    )
    assert body["timestamp"].endswith("Z")
    assert "X-RateLimit-Reset" not in refused.headers  # never emitted (changelog)
    fake_clock.now += 60
    assert (await raw.get("/api/plugin/shops/me")).status_code == 200


async def test_unlimited_operations_carry_no_rate_limit_headers(
    raw: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    sandbox.rate_limits.configure(True)
    response = await raw.delete(f"{BASE}/products/x")
    assert "X-RateLimit-Limit" not in response.headers


# --- widget tokens -----------------------------------------------------------------------------------


async def test_widget_route_accepts_our_tokens_and_refuses_bad_ones(
    raw: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    now = int(time.time())
    good = sign_widget_token(SHOP_ID, CANARY_KEY, now)
    assert (await raw.get("/api/widget/search", headers={"X-Widget-Token": good})).status_code == 200
    standard_b64 = good.replace("-", "+").replace("_", "/") + "=" * (-len(good) % 4)
    assert (await raw.get("/api/widget/search", headers={"X-Widget-Token": standard_b64})).status_code == 200
    cases = {
        "missing": None,
        "expired": sign_widget_token(SHOP_ID, CANARY_KEY, now - 86_401),
        "future": sign_widget_token(SHOP_ID, CANARY_KEY, now + 3600),
        "other key": sign_widget_token(SHOP_ID, OTHER_KEY, now),
        "unknown shop": sign_widget_token("shop_nobody", CANARY_KEY, now),
        "garbage": "not base64 !!",
        "tampered": good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1],
    }
    for name, token in cases.items():
        headers = {} if token is None else {"X-Widget-Token": token}
        response = await raw.get("/api/widget/search", headers=headers)
        assert response.status_code == 401, name
    evil = await raw.get(
        "/api/widget/search", headers={"X-Widget-Token": good, "Origin": "https://evil.example"}
    )
    assert evil.status_code == 403
    for origin in (SHOP_URL, "http://localhost:3000", "https://app.neuroon.ai"):
        ok = await raw.get("/api/widget/search", headers={"X-Widget-Token": good, "Origin": origin})
        assert ok.status_code == 200, origin


async def test_rotated_key_invalidates_tokens_at_once(raw: httpx.AsyncClient, sandbox: Sandbox) -> None:
    token = sign_widget_token(SHOP_ID, CANARY_KEY, int(time.time()))
    sandbox.rotate_key(SHOP_ID, f"sk_{'c' * 32}")
    assert (await raw.get("/api/widget/search", headers={"X-Widget-Token": token})).status_code == 401
    assert (await raw.get("/api/plugin/shops/me")).status_code == 401


async def test_widget_search_finds_synced_products_and_issues_a_search_log_id(raw: httpx.AsyncClient) -> None:
    await raw.post(
        f"{BASE}/products/sync", json=sync_body(product("S1", name="Red shoe"), product("S2", name="Hat"))
    )
    token = sign_widget_token(SHOP_ID, CANARY_KEY, int(time.time()))
    body = (
        await raw.get("/api/widget/search", params={"q": "shoe"}, headers={"X-Widget-Token": token})
    ).json()
    assert [p["externalId"] for p in body["products"]] == ["S1"]
    assert body["searchLogId"].startswith("log_")


async def test_g1_issued_token_has_the_same_format(raw: httpx.AsyncClient) -> None:
    response = await raw.post(f"/api/shops/{SHOP_ID}/widget-token")
    token = response.json()["token"]
    assert (await raw.get("/api/widget/search", headers={"X-Widget-Token": token})).status_code == 200


def test_tokens_served_by_the_gateway_are_accepted_by_the_widget_route(
    sandboxed_app: TestClient, sandbox: Sandbox
) -> None:
    token = sandboxed_app.get("/v1/widget-token").json()["token"]
    with TestClient(sandbox.app) as widget:
        response = widget.get("/api/widget/search", headers={"X-Widget-Token": token, "Origin": SHOP_URL})
    assert response.status_code == 200


# --- controls ----------------------------------------------------------------------------------------


async def test_http_controls_script_faults_outage_and_latency(
    raw: httpx.AsyncClient, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    script = {"operation": "shop_info", "script": [503, {"status": 429, "retryAfter": 2}, 200]}
    assert (await raw.post("/_sandbox/faults", json=script)).status_code == 204
    assert [(await raw.get("/api/plugin/shops/me")).status_code for _ in range(4)] == [503, 429, 200, 200]
    await raw.post("/_sandbox/outage", json={"on": True})
    assert (await raw.get("/api/plugin/shops/me")).status_code == 503
    await raw.post("/_sandbox/outage", json={"on": False})
    await raw.post("/_sandbox/latency", json={"seconds": 1.5})
    await raw.get("/api/plugin/shops/me")
    assert fake_clock.sleeps == [1.5]
    await raw.post(
        "/_sandbox/rate-limits", json={"enabled": True, "limits": {"shop_info": {"requests": 1, "window": 9}}}
    )
    statuses = [(await raw.get("/api/plugin/shops/me")).status_code for _ in range(2)]
    assert statuses == [200, 429]
    state = (await raw.get("/_sandbox/state")).json()
    assert state["rateLimits"]["enabled"] is True
    requests = (await raw.get("/_sandbox/requests")).json()
    assert requests[0] == {
        "operation": "shop_info",
        "method": "GET",
        "path": "/api/plugin/shops/me",
        "status": 503,
        "shopId": None,
        "replayed": False,
    }
    assert (await raw.post("/_sandbox/reset")).status_code == 204
    assert sandbox.requests == []
    assert sandbox.latency == 0


async def test_http_control_lowers_the_body_limit_until_reset(
    raw: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    assert (await raw.get("/_sandbox/state")).json()["maxBody"] == 5 * 1024 * 1024
    assert (await raw.post("/_sandbox/body-limit", json={"bytes": 100})).status_code == 204
    assert (await raw.get("/_sandbox/state")).json()["maxBody"] == 100
    response = await raw.post(f"/api/plugin/shops/{SHOP_ID}/products/sync", content=b"x" * 101)
    assert (response.status_code, response.json()["message"]) == (413, "Request body exceeds 100 bytes")
    await raw.post("/_sandbox/reset")
    assert sandbox.max_body == 5 * 1024 * 1024


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/_sandbox/body-limit", b'{"bytes": 0}'),
        ("/_sandbox/faults", b"{"),
        ("/_sandbox/faults", b'{"operation": "nope", "script": [503]}'),
        ("/_sandbox/faults", b'{"operation": "shop_info", "script": [999]}'),
        ("/_sandbox/faults", b'{"operation": "shop_info", "script": "503"}'),
        ("/_sandbox/outage", b'{"on": "maybe"}'),
        ("/_sandbox/outage", b'{"on": true, "extra": 1}'),
        ("/_sandbox/latency", b'{"seconds": -1}'),
        ("/_sandbox/rate-limits", b'{"enabled": true, "limits": {"nope": {"requests": 1, "window": 1}}}'),
        ("/_sandbox/rate-limits", b'{"enabled": true, "limits": {"verify": {"requests": 0, "window": 1}}}'),
        ("/_sandbox/rate-limits", b"\xff"),
    ],
)
async def test_malformed_control_requests_are_400(raw: httpx.AsyncClient, path: str, content: bytes) -> None:
    response = await raw.post(path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("path", "content", "headers"),
    [
        # What a page on another site can send without a CORS preflight.
        (
            "/_sandbox/outage",
            b'{"on": true}',
            {"Content-Type": "text/plain", "Origin": "https://evil.example"},
        ),
        ("/_sandbox/outage", b'{"on": true}', {"Content-Type": "text/plain"}),
        ("/_sandbox/outage", b"on=true", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("/_sandbox/reset", b"", {"Origin": "https://evil.example"}),
        ("/_sandbox/reset", b"", {"Origin": "null"}),
        ("/_sandbox/reset", b"", {"Sec-Fetch-Site": "cross-site"}),
        (
            "/_sandbox/latency",
            b'{"seconds": 5}',
            {"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"},
        ),
    ],
)
async def test_cross_site_control_posts_are_refused(
    raw: httpx.AsyncClient, sandbox: Sandbox, path: str, content: bytes, headers: dict[str, str]
) -> None:
    sandbox.latency = 0.25
    response = await raw.post(path, content=content, headers=headers)
    assert response.status_code in (403, 415)
    assert response.json()["error"] in ("cross_site_refused", "unsupported_media_type")
    assert sandbox.outage is False
    assert sandbox.latency == 0.25  # neither reset nor changed


async def test_same_origin_control_posts_still_work(raw: httpx.AsyncClient, sandbox: Sandbox) -> None:
    own = f"{raw.base_url.scheme}://{raw.base_url.netloc.decode()}"
    response = await raw.post(
        "/_sandbox/outage", json={"on": True}, headers={"Origin": own, "Sec-Fetch-Site": "same-origin"}
    )
    assert response.status_code == 204
    assert sandbox.outage is True


async def test_controls_for_an_unknown_shop_are_404(raw: httpx.AsyncClient) -> None:
    assert (await raw.get("/_sandbox/shops/nope/conversions")).status_code == 404


def test_sandbox_shop_repr_hides_the_key() -> None:
    shop = SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL)
    assert CANARY_KEY not in repr(shop)
    with pytest.raises(ValueError, match="sk_"):
        SandboxShop(SHOP_ID, "sk_bad")
    with pytest.raises(ValueError, match="listed twice"):
        create_sandbox([shop, SandboxShop(SHOP_ID, OTHER_KEY)])


@pytest.mark.parametrize(
    "value",
    ["http://[::1", "://", "http://:99999", "https://shop.example:notaport", "\u00e9t\u00e9", "*"],
)
async def test_malformed_origin_is_a_403_not_a_crash(raw: httpx.AsyncClient, value: str) -> None:
    for header in (b"Origin", b"Referer"):
        response = await raw.get("/api/plugin/shops/me", headers={header: value.encode("latin-1")})
        assert_envelope(response, 403)
    token = sign_widget_token(SHOP_ID, CANARY_KEY, int(time.time()))
    widget = await raw.get(
        "/api/widget/search", headers={b"X-Widget-Token": token.encode(), b"Origin": value.encode("latin-1")}
    )
    assert widget.status_code == 403


@pytest.mark.parametrize(
    "value", ["\u00e9" * 10, "sk_" + "\u00e9" * 32, " " + CANARY_KEY, CANARY_KEY.upper()]
)
async def test_odd_key_headers_are_401(raw: httpx.AsyncClient, value: str) -> None:
    raw.headers.pop("X-Shop-API-Key")
    response = await raw.get("/api/plugin/shops/me", headers={b"X-Shop-API-Key": value.encode("latin-1")})
    assert_envelope(response, 401)


@pytest.mark.parametrize("token", ["\u00e9t\u00e9", "a:b:c", "=" * 8, "c2hvcF90ZXN0OjE=", "!" * 5000])
async def test_odd_widget_tokens_are_401(raw: httpx.AsyncClient, token: str) -> None:
    response = await raw.get("/api/widget/search", headers={b"X-Widget-Token": token.encode("latin-1")})
    assert_envelope(response, 401)


async def test_empty_origin_counts_as_absent(raw: httpx.AsyncClient) -> None:
    # Browsers never send an empty Origin; treating it as absent keeps server-side callers working.
    assert (await raw.get("/api/plugin/shops/me", headers={"Origin": ""})).status_code == 200
