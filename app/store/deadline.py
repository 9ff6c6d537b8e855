"""Deadlines for Redis calls, one per kind of caller, each with its own circuit breaker.

A hung Redis (connections accepted, nothing answered) is worse than a dead one: without a
deadline every request waits out the client's socket timeout. Each caller gets the budget it can
afford: the widget-token path a fraction of a second (it fails open: a cached or locally signed
token), webhooks about two seconds (then 503, which makes the platform retry).

The breaker makes a hung Redis cost one timeout rather than one per request: it opens when a call
gets no answer in time (deadline passed, connection refused or reset). While open, calls fail at
once with ``CircuitOpen``. After ``cooldown`` seconds one call is let through as a trial; its
success closes the breaker, its failure keeps it open for another cooldown. So recovery needs no
operator: the first trial after Redis answers again closes it.

One breaker per caller, not one per client: a Redis that is slow but alive (say 250 ms) is too
slow for the token path, whose breaker opens, and still fine for webhooks, whose breaker stays
closed. Errors that are answers (``ResponseError``: READONLY, a script error) prove Redis responds,
so they count as successes here; the caller still gets them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds an open breaker refuses calls before letting one trial through. Short enough that
# recovery is prompt, long enough that a hung Redis costs one timeout per second per caller.
COOLDOWN_SECONDS = 1.0


class DeadlineExceeded(RedisTimeoutError):
    """Redis did not answer within the caller's deadline (a RedisError: callers already handle it)."""


class CircuitOpen(RedisConnectionError):
    """Redis recently failed to answer this caller; refused without trying."""


class RedisDeadline:
    def __init__(
        self,
        caller: str,
        seconds: float,
        *,
        cooldown: float = COOLDOWN_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.caller = caller
        self.seconds = seconds
        self._cooldown = cooldown
        self._mono = monotonic
        self._open_until: float | None = None  # None: closed
        self._trial = False  # a trial call is in flight
        metrics.redis_circuit_open.labels(caller).set(0)

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` within the deadline; raise a RedisError when Redis does not answer."""
        trial = self._admit()
        try:
            async with asyncio.timeout(self.seconds):
                result = await call()
        except TimeoutError:  # asyncio's: the deadline passed (checked before OSError, its base)
            self._failed(trial)
            raise DeadlineExceeded(f"Redis did not answer within {self.seconds:g}s") from None
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self._failed(trial)
            raise
        except ResponseError:
            self._succeeded()
            raise
        except BaseException:
            # Cancelled (client gone) or a bug of ours: no verdict on Redis.
            if trial:
                self._trial = False
            raise
        self._succeeded()
        return result

    def _admit(self) -> bool:
        """Whether this call is the breaker's trial; raise CircuitOpen when it may not run."""
        if self._open_until is None:
            return False
        if self._trial or self._mono() < self._open_until:
            raise CircuitOpen(f"Redis did not answer recently; retrying after {self._cooldown:g}s")
        self._trial = True
        return True

    def _failed(self, trial: bool) -> None:
        if trial:
            self._trial = False
        if self._open_until is None:
            log.warning("redis_circuit_open", extra={"caller": self.caller, "deadline": self.seconds})
            metrics.redis_circuit_open.labels(self.caller).set(1)
        self._open_until = self._mono() + self._cooldown

    def _succeeded(self) -> None:
        if self._open_until is not None:
            log.info("redis_circuit_closed", extra={"caller": self.caller})
            metrics.redis_circuit_open.labels(self.caller).set(0)
        self._open_until = None
        self._trial = False
