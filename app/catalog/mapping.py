"""From a feed row to Neuroon's product fields: which column feeds which field.

Each Neuroon field has a list of column names tried in order (the defaults cover Neuroon's own
names, snake_case, Google Shopping, Shopify and WooCommerce exports). A JSON file
(``GATEWAY_CATALOG_FIELD_MAP``) replaces the list of any field, e.g. ``{"name": ["Title"]}``; a dotted
name (``"variant.price"``) reads a nested JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "externalId": ("externalId", "external_id", "id", "product_id", "productId"),
    "parentExternalId": ("parentExternalId", "parent_external_id", "parent_id", "parentId"),
    "name": ("name", "title", "product_name"),
    "description": ("description", "body_html", "long_description"),
    "shortDescription": ("shortDescription", "short_description", "summary"),
    "price": ("price", "regular_price"),
    "salePrice": ("salePrice", "sale_price"),
    "currency": ("currency", "price_currency"),
    "url": ("url", "link", "permalink", "product_url"),
    "imageUrl": ("imageUrl", "image_url", "image_link", "image"),
    "sku": ("sku", "mpn"),
    "categories": ("categories", "category", "category_path", "product_type"),
    "brands": ("brands", "brand", "vendor", "manufacturer"),
    "tags": ("tags",),
    "inStock": ("inStock", "in_stock", "availability", "stockStatus", "stock_status"),
    "stockQuantity": ("stockQuantity", "stock_quantity", "quantity", "inventory_quantity"),
    "rating": ("rating", "average_rating"),
    "reviewCount": ("reviewCount", "review_count", "rating_count"),
    "isActive": ("isActive", "is_active", "active"),
    "attributes": ("attributes",),
}

CategoryOrder = Literal["root_first", "specific_first"]

# The columns that name a product in a flat feed, per product identity (app/product_identity.py). A column
# named after Neuroon's own field comes first: the feed then says itself what the externalId is. Under
# ``sku`` the SKU column wins over the feed's ``id``; a flat feed without one names products by its own id
# (Google Shopping's ``id`` is "the SKU where possible"), and the report counts those rows.
IDS_FOR_SKU = ("id", "product_id", "productId")
IDENTITY_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "sku": {
        "externalId": ("externalId", "external_id", "sku", *IDS_FOR_SKU),
        "parentExternalId": ("parentExternalId", "parent_external_id", "parent_sku", "parent_id", "parentId"),
    },
    "variant_id": {
        "externalId": DEFAULT_COLUMNS["externalId"],
        "parentExternalId": DEFAULT_COLUMNS["parentExternalId"],
    },
    "product_id": {
        "externalId": DEFAULT_COLUMNS["externalId"],
        "parentExternalId": DEFAULT_COLUMNS["parentExternalId"],
    },
}


class MappingError(Exception):
    """The field-mapping file is unreadable or malformed."""


@dataclass(frozen=True)
class FieldMapping:
    columns: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    # How a *list* of categories in the feed is ordered (a "A > B > C" path is always root first).
    category_list_order: CategoryOrder = "root_first"
    # Fields the operator's GATEWAY_CATALOG_FIELD_MAP named: their columns win over the identity's.
    overridden: frozenset[str] = frozenset()

    def with_identity(self, identity: str) -> FieldMapping:
        """This mapping with the id columns of ``identity``, unless the field map chose them."""
        columns = dict(self.columns)
        for name, names in IDENTITY_COLUMNS[identity].items():
            if name not in self.overridden:
                columns[name] = names
        return FieldMapping(columns, self.category_list_order, self.overridden)

    def extract(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Neuroon field -> the row's value, for every field whose column is present and not empty."""
        out: dict[str, Any] = {}
        for target, names in self.columns.items():
            for name in names:
                value = _lookup(row, name)
                if value is None or (isinstance(value, str) and not value.strip()):
                    continue
                out[target] = value
                break
        return out

    def external_id(self, row: Mapping[str, Any]) -> str | None:
        """Only the id (reconcile needs no more), as normalise would read it."""
        found = self.id_column(row)
        return None if found is None else str(_lookup(row, found)).strip()

    def id_column(self, row: Mapping[str, Any]) -> str | None:
        """The column the row's externalId comes from."""
        for name in self.columns.get("externalId", ()):
            value = _lookup(row, name)
            if isinstance(value, bool) or value is None:
                continue
            if str(value).strip():
                return name
        return None


def _lookup(row: Mapping[str, Any], name: str) -> Any:
    if name in row:
        return row[name]
    if "." in name:
        value: Any = row
        for part in name.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return None
            value = value[part]
        return value
    return None


def load_mapping(path: Path | None) -> FieldMapping:
    if path is None:
        return FieldMapping()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"GATEWAY_CATALOG_FIELD_MAP: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise MappingError(f"GATEWAY_CATALOG_FIELD_MAP: {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MappingError("GATEWAY_CATALOG_FIELD_MAP: the file must hold a JSON object")
    columns = dict(DEFAULT_COLUMNS)
    order: CategoryOrder = "root_first"
    for key, value in data.items():
        if key == "categoryListOrder":
            if value not in ("root_first", "specific_first"):
                raise MappingError(
                    "GATEWAY_CATALOG_FIELD_MAP: categoryListOrder must be root_first or specific_first"
                )
            order = value
            continue
        if key not in DEFAULT_COLUMNS:
            raise MappingError(f"GATEWAY_CATALOG_FIELD_MAP: unknown field {key!r}")
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise MappingError(
                f"GATEWAY_CATALOG_FIELD_MAP: {key} must be a column name or a list of column names"
            )
        columns[key] = tuple(names)
    return FieldMapping(columns, order, frozenset(data) - {"categoryListOrder"})
