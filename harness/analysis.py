"""Recordings and signals: what a caller or an agent heard, from the samples.

Pure numpy + soundfile, no LiveKit; used by the e2e tests, the benchmark
(bench/analysis.py) and the demo.

- ``hold_span``: where the hold audio is in a recording (normalised
  correlation against the hold asset, window by window); ``notch`` takes
  narrow bands (an agent's tone) out first;
- ``CallerAudio``: a SIP caller's result and recording, asked "did they hear
  tone X between these two wall-clock times";

- ``write_tone_wav``: a known caller signal (sum of sines, 16-bit PCM mono).
- ``read_wav``: samples as float64 in [-1, 1] plus the sample rate.
- ``tone_presence``: per-window share of the signal energy at one frequency
  (Goertzel), 0..1; about 1/len(freqs) for a window full of a multi-tone
  made with ``write_tone_wav`` and ~0 for silence or other content.
- ``first_window_where``: start time of the first True window.
- ``find_prompt``: where a spoken prompt (a file of worker/prompts.py) is in
  a recording (sliding normalised correlation), and ``best_prompt`` which of
  a few prompts follows a given point (the number after "caller number").
- ``write_silence_wav``: exact digital zeros (a muted trunk).
- ``write_line_noise_wav``: quiet white noise (a silent but live caller);
  at the default -60 dBFS RMS nearly every sample survives G.711 as non-zero.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

Samples = npt.NDArray[np.floating[Any]]
WINDOW_S = 0.1
HOLD_CORR = 0.5  # normalised correlation that counts as "hold audio is there"
HOLD_ASSET = Path(__file__).resolve().parents[1] / "assets" / "hold-default.flac"


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


def hold_reference_8k(path: Path = HOLD_ASSET) -> npt.NDArray[np.float32]:
    """A hold file as the caller should hear it: normalised as the worker
    does (-20 dBFS), at the caller's 8 kHz."""
    import soxr

    from worker.hold.audio import load_hold_audio

    audio = load_hold_audio(path, level_dbfs=-20.0, max_seconds=600)
    return np.asarray(soxr.resample(audio.samples, 48_000, 8_000), dtype=np.float32)


def notch(x: np.ndarray, rate: int, freqs: list[float], width_hz: float = 40.0) -> np.ndarray:
    """Remove narrow bands around `freqs` (the agent's tone) so the hold
    audio can be found underneath it while both play during the fade."""
    spec = np.fft.rfft(x.astype(np.float64))
    hz = np.fft.rfftfreq(x.shape[0], 1.0 / rate)
    for f in freqs:
        spec[np.abs(hz - f) <= width_hz] = 0.0
    return np.fft.irfft(spec, x.shape[0]).astype(np.float32)


def _window_scores(rec: np.ndarray, ref: np.ndarray, starts: list[int], w: int) -> np.ndarray:
    """Best normalised correlation (1.0 = same waveform up to gain) of the
    windows rec[s:s+w] against the looped reference."""
    ext = np.concatenate([ref, ref[:w]]).astype(np.float64)
    size = 1 << int(np.ceil(np.log2(ext.shape[0] + w)))
    ref_f = np.fft.rfft(ext, size)
    energy = np.cumsum(np.concatenate([[0.0], ext**2]))
    win_norm = np.sqrt(np.maximum(energy[w : w + ref.shape[0]] - energy[: ref.shape[0]], 1e-12))
    out = np.zeros(len(starts))
    for i, s0 in enumerate(starts):
        seg = rec[s0 : s0 + w].astype(np.float64)
        norm = np.linalg.norm(seg)
        if seg.shape[0] < w or norm < 1e-4:  # silence (under about -60 dBFS)
            continue
        corr = np.fft.irfft(ref_f * np.conj(np.fft.rfft(seg, size)), size)[: ref.shape[0]]
        out[i] = float(np.max(corr / (win_norm * norm)))
    return out


def hold_span(rec: np.ndarray, ref: np.ndarray, rate: int) -> tuple[float, float] | None:
    """(onset, end) of the hold audio in the recording, in seconds.

    A coarse pass scores 100 ms windows every 100 ms; a fine pass scores
    windows every 10 ms around the first and the last match.
    Onset: the first sample of the sound that leads into the first matching
    window. End: the centre of the last matching window.
    """
    w, fine = int(WINDOW_S * rate), int(0.01 * rate)
    coarse_starts = list(range(0, rec.shape[0] - w + 1, w))
    coarse = _window_scores(rec, ref, coarse_starts, w)
    hits = np.flatnonzero(coarse >= HOLD_CORR)
    if not hits.size:
        return None
    first_c, last_c = coarse_starts[hits[0]], coarse_starts[hits[-1]]
    around_first = list(range(max(0, first_c - w), first_c + 1, fine))
    s1 = _window_scores(rec, ref, around_first, w)
    first = around_first[int(np.flatnonzero(s1 >= HOLD_CORR)[0])]
    around_last = list(range(last_c, min(rec.shape[0] - w, last_c + w) + 1, fine))
    s2 = _window_scores(rec, ref, around_last, w)
    last = around_last[int(np.flatnonzero(s2 >= HOLD_CORR)[-1])]
    loud = np.flatnonzero(np.abs(rec[first : first + w]) > 0.003)  # about -50 dBFS
    onset = (first + (int(loud[0]) if loud.size else 0)) / rate
    end = (last + w / 2) / rate
    return onset, end


