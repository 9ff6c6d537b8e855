"""``neuroon-gateway worker``: the delivery worker as a process of its own, stopped by SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from app.conversions.worker import DeliveryWorker, monitor_queues, running
from app.main import WORKER_SOCKET_TIMEOUT, warn_if_redis_can_lose_conversions
from app.neuroon.client import NeuroonClient, build_http_client
from app.settings import Settings
from app.shops import ShopRegistry
from app.store import connect
from app.store.conversions import ConversionStore

log = logging.getLogger(__name__)

DRAIN_SECONDS = 20.0


async def run_worker_process(settings: Settings, shops: ShopRegistry, redis_url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    redis = connect(redis_url, socket_timeout=WORKER_SOCKET_TIMEOUT)
    store = ConversionStore(redis)
    http = build_http_client(settings)
    try:
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
