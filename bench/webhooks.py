"""Order webhooks: intake of signed Shopify webhooks against the bare FastAPI hello-world, and the
delivery worker's sustained throughput to a sandbox that answers in 50 ms.

Targets: intake throughput >= 0.5x the baseline with p99 <= 25 ms at 64 connections; delivery
>= 200 orders/s for one worker process. Every intake request is a distinct order (a new order id,
signed by the load generator), so each one runs the whole path: signature, parse, attribution,
the atomic dedupe + enqueue in Redis.

    python -m bench.webhooks                 # both figures
    python -m bench.webhooks loadgen URL ... # the POST load generator (used by the above)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import redis
import uvloop

from bench import wrk
from bench.harness import (
    BENCH_KEY,
    BIN,
    SHOP_ID,
    Comparison,
    Server,
    baseline_server,
    compare,
    load,
    median,
    only_successes,
    redis_server,
    redis_with_replica,
    row,
    server,
)

CONNECTIONS = 64
SECONDS = 4.0
ROUNDS = 5  # as many as the token benchmark: this machine is shared, and the median steadies
OPEN_LOOP_SHARE = 0.5  # the open-loop run offers this share of the closed-loop maximum
OPEN_LOOP_ROUNDS = 3
DURABILITY_ROUNDS = 5
WEBHOOK_PATH = "/v1/webhooks/shopify"
SECRET = secrets.token_hex(16)
DELIVERY_ORDERS = 3000
UPSTREAM_LATENCY = 0.05

# One order of a realistic shape; ORDER_ID is replaced per request.
TEMPLATE = json.dumps(
    {
        "id": "ORDER_ID",
        "financial_status": "paid",
        "currency": "EUR",
        "total_price": "186.90",
        "cart_token": "Z2NwLWV1cm9wZS13ZXN0MTowMUpKN0Y3",
        "test": False,
        "note_attributes": [
            {"name": "_neuroon_clicks", "value": '{"SNOW-GRN-150":"log_snow","WAX-01":"log_wax"}'}
        ],
        "line_items": [
            {"id": 1, "product_id": 97, "variant_id": 503, "sku": "SNOW-GRN-150", "quantity": 1,
             "price": "99.00", "discount_allocations": [{"amount": "14.10"}]},
            {"id": 2, "product_id": 98, "variant_id": 504, "sku": "WAX-01", "quantity": 2,
             "price": "50.00", "discount_allocations": []},
            {"id": 3, "product_id": 99, "variant_id": 505, "sku": "GLOVES-M", "quantity": 1,
             "price": "2.00", "discount_allocations": []},
        ],
    },
    separators=(",", ":"),
).replace('"ORDER_ID"', "{order_id}")  # fmt: skip


def signed_request(host: str, port: int, path: str, order_id: int) -> bytes:
    body = TEMPLATE.replace("{order_id}", str(order_id)).encode()
    signature = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Shopify-Topic: orders/paid\r\n"
        f"X-Shopify-Hmac-Sha256: {signature}\r\nX-Shopify-Shop-Domain: bench.myshopify.com\r\n\r\n"
    )
    return head.encode() + body


# --- the POST load generator (its own process) ----------------------------------------------


async def _connection(
    host: str,
    port: int,
    path: str,
    first_id: int,
    deadline: float,
    latencies: list[float],
    statuses: dict[int, int],
    outcomes: dict[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    order_id = first_id
    try:
        while True:
            request = signed_request(host, port, path, order_id)  # signing is outside the timing
            started = time.perf_counter()
            if started >= deadline:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length) if length else b""
            latencies.append(time.perf_counter() - started)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                outcome = orjson.loads(body)["status"]
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            order_id += 1
    finally:
        writer.close()


async def _post_load(url: str, connections: int, seconds: float) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    outcomes: dict[str, int] = {}
    run_id = int(time.time() * 1000) % 10**9
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _connection(
                host, port, parts.path, (run_id * 1000 + c) * 10**6, deadline, latencies, statuses, outcomes
            )
            for c in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan"),
        "statuses": {str(k): v for k, v in statuses.items()},
        "outcomes": outcomes,
    }


def post_load(target: Server, path: str, *, connections: int, seconds: float) -> dict[str, Any]:
    argv = [str(BIN / "python"), "-m", "bench.webhooks", "loadgen", target.url + path]
    argv += ["--connections", str(connections), "--seconds", str(seconds)]
    cpu_before = target.cpu_seconds()
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, env=os.environ | {"BENCH_SECRET": SECRET}
    )
    result: dict[str, Any] = json.loads(out.stdout)
    result["cpu_us"] = (target.cpu_seconds() - cpu_before) / max(1, result["requests"]) * 1e6
    return result


# --- the two benchmarks ------------------------------------------------------------------------


def _gateway(redis_url: str, **env: str) -> contextlib.AbstractContextManager[Server]:
    config = {
        "NEUROON_SHOP_ID": SHOP_ID,
        "NEUROON_API_KEY": BENCH_KEY,
        "REDIS_URL": redis_url,
        "SHOPIFY_WEBHOOK_SECRET": SECRET,
        "GATEWAY_LOG_FORMAT": "json",
    } | env
    return server(
        [str(BIN / "neuroon-gateway"), "serve", "--port", "{port}", "--no-worker"], config, "/livez"
    )


_next_order_id = (int(time.time()) % 10**6) * 10**7  # distinct from any earlier run's orders


def write_orders(directory: Path, count: int) -> Path:
    """``count`` new signed orders, one ``signature<TAB>body`` line each (bench/wrk_orders.lua)."""
    global _next_order_id
    path = directory / f"orders-{_next_order_id}.tsv"
    key = SECRET.encode()
    with path.open("w") as out:
        for order_id in range(_next_order_id, _next_order_id + count):
            body = TEMPLATE.replace("{order_id}", str(order_id))
            signature = base64.b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()).decode()
            out.write(f"{signature}\t{body}\n")
    _next_order_id += count
    return path


def wrk_post(
    gateway: Server, redis_url: str, *, expected_rps: float, rate: float | None = None
) -> dict[str, Any]:
    """One wrk run of new signed orders; checks that every answer was 2xx and every order accepted
    (the queue grew by at least the answers counted: the gateway runs without a worker)."""
    offered = rate if rate is not None else max(expected_rps, 5000.0) * 1.5
    from app.store.conversions import pending_key

    client = redis.Redis.from_url(redis_url)
    try:
        with tempfile.TemporaryDirectory() as directory:
            orders = write_orders(Path(directory), int(offered * SECONDS) + 4 * CONNECTIONS)
            before = int(client.zcard(pending_key(SHOP_ID)))
            result = wrk.run(
                gateway, WEBHOOK_PATH, connections=CONNECTIONS, seconds=SECONDS, orders=orders, rate=rate
            )
            accepted = int(client.zcard(pending_key(SHOP_ID))) - before
    finally:
        client.close()
    assert result["wrapped"] == 0, "the run ran out of pre-signed orders"
    assert only_successes(result), result["statuses"]
    assert accepted >= result["requests"], (accepted, result["requests"])
    return result


Poster = Callable[[Server, str, float], dict[str, Any]]


def _poster() -> Poster:
    if wrk.available():
        return lambda gateway, redis_url, expected: wrk_post(gateway, redis_url, expected_rps=expected)

    wrk.warn_fallback()

    def python_post(gateway: Server, _: str, __: float) -> dict[str, Any]:
        result = post_load(gateway, WEBHOOK_PATH, connections=CONNECTIONS, seconds=SECONDS)
        assert only_successes(result), result["statuses"]
        assert set(result["outcomes"]) == {"accepted"}, result["outcomes"]
        return result

    return python_post


def _rounds(base: Server, gateway: Server, redis_url: str, rounds: int, label: str) -> Comparison:
    post = _poster()
    load(base, "/", connections=CONNECTIONS, seconds=1)  # warm-up
    post(gateway, redis_url, 10_000.0)
    pairs = []
    for i in range(rounds):
        b = load(base, "/", connections=CONNECTIONS, seconds=SECONDS)
        g = post(gateway, redis_url, b["rps"])
        print(row(f"round {i + 1} baseline", b))
        print(row(f"round {i + 1} {label}", g))
        pairs.append((b, g))
    return compare(pairs)


def intake(baseline: contextlib.AbstractContextManager[Server] | None = None) -> dict[str, float]:
    """Signed Shopify webhooks, one gateway process, against ``baseline`` (default: bare FastAPI):
    closed loop, then open loop at a fixed offered rate."""
    generator = "wrk, every order signed before the run" if wrk.available() else "the Python load generator"
    print(
        f"shopify webhook intake vs bare FastAPI: {generator}, every request a new order, "
        f"{CONNECTIONS} connections, {ROUNDS} rounds of {SECONDS:.0f}s"
    )
    figures: dict[str, float] = {}
    with redis_server() as redis_url, baseline or baseline_server() as base, _gateway(redis_url) as gateway:
        c = _rounds(base, gateway, redis_url, ROUNDS, "shopify webhook")
        print(f"  => throughput webhook / baseline = {c.throughput_ratio:.2f}x  (target >= 0.5)")
        print(f"  => CPU per request, baseline / webhook = {c.cpu_ratio:.2f}x")
        print(
            f"  => webhook p99 {c.p99_ms:.1f} ms at {CONNECTIONS} connections, closed loop "
            f"(target <= 25 ms); baseline p99 {c.baseline_p99_ms:.1f} ms"
        )
        figures |= {
            "intake_ratio": c.throughput_ratio,
            "intake_cpu_ratio": c.cpu_ratio,
            "intake_p99_ms": c.p99_ms,
        }
        if wrk.available():
            figures |= _open_loop(gateway, redis_url, c.gateway_rps)
    return figures


def _open_loop(gateway: Server, redis_url: str, max_rps: float) -> dict[str, float]:
    rate = OPEN_LOOP_SHARE * max_rps
    print(
        f"  open loop: {rate:.0f} webhooks/s offered ({OPEN_LOOP_SHARE:.0%} of the closed-loop median), "
        f"{CONNECTIONS} connections, {OPEN_LOOP_ROUNDS} rounds (wrk, paced by bench/wrk_pace.lua)"
    )
    results = []
    for i in range(OPEN_LOOP_ROUNDS):
        r = wrk_post(gateway, redis_url, expected_rps=rate, rate=rate)
        print(f"{row(f'round {i + 1} open loop', r)}  late {r['late']}")
        results.append(r)
    p99 = median([r["p99_ms"] for r in results])
    achieved = median([r["rps"] for r in results])
    print(f"  => webhook p99 {p99:.1f} ms at {achieved:.0f} webhooks/s offered open-loop")
    return {"open_loop_rate": achieved, "open_loop_p99_ms": p99}


def durability_cost() -> dict[str, float]:
    """What acknowledgement = durability costs: intake against the hello-world with nothing to wait for
    (AOF off), with the AOF fsync (WAITAOF) and with a replica as well (WAIT). The three gateways run
    side by side and each round measures them all, so that the machine's load hits each alike."""
    setups: list[tuple[str, Callable[[], contextlib.AbstractContextManager[str]]]] = [
        ("nothing to wait for (AOF off)", lambda: redis_server("--appendonly", "no")),
        ("WAITAOF (one AOF server)", redis_server),
        ("WAITAOF + WAIT 1 (with a replica)", redis_with_replica),
    ]
    print(
        f"acknowledgement = durability: intake vs bare FastAPI, {DURABILITY_ROUNDS} rounds of "
        f"{len(setups) + 1} runs, embedded Valkey (hz 100, appendfsync everysec)"
    )
    post = _poster()
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(baseline_server())
        targets = []
        for name, setup in setups:
            redis_url = stack.enter_context(setup())
            targets.append((name, redis_url, stack.enter_context(_gateway(redis_url))))
        load(base, "/", connections=CONNECTIONS, seconds=1)  # warm-up
        for _, redis_url, gateway in targets:
            post(gateway, redis_url, 10_000.0)
        pairs: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {name: [] for name, _ in setups}
        for i in range(DURABILITY_ROUNDS):
            b = load(base, "/", connections=CONNECTIONS, seconds=SECONDS)
            print(row(f"round {i + 1} baseline", b))
            for name, redis_url, gateway in targets:
                g = post(gateway, redis_url, b["rps"])
                print(row(f"round {i + 1} {name.split(' (')[0]}", g))
                pairs[name].append((b, g))
    figures: dict[str, float] = {}
    for name, rounds in pairs.items():
        c = compare(rounds)
        print(
            f"  => {name}: {c.gateway_rps:.0f} webhooks/s, {c.throughput_ratio:.2f}x the baseline, "
            f"CPU per request {c.cpu_ratio:.2f}x the baseline's, p99 {c.p99_ms:.1f} ms"
        )
        figures[f"durability_ratio[{name}]"] = c.throughput_ratio
    return figures


