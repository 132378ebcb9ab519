"""HoldPlayer with real livekit.rtc objects and no server.

AudioSource -> LocalAudioTrack -> AudioStream runs offline: the frames the
stream yields are what a subscriber (livekit-sip) would receive.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc

from worker.hold.audio import SAMPLE_RATE, load_hold_audio
from worker.hold.player import HoldPlayer

REPO = Path(__file__).resolve().parents[2]
FRAME_MS = 10


class Tap:
    """Reads a local track's audio with arrival times."""

    def __init__(self, track: rtc.LocalAudioTrack) -> None:
        self.stream = rtc.AudioStream.from_track(
            track=track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=FRAME_MS
        )
        self.frames: list[tuple[float, np.ndarray]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for ev in self.stream:
            pcm = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float32) / 32768.0
            self.frames.append((time.monotonic(), pcm))

    async def aclose(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.stream.aclose()

    def audio(self) -> np.ndarray:
        return np.concatenate([f for _, f in self.frames])


@pytest.fixture
def hold():
    return load_hold_audio(REPO / "assets" / "hold-default.flac", level_dbfs=-20.0, max_seconds=60)


def best_alignment(received: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """Offset into the (looped) reference where `received` fits best, and the
    normalised correlation there (1.0 = identical up to gain)."""
    n = received.shape[0]
    ref = np.concatenate([reference, reference[:n]])
    size = 1 << int(np.ceil(np.log2(ref.shape[0] + n)))
    corr = np.fft.irfft(np.fft.rfft(ref, size) * np.conj(np.fft.rfft(received, size)), size)
    corr = corr[: reference.shape[0]]
    # normalise by each window's energy, or loud passages win over good matches
    energy = np.cumsum(np.concatenate([[0.0], ref.astype(np.float64) ** 2]))
    win = np.sqrt(energy[n : n + reference.shape[0]] - energy[: reference.shape[0]])
    score = corr / (win * np.linalg.norm(received) + 1e-12)
    off = int(np.argmax(score))
    return off, float(score[off])


async def test_frames_carry_the_hold_audio_without_gaps(hold) -> None:
    player = HoldPlayer(hold, chunk_ms=100)
    tap = Tap(player.track)
    player.start()
    await asyncio.sleep(1.5)
    await tap.aclose()
    await player.aclose()

    audio = tap.audio()
    nonzero = np.flatnonzero(np.abs(audio) > 1e-4)
    start = nonzero[0]
    body = audio[start : start + SAMPLE_RATE]  # one second from the first sound
    _off, score = best_alignment(body, hold.samples)
    print(f"\nfirst audio after {start / SAMPLE_RATE * 1000:.0f} ms; correlation {score:.4f}")
    assert score > 0.99, "the stream must carry the hold file itself"
    # no dropouts: no 10 ms frame of exact silence once audio has started
    frames = [f for _, f in tap.frames]
    first = next(i for i, f in enumerate(frames) if np.any(np.abs(f) > 1e-4))
    silent = [i for i, f in enumerate(frames[first:-1]) if not np.any(f)]
    assert silent == []


@pytest.mark.parametrize("chunk_ms", [20, 100, 500])
async def test_duck_reaches_silence_within_fade_plus_one_chunk(hold, chunk_ms: int) -> None:
    fade_ms = 400
    player = HoldPlayer(hold, chunk_ms=chunk_ms)
    tap = Tap(player.track)
    player.start()
    await asyncio.sleep(1.0)
    t_fade = time.monotonic()
    await player.fade_out(fade_ms)
    t_returned = time.monotonic()
    await asyncio.sleep(0.3)
    await tap.aclose()
    await player.aclose()

    last_sound = max(t for t, f in tap.frames if np.max(np.abs(f)) > 1e-4)
    silence_after_ms = (last_sound - t_fade) * 1000
    bound = fade_ms + chunk_ms
    print(
        f"\nchunk {chunk_ms} ms: last hold audio {silence_after_ms:.0f} ms after the duck "
        f"(bound {bound} ms); fade_out returned after {(t_returned - t_fade) * 1000:.0f} ms"
    )
    assert silence_after_ms <= bound
    # and the fade really is a fade: sound continues for most of it
    assert silence_after_ms >= fade_ms * 0.75
    after = [f for t, f in tap.frames if t > last_sound]
    assert after and all(not np.any(f) for f in after)


async def test_resume_after_partial_fade_brings_audio_back(hold) -> None:
    player = HoldPlayer(hold, chunk_ms=100)
    tap = Tap(player.track)
    player.start()
    await asyncio.sleep(0.6)
    fade = asyncio.create_task(player.fade_out(400))
    await asyncio.sleep(0.15)
    fade.cancel()
    await asyncio.gather(fade, return_exceptions=True)
    await player.resume(400)
    t_resumed = time.monotonic()
    await asyncio.sleep(1.0)
    await tap.aclose()
    await player.aclose()
    late = np.concatenate([f for t, f in tap.frames if t > t_resumed + 0.6])
    level = float(np.sqrt(np.mean(late**2)))
    full = float(np.sqrt(np.mean(hold.samples**2)))
    print(f"\nlevel after resume {20 * np.log10(level):.1f} dBFS vs file {20 * np.log10(full):.1f}")
    assert level == pytest.approx(full, rel=0.35)
