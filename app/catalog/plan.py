"""Ordering and batching: variants after their parents, orphans held back, batches of at most N.

"Send the parent first … Orphan variants (no parent in the same batch nor previously synced) are
silently dropped." The planner sees products in feed order and releases each one only when its parent
has been released before it (in this run) or was synced in an earlier run; a variant whose parent
never shows up is an orphan. Released products keep their order, so a batch cut from them holds each
variant after its parent, or later than the batch holding it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from app.neuroon.models import Product, SyncType


@dataclass(slots=True)
class Planned:
    product: Product
    line: int


@dataclass(frozen=True, slots=True)
class Orphan:
    external_id: str
    parent_external_id: str
    line: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    external_id: str
    line: int
    first_line: int


class Planner:
    """Feed-ordered products in, parent-before-variant products out."""

    def __init__(self) -> None:
        self.first_line: dict[str, int] = {}  # every id seen this run (duplicates are refused)
        self.released: set[str] = set()
        self.waiting: dict[str, list[Planned]] = {}  # parent id -> variants waiting for it

    def needs_lookup(self, products: Iterable[Planned]) -> list[str]:
        """Parents that neither were released nor are in this chunk: ask the ledger about them."""
        here = {p.product.external_id for p in products}
        parents = {
            p.product.parent_external_id
            for p in products
            if p.product.parent_external_id and p.product.parent_external_id not in self.released
        }
        return sorted(parents - here)

    def add(self, item: Planned, synced: set[str]) -> list[Planned] | Duplicate:
        """Release ``item`` (with any variants it unblocks), hold it until its parent comes, or refuse a
        duplicate id. ``synced``: parents known to be in Neuroon already."""
        external_id = item.product.external_id
        first = self.first_line.get(external_id)
        if first is not None:
            return Duplicate(external_id, item.line, first)
        self.first_line[external_id] = item.line
        parent = item.product.parent_external_id
        if parent and parent not in self.released and parent not in synced:
            self.waiting.setdefault(parent, []).append(item)
            return []
        out: list[Planned] = []
        todo = [item]
        while todo:
            current = todo.pop(0)
            out.append(current)
            self.released.add(current.product.external_id)
            todo.extend(self.waiting.pop(current.product.external_id, []))
        return out

    def parents_still_missing(self) -> list[str]:
        return sorted(self.waiting)

    def finish(self, synced: set[str]) -> tuple[list[Planned], list[Orphan]]:
        """End of the feed: variants whose parent turned out to be synced already go; the rest are orphans."""
        released: list[Planned] = []
        for parent in list(self.waiting):
            if parent in synced:
                for item in self.waiting.pop(parent):
                    self.first_line.pop(item.product.external_id, None)
                    more = self.add(item, synced)
                    assert isinstance(more, list)
                    released.extend(more)
        orphans = [
            Orphan(item.product.external_id, parent, item.line)
            for parent, items in self.waiting.items()
            for item in items
        ]
        # Variants of orphans are orphans too (their parent is never sent).
        return released, sorted(orphans, key=lambda o: o.line)


def idempotency_key(shop_id: str, product_ids: Sequence[str], sync_type: SyncType) -> str:
    """md5 of ``shopId:productIds:syncType`` as the docs suggest, the ids joined with "," in batch order:
    ``md5("shop_abc:SKU-1,SKU-2:INCREMENTAL")``."""
    text = f"{shop_id}:{','.join(product_ids)}:{sync_type.value}"
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def content_hash(product: Product) -> str:
    """What the ledger compares: the product exactly as it would go on the wire."""
    return hashlib.sha256(orjson.dumps(product.to_wire(), option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
