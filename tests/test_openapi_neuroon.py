"""openapi/neuroon-plugin-api.yaml against reality: every request the client sends and every answer the
sandbox gives, in a run through every operation and every documented error, must fit the description."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

from app.neuroon.client import NeuroonClient
from app.neuroon.endpoints import Limit
from app.neuroon.errors import NeuroonError
from app.neuroon.models import ConversionRequest, Product, SyncType
from app.sandbox import Fault, Sandbox
from app.shops import Shop
from tests.conftest import OTHER_SHOP_ID, FakeClock, make_shop

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi" / "neuroon-plugin-api.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def _schema(ref_or_schema: dict[str, Any]) -> Draft202012Validator:
    # The whole document is the root resource, so "#/components/..." references resolve.
    return Draft202012Validator({**ref_or_schema, "components": SPEC["components"]})


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node and len(node) == 1:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _operation(method: str, raw_path: str) -> dict[str, Any]:
    """The spec's operation for a request; literal paths win over templated ones."""
    candidates = sorted(SPEC["paths"].items(), key=lambda item: item[0].count("{"))
    for template, item in candidates:
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, raw_path) and method.lower() in item:
            operation: dict[str, Any] = item[method.lower()]
            return operation
    raise AssertionError(f"{method} {raw_path} is not in the spec")


class Recording(httpx.AsyncBaseTransport):
    """Keeps every exchange between the client and the sandbox, whole."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.exchanges: list[tuple[httpx.Request, httpx.Response]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.exchanges.append((request, response))
        return response


@pytest.fixture
async def recorded(sandbox: Sandbox, fake_clock: FakeClock) -> AsyncIterator[tuple[NeuroonClient, Recording]]:
    recording = Recording(httpx.ASGITransport(app=sandbox.app))
    async with httpx.AsyncClient(base_url="http://neuroon.sandbox", transport=recording) as http:
        yield NeuroonClient(http, sleep=fake_clock.sleep, clock=fake_clock), recording


def test_the_spec_is_well_formed() -> None:
    assert SPEC["openapi"].startswith("3.1")
    for name, schema in SPEC["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        assert name
    for item in SPEC["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                assert re.fullmatch(r"[1-5](\d\d|XX)", status)
                assert "description" in _resolve(response)


async def test_client_requests_and_sandbox_answers_fit_the_spec(
    recorded: tuple[NeuroonClient, Recording], shop: Shop, sandbox: Sandbox
) -> None:
    client, recording = recorded
    products = [
        Product(
            external_id="P/1",
            name="Parent",
            price=Decimal("10.00"),
            url="u",
            currency="EUR",
            rating=Decimal("4.5"),
        ),
        Product(external_id="V1", name="Variant", price=Decimal("11"), url="u", parent_external_id="P/1"),
    ]
    conversion = {
        "orderId": "O1",
        "orderValue": "21.00",
        "currency": "EUR",
        "conversions": [{"productId": "V1", "searchLogId": "l", "quantity": 1, "lineTotal": "11"}],
    }
    blank = {"orderId": "O2", "conversions": [{"productId": "V1", "searchLogId": " "}]}
    await client.sync_products(shop, products)
    await client.sync_products(shop, products[:1], sync_type=SyncType.FULL)
    await client.get_product(shop, "P/1")
    await client.get_product(shop, "missing")
    await client.list_products(shop, limit=1)
    await client.delete_product(shop, "P/1")
    await client.verify_domain(shop)
    await client.verify_domain(shop)  # 409
    await client.verification_data(shop)
    await client.unverify(shop)
    await client.shop_info(shop)
    await client.track_conversion(shop, ConversionRequest.model_validate(conversion))
    failing: list[Callable[[], Awaitable[object]]] = [
        lambda: client.track_conversion(shop, ConversionRequest.model_validate(blank)),  # 400
        lambda: client.shop_info(make_shop(key=f"sk_{'2' * 32}")),  # 401
        lambda: client.verification_data(make_shop(OTHER_SHOP_ID)),  # 403 cross-tenant
        lambda: client.sync_products(
            shop, [products[0], products[0].model_copy(update={"currency": "USD"})]
        ),  # 422
    ]
    for call in failing:
        with pytest.raises(NeuroonError):
            await call()
    sandbox.rate_limits.configure(True, {"shop_info": Limit(1, 60)})
    await client.shop_info(shop, attempts=1)
    # The client itself would now wait for the window to end; a second process would not know to.
    unaware = NeuroonClient(client.http, attempts=1)
    with pytest.raises(NeuroonError):
        await unaware.shop_info(shop)  # 429 from the sandbox's own limiter
    sandbox.outage = True
    with pytest.raises(NeuroonError):
        await client.unverify(shop, attempts=1)  # 503
    sandbox.outage = False
    sandbox.script("sync_products", Fault(400))
    with pytest.raises(NeuroonError):
        await client.sync_products(shop, products)

    statuses = set()
    for request, response in recording.exchanges:
        raw_path = request.url.raw_path.decode().split("?")[0]
        operation = _operation(request.method, raw_path)
        # Requests: the key always, the declared headers, and a body that fits.
        assert request.headers["X-Shop-API-Key"].startswith("sk_")
        for parameter in map(_resolve, operation.get("parameters", [])):
            if parameter["in"] == "header" and parameter.get("required"):
                assert parameter["name"] in request.headers
        if "requestBody" in operation and request.content:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            body_errors = list(_schema(schema).iter_errors(orjson.loads(request.content)))
            refused = response.status_code == 400 and response.json().get("message") != "Injected fault"
            # The spec and the sandbox agree: what the sandbox refused as invalid is off the spec
            # (the blank searchLogId), everything else fits.
            assert bool(body_errors) == refused, (raw_path, body_errors)
            assert request.headers["Content-Type"] == "application/json"
        # Answers: a declared status, and a body that fits its schema.
        status = str(response.status_code)
        responses = operation["responses"]
        declared = responses.get(status) or responses.get(status[0] + "XX")
        assert declared is not None, f"{request.method} {raw_path} answered {status}, not in the spec"
        declared = _resolve(declared)
        statuses.add(response.status_code)
        if "content" in declared:
            _schema(declared["content"]["application/json"]["schema"]).validate(response.json())
        else:
            assert response.content == b""
        for header, spec in declared.get("headers", {}).items():
            if spec.get("required"):
                assert header in response.headers
    assert statuses >= {200, 204, 400, 401, 403, 404, 409, 422, 429, 503}


def test_a_request_off_the_spec_is_caught() -> None:
    """The check above can fail: a body without syncType does not fit."""
    schema = _operation("POST", "/api/plugin/shops/s/products/sync")["requestBody"]["content"][
        "application/json"
    ]["schema"]
    errors = _schema(schema).iter_errors({"products": [{"externalId": "x"}]})
    assert sorted(e.message for e in errors) == [
        "'name' is a required property",
        "'price' is a required property",
        "'syncType' is a required property",
        "'url' is a required property",
    ]
    with pytest.raises(AssertionError, match="not in the spec"):
        _operation("PUT", "/api/plugin/shops/s/products/sync")
