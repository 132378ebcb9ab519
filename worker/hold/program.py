"""What a held caller hears, as a pure function of the sample clock.

HoldProgram renders the music loop, switches it to another loop with an
equal-power cross-fade (a store's own audio replacing the default once the
store is known), and plays an announcement every N seconds over the music,
with the music ducked under it and brought back along equal-power ramps.
It also plays one-shot announcements (a caller's position in line, composed
for the moment) over the ducked music the same way: one starts as soon as
the music is ducked, unless the periodic announcement or an earlier one-shot
is under way (it follows them); a periodic announcement that would overlap
a one-shot is left out, so two voices never talk at once.

Everything is a function of one sample counter `t`, so `rewind(n)` (used by
the player when it drops queued audio to start a fade now) re-renders the
exact same samples, announcements and switches included. Pure numpy; no
livekit import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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
class OneShot:
    samples: Audio
    start: int  # program sample of its first sample
    duck_gain: float
    ramp: int

    @property
    def begin(self) -> int:  # the duck's ramp down starts
        return self.start - self.ramp

    @property
    def end(self) -> int:  # the music is back at full level
        return self.start + int(self.samples.shape[0]) + self.ramp


ONE_SHOTS_KEPT = 4  # a rewind never reaches further back than the last few


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
        self._once: list[OneShot] = []

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

    def play_once(self, samples: Audio, *, duck_gain: float, ramp: int) -> OneShot:
        """Play `samples` once over the ducked music, from as soon as the duck
        allows: after a periodic announcement or a one-shot under way at t."""
        start = self.t + ramp
        for o in self._once:
            if o.end > self.t:
                start = max(start, o.end + ramp)
        a = self._ann
        if a is not None:
            occ = self._occurrence_start(np.array([self.t], dtype=np.int64), a)[0]
            begin, end = occ - a.ramp, occ + a.samples.shape[0] + a.ramp
            if begin <= self.t < end and not self._overlaps_once(begin, end):
                start = max(start, end + ramp)
        shot = OneShot(samples, start, duck_gain, ramp)
        self._once = [*self._once, shot][-ONE_SHOTS_KEPT:]
        return shot

    def cut_once(self, fade: int) -> int:
        """Stop the one-shots being said or waiting at t (a caller's key cuts
        a prompt): one under way fades out over `fade` samples from t and its
        duck ramps back up after; one not yet begun says nothing, and if its
        duck has begun to ramp down, the duck goes on down and comes back
        along its ramps (dropping it would put the music back up at once, a
        click); one whose duck has not begun is dropped. How many."""
        kept: list[OneShot] = []
        cut = 0
        for o in self._once:
            if o.end <= self.t:
                kept.append(o)
                continue
            cut += 1
            said = self.t - o.start
            if said <= 0:
                if self.t > o.begin:  # the duck is ramping down: nothing said, ramps kept
                    kept.append(replace(o, samples=o.samples[:0]))
                continue
            n = min(int(o.samples.shape[0]), said + fade)
            tail = np.array(o.samples[:n], dtype=np.float32)
            k = n - said
            if k > 0:
                tail[said:] *= np.linspace(1.0, 0.0, k, dtype=np.float32)
            kept.append(replace(o, samples=tail))
        self._once = kept
        return cut

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
        if n:
            for shot in self._once:
                if shot.begin <= int(t[-1]) and shot.end > int(t[0]):
                    self._mix(out, t - shot.start, shot.samples, shot.duck_gain, shot.ramp)
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

    def _occurrence_start(self, t: np.ndarray, a: Announcement) -> np.ndarray:
        """Per sample: the program sample at which the periodic occurrence
        that sample belongs to starts (its duck spans [start - ramp, start +
        length + ramp))."""
        rel = t - self._ann_since - a.first  # sample within the schedule
        k = np.maximum(np.floor_divide(rel + a.ramp, a.every), 0)
        starts: np.ndarray = self._ann_since + a.first + k * a.every
        return starts

    def _overlaps_once(self, begin: int, end: int) -> bool:
        return any(o.begin < end and begin < o.end for o in self._once)

    def _mix_announcement(self, out: Audio, t: np.ndarray, a: Announcement) -> None:
        starts = self._occurrence_start(t, a)
        pos = t - starts  # position relative to the occurrence's start
        if self._once:
            # an occurrence that would overlap a one-shot is left out
            length = a.samples.shape[0]
            keep = np.ones(t.shape[0], dtype=bool)
            for s0 in np.unique(starts):
                if self._overlaps_once(int(s0) - a.ramp, int(s0) + length + a.ramp):
                    keep[starts == s0] = False
            if not keep.all():
                pos = np.where(keep, pos, np.int64(-(a.ramp + 1) - length - a.every))
        self._mix(out, pos, a.samples, a.duck_gain, a.ramp)

    @staticmethod
    def _mix(out: Audio, pos: np.ndarray, samples: Audio, duck_gain: float, ramp: int) -> None:
        """Duck `out` around `samples` placed at pos == 0, and add them: the
        duck spans [-ramp, length + ramp) of pos."""
        length = samples.shape[0]
        # duck envelope: 1 -> duck over [-ramp, 0), duck over [0, length),
        # duck -> 1 over [length, length + ramp), 1 elsewhere
        env = np.ones(pos.shape[0], dtype=np.float64)
        if ramp > 0:
            down = (pos >= -ramp) & (pos < 0)
            env[down] = _ramp(1.0, duck_gain, (pos[down] + ramp) / ramp)
            up = (pos >= length) & (pos < length + ramp)
            env[up] = _ramp(duck_gain, 1.0, (pos[up] - length) / ramp)
        inside = (pos >= 0) & (pos < length)
        env[inside] = duck_gain
        out *= env.astype(np.float32)
        if inside.any():
            out[inside] += samples[pos[inside]]
        np.clip(out, -1.0, 1.0, out=out)


def _ramp(start: float, end: float, x: np.ndarray) -> np.ndarray:
    """Equal-power move from start to end as x goes 0 -> 1."""
    if end < start:
        return end + (start - end) * np.cos(0.5 * math.pi * x)
    return start + (end - start) * np.sin(0.5 * math.pi * x)
