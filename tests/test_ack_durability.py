"""Acknowledgement = durability (interface §3.3) on real servers: a primary and a replica started here
(the embedded Valkey), and single AOF servers. An order is answered `accepted` only once the replica
has it and the AOF is fsynced; otherwise 503, within the deadline."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from app.embedded_redis import EmbeddedRedis
from app.main import create_app
from app.sandbox import Sandbox, SandboxShop, create_sandbox
from app.store import connect, durability
from app.store.conversions import ConversionStore, order_key, stream_key
from app.store.durability import AckDurability
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL, SettingsFactory
from tests.redis_shapes import Cluster, primary_clients
from tests.test_delivery import wait_for
from tests.webhooks import SHOPIFY_SECRET, encode, shopify_headers, shopify_order

CLICKS = {"SNOW-GRN-150": "log_snow"}
SANDBOX_URL = "http://neuroon.sandbox"


def _online_replicas(primary: redis.Redis) -> int:
    info = primary.info("replication")
    return sum(
        1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v["state"] == "online"
    )


class Pair:
    """A primary and its replica, each an embedded server of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # No 5 s pause before the replica's first sync (the default waits for more replicas to join).
        self.primary = EmbeddedRedis(root / "primary", extra_args=["--repl-diskless-sync-delay", "0"])
        self.primary.start()
        self.replica = self._replica("replica")
        self.primary_client = redis.Redis.from_url(self.primary.url)

    def _replica(self, name: str) -> EmbeddedRedis:
        replica = EmbeddedRedis(
            self.root / name, extra_args=["--replicaof", "127.0.0.1", str(self.primary.port)]
        )
        replica.start()
        client = redis.Redis.from_url(replica.url)
        primary = redis.Redis.from_url(self.primary.url)
        try:
            wait_for(lambda: client.info("replication")["master_link_status"] == "up", "replica in sync")
            # The primary counts a replica for WAIT once it has acknowledged after the sync (within 1 s).
            wait_for(lambda: _online_replicas(primary) == 1, "replica online for the primary")
        finally:
            client.close()
            primary.close()
        return replica

    def replica_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.replica.url)

    def restart_replica(self) -> None:
        self.replica = self._replica(f"replica-{time.monotonic_ns()}")

    def signal_replica(self, sig: signal.Signals) -> None:
        if self.replica._proc is not None:
            os.kill(self.replica._proc.pid, sig)

    def close(self) -> None:
        self.primary_client.close()
        self.replica.stop()
        self.primary.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    servers = Pair(tmp_path)
    try:
        yield servers
    finally:
        servers.signal_replica(signal.SIGCONT)  # never leave a stopped server behind
        servers.close()


def gateway(
    make_settings: SettingsFactory, redis_url: str, sandbox: Sandbox | None = None, **overrides: Any
) -> TestClient:
    """The gateway over ``redis_url``; with a ``sandbox``, its worker runs too and delivers there."""
    values: dict[str, Any] = {"gateway_run_worker": False}
    transport = None
    if sandbox is not None:
        values = {"gateway_run_worker": True, "neuroon_api_url": SANDBOX_URL, "neuroon_retry_attempts": 1}
        transport = httpx.ASGITransport(app=sandbox.app)
    settings = make_settings(redis_url=redis_url, shopify_webhook_secret=SHOPIFY_SECRET, **values | overrides)
    return TestClient(create_app(settings, neuroon_transport=transport))


def post_order(client: TestClient, order_id: int) -> Any:
    body = encode(shopify_order(order_id, clicks=CLICKS))
    return client.post("/v1/webhooks/shopify", content=body, headers=shopify_headers(body))


def has_order(client: redis.Redis, order_id: int) -> bool:
    return bool(client.exists(order_key(SHOP_ID, str(order_id))))


def calls_per_primary(redis_url: str, command: str) -> dict[int, int]:
    """How often each primary ran ``command``, by port (one server and Sentinel: the primary)."""
    counts = {}
    for client in primary_clients(redis_url):
        stats = client.info("commandstats").get(f"cmdstat_{command}", {})
        counts[client.connection_pool.connection_kwargs["port"]] = int(stats.get("calls", 0))
        client.close()
    return counts


def calls(redis_url: str, command: str) -> int:
    return sum(calls_per_primary(redis_url, command).values())


