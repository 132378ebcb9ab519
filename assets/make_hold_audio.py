"""Make the project's default hold audio: assets/hold-default.flac.

Synthesised here with numpy (no samples, no third-party recordings), so the
file is the project's own work and carries the project's licence. A calm
I-vi-IV-V progression in C major: a soft pad plus a plucked arpeggio, 16 s,
48 kHz mono, 16-bit FLAC. Every note sits between 260 Hz and 1.1 kHz, inside
the 300-3400 Hz G.711 telephone band (the pad's fundamentals just under it
still come through as harmonics).

Run: python assets/make_hold_audio.py  (deterministic: same bytes each time)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 48_000
BAR_S = 4.0
# (root-position triads, MIDI note numbers) for C, Am, F, G
CHORDS = [(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)]


def midi_hz(n: int) -> float:
    return 440.0 * 2.0 ** ((n - 69) / 12.0)


def tone(freq: float, seconds: float, harmonics: tuple[float, ...]) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    out = np.zeros_like(t)
    for k, amp in enumerate(harmonics, start=1):
        out += amp * np.sin(2 * np.pi * freq * k * t)
    return out


def make() -> np.ndarray:
    total = int(BAR_S * len(CHORDS) * RATE)
    out = np.zeros(total)
    bar = int(BAR_S * RATE)
    for i, chord in enumerate(CHORDS):
        start = i * bar
        # Pad: the triad an octave down, slow attack and release that overlap
        # the next bar so chord changes glide; the last bar's release wraps to
        # the start, which keeps the loop seam smooth too.
        pad_len = bar + RATE // 2
        env = np.ones(pad_len)
        a = RATE // 2
        env[:a] = np.sin(np.linspace(0, np.pi / 2, a)) ** 2
        env[-a:] = np.cos(np.linspace(0, np.pi / 2, a)) ** 2
        for n in chord:
            seg = 0.10 * tone(midi_hz(n), pad_len / RATE, (1.0, 0.35, 0.12)) * env
            idx = (start + np.arange(pad_len)) % total
            out[idx] += seg
        # Arpeggio: eight plucked notes per bar, up an octave.
        step = bar // 8
        pattern = [0, 1, 2, 1, 0, 2, 1, 2]
        for j, which in enumerate(pattern):
            n = chord[which] + 12
            length = int(0.9 * RATE)
            pluck = tone(midi_hz(n), length / RATE, (1.0, 0.25, 0.08))
            env = np.exp(-np.arange(length) / (0.25 * RATE))
            env[:240] *= np.linspace(0, 1, 240)  # 5 ms attack: no click
            idx = (start + j * step + np.arange(length)) % total
            out[idx] += 0.16 * pluck * env
    out /= np.max(np.abs(out))
    return (0.7 * out).astype(np.float32)


def main() -> None:
    dest = Path(__file__).resolve().parent / "hold-default.flac"
    sf.write(str(dest), make(), RATE, subtype="PCM_16", format="FLAC")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
