"""WooCommerce and Shopify product JSON, read as it comes: each export row becomes the rows Neuroon needs.

No field map: the shape of each row is detected (WooCommerce REST v3 products and variations, Shopify
Admin REST products with ``variants``, Shopify GraphQL product nodes), and the product identity of the
shop (app/product_identity.py) decides what becomes a Neuroon product, so that every id a conversion
can send names a product in the catalog, and nothing else is sent:

- ``sku`` / ``variant_id``: one Neuroon product per thing that is sold: a Shopify variant, a
  WooCommerce simple product or variation. A WooCommerce variable product is a container that no order
  line names (its lines name the variation), so it is not sent itself; its variations take its name
  (``"Ship Your Idea - Green"``, as WooCommerce names them), categories and description.
- ``product_id``: one Neuroon product per platform product (orders name the product, whatever the
  variant): Shopify's lowest variant price; WooCommerce variations are not sent separately.

Rows come out in Neuroon's own field names, to be read with ``NEUROON_FIELDS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from app.catalog.feed import FeedRow
from app.catalog.mapping import DEFAULT_COLUMNS, FieldMapping
from app.settings import ProductIdentity

Shape = Literal["woocommerce", "shopify"]

# Converted rows carry Neuroon's names only: no column of theirs may be read as another field.
NEUROON_FIELDS = FieldMapping({name: (name,) for name in DEFAULT_COLUMNS})

_DEFAULT_VARIANT = "Default Title"  # Shopify's title of the only variant of a product without options


class Unusable(ValueError):
    """A platform row that cannot become a product; ``external_id`` when its id is known (so that
    reconcile still counts the product as present in the shop)."""

    def __init__(self, field: str, reason: str, external_id: str | None = None) -> None:
        super().__init__(reason)
        self.field = field
        self.external_id = external_id


def detect(row: Mapping[str, Any]) -> Shape | None:
    """Which platform's product JSON ``row`` is, or None for a flat feed row."""
    if isinstance(row.get("variants"), list | dict) and ("title" in row or "handle" in row):
        return "shopify"
    if str(row.get("id", "")).startswith("gid://shopify/Product/"):
        return "shopify"
    if "permalink" in row and "regular_price" in row and ({"type", "_links", "date_created"} & row.keys()):
        return "woocommerce"
    return None


@dataclass(slots=True)
class _WooParent:
    name: str
    fields: dict[str, Any]  # what its variations inherit


