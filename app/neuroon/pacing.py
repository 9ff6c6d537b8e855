"""Client-side pacing of Neuroon calls per (shop, operation), so a long job slows down before it is refused.

Two sources of truth, the stricter wins:

* the limits Neuroon documents (``DOCUMENTED_LIMITS``), kept as a sliding log of our own sends;
* what Neuroon tells us: ``X-RateLimit-Limit``/``X-RateLimit-Remaining`` on every rate-limited answer.
  Neuroon sends no reset time (``X-RateLimit-Reset`` is "never" emitted, neuroon-api.md §8.2), so we
  estimate the window's end from when we saw the window start, always erring late. When the remaining
  budget runs low we spread it over what is left of the window; at zero we wait for the window to end,
  then send one request and wait for its answer to learn the new budget. Requests still in flight
  count against the budget an answer reports. An answer to a request sent before we declared its window
  over may come from either window, so it does not stand for the new one (read as the new window's, a
  "0" of the old window would hold us for a whole window): that one request we send next finds out.

A ``Retry-After`` (on a 429 or a 503) blocks the key for that long, and no longer: the server's word wins
over the estimates above. The state is per process: several replicas share Neuroon's
budget without knowing of each other, and then the header pacing is what keeps them under it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from app import metrics
from app.neuroon.endpoints import DEFAULT_WINDOW, DOCUMENTED_LIMITS, Limit

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class WouldWait(Exception):
    """Going out now would need a longer wait than the caller accepts; ``seconds`` is how long."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"would wait {seconds:.1f}s")
        self.seconds = seconds


@dataclass(slots=True)
class _Bucket:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sent: deque[float] = field(default_factory=deque)
    last_sent: float = float("-inf")
    blocked_until: float = float("-inf")
    # What Neuroon last told us, and when (by our estimate, never early) its window ends.
    server_limit: int | None = None
    server_remaining: int | None = None
    window_end: float = float("-inf")
    in_flight: int = 0  # sent, answer not yet seen
    # Of those, the ones sent before we declared the window over, and the budget our own count left it.
    stale: int = 0
    stale_floor: int = 0
    answered: asyncio.Event | None = None  # set when a request in flight ends


