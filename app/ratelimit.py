"""Per-client rate limits shared by all replicas through Redis, without a Redis trip per request.

Each replica counts hits locally and adds them to the client's fixed one-minute window in Redis
every ``sync_interval`` seconds, and sooner the closer the client gets to its limit (at the end,
on every hit). The hot path of a client well within its limit stays in-process; a client at its
limit is held to it across replicas, give or take a hit or two in flight.

A request never waits on Redis: syncs run in the background (one at a time per client, under the
token path's deadline and circuit breaker) and a request is judged by the totals known so far plus
this replica's own unsynced hits. When Redis is unreachable or hung the limiter fails open: it lets
requests through rather than turning a Redis outage into an outage of the storefront.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from app import metrics
from app.errors import GatewayError
from app.store import Store
from app.store.deadline import RedisDeadline

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# A window's key in Redis lives until the window ends, plus this much: replicas' clocks differ a
# little, and a late sync must not recreate a key that lives for another minute. Redis thus holds
# one key per client seen in the last minute or so (measured: ~100 bytes per key, ~10 MB per 100k
# addresses per limit), whatever the number of addresses a botnet rotates through.
WINDOW_SLACK_SECONDS = 5
# What one replica remembers per limit (~275 bytes a client: ~14 MB at the cap). Past it, the client
# first seen longest ago this minute is forgotten: its next hit is judged afresh (one hit allowed,
# plus its unsynced hits lost, at most a sixteenth of its budget) and the sync that hit starts brings
# back its total from Redis. A flood of new addresses costs a held client a hit, not the limit.
MAX_CLIENTS = 50_000


@dataclass(slots=True)
class _Window:
    window: int
    known_total: int = 0  # the window's total across replicas, as of our last sync
    pending: int = 0  # our hits not yet added to Redis
    in_flight: int = 0  # our hits being added to Redis right now
    last_sync: float = float("-inf")


class RateLimiter:
    def __init__(
        self,
        store: Store,
        name: str,
        per_minute: int,
        *,
        sync_interval: float = 0.1,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        deadline: RedisDeadline | None = None,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._store = store
        self._deadline = deadline or RedisDeadline("rate_limit", 0.1)
        self._syncs: set[asyncio.Task[None]] = set()
        self.name = name
        self.per_minute = per_minute
        self._sync_interval = sync_interval
        self._wall = wall_clock
        self._mono = monotonic
        self._clients: dict[str, _Window] = {}  # in order of first hit this window
        self._max_clients = max_clients
        self._current_window = 0

    @property
    def clients_remembered(self) -> int:
        return len(self._clients)

    async def enforce(self, client: str, what: str) -> None:
        """Count a request of ``client`` (app.clientaddress.client_key); raise 429 with Retry-After
        when over the limit."""
        wait = await self.hit(client)
        if wait is not None:
            raise GatewayError(
                429,
                "rate_limited",
                f"too many {what} requests from this address",
                headers={"retry-after": str(wait)},
            )

    async def hit(self, client: str) -> int | None:
        """Count one request; return the seconds to wait when the client is over its limit."""
        if self.per_minute == 0:
            return None
        now = self._wall()
        window = int(now // WINDOW_SECONDS)
        if window != self._current_window:
            # Forget finished windows, so memory is bounded by one minute's distinct clients.
            self._clients = {c: w for c, w in self._clients.items() if w.window == window}
            self._current_window = window
        state = self._clients.get(client)
        if state is None or state.window != window:
            if state is None and len(self._clients) >= self._max_clients:
                del self._clients[next(iter(self._clients))]
            state = self._clients[client] = _Window(window)
        state.pending += 1
        # Sync by time, and also whenever our unsynced hits reach a sixteenth of what is left of the
        # budget: far from the limit that is rare, near it every hit is counted in Redis at once,
        # so replicas admitting hits the others have not seen yet overshoot by a few at most.
        batch = max(1, (self.per_minute - state.known_total) // 16)
        due = state.pending >= batch or self._mono() - state.last_sync >= self._sync_interval
        if due and not state.in_flight:
            state.in_flight, state.pending = state.pending, 0
            task = asyncio.create_task(self._sync(client, state))
            self._syncs.add(task)
            task.add_done_callback(self._syncs.discard)
        if self._deadline.is_open:
            return None  # Redis is not answering: fail open (the sync above is the breaker's trial)
        if state.known_total + state.in_flight + state.pending > self.per_minute:
            metrics.rate_limited.labels(self.name).inc()
            return max(1, WINDOW_SECONDS - int(now % WINDOW_SECONDS))
        return None

    async def synced(self) -> None:
        """Wait for the syncs in flight (tests, and anyone who needs the shared totals now)."""
        while self._syncs:
            await asyncio.gather(*self._syncs)

    async def _sync(self, client: str, state: _Window) -> None:
        # Relative to now, so the key dies when this replica's window does, whatever Redis's clock says.
        left = (state.window + 1) * WINDOW_SECONDS - self._wall()
        ttl = max(1, math.ceil(left)) + WINDOW_SLACK_SECONDS
        try:
            total = await self._deadline.run(
                lambda: self._store.add_to_window(self.name, client, state.window, state.in_flight, ttl)
            )
        except (RedisError, OSError):
            metrics.redis_errors.labels("rate_limit").inc()
            state.in_flight = 0  # fail open: these hits are forgotten rather than retried
            return
        # The total includes our in-flight hits and whatever other replicas added meanwhile.
        state.known_total = max(state.known_total, total)
        state.in_flight = 0
        state.last_sync = self._mono()