@contextlib.contextmanager
def _sandbox(latency: float) -> Iterator[Server]:
    env = {
        "NEUROON_SHOP_ID": SHOP_ID,
        "NEUROON_API_KEY": BENCH_KEY,
        "NEUROON_SHOP_URL": "https://shop.example",
    }
    with server(
        [str(BIN / "neuroon-gateway"), "sandbox", "--port", "{port}"], env, "/actuator/health"
    ) as sandbox:
        httpx.post(sandbox.url + "/_sandbox/latency", json={"seconds": latency}).raise_for_status()
        yield sandbox


def _fill(redis_url: str, count: int) -> None:
    """Accepted orders straight into the queue, as intake leaves them (same key space, same script)."""
    from app.store import connect
    from app.store.conversions import ConversionStore

    async def fill() -> None:
        client = connect(redis_url, socket_timeout=10)
        store = ConversionStore(client)
        body = (
            b'{"orderId":"%d","orderValue":186.9,"currency":"EUR","conversions":[{"productId":"SNOW-GRN-150",'
        )
        body += b'"searchLogId":"log_snow","quantity":1,"lineTotal":84.9}]}'
        try:
            for i in range(count):
                await store.enqueue(SHOP_ID, str(i), body.replace(b"%d", str(i).encode()), "generic")
        finally:
            await client.aclose()

    uvloop.run(fill())


