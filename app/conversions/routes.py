"""Order webhook endpoints (interface.md §3.2): thin handlers over ``intake``.

The webhooks' POSTs are answered by ``endpoint.WebhookEndpoint`` ahead of the router (the hot
path); these routes document them and would serve them the same way without it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.clientaddress import client_of
from app.conversions import attribution, intake
from app.cors import check_origin, cors_headers, preflight_headers
from app.deps import StateDep
from app.errors import GatewayError

router = APIRouter(tags=["order webhooks"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "accepted (durably queued), duplicate, or ignored with a reason"},
    400: {"description": "malformed_payload, naming the problem"},
    401: {"description": "invalid_signature"},
    404: {"description": "unknown_shop"},
    413: {"description": "payload_too_large"},
    415: {"description": "unsupported_media_type"},
}


@router.post("/v1/webhooks/shopify", summary="Shopify order webhook", responses=_RESPONSES)
async def shopify_webhook(request: Request, state: StateDep) -> dict[str, Any]:
    body = await intake.read_body(request.receive, request.headers, state.settings.gateway_webhook_max_bytes)
    return await intake.receive_shopify(state.intake, request.headers, body)


@router.post("/v1/webhooks/woocommerce", summary="WooCommerce order webhook", responses=_RESPONSES)
async def woocommerce_webhook(request: Request, state: StateDep) -> dict[str, Any]:
    body = await intake.read_body(request.receive, request.headers, state.settings.gateway_webhook_max_bytes)
    return await intake.receive_woocommerce(state.intake, request.headers, body)


@router.post("/v1/webhooks/orders", summary="Generic order webhook (Standard Webhooks)", responses=_RESPONSES)
async def generic_webhook(request: Request, state: StateDep) -> dict[str, Any]:
    body = await intake.read_body(request.receive, request.headers, state.settings.gateway_webhook_max_bytes)
    return await intake.receive_generic(state.intake, request.headers, body)


@router.post(
    "/v1/webhooks/orders/{shop_id}",
    summary="Generic order webhook of one shop (Standard Webhooks)",
    description="Only this shop's secrets are tried: the URL to give each shop when several are configured.",
    responses=_RESPONSES,
)
async def generic_webhook_of_shop(request: Request, state: StateDep, shop_id: str) -> dict[str, Any]:
    body = await intake.read_body(request.receive, request.headers, state.settings.gateway_webhook_max_bytes)
    return await intake.receive_generic(state.intake, request.headers, body, shop_id)


# --- storefront attribution -----------------------------------------------------------------


@router.post(
    "/v1/attribution",
    summary="Remember the shopper's clicks for a cart (browser)",
    status_code=204,
    tags=["attribution"],
    responses={
        400: {"description": "malformed_payload"},
        403: {"description": "origin_required (no Origin header) or origin_not_allowed"},
        413: {"description": "payload_too_large"},
        415: {"description": "unsupported_media_type"},
        429: {"description": "rate_limited, with Retry-After"},
    },
)
async def post_attribution(
    request: Request, state: StateDep, shop_id: str | None = Query(None, alias="shopId", max_length=128)
) -> Response:
    origin = request.headers.get("origin")
    if origin is None:
        # Every browser sends Origin on a POST, so only scripts omit it: the shopper's clicks come
        # from the storefront's pages (a server has the order webhook's clicks and attributes).
        raise GatewayError(403, "origin_required", "POST /v1/attribution needs the storefront's Origin")
    shop = state.shops.resolve(shop_id, origin)
    check_origin(shop, origin)
    try:
        await state.attribution_limiter.enforce(client_of(request.scope, state.settings), "attribution")
        body = await intake.read_body(request.receive, request.headers, attribution.MAX_BODY_BYTES)
        await attribution.remember(
            state.conversions, state.intake.deadline, shop, request.headers, body, request.cookies
        )
    except GatewayError as exc:
        # The storefront's script must be able to read a refusal (a 400 is final, a 429 is not):
        # without CORS headers the browser hides every error behind a network failure.
        exc.headers.update(cors_headers(origin))
        raise
    return Response(status_code=204, headers=cors_headers(origin))


@router.options("/v1/attribution", include_in_schema=False)
async def attribution_preflight(
    request: Request, state: StateDep, shop_id: str | None = Query(None, alias="shopId", max_length=128)
) -> Response:
    origin = request.headers.get("origin")
    if origin is None:
        raise GatewayError(400, "not_a_preflight", "a CORS preflight carries an Origin header")
    check_origin(state.shops.resolve(shop_id, origin), origin)
    headers = preflight_headers(
        origin, "POST, OPTIONS", request.headers.get("access-control-request-headers")
    )
    return Response(status_code=204, headers=headers)


@router.get("/v1/attribution.js", summary="The storefront attribution script", tags=["attribution"])
async def attribution_script() -> Response:
    return Response(
        attribution.script(),
        media_type="text/javascript",
        headers={"cache-control": "public, max-age=3600", "access-control-allow-origin": "*"},
    )
