"""Admin endpoints of the catalog (interface.md §3.4), behind bearer JWTs. Thin: parse, call the
service, answer. A push is always INCREMENTAL: FULL is never triggered from the admin API."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import JSONResponse

from app.auth import AdminDep
from app.catalog.feed import FeedRow
from app.catalog.mapping import MappingError, load_mapping
from app.catalog.normalise import Rules
from app.catalog.reconcile import BLANK_ID, delete_products
from app.catalog.service import record_deleted, sync_feed
from app.catalog.sync import SyncOptions
from app.catalog.verify import verify_domain
from app.deps import StateDep
from app.errors import GatewayError

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_PRODUCTS = 5000

router = APIRouter(
    tags=["admin"],
    responses={
        401: {"description": "unauthorized: no valid bearer token"},
        404: {"description": "not_found"},
    },
)

PUSH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["products"],
                    "properties": {
                        "products": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_PRODUCTS,
                            "items": {"type": "object", "description": "a feed row (docs/catalog.md)"},
                        }
                    },
                }
            }
        },
    }
}


async def _products(request: Request) -> list[Any]:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise GatewayError(415, "unsupported_media_type", "send the products as application/json")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise GatewayError(413, "payload_too_large", f"at most {MAX_BODY_BYTES} bytes per push")
    try:
        data = json.loads(body, parse_float=Decimal)  # prices never pass through a float
    except (ValueError, RecursionError):
        raise GatewayError(400, "malformed_payload", "the body is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("products"), list):
        raise GatewayError(400, "malformed_payload", 'the body must be {"products": [...]}')
    if str(data.get("syncType", "INCREMENTAL")).upper() != "INCREMENTAL":
        raise GatewayError(400, "full_sync_refused", "FULL is never triggered from the admin API")
    products: list[Any] = data["products"]
    if not 1 <= len(products) <= MAX_PRODUCTS:
        raise GatewayError(400, "malformed_payload", f"products: 1 to {MAX_PRODUCTS} per push")
    return products


@router.post(
    "/v1/admin/catalog/products",
    summary="Push product changes (normalised and batched as `catalog sync`; always INCREMENTAL)",
    openapi_extra=PUSH_BODY,
    responses={
        400: {"description": "malformed_payload / full_sync_refused"},
        413: {"description": "payload_too_large"},
        415: {"description": "unsupported_media_type"},
        422: {"description": "nothing_accepted: every row was rejected; the body is the report"},
        502: {"description": "upstream_failed: Neuroon did not take every batch"},
        503: {"description": "not_configured: GATEWAY_PRICES_INCLUDE_TAX is not set"},
    },
)
async def push_products(
    _: AdminDep,
    state: StateDep,
    request: Request,
    shop_id: str | None = Query(None, alias="shopId", max_length=128),
    force: bool = Query(False, description="Send products the ledger says are unchanged."),
    overwrite_drift: bool = Query(False, alias="overwriteDrift"),
) -> JSONResponse:
    shop = state.shops.resolve(shop_id)
    products = await _products(request)
    settings = state.settings
    if settings.gateway_prices_include_tax is None:
        raise GatewayError(503, "not_configured", "GATEWAY_PRICES_INCLUDE_TAX is not set")
    try:
        mapping = load_mapping(settings.gateway_catalog_field_map)
    except MappingError as exc:
        raise GatewayError(503, "not_configured", str(exc)) from None
    # line: the 1-based position (as before); element: the index in "products" (0-based, like a JSON path).
    rows = [
        FeedRow(n + 1, p, element=n)
        if isinstance(p, dict)
        else FeedRow(n + 1, None, "a product must be a JSON object", n)
        for n, p in enumerate(products)
    ]
    options = SyncOptions(
        prices_include_tax=settings.gateway_prices_include_tax,
        rules=Rules(settings.gateway_description_soft_limit, mapping),
        batch_size=settings.gateway_catalog_batch_size,
        concurrency=settings.gateway_catalog_concurrency,
        force=force,
        overwrite_drift=overwrite_drift,
    )
    report = await sync_feed(rows, shop, state.neuroon, state.catalog, options)
    if not report.ok:
        return JSONResponse(report.to_json(), status_code=502)
    if report.nothing_accepted:
        # A client that checks only the status must not take "every row refused" for success.
        detail = "no product was accepted: every row was rejected (see rejectedRows)"
        body = {"error": "nothing_accepted", "detail": detail} | report.to_json()
        return JSONResponse(body, status_code=422)
    return JSONResponse(report.to_json())


@router.delete(
    "/v1/admin/catalog/products/{external_id:path}",
    summary="Delete a product (already gone counts as deleted; the id is read in its normal form)",
    responses={
        400: {"description": "invalid_request: the externalId is blank once normalised"},
        502: {"description": "upstream_failed"},
    },
)
async def delete_product(
    _: AdminDep,
    state: StateDep,
    external_id: str = Path(min_length=1, max_length=512),
    shop_id: str | None = Query(None, alias="shopId", max_length=128),
) -> dict[str, Any]:
    shop = state.shops.resolve(shop_id)
    report = await delete_products(shop, state.neuroon, state.catalog, [external_id])
    if report.failed.get(external_id) == BLANK_ID:
        raise GatewayError(400, "invalid_request", f"externalId: {BLANK_ID}")
    if not report.ok:
        [reason] = report.failed.values()
        raise GatewayError(502, "upstream_failed", f"Neuroon did not delete it: {reason}")
    await record_deleted(state.catalog, shop.id, 1)
    [deleted] = report.deleted + report.already_gone  # in its normal form, as the sync sent it
    return {"externalId": deleted, "deleted": True, "alreadyGone": bool(report.already_gone)}


@router.post(
    "/v1/admin/domain/verify",
    summary="Verify the shop's domain with Neuroon (already verified counts as success)",
    responses={
        502: {
            "description": "origin_mismatch / upstream_refused: Neuroon refused, the detail says what to fix"
        },
        503: {"description": "upstream_unavailable"},
    },
)
async def verify(
    _: AdminDep, state: StateDep, shop_id: str | None = Query(None, alias="shopId", max_length=128)
) -> dict[str, Any]:
    result = await verify_domain(state.shops.resolve(shop_id), state.neuroon)
    if not result.ok:
        status = 503 if result.status == "unavailable" else 502
        code = {"origin_mismatch": "origin_mismatch", "unavailable": "upstream_unavailable"}.get(
            result.status, "upstream_refused"
        )
        raise GatewayError(status, code, result.message)
    return {"status": result.status, "message": result.message, "verificationCode": result.verification_code}
