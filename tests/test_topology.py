"""The client of each shape (app/store/topology.py): a cluster's own errors are Redis errors, so that
every caller's handling of an unavailable Redis (503, retry, back-off) covers the cluster too."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from redis.exceptions import RedisError

from app.embedded_redis import free_port
from app.main import create_app
from app.store import Store, connect
from app.store.topology import info_per_primary
from tests.conftest import SHOP_ID, SettingsFactory
from tests.redis_shapes import primary_clients, wait_for
from tests.webhooks import STANDARD_SECRET, encode, generic_order, standard_headers


async def test_a_cluster_that_cannot_be_reached_raises_a_redis_error() -> None:
    client = connect(f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    try:
        with pytest.raises(RedisError):  # redis-py raises RedisClusterException, not a RedisError
            await client.set("ngw:test:{x}:k", "v")
        pipe = client.pipeline(transaction=False)
        pipe.get("ngw:test:{x}:k")
        with pytest.raises(RedisError):
            async with pipe:
                await pipe.execute()
        assert await Store(client).ping() is False
    finally:
        await client.aclose()


def test_a_webhook_gets_a_503_when_the_cluster_cannot_be_reached(make_settings: SettingsFactory) -> None:
    settings = make_settings(
        redis_url=f"redis+cluster://127.0.0.1:{free_port()}",
        gateway_webhook_secret=STANDARD_SECRET,
        gateway_run_worker=False,
    )
    with TestClient(create_app(settings)) as client:
        payload = encode(generic_order("C-1", shop_id=SHOP_ID))
        response = client.post("/v1/webhooks/orders", content=payload, headers=standard_headers(payload))
        assert response.status_code == 503, response.text
        assert set(response.json()) >= {"error", "detail"}
        assert client.get("/readyz").status_code == 503


def test_a_cluster_client_closes_its_connections_while_its_map_is_to_be_read_again(
    redis_shape: str, redis_url: str
) -> None:
    """After a connection error redis-py marks the slot map to be read again (``_initialize``), and its
    ``aclose`` then closed nothing: every connection stayed open until garbage collection (seen as
    "unclosed socket" warnings in the suite). Ours closes them all."""
    if redis_shape != "cluster":
        pytest.skip("runs in the suite's cluster pass (GATEWAY_TEST_REDIS=cluster)")
    primaries = primary_clients(redis_url)

    def connected() -> int:
        return sum(int(p.info("clients")["connected_clients"]) for p in primaries)

    async def scenario() -> None:
        client = connect(redis_url)
        await info_per_primary(client, "clients")  # a connection to every primary
        assert connected() >= before + len(primaries)
        client._initialize = True  # type: ignore[attr-defined]  # what a connection error leaves
        await client.aclose()

    try:
        before = connected()
        asyncio.run(scenario())
        wait_for(lambda: connected() == before, 10, "the client's connections closed")
    finally:
        for primary in primaries:
            primary.close()
