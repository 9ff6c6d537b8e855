"""The Shop API Key and every other secret never appear in responses, logs, metrics or errors."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from app import logging as app_logging
from app.logging import JsonFormatter, redact_secrets, url_secrets
from tests.conftest import CANARY_KEY, SHOP_ID
from tests.support import run_gateway

WEBHOOK_CANARY = "whsec_Y2FuYXJ5LXdlYmhvb2stc2VjcmV0LTEyMzQ1"
ADMIN_CANARY = "admin-canary-secret-6f1d2c-9b8a7e6d5c4b"  # HS256 keys need >= 32 bytes
ROTATED_KEY = "sk_" + "9e" * 16


def test_no_secret_in_any_response_or_log_line(redis_url: str, redis_client: object, tmp_path: Path) -> None:
    key_file = tmp_path / "api.key"
    key_file.write_text(CANARY_KEY)
    env = {
        "NEUROON_SHOP_ID": SHOP_ID,
        "NEUROON_API_KEY_FILE": str(key_file),
        "NEUROON_SHOP_URL": "https://shop.example",
        "REDIS_URL": redis_url,
        "SHOPIFY_WEBHOOK_SECRET": WEBHOOK_CANARY,
        "GATEWAY_WEBHOOK_SECRET": WEBHOOK_CANARY,
        "GATEWAY_ADMIN_JWT_SECRET": ADMIN_CANARY,
        "GATEWAY_TOKEN_RATE_LIMIT": "8",
        "GATEWAY_KEY_RELOAD_INTERVAL": "0.1",
    }
    seen: list[str] = []
    with run_gateway(["serve"], env, tmp_path) as gateway:
        with httpx.Client(base_url=gateway.base_url) as http:
            requests = [
                ("GET", "/v1/widget-token", {}),
                ("GET", "/v1/widget-token", {"Origin": "https://shop.example"}),
                ("GET", "/v1/widget-token", {"Origin": "https://evil.example"}),
                ("GET", "/v1/widget-token?shopId=" + "x" * 300, {}),
                ("OPTIONS", "/v1/widget-token", {"Origin": "https://shop.example"}),
                ("POST", "/v1/widget-token", {}),
                ("GET", "/nowhere", {}),
                ("GET", "/readyz", {}),
                ("GET", "/openapi.json", {}),
            ] + [("GET", "/v1/widget-token", {})] * 8
            for method, path, headers in requests:
                response = http.request(method, path, headers=headers)
                seen.append(str(response.headers) + response.text)
            key_file.write_text("sk_not-a-valid-key-" + CANARY_KEY)  # a botched rotation
            time.sleep(0.5)
            key_file.write_text(ROTATED_KEY)  # a real one
            time.sleep(0.5)
            seen.append(http.get("/metrics").text)
        logs = gateway.output()
    assert "api_key_reload_failed" in logs
    assert "api_key_rotated" in logs
    everything = "\n".join([*seen, logs])
    for secret in (CANARY_KEY, CANARY_KEY[3:], WEBHOOK_CANARY, ADMIN_CANARY, ROTATED_KEY):
        assert secret not in everything


def test_a_careless_log_call_is_redacted() -> None:
    redact_secrets([CANARY_KEY])
    record = logging.LogRecord("app", logging.ERROR, __file__, 1, "calling with %s", (CANARY_KEY,), None)
    record.header = {"X-Shop-API-Key": CANARY_KEY}
    line = JsonFormatter().format(record)
    assert CANARY_KEY not in line
    assert "[redacted]" in line


@pytest.fixture
def fresh_redactor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short secrets registered here must not redact other tests' log lines."""
    monkeypatch.setattr(app_logging, "_redactor", app_logging._Redactor())


def _json_lines(secret: str) -> list[str]:
    """Log the secret every way a careless call could, through the real JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test_redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("connecting with %s", secret)
        logger.error("config", extra={"url": f"redis://:{secret}@h:6379/0", "nested": {"k": [secret]}})
        try:
            raise ValueError(f"bad password {secret!r}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().splitlines()


@pytest.mark.usefixtures("fresh_redactor")
@pytest.mark.parametrize("secret", ["pw7", 'p"q\\r', 'ab"cd', "x\\y"])
def test_short_secrets_and_secrets_with_quotes_or_backslashes_are_redacted_in_json_logs(secret: str) -> None:
    redact_secrets([secret])
    lines = _json_lines(secret)
    assert len(lines) == 3
    escaped = json.dumps(secret)[1:-1]  # how the secret reads inside a JSON string
    for line in lines:
        parsed = json.loads(line)  # still one JSON object per line
        assert secret not in line
        assert escaped not in line
        assert secret not in json.dumps(parsed, ensure_ascii=False)
        assert "[redacted]" in line


@pytest.mark.usefixtures("fresh_redactor")
def test_the_password_of_a_redis_url_is_redacted_on_its_own() -> None:
    redact_secrets(url_secrets("redis://user:s%40fe@redis.internal:6379/0"))
    lines = _json_lines("s@fe")
    assert all("s@fe" not in line and "s%40fe" not in line for line in lines)
