"""A fake LiveKit room, job context, audio source and media monitor, to run a
whole CallSession (worker/call.py) with the real lifecycle and HoldPlayer and
no server, on an event loop with virtual time (looptime).

What the caller hears is recorded sample by sample: the published hold
track's source plays its queue at 48 kHz of virtual time, and every sample
played while the track is published lands in `World.heard` at its time. The
hold music is a constant, so a heard sample divided by the music's level is
the hold gain the caller hears.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import looptime
import numpy as np
from livekit import rtc

from worker.catalog import CallPlan
from worker.hold.audio import SAMPLE_RATE, HoldAudio
from worker.hold.player import HoldPlayer
from worker.lifecycle import CallPolicy
from worker.media.detector import Inbound, Outbound, Verdict

LEVEL = 0.5  # the constant hold "music"
FULL = round(LEVEL * 32767)  # its int16 value: gain 1.0
_sids = itertools.count(1)


def constant_audio(seconds: float = 3.0) -> HoldAudio:
    samples = np.full(int(seconds * SAMPLE_RATE), LEVEL, dtype=np.float32)
    return HoldAudio("constant", samples, SAMPLE_RATE, 1, "test", -6.0)


class FakeTrack:
    def __init__(self, source: FakeSource) -> None:
        self.source = source


class FakeSource:
    """An rtc.AudioSource stand-in: plays its queue in virtual time."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.pending: list[np.ndarray] = []
        self.cursor = world.now_index()  # next sample index to play
        self.published = False
        self.closed = False
        self.fail_next = False

    def _drain(self) -> None:
        target = self.world.now_index()
        n = target - self.cursor
        if n <= 0:
            return
        out = np.zeros(n, dtype=np.float32)
        filled = 0
        while self.pending and filled < n:
            head = self.pending[0]
            k = min(head.shape[0], n - filled)
            out[filled : filled + k] = head[:k]
            filled += k
            if k == head.shape[0]:
                self.pending.pop(0)
            else:
                self.pending[0] = head[k:]
        if self.published and not self.closed:
            self.world.record(self.cursor, out, filled)
        self.cursor = target

    @property
    def queued_duration(self) -> float:
        self._drain()
        return sum(p.shape[0] for p in self.pending) / SAMPLE_RATE

    def clear_queue(self) -> None:
        self._drain()
        self.pending.clear()

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        self._drain()
        if self.fail_next:
            raise RuntimeError("injected: capture_frame failed")
        if self.closed:
            raise RuntimeError("capture_frame on a closed source")
        pcm = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / FULL
        self.pending.append(pcm)

    async def aclose(self) -> None:
        self._drain()
        self.closed = True


@dataclass
class FakePublication:
    kind: int = rtc.TrackKind.KIND_AUDIO
    muted: bool = False
    sid: str = field(default_factory=lambda: f"TR_{next(_sids)}")
    subscribed: bool = True

    def set_subscribed(self, on: bool) -> None:
        self.subscribed = on


@dataclass
class FakeParticipant:
    identity: str
    kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    attributes: dict[str, str] = field(default_factory=dict)
    track_publications: dict[str, FakePublication] = field(default_factory=dict)


class FakeLocalParticipant:
    identity = "agent-worker"
    kind = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    attributes: ClassVar[dict[str, str]] = {}

    def __init__(self, world: World) -> None:
        self.world = world
        self.published: dict[str, FakeTrack] = {}
        self.attributes_history: list[dict[str, str]] = []
        self.data: list[str] = []

    async def publish_track(self, track: FakeTrack, options: Any = None) -> Any:
        w = self.world
        w.publish_calls += 1
        w.publish_options = options
        if w.publish_delay:
            await asyncio.sleep(w.publish_delay)
        if w.publish_failures > 0:
            w.publish_failures -= 1
            raise RuntimeError("injected: publication timed out")
        if not w.room.connected:  # as the SDK: no publication without a room
            raise RuntimeError("publish_track: the room is not connected")
        sid = f"TR_local_{next(_sids)}"
        track.source._drain()
        track.source.published = True
        self.published[sid] = track
        return FakePublication(sid=sid)

    async def unpublish_track(self, sid: str) -> None:
        track = self.published.pop(sid)
        track.source._drain()
        track.source.published = False

    async def set_attributes(self, attrs: dict[str, str]) -> None:
        self.attributes_history.append(dict(attrs))

    async def publish_data(self, payload: str, **_kw: Any) -> None:
        self.data.append(payload)


