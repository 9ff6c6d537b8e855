"""The WooCommerce mu-plugin (integrations/woocommerce/neuroon-clicks.php), run by PHP.

tests/php/checkout.php is one checkout around the real snippet, with WordPress's and WooCommerce's
functions stubbed as they behave; it runs under PHP's built-in server so that PHP itself parses the
Cookie header into $_COOKIE. The meta it saves goes into a WooCommerce order payload, read by the
gateway's own parser. Skipped (with the reason) when no php binary is on PATH: `make test` must also
pass on a machine with only Python. Install one (Debian: `apt-get install php-cli`) to run it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import httpx
import pytest

from app.conversions.lines import decide
from app.conversions.orders import parse_woocommerce
from app.embedded_redis import free_port
from tests.webhooks import woocommerce_order

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = ROOT / "integrations" / "woocommerce" / "neuroon-clicks.php"
HARNESS = ROOT / "tests" / "php" / "checkout.php"
README = ROOT / "README.md"

PHP = shutil.which("php")
needs_php = pytest.mark.skipif(PHP is None, reason="no php binary on PATH (apt-get install php-cli)")

# The classic checkout's hook and the block checkout's (Store API).
HOOKS = ["classic", "block"]
# The lines of tests.webhooks.woocommerce_order, by SKU.
CLICKS = {"HOODIE-M": "log_h", "CAP-1": "log_c"}
EXISTING_META = {"id": 3549, "key": "_wc_order_attribution_source_type", "value": "typein"}
COOKIE_LIMIT = 4096


def clicks_cookie(clicks: dict[str, str], *, url_encoded: bool = False) -> str:
    """The cookie as a widget writes it: JSON.stringify (UTF-8, not \\u escapes), maybe encodeURIComponent."""
    raw = json.dumps(clicks, separators=(",", ":"), ensure_ascii=False)
    return quote(raw, safe="!'()*-._~") if url_encoded else raw


def readme_copy() -> str:
    """The ```php block that follows the README's link to the snippet, without the list's indent."""
    text = README.read_text()
    start = text.index("```php\n", text.index(str(SNIPPET.relative_to(ROOT)))) + len("```php\n")
    lines = text[start:].splitlines(keepends=True)
    block = lines[: next(i for i, line in enumerate(lines) if line.strip() == "```")]
    return "".join(line[3:] if line.strip() else "\n" for line in block)


def test_the_readme_shows_the_snippet_verbatim() -> None:
    assert readme_copy() == SNIPPET.read_text()


