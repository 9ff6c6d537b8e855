"""The documented product rules (neuroon-server-to-server.txt, "Payload semantics"), one function each.

A mapped row becomes a ``Product`` or a ``RowError`` naming the field and the reason. Nothing here
does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from html import unescape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from app.catalog.mapping import CategoryOrder, FieldMapping
from app.identifiers import normalise_identifier
from app.neuroon.models import Product

NAME_MAX = 512
DESCRIPTION_MAX = 5000  # the contract's hard limit
MONEY_DIGITS = 15
_SPACE = re.compile(r"\s+")
_PRICE = re.compile(r"^\s*(?:([A-Za-z]{3})\s+)?([+-]?\d+(?:\.\d+)?)\s*(?:([A-Za-z]{3}))?\s*$")
_TRUE = {"true", "1", "yes", "y", "in stock", "instock", "in_stock", "available", "preorder", "backorder"}
_FALSE = {"false", "0", "no", "n", "out of stock", "outofstock", "out_of_stock", "sold out", "discontinued"}


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    field: str
    reason: str
    external_id: str | None = None
    element: int | None = None  # its index, when the feed is a JSON array (one line for all when minified)


@dataclass(frozen=True, slots=True)
class Rules:
    description_soft_limit: int = 2000
    mapping: FieldMapping = field(default_factory=FieldMapping)


class Invalid(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


# --- text --------------------------------------------------------------------------------------------


class _TextExtractor(HTMLParser):
    """Text content of HTML: tags dropped, script/style content dropped, block tags as spaces."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


# The fast path: the same result as _TextExtractor for ordinary markup, ten times quicker (descriptions
# are most of a feed's bytes). Every step is linear in its input, whatever the input (interface.md
# §3.6, "any single request is parsed in time linear in its size"):
# - comments, then script/style/... blocks, are removed by a left-to-right scan with str.find (the
#   same matches, in the same order, as the non-greedy regexes this replaces, which restarted a scan
#   to the end of the text at every opening left unclosed);
# - a tag's unquoted text, and its quoted attribute values, cannot contain "<" and every quantifier
#   is possessive, so an attempt at a tag ends at the next "<" at the latest and nothing is rescanned.
# Anything it is not sure about (an unclosed comment or script, a tag left open, a "<" inside a
# quoted attribute value, a declaration) goes to html.parser, but only for inputs of at most
# _PARSER_MAX characters holding at most _PARSER_MAX_OPENINGS "<": html.parser's cost grows with each
# "<" times the rest of the input (CPython 3.11's is quadratic on "<a" repeated). Measured on 1 KiB:
# 0.17 ms with 16 "<", 3.6 ms with 512, against 0.1 ms for the fast path; so a push of 16 MiB of such
# fields costs about as much as one of ordinary markup (~2 s of CPU) instead of a minute. Past either
# bound the fast path's own result stands: an unclosed comment or skipped block hides the rest of the
# text (as html.parser does with an unclosed script), and a "<" that starts no tag it recognises
# stays as text (as html.parser leaves a tag still open at the end).
_PARSER_MAX = 1024
_PARSER_MAX_OPENINGS = 16
_SKIPPED = ("script", "style", "noscript", "template", "head", "title")
_SKIPPED_OPEN = re.compile(r"<(script|style|noscript|template|head|title)\b", re.IGNORECASE)
_SKIPPED_CLOSE = {name: re.compile(rf"</{name}\s*+>", re.IGNORECASE) for name in _SKIPPED}
_TAG = re.compile(r"</?[A-Za-z][^<>\"']*+(?:(?:\"[^<\"]*+\"|'[^<']*+')[^<>\"']*+)*+>")
_LEFTOVER = re.compile(r"<[A-Za-z/!?]")


def _without_comments(value: str) -> tuple[str, bool]:
    """Each ``<!--...-->`` as a space; False when one is left unclosed (it hides the rest)."""
    parts: list[str] = []
    pos = 0
    while (start := value.find("<!--", pos)) >= 0:
        parts.append(value[pos:start])
        end = value.find("-->", start + 4)
        if end < 0:
            return "".join(parts), False
        parts.append(" ")
        pos = end + 3
    parts.append(value[pos:])
    return "".join(parts), True


def _without_skipped_blocks(text: str) -> tuple[str, bool]:
    """Each script/style/... block as a space; False when one is left unclosed (it hides the rest)."""
    parts: list[str] = []
    pos = 0
    while (opening := _SKIPPED_OPEN.search(text, pos)) is not None:
        parts.append(text[pos : opening.start()])
        end_of_tag = text.find(">", opening.end())
        if end_of_tag < 0:
            return "".join(parts), False
        closing = _SKIPPED_CLOSE[opening.group(1).lower()].search(text, end_of_tag + 1)
        if closing is None:
            return "".join(parts), False
        parts.append(" ")
        pos = closing.end()
    parts.append(text[pos:])
    return "".join(parts), True


