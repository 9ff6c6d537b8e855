"""The documented product rules, one at a time (neuroon-server-to-server.txt, "Payload semantics")."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.catalog.mapping import FieldMapping, MappingError, load_mapping
from app.catalog.normalise import RowError, Rules, categories_of, cut_at_word, html_to_text, normalise
from app.identifiers import normalise_identifier
from app.neuroon.models import Product

BASE = {"id": "SKU-1", "title": "Trail shoe", "price": "49.99", "link": "https://shop.example/p/1"}


def product(rules: Rules | None = None, **fields: Any) -> Product:
    result = normalise(BASE | fields, 7, rules or Rules())
    assert isinstance(result, Product), result
    return result


def error(**fields: Any) -> RowError:
    row = {k: v for k, v in (BASE | fields).items() if v is not None}
    result = normalise(row, 7, Rules())
    assert isinstance(result, RowError), result
    assert result.line == 7
    return result


def test_common_column_names_map_to_neuroon_fields() -> None:
    p = product(brand="Acme", image_link="https://cdn.example/1.jpg", availability="out of stock")
    assert p.to_wire() == {
        "externalId": "SKU-1",
        "name": "Trail shoe",
        "price": 49.99,
        "url": "https://shop.example/p/1",
        "imageUrl": "https://cdn.example/1.jpg",
        "brands": ["Acme"],
        "inStock": False,
    }


def test_html_becomes_plain_text() -> None:
    html = (
        "<p>Light &amp; fast&nbsp;shoe.</p><script>alert('x')</script><style>p{color:red}</style>"
        "<ul><li>Grip</li><li>Drop&#160;8&nbsp;mm</li></ul>\n\n  <b>Caf&eacute;</b>"
    )
    assert html_to_text(html) == "Light & fast\xa0shoe. Grip Drop\xa08\xa0mm Café".replace("\xa0", " ")


def test_description_is_plain_text_without_tags_or_scripts() -> None:
    p = product(description="<div>Great <em>shoe</em><script>track()</script> &lt;3</div>")
    assert p.description == "Great shoe <3"


def test_short_description_is_preferred() -> None:
    p = product(description="<p>A very long story</p>", short_description="<p>Short &amp; sweet</p>")
    assert p.description == "Short & sweet"


def test_long_description_is_cut_at_a_word_boundary_to_the_soft_limit() -> None:
    words = " ".join(f"word{i}" for i in range(1000))  # ~6900 characters
    p = product(description=f"<p>{words}</p>")
    assert p.description is not None
    assert len(p.description) <= 2000
    assert words.startswith(p.description)
    assert words[len(p.description)] == " "  # cut between words


def test_soft_limit_is_configurable_and_never_over_5000() -> None:
    words = " ".join(f"word{i}" for i in range(2000))
    assert len(product(Rules(description_soft_limit=300), description=words).description or "") <= 300
    assert len(product(Rules(description_soft_limit=9000), description=words).description or "") <= 5000


def test_cut_at_word_cuts_inside_a_word_only_when_one_word_is_too_long() -> None:
    assert cut_at_word("abc def ghi", 9) == "abc def"
    assert cut_at_word("x" * 20, 10) == "x" * 10
    assert cut_at_word("short", 10) == "short"


def test_name_is_at_most_512() -> None:
    p = product(title="word " * 200)
    assert len(p.name) <= 512
    assert p.name.endswith("word")


def test_category_path_becomes_hierarchy_most_specific_first() -> None:
    assert product(category="Men > Shoes > Running").categories == ["Running", "Shoes", "Men"]
    assert categories_of("Home &gt; Garden") == ["Garden", "Home"]


def test_category_list_is_read_root_first_unless_mapped_otherwise() -> None:
    assert product(categories=["Men", "Shoes", "Running"]).categories == ["Running", "Shoes", "Men"]
    rules = Rules(mapping=FieldMapping(category_list_order="specific_first"))
    assert product(rules, categories=["Running", "Shoes", "Men"]).categories == ["Running", "Shoes", "Men"]


def test_several_category_paths_each_reversed() -> None:
    cats = product(categories=["Men > Shoes", "Sale > Shoes"]).categories
    assert cats == ["Shoes", "Men", "Sale"]


def test_brands_only_from_a_brand_field_never_from_the_title() -> None:
    assert product(title="Nike Air Zoom").brands is None
    assert product(vendor="Nike").brands == ["Nike"]
    assert product(brands=["Nike", "Jordan"]).brands == ["Nike", "Jordan"]


def test_prices_are_decimal_and_keep_their_digits() -> None:
    p = product(price=Decimal("19.90"), sale_price="14.95 EUR")
    assert p.price == Decimal("19.90")
    assert p.sale_price == Decimal("14.95")
    assert p.currency == "EUR"
    assert isinstance(p.price, Decimal)


def test_google_style_price_with_currency() -> None:
    p = product(price="1299.00 USD")
    assert (p.price, p.currency) == (Decimal("1299.00"), "USD")


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"price": "-1"}, "price", ">= 0"),
        ({"price": "abc"}, "price", "decimal number"),
        ({"price": "NaN"}, "price", "decimal number"),
        ({"price": True}, "price", "number"),
        ({"price": None}, "price", "missing"),
        ({"price": "1,299.00"}, "price", "decimal number"),
        ({"price": "10 EUR", "currency": "USD"}, "currency", "contradicts"),
        ({"currency": "euro"}, "currency", "three-letter"),
        ({"id": None}, "externalId", "missing"),
        ({"id": "  "}, "externalId", "missing"),
        ({"id": "\x00\u200b\u00a0"}, "externalId", "blank"),
        ({"title": None}, "name", "missing"),
        ({"title": "<b></b>"}, "name", "blank"),
        ({"link": "/p/1"}, "url", "http(s) URL"),
        ({"link": None}, "url", "missing"),
        ({"image_link": "javascript:alert(1)"}, "imageUrl", "http(s) URL"),
        ({"availability": "maybe"}, "inStock", "true/false"),
        ({"stock_quantity": "2.5"}, "stockQuantity", "whole number"),
        ({"rating": "7"}, "rating", "between 0 and 5"),
        ({"review_count": "-3"}, "reviewCount", ">= 0"),
        ({"attributes": ["red"]}, "attributes", "object"),
        ({"categories": {"a": 1}}, "categories", "list"),
        ({"tags": [{"x": 1}]}, "tags", "texts"),
        ({"title": ["x"]}, "name", "text"),
    ],
)
def test_malformed_rows_are_reported_with_field_and_reason(
    fields: dict[str, Any], field: str, reason: str
) -> None:
    err = error(**fields)
    assert err.field == field
    assert reason in err.reason


@pytest.mark.parametrize("raw", [" SKU-1", "SKU-1\u00a0", "\u200bSKU-1", "SKU-\t1\n", "\ufeffSKU-1"])
def test_external_ids_take_the_normal_form_conversions_use(raw: str) -> None:
    # The catalog and the orders must name a product by the same string (app.identifiers).
    assert product(id=raw).external_id == "SKU-1" == normalise_identifier(raw)
    assert product(id="\u00e9", parent_id="e\u0301").parent_external_id is None  # NFC: the same id


def test_variant_keeps_its_parent_and_self_parent_is_ignored() -> None:
    assert product(parent_id="SKU-0").parent_external_id == "SKU-0"
    assert product(parent_id="SKU-1").parent_external_id is None


def test_stock_status_words() -> None:
    assert product(stock_status="instock").in_stock is True
    assert product(stock_status="outofstock").in_stock is False
    assert product(stock_quantity="12").stock_quantity == 12


def test_mapping_file_overrides_columns(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text('{"name": ["Titel"], "price": "Preis", "categoryListOrder": "specific_first"}')
    mapping = load_mapping(path)
    result = normalise(
        {"id": "X", "Titel": "Schuh", "Preis": "9.5", "url": "https://s.example/x", "categories": ["B", "A"]},
        1,
        Rules(mapping=mapping),
    )
    assert isinstance(result, Product)
    assert (result.name, result.price, result.categories) == ("Schuh", Decimal("9.5"), ["B", "A"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1]", "JSON object"),
        ("{nope", "not valid JSON"),
        ('{"colour": ["x"]}', "unknown field"),
        ('{"name": []}', "column name"),
        ('{"categoryListOrder": "random"}', "root_first"),
    ],
)
def test_bad_mapping_files_name_the_variable(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "map.json"
    path.write_text(text)
    with pytest.raises(MappingError, match="GATEWAY_CATALOG_FIELD_MAP") as caught:
        load_mapping(path)
    assert message in str(caught.value)


SAMPLES = [
    "<p>Plain <b>bold</b> &amp; <i>italic</i></p>",
    "<div class='a>b' data-x=\"1>2\">quoted &gt; attributes</div>",
    "<SCRIPT type='text/javascript'>var a = '<p>no</p>';</SCRIPT>after",
    "<style>p { color: red }</style><p>styled</p><!-- a <b>comment</b> -->end",
    "a < b and c > d, 3<4",
    "<ul><li>one<li>two</ul><br/><img src='x.jpg' alt='pic'>tail",
    "<script>never closed <b>x</b>",
    "<div unclosed='yes' <p>odd</p>",
    "<!DOCTYPE html><html><head><title>T</title></head><body>Body &eacute;t&eacute;</body></html>",
    "<p>nbsp&nbsp;and&#160;numeric &#x41;</p>",
]


@pytest.mark.parametrize("html", SAMPLES)
def test_fast_html_path_matches_the_standard_parser(html: str) -> None:
    from app.catalog.normalise import _SPACE, _parsed_text

    expected = _SPACE.sub(" ", _parsed_text(html)).strip()
    assert html_to_text(html) == expected


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("GATEWAY_CATALOG_SYNC_LIMIT", "fast"),
        ("GATEWAY_CATALOG_BATCH_SIZE", "0"),
        ("GATEWAY_DESCRIPTION_SOFT_LIMIT", "6000"),
        ("GATEWAY_PRICES_INCLUDE_TAX", "perhaps"),
        ("GATEWAY_MAX_DELETE_RATIO", "2"),
    ],
)
def test_bad_catalog_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    from app.settings import ConfigError, load_settings

    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        load_settings(_env_file=None)


ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -7,
    10**30,
    Decimal("1e400"),
    Decimal("-0.0"),
    "",
    " ",
    "<b>",
    "x" * 6000,
    "\x00",
    "€",
    [],
    ["a", 1, None],
    [["nested"]],
    {},
    {"a": {"b": 1}},
]


@pytest.mark.parametrize("column", sorted({c for cols in FieldMapping().columns.values() for c in cols[:1]}))
def test_any_value_in_any_field_is_a_product_or_a_reported_row_never_an_exception(column: str) -> None:
    for value in ODD_VALUES:
        result = normalise(BASE | {column: value}, 3, Rules())
        assert isinstance(result, Product | RowError), (column, value)
        if isinstance(result, RowError):
            assert result.line == 3
            assert result.field
            assert result.reason
