"""``neuroon-gateway catalog sync|delete|reconcile`` and ``verify-domain``.

Exit codes (interface.md §1): 0 success, 1 the work failed (the report says what), 2 bad usage or
configuration — nothing is sent to Neuroon before a 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from redis.exceptions import RedisError

from app.catalog.feed import Feed, FeedError, open_feed
from app.catalog.lock import LockBusy, catalog_lock
from app.catalog.mapping import FieldMapping, MappingError, load_mapping
from app.catalog.normalise import Rules
from app.logging import configure_logging, redact_secrets, url_secrets
from app.neuroon.client import NeuroonClient, build_http_client
from app.neuroon.endpoints import DOCUMENTED_LIMITS, Limit, Operation
from app.neuroon.pacing import UpstreamLimiter
from app.settings import ConfigError, Settings, load_settings
from app.shops import Shop, ShopRegistry
from app.store import connect
from app.store.catalog import CatalogStore

catalog_app = typer.Typer(
    help="Sync, delete and reconcile the Neuroon catalog.", no_args_is_help=True, add_completion=False
)

ShopOption = Annotated[str | None, typer.Option("--shop", help="Shop id (when several are configured).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@dataclass
class Context:
    settings: Settings
    shop: Shop
    neuroon: NeuroonClient
    store: CatalogStore


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    configure_logging(settings.gateway_log_format)
    # One line per request to Neuroon would bury the progress and the report.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return settings


def _shop(settings: Settings, shop_id: str | None) -> Shop:
    try:
        shops = ShopRegistry(settings.shops())
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    redact_secrets(s.api_key.get_secret_value() for s in shops)
    try:
        return shops.choose(shop_id)
    except LookupError as exc:
        raise _fail(str(exc)) from None


def sync_limiter(settings: Settings) -> UpstreamLimiter:
    """The client's limiter, with the sync budget from GATEWAY_CATALOG_SYNC_LIMIT."""
    requests, window = settings.gateway_catalog_sync_limit.split("/")
    limits = {str(op): limit for op, limit in DOCUMENTED_LIMITS.items()}
    limits[str(Operation.SYNC_PRODUCTS)] = Limit(int(requests), float(window))
    return UpstreamLimiter(limits)


@contextlib.asynccontextmanager
async def _context(settings: Settings, shop: Shop) -> AsyncIterator[Context]:
    if settings.redis_url is None:
        raise _fail("REDIS_URL is not set (the catalog ledger lives in Redis)")
    redis_url = settings.redis_url.get_secret_value()
    redact_secrets(url_secrets(redis_url))
    redis = connect(redis_url, socket_timeout=10.0)
    http = build_http_client(settings)
    try:
        neuroon = NeuroonClient(
            http,
            attempts=settings.neuroon_retry_attempts,
            max_retry_wait=settings.neuroon_max_retry_wait,
            limiter=sync_limiter(settings),
        )
        yield Context(settings, shop, neuroon, CatalogStore(redis))
    finally:
        await http.aclose()
        await redis.aclose()


def _mapping(settings: Settings) -> FieldMapping:
    try:
        return load_mapping(settings.gateway_catalog_field_map)
    except MappingError as exc:
        raise _fail(str(exc)) from None


def _open(path: str) -> Feed:
    try:
        return open_feed(path)
    except FeedError as exc:
        raise _fail(str(exc)) from None


