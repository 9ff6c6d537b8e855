"""The real `neuroon-gateway catalog …` and `verify-domain` commands, as separate processes over real HTTP:
against an independent fake of Neuroon written from the docs, and against `neuroon-gateway sandbox`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.embedded_redis import free_port
from app.sandbox.serve import SandboxServer
from tests.catalog_fake import FakeNeuroon
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL
from tests.support import GATEWAY, clean_env

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def fake() -> Iterator[tuple[FakeNeuroon, str]]:
    neuroon = FakeNeuroon(SHOP_ID, CANARY_KEY, SHOP_URL)
    server = SandboxServer(neuroon.app(), "127.0.0.1", free_port())
    url = server.start()
    try:
        yield neuroon, url
    finally:
        server.stop()


def cli(
    args: list[str], api_url: str, redis_url: str, cwd: Path, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    config = {
        "NEUROON_SHOP_ID": SHOP_ID,
        "NEUROON_API_KEY": CANARY_KEY,
        "NEUROON_SHOP_URL": SHOP_URL,
        "NEUROON_API_URL": api_url,
        "REDIS_URL": redis_url,
        "GATEWAY_PRICES_INCLUDE_TAX": "true",
        "NEUROON_RETRY_ATTEMPTS": "1",
    } | env
    return subprocess.run(
        [GATEWAY, *args],
        env=clean_env(**config),
        cwd=cwd,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=150,
        check=False,
    )


def generated_feed(n: int, seed: int = 5) -> list[dict[str, Any]]:
    """Parents with variants, shuffled so that many variants come before their parent; long HTML
    descriptions; category paths."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        html = (
            "<div><p>"
            + " ".join(f"<b>word{j}</b> &amp;" for j in range(500))
            + "</p><script>x()</script></div>"
        )
        rows.append(
            {
                "id": f"P{i:04d}",
                "title": f"Product {i}",
                "price": f"{10 + i % 50}.99",
                "link": f"https://shop.example/p/{i}",
                "description": html,
                "product_type": "Home > Kitchen > Knives",
                "brand": "Acme",
            }
        )
        for v in range(i % 3):
            rows.append(
                {
                    "id": f"P{i:04d}-V{v}",
                    "parent_id": f"P{i:04d}",
                    "title": f"Product {i} size {v}",
                    "price": "12.50",
                    "link": f"https://shop.example/p/{i}?v={v}",
                }
            )
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sync_rerun_reconcile_and_full_guard_against_the_docs_fake(
    fake: tuple[FakeNeuroon, str], redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    neuroon, url = fake
    rows = generated_feed(300)
    feed = write_jsonl(tmp_path / "feed.jsonl", rows)

    # FULL without the matching confirmation: exit 2 before anything is sent.
    for extra in ([], ["--confirm-wipe", "shop_wrong"]):
        refused = cli(["catalog", "sync", str(feed), "--full", *extra], url, redis_url, tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert f"--confirm-wipe {SHOP_ID}" in refused.stderr
    assert neuroon.syncs == []

    done = cli(
        ["catalog", "sync", str(feed), "--json"], url, redis_url, tmp_path, GATEWAY_CATALOG_BATCH_SIZE="64"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sent"] == len(rows)
    assert report["pricesIncludeTax"] is True
    assert neuroon.dropped == []  # no variant ever reached the fake before its parent
    assert len(neuroon.catalog) == len(rows)
    seen: set[str] = set()
    for body, headers in neuroon.syncs:
        products = body["products"]
        assert 1 <= len(products) <= 64
        assert body["syncType"] == "INCREMENTAL"
        ids = ",".join(p["externalId"] for p in products)
        assert (
            headers["x-idempotency-key"]
            == hashlib.md5(f"{SHOP_ID}:{ids}:INCREMENTAL".encode(), usedforsecurity=False).hexdigest()
        )
        for p in products:
            if "parentExternalId" in p:
                assert p["parentExternalId"] in seen
            seen.add(p["externalId"])
            if "description" in p:
                assert len(p["description"]) <= 2000
                assert "<" not in p["description"]
                assert "script" not in p["description"]
                assert "x()" not in p["description"]
            if "categories" in p:
                assert p["categories"] == ["Knives", "Kitchen", "Home"]
    assert "\x1b[" not in done.stderr  # off a terminal: plain lines, never a bar
    assert "\r" not in done.stderr

    requests_before = len(neuroon.syncs)
    rerun = cli(["catalog", "sync", str(feed), "--json"], url, redis_url, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["sent"] == 0
    assert json.loads(rerun.stdout)["unchanged"] == len(rows)
    assert len(neuroon.syncs) == requests_before

    # A few products removed from the feed: reconcile deletes exactly those (listing with cursors).
    removed = {r["id"] for r in rows if r["id"] in ("P0007", "P0100", "P0299")}
    kept = write_jsonl(tmp_path / "kept.jsonl", [r for r in rows if r["id"] not in removed])
    dry = cli(["catalog", "reconcile", str(kept), "--dry-run", "--json"], url, redis_url, tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert set(json.loads(dry.stdout)["toDelete"]) == removed
    assert neuroon.deletes == []
    real = cli(["catalog", "reconcile", str(kept), "--json"], url, redis_url, tmp_path)
    assert real.returncode == 0, real.stderr
    assert set(neuroon.deletes) == removed
    assert not removed & set(neuroon.catalog)

    # An empty feed would delete everything: refused, exit 1, nothing deleted.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    refused = cli(["catalog", "reconcile", str(empty)], url, redis_url, tmp_path)
    assert refused.returncode == 1
    assert "max-delete-ratio" in refused.stdout
    assert set(neuroon.deletes) == removed

    # Variants after the parent are in the catalog; the key never shows in any output.
    for out in (done, rerun, dry, real, refused):
        assert CANARY_KEY not in out.stdout + out.stderr


def test_reconcile_uses_the_ledger_without_a_listing_and_truncated_feed_is_refused(
    fake: tuple[FakeNeuroon, str], redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    neuroon, url = fake
    neuroon.with_listing = False
    rows = [{"id": f"A{i}", "name": "n", "price": "1", "url": "https://shop.example/a"} for i in range(10)]
    feed = write_jsonl(tmp_path / "f.jsonl", rows)
    assert cli(["catalog", "sync", str(feed)], url, redis_url, tmp_path).returncode == 0
    truncated = write_jsonl(tmp_path / "t.jsonl", rows[:5])
    refused = cli(["catalog", "reconcile", str(truncated)], url, redis_url, tmp_path)
    assert refused.returncode == 1
    assert neuroon.deletes == []
    allowed = cli(
        ["catalog", "reconcile", str(truncated), "--max-delete-ratio", "0.5", "--json"],
        url,
        redis_url,
        tmp_path,
    )
    assert allowed.returncode == 0, allowed.stderr
    report = json.loads(allowed.stdout)
    assert report["source"] == "ledger"
    assert sorted(neuroon.deletes) == [f"A{i}" for i in range(5, 10)]


def test_delete_counts_404_as_done(
    fake: tuple[FakeNeuroon, str], redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    neuroon, url = fake
    neuroon.catalog["X1"] = {"externalId": "X1"}
    done = cli(["catalog", "delete", "X1", "NEVER-THERE"], url, redis_url, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "deleted X1" in done.stdout
    assert "NEVER-THERE (it was already gone)" in done.stdout
    assert sorted(neuroon.deletes) == ["NEVER-THERE", "X1"]


def test_verify_domain_409_is_success_and_403_says_what_to_fix(
    fake: tuple[FakeNeuroon, str], redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    _, url = fake
    first = cli(["verify-domain"], url, redis_url, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "is verified" in first.stdout
    again = cli(["verify-domain"], url, redis_url, tmp_path)
    assert again.returncode == 0
    assert "already verified" in again.stdout
    wrong = cli(["verify-domain"], url, redis_url, tmp_path, NEUROON_SHOP_URL="https://wrong.example")
    assert wrong.returncode == 1
    assert "NEUROON_SHOP_URL" in wrong.stderr
    assert "https://wrong.example" in wrong.stderr
    assert CANARY_KEY not in wrong.stderr + wrong.stdout


def test_configuration_errors_exit_2_before_sending(
    fake: tuple[FakeNeuroon, str], redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    neuroon, url = fake
    feed = write_jsonl(
        tmp_path / "f.jsonl", [{"id": "A", "name": "n", "price": "1", "url": "https://s.example"}]
    )
    no_tax = cli(["catalog", "sync", str(feed)], url, redis_url, tmp_path, GATEWAY_PRICES_INCLUDE_TAX="")
    assert no_tax.returncode == 2
    assert "GATEWAY_PRICES_INCLUDE_TAX" in no_tax.stderr
    missing = cli(["catalog", "sync", str(tmp_path / "nope.csv")], url, redis_url, tmp_path)
    assert missing.returncode == 2
    bad_map = tmp_path / "map.json"
    bad_map.write_text("{oops")
    mapped = cli(
        ["catalog", "sync", str(feed)], url, redis_url, tmp_path, GATEWAY_CATALOG_FIELD_MAP=str(bad_map)
    )
    assert mapped.returncode == 2
    assert "GATEWAY_CATALOG_FIELD_MAP" in mapped.stderr
    no_redis = cli(["catalog", "sync", str(feed)], url, f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    assert no_redis.returncode == 1
    assert "REDIS_URL" in no_redis.stderr
    assert "Traceback" not in no_redis.stderr
    too_big = cli(["catalog", "sync", str(feed)], url, redis_url, tmp_path, GATEWAY_CATALOG_BATCH_SIZE="501")
    assert too_big.returncode == 2
    assert "GATEWAY_CATALOG_BATCH_SIZE" in too_big.stderr
    assert neuroon.syncs == []


def test_stdin_csv_with_bad_rows(
    fake: tuple[FakeNeuroon, str], redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    neuroon, url = fake
    csv_text = (
        "id,title,price,link,category\n"
        "C1,Chair,49.90,https://shop.example/c1,Home > Chairs\n"
        "C2,Table,cheap,https://shop.example/c2,Home\n"
        "C3,Lamp,19.00,https://shop.example/c3\n"
    )
    done = cli(["catalog", "sync", "-"], url, redis_url, tmp_path, stdin=csv_text)
    assert done.returncode == 0, done.stderr
    assert "line 3 (C2): price:" in done.stdout
    assert "line 4: row: 4 columns where the header has 5" in done.stdout
    assert "including tax" in done.stdout
    assert set(neuroon.catalog) == {"C1"}
    assert neuroon.catalog["C1"]["categories"] == ["Chairs", "Home"]


@contextlib.contextmanager
def sandbox_process(tmp_path: Path) -> Iterator[str]:
    key_file = tmp_path / "key"
    key_file.write_text(CANARY_KEY)
    shops = tmp_path / "shops.toml"
    shops.write_text(f'[[shops]]\nid = "{SHOP_ID}"\nkey_file = "{key_file}"\nshop_url = "{SHOP_URL}"\n')
    port = free_port()
    proc = subprocess.Popen(
        [GATEWAY, "sandbox", "--port", str(port), "--shops-file", str(shops)],
        env=clean_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/_sandbox/state", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_sync_against_the_sandbox_process(redis_url: str, redis_client: Any, tmp_path: Path) -> None:
    rows = generated_feed(40, seed=9)
    feed = write_jsonl(tmp_path / "feed.jsonl", rows)
    with sandbox_process(tmp_path) as url:
        done = cli(["catalog", "sync", str(feed)], url, redis_url, tmp_path, GATEWAY_CATALOG_BATCH_SIZE="10")
        assert done.returncode == 0, done.stderr
        assert f"sent: {len(rows)} in" in done.stdout
        catalog = httpx.get(f"{url}/_sandbox/shops/{SHOP_ID}/products").json()
        state = httpx.get(f"{url}/_sandbox/state").json()
    assert len(catalog["products"]) == len(rows)
    assert catalog["droppedVariants"] == []
    assert CANARY_KEY not in json.dumps(state)


def test_two_runs_for_one_shop_never_overlap(
    fake: tuple[FakeNeuroon, str], redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    neuroon, url = fake
    feed = write_jsonl(
        tmp_path / "f.jsonl", [{"id": "A", "name": "n", "price": "1", "url": "https://s.example"}]
    )
    redis_client.set(f"ngw:v1:catalog:{{{SHOP_ID}}}:lock", "another-run", px=60_000)
    for args in (["catalog", "sync", str(feed)], ["catalog", "reconcile", str(feed)]):
        busy = cli(args, url, redis_url, tmp_path)
        assert busy.returncode == 1
        assert "another catalog run" in busy.stderr
    assert neuroon.syncs == []
    redis_client.delete(f"ngw:v1:catalog:{{{SHOP_ID}}}:lock")
    assert cli(["catalog", "sync", str(feed)], url, redis_url, tmp_path).returncode == 0
    assert redis_client.get(f"ngw:v1:catalog:{{{SHOP_ID}}}:lock") is None  # released after the run


def test_a_killed_run_loses_nothing_and_the_rerun_sends_only_the_rest(
    fake: tuple[FakeNeuroon, str], redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    neuroon, url = fake
    neuroon.sync_delay = 0.2
    rows = [
        {"id": f"K{i:03d}", "name": "n", "price": "1", "url": "https://shop.example/k"} for i in range(200)
    ]
    feed = write_jsonl(tmp_path / "f.jsonl", rows)
    config = {
        "NEUROON_SHOP_ID": SHOP_ID,
        "NEUROON_API_KEY": CANARY_KEY,
        "NEUROON_SHOP_URL": SHOP_URL,
        "NEUROON_API_URL": url,
        "REDIS_URL": redis_url,
        "GATEWAY_PRICES_INCLUDE_TAX": "false",
        "GATEWAY_CATALOG_BATCH_SIZE": "10",
        "GATEWAY_CATALOG_CONCURRENCY": "1",
    }
    proc = subprocess.Popen(
        [GATEWAY, "catalog", "sync", str(feed)],
        env=clean_env(**config),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(neuroon.syncs) < 4:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no cleanup, the lock stays until its TTL
    proc.wait()
    received_before = {p["externalId"] for body, _ in neuroon.syncs for p in body["products"]}
    assert 0 < len(received_before) < len(rows)
    redis_client.delete(f"ngw:v1:catalog:{{{SHOP_ID}}}:lock")  # as its 60 s TTL would
    neuroon.sync_delay = 0.0
    syncs_before = len(neuroon.syncs)
    rerun = cli(
        ["catalog", "sync", str(feed), "--json"], url, redis_url, tmp_path, GATEWAY_CATALOG_BATCH_SIZE="10"
    )
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    resent = {p["externalId"] for body, _ in neuroon.syncs[syncs_before:] for p in body["products"]}
    assert set(neuroon.catalog) == {r["id"] for r in rows}
    assert report["sent"] == len(resent) < len(rows)
    # At most the batch in flight when it was killed is sent twice (Neuroon upserts: harmless).
    assert len(resent & received_before) <= 10


def test_drift_against_the_docs_fake_and_without_its_read_route(
    fake: tuple[FakeNeuroon, str], redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    neuroon, url = fake
    rows = [
        {"id": f"D{i}", "name": f"n{i}", "price": "5.00", "url": "https://shop.example/d"} for i in range(3)
    ]
    assert (
        cli(
            ["catalog", "sync", str(write_jsonl(tmp_path / "a.jsonl", rows))], url, redis_url, tmp_path
        ).returncode
        == 0
    )
    neuroon.catalog["D1"]["price"] = 4.5  # someone fixed the price in the dashboard
    changed = [dict(r, name=r["name"] + " v2") for r in rows]
    feed = write_jsonl(tmp_path / "b.jsonl", changed)
    done = cli(["catalog", "sync", str(feed), "--json"], url, redis_url, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["conflicts"] == [{"externalId": "D1", "fields": ["price"]}]
    assert report["sent"] == 2
    assert neuroon.catalog["D1"]["name"] == "n1"
    neuroon.with_read = False  # a Neuroon without GET /products/{externalId}
    forced = cli(["catalog", "sync", str(feed), "--json"], url, redis_url, tmp_path)
    report = json.loads(forced.stdout)
    assert report["sent"] == 1
    ids_note, drift_note = report["notes"]
    assert drift_note.startswith("drift check skipped: Neuroon answered 404 to GET /products/{externalId}")
    assert ids_note.startswith("3 rows have no sku column: their id was taken as the SKU")
    assert neuroon.catalog["D1"]["name"] == "n1 v2"


def test_delete_takes_ids_in_the_normal_form_the_sync_sent(
    redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    """The sync sends ``SKU-1`` for a feed's " SKU-1 " (app/identifiers.py): a delete typed or pasted
        with the same stray characters must delete that product (Neuroon answers 204 to a delete of
    an id it does not have, so the miss was silent)."""
    rows = [
        {"id": f"SKU-{i}", "title": f"Product {i}", "price": "9.99", "link": f"https://shop.example/{i}"}
        for i in (1, 2, 3)
    ]
    feed = write_jsonl(tmp_path / "feed.jsonl", rows)
    with sandbox_process(tmp_path) as url:
        assert cli(["catalog", "sync", str(feed)], url, redis_url, tmp_path).returncode == 0
        done = cli(["catalog", "delete", " SKU-1 ", "\u200bSKU-2\u00a0"], url, redis_url, tmp_path)
        catalog = httpx.get(f"{url}/_sandbox/shops/{SHOP_ID}/products").json()["products"]
        blank = cli(["catalog", "delete", "\u200b ", "--json"], url, redis_url, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(done.stdout.splitlines()) == ["deleted SKU-1", "deleted SKU-2"]
    assert [p["externalId"] for p in catalog] == ["SKU-3"]
    assert blank.returncode == 1
    assert json.loads(blank.stdout)["failed"] == {"\u200b ": "blank once invisible characters are removed"}
