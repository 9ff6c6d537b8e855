"""The client and the sandbox over real HTTP on 127.0.0.1: sockets, timeouts and the real event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
import uvicorn

from app.embedded_redis import free_port
from app.neuroon.client import NeuroonClient, build_http_client
from app.neuroon.errors import NeuroonUnavailable
from app.neuroon.models import ConversionRequest, Product
from app.sandbox import Sandbox, SandboxShop, create_sandbox
from app.settings import Settings
from app.shops import Shop
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL


@pytest.fixture
async def served() -> AsyncIterator[tuple[Sandbox, str]]:
    sandbox = create_sandbox([SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL)])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(sandbox.app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    try:
        yield sandbox, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_flows_over_real_http(
    served: tuple[Sandbox, str], shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore at their most talkative
    sandbox, url = served
    settings = Settings(_env_file=None, neuroon_api_url=url)
    async with build_http_client(settings) as http:
        client = NeuroonClient.from_settings(http, settings)
        await client.sync_products(
            shop, [Product(external_id="H1", name="Over HTTP", price=Decimal("5"), url="u")]
        )
        assert (await client.get_product(shop, "H1")) is not None
        conversion = {"orderId": "H-1", "conversions": [{"productId": "H1", "searchLogId": "log_h"}]}
        await client.track_conversion(shop, ConversionRequest.model_validate(conversion))
    assert list(sandbox.conversions(SHOP_ID)) == ["H-1"]
    assert sandbox.requests[0].headers["user-agent"].startswith("neuroon-gateway/")
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    assert CANARY_KEY not in caplog.text


async def test_slow_neuroon_times_out_as_unavailable(served: tuple[Sandbox, str], shop: Shop) -> None:
    sandbox, url = served
    async with httpx.AsyncClient(base_url=url) as control:
        assert (await control.post("/_sandbox/latency", json={"seconds": 1.0})).status_code == 204
    settings = Settings(_env_file=None, neuroon_api_url=url, neuroon_timeout=0.2, neuroon_retry_attempts=1)
    async with build_http_client(settings) as http:
        with pytest.raises(NeuroonUnavailable, match="timed out"):
            await NeuroonClient.from_settings(http, settings).shop_info(shop)
    sandbox.latency = 0
