"""Stopping background tasks for sure.

redis-py (8.1) can swallow a cancellation that lands while it opens a connection: the command then
completes and the task carries on as if nothing happened, and a shutdown that cancels it once and
waits hangs for ever (seen with the queue monitor, whichever client shape or command). Cancelling
again, when it has not ended a moment later, stops it at its next await.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

RECANCEL_SECONDS = 0.5


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (an error it ended with is raised here)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
    with contextlib.suppress(asyncio.CancelledError):
        await task
