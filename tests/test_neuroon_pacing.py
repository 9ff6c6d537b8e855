"""Client-side pacing: a long job stays under Neuroon's limits instead of bouncing off them."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal

import httpx
import pytest

from app.neuroon.client import NeuroonClient
from app.neuroon.endpoints import Limit
from app.neuroon.errors import NeuroonRateLimited
from app.neuroon.models import ConversionRequest, Product
from app.neuroon.pacing import UpstreamLimiter
from app.sandbox import Fault, Sandbox, SandboxShop, create_sandbox
from app.shops import Shop
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL, FakeClock


def _batch(i: int) -> list[Product]:
    return [
        Product(external_id=f"SKU-{i}-{j}", name="P", price=Decimal("1.00"), url="https://s/p")
        for j in range(3)
    ]


async def test_long_sync_stays_under_the_documented_limit_without_a_429(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    sandbox.rate_limits.configure(True, {"sync_products": Limit(100, 60)})  # the documented bucket
    started = fake_clock()
    for i in range(250):
        await neuroon.sync_products(shop, _batch(i))
    statuses = sandbox.statuses("sync_products")
    assert len(statuses) == 250
    assert set(statuses) == {200}
    # 250 requests at 100 per minute need at least two full windows.
    assert fake_clock() - started >= 120
    assert len(sandbox.products(SHOP_ID)) == 750


async def test_stricter_server_limit_is_learnt_from_the_headers(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    # Neuroon enforces less than the docs say (10/min): only X-RateLimit-Remaining can tell us.
    sandbox.rate_limits.configure(True, {"sync_products": Limit(10, 60)})
    sent_at: list[float] = []
    for i in range(35):
        await neuroon.sync_products(shop, _batch(i))
        sent_at.append(fake_clock())
    assert set(sandbox.statuses("sync_products")) == {200}
    assert sent_at[-1] - sent_at[0] >= 180  # 35 requests, 10 per window: three windows at least
    # It slowed down before running out: the first window's last requests were spread, not bunched.
    first_window = [t for t in sent_at if t < sent_at[0] + 60]
    gaps = [b - a for a, b in itertools.pairwise(first_window)]
    assert gaps[0] == 0
    assert gaps[-1] > 0


async def test_429_holds_back_the_next_calls_for_retry_after(
    neuroon_http: httpx.AsyncClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    client = NeuroonClient(neuroon_http, attempts=1, sleep=fake_clock.sleep, clock=fake_clock)
    sandbox.script("shop_info", Fault(429, retry_after=5))
    with pytest.raises(NeuroonRateLimited):
        await client.shop_info(shop)
    await client.shop_info(shop)
    assert fake_clock.sleeps == [5.0]
    assert sandbox.statuses() == [429, 200]


async def test_documented_verify_limit_paces_the_sixth_call(fake_clock: FakeClock) -> None:
    limiter = UpstreamLimiter(clock=fake_clock, sleep=fake_clock.sleep)
    waits = [await limiter.acquire("shop_a", "verify") for _ in range(6)]
    assert waits == [0, 0, 0, 0, 0, 300]
    # Limits are per (shop, operation): another shop and another operation are not held back.
    assert await limiter.acquire("shop_b", "verify") == 0
    assert await limiter.acquire("shop_a", "track_conversion") == 0


async def test_remaining_zero_waits_for_the_window_to_end(fake_clock: FakeClock) -> None:
    limiter = UpstreamLimiter(limits={}, clock=fake_clock, sleep=fake_clock.sleep)
    await limiter.acquire("s", "delete_product")
    limiter.observe("s", "delete_product", limit=2, remaining=1)
    await limiter.acquire("s", "delete_product")
    limiter.observe("s", "delete_product", limit=2, remaining=0)
    assert await limiter.acquire("s", "delete_product") == 60  # the default window, counted from its start


async def test_a_wait_longer_than_the_cap_is_handed_back_without_a_request(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    for _ in range(5):  # the documented verify bucket: 5 per 5 minutes
        await neuroon.verify_domain(shop)
    with pytest.raises(NeuroonRateLimited) as caught:
        await neuroon.verify_domain(shop)
    assert caught.value.retry_after == 300  # longer than NEUROON_MAX_RETRY_WAIT (60): not slept
    assert len(sandbox.statuses("verify")) == 5
    assert fake_clock.sleeps == []
    fake_clock.now += 300
    assert (await neuroon.verify_domain(shop)).already_verified


async def test_after_a_long_429_the_next_call_is_refused_locally(
    neuroon_http: httpx.AsyncClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    client = NeuroonClient(neuroon_http, max_retry_wait=30, sleep=fake_clock.sleep, clock=fake_clock)
    sandbox.script("track_conversion", Fault(429, retry_after=120))
    conversion = ConversionRequest.model_validate(
        {"orderId": "O", "conversions": [{"productId": "p", "searchLogId": "l"}]}
    )
    for _ in range(2):
        with pytest.raises(NeuroonRateLimited) as caught:
            await client.track_conversion(shop, conversion, attempts=1)
        assert caught.value.retry_after == 120
    assert sandbox.statuses() == [429]  # the second never reached Neuroon
    fake_clock.now += 120
    await client.track_conversion(shop, conversion, attempts=1)
    assert sandbox.statuses() == [429, 200]


async def test_concurrent_calls_share_the_learnt_budget_without_a_429(shop: Shop) -> None:
    """Overlapping requests, in real time with a short window (the fake clock cannot overlap sleeps):
    an answer does not count the requests still in flight, and the client must not take their share."""
    window = 0.4
    sandbox = create_sandbox(
        [SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL)], rate_limits={"sync_products": Limit(8, window)}
    )
    sandbox.latency = 0.01  # requests really overlap
    limiter = UpstreamLimiter(limits={"sync_products": Limit(10_000, window)})  # only the headers bind
    async with httpx.AsyncClient(base_url="http://n", transport=httpx.ASGITransport(app=sandbox.app)) as http:
        client = NeuroonClient(http, attempts=1, limiter=limiter)
        await client.sync_products(shop, _batch(0))  # the first answer tells the budget
        await asyncio.gather(*(client.sync_products(shop, _batch(i)) for i in range(1, 21)))
    assert sandbox.statuses("sync_products") == [200] * 21
    assert limiter._buckets[(shop.id, "sync_products")].in_flight == 0


async def test_a_request_that_got_no_answer_does_not_hold_budget(fake_clock: FakeClock) -> None:
    limiter = UpstreamLimiter(limits={}, clock=fake_clock, sleep=fake_clock.sleep)
    await limiter.acquire("s", "track_conversion")
    limiter.observe("s", "track_conversion", None, None, answered=False)  # timeout, cancellation …
    await limiter.acquire("s", "track_conversion")
    limiter.observe("s", "track_conversion", limit=5, remaining=4)
    assert limiter._buckets[("s", "track_conversion")].server_remaining == 4


async def test_answers_without_headers_end_the_header_pacing(fake_clock: FakeClock) -> None:
    limiter = UpstreamLimiter(limits={}, clock=fake_clock, sleep=fake_clock.sleep)
    await limiter.acquire("s", "get_product")
    limiter.observe("s", "get_product", limit=5, remaining=0)
    await limiter.acquire("s", "get_product")  # waits for the window (60 s) to end
    limiter.observe("s", "get_product", None, None)  # Neuroon stopped limiting
    for _ in range(3):  # neither waits for a window nor for an answer in flight any more
        assert await limiter.acquire("s", "get_product") == 0
    assert fake_clock.sleeps == [60.0]


async def test_requests_in_flight_count_against_the_reported_budget(fake_clock: FakeClock) -> None:
    limiter = UpstreamLimiter(limits={}, clock=fake_clock, sleep=fake_clock.sleep)
    for _ in range(3):
        await limiter.acquire("s", "track_conversion")
    limiter.observe("s", "track_conversion", limit=10, remaining=9)  # the first answer: two still out
    assert limiter._buckets[("s", "track_conversion")].server_remaining == 7


async def _acquire_when_answered(limiter: UpstreamLimiter, op: str) -> asyncio.Task[float]:
    """An acquire that has to wait for an answer: started, and run until it waits."""
    task = asyncio.create_task(limiter.acquire("s", op))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()
    return task


async def test_a_late_answer_from_the_window_we_declared_over_does_not_cost_a_window(
    fake_clock: FakeClock,
) -> None:
    """The last request of a window answers after our estimate of its end: its "0" is the old window's
    (we sent it), not news that the new one is spent. Seen in bench.catalog: a whole window lost."""
    op = "sync_products"
    limiter = UpstreamLimiter(limits={op: Limit(1000, 6)}, clock=fake_clock, sleep=fake_clock.sleep)
    start = fake_clock()
    await limiter.acquire("s", op)
    limiter.observe("s", op, limit=2, remaining=1)  # the window ends at start + 6 at the latest
    fake_clock.now = start + 5.9
    await limiter.acquire("s", op)  # the window's last request, still out when the window ends
    fake_clock.now = start + 6.1
    waiting = await _acquire_when_answered(limiter, op)
    fake_clock.now = start + 6.3
    limiter.observe("s", op, limit=2, remaining=0)  # the late answer
    assert await waiting == 0  # goes at once: one request to learn the new budget
    assert fake_clock() == start + 6.3
    probe = await _acquire_when_answered(limiter, op)  # nothing more until that one answers
    limiter.observe("s", op, limit=2, remaining=1)
    assert await probe == 0
    limiter.observe("s", op, limit=2, remaining=0)
    assert await limiter.acquire("s", op) == 6  # the new window, counted from the answer that showed it


async def test_a_late_answer_showing_another_sender_is_read_as_the_new_window(fake_clock: FakeClock) -> None:
    """Less budget left than our own sends account for: someone else sends too, and the late answer may
    be the new window's. Then the cautious reading stands: wait for that window to end."""
    op = "sync_products"
    limiter = UpstreamLimiter(limits={op: Limit(1000, 6)}, clock=fake_clock, sleep=fake_clock.sleep)
    start = fake_clock()
    await limiter.acquire("s", op)
    limiter.observe("s", op, limit=3, remaining=2)
    fake_clock.now = start + 5.9
    await limiter.acquire("s", op)  # by our count, one is left after this one
    fake_clock.now = start + 6.1
    waiting = await _acquire_when_answered(limiter, op)
    fake_clock.now = start + 6.3
    limiter.observe("s", op, limit=3, remaining=0)
    assert await waiting == pytest.approx(6)  # until start + 12.3: the window this answer may belong to
    assert fake_clock() == pytest.approx(start + 12.3)


