"""End to end: webhook in, through the real Redis queue and the real worker, out to the sandbox.

The sandbox runs in-process (httpx.ASGITransport) on the real clock; the retry schedule and the
probe interval are shortened so that every path runs in seconds. Waits poll for an outcome with a
generous deadline: nothing here asserts on timing.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import jwt
import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app.conversions.worker import HOUSEKEEPING_SECONDS, MAX_ROUNDS
from app.main import create_app
from app.sandbox import Fault, Sandbox, SandboxShop, create_sandbox
from app.store.conversions import dead_key, order_key, paused_key, pending_key, stream_key
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL, SettingsFactory
from tests.webhooks import (
    SHOPIFY_SECRET,
    STANDARD_SECRET,
    WOO_SECRET,
    encode,
    generic_order,
    shopify_headers,
    shopify_order,
    standard_headers,
    woocommerce_headers,
    woocommerce_order,
)

ADMIN_SECRET = "admin-jwt-secret-" + "9" * 24
CLICKS = {"SNOW-GRN-150": "log_snow", "WAX-01": "log_wax"}
SANDBOX_URL = "http://neuroon.sandbox"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(0.02)


def admin_token(secret: str = ADMIN_SECRET, **claims: Any) -> str:
    payload = {"sub": "ops", "aud": "neuroon-gateway", "exp": int(time.time()) + 300} | claims
    return jwt.encode(payload, secret, algorithm="HS256")


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token()}"}


@pytest.fixture
def live_sandbox() -> Sandbox:
    return create_sandbox([SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL)])


GatewayFactory = Callable[..., TestClient]


@pytest.fixture
def gateway(make_settings: SettingsFactory, live_sandbox: Sandbox) -> Iterator[GatewayFactory]:
    """Start the gateway (worker included) over the sandbox; keyword arguments override settings."""
    clients: list[TestClient] = []

    def start(**overrides: Any) -> TestClient:
        values: dict[str, Any] = {
            "shopify_webhook_secret": SHOPIFY_SECRET,
            "woocommerce_webhook_secret": WOO_SECRET,
            "gateway_webhook_secret": STANDARD_SECRET,
            "gateway_admin_jwt_secret": ADMIN_SECRET,
            "neuroon_api_url": SANDBOX_URL,
            "neuroon_retry_attempts": 1,
            "gateway_retry_schedule": "0.1,0.1,0.1",
            "gateway_pause_probe_seconds": 0.2,
            "gateway_worker_lease_seconds": 2,
        } | overrides
        client = TestClient(
            create_app(make_settings(**values), neuroon_transport=httpx.ASGITransport(app=live_sandbox.app))
        )
        client.__enter__()
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in reversed(clients):
            client.__exit__(None, None, None)


def post_shopify(client: TestClient, payload: Any, **kwargs: Any) -> dict[str, Any]:
    body = encode(payload)
    response = client.post("/v1/webhooks/shopify", content=body, headers=shopify_headers(body, **kwargs))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def state_of(client: TestClient, order_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/admin/conversions/{order_id}", headers=admin_headers())
    assert response.status_code in (200, 404), response.text
    result: dict[str, Any] = response.json()
    return result


def delivered(client: TestClient, order_id: str) -> bool:
    return state_of(client, order_id).get("state") == "delivered"


def sends(sandbox: Sandbox, status: int | None = None) -> list[str]:
    """orderIds of the conversions sent to the sandbox (answered with ``status`` if given), in order."""
    return [
        orjson.loads(r.body)["orderId"]
        for r in sandbox.requests
        if r.operation == "track_conversion" and (status is None or r.status == status)
    ]


def metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_accepted_order_is_delivered_once_with_its_attributed_lines(
    gateway: GatewayFactory, live_sandbox: Sandbox, redis_client: redis.Redis
) -> None:
    before = metric("neuroon_gateway_conversions_total", {"shop": SHOP_ID, "outcome": "delivered"})
    client = gateway()
    assert post_shopify(client, shopify_order(clicks=CLICKS))["status"] == "accepted"
    wait_for(lambda: delivered(client, "6200407294252"), "delivery")
    assert live_sandbox.conversions(SHOP_ID)["6200407294252"] == {
        "orderId": "6200407294252",
        "orderValue": Decimal("186.90"),
        "currency": "EUR",
        "conversions": [
            {
                "productId": "SNOW-GRN-150",
                "searchLogId": "log_snow",
                "quantity": 1,
                "lineTotal": Decimal("84.90"),
            },
            {"productId": "WAX-01", "searchLogId": "log_wax", "quantity": 2, "lineTotal": Decimal("100.00")},
        ],
    }
    wire = next(r.body for r in live_sandbox.requests if r.operation == "track_conversion")
    assert b'"orderValue":186.9,' in wire  # money leaves as an exact JSON number
    assert post_shopify(client, shopify_order(clicks=CLICKS))["status"] == "duplicate"
    state = state_of(client, "6200407294252")
    assert state["attempts"] == 1
    assert state["deliveredAt"] is not None
    assert sends(live_sandbox) == ["6200407294252"]
    assert redis_client.xlen(stream_key(SHOP_ID)) == 0  # acknowledged and removed
    assert redis_client.zcard(pending_key(SHOP_ID)) == 0
    assert (
        metric("neuroon_gateway_conversions_total", {"shop": SHOP_ID, "outcome": "delivered"}) == before + 1
    )


def test_503s_then_success_is_delivered_once(gateway: GatewayFactory, live_sandbox: Sandbox) -> None:
    # Two client attempts per delivery: 503, 503 → a delayed retry → 503, then 200.
    live_sandbox.script("track_conversion", 503, 503, 503, 200)
    client = gateway(neuroon_retry_attempts=2)
    post_shopify(client, shopify_order(clicks=CLICKS))
    wait_for(lambda: delivered(client, "6200407294252"), "delivery after 503s")
    assert live_sandbox.statuses("track_conversion") == [503, 503, 503, 200]
    state = state_of(client, "6200407294252")
    assert state["state"] == "delivered"
    assert state["attempts"] == 4  # every request sent, the client's immediate retries included
    assert "503" in state["lastError"]  # kept after the success
    assert len(live_sandbox.conversions(SHOP_ID)) == 1


def test_429_retry_after_is_honoured_by_the_delayed_retry(
    gateway: GatewayFactory, live_sandbox: Sandbox
) -> None:
    live_sandbox.script("track_conversion", Fault(429, retry_after=30))
    client = gateway()  # the schedule says 0.1 s; Neuroon asks for 30 s
    post_shopify(client, shopify_order(clicks=CLICKS))
    wait_for(lambda: state_of(client, "6200407294252").get("nextAttemptAt") is not None, "a scheduled retry")
    state = state_of(client, "6200407294252")
    assert _ms(state["nextAttemptAt"]) - _ms(state["lastAttemptAt"]) >= 30_000
    assert state["state"] == "delivering"
    assert "rate limited" in state["lastError"]
    assert live_sandbox.statuses("track_conversion") == [429]


def test_a_short_retry_after_with_no_budget_left_is_waited_for_that_long_only(
    gateway: GatewayFactory, live_sandbox: Sandbox
) -> None:
    """Issue 9 item 8: "Retry-After: 1" with X-RateLimit-Remaining: 0 held delivery for the whole
    estimated window (60 s); delivered seconds later now (15 s separates the two behaviours)."""
    live_sandbox.script(
        "track_conversion",
        Fault(429, retry_after=1, headers={"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0"}),
    )
    client = gateway(neuroon_retry_attempts=3)
    post_shopify(client, shopify_order(clicks=CLICKS))
    wait_for(lambda: delivered(client, "6200407294252"), "delivery after the Retry-After", timeout=15)
    assert live_sandbox.statuses("track_conversion") == [429, 200]


@pytest.mark.parametrize(
    ("first", "attempts_per_call", "error"),
    [(Fault(429, retry_after=1), 3, "rate limited"), (Fault(503), 2, "HTTP 503")],
)
def test_a_failure_then_success_in_the_immediate_retry_shows_in_attempts_and_last_error(
    gateway: GatewayFactory, live_sandbox: Sandbox, first: Fault, attempts_per_call: int, error: str
) -> None:
    """Issue 9 item 9: a 503 then a 200 inside the client's retries used to read ``attempts: 1,
    lastError: null``: the operator never saw the failure."""
    live_sandbox.script("track_conversion", first)
    client = gateway(neuroon_retry_attempts=attempts_per_call)
    post_shopify(client, shopify_order(clicks=CLICKS))
    wait_for(lambda: delivered(client, "6200407294252"), "delivery after a failure")
    assert live_sandbox.statuses("track_conversion") == [first.status, 200]
    state = state_of(client, "6200407294252")
    assert state["attempts"] == 2
    assert state["lastError"] is not None
    assert error in state["lastError"]


def _ms(iso_time: str) -> int:
    return int(datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp() * 1000)


def test_retries_exhausted_go_to_the_dead_letter_list(
    gateway: GatewayFactory, live_sandbox: Sandbox, redis_client: redis.Redis
) -> None:
    live_sandbox.outage = True
    client = gateway(gateway_retry_schedule="0.05,0.05")
    post_shopify(client, shopify_order(clicks=CLICKS))
    wait_for(lambda: state_of(client, "6200407294252").get("state") == "dead_lettered", "dead letter")
    assert live_sandbox.statuses("track_conversion") == [503, 503, 503]  # first try + 2 delayed retries
    assert "gave up after 3 attempts" in state_of(client, "6200407294252")["lastError"]
    assert redis_client.zcard(dead_key(SHOP_ID)) == 1
    assert redis_client.zcard(pending_key(SHOP_ID)) == 0


def test_400_is_dead_lettered_at_once_then_replayed(
    gateway: GatewayFactory, live_sandbox: Sandbox, redis_client: redis.Redis
) -> None:
    before = metric("neuroon_gateway_conversions_total", {"shop": SHOP_ID, "outcome": "dead_lettered"})
    live_sandbox.script("track_conversion", 400)
    client = gateway()
    post_shopify(client, shopify_order(clicks=CLICKS))
    wait_for(lambda: state_of(client, "6200407294252").get("state") == "dead_lettered", "dead letter")
    assert live_sandbox.statuses("track_conversion") == [400]
    letters = client.get("/v1/admin/dead-letters", headers=admin_headers()).json()["deadLetters"]
    assert len(letters) == 1
    assert letters[0]["id"] == f"{SHOP_ID}:6200407294252"
    assert letters[0]["orderId"] == "6200407294252"
    assert "HTTP 400" in letters[0]["reason"]
    assert letters[0]["attempts"] == 1
    assert (
        metric("neuroon_gateway_conversions_total", {"shop": SHOP_ID, "outcome": "dead_lettered"})
        == before + 1
    )

    replayed = client.post(f"/v1/admin/dead-letters/{letters[0]['id']}/replay", headers=admin_headers())
    assert replayed.status_code == 200
    assert replayed.json() == {"status": "replayed", "id": f"{SHOP_ID}:6200407294252"}
    wait_for(lambda: delivered(client, "6200407294252"), "delivery after replay")
    assert live_sandbox.statuses("track_conversion") == [400, 200]
    assert client.get("/v1/admin/dead-letters", headers=admin_headers()).json() == {"deadLetters": []}
    again = client.post(f"/v1/admin/dead-letters/{letters[0]['id']}/replay", headers=admin_headers())
    assert again.status_code == 404
    assert redis_client.zcard(dead_key(SHOP_ID)) == 0


def test_a_replay_starts_afresh_however_many_rounds_came_before(
    gateway: GatewayFactory, live_sandbox: Sandbox, redis_client: redis.Redis
) -> None:
    # E.g. the order a long pause was probed with (every probe counts), then refused with a 400.
    live_sandbox.script("track_conversion", 400)
    client = gateway()
    post_shopify(client, shopify_order(clicks=CLICKS))
    wait_for(lambda: state_of(client, "6200407294252").get("state") == "dead_lettered", "dead letter")
    redis_client.hset(order_key(SHOP_ID, "6200407294252"), "rounds", MAX_ROUNDS + 20)
    replayed = client.post(f"/v1/admin/dead-letters/{SHOP_ID}:6200407294252/replay", headers=admin_headers())
    assert replayed.status_code == 200
    wait_for(lambda: delivered(client, "6200407294252"), "delivery after replay")
    assert live_sandbox.statuses("track_conversion") == [400, 200]  # sent, not given up unsent
    state = state_of(client, "6200407294252")
    assert state["attempts"] == 2  # the requests sent: the history survives the replay
    assert "HTTP 400" in state["lastError"]


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_pauses_the_shop_and_a_probe_resumes_it(
    gateway: GatewayFactory, live_sandbox: Sandbox, redis_client: redis.Redis, status: int
) -> None:
    live_sandbox.script("track_conversion", status, status)  # the first delivery, then the first probe
    client = gateway()
    post_shopify(client, shopify_order(1, clicks=CLICKS))
    wait_for(lambda: redis_client.exists(paused_key(SHOP_ID)) == 1, "pause")
    # The gauge is set once the pause's script has answered the worker, a moment after the key exists.
    wait_for(lambda: metric("neuroon_gateway_delivery_paused", {"shop": SHOP_ID}) == 1, "gauge at 1")
    # An order accepted meanwhile waits (the worker's look at the shop sees the pause in the same
    # step as it reads): nothing is dropped, nothing is sent before the probe succeeds, however
    # short the probe interval (0.2 s here, under the housekeeping interval).
    time.sleep(HOUSEKEEPING_SECONDS + 0.1)
    post_shopify(client, shopify_order(2, clicks=CLICKS))
    wait_for(lambda: delivered(client, "1") and delivered(client, "2"), "resume and delivery")
    assert live_sandbox.statuses("track_conversion") == [status, status, 200, 200]
    # The probe proves the key with order 1; order 2 goes only once the shop has resumed.
    assert sends(live_sandbox) == ["1", "1", "1", "2"]
    assert sends(live_sandbox, 200) == ["1", "2"]
    assert redis_client.exists(paused_key(SHOP_ID)) == 0
    wait_for(lambda: metric("neuroon_gateway_delivery_paused", {"shop": SHOP_ID}) == 0, "gauge back to 0")


def test_probe_deliveries_count_as_the_orders_attempts(
    gateway: GatewayFactory, live_sandbox: Sandbox, redis_client: redis.Redis
) -> None:
    def attempts(result: str) -> float:
        return metric("neuroon_gateway_delivery_attempts_total", {"shop": SHOP_ID, "result": result})

    before = {result: attempts(result) for result in ("auth_failure", "unavailable", "delivered")}
    # The delivery pauses the shop; then the probes meet a 403, a 503, and go through.
    live_sandbox.script("track_conversion", 401, 403, 503, 200)
    client = gateway()
    post_shopify(client, shopify_order(1, clicks=CLICKS))
    wait_for(lambda: delivered(client, "1"), "resume and delivery")
    assert live_sandbox.statuses("track_conversion") == [401, 403, 503, 200]
    assert sends(live_sandbox) == ["1"] * 4
    assert sends(live_sandbox, 200) == ["1"]  # never sent again after the probe's 2xx
    state = state_of(client, "1")
    assert state["attempts"] == 4  # the delivery that paused the shop, then three probes
    assert "503" in state["lastError"]  # the last failed probe's error, not the pause's reason
    assert attempts("auth_failure") == before["auth_failure"] + 2
    assert attempts("unavailable") == before["unavailable"] + 1
    assert attempts("delivered") == before["delivered"] + 1
    assert redis_client.exists(paused_key(SHOP_ID)) == 0
    assert redis_client.zcard(pending_key(SHOP_ID)) == 0


def test_rotated_key_pauses_until_the_gateway_has_the_new_key(
    gateway: GatewayFactory, live_sandbox: Sandbox, redis_client: redis.Redis, tmp_path: Any
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(CANARY_KEY)
    client = gateway(neuroon_api_key=None, neuroon_api_key_file=key_file, gateway_key_reload_interval=0.1)
    new_key = "sk_" + "a1" * 16
    live_sandbox.rotate_key(SHOP_ID, new_key)
    post_shopify(client, shopify_order(1, clicks=CLICKS))
    wait_for(lambda: redis_client.exists(paused_key(SHOP_ID)) == 1, "pause on the stale key")
    assert state_of(client, "1")["state"] == "delivering"
    key_file.write_text(new_key)
    wait_for(lambda: delivered(client, "1"), "delivery with the rotated key")
    assert redis_client.exists(paused_key(SHOP_ID)) == 0


def test_orders_from_every_platform_arrive_exactly_once(
    gateway: GatewayFactory, live_sandbox: Sandbox, redis_client: redis.Redis
) -> None:
    """N orders in (with duplicates and transient faults), exactly N distinct conversions out,
    through two gateway processes' worth of workers sharing one Redis."""
    faults: list[int | Fault | None] = [503, 200, Fault(429, retry_after=1), 200, 200, 503]
    live_sandbox.script("track_conversion", *(faults * 5))
    first = gateway(gateway_worker_concurrency=4)
    second = gateway(gateway_worker_concurrency=4)
    expected = set()
    for i in range(20):
        body = encode(shopify_order(1000 + i, clicks=CLICKS))
        for client in (first, second):  # the same order twice, to both replicas
            client.post("/v1/webhooks/shopify", content=body, headers=shopify_headers(body))
        expected.add(str(1000 + i))
    for i in range(15):
        body = encode(woocommerce_order(2000 + i, clicks={"HOODIE-M": "log_h"}))
        for topic in ("order.created", "order.updated"):
            first.post(
                "/v1/webhooks/woocommerce", content=body, headers=woocommerce_headers(body, topic=topic)
            )
        expected.add(str(2000 + i))
    for i in range(15):
        body = encode(generic_order(f"G-{i}"))
        second.post("/v1/webhooks/orders", content=body, headers=standard_headers(body))
        second.post("/v1/webhooks/orders", content=body, headers=standard_headers(body))
        expected.add(f"G-{i}")
    wait_for(
        lambda: set(live_sandbox.conversions(SHOP_ID)) == expected and _all_delivered(first, expected), "all"
    )
    assert len(live_sandbox.conversions(SHOP_ID)) == 50
    # Never sent again after Neuroon said 2xx.
    assert Counter(sends(live_sandbox, 200)) == Counter(expected)
    assert redis_client.zcard(pending_key(SHOP_ID)) == 0


