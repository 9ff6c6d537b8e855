"""The sync run: rows in, batches out to Neuroon, a report at the end.

Rows are read, normalised and planned in chunks; released products are compared with the ledger (delta
sync), cut into batches and handed to a few senders over a bounded queue, so memory stays flat while
the client's limiter paces the senders to Neuroon's budget. A batch waits for the earlier batches
holding parents of its variants (and, in a FULL run, for the FULL batch). Before a product synced in
an earlier run is overwritten, Neuroon's copy is compared with the snapshot we last sent (drift). The
ledger is written after each accepted batch, so a crashed run loses nothing: the rerun sends only what
is still missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from itertools import islice
from typing import Any

from app.catalog.feed import FeedRow, where
from app.catalog.mapping import IDS_FOR_SKU
from app.catalog.normalise import RowError, Rules, normalise
from app.catalog.plan import (
    Orphan,
    Planned,
    Planner,
    batch_length,
    content_hash,
    encoded_size,
    idempotency_key,
)
from app.catalog.platforms import NEUROON_FIELDS, Expander
from app.neuroon.client import NeuroonClient
from app.neuroon.errors import NeuroonError, NeuroonRejected
from app.neuroon.models import Product, SyncType
from app.product_identity import describe, product_identity
from app.settings import ProductIdentity
from app.shops import Shop
from app.store.catalog import CatalogStore, LedgerEntry

log = logging.getLogger(__name__)

CHUNK = 500  # rows normalised and looked up in the ledger together
# Normalising is CPU work, done in a worker thread NORMALISE_ROWS rows at a time: behind the admin API
# the event loop also serves tokens and webhooks. Under the GIL the thread does not make the run any
# faster, but the interpreter hands the GIL to the loop's thread within its switch interval (5 ms) each
# time the loop has work, so a request is answered between two bytecodes of the run. Measured with a
# push of 28 products of 250 fields of "<a" (0.7 s of CPU): in the loop, yielding between rows, a
# token waited 0.52 s, because each of its many awaits waited for a row (22 ms); with the thread, a
# few ms. One long C call (a regex over one huge field) still holds the GIL for its duration.
NORMALISE_ROWS = 100
DRIFT_READS = 8  # per-product reads in flight at once during the drift check
REPORT_LIMIT = 1000  # rejected rows / orphans / conflicts listed in full; beyond, only counted
DRIFT_FIELDS = ("name", "price", "salePrice", "description", "sku", "stockQuantity", "inStock")


@dataclass(frozen=True)
class SyncOptions:
    prices_include_tax: bool
    rules: Rules = field(default_factory=Rules)
    batch_size: int = 500
    concurrency: int = 4
    full: bool = False
    force: bool = False
    overwrite_drift: bool = False
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class Conflict:
    external_id: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Failure:
    external_id: str
    reason: str


@dataclass
class SyncReport:
    prices_include_tax: bool
    product_identity: ProductIdentity = "sku"
    sync_type: str = "INCREMENTAL"
    dry_run: bool = False
    rows: int = 0
    sent: int = 0
    unchanged: int = 0
    rejected: list[RowError] = field(default_factory=list)
    rejected_count: int = 0
    orphans: list[Orphan] = field(default_factory=list)
    orphan_count: int = 0
    drifted: list[Conflict] = field(default_factory=list)
    drifted_count: int = 0
    failed: list[Failure] = field(default_factory=list)
    failed_count: int = 0
    batches: int = 0
    notes: list[str] = field(default_factory=list)
    aborted: str | None = None
    seconds: float = 0.0

    def reject(self, error: RowError) -> None:
        self.rejected_count += 1
        if len(self.rejected) < REPORT_LIMIT:
            self.rejected.append(error)

    def fail(self, external_id: str, reason: str) -> None:
        self.failed_count += 1
        if len(self.failed) < REPORT_LIMIT:
            self.failed.append(Failure(external_id, reason))

    def conflict(self, external_id: str, fields: Sequence[str]) -> None:
        self.drifted_count += 1
        if len(self.drifted) < REPORT_LIMIT:
            self.drifted.append(Conflict(external_id, tuple(fields)))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    @property
    def ok(self) -> bool:
        """All that could be sent was: rejected rows, orphans and conflicts are reported, not failures."""
        return self.aborted is None and self.failed_count == 0

    @property
    def nothing_accepted(self) -> bool:
        """Rows came, and not one product was sent, found unchanged or held for drift: every row was
        refused (rejected, or a variant without its parent)."""
        taken = self.sent + self.unchanged + self.drifted_count + self.failed_count
        return taken == 0 and self.rejected_count + self.orphan_count > 0

    def outcomes(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "unchanged": self.unchanged,
            "rejected": self.rejected_count,
            "orphan": self.orphan_count,
            "drifted": self.drifted_count,
            "failed": self.failed_count,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "syncType": self.sync_type,
            "dryRun": self.dry_run,
            "pricesIncludeTax": self.prices_include_tax,
            "productIdentity": self.product_identity,
            "rows": self.rows,
            "sent": self.sent,
            "unchanged": self.unchanged,
            "rejected": self.rejected_count,
            "orphans": self.orphan_count,
            "drifted": self.drifted_count,
            "failed": self.failed_count,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "rejectedRows": [
                {
                    "line": r.line,
                    "element": r.element,
                    "externalId": r.external_id,
                    "field": r.field,
                    "reason": r.reason,
                }
                for r in self.rejected
            ],
            "orphanVariants": [
                {
                    "line": o.line,
                    "element": o.element,
                    "externalId": o.external_id,
                    "parentExternalId": o.parent_external_id,
                }
                for o in self.orphans
            ],
            "conflicts": [{"externalId": c.external_id, "fields": list(c.fields)} for c in self.drifted],
            "failures": [{"externalId": f.external_id, "reason": f.reason} for f in self.failed],
            "notes": self.notes,
            "aborted": self.aborted,
        }

    def to_text(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        tax = "including tax" if self.prices_include_tax else "excluding tax"
        lines = [
            f"catalog sync ({self.sync_type}{', dry run' if self.dry_run else ''}): {self.rows} rows "
            f"in {self.seconds:.1f}s; prices sent as given, {tax} (GATEWAY_PRICES_INCLUDE_TAX)",
            f"  product identity (externalId, and the productId conversions send): "
            f"{describe(self.product_identity)}",
            f"  {verb}: {self.sent} in {self.batches} batches",
            f"  unchanged (not sent): {self.unchanged}",
            f"  rejected: {self.rejected_count}",
        ]
        lines += [
            f"    {where(r.line, r.element)}{f' ({r.external_id})' if r.external_id else ''}: "
            f"{r.field}: {r.reason}"
            for r in self.rejected
        ]
        lines.append(
            f"  orphan variants (parent neither in the feed nor synced; not sent): {self.orphan_count}"
        )
        lines += [
            f"    {where(o.line, o.element)}: {o.external_id} -> {o.parent_external_id}" for o in self.orphans
        ]
        lines.append(
            f"  drifted (changed in Neuroon since our last sync; not overwritten): {self.drifted_count}"
        )
        lines += [f"    {c.external_id}: {', '.join(c.fields)}" for c in self.drifted]
        lines.append(f"  failed: {self.failed_count}")
        lines += [f"    {f.external_id}: {f.reason}" for f in self.failed]
        listed = self.rejected_count + self.orphan_count + self.drifted_count + self.failed_count
        if listed > len(self.rejected) + len(self.orphans) + len(self.drifted) + len(self.failed):
            lines.append(f"  (only the first {REPORT_LIMIT} of each list are shown)")
        lines += [f"  note: {n}" for n in self.notes]
        if self.aborted:
            lines.append(f"  ABORTED: {self.aborted}")
        return "\n".join(lines)


# --- drift ---------------------------------------------------------------------------------------------


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def snapshot(product: Product) -> dict[str, Any]:
    """The fields the docs say to diff, as we sent them (the description as a digest: it can be long)."""
    return {
        "name": product.name,
        "price": _money(product.price),
        "salePrice": _money(product.sale_price),
        "description": _digest(product.description),
        "sku": product.sku,
        "stockQuantity": product.stock_quantity,
        "inStock": product.in_stock,
    }


def drifted_fields(last_sent: dict[str, Any], remote: Product) -> list[str]:
    """Fields whose value in Neuroon differs from what we last sent. A field Neuroon's copy does not
    carry is not compared (its read may omit fields; absence is not evidence of an edit)."""
    theirs = snapshot(remote)
    out = []
    for name in DRIFT_FIELDS:
        ours, remote_value = last_sent.get(name), theirs[name]
        if remote_value is None:
            continue
        if name in ("price", "salePrice"):
            same = ours is not None and Decimal(str(ours)) == Decimal(str(remote_value))
        else:
            same = ours == remote_value
        if not same:
            out.append(name)
    return out


# --- the run -------------------------------------------------------------------------------------------


def _slices(rows: Iterable[FeedRow], size: int) -> Iterator[list[FeedRow]]:
    it = iter(rows)
    while some := list(islice(it, size)):
        yield some


@dataclass(slots=True)
class _Item:
    planned: Planned
    content_hash: str
    previous: LedgerEntry | None
    size: int  # bytes in a sync request's body

    @property
    def external_id(self) -> str:
        return self.planned.product.external_id


@dataclass(slots=True)
class _Batch:
    index: int
    items: list[_Item]
    sync_type: SyncType
    depends_on: set[int]


ProgressHook = Callable[[SyncReport], None]


class SyncRun:
    """One run for one shop. Collaborators come in; nothing global is touched but metrics (by the caller)."""

    def __init__(
        self,
        shop: Shop,
        neuroon: NeuroonClient,
        store: CatalogStore,
        options: SyncOptions,
        progress: ProgressHook | None = None,
    ) -> None:
        self.shop = shop
        self.neuroon = neuroon
        self.store = store
        self.options = options
        self.progress = progress or (lambda _: None)
        self.identity = product_identity(shop)
        # Flat feeds: the identity picks the id columns. Platform JSON: already in Neuroon's names.
        self._flat_rules = replace(options.rules, mapping=options.rules.mapping.with_identity(self.identity))
        self._platform_rules = replace(options.rules, mapping=NEUROON_FIELDS)
        self.report = SyncReport(
            prices_include_tax=options.prices_include_tax,
            product_identity=self.identity,
            sync_type="FULL" if options.full else "INCREMENTAL",
            dry_run=options.dry_run,
        )
        self.planner = Planner()
        self._run_id = secrets.token_hex(8)  # names this run's index of ids in Redis
        self._outgoing: list[_Item] = []
        self._batch_of: dict[str, int] = {}
        self._done: dict[int, asyncio.Event] = {}
        self._failed_ids: set[str] = set()
        self._queue: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=options.concurrency * 2)
        self._currency: str | None = None
        self._drift_reads_work = False
        self._drift_unavailable = False
        self._probe = asyncio.Lock()
        self._abort = False

    async def run(self, rows: Iterable[FeedRow]) -> SyncReport:
        started = time.monotonic()
        senders = [asyncio.create_task(self._sender()) for _ in range(self.options.concurrency)]
        try:
            await self._produce(rows)
        finally:
            for _ in senders:
                await self._queue.put(None)
            await asyncio.gather(*senders)
            await self.store.end_run(self.shop.id, self._run_id)
        self.report.seconds = time.monotonic() - started
        self.report.rejected.sort(key=lambda r: (r.line, r.element or 0))
        if self.options.full and not self._done:
            self.report.note("FULL: nothing to send, so Neuroon's catalog was not wiped")
        self.progress(self.report)
        return self.report

    # --- producing ---------------------------------------------------------------------------------

    async def _produce(self, rows: Iterable[FeedRow]) -> None:
        chunk: list[Planned] = []
        expander = Expander(self.identity, self.shop.config.shop_url)
        ids_as_sku = 0
        for some_rows in _slices(expander.expand(rows), NORMALISE_ROWS):
            if self._abort:
                return
            results = await asyncio.to_thread(self._normalised, some_rows)
            self.report.rows = expander.rows_read  # the feed's rows, not the products they hold
            for row, result in zip(some_rows, results, strict=True):
                if row.data is None or result is None:
                    reason = row.error or "unreadable"
                    self.report.reject(RowError(row.line, row.field, reason, row.external_id, row.element))
                    continue
                sku_from_id = self.identity == "sku" and not row.converted
                if sku_from_id and self._flat_rules.mapping.id_column(row.data) in IDS_FOR_SKU:
                    ids_as_sku += 1
                if isinstance(result, RowError):
                    self.report.reject(replace(result, element=row.element))
                    continue
                if result.currency:
                    # Neuroon refuses a batch mixing currencies (422): one currency per run, the first.
                    self._currency = self._currency or result.currency
                    if result.currency != self._currency:
                        reason = f"{result.currency} differs from the feed's {self._currency}"
                        error = RowError(row.line, "currency", reason, result.external_id, row.element)
                        self.report.reject(error)
                        continue
                chunk.append(Planned(result, row.line, row.element))
                if len(chunk) >= CHUNK:
                    await self._plan(chunk)
                    chunk = []
        if chunk:
            await self._plan(chunk)
        for note in expander.notes():
            self.report.note(note)
        if ids_as_sku:
            self.report.note(
                f"{ids_as_sku} rows have no sku column: their id was taken as the SKU (product identity "
                "sku); conversions attribute them only if that id is the SKU the order lines carry"
            )
        missing = self.planner.parents_still_missing()
        released, orphans = self.planner.finish(await self._synced(missing))
        self.report.orphan_count = len(orphans)
        self.report.orphans = orphans[:REPORT_LIMIT]
        await self._release(released)
        await self._cut(final=True)

    def _normalised(self, rows: list[FeedRow]) -> list[Product | RowError | None]:
        """Each row as a product or why not (None: unreadable). Pure: it runs in a worker thread."""
        return [
            None
            if row.data is None
            else normalise(row.data, row.line, self._platform_rules if row.converted else self._flat_rules)
            for row in rows
        ]

    async def _parents_present(self, ids: list[str]) -> set[str]:
        """Of these parents (none of them waiting), those released earlier in this run or synced before."""
        in_run = await self.store.in_run(self.shop.id, self._run_id, ids)
        return in_run | await self._synced([i for i in ids if i not in in_run])

    async def _synced(self, ids: list[str]) -> set[str]:
        if not ids or self.options.full:  # after a FULL wipe, nothing is "previously synced"
            return set()
        return await self.store.known(self.shop.id, ids)

    async def _plan(self, chunk: list[Planned]) -> None:
        firsts = await self.store.claim_run_ids(
            self.shop.id, self._run_id, [(p.product.external_id, p.position) for p in chunk]
        )
        fresh: list[Planned] = []
        for item, first in zip(chunk, firsts, strict=True):
            if first is None:
                fresh.append(item)
            else:
                earlier = where(first, first if item.element is not None else None)
                message = f"duplicate: already at {earlier}"
                self.report.reject(
                    RowError(item.line, "externalId", message, item.product.external_id, item.element)
                )
        known = await self._parents_present(self.planner.needs_lookup(fresh))
        released: list[Planned] = []
        for item in fresh:
            released.extend(self.planner.add(item, known))
        await self._release(released)
        self.progress(self.report)

    async def _release(self, released: list[Planned]) -> None:
        if not released:
            return
        ids = [p.product.external_id for p in released]
        known = {} if self.options.full else await self.store.entries(self.shop.id, ids)
        for planned in released:
            digest = content_hash(planned.product)
            previous = known.get(planned.product.external_id)
            if previous is not None and previous.content_hash == digest and not self.options.force:
                self.report.unchanged += 1
                continue
            self._outgoing.append(_Item(planned, digest, previous, encoded_size(planned.product)))
        await self._cut()

    async def _cut(self, *, final: bool = False) -> None:
        size = self.options.batch_size
        while self._outgoing:
            count = batch_length((i.size for i in self._outgoing), size)
            if count == len(self._outgoing) < size and not final:
                return  # the batch could still take more
            items, self._outgoing = self._outgoing[:count], self._outgoing[count:]
            index = len(self._done)
            depends = {0} if self.options.full and index > 0 else set()
            for item in items:
                parent = item.planned.product.parent_external_id
                if parent is not None and parent in self._batch_of:
                    depends.add(self._batch_of[parent])
            for item in items:
                self._batch_of[item.external_id] = index
            depends.discard(index)
            sync_type = SyncType.FULL if self.options.full and index == 0 else SyncType.INCREMENTAL
            self._done[index] = asyncio.Event()
            await self._queue.put(_Batch(index, items, sync_type, depends))

    # --- sending -----------------------------------------------------------------------------------

    async def _sender(self) -> None:
        while True:
            batch = await self._queue.get()
            if batch is None:
                return
            try:
                await self._send(batch)
                for item in batch.items:  # later variants of these need not wait for this batch
                    if self._batch_of.get(item.external_id) == batch.index:
                        del self._batch_of[item.external_id]
            except Exception as exc:  # e.g. Redis gone: stop the run, but keep consuming the queue
                log.exception("catalog_batch_error", extra={"shop": self.shop.id, "batch": batch.index})
                self._abort = True
                self.report.aborted = f"internal error while sending ({type(exc).__name__}); see the logs"
                for item in batch.items:
                    self.report.fail(item.external_id, "not recorded: the run was aborted")
            finally:
                self._done[batch.index].set()
                self.progress(self.report)

    def _sendable(self, items: list[_Item]) -> list[_Item]:
        """These products less those that must not go: the run was aborted, or their parent failed."""
        out = []
        for item in items:
            parent = item.planned.product.parent_external_id
            if self._abort:
                self.report.fail(item.external_id, "not sent: the run was aborted")
            elif parent is not None and parent in self._failed_ids:
                # Neuroon would drop it silently: its parent is not there.
                self._failed_ids.add(item.external_id)
                self.report.fail(item.external_id, "not sent: its parent could not be synced")
            else:
                out.append(item)
        return out

    async def _send(self, batch: _Batch) -> None:
        for index in sorted(batch.depends_on):
            await self._done[index].wait()
        items = self._sendable(batch.items)
        if items and not self.options.full and not self.options.overwrite_drift:
            items = await self._without_drift(items)
        if not items:
            return
        if self.options.dry_run:
            self.report.batches += 1
            self.report.sent += len(items)
            return
        await self._request(batch.index, items, batch.sync_type)

    async def _request(self, index: int, items: list[_Item], sync_type: SyncType) -> SyncType:
        """One sync request for these products; on 413 (Neuroon's body limit is not documented, and may be
        under our budget), the two halves in turn, recursively, each with its own idempotency key. A
        product refused alone is rejected with its size; the rest go on. Returns the sync type for the
        rest of the batch: FULL until a FULL request got an answer (a second FULL would wipe the first)."""
        items = self._sendable(items)  # a parent may have been refused in the other half
        if not items:
            return sync_type
        ids = [i.external_id for i in items]
        key = idempotency_key(self.shop.id, ids, sync_type)
        try:
            result = await self.neuroon.sync_products(
                self.shop, [i.planned.product for i in items], sync_type=sync_type, idempotency_key=key
            )
        except NeuroonRejected as exc:
            if exc.status != 413:
                self._batch_failed(index, ids, exc)
                return SyncType.INCREMENTAL
            if len(items) > 1:
                # Each batch paying a 413 first says Neuroon's limit is under MAX_BATCH_BYTES: worth a look.
                split = {"shop": self.shop.id, "batch": index, "products": len(items)}
                log.info("catalog_batch_split", extra=split)
                half = len(items) // 2
                sync_type = await self._request(index, items[:half], sync_type)
                return await self._request(index, items[half:], sync_type)
            (item,) = items
            self._failed_ids.add(item.external_id)
            reason = f"too large for Neuroon: {item.size} bytes as JSON, refused on its own ({exc.message})"
            self.report.reject(
                RowError(item.planned.line, "product", reason, item.external_id, item.planned.element)
            )
            return sync_type
        except NeuroonError as exc:
            self._batch_failed(index, ids, exc)
            return SyncType.INCREMENTAL
        self.report.batches += 1
        refused = {e.external_id: e.message or "refused" for e in result.errors if e.external_id}
        accepted = {}
        for item in items:
            if item.external_id in refused:
                self._failed_ids.add(item.external_id)
                self.report.reject(
                    RowError(
                        item.planned.line,
                        "product",
                        refused[item.external_id],
                        item.external_id,
                        item.planned.element,
                    )
                )
            else:
                accepted[item.external_id] = LedgerEntry(item.content_hash, snapshot(item.planned.product))
        if sync_type is SyncType.FULL:
            # Neuroon wiped its catalog: nothing else of the ledger is true any more.
            await self.store.clear(self.shop.id)
        await self.store.record(self.shop.id, accepted)
        self.report.sent += len(accepted)
        return SyncType.INCREMENTAL

    def _batch_failed(self, index: int, ids: list[str], exc: NeuroonError) -> None:
        self.report.batches += 1
        if isinstance(exc, NeuroonRejected) and exc.is_auth_failure:
            self._abort = True
            self.report.aborted = f"Neuroon refused the Shop API Key or Origin ({exc.message})"
        reason = exc.message
        if isinstance(exc, NeuroonRejected) and exc.details:
            reason += " — " + "; ".join(exc.details[:5])
        self._failed_ids.update(ids)
        for external_id in ids:
            self.report.fail(external_id, reason)
        log.warning("catalog_batch_failed", extra={"shop": self.shop.id, "batch": index})

    async def _read(self, item: _Item) -> Product | NeuroonError | None:
        try:
            return await self.neuroon.get_product(self.shop, item.external_id)
        except NeuroonError as exc:
            return exc

    async def _without_drift(self, items: list[_Item]) -> list[_Item]:
        """Leave out products whose copy in Neuroon changed since we last sent them."""
        candidates = [i for i in items if i.previous is not None]
        if not candidates or self._drift_unavailable:
            return items
        results: list[tuple[_Item, Product | NeuroonError | None]] = []
        if not self._drift_reads_work:
            # Neuroon does not document GET /products/{externalId}. Until one read has worked, one read
            # at a time: a 404 then means the route is not there, and the check is skipped for the run.
            async with self._probe:
                if self._drift_unavailable:
                    return items
                while candidates and not self._drift_reads_work:
                    first, candidates = candidates[0], candidates[1:]
                    remote = await self._read(first)
                    if remote is None:
                        self._drift_unavailable = True
                        self.report.note(
                            "drift check skipped: Neuroon answered 404 to GET /products/{externalId} "
                            "(per-product read not available)"
                        )
                        return items
                    results.append((first, remote))
                    self._drift_reads_work = isinstance(remote, Product)
        gate = asyncio.Semaphore(DRIFT_READS)

        async def read(item: _Item) -> tuple[_Item, Product | NeuroonError | None]:
            async with gate:
                return item, await self._read(item)

        results += await asyncio.gather(*(read(i) for i in candidates))
        held: set[str] = set()
        for item, remote in results:
            if isinstance(remote, NeuroonError):
                held.add(item.external_id)
                self.report.fail(item.external_id, f"drift check failed: {remote.message}")
            elif remote is not None:  # None: gone from Neuroon, and sending it again restores it
                assert item.previous is not None
                fields = drifted_fields(item.previous.snapshot, remote)
                if fields:
                    held.add(item.external_id)
                    self.report.conflict(item.external_id, fields)
        return [i for i in items if i.external_id not in held]
