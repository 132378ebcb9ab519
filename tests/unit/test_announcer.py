"""PositionAnnouncer: reads the place in line when due, says it over the music,
skips (and logs once) when the registry does not answer, only while holding."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from tests.unit.fakeroom import FakeRegistry
from worker.announce import CALLER_NUMBER, MANY_CALLERS, MINUTES, PHRASE_KEYS, WAIT_ABOUT
from worker.announcer import PositionAnnouncer
from worker.catalog import PositionPlan
from worker.prompts import PromptSet
from worker.stores import PositionAnnouncements
from worker.waits import SpokenWait

log = logging.getLogger("test-announcer")
NOW_MS = 50_000_000


def prompts() -> PromptSet:
    keys = [*PHRASE_KEYS, *(f"number_{n}" for n in range(1, 61))]
    # each prompt a distinct length, so the composition shows what was said
    audio = {k: np.full(100 + i, 0.1, dtype=np.float32) for i, k in enumerate(keys)}
    return PromptSet("en", audio, frozenset())


def registry() -> FakeRegistry:
    """Third in line; three calls taken lately, after 150, 180 and 210 s."""
    return FakeRegistry(
        place=("main", 3),
        entries=[
            {"at": NOW_MS - 60_000, "wait_ms": w, "outcome": "taken"}
            for w in (150_000, 180_000, 210_000)
        ],
    )


class Call:
    def __init__(self, **settings: Any) -> None:
        self.t = 0.0
        self.holding = True
        self.registry = registry()
        self.said: list[np.ndarray] = []
        pa = PositionAnnouncements.model_validate(
            {"enabled": True, "first_after_s": 20, "every_s": 60, "min_gap_s": 30, **settings}
        )
        self.plan: PositionPlan | None = PositionPlan(pa, prompts())
        self.a = PositionAnnouncer(
            self.registry,
            "cid",
            plan=lambda: self.plan,
            holding=lambda: self.holding,
            hold_since_ms=lambda: NOW_MS - 30_000,  # waited 30 s
            say=self.say,
            log=log,
            clock=lambda: self.t,
            wall_ms=lambda: NOW_MS,
        )

    async def say(self, samples: np.ndarray) -> None:
        self.said.append(samples)


async def test_says_position_and_wait_when_due() -> None:
    c = Call()
    c.a.update(0.0)
    assert not await c.a.announce_if_due(19.9)
    assert await c.a.announce_if_due(20.0)
    # mean 180 s, waited 30 s: 150 s left, "about 3 minutes"
    assert c.a.said[-1][1:] == (3, SpokenWait("minutes", 3))
    p = prompts()
    expected = p.compose([[CALLER_NUMBER, "number_3"], [WAIT_ABOUT, "number_3", MINUTES]])
    assert c.said[-1].shape == expected.shape
    assert c.a.schedule is not None and c.a.schedule.next_at == 80.0


async def test_wait_left_out_without_enough_data_or_when_off() -> None:
    c = Call()
    c.registry.entries = c.registry.entries[:2]
    c.a.update(0.0)
    await c.a.announce_if_due(20.0)
    assert c.a.said[-1][1:] == (3, None)
    off = Call(announce_wait=False)
    off.a.update(0.0)
    await off.a.announce_if_due(20.0)
    assert off.a.said[-1][1:] == (3, None)


async def test_many_callers_only() -> None:
    c = Call(many_callers_above=2)
    c.a.update(0.0)
    await c.a.announce_if_due(20.0)
    assert c.a.said[-1][1:] == (3, None)
    assert c.said[-1].shape == prompts().compose([[MANY_CALLERS]]).shape


async def test_nothing_said_when_not_in_line_or_not_holding() -> None:
    c = Call()
    c.a.update(0.0)
    c.registry.place = None  # taken at the desk already
    assert not await c.a.announce_if_due(20.0)
    assert c.said == [] and c.a.schedule is not None and c.a.schedule.next_at == 80.0
    c.holding = False
    c.a.update(30.0)
    assert not await c.a.announce_if_due(1000.0) and c.said == []
    # holding again: first_after from now, the gap kept
    c.holding, c.registry.place = True, ("main", 1)
    c.a.update(100.0)
    assert await c.a.announce_if_due(120.0)
    assert c.a.said[-1][1] == 1


async def test_no_store_yet_no_schedule() -> None:
    c = Call()
    c.plan = None
    c.a.update(0.0)
    assert not await c.a.announce_if_due(1000.0) and c.registry.reads == 0
    c.plan = Call().plan
    c.t = 5.0
    c.a.update(5.0)  # the store is known: counted from the hold start
    assert c.a.schedule is not None and c.a.schedule.next_at == 20.0


async def test_registry_failure_is_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = Call()
    c.a.update(0.0)
    c.registry.fail = True
    with caplog.at_level(logging.WARNING, logger="test-announcer"):
        assert not await c.a.announce_if_due(20.0)
        assert not await c.a.announce_if_due(80.0)
    skipped = [r for r in caplog.records if "position announcement skipped" in r.getMessage()]
    assert len(skipped) == 1 and c.said == []
    c.registry.fail = False
    assert await c.a.announce_if_due(140.0)


async def test_the_task_says_it_on_time_and_stops() -> None:
    c = Call(first_after_s=0.05)
    loop = asyncio.get_running_loop()
    c.a.clock = loop.time
    c.a.update(loop.time())
    c.a.start()
    await asyncio.sleep(0.3)
    await c.a.aclose()
    assert len(c.said) == 1  # the next is 60 s later
