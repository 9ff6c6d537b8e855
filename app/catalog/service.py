"""The catalog's entry points for the CLI and the admin API: a run, and what it leaves for /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterable

from app import metrics
from app.catalog.feed import FeedRow
from app.catalog.sync import ProgressHook, SyncOptions, SyncReport, SyncRun
from app.neuroon.client import NeuroonClient
from app.shops import Shop, ShopRegistry
from app.store.catalog import CatalogStore


async def sync_feed(
    rows: Iterable[FeedRow],
    shop: Shop,
    neuroon: NeuroonClient,
    store: CatalogStore,
    options: SyncOptions,
    progress: ProgressHook | None = None,
) -> SyncReport:
    report = await SyncRun(shop, neuroon, store, options, progress).run(rows)
    if not options.dry_run:
        outcomes = report.outcomes()
        outcomes["orphan"] = report.orphan_count
        await store.add_outcomes(shop.id, outcomes)
        if report.ok:
            await store.set_last_sync(shop.id, time.time())
    return report


async def record_deleted(store: CatalogStore, shop_id: str, deleted: int) -> None:
    await store.add_outcomes(shop_id, {"deleted": deleted})


async def refresh_metrics(store: CatalogStore, shops: ShopRegistry) -> None:
    """Copy the shared totals from Redis into the /metrics collector (one round trip per shop)."""
    for shop in shops:
        for outcome, value in (await store.outcomes(shop.id)).items():
            metrics.catalog.products[(shop.id, outcome)] = value
        last = await store.last_sync(shop.id)
        if last is not None:
            metrics.catalog.last_success[shop.id] = last
