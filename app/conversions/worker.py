"""The delivery worker: takes accepted orders from each shop's stream and reports them to Neuroon.

Any number of workers, in any number of processes, share one Redis through a consumer group:
- each entry goes to one worker; the worker renews a lease on the entries it holds, and a
  worker that dies (kill -9) stops renewing, so after ``lease`` seconds another takes them over;
- the outcome of an attempt is recorded in one atomic step that also acknowledges the entry:
  delivered (never sent again), retry later (delayed set), dead letter, or shop paused;
- Neuroon's immediate retries (3, backoff + jitter, Retry-After) happen inside the client; after
  them the order waits in the delayed set for the next step of ``gateway_retry_schedule``;
- 401/403 pause the whole shop (nothing is dropped): one worker at a time probes with a real
  delivery every ``gateway_pause_probe_seconds`` and resumes the shop once it goes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from redis.exceptions import RedisError

from app import metrics
from app.cancellation import cancel_and_wait
from app.conversions import lines
from app.neuroon.client import RequestTally
from app.neuroon.errors import NeuroonRateLimited, NeuroonRejected, NeuroonUnavailable
from app.neuroon.models import ConversionRequest
from app.settings import Settings
from app.shops import Shop, ShopRegistry
from app.store.conversions import WAKE_CHANNEL, ConversionStore, StreamEntry, stream_key
from app.store.topology import subscriber

log = logging.getLogger(__name__)

T = TypeVar("T")

# An order whose delivery rounds keep crashing workers (or keep failing for any reason) ends in the
# dead-letter list instead of circulating for ever.
MAX_ROUNDS = 100
# An idle worker looks at each shop (one script: pause, due retries, dead workers' entries, new
# entries) every HOUSEKEEPING_SECONDS, or less often when it serves many shops: at most
# IDLE_POLLS_PER_SECOND looks per second in all, so that its idle cost does not grow with the
# number of shops (200 shops: one look per shop every 40 s). New orders do not wait for a look:
# the script that queues one publishes a wake-up (WAKE_CHANNEL) that every worker listens to.
# A look that finds work is followed by another at once, until the shop's stream is empty.
HOUSEKEEPING_SECONDS = 0.25
IDLE_POLLS_PER_SECOND = 5
LOOKS_AT_ONCE = 16
READ_BATCH = 100
REDIS_BACKOFF_SECONDS = 1.0
# The longest pause between two writes of a delivery's record that did not become durable: a failover
# takes seconds, and the order waits for its record meanwhile.
RECORD_BACKOFF_MAX_SECONDS = 1.0
# Consumers of the group that hold nothing and were not heard of for this many leases are removed
# (each restart leaves one behind); a worker also removes its own when it stops with nothing held.
PRUNE_IDLE_LEASES = 2
PRUNE_SECONDS = 600.0


class ConversionSender(Protocol):
    """What the worker needs from the Neuroon client."""

    async def track_conversion(
        self,
        shop: Shop,
        conversion: ConversionRequest,
        *,
        attempts: int | None = None,
        tally: RequestTally | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule: tuple[float, ...]
    jitter: float = 0.1

    def delay(self, round_: int, retry_after: float | None = None) -> float | None:
        """Seconds before the next delayed retry, or None when the schedule is exhausted."""
        if round_ >= len(self.schedule):
            return None
        base = self.schedule[round_]
        delay = base * random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311 - spreading retries
        return max(delay, retry_after or 0.0)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class DeliveryWorker:
    def __init__(
        self,
        store: ConversionStore,
        shops: ShopRegistry,
        sender: ConversionSender,
        settings: Settings,
        *,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.shops = shops
        self.sender = sender
        self.name = name or consumer_name()
        self.concurrency = settings.gateway_worker_concurrency
        self.lease_ms = int(settings.gateway_worker_lease_seconds * 1000)
        self.probe_interval = settings.gateway_pause_probe_seconds
        self.retention_seconds = settings.gateway_order_retention_days * 86_400
        self.policy = RetryPolicy(settings.gateway_retry_schedule)
        self._inflight: dict[str, StreamEntry] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Read more work once this many slots are free: under load, reads come in batches
        # instead of one entry per finished delivery.
        self._refill = max(1, self.concurrency // 4)
        self._slot_free = asyncio.Event()
        self._slot_free.set()
        self._stopping = False
        self._wake = {shop.id: asyncio.Event() for shop in shops}
        self._shop_of_stream = {stream_key(shop.id): shop.id for shop in shops}
        self.poll_interval = max(HOUSEKEEPING_SECONDS, len(self._wake) / IDLE_POLLS_PER_SECOND)
        # Looks at shops in flight at once: with hundreds of shops (all looked at when the worker
        # starts) they would otherwise exhaust the client's connection pool (redis-py: 100).
        self._looking = asyncio.Semaphore(LOOKS_AT_ONCE)

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until cancelled (``drain`` first, to let deliveries in flight finish)."""
        log.info("worker_started", extra={"consumer": self.name, "concurrency": self.concurrency})
        shops = list(self.shops)
        # Phases spread evenly: the shops' regular looks come one after another, not in bursts.
        loops = [
            asyncio.create_task(self._shop_loop(shop, (k + 1) / len(shops))) for k, shop in enumerate(shops)
        ]
        loops.append(asyncio.create_task(self._lease_loop()))
        loops.append(asyncio.create_task(self._listen()))
        try:
            await asyncio.gather(*loops)
        finally:
            # Shielded: a second cancellation of ``run`` (see cancel_and_wait) must not cut this short.
            await asyncio.shield(asyncio.gather(*(cancel_and_wait(t) for t in loops), return_exceptions=True))

    async def drain(self, grace: float) -> None:
        """Stop taking work and let deliveries in flight finish (up to ``grace`` seconds).

        What is still in flight after that stays pending in Redis: another worker (or this one,
        restarted) takes it over when its lease runs out, so nothing is lost.
        """
        self._stopping = True
        for wake in self._wake.values():
            wake.set()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for shop_id in self._wake:  # our consumer, unless it still holds entries (taken over later)
            with contextlib.suppress(RedisError, OSError):
                await self.store.prune_consumers(
                    shop_id, self.lease_ms * PRUNE_IDLE_LEASES, leaving=self.name
                )

    async def _shop_loop(self, shop: Shop, phase: float) -> None:
        wake = self._wake[shop.id]
        # Regular looks on a fixed beat (its phase keeps the shops apart); wake-ups come in between.
        next_look = time.monotonic() + self.poll_interval * phase
        last_reclaim = last_prune = float("-inf")
        group_ready = False
        while not self._stopping:
            try:
                await self._slot_free.wait()
                wake.clear()
                reclaim = time.monotonic() - last_reclaim >= max(self.lease_ms / 2000, self.poll_interval)
                if reclaim:
                    last_reclaim = time.monotonic()
                async with self._looking:
                    if not group_ready:
                        await self.store.ensure_group(shop.id)
                        group_ready = True
                    entries = await self.store.poll(
                        shop.id,
                        self.name,
                        min(self._free(), READ_BATCH),
                        reclaim_idle_ms=self.lease_ms if reclaim else None,
                    )
                if entries is None:  # paused: one worker probes, the others wait
                    paused = await self.store.paused(shop.id)
                    metrics.delivery_paused.labels(shop.id).set(1 if paused else 0)
                    if paused:
                        await self._probe(shop, paused)
                    await asyncio.sleep(
                        max(self.poll_interval, min(HOUSEKEEPING_SECONDS, self.probe_interval))
                    )
                    continue
                for entry in entries:
                    self._spawn(shop, entry)
                if time.monotonic() - last_prune >= PRUNE_SECONDS:
                    last_prune = time.monotonic()
                    async with self._looking:
                        await self.store.prune_consumers(shop.id, self.lease_ms * PRUNE_IDLE_LEASES)
                if not entries:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), max(0.0, next_look - time.monotonic()))
                    while next_look <= time.monotonic():
                        next_look += self.poll_interval
            except (RedisError, OSError) as exc:
                metrics.redis_errors.labels("delivery").inc()
                log.warning("worker_redis_error", extra={"shop": shop.id, "error": type(exc).__name__})
                await asyncio.sleep(REDIS_BACKOFF_SECONDS)
            except Exception:  # a bug must not stop this shop's deliveries for good
                log.exception("worker_loop_error", extra={"shop": shop.id})
                await asyncio.sleep(REDIS_BACKOFF_SECONDS)

    async def _listen(self) -> None:
        """Wake a shop's loop when an order is queued for it (WAKE_CHANNEL). Pub/sub may drop a message
        (a reconnection): then the shop's next regular look finds the order, a little later."""
        lost = False
        while not self._stopping:
            pubsub = None
            try:
                pubsub = await subscriber(self.store.redis)
                await pubsub.subscribe(WAKE_CHANNEL)
                if lost:  # what was queued while we were not listening
                    for wake in self._wake.values():
                        wake.set()
                while not self._stopping:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    shop_id = self._shop_of_stream.get(_text(message["data"]))
                    if shop_id is not None:
                        self._wake[shop_id].set()
            except Exception as exc:  # whatever it is, the regular looks at each shop still find the work
                lost = True
                log.warning("worker_wakeups_lost", extra={"error": type(exc).__name__})
                await asyncio.sleep(REDIS_BACKOFF_SECONDS)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            by_shop: dict[str, list[str]] = {}
            for entry in list(self._inflight.values()):
                by_shop.setdefault(entry.shop_id, []).append(entry.entry_id)
            for shop_id, ids in by_shop.items():
                try:
                    await self.store.renew(shop_id, self.name, ids)
                except Exception as exc:  # keep renewing the others; the lease is generous
                    log.warning(
                        "worker_lease_renewal_failed", extra={"shop": shop_id, "error": type(exc).__name__}
                    )

    def _free(self) -> int:
        return max(1, self.concurrency - len(self._inflight))

    def _spawn(self, shop: Shop, entry: StreamEntry) -> None:
        if entry.entry_id in self._inflight or self._stopping:
            return  # when stopping, the entry stays pending and is taken over after its lease
        self._inflight[entry.entry_id] = entry
        if self.concurrency - len(self._inflight) < self._refill:
            self._slot_free.clear()
        task = asyncio.create_task(self._deliver(shop, entry))
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self._inflight.pop(entry.entry_id, None)
            if self.concurrency - len(self._inflight) >= self._refill:
                self._slot_free.set()

        task.add_done_callback(done)

    # --- one delivery ----------------------------------------------------------------------

    async def _deliver(self, shop: Shop, entry: StreamEntry) -> None:
        try:
            record = await self.store.begin_attempt(entry)
        except (RedisError, OSError) as exc:
            # The entry stays pending; its lease runs out and it is taken over.
            log.warning("delivery_begin_failed", extra={"shop": shop.id, "error": type(exc).__name__})
            return
        if record is None:
            return  # already delivered or dead-lettered: acknowledged, nothing to send
        order_id = entry.order_id
        rounds = int(record.get("rounds", "1"))
        round_ = int(record.get("round", "0"))
        conversion = _conversion(record)
        if conversion is None:
            await self._dead_letter(shop, order_id, entry.entry_id, UNSENDABLE)
            return
        if rounds > MAX_ROUNDS:
            await self._dead_letter(
                shop, order_id, entry.entry_id, f"gave up after {rounds - 1} delivery rounds"
            )
            return
        retry_after: float | None = None
        tally = RequestTally()
        try:
            await self.sender.track_conversion(shop, conversion, tally=tally)
        except NeuroonRejected as exc:
            if exc.is_auth_failure:
                metrics.delivery_attempts.labels(shop.id, "auth_failure").inc()
                await self._pause(shop, order_id, entry.entry_id, _reason(exc), tally.sent)
                return
            metrics.delivery_attempts.labels(shop.id, "rejected").inc()
            await self._dead_letter(shop, order_id, entry.entry_id, _reason(exc), tally.sent)
            return
        except NeuroonRateLimited as exc:
            metrics.delivery_attempts.labels(shop.id, "rate_limited").inc()
            retry_after, error = exc.retry_after, _reason(exc)
        except NeuroonUnavailable as exc:
            metrics.delivery_attempts.labels(shop.id, "unavailable").inc()
            error = _reason(exc)
        except Exception as exc:  # a bug must not lose the order: retry it on the schedule
            metrics.delivery_attempts.labels(shop.id, "error").inc()
            log.exception("delivery_unexpected_error", extra={"shop": shop.id, "order_id": order_id})
            error = f"unexpected error: {type(exc).__name__}"
        else:
            metrics.delivery_attempts.labels(shop.id, "delivered").inc()
            await self._delivered(shop, order_id, entry.entry_id, record, tally)
            return
        delay = self.policy.delay(round_, retry_after)
        if delay is None:
            attempts = int(record.get("attempts", "0")) + tally.sent
            await self._dead_letter(
                shop, order_id, entry.entry_id, f"gave up after {attempts} attempts: {error}", tally.sent
            )
            return
        outcome = secrets.token_hex(8)
        await self._record(
            lambda: self.store.retry_later(
                shop.id,
                order_id,
                entry.entry_id,
                int(delay * 1000),
                round_ + 1,
                error,
                tally.sent,
                outcome=outcome,
            )
        )
        log.warning(
            "conversion_retry_scheduled",
            extra={"shop": shop.id, "order_id": order_id, "delay_seconds": round(delay, 1), "error": error},
        )

    async def _delivered(
        self, shop: Shop, order_id: str, entry_id: str | None, record: dict[str, str], tally: RequestTally
    ) -> None:
        error = _reason(tally.last_error) if tally.last_error else None
        outcome = secrets.token_hex(8)
        await self._record(
            lambda: self.store.mark_delivered(
                shop.id, order_id, entry_id, self.retention_seconds, tally.sent, error, outcome=outcome
            ),
            until_durable=True,
        )
        metrics.conversions.labels(shop.id, "delivered").inc()
        attempts = int(record.get("attempts", "0")) + tally.sent
        log.info("conversion_delivered", extra={"shop": shop.id, "order_id": order_id, "attempts": attempts})

    async def _dead_letter(
        self, shop: Shop, order_id: str, entry_id: str | None, reason: str, requests: int = 0
    ) -> None:
        outcome = secrets.token_hex(8)
        await self._record(
            lambda: self.store.dead_letter(shop.id, order_id, entry_id, reason, requests, outcome=outcome)
        )
        metrics.conversions.labels(shop.id, "dead_lettered").inc()
        log.error("conversion_dead_lettered", extra={"shop": shop.id, "order_id": order_id, "reason": reason})

    async def _pause(
        self, shop: Shop, order_id: str, entry_id: str | None, reason: str, requests: int
    ) -> None:
        outcome = secrets.token_hex(8)
        newly = await self._record(
            lambda: self.store.pause(shop.id, order_id, entry_id, reason, requests, outcome=outcome)
        )
        metrics.delivery_paused.labels(shop.id).set(1)
        if newly:
            log.error("delivery_paused", extra={"shop": shop.id, "reason": reason})

    async def _record(self, step: Callable[[], Awaitable[T]], *, until_durable: bool = False) -> T | None:
        """Record an outcome, writing it again when Redis fails it (each step names its outcome, so a
        repeat of one that landed changes nothing).

        Without ``until_durable``, three tries: if they all fail, the entry's lease runs out and the
        order is attempted again, which costs at most one more request for an order Neuroon has not
        accepted (a retry later, a dead letter or a pause is decided again the same way).

        ``until_durable`` (a delivery: Neuroon has seen the 2xx): until the record is where the
        deployment keeps copies (the store's durability: a replica, the disk). The wait not met
        (NotDurable) or the primary changed (READONLY, a dropped connection: the client reconnects to
        whichever primary the Sentinels or the slot map name now) means writing it again, on that
        primary: an old primary's write is exactly what its demotion erases. Meanwhile the order is not
        sent again: its entry stays in flight here, its lease renewed. Only the worker's stop ends the
        tries (``drain`` cancels what its grace did not let finish); then whoever takes the entry over
        sends the order once more, which Neuroon dedupes by orderId.
        """
        attempt = 0
        while True:
            try:
                return await step()
            except (RedisError, OSError) as exc:
                log.warning("delivery_record_failed", extra={"error": type(exc).__name__, "attempt": attempt})
                attempt += 1
                if not until_durable and attempt == 3:
                    return None
                await asyncio.sleep(min(0.2 * attempt, RECORD_BACKOFF_MAX_SECONDS))

    # --- paused shops ----------------------------------------------------------------------

    async def _probe(self, shop: Shop, paused: dict[str, str]) -> None:
        """One real delivery, by one worker per interval: its success resumes the shop.

        It is an attempt like any other: in the order's record (attempts, last error) and in the
        attempts metric. When it fails the order keeps waiting for the next probe: no step of the retry
        schedule is spent and MAX_ROUNDS does not apply, since a paused shop drops nothing.
        """
        if not await self.store.acquire_probe(shop.id, self.name, int(self.probe_interval * 1000)):
            return
        order_id = paused.get("orderId") or await self.store.next_delayed(shop.id)
        record = await self.store.begin_probe(shop.id, order_id) if order_id else None
        if order_id is None or record is None:
            await self._resume(shop)  # nothing left to prove the key with: the next delivery will tell
            return
        conversion = _conversion(record)
        if conversion is None:  # as _deliver would, once resumed; it proves nothing about the key
            await self._dead_letter(shop, order_id, None, UNSENDABLE)
            await self._resume(shop)
            return
        tally = RequestTally()
        try:
            await self.sender.track_conversion(shop, conversion, attempts=1, tally=tally)
        except NeuroonRejected as exc:
            if not exc.is_auth_failure:
                metrics.delivery_attempts.labels(shop.id, "rejected").inc()
                # Past authentication: the key works again; this order itself is refused.
                await self._dead_letter(shop, order_id, None, _reason(exc), tally.sent)
                await self._resume(shop)
                return
            metrics.delivery_attempts.labels(shop.id, "auth_failure").inc()
            error = _reason(exc)
        except NeuroonRateLimited as exc:
            metrics.delivery_attempts.labels(shop.id, "rate_limited").inc()
            error = _reason(exc)  # no verdict on the key: probe again later
        except NeuroonUnavailable as exc:
            metrics.delivery_attempts.labels(shop.id, "unavailable").inc()
            error = _reason(exc)
        except Exception as exc:  # a bug must not lose the order: it waits for the next probe
            metrics.delivery_attempts.labels(shop.id, "error").inc()
            log.exception("probe_unexpected_error", extra={"shop": shop.id, "order_id": order_id})
            error = f"unexpected error: {type(exc).__name__}"
        else:
            metrics.delivery_attempts.labels(shop.id, "delivered").inc()
            await self._delivered(shop, order_id, None, record, tally)
            await self._resume(shop)
            return
        await self.store.probe_failed(shop.id, order_id, error, tally.sent)

    async def _resume(self, shop: Shop) -> None:
        await self.store.resume(shop.id)
        metrics.delivery_paused.labels(shop.id).set(0)
        log.warning("delivery_resumed", extra={"shop": shop.id})


