"""A store's waits: the desk's summary, the expected wait, and how it is said."""

from __future__ import annotations

import pytest

from worker.waits import (
    RECENT_WAITS,
    SpokenWait,
    expected_wait_s,
    spoken_wait,
    summarise,
    wait_numbers,
)

NOW = 10_000_000


def taken(wait_s: float, ago_s: float = 60) -> dict[str, object]:
    return {"at": NOW - int(ago_s * 1000), "wait_ms": int(wait_s * 1000), "outcome": "taken"}


def abandoned(wait_s: float, ago_s: float = 60) -> dict[str, object]:
    return {"at": NOW - int(ago_s * 1000), "wait_ms": int(wait_s * 1000), "outcome": "abandoned"}


def test_summary_is_the_desks() -> None:
    entries = [taken(30, 10), abandoned(200, 20), taken(90, 30)]
    w = summarise(entries)
    assert (w.calls, w.taken, w.abandoned) == (3, 2, 1)
    assert w.average_wait_s == 60.0 and w.recent_waits_s == [30.0, 90.0]
    assert w.since == NOW - 30_000
    empty = summarise([])
    assert empty.average_wait_s is None and empty.since is None and empty.recent_waits_s == []


def expect(entries: list[dict[str, object]], waited: float = 0, **kw: float) -> float | None:
    args: dict[str, float] = {"min_calls": 3, "window_s": 3600, **kw}
    return expected_wait_s(
        entries,
        now_ms=NOW,
        waited_s=waited,
        min_calls=int(args["min_calls"]),
        window_s=args["window_s"],
    )


def test_expected_wait_is_the_recent_mean_less_what_the_caller_waited() -> None:
    entries = [taken(120), taken(180), taken(240), abandoned(900)]
    assert expect(entries) == pytest.approx(180)
    assert expect(entries, waited=60) == pytest.approx(120)
    # waited longer than callers usually do: no honest figure
    assert expect(entries, waited=200) is None


def test_expected_wait_needs_enough_recent_calls() -> None:
    assert expect([taken(120), taken(180)]) is None  # two of the three needed
    assert expect([taken(120), taken(180)], min_calls=2) == pytest.approx(150)
    # outside the window they do not count
    old = [taken(120, ago_s=7200), taken(180, ago_s=7200), taken(240, ago_s=7200)]
    assert expect(old) is None
    assert expect(old, window_s=3 * 3600) == pytest.approx(180)
    # abandoned calls are not waits for an agent
    assert expect([abandoned(60)] * 5) is None


def test_expected_wait_uses_the_last_ten_taken() -> None:
    entries = [taken(60)] * RECENT_WAITS + [taken(6000)] * 5
    assert expect(entries) == pytest.approx(60)


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0, SpokenWait("under_minute")),
        (59.9, SpokenWait("under_minute")),
        (60, SpokenWait("minutes", 1)),
        (89, SpokenWait("minutes", 1)),
        (90, SpokenWait("minutes", 2)),
        (130, SpokenWait("minutes", 2)),
        (569, SpokenWait("minutes", 9)),
        (600, SpokenWait("minutes", 10)),
        (629, SpokenWait("minutes", 10)),
        (660, SpokenWait("minutes", 10)),  # 11 minutes: to the nearest 5
        (749, SpokenWait("minutes", 10)),
        (750, SpokenWait("minutes", 15)),
        (1000, SpokenWait("minutes", 15)),
        (1400, SpokenWait("minutes", 25)),
        (3600, SpokenWait("minutes", 60)),
        (3749, SpokenWait("minutes", 60)),
        (3750, SpokenWait("over_hour")),
        (86400, SpokenWait("over_hour")),
    ],
)
def test_rounded_the_way_people_speak(seconds: float, said: SpokenWait) -> None:
    assert spoken_wait(seconds) == said


def test_every_spoken_wait_has_its_number() -> None:
    numbers = set(wait_numbers())
    for s in range(60, 4000, 7):
        w = spoken_wait(s)
        if w.kind == "minutes" and w.minutes > 1:
            assert w.minutes in numbers, s
