"""Assembly of the gateway: the app factory and its lifespan. Nothing runs at import."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp

from app import __version__, health
from app.errors import document_api, install_error_handlers
from app.logging import redact_secrets
from app.middleware import RequestMiddleware
from app.neuroon.client import NeuroonClient, build_http_client
from app.ratelimit import RateLimiter
from app.settings import ConfigError, Settings, load_settings
from app.shops import ShopRegistry
from app.state import GatewayState
from app.store import Store, connect
from app.tokens import endpoint as token_endpoint
from app.tokens.cache import TokenCache


def secret_values(settings: Settings, shops: ShopRegistry) -> list[str]:
    """Every secret this process knows, for log redaction."""
    values = []
    for shop in shops:
        values.append(shop.api_key.get_secret_value())
        for group in (
            shop.config.shopify_webhook_secrets,
            shop.config.woocommerce_webhook_secrets,
            shop.config.webhook_secrets,
        ):
            values.extend(s.get_secret_value() for s in group)
    if settings.redis_url:
        values.append(settings.redis_url.get_secret_value())
    admin = settings.secret("GATEWAY_ADMIN_JWT_SECRET")
    if admin:
        values.append(admin.get_secret_value())
    return values


class Gateway(FastAPI):
    """FastAPI with our two outermost layers in front of its own stack.

    RequestMiddleware (request id, access log, HTTP metrics) sees every request, the 500s of
    FastAPI's error middleware included; the widget-token endpoint answers ahead of FastAPI's
    middleware and router, because it is the hot path (see app/tokens/endpoint.py).
    """

    def build_middleware_stack(self) -> ASGIApp:
        return RequestMiddleware(token_endpoint.WidgetTokenEndpoint(super().build_middleware_stack()))


def create_app(
    settings: Settings | None = None, *, neuroon_transport: httpx.AsyncBaseTransport | None = None
) -> Gateway:
    """Build the gateway. Raises ConfigError (before serving anything) when settings are bad.

    ``neuroon_transport`` replaces the network under the Neuroon client, e.g.
    ``httpx.ASGITransport(app=sandbox_app)`` to put the sandbox in-process in tests.
    """
    settings = settings or load_settings()
    shops = ShopRegistry(settings.shops())
    if settings.redis_url is None:
        raise ConfigError("REDIS_URL is not set (only `serve --dev` starts an embedded Redis)")
    redis_url = settings.redis_url.get_secret_value()
    redact_secrets(secret_values(settings, shops))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, GatewayState]]:
        redis = connect(redis_url)
        store = Store(redis)
        http = build_http_client(settings, neuroon_transport)
        state = GatewayState(
            settings=settings,
            shops=shops,
            store=store,
            tokens=TokenCache(
                store,
                refresh_margin=settings.gateway_token_refresh_margin,
                memory_ttl=settings.gateway_token_memory_ttl,
            ),
            token_limiter=RateLimiter(store, "widget_token", settings.gateway_token_rate_limit),
            neuroon=NeuroonClient.from_settings(http, settings),
        )
        watcher = asyncio.create_task(shops.watch_key_files(settings.gateway_key_reload_interval))
        try:
            yield {"gateway": state}
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await http.aclose()
            await redis.aclose()

    app = Gateway(
        title="neuroon-gateway",
        version=__version__,
        summary="Server-to-server integration of Neuroon AI search.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    document_api(app, token_endpoint.OPENAPI_PATH, token_endpoint.OPENAPI_SCHEMAS)
    app.include_router(health.router)
    return app