UNSENDABLE = "stored body is unreadable or has no sendable line"


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _conversion(record: dict[str, str]) -> ConversionRequest | None:
    body = record.get("body")
    return None if body is None else lines.queued(body)


def _reason(exc: Exception) -> str:
    # Our Neuroon exceptions never carry the key; keep the reason short for Redis and the admin API.
    return str(exc)[:500]


async def monitor_queues(store: ConversionStore, shops: ShopRegistry, interval: float = 5.0) -> None:
    """Keep the queue gauges current, from Redis (so every process reports the same numbers)."""
    while True:
        for shop in shops:
            try:
                stats = await store.stats(shop.id)
            except (RedisError, OSError):
                metrics.redis_errors.labels("queue_stats").inc()
                continue
            metrics.conversion_queue_depth.labels(shop.id).set(stats.depth)
            age = 0.0
            if stats.oldest_accepted_ms is not None:
                age = max(0.0, stats.server_time_ms - stats.oldest_accepted_ms) / 1000
            metrics.conversion_oldest_pending.labels(shop.id).set(age)
            metrics.delivery_paused.labels(shop.id).set(1 if stats.paused else 0)
            metrics.dead_letters.labels(shop.id).set(stats.dead_letters)
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running(worker: DeliveryWorker, *, grace: float = 10.0) -> AsyncIterator[DeliveryWorker]:
    """Run a worker for the duration of a block (the lifespan), draining it on the way out."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await worker.drain(grace)
        await cancel_and_wait(task)
