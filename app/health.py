"""Operations routes: /livez touches nothing, /readyz proves this process can write where its
shops' data lives, /metrics. ``not_ready_reason`` is the readiness check, for any listener: the
metrics listener (``app/metrics_listener.py``: ``GATEWAY_METRICS_ADDRESS``, and the ``worker``
process's) serves the very same answers through ``readiness_response`` and ``metrics_page``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import redis.asyncio as aioredis
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from starlette.responses import JSONResponse, Response

from app import metrics
from app.catalog.service import refresh_metrics as refresh_catalog_metrics
from app.deps import StateDep
from app.state import GatewayState
from app.store import probe_writes

router = APIRouter(tags=["operations"])
# Served by the API's listener only while no metrics listener is configured (app/main.py).
metrics_router = APIRouter(tags=["operations"])

# Under Kubernetes' default probe timeout (1 s), so the probe gets our 503 and its reason rather
# than a timeout of its own.
READY_TIMEOUT_SECONDS = 0.8


async def not_ready_reason(
    redis: aioredis.Redis, shop_ids: Iterable[str], within: float = READY_TIMEOUT_SECONDS
) -> str | None:
    """None when this process can write to the primary owning each shop's data; else why not.

    A write, not a PING: a replica, a cluster node that does not own the shop's slot and a primary
    demoted mid-failover all answer PING, and none of them can take an order. Reasons are fixed
    texts (no addresses, ids or server messages: /readyz may be reachable from outside).
    """
    try:
        async with asyncio.timeout(within):
            await probe_writes(redis, list(shop_ids))
    except TimeoutError:
        return f"Redis did not answer within {within:g}s"
    except ReadOnlyError:
        return "Redis is a read-only replica: writes must go to the primary"
    except ResponseError as exc:
        return f"Redis refused a write ({_error_code(exc)})"
    except (RedisConnectionError, OSError):
        return "Redis is unreachable"
    except RedisError as exc:
        return f"Redis failed ({type(exc).__name__})"
    return None


def _error_code(exc: ResponseError) -> str:
    """The error's code only (OOM, MOVED, CLUSTERDOWN, MISCONF...): the rest may name hosts.

    redis-py drops the code from the message of the errors it has a class for.
    """
    for cls, code in ((OutOfMemoryError, "OOM"), (NoPermissionError, "NOPERM")):
        if isinstance(exc, cls):
            return code
    first = str(exc).split(" ", 1)[0]
    return first if first.isalpha() and first.isupper() else "error"


@router.get("/livez", summary="The process is running")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="This process can write to the Redis primary that owns its shops' data",
    responses={503: {"description": "not_ready, with the reason in detail"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    return readiness_response(await not_ready_reason(state.store.redis, (shop.id for shop in state.shops)))


def readiness_response(reason: str | None) -> JSONResponse:
    # Every listener's /readyz answers through here: the gauge is the last answer, for the alert.
    metrics.readiness.last = reason is None
    if reason is None:
        return JSONResponse({"status": "ok", "redis": "up"})
    return JSONResponse({"error": "not_ready", "detail": reason, "redis": "down"}, 503)


async def metrics_page(state: GatewayState) -> Response:
    # Catalog totals are shared through Redis (runs happen in CLI processes too); without Redis the
    # last known values are served.
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await asyncio.wait_for(refresh_catalog_metrics(state.catalog, state.shops), READY_TIMEOUT_SECONDS)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics(state: StateDep) -> Response:
    return await metrics_page(state)