@dataclass
class Expander:
    """One run's reading of platform rows. Remembers WooCommerce variable products (name, categories,
    description: what variations inherit), so memory grows with their number, not with the feed."""

    identity: ProductIdentity
    shop_url: str | None
    shapes: dict[str, int] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)
    rows_read: int = 0
    _woo_parents: dict[str, _WooParent] = field(default_factory=dict)
    _woo_parent_of: dict[str, str] = field(default_factory=dict)

    def expand(self, rows: Iterable[FeedRow]) -> Iterator[FeedRow]:
        for row in rows:
            self.rows_read += 1
            shape = detect(row.data) if row.data is not None else None
            if row.data is None or shape is None:
                yield row
                continue
            self.shapes[shape] = self.shapes.get(shape, 0) + 1
            products: Sequence[dict[str, Any] | Unusable]
            try:
                products = self._woo(row.data) if shape == "woocommerce" else self._shopify(row.data)
            except Unusable as exc:
                products = [exc]
            for product in products:
                if isinstance(product, Unusable):
                    error, field, known = str(product), product.field, product.external_id
                    yield FeedRow(row.line, None, error, row.element, field, external_id=known)
                else:
                    yield FeedRow(row.line, product, element=row.element, converted=True)

    def notes(self) -> list[str]:
        out = [f"read as {shape} product JSON: {n} rows (no field map)" for shape, n in self.shapes.items()]
        out += [f"{n} {what} (product identity {self.identity})" for what, n in self.left_out.items()]
        return out

    def _leave_out(self, what: str) -> list[dict[str, Any]]:
        self.left_out[what] = self.left_out.get(what, 0) + 1
        return []

    # --- WooCommerce REST v3 ------------------------------------------------------------------------

    def _woo(self, p: Mapping[str, Any]) -> list[dict[str, Any]]:
        product_id = _id(p.get("id"))
        kind = p.get("type")
        if kind == "variation" or (kind is None and _woo_parent_id(p, self._woo_parent_of)):
            return self._woo_variation(p, product_id)
        out = _woo_fields(p)
        if kind == "variable":
            inherited: dict[str, Any] = {k: out[k] for k in _INHERITED if k in out}
            description = out.get("shortDescription") or out.get("description")
            if description:
                inherited["description"] = description
            if product_id is not None:
                name = _text(p.get("name")) or ""
                self._woo_parents[product_id] = _WooParent(name, inherited)
                for variation in p.get("variations") or []:
                    if _id(variation) is not None:
                        self._woo_parent_of[str(_id(variation))] = product_id
            if self.identity != "product_id":
                return self._leave_out(
                    "WooCommerce variable products not sent themselves: orders name "
                    "their variations, which are sent"
                )
            if "price" not in out:
                raise Unusable(
                    "price",
                    "a variable product's price is empty in this export; under product identity "
                    "product_id the product itself is sent, so it needs one (WooCommerce shows its lowest "
                    "variation price once it has variations)",
                    product_id,
                )
        out["externalId"] = out.get("sku") if self.identity == "sku" else product_id
        return [_require_id(out, self.identity)]

    def _woo_variation(self, p: Mapping[str, Any], variation_id: str | None) -> list[dict[str, Any]]:
        if self.identity == "product_id":
            return self._leave_out("WooCommerce variations not sent separately: orders name their product")
        parent_id = _woo_parent_id(p, self._woo_parent_of)
        parent = self._woo_parents.get(parent_id) if parent_id else None
        out = dict(parent.fields) if parent else {}
        own = _woo_fields(p)
        if not own.get("description"):
            own.pop("description", None)
        out.update(own)
        out["externalId"] = out.get("sku") if self.identity == "sku" else variation_id
        if "name" not in out:
            if parent is None:
                raise Unusable(
                    "name",
                    f"a WooCommerce variation takes its parent's name, and its parent ({parent_id or '?'}) "
                    "is not earlier in the feed",
                    out["externalId"],
                )
            options = [str(a.get("option")) for a in p.get("attributes") or [] if isinstance(a, dict)]
            out["name"] = " - ".join([parent.name, ", ".join(o for o in options if o)]).strip(" -")
        return [_require_id(out, self.identity)]

    # --- Shopify Admin REST and GraphQL --------------------------------------------------------------

    def _shopify(self, p: Mapping[str, Any]) -> list[dict[str, Any] | Unusable]:
        product_id = _id(p.get("id"))
        title = _text(p.get("title"))
        url = _text(p.get("onlineStoreUrl"))
        handle = _text(p.get("handle"))
        if not url and handle and self.shop_url:
            url = f"{self.shop_url.rstrip('/')}/products/{handle}"
        if not url:
            raise Unusable(
                "url",
                "Shopify product JSON has no storefront URL: set the shop's shop_url (NEUROON_SHOP_URL) "
                "so that {shop_url}/products/{handle} is sent",
            )
        base: dict[str, Any] = {"name": title, "url": url}
        description = p.get("body_html", p.get("descriptionHtml", p.get("description")))
        if description:
            base["description"] = description
        if p.get("vendor"):
            base["brands"] = [p["vendor"]]
        category = p.get("product_type") or p.get("productType")
        if category:
            base["categories"] = [category]
        if p.get("tags"):
            base["tags"] = p["tags"]
        status = _text(p.get("status"))
        if status:
            base["isActive"] = status.lower() == "active"
        images = _shopify_images(p)
        if images:
            base["imageUrl"] = next(iter(images.values()))
        variants = [v for v in _nodes(p.get("variants")) if isinstance(v, dict)]
        options = [_text(o.get("name")) for o in p.get("options") or [] if isinstance(o, dict)]
        if self.identity == "product_id":
            return [_require_id(self._shopify_product(p, base, variants, product_id), self.identity)]
        # One variant that cannot be used (no SKU, a bad price) costs only itself, not its siblings.
        out: list[dict[str, Any] | Unusable] = []
        for variant in variants:
            row = dict(base)
            try:
                row.update(_shopify_variant(variant, options, images))
            except Unusable as exc:
                out.append(exc)
                continue
            label = _text(variant.get("title"))
            if label and label != _DEFAULT_VARIANT:
                row["name"] = f"{title} - {label}"
            if len(variants) > 1:
                row["url"] = f"{url}{'&' if '?' in url else '?'}variant={_id(variant.get('id'))}"
            row["externalId"] = row.get("sku") if self.identity == "sku" else _id(variant.get("id"))
            try:
                out.append(_require_id(row, self.identity))
            except Unusable as exc:
                out.append(exc)
        if not out:
            raise Unusable("variants", "the product JSON carries no variants (nothing that is sold)")
        return out

    @staticmethod
    def _shopify_product(
        p: Mapping[str, Any], base: dict[str, Any], variants: list[dict[str, Any]], product_id: str | None
    ) -> dict[str, Any]:
        """The product as one: its lowest price (what the storefront shows as "from"), available when
        any variant is."""
        row = dict(base)
        priced = [(a[0], v) for v in variants if (a := _amount(v.get("price"))) is not None]
        if priced:
            cheapest = min(priced, key=lambda pair: pair[0])[1]
            row.update({k: v for k, v in _shopify_variant(cheapest, [], {}).items() if k in _PRICE_FIELDS})
            states = [_shopify_variant(v, [], {}).get("inStock") for v in variants]
            if any(s is not None for s in states):
                row["inStock"] = any(states)
        else:
            price_range = p.get("priceRangeV2") or p.get("priceRange") or {}
            amount = _amount(price_range.get("minVariantPrice") if isinstance(price_range, dict) else None)
            if amount is not None:
                row["price"], row["currency"] = amount
        if len(variants) == 1 and _text(variants[0].get("sku")):
            row["sku"] = _text(variants[0].get("sku"))
        row["externalId"] = product_id
        return row


