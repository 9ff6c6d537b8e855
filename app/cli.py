"""The ``neuroon-gateway`` command. Exit codes: 0 success, 1 the work failed, 2 bad usage or configuration."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app import __version__
from app.embedded_redis import EmbeddedRedis, EmbeddedRedisError, free_port
from app.logging import configure_logging, logs_as_json, redact_secrets
from app.settings import ConfigError, Settings, chosen_log_format, load_settings

if TYPE_CHECKING:
    from app.sandbox.serve import SandboxServer
    from app.shops import ShopRegistry

cli = typer.Typer(
    name="neuroon-gateway",
    help="Server-to-server integration of Neuroon AI search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEMO_SHOP_ID = "shop_demo"

log = logging.getLogger("app.cli")


def fail(message: str, code: int = 2) -> typer.Exit:
    if logs_as_json():  # a server process in json format: even this line is one JSON object
        log.error("command_failed", extra={"detail": message, "exit_code": code})
    else:
        typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _server_logging(default: str) -> None:
    """For the long-running commands: logging first, in the chosen format, so that even a
    configuration error is reported in it (interface.md §3.5)."""
    configure_logging(chosen_log_format() or default)


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


DEMO_PRODUCTS = [
    {
        "externalId": "DEMO-1",
        "name": "Trail running shoe",
        "price": 89.9,
        "currency": "EUR",
        "url": "https://shop.example/p/1",
    },
    {
        "externalId": "DEMO-2",
        "name": "Waterproof hiking jacket",
        "price": 129.0,
        "currency": "EUR",
        "url": "https://shop.example/p/2",
    },
    {
        "externalId": "DEMO-3",
        "name": "Merino wool socks",
        "price": 14.5,
        "currency": "EUR",
        "url": "https://shop.example/p/3",
    },
]


def _start_demo_sandbox(shop_id: str, key: str, shop_url: str, host: str, port: int) -> SandboxServer:
    """The local Neuroon of demo mode, knowing the demo shop and a few products."""
    from app.sandbox import SandboxShop, create_sandbox
    from app.sandbox.serve import SandboxServer

    sandbox = create_sandbox([SandboxShop(shop_id, key, shop_url, name="Demo shop")])
    sandbox.shops[shop_id].apply_sync("INCREMENTAL", [dict(p) for p in DEMO_PRODUCTS])
    # port + 1 is easy to remember; when it is taken, any free port will do (the banner shows it).
    for candidate in (port, free_port()):
        server = SandboxServer(sandbox.app, host, candidate)
        try:
            server.start()
        except RuntimeError:
            continue
        return server
    raise fail("the Neuroon sandbox of demo mode could not listen on any port", 1)


@contextlib.contextmanager
def _dev_environment(settings: Settings, host: str, port: int) -> Iterator[Settings]:
    """For `serve --dev`: an embedded Redis unless REDIS_URL is set; without credentials, a demo shop
    and a local Neuroon sandbox on port + 1 (or a free port) that the gateway is pointed at."""
    overrides: dict[str, Any] = {}
    embedded: EmbeddedRedis | None = None
    sandbox_server: SandboxServer | None = None
    if settings.redis_url is None:
        embedded = EmbeddedRedis(settings.gateway_data_dir / "redis")
        try:
            overrides["redis_url"] = embedded.start()
        except EmbeddedRedisError as exc:
            raise fail(str(exc), 1) from None
        (settings.gateway_data_dir / "redis.url").write_text(embedded.url, encoding="utf-8")
    if not settings.has_credentials:
        key = _demo_key(settings.gateway_data_dir)
        shop_url = f"http://localhost:{port}"
        sandbox_server = _start_demo_sandbox(DEMO_SHOP_ID, key, shop_url, "127.0.0.1", port + 1)
        overrides |= {
            "neuroon_shop_id": DEMO_SHOP_ID,
            "neuroon_api_key": key,
            "neuroon_shop_url": shop_url,
            "neuroon_api_url": sandbox_server.url,
            "gateway_cors_origins": f"http://127.0.0.1:{port}",
            "demo": True,
        }
    try:
        yield _load(**overrides) if overrides else settings
    finally:
        if sandbox_server is not None:
            sandbox_server.stop()
        if embedded is not None:
            embedded.stop()
            (settings.gateway_data_dir / "redis.url").unlink(missing_ok=True)


def _banner(settings: Settings, host: str, port: int, *, embedded_redis: bool) -> str:
    base = f"http://{host}:{port}"
    sandbox = settings.neuroon_api_url
    lines = ["", "neuroon-gateway is serving on " + base]
    if settings.demo:
        lines += [
            "DEMO MODE: no Neuroon credentials are configured, so a demo shop "
            f"({DEMO_SHOP_ID}) with a local key is used,",
            f"and Neuroon is a local sandbox on {sandbox} (in memory: it forgets everything on exit).",
            "Set NEUROON_SHOP_ID and NEUROON_API_KEY (see README) to serve your real shop.",
        ]
    lines += [
        "",
        "  widget token:  curl -s " + base + "/v1/widget-token",
        "  readiness:     curl -s " + base + "/readyz",
        "  metrics:       curl -s " + base + "/metrics",
    ]
    if settings.demo:
        read_token = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"token\"])'"  # noqa: S105
        token = f"$(curl -s {base}/v1/widget-token | {read_token})"
        lines += [
            "",
            "  The sandbox, i.e. what Neuroon received:",
            f'  search as the widget:  curl -s -H "X-Widget-Token: {token}"'
            f' "{sandbox}/api/widget/search?q=shoe"',
            f"  catalog:               curl -s {sandbox}/_sandbox/shops/{DEMO_SHOP_ID}/products",
            f"  conversions:           curl -s {sandbox}/_sandbox/shops/{DEMO_SHOP_ID}/conversions",
            f"  requests received:     curl -s {sandbox}/_sandbox/requests",
            f"""  simulate an outage:    curl -s -X POST {sandbox}/_sandbox/outage"""
            """ -H 'Content-Type: application/json' -d '{"on": true}'""",
        ]
    lines += [
        "",
        "Ctrl-C stops the gateway"
        + (", its embedded Redis" if embedded_redis else "")
        + (" and the sandbox." if settings.demo else "."),
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
    from app.server import server_config

    # Development reads better as console lines, unless the format was chosen explicitly.
    _server_logging("console" if dev else "json")
    settings = _load()
    embedded_redis = dev and settings.redis_url is None
    with contextlib.ExitStack() as stack:
        if dev:
            settings = stack.enter_context(_dev_environment(settings, host, port))
        if no_worker:
            settings = settings.model_copy(update={"gateway_run_worker": False})
        if settings.redis_url is not None:
            _refuse_a_failed_tls_handshake(settings.redis_url.get_secret_value())
        try:
            app = create_app(settings)
        except ConfigError as exc:
            raise fail(str(exc)) from None
        if dev or not logs_as_json():
            typer.echo(_banner(settings, host, port, embedded_redis=embedded_redis), err=True)
        else:  # no banner among JSON lines: the same facts as one event
            log.info(
                "gateway_starting",
                extra={"url": f"http://{host}:{port}", "version": __version__, "worker": not no_worker},
            )
        config = server_config(app, settings, host, port)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal. Turning that
        # into KeyboardInterrupt lets the embedded Redis (if any) stop cleanly, and the stop that
        # an operator asked for ends with exit code 0.
        signal.signal(signal.SIGTERM, _interrupt)
        _tune_gc()
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(config).run()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _tune_gc() -> None:
    """For a long-running server process: what is loaded by now (modules, the app, settings) lives
    as long as the process, so it is moved out of the garbage collector's sight and full
    collections stay short. Measured in make bench: the webhook intake's p99 about halved."""
    gc.freeze()


