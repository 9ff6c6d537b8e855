"""WooCommerce's and Shopify's own published product JSON (tests/data/products/ORIGIN.md) through
`catalog sync` and the admin push, end to end against the sandbox, under each product identity."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.catalog.feed import FeedRow, open_feed
from app.catalog.mapping import FieldMapping
from app.catalog.reconcile import feed_ids
from app.catalog.service import sync_feed
from app.catalog.sync import SyncOptions, SyncReport
from app.neuroon.client import NeuroonClient
from app.sandbox import Sandbox
from app.settings import ProductIdentity, ShopConfig
from app.shops import Shop
from app.store import connect
from app.store.catalog import CatalogStore
from tests.conftest import CANARY_KEY, SHOP_ID, SHOP_URL, SettingsFactory
from tests.test_catalog_admin import AUTH, gateway
from tests.test_catalog_cli import cli, sandbox_process
from tests.webhooks import SHOPIFY_SECRET, clicks_cookie, shopify_headers

DATA = Path(__file__).parent / "data" / "products"


@pytest.fixture
async def store(redis_url: str, redis_client: Any) -> AsyncIterator[CatalogStore]:
    client = connect(redis_url)
    yield CatalogStore(client)
    await client.aclose()


def published(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


WOO_PRODUCTS = published("woocommerce-rest-v3-products.json")  # 799 variable (price ""), 794 simple
WOO_VARIATIONS = published("woocommerce-rest-v3-product-variations.json")  # 733, 732 of product 22
SHOPIFY_PRODUCT = published("shopify-admin-rest-product.json")["product"]  # 632910392, four variants
SHOPIFY_ORDER = published("shopify-admin-rest-order.json")["order"]  # three of those variants
SHOPIFY_VARIANTS = {
    "808950810": "IPOD2008PINK",
    "49148385": "IPOD2008RED",
    "39072856": "IPOD2008GREEN",
    "457924702": "IPOD2008BLACK",
}


def shop_with(identity: ProductIdentity, shop_url: str | None = SHOP_URL) -> Shop:
    return Shop(ShopConfig(id=SHOP_ID, api_key=CANARY_KEY, shop_url=shop_url, product_id_field=identity))


async def sync(
    identity: ProductIdentity, neuroon: NeuroonClient, store: CatalogStore, items: list[Any]
) -> SyncReport:
    rows = [FeedRow(1, item, element=n) for n, item in enumerate(items)]
    return await sync_feed(rows, shop_with(identity), neuroon, store, SyncOptions(prices_include_tax=True))


# --- WooCommerce ---------------------------------------------------------------------------------------


def test_woocommerce_docs_export_syncs_as_it_comes_with_rows_named_by_element(
    redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    # The docs' product list followed by the docs' variation list, as one minified array (one line).
    feed = tmp_path / "woo-products.json"
    feed.write_text(json.dumps(WOO_PRODUCTS + WOO_VARIATIONS, separators=(",", ":")))
    with sandbox_process(tmp_path) as url:
        done = cli(
            ["catalog", "sync", str(feed)], url, redis_url, tmp_path, GATEWAY_PRODUCT_ID_FIELD="variant_id"
        )
        catalog = httpx.get(f"{url}/_sandbox/shops/{SHOP_ID}/products").json()["products"]
    assert done.returncode == 0, done.stderr
    assert "product identity (externalId, and the productId conversions send): variant_id" in done.stdout
    assert "read as woocommerce product JSON: 4 rows (no field map)" in done.stdout
    assert done.stdout.startswith("catalog sync (INCREMENTAL): 4 rows in")
    assert "1 WooCommerce variable products not sent themselves" in done.stdout
    # The variations' parent (22) is not in the docs' list: each is refused by its element, not "line 1".
    assert (
        "element [2] (733): name: a WooCommerce variation takes its parent's name, and its parent (22)"
        in (done.stdout)
    )
    assert "element [3] (732): name:" in done.stdout
    assert "sent: 1 in 1 batches" in done.stdout
    by_id = {p["externalId"]: p for p in catalog}
    assert set(by_id) == {"794"}
    simple = by_id["794"]
    assert simple["name"] == "Premium Quality"
    assert simple["price"] == 21.99
    assert simple["url"] == "https://example.com/product/premium-quality-19/"
    assert simple["categories"] == ["T-shirts", "Clothing"]
    assert simple["imageUrl"] == "https://example.com/wp-content/uploads/2017/03/T_2_front-4.jpg"
    assert simple["description"] == (
        "Pellentesque habitant morbi tristique senectus et netus et malesuada fames ac turpis egestas."
    )
    assert simple["inStock"] is True
    assert simple["isActive"] is True
    assert "salePrice" not in simple
    assert "rating" not in simple


def test_woocommerce_docs_export_under_the_default_sku_identity_fails_loudly(
    redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    feed = tmp_path / "woo-products.json"
    feed.write_text(json.dumps(WOO_PRODUCTS, indent=2))
    with sandbox_process(tmp_path) as url:
        done = cli(["catalog", "sync", str(feed), "--json"], url, redis_url, tmp_path)
    assert done.returncode == 1, done.stdout  # nothing accepted: the run failed
    report = json.loads(done.stdout)
    assert report["productIdentity"] == "sku"
    assert (report["sent"], report["rejected"]) == (0, 1)
    (row,) = report["rejectedRows"]
    assert (row["element"], row["field"]) == (1, "externalId")
    assert row["reason"].startswith("no SKU: the product identity is sku (product_id_field")


async def test_woocommerce_variations_take_their_parents_name_categories_and_description(
    neuroon: NeuroonClient,
    store: CatalogStore,
    sandbox: Sandbox,
) -> None:
    # The docs' variations belong to product 22, which the docs do not show: the docs' variable product
    # 799 stands in for it (its id set to 22, nothing else changed).
    parent = copy.deepcopy(WOO_PRODUCTS[0]) | {"id": 22}
    report = await sync("variant_id", neuroon, store, [parent, *WOO_VARIATIONS])
    assert (report.sent, report.rejected_count) == (2, 0), report.to_text()
    catalog = sandbox.products(SHOP_ID)
    assert set(catalog) == {"733", "732"}  # the container 22 is not a product anyone buys
    green = catalog["733"]
    assert green["name"] == "Ship Your Idea - Green"
    assert green["price"] == 9
    assert green["categories"] == ["T-shirts", "Clothing"]
    assert green["url"] == "https://example.com/product/ship-your-idea/?attribute_pa_color=green"
    assert green["imageUrl"] == "https://example.com/wp-content/uploads/2016/10/T_3_front-12.jpg"
    assert green["attributes"] == {"Color": "Green"}
    assert green["description"].startswith("Pellentesque habitant morbi tristique senectus")
    assert "parentExternalId" not in green


async def test_woocommerce_under_product_id_sends_products_and_says_why_a_variable_one_cannot_go(
    neuroon: NeuroonClient,
    store: CatalogStore,
    sandbox: Sandbox,
) -> None:
    report = await sync("product_id", neuroon, store, [*WOO_PRODUCTS, *WOO_VARIATIONS])
    assert set(sandbox.products(SHOP_ID)) == {"794"}
    (refused,) = report.rejected
    assert (refused.element, refused.field) == (0, "price")
    assert "a variable product's price is empty" in refused.reason
    assert (
        "2 WooCommerce variations not sent separately: orders name their product (product identity "
        "product_id)" in report.notes
    )


# --- flat feeds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "expected"), [("sku", "TEE-M"), ("variant_id", "17"), ("product_id", "17")]
)
async def test_a_flat_feed_row_is_named_by_the_shops_identity(
    neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox, identity: ProductIdentity, expected: str
) -> None:
    row = {"id": 17, "sku": "TEE-M", "title": "Tee", "price": "9.90", "link": "https://shop.example/tee"}
    report = await sync(identity, neuroon, store, [row])
    assert report.sent == 1, report.to_text()
    assert set(sandbox.products(SHOP_ID)) == {expected}
    assert report.notes == []


async def test_a_flat_feed_without_skus_under_the_sku_identity_says_its_ids_were_taken(
    neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    rows = [
        {"id": f"P{i}", "title": "Tee", "price": "9.90", "link": "https://shop.example/tee"} for i in range(2)
    ]
    report = await sync("sku", neuroon, store, rows)
    assert set(sandbox.products(SHOP_ID)) == {"P0", "P1"}
    assert report.notes == [
        "2 rows have no sku column: their id was taken as the SKU (product identity sku); conversions "
        "attribute them only if that id is the SKU the order lines carry"
    ]
    assert "product identity (externalId, and the productId conversions send): sku" in report.to_text()


# --- Shopify -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "ids"),
    [
        ("sku", set(SHOPIFY_VARIANTS.values())),
        ("variant_id", set(SHOPIFY_VARIANTS)),
        ("product_id", {"632910392"}),
    ],
)
async def test_shopify_product_json_is_one_product_per_id_a_conversion_can_name(
    neuroon: NeuroonClient,
    store: CatalogStore,
    sandbox: Sandbox,
    identity: ProductIdentity,
    ids: set[str],
) -> None:
    report = await sync(identity, neuroon, store, [SHOPIFY_PRODUCT])
    assert report.rows == 1  # the feed's rows, whatever the products they hold
    assert report.ok, report.to_text()
    assert report.rejected_count == 0, report.to_text()
    catalog = sandbox.products(SHOP_ID)
    assert set(catalog) == ids
    for product in catalog.values():
        assert product["price"] == 199
        assert product["brands"] == ["Apple"]
        assert product["categories"] == ["Cult Products"]
        assert product["tags"] == ["Emotive", "Flash Memory", "MP3", "Music"]
        assert product["url"].startswith(f"{SHOP_URL}/products/ipod-nano")
        assert product["imageUrl"] == "http://static.shopify.com/s/files/1/6909/3384/products/ipod-nano.png?0"
    if identity != "product_id":
        pink = catalog["IPOD2008PINK" if identity == "sku" else "808950810"]
        assert pink["name"] == "IPod Nano - 8GB - Pink"
        assert pink["url"] == f"{SHOP_URL}/products/ipod-nano?variant=808950810"
        assert pink["stockQuantity"] == 10
        assert pink["sku"] == "IPOD2008PINK"


async def test_a_shopify_variant_without_a_sku_costs_only_itself(
    neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox
) -> None:
    product = copy.deepcopy(SHOPIFY_PRODUCT)
    product["variants"][1]["sku"] = ""  # the published product with its Red variant's SKU left blank
    report = await sync("sku", neuroon, store, [product])
    assert set(sandbox.products(SHOP_ID)) == {"IPOD2008PINK", "IPOD2008GREEN", "IPOD2008BLACK"}
    (refused,) = report.rejected
    assert (refused.element, refused.field) == (0, "externalId")
    assert refused.reason.startswith("no SKU: the product identity is sku")


async def test_shopify_product_json_without_a_shop_url_is_refused_naming_the_setting(
    neuroon: NeuroonClient,
    store: CatalogStore,
) -> None:
    rows = [FeedRow(1, SHOPIFY_PRODUCT, element=0)]
    report = await sync_feed(
        rows, shop_with("sku", shop_url=None), neuroon, store, SyncOptions(prices_include_tax=True)
    )
    (refused,) = report.rejected
    assert refused.field == "url"
    assert "NEUROON_SHOP_URL" in refused.reason


def test_reconcile_reads_platform_json_with_the_same_identity_as_the_sync() -> None:
    rows = [FeedRow(1, SHOPIFY_PRODUCT, element=0)]
    assert feed_ids(rows, FieldMapping(), shop_with("variant_id")) == (set(SHOPIFY_VARIANTS), 0)
    # A variation refused for want of its parent is still in the shop: reconcile must not delete it.
    woo = [FeedRow(1, item, element=n) for n, item in enumerate(WOO_PRODUCTS + WOO_VARIATIONS)]
    assert feed_ids(woo, FieldMapping(), shop_with("variant_id")) == ({"794", "733", "732"}, 0)


# --- one identity for both flows, and the admin push ----------------------------------------------------


# The shops come from a shops file alone (the single-shop variables unset).
SHOPS_FILE_ONLY: dict[str, Any] = {"neuroon_shop_id": None, "neuroon_api_key": None, "neuroon_shop_url": None}


def _shops_file(tmp_path: Path, identity: ProductIdentity) -> Path:
    path = tmp_path / "shops.toml"
    path.write_text(
        f'[[shops]]\nid = "{SHOP_ID}"\napi_key = "{CANARY_KEY}"\nshop_url = "{SHOP_URL}"\n'
        f'platform_domain = "apple.myshopify.com"\nshopify_webhook_secrets = ["{SHOPIFY_SECRET}"]\n'
        f'product_id_field = "{identity}"\n'
    )
    return path


@pytest.mark.parametrize("identity", ["sku", "variant_id", "product_id"])
def test_the_shops_identity_makes_conversions_name_what_the_catalog_sent(
    make_settings: SettingsFactory, tmp_path: Path, redis_client: Any, identity: ProductIdentity
) -> None:
    from app.sandbox import SandboxShop, create_sandbox
    from tests.test_webhook_intake import queued

    sandbox = create_sandbox([SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL)])
    # The environment says sku; the shop's own key decides.
    settings: dict[str, Any] = SHOPS_FILE_ONLY | {
        "gateway_shops_file": _shops_file(tmp_path, identity),
        "gateway_product_id_field": "sku" if identity != "sku" else "variant_id",
    }
    with gateway(make_settings, sandbox, **settings) as client:
        pushed = client.post("/v1/admin/catalog/products", json={"products": [SHOPIFY_PRODUCT]}, headers=AUTH)
        assert pushed.status_code == 200, pushed.text
        assert pushed.json()["productIdentity"] == identity
        catalog = set(sandbox.products(SHOP_ID))
        # The shopper clicked every product the widget could show; Shopify's own order of three variants
        # (its financial_status set to paid: the published one is only authorized).
        order = copy.deepcopy(SHOPIFY_ORDER) | {"financial_status": "paid"}
        order["note_attributes"] = [
            {"name": "neuroon_clicks", "value": clicks_cookie({i: f"log_{n}" for n, i in enumerate(catalog)})}
        ]
        body = json.dumps(order).encode()
        answer = client.post(
            "/v1/webhooks/shopify", content=body, headers=shopify_headers(body, domain="apple.myshopify.com")
        )
        assert answer.json()["status"] == "accepted", answer.text
    sent = {c["productId"] for c in queued(redis_client, str(SHOPIFY_ORDER["id"]))["conversions"]}
    assert sent
    assert sent <= catalog
    lines = SHOPIFY_ORDER["line_items"]
    expected = {"sku": {li["sku"] for li in lines}, "variant_id": {str(li["variant_id"]) for li in lines}}
    assert sent == expected.get(identity, {"632910392"})


def test_a_push_whose_every_row_is_rejected_is_a_422_with_the_report(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    from app.sandbox import SandboxShop, create_sandbox

    sandbox = create_sandbox([SandboxShop(SHOP_ID, CANARY_KEY, SHOP_URL)])
    bad = {"externalId": "A1", "name": "n", "price": "-1", "url": "https://shop.example/a"}
    good = bad | {"externalId": "A2", "price": "1"}
    with gateway(make_settings, sandbox) as client:
        refused = client.post("/v1/admin/catalog/products", json={"products": [bad, 7]}, headers=AUTH)
        partly = client.post("/v1/admin/catalog/products", json={"products": [bad, good]}, headers=AUTH)
        # WooCommerce's published products under the default identity (sku): their SKUs are blank.
        woo = client.post("/v1/admin/catalog/products", json={"products": WOO_PRODUCTS}, headers=AUTH)
    assert refused.status_code == 422
    report = refused.json()
    assert report["error"] == "nothing_accepted"
    assert report["detail"]
    assert (report["sent"], report["rejected"]) == (0, 2)
    assert [(r["element"], r["field"]) for r in report["rejectedRows"]] == [(0, "price"), (1, "row")]
    assert partly.status_code == 200
    assert partly.json()["sent"] == 1
    assert woo.status_code == 422
    assert [(r["element"], r["field"]) for r in woo.json()["rejectedRows"]] == [(1, "externalId")]
    assert set(sandbox.products(SHOP_ID)) == {"A2"}


def test_unknown_product_identity_in_the_shops_file_names_the_key(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    from app.settings import ConfigError

    path = _shops_file(tmp_path, "sku")
    path.write_text(path.read_text().replace('"sku"', '"barcode"'))
    settings = make_settings(**SHOPS_FILE_ONLY, gateway_shops_file=path)
    with pytest.raises(ConfigError, match=r"shops\[0\]\.product_id_field"):
        settings.shops()


def test_the_environment_sets_the_identity_of_shops_that_do_not_say(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    path = _shops_file(tmp_path, "sku")
    path.write_text(path.read_text().replace('product_id_field = "sku"\n', ""))
    settings = make_settings(
        **SHOPS_FILE_ONLY, gateway_shops_file=path, gateway_product_id_field="product_id"
    )
    assert [s.product_id_field for s in settings.shops()] == ["product_id"]
    assert make_settings(gateway_product_id_field="variant_id").shops()[0].product_id_field == "variant_id"


async def test_shopify_graphql_answer_is_read_with_numeric_ids(
    neuroon: NeuroonClient, store: CatalogStore, sandbox: Sandbox, tmp_path: Path
) -> None:
    # No complete published Admin GraphQL product answer could be stored: this one is ours, with the field
    # names of Shopify's Product/ProductVariant objects (MoneyV2 prices, as the Storefront API sends them).
    node = {
        "id": "gid://shopify/Product/108828309",
        "title": "Element",
        "handle": "element",
        "descriptionHtml": "<p>A good board</p>",
        "vendor": "Arbor",
        "productType": "Snowboards",
        "tags": ["winter"],
        "status": "ACTIVE",
        "onlineStoreUrl": "https://shop.example/products/element",
        "featuredImage": {"url": "https://cdn.shopify.com/element58.jpg"},
        "variants": {
            "edges": [
                {
                    "node": {
                        "id": f"gid://shopify/ProductVariant/{vid}",
                        "title": size,
                        "sku": f"EL-{size}",
                        "price": {"amount": price, "currencyCode": "EUR"},
                        "compareAtPrice": None,
                        "availableForSale": vid != 3,
                        "selectedOptions": [{"name": "Size", "value": size}],
                    }
                }
                for vid, size, price in ((1, "150", "399.00"), (3, "155", "419.00"))
            ]
        },
    }
    path = tmp_path / "products.json"
    path.write_text(json.dumps({"data": {"products": {"nodes": [node]}}}))
    rows = list(open_feed(str(path)))
    report = await sync_feed(
        rows, shop_with("variant_id"), neuroon, store, SyncOptions(prices_include_tax=True)
    )
    assert report.sent == 2, report.to_text()
    catalog = sandbox.products(SHOP_ID)
    assert set(catalog) == {"1", "3"}
    assert catalog["3"]["name"] == "Element - 155"
    assert catalog["3"]["url"] == "https://shop.example/products/element?variant=3"
    assert (catalog["3"]["price"], catalog["3"]["currency"]) == (419, "EUR")
    assert catalog["3"]["inStock"] is False
    assert catalog["3"]["attributes"] == {"Size": "155"}
    assert catalog["1"]["imageUrl"] == "https://cdn.shopify.com/element58.jpg"
    report = await sync_feed(
        list(open_feed(str(path))),
        shop_with("product_id"),
        neuroon,
        store,
        SyncOptions(prices_include_tax=True),
    )
    assert sandbox.products(SHOP_ID)["108828309"]["price"] == 399
    assert sandbox.products(SHOP_ID)["108828309"]["inStock"] is True
