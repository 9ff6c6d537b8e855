"""The gateway as separate processes: replicas over one Redis, and `serve --dev` as `make run` uses it."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from app.neuroon.signing import verify_widget_token
from tests.conftest import CANARY_KEY, SHOP_ID
from tests.support import GATEWAY, clean_env, run_gateway


def shop_env(redis_url: str) -> dict[str, str]:
    return {"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": CANARY_KEY, "REDIS_URL": redis_url}


def test_two_server_processes_on_one_redis_serve_the_same_token(
    redis_url: str, redis_client: object, tmp_path: Path
) -> None:
    env = shop_env(redis_url)
    with run_gateway(["serve"], env, tmp_path) as one, run_gateway(["serve"], env, tmp_path) as two:
        tokens = {
            httpx.get(p.base_url + "/v1/widget-token").json()["token"] for p in (one, two) for _ in range(3)
        }
        assert len(tokens) == 1
        verify_widget_token(tokens.pop(), SHOP_ID, CANARY_KEY, now=time.time())
        signed = 0.0
        for process in (one, two):
            for line in httpx.get(process.base_url + "/metrics").text.splitlines():
                if line.startswith("neuroon_gateway_widget_token_signatures_total{"):
                    signed += float(line.rsplit(" ", 1)[1])
        assert signed == 1


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_dev_mode_runs_a_demo_shop_on_an_embedded_redis_and_stops_it(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    env = {"GATEWAY_LOG_FORMAT": "console"}
    with run_gateway(["serve", "--dev"], env, tmp_path, stop_signal=stop_signal) as gateway:
        redis_port = int((tmp_path / "var" / "redis.url").read_text().rsplit(":", 1)[1].split("/")[0])
        assert _port_open(redis_port)
        banner = gateway.output()
        assert "DEMO MODE" in banner
        assert f"curl -s {gateway.base_url}/v1/widget-token" in banner
        body = httpx.get(gateway.base_url + "/v1/widget-token").json()
        demo_key = (tmp_path / "var" / "demo-shop.key").read_text().strip()
        verify_widget_token(body["token"], "shop_demo", demo_key, now=time.time())
        assert httpx.get(gateway.base_url + "/readyz").status_code == 200
        assert demo_key not in gateway.output()
    assert gateway.proc.returncode == 0
    assert not _port_open(redis_port), "the embedded Redis outlived the gateway"
    assert (tmp_path / "var" / "redis" / "appendonlydir").is_dir(), "AOF persistence is off"
    assert not (tmp_path / "var" / "redis.url").exists()


def test_token_command_prints_the_served_token(redis_url: str, redis_client: object, tmp_path: Path) -> None:
    env = shop_env(redis_url)
    with run_gateway(["serve"], env, tmp_path) as gateway:
        served = httpx.get(gateway.base_url + "/v1/widget-token").json()["token"]
        printed = subprocess.run(
            [GATEWAY, "token"], env=clean_env(**env), cwd=tmp_path, capture_output=True, text=True, check=True
        )
    assert printed.stdout.strip() == served


def test_bad_configuration_exits_2_naming_the_variable_not_the_secret(tmp_path: Path) -> None:
    bad_key = CANARY_KEY[:-1] + "z"
    result = subprocess.run(
        [GATEWAY, "serve"],
        env=clean_env(NEUROON_SHOP_ID=SHOP_ID, NEUROON_API_KEY=bad_key, REDIS_URL="redis://127.0.0.1:1/0"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "NEUROON_API_KEY" in result.stderr
    assert bad_key not in result.stderr + result.stdout
    assert CANARY_KEY[:-1] not in result.stderr + result.stdout
