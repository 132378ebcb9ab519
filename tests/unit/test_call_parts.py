"""The parts of a call on their own, on the fake room (tests/unit/fakeroom.py):
RoomEvents (room events -> lifecycle events), HoldTrack (publication and
player), CallPublisher with its RoomSink (what the web app sees)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from livekit import rtc

from tests.unit.fakeroom import FakeParticipant, World, caller, constant_audio
from worker.hold.track import HoldTrack
from worker.lifecycle import (
    AgentAudio,
    AgentPresence,
    CallerJoined,
    CallerLeft,
    Event,
    RoomClosed,
    State,
)
from worker.media.detector import Inbound, Outbound, Verdict
from worker.protocol import MEDIA_MESSAGE_TYPE
from worker.publisher import CallPublisher, CallView, RoomSink
from worker.roles import AgentRule
from worker.room_events import RoomEvents

log = logging.getLogger("test-call-parts")


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    w.room.connected = True
    yield w
    w.close()


# ---- RoomEvents ------------------------------------------------------------


def events(w: World) -> tuple[RoomEvents, list[Event], list[str]]:
    got: list[Event] = []
    callers: list[str] = []
    r = RoomEvents(
        w.room,
        AgentRule(),
        logging.LoggerAdapter(log, {}),
        emit=got.append,
        on_caller=lambda p: callers.append(p.identity),
    )
    r.bind()
    return r, got, callers


def test_room_events_tell_who_is_who(world: World) -> None:
    r, got, callers = events(world)
    c = caller()
    world.room.join(c)
    a = FakeParticipant("agent-1")
    world.room.join(a)
    pub = world.room.publish(a, muted=True)
    world.room.set_muted(a, pub, False)
    world.room.join(FakeParticipant("web-observer"))
    assert r.agents_left == {}
    world.room.leave("agent-1")
    left = r.agents_left  # when each agent left (the call goes back into line)
    assert list(left) == ["agent-1"] and abs(left["agent-1"] - time.time() * 1000) < 5000
    world.room.leave("web-observer")
    assert list(r.agents_left) == ["agent-1"]  # not an agent
    world.room.join(FakeParticipant("agent-1"))
    world.room.publish(world.room.remote_participants["agent-1"], muted=False)
    assert r.agents_left == {}  # back: no longer gone
    world.room.leave("agent-1")
    world.room.leave(c.identity)
    world.room.close()
    assert callers == [c.identity]
    assert r.caller == c.identity and r.caller_masked != "" and "0100123" not in r.caller_masked
    assert got == [
        CallerJoined(c.identity),
        AgentPresence("agent-1", present=True),
        AgentAudio("agent-1", live=True),
        AgentPresence("agent-1", present=False),
        AgentPresence("agent-1", present=True),
        AgentAudio("agent-1", live=True),
        AgentPresence("agent-1", present=False),
        CallerLeft("caller hung up"),
        RoomClosed(f"room disconnected ({rtc.DisconnectReason.ROOM_DELETED})"),
    ]


def test_room_events_catch_up_once_and_stop_when_unbound(world: World) -> None:
    c = caller()
    world.room.remote_participants[c.identity] = c  # there before we connected
    r, got, _ = events(world)
    r.catch_up()
    world.room.emit("participant_connected", c)  # the same one, replayed
    assert got == [CallerJoined(c.identity)]
    r.unbind()
    world.room.leave(c.identity)
    assert got == [CallerJoined(c.identity)]


def test_room_events_late_agent_role_and_sip_hangup(world: World) -> None:
    _r, got, _ = events(world)
    c = caller()
    world.room.join(c)
    x = FakeParticipant("desk-7")
    world.room.join(x)
    assert got == [CallerJoined(c.identity)]  # not an agent yet
    world.room.set_attributes(x, {"role": "agent"})
    world.room.set_attributes(c, {"sip.callStatus": "hangup"})
    assert got[1:] == [
        AgentPresence("desk-7", present=True),
        CallerLeft("caller hung up (sip.callStatus=hangup)"),
    ]


def test_room_events_while_quiet_new_audio_is_not_subscribed(world: World) -> None:
    r, _got, _ = events(world)
    a = FakeParticipant("agent-1")
    world.room.join(a)
    before = world.room.publish(a, muted=False)
    r.quiet = True
    after = world.room.publish(a, muted=False)
    assert before.subscribed and not after.subscribed
    assert {p.sid for p in r.audio_publications("agent-1")} == {before.sid, after.sid}
    assert r.audio_publications("nobody") == []


# ---- HoldTrack ---------------------------------------------------------------


def track(w: World, delays: tuple[float, ...] = (0.5, 1.0)) -> HoldTrack:
    return HoldTrack(
        w.room,
        w.make_player,
        chunk_ms=100,
        on_failure=lambda _e: None,
        retry_delays=delays,
        log=log,
    )


def test_hold_track_publishes_retries_and_releases(world: World) -> None:
    t = track(world)
    world.publish_failures = 2
    world.loop.run_until_complete(t.publish(constant_audio()))
    assert world.publish_calls == 3 and t.published and t.playing
    world.run_for(1.0)
    assert world.gains(world.loop.time() - 0.5, world.loop.time()).min() > 0.99
    player = t.player
    world.loop.run_until_complete(t.unpublish())
    assert not t.published and t.player is None and player is not None and not player.running
    assert world.room.local_participant.published == {}


def test_hold_track_gives_up_after_the_last_retry(world: World) -> None:
    t = track(world, delays=(0.1,))
    world.publish_failures = 5
    with pytest.raises(RuntimeError, match="timed out"):
        world.loop.run_until_complete(t.publish(constant_audio()))
    assert world.publish_calls == 2 and not t.published


def test_hold_track_publishes_with_the_configured_options(world: World) -> None:
    """HOLD_TRACK_RED / _DTX / _MAX_BITRATE reach the publication (the SDK's
    defaults, RED and DTX on, unless set)."""
    t = HoldTrack(
        world.room, world.make_player, chunk_ms=100, on_failure=lambda _e: None,
        retry_delays=(), log=log, red=False, dtx=True, max_bitrate=24_000,
    )  # fmt: skip
    world.loop.run_until_complete(t.publish(constant_audio()))
    o = world.publish_options
    assert o.source == rtc.TrackSource.SOURCE_MICROPHONE
    assert (o.red, o.dtx, o.audio_encoding.max_bitrate) == (False, True, 24_000)
    d = track(world)
    world.loop.run_until_complete(d.unpublish())
    world.loop.run_until_complete(t.unpublish())
    world.loop.run_until_complete(d.publish(constant_audio()))
    o = world.publish_options
    assert (o.red, o.dtx, o.HasField("audio_encoding")) == (True, True, False)


# ---- CallPublisher and RoomSink -------------------------------------------------


def view(state: State = State.HOLDING, media: Verdict | None = None) -> CallView:
    return CallView(state, 1_700_000_000_000, "+1555•••0123", media, None)


def test_publisher_collapses_changes_and_always_sends_the_final_state(world: World) -> None:
    ctx = world.ctx
    current = {"v": view()}
    pub = CallPublisher(
        [RoomSink(world.room, lambda: ctx.api, "hold.media", log)], lambda: current["v"], log
    )

    async def go() -> None:
        pub.start()
        for _ in range(5):  # a burst of changes
            pub.changed()
        await asyncio.sleep(0.1)
        pub.media({"media.verdict": "inbound_stopped"})
        await asyncio.sleep(0.1)
        current["v"] = view(State.DONE)
        await pub.aclose()

    world.loop.run_until_complete(go())
    history = world.room.local_participant.attributes_history
    assert 2 <= len(history) <= 3  # the burst: one update (+ the one after media)
    assert history[0]["hold.state"] == "holding" and history[0]["hold.since"] == "1700000000000"
    assert history[-1]["hold.state"] == "done"
    [msg] = [json.loads(d) for d in world.room.local_participant.data]
    assert msg["type"] == MEDIA_MESSAGE_TYPE and msg["media.verdict"] == "inbound_stopped"


def test_a_slow_sink_never_holds_back_another(world: World) -> None:
    """The room's attribute update can hang until the SDK's timeout; the
    registry's write (what the desk's waiting list reads) goes out meanwhile.
    Before: sinks were written one after the other (a call showed in the
    desk's list 5 s late in a real-stack run)."""
    written: list[tuple[str, float]] = []

    class Slow:
        async def state(self, _v: CallView) -> None:
            await asyncio.sleep(2.0)
            written.append(("slow", time.monotonic()))

        async def store(self, _v: CallView) -> None: ...

        async def media(self, _v: CallView, _f: Any) -> None: ...

        async def ended(self, _v: CallView) -> None: ...

    class Fast(Slow):
        async def state(self, _v: CallView) -> None:
            written.append(("fast", time.monotonic()))

    pub = CallPublisher([Slow(), Fast()], view, log)

    async def go() -> float:
        t0 = time.monotonic()
        pub.start()
        await asyncio.sleep(0.2)
        await pub.aclose()
        return t0

    t0 = world.loop.run_until_complete(go())
    fast = [t for who, t in written if who == "fast"]
    assert fast and fast[0] - t0 < 0.5, written


def test_a_failing_sink_never_stops_the_others(world: World) -> None:
    class Broken:
        async def state(self, _v: CallView) -> None:
            raise RuntimeError("boom")

        async def store(self, _v: CallView) -> None:
            raise RuntimeError("boom")

        async def media(self, _v: CallView, _f: Any) -> None:
            raise RuntimeError("boom")

    ctx = world.ctx
    v = view(media=Verdict(Inbound.OK, Outbound.OK, "inbound audio flowing"))
    pub = CallPublisher(
        [Broken(), RoomSink(world.room, lambda: ctx.api, "hold.media", log)], lambda: v, log
    )
    world.loop.run_until_complete(pub.aclose())
    assert world.room.local_participant.attributes_history[-1]["media.inbound"] == "ok"


def test_room_sink_keeps_other_metadata_and_refuses_non_objects(world: World) -> None:
    ctx = world.ctx
    sink = RoomSink(world.room, lambda: ctx.api, "hold.media", log)
    plan = dataclasses.replace(world.plan, store_id="s1", store_name="Shop", matched_by="number")
    v = CallView(State.HOLDING, 0, "", None, plan)
    world.room.metadata = json.dumps({"crm": 7})
    world.loop.run_until_complete(sink.store(v))
    world.room.metadata = "[1]"
    world.loop.run_until_complete(sink.store(v))
    [only] = ctx.api.room.metadata
    assert json.loads(only) == {
        "crm": 7,
        "store": {"id": "s1", "name": "Shop", "matched_by": "number"},
    }
    world.loop.run_until_complete(sink.state(v))
    attrs = world.room.local_participant.attributes_history[-1]
    assert attrs["store.id"] == "s1" and attrs["hold.since"] == ""


# ---- the end of a call, as the registry sees it (issue 14 item 3) -------------


class Recorder:
    def __init__(self) -> None:
        self.final: CallView | None = None

    async def state(self, _v: CallView) -> None:
        pass

    async def store(self, _v: CallView) -> None:
        pass

    async def media(self, _v: CallView, _f: Any) -> None:
        pass

    async def ended(self, v: CallView) -> None:
        self.final = v


def held_call(w: World) -> tuple[Any, asyncio.Task[str], Recorder]:
    from worker.settings import Settings

    rec = Recorder()
    s = Settings(chunk_ms=500, fade_ms=400, _env_file=None)  # type: ignore[call-arg]
    sess = w.session(s, sinks=[rec])
    task = w.loop.create_task(sess.run())
    w.run_for(0.1)
    w.room.join(caller())
    w.run_for(1.0)
    return sess, task, rec


def test_a_call_that_ends_normally_is_not_orphaned() -> None:
    w = World()
    try:
        _sess, task, rec = held_call(w)
        w.room.leave("sip_+15550100123")
        w.run_for(1.0)
        assert task.done() and rec.final is not None
        assert rec.final.state is State.DONE and not rec.final.orphaned
        assert rec.final.caller_number == "+15550100123"
        assert "+15550100123" not in repr(rec.final)  # never in a log line
    finally:
        w.close()


def test_a_job_that_fails_with_the_caller_there_is_orphaned() -> None:
    w = World()
    try:
        sess, task, rec = held_call(w)

        def boom(*_a: Any) -> list[Any]:
            raise RuntimeError("injected: a bug in the call's task")

        sess.lifecycle.handle = boom
        w.room.join(FakeParticipant("agent-1"))  # any event now fails the task
        w.run_for(1.0)
        assert task.done() and isinstance(task.exception(), RuntimeError)
        assert rec.final is not None and rec.final.orphaned
        assert rec.final.state is State.HOLDING  # unfinished
    finally:
        w.close()


def test_a_call_cancelled_by_the_drain_timeout_is_orphaned() -> None:
    w = World()
    try:
        _sess, task, rec = held_call(w)
        task.cancel()  # what livekit-agents does to a job at the drain timeout
        w.run_for(1.0)
        assert task.cancelled()
        assert rec.final is not None and rec.final.orphaned
    finally:
        w.close()


def test_a_lost_room_connection_is_orphaned_but_a_taken_over_call_is_not() -> None:
    w = World()
    try:
        _sess, task, rec = held_call(w)
        w.room.close(rtc.DisconnectReason.CONNECTION_TIMEOUT)
        w.run_for(1.0)
        assert task.done() and rec.final is not None and rec.final.orphaned
    finally:
        w.close()
    w = World()
    try:
        sess, task, rec = held_call(w)
        sess._on_taken_over()
        w.run_for(1.0)
        assert task.done() and rec.final is not None and not rec.final.orphaned
        assert w.ctx.api.room.removed == []  # nobody hung up
    finally:
        w.close()
