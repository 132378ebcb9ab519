"""MediaMonitor without a server: a fake room, fake tracks, a fake clock.

Defect 9 of issue 12: (a) any subscriber to the hold track counted as the
caller's subscription; (b) a replaced caller track read as `stopped`; (c) a
failed get_stats counted as "no packets". And aclose() leaves nothing pending
and does not raise when a background task failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc

from worker.media.detector import Inbound, Outbound, Thresholds, Verdict
from worker.media.monitor import MediaMonitor

CALLER = "sip_caller"


def stats(packets: int, energy: float = 0.0, duration: float = 0.0) -> list[rtc.stats.RtcStats]:
    s = rtc.stats.RtcStats()
    s.inbound_rtp.received.packets_received = packets
    s.inbound_rtp.inbound.total_audio_energy = energy
    s.inbound_rtp.inbound.total_samples_duration = duration
    return [s]


@dataclass
class FakeTrack:
    sid: str
    packets: int = 0
    fail: bool = False
    kind: Any = rtc.TrackKind.KIND_AUDIO
    energy: float = 0.0  # libwebrtc's cumulative totalAudioEnergy
    duration: float = 0.0  # ... and totalSamplesDuration

    def play(self, seconds: float, peak_lsb: float) -> None:
        """What the playout adds: (level / full scale)^2 x seconds."""
        self.duration += seconds
        self.energy += (peak_lsb / 32767) ** 2 * seconds

    async def get_stats(self) -> list[rtc.stats.RtcStats]:
        if self.fail:
            raise RuntimeError("ffi: get_stats timed out")
        return stats(self.packets, self.energy, self.duration)


@dataclass
class FakePublication:
    track: Any
    sid: str = "TR_pub"
    _first_subscription: asyncio.Future[None] | None = None


@dataclass
class FakeParticipant:
    identity: str
    track_publications: dict[str, FakePublication] = field(default_factory=dict)


class FakeLocal:
    def __init__(self) -> None:
        self.hold = FakePublication(track=None, sid="TR_hold")
        self.hold._first_subscription = asyncio.get_running_loop().create_future()
        self.track_publications = {"TR_hold": self.hold}


class FakeRoom:
    """on/off/remote_participants/local_participant, like rtc.Room."""

    def __init__(self) -> None:
        self.handlers: dict[str, list[Callable[..., None]]] = {}
        self.remote_participants: dict[str, FakeParticipant] = {}
        self.local_participant = FakeLocal()

    def on(self, event: str, callback: Callable[..., None]) -> Callable[..., None]:
        self.handlers.setdefault(event, []).append(callback)
        return callback

    def off(self, event: str, callback: Callable[..., None]) -> None:
        if callback in self.handlers.get(event, []):
            self.handlers[event].remove(callback)

    def emit(self, event: str, *args: Any) -> None:
        for cb in list(self.handlers.get(event, [])):
            cb(*args)

    def join(self, identity: str) -> FakeParticipant:
        p = FakeParticipant(identity)
        self.remote_participants[identity] = p
        return p

    def subscribe_hold(self) -> None:
        """What the SDK does on livekit-server's one TrackSubscribed: no identity."""
        fut = self.local_participant.hold._first_subscription
        if not fut.done():
            fut.set_result(None)
        self.room_emit_local()

    def room_emit_local(self) -> None:
        self.emit("local_track_subscribed", self.local_participant.hold.track)

    def publish_caller_track(self, track: FakeTrack) -> None:
        p = self.remote_participants[CALLER]
        pub = FakePublication(track=track, sid=track.sid)
        p.track_publications[track.sid] = pub
        self.emit("track_subscribed", track, pub, p)

    def unpublish_caller_track(self, track: FakeTrack) -> None:
        p = self.remote_participants[CALLER]
        pub = p.track_publications.pop(track.sid)
        self.emit("track_unsubscribed", track, pub, p)


async def no_levels(_track: Any) -> AsyncIterator[np.ndarray]:
    """Decoded audio that never arrives (windows without frames: not silence)."""
    await asyncio.Event().wait()
    yield np.zeros(0, np.int16)  # pragma: no cover


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(room: FakeRoom, **kw: Any) -> tuple[MediaMonitor, Clock, list[Verdict]]:
    clock = Clock()
    verdicts: list[Verdict] = []
    m = MediaMonitor(
        room,
        CALLER,
        joined_at=0.0,
        thresholds=Thresholds(),
        clock=clock,
        on_verdict=lambda v, _s, _w: verdicts.append(v),
        **{"levels": no_levels, **kw},
    )
    return m, clock, verdicts


async def step(m: MediaMonitor, clock: Clock, track: FakeTrack | None, n: int, inc: int) -> None:
    """n polls, 0.5 s apart, the caller's track gaining `inc` packets each."""
    for _ in range(n):
        clock.t += 0.5
        if track is not None:
            track.packets += inc
        await m.poll_once()


