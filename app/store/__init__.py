"""The Redis key space: every key, its TTL, and the atomic operations on it.

This is the only module that talks to Redis. Keys are built here alone, under a versioned
prefix; keys that one atomic step touches together share a ``{shop}`` hash tag so the same
code works on Redis Cluster. Every key has a TTL unless its comment says why not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from app.store.redis_url import parse_redis_url
from app.store.topology import client_for

log = logging.getLogger(__name__)

PREFIX = "ngw:v1:"

# Compare-and-delete: release a lock only if we still hold it.
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# INCRBY that sets the window's TTL on first use, in one step.
_WINDOW_INCR = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return n
"""


def token_key(shop_id: str, key_fingerprint: str) -> str:
    # The key fingerprint is part of the name: after a key rotation no replica can find a
    # token signed with the old key. TTL: until the token's refreshAfter, by Redis's clock.
    return f"{PREFIX}token:{{{shop_id}}}:{key_fingerprint}"


def token_lock_key(shop_id: str, key_fingerprint: str) -> str:
    return f"{PREFIX}token-lock:{{{shop_id}}}:{key_fingerprint}"


def rate_window_key(limit: str, client: str, window: int) -> str:
    # TTL: to the end of its one-minute window, plus a few seconds (app/ratelimit.py).
    return f"{PREFIX}rl:{limit}:{client}:{window}"


def ready_key(shop_id: str) -> str:
    # Under the shop's hash tag: the readiness probe's write lands where the shop's data lives.
    # TTL: READY_PROBE_TTL_MS.
    return f"{PREFIX}ready:{{{shop_id}}}"


READY_PROBE_TTL_MS = 10_000


async def probe_writes(client: aioredis.Redis, shop_ids: Iterable[str]) -> None:
    """Write a short-lived key under each shop's hash tag, in one round trip.

    Raises what the write meets: ReadOnlyError on a replica, a MOVED or CLUSTERDOWN error where the
    node does not serve the shop's slot, OOM when Redis is full, a connection error or timeout when
    it does not answer. A PING proves none of this.
    """
    async with client.pipeline(transaction=False) as pipe:
        for shop_id in shop_ids:
            pipe.set(ready_key(shop_id), b"1", px=READY_PROBE_TTL_MS)
        await pipe.execute()


@dataclass(frozen=True, slots=True)
class StoredToken:
    token: str
    issued_at: int
    ttl_seconds: float  # time left before refreshAfter, measured by Redis


def connect(url: str, *, socket_timeout: float = 1.0) -> aioredis.Redis:
    """A client with short timeouts: the gateway degrades rather than waits when Redis is slow.

    ``url`` is any REDIS_URL shape (one server, Sentinel, Cluster: app/store/topology.py).
    redis-py's default retries for seconds with backoff; one quick retry is enough to replace a
    connection that Redis closed, and anything longer would stall requests during an outage.
    The delivery worker's client gets a longer ``socket_timeout``: it blocks on stream reads.
    """
    return client_for(
        parse_redis_url(url),
        socket_connect_timeout=0.5,
        socket_timeout=socket_timeout,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
    )


class Store:
    """Typed operations over one Redis client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._release_lock = client.register_script(_RELEASE_LOCK)
        self._window_incr = client.register_script(_WINDOW_INCR)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def server_time(self) -> float:
        """Redis's clock: the one clock every replica shares."""
        seconds, micros = await self.redis.time()
        return seconds + micros / 1_000_000

    # --- widget tokens -------------------------------------------------------------------

    async def get_token(self, shop_id: str, key_fingerprint: str) -> StoredToken | None:
        key = token_key(shop_id, key_fingerprint)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, pttl = await pipe.execute()
        if raw is None or pttl <= 0:
            return None
        data = orjson.loads(raw)
        return StoredToken(token=data["token"], issued_at=int(data["issuedAt"]), ttl_seconds=pttl / 1000)

    async def put_token_if_absent(
        self, shop_id: str, key_fingerprint: str, token: str, issued_at: int, ttl_seconds: float
    ) -> bool:
        """Store a freshly signed token unless another signer got there first."""
        body = orjson.dumps({"token": token, "issuedAt": issued_at})
        ok = await self.redis.set(
            token_key(shop_id, key_fingerprint), body, nx=True, px=max(1, int(ttl_seconds * 1000))
        )
        return bool(ok)

    async def acquire_lock(self, key: str, owner: str, ttl_ms: int) -> bool:
        return bool(await self.redis.set(key, owner, nx=True, px=ttl_ms))

    async def release_lock(self, key: str, owner: str) -> None:
        await self._release_lock(keys=[key], args=[owner])

    # --- rate limits ---------------------------------------------------------------------

    async def add_to_window(self, limit: str, client: str, window: int, hits: int, ttl_seconds: int) -> int:
        """Add hits to a client's fixed window; return the window's total across all replicas."""
        return int(
            await self._window_incr(keys=[rate_window_key(limit, client, window)], args=[hits, ttl_seconds])
        )
