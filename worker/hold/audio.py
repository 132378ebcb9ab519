"""Decode hold audio once per process per file into a shared read-only loop.

Any format libsndfile reads (WAV, FLAC, OGG/Vorbis/Opus, MP3), any sample
rate, channel count or bit depth becomes 48 kHz mono float32, normalised and
with a click-free loop seam. The result is cached per (path, mtime, size,
level) so every call in a process shares one copy; the array is marked
read-only so no call can change it under another. The cache keeps one version
per file (a new version replaces the old) and at most CACHE_MAX files, least
recently used dropped first (the catalog keeps its own references to the
audio it serves).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .dsp import Audio, make_seamless_loop, normalise, rms_dbfs

SAMPLE_RATE = 48_000
SEAM_CROSSFADE_S = 0.05
_BLOCK_FRAMES = 65_536


# Audible content: what varies within 20 ms blocks beyond a straight line
# (roughly, above 50 Hz: a 20 Hz tone reads 13 dB down, 2 Hz 52 dB down;
# telephone audio starts at 300 Hz). A file whose content there is at or
# below -60 dBFS, or more than 30 dB below its DC-free level (a sub-audible
# rumble that normalise() would bring to the target while the audible part
# stays 30 dB under it), plays as silence.
AUDIBLE_BAND_HZ = 50.0
AUDIBLE_FLOOR_DBFS = -60.0
SUBAUDIBLE_MARGIN_DB = 30.0


def audible_dbfs(samples: np.ndarray, rate: int) -> float:
    """Level in dBFS of the content above about AUDIBLE_BAND_HZ: the mean power
    left in each 1/AUDIBLE_BAND_HZ block once the block's own straight line
    (its offset and slope: DC and slow drift) is taken out."""
    block = max(3, int(rate / AUDIBLE_BAND_HZ))
    n = samples.shape[0] // block * block
    if n == 0:
        return rms_dbfs(samples - samples.mean(dtype=np.float64))
    ramp = np.arange(block, dtype=np.float64) - (block - 1) / 2.0
    ramp_var = float(np.mean(ramp * ramp))
    power = 0.0
    step = block * 4096  # bounded float64 working memory on long files
    for start in range(0, n, step):
        chunk = samples[start : min(n, start + step)].reshape(-1, block).astype(np.float64)
        chunk -= chunk.mean(axis=1, keepdims=True)
        cov = chunk @ ramp / block  # per block: covariance with the ramp
        residual = np.mean(chunk * chunk, axis=1) - cov * cov / ramp_var
        power += float(np.maximum(residual, 0.0).sum())
    ms = power / (n // block)
    return rms_dbfs(np.array([np.sqrt(ms)]))


class HoldAudioError(ValueError):
    """A hold file that cannot be used; the message is one line for the operator."""


@dataclass(frozen=True)
class HoldAudio:
    path: str
    samples: Audio  # 48 kHz mono float32, read-only, loops seamlessly
    source_rate: int
    source_channels: int
    source_format: str
    level_dbfs: float

    @property
    def seconds(self) -> float:
        return float(self.samples.shape[0] / SAMPLE_RATE)


CACHE_MAX = 32
_cache: OrderedDict[tuple[str, int, int, float, float, bool], HoldAudio] = OrderedDict()
_cache_lock = threading.Lock()


def load_hold_audio(
    path: str | Path, *, level_dbfs: float, max_seconds: float, loop: bool = True
) -> HoldAudio:
    """Decode (or return the cached decode of) a hold file.

    `loop=False` (an announcement, played once per occurrence) skips the
    loop-seam fold. Thread-safe: under the thread executor several calls may
    ask at once; the lock makes the first decode and the rest wait for it.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise HoldAudioError(f"hold audio file not found: {p}") from None
    except OSError as e:
        raise HoldAudioError(f"hold audio file unreadable: {p}: {e.strerror}") from None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size, level_dbfs, max_seconds, loop)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is None:
            hit = _decode(p, level_dbfs=level_dbfs, max_seconds=max_seconds, loop=loop)
            for old in [k for k in _cache if k[0] == key[0] and k[3:] == key[3:]]:
                del _cache[old]  # an older version of the same file
            _cache[key] = hit
            while len(_cache) > CACHE_MAX:
                _cache.popitem(last=False)
        _cache.move_to_end(key)
        return hit


