"""Webhook signature schemes: known-answer vectors and one test per failure mode."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from app.conversions.signatures import (
    InvalidSignature,
    hmac_base64,
    sign_standard_webhook,
    verify_hmac_base64,
    verify_standard_webhook,
)

# order-webhooks.md §10 (self-computed) and §9 (published by standard-webhooks).
KA_BODY = b'{"id":1001,"total_price":"49.00","currency":"EUR"}'
KA_SECRET = "test_secret_123"
KA_BASE64 = "IiSVrsz8RP6pQHhNTdOPiJUud3hIVWrHRvqWxitDoY4="
KA_STANDARD_SECRET = "whsec_dGVzdF9zZWNyZXRfMTIz"
KA_STANDARD = "v1,QmnUMCRFRXAbilkD1scJ70HmHSAhUD50SB7JGu8Z7LM="
PUBLISHED_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PUBLISHED_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
PUBLISHED_TS = 1614265330
PUBLISHED_BODY = b'{"test": 2432232314}'
PUBLISHED_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _secrets(*values: str) -> tuple[SecretStr, ...]:
    return tuple(SecretStr(v) for v in values)


def test_shopify_and_woocommerce_known_answer() -> None:
    assert len(KA_BODY) == 50
    assert hmac_base64(KA_SECRET.encode(), KA_BODY) == KA_BASE64
    verify_hmac_base64(KA_BODY, KA_BASE64, _secrets(KA_SECRET))


def test_standard_webhooks_known_answers() -> None:
    assert sign_standard_webhook(KA_STANDARD_SECRET, "msg_test_1", 1700000000, KA_BODY) == KA_STANDARD
    assert (
        sign_standard_webhook(PUBLISHED_SECRET, PUBLISHED_ID, PUBLISHED_TS, PUBLISHED_BODY)
        == PUBLISHED_SIGNATURE
    )


def test_published_standard_webhooks_vector_verifies_at_its_time() -> None:
    verify_standard_webhook(
        PUBLISHED_BODY,
        PUBLISHED_ID,
        str(PUBLISHED_TS),
        PUBLISHED_SIGNATURE,
        _secrets(PUBLISHED_SECRET),
        now=PUBLISHED_TS + 10,
        tolerance=300,
    )


def test_any_of_several_secrets_is_accepted_for_rotation() -> None:
    verify_hmac_base64(KA_BODY, KA_BASE64, _secrets("new_secret_456", KA_SECRET))
    verify_standard_webhook(
        PUBLISHED_BODY,
        PUBLISHED_ID,
        str(PUBLISHED_TS),
        PUBLISHED_SIGNATURE,
        _secrets("whsec_" + base64.b64encode(b"another key of ours").decode(), PUBLISHED_SECRET),
        now=PUBLISHED_TS,
        tolerance=300,
    )


@pytest.mark.parametrize(
    ("header", "secrets", "reason"),
    [
        (None, (KA_SECRET,), "missing"),
        ("", (KA_SECRET,), "missing"),
        ("not base64 at all!", (KA_SECRET,), "not base64"),
        ("IiSVrsz8RP6pQHhNTdOPiJUud3hIVWrHRvqWxitDoY4", (KA_SECRET,), "not base64"),  # padding cut
        (KA_BASE64, ("another_secret",), "does not match"),
        (base64.b64encode(b"short").decode(), (KA_SECRET,), "does not match"),
        (KA_BASE64, (), "no webhook secret"),
        (KA_BASE64.encode().hex(), (KA_SECRET,), "does not match"),  # hex instead of base64
    ],
)
def test_hmac_failures_are_invalid_signature(
    header: str | None, secrets: tuple[str, ...], reason: str
) -> None:
    with pytest.raises(InvalidSignature, match=reason):
        verify_hmac_base64(KA_BODY, header, _secrets(*secrets))


def test_tampered_body_fails() -> None:
    with pytest.raises(InvalidSignature):
        verify_hmac_base64(KA_BODY.replace(b"49.00", b"4.90"), KA_BASE64, _secrets(KA_SECRET))


@pytest.mark.parametrize(
    ("msg_id", "ts", "signature", "reason"),
    [
        (None, str(PUBLISHED_TS), PUBLISHED_SIGNATURE, "required"),
        (PUBLISHED_ID, None, PUBLISHED_SIGNATURE, "required"),
        (PUBLISHED_ID, str(PUBLISHED_TS), None, "required"),
        (PUBLISHED_ID, "yesterday", PUBLISHED_SIGNATURE, "not a Unix time"),
        (PUBLISHED_ID, "-1614265330", PUBLISHED_SIGNATURE, "not a Unix time"),
        (PUBLISHED_ID, "1" * 40, PUBLISHED_SIGNATURE, "not a Unix time"),
        (PUBLISHED_ID, str(PUBLISHED_TS - 301), PUBLISHED_SIGNATURE, "tolerance"),
        (PUBLISHED_ID, str(PUBLISHED_TS + 301), PUBLISHED_SIGNATURE, "tolerance"),
        (
            PUBLISHED_ID,
            str(PUBLISHED_TS),
            "v1g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "no v1 signature",
        ),
        (PUBLISHED_ID, str(PUBLISHED_TS), "v1,!!!", "no v1 signature"),
        (PUBLISHED_ID, str(PUBLISHED_TS), "v1a," + PUBLISHED_SIGNATURE[3:], "no v1 signature"),
        (PUBLISHED_ID, str(PUBLISHED_TS), ",,, ", "no v1 signature"),
        (PUBLISHED_ID + "x", str(PUBLISHED_TS), PUBLISHED_SIGNATURE, "does not match"),
        (PUBLISHED_ID, str(PUBLISHED_TS + 1), PUBLISHED_SIGNATURE, "does not match"),
    ],
)
def test_standard_webhook_failures_are_invalid_signature(
    msg_id: str | None, ts: str | None, signature: str | None, reason: str
) -> None:
    with pytest.raises(InvalidSignature, match=reason):
        verify_standard_webhook(
            PUBLISHED_BODY,
            msg_id,
            ts,
            signature,
            _secrets(PUBLISHED_SECRET),
            now=PUBLISHED_TS,
            tolerance=300,
        )


def test_standard_webhook_accepts_one_valid_among_several_entries() -> None:
    header = f"v1,AAAA v1a,bm90IGEgc2ln garbage {PUBLISHED_SIGNATURE}"
    verify_standard_webhook(
        PUBLISHED_BODY,
        PUBLISHED_ID,
        str(PUBLISHED_TS),
        header,
        _secrets(PUBLISHED_SECRET),
        now=PUBLISHED_TS,
        tolerance=300,
    )
