"""The admin API's signing keys from ``GATEWAY_ADMIN_JWKS_URL``: cached with an expiry, fetched one at
a time in the background with short timeouts, so that a slow or unreachable JWKS never queues requests.

- A fetched key set answers for ``ttl`` seconds (``GATEWAY_ADMIN_JWKS_CACHE_SECONDS``); a request after
  that is still answered from it while one background fetch refreshes it. A key removed from the JWKS
  stops working at the first successful fetch after its removal, so within ``ttl`` or so.
- Past ``STALE_FACTOR`` times ``ttl`` without a successful fetch the keys are no longer trusted (503): a
  JWKS that cannot be reached does not keep a withdrawn key alive for ever.
- A token naming a key id we do not have starts a fetch (a rotation publishes the new key first);
  it is refused (401) only when a set fetched within ``ttl`` lacks the key, else 503.
  Fetches, whatever starts them, are at least ``min_interval`` apart: a failed fetch and a flood of
  made-up key ids cost one request to the JWKS per interval (negative caching).
- A request waits for a fetch in flight at most ``WAIT_SECONDS``; one fetch takes at most
  ``FETCH_SECONDS`` in all, and reads at most ``MAX_BYTES``. Nothing here runs in a thread: the
  worker threads stay free for what needs them (the key-file reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import orjson

from app import __version__

log = logging.getLogger(__name__)

WAIT_SECONDS = 2.0
FETCH_SECONDS = 5.0
MAX_BYTES = 1024 * 1024
STALE_FACTOR = 12  # 1 h with the default ttl of 300 s
# Only public-key types: an "oct" (HMAC) key in a published key set would let anyone sign.
KEY_TYPES = frozenset({"RSA", "EC"})


class JwksUnavailable(Exception):
    """No key set fresh enough to trust: the JWKS URL has not answered (in time)."""


class UnknownKey(Exception):
    """The key set, freshly fetched, has no key with this id."""


class JwksKeys:
    def __init__(self, url: str, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._url = url
        self._ttl = ttl
        self._min_interval = min(10.0, ttl / 3)
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # of the last successful fetch
        self._attempted_at = float("-inf")
        self._fetch: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    def start(self) -> None:
        """In the lifespan: the connection pool, and a first fetch so the first request finds keys."""
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(2.0),
            follow_redirects=False,
            headers={"User-Agent": f"neuroon-gateway/{__version__}", "Accept": "application/json"},
        )
        self._refresh()

    async def aclose(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fetch
            self._fetch = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _usable(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < STALE_FACTOR * self._ttl

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key with this id. Raises UnknownKey (the token is bad) or JwksUnavailable."""
        now = self._clock()
        if self._usable(now):
            assert self._fetched_at is not None
            if now - self._fetched_at >= self._ttl:
                self._refresh()  # answered from what we have meanwhile
            key = self._keys.get(kid)
            if key is not None:
                return key
        self._refresh()
        if self._fetch is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._fetch), WAIT_SECONDS)
        now = self._clock()
        if not self._usable(now):
            raise JwksUnavailable
        key = self._keys.get(kid)
        if key is not None:
            return key
        assert self._fetched_at is not None
        if now - self._fetched_at >= self._ttl:
            # Our set is due for a refresh that has not come: the key may have been published since.
            raise JwksUnavailable
        raise UnknownKey

    def _refresh(self) -> None:
        """Start a fetch in the background unless one is in flight or the last began too recently."""
        if self._http is None or (self._fetch is not None and not self._fetch.done()):
            return
        now = self._clock()
        if now - self._attempted_at < self._min_interval:
            return
        self._attempted_at = now
        self._fetch = asyncio.create_task(self._fetch_keys(self._http))

    async def _fetch_keys(self, http: httpx.AsyncClient) -> None:
        try:
            body = await asyncio.wait_for(self._download(http), FETCH_SECONDS)
            keys = _parse(body)
        except Exception as exc:  # any failure keeps the keys we have, until they are too old
            log.warning("jwks_fetch_failed", extra={"error": str(exc) or type(exc).__name__})
            return
        removed = sorted(set(self._keys) - set(keys))
        if removed:
            log.info("jwks_keys_removed", extra={"kids": removed})
        self._keys = keys
        self._fetched_at = self._clock()

    async def _download(self, http: httpx.AsyncClient) -> bytes:
        async with http.stream("GET", self._url) as response:
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise ValueError(f"a key set over {MAX_BYTES} bytes")
            return bytes(body)


def _parse(body: bytes) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document by key id; ValueError when it is not one. Keys we
    cannot use (other types or algorithms, encryption keys, no kid) are left out, not an error."""
    data: Any = orjson.loads(body)
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWK set (no 'keys' list)")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        if (
            not isinstance(entry, dict)
            or entry.get("kty") not in KEY_TYPES
            or entry.get("use", "sig") != "sig"
        ):
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        if key.key_id:
            keys[key.key_id] = key
    return keys