# ---- (a) whose subscription ----------------------------------------------------


async def test_observer_subscription_is_not_the_callers() -> None:
    """An observer's first subscription, with the caller in the room: before
    the fix outbound read `ok` although the caller may hear nothing."""
    room = FakeRoom()
    room.join(CALLER)
    room.join("observer-web-1")
    m, clock, _ = make(room)
    m.start()
    room.subscribe_hold()
    a = FakeTrack("TR_caller")
    room.publish_caller_track(a)
    await step(m, clock, a, 20, 25)
    assert m.detector.verdict.outbound is Outbound.UNKNOWN
    assert m.detector.verdict.name == "ok"  # unknown is never flagged
    await m.aclose()


async def test_caller_alone_subscription_is_the_callers() -> None:
    room = FakeRoom()
    room.join(CALLER)
    m, clock, _ = make(room)
    m.start()
    room.subscribe_hold()
    room.join("observer-web-1")  # later: no more subscription events for this track
    a = FakeTrack("TR_caller")
    room.publish_caller_track(a)
    await step(m, clock, a, 12, 25)
    assert m.detector.verdict.outbound is Outbound.OK
    await m.aclose()


async def test_subscription_before_the_caller_joined_is_unknown_not_missing() -> None:
    """An observer subscribed before the caller came: the caller's own
    subscription will never produce an event (the server sends one per track),
    so `not_subscribed` would be a false alarm (a hangup with media_action)."""
    room = FakeRoom()
    room.join("observer-web-1")
    room.subscribe_hold()
    room.join(CALLER)
    m, clock, _ = make(room)
    m.start()
    a = FakeTrack("TR_caller")
    room.publish_caller_track(a)
    await step(m, clock, a, 20, 25)
    assert m.detector.verdict.outbound is Outbound.UNKNOWN
    await m.aclose()


async def test_nobody_subscribed_is_flagged() -> None:
    room = FakeRoom()
    room.join(CALLER)
    m, clock, _ = make(room)
    m.start()
    a = FakeTrack("TR_caller")
    room.publish_caller_track(a)
    await step(m, clock, a, 12, 25)
    assert m.detector.verdict.outbound is Outbound.NOT_SUBSCRIBED
    await m.aclose()


# ---- (b) a replaced caller track -----------------------------------------------


async def test_replaced_caller_track_is_not_stopped() -> None:
    room = FakeRoom()
    room.join(CALLER)
    m, clock, verdicts = make(room)
    m.start()
    room.subscribe_hold()
    a = FakeTrack("TR_a")
    room.publish_caller_track(a)
    await step(m, clock, a, 20, 25)  # 500 packets at 10 s
    room.unpublish_caller_track(a)
    await step(m, clock, None, 7, 0)  # 3.5 s renegotiating
    b = FakeTrack("TR_b")
    room.publish_caller_track(b)
    await step(m, clock, b, 20, 25)  # the new track counts from 25
    assert [v.inbound for v in verdicts] == [Inbound.OK]
    await m.aclose()


async def test_caller_track_gone_is_a_stop() -> None:
    room = FakeRoom()
    room.join(CALLER)
    m, clock, _ = make(room)
    m.start()
    a = FakeTrack("TR_a")
    room.publish_caller_track(a)
    await step(m, clock, a, 20, 25)
    room.unpublish_caller_track(a)
    await step(m, clock, None, 9, 0)
    assert m.detector.verdict.inbound is Inbound.STOPPED
    await m.aclose()


# ---- (c) a failed get_stats ----------------------------------------------------


async def test_failed_get_stats_keeps_the_verdict(caplog: Any) -> None:
    room = FakeRoom()
    room.join(CALLER)
    m, clock, verdicts = make(room)
    m.start()
    room.subscribe_hold()
    a = FakeTrack("TR_a")
    room.publish_caller_track(a)
    await step(m, clock, a, 20, 25)
    a.fail = True
    with caplog.at_level(logging.DEBUG, logger="hold-worker.media"):
        await step(m, clock, a, 20, 25)  # 10 s of failed reads
    assert [v.inbound for v in verdicts] == [Inbound.OK]
    assert len([r for r in caplog.records if "get_stats failed" in r.message]) == 1
    a.fail = False
    await step(m, clock, a, 1, 25)  # readable again: packets came meanwhile: ok
    assert m.detector.verdict.inbound is Inbound.OK
    a.fail = True
    await step(m, clock, a, 10, 0)
    a.fail = False
    await step(m, clock, a, 1, 0)  # readable again, no packet in 5.5 s: stopped
    assert m.detector.verdict.inbound is Inbound.STOPPED


# ---- tasks ---------------------------------------------------------------------