_PRICE_FIELDS = ("price", "salePrice", "currency")
_INHERITED = (
    "categories",
    "tags",
    "brands",
    "imageUrl",
)  # what a WooCommerce variation takes from its parent


def _require_id(row: dict[str, Any], identity: ProductIdentity) -> dict[str, Any]:
    if row.get("externalId") in (None, ""):
        what = "SKU" if identity == "sku" else "id"
        raise Unusable(
            "externalId",
            f"no {what}: the product identity is {identity} (product_id_field / GATEWAY_PRODUCT_ID_FIELD), "
            "and conversions name products by the same value",
        )
    return row


def _id(value: Any) -> str | None:
    """A platform id as text. Shopify GraphQL ids (``gid://shopify/ProductVariant/123``) become ``123``:
    order webhooks, and so conversions, carry the number."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    if text.startswith("gid://"):
        text = text.rsplit("/", 1)[-1].split("?", 1)[0]
    return text or None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _names(value: Any) -> list[str]:
    """WooCommerce categories/tags/brands: objects with a name (plain texts accepted too)."""
    items = value if isinstance(value, list) else []
    names = [i.get("name") if isinstance(i, dict) else i for i in items]
    return [n for n in names if isinstance(n, str) and n.strip()]


def _nodes(value: Any) -> list[Any]:
    """A list as REST sends it, or a GraphQL connection (``nodes`` or ``edges[].node``)."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("nodes"), list):
            return list(value["nodes"])
        if isinstance(value.get("edges"), list):
            return [e.get("node") for e in value["edges"] if isinstance(e, dict)]
    return []


def _amount(value: Any) -> tuple[Decimal, str | None] | None:
    """A Shopify price: ``"199.00"`` (REST, Admin GraphQL) or ``{"amount", "currencyCode"}`` (MoneyV2)."""
    currency = None
    if isinstance(value, dict):
        currency = _text(value.get("currencyCode"))
        value = value.get("amount")
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return Decimal(str(value).strip()), currency
    except InvalidOperation:
        raise Unusable("price", "must be a decimal number") from None


def _woo_parent_id(p: Mapping[str, Any], parent_of: Mapping[str, str]) -> str | None:
    """A variation's parent: ``parent_id`` (recent WooCommerce), the parent's ``variations`` list seen
    earlier, or the ``up`` link of the REST answer (``…/products/22``)."""
    parent = _id(p.get("parent_id"))
    if parent not in (None, "0"):
        return parent
    own = _id(p.get("id"))
    if own is not None and own in parent_of:
        return parent_of[own]
    links = p.get("_links")
    up = links.get("up") if isinstance(links, dict) else None
    if isinstance(up, list) and up and isinstance(up[0], dict) and isinstance(up[0].get("href"), str):
        tail = up[0]["href"].rstrip("/").rsplit("/", 1)[-1]
        return tail if tail.isdigit() else None
    return None