def _fast_text(value: str) -> tuple[str, bool]:
    """The text, and whether html.parser is sure to agree with it."""
    text, closed = _without_comments(value)
    if not closed:
        text, _ = _without_skipped_blocks(text)
        return unescape(_TAG.sub(" ", text)), False
    text, closed = _without_skipped_blocks(text)
    text = _TAG.sub(" ", text)
    return unescape(text), closed and _LEFTOVER.search(text) is None


def _parsed_text(value: str) -> str:
    parser = _TextExtractor()
    parser.feed(value)
    parser.close()
    return "".join(parser.parts)


def html_to_text(value: str) -> str:
    """Plain text: entities decoded, tags, scripts and styles removed, whitespace collapsed.

    Linear in ``value`` (see the fast path above)."""
    if "<" in value:
        fast, sure = _fast_text(value)
        odd_but_short = len(value) <= _PARSER_MAX and value.count("<") <= _PARSER_MAX_OPENINGS
        value = _parsed_text(value) if not sure and odd_but_short else fast
    else:
        value = unescape(value)
    return _SPACE.sub(" ", value).strip()


def cut_at_word(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at the last word boundary before it (mid-word only when a
    single word is longer than the limit)."""
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    space = head.rfind(" ")
    cut = head[:space] if space > limit // 2 else text[:limit]
    return cut.rstrip(" ,;:-")


# --- fields ------------------------------------------------------------------------------------------


def _text(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise Invalid(name, "must be text")
    return str(value).strip()


def _identifier(value: Any, name: str) -> str:
    # The normal form conversions use for productId too: a SKU with a stray space or a zero-width
    # character is the same product in the catalog and in the orders (app.identifiers).
    text = normalise_identifier(_text(value, name))
    if not text:
        raise Invalid(name, "must not be blank")
    return text


def parse_money(value: Any, name: str) -> tuple[Decimal, str | None]:
    """A Decimal amount (and the currency when written beside it, as in ``"49.99 EUR"``)."""
    currency = None
    if isinstance(value, bool):
        raise Invalid(name, "must be a number")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        match = _PRICE.match(value)
        if match is None:
            raise Invalid(name, "must be a decimal number such as 49.99 (optionally with a currency code)")
        if match.group(1) and match.group(3):
            raise Invalid(name, "has two currency codes")
        currency = (match.group(1) or match.group(3) or "").upper() or None
        try:
            amount = Decimal(match.group(2))
        except InvalidOperation:
            raise Invalid(name, "must be a decimal number") from None
    else:
        raise Invalid(name, "must be a number")
    if not amount.is_finite():
        raise Invalid(name, "must be a finite number")
    if amount < 0:
        raise Invalid(name, "must be >= 0")
    if len(amount.as_tuple().digits) > MONEY_DIGITS:
        raise Invalid(name, f"has more than {MONEY_DIGITS} digits")
    return amount, currency


def parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower().replace("-", " ")
        if text in _TRUE or text.replace(" ", "_") in _TRUE:
            return True
        if text in _FALSE or text.replace(" ", "_") in _FALSE:
            return False
    raise Invalid(name, "must be true/false (or in stock / out of stock)")


def parse_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise Invalid(name, "must be a whole number")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise Invalid(name, "must be a whole number") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise Invalid(name, "must be a whole number")
    if minimum is not None and number < minimum:
        raise Invalid(name, f"must be >= {minimum}")
    if abs(number) > 2**31 - 1:
        raise Invalid(name, "is out of range")
    return int(number)


def _url(value: Any, name: str) -> str:
    text = _text(value, name)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Invalid(name, "must be an absolute http(s) URL")
    return text


def _strings(value: Any, name: str, *, split: str | None = None) -> list[str]:
    if isinstance(value, str):
        items: list[Any] = value.split(split) if split else [value]
    elif isinstance(value, list):
        items = value
    else:
        raise Invalid(name, "must be a list of texts or a text")
    out: dict[str, None] = {}  # ordered, and a repeat found in constant time (a push can hold 100k)
    for item in items:
        if not isinstance(item, str | int | Decimal) or isinstance(item, bool):
            raise Invalid(name, "must contain only texts")
        text = html_to_text(str(item))
        if text:
            out[text] = None
    return list(out)


def categories_of(value: Any, order: CategoryOrder = "root_first") -> list[str]:
    """The full hierarchy, most specific first, root last (as Neuroon's guided filters want it).

    A ``"A > B > C"`` path is read root first. A list is read in ``order`` (root first by default, like a
    breadcrumb); a list of paths (a product in several categories) gives each path reversed, in turn.
    """
    if isinstance(value, str):
        paths: list[list[str]] = [_path(value)]
    elif isinstance(value, list):
        items = _strings(value, "categories")
        if any(">" in v for v in items):
            paths = [_path(v) for v in items]
        else:
            paths = [items if order == "root_first" else list(reversed(items))]
    else:
        raise Invalid("categories", "must be a list of categories or a path such as 'A > B > C'")
    out: dict[str, None] = {}  # ordered, without repeats
    for path in paths:
        for name in reversed(path):
            out.setdefault(name)
    return list(out)


def _path(text: str) -> list[str]:
    return [part.strip() for part in html_to_text(text).split(">") if part.strip()]


def _attributes(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise Invalid("attributes", "must be an object of name: value")
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, dict | list) or item is None:
            raise Invalid("attributes", f"{key}: must be a text")
        out[str(key)] = str(item).strip()
    return out


# --- the product -------------------------------------------------------------------------------------


def normalise(raw: Mapping[str, Any], line: int, rules: Rules) -> Product | RowError:
    """A feed row as Neuroon's product, or the first reason it cannot be one."""
    fields = rules.mapping.extract(raw)
    external_id: str | None = None
    try:
        if "externalId" not in fields:
            raise Invalid("externalId", "is missing")
        external_id = _identifier(fields["externalId"], "externalId")
        return _build(fields, external_id, rules)
    except Invalid as exc:
        return RowError(line, exc.field, exc.reason, external_id)


def _build(fields: dict[str, Any], external_id: str, rules: Rules) -> Product:
    out: dict[str, Any] = {"external_id": external_id}
    if "name" not in fields:
        raise Invalid("name", "is missing")
    name = cut_at_word(html_to_text(_text(fields["name"], "name")), NAME_MAX)
    if not name:
        raise Invalid("name", "must not be blank")
    out["name"] = name
    if "price" not in fields:
        raise Invalid("price", "is missing")
    price, currency = parse_money(fields["price"], "price")
    out["price"] = price
    if "salePrice" in fields:
        sale, sale_currency = parse_money(fields["salePrice"], "salePrice")
        if sale_currency and currency and sale_currency != currency:
            raise Invalid("salePrice", "is in another currency than price")
        currency = currency or sale_currency
        out["sale_price"] = sale
    if "currency" in fields:
        given = _text(fields["currency"], "currency").upper()
        if currency and given != currency:
            raise Invalid("currency", f"{given} contradicts the price's {currency}")
        currency = given
    if currency is not None:
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise Invalid("currency", "must be a three-letter ISO 4217 code")
        out["currency"] = currency
    if "url" not in fields:
        raise Invalid("url", "is missing")
    out["url"] = _url(fields["url"], "url")
    if "imageUrl" in fields:
        out["image_url"] = _url(fields["imageUrl"], "imageUrl")
    # "use the short description if you have one, or truncate to plain text with no HTML"
    for source in ("shortDescription", "description"):
        if source in fields:
            text = html_to_text(_text(fields[source], source))
            if text:
                limit = min(rules.description_soft_limit, DESCRIPTION_MAX)
                out["description"] = cut_at_word(text, limit)
                break
    if "sku" in fields:
        out["sku"] = _text(fields["sku"], "sku") or None
    if "categories" in fields:
        out["categories"] = categories_of(fields["categories"], rules.mapping.category_list_order) or None
    if "brands" in fields:  # only from a brand field: never derived from the title
        out["brands"] = _strings(fields["brands"], "brands") or None
    if "tags" in fields:
        out["tags"] = _strings(fields["tags"], "tags", split=",") or None
    if "inStock" in fields:
        out["in_stock"] = parse_bool(fields["inStock"], "inStock")
    if "stockQuantity" in fields:
        out["stock_quantity"] = parse_int(fields["stockQuantity"], "stockQuantity")
    if "rating" in fields:
        rating, _ = parse_money(fields["rating"], "rating")
        if rating > 5:
            raise Invalid("rating", "must be between 0 and 5")
        out["rating"] = rating
    if "reviewCount" in fields:
        out["review_count"] = parse_int(fields["reviewCount"], "reviewCount", minimum=0)
    if "isActive" in fields:
        out["is_active"] = parse_bool(fields["isActive"], "isActive")
    if "parentExternalId" in fields:
        parent = _identifier(fields["parentExternalId"], "parentExternalId")
        if parent != external_id:
            out["parent_external_id"] = parent
    if "attributes" in fields:
        out["attributes"] = _attributes(fields["attributes"]) or None
    try:
        return Product(**out)
    except ValidationError as exc:  # a limit of the contract that the rules above did not catch
        err = exc.errors(include_input=False)[0]
        raise Invalid(str(err["loc"][0]) if err["loc"] else "product", err["msg"]) from None
