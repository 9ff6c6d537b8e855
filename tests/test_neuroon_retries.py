"""Retry policy: what is retried, how long the client waits, and the idempotency key it keeps."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest
from prometheus_client import REGISTRY

from app.embedded_redis import free_port
from app.neuroon.client import NeuroonClient
from app.neuroon.errors import NeuroonRateLimited, NeuroonRejected, NeuroonUnavailable
from app.neuroon.models import ConversionRequest, Product
from app.sandbox import Fault, Sandbox
from app.shops import Shop
from tests.conftest import FakeClock


def _product() -> Product:
    return Product(external_id="R1", name="Retry", price=Decimal("1.00"), url="https://shop.example/r1")


def _conversion() -> ConversionRequest:
    return ConversionRequest.model_validate(
        {"orderId": "O-1", "conversions": [{"productId": "R1", "searchLogId": "log_1"}]}
    )


def _count(operation: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "neuroon_gateway_upstream_requests_total", {"operation": operation, "status": status}
    )
    return value or 0.0


async def test_503_then_200_succeeds_after_one_backoff(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    sandbox.script("track_conversion", 503)
    before_503, before_200 = _count("track_conversion", "503"), _count("track_conversion", "200")
    await neuroon.track_conversion(shop, _conversion())
    assert sandbox.statuses() == [503, 200]
    assert fake_clock.sleeps == [1.0]  # first backoff: base 1 s (jitter pinned to its maximum)
    assert list(sandbox.conversions("shop_test")) == ["O-1"]
    assert _count("track_conversion", "503") == before_503 + 1
    assert _count("track_conversion", "200") == before_200 + 1


async def test_backoff_doubles_and_the_error_surfaces_after_three_attempts(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    sandbox.script("shop_info", 500, 502, 503, 200)
    with pytest.raises(NeuroonUnavailable) as caught:
        await neuroon.shop_info(shop)
    assert caught.value.status == 503
    assert sandbox.statuses() == [500, 502, 503]
    assert fake_clock.sleeps == [1.0, 2.0]


async def test_full_jitter_draws_below_the_exponential_cap(
    neuroon_http: httpx.AsyncClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    caps: list[float] = []

    def jitter(high: float) -> float:
        caps.append(high)
        return high / 4

    client = NeuroonClient(neuroon_http, attempts=4, sleep=fake_clock.sleep, clock=fake_clock, jitter=jitter)
    sandbox.script("shop_info", 503, 503, 503)
    await client.shop_info(shop)
    assert caps == [1.0, 2.0, 4.0]
    assert fake_clock.sleeps == [0.25, 0.5, 1.0]


async def test_429_waits_retry_after(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    sandbox.script("sync_products", Fault(429, retry_after=2))
    await neuroon.sync_products(shop, [_product()])
    assert sandbox.statuses() == [429, 200]
    assert fake_clock.sleeps == [2.0]


async def test_429_body_retry_after_is_used_when_the_header_is_missing(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    sandbox.script("shop_info", Fault(429, body={"error": {"code": "RATE_LIMIT_EXCEEDED", "retryAfter": 7}}))
    await neuroon.shop_info(shop)
    assert fake_clock.sleeps == [7.0]


async def test_retry_after_longer_than_the_cap_is_handed_to_the_caller(
    neuroon_http: httpx.AsyncClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    client = NeuroonClient(neuroon_http, max_retry_wait=30, sleep=fake_clock.sleep, clock=fake_clock)
    sandbox.script("track_conversion", Fault(429, retry_after=60))
    with pytest.raises(NeuroonRateLimited) as caught:
        await client.track_conversion(shop, _conversion())
    assert caught.value.retry_after == 60
    assert sandbox.statuses() == [429]
    assert fake_clock.sleeps == []


async def test_429_until_attempts_run_out_is_rate_limited(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    sandbox.script(
        "track_conversion", Fault(429, retry_after=3), Fault(429, retry_after=3), Fault(429, retry_after=5)
    )
    with pytest.raises(NeuroonRateLimited) as caught:
        await neuroon.track_conversion(shop, _conversion())
    assert caught.value.retry_after == 5
    assert fake_clock.sleeps == [3.0, 3.0]


async def test_400_is_never_retried(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    sandbox.script("track_conversion", 400)
    with pytest.raises(NeuroonRejected):
        await neuroon.track_conversion(shop, _conversion())
    assert sandbox.statuses() == [400]
    assert fake_clock.sleeps == []


@pytest.mark.parametrize("status", [401, 403, 404, 409, 422])
async def test_other_4xx_are_never_retried(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, status: int
) -> None:
    sandbox.script("track_conversion", status)
    with pytest.raises(NeuroonRejected) as caught:
        await neuroon.track_conversion(shop, _conversion())
    assert caught.value.status == status
    assert sandbox.statuses() == [status]


async def test_single_attempt_when_asked(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    sandbox.script("track_conversion", 503)
    with pytest.raises(NeuroonUnavailable):
        await neuroon.track_conversion(shop, _conversion(), attempts=1)
    sandbox.script("track_conversion", Fault(429, retry_after=4))
    with pytest.raises(NeuroonRateLimited) as caught:
        await neuroon.track_conversion(shop, _conversion(), attempts=1)
    assert caught.value.retry_after == 4
    assert sandbox.statuses() == [503, 429]
    assert fake_clock.sleeps == []


async def test_retries_reuse_the_idempotency_key(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox
) -> None:
    sandbox.script("sync_products", 503, Fault(429, retry_after=1))
    await neuroon.sync_products(shop, [_product()], idempotency_key="batch-0001")
    keys = [r.headers["x-idempotency-key"] for r in sandbox.requests]
    assert keys == ["batch-0001"] * 3
    assert [r.status for r in sandbox.requests] == [503, 429, 200]


async def test_outage_is_unavailable_after_retries(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    sandbox.outage = True
    with pytest.raises(NeuroonUnavailable):
        await neuroon.verify_domain(shop)
    assert sandbox.statuses() == [503, 503, 503]
    sandbox.outage = False
    assert not (await neuroon.verify_domain(shop)).already_verified


async def test_connection_refused_is_unavailable_and_retried(shop: Shop, fake_clock: FakeClock) -> None:
    port = free_port()  # nothing listens there
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        client = NeuroonClient(http, sleep=fake_clock.sleep, clock=fake_clock, jitter=lambda high: high)
        before = _count("shop_info", "network_error")
        with pytest.raises(NeuroonUnavailable, match="cannot reach Neuroon") as caught:
            await client.shop_info(shop)
    assert caught.value.status is None
    assert fake_clock.sleeps == [1.0, 2.0]
    assert _count("shop_info", "network_error") == before + 3


async def test_timeout_is_unavailable(shop: Shop, fake_clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    async with httpx.AsyncClient(base_url="http://n", transport=httpx.MockTransport(handler)) as http:
        client = NeuroonClient(http, attempts=2, sleep=fake_clock.sleep, clock=fake_clock)
        with pytest.raises(NeuroonUnavailable, match="timed out"):
            await client.track_conversion(shop, _conversion())
    assert len(fake_clock.sleeps) == 1


async def test_retry_after_as_http_date(shop: Shop, fake_clock: FakeClock) -> None:
    answers = iter(
        [httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), httpx.Response(200)]
    )

    def handler(_: httpx.Request) -> httpx.Response:
        return next(answers)

    async with httpx.AsyncClient(base_url="http://n", transport=httpx.MockTransport(handler)) as http:
        client = NeuroonClient(http, sleep=fake_clock.sleep, clock=fake_clock)
        await client.unverify(shop)
    assert fake_clock.sleeps == [0.0]  # a date in the past: retry at once


async def test_retry_after_2_really_waits_two_seconds(
    neuroon_http: httpx.AsyncClient, shop: Shop, sandbox: Sandbox
) -> None:
    """The one test in real time: the client's default sleep and clock honour Retry-After: 2."""
    client = NeuroonClient(neuroon_http)
    sandbox.script("track_conversion", Fault(429, retry_after=2))
    started = time.monotonic()
    await client.track_conversion(shop, _conversion())
    assert time.monotonic() - started >= 2.0
    assert sandbox.statuses() == [429, 200]
