"""Levels of decoded audio frames: RMS and peak in dBFS, exact digital silence.

Pure numpy on int16 PCM, accumulated between two detector samples; or the
same window from WebRTC's cumulative audio-energy counters (`add_energy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FLOOR_DBFS = -120.0


@dataclass
class LevelWindow:
    frames: int = 0
    samples: int = 0
    peak: int = 0
    _sum_sq: float = 0.0

    def add(self, pcm: npt.NDArray[np.int16]) -> None:
        self.frames += 1
        if pcm.size == 0:
            return
        self.samples += int(pcm.size)
        x = pcm.astype(np.int64)  # int32 dot products overflow on loud frames
        peak = int(np.max(np.abs(x)))
        self.peak = max(self.peak, peak)
        if peak:
            self._sum_sq += float(np.dot(x, x))

    def add_energy(self, energy: float, seconds: float, rate: int) -> None:
        """What libwebrtc's counters say of `seconds` of played-out audio.

        `energy` is the sum of (frame level / full scale)^2 x frame seconds,
        where a frame's level is its peak: energy / seconds is the mean
        square of the frames' peaks, and its root, in 16-bit steps, is the
        window's peak as far as the counters can tell (one frame)."""
        if seconds <= 0:
            return
        n = max(1, round(seconds * rate))
        self.frames += 1
        self.samples += n
        mean_sq = max(energy, 0.0) / seconds
        self.peak = max(self.peak, round(math.sqrt(mean_sq) * 32767))
        self._sum_sq += mean_sq * 32768.0 * 32768.0 * n

    @property
    def rms_dbfs(self) -> float:
        if not self.samples or not self._sum_sq:
            return FLOOR_DBFS
        rms = math.sqrt(self._sum_sq / self.samples) / 32768.0
        return max(20.0 * math.log10(rms), FLOOR_DBFS)

    @property
    def peak_dbfs(self) -> float:
        return max(20.0 * math.log10(self.peak / 32768.0), FLOOR_DBFS) if self.peak else FLOOR_DBFS