@cli.command()
def token(
    shop: Annotated[str | None, typer.Option("--shop", help="Shop id (several shops).")] = None,
) -> None:
    """Print the current widget token (from the cache, signing if needed)."""
    from app.neuroon.signing import sign_widget_token
    from app.store import Store, connect
    from app.store.deadline import RedisDeadline
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
        chosen = _shops(settings).choose(shop)
    except LookupError as exc:
        raise fail(str(exc)) from None
    if settings.redis_url is None:
        # No shared cache to consult: a locally signed token is just as valid.
        typer.echo(sign_widget_token(chosen.id, chosen.api_key.get_secret_value(), int(time.time())))
        return
    redis_url = settings.redis_url.get_secret_value()

    async def fetch() -> str:
        redis = connect(redis_url)
        try:
            entry, _ = await TokenCache(
                Store(redis),
                refresh_margin=settings.gateway_token_refresh_margin,
                # Not a request path: a command can wait for the shared token (a new connection's
                # handshake alone may take longer than the token path's deadline).
                deadline=RedisDeadline("token", settings.gateway_redis_timeout),
            ).get(chosen)
            return entry.token
        finally:
            await redis.aclose()

    typer.echo(asyncio.run(fetch()))


def _redis_url(settings: Settings) -> str:
    if settings.redis_url is None:
        url_file = settings.gateway_data_dir / "redis.url"
        if url_file.exists():  # a running `make run`
            return url_file.read_text(encoding="utf-8").strip()
        raise fail("REDIS_URL is not set")
    return settings.redis_url.get_secret_value()


