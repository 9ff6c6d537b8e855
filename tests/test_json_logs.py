"""With GATEWAY_LOG_FORMAT=json every line the real processes write, on stdout and on stderr, is one
JSON object: the start-up banner, a configuration error and a crash included (interface.md §3.5)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.embedded_redis import free_port
from tests.conftest import CANARY_KEY, SHOP_ID
from tests.support import GATEWAY, clean_env, run_command


def _objects(text: str, stream: str) -> list[dict[str, Any]]:
    objects = []
    for line in text.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"a line on {stream} is not JSON: {line!r}") from None
        assert isinstance(parsed, dict), f"a line on {stream} is not a JSON object: {line!r}"
        objects.append(parsed)
    return objects


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    out, err = (tmp_path / "stdout").open("w"), (tmp_path / "stderr").open("w")
    proc = subprocess.Popen(
        [GATEWAY, *args], env=clean_env(**env), cwd=tmp_path, stdout=out, stderr=err, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()
        err.close()


def _wait_until_up(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, "the process exited"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/livez", timeout=1).status_code == 200:
                return
        assert time.monotonic() < deadline, "the process did not come up"
        time.sleep(0.1)


def _streams(tmp_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return (
        _objects((tmp_path / "stdout").read_text(), "stdout"),
        _objects((tmp_path / "stderr").read_text(), "stderr"),
    )


@pytest.mark.parametrize("fmt", [{"GATEWAY_LOG_FORMAT": "json"}, {}])  # json is the default
def test_serve_writes_only_json_lines(
    fmt: dict[str, str], redis_url: str, redis_client: object, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        "NEUROON_SHOP_ID": SHOP_ID,
        "NEUROON_API_KEY": CANARY_KEY,
        "REDIS_URL": redis_url,
        "GATEWAY_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
    } | fmt
    with _process(["serve", "--port", str(port)], env, tmp_path) as proc:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, proc)
        httpx.get(url + "/v1/widget-token")
        httpx.post(url + "/v1/webhooks/shopify", content=b"{")
        httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert proc.returncode == 0
    stdout, stderr = _streams(tmp_path)
    events = [o["event"] for o in stdout + stderr]
    assert "gateway_starting" in events  # the banner's facts, as an event
    assert "metrics_listener_started" in events
    assert "request" in events
    assert not any("neuroon-gateway is serving" in json.dumps(o) for o in stdout + stderr)


def test_worker_writes_only_json_lines(redis_url: str, redis_client: object, tmp_path: Path) -> None:
    port = free_port()
    env = {"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": CANARY_KEY, "REDIS_URL": redis_url}
    with _process(["worker", "--metrics-port", str(port)], env, tmp_path) as proc:
        _wait_until_up(f"http://127.0.0.1:{port}", proc)
    assert proc.returncode == 0
    stdout, stderr = _streams(tmp_path)
    assert "worker_started" in [o["event"] for o in stdout + stderr]


@pytest.mark.parametrize("command", [["serve"], ["worker"], ["sandbox"]])
def test_a_configuration_error_is_a_json_line_too(command: list[str], tmp_path: Path) -> None:
    bad_key = "sk_" + "z" * 32
    env = {"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": bad_key, "REDIS_URL": "redis://127.0.0.1:1/0"}
    result = run_command(command, env, tmp_path)
    assert result.returncode == 2
    lines = _objects(result.stdout, "stdout") + _objects(result.stderr, "stderr")
    [error] = [o for o in lines if o["level"] == "error"]
    assert "NEUROON_API_KEY" in error["detail"]
    assert bad_key not in result.stdout + result.stderr


def test_a_taken_port_is_reported_as_json(redis_url: str, redis_client: object, tmp_path: Path) -> None:
    port = free_port()
    env = {"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": CANARY_KEY, "REDIS_URL": redis_url}
    with _process(["serve", "--port", str(port)], env, tmp_path / ".") as first:
        _wait_until_up(f"http://127.0.0.1:{port}", first)
        second_dir = tmp_path / "second"
        second_dir.mkdir()
        result = run_command(["serve", "--port", str(port)], env, second_dir)
    assert result.returncode != 0
    lines = _objects(result.stdout, "stdout") + _objects(result.stderr, "stderr")
    assert any(o["level"] == "error" for o in lines)