@pytest.fixture(scope="module")
def shop() -> Iterator[httpx.Client]:
    assert PHP is not None
    port = free_port()
    # -n: no php.ini, so the machine's configuration does not change what runs.
    server = subprocess.Popen(
        [PHP, "-n", "-S", f"127.0.0.1:{port}", str(HARNESS)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "php -S did not start"
                time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.terminate()
        server.wait(timeout=10)


def checkout(shop: httpx.Client, hook: str, cookie: bytes | None) -> list[dict[str, Any]]:
    """The order's meta_data as saved at checkout, the request carrying this Cookie header."""
    response = shop.get("/", params={"hook": hook}, headers={b"Cookie": cookie} if cookie is not None else {})
    assert response.status_code == 200, response.text
    meta: list[dict[str, Any]] = response.json()["meta_data"]
    return meta


def clicks_meta(meta: list[dict[str, Any]]) -> str | None:
    values = [entry["value"] for entry in meta if entry["key"] == "neuroon_clicks"]
    assert len(values) <= 1
    assert all(entry == EXISTING_META for entry in meta if entry["key"] != "neuroon_clicks")
    return values[0] if values else None


def gateway_reads(meta: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """What the gateway makes of the order: the clicks it reads, and the lines it attributes."""
    payload = woocommerce_order()
    payload["meta_data"] = meta
    order = parse_woocommerce(payload, "order.updated", "sku")
    conversion = decide(order).conversion
    attributed = {} if conversion is None else {i.product_id: i.search_log_id for i in conversion.conversions}
    return dict(order.clicks[0]), attributed


@needs_php
@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("url_encoded", [False, True], ids=["json", "url-encoded"])
def test_the_cookie_becomes_the_meta_the_gateway_reads(
    shop: httpx.Client, hook: str, url_encoded: bool
) -> None:
    cookie = clicks_cookie(CLICKS, url_encoded=url_encoded)
    meta = checkout(shop, hook, f"woocommerce_cart_hash=abc; neuroon_clicks={cookie}".encode())
    # PHP has URL-decoded the value: the meta is the JSON either way.
    assert clicks_meta(meta) == json.dumps(CLICKS, separators=(",", ":"))
    assert gateway_reads(meta) == (CLICKS, CLICKS)


@needs_php
@pytest.mark.parametrize("hook", HOOKS)
def test_slashes_and_quotes_come_through_unchanged(shop: httpx.Client, hook: str) -> None:
    # WordPress adds slashes to $_COOKIE; wp_unslash must take exactly those away again.
    clicks = {**CLICKS, "Q\"\\'": "log_\\q"}
    cookie = json.dumps(clicks, separators=(",", ":"))
    meta = checkout(shop, hook, f"neuroon_clicks={cookie}".encode())
    assert clicks_meta(meta) == cookie
    assert gateway_reads(meta) == (clicks, CLICKS)


def long_clicks(pad: int) -> dict[str, str]:
    """The order's clicks first, then a pad shifting what follows by one byte per unit, then enough
    multibyte keys (2-, 3- and 4-byte characters) to pass 4096 bytes."""
    fill = {f"Ü€𝄞-{i:03d}": f"log_{i:03d}" for i in range(200)}
    return {**CLICKS, "pad": "p" * pad, **fill}


@needs_php
@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("url_encoded", [False, True], ids=["json", "url-encoded"])
def test_a_cookie_cut_at_4096_bytes_keeps_its_complete_pairs(
    shop: httpx.Client, hook: str, url_encoded: bool
) -> None:
    # A filler pair is under 30 bytes: 30 pads put the cut at every offset within a pair, a
    # character and a %XX escape.
    for pad in range(1, 31):
        clicks = long_clicks(pad)
        whole = clicks_cookie(clicks, url_encoded=url_encoded).encode()
        # As the browser sends it (cut to 4096 bytes), and longer (a client sends what it likes).
        for cookie in (whole[:COOKIE_LIMIT], whole):
            meta = checkout(shop, hook, b"neuroon_clicks=" + cookie)
            value = clicks_meta(meta)
            assert value is not None, (pad, len(cookie))
            # PHP's decoding (rawurldecode: "+" stays), then at most 4096 bytes, less a split character
            # (up to 3 bytes) and a split %XX escape after it (2).
            kept = (unquote_to_bytes(cookie) if url_encoded else cookie)[:COOKIE_LIMIT]
            assert kept.startswith(value.encode()), (pad, len(cookie))
            assert len(kept) - len(value.encode()) <= 5, (pad, len(cookie))
            complete = {k: v for k, v in clicks.items() if clicks_cookie({k: v})[1:-1].encode() in kept}
            assert gateway_reads(meta) == (complete, CLICKS), (pad, len(cookie))


@needs_php
@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize(
    "cookie",
    [None, b"", b"woocommerce_cart_hash=abc", b"neuroon_clicks=", b"neuroon_clicks=; other=1"],
    ids=["no-header", "empty-header", "other-cookie", "empty-value", "empty-value-then-other"],
)
def test_without_the_cookie_no_meta_is_written(shop: httpx.Client, hook: str, cookie: bytes | None) -> None:
    meta = checkout(shop, hook, cookie)
    assert meta == [EXISTING_META]
    assert gateway_reads(meta) == ({}, {})


@needs_php
@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize(
    "cookie",
    [
        b"neuroon_clicks[]=x",  # PHP makes $_COOKIE['neuroon_clicks'] an array
        b"neuroon_clicks[a][b]=%7B%7D; neuroon_clicks=y",
        b"neuroon_clicks=%FF%FE%FD",  # not UTF-8
        b"neuroon_clicks=%C0%AF%7B%22HOODIE-M%22%3A%22log_h%22%7D",  # an overlong "/" first
        b"neuroon_clicks=\xff" + clicks_cookie(CLICKS).encode(),
        b"neuroon_clicks=%00%0D%0A%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        b"neuroon_clicks=" + b"{" * 10000,
        b"neuroon_clicks=" + b"%5C" * 5000,  # backslashes, doubled by WordPress
        b'neuroon_clicks={"HOODIE-M":["log_h"],"CAP-1":{"a":1}}',
        b"neuroon_clicks=O%3A8%3A%22stdClass%22%3A0%3A%7B%7D",  # PHP serialization is just text here
    ],
    ids=[
        "array", "nested-array", "invalid-utf8", "overlong-utf8", "invalid-byte-then-json",
        "control-characters", "braces", "backslashes", "wrong-types", "serialized-object",
    ],
)  # fmt: skip
def test_a_hostile_cookie_breaks_nothing(shop: httpx.Client, hook: str, cookie: bytes) -> None:
    meta = checkout(shop, hook, cookie)  # no error, warning or notice: the checkout goes on
    value = clicks_meta(meta)
    # Stored, it is text WordPress accepts, within the limit.
    assert value is None or (isinstance(value, str) and 0 < len(value.encode()) <= COOKIE_LIMIT)
    assert gateway_reads(meta) == ({}, {})
