"""Acknowledgement = durability (interface §3.3): an order is answered ``accepted`` only once its
claim is on a replica (``WAIT``) and on disk (``WAITAOF``) wherever the Redis deployment has them.

How the gateway knows what the deployment has: it asks the server itself, at start-up and then at
most every ``REFRESH_SECONDS`` (on the next claim after that): ``INFO replication`` (replicas
online), ``INFO persistence`` (AOF on), ``CONFIG GET appendfsync`` (refused by managed services:
then unknown) and a ``WAITAOF 0 0 0`` that answers at once where the command exists (Redis >= 7.2,
Valkey >= 7.2; a server without it, or with it renamed away, refuses it). On a cluster every primary is
asked, and one plan holds for all of them: the strictest (a replica is waited for on every node once any
primary has been seen with one; the disk only where every primary has AOF and WAITAOF). Not one plan per
node: a failover swaps the roles of two nodes (the promoted replica is another node, and the old primary
its replica once back), so what was learned about a node would be forgotten by the very failover it is
for; and a shard that lost its replica must refuse (503), as a lone primary does, rather than acknowledge
what a promotion elsewhere would erase. Clusters configure every shard alike, managed ones always.

What a claim then waits for (``AckPlan``):

- replicas: ``GATEWAY_ACK_REPLICAS`` when set to a number; ``auto`` (the default) means one replica
  from the moment this process has seen the primary with a replica online, and from then on until it
  restarts. A replica that drops out is not forgotten: it may be on the far side of a partition and be
  promoted there, and an order acknowledged by the old primary alone is exactly what that failover
  erases. Running on without it is an operator's decision: ``GATEWAY_ACK_REPLICAS=0``. One replica is
  enough for Sentinel, which promotes the most up-to-date replica.
- disk: ``WAITAOF 1 0`` whenever the server has AOF on and the command exists. On a server without
  it, a crash of the Redis *host* can lose what ``appendfsync`` has not yet flushed; the start-up log
  says how much (``host_crash_loss``).

The wait follows the group commit's scripts on their own connection (``wait_commands``/``check_wait``,
sent by app/store/topology.py's ``send_with_tail``): ``WAIT`` and ``WAITAOF`` cover the writes of their
own connection only, and so one wait covers a whole batch (on a cluster, each node's part of it). Where
it is not met within ``GATEWAY_ACK_TIMEOUT`` every claim it covers fails with ``NotDurable`` (a
``RedisError``: intake answers ``503`` and the platform retries).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from app.store.topology import Command, config_per_primary, info_per_primary, on_every_primary

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0


class NotDurable(RedisError):
    """The batch's writes did not reach the replicas or the disk they must reach in time."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """What the Redis primaries say about themselves; on a cluster, what holds for every primary."""

    replicas_online: int  # the fewest of any primary
    aof: bool  # on every primary
    appendfsync: str | None  # the weakest; None when CONFIG is refused (managed services)
    waitaof: bool  # on every primary
    replicated: bool  # some primary has a replica online


@dataclass(frozen=True, slots=True)
class AckPlan:
    """What a batch of claims waits for before it is acknowledged."""

    replicas: int
    fsync: bool

    @property
    def waits(self) -> bool:
        return self.replicas > 0 or self.fsync

    def describe(self) -> str:
        parts = []
        if self.replicas:
            parts.append(f"{self.replicas} replica(s) (WAIT)")
        if self.fsync:
            parts.append("the AOF fsync (WAITAOF)")
        return " and ".join(parts) or "the write alone"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# appendfsync from the weakest; unknown (CONFIG refused, or a value we do not know) next to the default.
_FSYNC_RANK = {"no": 0, "everysec": 2, "always": 3}


async def read_deployment(client: aioredis.Redis) -> Deployment:
    replication = await info_per_primary(client, "replication")
    # A node the client's slot map still holds for a primary may have been demoted meanwhile.
    primaries = [info for info in replication.values() if info.get("role") == "master"] or list(
        replication.values()
    )
    online = [
        sum(
            1
            for name, value in info.items()
            if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        )
        for info in primaries
    ]
    persistence = await info_per_primary(client, "persistence")
    try:
        settings = await config_per_primary(client, "appendfsync")
        fsyncs = [None if value is None else _text(value) for value in settings.values()]
        appendfsync = min(fsyncs, key=lambda value: _FSYNC_RANK.get(value or "", 1))
    except ResponseError:
        appendfsync = None
    try:
        await on_every_primary(client, "WAITAOF", 0, 0, 0)  # asks for nothing: answers at once
        waitaof = True
    except ResponseError:
        waitaof = False
    aof = all(int(info.get("aof_enabled", 0)) for info in persistence.values())
    return Deployment(min(online), aof, appendfsync, waitaof, replicated=max(online) > 0)


