"""HoldProgram: music switch without a click, announcements ducking the music, rewind."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.hold.dsp import rms_dbfs
from worker.hold.program import Announcement, HoldProgram

RATE = 48_000


def tone(hz: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    n = int(seconds * RATE)
    # whole periods, so the loop itself is seamless
    x = amp * np.sin(2 * np.pi * hz * np.arange(n) / RATE)
    return x.astype(np.float32)


def band_level(x: np.ndarray, hz: float) -> float:
    """Amplitude of one frequency in x (single-bin DFT)."""
    n = np.arange(x.shape[0])
    return float(2 * np.abs(np.dot(x, np.exp(-2j * np.pi * hz * n / RATE))) / x.shape[0])


def test_music_repeats_its_loop() -> None:
    music = tone(400, 1.0)
    p = HoldProgram(music)
    out = np.concatenate([p.read(30_000) for _ in range(4)])
    assert np.allclose(out, np.tile(music, 3)[: out.shape[0]])


def test_switch_cross_fades_without_a_step() -> None:
    a, b = tone(400, 1.0), tone(600, 1.0)
    p = HoldProgram(a, crossfade=RATE * 300 // 1000)
    head = p.read(24_000)
    p.switch_music(b)
    tail = p.read(48_000)
    out = np.concatenate([head, tail])
    # no sample-to-sample jump bigger than the tones' own largest step
    max_step = 2 * np.pi * 600 / RATE * 0.3 * 1.5
    assert np.max(np.abs(np.diff(out))) < max_step
    # after the cross-fade only the new loop; before the switch only the old
    assert band_level(tail[-24_000:], 600) > 0.25 and band_level(tail[-24_000:], 400) < 0.01
    assert band_level(head, 400) > 0.25 and band_level(head, 600) < 0.01


def test_announcement_ducks_music_and_repeats() -> None:
    music = tone(400, 1.0, amp=0.3)
    voice = tone(1500, 1.0, amp=0.2)
    p = HoldProgram(music)
    p.set_announcement(Announcement.make(voice, RATE, every_s=5.0, first_s=2.0, duck_db=-14))
    out = p.read(12 * RATE)

    def sec(a: float, b: float) -> np.ndarray:
        return out[int(a * RATE) : int(b * RATE)]

    # announcements at 2-3 s and 7-8 s; the music is ducked by 14 dB under them
    for start in (2.0, 7.0):
        under = sec(start + 0.1, start + 0.9)
        assert band_level(under, 1500) > 0.18
        ducked = 20 * np.log10(band_level(under, 400) / 0.3)
        assert -15 < ducked < -13, ducked
    for a, b in ((0.0, 1.6), (3.4, 6.6), (8.4, 11.9)):
        assert band_level(sec(a, b), 1500) < 0.01
        assert abs(band_level(sec(a, b), 400) - 0.3) < 0.01
    # smooth: no step larger than the two tones' own steps
    assert np.max(np.abs(np.diff(out))) < 0.06
    assert rms_dbfs(out) < 0


@settings(max_examples=40, deadline=None)
@given(
    chunks=st.lists(st.integers(1, 30_000), min_size=1, max_size=12),
    back=st.integers(0, 40_000),
    switch_at=st.integers(0, 5),
)
def test_rewind_re_renders_the_same_samples(chunks: list[int], back: int, switch_at: int) -> None:
    """Whatever was rendered, rewinding n samples and reading again gives the same audio."""
    a, b = tone(400, 0.5), tone(600, 0.7)
    p = HoldProgram(a, crossfade=4800)
    p.set_announcement(Announcement.make(tone(1500, 0.3), RATE, every_s=5.0, first_s=0.5))
    rendered = []
    for i, n in enumerate(chunks):
        if i == switch_at:
            p.switch_music(b)
        rendered.append(p.read(n))
    whole = np.concatenate(rendered)
    back = min(back, whole.shape[0])
    p.rewind(back)
    again = p.read(back)
    assert np.array_equal(again, whole[whole.shape[0] - back :])
    assert np.all(np.abs(whole) <= 1.0)


DUCK = 10 ** (-14 / 20)
RAMP = RATE * 300 // 1000


def test_one_shot_ducks_the_music_once() -> None:
    music = tone(400, 1.0, amp=0.3)
    voice = tone(1500, 1.0, amp=0.2)
    p = HoldProgram(music)
    p.read(RATE)  # a second of music
    shot = p.play_once(voice, duck_gain=DUCK, ramp=RAMP)
    assert shot.start == RATE + RAMP  # as soon as the music is ducked
    out = p.read(4 * RATE)

    def sec(a: float, b: float) -> np.ndarray:
        return out[int((a - 1) * RATE) : int((b - 1) * RATE)]

    under = sec(1.4, 2.2)
    assert band_level(under, 1500) > 0.18
    assert -15 < 20 * np.log10(band_level(under, 400) / 0.3) < -13
    # once: music alone, at full level, after it
    after = sec(2.7, 4.9)
    assert band_level(after, 1500) < 0.01 and abs(band_level(after, 400) - 0.3) < 0.01
    assert np.max(np.abs(np.diff(out))) < 0.06


def test_one_shot_follows_a_periodic_announcement_under_way() -> None:
    music = tone(400, 1.0, amp=0.3)
    p = HoldProgram(music)
    periodic = Announcement.make(tone(1500, 1.0, amp=0.2), RATE, every_s=10.0, first_s=1.0)
    p.set_announcement(periodic)
    p.read(int(1.5 * RATE))  # the periodic one is playing (1.0-2.0 s)
    shot = p.play_once(tone(900, 0.5, amp=0.2), duck_gain=DUCK, ramp=RAMP)
    # after it has ended and the music is back (2.0 + ramp), then its own ramp
    assert shot.start == 2 * RATE + 2 * RAMP
    out = p.read(3 * RATE)
    at = int(shot.start - 1.5 * RATE)
    assert band_level(out[at : at + RATE // 2], 900) > 0.18
    assert band_level(out[at : at + RATE // 2], 1500) < 0.01


def test_a_periodic_announcement_overlapping_a_one_shot_is_left_out() -> None:
    music = tone(400, 1.0, amp=0.3)
    p = HoldProgram(music)
    p.set_announcement(Announcement.make(tone(1500, 1.0, amp=0.2), RATE, every_s=10.0, first_s=2.0))
    p.read(int(1.0 * RATE))
    p.play_once(tone(900, 1.5, amp=0.2), duck_gain=DUCK, ramp=RAMP)  # 1.3-2.8 s
    out = p.read(11 * RATE)  # 1 s .. 12 s
    assert band_level(out, 900) > 0.01
    # the periodic one at 2 s is left out; the next, at 12 s, plays as before
    assert band_level(out[: int(9 * RATE)], 1500) < 0.005
    p2 = HoldProgram(music)
    p2.set_announcement(
        Announcement.make(tone(1500, 1.0, amp=0.2), RATE, every_s=10.0, first_s=2.0)
    )
    p2.read(12 * RATE)
    tail_ref = p2.read(2 * RATE)
    assert np.allclose(p.read(2 * RATE), tail_ref)


def test_one_shot_after_another_and_rewind_re_renders() -> None:
    p = HoldProgram(tone(400, 1.0, amp=0.3))
    first = p.play_once(tone(900, 1.0, amp=0.2), duck_gain=DUCK, ramp=RAMP)
    second = p.play_once(tone(700, 0.5, amp=0.2), duck_gain=DUCK, ramp=RAMP)
    assert second.start == first.end + RAMP  # never two voices at once
    whole = np.concatenate([p.read(7000) for _ in range(30)])
    p.rewind(50_000)
    assert np.array_equal(p.read(50_000), whole[-50_000:])


def test_a_cut_during_the_duck_before_the_words_keeps_the_ramps() -> None:
    """A key pressed while the music ducks for a prompt not yet begun (the
    model test's click: the duck vanished and the music jumped from 0.56 to
    full in one sample): nothing is said, the duck goes on down and comes
    back along its ramps."""
    level = 0.5
    p = HoldProgram(np.full(RATE, level, dtype=np.float32))
    p.read(RATE // 10)
    p.play_once(np.full(RATE, 0.2, dtype=np.float32), duck_gain=DUCK, ramp=RAMP)
    before = p.read(RAMP // 2)  # half-way down
    assert p.cut_once(RATE * 40 // 1000) == 1
    after = p.read(3 * RAMP)
    env = np.concatenate([before, after]) / level
    steepest = (1 - DUCK) * (np.pi / 2) / RAMP
    assert float(np.max(np.abs(np.diff(env)))) < 1.1 * steepest
    assert float(np.min(env)) > DUCK - 1e-3  # the words left out: the music alone
    assert abs(float(env[-1]) - 1.0) < 1e-6  # back at full level


def test_a_cut_before_the_duck_begins_leaves_the_music_alone() -> None:
    p = HoldProgram(np.full(RATE, 0.5, dtype=np.float32))
    p.read(RATE // 10)
    p.play_once(np.full(RATE, 0.2, dtype=np.float32), duck_gain=DUCK, ramp=RAMP)
    assert p.cut_once(RATE * 40 // 1000) == 1
    assert np.all(p.read(2 * RAMP) == np.float32(0.5))