def _print(report: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        typer.echo(report.to_text())


@catalog_app.command("sync")
def sync_command(
    file: Annotated[str, typer.Argument(help="JSON Lines, JSON array or CSV feed; - for stdin.")],
    shop: ShopOption = None,
    full: Annotated[
        bool, typer.Option("--full", help="FULL sync: wipes Neuroon's catalog first (needs --confirm-wipe).")
    ] = False,
    confirm_wipe: Annotated[
        str | None, typer.Option("--confirm-wipe", help="The shop id, to confirm a FULL sync.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Send unchanged products too.")] = False,
    overwrite_drift: Annotated[
        bool, typer.Option("--overwrite-drift", help="Overwrite products changed in Neuroon since our sync.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read, check and plan; send nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Sync a product feed to Neuroon (INCREMENTAL unless --full), with a progress bar and a report."""
    from app.catalog.progress import progress_for
    from app.catalog.service import sync_feed
    from app.catalog.sync import SyncOptions

    settings = _settings()
    chosen = _shop(settings, shop)
    if confirm_wipe is not None and not full:
        raise _fail("--confirm-wipe only goes with --full")
    if full and confirm_wipe != chosen.id:
        raise _fail(
            f"--full wipes shop {chosen.id}'s whole catalog in Neuroon before reinserting the feed; "
            f"confirm with --full --confirm-wipe {chosen.id}"
        )
    if settings.gateway_prices_include_tax is None:
        raise _fail(
            "GATEWAY_PRICES_INCLUDE_TAX is not set: say whether the feed's prices include tax "
            "(true/false); Neuroon takes prices as they are"
        )
    options = SyncOptions(
        prices_include_tax=settings.gateway_prices_include_tax,
        rules=Rules(settings.gateway_description_soft_limit, _mapping(settings)),
        batch_size=settings.gateway_catalog_batch_size,
        concurrency=settings.gateway_catalog_concurrency,
        full=full,
        force=force,
        overwrite_drift=overwrite_drift,
        dry_run=dry_run,
    )
    feed = _open(file)

    async def go() -> Any:
        async with _context(settings, chosen) as ctx:
            try:
                async with catalog_lock(ctx.store, chosen.id):
                    progress = progress_for(feed)
                    try:
                        return await sync_feed(feed, chosen, ctx.neuroon, ctx.store, options, progress)
                    finally:
                        progress.close()
            except LockBusy as exc:
                raise _fail(str(exc), 1) from None

    report = _run(go)
    _print(report, as_json)
    # Nothing accepted (every row refused) is a failed run, as the admin push's 422 says.
    raise typer.Exit(0 if report.ok and not report.nothing_accepted else 1)


def _run(go: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a command's coroutine; an unreadable feed is bad usage (2), Redis out of reach a failure (1)."""
    try:
        return asyncio.run(go())
    except FeedError as exc:
        raise _fail(str(exc)) from None
    except RedisError as exc:
        raise _fail(f"Redis cannot be reached ({type(exc).__name__}): check REDIS_URL", 1) from None
    except OSError as exc:
        raise _fail(f"input/output error: {exc.strerror or type(exc).__name__}", 1) from None


@catalog_app.command("delete")
def delete_command(
    external_ids: Annotated[list[str], typer.Argument(help="externalIds of the products to delete.")],
    shop: ShopOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete products from Neuroon (a product already gone counts as deleted)."""
    from app.catalog.reconcile import delete_products
    from app.catalog.service import record_deleted

    settings = _settings()
    chosen = _shop(settings, shop)

    async def go() -> Any:
        async with _context(settings, chosen) as ctx:
            report = await delete_products(chosen, ctx.neuroon, ctx.store, external_ids)
            await record_deleted(ctx.store, chosen.id, len(report.deleted) + len(report.already_gone))
            return report

    report = _run(go)
    if as_json:
        typer.echo(
            json.dumps(
                {"deleted": report.deleted, "alreadyGone": report.already_gone, "failed": report.failed}
            )
        )
    else:
        for external_id in report.deleted:
            typer.echo(f"deleted {external_id}")
        for external_id in report.already_gone:
            typer.echo(f"deleted {external_id} (it was already gone)")
        for external_id, reason in report.failed.items():
            typer.echo(f"FAILED {external_id}: {reason}")
    raise typer.Exit(0 if report.ok else 1)


@catalog_app.command("reconcile")
def reconcile_command(
    file: Annotated[str, typer.Argument(help="The full feed (JSON Lines, JSON array or CSV; - for stdin).")],
    shop: ShopOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deleted.")] = False,
    max_delete_ratio: Annotated[
        float | None,
        typer.Option(
            "--max-delete-ratio",
            min=0.0,
            max=1.0,
            help="Refuse to delete more than this share of the catalog "
            "(default: GATEWAY_MAX_DELETE_RATIO, 0.2).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Delete from Neuroon the products the feed no longer has."""
    from app.catalog.reconcile import reconcile
    from app.catalog.service import record_deleted

    settings = _settings()
    chosen = _shop(settings, shop)
    mapping = _mapping(settings)
    ratio = settings.gateway_max_delete_ratio if max_delete_ratio is None else max_delete_ratio
    feed = _open(file)

    async def go() -> Any:
        async with _context(settings, chosen) as ctx:
            try:
                async with catalog_lock(ctx.store, chosen.id):
                    report = await reconcile(
                        chosen, ctx.neuroon, ctx.store, feed, mapping, max_delete_ratio=ratio, dry_run=dry_run
                    )
            except LockBusy as exc:
                raise _fail(str(exc), 1) from None
            if report.deletions is not None:
                gone = len(report.deletions.deleted) + len(report.deletions.already_gone)
                await record_deleted(ctx.store, chosen.id, gone)
            return report

    report = _run(go)
    _print(report, as_json)
    raise typer.Exit(0 if report.ok else 1)


def verify_domain_command(shop: ShopOption = None) -> None:
    """Verify the shop's domain with Neuroon (already verified counts as success)."""
    from app.catalog.verify import verify_domain

    settings = _settings()
    chosen = _shop(settings, shop)

    async def go() -> Any:
        async with build_http_client(settings) as http:
            return await verify_domain(chosen, NeuroonClient.from_settings(http, settings))

    result = asyncio.run(go())
    if result.ok:
        typer.echo(result.message)
        raise typer.Exit(0)
    typer.secho(f"error: {result.message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(1)
