"""DSP: loop seam continuity, fade shape and length, level."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.hold.dsp import (
    GainRamp,
    equal_power_out,
    float_to_int16,
    make_seamless_loop,
    normalise,
    rms_dbfs,
)

RATE = 48_000


def sine(freq: float, seconds: float, amp: float = 0.5, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def max_step(x: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(x))))


def test_seam_of_a_sine_cut_mid_cycle_has_no_click() -> None:
    # 440 Hz over 1.0013 s ends mid-cycle: played raw, the seam jumps.
    x = sine(440.0, 1.0013)
    raw_seam = abs(float(x[0] - x[-1]))
    natural = max_step(x)  # the largest sample-to-sample step inside the tone
    assert raw_seam > 3 * natural, "the test signal must have a click when looped raw"

    loop = make_seamless_loop(x, int(0.05 * RATE))
    played = np.concatenate([loop, loop, loop])
    assert max_step(played) <= natural * 1.05


def test_seam_between_unrelated_sounds_is_bounded_by_the_sounds() -> None:
    # End on one pitch, start on another: the fold turns the jump into a glide.
    x = np.concatenate([sine(300.0, 0.5), sine(520.0, 0.5, phase=1.0)])
    x = x[::-1].copy()
    loop = make_seamless_loop(x, int(0.05 * RATE))
    seam = abs(float(loop[-1] - loop[0]))
    assert seam <= max_step(x) * 1.05


def test_equal_power_fade_shape_and_length() -> None:
    n = int(0.4 * RATE)
    g = equal_power_out(n)
    assert g.shape == (n,)
    assert g[0] == pytest.approx(1.0, abs=1e-4)
    assert g[-1] == pytest.approx(0.0, abs=1e-6)
    # -3 dB (not -6 dB) at the midpoint: equal power, not a linear ramp
    assert 20 * math.log10(g[n // 2 - 1]) == pytest.approx(-3.01, abs=0.05)
    assert np.all(np.diff(g) <= 0)


def test_gain_ramp_fades_over_chunks_and_stays_silent() -> None:
    ramp = GainRamp(1.0)
    fade = int(0.4 * RATE)
    ramp.ramp_to(0.0, fade)
    chunk = int(0.1 * RATE)
    out = np.concatenate([ramp.apply(np.ones(chunk, np.float32)) for _ in range(6)])
    assert out[0] == pytest.approx(1.0, abs=1e-4)
    assert np.all(np.diff(out[:fade]) <= 1e-7)
    assert np.all(out[fade - 1 :] == 0.0)  # silent from the end of the fade on
    assert out[fade - 2] > 0.0  # ... and not before: the fade lasts its length
    assert ramp.settled and ramp.gain == 0.0


def test_gain_ramp_resume_mid_fade_starts_where_it_was() -> None:
    ramp = GainRamp(1.0)
    ramp.ramp_to(0.0, 1000)
    first = ramp.apply(np.ones(500, np.float32))
    mid = float(first[-1])
    ramp.ramp_to(1.0, 1000)
    back = ramp.apply(np.ones(1000, np.float32))
    assert abs(float(back[0]) - mid) < 0.01  # no jump when the direction flips
    assert back[-1] == pytest.approx(1.0)
    assert ramp.gain == 1.0


def test_normalise_hits_target_and_respects_peak() -> None:
    x = sine(440.0, 1.0, amp=0.01)
    y = normalise(x, -20.0)
    assert rms_dbfs(y) == pytest.approx(-20.0, abs=0.05)
    # a spiky signal cannot reach the target without clipping: the peak wins
    spiky = np.zeros(RATE, np.float32)
    spiky[::4800] = 0.5
    z = normalise(spiky, -6.0)
    assert float(np.max(np.abs(z))) <= 0.89 + 1e-6


def test_normalise_keeps_digital_silence() -> None:
    assert np.all(normalise(np.zeros(100, np.float32), -20.0) == 0.0)


def test_float_to_int16_clips_and_rounds() -> None:
    pcm = float_to_int16(np.array([0.0, 1.0, -1.0, 2.0, 0.5], dtype=np.float32))
    assert pcm.tolist() == [0, 32767, -32767, 32767, 16384]
