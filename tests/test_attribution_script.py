"""attribution.js in a real headless Chromium, against a storefront page served by the test.

Skipped (with the reason) when no Chromium binary is on PATH: `make test` must also pass on a
machine with only Python. Install one (Debian: `apt-get install chromium`) to run it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
import uvicorn
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from app.embedded_redis import free_port
from app.main import create_app
from app.store.conversions import attribution_key
from tests.conftest import SHOP_ID, SettingsFactory
from tests.test_delivery import wait_for

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)"
)

CLICKS = {"SNOW-GRN-150": "log_snow", "WAX/01": "log_wax"}


def serve(app: Any, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    threading.Thread(target=server.run, daemon=True).start()
    wait_for(lambda: server.started, "server start")
    return server


def page(gateway: str, attributes: str, clicks: dict[str, str] = CLICKS) -> str:
    cookie = quote(json.dumps(clicks, separators=(",", ":")), safe="")
    return f"""<!doctype html><html><head><title>shop</title>
<script>document.cookie = "neuroon_clicks={cookie}; path=/; SameSite=Lax";</script>
<script src="{gateway}/v1/attribution.js" {attributes}></script>
</head><body>storefront</body></html>"""


@pytest.fixture
def sites(make_settings: SettingsFactory, redis_client: redis.Redis) -> Iterator[tuple[str, list[Any]]]:
    shop_port, gateway_port = free_port(), free_port()
    shop_origin, gateway = f"http://127.0.0.1:{shop_port}", f"http://127.0.0.1:{gateway_port}"
    cart_updates: list[Any] = []

    async def shopify(_: Request) -> HTMLResponse:
        return HTMLResponse(page(gateway, 'data-platform="shopify"'))

    async def other(_: Request) -> HTMLResponse:
        return HTMLResponse(
            page(gateway, f'data-platform="other" data-shop-id="{SHOP_ID}" data-cart-token="cart-xyz"')
        )

    async def refused(_: Request) -> HTMLResponse:
        attributes = f'data-platform="other" data-shop-id="{SHOP_ID}" data-cart-token="cart-bad"'
        return HTMLResponse(page(gateway, attributes, {"SKU-1": "not an id"}))

    async def cart_update(request: Request) -> JSONResponse:
        cart_updates.append(await request.json())
        return JSONResponse({"token": "cart-xyz", "attributes": {}})

    storefront = Starlette(
        routes=[
            Route("/shopify", shopify),
            Route("/other", other),
            Route("/refused", refused),
            Route("/cart/update.js", cart_update, methods=["POST"]),
        ]
    )
    settings = make_settings(neuroon_shop_url=shop_origin, gateway_run_worker=False)
    servers = [serve(storefront, shop_port), serve(create_app(settings), gateway_port)]
    try:
        yield shop_origin, cart_updates
    finally:
        for server in servers:
            server.should_exit = True


def browse(url: str, budget_ms: int = 5000) -> str:
    assert CHROMIUM is not None
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        capture_output=True, timeout=90, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout.decode()


def test_on_shopify_the_cookie_goes_into_the_cart_attributes(sites: tuple[str, list[Any]]) -> None:
    shop_origin, cart_updates = sites
    assert "storefront" in browse(f"{shop_origin}/shopify")
    assert cart_updates, "the script did not call /cart/update.js"
    assert json.loads(cart_updates[0]["attributes"]["_neuroon_clicks"]) == CLICKS


def test_elsewhere_the_cookie_is_posted_to_the_gateway_with_the_cart_token(
    sites: tuple[str, list[Any]], redis_client: redis.Redis
) -> None:
    shop_origin, cart_updates = sites
    browse(f"{shop_origin}/other")
    wait_for(lambda: redis_client.exists(attribution_key(SHOP_ID, "cart-xyz")) == 1, "clicks stored", 10)
    raw = redis_client.hgetall(attribution_key(SHOP_ID, "cart-xyz"))
    assert {k.decode(): v.decode() for k, v in raw.items()} == CLICKS  # type: ignore[union-attr]
    assert cart_updates == []


def test_a_value_the_gateway_refuses_is_not_sent_again(sites: tuple[str, list[Any]]) -> None:
    # The script re-checks the cookie every 3 s; a 400 for the same value would come back each time.
    shop_origin, _ = sites
    labels = {"route": "/v1/attribution", "method": "POST", "status": "400"}
    before = REGISTRY.get_sample_value("neuroon_gateway_http_requests_total", labels) or 0.0
    browse(f"{shop_origin}/refused", budget_ms=10_000)
    after = REGISTRY.get_sample_value("neuroon_gateway_http_requests_total", labels) or 0.0
    assert after - before == 1