async def test_start_polls_and_aclose_leaves_nothing_pending() -> None:
    room = FakeRoom()
    room.join(CALLER)
    a = FakeTrack("TR_a", packets=25)
    room.remote_participants[CALLER].track_publications["TR_a"] = FakePublication(a, "TR_a")
    m, clock, verdicts = make(room, poll_s=0.001)
    clock.t = 3.0
    m.start()
    for _ in range(200):
        await asyncio.sleep(0.002)
        a.packets += 1
        if verdicts:
            break
    assert verdicts and verdicts[0].inbound is Inbound.OK
    before = asyncio.all_tasks()
    await m.aclose()
    after = asyncio.all_tasks()
    assert len(before - after) == 2  # the poll and the level reader, gone
    assert all(not cbs for cbs in room.handlers.values())


async def test_aclose_does_not_raise_when_a_task_failed(caplog: Any) -> None:
    async def broken_levels(_track: Any) -> AsyncIterator[np.ndarray]:
        raise RuntimeError("audio stream died")
        yield np.zeros(0, np.int16)  # pragma: no cover

    def bad_callback(_v: Verdict, _s: Any, _w: Any) -> None:
        raise ValueError("verdict handler bug")

    room = FakeRoom()
    room.join(CALLER)
    a = FakeTrack("TR_a", packets=25)
    room.remote_participants[CALLER].track_publications["TR_a"] = FakePublication(a, "TR_a")
    m = MediaMonitor(
        room,
        CALLER,
        joined_at=0.0,
        thresholds=Thresholds(),
        clock=lambda: 3.0,
        on_verdict=bad_callback,
        poll_s=0.001,
        levels=broken_levels,
    )
    with caplog.at_level(logging.ERROR, logger="hold-worker.media"):
        m.start()
        await asyncio.sleep(0.05)
        await m.aclose()  # must not raise
    messages = [r.getMessage() for r in caplog.records]
    assert any("media-levels failed" in x for x in messages)
    assert any("media poll failed" in x for x in messages)
    assert not m._tasks


# ---- levels from the statistics (HOLD_MEDIA_LEVELS=stats, the default) ----------


async def stats_levels_run(peak_lsb: float, polls: int) -> tuple[list[Verdict], list[Any]]:
    room = FakeRoom()
    room.join(CALLER)
    clock = Clock()
    verdicts: list[Verdict] = []
    windows: list[Any] = []

    def seen(v: Verdict, _s: Any, w: Any) -> None:
        verdicts.append(v)
        windows.append(w)

    m = MediaMonitor(
        room, CALLER, joined_at=0.0, thresholds=Thresholds(), clock=clock, on_verdict=seen
    )
    m.start()
    track = FakeTrack("TR_caller")
    room.publish_caller_track(track)
    try:
        for _ in range(polls):
            clock.t += 0.5
            track.packets += 25
            track.play(0.5, peak_lsb)
            await m.poll_once()
    finally:
        await m.aclose()
    return verdicts, windows


async def test_stats_levels_tell_digital_silence_without_a_stream() -> None:
    """Packets flowing, decoded audio at 1 LSB (G.711 zeros through Opus): silent
    after HOLD_MEDIA_SILENCE_AFTER_S, from the energy counters alone."""
    verdicts, _ = await stats_levels_run(1.0, 20)
    names = [v.inbound for v in verdicts]
    assert Inbound.SILENT in names, names
    assert names[0] is Inbound.OK  # flowing first, then silent from 6 s of zeros


async def test_stats_levels_quiet_line_is_never_silent() -> None:
    """-78 dBFS line noise peaks at 13 LSB or more: audio, not digital silence."""
    verdicts, _ = await stats_levels_run(13.0, 30)
    assert {v.inbound for v in verdicts} == {Inbound.OK}, verdicts


async def test_stats_levels_start_afresh_on_a_new_track_and_counters_going_back() -> None:
    from worker.media.monitor import EnergyLevels, InboundStats

    e = EnergyLevels()
    first = e.window("TR_a", InboundStats(10, 0, (3000 / 32767) ** 2 * 5.0, 5.0))
    assert first.frames == 0  # the first read is a baseline, not a window
    w = e.window("TR_a", InboundStats(35, 0, (3000 / 32767) ** 2 * 5.5, 5.5))
    assert w.frames == 1 and abs(w.peak - 3000) <= 1, w
    assert -21.0 < w.rms_dbfs < -20.5, w.rms_dbfs  # 3000 / 32768 = -20.8 dBFS
    assert e.window("TR_b", InboundStats(3, 0, 1e-3, 0.5)).frames == 0  # new track
    assert e.window("TR_b", InboundStats(3, 0, 0.0, 0.2)).frames == 0  # went back
    w = e.window("TR_b", InboundStats(28, 0, 0.0, 0.7))
    assert w.frames == 1 and w.peak == 0  # played out, all zeros
