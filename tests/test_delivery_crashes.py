"""Crashes: a worker process killed with SIGKILL mid-delivery, and Redis killed and restarted from its AOF.

The worker runs as the real ``neuroon-gateway worker`` process; the sandbox is served over real HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient

from app.embedded_redis import EmbeddedRedis, free_port
from app.main import create_app
from app.sandbox import Sandbox, SandboxShop, create_sandbox
from app.store.conversions import order_key
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL, SettingsFactory
from tests.test_delivery import wait_for
from tests.webhooks import SHOPIFY_SECRET, encode, shopify_headers, shopify_order

CLICKS = {"SNOW-GRN-150": "log_snow"}
WORKER = str(Path(sys.executable).parent / "neuroon-gateway")


@pytest.fixture
def http_sandbox() -> Iterator[tuple[Sandbox, str]]:
    """The sandbox served over real HTTP from a thread of the test process."""
    sandbox = create_sandbox([SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL)])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(sandbox.app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "sandbox server start")
    try:
        yield sandbox, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def start_worker(redis_url: str, neuroon_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(log_path.parent),
        "NEUROON_SHOP_ID": SHOP_ID,
        "NEUROON_API_KEY": CANARY_KEY,
        "NEUROON_SHOP_URL": SHOP_URL,
        "NEUROON_API_URL": neuroon_url,
        "NEUROON_RETRY_ATTEMPTS": "1",
        "REDIS_URL": redis_url,
        "GATEWAY_WORKER_LEASE_SECONDS": "1",
        "GATEWAY_RETRY_SCHEDULE": "0.1,0.1,0.1",
    }
    with log_path.open("ab") as log:
        return subprocess.Popen([WORKER, "worker"], env=env, stdout=log, stderr=log, cwd=log_path.parent)


def accept_orders(client: TestClient, count: int) -> list[str]:
    ids = []
    for i in range(count):
        body = encode(shopify_order(5000 + i, clicks=CLICKS))
        response = client.post("/v1/webhooks/shopify", content=body, headers=shopify_headers(body))
        assert response.json()["status"] == "accepted"
        ids.append(str(5000 + i))
    return ids


def states(redis_client: redis.Redis, order_ids: list[str]) -> dict[str, str]:
    result = {}
    for order_id in order_ids:
        raw = redis_client.hget(order_key(SHOP_ID, order_id), "state")
        result[order_id] = raw.decode() if isinstance(raw, bytes) else str(raw)
    return result


def delivered_sends(sandbox: Sandbox) -> Counter[str]:
    return Counter(
        orjson.loads(r.body)["orderId"]
        for r in sandbox.requests
        if r.operation == "track_conversion" and r.status == 200
    )


def test_worker_killed_mid_delivery_loses_nothing_and_resends_only_what_was_in_flight(
    make_settings: SettingsFactory,
    redis_client: redis.Redis,
    redis_url: str,
    http_sandbox: tuple[Sandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sandbox_url = http_sandbox
    settings = make_settings(shopify_webhook_secret=SHOPIFY_SECRET, gateway_run_worker=False)
    with TestClient(create_app(settings)) as client:
        order_ids = accept_orders(client, 20)
    sandbox.latency = 2.0  # every delivery stays in flight for a while
    log = tmp_path / "worker.log"
    first = start_worker(redis_url, sandbox_url, log)
    try:
        wait_for(lambda: "delivering" in states(redis_client, order_ids).values(), "a delivery in flight")
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    in_flight = {o for o, s in states(redis_client, order_ids).items() if s == "delivering"}
    assert in_flight
    sandbox.latency = 0.0
    second = start_worker(redis_url, sandbox_url, log)
    try:
        wait_for(
            lambda: set(states(redis_client, order_ids).values()) == {"delivered"},
            "every order delivered",
            45,
        )
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0  # a clean, drained stop
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    assert set(sandbox.conversions(SHOP_ID)) == set(order_ids)
    sent = delivered_sends(sandbox)
    assert set(sent) == set(order_ids)
    # Only orders whose delivery the crash interrupted may have gone out twice.
    assert all(sent[o] == 1 for o in order_ids if o not in in_flight)
    assert all(sent[o] <= 2 for o in in_flight)
    assert CANARY_KEY not in log.read_text()


def test_queued_conversions_survive_a_redis_crash_with_aof(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        base = make_settings(
            redis_url=server.url,
            shopify_webhook_secret=SHOPIFY_SECRET,
            neuroon_api_url="http://neuroon.sandbox",
        )
        with TestClient(create_app(base.model_copy(update={"gateway_run_worker": False}))) as client:
            order_ids = accept_orders(client, 10)
        server.kill()  # SIGKILL: no shutdown, no final save
        server = EmbeddedRedis(tmp_path / "redis", port=server.port)
        server.start()
        sandbox = create_sandbox([SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL)])
        app = create_app(base, neuroon_transport=httpx.ASGITransport(app=sandbox.app))
        with TestClient(app) as client:
            wait_for(
                lambda: set(sandbox.conversions(SHOP_ID)) == set(order_ids), "delivery after the restart"
            )
            body = encode(shopify_order(5000, clicks=CLICKS))
            again = client.post("/v1/webhooks/shopify", content=body, headers=shopify_headers(body))
            assert again.json()["status"] == "duplicate"
        assert sum(delivered_sends(sandbox).values()) == 10
    finally:
        server.stop()


def test_startup_warns_when_redis_could_lose_conversions(
    make_settings: SettingsFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("appendonly", "no")
        admin.config_set("maxmemory-policy", "allkeys-lru")
        admin.close()
        with TestClient(create_app(make_settings(redis_url=server.url, gateway_run_worker=False))):
            pass
        problems = [
            r.__dict__.get("problem", "") for r in caplog.records if r.getMessage() == "redis_durability_risk"
        ]
        assert any("allkeys-lru" in p for p in problems)
        assert any("appendonly is off" in p for p in problems)
        assert any("no persistence at all" in p for p in problems)
    finally:
        server.stop()


def test_startup_is_quiet_about_a_durable_redis(
    make_settings: SettingsFactory, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(make_settings(gateway_run_worker=False))):
        pass
    assert not [r for r in caplog.records if r.getMessage().startswith("redis_durability")]
