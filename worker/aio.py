"""Small asyncio helpers for teardown that never aborts halfway."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

Log = logging.Logger | logging.LoggerAdapter[Any]


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
