"""A store's waits: the desk's figures and the expected wait a caller is told.

The registry keeps each store's most recent waits (`hold:waits:{store}`,
newest first, `{"at", "wait_ms", "outcome"}`). The desk shows a summary of
them (`GET /stores/{store}/waits`: `summarise`); the position announcement
tells a waiting caller how much longer they are likely to wait
(`expected_wait_s`), rounded the way people speak (`spoken_wait`), and says
nothing about it when too few recent calls are known to be honest. Pure: no
I/O, time comes in as an argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

RECENT_WAITS = 10  # the most recent taken calls' waits: the desk lists them, the caller's
# expected wait is their mean


@dataclass(frozen=True)
class WaitSummary:
    calls: int
    taken: int
    abandoned: int
    average_wait_s: float | None  # hold start to an agent's take, over the taken calls
    recent_waits_s: list[float]  # the last RECENT_WAITS taken calls' waits, newest first
    since: int | None  # unix ms of the oldest entry


def summarise(entries: Sequence[Mapping[str, Any]]) -> WaitSummary:
    """The desk's figures from a store's waits (newest first)."""
    taken = [e["wait_ms"] / 1000 for e in entries if e.get("outcome") == "taken"]
    abandoned = [e for e in entries if e.get("outcome") == "abandoned"]
    return WaitSummary(
        calls=len(entries),
        taken=len(taken),
        abandoned=len(abandoned),
        average_wait_s=round(sum(taken) / len(taken), 1) if taken else None,
        recent_waits_s=[round(w, 1) for w in taken[:RECENT_WAITS]],
        since=min((int(e["at"]) for e in entries), default=None),
    )


def expected_wait_s(
    entries: Sequence[Mapping[str, Any]],
    *,
    now_ms: int,
    waited_s: float,
    min_calls: int,
    window_s: float,
) -> float | None:
    """How much longer a caller who has waited `waited_s` is likely to wait:
    the mean wait of the store's last RECENT_WAITS taken calls (the desk's
    `recent_waits_s`) taken within `window_s`, less what the caller has
    waited already. None (say nothing) with fewer than `min_calls` such
    calls, or once the caller has waited longer than that mean: there is no
    honest figure to give then."""
    since = now_ms - window_s * 1000
    recent = [
        e["wait_ms"] / 1000
        for e in entries
        if e.get("outcome") == "taken" and float(e.get("at", 0)) >= since
    ][:RECENT_WAITS]
    if len(recent) < max(1, min_calls):
        return None
    left = sum(recent) / len(recent) - waited_s
    return left if left > 0 else None


WAIT_WHOLE_UP_TO = 10  # minutes said as they are; beyond, to the nearest 5
WAIT_MAX_MINUTES = 60  # beyond: "more than an hour"


@dataclass(frozen=True)
class SpokenWait:
    """A wait as it is said: `under_minute` ("less than a minute"), `minutes`
    ("about N minutes", N = 1..10 or a multiple of 5 up to 60), or
    `over_hour` ("more than an hour")."""

    kind: Literal["under_minute", "minutes", "over_hour"]
    minutes: int = 0


def _round_half_up(x: float) -> int:
    return int(x + 0.5)


def spoken_wait(seconds: float) -> SpokenWait:
    """Round a wait the way people speak: under a minute is "less than a
    minute"; 1 to 10 minutes to the whole minute; beyond, to 5 minutes; over
    an hour, "more than an hour"."""
    if seconds < 60:
        return SpokenWait("under_minute")
    minutes = max(1, _round_half_up(seconds / 60))
    if minutes > WAIT_WHOLE_UP_TO:
        minutes = 5 * _round_half_up(seconds / 300)
        minutes = max(minutes, WAIT_WHOLE_UP_TO)
    if minutes > WAIT_MAX_MINUTES:
        return SpokenWait("over_hour")
    return SpokenWait("minutes", minutes)


def wait_numbers() -> list[int]:
    """Every number a spoken wait may contain (the prompts to render)."""
    return [*range(2, WAIT_WHOLE_UP_TO + 1), *range(15, WAIT_MAX_MINUTES + 1, 5)]
