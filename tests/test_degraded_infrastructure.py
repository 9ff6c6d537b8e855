"""The gateway's answers while what it depends on misbehaves, and its recovery without help.

Each test runs the real `neuroon-gateway serve` process against a Redis-protocol server of its own
(the suite's shared one is never stopped), breaks it the way production breaks (hung: SIGSTOP,
connections accepted and nothing answered; down: killed; slow: a proxy adding latency; Neuroon
hung), and checks what each endpoint answers and how fast. Bounds are generous and separate the
behaviours (milliseconds against the multi-second waits of a request stuck on Redis); measured
figures are in the README ("Redis hung, down or slow").
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.embedded_redis import EmbeddedRedis, free_port
from app.main import create_app
from app.neuroon.signing import sign_widget_token
from app.shops import key_fingerprint
from app.store import Store, connect
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL, SettingsFactory
from tests.support import GATEWAY, LatencyProxy, clean_env, run_gateway
from tests.test_delivery import ADMIN_SECRET, admin_headers
from tests.webhooks import STANDARD_SECRET, encode, generic_order, standard_headers

TOKEN = "/v1/widget-token"


def gateway_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "NEUROON_SHOP_ID": SHOP_ID,
        "NEUROON_API_KEY": CANARY_KEY,
        "NEUROON_SHOP_URL": SHOP_URL,
        "REDIS_URL": redis_url,
        "GATEWAY_WEBHOOK_SECRET": STANDARD_SECRET,
        # Short, so that requests during the fault must ask Redis rather than ride on memory.
        "GATEWAY_TOKEN_MEMORY_TTL": "0.3",
        "GATEWAY_TOKEN_RATE_LIMIT": "5",  # exceeded below: the limiter fails open without Redis
    } | extra


def timed(request: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = request()
    return response, time.monotonic() - start


def post_order(http: httpx.Client, order_id: str) -> httpx.Response:
    body = encode(generic_order(order_id))
    return http.post("/v1/webhooks/orders", content=body, headers=standard_headers(body))


def tokens_during(http: httpx.Client, seconds: float, expected: str) -> float:
    """Ask for tokens for ``seconds``; every answer is the cached token. Returns the slowest."""
    slowest = 0.0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        response, took = timed(lambda: http.get(TOKEN))
        assert response.status_code == 200, response.text
        assert response.json()["token"] == expected
        slowest = max(slowest, took)
        time.sleep(0.05)
    return slowest


def eventually(check: Callable[[], bool], within: float = 15.0) -> None:
    until = time.monotonic() + within
    while not check():
        assert time.monotonic() < until, "no recovery"
        time.sleep(0.2)


def served_from(http: httpx.Client, source: str) -> float:
    pattern = rf'neuroon_gateway_widget_tokens_served_total{{shop="{SHOP_ID}",source="{source}"}} (\S+)'
    found = re.search(pattern, http.get("/metrics").text)
    return float(found.group(1)) if found else 0.0


def recovered(http: httpx.Client, order_id: str) -> bool:
    return post_order(http, order_id).status_code == 200 and http.get("/readyz").status_code == 200


def test_hung_redis_costs_tokens_nothing_and_webhooks_one_timeout(
    own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    env = gateway_env(own_redis.url)
    with (
        run_gateway(["serve", "--no-worker"], env, tmp_path) as gateway,
        httpx.Client(base_url=gateway.base_url, timeout=30) as http,
    ):
        token = http.get(TOKEN).json()["token"]
        assert post_order(http, "before").json()["status"] == "accepted"
        own_redis.pause()
        try:
            # The token path's deadline is 0.1 s, paid once: the breaker answers the rest. Without
            # it each request waited for the client's socket timeouts (4-8 s in the issue).
            assert tokens_during(http, 2.0, token) < 1.0
            first, first_took = timed(lambda: post_order(http, "during-1"))
            assert first.status_code == 503
            assert first.json()["error"] == "unavailable"
            assert first_took < 4.0
            # One timeout, not one per request: the next webhook is refused at once.
            second, second_took = timed(lambda: post_order(http, "during-2"))
            assert second.status_code == 503
            assert second_took < 1.0 < first_took
            ready, ready_took = timed(lambda: http.get("/readyz"))
            assert ready.status_code == 503
            assert ready.json()["detail"] == "Redis did not answer within 0.8s"
            assert ready_took < 2.0
            live, live_took = timed(lambda: http.get("/livez"))
            assert live.status_code == 200
            assert live_took < 1.0
        finally:
            own_redis.resume()
        eventually(lambda: recovered(http, "after"))
        # The webhook answered 503 is retried by its platform: nothing was lost. (Its claim may
        # have reached Redis after all, when the server woke up: then the retry is a duplicate.)
        retry = post_order(http, "during-1")
        assert retry.status_code == 200
        assert retry.json()["status"] in ("accepted", "duplicate")
        before = served_from(http, "redis")
        eventually(lambda: http.get(TOKEN).status_code == 200 and served_from(http, "redis") > before)


def test_redis_down_then_restarted(own_redis: EmbeddedRedis, tmp_path: Path) -> None:
    env = gateway_env(own_redis.url)
    with (
        run_gateway(["serve", "--no-worker"], env, tmp_path) as gateway,
        httpx.Client(base_url=gateway.base_url, timeout=30) as http,
    ):
        token = http.get(TOKEN).json()["token"]
        own_redis.kill()
        assert tokens_during(http, 1.0, token) < 1.0
        refused, took = timed(lambda: post_order(http, "down-1"))
        assert refused.status_code == 503
        assert took < 2.5
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["detail"] == "Redis is unreachable"
        own_redis.start()  # same port, same data directory
        eventually(lambda: recovered(http, "down-1"))


def test_slow_redis_fails_tokens_over_to_memory_and_keeps_taking_webhooks(
    own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    proxy = LatencyProxy(own_redis.port, delay=0.0)
    try:
        env = gateway_env(f"redis://127.0.0.1:{proxy.port}/0")
        with (
            run_gateway(["serve", "--no-worker"], env, tmp_path) as gateway,
            httpx.Client(base_url=gateway.base_url, timeout=30) as http,
        ):
            token = http.get(TOKEN).json()["token"]
            # Warm, as a running gateway is: the scripts loaded, connections in the pool.
            assert post_order(http, "warm-up").json()["status"] == "accepted"
            proxy.delay = 0.25  # past the token path's 0.1 s, well within the webhooks' 2 s
            assert tokens_during(http, 2.0, token) < 1.0
            for i in range(3):
                accepted, took = timed(lambda i=i: post_order(http, f"slow-{i}"))  # type: ignore[misc]
                assert accepted.status_code == 200, accepted.text
                assert accepted.json()["status"] == "accepted"
                assert took < 3.0
            assert http.get("/readyz").status_code == 200  # slow, not unwritable
            before = served_from(http, "redis")
            proxy.delay = 0.0
            eventually(lambda: http.get(TOKEN).status_code == 200 and served_from(http, "redis") > before)
    finally:
        proxy.close()


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = clean_env(NEUROON_SHOP_ID=SHOP_ID, NEUROON_API_KEY=CANARY_KEY, NEUROON_SHOP_URL=SHOP_URL)
    proc = subprocess.Popen(
        [GATEWAY, "sandbox", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _answers(url + "/_sandbox/state"), within=30)
        yield proc, url
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=20)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_hung_neuroon_costs_tokens_and_webhooks_nothing_and_deliveries_resume(
    own_redis: EmbeddedRedis, sandbox_process: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    sandbox, neuroon_url = sandbox_process
    env = gateway_env(
        own_redis.url,
        NEUROON_API_URL=neuroon_url,
        NEUROON_TIMEOUT="1",
        NEUROON_RETRY_ATTEMPTS="1",
        GATEWAY_RETRY_SCHEDULE=",".join(["1"] * 30),
        GATEWAY_TOKEN_RATE_LIMIT="600",  # Redis is fine here, so the limit holds
    )
    with (
        run_gateway(["serve"], env, tmp_path) as gateway,
        httpx.Client(base_url=gateway.base_url, timeout=30) as http,
    ):
        token = http.get(TOKEN).json()["token"]
        sandbox.send_signal(signal.SIGSTOP)
        try:
            for i in range(3):
                accepted, took = timed(lambda i=i: post_order(http, f"hung-neuroon-{i}"))  # type: ignore[misc]
                assert accepted.json()["status"] == "accepted"
                assert took < 1.0
            assert tokens_during(http, 1.0, token) < 1.0
            # Readiness is about this process's own dependencies: a hung Neuroon is not a reason
            # to take the gateway out of the load balancer (orders queue up meanwhile).
            assert http.get("/readyz").status_code == 200
        finally:
            sandbox.send_signal(signal.SIGCONT)

        def delivered() -> set[str]:
            got = httpx.get(f"{neuroon_url}/_sandbox/shops/{SHOP_ID}/conversions").json()
            return {c["orderId"] for c in got["conversions"]}

        eventually(lambda: {f"hung-neuroon-{i}" for i in range(3)} <= delivered(), within=30)


def test_admin_api_answers_503_when_redis_is_down(
    make_settings: SettingsFactory, own_redis: EmbeddedRedis
) -> None:
    settings = make_settings(redis_url=own_redis.url, gateway_admin_jwt_secret=ADMIN_SECRET)
    with TestClient(create_app(settings)) as client:
        own_redis.kill()
        for path in ("/v1/admin/conversions/ORD-1", "/v1/admin/dead-letters"):
            response = client.get(path, headers=admin_headers())
            assert response.status_code == 503, response.text
            assert response.json() == {"error": "unavailable", "detail": "Redis is unavailable; retry later"}


def test_the_token_command_waits_for_the_shared_token_over_a_slow_link(
    own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    # A command is not a request path: it gets the webhooks' budget, not the token path's 0.1 s,
    # so over a slow link it still prints the token every replica serves, not one of its own.
    # One server of its own behind the slow link, whatever shape the suite runs against.
    redis_url = own_redis.url
    issued_at = int(time.time()) - 1000
    shared = sign_widget_token(SHOP_ID, CANARY_KEY, issued_at)

    async def store_shared() -> None:
        client = connect(redis_url)
        try:
            await Store(client).put_token_if_absent(
                SHOP_ID, key_fingerprint(CANARY_KEY), shared, issued_at, 600
            )
        finally:
            await client.aclose()

    asyncio.run(store_shared())
    proxy = LatencyProxy(own_redis.port, delay=0.3)
    try:
        env = clean_env(
            NEUROON_SHOP_ID=SHOP_ID, NEUROON_API_KEY=CANARY_KEY, REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0"
        )
        done = subprocess.run(
            [GATEWAY, "token"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
        )
    finally:
        proxy.close()
    assert done.stdout.strip() == shared
