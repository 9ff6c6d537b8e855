"""Per-client limits: shared by replicas through Redis, client address judged by trusted proxies."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis

from app.embedded_redis import EmbeddedRedis
from app.ratelimit import WINDOW_SLACK_SECONDS, RateLimiter
from app.store import Store, connect, rate_window_key
from app.store.deadline import RedisDeadline
from tests.conftest import CANARY_KEY, SHOP_ID
from tests.support import run_gateway


@pytest.fixture
async def store(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[Store]:
    client = connect(redis_url)
    yield Store(client)
    await client.aclose()


def mid_minute() -> float:
    """A wall clock stopped mid-window: a test counting one window's hits never sees the minute roll over
    (it did, once in a while: 21 hits allowed of 10 across two windows)."""
    return 1_800_000_030.0


async def hit_and_sync(limiter: RateLimiter, client: str) -> int | None:
    """One request, then let its background sync land (as the next requests' arrival would)."""
    wait = await limiter.hit(client)
    await limiter.synced()
    return wait


async def test_replicas_share_one_budget(store: Store) -> None:
    # A request is judged by what its replica knew before it (syncs run behind requests): each of
    # the two other replicas may have admitted one hit this replica has not heard of yet.
    replicas = [RateLimiter(store, "test", 10, sync_interval=0, wall_clock=mid_minute) for _ in range(3)]
    allowed = 0
    for i in range(30):
        if await hit_and_sync(replicas[i % 3], "198.51.100.7") is None:
            allowed += 1
    assert 10 <= allowed <= 10 + 2


async def test_one_replica_holds_the_limit_exactly_without_waiting_for_redis(store: Store) -> None:
    # Its own hits count at once, synced or not: no await between these requests lets a sync run.
    limiter = RateLimiter(store, "test", 10, sync_interval=0, wall_clock=mid_minute)
    allowed = sum([await limiter.hit("198.51.100.9") is None for _ in range(30)])
    await limiter.synced()
    assert allowed == 10


async def test_batched_replicas_overshoot_by_no_more_than_their_unsynced_hits(store: Store) -> None:
    # Between syncs each replica admits hits the others have not seen; near the limit it syncs on
    # every hit, so five replicas hammering at once still hold the client to (almost) its limit.
    replicas = [RateLimiter(store, "test", 50, wall_clock=mid_minute) for _ in range(5)]
    allowed = sum([await hit_and_sync(replicas[i % 5], "198.51.100.8") is None for i in range(400)])
    assert 50 <= allowed <= 50 + 4


async def test_a_hit_never_waits_for_redis(hung_redis: EmbeddedRedis) -> None:
    client = connect(hung_redis.url)
    try:
        limiter = RateLimiter(Store(client), "test", 10, sync_interval=0, deadline=RedisDeadline("test", 2.0))
        start = time.monotonic()
        assert [await limiter.hit("198.51.100.10") for _ in range(5)] == [None] * 5
        assert time.monotonic() - start < 1.0  # its sync is still waiting for Redis (up to 2 s)
        await limiter.synced()  # the sync gives up; the breaker opens; the limiter fails open
        assert [await limiter.hit("198.51.100.10") for _ in range(20)] == [None] * 20
    finally:
        await client.aclose()


async def test_clients_are_limited_separately(store: Store) -> None:
    limiter = RateLimiter(store, "test", 2, sync_interval=0, wall_clock=mid_minute)
    assert [await hit_and_sync(limiter, "a") for _ in range(3)][-1] is not None
    assert await hit_and_sync(limiter, "b") is None


def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = {
        "NEUROON_SHOP_ID": SHOP_ID,
        "NEUROON_API_KEY": CANARY_KEY,
        "REDIS_URL": redis_url,
        "GATEWAY_TOKEN_RATE_LIMIT": "2",
        "GATEWAY_TRUSTED_PROXIES": "127.0.0.1",
    }
    with run_gateway(["serve"], env, tmp_path) as gateway, httpx.Client(base_url=gateway.base_url) as http:
        for client in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
            statuses = [
                http.get("/v1/widget-token", headers={"X-Forwarded-For": client}).status_code
                for _ in range(3)
            ]
            assert statuses == [200, 200, 429]


# --- what many client addresses cost ---------------------------------------------------------------


async def test_a_client_window_lives_in_redis_only_until_its_window_ends(
    store: Store, redis_client: redis.Redis
) -> None:
    """A botnet's addresses cost Redis one key each for as long as the key can matter: to the end of
    its one-minute window (and a few seconds for replicas' clocks), not two minutes past its first hit."""
    minute = 29_000_000 * 60
    limiter = RateLimiter(store, "test", 10, wall_clock=lambda: minute + 50.0)
    await hit_and_sync(limiter, "198.51.100.20")
    ttl = redis_client.ttl(rate_window_key("test", "198.51.100.20", 29_000_000))
    assert 0 < ttl <= 10 + WINDOW_SLACK_SECONDS


async def test_a_replica_remembers_a_bounded_number_of_clients_and_still_holds_each_to_its_limit(
    store: Store,
) -> None:
    minute = 29_000_001 * 60.0  # one window throughout: a new one would forgive the client anyway
    limiter = RateLimiter(store, "test", 5, sync_interval=0, max_clients=100, wall_clock=lambda: minute)
    assert [await hit_and_sync(limiter, "198.51.100.30") for _ in range(6)][-1] is not None
    for i in range(1000):  # a flood of new addresses pushes the limited client out of memory
        await limiter.hit(f"10.0.{i // 256}.{i % 256}")
    await limiter.synced()
    assert limiter.clients_remembered <= 100
    # Forgotten, it is judged afresh for one hit, and the window kept in Redis limits it again.
    later = [await hit_and_sync(limiter, "198.51.100.30") for _ in range(3)]
    assert later[1] is not None
    assert later[2] is not None
