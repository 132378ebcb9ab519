"""MediaMonitor: watches the caller's audio both ways and feeds the detector.

Inbound: the caller's (SIP participant's) audio track, twice a second, from
the WebRTC inbound-rtp statistics of `track.get_stats()`: the packet counter,
and the level of the decoded audio since the previous read from the
`totalAudioEnergy` / `totalSamplesDuration` counters (libwebrtc adds the
square of each played-out frame's level, the frame's peak as a share of full
scale, times its duration; the SDK's synthetic playout decodes every
subscribed track whether or not anyone reads it, so the counters move without
any frame crossing into Python). Their ratio over the interval is the mean
square level; its root, in 16-bit steps, stands in for the window's peak.
The older way (`HOLD_MEDIA_LEVELS=stream`) reads the decoded audio through
an rtc.AudioStream at 8 kHz in 200 ms frames: 5 FFI events a second per
call, each handed to every subscriber of the SDK's process-wide event queue,
so its cost grows with the calls in a process (BENCHMARKS.md). A replaced
caller track is followed (its counters start again: the detector takes a new
track sid as a fresh baseline); a statistics read that fails is "unknown"
(the detector keeps its judgement), never "no packets".

Outbound: whether the caller (the SIP participant, i.e. livekit-sip) has
subscribed to our hold track. The SDK cannot say who subscribed: the only
signal is the room's `local_track_subscribed`, which carries the track alone
and which livekit-server sends once per published track, for its first
subscriber (`OnTrackEverSubscribed`); the WebRTC statistics of our track
(outbound-rtp, remote-inbound-rtp) are of our leg to the SFU and name no
subscriber either. So the monitor attributes that event to the caller only
when, as it arrives, the caller is in the room and no other remote participant
is (nobody else could have been the subscriber): outbound `ok`. A first
subscription seen while anyone else is there (a web-app observer, an agent),
or before the monitor started (read from the publication, see
`_already_subscribed`), cannot be attributed: outbound `unknown`, which is
never flagged and never confirmed. Limits: hidden participants (egress,
recorders) are not in `remote_participants`, and a participant who subscribed
and left before the event was handled is not seen; either would make a first
subscription read as the caller's.

Thin by design: the decisions are in detector.py. Testable without a server:
`room` is anything with on/off/remote_participants/local_participant, tracks
anything with sid/kind/get_stats, and `levels` (an AudioStream reader, or a
fake) replaces the statistics as the source of levels.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from livekit import rtc

from .detector import MediaSample, OneWayDetector, Thresholds, Verdict
from .levels import LevelWindow

logger = logging.getLogger("hold-worker.media")

POLL_S = 0.5
FRAME_MS = 200
RATE = 8000
STREAM_CLOSE_S = 2.0  # the longest a closing audio stream may hold the call's teardown


class RoomLike(Protocol):
    """What the monitor needs of an rtc.Room (a fake in the unit tests)."""

    def on(self, event: Any, callback: Any = None) -> Any: ...
    def off(self, event: Any, callback: Any) -> None: ...
    @property
    def remote_participants(self) -> Mapping[str, Any]: ...
    @property
    def local_participant(self) -> Any: ...


@dataclass
class InboundStats:
    packets_received: int = 0
    concealed_samples: int = 0
    total_audio_energy: float = 0.0  # cumulative: sum of level^2 x seconds
    total_samples_duration: float = 0.0  # cumulative seconds played out


def inbound_stats(stats: list[rtc.stats.RtcStats]) -> InboundStats | None:
    for s in stats:
        if s.HasField("inbound_rtp"):
            r = s.inbound_rtp
            return InboundStats(
                packets_received=int(r.received.packets_received),
                concealed_samples=int(r.inbound.concealed_samples),
                total_audio_energy=float(r.inbound.total_audio_energy),
                total_samples_duration=float(r.inbound.total_samples_duration),
            )
    return None


@dataclass
class EnergyLevels:
    """Levels between two statistics reads, from the cumulative energy counters.

    A new track sid, or counters that go backwards, start a fresh baseline
    (that read gives no window, like a window without frames)."""

    _sid: str | None = None
    _energy: float = 0.0
    _duration: float = 0.0

    def window(self, sid: str, stats: InboundStats) -> LevelWindow:
        e, d = stats.total_audio_energy, stats.total_samples_duration
        fresh = sid != self._sid or e < self._energy or d < self._duration
        de, dd = e - self._energy, d - self._duration
        self._sid, self._energy, self._duration = sid, e, d
        w = LevelWindow()
        if not fresh and dd > 0:
            w.add_energy(de, dd, RATE)
        return w


async def audio_levels(track: Any) -> AsyncIterator[np.ndarray]:
    """The caller's decoded audio, 8 kHz mono int16, one array per 200 ms frame."""
    stream = rtc.AudioStream.from_track(
        track=track, sample_rate=RATE, num_channels=1, frame_size_ms=FRAME_MS
    )
    try:
        async for ev in stream:
            yield np.frombuffer(ev.frame.data, dtype=np.int16)
    finally:
        # AudioStream.aclose() waits for the FFI's end-of-stream event, which
        # does not always come once the caller's track is gone ("Attempted to
        # drop unknown FFI handle"): in CI it held a call's teardown 35 s, its
        # record and place in line with it. Bounded; on timeout the wait is
        # cancelled (and the stream's own task with it).
        try:
            async with asyncio.timeout(STREAM_CLOSE_S):
                await stream.aclose()
        except TimeoutError:
            logger.warning(f"the caller's audio stream did not close in {STREAM_CLOSE_S:g} s")


