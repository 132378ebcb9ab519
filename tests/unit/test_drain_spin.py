"""livekit-agents' drain (the real AgentServer.drain, 1.8.9) with two job
processes whose calls end at the same moment: without our wrapper
(worker/server.py) it loops for ever and not even its own timeout fires;
with it, the drain ends at once. The executors are real ProcJobExecutor
objects as far as the drain reads them (`join()`, `running_job`); the process
pool is a stand-in that drops an executor after its join, as theirs does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TWO_CALLS_END_AT_ONCE = """
import asyncio, sys, time
from livekit.agents import AgentServer
from livekit.agents.ipc.job_proc_executor import ProcJobExecutor
if sys.argv[1] == "ours":
    import worker.server  # noqa: F401  (the wrapper applies on import)


class Pool:
    def __init__(self):
        self.processes = []


async def main():
    server = AgentServer(port=0)
    pool = Pool()
    server._proc_pool = pool
    server._job_lifecycle_tasks = set()

    async def no_status():
        pass

    server._update_worker_status = no_status
    ends = []
    for job in ("call-a", "call-b"):
        p = object.__new__(ProcJobExecutor)
        end = asyncio.get_running_loop().create_future()
        ends.append(end)

        async def supervise(end=end):
            await end

        p._supervise_atask = asyncio.create_task(supervise())
        p._running_job = job
        pool.processes.append(p)

        async def monitor(p=p):
            await p.join()
            pool.processes.remove(p)

        asyncio.create_task(monitor())
    await asyncio.sleep(0.01)
    drain = asyncio.create_task(server.drain(timeout=2))
    await asyncio.sleep(0.01)
    t = time.monotonic()
    for end in ends:
        end.set_result(None)
    await drain
    print(f"drained in {1000 * (time.monotonic() - t):.1f} ms", flush=True)


asyncio.run(main())
"""


def drain(which: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", TWO_CALLS_END_AT_ONCE, which],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_drain_ends_when_two_calls_end_at_once() -> None:
    p = drain("ours", 30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("drained in "), p.stdout
    print(p.stdout.strip())


def test_the_stock_drain_still_spins_so_the_wrapper_is_still_needed() -> None:
    # If this fails after a livekit-agents upgrade, upstream fixed the loop:
    # the wrapper in worker/server.py (and this file) can go.
    with pytest.raises(subprocess.TimeoutExpired):
        drain("stock", 5)
