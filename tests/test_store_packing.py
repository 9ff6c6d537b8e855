"""Commands packed by hiredis (app/store/packing.py) are byte for byte what redis-py's own Python
packer sends, and are refused where it refuses them."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection
from redis.exceptions import DataError

from app.store import connect
from app.store.packing import HiredisConnection, _HiredisPacking, with_hiredis_packing

COMMANDS: list[tuple[Any, ...]] = [
    ("SET", "key", "value"),
    ("EVALSHA", "0123abcd", 2, "ngw:v1:a:{shop}", b"\x00\xffraw", "ünïcödé ✓", -7, 12345678901234567890),
    ("CONFIG GET", "maxmemory-policy"),
    (b"CONFIG GET", b"appendonly"),
    ("ZADD", "k", 1.5, "m", 0.1, "n", 1e-7, "o"),
    ("SET", "k", memoryview(b"viewed"), "PX", 100),
    ("SET", "k", bytearray(b"array")),
    ("SET", "k", "x" * 10_000),  # past redis-py's buffer cutoff, which it sends in chunks
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: str(args[0]))
def test_the_bytes_on_the_wire_are_redis_py_s_own(args: tuple[Any, ...]) -> None:
    reference = b"".join(bytes(part) for part in Connection().pack_command(*args))
    assert b"".join(HiredisConnection().pack_command(*args)) == reference


@pytest.mark.parametrize("bad", [True, None, object(), ["a"]])
def test_what_redis_py_refuses_is_refused(bad: Any) -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", bad)
    with pytest.raises(DataError):
        HiredisConnection().pack_command("SET", "k", bad)


def test_every_url_scheme_keeps_its_transport() -> None:
    for plain in (
        Connection,
        SSLConnection,
        UnixDomainSocketConnection,
        SentinelManagedConnection,
        SentinelManagedSSLConnection,
    ):
        packing = with_hiredis_packing(plain)
        assert issubclass(packing, plain)
        assert packing is not plain


async def test_the_gateway_s_clients_pack_with_hiredis(redis_url: str) -> None:
    """Whatever the shape (one server, Sentinel's primary, every Cluster node), every connection the
    gateway's client opens packs with hiredis."""
    client: aioredis.Redis = connect(redis_url)
    try:
        for shop in ("a", "b", "c", "d"):  # on a cluster, keys on several nodes
            assert await client.set(f"ngw:test:{{{shop}}}:packing", "ünïcödé") is True
            assert await client.get(f"ngw:test:{{{shop}}}:packing") == "ünïcödé".encode()
        opened = _connections(client)
        assert opened
        assert all(isinstance(connection, _HiredisPacking) for connection in opened)
    finally:
        for shop in ("a", "b", "c", "d"):
            await client.delete(f"ngw:test:{{{shop}}}:packing")
        await client.aclose()


def _connections(client: Any) -> list[Any]:
    if isinstance(client, RedisCluster):
        return [connection for node in client.get_nodes() for connection in node._connections]
    return list(client.connection_pool._available_connections)
