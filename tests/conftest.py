"""Shared fixtures: a real Redis-protocol server for the session, settings isolated from the
developer's environment, and the real app behind TestClient (as a context manager, so the
lifespan runs)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from app.embedded_redis import EmbeddedRedis
from app.main import create_app
from app.settings import Settings

_ENV_PREFIXES = ("NEUROON_", "GATEWAY_", "SHOPIFY_", "WOOCOMMERCE_", "REDIS_URL")
# Captured before the autouse fixture below scrubs the environment of every test.
_GIVEN_REDIS_URL = os.environ.get("REDIS_URL")

# A canary: a real-looking key generated per run, searched for in every output by the secret tests.
CANARY_KEY = f"sk_{secrets.token_hex(16)}"
SHOP_ID = "shop_test"
SHOP_URL = "https://shop.example"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL when given (its ngw:* keys are wiped!), else a server of our own for the session."""
    if _GIVEN_REDIS_URL:
        yield _GIVEN_REDIS_URL
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match="ngw:*", count=1000):
        client.delete(key)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see the developer's configuration, nor a .env file in the checkout."""
    for name in list(os.environ):
        if name.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(redis_url: str, redis_client: redis.Redis) -> SettingsFactory:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "neuroon_shop_id": SHOP_ID,
            "neuroon_api_key": CANARY_KEY,
            "neuroon_shop_url": SHOP_URL,
            "redis_url": redis_url,
        }
        values.update(overrides)
        return Settings(_env_file=None, **{k: v for k, v in values.items() if v is not None})

    return build


@pytest.fixture
def client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as test_client:
        yield test_client
