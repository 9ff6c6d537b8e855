"""Looking at conversions and their dead letters, replaying and dropping them (admin API and CLI).

A dead letter's id is ``<shopId>:<orderId>`` (shop ids never contain ``:``); with one shop the
bare orderId is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from app.conversions import lines
from app.shops import ShopRegistry
from app.store.conversions import ConversionStore

TIME_FIELDS = (
    "ignoredAt",
    "acceptedAt",
    "lastAttemptAt",
    "nextAttemptAt",
    "deliveredAt",
    "deadLetteredAt",
    "replayedAt",
)


class UnknownId(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    shop_id: str
    order_id: str
    dead_lettered_at: str
    reason: str
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "shopId": self.shop_id,
            "orderId": self.order_id,
            "deadLetteredAt": self.dead_lettered_at,
            "reason": self.reason,
            "attempts": self.attempts,
        }


def iso(ms: int | str) -> str:
    return (
        datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def split_id(dead_letter_id: str, shops: ShopRegistry) -> tuple[str, str]:
    shop_id, sep, order_id = dead_letter_id.partition(":")
    if sep and shops.get(shop_id) is not None and order_id:
        return shop_id, order_id
    single = shops.single
    if single is not None and dead_letter_id:
        return single.id, dead_letter_id
    raise UnknownId(dead_letter_id)


def shop_ids(shops: ShopRegistry, shop_id: str | None) -> list[str]:
    if shop_id is None:
        return [shop.id for shop in shops]
    if shops.get(shop_id) is None:
        raise UnknownId(shop_id)
    return [shop_id]


async def conversion_state(store: ConversionStore, shop_id: str, order_id: str) -> dict[str, Any] | None:
    record = await store.order(shop_id, order_id)
    if record is None:
        # Not queued: maybe ignored for want of a sendable line (kept 7 days), which an operator
        # asking "why did this order not reach Neuroon?" wants to see with its reasons.
        ignored = await store.ignored(shop_id, order_id)
        if ignored is None:
            return None
        record = {"state": "ignored", **ignored}
    skipped = orjson.loads(record["skipped"]) if record.get("skipped") else []
    state: dict[str, Any] = {
        "shopId": shop_id,
        "orderId": order_id,
        "state": record.get("state"),
        "platform": record.get("platform"),
        "attempts": int(record.get("attempts", 0)),
        "lastError": record.get("lastError"),
        # Webhooks for the order after the one that claimed it (platform retries, other topics).
        "duplicates": int(record.get("duplicates", 0)),
        # The order's lines left out of the conversion, each with its reason (app.conversions.lines).
        "skippedLines": skipped,
    }
    if state["state"] == "ignored":
        state["reason"] = lines.Decision(None, tuple(lines.SkippedLine.from_json(s) for s in skipped)).reason
    for name in TIME_FIELDS:
        state[name] = iso(record[name]) if record.get(name) else None
    return state


async def list_dead_letters(
    store: ConversionStore, shops: ShopRegistry, shop_id: str | None, limit: int
) -> list[DeadLetter]:
    letters = []
    for sid in shop_ids(shops, shop_id):
        for order_id, at_ms in await store.dead_letters(sid, limit):
            record = await store.order(sid, order_id) or {}
            letters.append(
                DeadLetter(
                    id=f"{sid}:{order_id}",
                    shop_id=sid,
                    order_id=order_id,
                    dead_lettered_at=iso(at_ms),
                    reason=record.get("lastError", ""),
                    attempts=int(record.get("attempts", 0)),
                )
            )
    letters.sort(key=lambda d: d.dead_lettered_at)
    return letters[:limit]


async def replay(store: ConversionStore, shops: ShopRegistry, dead_letter_id: str) -> bool:
    shop_id, order_id = split_id(dead_letter_id, shops)
    return await store.replay(shop_id, order_id)


async def drop(
    store: ConversionStore, shops: ShopRegistry, dead_letter_id: str, retention_seconds: int
) -> bool:
    shop_id, order_id = split_id(dead_letter_id, shops)
    return await store.drop(shop_id, order_id, retention_seconds)