def _all_delivered(client: TestClient, order_ids: set[str]) -> bool:
    return all(delivered(client, order_id) for order_id in order_ids)


# --- admin API authentication --------------------------------------------------------------


def test_admin_api_requires_a_valid_bearer_token(gateway: GatewayFactory) -> None:
    client = gateway()
    url = "/v1/admin/dead-letters"
    assert client.get(url, headers=admin_headers()).status_code == 200
    bad = [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": f"Bearer {admin_token('another-secret-long-enough-for-hs256!')}"},
        {"Authorization": f"Bearer {admin_token(aud='someone-else')}"},
        {"Authorization": f"Bearer {admin_token(exp=int(time.time()) - 3600)}"},
        {
            "Authorization": "Bearer "
            + jwt.encode({"aud": "neuroon-gateway"}, ADMIN_SECRET, algorithm="HS256")
        },
        {
            "Authorization": "Bearer "
            + jwt.encode({"exp": int(time.time()) + 60}, ADMIN_SECRET, algorithm="HS256")
        },
        {"Authorization": "Bearer " + _unsigned({"aud": "neuroon-gateway", "exp": int(time.time()) + 60})},
    ]
    for headers in bad:
        response = client.get(url, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert ADMIN_SECRET not in response.text


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_admin_api_is_disabled_without_a_key(gateway: GatewayFactory) -> None:
    client = gateway(gateway_admin_jwt_secret=None)
    response = client.get("/v1/admin/dead-letters", headers=admin_headers())
    assert response.status_code == 404
    assert response.json()["error"] == "admin_disabled"


def test_admin_conversion_lookup_of_an_unknown_order_is_404(gateway: GatewayFactory) -> None:
    client = gateway()
    response = client.get("/v1/admin/conversions/nope", headers=admin_headers())
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert (
        client.post("/v1/admin/dead-letters/shop_test:nope/replay", headers=admin_headers()).status_code
        == 404
    )


def test_queue_gauges_follow_redis(gateway: GatewayFactory, live_sandbox: Sandbox) -> None:
    idle = gateway(gateway_run_worker=False)  # accepts, delivers nothing
    post_shopify(idle, shopify_order(1, clicks=CLICKS))
    post_shopify(idle, shopify_order(2, clicks=CLICKS))
    wait_for(lambda: metric("neuroon_gateway_conversion_queue_depth", {"shop": SHOP_ID}) == 2, "depth 2", 15)
    wait_for(
        lambda: metric("neuroon_gateway_conversion_oldest_pending_seconds", {"shop": SHOP_ID}) > 0, "age", 15
    )
    text = idle.get("/metrics").text
    for family in (
        "neuroon_gateway_webhooks_received_total",
        "neuroon_gateway_conversion_queue_depth",
        "neuroon_gateway_conversion_oldest_pending_seconds",
        "neuroon_gateway_delivery_paused",
    ):
        assert family in text
    gateway()  # a worker now
    wait_for(lambda: metric("neuroon_gateway_conversion_queue_depth", {"shop": SHOP_ID}) == 0, "depth 0", 15)
    assert metric("neuroon_gateway_conversion_oldest_pending_seconds", {"shop": SHOP_ID}) == 0
