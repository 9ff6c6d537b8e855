"""The widget side of Neuroon, as far as the gateway's tokens matter: ``GET /api/widget/search`` checks
``X-Widget-Token`` exactly as Neuroon's backend does (neuroon-api.md §2.1, §2.5), so tests can prove the
tokens we sign are accepted; it answers a naive search over the synced catalog and a ``searchLogId``."""

from __future__ import annotations

import base64
import binascii
import secrets

from starlette.responses import Response

from app.neuroon.signing import InvalidWidgetToken, verify_widget_token
from app.sandbox.control import Sandbox
from app.sandbox.pipeline import Call
from app.sandbox.state import ShopState, normalize_site
from app.sandbox.wire import envelope, json_response

# app.widget.allowed-origins: trusted everywhere, besides the shop's own URL.
TRUSTED_HOSTS = ("localhost", "127.0.0.1")
TRUSTED_SUFFIX = "neuroon.ai"


def _token_shop(token: str) -> str | None:
    padded = token + "=" * (-len(token) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    payload, _, _ = raw.rpartition(":")
    shop_id, _, _ = payload.rpartition(":")
    return shop_id or None


def _origin_allowed(origin: str, state: ShopState) -> bool:
    site = normalize_site(origin)
    host = site.rsplit(":", 1)[0] if site.count(":") == 1 else site
    if host in TRUSTED_HOSTS or host == TRUSTED_SUFFIX or host.endswith("." + TRUSTED_SUFFIX):
        return True
    return state.shop.shop_url is not None and site == normalize_site(state.shop.shop_url)


class WidgetApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def search(self, call: Call) -> Response:
        token = call.request.headers.get("x-widget-token")
        if not token:
            return envelope(401, "Missing widget token", call.path)
        shop_id = _token_shop(token)
        state = self.sandbox.shops.get(shop_id) if shop_id else None
        if state is None:
            return envelope(401, "Invalid widget token", call.path)
        try:
            # Checked against the key the shop has *now*: a rotated key invalidates old tokens at once.
            verify_widget_token(token, state.shop.id, state.shop.key, now=self.sandbox.wall_clock())
        except InvalidWidgetToken:
            return envelope(401, "Invalid or expired widget token", call.path)
        origin = call.request.headers.get("origin")
        if origin is not None and not _origin_allowed(origin, state):
            return envelope(403, "Origin not allowed for this shop", call.path)
        call.state = state
        query = (call.request.query_params.get("q") or "").strip().lower()
        hits = [p for p in state.products.values() if query in str(p.get("name", "")).lower()][:20]
        search_log_id = "log_" + secrets.token_hex(8)
        state.search_log_ids.append(search_log_id)
        return json_response({"products": hits, "total": len(hits), "searchLogId": search_log_id})
