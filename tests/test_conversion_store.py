"""The conversion store's claim under concurrency: grouped into pipelines, still one claim per order."""

from __future__ import annotations

import asyncio

import redis

from app.store import connect
from app.store.conversions import ConversionStore, pending_key, stream_key

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
