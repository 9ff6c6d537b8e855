"""The compiled load generator: `wrk` (Debian package), driven by the Lua scripts next to this file.

On a 2-core machine a Python load generator takes the CPU the server needs, so the benchmarks use
wrk when it is on PATH (and fall back to bench/loadgen.py with a warning). Closed loop: each
connection sends its next request when the answer arrives. Open loop: requests leave on a fixed
schedule at an offered rate (bench/wrk_pace.lua), whatever the answers do.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import Server

HERE = Path(__file__).parent
THREADS = 2  # one per core: wrk's threads each run an event loop over their share of the connections


def available() -> bool:
    return shutil.which("wrk") is not None


@functools.cache  # once per run
def warn_fallback() -> None:
    print(
        "WARNING: wrk is not on PATH (Debian: apt-get install wrk); falling back to the Python load "
        "generator, which competes with the server for the CPU: throughput and p99 come out worse"
    )


def run(
    target: Server,
    path: str,
    *,
    connections: int,
    seconds: float,
    orders: Path | None = None,
    rate: float | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One wrk run against ``target``: GETs of ``path``, or (``orders``) a POST of the next pre-signed
    order per request; ``rate`` (requests/s, with ``orders``) paces it open-loop. ``seconds`` is
    rounded to whole seconds (wrk takes no fractions).

    The result has the keys of bench/loadgen.py's (requests, rps, p50_ms, p99_ms, statuses, cpu_us)
    and wrk's own: late (open loop: requests sent behind their slot), wrapped (orders reused)."""
    parts = [HERE / "wrk_report.lua"]
    args: list[str] = []
    if orders is not None:
        parts.append(HERE / "wrk_orders.lua")
        args = [str(orders), str(THREADS), path]
        if rate is not None:
            parts.append(HERE / "wrk_pace.lua")
            args.append(f"{rate:.1f}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write("\n".join(p.read_text() for p in parts))
        script.flush()
        argv = [
            "wrk",
            "-t",
            str(THREADS),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "5s",
        ]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        argv += ["-s", script.name, target.url + path, *args]
        cpu_before = target.cpu_seconds()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
        out = done.stdout
        cpu = target.cpu_seconds() - cpu_before
    line = next(x for x in out.splitlines() if x.startswith("WRK_RESULT "))
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    requests = raw["requests"]
    statuses = {"2xx/3xx": requests - raw["non_2xx"]}
    if raw["non_2xx"]:
        statuses[">=400"] = raw["non_2xx"]
    if raw["socket_errors"]:
        statuses["socket errors"] = raw["socket_errors"]
    return {
        "requests": requests,
        "rps": requests / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "statuses": statuses,
        "cpu_us": cpu / max(1, requests) * 1e6,
        "late": raw["late"],
        "wrapped": raw["wrapped"],
    }