class _SlowLastAnswer(httpx.AsyncBaseTransport):
    """The network between us and the sandbox: the answer that spends a window comes back late (as in
    bench.catalog, where the sandbox under load counted a request at once and answered 0.24 s later),
    the others at once."""

    def __init__(self, inner: httpx.AsyncBaseTransport, delay: float) -> None:
        self.inner, self.delay = inner, delay

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if response.headers.get("X-RateLimit-Remaining") == "0":
            await asyncio.sleep(self.delay)
        return response


async def test_late_last_answers_cost_no_window_and_no_429(shop: Shop) -> None:
    """In real time, four senders: every window's last answer comes after our estimate of the window's
    end. Read as the new window's budget, each such "0" held us for a whole extra window."""
    window, per_window, windows = 0.4, 5, 4
    sandbox = create_sandbox(
        [SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL)], rate_limits={"sync_products": Limit(per_window, window)}
    )
    limiter = UpstreamLimiter(limits={"sync_products": Limit(per_window, window)})
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(per_window * windows):
        queue.put_nowait(i)
    transport = _SlowLastAnswer(httpx.ASGITransport(app=sandbox.app), delay=0.5)
    async with httpx.AsyncClient(base_url="http://n", transport=transport) as http:
        client = NeuroonClient(http, attempts=1, limiter=limiter)

        async def sender() -> None:
            while not queue.empty():
                await client.sync_products(shop, _batch(queue.get_nowait()))

        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(sender() for _ in range(4)))
        elapsed = loop.time() - started
    assert sandbox.statuses("sync_products") == [200] * (per_window * windows)
    # Each window waits for its late "0" (0.5 s), then one request finds the new window: about 2 s.
    # Reading each "0" as the new window's held every window for another 0.4 s: 3.2 s.
    assert elapsed < 2.6


