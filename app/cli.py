"""The ``neuroon-gateway`` command. Exit codes: 0 success, 1 the work failed, 2 bad usage or configuration."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from app.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from app.logging import configure_logging, redact_secrets
from app.settings import ConfigError, Settings, load_settings

cli = typer.Typer(
    name="neuroon-gateway",
    help="Server-to-server integration of Neuroon AI search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEMO_SHOP_ID = "shop_demo"


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _load(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _demo_key(data_dir: Path) -> str:
    """The demo shop's key: random, kept under ./var so tokens survive a restart."""
    path = data_dir / "demo-shop.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(f"sk_{secrets.token_hex(16)}\n", encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


@contextlib.contextmanager
def _dev_environment(settings: Settings, host: str, port: int) -> Iterator[Settings]:
    """For `serve --dev`: an embedded Redis unless REDIS_URL is set, a demo shop unless credentials are."""
    overrides: dict[str, Any] = {}
    embedded: EmbeddedRedis | None = None
    if settings.redis_url is None:
        embedded = EmbeddedRedis(settings.gateway_data_dir / "redis")
        try:
            overrides["redis_url"] = embedded.start()
        except EmbeddedRedisError as exc:
            raise fail(str(exc), 1) from None
        (settings.gateway_data_dir / "redis.url").write_text(embedded.url, encoding="utf-8")
    if not settings.has_credentials:
        overrides |= {
            "neuroon_shop_id": DEMO_SHOP_ID,
            "neuroon_api_key": _demo_key(settings.gateway_data_dir),
            "neuroon_shop_url": f"http://localhost:{port}",
            "gateway_cors_origins": f"http://127.0.0.1:{port}",
            "demo": True,
        }
    try:
        yield _load(**overrides) if overrides else settings
    finally:
        if embedded is not None:
            embedded.stop()
            (settings.gateway_data_dir / "redis.url").unlink(missing_ok=True)


def _banner(settings: Settings, host: str, port: int, *, embedded_redis: bool) -> str:
    base = f"http://{host}:{port}"
    lines = ["", "neuroon-gateway is serving on " + base]
    if settings.demo:
        lines += [
            "DEMO MODE: no Neuroon credentials are configured, so a demo shop "
            f"({DEMO_SHOP_ID}) with a local key is used.",
            "Set NEUROON_SHOP_ID and NEUROON_API_KEY (see README) to serve your real shop.",
        ]
    lines += [
        "",
        "  widget token:  curl -s " + base + "/v1/widget-token",
        "  readiness:     curl -s " + base + "/readyz",
        "  metrics:       curl -s " + base + "/metrics",
        "",
        "Ctrl-C stops the gateway" + (" and its embedded Redis." if embedded_redis else "."),
        "",
    ]
    return "\n".join(lines)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Do not run the conversion delivery worker in this process.")
    ] = False,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="Development: embedded Redis unless REDIS_URL is set; demo shop without credentials.",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from app.main import create_app

    settings = _load()
    # Development reads better as console lines, unless the format was chosen explicitly.
    explicit = "gateway_log_format" in settings.model_fields_set
    configure_logging("console" if dev and not explicit else settings.gateway_log_format)
    embedded_redis = dev and settings.redis_url is None
    with contextlib.ExitStack() as stack:
        if dev:
            settings = stack.enter_context(_dev_environment(settings, host, port))
        try:
            app = create_app(settings)
        except ConfigError as exc:
            raise fail(str(exc)) from None
        typer.echo(_banner(settings, host, port, embedded_redis=embedded_redis), err=True)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            proxy_headers=False,  # X-Forwarded-For is judged by GATEWAY_TRUSTED_PROXIES, not uvicorn
            timeout_graceful_shutdown=20,
        )
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal. Turning that
        # into KeyboardInterrupt lets the embedded Redis (if any) stop cleanly, and the stop that
        # an operator asked for ends with exit code 0.
        signal.signal(signal.SIGTERM, _interrupt)
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(config).run()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@cli.command()
def token(
    shop: Annotated[str | None, typer.Option("--shop", help="Shop id (several shops).")] = None,
) -> None:
    """Print the current widget token (from the cache, signing if needed)."""
    from app.neuroon.signing import sign_widget_token
    from app.shops import ShopRegistry
    from app.store import Store, connect
    from app.tokens.cache import TokenCache

    settings = _load()
    overrides: dict[str, Any] = {}
    url_file = settings.gateway_data_dir / "redis.url"
    if settings.redis_url is None and url_file.exists():  # a running `make run`
        overrides["redis_url"] = url_file.read_text(encoding="utf-8").strip()
    if not settings.has_credentials and (settings.gateway_data_dir / "demo-shop.key").exists():
        overrides |= {
            "neuroon_shop_id": DEMO_SHOP_ID,
            "neuroon_api_key": _demo_key(settings.gateway_data_dir),
        }
    settings = _load(**overrides) if overrides else settings
    configure_logging(settings.gateway_log_format)
    try:
        shops = ShopRegistry(settings.shops())
    except ConfigError as exc:
        raise fail(str(exc)) from None
    redact_secrets(s.api_key.get_secret_value() for s in shops)
    chosen = shops.get(shop) if shop else shops.single
    if chosen is None:
        raise fail("unknown shop" if shop else "several shops are configured: pass --shop")
    if settings.redis_url is None:
        # No shared cache to consult: a locally signed token is just as valid.
        typer.echo(sign_widget_token(chosen.id, chosen.api_key.get_secret_value(), int(time.time())))
        return
    redis_url = settings.redis_url.get_secret_value()

    async def fetch() -> str:
        redis = connect(redis_url)
        try:
            entry, _ = await TokenCache(
                Store(redis), refresh_margin=settings.gateway_token_refresh_margin
            ).get(chosen)
            return entry.token
        finally:
            await redis.aclose()

    typer.echo(asyncio.run(fetch()))


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
