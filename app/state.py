"""What the lifespan builds and every request can reach: the long-lived resources of one process."""

from __future__ import annotations

from dataclasses import dataclass

from app.neuroon.client import NeuroonClient
from app.ratelimit import RateLimiter
from app.settings import Settings
from app.shops import ShopRegistry
from app.store import Store
from app.tokens.cache import TokenCache


@dataclass(frozen=True, slots=True)
class GatewayState:
    settings: Settings
    shops: ShopRegistry
    store: Store
    tokens: TokenCache
    token_limiter: RateLimiter
    neuroon: NeuroonClient