async def test_answers_out_of_order_do_not_give_back_spent_budget(fake_clock: FakeClock) -> None:
    """Two requests out: the second one's answer ("0 left") comes first, then the first one's ("1 left").
    The rise is the order of the answers, not a new window: the budget is spent until the window ends."""
    limiter = UpstreamLimiter(limits={}, clock=fake_clock, sleep=fake_clock.sleep)
    start = fake_clock()
    await limiter.acquire("s", "get_product")
    limiter.observe("s", "get_product", limit=3, remaining=2)
    await limiter.acquire("s", "get_product")
    await limiter.acquire("s", "get_product")
    limiter.observe("s", "get_product", limit=3, remaining=0)
    limiter.observe("s", "get_product", limit=3, remaining=1)
    assert await limiter.acquire("s", "get_product") == 60
    assert fake_clock() == start + 60


async def test_a_short_retry_after_wins_over_an_exhausted_header_budget(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    """Issue 9 item 8: a 429 saying "Retry-After: 2" with X-RateLimit-Remaining: 0 used to hold the key
    for a whole estimated window (60 s); the server's word is when to try again."""
    sandbox.script(
        "track_conversion",
        Fault(429, retry_after=2, headers={"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0"}),
    )
    conversion = ConversionRequest.model_validate(
        {"orderId": "O", "conversions": [{"productId": "p", "searchLogId": "l"}]}
    )
    started = fake_clock()
    await neuroon.track_conversion(shop, conversion)
    assert sandbox.statuses() == [429, 200]
    assert fake_clock() - started == 2
    # The next call is not held back by the estimated window either.
    await neuroon.track_conversion(shop, conversion)
    assert fake_clock() - started == 2


async def test_a_short_retry_after_wins_over_our_documented_window(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    # Our own log of the documented verify bucket (5 per 5 minutes) says "wait 300 s"; Neuroon says 2.
    for _ in range(4):
        await neuroon.verify_domain(shop)
    sandbox.script("verify", Fault(429, retry_after=2))
    started = fake_clock()
    assert (await neuroon.verify_domain(shop)).already_verified
    assert sandbox.statuses("verify")[-2:] == [429, 409]
    assert fake_clock() - started == 2


async def test_a_503_retry_after_wins_over_an_exhausted_header_budget(
    neuroon: NeuroonClient, shop: Shop, sandbox: Sandbox, fake_clock: FakeClock
) -> None:
    sandbox.script(
        "shop_info",
        Fault(503, retry_after=1, headers={"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0"}),
    )
    started = fake_clock()
    await neuroon.shop_info(shop)
    assert sandbox.statuses() == [503, 200]
    assert fake_clock() - started == 1
