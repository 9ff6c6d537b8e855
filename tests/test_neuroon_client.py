"""The client against the sandbox: every operation, every documented status and error shape."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from app import __version__
from app.neuroon.client import NeuroonClient
from app.neuroon.errors import NeuroonRejected, NeuroonUnavailable
from app.neuroon.models import ConversionRequest, Product, SyncType
from app.sandbox import Fault, Sandbox
from app.shops import Shop
from tests.conftest import OTHER_KEY, OTHER_SHOP_ID, SHOP_ID, SHOP_URL, make_shop


def product(external_id: str, **fields: object) -> Product:
    values: dict[str, object] = {
        "external_id": external_id,
        "name": f"Product {external_id}",
        "price": Decimal("19.99"),
        "url": f"https://shop.example/p/{external_id}",
    }
    values.update(fields)
    return Product.model_validate(values)


def conversion(order_id: str = "ORD-1", search_log_id: str = "log_aaa") -> ConversionRequest:
    return ConversionRequest.model_validate(
        {
            "orderId": order_id,
            "orderValue": "199.95",
            "currency": "EUR",
            "conversions": [
                {"productId": "SKU-1", "searchLogId": search_log_id, "quantity": 2, "lineTotal": "79.98"}
            ],
        }
    )


async def test_sync_upserts_and_get_reads_back_exact_money(neuroon: NeuroonClient, shop: Shop) -> None:
    result = await neuroon.sync_products(
        shop, [product("SKU-1"), product("SKU-2", sale_price=Decimal("9.95"))]
    )
    assert (result.synced, result.created, result.updated) == (2, 2, 0)
    again = await neuroon.sync_products(shop, [product("SKU-1", price=Decimal("21.50"))])
    assert (again.created, again.updated, again.products_count) == (0, 1, 2)
    read = await neuroon.get_product(shop, "SKU-1")
    assert read is not None
    assert read.price == Decimal("21.50")
    second = await neuroon.get_product(shop, "SKU-2")
    assert second is not None
    assert second.sale_price == Decimal("9.95")


async def test_get_unknown_product_is_none(neuroon: NeuroonClient, shop: Shop) -> None:
    assert await neuroon.get_product(shop, "nope") is None


async def test_external_id_with_slash_and_spaces_round_trips(neuroon: NeuroonClient, shop: Shop) -> None:
    await neuroon.sync_products(shop, [product("cat/SKU 1?x")])
    read = await neuroon.get_product(shop, "cat/SKU 1?x")
    assert read is not None
    assert read.external_id == "cat/SKU 1?x"
    assert await neuroon.delete_product(shop, "cat/SKU 1?x") is True
    assert await neuroon.get_product(shop, "cat/SKU 1?x") is None


async def test_full_sync_replaces_the_catalog(neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox) -> None:
    await neuroon.sync_products(shop, [product("A"), product("B")])
    await neuroon.sync_products(shop, [product("C")], sync_type=SyncType.FULL)
    assert set(sandbox.products(SHOP_ID)) == {"C"}


async def test_orphan_variant_is_dropped_silently(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox
) -> None:
    await neuroon.sync_products(shop, [product("P1")])
    result = await neuroon.sync_products(
        shop,
        [
            product("P2"),
            product("V2", parent_external_id="P2"),  # parent earlier in the batch
            product("V1", parent_external_id="P1"),  # parent synced before
            product("V9", parent_external_id="NOPE"),  # orphan
        ],
    )
    assert result.synced == 3
    assert set(sandbox.products(SHOP_ID)) == {"P1", "P2", "V1", "V2"}


async def test_list_pages_with_cursor_through_the_whole_catalog(neuroon: NeuroonClient, shop: Shop) -> None:
    ids = [f"SKU-{i:03d}" for i in range(23)]
    await neuroon.sync_products(shop, [product(i) for i in ids])
    first = await neuroon.list_products(shop, limit=10)
    assert len(first.products) == 10
    assert first.next_cursor
    seen = [p.external_id async for p in neuroon.iter_products(shop, limit=10)]
    assert seen == ids


async def test_delete_is_done_also_when_already_gone(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox
) -> None:
    await neuroon.sync_products(shop, [product("X")])
    assert await neuroon.delete_product(shop, "X") is True
    assert await neuroon.delete_product(shop, "X") is True  # the sandbox answers 204 again, as documented
    sandbox.script("delete_product", 404)  # a Neuroon that answers 404 instead
    assert await neuroon.delete_product(shop, "X") is False
    assert sandbox.statuses("delete_product") == [204, 204, 404]


async def test_verify_then_409_counts_as_done(neuroon: NeuroonClient, shop: Shop) -> None:
    first = await neuroon.verify_domain(shop)
    assert not first.already_verified
    assert first.data is not None
    assert first.data.shop_id == SHOP_ID
    assert first.data.verification_code
    second = await neuroon.verify_domain(shop)
    assert second.already_verified
    data = await neuroon.verification_data(shop)
    assert data.verified is True
    await neuroon.unverify(shop)
    assert (await neuroon.verification_data(shop)).verified is False
    assert not (await neuroon.verify_domain(shop)).already_verified


async def test_verify_with_another_domain_is_rejected(neuroon: NeuroonClient, shop: Shop) -> None:
    with pytest.raises(NeuroonRejected) as caught:
        await neuroon.verify_domain(shop, "https://elsewhere.example")
    assert caught.value.status == 403


async def test_shop_info_has_plan_quotas(neuroon: NeuroonClient, shop: Shop) -> None:
    info = await neuroon.shop_info(shop)
    assert info.id == SHOP_ID
    assert info.max_products is not None
    assert info.max_searches_per_month is not None


async def test_conversion_is_recorded_once_per_order(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox
) -> None:
    await neuroon.track_conversion(shop, conversion())
    await neuroon.track_conversion(shop, conversion())
    recorded = sandbox.conversions(SHOP_ID)
    assert list(recorded) == ["ORD-1"]
    assert recorded["ORD-1"]["orderValue"] == Decimal("199.95")
    assert recorded["ORD-1"]["conversions"][0]["lineTotal"] == Decimal("79.98")
    assert sandbox.shops[SHOP_ID].conversion_posts == 2


async def test_blank_search_log_id_is_rejected_with_field_details(neuroon: NeuroonClient, shop: Shop) -> None:
    with pytest.raises(NeuroonRejected) as caught:
        await neuroon.track_conversion(shop, conversion(search_log_id="   "))
    assert caught.value.status == 400
    assert not caught.value.is_auth_failure
    assert caught.value.details == ["conversions[0].searchLogId: must not be blank"]


async def test_requests_carry_the_documented_headers(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox
) -> None:
    await neuroon.sync_products(shop, [product("H")])
    await neuroon.shop_info(shop)
    sync, me = sandbox.requests
    for seen in (sync, me):
        assert seen.had_api_key
        assert seen.headers["origin"] == SHOP_URL
        assert seen.headers["user-agent"] == f"neuroon-gateway/{__version__}"
        assert "x-shop-api-key" not in seen.headers  # the sandbox never keeps the key
    assert sync.headers["content-type"] == "application/json"
    assert len(sync.headers["x-idempotency-key"]) == 32
    assert "content-type" not in me.headers


async def test_shop_without_url_sends_no_origin(neuroon: NeuroonClient, sandbox: Sandbox) -> None:
    await neuroon.shop_info(make_shop(shop_url=None))
    assert "origin" not in sandbox.requests[0].headers


async def test_same_batch_replays_by_idempotency_key(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox
) -> None:
    batch = [product("I1")]
    await neuroon.sync_products(shop, batch)
    await neuroon.sync_products(shop, batch)
    await neuroon.sync_products(shop, [product("I1", price=Decimal("1.00"))])
    first, replay, changed = sandbox.requests
    assert first.headers["x-idempotency-key"] == replay.headers["x-idempotency-key"]
    assert replay.replayed
    assert changed.headers["x-idempotency-key"] != first.headers["x-idempotency-key"]
    assert not changed.replayed
    assert sandbox.products(SHOP_ID)["I1"]["price"] == Decimal("1.00")


async def test_batch_size_is_checked_before_sending(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox
) -> None:
    with pytest.raises(ValueError, match="1 to 500"):
        await neuroon.sync_products(shop, [])
    with pytest.raises(ValueError, match="1 to 500"):
        await neuroon.sync_products(shop, [product(str(i)) for i in range(501)])
    assert sandbox.requests == []


# --- authentication --------------------------------------------------------------------------------


async def test_unknown_key_is_401_auth_failure(neuroon: NeuroonClient) -> None:
    with pytest.raises(NeuroonRejected) as caught:
        await neuroon.shop_info(make_shop(key=f"sk_{'1' * 32}"))
    assert caught.value.status == 401
    assert caught.value.is_auth_failure


async def test_key_of_another_shop_is_403(neuroon: NeuroonClient) -> None:
    with pytest.raises(NeuroonRejected) as caught:
        await neuroon.track_conversion(make_shop(shop_id=SHOP_ID, key=OTHER_KEY, shop_url=None), conversion())
    assert caught.value.status == 403
    assert caught.value.is_auth_failure


async def test_origin_mismatch_is_403_with_the_documented_message(neuroon: NeuroonClient) -> None:
    with pytest.raises(NeuroonRejected) as caught:
        await neuroon.shop_info(make_shop(shop_url="https://not-the-shop.example"))
    assert caught.value.status == 403
    assert caught.value.reason == "Origin mismatch — API Key cannot be used from this domain"


async def test_origin_is_compared_after_normalisation(neuroon: NeuroonClient) -> None:
    info = await neuroon.shop_info(make_shop(OTHER_SHOP_ID, OTHER_KEY, "http://www.other.example/"))
    assert info.id == OTHER_SHOP_ID


# --- error shapes (neuroon-api.md §7.1), injected as a Neuroon might send them ---------------------------


@pytest.mark.parametrize(
    ("fault", "status", "message", "details"),
    [
        (Fault(400), 400, "Injected fault", ["Injected fault"]),
        (
            Fault(
                400,
                body={
                    "code": "VALIDATION_ERROR",
                    "message": "Invalid product",
                    "details": ["name: too long"],
                },
            ),
            400,
            "Invalid product",
            ["name: too long"],
        ),
        (
            Fault(
                400,
                body={
                    "code": "BAD",
                    "message": "x",
                    "details": [{"field": "price", "message": "must be >= 0"}],
                },
            ),
            400,
            "x",
            ["price: must be >= 0"],
        ),
        (
            Fault(
                409,
                body={"timestamp": "2026-05-06T10:15:00", "status": 409, "error": "Conflict", "path": "/p"},
            ),
            409,
            "Conflict",
            [],
        ),
        (
            Fault(422, body={"error": {"code": "PARENT_NOT_FOUND", "message": "parent product not found"}}),
            422,
            "parent product not found",
            [],
        ),
        (Fault(415, body={"code": "UNSUPPORTED"}), 415, "UNSUPPORTED", []),
    ],
)
async def test_error_shapes_become_rejections(
    neuroon: NeuroonClient,
    shop: Shop,
    sandbox: Sandbox,
    fault: Fault,
    status: int,
    message: str,
    details: list[str],
) -> None:
    sandbox.script("sync_products", fault)
    with pytest.raises(NeuroonRejected) as caught:
        await neuroon.sync_products(shop, [product("E")])
    assert (caught.value.status, caught.value.reason, caught.value.details) == (status, message, details)
    assert sandbox.statuses() == [status]  # never retried


async def test_real_validation_errors_in_both_shapes(
    neuroon_http: httpx.AsyncClient, shop: Shop, sandbox: Sandbox
) -> None:
    client = NeuroonClient(neuroon_http)
    bad = Product.model_construct(external_id="B", name="x" * 513, price=Decimal(1), url="u")
    with pytest.raises(NeuroonRejected) as envelope:
        await client.sync_products(shop, [bad])
    sandbox.validation_error_shape = "code"
    with pytest.raises(NeuroonRejected) as code_shape:
        await client.sync_products(shop, [bad])
    for caught in (envelope, code_shape):
        assert caught.value.status == 400
        assert caught.value.details == ["products[0].name: String should have at most 512 characters"]


async def test_currency_mismatch_is_422(neuroon: NeuroonClient, shop: Shop) -> None:
    with pytest.raises(NeuroonRejected) as caught:
        await neuroon.sync_products(shop, [product("A", currency="EUR"), product("B", currency="USD")])
    assert caught.value.status == 422


async def test_non_json_server_error_is_unavailable(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox
) -> None:
    sandbox.script("shop_info", 502, 502, 502)
    with pytest.raises(NeuroonUnavailable) as caught:
        await neuroon.shop_info(shop)
    assert caught.value.status == 502


async def test_unexpected_success_body_is_unavailable(shop: Shop) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>captive portal</html>")

    async with httpx.AsyncClient(base_url="http://n", transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(NeuroonUnavailable, match="unexpected body"):
            await NeuroonClient(http).shop_info(shop)
