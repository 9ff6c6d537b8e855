"""The sandbox's switches, for tests (in-process) and demos (over HTTP under ``/_sandbox``): fault
scripts per operation, outage, latency, rate limiting, the body size limit, and a record of every
request received."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.neuroon.endpoints import DOCUMENTED_LIMITS, Limit, Operation
from app.sandbox.state import SandboxShop, ShopState
from app.sandbox.wire import MAX_BODY

# The widget buckets are enforced by Neuroon today (neuroon-api.md §8.1); the plugin ones are configured.
SANDBOX_LIMITS: dict[str, Limit] = {str(op): limit for op, limit in DOCUMENTED_LIMITS.items()} | {
    str(Operation.WIDGET_SEARCH): Limit(200, 60),
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted answer. ``body=None`` means the documented body for the status (the standard
    envelope, or the rate-limit body for 429); pass a dict for another shape."""

    status: int
    retry_after: float | None = None
    body: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the sandbox saw it. The API key is never kept: only whether one was sent."""

    operation: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int
    shop_id: str | None
    had_api_key: bool
    replayed: bool = False


@dataclass(slots=True)
class _Window:
    start: float
    count: int = 0


class RateLimits:
    """Fixed windows per (shop, operation), starting at the window's first request."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.enabled = False
        self.limits: dict[str, Limit] = dict(SANDBOX_LIMITS)
        self._windows: dict[tuple[str, str], _Window] = {}

    def configure(self, enabled: bool, limits: Mapping[str, Limit] | None = None) -> None:
        self.enabled = enabled
        if limits is not None:
            self.limits = dict(limits)
        self._windows.clear()

    def hit(self, shop_id: str, operation: str) -> tuple[Limit, int, bool] | None:
        """Count a request; (limit, remaining, allowed), or None when the operation is not limited."""
        limit = self.limits.get(operation) if self.enabled else None
        if limit is None:
            return None
        now = self._clock()
        window = self._windows.get((shop_id, operation))
        if window is None or now >= window.start + limit.window:
            window = self._windows[(shop_id, operation)] = _Window(now)
        if window.count >= limit.requests:
            return limit, 0, False
        window.count += 1
        return limit, limit.requests - window.count, True


class Sandbox:
    """The control object returned by ``create_sandbox``; ``app`` is the ASGI application."""

    def __init__(
        self,
        shops: Iterable[SandboxShop],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        validation_error_shape: str = "envelope",
    ) -> None:
        self.shops: dict[str, ShopState] = {}
        for shop in shops:
            if shop.id in self.shops:
                raise ValueError(f"shop {shop.id} is listed twice")
            self.shops[shop.id] = ShopState(shop)
        self.clock = clock
        self.wall_clock = wall_clock
        # "envelope" (the current docs) or "code" (the {code,message,details} of the server-to-server page).
        self.validation_error_shape = validation_error_shape
        self.rate_limits = RateLimits(clock)
        self.outage = False
        self.latency = 0.0
        self.max_body = MAX_BODY  # bytes; a larger request body gets 413
        self._scripts: dict[str, deque[Fault | None]] = {}
        self.requests: list[RecordedRequest] = []
        self.app: Any = None  # set by create_sandbox

    # --- shops --------------------------------------------------------------------------------------

    def by_key(self, key: str) -> ShopState | None:
        for state in self.shops.values():
            if state.shop.key == key:
                return state
        return None

    def rotate_key(self, shop_id: str, new_key: str) -> None:
        """As the Dashboard's "Rotate key": the old key stops working at once."""
        shop = self.shops[shop_id].shop
        SandboxShop(shop.id, new_key)  # validates the format
        shop.key = new_key

    def products(self, shop_id: str) -> dict[str, dict[str, Any]]:
        return dict(self.shops[shop_id].products)

    def conversions(self, shop_id: str) -> dict[str, dict[str, Any]]:
        """Recorded conversions by orderId (a resend does not add one)."""
        return dict(self.shops[shop_id].conversions)

    # --- faults -------------------------------------------------------------------------------------

    def script(self, operation: str, *answers: int | Fault | None) -> None:
        """Answer the next requests of ``operation`` in this order: a status (or Fault) is injected,
        ``None`` or a 2xx status lets the real handler answer. Then back to normal."""
        queue = self._scripts.setdefault(str(operation), deque())
        for answer in answers:
            if isinstance(answer, int):
                answer = None if 200 <= answer < 300 else Fault(answer)
            queue.append(answer)

    def next_fault(self, operation: str) -> Fault | None:
        """Consume the operation's next script entry: the fault to answer with, or None (answer normally)."""
        queue = self._scripts.get(operation)
        return queue.popleft() if queue else None

    def reset(self) -> None:
        """Forget catalog, conversions, verification, faults, limits, body limit, request record."""
        for shop_id, state in list(self.shops.items()):
            self.shops[shop_id] = ShopState(state.shop)
        self._scripts.clear()
        self.outage = False
        self.latency = 0.0
        self.max_body = MAX_BODY
        self.rate_limits.configure(False, SANDBOX_LIMITS)
        self.requests.clear()

    def statuses(self, operation: str | None = None) -> list[int]:
        return [r.status for r in self.requests if operation is None or r.operation == operation]