class UpstreamLimiter:
    def __init__(
        self,
        limits: Mapping[str, Limit] | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        low_water: float = 0.2,
    ) -> None:
        self._limits: Mapping[str, Limit] = (
            {str(op): limit for op, limit in DOCUMENTED_LIMITS.items()} if limits is None else limits
        )
        self._clock = clock
        self._sleep = sleep
        self._low_water = low_water
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _bucket(self, shop_id: str, operation: str) -> _Bucket:
        key = (shop_id, operation)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
        return bucket

    def _window(self, operation: str) -> float:
        limit = self._limits.get(operation)
        return limit.window if limit else DEFAULT_WINDOW

    def _wait(self, bucket: _Bucket, operation: str, now: float) -> float | None:
        """Seconds to wait before sending, or None: wait for the answer of a request in flight."""
        waits = [bucket.blocked_until - now]
        limit = self._limits.get(operation)
        if limit is not None:
            while bucket.sent and bucket.sent[0] <= now - limit.window:
                bucket.sent.popleft()
            if len(bucket.sent) >= limit.requests:
                waits.append(bucket.sent[0] + limit.window - now)
        if bucket.server_remaining is not None and now >= bucket.window_end:
            # The window we knew about is over; the next answer tells the new budget. The answers of the
            # requests still out do not: they were sent before, and may have landed in the old window.
            bucket.stale, bucket.stale_floor = bucket.in_flight, max(0, bucket.server_remaining)
            bucket.server_remaining = None
        if bucket.server_limit is not None and bucket.server_remaining is None and bucket.in_flight:
            # Neuroon limits this key but we do not know the new window's budget yet: let the request
            # in flight find out rather than sending a burst into it.
            return None
        if bucket.server_remaining is not None and bucket.server_limit:
            if bucket.server_remaining <= 0:
                waits.append(bucket.window_end - now)
            elif bucket.server_remaining < self._low_water * bucket.server_limit:
                gap = (bucket.window_end - bucket.last_sent) / (bucket.server_remaining + 1)
                waits.append(bucket.last_sent + gap - now)
        return max(waits)

    async def acquire(self, shop_id: str, operation: str, *, max_wait: float = float("inf")) -> float:
        """Wait until a request may go out, and count it as sent. Returns the seconds waited.
        Every acquire must be followed by one ``observe`` when the request ends, however it ends.

        Raises WouldWait instead of sleeping longer than ``max_wait`` in one go (a verify after five in
        five minutes would otherwise hold its caller for minutes).
        """
        bucket = self._bucket(shop_id, operation)
        waited = 0.0
        async with bucket.lock:  # waiters of one key queue in order instead of racing for a slot
            while True:
                now = self._clock()
                wait = self._wait(bucket, operation, now)
                if wait is None:
                    bucket.answered = asyncio.Event()
                    await bucket.answered.wait()
                    continue
                if wait <= 0:
                    break
                if wait > max_wait:
                    raise WouldWait(wait)
                await self._sleep(wait)
                waited += wait
            bucket.sent.append(now)
            bucket.in_flight += 1
            if bucket.server_remaining is not None:
                bucket.server_remaining -= 1  # until Neuroon's answer says otherwise
            bucket.last_sent = now
        if waited:
            metrics.upstream_paced_seconds.labels(operation).inc(waited)
        return waited

    def observe(
        self,
        shop_id: str,
        operation: str,
        limit: int | None,
        remaining: int | None,
        *,
        answered: bool = True,
    ) -> None:
        """A request ended: Neuroon answered (with these X-RateLimit-Limit/Remaining, None when absent),
        or did not (``answered=False``: timeout, connection error, cancellation)."""
        bucket = self._bucket(shop_id, operation)
        bucket.in_flight = max(0, bucket.in_flight - 1)
        # Nothing is sent while the window is unknown and requests are out (``_wait``), so while any of
        # the requests sent before we declared the window over is out, every answer is one of theirs.
        stale = bucket.stale > 0
        bucket.stale = min(max(0, bucket.stale - 1), bucket.in_flight)
        if bucket.answered is not None:
            bucket.answered.set()
        if not answered:
            return
        if limit is None or remaining is None or limit <= 0:
            # This endpoint is not rate limited (any more): stop waiting for news of its budget.
            bucket.server_limit = bucket.server_remaining = None
            return
        if (
            stale
            and bucket.server_remaining is None
            and limit == bucket.server_limit
            and remaining >= bucket.stale_floor
        ):
            # Sent in the window we declared over, and no fewer left than our own count: as if we were
            # alone in the old window, so no news of the new one. Once nothing is out, one request goes
            # and its answer tells the new budget, as after any window. Less left than our own count
            # means another sender: then it is read as the new window's budget, the cautious reading.
            return
        # Requests still in flight may not be counted in this answer yet: assume they will be.
        remaining = max(0, remaining - bucket.in_flight)
        previous = bucket.server_remaining
        if previous is None or bucket.server_limit != limit:
            # A window we had not seen start. It began before Neuroon answered, so counting from now
            # puts its end at or after the real one.
            bucket.window_end = self._clock() + self._window(operation)
        elif remaining > previous:
            # More left than an earlier answer said: answers come back out of order (the later one
            # counted fewer requests), or a new window began before our late estimate of this one's
            # end. Nothing tells which, so keep the lower count: the window ends as estimated, and
            # then one request finds out.
            remaining = previous
        bucket.server_limit = limit
        bucket.server_remaining = remaining

    def block(self, shop_id: str, operation: str, seconds: float) -> None:
        """Neuroon refused with 429 without saying for how long: nothing more for this key for
        ``seconds`` (our backoff), and the budget it reported is spent."""
        bucket = self._bucket(shop_id, operation)
        bucket.blocked_until = max(bucket.blocked_until, self._clock() + seconds)
        if bucket.server_remaining is not None:
            bucket.server_remaining = 0

    def retry_after(self, shop_id: str, operation: str, seconds: float) -> None:
        """Neuroon answered 429 or 503 with ``Retry-After``: nothing more for this key until it has
        passed, and then no longer than that. The server's word on when to try again beats every
        estimate of ours (interface.md §3.3): the window we guessed from X-RateLimit-* headers ends
        when it says, and our log of sends against the documented limit is forgotten (Neuroon counts
        its own budget; the header pacing still sends one request to learn the new one)."""
        bucket = self._bucket(shop_id, operation)
        now = self._clock()
        bucket.blocked_until = now + seconds
        bucket.sent.clear()
        if bucket.server_remaining is not None:
            bucket.server_remaining = 0
            bucket.window_end = now + seconds
