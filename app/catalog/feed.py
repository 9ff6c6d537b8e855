"""Reading a product feed as a stream of rows: JSON Lines, a JSON array or CSV.

Memory stays flat: JSON Lines and CSV are read a line at a time, a JSON array one element at a time
(``raw_decode`` over a sliding buffer). Numbers are parsed as ``Decimal`` so that prices never pass
through a float. A row that cannot be parsed is yielded with an error, and reading goes on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Protocol

CHUNK = 64 * 1024
MAX_ELEMENT = 8 * 1024 * 1024  # one product larger than this is not a product
MAX_DOCUMENT = 256 * 1024 * 1024  # a wrapped export ({"products": [...]}) is read whole: bounded
csv.field_size_limit(MAX_ELEMENT)


class FeedFormat(StrEnum):
    JSONL = "jsonl"
    JSON = "json"
    CSV = "csv"


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One row: its line number (1-based, where the row starts) and its fields, or why it is unreadable.
    Rows of a JSON array also carry their ``element`` index (0-based): a minified array is one line."""

    line: int
    data: dict[str, Any] | None
    error: str | None = None
    element: int | None = None
    field: str = "row"  # the field an unusable row is refused for
    converted: bool = False  # read from platform JSON into Neuroon's field names (app/catalog/platforms.py)
    external_id: str | None = None  # of an unusable row, when known


def where(line: int, element: int | None) -> str:
    """A row's place, for people: ``element [3]`` in a JSON array, ``line 5`` elsewhere."""
    return f"element [{element}]" if element is not None else f"line {line}"


class TextSource(Protocol):
    def read(self, size: int = -1, /) -> str: ...
    def __iter__(self) -> Iterator[str]: ...


class FeedError(Exception):
    """The feed as a whole cannot be read (unknown format, unreadable file)."""


def _loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


_DECODER = json.JSONDecoder(parse_float=Decimal)


class Feed:
    """A feed over a text stream; ``bytes_read`` lets a progress bar estimate how far it is."""

    def __init__(
        self,
        stream: TextSource,
        fmt: FeedFormat,
        total_bytes: int | None = None,
        *,
        owned: IO[str] | None = None,
    ) -> None:
        self.stream = stream
        self.format = fmt
        self.total_bytes = total_bytes
        self.bytes_read = 0
        self._owned = owned  # a file we opened: closed once read (or on close())

    def __iter__(self) -> Iterator[FeedRow]:
        rows = {FeedFormat.JSONL: self._jsonl, FeedFormat.CSV: self._csv}.get(self.format, self._json_array)
        try:
            yield from rows()
        finally:
            self.close()

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> Feed:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _lines(self) -> Iterator[str]:
        for line in self.stream:
            self.bytes_read += len(line)
            yield line

    def _jsonl(self) -> Iterator[FeedRow]:
        for number, line in enumerate(self._lines(), start=1):
            if not line.strip():
                continue
            try:
                data = _loads(line)
            except (ValueError, RecursionError) as exc:
                yield FeedRow(number, None, f"invalid JSON: {_short(exc)}")
                continue
            if not isinstance(data, dict):
                yield FeedRow(number, None, "a row must be a JSON object")
                continue
            yield FeedRow(number, data)

    def _csv(self) -> Iterator[FeedRow]:
        reader = csv.reader(self._lines())
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise FeedError(f"the CSV header cannot be read: {exc}") from None
        names = [h.strip().lstrip("\ufeff") for h in header]
        start = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield FeedRow(start, None, f"invalid CSV: {exc}")
                start = reader.line_num + 1
                continue
            line, start = start, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(names):
                yield FeedRow(line, None, f"{len(values)} columns where the header has {len(names)}")
                continue
            yield FeedRow(line, dict(zip(names, values, strict=True)))

    def _json_array(self) -> Iterator[FeedRow]:
        buffer = ""
        line = 1
        eof = False
        pos = 0

        def fill() -> bool:
            nonlocal buffer, pos, eof
            chunk = self.stream.read(CHUNK)
            self.bytes_read += len(chunk)
            if not chunk:
                eof = True
                return False
            buffer = buffer[pos:] + chunk
            pos = 0
            return True

        def skip(chars: str) -> str | None:
            """Skip whitespace (and ``chars``); the next character, or None at the end of input."""
            nonlocal pos, line
            while True:
                while pos < len(buffer) and (buffer[pos].isspace() or buffer[pos] in chars):
                    line += buffer[pos] == "\n"
                    pos += 1
                if pos < len(buffer):
                    return buffer[pos]
                if not fill():
                    return None

        first = skip("")
        if first == "{":
            yield from self._json_document(buffer[pos:])
            return
        if first != "[":
            raise FeedError("a JSON feed must be an array of objects")
        pos += 1
        element = 0
        while True:
            nxt = skip(",")
            if nxt is None:
                yield FeedRow(line, None, "the JSON array is not closed (truncated feed?)", element)
                return
            if nxt == "]":
                return
            while True:
                try:
                    data, end = _DECODER.raw_decode(buffer, pos)
                except RecursionError:
                    yield FeedRow(line, None, "invalid JSON: nested too deeply", element)
                    return
                except json.JSONDecodeError as exc:
                    # Incomplete element: read more, unless there is no more or it is absurdly large.
                    if not eof and len(buffer) - pos < MAX_ELEMENT and fill():
                        continue
                    yield FeedRow(line, None, f"invalid JSON: {_short(exc)}", element)
                    return  # the array's structure is lost: nothing after this can be trusted
                break
            start_line = line
            line += buffer.count("\n", pos, end)
            pos = end
            if isinstance(data, dict):
                yield FeedRow(start_line, data, element=element)
            else:
                yield FeedRow(start_line, None, "a row must be a JSON object", element)
            element += 1

    def _json_document(self, head: str) -> Iterator[FeedRow]:
        """A JSON object holding the product list, as platform APIs answer: Shopify REST
        ``{"products": [...]}`` or ``{"product": {...}}``, GraphQL ``{"data": {"products": {"nodes"
        or "edges": [...]}}}``. Read whole (an API page is small); elements keep their index."""
        rest = self.stream.read()
        self.bytes_read += len(rest)
        text = head + rest
        if len(text) > MAX_DOCUMENT:
            raise FeedError(
                f"a JSON object feed is read whole and may be at most {MAX_DOCUMENT // 2**20} MiB; "
                "export a JSON array or JSON Lines instead (they are streamed)"
            )
        try:
            document = _loads(text)
        except (ValueError, RecursionError) as exc:
            yield FeedRow(1, None, f"invalid JSON: {_short(exc)}")
            return
        items = product_list(document)
        if items is None:
            raise FeedError(
                "a JSON feed must be an array of products, or an object holding one "
                '("products", "product", or GraphQL "data.products")'
            )
        for element, item in enumerate(items):
            if isinstance(item, dict):
                yield FeedRow(1, item, element=element)
            else:
                yield FeedRow(1, None, "a row must be a JSON object", element)


