"""The two-level token cache: one signer across replicas, skew-proof agreement, rotation, Redis outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY

from app.neuroon.signing import verify_widget_token
from app.settings import ShopConfig
from app.shops import Shop
from app.store import Store, connect, token_key
from app.tokens.cache import TokenCache
from tests.conftest import CANARY_KEY, SHOP_ID

OTHER_KEY = "sk_" + "0123456789abcdef" * 2


class FakeClock:
    """A controllable clock: tests move time instead of waiting for it."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def signatures() -> float:
    return (
        REGISTRY.get_sample_value("neuroon_gateway_widget_token_signatures_total", {"shop": SHOP_ID}) or 0.0
    )


@pytest.fixture
async def store(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[Store]:
    client = connect(redis_url)
    yield Store(client)
    await client.aclose()


@pytest.fixture
def shop() -> Shop:
    return Shop(ShopConfig(id=SHOP_ID, api_key=CANARY_KEY))


async def test_concurrent_requests_sign_once(store: Store, shop: Shop) -> None:
    cache = TokenCache(store)
    before = signatures()
    results = await asyncio.gather(*(cache.get(shop) for _ in range(50)))
    assert len({entry.token for entry, _ in results}) == 1
    assert signatures() - before == 1
    assert [source for _, source in results].count("signed") == 1


async def test_replicas_share_one_token_and_one_signature(redis_url: str, store: Store, shop: Shop) -> None:
    # Eight "replicas": separate caches with separate Redis connections, racing for the first token.
    clients = [connect(redis_url) for _ in range(8)]
    try:
        # Replicas that are up: connected (a cluster client has read the slot map), as the race is for the
        # token, within the token path's short Redis budget, not for a first connection.
        await asyncio.gather(*(c.ping() for c in clients))
        replicas = [TokenCache(Store(c)) for c in clients]
        before = signatures()
        results = await asyncio.gather(*(r.get(Shop(shop.config)) for r in replicas))
        assert len({entry.token for entry, _ in results}) == 1
        assert signatures() - before == 1
    finally:
        for c in clients:
            await c.aclose()


async def test_token_is_stamped_with_redis_time_whatever_the_replica_clock(store: Store, shop: Shop) -> None:
    skewed = TokenCache(store, wall_clock=FakeClock(1_000_000_000.0))  # a replica years behind
    entry, source = await skewed.get(shop)
    assert source == "signed"
    redis_now = await store.server_time()
    assert abs(entry.issued_at - redis_now) < 5


async def test_skewed_replicas_agree_and_converge_within_memory_ttl(
    store: Store, shop: Shop, redis_client: redis.Redis
) -> None:
    mono_a, mono_b = FakeClock(0.0), FakeClock(0.0)
    # Wall clocks an hour apart: they must not matter.
    a = TokenCache(store, memory_ttl=5, monotonic=mono_a, wall_clock=FakeClock(2_000_000_000.0))
    b = TokenCache(store, memory_ttl=5, monotonic=mono_b, wall_clock=FakeClock(2_000_003_600.0))
    first_a, _ = await a.get(shop)
    first_b, source_b = await b.get(shop)
    assert (first_b.token, source_b) == (first_a.token, "redis")

    # refreshAfter arrives by Redis's clock: the stored token expires there.
    redis_client.pexpire(token_key(shop.id, shop.key_fingerprint), 1)
    await asyncio.sleep(0.01)
    mono_a.now += 6
    before = signatures()
    second_a, source_a = await a.get(shop)
    assert source_a == "signed"
    assert signatures() - before == 1
    # B still trusts its copy for at most memory_ttl, then takes the new token without signing.
    assert (await b.get(shop))[1] == "memory"
    before = signatures()
    mono_b.now += 5.01
    second_b, source_b = await b.get(shop)
    assert (second_b.token, source_b) == (second_a.token, "redis")
    assert signatures() == before


async def test_while_one_replica_signs_the_others_serve_the_valid_token(
    store: Store, shop: Shop, redis_client: redis.Redis
) -> None:
    mono = FakeClock(0.0)
    cache = TokenCache(store, monotonic=mono)
    old, _ = await cache.get(shop)
    redis_client.delete(token_key(shop.id, shop.key_fingerprint))
    # Another replica holds the signing lock.
    redis_client.set(f"ngw:v1:token-lock:{{{shop.id}}}:{shop.key_fingerprint}", "other", px=5000)
    mono.now += 10
    before = signatures()
    served, source = await cache.get(shop)
    assert (served.token, source) == (old.token, "memory")
    assert signatures() == before


async def test_key_rotation_never_serves_a_token_of_the_old_key(
    store: Store, tmp_path: Path, redis_client: redis.Redis
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(CANARY_KEY)
    shop = Shop(ShopConfig(id=SHOP_ID, api_key=CANARY_KEY, api_key_file=key_file))
    cache = TokenCache(store)
    old, _ = await cache.get(shop)
    verify_widget_token(old.token, SHOP_ID, CANARY_KEY, now=old.issued_at)

    key_file.write_text(OTHER_KEY + "\n")
    assert shop.reload_key() is True
    # Another replica that restarted with the new key finds nothing signed with it yet.
    fresh_replica = TokenCache(store)
    new, source = await fresh_replica.get(Shop(ShopConfig(id=SHOP_ID, api_key=OTHER_KEY)))
    assert source == "signed"
    rotated, _ = await cache.get(shop)
    assert rotated.token == new.token
    verify_widget_token(rotated.token, SHOP_ID, OTHER_KEY, now=rotated.issued_at)


async def test_malformed_key_file_keeps_the_current_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(CANARY_KEY)
    shop = Shop(ShopConfig(id=SHOP_ID, api_key=CANARY_KEY, api_key_file=key_file))
    key_file.write_text("sk_half-writ")
    assert shop.reload_key() is False
    assert shop.api_key.get_secret_value() == CANARY_KEY


async def test_redis_down_serves_the_valid_token_then_signs_locally(shop: Shop) -> None:
    dead = connect("redis://127.0.0.1:1/0")  # nothing listens there
    mono = FakeClock(0.0)
    cache = TokenCache(Store(dead), monotonic=mono)
    first, source = await cache.get(shop)  # nothing cached and no Redis: sign locally
    assert source == "signed"
    verify_widget_token(first.token, SHOP_ID, CANARY_KEY, now=first.issued_at)
    mono.now += 60
    again, source = await cache.get(shop)
    assert (again.token, source) == (first.token, "memory")
    await dead.aclose()
