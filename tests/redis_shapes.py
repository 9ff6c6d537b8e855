"""The Redis topologies the suite runs against, started from the embedded Valkey binary (no root):

- ``server``: one server (the default);
- ``sentinel``: a primary, a replica and three Sentinels;
- ``cluster``: three primaries with one replica each.

``GATEWAY_TEST_REDIS=<shape>`` picks one (the Makefile runs the suite once per shape). Each shape can
also be started on its own by the fault-injection tests, which fail over, hang and promote nodes, and
with TLS on another server binary (``binary``, ``tls``: tests/test_redis_tls.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.sentinel import Sentinel

from app.embedded_redis import EmbeddedRedis, ServerTls, free_port
from app.store.redis_url import parse_redis_url

SHAPES = ("server", "sentinel", "cluster")
SERVICE = "gateway"
SLOTS = 16384


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            result = condition()
            if result:
                return result
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


def _client(node: EmbeddedRedis) -> Any:  # redis-py's sync client is partly untyped
    return redis.Redis(**node.client_kwargs(), socket_timeout=2, socket_connect_timeout=1)


def _scheme(base: str, tls: ServerTls | None) -> str:
    return f"rediss+{base}" if tls else f"redis+{base}"


def _query(tls: ServerTls | None) -> str:
    return f"?{tls.query()}" if tls else ""


def _replicating(client: Any) -> bool:
    return bool(client.info("replication").get("master_link_status") == "up")


def _counts_a_replica(client: Any) -> bool:
    info = client.info("replication")
    return int(info.get("connected_slaves", 0)) >= 1 and info.get("slave0", {}).get("state") == "online"


def _sentinel_ready(client: Any) -> bool:
    master = client.sentinel_master(SERVICE)
    return int(master["num-other-sentinels"]) == 2 and int(master["num-slaves"]) == 1


def _cluster_ok(client: Any) -> bool:
    return bool(client.cluster("info")["cluster_state"] == "ok")


class OneServer:
    shape = "server"

    def __init__(self, root: Path, binary: str | None = None, tls: ServerTls | None = None) -> None:
        self.node = EmbeddedRedis(root / "server", binary=binary, tls=tls)
        self.nodes = [self.node]

    def start(self) -> str:
        self.node.start()
        return self.url

    @property
    def url(self) -> str:
        return self.node.url

    def stop(self) -> None:
        self.node.stop()

    def sync_client(self) -> Any:
        return sync_client(self.url)


class SentinelSet:
    """A primary, a replica, and three Sentinels watching them (quorum 2)."""

    shape = "sentinel"

    def __init__(
        self, root: Path, down_after_ms: int = 1000, binary: str | None = None, tls: ServerTls | None = None
    ) -> None:
        # As README "Production" recommends: a primary with no replica in sync refuses writes, so that one
        # that hung and comes back cannot take writes its demotion would then erase.
        safe = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10")
        self.tls = tls
        self.data = [
            EmbeddedRedis(root / f"data{i}", extra_args=safe, binary=binary, tls=tls) for i in range(2)
        ]
        primary = self.data[0]
        self.data[1].extra_args = (*safe, "--replicaof", "127.0.0.1", str(primary.port))
        config = (
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.sentinels = [
            EmbeddedRedis(root / f"sentinel{i}", sentinel_config=config, binary=binary, tls=tls)
            for i in range(3)
        ]
        self.nodes = [*self.data, *self.sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"{_scheme('sentinel', self.tls)}://{hosts}/{SERVICE}/0{_query(self.tls)}"

    def start(self) -> str:
        for node in self.nodes:
            node.start()
        replica = _client(self.data[1])
        wait_for(partial(_replicating, replica), 20, "replication")
        # And the primary counts it (what WAIT, and the gateway's acknowledgement, go by).
        wait_for(partial(_counts_a_replica, _client(self.data[0])), 20, "the primary counting its replica")
        for sentinel in self.sentinels:  # each Sentinel knows the replica and the two other Sentinels
            wait_for(partial(_sentinel_ready, _client(sentinel)), 30, "Sentinel discovery")
        return self.url

    def stop(self) -> None:
        for node in self.nodes:
            node.resume()
            node.stop()

    def sentinel(self) -> Any:
        nodes = [("127.0.0.1", s.port) for s in self.sentinels]
        return Sentinel(nodes, socket_timeout=1)  # type: ignore[no-untyped-call]

    def primary_port(self) -> int:
        sentinel = self.sentinel()
        try:
            return int(sentinel.discover_master(SERVICE)[1])
        finally:
            _close_sentinels(sentinel)

    def primary(self) -> EmbeddedRedis:
        port = self.primary_port()
        return next(node for node in self.data if node.port == port)

    def sync_client(self) -> Any:
        return sync_client(self.url)

    def failover(self) -> None:
        """A planned failover (SENTINEL FAILOVER): the replica becomes the primary."""
        before = self.primary_port()
        _client(self.sentinels[0]).execute_command("SENTINEL", "FAILOVER", SERVICE)
        self.wait_for_new_primary(before)

    def wait_for_new_primary(self, old_port: int, timeout: float = 30) -> None:
        wait_for(lambda: self.primary_port() != old_port, timeout, "a new primary")
        new = _client(self.primary())
        wait_for(lambda: new.info("replication")["role"] == "master", timeout, "the new primary's role")


class Cluster:
    """Three primaries, each with a replica; slots split evenly."""

    shape = "cluster"

    def __init__(
        self, root: Path, node_timeout_ms: int = 1000, binary: str | None = None, tls: ServerTls | None = None
    ) -> None:
        args: tuple[str, ...] = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                 "--cluster-node-timeout", str(node_timeout_ms))  # fmt: skip
        if tls:  # the bus too; and CLUSTER SLOTS then names each node's TLS port
            args = (*args, "--tls-cluster", "yes")
        self.tls = tls
        self.binary = binary
        # The cluster bus port is set apart: its default (port + 10000) may be past 65535, or taken.
        self.bus_ports: dict[int, int] = {}
        self.primaries = [self._node(root / f"primary{i}", args) for i in range(3)]
        self.replicas = [self._node(root / f"replica{i}", args) for i in range(3)]
        self.nodes = [*self.primaries, *self.replicas]

    def _node(self, data_dir: Path, args: tuple[str, ...]) -> EmbeddedRedis:
        bus = free_port()
        node = EmbeddedRedis(
            data_dir, extra_args=(*args, "--cluster-port", str(bus)), binary=self.binary, tls=self.tls
        )
        self.bus_ports[node.port] = bus
        return node

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p.port}" for p in self.primaries)
        return f"{_scheme('cluster', self.tls)}://{hosts}{_query(self.tls)}"

    def start(self) -> str:
        for node in self.nodes:
            node.start()
        clients = [_client(node) for node in self.nodes]
        step = SLOTS // len(self.primaries)
        for i, client in enumerate(clients[: len(self.primaries)]):
            last = SLOTS - 1 if i == len(self.primaries) - 1 else (i + 1) * step - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        wait_for(lambda: self._met(clients), 30, "cluster gossip")
        for primary, replica in zip(clients, clients[len(self.primaries) :], strict=False):
            node_id = primary.execute_command("CLUSTER", "MYID").decode()
            replica.execute_command("CLUSTER", "REPLICATE", node_id)
        for client in clients:
            wait_for(partial(_cluster_ok, client), 30, "cluster state ok")
        for replica in clients[len(self.primaries) :]:
            wait_for(partial(_replicating, replica), 30, "replication")
        return self.url

    def _met(self, clients: list[Any]) -> bool:
        """Whether every node knows every other; if not, the first one meets those it does not know yet.
        Met again: a handshake not answered within the node timeout (a loaded machine) is dropped, and
        the node never tries it again on its own."""
        if all(self._knows_all(c) for c in clients):
            return True
        known = clients[0].execute_command("CLUSTER", "NODES").decode()
        for node in self.nodes[1:]:
            if f":{node.port}@" not in known:
                clients[0].execute_command(
                    "CLUSTER", "MEET", "127.0.0.1", node.port, self.bus_ports[node.port]
                )
        return False

    def _knows_all(self, client: Any) -> bool:
        known = client.execute_command("CLUSTER", "NODES").decode().strip().splitlines()
        return len(known) == len(self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.resume()
            node.stop()

    def sync_client(self) -> Any:
        return sync_client(self.url)

    def primary_of(self, key: str) -> EmbeddedRedis:
        slot = key_slot(key.encode())
        for node in self.nodes:
            with _client(node) as client:
                if client.info("replication")["role"] != "master":
                    continue
                for start, end, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end and int(_[0][1]) == node.port:
                        return node
        raise LookupError("no primary owns the slot")

    def replica_of(self, primary: EmbeddedRedis) -> EmbeddedRedis:
        for node in self.nodes:
            with _client(node) as client:
                info = client.info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == primary.port:
                    return node
        raise LookupError("the primary has no replica")

    def failover(self, key: str, *, force: bool = False) -> EmbeddedRedis:
        """A planned failover (CLUSTER FAILOVER on the replica) of the primary owning ``key``'s slot."""
        old = self.primary_of(key)
        replica = self.replica_of(old)
        with _client(replica) as client:
            client.execute_command("CLUSTER", "FAILOVER", *(["FORCE"] if force else []))
            wait_for(lambda: client.info("replication")["role"] == "master", 30, "the replica's promotion")
        wait_for(lambda: self.primary_of(key).port == replica.port, 30, "the slot map's update")
        return replica


