"""Running the real `neuroon-gateway` command as a separate process, as an operator would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.embedded_redis import free_port

GATEWAY = str(Path(sys.executable).parent / "neuroon-gateway")


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[str]
    base_url: str
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text()


def clean_env(**env: str) -> dict[str, str]:
    """The process environment without any gateway configuration of the developer's, plus ``env``."""
    prefixes = ("NEUROON_", "GATEWAY_", "SHOPIFY_", "WOOCOMMERCE_", "REDIS_URL")
    base = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return base | env


@contextlib.contextmanager
def run_gateway(
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    *,
    startup_timeout: float = 30.0,
    stop_signal: signal.Signals = signal.SIGINT,
    gateway: str = GATEWAY,
) -> Iterator[GatewayProcess]:
    port = free_port()
    log_path = cwd / f"gateway-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [gateway, *args, "--port", str(port)],
            env=clean_env(**env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    running = GatewayProcess(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"gateway exited with {proc.returncode}:\n{running.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(running.base_url + "/livez", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway did not start:\n{running.output()}")
            time.sleep(0.1)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(stop_signal)  # SIGINT is what Ctrl-C sends; SIGTERM what Docker sends
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
