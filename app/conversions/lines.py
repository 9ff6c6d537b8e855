"""The one place that decides, per order line, whether it can be sent to Neuroon, and what is sent.

A line is sent when it has a usable productId and a searchLogId, both in the normal form of
``app.identifiers`` (the form the catalog gives externalIds and the clicks are kept in), and valid
for Neuroon's contract (neuroon-api.md §9.2: ``searchLogId`` is ``@NotBlank``, ``quantity`` an
integer). Every other line is left out with its reason, kept in the order's record
(``skippedLines``), and never sent: one bad line must not cost the order, nor dead-letter it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from app.conversions.orders import Order, OrderLine, shown_id
from app.identifiers import normalise_identifier
from app.neuroon.models import ConversionItem, ConversionRequest

# Neuroon documents no maximum for an externalId (neuroon-api.md §5.2); the widget's clicks we keep
# are capped at the same length (attribution.MAX_KEY_LENGTH), so a longer id could never match one.
MAX_ID_LENGTH = 256
UNATTRIBUTED = "no search click recorded for this product"
BLANK_CLICK = "its searchLogId is blank (Neuroon refuses a blank one)"


@dataclass(frozen=True, slots=True)
class SkippedLine:
    index: int  # position in the payload's list of lines
    product_id: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.index, "productId": self.product_id, "reason": self.reason}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> SkippedLine:
        return cls(value["line"], value["productId"], value["reason"])


@dataclass(frozen=True, slots=True)
class Decision:
    conversion: ConversionRequest | None  # None: no line can be sent
    skipped: tuple[SkippedLine, ...]
    # productIds of usable lines that nothing given to ``decide`` attributes (clicks posted for the
    # cart may): found while deciding, so intake does not read every line a second time.
    unattributed: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        """Why nothing is sent (when ``conversion`` is None)."""
        if all(s.reason == UNATTRIBUTED for s in self.skipped):
            return "no line is attributable to a search"  # the everyday case: no search led to it
        shown = "; ".join(f"line {s.index}: {s.reason}" for s in self.skipped[:5])
        more = f" (and {len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
        return f"no line can be sent to Neuroon: {shown}{more}"


def product_id(line: OrderLine) -> tuple[str | None, str | None]:
    """The line's productId in normal form, or None and the reason it cannot be used."""
    if line.product_id is None:
        return None, "no product id"
    normal = normalise_identifier(line.product_id)
    if not normal:
        return None, "the product id is blank"
    if len(normal) > MAX_ID_LENGTH:
        return None, f"the product id is longer than {MAX_ID_LENGTH} characters"
    return normal, None


def clean_search_log_id(value: str | None) -> str | None:
    """A searchLogId in normal form; None when absent or blank (Neuroon answers 400 to a blank one)."""
    if value is None:
        return None
    normal = normalise_identifier(value)
    return normal if 0 < len(normal) <= MAX_ID_LENGTH else None


def _search_log_id(
    order: Order, line: OrderLine, pid: str, stored: Sequence[Mapping[str, str]]
) -> str | None:
    """From, in order: the line's own id, the payload's clicks, then clicks posted for the cart."""
    own = clean_search_log_id(line.search_log_id)
    if own:
        return own
    for clicks in (*order.clicks, *stored):
        found = clicks.get(pid)  # clicks are normalised when parsed (attribution.parse_clicks)
        if found:
            return found
    return None


def decide(order: Order, stored: Sequence[Mapping[str, str]] = ()) -> Decision:
    """What to send for ``order`` (its sendable lines) and which lines are left out, and why."""
    items: list[ConversionItem] = []
    skipped = [SkippedLine(u.index, u.product_id, u.reason) for u in order.unreadable]
    unattributed: list[str] = []
    for line in order.lines:
        pid, problem = product_id(line)
        if pid is None:
            skipped.append(SkippedLine(line.index, shown_id(line.product_id), problem or "no product id"))
            continue
        search_log_id = _search_log_id(order, line, pid, stored)
        if search_log_id is None:
            reason = UNATTRIBUTED if line.search_log_id is None else BLANK_CLICK
            skipped.append(SkippedLine(line.index, pid, reason))
            unattributed.append(pid)
            continue
        try:
            items.append(
                ConversionItem(
                    product_id=pid,
                    search_log_id=search_log_id,
                    quantity=line.quantity,
                    line_total=line.line_total,
                )
            )
        except ValidationError as exc:  # e.g. a line total computed past 15 digits
            skipped.append(SkippedLine(line.index, pid, _first_error(exc)))
    skipped.sort(key=lambda s: s.index)
    if not items:
        return Decision(None, tuple(skipped), tuple(unattributed))
    conversion = ConversionRequest(
        order_id=order.order_id, order_value=order.order_value, currency=order.currency, conversions=items
    )
    return Decision(conversion, tuple(skipped), tuple(unattributed))


def queued(body: str | bytes) -> ConversionRequest | None:
    """A queued conversion as it is sent, read again with the rules above: an order queued before
    one of them existed (a blank click id, a padded SKU) loses only its unusable lines instead of
    being refused by Neuroon, dead-lettered, and refused again on every replay. None when the body
    is unreadable or no line of it is left."""
    try:
        conversion = ConversionRequest.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        return None
    items = []
    for item in conversion.conversions:
        pid = normalise_identifier(item.product_id)
        search_log_id = clean_search_log_id(item.search_log_id)
        if (
            pid
            and len(pid) <= MAX_ID_LENGTH
            and search_log_id
            and (item.quantity is None or item.quantity > 0)
        ):
            items.append(item.model_copy(update={"product_id": pid, "search_log_id": search_log_id}))
    if not items:
        return None
    return conversion.model_copy(update={"conversions": items})


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_input=False)[0]
    return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
