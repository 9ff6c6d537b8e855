"""One asyncio Redis client for every shape REDIS_URL names: one server, Sentinel, or Cluster.

- One server: redis-py's client from the URL.
- Sentinel: a client whose connections ask the Sentinels for the current primary. A primary that
  was demoted answers a write with READONLY; redis-py's Sentinel connection turns that into a
  ConnectionError and drops the connection, so the next try asks the Sentinels again. Nothing
  is acknowledged on a replica: the write either lands on the new primary or fails (503).
- Cluster: RedisCluster, which follows MOVED/ASK redirections and the slot map. Every key the
  gateway writes in one step shares a ``{shopId}`` hash tag (one slot). RedisClusterException
  (no node reachable, keys across slots) is not a RedisError in redis-py: the client below
  raises it as a RedisError, so every caller's "Redis is unavailable" handling (503, retry,
  backoff) covers the cluster too.

The credentials of the URL go to the data nodes only; Sentinels are asked without them (most
deployments do not protect Sentinels with the data password; README, "Production").
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection
from redis.exceptions import RedisClusterException, RedisError

from app.store.packing import with_hiredis_packing
from app.store.redis_url import RedisTarget


class ClusterUnavailable(RedisError):
    """A RedisClusterException, as the RedisError that every caller already handles."""


class _ClusterPipeline(ClusterPipeline):
    async def execute(self, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            return await super().execute(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc


class GatewayCluster(RedisCluster):
    async def initialize(self, *args: Any, **kwargs: Any) -> GatewayCluster:  # the slot map, read first
        try:
            await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise ClusterUnavailable("shard_hint is not supported in cluster mode")
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]


class _SentinelPrimary(aioredis.Redis):
    """The primary's client; closing it closes the connections to the Sentinels too (redis-py's
    Sentinel keeps one client per Sentinel, which nothing else closes)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            await sentinel.aclose()


async def info_per_primary(client: aioredis.Redis, section: str) -> dict[str, dict[str, Any]]:
    """INFO ``section`` of every primary, by node (a cluster answers INFO from one node otherwise)."""
    if isinstance(client, RedisCluster):
        replies: dict[str, dict[str, Any]] = await client.info(section, target_nodes=RedisCluster.PRIMARIES)
        return replies
    return {"primary": await client.info(section)}


async def config_per_primary(client: aioredis.Redis, name: str) -> dict[str, str | None]:
    """CONFIG GET ``name`` on every primary, by node."""
    if isinstance(client, RedisCluster):
        replies = await client.config_get(name, target_nodes=RedisCluster.PRIMARIES)
        return {node: reply.get(name) for node, reply in replies.items()}
    return {"primary": (await client.config_get(name)).get(name)}


async def subscriber(client: aioredis.Redis) -> Any:
    """A pub/sub connection. On a cluster, on one node: a classic PUBLISH reaches every node."""
    if isinstance(client, RedisCluster):
        await client.initialize()  # the node map, which a fresh client has not read yet
        return client.pubsub(node=client.get_random_node(), ignore_subscribe_messages=True)
    return client.pubsub(ignore_subscribe_messages=True)


def client_for(target: RedisTarget, **connection: Any) -> aioredis.Redis:
    """A client for ``target``; ``connection`` holds the timeouts and retry policy of every shape.

    A cluster client is typed as ``aioredis.Redis``: it offers the same command methods, and the
    few places where the shapes differ (INFO and CONFIG per node, pub/sub) are the functions above.
    """
    if target.shape == "server":
        client = aioredis.Redis.from_url(target.url, **connection)
        pool = client.connection_pool  # connections are made on first use: the class can still change
        pool.connection_class = with_hiredis_packing(pool.connection_class)
        return client
    options = {**target.options, **connection}
    if target.shape == "sentinel":
        ssl = options.pop("ssl", False)
        sentinels = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes),
            sentinel_kwargs={
                "socket_connect_timeout": connection.get("socket_connect_timeout"),
                "socket_timeout": connection.get("socket_connect_timeout"),
            },
        )
        assert target.service is not None  # the parser insists on it
        primary: aioredis.Redis = sentinels.master_for(
            target.service,
            redis_class=_SentinelPrimary,
            connection_class=with_hiredis_packing(
                SentinelManagedSSLConnection if ssl else SentinelManagedConnection
            ),
            **options,
        )
        return primary
    options.pop("db", None)  # the parser allows only 0
    seeds = [ClusterNode(host, port) for host, port in target.nodes]
    cluster = GatewayCluster(startup_nodes=seeds, **options)
    packing = with_hiredis_packing(cluster.connection_kwargs["connection_class"])
    cluster.connection_kwargs["connection_class"] = packing
    cluster.nodes_manager.connection_kwargs["connection_class"] = packing
    for node in cluster.startup_nodes:
        node.connection_class = packing  # type: ignore[assignment]
    return cast(aioredis.Redis, cluster)
