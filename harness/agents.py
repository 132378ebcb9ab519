"""Participants of a call room other than the caller and the hold worker.

``room_token`` mints the short-lived, room-scoped token every one of them
(the human agent here, the tests' web-app observers) joins with.

``HumanAgent`` is a real livekit.rtc participant standing in for the store's
human agent: it joins the call's room (with a token of its own, or the one
the desk handed the agent who took the call), records what it hears from the caller
(the SIP participant; ``record=False`` for the benchmark's fifty agents that
only need their own first-audio time), and on request publishes a distinct
tone as its "voice". Times are wall-clock (time.time()) so they line up with
the SIP caller's timestamps in another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import numpy as np
from livekit import api, rtc

RATE = 48_000
FRAME_MS = 100  # 100 ms frames: ten agents in one test process stay cheap


def room_token(key: str, secret: str, room: str, identity: str, ttl_s: int = 600) -> str:
    """Join, publish and subscribe in `room` only, for `ttl_s` (ten minutes)."""
    return (
        api.AccessToken(key, secret)
        .with_identity(identity)
        .with_name(identity)
        .with_ttl(timedelta(seconds=ttl_s))
        .with_grants(
            api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
        )
        .to_jwt()
    )


class HumanAgent:
    def __init__(
        self,
        url: str,
        key: str,
        secret: str,
        room: str,
        identity: str,
        tone_hz: float,
        *,
        record: bool = True,
        token: str | None = None,
    ) -> None:
        """`token`: join with this LiveKit token (e.g. the one the desk's take
        returned, whose identity is the desk's) instead of minting one."""
        self.url, self.room_name, self.identity, self.tone_hz = url, room, identity, tone_hz
        self.record = record
        self._token = token or room_token(key, secret, room, identity)
        self.room = rtc.Room()
        self.heard: list[tuple[float, np.ndarray]] = []  # (wall time, 48 kHz mono)
        self.first_audio_at: float | None = None  # wall time of our first pushed frame
        self._tasks: list[asyncio.Task[None]] = []
        self._source: rtc.AudioSource | None = None
        self._publication: rtc.LocalTrackPublication | None = None

    async def join(self) -> None:
        if not self.record:
            await self.room.connect(self.url, self._token)
            return
        self.room.on("track_subscribed", self._on_track)
        await self.room.connect(self.url, self._token)
        for p in self.room.remote_participants.values():
            for pub in p.track_publications.values():
                if pub.track is not None:
                    self._on_track(pub.track, pub, p)

    def _on_track(
        self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        if (
            p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
            and track.kind == rtc.TrackKind.KIND_AUDIO
        ):
            self._tasks.append(asyncio.create_task(self._record(track)))

    async def _record(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream.from_track(
            track=track, sample_rate=RATE, num_channels=1, frame_size_ms=FRAME_MS
        )
        try:
            async for ev in stream:
                pcm = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float32) / 32768
                self.heard.append((time.time(), pcm))
        finally:
            await stream.aclose()

    async def speak(self, *, muted: bool = False) -> None:
        """Publish the tone as a microphone track (optionally muted at first)."""
        self._source = rtc.AudioSource(RATE, 1, queue_size_ms=4 * FRAME_MS)
        track = rtc.LocalAudioTrack.create_audio_track("mic", self._source)
        self._publication = await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        if muted:
            track.mute()
        self._tasks.append(asyncio.create_task(self._push_tone(track)))

    def unmute(self) -> None:
        if self._publication is not None and self._publication.track is not None:
            self._publication.track.unmute()

    def mute(self) -> None:
        if self._publication is not None and self._publication.track is not None:
            self._publication.track.mute()

    async def _push_tone(self, track: rtc.LocalAudioTrack) -> None:
        assert self._source is not None
        n = RATE * FRAME_MS // 1000
        k = 0
        while True:
            t = (np.arange(n) + k * n) / RATE
            pcm = (0.25 * np.sin(2 * np.pi * self.tone_hz * t) * 32767).astype(np.int16)
            await self._source.capture_frame(rtc.AudioFrame(pcm.tobytes(), RATE, 1, n))
            if self.first_audio_at is None and not track.muted:
                self.first_audio_at = time.time()
            k += 1

    def heard_audio(self, since: float = 0.0) -> np.ndarray:
        parts = [f for t, f in self.heard if t >= since]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    async def leave(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=3.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.room.disconnect(), 5.0)