class FakeRoom:
    name = "call-_15550100123_test"
    metadata = ""

    def __init__(self, world: World) -> None:
        self.world = world
        self.handlers: dict[str, list[Callable[..., Any]]] = defaultdict(list)
        self.remote_participants: dict[str, FakeParticipant] = {}
        self.local_participant = FakeLocalParticipant(world)
        self.connected = False

    def on(self, name: str, handler: Callable[..., Any]) -> None:
        self.handlers[name].append(handler)

    def off(self, name: str, handler: Callable[..., Any]) -> None:
        if handler in self.handlers[name]:
            self.handlers[name].remove(handler)

    def emit(self, name: str, *args: Any) -> None:
        """Room events come from the event loop, as the SDK's do."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.world.loop.run_until_complete(self._emit_async(name, *args))
            return
        for h in list(self.handlers[name]):
            h(*args)

    async def _emit_async(self, name: str, *args: Any) -> None:
        self.emit(name, *args)

    def isconnected(self) -> bool:
        return self.connected

    # -- what the server would do ------------------------------------------

    def close(self, reason: int = rtc.DisconnectReason.ROOM_DELETED) -> None:
        """The server closes the room (or the connection is lost: another
        reason): our tracks go with it."""
        self.connected = False
        for track in self.local_participant.published.values():
            track.source._drain()
            track.source.published = False
        self.local_participant.published.clear()
        self.emit("disconnected", reason)

    def join(self, p: FakeParticipant) -> None:
        self.remote_participants[p.identity] = p
        self.emit("participant_connected", p)

    def leave(self, identity: str) -> None:
        p = self.remote_participants.pop(identity, None)
        if p is not None:
            for pub in list(p.track_publications.values()):
                self.emit("track_unpublished", pub, p)
            self.emit("participant_disconnected", p)

    def publish(self, p: FakeParticipant, muted: bool) -> FakePublication:
        pub = FakePublication(muted=muted)
        p.track_publications[pub.sid] = pub
        self.emit("track_published", pub, p)
        return pub

    def set_muted(self, p: FakeParticipant, pub: FakePublication, muted: bool) -> None:
        pub.muted = muted
        self.emit("track_muted" if muted else "track_unmuted", p, pub)

    def unpublish(self, p: FakeParticipant, pub: FakePublication) -> None:
        p.track_publications.pop(pub.sid, None)
        self.emit("track_unpublished", pub, p)

    def set_attributes(self, p: FakeParticipant, attrs: dict[str, str]) -> None:
        p.attributes.update(attrs)
        self.emit("participant_attributes_changed", dict(attrs), p)


class FakeRoomService:
    def __init__(self, world: World) -> None:
        self.world = world
        self.removed: list[str] = []
        self.metadata: list[str] = []
        self.subscriptions: list[tuple[str, list[str], bool]] = []

    async def remove_participant(self, req: Any) -> None:
        self.removed.append(req.identity)
        # the server drops the SIP leg, which leaves the room
        asyncio.get_running_loop().call_later(0.05, self.world.room.leave, req.identity)

    async def update_room_metadata(self, req: Any) -> None:
        self.metadata.append(req.metadata)

    async def update_subscriptions(self, req: Any) -> None:
        self.subscriptions.append((req.identity, list(req.track_sids), req.subscribe))


class FakeCtx:
    def __init__(self, world: World) -> None:
        self.world = world
        self.room = world.room
        self.api = type("Api", (), {})()
        self.api.room = FakeRoomService(world)
        self.log_context_fields: dict[str, Any] = {}
        self.transfers: list[tuple[str, str]] = []

    async def connect(self, **_kw: Any) -> None:
        self.room.connected = True

    async def transfer_sip_participant(self, identity: str, target: str) -> None:
        self.transfers.append((identity, target))


class FakeMonitor:
    """MediaMonitor stand-in: the test sends verdicts through it."""

    def __init__(self, world: World, room: Any, caller: str, **kw: Any) -> None:
        self.world = world
        self.caller = caller
        self.on_verdict = kw["on_verdict"]
        self.started = False
        self.closed = False

    def start(self) -> None:
        self.started = True
        self.world.monitors.append(self)

    async def aclose(self) -> None:
        self.closed = True

    def verdict(self, inbound: Inbound, outbound: Outbound = Outbound.OK) -> None:
        from worker.media.levels import LevelWindow

        self.on_verdict(Verdict(inbound, outbound, "test"), None, LevelWindow())


class FakeRegistry:
    """What a CallSession (RegistrySink, keypad, position announcer, the
    agents' sign-ins) and the announcer use of registry.Registry. `fail`:
    Redis down for the reads and the callback request."""

    def __init__(
        self,
        *,
        place: tuple[str, int] | None = None,
        entries: list[dict[str, Any]] | None = None,
        signed_in: int | None = None,
    ) -> None:
        self.place = place  # the call's line and place in it
        self.entries = entries or []  # the store's recent waits
        self.signed_in = signed_in  # the store's agents the desk saw lately
        self.callbacks: list[dict[str, Any]] = []
        self.fail = False
        self.reads = 0
        self.store_s = 0.0  # how long storing a callback request takes

    async def write(self, *_a: Any, **_kw: Any) -> bool:
        return True

    async def end(self, *_a: Any, **_kw: Any) -> bool:
        return True

    async def place_in_line(self, _cid: str) -> tuple[str, int] | None:
        self.reads += 1
        if self.fail:
            raise ConnectionError("redis down")
        return self.place

    async def waits(self, *_a: Any) -> list[dict[str, Any]]:
        return self.entries

    async def agents_signed_in(self, _store: str, _within_ms: int) -> int | None:
        if self.fail:
            raise ConnectionError("redis down")
        return self.signed_in

    async def request_callback(self, entry: dict[str, Any]) -> dict[str, Any]:
        if self.store_s:
            await asyncio.sleep(self.store_s)
        if self.fail:
            raise ConnectionError("redis down")
        self.callbacks.append(dict(entry))
        return {**entry, "at": 1}


class FakeCatalog:
    def __init__(self, plan: CallPlan) -> None:
        self.plan = plan

    def default_plan(self) -> CallPlan:
        return self.plan

    def plan_for(self, _attributes: dict[str, str]) -> CallPlan:
        return self.plan

    def take_news(self) -> list[tuple[int, str]]:
        return []


class World:
    """One call's universe: loop with virtual time, room, what was heard."""

    def __init__(self, seconds: float = 240.0, policy: CallPolicy | None = None) -> None:
        self.loop = looptime.new_event_loop(start=0.0, noop_cycles=5)
        asyncio.set_event_loop(self.loop)
        self.heard = np.full(int(seconds * SAMPLE_RATE), np.nan, dtype=np.float32)
        self.room = FakeRoom(self)
        self.ctx = FakeCtx(self)
        self.monitors: list[FakeMonitor] = []
        self.sources: list[FakeSource] = []
        self.publish_delay = 0.0
        self.publish_failures = 0
        self.publish_calls = 0
        self.publish_options: Any = None
        self.resolve_delay = 0.0
        self.resolve_fails = False
        self.resolve_calls = 0
        self.plan = CallPlan("", "", "none", constant_audio(), None, policy or CallPolicy())

    def now_index(self) -> int:
        return round(self.loop.time() * SAMPLE_RATE)

    def record(self, start: int, samples: np.ndarray, filled: int) -> None:
        end = min(start + samples.shape[0], self.heard.shape[0])
        if end > start:
            self.heard[start:end] = samples[: end - start]

    def make_source(self, _chunk_ms: int) -> tuple[FakeSource, FakeTrack]:
        src = FakeSource(self)
        self.sources.append(src)
        return src, FakeTrack(src)

    def make_player(self, audio: HoldAudio, *, chunk_ms: int, on_failure: Any) -> HoldPlayer:
        return HoldPlayer(
            audio,
            chunk_ms=chunk_ms,
            make_source=self.make_source,  # type: ignore[arg-type]
            on_failure=on_failure,
        )

    def make_monitor(self, room: Any, caller: str, **kw: Any) -> FakeMonitor:
        return FakeMonitor(self, room, caller, **kw)

    async def resolve(self, _attributes: dict[str, str]) -> CallPlan:
        self.resolve_calls += 1
        if self.resolve_delay:
            await asyncio.sleep(self.resolve_delay)
        if self.resolve_fails:
            raise RuntimeError("injected: store resolution failed")
        return self.plan

    def session(self, settings: Any, **kw: Any) -> Any:
        from worker.call import CallSession

        return CallSession(
            self.ctx,  # type: ignore[arg-type]
            settings,
            FakeCatalog(self.plan),  # type: ignore[arg-type]
            clock=self.loop.time,
            make_player=self.make_player,
            make_monitor=self.make_monitor,
            resolve_plan=self.resolve,
            **kw,
        )

    def run_for(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def gains(self, t0: float, t1: float) -> np.ndarray:
        """Heard gain between two virtual times (silence where nothing played)."""
        for s in self.sources:
            s._drain()
        a, b = round(t0 * SAMPLE_RATE), round(t1 * SAMPLE_RATE)
        g = self.heard[a:b]
        return np.where(np.isnan(g), 0.0, g)

    def close(self) -> None:
        """End whatever still runs (a call the test left going) and the loop."""
        tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()
        asyncio.set_event_loop(None)


def caller(identity: str = "sip_+15550100123") -> FakeParticipant:
    p = FakeParticipant(
        identity,
        kind=rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
        attributes={
            "sip.phoneNumber": "+15550100123",
            "sip.callID": "SCL_test",
            "sip.callStatus": "active",
        },
    )
    p.track_publications["TR_caller"] = FakePublication(sid="TR_caller")
    return p
