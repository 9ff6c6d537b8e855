"""The benchmark's compiled load generator (bench/wrk.py and its Lua scripts) against the real gateway
process: every request a distinct pre-signed order, all accepted; the open loop offers the rate asked."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from app.embedded_redis import EmbeddedRedis
from bench import webhooks, wrk
from bench.harness import Server

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="no wrk on PATH (apt-get install wrk)")


@pytest.fixture
def redis_url(own_redis: EmbeddedRedis) -> str:
    """One server of its own, as `make bench` runs on (the bench's harness talks to one server)."""
    return own_redis.url


@pytest.fixture
def gateway(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setattr(webhooks, "SECONDS", 2.0)
    monkeypatch.setattr(webhooks, "CONNECTIONS", 8)
    with webhooks._gateway(redis_url) as server:
        yield server


def test_closed_loop_sends_each_order_once_and_all_are_accepted(gateway: Server, redis_url: str) -> None:
    result = webhooks.wrk_post(gateway, redis_url, expected_rps=300)  # asserts 2xx, accepted, none reused
    assert result["requests"] > 50
    assert result["p99_ms"] >= result["p50_ms"] > 0


def test_open_loop_offers_the_rate_asked(gateway: Server, redis_url: str) -> None:
    result = webhooks.wrk_post(gateway, redis_url, expected_rps=200, rate=200)
    assert 0.7 < result["rps"] / 200 < 1.3  # closed loop on this server would run many times faster


def test_wrk_reports_the_baseline_gets(gateway: Server) -> None:
    result = wrk.run(gateway, "/livez", connections=4, seconds=1)
    assert result["statuses"] == {"2xx/3xx": result["requests"]}
    assert result["requests"] > 10
