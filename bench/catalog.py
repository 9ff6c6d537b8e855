"""`catalog sync` of a 100,000-product feed against the sandbox (a separate process) with Neuroon's sync
limit enforced at a faster scale, measured on the real CLI process.

Figures: achieved products/s as a ratio of the limit's bound (requests per window x batch size / window;
target >= 0.9), 429 answers (target 0), the CLI's peak RSS (target <= 200 MB), and what a second run
of the unchanged feed sends (target 0).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import BENCH_KEY, BIN, SHOP_ID, redis_server, server

PRODUCTS = int(os.environ.get("BENCH_CATALOG_PRODUCTS", "100000"))
BATCH = int(os.environ.get("BENCH_CATALOG_BATCH", "100"))
# Neuroon documents 100 requests per 60 s: the same budget, ten times faster.
REQUESTS, WINDOW = int(os.environ.get("BENCH_CATALOG_REQUESTS", "100")), 6.0

# Runs the CLI as its only child, so RUSAGE_CHILDREN is exactly the CLI's peak RSS (kB on Linux).
_MEASURE = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[2:]).returncode; "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(code)"
)


def write_feed(path: Path, n: int) -> int:
    """Parents and variants, variants often before their parent; HTML descriptions; category paths."""
    rng = random.Random(42)
    rows = 0
    with path.open("w") as out:
        held: list[str] = []
        i = 0
        while rows < n:
            parent = f"P{i:06d}"
            line = {
                "id": parent,
                "title": f"Product {i} trail running shoe",
                "price": f"{10 + i % 90}.{i % 100:02d}",
                "currency": "EUR",
                "link": f"https://shop.example/p/{i}",
                "image_link": f"https://cdn.shop.example/{i}.jpg",
                "description": "<p>" + " ".join(f"<b>feature {j}</b> &amp; more" for j in range(60)) + "</p>",
                "product_type": "Sports > Running > Shoes",
                "brand": "Acme",
                "availability": "in stock",
            }
            variants = [
                json.dumps({"id": f"{parent}-{v}", "parent_id": parent, "title": f"Product {i} size {v}",
                            "price": line["price"], "currency": "EUR", "link": f"https://shop.example/p/{i}?s={v}"})
                for v in range(min(2, n - rows - 1) if i % 4 == 0 else 0)
            ]  # fmt: skip
            if variants and rng.random() < 0.5:
                held.extend(variants)  # written before the parent, a few rows later
                variants = []
            for text in [*held[:2], json.dumps(line), *variants]:
                out.write(text + "\n")
                rows += 1
            held = held[2:]
            i += 1
        for text in held:
            out.write(text + "\n")
            rows += 1
    return rows


def run_cli(feed: Path, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    rss_file = workdir / "rss"
    argv = [sys.executable, "-c", _MEASURE, str(rss_file), str(BIN / "neuroon-gateway")]
    argv += ["catalog", "sync", str(feed), "--json"]
    started = time.monotonic()
    proc = subprocess.run(argv, env=os.environ | env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"catalog sync exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(proc.stdout)
    report["wall_seconds"] = seconds
    report["peak_rss_mb"] = int(rss_file.read_text()) / 1024
    return report


def main() -> dict[str, float]:
    bound = REQUESTS * BATCH / WINDOW
    print(
        f"catalog sync: {PRODUCTS} products, batches of {BATCH}, sandbox limit {REQUESTS} requests "
        f"per {WINDOW:g}s (bound {bound:.0f} products/s)"
    )
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_url:
        work = Path(tmp)
        feed = work / "feed.jsonl"
        rows = write_feed(feed, PRODUCTS)
        key_file = work / "key"
        key_file.write_text(BENCH_KEY)
        shops = work / "shops.toml"
        shops.write_text(
            f'[[shops]]\nid = "{SHOP_ID}"\nkey_file = "{key_file}"\nshop_url = "https://shop.example"\n'
        )
        sandbox_args = [
            str(BIN / "neuroon-gateway"),
            "sandbox",
            "--port",
            "{port}",
            "--shops-file",
            str(shops),
        ]
        with server(sandbox_args, {"GATEWAY_LOG_FORMAT": "json"}, "/_sandbox/state") as sandbox:
            limits = {"sync_products": {"requests": REQUESTS, "window": WINDOW}}
            httpx.post(
                sandbox.url + "/_sandbox/rate-limits", json={"enabled": True, "limits": limits}
            ).raise_for_status()
            env = {
                "NEUROON_SHOP_ID": SHOP_ID,
                "NEUROON_API_KEY_FILE": str(key_file),
                "NEUROON_SHOP_URL": "https://shop.example",
                "NEUROON_API_URL": sandbox.url,
                "REDIS_URL": redis_url,
                "GATEWAY_PRICES_INCLUDE_TAX": "true",
                "GATEWAY_CATALOG_BATCH_SIZE": str(BATCH),
                "GATEWAY_CATALOG_SYNC_LIMIT": f"{REQUESTS}/{WINDOW:g}",
                "GATEWAY_LOG_FORMAT": "json",
            }
            first = run_cli(feed, env, work)
            second = run_cli(feed, env, work)
            statuses = [r["status"] for r in httpx.get(sandbox.url + "/_sandbox/requests", timeout=30).json()]
            catalog = len(
                httpx.get(f"{sandbox.url}/_sandbox/shops/{SHOP_ID}/products", timeout=60).json()["products"]
            )
    achieved = first["sent"] / first["wall_seconds"]
    ratio = achieved / bound
    too_many = statuses.count(429)
    print(
        f"  first run:  {rows} rows, sent {first['sent']} in {first['batches']} batches, "
        f"{first['wall_seconds']:.1f}s, {achieved:.0f} products/s; rejected {first['rejected']}, "
        f"orphans {first['orphans']}; Neuroon holds {catalog}"
    )
    print(
        f"  second run: sent {second['sent']}, unchanged {second['unchanged']}, {second['wall_seconds']:.1f}s"
    )
    print(f"  => achieved / bound = {ratio:.2f}  (target >= 0.9)")
    print(f"  => 429 answers: {too_many}  (target 0)")
    rss = f"{first['peak_rss_mb']:.0f} MB first run, {second['peak_rss_mb']:.0f} MB second"
    print(f"  => peak RSS of the CLI: {rss}  (target <= 200 MB)")
    print(f"  => products sent by the second run of the unchanged feed: {second['sent']}  (target 0)")
    return {
        "throughput_ratio": ratio,
        "responses_429": float(too_many),
        "peak_rss_mb": max(first["peak_rss_mb"], second["peak_rss_mb"]),
        "second_run_sent": float(second["sent"]),
    }


if __name__ == "__main__":
    main()