def _refuse_a_failed_tls_handshake(url: str) -> None:
    """A TLS REDIS_URL whose handshake fails stops start-up (app/store/tls.py says why)."""
    from app.store.tls import tls_refusal

    reason = asyncio.run(tls_refusal(url))
    if reason is not None:
        raise fail(f"REDIS_URL: {reason}")


def _shops(settings: Settings) -> ShopRegistry:
    from app.main import secret_values
    from app.shops import ShopRegistry

    try:
        shops = ShopRegistry(settings.shops())
    except ConfigError as exc:
        raise fail(str(exc)) from None
    redact_secrets(secret_values(settings, shops))
    return shops


@cli.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="Deliveries in flight at once (default GATEWAY_WORKER_CONCURRENCY).", min=1),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve /metrics, /livez and /readyz on this port (default: GATEWAY_METRICS_ADDRESS, "
            "else none).",
            min=1,
            max=65535,
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            help="Address for --metrics-port. Loopback by default: /metrics names every shop; "
            "use the pod's address (or 0.0.0.0) where Prometheus and the kubelet must reach it.",
        ),
    ] = "127.0.0.1",
) -> None:
    """Run the conversion delivery worker only (any number of them may share one Redis)."""
    from app.conversions.process import run_worker_process
    from app.metrics_listener import ListenerError

    _server_logging("json")
    settings = _load()
    if concurrency is not None:
        settings = settings.model_copy(update={"gateway_worker_concurrency": concurrency})
    shops = _shops(settings)
    url = _redis_url(settings)
    _refuse_a_failed_tls_handshake(url)
    listen, setting = settings.metrics_listen, "GATEWAY_METRICS_ADDRESS"
    if metrics_port is not None:
        listen, setting = (metrics_host, metrics_port), "--metrics-host/--metrics-port"
    _tune_gc()
    try:
        asyncio.run(run_worker_process(settings, shops, url, listen, setting))
    except ListenerError as exc:
        raise fail(str(exc)) from None


dlq = typer.Typer(help="Conversions that could not be delivered: list, replay, drop.", no_args_is_help=True)
cli.add_typer(dlq, name="dlq")


def _with_store(settings: Settings, action: Any) -> Any:
    from app.store import connect
    from app.store.conversions import ConversionStore

    url = _redis_url(settings)

    async def run() -> Any:
        redis = connect(url, socket_timeout=5.0)
        try:
            return await action(ConversionStore(redis))
        finally:
            await redis.aclose()

    return asyncio.run(run())


@dlq.command("list")
def dlq_list(
    shop: Annotated[str | None, typer.Option("--shop", help="Only this shop.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.", min=1)] = 100,
) -> None:
    """List dead letters: id, when, attempts, reason."""
    from app.conversions import deadletters

    settings = _load()
    shops = _shops(settings)
    try:
        letters = _with_store(
            settings, lambda store: deadletters.list_dead_letters(store, shops, shop, limit)
        )
    except deadletters.UnknownId:
        raise fail("unknown shop") from None
    if not letters:
        typer.echo("no dead letters")
    for letter in letters:
        typer.echo(f"{letter.id}\t{letter.dead_lettered_at}\tattempts={letter.attempts}\t{letter.reason}")


