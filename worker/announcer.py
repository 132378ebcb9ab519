"""PositionAnnouncer: one call's position announcements, read and said on time.

When the call's schedule (announce.py) says one is due and the caller is
holding, it reads the caller's place in their store's line from the call
registry (one script: the line, then ZRANK) and the store's recent waits,
composes what to say from the store's prompts (prompts.py) and has the hold
player say it once over the ducked music. Nothing here can end or disturb
the call: a registry that does not answer, or anything else that fails,
skips that announcement (logged once) and the schedule goes on.

The call (call.py) tells it when the state or the store changes (`update`);
it owns one task, started by `start()` and cancelled and awaited by
`aclose()`. Caller numbers never reach it: it knows the call by its
registry id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .aio import Log, stop_task, woken
from .announce import AnnounceSchedule, what_to_say
from .catalog import PositionPlan
from .hold.dsp import Audio
from .waits import RECENT_WAITS, SpokenWait, expected_wait_s, spoken_wait

READ_TIMEOUT_S = 2.0  # a registry read that takes longer skips this announcement
WAITS_READ = 5 * RECENT_WAITS  # the newest waits read (abandoned calls among them)


def _wall_ms() -> int:
    return int(time.time() * 1000)


class PositionAnnouncer:
    def __init__(
        self,
        registry: Any,  # registry.Registry, or a fake: place_in_line(), waits()
        cid: str,
        *,
        plan: Callable[[], PositionPlan | None],
        holding: Callable[[], bool],
        hold_since_ms: Callable[[], int],
        say: Callable[[Audio], Awaitable[None]],
        log: Log,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self.registry = registry
        self.cid = cid
        self._plan = plan
        self._holding = holding
        self._hold_since_ms = hold_since_ms
        self._say = say
        self.log = log
        self.clock = clock
        self.wall_ms = wall_ms
        self.schedule: AnnounceSchedule | None = None
        self._was_holding = False
        self._held_from = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # a failed read is logged once until one succeeds
        self.said: list[tuple[float, int, SpokenWait | None]] = []  # (when, position, wait)

    # ---- told by the call -----------------------------------------------------

    def update(self, now: float) -> None:
        """The call's state or store changed: (re)start or stop the schedule."""
        holding = self._holding()
        if holding and not self._was_holding:
            self._held_from = now
        self._was_holding = holding
        plan = self._plan()
        if plan is None:
            if self.schedule is not None:
                self.schedule.stopped()
            self._wake.set()
            return
        pa = plan.settings
        times = (pa.first_after_s, pa.every_s, pa.min_gap_s)
        old = self.schedule
        if old is None or (old.first_after, old.every, old.min_gap) != times:
            self.schedule = AnnounceSchedule(*times, last_at=old.last_at if old else None)
        assert self.schedule is not None
        if holding:
            self.schedule.holding(self._held_from)
        else:
            self.schedule.stopped()
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hold-position")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task, self.log)

    # ---- the task -------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            at = self.schedule.next_at if self.schedule is not None else None
            timeout = None if at is None else max(0.001, at - self.clock())
            await woken(self._wake, timeout)
            await self.announce_if_due(self.clock())

    async def announce_if_due(self, now: float) -> bool:
        """Say the caller's position now if it is due; whether something was said."""
        sched = self.schedule
        if sched is None or not sched.due(now):
            return False
        try:
            said = await self._announce()
        except Exception as e:  # never the call's end: this one is skipped
            if not self._failing:
                self.log.warning(
                    f"position announcement skipped: {type(e).__name__}: {e}; "
                    "retrying at the next one"
                )
            self._failing = True
            said = False
        if said:
            sched.made(now)
        else:
            sched.skipped(now)
        return said

    async def _announce(self) -> bool:
        plan = self._plan()
        if plan is None or not self._holding():
            return False
        async with asyncio.timeout(READ_TIMEOUT_S):
            place = await self.registry.place_in_line(self.cid)
        if place is None:
            return False  # not waiting for an agent (taken already, or not written yet)
        line, position = place
        pa = plan.settings
        wait: SpokenWait | None = None
        # above many_callers_above, "many callers are waiting" is all that is said
        if pa.announce_wait and position <= pa.many_callers_above:
            async with asyncio.timeout(READ_TIMEOUT_S):
                entries = await self.registry.waits(line, WAITS_READ)
            now_ms = self.wall_ms()
            since = self._hold_since_ms()
            left = expected_wait_s(
                entries,
                now_ms=now_ms,
                waited_s=max(0, now_ms - since) / 1000 if since > 0 else 0.0,
                min_calls=pa.wait_min_calls,
                window_s=pa.wait_window_s,
            )
            wait = spoken_wait(left) if left is not None else None
        sentences = what_to_say(position, wait, many_callers_above=pa.many_callers_above)
        if not sentences or not self._holding():
            return False  # nothing to say, or the caller is not holding any more
        await self._say(plan.prompts.compose(sentences))
        if self._failing:
            self._failing = False
            self.log.info("position announcements: the registry answers again")
        self.said.append((self.clock(), position, wait))
        self.log.info(
            "position announced",
            extra={"position": position, "wait": _wait_words(wait), "line": line},
        )
        return True


def _wait_words(wait: SpokenWait | None) -> str:
    if wait is None:
        return "not said"
    if wait.kind == "minutes":
        return f"about {wait.minutes} min"
    return wait.kind
