"""MediaMonitor: watches the caller's audio both ways and feeds the detector.

Inbound: the caller's (SIP participant's) audio track, twice a second:
WebRTC inbound-rtp statistics from `track.get_stats()` and the levels of the
decoded audio, read through an rtc.AudioStream at 8 kHz (the caller's own
rate: G.711) in 200 ms frames, 5 events a second per call.
Outbound: whether anyone (before the agent joins: the SIP participant, i.e.
livekit-sip) has subscribed to our hold track.

Thin by design: the decisions are in detector.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from livekit import rtc

from .detector import MediaSample, OneWayDetector, Thresholds, Verdict
from .levels import LevelWindow

logger = logging.getLogger("hold-worker.media")

POLL_S = 0.5
FRAME_MS = 200
RATE = 8000


@dataclass
class InboundStats:
    packets_received: int = 0
    packets_lost: int = 0
    jitter: float = 0.0
    concealed_samples: int = 0
    total_samples_received: int = 0
    audio_level: float = 0.0


def inbound_stats(stats: list[rtc.stats.RtcStats]) -> InboundStats | None:
    for s in stats:
        if s.HasField("inbound_rtp"):
            r = s.inbound_rtp
            return InboundStats(
                packets_received=int(r.received.packets_received),
                packets_lost=int(r.received.packets_lost),
                jitter=float(r.received.jitter),
                concealed_samples=int(r.inbound.concealed_samples),
                total_samples_received=int(r.inbound.total_samples_received),
                audio_level=float(r.inbound.audio_level),
            )
    return None


class MediaMonitor:
    def __init__(
        self,
        room: rtc.Room,
        caller_identity: str,
        *,
        joined_at: float,
        thresholds: Thresholds,
        clock: Callable[[], float],
        on_verdict: Callable[[Verdict, InboundStats | None, LevelWindow], None],
    ) -> None:
        self.room = room
        self.caller_identity = caller_identity
        self.clock = clock
        self.detector = OneWayDetector(joined_at=joined_at, thresholds=thresholds)
        self._on_verdict = on_verdict
        self._window = LevelWindow()
        self._track: rtc.RemoteAudioTrack | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self.outbound_subscribed = False
        self.last_stats: InboundStats | None = None

    def start(self) -> None:
        self.room.on("track_subscribed", self._on_track_subscribed)
        self.room.on("local_track_subscribed", self._on_local_track_subscribed)
        caller = self.room.remote_participants.get(self.caller_identity)
        if caller is not None:
            for pub in caller.track_publications.values():
                if isinstance(pub.track, rtc.RemoteAudioTrack):
                    self._watch(pub.track)
        self._poll_task = asyncio.create_task(self._poll(), name="media-poll")

    def _on_track_subscribed(
        self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        if p.identity == self.caller_identity and isinstance(track, rtc.RemoteAudioTrack):
            self._watch(track)

    def _on_local_track_subscribed(self, _track: rtc.Track) -> None:
        self.outbound_subscribed = True

    def _watch(self, track: rtc.RemoteAudioTrack) -> None:
        if self._track is not None and self._track.sid == track.sid:
            return
        self._track = track
        if self._stream_task is not None:
            self._stream_task.cancel()
        self._stream_task = asyncio.create_task(self._read(track), name="media-levels")

    async def _read(self, track: rtc.RemoteAudioTrack) -> None:
        stream = rtc.AudioStream.from_track(
            track=track, sample_rate=RATE, num_channels=1, frame_size_ms=FRAME_MS
        )
        try:
            async for ev in stream:
                self._window.add(np.frombuffer(ev.frame.data, dtype=np.int16))
        finally:
            await stream.aclose()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            stats: InboundStats | None = None
            if self._track is not None:
                try:
                    stats = inbound_stats(await self._track.get_stats())
                except Exception as e:  # stats are best effort; the detector copes with None
                    logger.debug(f"get_stats failed: {e}")
            self.last_stats = stats
            window, self._window = self._window, LevelWindow()
            sample = MediaSample(
                packets_received=None if stats is None else stats.packets_received,
                audio_frames=window.frames,
                peak=window.peak,
                outbound_subscribed=self.outbound_subscribed,
            )
            verdict = self.detector.update(sample, self.clock())
            if verdict is not None:
                self._on_verdict(verdict, stats, window)

    async def aclose(self) -> None:
        self.room.off("track_subscribed", self._on_track_subscribed)
        self.room.off("local_track_subscribed", self._on_local_track_subscribed)
        for task in (self._poll_task, self._stream_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
