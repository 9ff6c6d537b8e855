"""The carts of posted clicks are bounded per shop, whatever the number of client addresses.

The real app and Redis, a small carts cap set on the running app's store (its ``max_carts``), and the
per-client rate limit off: many client addresses are what these posts stand for.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from app.store.conversions import (
    ATTRIBUTION_TTL_SECONDS,
    MAX_CLICKS_PER_CART,
    ConversionStore,
    attribution_carts_key,
    attribution_key,
    attribution_order_key,
    attribution_sizes_key,
)
from tests.conftest import SHOP_ID, SHOP_URL, SettingsFactory
from tests.webhooks import SHOPIFY_SECRET, encode, shopify_headers, shopify_order

CAP = 5


@pytest.fixture
def client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    settings = make_settings(
        shopify_webhook_secret=SHOPIFY_SECRET, gateway_attribution_rate_limit=0, gateway_run_worker=False
    )
    with TestClient(create_app(settings), headers={"Origin": SHOP_URL}) as test_client:
        store: ConversionStore = test_client.app_state["gateway"].conversions
        store.max_carts = CAP
        yield test_client


def post(client: TestClient, cart_token: str, clicks: dict[str, str] | None = None) -> None:
    body = {"cartToken": cart_token, "clicks": clicks or {"WAX-01": f"log_{cart_token}"}}
    assert client.post("/v1/attribution", json=body).status_code == 204


def cart_keys(cart_token: str) -> list[str]:
    return [attribution_key(SHOP_ID, cart_token), attribution_order_key(SHOP_ID, cart_token)]


def carts_kept(redis_client: redis.Redis) -> list[str]:
    """The shop's carts index, least recently posted first."""
    members: list[bytes] = redis_client.zrange(attribution_carts_key(SHOP_ID), 0, -1)  # type: ignore[assignment]
    return [m.decode() for m in members]


def cart_sizes(redis_client: redis.Redis) -> dict[str, int]:
    """The shop's recorded cart sizes ('' is their sum)."""
    raw: dict[bytes, bytes] = redis_client.hgetall(attribution_sizes_key(SHOP_ID))  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}


def memory(redis_client: redis.Redis, cart_tokens: list[str]) -> int:
    """MEMORY USAGE of every key attribution may hold for these carts, the shop's index included."""
    keys = [attribution_carts_key(SHOP_ID)] + [k for c in cart_tokens for k in cart_keys(c)]
    return sum(int(redis_client.memory_usage(k, samples=0) or 0) for k in keys)


def order_status(client: TestClient, order_id: int, cart_token: str) -> str:
    body = encode(shopify_order(order_id, cart_token=cart_token))  # no clicks of its own
    response = client.post("/v1/webhooks/shopify", content=body, headers=shopify_headers(body))
    assert response.status_code == 200
    status: str = response.json()["status"]
    return status


def test_past_the_cap_the_least_recently_posted_carts_go_and_the_rest_still_attribute(
    client: TestClient, redis_client: redis.Redis
) -> None:
    carts = [f"cart-{i}" for i in range(8)]
    for cart in carts:
        post(client, cart)
    post(client, "cart-0", {"GLOVES-M": "log_again"})  # posted again: the most recent now
    index = attribution_carts_key(SHOP_ID)
    assert redis_client.zcard(index) == CAP
    kept = ["cart-4", "cart-5", "cart-6", "cart-7", "cart-0"]
    assert carts_kept(redis_client) == kept
    for cart in ["cart-1", "cart-2", "cart-3"]:
        assert not any(redis_client.exists(k) for k in cart_keys(cart)), cart
    for cart in kept:
        assert all(redis_client.exists(k) for k in cart_keys(cart)), cart
    assert 0 < int(redis_client.ttl(index)) <= ATTRIBUTION_TTL_SECONDS
    # An evicted cart's order is still accepted as an order, only without attribution.
    assert order_status(client, 1001, "cart-1") == "ignored"
    assert order_status(client, 1002, "cart-7") == "accepted"
    assert order_status(client, 1003, "cart-0") == "accepted"


