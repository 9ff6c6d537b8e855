"""/readyz tells the truth: 200 only where this process can write its shops' data (app/health.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app.embedded_redis import EmbeddedRedis
from app.health import not_ready_reason
from app.main import create_app
from app.store import connect, ready_key
from tests.conftest import SHOP_ID, SettingsFactory


@pytest.fixture
def replica(own_redis: EmbeddedRedis, tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "replica")
    server.start()
    with redis.Redis(port=server.port) as admin:
        admin.replicaof("127.0.0.1", str(own_redis.port))
    yield server
    server.stop()


@pytest.fixture
async def replica_client(replica: EmbeddedRedis) -> AsyncIterator[redis.asyncio.Redis]:
    client = connect(replica.url)
    yield client
    await client.aclose()


def test_ready_on_the_primary_with_a_short_lived_probe_under_each_shop(
    make_settings: SettingsFactory, redis_client: redis.Redis
) -> None:
    with TestClient(create_app(make_settings())) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "redis": "up"}
    # Under the shop's hash tag, so on a cluster it lands on the node that owns the shop's data.
    assert ready_key(SHOP_ID).endswith("{" + SHOP_ID + "}")
    assert 0 < redis_client.pttl(ready_key(SHOP_ID)) <= 10_000


def test_not_ready_on_a_replica_although_it_answers_ping(
    make_settings: SettingsFactory, replica: EmbeddedRedis
) -> None:
    assert redis.Redis(port=replica.port).ping()
    with TestClient(create_app(make_settings(redis_url=replica.url))) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "error": "not_ready",
        "detail": "Redis is a read-only replica: writes must go to the primary",
        "redis": "down",
    }


async def test_the_check_names_what_stops_the_write(replica_client: redis.asyncio.Redis) -> None:
    assert await not_ready_reason(replica_client, [SHOP_ID]) == (
        "Redis is a read-only replica: writes must go to the primary"
    )


async def test_a_full_redis_is_not_ready(own_redis: EmbeddedRedis) -> None:
    # noeviction at its memory limit refuses writes (and so every order): not ready, with the code
    # only; the server's message stays out of a response that may be public.
    admin = redis.Redis(port=own_redis.port)
    admin.config_set("maxmemory", "1")
    client = connect(own_redis.url)
    try:
        assert await not_ready_reason(client, [SHOP_ID]) == "Redis refused a write (OOM)"
    finally:
        admin.config_set("maxmemory", "0")
        admin.close()
        await client.aclose()
