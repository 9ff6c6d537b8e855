"""Operations routes: /livez touches nothing, /readyz pings Redis with a short timeout, /metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

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
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