def test_an_order_is_accepted_only_once_the_replica_has_it(
    pair: Pair, make_settings: SettingsFactory
) -> None:
    # The longest acknowledgement wait there is (0.9 s; a 5 s Redis budget keeps it from being capped
    # lower), and a gateway already warm (connected, scripts loaded) when the replica stops: the wait
    # after SIGCONT is then the replica's answer, not a cold start on a busy machine.
    settings: dict[str, Any] = {"gateway_ack_timeout": 0.9, "gateway_redis_timeout": 5.0}
    with gateway(make_settings, pair.primary.url, **settings) as client:
        assert post_order(client, 1000).json()["status"] == "accepted"
        pair.signal_replica(signal.SIGSTOP)  # still connected, as a slow replica is, but not acknowledging
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(post_order, client, 1001)
            time.sleep(0.3)
            assert not answer.done(), "answered while the only replica could not have the order"
            pair.signal_replica(signal.SIGCONT)
            response = answer.result(timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    replica = pair.replica_client()
    try:
        assert has_order(replica, 1001)  # it was there when `accepted` was sent: nothing since wrote it
    finally:
        replica.close()


def test_a_replica_gone_means_503_within_the_deadline_until_it_is_back(
    pair: Pair, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every batch re-reads INFO: the gateway sees the replica go, and must still not accept alone (auto).
    monkeypatch.setattr(durability, "REFRESH_SECONDS", 0.0)
    with gateway(make_settings, pair.primary.url) as client:
        assert post_order(client, 2001).json()["status"] == "accepted"
        pair.replica.stop()
        wait_for(lambda: pair.primary_client.info("replication")["connected_slaves"] == 0, "replica gone")
        started = time.monotonic()
        refused = post_order(client, 2002)
        assert time.monotonic() - started < 3  # the ack timeout is 0.5 s: a 503, not a hang
        assert refused.status_code == 503
        assert refused.json()["error"] == "unavailable"
        assert "durably" in refused.json()["detail"]

        pair.restart_replica()
        # The platform's retries: answered once the new replica acknowledges (right after its first sync
        # a loaded machine may still refuse one). The refused attempt's claim was on the primary: the
        # retry answers "duplicate" for it, and it is queued once.
        wait_for(lambda: post_order(client, 2002).status_code == 200, "the retry answered")
        assert post_order(client, 2002).json()["status"] == "duplicate"
        wait_for(lambda: post_order(client, 2003).status_code == 200, "a new order answered")
    replica = pair.replica_client()
    try:
        assert all(has_order(replica, o) for o in (2001, 2002, 2003))
    finally:
        replica.close()


def test_a_duplicate_is_answered_only_once_the_replica_has_the_claim(
    pair: Pair, make_settings: SettingsFactory
) -> None:
    """A webhook answered 503 (the replica did not acknowledge) left its claim on the primary; the
    platform's retry reaches another replica of the gateway, whose connection wrote nothing of that
    claim: its WAIT must still cover it, so `duplicate` (which stops the platform's retries) is
    answered only once the replica has the claim."""
    first, second = gateway(make_settings, pair.primary.url), gateway(make_settings, pair.primary.url)
    with first, second:
        for client, order_id in ((first, 9001), (second, 9002)):  # warm: connected, plan learned
            assert post_order(client, order_id).json()["status"] == "accepted"
        pair.signal_replica(signal.SIGSTOP)
        assert post_order(first, 9003).status_code == 503
        assert has_order(pair.primary_client, 9003)  # on the primary only
        assert post_order(second, 9003).status_code == 503  # was `duplicate`, vouching for nothing
        assert post_order(second, 9003).status_code == 503
        pair.signal_replica(signal.SIGCONT)
        wait_for(lambda: post_order(second, 9003).status_code == 200, "the retry answered")
        assert post_order(second, 9003).json() == {
            "status": "duplicate",
            "orderId": "9003",
            "state": "accepted",
        }
    replica = pair.replica_client()
    try:
        assert has_order(replica, 9003)
        # Each repeat counted itself on the order's record (the write that carries the WAIT).
        assert int(replica.hget(order_key(SHOP_ID, "9003"), "duplicates") or 0) >= 4
    finally:
        replica.close()


def test_a_delivery_is_recorded_on_the_replica_before_the_worker_moves_on(
    pair: Pair, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Neuroon's 2xx seen, its record must be on the replica (a failover would erase it from the
    primary alone, and the order would be sent again): while the replica cannot acknowledge, the
    worker writes the record again and sends nothing more; once it can, the order is delivered once,
    its request counted once."""
    caplog.set_level(logging.INFO)
    sandbox = create_sandbox([SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL)])
    with gateway(make_settings, pair.primary.url) as intake:
        assert post_order(intake, 9101).json()["status"] == "accepted"  # on the replica too
    pair.signal_replica(signal.SIGSTOP)

    def delivered_logged() -> bool:
        return any(r.getMessage() == "conversion_delivered" for r in caplog.records)

    with gateway(make_settings, pair.primary.url, sandbox):  # its worker takes the order
        wait_for(lambda: len(sandbox.requests) == 1, "the delivery")
        assert sandbox.requests[0].status == 200
        time.sleep(1.5)  # the record written again and again meanwhile (the ack wait is 0.5 s)
        assert not delivered_logged(), "moved on while only the primary had the record"
        assert len(sandbox.requests) == 1
        pair.signal_replica(signal.SIGCONT)
        wait_for(delivered_logged, "the worker moving on once the replica has the record")
        assert len(sandbox.requests) == 1
    replica = pair.replica_client()
    try:
        record = replica.hgetall(order_key(SHOP_ID, "9101"))
    finally:
        replica.close()
    assert record[b"state"] == b"delivered"
    assert record[b"attempts"] == b"1"
    assert any(r.getMessage() == "delivery_record_failed" for r in caplog.records)


def test_a_hung_replica_means_503_not_accepted(pair: Pair, make_settings: SettingsFactory) -> None:
    with gateway(make_settings, pair.primary.url) as client:
        pair.signal_replica(signal.SIGSTOP)
        started = time.monotonic()
        response = post_order(client, 3001)
        assert time.monotonic() - started < 3
        assert response.status_code == 503


def test_ack_replicas_zero_is_the_operators_choice_to_accept_alone(
    pair: Pair, make_settings: SettingsFactory
) -> None:
    with gateway(make_settings, pair.primary.url, gateway_ack_replicas=0) as client:
        pair.replica.stop()
        assert post_order(client, 4001).json()["status"] == "accepted"


def test_more_replicas_required_than_the_deployment_has_is_503(
    pair: Pair, make_settings: SettingsFactory
) -> None:
    with gateway(make_settings, pair.primary.url, gateway_ack_replicas=2, gateway_ack_timeout=0.1) as client:
        assert post_order(client, 5001).status_code == 503


def test_a_single_aof_server_waits_for_the_fsync(
    make_settings: SettingsFactory, redis_url: str, redis_client: redis.Redis
) -> None:
    with gateway(make_settings, redis_url) as client:
        assert post_order(client, 6000).json()["status"] == "accepted"  # the script loaded
        before = calls(redis_url, "waitaof")
        assert post_order(client, 6001).json()["status"] == "accepted"
        assert calls(redis_url, "waitaof") == before + 1


def test_one_wait_per_batch_of_claims(redis_url: str, redis_client: redis.Redis) -> None:
    body = b'{"orderId":"x","conversions":[{"productId":"A","searchLogId":"log_a"}]}'

    async def claim_all() -> list[str]:
        client = connect(redis_url)
        try:
            store = ConversionStore(client, AckDurability(client, replicas=None, timeout=0.5))
            await store.claim("shop_b", "B-first", body, "generic")  # the plan learned, the script loaded
            before = calls(redis_url, "waitaof")
            claims = await asyncio.gather(
                *(store.claim("shop_b", f"B-{i}", body, "generic") for i in range(20))
            )
            assert calls(redis_url, "waitaof") == before + 1
            return [c.outcome for c in claims]
        finally:
            await client.aclose()

    assert asyncio.run(claim_all()) == ["accepted"] * 20


def test_claims_arriving_during_a_wait_share_the_next_one(redis_url: str, redis_client: redis.Redis) -> None:
    async def scenario() -> None:
        client = connect(redis_url)
        try:
            store = ConversionStore(client, AckDurability(client, replicas=None, timeout=0.5))
            await store.claim("shop_g", "G-first", b"{}", "generic")  # the plan learned, the script loaded
            before = calls(redis_url, "waitaof")
            claims = [asyncio.ensure_future(store.claim("shop_g", "G-0", b"{}", "generic"))]
            await asyncio.sleep(0)  # its batch is out, waiting for the fsync
            for i in range(1, 11):
                claims.append(asyncio.ensure_future(store.claim("shop_g", f"G-{i}", b"{}", "generic")))
                await asyncio.sleep(0)  # each in an event-loop turn of its own
            assert [c.outcome for c in await asyncio.gather(*claims)] == ["accepted"] * 11
            # Each turn would have sent its own batch and wait (11); they gathered behind the first.
            assert calls(redis_url, "waitaof") - before <= 3
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_claims_wait_again_after_a_script_cache_flush(redis_url: str, redis_client: redis.Redis) -> None:
    async def scenario() -> None:
        client = connect(redis_url)
        try:
            store = ConversionStore(client, AckDurability(client, replicas=None, timeout=0.5))
            assert (await store.claim("shop_f", "F-1", b"{}", "generic")).outcome == "accepted"
            redis_client.script_flush()  # as after a Redis restart: the script is loaded, the batch run again
            before = calls(redis_url, "waitaof")
            assert (await store.claim("shop_f", "F-2", b"{}", "generic")).outcome == "accepted"
            assert calls(redis_url, "waitaof") == before + 2  # the first wait covered nothing that ran
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_nothing_on_disk_is_503_then_the_gateway_learns_aof_is_off(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    admin = redis.Redis.from_url(server.url)
    try:
        with gateway(make_settings, server.url) as client:
            admin.config_set("appendonly", "no")  # the plan still says WAITAOF: the server refuses it
            assert post_order(client, 7001).status_code == 503
            # The refusal makes the next claim re-read the deployment: no AOF, nothing to wait for.
            assert post_order(client, 7002).json()["status"] == "accepted"
    finally:
        admin.close()
        server.stop()


def test_startup_says_what_a_host_crash_can_lose_without_waitaof(
    make_settings: SettingsFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = EmbeddedRedis(
        tmp_path / "redis", extra_args=["--rename-command", "WAITAOF", ""]
    )  # as Redis < 7.2
    server.start()
    try:
        with gateway(make_settings, server.url) as client:
            assert post_order(client, 8001).json()["status"] == "accepted"
    finally:
        server.stop()
    problems = [
        r.__dict__.get("problem", "") for r in caplog.records if r.getMessage() == "redis_durability_risk"
    ]
    assert any(
        "crash of the Redis host" in p and "appendfsync everysec: the last second" in p for p in problems
    )
    plans = [r.__dict__.get("waits_for") for r in caplog.records if r.getMessage() == "ack_durability"]
    assert plans == ["the write alone"]


def test_startup_says_what_an_acknowledgement_waits_for(
    pair: Pair, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with gateway(make_settings, pair.primary.url):
        pass
    plans = [r.__dict__.get("waits_for") for r in caplog.records if r.getMessage() == "ack_durability"]
    assert plans == ["1 replica(s) (WAIT) and the AOF fsync (WAITAOF)"]
    assert not [r for r in caplog.records if r.getMessage() == "redis_durability_risk"]


def _shops_per_primary(cluster: Any) -> dict[str, str]:
    """A shop whose slot is on each primary of a cluster client (primary name -> shop id)."""
    shops: dict[str, str] = {}
    for n in range(1000):
        shop = f"shop_n{n}"
        shops.setdefault(cluster.get_node_from_key(stream_key(shop)).name, shop)
        if len(shops) == len(cluster.get_primaries()):
            return shops
    raise LookupError("no shop found for every primary")


def test_on_a_cluster_each_node_waits_for_its_own_writes(
    redis_shape: str, redis_url: str, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch of claims for shops on every primary: each primary runs the wait (WAIT for its replica,
    WAITAOF for its disk) after its own scripts, once; a keyless wait sent to one node would cover the
    writes of none of the others."""
    if redis_shape != "cluster":
        pytest.skip("runs in the suite's cluster pass (GATEWAY_TEST_REDIS=cluster)")
    # No refresh of the plan in between: its probe (WAITAOF 0 0 0 on every primary) would count as a
    # wait (seen once on a slow machine, where the first claims took longer than REFRESH_SECONDS).
    monkeypatch.setattr(durability, "REFRESH_SECONDS", 3600.0)
    shops = list(_shops_per_primary(redis_client).values())

    async def scenario() -> list[str]:
        client = connect(redis_url)
        try:
            durability = AckDurability(client, replicas=None, timeout=0.5)
            store = ConversionStore(client, durability)
            for shop in shops:  # the plan learned, the script loaded on every node
                assert (await store.claim(shop, "first", b"{}", "generic")).outcome == "accepted"
            assert (await durability.plan()).replicas == 1  # the suite's cluster has a replica per primary
            waits = calls_per_primary(redis_url, "wait"), calls_per_primary(redis_url, "waitaof")
            claims = await asyncio.gather(  # one event-loop turn: one batch
                *(store.claim(shop, f"N-{i}", b"{}", "generic") for shop in shops for i in range(5))
            )
            after = calls_per_primary(redis_url, "wait"), calls_per_primary(redis_url, "waitaof")
            for before, now in zip(waits, after, strict=True):
                assert {port: now[port] - n for port, n in before.items()} == dict.fromkeys(before, 1)
            return [c.outcome for c in claims]
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == ["accepted"] * 5 * len(shops)


def test_on_a_cluster_a_hung_replica_fails_only_its_own_nodes_claims(
    redis_shape: str, redis_topology: Any, redis_client: Any
) -> None:
    """The replica of one primary stops acknowledging: claims on that primary get NotDurable (503), while
    claims in the same batch on the other primaries, whose replicas acknowledge, are accepted."""
    if redis_shape != "cluster":
        pytest.skip("runs in the suite's cluster pass (GATEWAY_TEST_REDIS=cluster)")
    cluster: Cluster = redis_topology
    shops = list(_shops_per_primary(redis_client).values())
    hung = cluster.replica_of(cluster.primary_of(stream_key(shops[0])))

    async def scenario() -> list[str]:
        client = connect(cluster.url)
        try:
            durability = AckDurability(client, replicas=None, timeout=0.3)
            store = ConversionStore(client, durability)
            for shop in shops:  # the plan learned (a replica seen: WAIT 1), the script loaded on every node
                assert (await store.claim(shop, "first", b"{}", "generic")).outcome == "accepted"
            # Shorter than the cluster's node timeout (1 s): a slow replica, not one the cluster fails over.
            hung.pause()
            try:
                outcomes = await asyncio.gather(
                    *(store.claim(shop, "H-1", b"{}", "generic") for shop in shops), return_exceptions=True
                )
            finally:
                hung.resume()
            return [type(o).__name__ if isinstance(o, BaseException) else o.outcome for o in outcomes]
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == ["NotDurable"] + ["accepted"] * (len(shops) - 1)


def test_the_deployment_is_read_from_every_primary(redis_url: str) -> None:
    """Each primary in turn flushes its AOF only when the OS likes (appendfsync no): the deployment says so
    whichever primary it is (a cluster answers INFO and CONFIG from one node unless each is asked)."""

    async def read() -> durability.Deployment:
        client = connect(redis_url)
        try:
            return await durability.read_deployment(client)
        finally:
            await client.aclose()

    for primary in primary_clients(redis_url):
        primary.config_set("appendfsync", "no")
        try:
            assert asyncio.run(read()).appendfsync == "no"
        finally:
            primary.config_set("appendfsync", "everysec")
            primary.close()
    deployment = asyncio.run(read())
    assert (deployment.aof, deployment.appendfsync, deployment.waitaof) == (True, "everysec", True)
    assert deployment.replicated == (deployment.replicas_online > 0)  # the suite's shapes are uniform


def test_on_a_cluster_claims_follow_a_moved_slot_and_wait_on_its_owner(
    redis_shape: str, redis_url: str, redis_client: Any
) -> None:
    """The client's slot map is stale, as right after a failover: the node it names answers MOVED (the
    script does not run there); the claims go again to the owner, and the wait with them."""
    if redis_shape != "cluster":
        pytest.skip("runs in the suite's cluster pass (GATEWAY_TEST_REDIS=cluster)")
    shop = "shop_moved"
    owner = redis_client.get_node_from_key(stream_key(shop)).port

    async def scenario() -> list[str]:
        client = connect(redis_url)
        try:
            store = ConversionStore(client, AckDurability(client, replicas=None, timeout=0.5))
            assert (await store.claim(shop, "first", b"{}", "generic")).outcome == "accepted"
            cluster: Any = client
            slot = cluster.keyslot(stream_key(shop))
            stale = next(node for node in cluster.get_primaries() if node.port != owner)
            cluster.nodes_manager.slots_cache[slot] = [stale]
            before = calls_per_primary(redis_url, "wait")
            claims = await asyncio.gather(*(store.claim(shop, f"M-{i}", b"{}", "generic") for i in range(5)))
            waits = {port: n - before[port] for port, n in calls_per_primary(redis_url, "wait").items()}
            # The stale node ran its wait too, after the refused scripts: it covered nothing (and returned
            # at once, this connection having written nothing there).
            assert waits == {port: int(port in (owner, stale.port)) for port in before}
            assert cluster.nodes_manager.slots_cache[slot][0].port == owner  # the map learned it
            return [c.outcome for c in claims]
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == ["accepted"] * 5
