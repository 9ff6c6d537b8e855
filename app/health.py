"""Operations routes: /livez touches nothing, /readyz pings Redis with a short timeout, /metrics."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.responses import JSONResponse, Response

from app.catalog.service import refresh_metrics as refresh_catalog_metrics
from app.deps import StateDep

router = APIRouter(tags=["operations"])

READY_TIMEOUT_SECONDS = 1.0


@router.get("/livez", summary="The process is running")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Redis answers",
    responses={503: {"description": "Redis does not answer"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    try:
        ok = await asyncio.wait_for(state.store.ping(), READY_TIMEOUT_SECONDS)
    except TimeoutError:
        ok = False
    if ok:
        return JSONResponse({"status": "ok", "redis": "up"})
    return JSONResponse({"error": "not_ready", "detail": "Redis does not answer", "redis": "down"}, 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics(state: StateDep) -> Response:
    # Catalog totals are shared through Redis (runs happen in CLI processes too); without Redis the
    # last known values are served.
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await asyncio.wait_for(refresh_catalog_metrics(state.catalog, state.shops), READY_TIMEOUT_SECONDS)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