def delivery() -> dict[str, float]:
    """One `neuroon-gateway worker` process draining a full queue to a sandbox answering in 50 ms."""
    from app.store.conversions import pending_key

    print(
        f"delivery: {DELIVERY_ORDERS} queued orders, "
        f"sandbox latency {UPSTREAM_LATENCY * 1000:.0f} ms, 1 worker"
    )
    with redis_server() as redis_url, _sandbox(UPSTREAM_LATENCY) as sandbox:
        _fill(redis_url, DELIVERY_ORDERS)
        client = redis.Redis.from_url(redis_url)
        env = os.environ | {
            "NEUROON_SHOP_ID": SHOP_ID,
            "NEUROON_API_KEY": BENCH_KEY,
            "NEUROON_SHOP_URL": "https://shop.example",
            "NEUROON_API_URL": sandbox.url,
            "REDIS_URL": redis_url,
        }
        started = time.perf_counter()
        worker = subprocess.Popen(
            [str(BIN / "neuroon-gateway"), "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while int(client.zcard(pending_key(SHOP_ID))) > 0:
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with {worker.returncode}")
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            client.close()
        recorded = httpx.get(f"{sandbox.url}/_sandbox/shops/{SHOP_ID}/conversions").json()
    distinct = len(recorded.get("conversions", recorded)) if isinstance(recorded, dict) else len(recorded)
    rate = DELIVERY_ORDERS / elapsed
    print(
        f"  => {rate:.0f} orders/s delivered by one worker process (target >= 200); "
        f"sandbox recorded {distinct}"
    )
    return {"delivery_orders_per_second": rate}


def main(baseline: contextlib.AbstractContextManager[Server] | None = None) -> dict[str, float]:
    return intake(baseline) | durability_cost() | delivery()


def _cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "loadgen":
        parser = argparse.ArgumentParser()
        parser.add_argument("command")
        parser.add_argument("url")
        parser.add_argument("--connections", type=int, default=CONNECTIONS)
        parser.add_argument("--seconds", type=float, default=SECONDS)
        args = parser.parse_args()
        global SECRET
        SECRET = os.environ["BENCH_SECRET"]
        print(json.dumps(uvloop.run(_post_load(args.url, args.connections, args.seconds))))
        return
    main()


if __name__ == "__main__":
    _cli()
