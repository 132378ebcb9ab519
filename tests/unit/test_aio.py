"""worker/aio.py: a looping task woken as it is stopped still stops, and no
asyncio.wait_for is left in the worker (the reason is in aio.py)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from worker.aio import stop_task, woken

WORKER = Path(__file__).resolve().parents[2] / "worker"
log = logging.getLogger("test-aio")


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
async def test_a_loop_woken_as_it_is_stopped_stops(turns: int) -> None:
    """The model test's call that never ended: the position announcer, in a
    loop like this one, was woken (the call's state changed) just before the
    teardown cancelled it. Waiting with asyncio.wait_for (Python 3.11), the
    wake won for 0, 1 and 2 turns of the event loop between the two, the
    cancellation was lost and stop_task waited for ever."""
    wake = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            wake.clear()
            await woken(wake, 20.0)
            rounds += 1

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    wake.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # a lost cancellation: the loop waits its 20 s again, until this timeout
    # cancels us and, through us, the task (stop_task does not abort a teardown)
    async with asyncio.timeout(1.0):
        await stop_task(task, log)
    assert loop.time() - t0 < 0.5, "the cancellation was lost"
    assert task.cancelled() and rounds <= 1


async def test_woken_says_whether_it_was_woken() -> None:
    e = asyncio.Event()
    assert await woken(e, 0.01) is False
    e.set()
    assert await woken(e, 0.01) is True
    assert await woken(e, None) is True


def test_no_wait_for_in_the_worker() -> None:
    used = [
        f"{p.relative_to(WORKER.parent)}:{n}"
        for p in sorted(WORKER.rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\basyncio\.wait_for\(", line)
    ]
    assert not used, used
