"""Bodies of Neuroon's Plugin API: camelCase on the wire, Decimal money, nulls omitted."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
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
