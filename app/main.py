"""Assembly of the gateway: the app factory and its lifespan. Nothing runs at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from app import __version__, health, metrics_listener
from app.auth import build_admin_auth
from app.cancellation import cancel_and_wait
from app.catalog import routes as catalog_routes
from app.conversions import admin as conversion_admin
from app.conversions import endpoint as webhook_endpoint
from app.conversions import routes as webhook_routes
from app.conversions.intake import Intake
from app.conversions.worker import DeliveryWorker, monitor_queues, running
from app.errors import document_api, install_error_handlers
from app.logging import redact_secrets, url_secrets
from app.middleware import RequestMiddleware
from app.neuroon.client import NeuroonClient, build_http_client
from app.ratelimit import RateLimiter
from app.settings import ConfigError, Settings, load_settings
from app.shops import ShopRegistry
from app.state import GatewayState
from app.store import Store, connect
from app.store.catalog import CatalogStore
from app.store.conversions import ConversionStore
from app.store.deadline import RedisDeadline
from app.store.durability import AckDurability, host_crash_loss
from app.tokens import endpoint as token_endpoint
from app.tokens.cache import TokenCache

log = logging.getLogger(__name__)

WORKER_SOCKET_TIMEOUT = 10.0


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
        values.extend(url_secrets(settings.redis_url.get_secret_value()))
    admin = settings.secret("GATEWAY_ADMIN_JWT_SECRET")
    if admin:
        values.append(admin.get_secret_value())
    return values


def ack_durability(redis: aioredis.Redis, settings: Settings) -> AckDurability:
    """What the writes of a conversion store on ``redis`` wait for: the intake's claims, and the
    worker's records of a delivery (app/store/durability.py)."""
    replicas = settings.gateway_ack_replicas
    return AckDurability(
        redis,
        replicas=None if replicas == "auto" else replicas,
        # A claim may wait behind another batch's wait: two must fit in the webhook's deadline,
        # or a slow replica would read as a hung Redis and open the webhooks' breaker.
        timeout=min(settings.gateway_ack_timeout, settings.gateway_redis_timeout / 2.5),
    )


async def warn_if_redis_can_lose_conversions(store: ConversionStore) -> None:
    """Queued conversions live in Redis: say so loudly when this Redis could drop them, and say what
    an acknowledgement waits for."""
    try:
        problems = await store.durability_problems()
        if store.durability:
            deployment = await store.durability.refresh()
            plan = await store.durability.plan()
            log.info("ack_durability", extra={"waits_for": plan.describe()})
            loss = host_crash_loss(deployment)
            if loss:
                problems.append(loss)
    except (RedisError, OSError) as exc:
        log.warning("redis_durability_unknown", extra={"error": type(exc).__name__})
        return
    for problem in problems:
        log.warning("redis_durability_risk", extra={"problem": problem})


class Gateway(FastAPI):
    """FastAPI with our two outermost layers in front of its own stack.

    RequestMiddleware (request id, access log, HTTP metrics) sees every request, the 500s of
    FastAPI's error middleware included; the widget-token endpoint answers ahead of FastAPI's
    middleware and router, because it is the hot path (see app/tokens/endpoint.py); so do the
    order webhooks' POSTs (app/conversions/endpoint.py).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The two hot paths skip FastAPI's per-request check for a configured OpenTelemetry provider
        # (FastAPI.__call__): it cost ~15 µs a request, more than verifying a webhook's signature
        # (make bench; the check reads os.environ three times). They never reach FastAPI's router or
        # middleware either; our own access log and metrics see them. Every other request keeps it.
        if scope["type"] == "http" and (
            scope["path"] == token_endpoint.PATH or webhook_endpoint.is_webhook_post(scope)
        ):
            await Starlette.__call__(self, scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        return RequestMiddleware(
            token_endpoint.WidgetTokenEndpoint(
                webhook_endpoint.WebhookEndpoint(super().build_middleware_stack())
            )
        )


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
    admin_auth = build_admin_auth(
        settings.secret("GATEWAY_ADMIN_JWT_SECRET"),
        settings.gateway_admin_jwks_url,
        settings.gateway_admin_jwks_cache_seconds,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, GatewayState]]:
        redis = connect(redis_url)
        store = Store(redis)
        conversions = ConversionStore(redis, ack_durability(redis, settings))
        http = build_http_client(settings, neuroon_transport)
        # One deadline (and breaker) per kind of caller; the token cache and the token limiter
        # share one, so a hung Redis costs the token path a single timeout.
        token_deadline = RedisDeadline("token", settings.gateway_redis_token_timeout)
        state = GatewayState(
            settings=settings,
            shops=shops,
            store=store,
            tokens=TokenCache(
                store,
                refresh_margin=settings.gateway_token_refresh_margin,
                memory_ttl=settings.gateway_token_memory_ttl,
                deadline=token_deadline,
            ),
            token_limiter=RateLimiter(
                store, "widget_token", settings.gateway_token_rate_limit, deadline=token_deadline
            ),
            conversions=conversions,
            intake=Intake(
                settings, shops, conversions, RedisDeadline("webhook", settings.gateway_redis_timeout)
            ),
            attribution_limiter=RateLimiter(
                store,
                "attribution",
                settings.gateway_attribution_rate_limit,
                deadline=RedisDeadline("rate_limit", settings.gateway_redis_token_timeout),
            ),
            neuroon=NeuroonClient.from_settings(http, settings),
            admin_auth=admin_auth,
            catalog=CatalogStore(redis),
        )
        await warn_if_redis_can_lose_conversions(conversions)
        watcher = asyncio.create_task(shops.watch_key_files(settings.gateway_key_reload_interval))
        monitor = asyncio.create_task(monitor_queues(conversions, shops))
        async with contextlib.AsyncExitStack() as stack:
            if admin_auth is not None:
                admin_auth.start()
                stack.push_async_callback(admin_auth.aclose)
            if settings.metrics_listen is not None:
                listener = metrics_listener.listener_app(
                    lambda: health.metrics_page(state),
                    lambda: health.not_ready_reason(redis, [shop.id for shop in shops]),
                )
                await stack.enter_async_context(
                    metrics_listener.serving(listener, *settings.metrics_listen, "GATEWAY_METRICS_ADDRESS")
                )
            if settings.gateway_run_worker:
                # Its own connections: they block on stream reads, longer than the API's timeout allows.
                worker_redis = connect(redis_url, socket_timeout=WORKER_SOCKET_TIMEOUT)
                stack.push_async_callback(worker_redis.aclose)
                worker = DeliveryWorker(
                    ConversionStore(worker_redis, ack_durability(worker_redis, settings)),
                    shops,
                    state.neuroon,
                    settings,
                )
                await stack.enter_async_context(running(worker))
            try:
                yield {"gateway": state}
            finally:
                for task in (watcher, monitor):
                    await cancel_and_wait(task)
        await http.aclose()
        await redis.aclose()

    app = Gateway(
        title="neuroon-gateway",
        version=__version__,
        summary="Server-to-server integration of Neuroon AI search.",
        lifespan=lifespan,
        # No Swagger UI / ReDoc pages: FastAPI's load their scripts from a CDN without integrity
        # (README, "HTTP API"). The OpenAPI document itself stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    document_api(app, token_endpoint.OPENAPI_PATH, token_endpoint.OPENAPI_SCHEMAS)
    app.include_router(health.router)
    if settings.metrics_listen is None:
        app.include_router(health.metrics_router)
    app.include_router(webhook_routes.router)
    app.include_router(conversion_admin.router)
    app.include_router(catalog_routes.router)
    return app
