"""GET /v1/widget-token (interface.md §3.1) and its CORS preflight.

This is the gateway's hot path: every storefront page view may ask for a token. It is served by
this ASGI component, placed ahead of FastAPI's router, so a cached token costs a dictionary
lookup and one pre-rendered body: no routing, no dependency solving, no serialisation. (Measured
in `make bench`: through the router it cost about three times a bare FastAPI hello-world.) Its
OpenAPI entry is written out in ``OPENAPI_PATH`` below.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app import metrics
from app.clientaddress import client_of
from app.cors import check_origin, cors_headers, preflight_headers
from app.errors import ErrorBody, GatewayError, error_response, internal_error_response
from app.middleware import RouteLabel
from app.state import GatewayState

PATH = "/v1/widget-token"
ROUTE = RouteLabel(PATH)
MAX_SHOP_ID_LENGTH = 128


class WidgetToken(BaseModel):
    token: str
    shopId: str  # camelCase: this is the wire format
    issuedAt: int
    expiresAt: int
    refreshAfter: int


def _shop_id_param(query_string: bytes) -> str | None:
    if not query_string:
        return None
    values = parse_qs(query_string.decode("latin-1")).get("shopId")
    if not values:
        return None
    if len(values[0]) > MAX_SHOP_ID_LENGTH:
        raise GatewayError(400, "invalid_request", f"shopId: at most {MAX_SHOP_ID_LENGTH} characters")
    return values[0]


class WidgetTokenEndpoint:
    """Answers /v1/widget-token itself; passes every other request on to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        scope["route"] = ROUTE
        response: RawResponse | Response
        try:
            response = await self._handle(scope)
        except GatewayError as exc:
            response = error_response(exc.status, exc.code, exc.detail, exc.headers)
        except Exception as exc:
            # Ahead of FastAPI's error middleware, so we keep its promise ourselves.
            response = internal_error_response(exc)
        await response(scope, receive, send)

    async def _handle(self, scope: Scope) -> RawResponse:
        headers = {k: v for k, v in scope["headers"] if k in _WANTED_HEADERS}
        origin = headers[b"origin"].decode("latin-1") if b"origin" in headers else None
        state: GatewayState = scope["state"]["gateway"]
        shop = state.shops.resolve(_shop_id_param(scope["query_string"]), origin)
        if scope["method"] == "OPTIONS":
            if origin is None:
                raise GatewayError(400, "not_a_preflight", "a CORS preflight carries an Origin header")
            check_origin(shop, origin)
            requested = headers.get(b"access-control-request-headers")
            return RawResponse(
                204, b"", preflight_headers(origin, "GET, OPTIONS", requested and requested.decode())
            )
        if scope["method"] not in ("GET", "HEAD"):
            raise GatewayError(
                405, "method_not_allowed", "Method Not Allowed", headers={"allow": "GET, OPTIONS"}
            )
        check_origin(shop, origin)
        await state.token_limiter.enforce(client_of(scope, state.settings), "token")
        entry, source = await state.tokens.get(shop)
        metrics.token_served(shop.id, source).inc()
        out = cors_headers(origin)
        out["cache-control"] = f"private, max-age={state.tokens.max_age(entry)}"
        out["content-type"] = "application/json"
        return RawResponse(200, entry.body, out)


_WANTED_HEADERS = frozenset({b"origin", b"access-control-request-headers"})


class RawResponse:
    """A response as two ASGI messages. Starlette's Response normalises its headers on every
    construction, which is measurable on this path; ours are lower-case already."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        self.headers.append((b"content-length", str(len(body)).encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else self.body})


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


OPENAPI_PATH: dict[str, Any] = {
    PATH: {
        "get": {
            "tags": ["widget token"],
            "summary": "The shop's current widget token",
            "operationId": "widget_token",
            "parameters": [
                {
                    "name": "shopId",
                    "in": "query",
                    "required": False,
                    "description": "the shop (several shops); else the shop whose origins contain Origin",
                    "schema": {"type": "string", "maxLength": MAX_SHOP_ID_LENGTH},
                }
            ],
            "responses": {
                "200": {
                    "description": "the current token; Cache-Control: private, max-age=<refreshAfter - now>",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WidgetToken"}}},
                },
                "400": _error("shop_required or invalid_request"),
                "403": _error("origin_not_allowed"),
                "404": _error("unknown_shop"),
                "429": _error("rate_limited, with Retry-After"),
            },
        }
    }
}
OPENAPI_SCHEMAS: dict[str, Any] = {
    "WidgetToken": WidgetToken.model_json_schema(),
    "ErrorBody": ErrorBody.model_json_schema(),
}
