"""Shared pieces of the benchmarks: servers as child processes, the load generator, reporting."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from app.embedded_redis import EmbeddedRedis, free_port

BIN = Path(sys.executable).parent
BENCH_KEY = f"sk_{secrets.token_hex(16)}"  # a throwaway key; nothing here talks to Neuroon
SHOP_ID = "shop_bench"


@contextlib.contextmanager
def redis_server(*extra_args: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as data:
        server = EmbeddedRedis(Path(data), extra_args=extra_args)
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


@contextlib.contextmanager
def redis_with_replica() -> Iterator[str]:
    """A primary (its URL) with one replica in sync, as a Sentinel deployment has."""
    with tempfile.TemporaryDirectory() as data:
        primary = EmbeddedRedis(Path(data) / "primary", extra_args=["--repl-diskless-sync-delay", "0"])
        primary.start()
        replica = EmbeddedRedis(
            Path(data) / "replica", extra_args=["--replicaof", "127.0.0.1", str(primary.port)]
        )
        try:
            replica.start()
            client = redis.Redis.from_url(replica.url)
            try:
                for _ in range(200):
                    if client.info("replication").get("master_link_status") == "up":
                        break
                    time.sleep(0.05)
                else:
                    raise RuntimeError("the replica did not sync")
            finally:
                client.close()
            yield primary.url
        finally:
            replica.stop()
            primary.stop()


@dataclass(frozen=True)
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time the server process has used: a figure that other load on the machine distorts
        far less than throughput does."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(args: list[str], env: dict[str, str] | None = None, ready_path: str = "/") -> Iterator[Server]:
    """Start a server on a free port (``{port}`` in args is replaced)."""
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in args]
    proc = subprocess.Popen(
        argv, env=os.environ | (env or {}), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + ready_path, timeout=1).status_code < 500:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode}")
            time.sleep(0.1)
        yield Server(base, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def baseline_server() -> contextlib.AbstractContextManager[Server]:
    """The bare FastAPI hello-world under uvicorn, with the same server defaults as the gateway."""
    return server(
        [
            str(BIN / "python"),
            "-m",
            "uvicorn",
            "bench.baseline:app",
            "--port",
            "{port}",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    )


def gateway_server(redis_url: str, **env: str) -> contextlib.AbstractContextManager[Server]:
    config = {
        "NEUROON_SHOP_ID": SHOP_ID,
        "NEUROON_API_KEY": BENCH_KEY,
        "REDIS_URL": redis_url,
    } | env
    return server([str(BIN / "neuroon-gateway"), "serve", "--port", "{port}"], config, "/livez")


def load(
    target: Server, path: str, *, connections: int, seconds: float, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run the load generator in its own process (it must not share the server's event loop): wrk
    when it is on PATH, else bench/loadgen.py (with a warning).

    Adds ``cpu_us``: the server's CPU time per answered request, in microseconds."""
    from bench import wrk  # it imports Server from here

    if wrk.available():
        return wrk.run(target, path, connections=connections, seconds=seconds, headers=headers)
    wrk.warn_fallback()
    url = target.url + path
    argv = [str(BIN / "python"), "-m", "bench.loadgen", url, "--connections", str(connections)]
    argv += ["--seconds", str(seconds)]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    cpu_before = target.cpu_seconds()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    cpu = target.cpu_seconds() - cpu_before
    result: dict[str, Any] = json.loads(out)
    result["cpu_us"] = cpu / max(1, result["requests"]) * 1e6
    return result


def only_successes(result: dict[str, Any]) -> bool:
    """Every answer a success (bench/loadgen.py counts each status; wrk only those of 400 and above)."""
    return bool(result["requests"]) and set(result["statuses"]) <= {"200", "2xx/3xx"}


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass(frozen=True)
class Comparison:
    """Medians of alternating rounds of (baseline, ours)."""

    throughput_ratio: float  # ours / baseline
    cpu_ratio: float  # baseline's CPU per request / ours: above 1, ours is cheaper
    p99_ms: float
    baseline_p99_ms: float
    gateway_rps: float


def compare(rounds: list[tuple[dict[str, Any], dict[str, Any]]]) -> Comparison:
    def mid(side: int, key: str) -> float:
        return median([pair[side][key] for pair in rounds])

    return Comparison(
        throughput_ratio=mid(1, "rps") / mid(0, "rps"),
        cpu_ratio=mid(0, "cpu_us") / mid(1, "cpu_us"),
        p99_ms=mid(1, "p99_ms"),
        baseline_p99_ms=mid(0, "p99_ms"),
        gateway_rps=mid(1, "rps"),
    )


def row(name: str, result: dict[str, Any]) -> str:
    return (
        f"  {name:<26} {result['rps']:>7.0f} req/s  p99 {result['p99_ms']:>6.2f} ms  "
        f"cpu {result['cpu_us']:>5.0f} us/req  statuses {result['statuses']}"
    )