@dlq.command("replay")
def dlq_replay(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids (shopId:orderId).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    shop: Annotated[str | None, typer.Option("--shop", help="With --all: only this shop.")] = None,
) -> None:
    """Queue dead letters for delivery again."""
    from app.conversions import deadletters

    settings = _load()
    shops = _shops(settings)
    if bool(ids) == all_:
        raise fail("give dead-letter ids, or --all")

    async def replay(store: Any) -> list[tuple[str, bool]]:
        chosen = list(ids or [])
        if all_:
            chosen = [d.id for d in await deadletters.list_dead_letters(store, shops, shop, 1_000_000)]
        results = []
        for dead_letter_id in chosen:
            try:
                results.append((dead_letter_id, await deadletters.replay(store, shops, dead_letter_id)))
            except deadletters.UnknownId:
                results.append((dead_letter_id, False))
        return results

    try:
        results = _with_store(settings, replay)
    except deadletters.UnknownId:
        raise fail("unknown shop") from None
    _report(results, "replayed")


@dlq.command("drop")
def dlq_drop(ids: Annotated[list[str], typer.Argument(help="Dead-letter ids (shopId:orderId).")]) -> None:
    """Discard dead letters for good (the orders still count as duplicates if sent again)."""
    from app.conversions import deadletters

    settings = _load()
    shops = _shops(settings)
    retention = settings.gateway_order_retention_days * 86_400

    async def drop(store: Any) -> list[tuple[str, bool]]:
        results = []
        for dead_letter_id in ids:
            try:
                results.append(
                    (dead_letter_id, await deadletters.drop(store, shops, dead_letter_id, retention))
                )
            except deadletters.UnknownId:
                results.append((dead_letter_id, False))
        return results

    _report(_with_store(settings, drop), "dropped")


def _report(results: list[tuple[str, bool]], verb: str) -> None:
    for dead_letter_id, done in results:
        typer.echo(f"{verb}: {dead_letter_id}" if done else f"not found: {dead_letter_id}")
    if not all(done for _, done in results):
        raise typer.Exit(1)


@cli.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8100,
    shops_file: Annotated[
        Path | None,
        typer.Option(
            "--shops-file",
            help="TOML file listing shops (each with id, key or key_file, shop_url). "
            "Default: the gateway's own shops "
            "(NEUROON_SHOP_ID/NEUROON_API_KEY or GATEWAY_SHOPS_FILE), else the demo shop.",
        ),
    ] = None,
    rate_limits: Annotated[
        bool, typer.Option("--rate-limits", help="Enforce Neuroon's documented rate limits.")
    ] = False,
) -> None:
    """Run the local Neuroon sandbox (demos and integration tests; keys are read from files or the
    environment, never from the command line)."""
    import uvicorn

    from app.sandbox import SandboxShop, create_sandbox, load_shops_toml
    from app.sandbox.control import SANDBOX_LIMITS

    _server_logging("json")
    settings = _load()
    try:
        if shops_file is not None:
            shops = load_shops_toml(shops_file)
        elif settings.has_credentials:
            shops = [SandboxShop(c.id, c.api_key.get_secret_value(), c.shop_url) for c in settings.shops()]
        else:
            shops = [SandboxShop(DEMO_SHOP_ID, _demo_key(settings.gateway_data_dir), "http://localhost:8000")]
    except (ConfigError, ValueError, OSError) as exc:
        raise fail(f"sandbox shops: {exc}") from None
    redact_secrets(s.key for s in shops)
    sandbox = create_sandbox(shops, rate_limits=SANDBOX_LIMITS if rate_limits else None)
    if logs_as_json():
        log.info("sandbox_starting", extra={"url": f"http://{host}:{port}", "shops": [s.id for s in shops]})
    else:
        typer.echo(
            f"Neuroon sandbox on http://{host}:{port} for shops: {', '.join(s.id for s in shops)}; "
            f"controls under http://{host}:{port}/_sandbox/state",
            err=True,
        )
    uvicorn.run(sandbox.app, host=host, port=port, log_config=None, access_log=False, lifespan="off")


def _add_catalog_commands() -> None:
    from app.catalog.cli import catalog_app, verify_domain_command

    cli.add_typer(catalog_app, name="catalog")
    cli.command("verify-domain")(verify_domain_command)


_add_catalog_commands()


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
