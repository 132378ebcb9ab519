"""AgentServer wiring: agent name, executor, prewarm and the job entrypoint."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from functools import cache
from typing import Any

from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess
from livekit.agents.ipc.job_proc_executor import ProcJobExecutor
from livekit.agents.ipc.job_thread_executor import ThreadJobExecutor

from . import logmask
from .call import CallSession
from .catalog import CatalogError, StoreCatalog
from .registry import Registry, connect
from .settings import Settings, load_settings

logger = logging.getLogger("hold-worker")
# The server of this process (thread executor: the calls run beside it), so a
# call can tell when the worker is draining.
_server: AgentServer | None = None


def leave_now(code: int = 0) -> None:
    """End the process without the interpreter's finalization, the logs flushed.

    Once nothing is left to close, finishing normally only gives the SDK's
    native threads a window to abort the process (SIGABRT, "panic in a function
    that cannot unwind" from a tokio thread: RELIABILITY.md), which turns a
    clean drain into exit -6."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _join_yields_first(cls: Any) -> None:
    """livekit-agents 1.8.9's drain waits for its jobs in a loop that calls
    each job executor's `join()` until the process pool has dropped every
    executor with a job. A job process that has just ended joins without
    giving the event loop a turn, and the pool drops it only on the loop's
    next turn: when two calls end at once (both callers hang up together),
    the drain loops on the second one for ever, at 100 % CPU, and not even
    the drain timeout can fire (RELIABILITY.md; the benchmark's baseline, a
    stock worker, hung so; `tests/unit/test_drain_spin.py` reproduces it
    with the real drain). Joining after one turn of the loop lets the pool
    drop it. A wrapper, not a copy of their drain: the rest is theirs."""
    join = cls.join

    async def join_after_a_turn(self: Any) -> None:
        await asyncio.sleep(0)
        await join(self)

    cls.join = join_after_a_turn


# The process executor (HOLD_EXECUTOR=process) is where it was seen; the
# thread executor's join takes a lock the pool holds until the job has ended,
# so it already waits its turn, and one more turn costs it nothing.
for _executor in (ProcJobExecutor, ThreadJobExecutor):
    _join_yields_first(_executor)


class HoldServer(AgentServer):
    def __init__(self, *, max_calls: int, **kwargs: Any) -> None:
        """Full at exactly `max_calls` calls (HOLD_MAX_CALLS)."""
        self.per_call_load = 1.0 / max_calls
        super().__init__(load_fnc=self._load_by_calls, load_threshold=1.0, **kwargs)

    def _load_by_calls(self) -> float:
        """Load is the share of HOLD_MAX_CALLS in use, not CPU: a held call
        costs a steady, known amount, and CPU spikes from other processes on
        the host must not make the worker refuse calls."""
        return len(self.active_jobs) * self.per_call_load

    def _get_effective_load(self) -> float:
        """livekit-agents 1.8.9 counts each job it has said yes to but not yet
        started at an estimated load; with no call running it estimates
        load_threshold / num_idle_processes (0.25 with HOLD_IDLE_JOBS=4), so
        a replica with no call that is sent five calls at once (a dead
        worker's, re-dispatched by the guardian) refuses the fifth ("no
        workers with sufficient capacity"), and that caller is left in
        silence (CI, 2026-11-30 01:56). Our load is exact, so a pending call
        counts what a running one does."""
        return float(self._worker_load) + self._reserved_slots * self.per_call_load

    async def aclose(self) -> None:
        """After a completed drain (SIGTERM, every call ended or handed over)
        there is nothing left whose closing matters: the job runners are idle,
        LiveKit drops the worker when its connection closes, the health and
        metrics ports close with the process. livekit-agents' own shutdown
        tears down the SDK's native side, where the abort above was seen, so
        the process leaves at once. A drain that timed out (calls still held)
        or a shutdown without a drain (dev mode) closes as usual: the calls
        are ended and marked for a guardian there."""
        if self.draining and not self.active_jobs:
            logger.info("drained: no call left, leaving")
            leave_now(0)
        await super().aclose()


def draining() -> bool:
    return _server is not None and _server.draining


@cache
def settings() -> Settings:
    # Validated once in the CLI before the worker registers; a job process
    # (process executor) reads the same environment again here.
    return load_settings()


@cache
def catalog() -> StoreCatalog:
    """One per process: the stores and their decoded audio, shared by its calls."""
    return StoreCatalog(settings())


def prewarm(proc: JobProcess) -> None:
    """Decode the hold audio (every store's) before any call arrives (once per process)."""
    logmask.install()
    try:
        catalog().load()
    except CatalogError as e:  # checked by the CLI before registering; changed since?
        logger.error(f"prewarm: {e}")


async def entrypoint(ctx: JobContext) -> None:
    s = settings()
    logmask.install()  # a job process sets up its own logging
    # One Redis client per call: a job may run on an event loop of its own.
    registry = (
        Registry(connect(s.redis_url), history_ttl_ms=s.desk_history_ttl_s * 1000)
        if s.redis_url
        else None
    )
    session = CallSession(ctx, s, catalog(), is_draining=draining, registry=registry)
    try:
        reason = await session.run()
    finally:
        if registry is not None:
            await registry.aclose()
    # Leave the room now rather than when the job runner gets round to it:
    # the room (and the web app) sees the worker gone at once.
    await ctx.room.disconnect()
    ctx.shutdown(reason)


def _say_registry(s: Settings) -> None:
    """Once at start: whether calls are in the registry."""
    if s.redis_url:
        logger.info("call registry on (HOLD_REDIS_URL): a guardian moves a dead worker's calls")
    else:
        logger.warning(
            "HOLD_REDIS_URL is not set: no call registry; a dead worker's calls come back "
            "only through the guardian's webhooks (about 22 s of silence)"
        )
        announcing = catalog().announcing_stores()
        if announcing:
            logger.warning(
                "HOLD_REDIS_URL is not set: no position announcements for "
                f"{', '.join(announcing)} (a caller's place in line is read from the registry)"
            )


def build_server(s: Settings) -> AgentServer:
    server = HoldServer(
        max_calls=s.max_calls,
        job_executor_type=(
            JobExecutorType.THREAD if s.executor == "thread" else JobExecutorType.PROCESS
        ),
        setup_fnc=prewarm,
        num_idle_processes=s.idle_jobs,
        host=s.http_host,
        port=s.http_port,
        # Prometheus (hold_media_verdicts_total, hold_calls, hold_handoffs_total
        # and livekit-agents' own) on livekit-agents' metrics port.
        prometheus_port=s.metrics_port or None,
        # `start` drains on SIGTERM: no new calls, held calls go on until
        # handed over (then the call leaves: CallSession's is_draining) or
        # until this timeout.
        drain_timeout=s.drain_timeout_s,
    )
    # agent_name set = explicit dispatch only: LiveKit sends us the rooms that a
    # dispatch rule (room_config.agents) or the API names us for, never others.
    server.rtc_session(entrypoint, agent_name=s.agent_name)
    server.on("worker_started", logmask.install)  # after the CLI has set up logging
    server.on("worker_started", lambda: _say_registry(s))
    global _server
    _server = server
    return server
