"""GET /v1/widget-token (cached path, one server process) against the bare FastAPI hello-world.

Target: throughput ratio >= 1.0. Rounds alternate baseline and gateway so that changes in the
machine's load hit both; medians are reported. The server CPU time per request is reported too:
on a shared machine it is the steadier of the two figures.
"""

from __future__ import annotations

from bench.harness import baseline_server, compare, gateway_server, load, only_successes, redis_server, row

CONNECTIONS = 32
SECONDS = 4.0
ROUNDS = 5


def main() -> dict[str, float]:
    print(f"widget token vs bare FastAPI: {CONNECTIONS} connections, {ROUNDS} rounds of {SECONDS:.0f}s each")
    # The rate limiter stays on (its bookkeeping is part of the hot path) but is set out of reach.
    # The delivery worker, which `serve` runs by default, is measured by bench.webhooks: here it is
    # off, so its background polling is not charged to the endpoint.
    with (
        redis_server() as redis_url,
        baseline_server() as base,
        gateway_server(redis_url, GATEWAY_TOKEN_RATE_LIMIT=str(10**9), GATEWAY_RUN_WORKER="false") as gateway,
    ):
        load(base, "/", connections=CONNECTIONS, seconds=1)  # warm-up
        load(gateway, "/v1/widget-token", connections=CONNECTIONS, seconds=1)
        rounds = []
        for i in range(ROUNDS):
            b = load(base, "/", connections=CONNECTIONS, seconds=SECONDS)
            g = load(gateway, "/v1/widget-token", connections=CONNECTIONS, seconds=SECONDS)
            assert only_successes(g), g["statuses"]
            print(row(f"round {i + 1} baseline", b))
            print(row(f"round {i + 1} widget-token", g))
            rounds.append((b, g))
    c = compare(rounds)
    print(f"  => throughput widget-token / baseline = {c.throughput_ratio:.2f}x  (target >= 1.0)")
    print(
        f"  => CPU per request, baseline / widget-token = {c.cpu_ratio:.2f}x  (above 1: the token is cheaper)"
    )
    print(f"  => widget-token p99 {c.p99_ms:.1f} ms, baseline p99 {c.baseline_p99_ms:.1f} ms")
    return {"throughput_ratio": c.throughput_ratio, "cpu_ratio": c.cpu_ratio}
