"""Bad input is a 4xx, never a 5xx: every field of realistic payloads replaced by values of every type."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SHOP_URL
from tests.webhooks import (
    encode,
    generic_order,
    shopify_headers,
    shopify_order,
    standard_headers,
    woocommerce_headers,
    woocommerce_order,
)

ODD_VALUES: list[Any] = [
    None, True, 0, -1, 1.5, 10**30, "", "x", "1e999", "NaN", "-0", "\u0000", "é" * 300,
    [], [1], {}, {"a": {}},
]  # fmt: skip


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside a JSON document (lists: their first element only)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list) and value:
        yield (*prefix, 0)
        yield from paths(value[0], (*prefix, 0))


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    mutated = copy.deepcopy(document)
    target = mutated
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return mutated


Case = tuple[str, Any, Callable[[bytes], dict[str, str]]]
CASES: list[Case] = [
    ("/v1/webhooks/shopify", shopify_order(clicks={"SNOW-GRN-150": "log_a"}), shopify_headers),
    ("/v1/webhooks/woocommerce", woocommerce_order(clicks={"HOODIE-M": "log_h"}), woocommerce_headers),
    ("/v1/webhooks/orders", generic_order(clicks={"SKU-042": "log_b"}, cart_token="c"), standard_headers),
]


@pytest.mark.parametrize(("url", "document", "sign"), CASES, ids=["shopify", "woocommerce", "generic"])
def test_no_field_value_makes_a_5xx(
    webhook_client: TestClient, url: str, document: Any, sign: Callable[[bytes], dict[str, str]]
) -> None:
    seen = set()
    for path in paths(document):
        for value in ODD_VALUES:
            body = encode(replaced(document, path, value))
            response = webhook_client.post(url, content=body, headers=sign(body))
            # A shopId naming no shop (signed by ours) is a 404; anything else is accepted or a 400.
            allowed = (200, 400, 404) if path == ("shopId",) else (200, 400)
            assert response.status_code in allowed, (path, value, response.text)
            seen.add(response.status_code)
            if response.status_code == 400:
                assert response.json()["error"] == "malformed_payload"
    assert {200, 400} <= seen


@pytest.mark.parametrize("field", ["cartToken", "clicks"])
def test_no_attribution_value_makes_a_5xx(webhook_client: TestClient, field: str) -> None:
    for value in ODD_VALUES:
        body = {"cartToken": "cart-1", "clicks": {"A": "log_a"}} | {field: value}
        response = webhook_client.post("/v1/attribution", json=body, headers={"Origin": SHOP_URL})
        assert response.status_code in (204, 400), (field, value, response.text)
