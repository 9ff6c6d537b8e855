"""The widget-token cache: in-process over Redis, with one signer per refresh across all replicas.

How replicas agree, whatever their wall clocks say:
- Redis holds the current token under a key that expires at the token's ``refreshAfter``,
  measured by Redis's own clock; new tokens are stamped with Redis's ``TIME``. Wall clocks of
  the replicas take no part in deciding which token is current.
- Each replica serves its in-process copy for at most ``memory_ttl`` seconds (and never past
  the Redis TTL it saw), both measured on its monotonic clock. So after a refresh, replicas
  disagree for at most ``memory_ttl`` seconds, and only while the old token is still valid.
- When the Redis key is gone, one signer wins a Redis lock (and an asyncio lock in-process),
  re-checks, signs and stores with ``SET NX``; the others keep serving the still-valid token
  they have, or wait briefly for the winner's.
- When Redis is down, a replica serves its still-valid copy, or signs locally with its own clock:
  a token is cheap to sign and never needs Neuroon. Nothing here raises on a Redis failure.
- Every Redis step runs under the token path's deadline (milliseconds) and its circuit breaker, so
  a hung Redis costs one short timeout, then nothing until it answers again (app/store/deadline.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import orjson
from redis.exceptions import RedisError

from app import metrics
from app.neuroon.signing import TOKEN_VALIDITY_SECONDS, sign_widget_token
from app.shops import Shop
from app.store import Store, StoredToken, token_lock_key
from app.store.deadline import RedisDeadline

log = logging.getLogger(__name__)

Source = Literal["memory", "redis", "signed"]

# A token this close to its expiry is never served, even when Redis is down: the browser must
# have time to use it.
EXPIRY_SAFETY_SECONDS = 60
SIGNING_LOCK_MS = 5_000
WAIT_FOR_SIGNER_SECONDS = 1.0
WAIT_POLL_SECONDS = 0.02
DEADLINE_SECONDS = 0.1  # GATEWAY_REDIS_TOKEN_TIMEOUT's default


@dataclass(slots=True)
class CachedToken:
    shop_id: str
    key_fingerprint: str
    token: str
    issued_at: int
    refresh_margin: int
    fresh_until: float  # monotonic: serve without asking Redis until then
    refresh_due: float  # monotonic: the token's refreshAfter, as this replica learned it
    body: bytes  # the response body, rendered once

    @property
    def expires_at(self) -> int:
        return self.issued_at + TOKEN_VALIDITY_SECONDS

    @property
    def refresh_after(self) -> int:
        return self.expires_at - self.refresh_margin


class TokenCache:
    def __init__(
        self,
        store: Store,
        *,
        refresh_margin: int = 300,
        memory_ttl: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        deadline: RedisDeadline | None = None,
    ) -> None:
        self._store = store
        self._deadline = deadline or RedisDeadline("token", DEADLINE_SECONDS)
        self._margin = refresh_margin
        self._memory_ttl = memory_ttl
        self._wall = wall_clock
        self._mono = monotonic
        self._memory: dict[str, CachedToken] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, shop: Shop) -> tuple[CachedToken, Source]:
        """The shop's current token. Never raises for Redis trouble."""
        entry = self._memory.get(shop.id)
        if self._fresh(entry, shop):
            assert entry is not None
            return entry, "memory"
        lock = self._locks.setdefault(shop.id, asyncio.Lock())
        if lock.locked() and self._usable(entry, shop):
            # Another task of this process is refreshing: keep serving the still-valid token.
            assert entry is not None
            return entry, "memory"
        async with lock:
            entry = self._memory.get(shop.id)
            if self._fresh(entry, shop):
                assert entry is not None
                return entry, "memory"
            try:
                return await self._refresh(shop, entry)
            except (RedisError, OSError) as exc:
                metrics.redis_errors.labels("token").inc()
                log.warning(
                    "token_cache_redis_unavailable", extra={"shop": shop.id, "error": type(exc).__name__}
                )
                return self._without_redis(shop, entry)

    def _fresh(self, entry: CachedToken | None, shop: Shop) -> bool:
        """Servable without asking Redis: same key, within this replica's memory TTL."""
        return (
            entry is not None
            and entry.key_fingerprint == shop.key_fingerprint
            and self._mono() < entry.fresh_until
        )

    def _usable(self, entry: CachedToken | None, shop: Shop) -> bool:
        """Same key and not about to expire by this replica's clock."""
        return (
            entry is not None
            and entry.key_fingerprint == shop.key_fingerprint
            and self._wall() < entry.expires_at - EXPIRY_SAFETY_SECONDS
        )

    async def _refresh(self, shop: Shop, stale: CachedToken | None) -> tuple[CachedToken, Source]:
        fetched = await self._deadline.run(lambda: self._fetch_or_sign(shop))
        if fetched is not None:
            return fetched
        # Another replica holds the lock and is signing right now.
        if self._usable(stale, shop):
            assert stale is not None
            stale.fresh_until = self._mono() + WAIT_POLL_SECONDS * 5
            return stale, "memory"
        deadline = self._mono() + WAIT_FOR_SIGNER_SECONDS
        while self._mono() < deadline:
            await asyncio.sleep(WAIT_POLL_SECONDS)
            stored = await self._deadline.run(lambda: self._store.get_token(shop.id, shop.key_fingerprint))
            if stored is not None:
                return self._remember(shop, stored), "redis"
        # The lock holder vanished mid-sign; its lock expires by itself. Serve something valid now.
        return self._sign_locally(shop), "signed"

    async def _fetch_or_sign(self, shop: Shop) -> tuple[CachedToken, Source] | None:
        """The stored token, else one we sign under the lock; None when another replica holds it."""
        stored = await self._store.get_token(shop.id, shop.key_fingerprint)
        if stored is not None:
            return self._remember(shop, stored), "redis"
        lock_key = token_lock_key(shop.id, shop.key_fingerprint)
        owner = secrets.token_hex(8)
        if not await self._store.acquire_lock(lock_key, owner, SIGNING_LOCK_MS):
            return None
        signed = await self._sign_and_store(shop)
        # Not in a `finally`: after a failure (the deadline passed) Redis would not answer the
        # release either, and waiting for it would break the deadline; the lock expires by itself.
        await self._store.release_lock(lock_key, owner)
        return signed

    async def _sign_and_store(self, shop: Shop) -> tuple[CachedToken, Source]:
        # Re-check under the lock: a signer that just released it may have stored a token.
        stored = await self._store.get_token(shop.id, shop.key_fingerprint)
        if stored is not None:
            return self._remember(shop, stored), "redis"
        now = math.floor(await self._store.server_time())
        token = self._sign(shop, now)
        ttl = TOKEN_VALIDITY_SECONDS - self._margin
        if not await self._store.put_token_if_absent(shop.id, shop.key_fingerprint, token, now, ttl):
            stored = await self._store.get_token(shop.id, shop.key_fingerprint)
            if stored is not None:
                return self._remember(shop, stored), "redis"
        return self._remember(shop, StoredToken(token, now, ttl)), "signed"

    def _without_redis(self, shop: Shop, entry: CachedToken | None) -> tuple[CachedToken, Source]:
        if self._usable(entry, shop):
            assert entry is not None
            # Ask Redis again only after memory_ttl, so an outage costs one attempt per period.
            entry.fresh_until = self._mono() + self._memory_ttl
            return entry, "memory"
        return self._sign_locally(shop), "signed"

    def _sign_locally(self, shop: Shop) -> CachedToken:
        now = math.floor(self._wall())
        token = self._sign(shop, now)
        ttl = now + TOKEN_VALIDITY_SECONDS - self._margin - self._wall()
        return self._remember(shop, StoredToken(token, now, ttl))

    def _sign(self, shop: Shop, unix_ts: int) -> str:
        metrics.widget_token_signatures.labels(shop.id).inc()
        return sign_widget_token(shop.id, shop.api_key.get_secret_value(), unix_ts)

    def _remember(self, shop: Shop, stored: StoredToken) -> CachedToken:
        now = self._mono()
        expires_at = stored.issued_at + TOKEN_VALIDITY_SECONDS
        body = orjson.dumps(
            {
                "token": stored.token,
                "shopId": shop.id,
                "issuedAt": stored.issued_at,
                "expiresAt": expires_at,
                "refreshAfter": expires_at - self._margin,
            }
        )
        entry = CachedToken(
            shop_id=shop.id,
            key_fingerprint=shop.key_fingerprint,
            token=stored.token,
            issued_at=stored.issued_at,
            refresh_margin=self._margin,
            fresh_until=now + min(self._memory_ttl, stored.ttl_seconds),
            refresh_due=now + stored.ttl_seconds,
            body=body,
        )
        self._memory[shop.id] = entry
        return entry

    def max_age(self, entry: CachedToken) -> int:
        """Seconds a browser may keep this token: until its refreshAfter."""
        return max(0, int(entry.refresh_due - self._mono()))
