"""Every metric of ours, declared once. Labels come from small fixed sets: never an id, a path or a secret.

(`shop` is a configured shop id: a handful per deployment, as interface.md §3.5 asks.)
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "neuroon_gateway_"

widget_tokens_served = Counter(
    PREFIX + "widget_tokens_served_total",
    "Widget tokens served, by where the token came from (memory, redis, signed).",
    ["shop", "source"],
)
widget_token_signatures = Counter(
    PREFIX + "widget_token_signatures_total",
    "Widget tokens signed by this process.",
    ["shop"],
)
http_requests = Counter(
    PREFIX + "http_requests_total",
    "HTTP requests handled, by route template, method and status.",
    ["route", "method", "status"],
)
http_request_duration = Histogram(
    PREFIX + "http_request_duration_seconds",
    "HTTP request duration by route template.",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
rate_limited = Counter(
    PREFIX + "rate_limited_total",
    "Requests refused by a gateway rate limit, by limit name.",
    ["limit"],
)
redis_errors = Counter(
    PREFIX + "redis_errors_total",
    "Redis operations that failed (the gateway degraded instead of failing the request).",
    ["operation"],
)
connections_refused = Counter(
    PREFIX + "connections_refused_total",
    "Requests refused by a connection limit (header_too_large, request_timeout, over_capacity).",
    ["reason"],
)
redis_circuit_open = Gauge(
    PREFIX + "redis_circuit_open",
    "1 while this caller's Redis circuit breaker is open (Redis did not answer in time; calls fail fast).",
    ["caller"],
)

# --- order webhooks and conversion delivery ---------------------------------------------------
webhooks_received = Counter(
    PREFIX + "webhooks_received_total",
    "Order webhooks received, by platform (shopify, woocommerce, generic) and outcome "
    "(accepted, duplicate, ignored, ping, invalid_signature, malformed, too_large, "
    "unsupported_media_type, unknown_shop, unavailable, error).",
    ["platform", "outcome"],
)
conversions = Counter(
    PREFIX + "conversions_total",
    "Orders by final outcome: delivered to Neuroon, dead-lettered, or ignored (no attributable line).",
    ["shop", "outcome"],
)
conversion_queue_depth = Gauge(
    PREFIX + "conversion_queue_depth",
    "Accepted orders not yet delivered nor dead-lettered (queued, in flight or waiting for a retry).",
    ["shop"],
)
conversion_oldest_pending = Gauge(
    PREFIX + "conversion_oldest_pending_seconds",
    "Age of the oldest accepted order not yet delivered nor dead-lettered (0 when none).",
    ["shop"],
)
dead_letters = Gauge(
    PREFIX + "conversion_dead_letters",
    "Orders in the dead-letter list, waiting for an operator.",
    ["shop"],
)
delivery_attempts = Counter(
    PREFIX + "delivery_attempts_total",
    "Conversion delivery attempts by the worker (each includes the client's immediate retries), by result "
    "(delivered, unavailable, rate_limited, rejected, auth_failure, error).",
    ["shop", "result"],
)
delivery_paused = Gauge(
    PREFIX + "delivery_paused",
    "1 while conversion delivery for the shop is paused because Neuroon refused its key (401/403).",
    ["shop"],
)
upstream_requests = Counter(
    PREFIX + "upstream_requests_total",
    "Requests to Neuroon by operation and outcome (HTTP status, or timeout / network_error).",
    ["operation", "status"],
)
upstream_request_duration = Histogram(
    PREFIX + "upstream_request_duration_seconds",
    "Duration of one request to Neuroon (one attempt), by operation.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
upstream_paced_seconds = Counter(
    PREFIX + "upstream_paced_seconds_total",
    "Seconds requests to Neuroon waited in the client-side limiter before going out, by operation.",
    ["operation"],
)


# Label lookups cost more than the increments themselves on the hot path; the label sets are
# small and fixed (route templates, methods, statuses, configured shops), so children are cached.
@cache
def _http_children(route: str, method: str, status: int) -> tuple[Counter, Histogram]:
    return http_requests.labels(route, method, str(status)), http_request_duration.labels(route)


def observe_http(route: str, method: str, status: int, seconds: float) -> None:
    count, duration = _http_children(route, method, status)
    count.inc()
    duration.observe(seconds)


@cache
def token_served(shop: str, source: str) -> Counter:
    return widget_tokens_served.labels(shop, source)


@cache
def webhook_received(platform: str, outcome: str) -> Counter:
    return webhooks_received.labels(platform, outcome)


class CatalogCollector(Collector):
    """Catalog outcomes and the last successful sync per shop. Sync runs happen in CLI processes and
    CronJobs as well as behind the admin API, so the totals live in Redis (app/store/catalog.py); the
    /metrics handler refreshes this copy before each scrape. Every replica reports the same totals:
    aggregate them with max(), not sum()."""

    def __init__(self) -> None:
        self.products: dict[tuple[str, str], float] = {}
        self.last_success: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        products = CounterMetricFamily(
            PREFIX + "catalog_products",
            "Catalog products by outcome (sent, unchanged, rejected, orphan, drifted, failed, deleted).",
            labels=["shop", "outcome"],
        )
        for (shop, outcome), value in sorted(self.products.items()):
            products.add_metric([shop, outcome], value)
        yield products
        last = GaugeMetricFamily(
            PREFIX + "catalog_last_success_timestamp_seconds",
            "Unix time of the last catalog sync run that ended without failures, per shop.",
            labels=["shop"],
        )
        for shop, value in sorted(self.last_success.items()):
            last.add_metric([shop], value)
        yield last


catalog = CatalogCollector()
REGISTRY.register(catalog)


class ReadinessCollector(Collector):
    """The outcome of this process's last readiness check, for the NeuroonGatewayNotReady alert. No
    sample before the first check: a process that nothing checks must not look unready."""

    def __init__(self) -> None:
        self.last: bool | None = None

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "ready",
            "1 when this process's last readiness check (/readyz) passed, 0 when it failed.",
        )
        if self.last is not None:
            family.add_metric([], 1 if self.last else 0)
        yield family


readiness = ReadinessCollector()
REGISTRY.register(readiness)
