"""The neuroon_clicks cookie, read defensively."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from app.conversions.attribution import parse_clicks

CLICKS = {"SKU-1": "log_a", "SKU/2": "log_b", "Ünï": "log_c"}


def test_plain_json() -> None:
    assert parse_clicks(json.dumps(CLICKS)) == CLICKS


def test_url_encoded_json() -> None:
    assert parse_clicks(quote(json.dumps(CLICKS), safe="")) == CLICKS


def test_double_encoded_json_string() -> None:
    assert parse_clicks(json.dumps(json.dumps(CLICKS))) == CLICKS


def test_decoded_object() -> None:
    assert parse_clicks(CLICKS) == CLICKS


@pytest.mark.parametrize("cut", range(1, 60))
def test_truncation_anywhere_keeps_exactly_the_complete_pairs(cut: int) -> None:
    raw = json.dumps({"A": "log_1", "B": "log_22", "C": "log_333"}, separators=(",", ":"))
    text = raw[: len(raw) - cut] if cut < len(raw) else ""
    result = parse_clicks(text)
    complete = {
        k: v for k, v in {"A": "log_1", "B": "log_22", "C": "log_333"}.items() if f'"{k}":"{v}"' in text
    }
    assert result == complete


@pytest.mark.parametrize("cut", [5, 17, 30, 41])
def test_truncated_url_encoded_value(cut: int) -> None:
    raw = quote(json.dumps({"A": "log_1", "B": "log_22"}, separators=(",", ":")), safe="")
    result = parse_clicks(raw[: len(raw) - cut])
    assert result.items() <= {"A": "log_1", "B": "log_22"}.items()


@pytest.mark.parametrize(
    "raw",
    [
        None,
        5,
        "",
        "not json",
        "[1,2]",
        '{"a": 1}',
        '{"": "x"}',
        "%zz",
        '"just a string"',
        "null",
        "{" * 10000,
    ],
)
def test_garbage_yields_nothing_and_never_raises(raw: object) -> None:
    assert parse_clicks(raw) == {}


def test_escaped_quotes_inside_keys() -> None:
    raw = json.dumps({'SKU "quoted"': "log_q", "B": "log_b"})
    assert parse_clicks(raw[:-10]) == {'SKU "quoted"': "log_q"}
