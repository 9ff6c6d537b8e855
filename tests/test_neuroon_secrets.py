"""The Shop API Key never leaves the X-Shop-API-Key header: not in exceptions, logs, metrics or reprs."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from decimal import Decimal

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY, generate_latest

from app.embedded_redis import free_port
from app.logging import JsonFormatter
from app.neuroon.client import NeuroonClient
from app.neuroon.errors import NeuroonError
from app.neuroon.models import ConversionRequest, Product
from app.sandbox import Fault, Sandbox
from app.shops import Shop
from tests.conftest import CANARY_KEY, OTHER_SHOP_ID, SHOP_ID, FakeClock, make_shop


def _everything_about(exc: BaseException) -> str:
    parts = ["".join(traceback.format_exception(exc)), repr(exc), str(exc), repr(vars(exc))]
    return "\n".join(parts)


async def test_key_is_absent_from_every_error_log_and_metric(
    neuroon: NeuroonClient,
    shop: Shop,
    sandbox: Sandbox,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    conversion = ConversionRequest.model_validate(
        {"orderId": "O", "conversions": [{"productId": "p", "searchLogId": " "}]}
    )
    bad = Product.model_construct(external_id="x", name="", price=Decimal(-1), url="")
    # Neuroon echoing our key back must not carry it into our messages either.
    echo = {"message": f"bad key {CANARY_KEY}", "details": [f"X-Shop-API-Key: {CANARY_KEY}"]}
    sandbox.script("shop_info", 503, 503, 503)
    sandbox.script("verify", Fault(429, retry_after=999))
    sandbox.script("unverify", Fault(400, body=echo))
    sandbox.script("list_products", Fault(500, body=echo), Fault(500, body=echo), Fault(500, body=echo))
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: neuroon.track_conversion(shop, conversion),
        lambda: neuroon.sync_products(shop, [bad]),
        lambda: neuroon.shop_info(shop),
        lambda: neuroon.verify_domain(shop),
        lambda: neuroon.unverify(shop),
        lambda: neuroon.list_products(shop),
        lambda: neuroon.verification_data(make_shop(OTHER_SHOP_ID)),  # our key for another shop: 403
        lambda: neuroon.shop_info(make_shop(shop_url="https://elsewhere.example")),  # Origin mismatch: 403
    ]
    errors: list[NeuroonError] = []
    for call in calls:
        with pytest.raises(NeuroonError) as caught:
            await call()
        errors.append(caught.value)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}") as http:
        offline = NeuroonClient(http, attempts=2, sleep=fake_clock.sleep, clock=fake_clock)
        with pytest.raises(NeuroonError) as caught:
            await offline.track_conversion(shop, conversion)
        errors.append(caught.value)
    assert len({type(e) for e in errors}) == 3  # rejected, unavailable and rate limited all covered
    for error in errors:
        assert CANARY_KEY not in _everything_about(error)
    assert "[redacted]" in str(errors[4])
    assert caplog.records  # the retries were logged …
    for record in caplog.records:  # … without the key, before any redaction
        assert CANARY_KEY not in record.getMessage()
        assert CANARY_KEY not in repr(vars(record))
        assert CANARY_KEY not in JsonFormatter().format(record)
    assert CANARY_KEY not in generate_latest(REGISTRY).decode()
    assert CANARY_KEY not in repr(shop)
    assert CANARY_KEY not in repr(neuroon.limiter.__dict__)
    assert all(CANARY_KEY not in repr(r) for r in sandbox.requests)


def test_gateway_with_sandbox_keeps_the_key_out_of_metrics(sandboxed_app: TestClient) -> None:
    state = sandboxed_app.app_state["gateway"]
    info = sandboxed_app.portal.call(state.neuroon.shop_info, state.shops.get(SHOP_ID))  # type: ignore[union-attr]
    assert info.id == SHOP_ID
    metrics = sandboxed_app.get("/metrics").text
    assert 'neuroon_gateway_upstream_requests_total{operation="shop_info",status="200"}' in metrics
    assert CANARY_KEY not in metrics
