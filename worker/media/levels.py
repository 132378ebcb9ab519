"""Levels of decoded audio frames: RMS and peak in dBFS, exact digital silence.

Pure numpy on int16 PCM, accumulated between two detector samples.
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

    @property
    def rms_dbfs(self) -> float:
        if not self.samples or not self._sum_sq:
            return FLOOR_DBFS
        rms = math.sqrt(self._sum_sq / self.samples) / 32768.0
        return max(20.0 * math.log10(rms), FLOOR_DBFS)

    @property
    def peak_dbfs(self) -> float:
        return max(20.0 * math.log10(self.peak / 32768.0), FLOOR_DBFS) if self.peak else FLOOR_DBFS