def product_list(document: Any) -> list[Any] | None:
    """The products inside a platform API answer, or None when ``document`` holds none."""
    if isinstance(document, dict) and isinstance(document.get("data"), dict):
        document = document["data"]  # a GraphQL answer
    if not isinstance(document, dict):
        return None
    if isinstance(document.get("product"), dict):
        return [document["product"]]
    products = document.get("products")
    if isinstance(products, list):
        return products
    if isinstance(products, dict):  # a GraphQL connection
        if isinstance(products.get("nodes"), list):
            return list(products["nodes"])
        if isinstance(products.get("edges"), list):
            return [e.get("node") if isinstance(e, dict) else e for e in products["edges"]]
    return None


def _short(exc: ValueError | RecursionError) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)[:200]


def detect_format(head: str, name: str | None) -> FeedFormat:
    """By file extension, else by the first character: ``[`` a JSON array, ``{`` JSON Lines, else CSV."""
    if name:
        suffix = Path(name).suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            return FeedFormat.JSONL
        if suffix == ".json":
            return FeedFormat.JSON
        if suffix == ".csv":
            return FeedFormat.CSV
    first = head.lstrip("\ufeff \t\r\n")[:1]
    if first == "[":
        return FeedFormat.JSON
    if first == "{":
        return FeedFormat.JSONL
    return FeedFormat.CSV


def open_feed(path: str, stdin: IO[str] | None = None) -> Feed:
    """``path`` (``-`` for stdin). The format comes from the extension or the first bytes."""
    if path == "-":
        import sys

        raw = stdin or sys.stdin
        if isinstance(raw, io.TextIOWrapper):
            raw.reconfigure(errors="replace")  # one bad byte must not end the run
        # Peek without losing what we read: wrap what was read plus the rest.
        head = raw.read(CHUNK)
        return Feed(_Chained(head, raw), detect_format(head, None))
    file = Path(path)
    try:
        handle = file.open(encoding="utf-8-sig", errors="replace", newline="")
        size = file.stat().st_size
    except OSError as exc:
        raise FeedError(f"cannot read {path}: {exc.strerror}") from None
    try:
        head = handle.read(CHUNK)
        handle.seek(0)
    except OSError as exc:
        handle.close()
        raise FeedError(f"cannot read {path}: {exc.strerror}") from None
    return Feed(handle, detect_format(head, file.name), size, owned=handle)


class _Chained:
    """Text already read, then the rest of a stream."""

    def __init__(self, head: str, rest: IO[str]) -> None:
        self._head = io.StringIO(head)
        self._rest = rest

    def read(self, size: int = -1, /) -> str:
        got = self._head.read(size)
        if size < 0:
            return got + self._rest.read()
        if len(got) < size:
            got += self._rest.read(size - len(got))
        return got

    def readline(self) -> str:
        got = self._head.readline()
        return got if got.endswith("\n") else got + self._rest.readline()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line
