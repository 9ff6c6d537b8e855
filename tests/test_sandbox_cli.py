"""`neuroon-gateway sandbox` and demo mode: the sandbox beside the gateway, the gateway pointed at it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from app.cli import DEMO_SHOP_ID, _banner, _dev_environment, _start_demo_sandbox
from app.embedded_redis import free_port
from app.main import create_app
from app.settings import load_settings
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL


def test_demo_mode_starts_the_sandbox_and_points_the_gateway_at_it(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "var"))
    base = load_settings()
    with _dev_environment(base, "127.0.0.1", port) as settings:
        assert settings.demo
        assert settings.neuroon_api_url.startswith("http://127.0.0.1:")  # port + 1 unless it is taken
        banner = _banner(settings, "127.0.0.1", port, embedded_redis=False)
        assert "Ctrl-C stops the gateway and the sandbox." in banner
        assert f"{settings.neuroon_api_url}/api/widget/search" in banner
        assert f"{settings.neuroon_api_url}/_sandbox/shops/{DEMO_SHOP_ID}/conversions" in banner
        key = (tmp_path / "var" / "demo-shop.key").read_text().strip()
        assert key not in banner
        with TestClient(create_app(settings)) as client:
            state = client.app_state["gateway"]
            assert client.portal is not None
            info = client.portal.call(state.neuroon.shop_info, state.shops.single)
            token = client.get("/v1/widget-token").json()["token"]
        assert info.id == DEMO_SHOP_ID
        search = httpx.get(
            f"{settings.neuroon_api_url}/api/widget/search",
            params={"q": "shoe"},
            headers={"X-Widget-Token": token},
        )
        assert search.status_code == 200
        assert search.json()["products"]
    with pytest.raises(httpx.ConnectError):  # stopped with the gateway
        httpx.get(f"{settings.neuroon_api_url}/_sandbox/state")


def test_demo_sandbox_falls_back_to_a_free_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        server = _start_demo_sandbox(DEMO_SHOP_ID, CANARY_KEY, SHOP_URL, "127.0.0.1", busy)
        try:
            assert server.url != f"http://127.0.0.1:{busy}"
            assert httpx.get(f"{server.url}/_sandbox/state").json()["shops"] == [DEMO_SHOP_ID]
        finally:
            server.stop()


def test_sandbox_command_serves_shops_from_a_toml_file(tmp_path: Path) -> None:
    key_file = tmp_path / "shop.key"
    key_file.write_text(CANARY_KEY + "\n")
    shops = tmp_path / "shops.toml"
    shops.write_text(f'[[shops]]\nid = "{SHOP_ID}"\nkey_file = "{key_file}"\nshop_url = "{SHOP_URL}"\n')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEUROON_", "GATEWAY_"))}
    command = [sys.executable, "-m", "app.cli", "sandbox", "--port", str(port), "--shops-file", str(shops)]
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/_sandbox/state").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        me = httpx.get(f"{url}/api/plugin/shops/me", headers={"X-Shop-API-Key": CANARY_KEY})
        assert me.json()["id"] == SHOP_ID
        assert httpx.get(f"{url}/api/plugin/shops/me").status_code == 401
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert CANARY_KEY not in stderr
    assert SHOP_ID in stderr


def test_sandbox_command_refuses_a_bad_shops_file(tmp_path: Path) -> None:
    shops = tmp_path / "shops.toml"
    shops.write_text('[[shops]]\nid = "shop_x"\nkey = "sk_not_a_key"\n')
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "sandbox", "--shops-file", str(shops)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "sk_not_a_key" not in result.stderr
    assert "shops[0]" in result.stderr
