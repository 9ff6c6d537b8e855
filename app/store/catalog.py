"""The catalog's Redis keys: the ledger of what was last sent per product, the per-shop run lock, and
the time of the last successful sync.

Keys: ``ngw:v1:catalog:{shop}:ledger`` (hash externalId -> JSON ``{"h": content hash, "s": snapshot}``),
``ngw:v1:catalog:{shop}:lock``, ``ngw:v1:catalog:{shop}:last-sync`` and ``…:counts`` (products per
outcome, for /metrics), and ``…:run:{run id}`` (the ids one run has seen, TTL a day, deleted at the end of
the run). The ledger, the counts and the last sync time have no TTL on purpose: they
mirror what Neuroon holds, which does not expire either (a lost ledger only costs a full resend).
The lock has a TTL that its holder renews.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from app.store import PREFIX

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def catalog_prefix(shop_id: str) -> str:
    return f"{PREFIX}catalog:{{{shop_id}}}"


def ledger_key(shop_id: str) -> str:
    return catalog_prefix(shop_id) + ":ledger"


def lock_key(shop_id: str) -> str:
    return catalog_prefix(shop_id) + ":lock"


def last_sync_key(shop_id: str) -> str:
    return catalog_prefix(shop_id) + ":last-sync"


def counts_key(shop_id: str) -> str:
    return catalog_prefix(shop_id) + ":counts"


def run_key(shop_id: str, run_id: str) -> str:
    # The ids one run has seen, with their line: duplicates and parent look-ups without holding the
    # feed's ids in the process. Deleted at the end of the run; the TTL covers a crashed one.
    return catalog_prefix(shop_id) + f":run:{run_id}"


RUN_TTL_SECONDS = 86_400


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    content_hash: str
    snapshot: dict[str, Any]


class CatalogStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)

    async def entries(self, shop_id: str, ids: Sequence[str]) -> dict[str, LedgerEntry]:
        """The ledger entries of ``ids`` that exist."""
        if not ids:
            return {}
        raw = await self.redis.hmget(ledger_key(shop_id), list(ids))
        out = {}
        for external_id, value in zip(ids, raw, strict=True):
            if value is not None:
                data = orjson.loads(value)
                out[external_id] = LedgerEntry(data["h"], data["s"])
        return out

    async def known(self, shop_id: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` have been synced (are in the ledger)."""
        if not ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for external_id in ids:
                pipe.hexists(ledger_key(shop_id), external_id)
            found = await pipe.execute()
        return {i for i, hit in zip(ids, found, strict=True) if hit}

    async def record(self, shop_id: str, entries: Mapping[str, LedgerEntry]) -> None:
        if entries:
            await self.redis.hset(
                ledger_key(shop_id),
                mapping={k: orjson.dumps({"h": e.content_hash, "s": e.snapshot}) for k, e in entries.items()},
            )

    async def forget(self, shop_id: str, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            await self.redis.hdel(ledger_key(shop_id), *ids)

    async def clear(self, shop_id: str) -> None:
        await self.redis.delete(ledger_key(shop_id))

    async def count(self, shop_id: str) -> int:
        return int(await self.redis.hlen(ledger_key(shop_id)))

    async def ids(self, shop_id: str) -> AsyncIterator[str]:
        async for key, _ in self.redis.hscan_iter(ledger_key(shop_id), count=1000):
            yield key.decode() if isinstance(key, bytes) else str(key)

    async def acquire_lock(self, shop_id: str, owner: str, ttl_ms: int) -> bool:
        return bool(await self.redis.set(lock_key(shop_id), owner, nx=True, px=ttl_ms))

    async def renew_lock(self, shop_id: str, owner: str, ttl_ms: int) -> bool:
        return bool(await self._renew(keys=[lock_key(shop_id)], args=[owner, ttl_ms]))

    async def release_lock(self, shop_id: str, owner: str) -> None:
        await self._release(keys=[lock_key(shop_id)], args=[owner])

    async def set_last_sync(self, shop_id: str, unix_time: float) -> None:
        await self.redis.set(last_sync_key(shop_id), repr(unix_time))

    async def last_sync(self, shop_id: str) -> float | None:
        raw = await self.redis.get(last_sync_key(shop_id))
        return float(raw) if raw is not None else None

    # --- one run's index of ids ---------------------------------------------------------------------

    async def claim_run_ids(
        self, shop_id: str, run_id: str, items: Sequence[tuple[str, int]]
    ) -> list[int | None]:
        """Record each (id, line) as seen by the run; for an id seen before, the line it was first seen at."""
        if not items:
            return []
        key = run_key(shop_id, run_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for external_id, line in items:
                pipe.hsetnx(key, external_id, line)
            pipe.expire(key, RUN_TTL_SECONDS)
            fresh = (await pipe.execute())[:-1]
        seen = [external_id for (external_id, _), new in zip(items, fresh, strict=True) if not new]
        first = dict(zip(seen, await self.redis.hmget(key, seen), strict=True)) if seen else {}
        return [None if new else int(first[i] or 0) for (i, _), new in zip(items, fresh, strict=True)]

    async def in_run(self, shop_id: str, run_id: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        found = await self.redis.hmget(run_key(shop_id, run_id), list(ids))
        return {i for i, line in zip(ids, found, strict=True) if line is not None}

    async def end_run(self, shop_id: str, run_id: str) -> None:
        await self.redis.delete(run_key(shop_id, run_id))

    # --- run outcomes, for /metrics (every replica reports the same shared totals) ---------------------

    async def add_outcomes(self, shop_id: str, outcomes: Mapping[str, int]) -> None:
        # No TTL: a counter's total must not go backwards.
        async with self.redis.pipeline(transaction=True) as pipe:
            for outcome, n in outcomes.items():
                if n:
                    pipe.hincrby(counts_key(shop_id), outcome, n)
            await pipe.execute()

    async def outcomes(self, shop_id: str) -> dict[str, int]:
        raw = await self.redis.hgetall(counts_key(shop_id))
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}
