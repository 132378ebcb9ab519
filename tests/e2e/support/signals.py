"""Small, pure signal helpers for the SIP end-to-end tests (numpy + soundfile).

- ``write_tone_wav``: a known caller signal (sum of sines, 16-bit PCM mono).
- ``read_wav``: samples as float64 in [-1, 1] plus the sample rate.
- ``tone_presence``: per-window share of the signal energy at one frequency
  (Goertzel), 0..1; about 1/len(freqs) for a window full of a multi-tone
  made with ``write_tone_wav`` and ~0 for silence or other content.
- ``first_window_where``: start time of the first True window.
- ``write_silence_wav``: exact digital zeros (a muted trunk).
- ``write_line_noise_wav``: quiet white noise (a silent but live caller);
  at the default -60 dBFS RMS nearly every sample survives G.711 as non-zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import soundfile as sf


def write_tone_wav(
    path: str,
    freqs: float | Sequence[float],
    seconds: float,
    rate: int = 8000,
    level_dbfs: float = -12.0,
) -> str:
    """Write a mono 16-bit WAV holding equal-amplitude sines at ``freqs``.

    ``level_dbfs`` is the peak level of the sum.  Returns ``path``.
    """
    fs = [float(freqs)] if isinstance(freqs, (int, float)) else [float(f) for f in freqs]
    if not fs:
        raise ValueError("need at least one frequency")
    n = round(seconds * rate)
    t = np.arange(n) / float(rate)
    x = np.zeros(n)
    for f in fs:
        x += np.sin(2 * np.pi * f * t)
    x *= 10 ** (level_dbfs / 20.0) / len(fs)
    sf.write(path, x, rate, subtype="PCM_16")
    return path


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """Mono float64 samples in [-1, 1] and the sample rate."""
    data, rate = sf.read(path, dtype="float64", always_2d=True)
    return data.mean(axis=1), int(rate)


def _goertzel_power(frames: np.ndarray, rate: int, freq: float) -> np.ndarray:
    """Goertzel power of ``freq`` for each row of ``frames`` (n_win, n)."""
    n = frames.shape[1]
    w = 2 * np.pi * freq / rate
    coeff = 2 * np.cos(w)
    s1 = np.zeros(frames.shape[0])
    s2 = np.zeros(frames.shape[0])
    for k in range(n):
        s0 = frames[:, k] + coeff * s1 - s2
        s2 = s1
        s1 = s0
    power: np.ndarray = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return power


def tone_presence(
    samples: np.ndarray,
    rate: int,
    freq: float,
    window_s: float = 0.1,
    floor_dbfs: float = -50.0,
) -> np.ndarray:
    """Per-window energy at ``freq`` relative to the window's total energy.

    Windows are consecutive and non-overlapping, ``window_s`` long (a trailing
    partial window is dropped).  A window whose RMS is below ``floor_dbfs``
    scores 0 so that near-silence (e.g. PLC noise) never counts as a tone.
    Result values are in 0..1: a pure sine at ``freq`` gives ~1, a sum of
    k equal sines (one at ``freq``) gives ~1/k.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim > 1:
        x = x.mean(axis=1)
    n = round(window_s * rate)
    if n <= 0:
        raise ValueError("window too short")
    n_win = len(x) // n
    if n_win == 0:
        return np.zeros(0)
    frames = x[: n_win * n].reshape(n_win, n)
    total = np.sum(frames * frames, axis=1)  # = sum |X_k|^2 / n (Parseval)
    p = _goertzel_power(frames, rate, freq)  # |X_f|^2
    # a real sine puts its energy in two bins (+f and -f): 2|X_f|^2 / n
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(total > 0, 2.0 * p / (n * total), 0.0)
    rms = np.sqrt(total / n)
    rel[rms < 10 ** (floor_dbfs / 20.0)] = 0.0
    return np.clip(rel, 0.0, 1.0)


def first_window_where(mask: np.ndarray, window_s: float) -> float | None:
    """Start time (s) of the first True window in ``mask``, or None."""
    idx = np.flatnonzero(np.asarray(mask, dtype=bool))
    if idx.size == 0:
        return None
    return float(idx[0]) * window_s


def write_silence_wav(path: str, seconds: float, rate: int = 8000) -> str:
    """Write ``seconds`` of exact zeros (mono 16-bit PCM). Returns ``path``."""
    sf.write(path, np.zeros(round(seconds * rate), dtype=np.int16), rate, subtype="PCM_16")
    return path


def write_line_noise_wav(
    path: str,
    seconds: float,
    level_dbfs: float = -60.0,
    rate: int = 8000,
    seed: int = 1,
) -> str:
    """Write white noise with an RMS of ``level_dbfs`` (mono 16-bit PCM).

    Stands in for the line / room noise of a caller who says nothing. At
    -60 dBFS (RMS ~33 LSB) G.711 mu-law keeps about 95 % of the samples non-zero
    (its finest step is 8 LSB around 0); the all-zero PCMU byte only comes
    from |x| < 4. Returns ``path``.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(round(seconds * rate))
    x *= 10 ** (level_dbfs / 20.0) / float(np.sqrt(np.mean(x * x)))
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
    sf.write(path, pcm, rate, subtype="PCM_16")
    return path
