"""Running the real `neuroon-gateway` command as a separate process, as an operator would."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def run_command(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """One `neuroon-gateway` command to its end, with only ``env`` for configuration."""
    return subprocess.run(
        [GATEWAY, *args], env=clean_env(**env), cwd=cwd, capture_output=True, text=True, timeout=60
    )


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


class LatencyProxy:
    """A TCP proxy to ``upstream`` that holds each chunk from the client for ``delay`` seconds:
    a slow Redis (or a slow network to it), as every command sees it. Threads, so it runs beside
    any event loop; ``delay`` may be changed while it runs."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.delay = delay
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = [self._listener]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, delayed: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if delayed and self.delay:
                    time.sleep(self.delay)
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


def cli_params(args: list[str]) -> dict[str, Any]:
    """The parameters the real `neuroon-gateway` CLI parses from ``args`` (a subcommand path, then its
    options and arguments), without running anything; raises on an unknown command or option."""
    from typer.main import get_command

    from app.cli import cli

    command: Any = get_command(cli)  # typer's own click: duck-typed
    ctx = command.make_context("neuroon-gateway", ["--help"], resilient_parsing=True)
    rest = list(args)
    while hasattr(command, "get_command"):
        name = rest.pop(0)
        command = command.get_command(ctx, name)
        if command is None:
            raise AssertionError(f"no such command: {name}")
    params: dict[str, Any] = command.make_context(args[0], rest).params
    return params
