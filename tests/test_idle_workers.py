"""An idle worker costs Redis little whatever the number of shops, still picks a new order up at once,
and leaves no dead consumers behind in the streams' consumer groups (issue 11, item 6).

Measured with INFO commandstats on every primary, so commands run inside our scripts count too: an
upper bound of what the worker sends.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import SecretStr

from app.conversions.worker import DeliveryWorker, running
from app.neuroon.client import NeuroonClient
from app.settings import ShopConfig
from app.shops import ShopRegistry
from app.store import connect
from app.store.conversions import GROUP, ConversionStore, stream_key
from tests.conftest import CANARY_KEY, SettingsFactory
from tests.redis_shapes import primary_clients

SHOPS = 200
BODY = b'{"orderId":"1","currency":"EUR","total":1,"items":[{"productId":"p","quantity":1,"price":1}]}'


def _registry(count: int) -> ShopRegistry:
    return ShopRegistry(
        tuple(ShopConfig(id=f"shop_idle_{k}", api_key=SecretStr(CANARY_KEY)) for k in range(count))
    )


def _commands(primaries: list[Any]) -> dict[str, int]:
    """Commands every primary has run, by name (INFO itself left out)."""
    total: dict[str, int] = {}
    for primary in primaries:
        for name, stats in primary.info("commandstats").items():
            if name != "cmdstat_info":
                total[name] = total.get(name, 0) + int(stats["calls"])
    return total


async def test_an_idle_worker_with_200_shops_sends_under_50_commands_a_second(
    redis_url: str, redis_client: Any, make_settings: SettingsFactory, neuroon: NeuroonClient
) -> None:
    shops = _registry(SHOPS)
    primaries = primary_clients(redis_url)
    client = connect(redis_url, socket_timeout=10)
    store = ConversionStore(client)
    worker = DeliveryWorker(store, shops, neuroon, make_settings())
    try:
        async with running(worker, grace=1):
            # Start-up: every shop's group made and looked at once (they are, when every stream exists).
            deadline = time.monotonic() + 60
            while sum(redis_client.exists(stream_key(s.id)) for s in shops) < SHOPS:
                assert time.monotonic() < deadline, "the worker did not start"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)
            before, started = _commands(primaries), time.monotonic()
            await asyncio.sleep(10)
            after, elapsed = _commands(primaries), time.monotonic() - started
            by_name = {name: (after[name] - before.get(name, 0)) / elapsed for name in after}
            rate = sum(by_name.values())
            print(
                f"idle worker, {SHOPS} shops: {rate:.1f} commands/s",
                {n: round(r, 1) for n, r in by_name.items() if r},
            )
            assert rate < 50, {name: round(r, 1) for name, r in by_name.items() if r}
            assert rate > 1  # the worker does look at its shops now and then (the measure sees it)

            # Idle is not asleep: an order queued now is taken at once (a wake-up), not at the
            # shop's next regular look (tens of seconds away with 200 shops).
            shop = "shop_idle_150"
            queued = time.monotonic()
            assert await store.enqueue(shop, "W-1", BODY, "generic")
            while (await store.order(shop, "W-1") or {}).get("state") == "accepted":  # not taken yet
                assert time.monotonic() - queued < 5, "the order waited for the shop's next look"
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()
        for primary in primaries:
            primary.close()


async def test_dead_consumers_leave_the_group(
    redis_url: str, redis_client: Any, make_settings: SettingsFactory, neuroon: NeuroonClient
) -> None:
    """Consumers left by workers that restarted are removed when a worker starts (once the entries they
    held are taken over), and a worker that stops removes its own."""
    shops = _registry(1)
    [shop] = shops
    stream = stream_key(shop.id)
    redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for dead in ("gone-1", "gone-2"):
        redis_client.xgroup_createconsumer(stream, GROUP, dead)
    redis_client.xadd(stream, {"o": "H-1"})
    redis_client.xreadgroup(GROUP, "holding", {stream: ">"}, count=1)  # and never acknowledges
    await asyncio.sleep(0.3)  # every one of them idle for longer than the threshold below (2 leases)

    client = connect(redis_url, socket_timeout=10)
    worker = DeliveryWorker(
        ConversionStore(client),
        shops,
        neuroon,
        make_settings(gateway_worker_lease_seconds=0.1),
        name="w-live",
    )
    try:
        async with running(worker, grace=1):
            deadline = time.monotonic() + 10
            while _consumers(redis_client, stream) & {"gone-1", "gone-2"}:
                assert time.monotonic() < deadline, _consumers(redis_client, stream)
                await asyncio.sleep(0.05)
            assert "w-live" in _consumers(redis_client, stream)
        assert "w-live" not in _consumers(redis_client, stream)
    finally:
        await client.aclose()


def _consumers(redis_client: Any, stream: str) -> set[str]:
    return {c["name"].decode() for c in redis_client.xinfo_consumers(stream, GROUP)}
