"""The one typed list of configuration, and the only reader of the environment.

Every secret is a ``SecretStr`` and may come from a ``*_FILE`` variable instead (Docker and
Kubernetes mount secrets as files). A bad setting raises ``ConfigError`` naming the variable,
never its value; the CLI turns that into exit code 2.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.store.redis_url import parse_redis_url

# Neuroon documents the key as ^sk_[0-9a-f]{32}$ without saying whether hex is case-sensitive;
# we accept either case and use the string as-is as the HMAC key, exactly as Neuroon does.
API_KEY_PATTERN = re.compile(r"^sk_[0-9a-fA-F]{32}$")
# Shop ids are opaque to us (docs show shop_abc and UUIDs). They go into URL paths, Redis keys
# and the token payload, so we only admit characters that are safe in all three.
SHOP_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

DEFAULT_API_URL = "https://api.neuroon.ai"

# Which id names a product to Neuroon, the same in both flows (app/product_identity.py): the catalog's
# externalId and the conversion's productId.
ProductIdentity = Literal["sku", "product_id", "variant_id"]


class ConfigError(Exception):
    """A setting is missing or malformed. The message names the variable, never its value."""


def origin_of(url: str) -> str:
    """The browser origin (``scheme://host[:port]``, lower-case) of a URL, or ValueError."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL such as https://shop.example")
    default_port = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("has an invalid port") from exc
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default_port else "")


