"""Small asyncio helpers for teardown that never aborts halfway.

Bounded waits in the worker use `asyncio.timeout`, never `asyncio.wait_for`:
on Python 3.11 (the image's), wait_for returns the result instead of raising
when a cancellation arrives as the awaited thing completes (CPython
gh-86296, fixed in 3.12). A task looping around one, such as the position
announcer waiting for its next time while the call's state wakes it, then
runs on after `stop_task` cancelled it, and the call's teardown waits for it
for ever (the model test of CallSession found a call that never ended).
tests/unit/test_aio.py keeps it so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

Log = logging.Logger | logging.LoggerAdapter[Any]


async def woken(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for `event` at most `timeout` seconds (None: for ever); whether
    it was set. The wait of a task that loops until it is stopped."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def stop_task(task: asyncio.Task[Any], log: Log) -> None:
    """Cancel a task and wait for it; whatever it raised is logged, not raised."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():  # we were cancelled ourselves
            raise
    except Exception as e:
        log.error(f"{task.get_name()} had failed: {type(e).__name__}: {e}")


async def quietly(aw: Awaitable[None], log: Log) -> None:
    """Await a teardown step; a failure is logged and the teardown goes on."""
    try:
        await aw
    except Exception as e:
        log.error(f"teardown step failed: {type(e).__name__}: {e}")
