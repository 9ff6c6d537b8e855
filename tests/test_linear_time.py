"""Every parser of untrusted text runs in time linear in its input (interface.md §3.6).

Hostile inputs of growing size, up to the limit the gateway accepts for each, are fed to the
parser itself (sensitive: nothing else in the timing) and through the real app (what an
attacker reaches); the time for twice the size stays near twice the time (tests/linear.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from app.conversions.attribution import MAX_RAW_LENGTH, parse_clicks
from app.main import create_app
from tests.conftest import SHOP_URL, SettingsFactory
from tests.linear import assert_linear
from tests.webhooks import encode, shopify_headers, shopify_order


def fill(unit: str, n: int, prefix: str = "") -> str:
    """``prefix`` then ``unit`` repeated, at most ``n`` characters (inputs stay within the limits)."""
    return prefix + unit * ((n - len(prefix)) // len(unit))


# Shapes that defeat naive parsers: unterminated literals full of escapes, a quote per character,
# nesting, percent-escapes, pairs past the cap, and a valid prefix cut short.
HOSTILE: dict[str, Callable[[int], str]] = {
    "quote-backslash": lambda n: fill('"\\', n),
    "quotes": lambda n: fill('"', n),
    "backslashes": lambda n: fill("\\", n),
    "open-object": lambda n: fill("{", n),
    "open-keys": lambda n: fill('{"a":', n),
    "escaped-quotes": lambda n: fill('\\"', n, prefix='{"'),
    "key-colon-quote": lambda n: fill('"a":"', n),
    "percent-quotes": lambda n: fill("%22%5C", n),
    "bad-percent": lambda n: fill("%", n),
    "many-pairs": lambda n: "{" + ",".join(f'"k{i}":"v"' for i in range(n // 12)),
    "cut-pairs": lambda n: fill('{"k":"v",', n)[:-3],
    "unicode-escapes": lambda n: fill("\\u00e9", n, prefix='{"a":"'),
}


def parsing(
    parse: Callable[[str], object], make: Callable[[int], str]
) -> Callable[[int], Callable[[], object]]:
    """For assert_linear: the input of each size is made once, outside the timing."""

    def action_for(n: int) -> Callable[[], object]:
        text = make(n)
        assert len(text) <= n
        return lambda: parse(text)

    return action_for


@pytest.mark.parametrize("shape", HOSTILE)
def test_parse_clicks_is_linear(shape: str) -> None:
    assert_linear(parsing(parse_clicks, HOSTILE[shape]), MAX_RAW_LENGTH, f"parse_clicks({shape})")


# --- through the real app ------------------------------------------------------------------


@pytest.fixture
def app_client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    from tests.webhooks import SHOPIFY_SECRET

    settings = make_settings(
        shopify_webhook_secret=SHOPIFY_SECRET,
        gateway_run_worker=False,
        gateway_attribution_rate_limit=0,  # timing, not limiting
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("shape", ["quote-backslash", "escaped-quotes", "key-colon-quote"])
def test_a_hostile_clicks_cookie_is_linear(app_client: TestClient, shape: str) -> None:
    make = HOSTILE[shape]

    def post(n: int) -> Callable[[], object]:
        headers = {"Content-Type": "application/json", "Origin": SHOP_URL}
        cookie = f"neuroon_clicks={make(n)}"

        def call() -> None:
            response = app_client.post(
                "/v1/attribution", content=b'{"cartToken":"c"}', headers=headers | {"Cookie": cookie}
            )
            assert response.status_code < 500

        return call

    assert_linear(post, MAX_RAW_LENGTH, f"cookie {shape}")


@pytest.mark.parametrize("shape", ["quote-backslash", "escaped-quotes", "key-colon-quote"])
def test_a_hostile_cart_attribute_in_a_signed_shopify_order_is_linear(
    app_client: TestClient, shape: str
) -> None:
    make = HOSTILE[shape]

    def post(n: int) -> Callable[[], object]:
        body = encode(shopify_order(note_value=make(n)))
        headers = shopify_headers(body)

        def call() -> None:
            assert app_client.post("/v1/webhooks/shopify", content=body, headers=headers).status_code == 200

        return call

    assert_linear(post, MAX_RAW_LENGTH, f"cart attribute {shape}")