@dataclass
class CallerAudio:
    result: dict[str, Any]
    rec: np.ndarray
    rate: int
    t0: float  # wall time of the recording's first sample

    @classmethod
    def load(cls, result_path: Path) -> CallerAudio:
        """The call's result and recording (an empty recording if never answered)."""
        res = json.loads(result_path.read_text())
        started = res["recording"].get("started")
        if not res.get("answered") or not started or not Path(res["recording"]["path"]).exists():
            return cls(res, np.zeros(0), 8000, 0.0)
        rec, rate = read_wav(res["recording"]["path"])
        return cls(res, rec, rate, float(started["wall"]))

    def share(self, hz: float) -> np.ndarray:
        return tone_presence(self.rec, self.rate, hz, WINDOW_S)

    def heard(self, hz: float, start: float, end: float, min_share: float = 0.3) -> float:
        """Fraction of the windows between two wall times in which tone hz is heard."""
        s = self.share(hz)
        i0 = max(0, int((start - self.t0) / WINDOW_S))
        i1 = min(len(s), int((end - self.t0) / WINDOW_S))
        if i1 <= i0:
            return 0.0
        return float(np.mean(s[i0:i1] >= min_share))

    def first_heard(self, hz: float, after: float, min_share: float = 0.3) -> float | None:
        """Wall time of the first window after `after` with tone hz."""
        s = self.share(hz)
        i0 = max(0, int((after - self.t0) / WINDOW_S))
        idx = np.flatnonzero(s[i0:] >= min_share)
        return None if idx.size == 0 else self.t0 + (i0 + int(idx[0])) * WINDOW_S

    def last_heard(self, hz: float, min_share: float = 0.3) -> float | None:
        idx = np.flatnonzero(self.share(hz) >= min_share)
        return None if idx.size == 0 else self.t0 + int(idx[-1]) * WINDOW_S

    @property
    def ended_at(self) -> float:
        ev = self.result["events"]
        return float((ev.get("disconnected") or ev.get("hangup") or {}).get("wall", 0.0))


PROMPT_CORR = 0.5  # normalised correlation that counts as "this prompt was said"


def sliding_correlation(rec: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Normalised correlation (1.0 = the same waveform up to gain) of the
    template against every position of the recording (FFT, numpy only: scipy
    is not a dependency of the project for this one function)."""
    n, m = rec.shape[0], template.shape[0]
    if n < m or m == 0:
        return np.zeros(0)
    x, t = rec.astype(np.float64), template.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(n + m)))
    corr = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(t, size)), size)[: n - m + 1]
    energy = np.cumsum(np.concatenate([[0.0], x * x]))
    win = np.sqrt(np.maximum(energy[m:] - energy[:-m], 1e-12))
    out = corr / (win * float(np.linalg.norm(t)))
    out[win < 1e-4 * np.sqrt(m)] = 0.0  # silence (under about -80 dBFS)
    return np.asarray(out)


def find_prompt(
    rec: np.ndarray, rate: int, template: np.ndarray, min_corr: float = PROMPT_CORR
) -> list[tuple[float, float]]:
    """(start s, score) of each place the template is said in the recording:
    the best position of each run of scores above `min_corr`, runs at least
    one template length apart."""
    c = sliding_correlation(rec, template)
    hits: list[tuple[float, float]] = []
    m = template.shape[0]
    above = np.flatnonzero(c >= min_corr)
    while above.size:
        start = int(above[0])
        end = min(c.shape[0], start + m)
        best = start + int(np.argmax(c[start:end]))
        hits.append((best / rate, float(c[best])))
        above = above[above >= best + m]
    return hits


def best_prompt(
    rec: np.ndarray, rate: int, templates: dict[str, np.ndarray], start_s: float, span_s: float
) -> tuple[str, float, float]:
    """Which template is said starting within [start_s, start_s + span_s]:
    its key, score and start (s)."""
    best, score, at = "", 0.0, start_s
    a = max(0, int(start_s * rate))
    for key, t in templates.items():
        seg = rec[a : a + int(span_s * rate) + t.shape[0]]
        c = sliding_correlation(seg, t)
        if c.size and float(np.max(c)) > score:
            i = int(np.argmax(c))
            best, score, at = key, float(c[i]), (a + i) / rate
    return best, score, at
