"""Browser origin checks for the public endpoints (widget token, attribution).

An origin is allowed when it is the shop's own URL or listed in GATEWAY_CORS_ORIGINS (or the
shop's ``cors_origins``). Origins are compared exactly as browsers send them: scheme, host and
port. A request without ``Origin`` comes from a server (e.g. a server-side renderer) and is allowed.
"""

from __future__ import annotations

from app.errors import GatewayError
from app.shops import Shop

PREFLIGHT_MAX_AGE = "600"


def check_origin(shop: Shop, origin: str | None) -> None:
    if origin is not None and origin.lower() not in shop.config.allowed_origins:
        raise GatewayError(403, "origin_not_allowed", "this Origin may not call this endpoint for this shop")


def cors_headers(origin: str | None) -> dict[str, str]:
    """Headers for an allowed request. ``Vary: Origin`` always: the answer depends on it."""
    headers = {"vary": "Origin"}
    if origin is not None:
        headers["access-control-allow-origin"] = origin
    return headers


def preflight_headers(origin: str, methods: str, request_headers: str | None) -> dict[str, str]:
    headers = cors_headers(origin)
    headers["access-control-allow-methods"] = methods
    headers["access-control-max-age"] = PREFLIGHT_MAX_AGE
    if request_headers:
        headers["access-control-allow-headers"] = "content-type"
    return headers
