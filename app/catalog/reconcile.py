"""Deletions: one product at a time, and the nightly reconcile that deletes what the feed no longer has.

"POST /products/sync does not handle deletions — products you stop sending stay in Neuroon." The
reconcile lists Neuroon's catalog with the cursor listing (the docs' own sample), or, when Neuroon
does not provide it (404), takes our ledger as the catalog. It refuses to delete more than a share of
the catalog: an empty or truncated feed would otherwise empty the index.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.catalog.feed import FeedRow
from app.catalog.mapping import FieldMapping
from app.catalog.platforms import NEUROON_FIELDS, Expander
from app.identifiers import normalise_identifier
from app.neuroon.client import NeuroonClient
from app.neuroon.errors import NeuroonError, NeuroonRejected
from app.product_identity import product_identity
from app.shops import Shop
from app.store.catalog import CatalogStore

DELETES_IN_FLIGHT = 4
BLANK_ID = "blank once invisible characters are removed"


@dataclass
class DeleteReport:
    deleted: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


async def delete_products(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, external_ids: Sequence[str]
) -> DeleteReport:
    """DELETE each product; a 404 counts as done. The ledger forgets what is gone.

    Ids take the normal form the sync gave every externalId (app/identifiers.py), so " SKU-1 " deletes
    the product synced as "SKU-1" (Neuroon answers 204 to an id it does not have: a miss is silent)."""
    report = DeleteReport()
    wanted: dict[str, None] = {}
    for given in external_ids:
        if external_id := normalise_identifier(given):
            wanted[external_id] = None
        else:
            report.failed[given] = BLANK_ID
    gate = asyncio.Semaphore(DELETES_IN_FLIGHT)

    async def one(external_id: str) -> None:
        async with gate:
            try:
                existed = await neuroon.delete_product(shop, external_id)
            except NeuroonError as exc:
                report.failed[external_id] = exc.message
                return
        await store.forget(shop.id, [external_id])
        (report.deleted if existed else report.already_gone).append(external_id)

    await asyncio.gather(*(one(i) for i in wanted))
    return report


@dataclass
class ReconcileReport:
    source: str = "neuroon"  # where the catalog came from: "neuroon" (cursor listing) or "ledger"
    feed_ids: int = 0
    unreadable_rows: int = 0
    catalog: int = 0
    to_delete: list[str] = field(default_factory=list)
    max_delete_ratio: float = 0.2
    refused: str | None = None
    dry_run: bool = False
    deletions: DeleteReport | None = None

    @property
    def ok(self) -> bool:
        return self.refused is None and (self.deletions is None or self.deletions.ok)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "feedProducts": self.feed_ids,
            "unreadableRows": self.unreadable_rows,
            "catalog": self.catalog,
            "toDelete": self.to_delete,
            "maxDeleteRatio": self.max_delete_ratio,
            "refused": self.refused,
            "dryRun": self.dry_run,
        }
        if self.deletions is not None:
            out |= {
                "deleted": self.deletions.deleted,
                "alreadyGone": self.deletions.already_gone,
                "failed": self.deletions.failed,
            }
        return out

    def to_text(self) -> str:
        source = "Neuroon's listing" if self.source == "neuroon" else "our ledger (Neuroon has no listing)"
        lines = [
            f"catalog reconcile: {self.feed_ids} products in the feed, {self.catalog} in the catalog "
            f"({source}); {len(self.to_delete)} no longer in the feed",
        ]
        if self.unreadable_rows:
            lines.append(f"  {self.unreadable_rows} feed rows without a readable externalId were ignored")
        if self.refused:
            lines.append(f"  REFUSED, nothing deleted: {self.refused}")
        verb = "would delete" if self.dry_run or self.refused else "to delete"
        lines += [f"  {verb}: {i}" for i in self.to_delete[:1000]]
        if len(self.to_delete) > 1000:
            lines.append(f"  … and {len(self.to_delete) - 1000} more")
        if self.deletions is not None:
            d = self.deletions
            lines.append(
                f"  deleted: {len(d.deleted)}, already gone: {len(d.already_gone)}, failed: {len(d.failed)}"
            )
            lines += [f"    failed {i}: {reason}" for i, reason in d.failed.items()]
        return "\n".join(lines)


def feed_ids(rows: Iterable[FeedRow], mapping: FieldMapping, shop: Shop) -> tuple[set[str], int]:
    """Every externalId the feed names, valid row or not: a product whose row has a bad price is still
    in the shop, and must not be deleted. Read as the sync reads it (platform JSON, the shop's product
    identity). Returns (ids, rows without a readable id)."""
    identity = product_identity(shop)
    flat = mapping.with_identity(identity)
    ids: set[str] = set()
    unreadable = 0
    for row in Expander(identity, shop.config.shop_url).expand(rows):
        columns = NEUROON_FIELDS if row.converted else flat
        external_id = columns.external_id(row.data) if row.data is not None else row.external_id
        if external_id is None:
            unreadable += 1
        else:
            ids.add(external_id)
    return ids, unreadable


async def catalog_ids(shop: Shop, neuroon: NeuroonClient, store: CatalogStore) -> tuple[list[str], str]:
    """Neuroon's catalog from the cursor listing, or our ledger when the listing answers 404."""
    try:
        return [p.external_id async for p in neuroon.iter_products(shop, limit=500)], "neuroon"
    except NeuroonRejected as exc:
        if exc.status != 404:
            raise
    return [i async for i in store.ids(shop.id)], "ledger"


async def reconcile(
    shop: Shop,
    neuroon: NeuroonClient,
    store: CatalogStore,
    rows: Iterable[FeedRow],
    mapping: FieldMapping,
    *,
    max_delete_ratio: float,
    dry_run: bool,
) -> ReconcileReport:
    report = ReconcileReport(max_delete_ratio=max_delete_ratio, dry_run=dry_run)
    present, report.unreadable_rows = feed_ids(rows, mapping, shop)
    report.feed_ids = len(present)
    catalog, report.source = await catalog_ids(shop, neuroon, store)
    report.catalog = len(catalog)
    report.to_delete = sorted(i for i in set(catalog) if i not in present)
    if report.to_delete and len(report.to_delete) > max_delete_ratio * len(catalog):
        share = len(report.to_delete) / len(catalog)
        report.refused = (
            f"{len(report.to_delete)} of {len(catalog)} products ({share:.0%}) would be deleted, more than "
            f"--max-delete-ratio {max_delete_ratio:g}; an empty or truncated feed looks like this. "
            "Check the feed, or raise --max-delete-ratio if the deletions are intended"
        )
        return report
    if not dry_run and report.to_delete:
        report.deletions = await delete_products(shop, neuroon, store, report.to_delete)
    return report
