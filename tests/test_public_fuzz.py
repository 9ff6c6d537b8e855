"""Fuzzing every public endpoint with Hypothesis, from a fixed seed (interface.md §3.6).

Whatever a client sends (methods, paths, headers, cookies, bodies, signed or not), the gateway
answers with no 5xx, within a bound far from any hang, and Redis ends the run within a memory
budget. Runs are reproducible: ``derandomize`` draws the same examples on every machine.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.main import create_app
from tests.conftest import SHOP_ID, SHOP_URL, SettingsFactory
from tests.test_webhook_fuzz import paths, replaced
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

# A hang is seconds (the quadratic cookie took 17); every answer here is milliseconds of work,
# so the bound leaves room for a busy shared machine and still tells the two apart.
SLOWEST_ANSWER_SECONDS = 3.0
# Redis may grow by what the run legitimately stores (accepted orders, capped clicks, counters).
REDIS_GROWTH_BUDGET = 16 * 1024 * 1024

FUZZ = settings(
    derandomize=True,  # the fixed seed: the same examples on every run
    database=None,
    deadline=None,  # time is checked per request below, with a bound that suits a shared machine
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Header values HTTP can carry (latin-1, no line breaks): controls, quotes, commas, high bytes.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300
)
long_header_text = st.one_of(header_text, st.builds(lambda s, n: s * n, header_text, st.integers(1, 200)))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: encode(v)),
    st.builds(
        lambda s, n: (s * n).encode("utf-8", "surrogatepass"), st.text(max_size=8), st.integers(1, 4000)
    ),
)
HEADER_NAMES = [
    "origin",
    "x-forwarded-for",
    "cookie",
    "content-type",
    "content-length",
    "x-request-id",
    "authorization",
    "access-control-request-headers",
    "x-shopify-hmac-sha256",
    "x-shopify-shop-domain",
    "x-shopify-topic",
    "x-wc-webhook-signature",
    "x-wc-webhook-source",
    "x-wc-webhook-topic",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
]
random_headers = st.dictionaries(
    st.sampled_from([h.encode() for h in HEADER_NAMES if h != "content-length"]),
    long_header_text.map(lambda v: v.encode("latin-1")),  # the bytes as they come off the wire
    max_size=6,
)
PUBLIC = [
    ("GET", "/v1/widget-token"),
    ("OPTIONS", "/v1/widget-token"),
    ("POST", "/v1/attribution"),
    ("OPTIONS", "/v1/attribution"),
    ("GET", "/v1/attribution.js"),
    ("POST", "/v1/webhooks/shopify"),
    ("POST", "/v1/webhooks/woocommerce"),
    ("POST", "/v1/webhooks/orders"),
    ("POST", f"/v1/webhooks/orders/{SHOP_ID}"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/admin/dead-letters"),
    ("GET", "/v1/admin/conversions/ORD-1"),
    ("POST", "/v1/admin/dead-letters/x/replay"),
    ("POST", "/v1/admin/catalog/products"),
    ("DELETE", "/v1/admin/catalog/products/SKU-1"),
    ("POST", "/v1/admin/domain/verify"),
]


@pytest.fixture
def gateway(make_settings: SettingsFactory) -> Iterator[TestClient]:
    settings_ = make_settings(
        shopify_webhook_secret=SHOPIFY_SECRET,
        woocommerce_webhook_secret=WOO_SECRET,
        gateway_webhook_secret=STANDARD_SECRET,
        gateway_admin_jwt_secret="an-admin-secret-of-32-characters!!",
        gateway_run_worker=False,
        # Every request reaches the parsers (the limits have their own tests): no 429 short cut.
        gateway_token_rate_limit=0,
        gateway_attribution_rate_limit=0,
    )
    with TestClient(create_app(settings_), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def redis_budget(redis_client: redis.Redis) -> Iterator[None]:
    """Redis used no more than REDIS_GROWTH_BUDGET more memory after the test than before it."""
    before = int(redis_client.info("memory")["used_memory"])
    yield
    grown = int(redis_client.info("memory")["used_memory"]) - before
    assert grown < REDIS_GROWTH_BUDGET, f"Redis grew by {grown} bytes"


def answered(send: Callable[[], Any]) -> Any:
    started = time.monotonic()
    response = send()
    elapsed = time.monotonic() - started
    assert response.status_code < 500, (response.status_code, response.text)
    assert elapsed < SLOWEST_ANSWER_SECONDS, f"answered in {elapsed:.1f} s"
    return response


@FUZZ
@given(
    endpoint=st.sampled_from(PUBLIC),
    query=st.dictionaries(st.sampled_from(["shopId", "limit", "x"]), st.text(max_size=200), max_size=2),
    headers=random_headers,
    body=bodies,
)
def test_any_request_to_a_public_endpoint(
    gateway: TestClient,
    redis_budget: None,
    endpoint: tuple[str, str],
    query: dict[str, str],
    headers: dict[bytes, bytes],
    body: bytes,
) -> None:
    method, path = endpoint
    answered(lambda: gateway.request(method, path, params=query, headers=headers, content=body or None))


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"]),
       path=st.text(alphabet="/v1abcdefghijklmnopqrstuvwxyz-_.%{}", max_size=60))  # fmt: skip
def test_any_method_and_path(gateway: TestClient, method: str, path: str) -> None:
    answered(lambda: gateway.request(method, "/" + path.lstrip("/")))


@FUZZ
@given(
    cart_token=st.one_of(
        st.sampled_from(["c", "Z2NwLWV1cm9wZS13ZXN0MTowMUpKN0Y3"]), st.text(max_size=300), json_values
    ),
    clicks=st.one_of(
        st.dictionaries(st.text(max_size=300), st.text(max_size=200), max_size=150),
        st.text(max_size=3000),
        json_values,
    ),
    cookie=st.one_of(st.none(), header_text),
    content_type=st.sampled_from(["application/json", "text/plain;charset=UTF-8", "text/plain"]),
)
def test_attribution_posts_from_the_storefront(
    gateway: TestClient,
    redis_budget: None,
    cart_token: Any,
    clicks: Any,
    cookie: str | None,
    content_type: str,
) -> None:
    headers = {b"origin": SHOP_URL.encode(), b"content-type": content_type.encode()}
    if cookie is not None:
        headers[b"cookie"] = f"neuroon_clicks={cookie}".encode("latin-1")
    body = encode({"cartToken": cart_token, "clicks": clicks})
    answered(lambda: gateway.post("/v1/attribution", content=body, headers=headers))


SIGNED: list[tuple[str, Any, Callable[[bytes], dict[str, str]]]] = [
    ("/v1/webhooks/shopify", shopify_order(clicks={"SNOW-GRN-150": "log_a"}), shopify_headers),
    ("/v1/webhooks/woocommerce", woocommerce_order(clicks={"HOODIE-M": "log_h"}), woocommerce_headers),
    ("/v1/webhooks/orders", generic_order(clicks={"SKU-042": "log_b"}, cart_token="c"), standard_headers),
    (f"/v1/webhooks/orders/{SHOP_ID}", generic_order(cart_token="c"), standard_headers),
]


@FUZZ
@given(data=st.data(), which=st.sampled_from(range(len(SIGNED))), order_id=st.integers(1, 10**6))
def test_signed_orders_with_any_field_changed(
    gateway: TestClient, redis_budget: None, data: st.DataObject, which: int, order_id: int
) -> None:
    url, template, sign = SIGNED[which]
    document = copy.deepcopy(template)
    if "data" in document:
        document["data"]["orderId"] = f"ORD-{order_id}"  # a new order each time, not a duplicate
    else:
        document["id"] = order_id
    for path in data.draw(st.lists(st.sampled_from(list(paths(template))), max_size=3)):
        try:
            document = replaced(document, path, data.draw(json_values))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed the place this one would go
    body = encode(document)
    answered(lambda: gateway.post(url, content=body, headers=sign(body)))
