"""The widget-token format, checked against known answers and a validator written like Neuroon's."""

from __future__ import annotations

import base64

import pytest

from app.neuroon.signing import InvalidWidgetToken, sign_widget_token, verify_widget_token

# neuroon-api.md §2.1, worked example.
EXAMPLE_KEY = "sk_0123456789abcdef0123456789abcdef"
EXAMPLE_TOKEN = (
    "c2hvcF9hYmNkOjE3MTUwMDAwMDA6ZjMyOThhNTJhOTRmY2I5YzZiOTE1ZTY2MTJmZjE2OTgy"
    "YzQwYmNmZWMwYWFiYzAwNjdmNzZjNDBmOGJlZmJhZg"
)
EXAMPLE_SIGNATURE = "f3298a52a94fcb9c6b915e6612ff16982c40bcfec0aabc0067f76c40f8befbaf"


def test_signing_matches_the_worked_example() -> None:
    assert sign_widget_token("shop_abcd", EXAMPLE_KEY, 1715000000) == EXAMPLE_TOKEN


def test_token_decodes_to_shop_timestamp_and_hex_signature() -> None:
    raw = base64.urlsafe_b64decode(EXAMPLE_TOKEN + "==").decode()
    assert raw == f"shop_abcd:1715000000:{EXAMPLE_SIGNATURE}"
    assert len(raw) == 85


def test_token_is_url_safe_without_padding() -> None:
    for ts in range(1715000000, 1715000040):
        token = sign_widget_token("shop_abc", EXAMPLE_KEY, ts)
        assert not set("=+/") & set(token)


def test_validator_accepts_our_token_within_24_hours() -> None:
    assert verify_widget_token(EXAMPLE_TOKEN, "shop_abcd", EXAMPLE_KEY, now=1715000000 + 86_400) == 1715000000


def test_validator_accepts_standard_base64_as_neuroon_does() -> None:
    standard = base64.b64encode(f"shop_abcd:1715000000:{EXAMPLE_SIGNATURE}".encode()).decode()
    assert standard.endswith("==")
    assert verify_widget_token(standard, "shop_abcd", EXAMPLE_KEY, now=1715000100) == 1715000000


@pytest.mark.parametrize(
    ("token", "shop", "key", "now", "reason"),
    [
        (EXAMPLE_TOKEN, "shop_abcd", EXAMPLE_KEY, 1715000000 + 86_401, "expired"),
        (EXAMPLE_TOKEN, "shop_abcd", EXAMPLE_KEY, 1715000000 - 3600, "future"),
        (EXAMPLE_TOKEN, "shop_other", EXAMPLE_KEY, 1715000100, "another shop"),
        (EXAMPLE_TOKEN, "shop_abcd", "sk_" + "f" * 32, 1715000100, "signature"),
        ("not base64!", "shop_abcd", EXAMPLE_KEY, 1715000100, "Base64"),
        (base64.b64encode(b"shop_abcd-no-colons").decode(), "shop_abcd", EXAMPLE_KEY, 1715000100, "shopId"),
    ],
)
def test_validator_rejects_bad_tokens(token: str, shop: str, key: str, now: int, reason: str) -> None:
    with pytest.raises(InvalidWidgetToken, match=reason):
        verify_widget_token(token, shop, key, now=now)


def test_tampered_timestamp_is_rejected() -> None:
    raw = base64.urlsafe_b64decode(EXAMPLE_TOKEN + "==").decode().replace("1715000000", "1715000001")
    forged = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    with pytest.raises(InvalidWidgetToken, match="signature"):
        verify_widget_token(forged, "shop_abcd", EXAMPLE_KEY, now=1715000100)
