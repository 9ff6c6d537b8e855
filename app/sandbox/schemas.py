"""What the sandbox accepts, written from the docs independently of the client's models, so that a
mistake in one is caught by the other. Spring's ``@NotBlank`` becomes ``NotBlank`` (whitespace fails)."""

from __future__ import annotations

import unicodedata
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _clean_id(value: str) -> str:
    """An id to be matched against others (a product's externalId, a click the widget issued).

    Stricter than Spring's ``@NotBlank`` (which trims only ASCII): the docs say nothing of such
    characters, but an id padded with spaces, or carrying a control, zero-width or bidi character,
    or not in Unicode NFC, never equals the externalId synced or the searchLogId the widget issued,
    so Neuroon could only drop it as noise or refuse it. Refusing it here proves the gateway never
    sends one.
    """
    if not value.strip():
        raise ValueError("must not be blank")
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") for c in value):
        raise ValueError("must not contain control or invisible characters")
    if not unicodedata.is_normalized("NFC", value):
        raise ValueError("must be in Unicode NFC")
    return value


NotBlank = Annotated[str, AfterValidator(_not_blank)]
CleanId = Annotated[str, AfterValidator(_clean_id)]
Amount = Annotated[Decimal, Field(allow_inf_nan=False)]


class _Body(BaseModel):
    # Jackson in Spring Boot ignores unknown properties; so do we.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="ignore")


class ProductIn(_Body):
    """PluginProductDTO (neuroon-api.md §5.2)."""

    external_id: NotBlank
    name: Annotated[str, Field(max_length=512), AfterValidator(_not_blank)]
    price: Annotated[Amount, Field(ge=0)]
    url: NotBlank
    sku: str | None = None
    description: Annotated[str, Field(max_length=5000)] | None = None
    sale_price: Annotated[Amount, Field(ge=0)] | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    image_url: str | None = None
    categories: list[str] | None = None
    brands: list[str] | None = None
    tags: list[str] | None = None
    in_stock: bool | None = None
    stock_quantity: int | None = None
    rating: Annotated[Amount, Field(ge=0, le=5)] | None = None
    review_count: Annotated[int, Field(ge=0)] | None = None
    is_active: bool | None = None
    parent_external_id: str | None = None
    attributes: dict[str, str] | None = None


class SyncIn(_Body):
    sync_type: Literal["INCREMENTAL", "FULL"]
    products: Annotated[list[ProductIn], Field(min_length=1, max_length=500)]


class ConversionItemIn(_Body):
    product_id: CleanId
    search_log_id: CleanId  # @NotBlank on ConversionItem (ShopRequestDTO.java:92): blank is a 400
    # An int in the DTO. Jackson would coerce 1.5 or "2" (ACCEPT_FLOAT_AS_INT): strict here, so that
    # a fractional quantity is caught where it is made, not rounded away unseen; a sale has units.
    quantity: Annotated[int, Field(strict=True, ge=1)] | None = None
    line_total: Amount | None = None


class ConversionIn(_Body):
    # Which of these are required is not documented (neuroon-api.md §9.2); orderId is the dedupe key,
    # so it must be there, and an order without items has nothing to attribute.
    order_id: NotBlank
    order_value: Amount | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    conversions: Annotated[list[ConversionItemIn], Field(min_length=1)]


class VerifyIn(_Body):
    domain: str | None = None
