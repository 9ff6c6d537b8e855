"""Ordering and batching: variants after their parents, orphans held back, batches of at most N products
and at most MAX_BATCH_BYTES of JSON.

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

# Neuroon documents at most 500 products per sync request but no body size limit (neuroon-api.md §5); the
# sandbox refuses bodies over 5 MiB as our stand-in for the unknown real one. 4 MiB leaves a fifth of that
# as margin; a smaller real limit is met by splitting on 413 (sync.py), so a guess too high costs requests,
# never products.
MAX_BATCH_BYTES = 4 * 1024 * 1024
# The request body around the products: {"syncType":"INCREMENTAL","products":[…]} (FULL is shorter).
ENVELOPE_BYTES = len(orjson.dumps({"syncType": SyncType.INCREMENTAL.value, "products": []}))


@dataclass(slots=True)
class Planned:
    product: Product
    line: int
    element: int | None = None  # its index, when the feed is a JSON array

    @property
    def position(self) -> int:
        return self.element if self.element is not None else self.line


@dataclass(frozen=True, slots=True)
class Orphan:
    external_id: str
    parent_external_id: str
    line: int
    element: int | None = None


class Planner:
    """Feed-ordered products in, parent-before-variant products out.

    Only the variants waiting for a parent are kept here. Which ids this run has seen (duplicates) and
    released (parents) is asked per chunk of the caller's run index in Redis, so memory does not grow
    with the feed.
    """

    def __init__(self) -> None:
        self.waiting: dict[str, list[Planned]] = {}  # parent id -> variants waiting for it
        self.waiting_ids: set[str] = set()

    def needs_lookup(self, chunk: Sequence[Planned]) -> list[str]:
        """Parents named in the chunk but not in it: the caller says which were released (earlier in this
        run, and not waiting) or synced in an earlier run."""
        here = {p.product.external_id for p in chunk}
        parents = {p.product.parent_external_id for p in chunk if p.product.parent_external_id}
        return sorted(p for p in parents - here if p is not None and p not in self.waiting_ids)

    def add(self, item: Planned, released: set[str]) -> list[Planned]:
        """Release ``item`` (with any variants it unblocks) or hold it until its parent comes.
        ``released``: parents known to be released in this run or present in Neuroon; it grows with
        what this call releases."""
        parent = item.product.parent_external_id
        if parent and parent not in released:
            self.waiting.setdefault(parent, []).append(item)
            self.waiting_ids.add(item.product.external_id)
            return []
        out: list[Planned] = []
        todo = [item]
        while todo:
            current = todo.pop(0)
            external_id = current.product.external_id
            out.append(current)
            released.add(external_id)
            self.waiting_ids.discard(external_id)
            todo.extend(self.waiting.pop(external_id, []))
        return out

    def parents_still_missing(self) -> list[str]:
        return sorted(p for p in self.waiting if p not in self.waiting_ids)

    def finish(self, synced: set[str]) -> tuple[list[Planned], list[Orphan]]:
        """End of the feed: variants whose parent turned out to be synced already go; the rest are orphans
        (variants of an orphan included: their parent is never sent)."""
        released: list[Planned] = []
        known = set(synced)
        for parent in list(self.waiting):
            if parent in synced and parent in self.waiting:
                for item in self.waiting.pop(parent):
                    released.extend(self.add(item, known))
        orphans = [
            Orphan(item.product.external_id, parent, item.line, item.element)
            for parent, items in self.waiting.items()
            for item in items
        ]
        return released, sorted(orphans, key=lambda o: (o.line, o.element or 0))


def encoded_size(product: Product) -> int:
    """Bytes the product takes in a sync request's body (the client encodes it the same way)."""
    return len(orjson.dumps(product.to_wire()))


def batch_length(sizes: Iterable[int], max_count: int, max_bytes: int = MAX_BATCH_BYTES) -> int:
    """How many of the products waiting (their encoded sizes, in order) the next batch takes: at most
    ``max_count``, and no more than keep the body within ``max_bytes``. Always at least one: a product over
    the budget on its own still goes, alone, and Neuroon decides (a 413 then rejects it with its size)."""
    total, count = ENVELOPE_BYTES, 0
    for size in sizes:
        grown = total + size + (1 if count else 0)  # products are joined by ","
        if count == max_count or (count and grown > max_bytes):
            break
        total, count = grown, count + 1
    return count


def idempotency_key(shop_id: str, product_ids: Sequence[str], sync_type: SyncType) -> str:
    """md5 of ``shopId:productIds:syncType`` as the docs suggest, the ids joined with "," in batch order:
    ``md5("shop_abc:SKU-1,SKU-2:INCREMENTAL")``."""
    text = f"{shop_id}:{','.join(product_ids)}:{sync_type.value}"
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def content_hash(product: Product) -> str:
    """What the ledger compares: the product exactly as it would go on the wire."""
    return hashlib.sha256(orjson.dumps(product.to_wire(), option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
