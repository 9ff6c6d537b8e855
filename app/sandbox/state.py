"""The sandbox's memory: its shops and, per shop, the catalog, verification, conversions and idempotency
replies. Pure data and rules; the HTTP layer lives in ``routes.py``."""

from __future__ import annotations

import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.settings import SHOP_ID_PATTERN, check_api_key


@dataclass(slots=True)
class SandboxShop:
    """A shop as Neuroon knows it: id, current key, registered URL and plan quotas."""

    id: str
    key: str
    shop_url: str | None = None
    name: str | None = None
    plan: str = "sandbox"
    max_products: int = 100_000
    max_searches_per_month: int = 1_000_000

    def __post_init__(self) -> None:
        if not SHOP_ID_PATTERN.fullmatch(self.id):
            raise ValueError("shop id: 1-128 characters of letters, digits, '_', '-' or '.'")
        check_api_key(self.key)

    def __repr__(self) -> str:  # the key stays out of reprs, tracebacks and test reports
        return f"SandboxShop(id={self.id!r}, shop_url={self.shop_url!r})"


def load_shops_toml(path: Path) -> list[SandboxShop]:
    """``[[shops]]`` tables with id, key (or key_file) and shop_url: the same file as GATEWAY_SHOPS_FILE
    can be used (its ``api_key``/``api_key_file`` names are accepted too)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    shops = []
    for i, entry in enumerate(data.get("shops", [])):
        if not isinstance(entry, dict):
            raise ValueError(f"shops[{i}] must be a table")
        key = entry.get("key") or entry.get("api_key")
        key_file = entry.get("key_file") or entry.get("api_key_file")
        if key is None and key_file:
            key = Path(key_file).read_text(encoding="utf-8").strip()
        if not isinstance(key, str) or not isinstance(entry.get("id"), str):
            raise ValueError(f"shops[{i}] needs an id and a key (or key_file)")
        try:
            shops.append(
                SandboxShop(id=entry["id"], key=key, shop_url=entry.get("shop_url"), name=entry.get("name"))
            )
        except ValueError as exc:
            raise ValueError(f"shops[{i}]: {exc}") from None
    if not shops:
        raise ValueError("no [[shops]] table")
    return shops


def normalize_site(value: str) -> str:
    """Neuroon's URL normalisation (neuroon-api.md §3.1): no scheme, no leading ``www.``, no trailing
    slash. ``https://example.com`` ≡ ``http://www.example.com/`` ≡ ``example.com``. Origin and Referer are
    URLs, so we keep their host and port (a Referer's path is not part of the site)."""
    text = value.strip().lower()
    if "://" in text:
        try:
            parts = urlsplit(text)
            host, port = parts.hostname or "", parts.port
        except ValueError:  # "http://[::1", a port that is not a number: matches no shop
            return "\x00malformed"
        text = f"{host}:{port}" if port else host
    else:
        text = text.split("/", 1)[0]
    text = text.rstrip("/")
    return text.removeprefix("www.")


@dataclass(slots=True)
class IdempotentReply:
    body_hash: str
    status: int
    body: dict[str, Any]


@dataclass(slots=True)
class ShopState:
    shop: SandboxShop
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped_variants: list[str] = field(default_factory=list)
    verified_at: str | None = None
    verification_code: str = field(default_factory=lambda: "vc_" + secrets.token_hex(8))
    conversions: dict[str, dict[str, Any]] = field(default_factory=dict)  # orderId -> first body
    conversion_posts: int = 0  # resends included
    idempotency: dict[str, IdempotentReply] = field(default_factory=dict)
    search_log_ids: list[str] = field(default_factory=list)

    def apply_sync(self, sync_type: str, products: list[dict[str, Any]]) -> dict[str, Any]:
        """Upsert (or, for FULL, replace the catalog with) a validated batch; return the sync answer.

        A variant whose parent is neither earlier in the batch nor stored is dropped silently, as the
        server-to-server page warns ("Orphan variants … are silently dropped").
        """
        if sync_type == "FULL":
            # "it wipes the catalog in Neuroon before reinserting the batch you send"
            self.products = {}
        created = updated = 0
        for product in products:
            external_id = product["externalId"]
            parent = product.get("parentExternalId")
            if parent and parent != external_id and parent not in self.products:
                self.dropped_variants.append(external_id)
                continue
            if external_id in self.products:
                updated += 1
            else:
                created += 1
            self.products[external_id] = product
        count = len(self.products)
        return {
            "synced": created + updated,
            "created": created,
            "updated": updated,
            "failed": 0,
            "errors": [],
            "productsCount": count,
            "remainingProducts": max(0, self.shop.max_products - count),
        }

    def page(self, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """Products in externalId order after ``cursor`` (the last id of the previous page), so a
        deletion between pages neither skips nor repeats anything."""
        ids = sorted(self.products)
        if cursor is not None:
            ids = [i for i in ids if i > cursor]
        chosen = ids[:limit]
        next_cursor = chosen[-1] if len(ids) > limit else None
        return [self.products[i] for i in chosen], next_cursor

    def record_conversion(self, order_id: str, body: dict[str, Any]) -> bool:
        """Keep the first report of an order; True when it was new (Neuroon dedupes by orderId)."""
        self.conversion_posts += 1
        if order_id in self.conversions:
            return False
        self.conversions[order_id] = body
        return True
