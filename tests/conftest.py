"""Shared fixtures: a real Redis-protocol server for the session, settings isolated from the
developer's environment, the real app behind TestClient (as a context manager, so the
lifespan runs), and the Neuroon sandbox in-process with the real client over it, on a fake clock."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.embedded_redis import EmbeddedRedis
from app.main import create_app
from app.neuroon.client import NeuroonClient, build_http_client
from app.sandbox import Sandbox, SandboxShop, create_sandbox
from app.settings import Settings, ShopConfig
from app.shops import Shop
from tests.redis_shapes import Cluster, OneServer, SentinelSet, make_shape, sync_client
from tests.webhooks import SHOPIFY_SECRET, STANDARD_SECRET, WOO_SECRET

_ENV_PREFIXES = ("NEUROON_", "GATEWAY_", "SHOPIFY_", "WOOCOMMERCE_", "REDIS_URL")
# Captured before the autouse fixture below scrubs the environment of every test.
_GIVEN_REDIS_URL = os.environ.get("REDIS_URL")
_REDIS_SHAPE = os.environ.get("GATEWAY_TEST_REDIS", "server")

# A canary: a real-looking key generated per run, searched for in every output by the secret tests.
CANARY_KEY = f"sk_{secrets.token_hex(16)}"
SHOP_ID = "shop_test"
SHOP_URL = "https://shop.example"


@pytest.fixture(scope="session")
def redis_shape() -> str:
    """The topology the suite runs against: GATEWAY_TEST_REDIS (server, sentinel or cluster)."""
    return _REDIS_SHAPE


@pytest.fixture(scope="session")
def redis_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneServer | SentinelSet | Cluster]:
    """The shape picked by GATEWAY_TEST_REDIS, started for the session from the embedded Valkey."""
    topology = make_shape(_REDIS_SHAPE, tmp_path_factory.mktemp("redis"))
    topology.start()
    try:
        yield topology
    finally:
        topology.stop()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """REDIS_URL when given (its ngw:* keys are wiped!), else a server (or topology) of our own."""
    if _GIVEN_REDIS_URL:
        return _GIVEN_REDIS_URL
    topology: OneServer | SentinelSet | Cluster = request.getfixturevalue("redis_topology")
    return topology.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A server of the test's own, for tests that stop, kill or fill it (never the shared one)."""
    server = EmbeddedRedis(tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hung_redis(own_redis: EmbeddedRedis) -> EmbeddedRedis:
    """Stopped with SIGSTOP: connections accepted, nothing answered (it is resumed to stop it)."""
    own_redis.pause()
    return own_redis


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A synchronous client of the same shape, with the gateway's keys wiped (on every primary)."""
    client = sync_client(redis_url)
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
def webhook_client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    """The real app with a secret for each webhook platform, without the delivery worker."""
    settings = make_settings(
        shopify_webhook_secret=SHOPIFY_SECRET,
        woocommerce_webhook_secret=WOO_SECRET,
        gateway_webhook_secret=STANDARD_SECRET,
        gateway_run_worker=False,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as test_client:
        yield test_client


# --- Neuroon: the sandbox in-process, the client over it, and time under the test's control ---------

OTHER_SHOP_ID = "shop_other"
OTHER_KEY = f"sk_{'0f' * 16}"
OTHER_SHOP_URL = "https://other.example"


class FakeClock:
    """Monotonic time that moves only when someone sleeps: retries and pacing run instantly, and the
    waits they asked for are recorded. Share one between the client and the sandbox."""

    def __init__(self, start: float = 10_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(fake_clock: FakeClock) -> Sandbox:
    """A sandbox knowing the test shop (CANARY_KEY, SHOP_URL) and another one, on the fake clock."""
    return create_sandbox(
        [SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL), SandboxShop(OTHER_SHOP_ID, OTHER_KEY, OTHER_SHOP_URL)],
        clock=fake_clock,
        sleep=fake_clock.sleep,
    )


def make_shop(shop_id: str = SHOP_ID, key: str = CANARY_KEY, shop_url: str | None = SHOP_URL) -> Shop:
    return Shop(ShopConfig(id=shop_id, api_key=SecretStr(key), shop_url=shop_url))


@pytest.fixture
def shop() -> Shop:
    return make_shop()


@pytest.fixture
async def neuroon_http(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    """The shared httpx client as the lifespan builds it, with the sandbox as its transport."""
    settings = Settings(_env_file=None, neuroon_api_url="http://neuroon.sandbox")
    async with build_http_client(settings, httpx.ASGITransport(app=sandbox.app)) as http:
        yield http


@pytest.fixture
def neuroon(neuroon_http: httpx.AsyncClient, fake_clock: FakeClock) -> NeuroonClient:
    """The real client over the in-process sandbox; backoff jitter pinned to its maximum."""
    return NeuroonClient(neuroon_http, sleep=fake_clock.sleep, clock=fake_clock, jitter=lambda high: high)


@pytest.fixture
def sandboxed_app(make_settings: SettingsFactory, sandbox: Sandbox) -> Iterator[TestClient]:
    """The gateway (real app, real Redis) with the in-process sandbox as Neuroon."""
    app = create_app(
        make_settings(neuroon_api_url="http://neuroon.sandbox"),
        neuroon_transport=httpx.ASGITransport(app=sandbox.app),
    )
    with TestClient(app) as test_client:
        yield test_client
