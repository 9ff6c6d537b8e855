"""The conversion store's claim under concurrency: grouped into pipelines, still one claim per order."""

from __future__ import annotations

import asyncio

import redis

from app.store import connect
from app.store.conversions import ConversionStore, dead_key, delayed_key, pending_key, stream_key

BODY = b'{"orderId":"x","conversions":[{"productId":"A","searchLogId":"log_a"}]}'


async def _claims(redis_url: str, order_ids: list[str]) -> list[str]:
    client = connect(redis_url)
    try:
        store = ConversionStore(client)
        claims = await asyncio.gather(*(store.claim("shop_c", o, BODY, "generic") for o in order_ids))
        return [c.outcome for c in claims]
    finally:
        await client.aclose()


def test_concurrent_claims_queue_each_order_once(redis_url: str, redis_client: redis.Redis) -> None:
    order_ids = [f"O-{i % 25}" for i in range(100)]  # every order four times, all at once
    outcomes = asyncio.run(_claims(redis_url, order_ids))
    assert outcomes.count("accepted") == 25
    assert outcomes.count("duplicate") == 75
    assert redis_client.xlen(stream_key("shop_c")) == 25
    assert redis_client.zcard(pending_key("shop_c")) == 25


def test_claims_survive_a_script_cache_flush(redis_url: str, redis_client: redis.Redis) -> None:
    assert asyncio.run(_claims(redis_url, ["A-1"])) == ["accepted"]
    redis_client.script_flush()  # as after a Redis restart: the script must be loaded again
    outcomes = asyncio.run(_claims(redis_url, [f"B-{i}" for i in range(10)] + ["A-1"]))
    assert outcomes == ["accepted"] * 10 + ["duplicate"]
    redis_client.script_flush()
    assert asyncio.run(_claims(redis_url, ["C-1"])) == ["accepted"]


def test_posted_clicks_come_back_before_anything_is_written(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def scenario() -> None:
        client = connect(redis_url)
        try:
            store = ConversionStore(client)
            await store.put_clicks("shop_c", "cart-1", {"B": "log_b"})
            first = await store.claim(
                "shop_c", "D-1", BODY, "shopify", cart_token="cart-1", unattributed=["B", "Z"]
            )
            assert first.outcome == "needs_clicks"
            assert first.clicks == {"B": "log_b"}
            assert await store.order("shop_c", "D-1") is None
            nothing = await store.claim(
                "shop_c", "D-2", b"", "shopify", cart_token="cart-1", unattributed=["Z"]
            )
            assert nothing.outcome == "unattributed"
            assert nothing.first
            again = await store.claim(
                "shop_c", "D-2", b"", "shopify", cart_token="cart-1", unattributed=["Z"]
            )
            assert again.outcome == "unattributed"
            assert not again.first
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_a_late_outcome_never_reopens_a_delivered_order(redis_url: str, redis_client: redis.Redis) -> None:
    """Worker 1's lease ran out mid-delivery; worker 2 took the entry over and delivered the order.
    Whatever worker 1 then hears from Neuroon (a 503, a 401, a 400) must not queue it again."""
    shop = "shop_late"

    async def scenario() -> tuple[dict[str, str] | None, dict[str, str] | None]:
        client = connect(redis_url)
        try:
            store = ConversionStore(client)
            assert await store.enqueue(shop, "L-1", BODY, "generic")
            await store.ensure_group(shop)
            [entry] = await store.read_new(shop, "w1", 10, 10)
            assert await store.begin_attempt(entry) is not None
            [taken] = await store.reclaim(shop, "w2", 0, 10)
            assert await store.begin_attempt(taken) is not None
            await store.mark_delivered(shop, "L-1", taken.entry_id, 3600)
            delivered = await store.order(shop, "L-1")
            await store.retry_later(shop, "L-1", entry.entry_id, 0, 1, "HTTP 503")
            await store.pause(shop, "L-1", entry.entry_id, "HTTP 401: invalid key")
            await store.dead_letter(shop, "L-1", entry.entry_id, "HTTP 400: bad request")
            return delivered, await store.order(shop, "L-1")
        finally:
            await client.aclose()

    delivered, after = asyncio.run(scenario())
    assert delivered is not None
    assert delivered["state"] == "delivered"
    assert after == delivered
    assert redis_client.zcard(delayed_key(shop)) == 0
    assert redis_client.zcard(dead_key(shop)) == 0
    assert redis_client.zcard(pending_key(shop)) == 0
    assert redis_client.xlen(stream_key(shop)) == 0
