"""Bodies of Neuroon's Plugin API: camelCase on the wire, Decimal money, nulls omitted."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PlainSerializer, field_serializer
from pydantic.alias_generators import to_camel

# Money is a Decimal everywhere in our code. Neuroon wants a JSON number, so the very last step
# writes it as one: a Decimal of at most 15 significant digits converts to the float whose
# shortest repr has exactly the same digits, so "199.95" goes out as 199.95 and nothing is rounded.
Money = Annotated[
    Decimal,
    Field(max_digits=15, allow_inf_nan=False),
    PlainSerializer(float, return_type=float, when_used="json"),
]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields in Neuroon's answers are tolerated."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, object]:
        """The JSON body: camelCase, nulls omitted (as Neuroon's own .NET sample sends), money as numbers."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ConversionItem(WireModel):
    product_id: str = Field(min_length=1)  # the product's externalId, as synced
    search_log_id: str = Field(min_length=1)  # Neuroon answers 400 when blank
    quantity: int | None = None
    line_total: Money | None = None


class ConversionRequest(WireModel):
    """Body of POST /api/plugin/shops/{shopId}/track/conversion (neuroon-api.md §9.2)."""

    order_id: str = Field(min_length=1)  # Neuroon's dedupe key
    order_value: Money | None = None
    currency: str | None = None
    conversions: list[ConversionItem] = Field(min_length=1)


# --- Products (neuroon-api.md §5) -------------------------------------------------------------------

MAX_BATCH = 500  # backend hard limit per sync request ("max 500 products per request, min 1")
CURRENCY_PATTERN = r"^[A-Z]{3}$"  # ISO 4217 alphabetic code


class SyncType(StrEnum):
    # INCREMENTAL upserts by externalId; FULL wipes the shop's catalog before inserting the batch
    # (neuroon-server-to-server.txt, "Payload semantics"), so a FULL request replaces everything.
    INCREMENTAL = "INCREMENTAL"
    FULL = "FULL"


class Product(WireModel):
    """PluginProductDTO with the limits the docs give (neuroon-api.md §5.2); unknown fields tolerated."""

    external_id: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=512)
    price: Money = Field(ge=0)
    url: str = Field(min_length=1)
    sku: str | None = None
    description: str | None = Field(default=None, max_length=5000)
    sale_price: Money | None = Field(default=None, ge=0)
    currency: str | None = Field(default=None, pattern=CURRENCY_PATTERN)
    image_url: str | None = None
    categories: list[str] | None = None
    brands: list[str] | None = None
    tags: list[str] | None = None
    in_stock: bool | None = None
    stock_quantity: int | None = None
    rating: Decimal | None = Field(default=None, ge=0, le=5, allow_inf_nan=False)
    review_count: int | None = Field(default=None, ge=0)
    is_active: bool | None = None
    parent_external_id: str | None = None
    attributes: dict[str, str] | None = None

    @field_serializer("rating", when_used="json")
    def _rating_as_number(self, value: Decimal | None) -> float | None:
        return None if value is None else float(value)


class SyncRequest(WireModel):
    """Body of POST /api/plugin/shops/{shopId}/products/sync."""

    sync_type: SyncType
    products: list[Product] = Field(min_length=1, max_length=MAX_BATCH)


class SyncError(WireModel):
    external_id: str | None = None
    message: str | None = None


class SyncResult(WireModel):
    """The sync answer. Its current shape is undocumented (neuroon-api.md §5.5): every field is optional,
    and unknown ones are ignored, so whatever Neuroon returns parses."""

    synced: int | None = None
    created: int | None = None
    updated: int | None = None
    failed: int | None = None
    errors: list[SyncError] = Field(default_factory=list)
    products_count: int | None = None
    remaining_products: int | None = None


class ProductPage(WireModel):
    """One page of GET /products?cursor=… (the shape of the docs' reconcile sample: products, nextCursor)."""

    products: list[Product] = Field(default_factory=list)
    next_cursor: str | None = None


# --- Verification and shop info (neuroon-api.md §6) ----------------------------------------------------


class VerificationData(WireModel):
    """Verify's PluginVerificationDataDTO and verification-data's VerificationDataDTO in one tolerant model:
    the two doc revisions name different fields (neuroon-api.md §6.2), so all are optional."""

    shop_id: str | None = None
    verification_code: str | None = None
    domain: str | None = None
    name: str | None = None
    instructions: str | None = None
    verified: bool | None = None
    verified_at: str | None = None  # ISO-8601, possibly without a zone (neuroon-api.md §1)


class VerifyOutcome(WireModel):
    """What verify did: a 409 "already verified" is success too (``already_verified``, no data)."""

    already_verified: bool
    data: VerificationData | None = None


class ShopInfo(WireModel):
    """GET /api/plugin/shops/me. Only the plan quotas are documented; the rest is best effort."""

    id: str | None = Field(default=None, validation_alias=AliasChoices("id", "shopId"))
    name: str | None = None
    url: str | None = None
    verified: bool | None = None
    plan: str | None = None
    max_products: int | None = None
    max_searches_per_month: int | None = None
    products_count: int | None = None
