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
