# ruff: noqa: F811 - the store, admin and live_sandbox fixtures come from other test modules, by import
"""A catalog batch never fails for its size: batches are cut by encoded size as well as count, and a 413
from Neuroon splits the batch until each request fits or one product alone is refused. Against the sandbox
(in-process, its body limit as Neuroon's) and a real Redis, for `catalog sync` and the admin push."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.catalog.plan import ENVELOPE_BYTES, MAX_BATCH_BYTES, batch_length
from app.catalog.sync import SyncReport
from app.neuroon.client import NeuroonClient
from app.sandbox import Sandbox
from app.sandbox.wire import MAX_BODY
from app.shops import Shop
from app.store.catalog import CatalogStore
from tests.conftest import SHOP_ID
from tests.test_catalog_admin import AUTH, admin, live_sandbox  # noqa: F401 - fixtures, used by name
from tests.test_catalog_sync import item, run, store  # noqa: F401 - store: a fixture, used by name

SMALL_LIMIT = 64 * 1024  # a stricter Neuroon than the sandbox's default


Sync = Callable[..., Awaitable[SyncReport]]


@pytest.fixture
def sync(shop: Shop, neuroon: NeuroonClient, store: CatalogStore) -> Sync:
    """A sync run of a feed for the test shop: ``await sync(feed, **options)``."""

    async def go(feed: list[dict[str, Any]], **kw: Any) -> SyncReport:
        return await run(shop, neuroon, store, feed, **kw)

    return go


def big(i: int | str, **extra: Any) -> dict[str, Any]:
    """A product with long text fields: about 12 KB as JSON, so 500 of them exceed 5 MiB."""
    return (
        item(
            i,
            description="word " * 400,  # the default soft limit keeps 2,000 characters
            image_url=f"https://shop.example/i/{i}/" + "x" * 7000,
            categories="Long category " * 210,
        )
        | extra
    )


def family(count: int) -> list[dict[str, Any]]:
    """Parents each followed by variants: P0, V1…V4 of P0, P5, V6…V9 of P5, …"""
    return [big(i) if i % 5 == 0 else big(f"V{i}", parent_id=f"P{i - i % 5}") for i in range(count)]


def accepted_syncs(sandbox: Sandbox) -> list[tuple[bytes, dict[str, Any], dict[str, str]]]:
    return [
        (r.body, json.loads(r.body), r.headers)
        for r in sandbox.requests
        if r.operation == "sync_products" and r.status == 200 and not r.replayed
    ]


def assert_parents_first_and_keys_per_batch(sandbox: Sandbox) -> None:
    """Every variant reached Neuroon in a later request than its parent, or after it in the same one, and
    each request's idempotency key is the docs' md5 over its own ids."""
    position: dict[str, tuple[int, int]] = {}
    for b, (_, body, headers) in enumerate(accepted_syncs(sandbox)):
        ids = [p["externalId"] for p in body["products"]]
        text = f"{SHOP_ID}:{','.join(ids)}:{body['syncType']}"
        assert headers["x-idempotency-key"] == hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
        for k, p in enumerate(body["products"]):
            position[p["externalId"]] = (b, k)
            if "parentExternalId" in p:
                assert position[p["parentExternalId"]] < (b, k)
    assert sandbox.shops[SHOP_ID].dropped_variants == []


async def assert_arrived_whole(sandbox: Sandbox, store: CatalogStore, count: int, limit: int) -> None:
    """Every product reached Neuroon and the ledger, in requests no larger than ``limit``, parents first."""
    accepted = accepted_syncs(sandbox)
    assert max(len(raw) for raw, _, _ in accepted) <= limit
    assert sum(len(body["products"]) for _, body, _ in accepted) == count
    assert len(sandbox.products(SHOP_ID)) == count
    assert await store.count(SHOP_ID) == count
    assert_parents_first_and_keys_per_batch(sandbox)


def test_a_batch_takes_what_fits_in_the_budget_and_always_one_product() -> None:
    assert batch_length([10] * 9, 5, max_bytes=1000) == 5  # the count limit
    # Products joined by ",": the envelope, then 3 of 100 bytes and 2 commas.
    room = ENVELOPE_BYTES + 3 * 100 + 2
    assert batch_length([100] * 9, 500, max_bytes=room) == 3
    assert batch_length([100] * 9, 500, max_bytes=room - 1) == 2
    assert batch_length([5000, 1], 500, max_bytes=1000) == 1  # too big alone: it goes alone
    assert batch_length([], 500) == 0
    assert MAX_BATCH_BYTES < MAX_BODY


async def test_a_catalog_of_long_products_is_cut_by_size_and_arrives_whole(
    sync: Sync, store: CatalogStore, sandbox: Sandbox
) -> None:
    feed = family(600)
    report = await sync(feed)
    assert report.ok, report.to_text()
    assert (report.sent, report.rejected_count) == (600, 0)
    statuses = sandbox.statuses("sync_products")
    assert 413 not in statuses
    sizes = [len(raw) for raw, _, _ in accepted_syncs(sandbox)]
    assert len(sizes) == len(statuses) == report.batches >= 2
    # 500 of these products would not have fitted in one request under the sandbox's 5 MiB.
    assert sum(sizes) * 500 // 600 > MAX_BODY
    await assert_arrived_whole(sandbox, store, 600, MAX_BATCH_BYTES)


async def test_a_413_splits_the_batch_until_every_request_fits(
    sync: Sync, store: CatalogStore, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.catalog.sync")
    sandbox.max_body = SMALL_LIMIT
    report = await sync(family(40), concurrency=2)
    assert report.ok, report.to_text()
    assert (report.sent, report.rejected_count, report.failed_count) == (40, 0, 0)
    assert 413 in sandbox.statuses("sync_products")
    assert "catalog_batch_split" in caplog.messages  # operators see that Neuroon's limit is lower
    assert report.batches == len(accepted_syncs(sandbox))
    await assert_arrived_whole(sandbox, store, 40, SMALL_LIMIT)


async def test_a_product_too_big_alone_is_rejected_with_its_size_and_the_rest_arrive(
    sync: Sync, store: CatalogStore, sandbox: Sandbox
) -> None:
    sandbox.max_body = SMALL_LIMIT
    feed = family(20)
    feed[7] = big("HUGE", categories="Enormous category " * 5000)  # ~90 KB as JSON
    feed.insert(8, big("HUGE-V", parent_id="PHUGE"))
    report = await sync(feed)
    assert [(r.external_id, r.line, r.field) for r in report.rejected] == [("PHUGE", 8, "product")]
    reason = report.rejected[0].reason
    assert "HTTP 413" in reason
    size = int(reason.split("too large for Neuroon: ")[1].split(" bytes")[0])
    assert size > SMALL_LIMIT
    # Its variant cannot go without it (Neuroon would drop it silently); everything else arrived.
    assert [(f.external_id, f.reason) for f in report.failed] == [
        ("PHUGE-V", "not sent: its parent could not be synced")
    ]
    expected = {f"P{i}" if i % 5 == 0 else f"PV{i}" for i in range(20) if i != 7}
    assert set(sandbox.products(SHOP_ID)) == expected
    assert report.sent == len(expected) == 19
    assert_parents_first_and_keys_per_batch(sandbox)


async def test_a_full_sync_split_by_413_wipes_once_and_keeps_every_product(
    sync: Sync, store: CatalogStore, sandbox: Sandbox
) -> None:
    await sync([item("OLD")])
    sandbox.max_body = SMALL_LIMIT
    feed = [big("HUGE", categories="Enormous category " * 5000), *family(12)]
    report = await sync(feed, full=True)
    types = [body["syncType"] for _, body, _ in accepted_syncs(sandbox)[1:]]
    # The huge first product was refused without a wipe, so the next request carries the FULL.
    assert types[0] == "FULL"
    assert set(types[1:]) == {"INCREMENTAL"}
    assert [r.external_id for r in report.rejected] == ["PHUGE"]
    assert set(sandbox.products(SHOP_ID)) == {f"P{i}" if i % 5 == 0 else f"PV{i}" for i in range(12)}
    assert await store.count(SHOP_ID) == 12


def test_the_admin_push_of_long_products_arrives_whole(
    admin: TestClient,
    live_sandbox: Sandbox,
) -> None:
    response = admin.post("/v1/admin/catalog/products", json={"products": family(600)}, headers=AUTH)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["sent"], report["rejected"], report["failed"]) == (600, 0, 0)
    statuses = live_sandbox.statuses("sync_products")
    assert 413 not in statuses
    assert len(statuses) >= 2
    assert max(len(raw) for raw, _, _ in accepted_syncs(live_sandbox)) <= MAX_BATCH_BYTES
    assert len(live_sandbox.products(SHOP_ID)) == 600
