"""What a held caller hears, as a pure function of the sample clock.

HoldProgram renders the music loop, switches it to another loop with an
equal-power cross-fade (a store's own audio replacing the default once the
store is known), and plays an announcement every N seconds over the music,
with the music ducked under it and brought back along equal-power ramps.

Everything is a function of one sample counter `t`, so `rewind(n)` (used by
the player when it drops queued audio to start a fade now) re-renders the
exact same samples, announcements and switches included. Pure numpy; no
livekit import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .dsp import Audio, dbfs_to_amplitude


@dataclass(frozen=True)
class Announcement:
    samples: Audio  # played once per occurrence, not looped
    every: int  # samples from one start to the next
    first: int  # samples from the program's start to the first one
    duck_gain: float  # music gain under the announcement
    ramp: int  # samples of the duck's ramp down (before) and up (after)

    @classmethod
    def make(
        cls,
        samples: Audio,
        rate: int,
        *,
        every_s: float,
        first_s: float | None = None,
        duck_db: float = -14.0,
        ramp_ms: int = 300,
    ) -> Announcement:
        ramp = rate * ramp_ms // 1000
        every = max(int(every_s * rate), samples.shape[0] + 2 * ramp + 1)
        first = int((every_s if first_s is None else first_s) * rate)
        return cls(samples, every, max(first, ramp), dbfs_to_amplitude(duck_db), ramp)


@dataclass(frozen=True)
class _Music:
    loop: Audio
    since: int  # program sample at which this loop takes over (its position 0)


class HoldProgram:
    def __init__(self, music: Audio, *, crossfade: int = 0) -> None:
        self.t = 0
        self._music: list[_Music] = [_Music(music, 0)]
        self._crossfade = crossfade
        self._ann: Announcement | None = None
        self._ann_since = 0

    # -- changes, effective from the current sample ------------------------

    def switch_music(self, loop: Audio, crossfade: int | None = None) -> None:
        """From sample t on, cross-fade from the current loop to `loop` (from its start)."""
        if crossfade is not None:
            self._crossfade = crossfade
        # Drop switches that a rewind has put in the future: they never played.
        self._music = [m for m in self._music if m.since < self.t] or self._music[:1]
        self._music.append(_Music(loop, self.t))
        self._music = self._music[-2:]  # a cross-fade needs the previous loop only

    def set_announcement(self, ann: Announcement | None) -> None:
        """Announcements counted from sample t (the first `ann.first` samples from now)."""
        self._ann = ann
        self._ann_since = self.t

    @property
    def music(self) -> Audio:
        return self._music[-1].loop

    # -- rendering ------------------------------------------------------------

    def rewind(self, n: int) -> None:
        self.t = max(0, self.t - n)

    def read(self, n: int) -> Audio:
        t = np.arange(self.t, self.t + n, dtype=np.int64)
        out = self._render_music(t)
        if self._ann is not None:
            self._mix_announcement(out, t, self._ann)
        self.t += n
        return out

    def _render_music(self, t: np.ndarray) -> Audio:
        cur = self._music[-1]
        out = self._loop_at(cur, t)
        if len(self._music) == 1 or self._crossfade <= 0:
            if len(self._music) > 1:
                before = t < cur.since
                if before.any():
                    out[before] = self._loop_at(self._music[-2], t[before])
            return out
        prev = self._music[-2]
        x = (t - cur.since).astype(np.float64) / self._crossfade  # <0 before, >=1 after
        fading = x < 1.0  # each sample is computed the same whatever the chunking
        if not fading.any():
            return out
        xs, ts = x[fading], t[fading]
        old = self._loop_at(prev, ts)
        w = np.clip(xs, 0.0, 1.0)
        g_in = np.sin(0.5 * math.pi * w).astype(np.float32)
        g_out = np.cos(0.5 * math.pi * w).astype(np.float32)
        new = np.where(ts >= cur.since, out[fading], 0.0).astype(np.float32)
        out[fading] = old * g_out + new * g_in
        return out

    @staticmethod
    def _loop_at(m: _Music, t: np.ndarray) -> Audio:
        size = m.loop.shape[0]
        start = int(t[0] - m.since) % size if t.shape[0] else 0
        if t.shape[0] and start + t.shape[0] <= size and int(t[-1] - t[0]) == t.shape[0] - 1:
            # the usual chunk: one contiguous run of the loop, a plain copy,
            # much cheaper than the gather below (figures in BENCHMARKS.md)
            return m.loop[start : start + t.shape[0]].copy()
        out: Audio = np.asarray(m.loop[(t - m.since) % size], dtype=np.float32)  # copies
        return out

    def _mix_announcement(self, out: Audio, t: np.ndarray, a: Announcement) -> None:
        length = a.samples.shape[0]
        rel = t - self._ann_since - a.first  # sample within the schedule
        # k-th occurrence starts at rel = k * every; the duck spans
        # [start - ramp, start + length + ramp).
        k = np.floor_divide(rel + a.ramp, a.every)
        k = np.maximum(k, 0)
        pos = rel - k * a.every  # position relative to the k-th start
        # duck envelope: 1 -> duck over [-ramp, 0), duck over [0, length),
        # duck -> 1 over [length, length + ramp), 1 elsewhere
        env = np.ones(t.shape[0], dtype=np.float64)
        if a.ramp > 0:
            down = (pos >= -a.ramp) & (pos < 0)
            env[down] = _ramp(1.0, a.duck_gain, (pos[down] + a.ramp) / a.ramp)
            up = (pos >= length) & (pos < length + a.ramp)
            env[up] = _ramp(a.duck_gain, 1.0, (pos[up] - length) / a.ramp)
        inside = (pos >= 0) & (pos < length)
        env[inside] = a.duck_gain
        out *= env.astype(np.float32)
        if inside.any():
            out[inside] += a.samples[pos[inside]]
        np.clip(out, -1.0, 1.0, out=out)


def _ramp(start: float, end: float, x: np.ndarray) -> np.ndarray:
    """Equal-power move from start to end as x goes 0 -> 1."""
    if end < start:
        return end + (start - end) * np.cos(0.5 * math.pi * x)
    return start + (end - start) * np.sin(0.5 * math.pi * x)