def _is_audio(track: Any) -> bool:
    return track is not None and getattr(track, "kind", None) == rtc.TrackKind.KIND_AUDIO


class MediaMonitor:
    def __init__(
        self,
        room: RoomLike,
        caller_identity: str,
        *,
        joined_at: float,
        thresholds: Thresholds,
        clock: Callable[[], float],
        on_verdict: Callable[[Verdict, InboundStats | None, LevelWindow], None],
        poll_s: float = POLL_S,
        levels: Callable[[Any], AsyncIterator[np.ndarray]] | None = None,
    ) -> None:
        self.room = room
        self.caller_identity = caller_identity
        self.clock = clock
        self.detector = OneWayDetector(joined_at=joined_at, thresholds=thresholds)
        self._on_verdict = on_verdict
        self._poll_s = poll_s
        self._levels = levels  # None: levels from the statistics
        self._energy = EnergyLevels()
        self._window = LevelWindow()
        self._track: Any = None  # the caller's audio track being watched
        self._stream_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats_failing = False
        # True: the caller subscribed to our track; None: someone did, not
        # provably the caller; False: no subscription seen (module docstring).
        self.outbound_subscribed: bool | None = False

    def start(self) -> None:
        self.room.on("track_subscribed", self._on_track_subscribed)
        self.room.on("track_unsubscribed", self._on_track_unsubscribed)
        self.room.on("local_track_subscribed", self._on_local_track_subscribed)
        if self._already_subscribed():
            self.outbound_subscribed = None  # before we looked: whose, unknown
        caller = self.room.remote_participants.get(self.caller_identity)
        if caller is not None:
            for pub in caller.track_publications.values():
                if _is_audio(pub.track):
                    self._watch(pub.track)
        self._spawn(self._poll(), "media-poll")

    def _already_subscribed(self) -> bool:
        """Whether a track of ours had its first subscriber before start().

        Read from the SDK's LocalTrackPublication._first_subscription (the
        future behind wait_for_subscription(); no public flag exists); False
        if the SDK no longer has it."""
        for pub in self.room.local_participant.track_publications.values():
            first = getattr(pub, "_first_subscription", None)
            if isinstance(first, asyncio.Future) and first.done():
                return True
        return False

    # ---- room events --------------------------------------------------------

    def _on_track_subscribed(self, track: Any, _pub: Any, p: Any) -> None:
        if p.identity == self.caller_identity and _is_audio(track):
            self._watch(track)

    def _on_track_unsubscribed(self, track: Any, _pub: Any, p: Any) -> None:
        if p.identity != self.caller_identity or self._track is None:
            return
        if getattr(track, "sid", None) == self._track.sid:
            self._track = None  # no caller track: no packets (a new one is a new baseline)
            if self._stream_task is not None:
                self._stream_task.cancel()
                self._stream_task = None

    def _on_local_track_subscribed(self, _track: Any) -> None:
        """Our track's first subscriber: the caller's only if nobody else could be."""
        others = [i for i in self.room.remote_participants if i != self.caller_identity]
        caller_here = self.caller_identity in self.room.remote_participants
        if caller_here and not others:
            self.outbound_subscribed = True
        elif self.outbound_subscribed is not True:
            self.outbound_subscribed = None
            logger.info(
                "hold track subscribed, not provably by the caller "
                f"({len(others)} other participant(s) in the room): outbound unknown"
            )

    # ---- tasks --------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(f"media monitor task {task.get_name()} failed", exc_info=task.exception())

    def _watch(self, track: Any) -> None:
        if self._track is not None and self._track.sid == track.sid:
            return
        self._track = track
        if self._levels is None:
            return
        if self._stream_task is not None:
            self._stream_task.cancel()
        self._stream_task = self._spawn(self._read(track, self._levels), "media-levels")

    async def _read(self, track: Any, levels: Callable[[Any], AsyncIterator[np.ndarray]]) -> None:
        async for samples in levels(track):
            if track is self._track:
                self._window.add(samples)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.poll_once()
            except Exception:  # a bug or a failing callback: keep monitoring
                logger.exception("media poll failed")

    async def poll_once(self) -> Verdict | None:
        """One sample: read the stats, hand the detector what was seen."""
        track = self._track
        stats: InboundStats | None = None
        failed = False
        if track is not None:
            try:
                stats = inbound_stats(await track.get_stats())
            except Exception as e:  # unknown, not "no packets": the detector keeps its verdict
                failed = True
                if not self._stats_failing:
                    logger.warning(f"get_stats failed, media verdict unknown until it works: {e}")
                self._stats_failing = True
            else:
                self._stats_failing = False
        window, self._window = self._window, LevelWindow()
        if self._levels is None and stats is not None and track is not None:
            window = self._energy.window(track.sid, stats)
        sample = MediaSample(
            packets_received=None if stats is None else stats.packets_received,
            audio_frames=window.frames,
            peak=window.peak,
            outbound_subscribed=self.outbound_subscribed,
            track_sid=None if track is None else track.sid,
            stats_failed=failed,
        )
        verdict = self.detector.update(sample, self.clock())
        if verdict is not None:
            self._on_verdict(verdict, stats, window)
        return verdict

    async def aclose(self) -> None:
        """Stop: no task left pending; a failed task is logged, never raised."""
        self.room.off("track_subscribed", self._on_track_subscribed)
        self.room.off("track_unsubscribed", self._on_track_unsubscribed)
        self.room.off("local_track_subscribed", self._on_local_track_subscribed)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # failures were logged by _task_done; return_exceptions: never raise them here
        await asyncio.gather(*tasks, return_exceptions=True)
        self._stream_task = None
