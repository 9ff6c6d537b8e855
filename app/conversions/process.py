"""``neuroon-gateway worker``: the delivery worker as a process of its own, stopped by SIGTERM/SIGINT,
with its metrics and probes (/metrics, /livez, /readyz) on the metrics listener when one is asked for."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from app import health, metrics_listener
from app.conversions.worker import DeliveryWorker, monitor_queues, running
from app.main import WORKER_SOCKET_TIMEOUT, ack_durability, warn_if_redis_can_lose_conversions
from app.neuroon.client import NeuroonClient, build_http_client
from app.settings import Settings
from app.shops import ShopRegistry
from app.store import connect
from app.store.conversions import ConversionStore

log = logging.getLogger(__name__)

DRAIN_SECONDS = 20.0


async def _metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def run_worker_process(
    settings: Settings,
    shops: ShopRegistry,
    redis_url: str,
    listen: tuple[str, int] | None = None,
    listen_setting: str = "GATEWAY_METRICS_ADDRESS",
) -> None:
    """Deliver until SIGTERM/SIGINT. ``listen``: where to serve /metrics, /livez and /readyz
    (``listen_setting`` names where that address came from, for the error when it is taken)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    redis = connect(redis_url, socket_timeout=WORKER_SOCKET_TIMEOUT)
    store = ConversionStore(redis, ack_durability(redis, settings))
    http = build_http_client(settings)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if listen is not None:
                # The same readiness check as the API's /readyz (app/health.py), on the worker's Redis.
                app = metrics_listener.listener_app(
                    _metrics, lambda: health.not_ready_reason(redis, [shop.id for shop in shops])
                )
                await stack.enter_async_context(metrics_listener.serving(app, *listen, listen_setting))
            await warn_if_redis_can_lose_conversions(store)
            worker = DeliveryWorker(store, shops, NeuroonClient.from_settings(http, settings), settings)
            monitor = asyncio.create_task(monitor_queues(store, shops))
            async with running(worker, grace=DRAIN_SECONDS):
                await stop.wait()
                log.info("worker_stopping", extra={"consumer": worker.name})
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
    finally:
        await http.aclose()
        await redis.aclose()
