"""`neuroon-gateway dlq list|replay|drop` against a real Redis, and the retry schedule's reach."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from app.cli import cli
from app.conversions.worker import RetryPolicy
from app.settings import Settings
from app.store import connect
from app.store.conversions import ConversionStore, dead_key, stream_key
from tests.conftest import CANARY_KEY, SHOP_ID


@pytest.fixture
def env(redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": CANARY_KEY, "REDIS_URL": redis_url}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def run(redis_url: str, step: Any) -> Any:
    async def go() -> Any:
        client = connect(redis_url)
        try:
            return await step(ConversionStore(client))
        finally:
            await client.aclose()

    return asyncio.run(go())


def dead_letter(redis_url: str, order_id: str, reason: str) -> None:
    async def step(store: ConversionStore) -> None:
        body = b'{"orderId":"%s","conversions":[{"productId":"A","searchLogId":"l"}]}' % order_id.encode()
        await store.enqueue(SHOP_ID, order_id, body, "generic")
        await store.dead_letter(SHOP_ID, order_id, None, reason)

    run(redis_url, step)


def test_dlq_list_replay_and_drop(env: dict[str, str], redis_url: str, redis_client: redis.Redis) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["dlq", "list"]).output.strip() == "no dead letters"
    dead_letter(redis_url, "A-1", "HTTP 400: conversion item without searchLogId")
    dead_letter(redis_url, "A-2", "HTTP 422: currency mismatch")
    listed = runner.invoke(cli, ["dlq", "list"])
    assert listed.exit_code == 0
    assert f"{SHOP_ID}:A-1" in listed.output
    assert "HTTP 400" in listed.output
    assert f"{SHOP_ID}:A-2" in listed.output

    replayed = runner.invoke(cli, ["dlq", "replay", f"{SHOP_ID}:A-1"])
    assert replayed.exit_code == 0, replayed.output
    assert replayed.output.strip() == f"replayed: {SHOP_ID}:A-1"
    assert redis_client.zcard(dead_key(SHOP_ID)) == 1
    # Back in the stream: once from the original enqueue (acknowledged and deleted), now once more.
    assert redis_client.xlen(stream_key(SHOP_ID)) >= 1

    missing = runner.invoke(cli, ["dlq", "replay", "A-1", "nope"])
    assert missing.exit_code == 1
    assert "not found: A-1" in missing.output
    assert "not found: nope" in missing.output

    dropped = runner.invoke(cli, ["dlq", "drop", "A-2"])  # a bare orderId: there is one shop
    assert dropped.exit_code == 0
    assert redis_client.zcard(dead_key(SHOP_ID)) == 0
    assert run(redis_url, lambda store: store.order(SHOP_ID, "A-2"))["state"] == "dropped"
    assert runner.invoke(cli, ["dlq", "replay", "--all"]).output.strip() == ""


def test_dlq_replay_all(env: dict[str, str], redis_url: str, redis_client: redis.Redis) -> None:
    for i in range(3):
        dead_letter(redis_url, f"B-{i}", "HTTP 404: shop not found")
    result = CliRunner().invoke(cli, ["dlq", "replay", "--all"])
    assert result.exit_code == 0
    assert result.output.count("replayed:") == 3
    assert redis_client.zcard(dead_key(SHOP_ID)) == 0


def test_dlq_usage_errors_exit_2(env: dict[str, str]) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["dlq", "replay"]).exit_code == 2
    assert runner.invoke(cli, ["dlq", "list", "--shop", "nope"]).exit_code == 2


def test_default_retry_schedule_reaches_beyond_72_hours() -> None:
    schedule = Settings(_env_file=None).gateway_retry_schedule
    assert sum(schedule) >= 72 * 3600
    policy = RetryPolicy(schedule)
    assert all(policy.delay(i) is not None for i in range(len(schedule)))
    assert policy.delay(len(schedule)) is None
    assert policy.delay(0, retry_after=120.0) == 120.0  # Retry-After longer than the step wins
    for i, step in enumerate(schedule):
        delay = policy.delay(i)
        assert delay is not None
        assert step * 0.9 <= delay <= step * 1.1
