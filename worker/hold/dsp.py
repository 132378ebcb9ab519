"""Pure DSP for hold audio: level, loop seam and fades.

Everything here works on float32 mono numpy arrays at one sample rate and
imports nothing from livekit, so it is tested offline with plain arrays.

Fade math (equal-power): a gain g(t) = cos(pi/2 * t/T) for t in [0, T] falls
from 1 to 0 while g^2 + sin^2 = 1, so a cross-fade between two uncorrelated
signals (music end vs. music start) keeps its power constant. At t = T/2 the
gain is -3 dB, not -6 dB as with a linear ramp, which is why a music seam or a
duck does not dip audibly in the middle.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ..media.levels import FLOOR_DBFS

Audio = npt.NDArray[np.float32]

# Leave headroom below full scale after normalising: the carrier leg is
# G.711 (8-bit companded), where a clipped peak is a loud click.
PEAK_CEILING = 0.89  # about -1 dBFS


def dbfs_to_amplitude(dbfs: float) -> float:
    return float(10.0 ** (dbfs / 20.0))


def rms_dbfs(samples: npt.NDArray[np.floating]) -> float:
    """RMS level in dBFS (a full-scale sine reads -3.01 dBFS)."""
    if samples.size == 0:
        return FLOOR_DBFS
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms <= 0.0:
        return FLOOR_DBFS
    return max(20.0 * math.log10(rms), FLOOR_DBFS)


def normalise(samples: Audio, target_dbfs: float) -> Audio:
    """Scale to an RMS of `target_dbfs`, never letting the peak pass PEAK_CEILING.

    Digital silence stays silence (there is no level to normalise).
    """
    level = rms_dbfs(samples)
    if level <= FLOOR_DBFS:
        return samples.astype(np.float32, copy=True)
    gain = dbfs_to_amplitude(target_dbfs - level)
    peak = float(np.max(np.abs(samples)))
    if peak * gain > PEAK_CEILING:
        gain = PEAK_CEILING / peak
    return (samples * np.float32(gain)).astype(np.float32)


def equal_power_out(n: int) -> Audio:
    """Gains falling from 1 to 0 over n samples: cos(pi/2 * t), t in [0, 1).

    The last sample is the one just before 0, so a fade-out of n samples
    followed by silence has no step.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    t = np.arange(1, n + 1, dtype=np.float64) / n
    g = np.cos(0.5 * math.pi * t).astype(np.float32)
    g[-1] = 0.0  # exactly silent, not cos(pi/2) = 6e-17
    return g


def equal_power_in(n: int) -> Audio:
    """Gains rising from 0 to 1 over n samples: sin(pi/2 * t)."""
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    t = np.arange(1, n + 1, dtype=np.float64) / n
    return np.sin(0.5 * math.pi * t).astype(np.float32)


def make_seamless_loop(samples: Audio, crossfade: int) -> Audio:
    """Return a buffer that can be played end-to-start without a click.

    The last `crossfade` samples are folded over the first ones with an
    equal-power cross-fade, and the buffer is shortened by that much:

        out[:L]   = x[:L] * in(L) + x[N-L:] * out(L)
        out[L:]   = x[L:N-L]

    At the seam out[-1] = x[N-L-1] is followed by out[0], which is almost
    x[N-L]: the natural continuation. At the end of the fold out[L-1] is
    almost x[L-1] and is followed by x[L]: natural again.
    """
    n = samples.shape[0]
    crossfade = min(crossfade, n // 2)
    if crossfade <= 0:
        return samples.astype(np.float32, copy=True)
    head = samples[:crossfade]
    tail = samples[n - crossfade :]
    out = samples[: n - crossfade].astype(np.float32, copy=True)
    # out[:L] ramps from the tail (gain 1) to the head (gain 1): use gains
    # that start at exactly 1 for the tail and reach exactly 1 for the head.
    t = np.arange(crossfade, dtype=np.float64) / max(crossfade - 1, 1)
    fade_in = np.sin(0.5 * math.pi * t).astype(np.float32)
    fade_out = np.cos(0.5 * math.pi * t).astype(np.float32)
    out[:crossfade] = head * fade_in + tail * fade_out
    return out


class GainRamp:
    """A gain that moves along an equal-power curve over a number of samples.

    `apply(chunk)` multiplies the chunk in place by the current gain curve
    and advances it. Used for the handoff fade (1 -> 0) and for resuming hold
    audio (0 -> 1) if the agent mutes again during the fade. `rewind(n)` steps
    the curve back with the program when queued audio is dropped, so a new
    ramp starts from the gain the caller is hearing, not from the gain of the
    last sample rendered (which may be a whole chunk further along).
    """

    def __init__(self, gain: float = 1.0) -> None:
        self._start = float(gain)
        self._target = float(gain)
        self._curve: Audio = np.zeros(0, dtype=np.float32)
        self._pos = 0  # samples rendered since the ramp started

    @property
    def gain(self) -> float:
        """The gain of the next sample to render."""
        if self._pos <= 0 or self._curve.shape[0] == 0:
            return self._start if self._pos <= 0 else self._target
        if self._pos >= self._curve.shape[0]:
            return self._target
        return float(self._curve[self._pos - 1])

    @property
    def target(self) -> float:
        return self._target

    @property
    def settled(self) -> bool:
        return bool(self._pos >= self._curve.shape[0])

    def ramp_to(self, target: float, samples: int) -> None:
        """Start moving from the current gain to `target` over `samples` samples."""
        start = self.gain
        self._start = start
        self._target = float(target)
        self._pos = 0
        if samples <= 0 or start == self._target:
            self._start = self._target
            self._curve = np.zeros(0, dtype=np.float32)
            return
        # Map the equal-power shape onto [start, target]: falling uses cos,
        # rising uses sin. The length is scaled by the distance to go, so the
        # steepest per-sample step never exceeds that of a full 0 <-> 1 ramp
        # of `samples` (no click when a fade turns around half way).
        n = max(1, round(samples * abs(self._target - start)))
        if self._target < start:
            shape = equal_power_out(n)  # 1 -> 0
            self._curve = (self._target + (start - self._target) * shape).astype(np.float32)
        else:
            shape = equal_power_in(n)  # 0 -> 1
            self._curve = (start + (self._target - start) * shape).astype(np.float32)

    def rewind(self, n: int) -> None:
        """Step back n samples (never before the start of the current ramp)."""
        self._pos = max(0, self._pos - n)

    def apply(self, chunk: Audio) -> Audio:
        n = chunk.shape[0]
        size = self._curve.shape[0]
        k = max(0, min(n, size - self._pos))
        if k:
            chunk[:k] *= self._curve[self._pos : self._pos + k]
        if k < n:
            if self._target != 1.0:
                chunk[k:] *= np.float32(self._target)
        self._pos += n
        return chunk


def float_to_int16(samples: Audio) -> npt.NDArray[np.int16]:
    """Convert [-1, 1] float to int16 PCM with rounding and clipping."""
    scaled = np.clip(samples, -1.0, 1.0) * 32767.0
    out: npt.NDArray[np.int16] = np.rint(scaled).astype(np.int16)
    return out