def test_memory_stays_flat_as_carts_keep_coming(client: TestClient, redis_client: redis.Redis) -> None:
    clicks = {f"SKU-{i}": f"log_{i}" for i in range(10)}
    carts = [f"c{i:04d}" for i in range(400)]
    for cart in carts[:50]:
        post(client, cart, clicks)
    at_the_cap = memory(redis_client, carts[:50])
    assert at_the_cap > 0
    for cart in carts[50:]:
        post(client, cart, clicks)
    assert redis_client.zcard(attribution_carts_key(SHOP_ID)) == CAP
    # Eight times the carts, the same memory (give or take the index's encoding).
    assert memory(redis_client, carts) <= at_the_cap * 1.2


def test_index_entries_past_the_ttl_are_dropped(client: TestClient, redis_client: redis.Redis) -> None:
    index = attribution_carts_key(SHOP_ID)
    now_us = int(redis_client.time()[0]) * 1_000_000
    # Carts last posted eight days ago: their keys expired a day ago, their entries remain.
    stale = {f"old-{i}": now_us - 8 * 86_400 * 1_000_000 + i for i in range(3)}
    redis_client.zadd(index, stale)
    post(client, "fresh")
    assert carts_kept(redis_client) == ["fresh"]


def test_a_lowered_cap_is_reached_a_few_carts_per_post(client: TestClient, redis_client: redis.Redis) -> None:
    store: ConversionStore = client.app_state["gateway"].conversions
    store.max_carts = 200
    for i in range(200):
        post(client, f"c{i}")
    store.max_carts = CAP
    post(client, "next")  # evicts a bounded number, not all 196 at once
    assert CAP < redis_client.zcard(attribution_carts_key(SHOP_ID)) < 200
    for i in range(3):
        post(client, f"more-{i}")
    assert redis_client.zcard(attribution_carts_key(SHOP_ID)) == CAP


def test_the_largest_cart_costs_what_the_readme_says(client: TestClient, redis_client: redis.Redis) -> None:
    """README "Running on the internet": at most ~224 KiB per cart (100 clicks of the longest ids,
    productIds of 256 four-byte characters)."""
    wide = "\U0001f600"  # four bytes in UTF-8, printable: a productId may be 256 of them
    clicks = {f"{i:03d}".ljust(256, wide): f"log_{i:03d}".ljust(128, "s") for i in range(MAX_CLICKS_PER_CART)}
    items = list(clicks.items())
    for start in range(0, len(items), 10):  # the body is at most 16 KiB
        post(client, "big", dict(items[start : start + 10]))
    assert redis_client.hlen(attribution_key(SHOP_ID, "big")) == MAX_CLICKS_PER_CART
    used = sum(int(redis_client.memory_usage(k, samples=0) or 0) for k in cart_keys("big"))
    assert 200 * 1024 < used <= 224 * 1024


def test_past_the_bytes_cap_the_least_recently_posted_carts_go(
    client: TestClient, redis_client: redis.Redis
) -> None:
    """A flood of maximal carts holds at most the bytes cap, however many carts the count allows."""
    store: ConversionStore = client.app_state["gateway"].conversions
    store.max_carts, store.max_cart_bytes = 1000, 64 * 1024
    clicks = {f"{i:03d}".ljust(256, "p"): f"log_{i:03d}".ljust(128, "s") for i in range(30)}
    carts = [f"big-{i}" for i in range(20)]
    for cart in carts:
        post(client, cart, clicks)
    sizes = cart_sizes(redis_client)
    total = sizes.pop("")
    kept = carts_kept(redis_client)
    assert set(sizes) == set(kept)
    assert total == sum(sizes.values()) <= store.max_cart_bytes
    assert 2 <= len(kept) < 20
    assert kept == carts[-len(kept) :]
    # What is counted is what the carts hold (their keys' MEMORY USAGE and their index entries).
    assert memory(redis_client, carts) <= total
    for cart in carts[: -len(kept)]:
        assert not any(redis_client.exists(k) for k in cart_keys(cart)), cart
    # A kept cart posted again is counted once, at its new size (not its old size again: ~15 KiB).
    post(client, kept[-1], {"MORE": "log_more"})
    sizes_now = cart_sizes(redis_client)
    assert sizes_now.pop("") == sum(sizes_now.values())
    assert abs(sizes_now[kept[-1]] - sizes[kept[-1]]) < 1024