def _woo_fields(p: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ours, theirs in (("name", "name"), ("url", "permalink"), ("sku", "sku")):
        if _text(p.get(theirs)):
            out[ours] = p[theirs]
    for ours, theirs in (("description", "description"), ("shortDescription", "short_description")):
        if isinstance(p.get(theirs), str) and p[theirs].strip():
            out[ours] = p[theirs]
    # Neuroon's price is the regular one and salePrice the reduced one; WooCommerce's "price" is whichever
    # applies now. A sale scheduled for later (on_sale false) is not sent.
    regular, current, sale = (_text(p.get(k)) for k in ("regular_price", "price", "sale_price"))
    if regular or current:
        out["price"] = regular or current
    if sale and p.get("on_sale") is not False and sale != out.get("price"):
        out["salePrice"] = sale
    for ours, theirs in (("categories", "categories"), ("tags", "tags"), ("brands", "brands")):
        names = _names(p.get(theirs))
        if names:
            out[ours] = names
    images = p.get("images")
    image = images[0] if isinstance(images, list) and images else p.get("image")
    if isinstance(image, dict) and _text(image.get("src")):
        out["imageUrl"] = image["src"]
    stock = _text(p.get("stock_status"))
    if stock in ("instock", "onbackorder", "outofstock"):
        out["inStock"] = stock != "outofstock"
    if isinstance(p.get("stock_quantity"), int) and not isinstance(p.get("stock_quantity"), bool):
        out["stockQuantity"] = p["stock_quantity"]
    if isinstance(p.get("rating_count"), int) and p["rating_count"] > 0:  # no reviews: no rating
        out["rating"] = p.get("average_rating")
        out["reviewCount"] = p["rating_count"]
    if isinstance(p.get("status"), str):
        out["isActive"] = p["status"] == "publish"
    attributes = {}
    for a in p.get("attributes") or []:
        if not isinstance(a, dict) or not _text(a.get("name")):
            continue
        value = a.get("option") if "option" in a else ", ".join(str(o) for o in a.get("options") or [])
        if value not in (None, ""):
            attributes[a["name"]] = str(value)
    if attributes:
        out["attributes"] = attributes
    return out


def _shopify_images(p: Mapping[str, Any]) -> dict[str, str]:
    """Image id → URL, the product's main image first."""
    out: dict[str, str] = {}
    featured = p.get("featuredImage") or p.get("image")
    candidates = [featured] if isinstance(featured, dict) else []
    candidates += [i for i in _nodes(p.get("images")) if isinstance(i, dict)]
    for image in candidates:
        url = _text(image.get("src")) or _text(image.get("url"))
        if url:
            out.setdefault(_id(image.get("id")) or url, url)
    return out


def _shopify_variant(
    v: Mapping[str, Any], options: list[str | None], images: Mapping[str, str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    price = _amount(v.get("price"))
    compare = _amount(v.get("compare_at_price", v.get("compareAtPrice")))
    if price is not None:
        # Shopify's compare-at price is the original one when the variant is on sale.
        if compare is not None and compare[0] > price[0]:
            out["price"], out["salePrice"] = compare[0], price[0]
        else:
            out["price"] = price[0]
        if price[1]:
            out["currency"] = price[1]
    if _text(v.get("sku")):
        out["sku"] = v["sku"]
    quantity = v.get("inventory_quantity", v.get("inventoryQuantity"))
    if isinstance(quantity, int) and not isinstance(quantity, bool):
        out["stockQuantity"] = quantity
    if isinstance(v.get("availableForSale"), bool):
        out["inStock"] = v["availableForSale"]
    elif "inventory_management" in v and isinstance(quantity, int):
        # Untracked inventory, or selling when out of stock, means it can be bought.
        out["inStock"] = (
            v.get("inventory_management") is None or quantity > 0 or v.get("inventory_policy") == "continue"
        )
    image = v.get("image")
    image_url = _text(image.get("url")) or _text(image.get("src")) if isinstance(image, dict) else None
    image_url = image_url or images.get(_id(v.get("image_id")) or "")
    if image_url:
        out["imageUrl"] = image_url
    attributes: dict[str, str] = {}
    for selected in v.get("selectedOptions") or []:
        if isinstance(selected, dict) and _text(selected.get("name")) and selected.get("value") is not None:
            attributes[selected["name"]] = str(selected["value"])
    for i, name in enumerate(options[:3], start=1):
        value = v.get(f"option{i}")
        if name and value is not None:
            attributes[name] = str(value)
    attributes = {k: v for k, v in attributes.items() if v != _DEFAULT_VARIANT}
    if attributes:
        out["attributes"] = attributes
    return out
