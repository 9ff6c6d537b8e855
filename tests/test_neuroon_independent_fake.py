"""The client against a second, independent Neuroon: a few lines on httpx.MockTransport written straight
from neuroon-server-to-server.txt and neuroon-api.md, sharing no code with the client or the sandbox."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.neuroon.client import NeuroonClient
from app.neuroon.errors import NeuroonRateLimited, NeuroonRejected
from app.neuroon.models import ConversionRequest, Product, SyncType
from app.shops import Shop
from tests.conftest import CANARY_KEY, SHOP_ID, FakeClock


class DocsNeuroon:
    """What the docs say Neuroon does, and nothing more."""

    def __init__(self) -> None:
        self.catalog: dict[str, dict[str, Any]] = {}
        self.orders: set[str] = set()
        self.verified = False
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.headers.get("X-Shop-API-Key") != CANARY_KEY:
            return httpx.Response(
                401, json={"status": 401, "error": "Unauthorized", "message": "Invalid API key"}
            )
        path = request.url.raw_path.decode().split("?")[0]
        m = re.fullmatch(r"/api/plugin/shops/([^/]+)(/.*)", path)
        if path == "/api/plugin/shops/me":
            return httpx.Response(
                200, json={"shopId": SHOP_ID, "maxProducts": 5000, "maxSearchesPerMonth": 10000}
            )
        if m is None or m.group(1) != SHOP_ID:
            return httpx.Response(403, json={"status": 403, "error": "Forbidden", "message": "cross-tenant"})
        rest, method = m.group(2), request.method
        body: Any = json.loads(request.content) if request.content else {}
        if (method, rest) == ("POST", "/products/sync"):
            assert request.headers["Content-Type"] == "application/json"
            assert request.headers["X-Idempotency-Key"]
            assert body["syncType"] in ("INCREMENTAL", "FULL")
            assert 1 <= len(body["products"]) <= 500
            for p in body["products"]:
                assert {"externalId", "name", "price", "url"} <= set(p)
                assert None not in p.values()  # nulls omitted
                assert isinstance(p["price"], int | float)  # a JSON number, not a string
                self.catalog[p["externalId"]] = p
            return httpx.Response(200, json={"synced": len(body["products"]), "somethingNew": {"x": 1}})
        if method == "DELETE" and rest.startswith("/products/"):
            return httpx.Response(
                404 if self.catalog.pop(rest.removeprefix("/products/"), None) is None else 204
            )
        if (method, rest) == ("POST", "/verify"):
            if self.verified:
                return httpx.Response(
                    409, json={"status": 409, "error": "Conflict", "message": "already verified"}
                )
            self.verified = True
            return httpx.Response(
                200, json={"shopId": SHOP_ID, "verificationCode": "vc_1", "domain": body["domain"]}
            )
        if (method, rest) == ("GET", "/verification-data"):  # the older revision's fields
            return httpx.Response(
                200, json={"domain": "https://shop.example", "verificationCode": "vc_1", "verifiedAt": None}
            )
        if (method, rest) == ("POST", "/track/conversion"):
            if any(not (c.get("searchLogId") or "").strip() for c in body["conversions"]):
                return httpx.Response(
                    400,
                    json={
                        "code": "BAD_REQUEST",
                        "message": "searchLogId",
                        "details": ["searchLogId: must not be blank"],
                    },
                )
            self.orders.add(body["orderId"])
            return httpx.Response(201)
        return httpx.Response(404, json={"status": 404, "error": "Not Found", "message": "no route"})


@pytest.fixture
async def docs_client(fake_clock: FakeClock) -> Any:
    fake = DocsNeuroon()
    async with httpx.AsyncClient(
        base_url="https://api.neuroon.ai", transport=httpx.MockTransport(fake)
    ) as http:
        yield fake, NeuroonClient(http, sleep=fake_clock.sleep, clock=fake_clock)


async def test_flows_against_the_docs_fake(docs_client: Any, shop: Shop) -> None:
    fake, client = docs_client
    products = [Product(external_id="SKU-1", name="A", price=Decimal("49.99"), url="https://shop.example/a")]
    result = await client.sync_products(shop, products, sync_type=SyncType.FULL)
    assert result.synced == 1
    assert fake.catalog["SKU-1"]["price"] == 49.99
    assert await client.delete_product(shop, "SKU-1") is True
    assert await client.delete_product(shop, "SKU-1") is False  # this Neuroon says 404: still done
    assert not (await client.verify_domain(shop)).already_verified
    assert (await client.verify_domain(shop)).already_verified
    assert (await client.verification_data(shop)).verification_code == "vc_1"
    assert (await client.shop_info(shop)).max_products == 5000
    conversion = ConversionRequest.model_validate(
        {
            "orderId": "O1",
            "orderValue": "10.00",
            "currency": "EUR",
            "conversions": [{"productId": "SKU-1", "searchLogId": "log_1"}],
        }
    )
    await client.track_conversion(shop, conversion)
    assert fake.orders == {"O1"}
    assert json.loads(fake.seen[-1].content)["orderValue"] == 10.0


async def test_docs_fake_errors(docs_client: Any, shop: Shop) -> None:
    _, client = docs_client
    blank = ConversionRequest.model_validate(
        {"orderId": "O2", "conversions": [{"productId": "p", "searchLogId": " "}]}
    )
    with pytest.raises(NeuroonRejected) as caught:
        await client.track_conversion(shop, blank)
    assert caught.value.details == ["searchLogId: must not be blank"]


async def test_legacy_429_shape_from_a_mock(shop: Shop, fake_clock: FakeClock) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": {"code": "RATE_LIMIT_EXCEEDED", "message": "slow down", "retryAfter": 30}}
        )

    async with httpx.AsyncClient(base_url="https://n", transport=httpx.MockTransport(handler)) as http:
        client = NeuroonClient(http, attempts=2, sleep=fake_clock.sleep, clock=fake_clock)
        with pytest.raises(NeuroonRateLimited) as caught:
            await client.shop_info(shop)
    assert caught.value.retry_after == 30
    assert fake_clock.sleeps == [30.0]
