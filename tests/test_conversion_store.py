"""The conversion store's claim under concurrency: grouped into pipelines, still one claim per order."""

from __future__ import annotations

import asyncio
import threading

import redis
from redis.exceptions import RedisError

from app.store import connect
from app.store.conversions import (
    ConversionStore,
    StreamEntry,
    dead_key,
    delayed_key,
    order_key,
    pending_key,
    stream_key,
)
from tests.redis_shapes import primary_clients, with_client_name

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


async def _taken_over(store: ConversionStore, shop: str, order_id: str) -> tuple[StreamEntry, StreamEntry]:
    """The order queued; worker 1 attempting it; its lease run out and worker 2 attempting it too.
    Returns worker 1's entry and worker 2's (the same stream entry, held twice)."""
    assert await store.enqueue(shop, order_id, BODY, "generic")
    await store.ensure_group(shop)
    [entry] = await store.poll(shop, "w1", 10) or []
    assert await store.begin_attempt(entry) is not None
    [taken] = await store.poll(shop, "w2", 10, reclaim_idle_ms=0) or []
    assert await store.begin_attempt(taken) is not None
    return entry, taken


def test_a_late_outcome_never_reopens_a_delivered_order(redis_url: str, redis_client: redis.Redis) -> None:
    """Worker 1's lease ran out mid-delivery; worker 2 took the entry over and delivered the order.
    Whatever worker 1 then hears from Neuroon (a 503, a 401, a 400) must not queue it again."""
    shop = "shop_late"

    async def scenario() -> tuple[dict[str, str] | None, dict[str, str] | None]:
        client = connect(redis_url)
        try:
            store = ConversionStore(client)
            entry, taken = await _taken_over(store, shop, "L-1")
            await store.mark_delivered(shop, "L-1", taken.entry_id, 3600, 1)
            delivered = await store.order(shop, "L-1")
            await store.retry_later(shop, "L-1", entry.entry_id, 0, 1, "HTTP 503", 1)
            await store.pause(shop, "L-1", entry.entry_id, "HTTP 401: invalid key", 1)
            await store.dead_letter(shop, "L-1", entry.entry_id, "HTTP 400: bad request", 1)
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


def test_an_outcome_written_again_counts_its_requests_once(redis_url: str, redis_client: redis.Redis) -> None:
    """The worker writes an outcome again when Redis failed it or could not make it durable; the record
    may have landed the first time, and a repeat (same outcome id) must not count its requests again."""
    shop = "shop_again"

    async def scenario() -> list[dict[str, str]]:
        client = connect(redis_url)
        try:
            store = ConversionStore(client)
            records = []
            for order_id in ("A-1", "A-2", "A-3"):
                await store.claim(shop, order_id, BODY, "generic")
            await store.ensure_group(shop)
            entries = {e.order_id: e for e in await store.poll(shop, "w1", 10) or []}
            for _ in range(2):  # the same outcome, twice
                await store.retry_later(
                    shop, "A-1", entries["A-1"].entry_id, 60_000, 1, "HTTP 503", 3, outcome="r"
                )
                await store.dead_letter(shop, "A-2", entries["A-2"].entry_id, "HTTP 400", 2, outcome="d")
                await store.mark_delivered(shop, "A-3", entries["A-3"].entry_id, 3600, 4, outcome="m")
            await store.mark_delivered(shop, "A-1", None, 3600, 1, outcome="m2")  # the next round's
            for order_id in ("A-1", "A-2", "A-3"):
                records.append(await store.order(shop, order_id) or {})
            return records
        finally:
            await client.aclose()

    retried, dead, delivered = asyncio.run(scenario())
    assert (retried["state"], retried["attempts"]) == ("delivered", "4")
    assert (dead["state"], dead["attempts"]) == ("dead_lettered", "2")
    assert (delivered["state"], delivered["attempts"]) == ("delivered", "4")
    assert 0 < redis_client.ttl(order_key(shop, "A-3")) <= 3600


def test_a_duplicate_counts_itself_and_keeps_the_records_retention(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A duplicate writes on the order's record (so that its batch's WAIT covers the claim it vouches
    for): a count, and nothing else; a delivered order's retention stays as it was."""
    shop = "shop_dups"

    async def scenario() -> list[str]:
        client = connect(redis_url)
        try:
            store = ConversionStore(client)
            await store.claim(shop, "U-1", BODY, "generic")
            await store.ensure_group(shop)
            [entry] = await store.poll(shop, "w1", 10) or []
            await store.mark_delivered(shop, "U-1", entry.entry_id, 3600, 1)
            redis_client.expire(order_key(shop, "U-1"), 1000)  # set apart from the retention
            return [str((await store.claim(shop, "U-1", BODY, "generic")).outcome) for _ in range(3)]
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == ["duplicate"] * 3
    assert redis_client.hget(order_key(shop, "U-1"), "duplicates") == b"3"
    assert 990 <= redis_client.ttl(order_key(shop, "U-1")) <= 1000