def host_crash_loss(deployment: Deployment) -> str | None:
    """What a crash of the Redis host can lose of acknowledged orders, when the gateway cannot wait for
    the disk (None: nothing, or no AOF at all, which the start-up checks report on their own)."""
    if not deployment.aof or deployment.waitaof or deployment.appendfsync == "always":
        return None
    if deployment.appendfsync == "no":
        what = "appendfsync no: the operating system flushes the AOF when it likes, typically every 30 s"
    else:  # everysec, Redis's default, or unknown (CONFIG refused)
        what = f"appendfsync {deployment.appendfsync or 'everysec (assumed)'}: the last second"
    return (
        f"a crash of the Redis host (not only of the Redis process) can lose orders acknowledged in "
        f"{what}. This server has no WAITAOF (Redis >= 7.2 / Valkey >= 7.2) to wait for the disk; "
        f"upgrade it, set appendfsync always, or rely on a replica (GATEWAY_ACK_REPLICAS)"
    )


class AckDurability:
    """The acknowledgement wait of one Redis client: knows the deployment, plans and checks the wait."""

    def __init__(self, client: aioredis.Redis, *, replicas: int | None, timeout: float) -> None:
        self._client = client
        self._required = replicas  # None: auto
        self._timeout_ms = max(1, round(timeout * 1000))
        self._seen_replica = False
        self._plan: AckPlan | None = None
        self._checked_at = 0.0

    async def refresh(self) -> Deployment:
        deployment = await read_deployment(self._client)
        self._seen_replica = self._seen_replica or deployment.replicated
        replicas = self._required if self._required is not None else int(self._seen_replica)
        self._plan = AckPlan(replicas, deployment.aof and deployment.waitaof)
        self._checked_at = time.monotonic()
        return deployment

    @property
    def waits(self) -> bool:
        """Whether claims wait for something, as far as known (nothing is known before the first plan)."""
        return self._plan is not None and self._plan.waits

    async def plan(self) -> AckPlan:
        """The current plan: learned on first use (a failure there fails the claims: the gateway may not
        acknowledge before it knows what to wait for), refreshed when older than REFRESH_SECONDS (a failed
        refresh keeps the plan it had)."""
        if self._plan is None:
            await self.refresh()
        elif time.monotonic() - self._checked_at > REFRESH_SECONDS:
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                self._checked_at = time.monotonic()  # try again in REFRESH_SECONDS, not on every batch
                log.warning("redis_durability_refresh_failed", extra={"error": type(exc).__name__})
        assert self._plan is not None
        return self._plan

    def wait_commands(self, plan: AckPlan) -> list[Command]:
        """The wait to send after a batch's writes, on their connection."""
        commands: list[Command] = []
        if plan.fsync:
            commands.append(("WAITAOF", 1, 0, self._timeout_ms))
        if plan.replicas:
            commands.append(("WAIT", plan.replicas, self._timeout_ms))
        return commands

    def check_wait(self, plan: AckPlan, replies: Sequence[Any]) -> None:
        """Raise NotDurable unless the replies of ``wait_commands`` show the plan met."""
        replies = list(replies)
        if plan.fsync:
            local = replies.pop(0)
            if isinstance(local, Exception):  # e.g. AOF turned off meanwhile: learn it at once
                self._checked_at = 0.0
                raise NotDurable(f"WAITAOF failed: {local}")
            if int(local[0]) < 1:
                raise NotDurable(f"the AOF was not fsynced within {self._timeout_ms} ms")
        if plan.replicas:
            acked = replies.pop(0)
            if isinstance(acked, Exception):
                raise NotDurable(f"WAIT failed: {acked}")
            if int(acked) < plan.replicas:
                raise NotDurable(
                    f"{acked} of {plan.replicas} replica(s) acknowledged within {self._timeout_ms} ms"
                )
