"""HoldPlayer: pushes the shared hold loop into an rtc.AudioSource for one call.

Pacing. The pusher keeps between one and two chunks queued in the source
(default 500 ms chunks: 0.5 to 1 s queued). It never blocks inside
capture_frame: it sleeps until less than one chunk is queued and then pushes
the next, so a capture is never in flight when the queue is flushed.

Chunk size. Fewer, larger pushes cost less CPU (figures in the README and
BENCHMARKS.md), and a deep queue rides out stalls of a busy event loop without
a gap in the caller's audio.

Handoff without waiting for the queue. A fade (or a resume) flushes what is
queued, steps the program back by what was dropped, and re-renders from
the sample the caller is hearing now with the new gain curve. So the fade
starts within a few milliseconds of the request, whatever the chunk size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from livekit import rtc

from ..aio import woken
from .audio import SAMPLE_RATE, HoldAudio
from .dsp import Audio, GainRamp, dbfs_to_amplitude, float_to_int16
from .program import Announcement, HoldProgram

TRACK_NAME = "hold-audio"
logger = logging.getLogger("hold-worker.player")


class Source(Protocol):
    """What the player needs of an rtc.AudioSource (a fake one in tests)."""

    @property
    def queued_duration(self) -> float: ...
    def clear_queue(self) -> None: ...
    async def capture_frame(self, frame: rtc.AudioFrame) -> None: ...
    async def aclose(self) -> None: ...


def rtc_source(chunk_ms: int) -> tuple[Source, rtc.LocalAudioTrack]:
    # Room for the two chunks we keep queued plus slack, so capture_frame
    # returns at once and never waits for space.
    source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=4 * chunk_ms)
    return source, rtc.LocalAudioTrack.create_audio_track(TRACK_NAME, source)


class HoldPlayer:
    def __init__(
        self,
        audio: HoldAudio,
        *,
        chunk_ms: int = 100,
        make_source: Callable[[int], tuple[Source, rtc.LocalAudioTrack]] = rtc_source,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._chunk = SAMPLE_RATE * chunk_ms // 1000
        self._source, self.track = make_source(chunk_ms)
        self._on_failure = on_failure
        self._failed = False  # reported once
        # What the caller hears (music, store switch, announcements), rendered
        # from one sample clock so a rewind re-renders exactly.
        self._program = HoldProgram(audio.samples)
        self._gain = GainRamp(1.0)
        self._wake = asyncio.Event()
        self._silent = asyncio.Event()  # set while the gain has settled at 0
        self._task: asyncio.Task[None] | None = None
        self.frames_pushed = 0

    def start(self, fade_in_ms: int = 0, *, silent: bool = False) -> None:
        """Start pushing audio: at full level, faded in (coming back after a
        handoff: no jump to full level), or silent (a replacement player
        under a live agent, ready to resume)."""
        if self._task is None:
            if silent:
                self._gain = GainRamp(0.0)
            elif fade_in_ms > 0:
                self._gain = GainRamp(0.0)
                self._gain.ramp_to(1.0, SAMPLE_RATE * fade_in_ms // 1000)
            self._task = asyncio.create_task(self._supervised(), name="hold-player")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _supervised(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the caller would hear silence: say so at once
            self._fail(e)

    async def _run(self) -> None:
        low_water = self._chunk / SAMPLE_RATE
        while True:
            queued = self._source.queued_duration
            if queued > low_water:
                self._wake.clear()
                # at least 5 ms: a wait that rounds to nothing in the loop's
                # clock would spin without the queue draining
                await woken(self._wake, max(queued - low_water, 0.005))
                continue
            await self._push_chunk()

    async def _push_chunk(self) -> None:
        chunk = self._program.read(self._chunk)
        self._gain.apply(chunk)
        frame = rtc.AudioFrame(float_to_int16(chunk).tobytes(), SAMPLE_RATE, 1, self._chunk)
        # capture_frame sends the frame to the native queue before its first
        # await, so a caller that clears the queue and then awaits this has no
        # window in which the queue runs dry.
        await self._source.capture_frame(frame)
        self.frames_pushed += 1
        if self._gain.settled and self._gain.target == 0.0:
            self._silent.set()
        else:
            self._silent.clear()

    async def _restart(self, target_gain: float, fade_ms: int) -> None:
        """Drop queued audio, rewind to the sample being heard now, and push
        the first chunk of the new gain curve at once."""
        self._drop_queued()
        self._gain.ramp_to(target_gain, SAMPLE_RATE * fade_ms // 1000)
        self._silent.clear()
        await self._push_now()

    async def _push_now(self) -> None:
        """Push a chunk from outside the pusher task (a fade, a resume, a
        switch): a failure is the player's failure, reported like one, never
        an exception in the caller's code path."""
        try:
            await self._push_chunk()
        except Exception as e:
            self._fail(e)
            return
        self._wake.set()

    def _fail(self, e: BaseException) -> None:
        """The player is dead, whichever path found it: stop pushing, count it
        as silent (a fade waiting on it ends), report it once."""
        if self._failed:
            return
        self._failed = True
        logger.error(f"hold audio stopped: {type(e).__name__}: {e}")
        self._silent.set()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        if self._on_failure is not None:
            self._on_failure(e)

    def _drop_queued(self) -> None:
        """Drop what is queued and step program and gain back by as much, so
        the next chunk continues from the sample the caller is hearing."""
        queued = round(self._source.queued_duration * SAMPLE_RATE)
        self._source.clear_queue()
        self._program.rewind(queued)
        self._gain.rewind(queued)

    async def _apply_now(self, change: Callable[[], None]) -> None:
        """Make a program change audible from the sample being heard now: drop
        what is queued, step the program back by as much, change, re-render."""
        if self._task is None or not self._gain.settled or self._gain.target != 1.0:
            change()  # not playing yet, or fading: it comes with the next chunk
            return
        self._drop_queued()
        change()
        await self._push_now()

    async def switch(self, audio: HoldAudio, crossfade_ms: int) -> None:
        """Cross-fade (equal-power) from the current music to `audio`, from now."""
        if audio.samples is self._program.music:
            return
        crossfade = SAMPLE_RATE * crossfade_ms // 1000
        await self._apply_now(lambda: self._program.switch_music(audio.samples, crossfade))

    async def set_announcement(self, ann: Announcement | None) -> None:
        """Announcements from now on (the first after `ann.first` samples), or none."""
        await self._apply_now(lambda: self._program.set_announcement(ann))

    async def play_once(self, samples: Audio, *, duck_db: float, ramp_ms: int = 300) -> None:
        """Say `samples` once over the music, ducked under it, from now (or
        right after an announcement already under way)."""
        ramp = SAMPLE_RATE * ramp_ms // 1000
        gain = dbfs_to_amplitude(duck_db)

        def change() -> None:
            self._program.play_once(samples, duck_gain=gain, ramp=ramp)

        await self._apply_now(change)

    async def cut_once(self, fade_ms: int = 40) -> None:
        """Cut what is being said once (a key pressed during a prompt)."""
        fade = SAMPLE_RATE * fade_ms // 1000

        def change() -> None:
            self._program.cut_once(fade)

        await self._apply_now(change)

    async def fade_out(self, fade_ms: int) -> None:
        """Fade to silence from now; returns once the silence has been played out."""
        await self._restart(0.0, fade_ms)
        await self._silent.wait()
        if not self._failed:  # a dead player is silent already; the session replaces it
            await asyncio.sleep(self._source.queued_duration)

    async def resume(self, fade_ms: int) -> None:
        """Bring hold audio back up from wherever the fade had got to."""
        await self._restart(1.0, fade_ms)

    async def aclose(self) -> None:
        """Stop and release; never raises (teardown must go on)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self._source.aclose()
        except Exception as e:
            logger.warning(f"closing the hold audio source failed: {e}")