def test_a_repeated_claim_is_answered_as_the_first_time(redis_url: str, redis_client: redis.Redis) -> None:
    """redis-py sends a script again when the connection dropped after Redis ran it: the webhook that
    queued the order must still hear "accepted" (and its ignored order "first"), never "duplicate"."""
    shop = "shop_retry"

    async def scenario() -> list[tuple[str, bool]]:
        client = connect(redis_url)
        try:
            store = ConversionStore(client)
            claims = [
                await store.claim(shop, "R-1", BODY, "generic", claim_id="c1"),
                await store.claim(shop, "R-1", BODY, "generic", claim_id="c1"),  # the repeat
                await store.claim(shop, "R-1", BODY, "generic", claim_id="c2"),  # another webhook
                await store.claim(shop, "R-2", b"", "generic", claim_id="c3"),
                await store.claim(shop, "R-2", b"", "generic", claim_id="c3"),  # the repeat
                await store.claim(shop, "R-2", b"", "generic", claim_id="c4"),  # another webhook
            ]
            return [(c.outcome, c.first) for c in claims]
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == [
        ("accepted", False),
        ("accepted", False),
        ("duplicate", False),
        ("unattributed", True),
        ("unattributed", True),
        ("unattributed", False),
    ]
    assert redis_client.xlen(stream_key(shop)) == 1
    assert redis_client.zcard(pending_key(shop)) == 1


def test_claims_through_dropped_connections_never_answer_duplicate(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Redis drops the intake's connections again and again (a failover, a proxy, CLIENT KILL) while
    webhooks are claimed: a claim redis-py sent again still answers "accepted", never "duplicate"; a
    claim whose retry failed too is an error (the webhook gets a 503 and comes again); every order is
    queued at most once."""
    shop, name = "shop_drops", "ngw-claim-drops"
    stop = threading.Event()

    primaries = primary_clients(redis_url)  # on a cluster, the shop's node is one of them

    def drop_connections() -> None:
        while not stop.wait(0.01):
            for primary in primaries:
                for entry in primary.client_list():
                    if entry.get("name") == name:
                        primary.client_kill_filter(_id=entry["id"])

    async def scenario() -> list[str]:
        client = connect(with_client_name(redis_url, name))  # so that only these are dropped
        try:
            store = ConversionStore(client)

            async def claims(k: int) -> list[str]:
                outcomes: list[str] = []
                for i in range(300):
                    try:
                        outcomes.append((await store.claim(shop, f"D-{k}-{i}", BODY, "generic")).outcome)
                    except RedisError:
                        outcomes.append("error")
                return outcomes

            return [o for batch in await asyncio.gather(*(claims(k) for k in range(16))) for o in batch]
        finally:
            await client.aclose()

    dropper = threading.Thread(target=drop_connections)
    dropper.start()
    try:
        outcomes = asyncio.run(scenario())
    finally:
        stop.set()
        dropper.join()
        for primary in primaries:
            primary.close()
    accepted, errors = outcomes.count("accepted"), outcomes.count("error")
    assert accepted + errors == len(outcomes)  # and so no "duplicate"
    assert accepted > len(outcomes) // 2  # the drops did not stop the claims
    queued = redis_client.xlen(stream_key(shop))
    assert accepted <= queued <= accepted + errors
    assert redis_client.zcard(pending_key(shop)) == queued


def test_a_late_delivery_takes_the_order_off_the_dead_letter_list(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Worker 2 took the entry over and dead-lettered it (a 400) while worker 1's request was still
    out; then Neuroon answers worker 1 with a 2xx: the order is delivered, and no replay is offered."""
    shop = "shop_late_2xx"

    async def scenario() -> dict[str, str] | None:
        client = connect(redis_url)
        try:
            store = ConversionStore(client)
            entry, taken = await _taken_over(store, shop, "L-2")
            await store.dead_letter(shop, "L-2", taken.entry_id, "HTTP 400: bad request", 1)
            await store.mark_delivered(shop, "L-2", entry.entry_id, 3600, 1)
            return await store.order(shop, "L-2")
        finally:
            await client.aclose()

    record = asyncio.run(scenario())
    assert record is not None
    assert record["state"] == "delivered"
    assert redis_client.zcard(dead_key(shop)) == 0
    assert redis_client.zcard(pending_key(shop)) == 0
