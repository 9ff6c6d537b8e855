"""The sync run against the sandbox (in-process) and a real Redis: ordering, batches, idempotency keys,
delta, crash and rerun, FULL, drift, failures."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from decimal import Decimal
from typing import Any

import pytest
import redis

from app.catalog import sync as sync_module
from app.catalog.feed import FeedRow
from app.catalog.lock import LockBusy, catalog_lock
from app.catalog.mapping import FieldMapping
from app.catalog.reconcile import reconcile
from app.catalog.service import sync_feed
from app.catalog.sync import SyncOptions, SyncReport, SyncRun
from app.neuroon.client import NeuroonClient
from app.sandbox import Fault, Sandbox
from app.shops import Shop
from app.store import connect
from app.store.catalog import CatalogStore
from tests.conftest import CANARY_KEY, SHOP_ID


@pytest.fixture
async def store(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[CatalogStore]:
    client = connect(redis_url)
    yield CatalogStore(client)
    await client.aclose()


def item(i: int | str, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"P{i}",
        "name": f"Product {i}",
        "price": "10.00",
        "url": f"https://shop.example/p/{i}",
    } | extra


def rows(items: Iterable[dict[str, Any]]) -> list[FeedRow]:
    return [FeedRow(n, data) for n, data in enumerate(items, start=1)]


def options(**kw: Any) -> SyncOptions:
    return SyncOptions(prices_include_tax=True, **kw)


def sync_bodies(sandbox: Sandbox) -> list[tuple[dict[str, Any], dict[str, str]]]:
    return [
        (json.loads(r.body), r.headers)
        for r in sandbox.requests
        if r.operation == "sync_products" and not r.replayed
    ]


async def run(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, data: Iterable[dict[str, Any]], **kw: Any
) -> SyncReport:
    return await sync_feed(rows(data), shop, neuroon, store, options(**kw))


async def test_batches_are_at_most_the_batch_size_with_md5_idempotency_keys(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    report = await run(shop, neuroon, store, (item(i) for i in range(23)), batch_size=10)
    assert report.ok
    assert (report.sent, report.batches) == (23, 3)
    bodies = sync_bodies(sandbox)
    assert [len(b["products"]) for b, _ in bodies] == [10, 10, 3]
    for body, headers in bodies:
        assert body["syncType"] == "INCREMENTAL"
        ids = ",".join(p["externalId"] for p in body["products"])
        expected = hashlib.md5(f"{SHOP_ID}:{ids}:INCREMENTAL".encode(), usedforsecurity=False).hexdigest()
        assert headers["x-idempotency-key"] == expected
    assert len(sandbox.products(SHOP_ID)) == 23


async def test_variants_before_parents_are_sent_after_them_across_batches(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    feed = [item(f"V{i}", parent_id="P0") for i in range(7)] + [item(i) for i in range(5)]
    feed += [item("W1", parent_id="P4")]
    report = await run(shop, neuroon, store, feed, batch_size=3, concurrency=4)
    assert report.ok
    assert report.sent == 13
    assert report.orphan_count == 0
    position: dict[str, tuple[int, int]] = {}
    for b, (body, _) in enumerate(sync_bodies(sandbox)):
        for k, p in enumerate(body["products"]):
            position[p["externalId"]] = (b, k)
            if "parentExternalId" in p:
                assert position[p["parentExternalId"]] < (b, k)
    assert sandbox.shops[SHOP_ID].dropped_variants == []
    assert len(sandbox.products(SHOP_ID)) == 13


async def test_orphan_variants_are_reported_and_not_sent(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    feed = [item("V1", parent_id="GHOST"), item(1), item("V2", parent_id="PV1")]
    report = await run(shop, neuroon, store, feed)
    assert [(o.external_id, o.parent_external_id, o.line) for o in report.orphans] == [
        ("PV1", "GHOST", 1),
        ("PV2", "PV1", 3),
    ]
    assert set(sandbox.products(SHOP_ID)) == {"P1"}
    assert await store.count(SHOP_ID) == 1  # the ledger still tells the truth
    assert report.ok


async def test_variant_of_a_parent_synced_in_an_earlier_run_is_not_an_orphan(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    await run(shop, neuroon, store, [item(1)])
    report = await run(shop, neuroon, store, [item("V", parent_id="P1")])
    assert (report.sent, report.orphan_count) == (1, 0)
    assert "PV" in sandbox.products(SHOP_ID)


async def test_rejected_rows_are_reported_and_the_rest_still_sync(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    feed = [item(1), item(2, price="-3"), {"name": "no id"}, item(3, currency="EUR"), item(1)]
    feed += [item(4, currency="USD")]
    data = [*rows(feed), FeedRow(7, None, "invalid JSON: Expecting value")]
    report = await SyncRun(shop, neuroon, store, options()).run(data)
    assert report.sent == 2
    assert [(r.line, r.field) for r in report.rejected] == [
        (2, "price"),
        (3, "externalId"),
        (5, "externalId"),
        (6, "currency"),
        (7, "row"),
    ]
    assert "duplicate" in report.rejected[2].reason
    assert set(sandbox.products(SHOP_ID)) == {"P1", "P3"}


async def test_second_run_of_an_unchanged_feed_sends_nothing(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    feed = [item(i) for i in range(12)]
    await run(shop, neuroon, store, feed, batch_size=5)
    sent_before = len(sync_bodies(sandbox))
    again = await run(shop, neuroon, store, feed, batch_size=5)
    assert (again.sent, again.unchanged) == (0, 12)
    assert len(sync_bodies(sandbox)) == sent_before
    changed = [*feed[:3], item(3, price="11.50"), *feed[4:]]
    third = await run(shop, neuroon, store, changed, batch_size=5)
    assert (third.sent, third.unchanged) == (1, 11)
    assert sandbox.products(SHOP_ID)["P3"]["price"] == Decimal("11.50")


async def test_force_sends_unchanged_products(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore
) -> None:
    await run(shop, neuroon, store, [item(1), item(2)])
    assert (await run(shop, neuroon, store, [item(1), item(2)], force=True)).sent == 2


async def test_a_crashed_run_is_completed_by_the_rerun(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    feed = [item(i) for i in range(10)]
    neuroon.attempts = 1
    sandbox.script("sync_products", 200, 503)  # the second batch fails, like a crash before it
    first = await run(shop, neuroon, store, feed, batch_size=4, concurrency=1)
    assert not first.ok
    assert (first.sent, first.failed_count) == (6, 4)
    before = len(sync_bodies(sandbox))
    second = await run(shop, neuroon, store, feed, batch_size=4, concurrency=1)
    assert second.ok
    assert (second.sent, second.unchanged) == (4, 6)
    resent = [p["externalId"] for body, _ in sync_bodies(sandbox)[before:] for p in body["products"]]
    assert resent == ["P4", "P5", "P6", "P7"]
    assert len(sandbox.products(SHOP_ID)) == 10


async def test_variants_of_a_failed_parent_are_held_back(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    neuroon.attempts = 1
    sandbox.script("sync_products", 503)
    report = await run(
        shop, neuroon, store, [item(1), item("V", parent_id="P1")], batch_size=1, concurrency=2
    )
    assert report.failed_count == 2
    assert any("parent" in f.reason for f in report.failed)
    assert sandbox.products(SHOP_ID) == {}


async def test_full_sends_full_only_in_the_first_batch_and_clears_the_ledger(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    await run(shop, neuroon, store, [item("OLD")])
    report = await run(shop, neuroon, store, (item(i) for i in range(7)), batch_size=3, full=True)
    assert report.ok
    types = [body["syncType"] for body, _ in sync_bodies(sandbox)[1:]]
    assert types == ["FULL", "INCREMENTAL", "INCREMENTAL"]
    assert set(sandbox.products(SHOP_ID)) == {f"P{i}" for i in range(7)}
    assert await store.count(SHOP_ID) == 7


async def test_drift_in_neuroon_is_not_overwritten(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    await run(shop, neuroon, store, [item(1), item(2)])
    sandbox.shops[SHOP_ID].products["P1"]["price"] = Decimal("7.77")  # edited in the dashboard
    report = await run(shop, neuroon, store, [item(1, name="New name"), item(2, name="Other")])
    assert [(c.external_id, c.fields) for c in report.drifted] == [("P1", ("price",))]
    assert report.sent == 1
    assert sandbox.products(SHOP_ID)["P1"]["name"] == "Product 1"
    forced = await run(shop, neuroon, store, [item(1, name="New name")], overwrite_drift=True)
    assert forced.sent == 1
    assert sandbox.products(SHOP_ID)["P1"]["name"] == "New name"


async def test_no_drift_when_neuroon_still_has_what_we_sent(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    await run(shop, neuroon, store, [item(1, description="<p>Long &amp; good</p>", stock_quantity=3)])
    report = await run(shop, neuroon, store, [item(1, name="Renamed")])
    assert (report.sent, report.drifted_count) == (1, 0)


async def test_drift_check_is_skipped_once_when_the_read_route_is_missing(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    await run(shop, neuroon, store, [item(i) for i in range(4)])
    sandbox.script("get_product", 404, 404, 404, 404)
    report = await run(shop, neuroon, store, [item(i, name="x") for i in range(4)], batch_size=2)
    assert report.sent == 4
    assert len([n for n in report.notes if "drift check skipped" in n]) == 1
    assert len([r for r in sandbox.requests if r.operation == "get_product"]) == 1


async def test_batch_rejected_by_neuroon_is_reported_with_the_reason(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    sandbox.script("sync_products", Fault(400, body={"message": "products[0].name: too odd"}))
    report = await run(shop, neuroon, store, [item(1)])
    assert not report.ok
    assert "too odd" in report.failed[0].reason
    assert await store.count(SHOP_ID) == 0


async def test_auth_failure_aborts_the_run(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    sandbox.rotate_key(SHOP_ID, "sk_" + "ab" * 16)
    report = await run(shop, neuroon, store, [item(i) for i in range(6)], batch_size=2, concurrency=1)
    assert report.aborted is not None
    assert report.sent == 0
    assert len(sync_bodies(sandbox)) == 1


async def test_dry_run_sends_nothing_and_records_nothing(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    report = await run(shop, neuroon, store, [item(1), item(2)], dry_run=True)
    assert report.sent == 2
    assert sync_bodies(sandbox) == []
    assert await store.count(SHOP_ID) == 0


async def test_outcomes_and_last_sync_are_kept_for_metrics(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore
) -> None:
    await run(shop, neuroon, store, [item(1), item(2, price="x"), item("V", parent_id="NONE")])
    await run(shop, neuroon, store, [item(1)])
    assert await store.outcomes(SHOP_ID) == {"sent": 1, "rejected": 1, "orphan": 1, "unchanged": 1}
    assert await store.last_sync(SHOP_ID) is not None


async def test_the_key_never_reaches_a_report_even_if_neuroon_echoes_it(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    echo = {"message": f"bad key {CANARY_KEY}", "details": [f"key={CANARY_KEY}"]}
    sandbox.script("sync_products", Fault(400, body=echo), Fault(422, body={"message": CANARY_KEY}))
    first = await run(shop, neuroon, store, [item(1)])
    second = await run(shop, neuroon, store, [item(2)])
    for report in (first, second):
        assert report.failed_count == 1
        text = json.dumps(report.to_json()) + report.to_text()
        assert CANARY_KEY not in text
        assert CANARY_KEY[3:] not in text


async def test_full_with_nothing_to_send_does_not_wipe(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    await run(shop, neuroon, store, [item(1)])
    report = await run(shop, neuroon, store, [item(2, price="bad")], full=True)
    assert any("not wiped" in n for n in report.notes)
    assert set(sandbox.products(SHOP_ID)) == {"P1"}
    assert await store.count(SHOP_ID) == 1  # the ledger still tells the truth


async def test_reconcile_against_the_sandbox_listing(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    feed = [item(i) for i in range(12)]
    await run(shop, neuroon, store, feed)
    sandbox.shops[SHOP_ID].products["STRAY"] = dict(sandbox.products(SHOP_ID)["P0"], externalId="STRAY")
    kept = [f for f in feed if f["id"] not in ("P3", "P9")]
    kept.append(item(0, price="not a price"))  # a bad row still names a product the shop has
    report = await reconcile(
        shop, neuroon, store, rows(kept), FieldMapping(), max_delete_ratio=0.25, dry_run=False
    )
    assert report.ok
    assert report.source == "neuroon"
    assert report.catalog == 13
    assert report.to_delete == ["P3", "P9", "STRAY"]
    assert set(sandbox.products(SHOP_ID)) == {f"P{i}" for i in range(12)} - {"P3", "P9"}
    assert await store.count(SHOP_ID) == 10
    assert (await store.outcomes(SHOP_ID)).get("deleted") is None  # counted by the callers


async def test_reconcile_refuses_an_empty_feed(
    shop: Shop, neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    await run(shop, neuroon, store, [item(i) for i in range(5)])
    report = await reconcile(shop, neuroon, store, [], FieldMapping(), max_delete_ratio=0.2, dry_run=False)
    assert report.refused is not None
    assert not report.ok
    assert len(sandbox.products(SHOP_ID)) == 5
    assert [r for r in sandbox.requests if r.operation == "delete_product"] == []


async def test_ordering_duplicates_and_orphans_across_many_chunks(
    shop: Shop,
    neuroon: NeuroonClient,
    store: CatalogStore,
    sandbox: Sandbox,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sync_module, "CHUNK", 3)  # every parent look-up crosses a chunk
    feed = [item("V1", parent_id="P1"), item("W", parent_id="PV1"), item(2), item(9), item(1)]
    feed += [item("X", parent_id="P2"), item(2), item("O", parent_id="GONE"), item("OO", parent_id="PO")]
    feed += [item(3), item("V1", parent_id="P1")]
    report = await run(shop, neuroon, store, feed, batch_size=2)
    assert [(r.line, r.reason) for r in report.rejected] == [
        (7, "duplicate: already at line 3"),
        (11, "duplicate: already at line 1"),
    ]
    assert [(o.external_id, o.parent_external_id) for o in report.orphans] == [("PO", "GONE"), ("POO", "PO")]
    order = [p["externalId"] for body, _ in sync_bodies(sandbox) for p in body["products"]]
    assert order.index("P1") < order.index("PV1") < order.index("PW")
    assert order.index("P2") < order.index("PX")
    assert sorted(order) == sorted(["P1", "PV1", "PW", "P2", "P9", "PX", "P3"])
    assert sandbox.shops[SHOP_ID].dropped_variants == []
    assert list(redis_client.scan_iter(match="ngw:v1:catalog:*:run:*")) == []  # the run's index is gone


async def test_the_shop_lock_admits_one_run_at_a_time(store: CatalogStore) -> None:
    async with catalog_lock(store, SHOP_ID):
        with pytest.raises(LockBusy):
            async with catalog_lock(store, SHOP_ID):
                pass
        async with catalog_lock(store, "shop_other"):  # other shops are not affected
            pass
    async with catalog_lock(store, SHOP_ID):  # released
        pass