def parse_listen_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets: ``[::1]:9100``) as (host, port), or ValueError."""
    host, sep, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535 or " " in host:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9100 or [::1]:9100")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
            raise ValueError("must be HOST:PORT with an IP address or host name") from None
    return host, int(port)


def check_api_key(key: str) -> str:
    if not API_KEY_PATTERN.fullmatch(key):
        # Never echo the value: it is a secret, even when malformed.
        raise ValueError("must be 'sk_' followed by 32 hex characters")
    return key


def read_secret_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read file {path}: {exc.strerror}") from None


def _split_secrets(raw: str) -> tuple[SecretStr, ...]:
    """Several webhook secrets may be given at once (comma-separated) so one can be rotated."""
    return tuple(SecretStr(s.strip()) for s in raw.split(",") if s.strip())


class ShopConfig(BaseModel):
    """One Neuroon shop this gateway serves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    api_key: SecretStr
    # Where the key was read from, so a rotated file is picked up while running.
    api_key_file: Path | None = None
    shop_url: str | None = None
    cors_origins: tuple[str, ...] = ()
    # The platform's name for the shop (Shopify myshopify domain, WooCommerce site URL).
    platform_domain: str | None = None
    shopify_webhook_secrets: tuple[SecretStr, ...] = ()
    woocommerce_webhook_secrets: tuple[SecretStr, ...] = ()
    webhook_secrets: tuple[SecretStr, ...] = ()
    # The product identity of this shop (TOML key product_id_field); GATEWAY_PRODUCT_ID_FIELD when unset.
    product_id_field: ProductIdentity = "sku"

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not SHOP_ID_PATTERN.fullmatch(v):
            raise ValueError("must be 1-128 characters of letters, digits, '_', '-' or '.'")
        return v

    @field_validator("api_key")
    @classmethod
    def _key_shape(cls, v: SecretStr) -> SecretStr:
        check_api_key(v.get_secret_value())
        return v

    @field_validator("webhook_secrets")
    @classmethod
    def _standard_webhook_secrets(cls, v: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for secret in v:
            try:
                key = base64.b64decode(secret.get_secret_value().removeprefix("whsec_"), validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if not key:
                raise ValueError("must be a Standard Webhooks secret: 'whsec_' followed by base64")
        return v

    @field_validator("shop_url")
    @classmethod
    def _url_shape(cls, v: str | None) -> str | None:
        if v is not None:
            origin_of(v)
        return v

    @field_validator("cors_origins")
    @classmethod
    def _origins_shape(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(origin_of(o) for o in v)

    @property
    def allowed_origins(self) -> frozenset[str]:
        """Browser origins allowed to call this shop's public endpoints."""
        own = {origin_of(self.shop_url)} if self.shop_url else set()
        return frozenset(own | set(self.cors_origins))


def _env_secret(value: SecretStr | None, file: Path | None, var: str) -> SecretStr | None:
    if value is not None and file is not None:
        raise ConfigError(f"{var} and {var}_FILE are both set; set only one")
    if file is not None:
        try:
            return SecretStr(read_secret_file(file))
        except ValueError as exc:
            raise ConfigError(f"{var}_FILE: {exc}") from None
    return value


class Settings(BaseSettings):
    """Configuration from the environment and `.env` (interface.md §2)."""

    # An empty variable counts as unset (a copied .env.example must not set empty secrets).
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    neuroon_shop_id: str | None = None
    neuroon_api_key: SecretStr | None = None
    neuroon_api_key_file: Path | None = None
    neuroon_api_url: str = DEFAULT_API_URL
    neuroon_shop_url: str | None = None
    redis_url: SecretStr | None = None  # may carry a password

    gateway_cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    gateway_shops_file: Path | None = None

    shopify_webhook_secret: SecretStr | None = None
    shopify_webhook_secret_file: Path | None = None
    woocommerce_webhook_secret: SecretStr | None = None
    woocommerce_webhook_secret_file: Path | None = None
    gateway_webhook_secret: SecretStr | None = None
    gateway_webhook_secret_file: Path | None = None
    gateway_admin_jwt_secret: SecretStr | None = None
    gateway_admin_jwt_secret_file: Path | None = None
    gateway_admin_jwks_url: str | None = None
    # How long a fetched JWKS is used before it is fetched again (app/jwks.py): a key removed from
    # the JWKS stops working about this long after its removal.
    gateway_admin_jwks_cache_seconds: float = Field(default=300.0, ge=1, le=86_400)

    gateway_token_rate_limit: int = Field(default=600, ge=0)
    gateway_trusted_proxies: Annotated[
        tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode
    ] = ()
    gateway_log_format: Literal["json", "console"] = "json"
    # A listener of its own for /metrics, /livez and /readyz, "HOST:PORT" (README, "Metrics listener").
    # When set, `serve` answers /metrics there only; `worker` serves there unless --metrics-port.
    gateway_metrics_address: str | None = None

    # Additions of ours (README, "Configuration"): tuning knobs with safe defaults.
    gateway_token_refresh_margin: int = Field(default=300, ge=0, le=3600)
    gateway_token_memory_ttl: float = Field(default=5.0, gt=0, le=300)
    gateway_key_reload_interval: float = Field(default=2.0, gt=0, le=3600)
    # Deadlines for Redis calls on a request path (app/store/deadline.py), in seconds. The widget
    # token and the rate limiters fail open past theirs (a cached or locally signed token); webhooks,
    # attribution and readiness answer 503 past the other.
    gateway_redis_token_timeout: float = Field(default=0.1, gt=0, le=5)
    gateway_redis_timeout: float = Field(default=2.0, gt=0, le=30)
    # Connection limits of `serve` (app/server.py; README "Connection limits"): bytes of request line
    # and headers (431 above), seconds to send them (408 after), seconds an idle keep-alive connection
    # is kept (behind a load balancer: more than its idle timeout), connections plus requests in
    # flight per process (503 beyond).
    gateway_max_header_bytes: int = Field(default=32 * 1024, ge=4096, le=1024 * 1024)
    gateway_header_timeout: float = Field(default=10.0, gt=0, le=300)
    gateway_keep_alive_timeout: int = Field(default=5, ge=1, le=3600)
    gateway_max_concurrency: int = Field(default=2048, ge=1, le=1_000_000)
    gateway_data_dir: Path = Path("var")

    # Order webhooks and conversion delivery (docs/orders.md, "Configuration").
    # Largest webhook body accepted, in bytes (413 above it). Big Shopify orders stay well under 1 MiB.
    gateway_webhook_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # The product identity (app/product_identity.py): which id is the catalog's externalId AND the
    # conversion's productId, since the widget's click cookie is keyed by it. The default of every shop;
    # a shops file may set product_id_field per shop. SKU by default: what conversions always sent.
    gateway_product_id_field: ProductIdentity = "sku"
    # Test orders (Shopify `test: true`) are ignored unless this is set.
    gateway_include_test_orders: bool = False
    # Standard Webhooks replay window: webhook-timestamp may be this far from now, either way.
    gateway_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=86_400)
    # Delayed retries after the client's immediate ones, in seconds; then the dead-letter list.
    # The default reaches ~92 h, beyond a long weekend of Neuroon trouble.
    gateway_retry_schedule: Annotated[tuple[float, ...], NoDecode] = (
        60, 300, 1800, 7200, 21_600, 43_200, 86_400, 86_400, 86_400,
    )  # fmt: skip
    # Deliveries in flight at once per worker process. Kept below the Neuroon client's connection
    # pool (32): requests queued inside httpx's pool cost far more CPU than they save (make bench).
    gateway_worker_concurrency: int = Field(default=24, ge=1, le=1024)
    # A delivery whose worker has not renewed its lease for this long is taken over by another worker.
    gateway_worker_lease_seconds: float = Field(default=60.0, gt=0, le=3600)
    # While a shop is paused (Neuroon said 401/403), one delivery is tried this often to resume.
    gateway_pause_probe_seconds: float = Field(default=60.0, gt=0, le=86_400)
    # How long an accepted order is remembered once finished (duplicate detection, admin look-ups).
    gateway_order_retention_days: int = Field(default=90, ge=1, le=3650)
    # Requests per minute per client address to POST /v1/attribution; 0 turns the limit off.
    gateway_attribution_rate_limit: int = Field(default=120, ge=0)
    # Run the delivery worker inside `serve` (`serve --no-worker` turns it off).
    gateway_run_worker: bool = True
    # Acknowledgement = durability (app/store/durability.py): how many replicas must have an order
    # before it is answered `accepted`: a number, or "auto" (one, from the moment the primary has been
    # seen with a replica). How long that wait, and the one for the AOF fsync, may take before the
    # webhook gets 503: under the Redis client's 1 s read timeout (app/store/connect).
    gateway_ack_replicas: Annotated[int, Field(ge=0, le=16)] | Literal["auto"] = "auto"
    gateway_ack_timeout: float = Field(default=0.5, gt=0, le=0.9)
    # Catalog sync (docs/catalog.md, "Settings"). Whether the feed's prices include tax: Neuroon takes
    # prices as they are, so `catalog sync` refuses to guess (exit 2 while unset).
    gateway_prices_include_tax: bool | None = None
    # Products per sync request: Neuroon's maximum is 500.
    gateway_catalog_batch_size: int = Field(default=500, ge=1, le=500)
    # Sync requests in flight at once (the client's limiter paces them to Neuroon's budget).
    gateway_catalog_concurrency: int = Field(default=4, ge=1, le=32)
    # Descriptions are cut at a word boundary to this many characters (docs: >2000 degrades ranking).
    gateway_description_soft_limit: int = Field(default=2000, ge=100, le=5000)
    # A JSON file mapping Neuroon fields to feed columns (docs/catalog.md, "Field mapping").
    gateway_catalog_field_map: Path | None = None
    # The sync budget the client paces by, "REQUESTS/SECONDS": Neuroon documents 100 per minute.
    # Change it only if Neuroon announces another limit (the benchmark runs at a faster scale).
    gateway_catalog_sync_limit: str = Field(default="100/60", pattern=r"^\d{1,6}/\d{1,6}(\.\d+)?$")
    # Largest share of the catalog `catalog reconcile` deletes without refusing (0.2 = 20 %).
    gateway_max_delete_ratio: float = Field(default=0.2, ge=0, le=1)
    # The Neuroon client (docs/neuroon.md): seconds one request may take; attempts per call (1 = no
    # retry); the longest wait between attempts, Retry-After included: a 429 asking for longer is
    # handed to the caller at once instead of being waited out.
    neuroon_timeout: float = Field(default=10.0, gt=0, le=300)
    neuroon_retry_attempts: int = Field(default=3, ge=1, le=10)
    neuroon_max_retry_wait: float = Field(default=60.0, ge=0, le=3600)

    # Set by `serve --dev` when no credentials are configured; never from the environment.
    demo: bool = Field(default=False, exclude=True)

    @field_validator("gateway_cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(origin_of(o) for o in v.split(",") if o.strip())
        return v

    @field_validator("gateway_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(float(p) for p in v.split(",") if p.strip())
        return v

    @field_validator("gateway_retry_schedule")
    @classmethod
    def _schedule_shape(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(d < 0 for d in v):
            raise ValueError("delays must be seconds >= 0, comma-separated")
        return v

    @field_validator("gateway_trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in v.split(",") if p.strip())
        return v

    @field_validator("neuroon_api_url")
    @classmethod
    def _api_url_shape(cls, v: str) -> str:
        origin_of(v)
        return v.rstrip("/")

    @field_validator("neuroon_shop_url")
    @classmethod
    def _shop_url_shape(cls, v: str | None) -> str | None:
        if v is not None:
            origin_of(v)
        return v

    @field_validator("gateway_metrics_address")
    @classmethod
    def _metrics_address_shape(cls, v: str | None) -> str | None:
        if v is not None:
            parse_listen_address(v)
        return v

    @property
    def metrics_listen(self) -> tuple[str, int] | None:
        """Where the metrics listener listens, when one is configured."""
        return parse_listen_address(self.gateway_metrics_address) if self.gateway_metrics_address else None

    @field_validator("redis_url")
    @classmethod
    def _redis_url_shape(cls, v: SecretStr | None) -> SecretStr | None:
        # The message says what is wrong, never what was written (the URL may carry a password).
        if v is not None:
            parse_redis_url(v.get_secret_value())
        return v

    @field_validator("gateway_admin_jwks_url")
    @classmethod
    def _jwks_url_shape(cls, v: str | None) -> str | None:
        if v is not None:
            origin_of(v)
        return v

    @property
    def has_credentials(self) -> bool:
        """Whether any shop is configured (single-shop env or a shops file)."""
        return bool(
            self.gateway_shops_file
            or self.neuroon_shop_id
            or self.neuroon_api_key
            or self.neuroon_api_key_file
        )

    def secret(self, var: str) -> SecretStr | None:
        """A secret setting by variable name, read from its ``*_FILE`` variant when that is set."""
        attr = var.lower()
        value: SecretStr | None = getattr(self, attr)
        file: Path | None = getattr(self, f"{attr}_file")
        return _env_secret(value, file, var)

    def shops(self) -> tuple[ShopConfig, ...]:
        """Every configured shop, validated. Raises ConfigError naming the variable at fault."""
        if self.gateway_shops_file:
            if self.neuroon_shop_id or self.neuroon_api_key or self.neuroon_api_key_file:
                raise ConfigError(
                    "GATEWAY_SHOPS_FILE is set together with NEUROON_SHOP_ID/NEUROON_API_KEY; use one of them"
                )
            return _load_shops_file(
                self.gateway_shops_file, self.gateway_cors_origins, self.gateway_product_id_field
            )
        if not self.neuroon_shop_id:
            raise ConfigError("NEUROON_SHOP_ID is not set (or set GATEWAY_SHOPS_FILE for several shops)")
        key = self.secret("NEUROON_API_KEY")
        if key is None:
            raise ConfigError("NEUROON_API_KEY (or NEUROON_API_KEY_FILE) is not set")
        fields: dict[str, Any] = {
            "id": self.neuroon_shop_id,
            "api_key": key,
            "api_key_file": self.neuroon_api_key_file,
            "shop_url": self.neuroon_shop_url,
            "cors_origins": self.gateway_cors_origins,
            "product_id_field": self.gateway_product_id_field,
        }
        names = {"id": "NEUROON_SHOP_ID", "api_key": "NEUROON_API_KEY", "shop_url": "NEUROON_SHOP_URL"}
        for attr, var in (
            ("shopify_webhook_secrets", "SHOPIFY_WEBHOOK_SECRET"),
            ("woocommerce_webhook_secrets", "WOOCOMMERCE_WEBHOOK_SECRET"),
            ("webhook_secrets", "GATEWAY_WEBHOOK_SECRET"),
        ):
            raw = self.secret(var)
            fields[attr] = _split_secrets(raw.get_secret_value()) if raw else ()
            names[attr] = var
        try:
            return (ShopConfig(**fields),)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, lambda loc: names.get(str(loc[0]), str(loc[0])))) from None


def _load_shops_file(
    path: Path, extra_origins: tuple[str, ...], product_id_field: ProductIdentity
) -> tuple[ShopConfig, ...]:
    var = "GATEWAY_SHOPS_FILE"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{var}: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{var}: {path} is not valid TOML: {exc}") from None
    entries = data.get("shops")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{var}: {path} must contain at least one [[shops]] table")
    shops: list[ShopConfig] = []
    for i, entry in enumerate(entries):
        where = f"{var}: shops[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        fields = dict(entry)
        try:
            key_file = fields.get("api_key_file")
            if key_file is not None and "api_key" in fields:
                raise ConfigError(f"{where}: set api_key or api_key_file, not both")
            if key_file is not None:
                fields["api_key"] = read_secret_file(Path(key_file))
            for name in ("shopify_webhook_secrets", "woocommerce_webhook_secrets", "webhook_secrets"):
                file_name = name.removesuffix("s") + "_file"
                if file_name in fields:
                    fields[name] = _split_secrets(read_secret_file(Path(fields.pop(file_name))))
            fields["cors_origins"] = tuple(fields.get("cors_origins", ())) + extra_origins
            fields.setdefault("product_id_field", product_id_field)
            shops.append(ShopConfig(**fields))
        except ValueError as exc:
            if isinstance(exc, ValidationError):
                raise ConfigError(_describe(exc, lambda loc, where=where: f"{where}.{loc[0]}")) from None
            raise ConfigError(f"{where}: {exc}") from None
    ids = [s.id for s in shops]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{var}: a shop id is listed twice")
    return tuple(shops)


def _describe(exc: ValidationError, name_of: Any) -> str:
    """Name each failing field and say what is wrong, without the offending (maybe secret) input."""
    return "; ".join(f"{name_of(err['loc'])}: {err['msg']}" for err in exc.errors(include_input=False))


class _LogFormatOnly(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    gateway_log_format: Literal["json", "console"] | None = None


def chosen_log_format() -> Literal["json", "console"] | None:
    """GATEWAY_LOG_FORMAT alone, when it is set: readable even while another setting is wrong, so
    that the message saying which one comes out in the chosen format (None: unset or malformed;
    then the full settings say what is wrong with it)."""
    try:
        return _LogFormatOnly().gateway_log_format
    except ValidationError:
        return None


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and .env), raising ConfigError on bad values."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, lambda loc: str(loc[0]).upper())) from None
