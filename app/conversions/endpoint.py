"""The order webhooks' fast path: POSTs to the webhook URLs are answered here, ahead of
FastAPI's middleware and router, like the widget token (see app/tokens/endpoint.py).

Measured in ``make bench``: routing and dependency solving cost more than the whole intake. The
FastAPI routes in ``routes.py`` stay: they document the endpoints (OpenAPI) and answer every
other method. The work itself is the same ``intake`` functions either way.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from app.conversions import intake
from app.errors import GatewayError, error_response, internal_error_response
from app.middleware import RouteLabel
from app.state import GatewayState
from app.tokens.endpoint import RawResponse

Receiver = Callable[[intake.Intake, Mapping[str, str], bytes], Awaitable[dict[str, Any]]]

RECEIVERS: dict[str, tuple[RouteLabel, Receiver]] = {
    "/v1/webhooks/shopify": (RouteLabel("/v1/webhooks/shopify"), intake.receive_shopify),
    "/v1/webhooks/woocommerce": (RouteLabel("/v1/webhooks/woocommerce"), intake.receive_woocommerce),
    "/v1/webhooks/orders": (RouteLabel("/v1/webhooks/orders"), intake.receive_generic),
}
# The generic webhook of one named shop: /v1/webhooks/orders/{shopId}.
GENERIC_PREFIX = "/v1/webhooks/orders/"
GENERIC_OF_SHOP = RouteLabel("/v1/webhooks/orders/{shop_id}")


def _target(path: str) -> tuple[RouteLabel, Receiver] | None:
    target = RECEIVERS.get(path)
    if target is None and path.startswith(GENERIC_PREFIX):
        shop_id = path[len(GENERIC_PREFIX) :]
        if shop_id and "/" not in shop_id:
            return GENERIC_OF_SHOP, functools.partial(intake.receive_generic, shop_id=shop_id)
    return target


def is_webhook_post(scope: Scope) -> bool:
    """Whether this endpoint answers the request (a POST to a webhook URL)."""
    path: str = scope["path"]
    return scope["method"] == "POST" and (path in RECEIVERS or path.startswith(GENERIC_PREFIX))


class WebhookEndpoint:
    """Answers POSTs to the webhook URLs itself; passes every other request on to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = _target(scope["path"]) if scope["type"] == "http" else None
        if target is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        route, receiver = target
        scope["route"] = route
        state: GatewayState = scope["state"]["gateway"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        response: RawResponse | Any
        try:
            body = await intake.read_body(receive, headers, state.settings.gateway_webhook_max_bytes)
            result = await receiver(state.intake, headers, body)
            response = RawResponse(200, orjson.dumps(result), {"content-type": "application/json"})
        except ClientDisconnect:
            return
        except GatewayError as exc:
            response = error_response(exc.status, exc.code, exc.detail, exc.headers)
        except Exception as exc:
            # Ahead of FastAPI's error middleware, so we keep its promise ourselves.
            response = internal_error_response(exc)
        await response(scope, receive, send)
