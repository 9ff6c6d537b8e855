"""The per-caller Redis deadline and its circuit breaker (app/store/deadline.py), on real servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from app.embedded_redis import EmbeddedRedis
from app.store import connect
from app.store.deadline import CircuitOpen, DeadlineExceeded, RedisDeadline
from tests.conftest import FakeClock


@pytest.fixture
async def hung_client(hung_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = connect(hung_redis.url)
    yield client
    await client.aclose()


@pytest.fixture
async def live_client(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_url)
    yield client
    await client.aclose()


async def opened_by_a_hang(client: aioredis.Redis, clock: FakeClock) -> RedisDeadline:
    """A 0.1 s deadline on ``clock`` whose breaker a hung ``client`` has just opened."""
    deadline = RedisDeadline("test", 0.1, cooldown=1.0, monotonic=clock)
    with pytest.raises(DeadlineExceeded):
        await deadline.run(client.ping)
    return deadline


async def test_a_hung_redis_costs_one_timeout_then_calls_fail_at_once(hung_client: aioredis.Redis) -> None:
    deadline = RedisDeadline("test", 0.2)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await deadline.run(hung_client.ping)
    assert time.monotonic() - start < 1.0  # the client's own socket timeout is 1 s, then a retry
    assert deadline.is_open
    tried = []

    async def call() -> bool:
        tried.append(1)
        return bool(await hung_client.ping())

    start = time.monotonic()
    for _ in range(20):
        with pytest.raises(CircuitOpen):
            await deadline.run(call)
    assert time.monotonic() - start < 0.2 < 20 * 0.2
    assert not tried


async def test_one_trial_after_the_cooldown_closes_the_breaker_when_redis_answers(
    hung_redis: EmbeddedRedis, hung_client: aioredis.Redis
) -> None:
    clock = FakeClock()
    deadline = await opened_by_a_hang(hung_client, clock)
    clock.now += 0.5
    with pytest.raises(CircuitOpen):  # still cooling down
        await deadline.run(hung_client.ping)
    hung_redis.resume()
    clock.now += 0.6
    trial = asyncio.ensure_future(deadline.run(hung_client.ping))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen):  # one trial at a time
        await deadline.run(hung_client.ping)
    assert await trial
    assert not deadline.is_open
    assert await deadline.run(hung_client.ping)


async def test_a_failed_trial_keeps_it_open_for_another_cooldown(hung_client: aioredis.Redis) -> None:
    clock = FakeClock()
    deadline = await opened_by_a_hang(hung_client, clock)
    clock.now += 1.1
    with pytest.raises(DeadlineExceeded):
        await deadline.run(hung_client.ping)
    clock.now += 0.5
    with pytest.raises(CircuitOpen):
        await deadline.run(hung_client.ping)


async def test_errors_that_are_answers_leave_it_closed(live_client: aioredis.Redis) -> None:
    deadline = RedisDeadline("test", 1.0)
    await live_client.set("ngw:v1:test:text", "not a number")
    with pytest.raises(ResponseError):
        await deadline.run(lambda: live_client.incr("ngw:v1:test:text"))
    assert not deadline.is_open
    assert await deadline.run(live_client.ping)


async def test_a_cancelled_trial_lets_the_next_call_try(hung_client: aioredis.Redis) -> None:
    clock = FakeClock()
    deadline = await opened_by_a_hang(hung_client, clock)
    deadline.seconds = 5.0  # a trial that outlasts the client's patience: it goes away
    clock.now += 1.1
    trial = asyncio.ensure_future(deadline.run(hung_client.ping))
    await asyncio.sleep(0.05)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    next_trial = asyncio.ensure_future(deadline.run(hung_client.ping))
    await asyncio.sleep(0.05)
    assert not next_trial.done()  # admitted as the new trial, not refused
    next_trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await next_trial
