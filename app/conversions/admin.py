"""Admin endpoints of the conversion pipeline (interface.md §3.4), behind bearer JWTs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query

from app.auth import AdminDep
from app.conversions import deadletters
from app.deps import StateDep
from app.errors import GatewayError
from app.state import GatewayState

router = APIRouter(
    tags=["admin"],
    responses={
        401: {"description": "unauthorized: no valid bearer token"},
        404: {"description": "not_found"},
    },
)


def _shop_id(state: GatewayState, shop_id: str | None) -> str:
    if shop_id is not None:
        if state.shops.get(shop_id) is None:
            raise GatewayError(404, "unknown_shop", "no shop with this shopId is configured")
        return shop_id
    single = state.shops.single
    if single is None:
        raise GatewayError(400, "shop_required", "several shops are configured: pass ?shopId=")
    return single.id


@router.get("/v1/admin/conversions/{order_id:path}", summary="One order's delivery state")
async def get_conversion(
    _: AdminDep,
    state: StateDep,
    order_id: str = Path(max_length=256),
    shop_id: str | None = Query(None, alias="shopId", max_length=128),
) -> dict[str, Any]:
    found = await deadletters.conversion_state(state.conversions, _shop_id(state, shop_id), order_id)
    if found is None:
        raise GatewayError(
            404, "not_found", "no order with this orderId was accepted, or ignored in the last 7 days"
        )
    return found


@router.get("/v1/admin/dead-letters", summary="Conversions that could not be delivered")
async def list_dead_letters(
    _: AdminDep,
    state: StateDep,
    shop_id: str | None = Query(None, alias="shopId", max_length=128),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    try:
        letters = await deadletters.list_dead_letters(state.conversions, state.shops, shop_id, limit)
    except deadletters.UnknownId:
        raise GatewayError(404, "unknown_shop", "no shop with this shopId is configured") from None
    return {"deadLetters": [letter.to_json() for letter in letters]}


@router.post("/v1/admin/dead-letters/{dead_letter_id:path}/replay", summary="Queue a dead letter again")
async def replay_dead_letter(
    _: AdminDep, state: StateDep, dead_letter_id: str = Path(max_length=400)
) -> dict[str, Any]:
    try:
        replayed = await deadletters.replay(state.conversions, state.shops, dead_letter_id)
    except deadletters.UnknownId:
        replayed = False
    if not replayed:
        raise GatewayError(404, "not_found", "no dead letter has this id")
    return {"status": "replayed", "id": dead_letter_id}
