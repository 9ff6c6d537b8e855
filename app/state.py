"""What the lifespan builds and every request can reach: the long-lived resources of one process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.conversions.intake import Intake
from app.neuroon.client import NeuroonClient
from app.ratelimit import RateLimiter
from app.settings import Settings
from app.shops import ShopRegistry
from app.store import Store
from app.store.catalog import CatalogStore
from app.store.conversions import ConversionStore
from app.tokens.cache import TokenCache

if TYPE_CHECKING:
    from app.auth import AdminAuth  # app.auth depends on this module through app.deps


@dataclass(frozen=True, slots=True)
class GatewayState:
    settings: Settings
    shops: ShopRegistry
    store: Store
    tokens: TokenCache
    token_limiter: RateLimiter
    conversions: ConversionStore
    intake: Intake
    attribution_limiter: RateLimiter
    neuroon: NeuroonClient
    admin_auth: AdminAuth | None
    catalog: CatalogStore
