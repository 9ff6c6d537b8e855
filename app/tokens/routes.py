"""GET /v1/widget-token (interface.md §3.1) and its CORS preflight."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from app import metrics
from app.cors import check_origin, cors_headers, preflight_headers
from app.deps import StateDep
from app.errors import GatewayError
from app.ratelimit import client_address
from app.shops import Shop
from app.state import GatewayState

router = APIRouter(tags=["widget token"])


class WidgetToken(BaseModel):
    token: str
    shopId: str
    issuedAt: int
    expiresAt: int
    refreshAfter: int


def resolve_shop(state: GatewayState, shop_id: str | None, origin: str | None) -> Shop:
    """The shop a browser-facing request is for: ?shopId=, else the Origin's shop, else the only shop."""
    if shop_id is not None:
        shop = state.shops.get(shop_id)
        if shop is None:
            raise GatewayError(404, "unknown_shop", "no shop with this shopId is configured")
        return shop
    single = state.shops.single
    if single is not None:
        return single
    shop = state.shops.by_origin(origin.lower()) if origin else None
    if shop is None:
        raise GatewayError(400, "shop_required", "several shops are configured: pass ?shopId=")
    return shop


async def enforce_rate_limit(state: GatewayState, request: Request) -> None:
    peer = request.client.host if request.client else None
    client = client_address(
        peer, request.headers.get("x-forwarded-for"), state.settings.gateway_trusted_proxies
    )
    wait = await state.token_limiter.hit(client)
    if wait is not None:
        raise GatewayError(
            429,
            "rate_limited",
            "too many token requests from this address",
            headers={"retry-after": str(wait)},
        )


@router.get(
    "/v1/widget-token",
    summary="The shop's current widget token",
    response_model=WidgetToken,
    responses={
        400: {"description": "several shops are configured and none is named"},
        403: {"description": "origin_not_allowed"},
        404: {"description": "unknown_shop"},
        429: {"description": "rate_limited, with Retry-After"},
    },
)
async def widget_token(
    request: Request, state: StateDep, shop_id: str | None = Query(None, alias="shopId", max_length=128)
) -> Response:
    origin = request.headers.get("origin")
    shop = resolve_shop(state, shop_id, origin)
    check_origin(shop, origin)
    await enforce_rate_limit(state, request)
    entry, source = await state.tokens.get(shop)
    metrics.widget_tokens_served.labels(shop.id, source).inc()
    headers = cors_headers(origin)
    headers["cache-control"] = f"private, max-age={state.tokens.max_age(entry)}"
    # The body was rendered once when the token was cached: no per-request serialisation.
    return Response(entry.body, media_type="application/json", headers=headers)


@router.options("/v1/widget-token", include_in_schema=False)
async def widget_token_preflight(
    request: Request, state: StateDep, shop_id: str | None = Query(None, alias="shopId", max_length=128)
) -> Response:
    origin = request.headers.get("origin")
    if origin is None:
        raise GatewayError(400, "not_a_preflight", "a CORS preflight carries an Origin header")
    check_origin(resolve_shop(state, shop_id, origin), origin)
    headers = preflight_headers(origin, "GET, OPTIONS", request.headers.get("access-control-request-headers"))
    return Response(status_code=204, headers=headers)
