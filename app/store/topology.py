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

``send_with_tail`` is the one place where the shapes' pipelines differ in what matters: commands that
must be followed, on their own connection, by commands that cover them (the acknowledgement wait:
``WAIT``/``WAITAOF`` count the writes of their own connection only). One server and Sentinel have one
connection to the primary; a cluster has one per node that owns a slot of the batch.

The credentials of the URL go to the data nodes only; Sentinels are asked without them (most
deployments do not protect Sentinels with the data password; README, "Production").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, PipelineCommand, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    MaxConnectionsError,
    MovedError,
    RedisClusterException,
    RedisError,
    TimeoutError,
    TryAgainError,
)
from redis.typing import EncodableT, KeyT

from app.store.packing import with_hiredis_packing
from app.store.redis_url import RedisTarget


class ClusterUnavailable(RedisError):
    """A RedisClusterException, as the RedisError that every caller already handles."""


Command = Sequence[EncodableT]
Keyed = tuple[KeyT, Command]  # a command and a key naming its slot

# How often a batch's commands follow the slot map to a new owner (MOVED, TRYAGAIN) before they fail:
# one failover needs one; a map that keeps changing beyond that is answered with the error (503).
REDIRECTIONS = 3


@dataclass(frozen=True, slots=True)
class Sent:
    """Commands that went down one connection, followed by the tail on that same connection."""

    positions: list[int]  # where the commands were in the caller's list
    replies: list[Any]  # theirs, an exception in place of a failed one's
    tail: list[Any]  # the tail's replies; empty when the connection failed


async def send_with_tail(
    client: aioredis.Redis, commands: Sequence[Keyed], tail: Sequence[Command]
) -> list[Sent]:
    """Send ``commands`` (each with a key that names its slot), each connection's followed by ``tail``.

    Every command is in exactly one ``Sent``: the connection it last went down. Errors are replies,
    not raised, except one that leaves nothing sent (no node known at all).
    """
    if isinstance(client, GatewayCluster):
        return await client.send_with_tail(commands, tail)
    async with client.pipeline(transaction=False) as pipe:
        for _, command in commands:
            pipe.execute_command(*command)
        for command in tail:
            pipe.execute_command(*command)
        replies = await pipe.execute(raise_on_error=False)
    return [Sent(list(range(len(commands))), replies[: len(commands)], replies[len(commands) :])]


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

    async def aclose(self) -> None:
        """Close every node's connections. redis-py's own ``aclose`` closes nothing while the slot map is
        marked to be read again (``_initialize``: set after a connection error, by redis-py and by
        ``send_with_tail``), which left every connection of such a client open."""
        await super().aclose()
        await self.nodes_manager.aclose()
        await self.nodes_manager.aclose("startup_nodes")
        self._initialize = True  # a later use reads the map again and reconnects

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise ClusterUnavailable("shard_hint is not supported in cluster mode")
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]

    async def send_with_tail(self, commands: Sequence[Keyed], tail: Sequence[Command]) -> list[Sent]:
        """``send_with_tail`` on a cluster: one pipeline per node owning a slot of the batch, on one of
        that node's connections, all nodes at once.

        redis-py's ClusterPipeline cannot do this: it routes a keyless command (WAIT) to a node of its
        own choosing, on another connection. A command answered MOVED (its slot has a new owner, as after
        a failover: it did not run) goes again, with the tail, to the new owner; TRYAGAIN (a slot being
        migrated) after a short pause. An ASK (a slot being migrated, the key already moved) is not
        followed: the command fails, and its caller answers 503 until the migration is over.
        A connection that fails leaves its commands failed (they may have run, but nothing covered them)
        and the slot map to be read again before the next batch.
        """
        try:
            return await self._send_with_tail(commands, tail)
        except RedisClusterException as exc:  # e.g. a slot no node covers: read the map again next time
            self._initialize = True
            raise ClusterUnavailable(str(exc)) from exc

    async def _send_with_tail(self, commands: Sequence[Keyed], tail: Sequence[Command]) -> list[Sent]:
        await self.initialize()  # the slot map, when it is to be (re)read
        done: list[Sent] = []
        todo = list(range(len(commands)))
        for attempt in range(REDIRECTIONS + 1):
            last = attempt == REDIRECTIONS
            by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
            for i in todo:
                node = self.nodes_manager.get_node_from_slot(self.keyslot(commands[i][0]))
                by_node.setdefault(node.name, (node, []))[1].append(i)
            sent = await asyncio.gather(
                *(self._send_to(node, positions, commands, tail) for node, positions in by_node.values())
            )
            todo = []
            for one in sent:
                replies = dict(zip(one.positions, one.replies, strict=True))
                if not last:
                    redirected = {i for i, r in replies.items() if isinstance(r, (MovedError, TryAgainError))}
                    moved = {r.slot_id: r for r in replies.values() if isinstance(r, MovedError)}
                    for reply in moved.values():  # the new owner of each slot, as the node says
                        await self.nodes_manager.move_slot(reply)
                    todo += sorted(redirected)
                    replies = {i: r for i, r in replies.items() if i not in redirected}
                if replies:
                    done.append(Sent(list(replies), list(replies.values()), one.tail))
            if not todo:
                break
            if any(isinstance(r, TryAgainError) for one in sent for r in one.replies):
                await asyncio.sleep(0.05)
        return done

    async def _send_to(
        self, node: ClusterNode, positions: list[int], commands: Sequence[Keyed], tail: Sequence[Command]
    ) -> Sent:
        pipeline = [PipelineCommand(i, *commands[i][1]) for i in positions]
        pipeline += [PipelineCommand(-1, *command) for command in tail]
        try:
            await node.execute_pipeline(pipeline)
        except MaxConnectionsError as exc:  # this client's own limit, not the node's failure
            return Sent(positions, [exc] * len(positions), [])
        except (ConnectionError, TimeoutError, OSError) as exc:
            # As redis-py does for a single command: reconnect, and read the slot map again (the node may
            # be gone, its slots on a promoted replica).
            node.update_active_connections_for_reconnect()
            await node.disconnect_free_connections()
            self.nodes_manager.move_node_to_end_of_cached_nodes(node.name)
            self._initialize = True
            return Sent(positions, [exc] * len(positions), [])
        replies = [command.result for command in pipeline]
        if any(isinstance(r, ClusterDownError) for r in replies):
            self._initialize = True  # the cluster is reorganising: read the map again next time
        return Sent(positions, replies[: len(positions)], replies[len(positions) :])


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


async def on_every_primary(client: aioredis.Redis, *command: EncodableT) -> None:
    """Send ``command`` to every primary; raises the error any of them answers (replies are not kept)."""
    if isinstance(client, GatewayCluster):
        await client.execute_command(*command, target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.execute_command(*command)  # type: ignore[no-untyped-call]


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
