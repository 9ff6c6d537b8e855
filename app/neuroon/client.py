"""The typed async client of Neuroon's Plugin API: one per process, over one shared ``httpx.AsyncClient``.

Every call goes through ``_send``: client-side pacing, headers, retries (429, 5xx, network errors;
exponential backoff with full jitter; ``Retry-After`` honoured up to ``max_retry_wait``), metrics, and
the translation of every answer into our models or our exceptions. Callers never see httpx, and the
Shop API Key only ever travels in the ``X-Shop-API-Key`` header: never logged, never in a message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import ValidationError

from app import __version__, metrics
from app.logging import REDACTED
from app.neuroon.endpoints import Operation, shop_path
from app.neuroon.error_bodies import parse_error_body, parse_retry_after
from app.neuroon.errors import NeuroonError, NeuroonRateLimited, NeuroonRejected, NeuroonUnavailable
from app.neuroon.models import (
    MAX_BATCH,
    ConversionRequest,
    Product,
    ProductPage,
    ShopInfo,
    SyncRequest,
    SyncResult,
    SyncType,
    VerificationData,
    VerifyOutcome,
    WireModel,
)
from app.neuroon.pacing import Clock, Sleep, UpstreamLimiter, WouldWait
from app.settings import Settings, origin_of
from app.shops import Shop

log = logging.getLogger(__name__)

USER_AGENT = f"neuroon-gateway/{__version__}"
M = TypeVar("M", bound=WireModel)


def build_http_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The process's one connection pool to Neuroon: base URL, timeouts, limits and User-Agent set once."""
    return httpx.AsyncClient(
        base_url=settings.neuroon_api_url,
        timeout=httpx.Timeout(settings.neuroon_timeout, connect=min(5.0, settings.neuroon_timeout)),
        # Every pooled connection is kept alive: with fewer keep-alive slots than connections, a
        # busy worker opens and closes a connection per request (measured in make bench).
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        transport=transport,
        follow_redirects=False,  # a redirect would carry the key to wherever it points
    )


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass(slots=True)
class RequestTally:
    """What one call did on the wire: requests sent (every attempt, immediate retries included) and
    the last one that failed, even when a later one succeeded (interface.md §3.4 ``attempts`` and
    ``lastError``). Pass one to a call to have it filled in."""

    sent: int = 0
    last_error: NeuroonError | None = None


def default_idempotency_key(shop_id: str, body: bytes) -> str:
    """A stable hash of the batch. The docs suggest md5(shopId:productIds:syncType); we hash the whole
    body instead, so a changed price under the same ids is never mistaken for a replay."""
    return hashlib.sha256(shop_id.encode() + b"\x00" + body).hexdigest()[:32]


class NeuroonClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        attempts: int = 3,
        max_retry_wait: float = 60.0,
        backoff_base: float = 1.0,
        limiter: UpstreamLimiter | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        jitter: Callable[[float], float] | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.http = http
        self.attempts = attempts
        self.max_retry_wait = max_retry_wait
        self.backoff_base = backoff_base
        self._sleep = sleep
        self._clock = clock
        self.limiter = limiter or UpstreamLimiter(clock=clock, sleep=sleep)
        # Full jitter (a uniform draw up to the exponential cap) spreads retries of many workers apart.
        self._jitter = jitter or (lambda high: random.uniform(0, high))  # noqa: S311 - not cryptographic

    @classmethod
    def from_settings(
        cls,
        http: httpx.AsyncClient,
        settings: Settings,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> NeuroonClient:
        return cls(
            http,
            attempts=settings.neuroon_retry_attempts,
            max_retry_wait=settings.neuroon_max_retry_wait,
            sleep=sleep,
            clock=clock,
        )

    # --- products -----------------------------------------------------------------------------------

    async def sync_products(
        self,
        shop: Shop,
        products: Sequence[Product],
        *,
        sync_type: SyncType = SyncType.INCREMENTAL,
        idempotency_key: str | None = None,
        attempts: int | None = None,
    ) -> SyncResult:
        """Upsert (INCREMENTAL) or replace the catalog with (FULL) one batch of 1..500 products.

        Every retry of the batch carries the same ``X-Idempotency-Key``.
        """
        if not 1 <= len(products) <= MAX_BATCH:
            raise ValueError(f"a sync batch holds 1 to {MAX_BATCH} products, not {len(products)}")
        body = orjson.dumps(SyncRequest(sync_type=sync_type, products=list(products)).to_wire())
        key = idempotency_key or default_idempotency_key(shop.id, body)
        response = await self._send(
            Operation.SYNC_PRODUCTS,
            shop,
            "POST",
            shop_path(shop.id, "/products/sync"),
            content=body,
            headers={"X-Idempotency-Key": key},
            attempts=attempts,
        )
        return self._parse(Operation.SYNC_PRODUCTS, response, SyncResult, empty_ok=True)

    async def get_product(
        self, shop: Shop, external_id: str, *, attempts: int | None = None
    ) -> Product | None:
        """One product by externalId, or None when Neuroon has no such product (404)."""
        response = await self._send(
            Operation.GET_PRODUCT,
            shop,
            "GET",
            shop_path(shop.id, f"/products/{quote(external_id, safe='')}"),
            accept=(404,),
            attempts=attempts,
        )
        if response.status_code == 404:
            return None
        return self._parse(Operation.GET_PRODUCT, response, Product)

    async def list_products(
        self, shop: Shop, *, cursor: str | None = None, limit: int | None = None, attempts: int | None = None
    ) -> ProductPage:
        """One page of the shop's catalog; pass ``next_cursor`` back for the next one (None: last page)."""
        params: dict[str, str] = {}
        if cursor:
            params["cursor"] = cursor
        if limit is not None:
            params["limit"] = str(limit)
        response = await self._send(
            Operation.LIST_PRODUCTS,
            shop,
            "GET",
            shop_path(shop.id, "/products"),
            params=params,
            attempts=attempts,
        )
        return self._parse(Operation.LIST_PRODUCTS, response, ProductPage)

    async def iter_products(self, shop: Shop, *, limit: int | None = None) -> AsyncIterator[Product]:
        """Every product of the shop, page by page."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = await self.list_products(shop, cursor=cursor, limit=limit)
            for product in page.products:
                yield product
            if not page.next_cursor or page.next_cursor in seen:  # a repeated cursor would loop forever
                return
            seen.add(page.next_cursor)
            cursor = page.next_cursor

    async def delete_product(self, shop: Shop, external_id: str, *, attempts: int | None = None) -> bool:
        """Delete one product. True when Neuroon deleted it, False when it answered 404 (already gone):
        both mean the product is not in Neuroon, which is what the caller wants."""
        response = await self._send(
            Operation.DELETE_PRODUCT,
            shop,
            "DELETE",
            shop_path(shop.id, f"/products/{quote(external_id, safe='')}"),
            accept=(404,),
            attempts=attempts,
        )
        return response.status_code != 404

    # --- domain verification and shop info ----------------------------------------------------------

    async def verify_domain(
        self, shop: Shop, domain: str | None = None, *, attempts: int | None = None
    ) -> VerifyOutcome:
        """POST /verify (the ``{shopId}`` form the current docs give). 409 "already verified" is success."""
        domain = domain or shop.config.shop_url
        response = await self._send(
            Operation.VERIFY,
            shop,
            "POST",
            shop_path(shop.id, "/verify"),
            content=orjson.dumps({"domain": domain} if domain else {}),
            accept=(409,),
            attempts=attempts,
        )
        if response.status_code == 409:
            return VerifyOutcome(already_verified=True)
        data = self._parse(Operation.VERIFY, response, VerificationData, empty_ok=True)
        return VerifyOutcome(already_verified=False, data=data)

    async def verification_data(self, shop: Shop, *, attempts: int | None = None) -> VerificationData:
        response = await self._send(
            Operation.VERIFICATION_DATA,
            shop,
            "GET",
            shop_path(shop.id, "/verification-data"),
            attempts=attempts,
        )
        return self._parse(Operation.VERIFICATION_DATA, response, VerificationData)

    async def unverify(self, shop: Shop, *, attempts: int | None = None) -> None:
        await self._send(Operation.UNVERIFY, shop, "DELETE", shop_path(shop.id, "/verify"), attempts=attempts)

    async def shop_info(self, shop: Shop, *, attempts: int | None = None) -> ShopInfo:
        """GET /api/plugin/shops/me: the shop bound to the key, with its plan quotas."""
        response = await self._send(
            Operation.SHOP_INFO, shop, "GET", "/api/plugin/shops/me", attempts=attempts
        )
        return self._parse(Operation.SHOP_INFO, response, ShopInfo)

    # --- conversions --------------------------------------------------------------------------------

    async def track_conversion(
        self,
        shop: Shop,
        conversion: ConversionRequest,
        *,
        attempts: int | None = None,
        tally: RequestTally | None = None,
    ) -> None:
        """Report a paid order. Neuroon dedupes by orderId, so a resend is harmless.

        ``attempts=1`` makes a single attempt (the delivery worker keeps its own retry schedule);
        ``tally`` counts the requests sent and keeps the last failure, for the order's record.
        """
        await self._send(
            Operation.TRACK_CONVERSION,
            shop,
            "POST",
            shop_path(shop.id, "/track/conversion"),
            content=orjson.dumps(conversion.to_wire()),
            attempts=attempts,
            tally=tally,
        )

    # --- the one way out ----------------------------------------------------------------------------

    def _headers(self, shop: Shop, extra: Mapping[str, str] | None, has_body: bool) -> dict[str, str]:
        headers = {"X-Shop-API-Key": shop.api_key.get_secret_value()}
        if shop.config.shop_url:
            # Neuroon compares a present Origin with the shop's registered URL; the docs' examples send it.
            headers["Origin"] = origin_of(shop.config.shop_url)
        if has_body:
            headers["Content-Type"] = "application/json"
        if extra:
            headers.update(extra)
        return headers

    def _backoff(self, attempt: int) -> float:
        return self._jitter(min(self.max_retry_wait, self.backoff_base * 2 ** (attempt - 1)))

    async def _send(
        self,
        operation: Operation,
        shop: Shop,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        accept: tuple[int, ...] = (),
        attempts: int | None = None,
        tally: RequestTally | None = None,
    ) -> httpx.Response:
        """One call: up to ``attempts`` requests; a 2xx (or a status in ``accept``) is returned."""
        total = attempts or self.attempts
        tally = tally or RequestTally()
        request_headers = self._headers(shop, headers, content is not None)
        for attempt in range(1, total + 1):
            await self._pace(operation, shop)
            tally.sent += 1
            try:
                outcome = await self._attempt(
                    operation, shop, method, path, content, params, request_headers, accept, attempt
                )
            except NeuroonRejected as rejected:
                tally.last_error = rejected
                raise
            if isinstance(outcome, httpx.Response):
                return outcome
            error, wait = outcome
            tally.last_error = error
            if attempt == total or wait > self.max_retry_wait:
                # Waiting less than Neuroon asked would only earn another refusal: hand the wait to the
                # caller (the delivery worker reschedules; the CLI reports).
                raise error
            log.warning(
                "neuroon_retry",
                extra={
                    "operation": str(operation),
                    "shop": shop.id,
                    "attempt": attempt,
                    "error": str(error),
                    "wait": round(wait, 3),
                },
            )
            await self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pace(self, operation: Operation, shop: Shop) -> None:
        try:
            await self.limiter.acquire(shop.id, operation, max_wait=self.max_retry_wait)
        except WouldWait as verdict:
            # Our own pacing (a documented limit, Neuroon's headers, an earlier 429) says Neuroon would
            # refuse for longer than we may wait: the caller gets the wait, Neuroon no request.
            log.info(
                "neuroon_paced",
                extra={"operation": str(operation), "shop": shop.id, "wait": round(verdict.seconds, 3)},
            )
            raise NeuroonRateLimited(operation, verdict.seconds) from None

    async def _attempt(
        self,
        operation: Operation,
        shop: Shop,
        method: str,
        path: str,
        content: bytes | None,
        params: Mapping[str, str] | None,
        headers: dict[str, str],
        accept: tuple[int, ...],
        attempt: int,
    ) -> httpx.Response | tuple[NeuroonError, float]:
        """One request: the response, or a retryable error with the wait before the next attempt.
        A final refusal (4xx other than 429) is raised at once."""
        started = time.perf_counter()
        try:
            response = await self.http.request(method, path, content=content, params=params, headers=headers)
        except BaseException as exc:  # cancellation included: the limiter must see every request end
            self.limiter.observe(shop.id, operation, None, None, answered=False)
            if isinstance(exc, httpx.TimeoutException):
                self._record(operation, "timeout", started)
                return NeuroonUnavailable(operation, "timed out"), self._backoff(attempt)
            if isinstance(exc, httpx.HTTPError):
                self._record(operation, "network_error", started)
                # Only the exception's type: its text may name the URL, never needed here.
                reason = f"cannot reach Neuroon ({type(exc).__name__})"
                return NeuroonUnavailable(operation, reason), self._backoff(attempt)
            raise
        self._record(operation, str(response.status_code), started)
        self.limiter.observe(
            shop.id,
            operation,
            _int_header(response, "X-RateLimit-Limit"),
            _int_header(response, "X-RateLimit-Remaining"),
        )
        status = response.status_code
        if 200 <= status < 300 or status in accept:
            return response
        key = shop.api_key.get_secret_value()
        body = parse_error_body(response.content, response.reason_phrase or f"HTTP {status}")
        message = body.message.replace(key, REDACTED)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429:
            asked = retry_after if retry_after is not None else body.retry_after
            if asked is not None:
                wait = asked
                self.limiter.retry_after(shop.id, operation, wait)
            else:
                wait = self._backoff(attempt)
                self.limiter.block(shop.id, operation, wait)
            return NeuroonRateLimited(operation, wait), wait
        if status >= 500:
            wait = retry_after if retry_after is not None else self._backoff(attempt)
            if retry_after is not None:
                self.limiter.retry_after(shop.id, operation, retry_after)
            return NeuroonUnavailable(operation, f"HTTP {status}: {message}", status=status), wait
        details = [d.replace(key, REDACTED) for d in body.details]
        raise NeuroonRejected(operation, status, message, details)

    @staticmethod
    def _record(operation: Operation, label: str, started: float) -> None:
        metrics.upstream_requests.labels(str(operation), label).inc()
        metrics.upstream_request_duration.labels(str(operation)).observe(time.perf_counter() - started)

    @staticmethod
    def _parse(
        operation: Operation, response: httpx.Response, model: type[M], *, empty_ok: bool = False
    ) -> M:
        """A 2xx body as our model. Unknown fields are ignored; a body that is not the model is Neuroon's
        fault, reported as unavailable (the same call may work after Neuroon fixes it)."""
        if not response.content.strip():
            if empty_ok:
                return model()
            raise NeuroonUnavailable(
                operation, f"HTTP {response.status_code} without a body", response.status_code
            )
        try:
            data: Any = orjson.loads(response.content)
            return model.model_validate(data)
        except (orjson.JSONDecodeError, ValidationError):
            raise NeuroonUnavailable(
                operation, f"HTTP {response.status_code} with an unexpected body", response.status_code
            ) from None
