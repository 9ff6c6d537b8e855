"""One catalog run per shop at a time, across processes and machines: a Redis lock renewed while held."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from app.store.catalog import CatalogStore

log = logging.getLogger(__name__)

LOCK_TTL_MS = 60_000  # a crashed holder blocks the next run for at most a minute
RENEW_EVERY = 15.0


class LockBusy(Exception):
    """Another run for this shop holds the lock."""


@contextlib.asynccontextmanager
async def catalog_lock(store: CatalogStore, shop_id: str) -> AsyncIterator[None]:
    owner = secrets.token_hex(8)
    if not await store.acquire_lock(shop_id, owner, LOCK_TTL_MS):
        raise LockBusy(f"another catalog run for shop {shop_id} is in progress")

    async def renew() -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            if not await store.renew_lock(shop_id, owner, LOCK_TTL_MS):
                # Expired while we were stalled for longer than its TTL: another run may start now.
                log.warning("catalog_lock_lost", extra={"shop": shop_id})
                return

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.release_lock(shop_id, owner)
