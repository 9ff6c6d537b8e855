"""The shops this gateway serves at run time: lookup by id or origin, and live key rotation.

A shop's key may come from a file (a mounted Kubernetes/Docker secret). The file is re-read
periodically, so a rotated key takes effect without a restart; everything keyed by the key's
fingerprint (the token cache) then misses and re-signs with the new key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator

from pydantic import SecretStr

from app.errors import GatewayError
from app.logging import redact_secrets
from app.settings import ShopConfig, check_api_key, read_secret_file

log = logging.getLogger(__name__)


def key_fingerprint(key: str) -> str:
    """A short, non-reversible tag of a key, for cache keys. Never a way back to the key."""
    return hashlib.sha256(b"neuroon-gateway/key-fingerprint\x00" + key.encode()).hexdigest()[:16]


class Shop:
    """One shop and its current key. The key changes in place when its file is rotated."""

    __slots__ = ("_key", "config", "key_fingerprint")

    def __init__(self, config: ShopConfig) -> None:
        self.config = config
        self._key = config.api_key
        self.key_fingerprint = key_fingerprint(self._key.get_secret_value())

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def api_key(self) -> SecretStr:
        return self._key

    def __repr__(self) -> str:
        return f"Shop(id={self.id!r})"

    def reload_key(self) -> bool:
        """Re-read the key file; return True when the key changed. A bad file keeps the old key."""
        path = self.config.api_key_file
        if path is None:
            return False
        try:
            new = check_api_key(read_secret_file(path))
        except ValueError as exc:
            # Keep serving with the old key: a half-written or malformed file must not take the
            # shop down. The message never contains the file's content.
            log.warning("api_key_reload_failed", extra={"shop": self.id, "reason": str(exc)})
            return False
        if new == self._key.get_secret_value():
            return False
        redact_secrets([new])
        self._key = SecretStr(new)
        self.key_fingerprint = key_fingerprint(new)
        log.info("api_key_rotated", extra={"shop": self.id})
        return True


class ShopRegistry:
    """All configured shops, found by id or by an allowed browser origin."""

    def __init__(self, configs: tuple[ShopConfig, ...]) -> None:
        self._by_id = {c.id: Shop(c) for c in configs}
        # None marks an origin shared by several shops (e.g. a global GATEWAY_CORS_ORIGINS entry):
        # it cannot pick a shop, so such requests must name theirs with ?shopId=.
        self._by_origin: dict[str, Shop | None] = {}
        for shop in self._by_id.values():
            for origin in shop.config.allowed_origins:
                seen = self._by_origin.get(origin, shop)
                self._by_origin[origin] = shop if seen is shop else None

    def __iter__(self) -> Iterator[Shop]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def single(self) -> Shop | None:
        """The shop, when exactly one is configured."""
        return next(iter(self._by_id.values())) if len(self._by_id) == 1 else None

    def get(self, shop_id: str) -> Shop | None:
        return self._by_id.get(shop_id)

    def by_origin(self, origin: str) -> Shop | None:
        return self._by_origin.get(origin)

    def resolve(self, shop_id: str | None, origin: str | None = None) -> Shop:
        """The shop a request is for: ``shopId``, else the only shop, else the shop of the browser's
        Origin. Raises 404 ``unknown_shop`` / 400 ``shop_required``."""
        if shop_id is not None:
            shop = self.get(shop_id)
            if shop is None:
                raise GatewayError(404, "unknown_shop", "no shop with this shopId is configured")
            return shop
        if self.single is not None:
            return self.single
        shop = self.by_origin(origin.lower()) if origin else None
        if shop is None:
            raise GatewayError(400, "shop_required", "several shops are configured: pass ?shopId=")
        return shop

    def choose(self, shop_id: str | None) -> Shop:
        """The shop a command is for: the one named, else the only one. LookupError otherwise."""
        chosen = self.get(shop_id) if shop_id else self.single
        if chosen is None:
            raise LookupError(
                f"unknown shop {shop_id}" if shop_id else "several shops are configured: pass --shop"
            )
        return chosen

    def reload_keys(self) -> list[Shop]:
        return [shop for shop in self._by_id.values() if shop.reload_key()]

    async def watch_key_files(self, interval: float) -> None:
        """Re-read key files forever (run as a lifespan task)."""
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.reload_keys)
