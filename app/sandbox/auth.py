"""The Shop-API-Key filter as documented (neuroon-api.md §3): format, unknown key 401, another shop's key
403 (the majority reading of §3.2), and ``Origin``/``Referer`` compared with the shop's registered URL."""

from __future__ import annotations

from starlette.requests import Request

from app.sandbox.control import Sandbox
from app.sandbox.state import ShopState, normalize_site
from app.settings import API_KEY_PATTERN

ORIGIN_MISMATCH = "Origin mismatch — API Key cannot be used from this domain"


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def authenticate(sandbox: Sandbox, request: Request, shop_id: str | None) -> ShopState:
    """The shop the request may act for, or AuthError. ``shop_id`` is the path's, when it has one."""
    key = request.headers.get("x-shop-api-key")
    if not key:
        raise AuthError(401, "Missing API key")
    if not API_KEY_PATTERN.fullmatch(key):
        raise AuthError(401, "Invalid API key")
    state = sandbox.by_key(key)
    if state is None:
        raise AuthError(401, "Invalid API key")
    if shop_id is not None and state.shop.id != shop_id:
        raise AuthError(403, "Access denied: API key does not belong to this shop")
    # A server-to-server call sends neither header and is allowed: the key is the only credential.
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if claimed is not None:
        registered = state.shop.shop_url
        if registered is None or normalize_site(claimed) != normalize_site(registered):
            raise AuthError(403, ORIGIN_MISMATCH)
    return state
