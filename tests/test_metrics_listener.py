"""The metrics listener (issue 10 item 10, issue 11 item 4): /metrics off the API's listener when
GATEWAY_METRICS_ADDRESS is set, and the `worker` process's /metrics, /livez and /readyz, bound to
loopback unless told otherwise."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.embedded_redis import free_port
from app.main import create_app
from app.settings import ConfigError, load_settings
from tests.conftest import CANARY_KEY, SHOP_ID, SettingsFactory
from tests.support import GATEWAY, clean_env, run_command


def test_with_a_metrics_address_metrics_are_served_there_only(make_settings: SettingsFactory) -> None:
    port = free_port()
    settings = make_settings(gateway_metrics_address=f"127.0.0.1:{port}", gateway_run_worker=False)
    with TestClient(create_app(settings)) as client:
        client.get("/v1/widget-token")  # something to count
        public = client.get("/metrics")
        assert public.status_code == 404
        assert "neuroon_gateway_" not in public.text
        assert SHOP_ID not in public.text
        listener = f"http://127.0.0.1:{port}"
        scraped = httpx.get(listener + "/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        assert f'neuroon_gateway_widget_tokens_served_total{{shop="{SHOP_ID}"' in scraped.text
        assert httpx.get(listener + "/livez").json() == {"status": "ok"}
        assert httpx.get(listener + "/readyz").json() == {"status": "ok", "redis": "up"}
        other = httpx.get(listener + "/v1/widget-token")
        assert other.status_code == 404
        assert other.json()["error"] == "not_found"
    with pytest.raises(httpx.ConnectError):  # closed with the app
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1)


def test_without_a_metrics_address_the_api_serves_metrics(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("value", ["9100", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", "a b:1", ":9100"])
def test_a_malformed_metrics_address_names_the_variable(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_METRICS_ADDRESS", value)
    with pytest.raises(ConfigError, match="GATEWAY_METRICS_ADDRESS"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    ("value", "parsed"), [("0.0.0.0:9100", ("0.0.0.0", 9100)), ("[::1]:9100", ("::1", 9100))]
)
def test_metrics_addresses(value: str, parsed: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_METRICS_ADDRESS", value)
    assert load_settings(_env_file=None).metrics_listen == parsed


def _listening_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port`` (Linux /proc/net/tcp: hex address, state 0A = LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


@contextlib.contextmanager
def _worker(redis_url: str, tmp_path: Path, *args: str) -> Iterator[str]:
    port = free_port()
    env = clean_env(NEUROON_SHOP_ID=SHOP_ID, NEUROON_API_KEY=CANARY_KEY, REDIS_URL=redis_url)
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [GATEWAY, "worker", "--metrics-port", str(port), *args], env=env, stdout=log, stderr=log, cwd=tmp_path
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/livez", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the worker's listener did not come up"
            time.sleep(0.1)
        yield url
        assert _listening_addresses(port) <= {"127.0.0.1"}  # never 0.0.0.0 unless asked for
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
def test_worker_serves_metrics_and_probes_on_loopback(
    redis_url: str, redis_client: object, tmp_path: Path
) -> None:
    with _worker(redis_url, tmp_path) as url:
        assert httpx.get(url + "/readyz").json() == {"status": "ok", "redis": "up"}
        scraped = httpx.get(url + "/metrics")
        assert scraped.status_code == 200
        assert "neuroon_gateway_" in scraped.text


def test_worker_readiness_fails_while_redis_is_unreachable(tmp_path: Path) -> None:
    with _worker(f"redis://127.0.0.1:{free_port()}/0", tmp_path) as url:
        response = httpx.get(url + "/readyz", timeout=5)
        assert response.status_code == 503
        assert response.json()["error"] == "not_ready"
        assert httpx.get(url + "/livez").status_code == 200  # alive: not to be restarted for it


def test_a_taken_metrics_port_stops_the_worker_naming_the_option(
    redis_url: str, redis_client: object, tmp_path: Path
) -> None:
    with _worker(redis_url, tmp_path) as url:
        port = url.rsplit(":", 1)[1]
        env = {"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": CANARY_KEY, "REDIS_URL": redis_url}
        result = run_command(["worker", "--metrics-port", port], env, tmp_path)
    assert result.returncode == 2
    assert "--metrics-port" in result.stderr
