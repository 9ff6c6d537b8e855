"""The conversion store's steps for a pause probe: its attempt counts on the order it probes, and a
late failure never touches an order that is finished already."""

from __future__ import annotations

import asyncio

import redis

from app.store import connect
from app.store.conversions import ConversionStore, delayed_key, pending_key, stream_key

SHOP = "shop_p"
BODY = b'{"orderId":"P-1","conversions":[{"productId":"A","searchLogId":"log_a"}]}'


async def _paused_order(store: ConversionStore) -> None:
    """P-1 accepted, attempted once by a worker, then refused with a 401: it waits in the delayed set."""
    assert await store.enqueue(SHOP, "P-1", BODY, "generic")
    await store.ensure_group(SHOP)
    [entry] = await store.poll(SHOP, "w1", 10) or []
    assert await store.begin_attempt(entry) is not None
    assert await store.pause(SHOP, "P-1", entry.entry_id, "HTTP 401: invalid key", 1)


def test_a_probe_attempt_counts_and_its_error_is_recorded(redis_url: str, redis_client: redis.Redis) -> None:
    async def scenario() -> None:
        client = connect(redis_url)
        try:
            store = ConversionStore(client)
            await _paused_order(store)
            record = await store.begin_probe(SHOP, "P-1")
            assert record is not None
            assert record["rounds"] == "2"
            assert record["attempts"] == "1"  # the request of the first round; the probe's is not out yet
            assert record["state"] == "delivering"
            assert record["body"] == BODY.decode()
            await store.probe_failed(SHOP, "P-1", "HTTP 503: maintenance", 1)
            order = await store.order(SHOP, "P-1")
            assert order is not None
            assert order["lastError"] == "HTTP 503: maintenance"
            assert order["attempts"] == "2"
        finally:
            await client.aclose()

    asyncio.run(scenario())
    # Still waiting for the next probe, and only there.
    assert redis_client.zscore(delayed_key(SHOP), "P-1") == 0
    assert redis_client.zcard(pending_key(SHOP)) == 1
    assert redis_client.xlen(stream_key(SHOP)) == 0


def test_a_probe_of_a_finished_order_changes_nothing(redis_url: str, redis_client: redis.Redis) -> None:
    async def scenario() -> None:
        client = connect(redis_url)
        try:
            store = ConversionStore(client)
            await _paused_order(store)
            await store.mark_delivered(SHOP, "P-1", None, 3600, 1)  # by an overlapping probe
            delivered = await store.order(SHOP, "P-1")
            assert await store.begin_probe(SHOP, "P-1") is None
            await store.probe_failed(SHOP, "P-1", "HTTP 401: invalid key", 1)
            assert await store.order(SHOP, "P-1") == delivered
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert redis_client.zcard(delayed_key(SHOP)) == 0
    assert redis_client.zcard(pending_key(SHOP)) == 0
