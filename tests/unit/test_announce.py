"""Position announcements: what is said (prompt keys) and when (the schedule)."""

from __future__ import annotations

from worker.announce import (
    BUILT_IN_PHRASES,
    CALLER_NUMBER,
    MANY_CALLERS,
    MAX_SPOKEN_POSITION,
    MINUTES,
    PHRASE_KEYS,
    WAIT_ABOUT,
    WAIT_ONE_MINUTE,
    WAIT_OVER_HOUR,
    WAIT_UNDER_MINUTE,
    AnnounceSchedule,
    built_in_phrases,
    number_key,
    prompt_texts,
    spoken_numbers,
    what_to_say,
)
from worker.waits import SpokenWait


def test_position_and_wait() -> None:
    say = what_to_say(3, SpokenWait("minutes", 2), many_callers_above=10)
    assert say == [[CALLER_NUMBER, "number_3"], [WAIT_ABOUT, "number_2", MINUTES]]
    assert what_to_say(1, SpokenWait("minutes", 1), many_callers_above=10)[1] == [WAIT_ONE_MINUTE]
    assert what_to_say(1, SpokenWait("under_minute"), many_callers_above=10)[1] == [
        WAIT_UNDER_MINUTE
    ]
    assert what_to_say(1, SpokenWait("over_hour"), many_callers_above=10)[1] == [WAIT_OVER_HOUR]


def test_wait_left_out_and_many_callers() -> None:
    assert what_to_say(4, None, many_callers_above=10) == [[CALLER_NUMBER, "number_4"]]
    assert what_to_say(10, None, many_callers_above=10) == [[CALLER_NUMBER, "number_10"]]
    assert what_to_say(11, None, many_callers_above=10) == [[MANY_CALLERS]]
    # never a number beyond what the prompts hold
    assert what_to_say(MAX_SPOKEN_POSITION + 1, None, many_callers_above=99) == [[MANY_CALLERS]]


def test_nothing_for_a_caller_not_in_line() -> None:
    assert what_to_say(None, SpokenWait("minutes", 2), many_callers_above=10) == []
    assert what_to_say(0, None, many_callers_above=10) == []


def test_prompts_cover_every_announcement() -> None:
    texts = prompt_texts(BUILT_IN_PHRASES["en"])
    for position in range(1, MAX_SPOKEN_POSITION + 5):
        for wait in [None, SpokenWait("under_minute"), SpokenWait("over_hour")] + [
            SpokenWait("minutes", m) for m in (1, 2, 7, 10, 15, 45, 60)
        ]:
            for sentence in what_to_say(position, wait, many_callers_above=MAX_SPOKEN_POSITION):
                assert all(k in texts for k in sentence), (position, wait)
    assert texts[number_key(12)] == "12"
    assert set(spoken_numbers()) >= set(range(1, 21)) | {25, 30, 60}


def test_built_in_languages_are_complete_and_voices_find_them() -> None:
    for lang, phrases in BUILT_IN_PHRASES.items():
        assert set(phrases) == set(PHRASE_KEYS), lang
    assert built_in_phrases("en-us") == BUILT_IN_PHRASES["en"]
    assert built_in_phrases("DE") == BUILT_IN_PHRASES["de"]
    assert built_in_phrases("pl") is None


def test_schedule_first_then_every() -> None:
    s = AnnounceSchedule(first_after=20, every=60, min_gap=30)
    assert not s.due(1000)  # not holding
    s.holding(100)
    assert s.next_at == 120 and not s.due(119.9) and s.due(120)
    s.made(120)
    assert s.next_at == 180
    s.skipped(180)  # nothing said (not in line): the next one a period later
    assert s.next_at == 240
    s.holding(200)  # still holding: no change
    assert s.next_at == 240


def test_schedule_stops_and_keeps_the_gap_when_holding_again() -> None:
    s = AnnounceSchedule(first_after=5, every=60, min_gap=30)
    s.holding(0)
    s.made(5)
    s.stopped()  # an agent took the call
    assert s.next_at is None and not s.due(1e9)
    s.holding(10)  # the agent left: on hold again, 5 s in would be 15 ...
    assert s.next_at == 35  # ... but never within 30 s of the last one
    s.made(35)
    s.stopped()
    s.holding(100)
    assert s.next_at == 105  # the gap long past


def test_schedule_gap_wins_over_a_short_period() -> None:
    s = AnnounceSchedule(first_after=0, every=10, min_gap=25)
    s.holding(0)
    s.made(0)
    assert s.next_at == 25
