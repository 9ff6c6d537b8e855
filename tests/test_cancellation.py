"""Background tasks stop at shutdown even when a cancellation is swallowed (redis-py 8.1 may swallow
one that lands while it opens a connection: app/cancellation.py)."""

from __future__ import annotations

import asyncio

from app.cancellation import cancel_and_wait


async def test_a_task_that_swallowed_a_cancellation_is_stopped_all_the_same() -> None:
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as redis-py does: the command completes, the task carries on

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), timeout=5)
    assert task.cancelled()
    assert swallowed == 1