def _decode(p: Path, *, level_dbfs: float, max_seconds: float, loop: bool) -> HoldAudio:
    if not p.is_file():
        raise HoldAudioError(f"hold audio is not a file: {p}")
    try:
        f = sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise HoldAudioError(f"hold audio is not a readable audio file: {p}: {e}") from None
    except PermissionError:
        raise HoldAudioError(f"hold audio file unreadable (permission denied): {p}") from None
    with f:
        rate, channels, fmt = f.samplerate, f.channels, f.format
        max_frames = int(max_seconds * rate)
        # Refuse before decoding when the header says it is too long; for
        # formats whose length is only an estimate (MP3), stop while reading.
        if f.frames > max_frames and f.frames < 2**62:
            raise HoldAudioError(
                f"hold audio too long: {p}: {f.frames / rate:.0f} s, limit is {max_seconds:.0f} s "
                "(HOLD_MAX_AUDIO_SECONDS)"
            )
        blocks: list[np.ndarray] = []
        total = 0
        try:
            while True:
                block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                total += block.shape[0]
                if total > max_frames:
                    raise HoldAudioError(
                        f"hold audio too long: {p}: more than {max_seconds:.0f} s "
                        "(HOLD_MAX_AUDIO_SECONDS)"
                    )
                # Down-mix now, block by block, so a stereo file never
                # costs twice its mono size in memory.
                blocks.append(block.mean(axis=1, dtype=np.float32))
        except sf.LibsndfileError as e:
            raise HoldAudioError(f"hold audio is corrupt: {p}: {e}") from None
    if total == 0:
        raise HoldAudioError(f"hold audio has no samples: {p}")
    mono = np.concatenate(blocks).astype(np.float32, copy=False)
    if not np.all(np.isfinite(mono)):
        raise HoldAudioError(f"hold audio contains invalid samples (NaN/Inf): {p}")
    if rms_dbfs(mono) <= -90.0:
        raise HoldAudioError(f"hold audio is silent: {p}")
    # A constant offset (DC) is not sound: the telephone path (Opus, G.711,
    # the handset) drops it, so a file that is DC alone reaches the caller as
    # silence, and DC in a normal file would take a share of the level that
    # normalise() sets. Remove it here, at the source rate (before the
    # resampler, whose filter would ring on a DC step at the file's ends),
    # and refuse a file with nothing audible left.
    mono -= np.float32(mono.mean(dtype=np.float64))
    audible, whole = audible_dbfs(mono, rate), rms_dbfs(mono)
    if audible <= AUDIBLE_FLOOR_DBFS or audible < whole - SUBAUDIBLE_MARGIN_DB:
        raise HoldAudioError(
            f"hold audio has no audible content: {p}: {audible:.0f} dBFS above "
            f"{AUDIBLE_BAND_HZ:.0f} Hz once its constant (DC) offset is removed (the caller "
            "would hear silence); use a file with music or speech in it"
        )
    if rate != SAMPLE_RATE:
        # soxr: band-limited, high quality; the same resampler livekit-sip
        # links. Hand-written interpolation would alias on 8 kHz sources.
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    if mono.shape[0] < int(0.2 * SAMPLE_RATE):
        raise HoldAudioError(f"hold audio too short to loop (under 200 ms): {p}")
    looped = normalise(mono, level_dbfs)
    if loop:
        looped = make_seamless_loop(looped, int(SEAM_CROSSFADE_S * SAMPLE_RATE))
    looped.setflags(write=False)
    return HoldAudio(
        path=str(p),
        samples=looped,
        source_rate=rate,
        source_channels=channels,
        source_format=fmt,
        level_dbfs=rms_dbfs(looped),
    )


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
