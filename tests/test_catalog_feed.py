"""Reading feeds: JSON Lines, JSON arrays and CSV, streamed, with unreadable rows reported by line."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest

from app.catalog import feed as feed_module
from app.catalog.feed import FeedError, FeedFormat, open_feed, where


def read(tmp_path: Path, name: str, text: str) -> list[tuple[int, object, str | None]]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return [(r.line, r.data, r.error) for r in open_feed(str(path))]


def test_json_lines_with_decimal_prices_and_bad_lines(tmp_path: Path) -> None:
    rows = read(tmp_path, "f.jsonl", '{"id": "a", "price": 19.90}\n\n{broken\n[1]\n{"id": "b"}\n')
    assert rows[0] == (1, {"id": "a", "price": Decimal("19.90")}, None)
    assert rows[1][0] == 3
    assert rows[1][2] is not None
    assert "invalid JSON" in rows[1][2]
    assert rows[2] == (4, None, "a row must be a JSON object")
    assert rows[3] == (5, {"id": "b"}, None)


def test_deeply_nested_json_is_a_row_error_not_a_crash(tmp_path: Path) -> None:
    rows = read(tmp_path, "f.jsonl", "[" * 100_000 + "\n" + '{"id": "ok"}\n')
    assert rows[0][1] is None
    assert "invalid JSON" in str(rows[0][2])
    assert rows[1] == (2, {"id": "ok"}, None)
    nested = read(tmp_path, "g.json", "[" + "[" * 100_000)
    assert nested[-1][1] is None


def test_json_array_elements_with_their_line_numbers(tmp_path: Path) -> None:
    text = '[\n  {"id": "a", "price": 1.5},\n  {"id": "b"},\n  "x",\n  {"id": "c"}\n]\n'
    rows = read(tmp_path, "f.json", text)
    assert rows == [
        (2, {"id": "a", "price": Decimal("1.5")}, None),
        (3, {"id": "b"}, None),
        (4, None, "a row must be a JSON object"),
        (5, {"id": "c"}, None),
    ]


def test_json_array_is_streamed_in_small_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_module, "CHUNK", 7)  # elements span many reads
    text = "[" + ",\n".join(f'{{"id": "p{i}", "name": "{"x" * 30}"}}' for i in range(50)) + "]"
    rows = read(tmp_path, "f.json", text)
    assert [r[1]["id"] for r in rows if isinstance(r[1], dict)] == [f"p{i}" for i in range(50)]
    assert rows[-1][0] == 50


def test_truncated_json_array_reports_the_rest_as_unreadable(tmp_path: Path) -> None:
    rows = read(tmp_path, "f.json", '[{"id": "a"}, {"id": "b", "na')
    assert rows[0][1] == {"id": "a"}
    assert rows[1][1] is None
    assert "invalid JSON" in str(rows[1][2])


def test_unclosed_json_array(tmp_path: Path) -> None:
    rows = read(tmp_path, "f.json", '[{"id": "a"},\n')
    assert rows[-1][2] == "the JSON array is not closed (truncated feed?)"


def test_json_that_is_not_an_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text('{"items": [{"id": "a"}]}')
    with pytest.raises(FeedError, match="array"):
        list(open_feed(str(path)))


@pytest.mark.parametrize(
    "document",
    [
        '{"products": [{"id": "a"}, 7, {"id": "b"}]}',  # Shopify Admin REST list
        '{"data": {"products": {"nodes": [{"id": "a"}, 7, {"id": "b"}]}}}',  # GraphQL, nodes
        '{"data": {"products": {"edges": [{"node": {"id": "a"}}, 7, {"node": {"id": "b"}}]}}}',
    ],
)
def test_a_platform_answer_holding_products_is_read_by_element(tmp_path: Path, document: str) -> None:
    path = tmp_path / "f.json"
    path.write_text(document)
    rows = list(open_feed(str(path)))
    assert [(r.element, r.data, r.error) for r in rows] == [
        (0, {"id": "a"}, None),
        (1, None, "a row must be a JSON object"),
        (2, {"id": "b"}, None),
    ]


def test_rows_of_a_minified_array_are_told_apart_by_element(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text('[{"id": "a"},{"id": "b"},"x",{"id": "c"}]')
    rows = list(open_feed(str(path)))
    assert [(r.line, r.element) for r in rows] == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert [where(r.line, r.element) for r in rows][2] == "element [2]"


def test_csv_with_quoted_newlines_and_ragged_rows(tmp_path: Path) -> None:
    text = 'id,title,price\r\na,"Two\nlines",1.00\r\nb,short\r\n,,\r\nc,C,2\r\n'
    rows = read(tmp_path, "f.csv", text)
    assert rows == [
        (2, {"id": "a", "title": "Two\nlines", "price": "1.00"}, None),
        (4, None, "2 columns where the header has 3"),
        (6, {"id": "c", "title": "C", "price": "2"}, None),
    ]


def test_format_is_detected_from_content_when_the_extension_says_nothing(tmp_path: Path) -> None:
    for text, fmt in (
        ('[{"id": 1}]', FeedFormat.JSON),
        ('{"id": 1}\n', FeedFormat.JSONL),
        ("id\n1\n", "csv"),
    ):
        path = tmp_path / "feed.txt"
        path.write_text(text)
        with open_feed(str(path)) as feed:
            assert feed.format == fmt


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.StringIO('{"id": "a"}\n{"id": "b"}\n')
    feed = open_feed("-", stdin)
    assert feed.format is FeedFormat.JSONL
    assert [r.data for r in feed] == [{"id": "a"}, {"id": "b"}]


def test_missing_file_is_a_feed_error(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="cannot read"):
        open_feed(str(tmp_path / "nope.jsonl"))
