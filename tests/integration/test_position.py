"""Position announcements against a real redis-server: the caller's place in
their store's line (Registry.place_in_line) as the worker and the desk write
it, and the announcer saying 1, 2 and 3 for three callers of one store, then
1 and 2 once the first is taken."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from worker.announce import PHRASE_KEYS
from worker.announcer import PositionAnnouncer
from worker.catalog import PositionPlan
from worker.prompts import PromptSet
from worker.registry import Registry, call_id
from worker.stores import PositionAnnouncements

log = logging.getLogger("test-position")


async def hold(registry: Registry, room: str, store: str, since: int) -> str:
    cid = call_id(room)
    await registry.write(
        cid,
        f"w-{room}",
        {"room": room, "state": "holding", "store": store, "hold_since": str(since)},
        store=store,
        previous_store=store,
        waiting=True,
        hold_since=since,
    )
    return cid


async def test_place_in_line(registry: Registry) -> None:
    a = await hold(registry, "call-a", "main", 1000)
    b = await hold(registry, "call-b", "main", 2000)
    n = await hold(registry, "call-n", "north", 500)
    assert await registry.place_in_line(a) == ("main", 1)
    assert await registry.place_in_line(b) == ("main", 2)
    assert await registry.place_in_line(n) == ("north", 1)
    assert await registry.place_in_line(call_id("call-unknown")) is None
    # taken at the desk: out of line at once
    assert (await registry.take(a, "alice", "main"))[0] == "ok"
    assert await registry.place_in_line(a) is None
    assert await registry.place_in_line(b) == ("main", 1)
    # transferred to north: counted in north's line, by its first hold start
    assert (await registry.take(b, "bob", "main"))[0] == "ok"
    ok = await registry.transfer(
        b, "bob", "main", to_store="north", note="", to_agent="", offer_ms=0
    )
    assert ok[0] == "ok"
    assert await registry.place_in_line(n) == ("north", 1)
    assert await registry.place_in_line(b) == ("north", 2)


async def test_waits_newest_first_with_a_limit(registry: Registry) -> None:
    cids = [await hold(registry, f"call-{i}", "main", 1000 + i) for i in range(4)]
    for cid in cids:
        assert (await registry.take(cid, "alice", "main"))[0] == "ok"
    waits = await registry.waits("main")
    assert len(waits) == 4 and all(w["outcome"] == "taken" for w in waits)
    assert await registry.waits("main", 2) == waits[:2]


def prompts() -> PromptSet:
    keys = [*PHRASE_KEYS, *(f"number_{n}" for n in range(1, 61))]
    return PromptSet("en", {k: np.full(10, 0.1, dtype=np.float32) for k in keys}, frozenset())


async def test_three_callers_hear_1_2_3_then_1_2(registry: Registry) -> None:
    pa = PositionAnnouncements.model_validate(
        {"enabled": True, "first_after_s": 0, "every_s": 10, "min_gap_s": 5}
    )
    plan = PositionPlan(pa, prompts())
    now = [0.0]
    cids = [await hold(registry, f"call-{i}", "main", 1000 + i) for i in range(3)]
    heard: dict[str, list[Any]] = {cid: [] for cid in cids}

    def announcer(cid: str) -> PositionAnnouncer:
        async def say(samples: np.ndarray) -> None:
            heard[cid].append(samples.shape[0])

        a = PositionAnnouncer(
            registry,
            cid,
            plan=lambda: plan,
            holding=lambda: True,
            hold_since_ms=lambda: 0,
            say=say,
            log=log,
            clock=lambda: now[0],
        )
        a.update(0.0)
        return a

    ann = [announcer(cid) for cid in cids]
    for a in ann:
        assert await a.announce_if_due(0.0)
    assert [a.said[-1][1] for a in ann] == [1, 2, 3]
    assert (await registry.take(cids[0], "alice", "main"))[0] == "ok"
    now[0] = 10.0
    assert not await ann[0].announce_if_due(10.0)  # taken: nothing said
    assert await ann[1].announce_if_due(10.0) and await ann[2].announce_if_due(10.0)
    assert [a.said[-1][1] for a in ann[1:]] == [1, 2]
    assert len(heard[cids[0]]) == 1 and len(heard[cids[2]]) == 2
