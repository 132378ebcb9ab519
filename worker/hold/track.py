"""HoldTrack: the call's hold track in the room, its player and its publication.

Owns one HoldPlayer at a time and the LocalTrackPublication of its track.
Publishing retries (a publication that times out on an overloaded server is
tried again after each of `retry_delays`); the last failure is raised for the
caller to act on (the call hangs up rather than leave the caller in silence).
Unpublishing always releases the player, so the next publication gets a new
one with the call's current audio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from livekit import rtc

from ..aio import Log
from .audio import HoldAudio
from .player import HoldPlayer
from .program import Announcement

PlayerFactory = Callable[..., HoldPlayer]


class HoldTrack:
    def __init__(
        self,
        room: Any,  # rtc.Room, or the unit tests' fake
        make_player: PlayerFactory,
        *,
        chunk_ms: int,
        on_failure: Callable[[BaseException], None],
        retry_delays: tuple[float, ...],
        log: Log,
        red: bool = True,
        dtx: bool = True,
        max_bitrate: int = 0,
    ) -> None:
        self.room = room
        # The SDK's defaults are RED and DTX on and the encoder's own bitrate.
        self._options = rtc.TrackPublishOptions(
            source=rtc.TrackSource.SOURCE_MICROPHONE, red=red, dtx=dtx
        )
        if max_bitrate:
            self._options.audio_encoding.max_bitrate = max_bitrate
        self._make_player = make_player
        self._chunk_ms = chunk_ms
        self._on_failure = on_failure
        self._retry_delays = retry_delays
        self.log = log
        self.player: HoldPlayer | None = None
        self.publication: rtc.LocalTrackPublication | None = None
        self.announcing = False  # the player has the call's announcement

    @property
    def published(self) -> bool:
        return self.publication is not None

    @property
    def playing(self) -> bool:
        return self.player is not None and self.player.running

    def prepare(self, audio: HoldAudio) -> HoldPlayer:
        """The player, made with `audio` if there is none yet."""
        if self.player is None:
            self.player = self._make_player(
                audio, chunk_ms=self._chunk_ms, on_failure=self._on_failure
            )
        return self.player

    async def announce(self, announcement: Announcement | None) -> None:
        if self.player is not None:
            self.announcing = True
            await self.player.set_announcement(announcement)

    async def publish(self, audio: HoldAudio, fade_in_ms: int = 0, *, silent: bool = False) -> None:
        """Publish the hold track (no-op if published); raises the last error
        once every retry failed."""
        if self.publication is not None:
            return
        player = self.prepare(audio)
        # The first publication starts the audio before it is published, so
        # the first RTP packet carries music; a fade-in (hold coming back)
        # starts once the track is in the room, or a slow or retried
        # publication would play it to nobody and the caller hear a jump.
        if not fade_in_ms:
            player.start(silent=silent)
        for attempt, delay in enumerate((0.0, *self._retry_delays)):
            if delay:
                await asyncio.sleep(delay)
            try:
                self.publication = await self.room.local_participant.publish_track(
                    player.track, self._options
                )
                player.start(fade_in_ms, silent=silent)  # no-op if started above
                return
            except Exception as e:  # seen on an overloaded server: publication timed out
                if attempt == len(self._retry_delays):
                    raise
                self.log.warning(f"publishing the hold audio failed, retrying: {e}")

    async def unpublish(self) -> None:
        """Take the track off the room and release its player."""
        if self.publication is not None and self.room.isconnected():
            try:
                await self.room.local_participant.unpublish_track(self.publication.sid)
            except Exception as e:  # the room may be closing; the player goes either way
                self.log.warning(f"unpublishing the hold audio failed: {e}")
        self.publication = None
        player, self.player = self.player, None
        if player is not None:
            await player.aclose()
        self.announcing = False
