"""Assembly of the sandbox: ``create_sandbox`` builds the ASGI app and returns it with its controls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.neuroon.endpoints import Limit, Operation
from app.sandbox.admin import admin_routes
from app.sandbox.control import Sandbox
from app.sandbox.pipeline import Handler, endpoint
from app.sandbox.routes import PluginApi
from app.sandbox.state import SandboxShop
from app.sandbox.widget import WidgetApi
from app.sandbox.wire import envelope, spring_default

SHOPS = "/api/plugin/shops"


def create_sandbox(
    shops: Iterable[SandboxShop],
    *,
    rate_limits: Mapping[str, Limit] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    validation_error_shape: str = "envelope",
) -> Sandbox:
    """A Neuroon sandbox with these shops. ``rate_limits`` turns rate limiting on with these buckets
    (operation name → Limit); ``clock``/``sleep`` let tests run windows and latency in fake time."""
    sandbox = Sandbox(
        shops, clock=clock, wall_clock=wall_clock, validation_error_shape=validation_error_shape
    )
    if rate_limits is not None:
        sandbox.rate_limits.configure(True, rate_limits)
    plugin = PluginApi(sandbox)
    widget = WidgetApi(sandbox)

    def route(path: str, method: str, op: Operation, handler: Handler, *, auth: bool = True) -> Route:
        return Route(path, endpoint(sandbox, str(op), handler, auth=auth, sleep=sleep), methods=[method])

    routes = [
        route(f"{SHOPS}/me", "GET", Operation.SHOP_INFO, plugin.me),
        # The WordPress plugin's form, without a shopId: the key names the shop (neuroon-api.md §6.2).
        route(f"{SHOPS}/verify", "POST", Operation.VERIFY, plugin.verify),
        route(f"{SHOPS}/{{shop_id}}/products/sync", "POST", Operation.SYNC_PRODUCTS, plugin.sync),
        route(f"{SHOPS}/{{shop_id}}/products", "GET", Operation.LIST_PRODUCTS, plugin.list_products),
        # :path, because an externalId may contain an encoded "/".
        route(
            f"{SHOPS}/{{shop_id}}/products/{{external_id:path}}",
            "GET",
            Operation.GET_PRODUCT,
            plugin.get_product,
        ),
        route(
            f"{SHOPS}/{{shop_id}}/products/{{external_id:path}}",
            "DELETE",
            Operation.DELETE_PRODUCT,
            plugin.delete_product,
        ),
        route(f"{SHOPS}/{{shop_id}}/verify", "POST", Operation.VERIFY, plugin.verify),
        route(f"{SHOPS}/{{shop_id}}/verify", "DELETE", Operation.UNVERIFY, plugin.unverify),
        route(
            f"{SHOPS}/{{shop_id}}/verification-data",
            "GET",
            Operation.VERIFICATION_DATA,
            plugin.verification_data,
        ),
        route(
            f"{SHOPS}/{{shop_id}}/track/conversion",
            "POST",
            Operation.TRACK_CONVERSION,
            plugin.track_conversion,
        ),
        route(
            "/api/shops/{shop_id}/widget-token",
            "POST",
            Operation.ISSUE_WIDGET_TOKEN,
            plugin.issue_widget_token,
        ),
        route("/api/widget/search", "GET", Operation.WIDGET_SEARCH, widget.search, auth=False),
        *admin_routes(sandbox),
        Route("/actuator/health", _health, methods=["GET"]),
    ]

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return envelope(404, "No endpoint " + request.method + " " + request.url.path, request.url.path)
        return spring_default(exc.status_code, request.url.path)

    sandbox.app = Starlette(routes=routes, exception_handlers={HTTPException: on_http_error})
    return sandbox


async def _health(_: Request) -> Response:
    return Response(b'{"status":"UP"}', media_type="application/json")