def make_shape(shape: str, root: Path) -> OneServer | SentinelSet | Cluster:
    if shape == "server":
        return OneServer(root)
    if shape == "sentinel":
        return SentinelSet(root)
    if shape == "cluster":
        return Cluster(root)
    raise ValueError(f"GATEWAY_TEST_REDIS must be one of {', '.join(SHAPES)}")


def _close_sentinels(sentinel: Any) -> None:
    for client in sentinel.sentinels:
        client.close()


class _SentinelPrimary(redis.Redis):
    """Closing it closes the Sentinels' connections too (as app/store/topology.py does)."""

    def close(self) -> None:
        super().close()
        _close_sentinels(self.connection_pool.sentinel_manager)  # type: ignore[attr-defined]


def sync_client(url: str) -> Any:
    """redis-py's synchronous client for any REDIS_URL shape (tests' own reads and writes)."""
    target = parse_redis_url(url)
    if target.shape == "server":
        return redis.Redis.from_url(url)
    if target.shape == "sentinel":
        assert target.service is not None
        sentinel = Sentinel(list(target.nodes), socket_timeout=1)  # type: ignore[no-untyped-call]
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            target.service, redis_class=_SentinelPrimary, socket_timeout=2, **target.options
        )
    options = {k: v for k, v in target.options.items() if k != "db"}
    seeds = [ClusterNode(h, p) for h, p in target.nodes]  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=seeds, **options)


def primary_clients(url: str) -> list[Any]:
    """A plain client on each primary of any REDIS_URL shape (to inspect or kill its connections)."""
    target = parse_redis_url(url)
    if target.shape == "server":
        return [redis.Redis.from_url(url)]
    client = sync_client(url)
    try:
        if target.shape == "sentinel":
            host, port = client.connection_pool.get_master_address()
            addresses = [(host, int(port))]
        else:
            addresses = [(node.host, node.port) for node in client.get_primaries()]
    finally:
        client.close()
    return [redis.Redis(host=host, port=port, **_auth(target.options)) for host, port in addresses]


def _auth(options: dict[str, Any]) -> dict[str, Any]:
    """The credentials and TLS options of a URL's connections."""
    return {k: v for k, v in options.items() if k in ("username", "password") or k.startswith("ssl")}


def with_client_name(url: str, name: str) -> str:
    """The URL with a client name for every connection it opens (so that a test can pick them out)."""
    return f"{url}{'&' if '?' in url else '?'}client_name={name}"
