"""CallSession: one held call, from the room's first second to the handoff.

The story of a call, top to bottom in `run()`:

1. connect to the room (audio only) and publish the hold track at once, before
   the caller's SIP participant has finished joining, so the first RTP packet
   livekit-sip forwards to the carrier already carries hold audio;
2. feed room events (caller joined / hung up, a human agent's audio went live
   or quiet) and timer ticks into the pure lifecycle (lifecycle.py);
3. carry out what it decides: fade and hand over, resume hold, hang up or
   transfer after the maximum wait, or leave;
4. on the way out release everything in reverse order.

This file translates between livekit and the pure core; it holds no rules of
its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from livekit import api, rtc
from livekit.agents import AutoSubscribe, JobContext

from .hold.audio import HoldAudio
from .hold.player import HoldPlayer
from .lifecycle import (
    Action,
    AgentAudio,
    CallerJoined,
    CallerLeft,
    CallLifecycle,
    Event,
    FadeDone,
    HandOver,
    HangUp,
    Leave,
    ResumeHold,
    RoomClosed,
    StartFade,
    State,
    StateChanged,
    Tick,
    Timers,
    Transfer,
)
from .masking import mask_number
from .roles import Role, classify, is_sip_hangup
from .settings import Settings

logger = logging.getLogger("hold-worker.call")

# Attributes the store's web app and backend read off the worker participant.
ATTR_STATE = "hold.state"
ATTR_SINCE = "hold.since"  # unix ms when hold began (the caller joined)
ATTR_CALLER = "hold.caller"  # masked caller number

_KIND_NAMES = {
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD: "standard",
    rtc.ParticipantKind.PARTICIPANT_KIND_INGRESS: "ingress",
    rtc.ParticipantKind.PARTICIPANT_KIND_EGRESS: "egress",
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP: "sip",
    rtc.ParticipantKind.PARTICIPANT_KIND_AGENT: "agent",
}


def kind_name(p: rtc.RemoteParticipant) -> str:
    return _KIND_NAMES.get(p.kind, f"kind{int(p.kind)}")


def audio_live(p: rtc.RemoteParticipant) -> bool:
    """An audio track that we have subscribed to and that is not muted."""
    return any(
        pub.kind == rtc.TrackKind.KIND_AUDIO and pub.track is not None and not pub.muted
        for pub in p.track_publications.values()
    )


class CallSession:
    def __init__(
        self,
        ctx: JobContext,
        settings: Settings,
        audio: HoldAudio,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.room = ctx.room
        self.settings = settings
        self.clock = clock
        self.player = HoldPlayer(audio, chunk_ms=settings.chunk_ms)
        self.lifecycle = CallLifecycle(
            started_at=clock(),
            timers=Timers(
                caller_join_timeout=settings.caller_join_timeout_s,
                max_wait=settings.max_wait_s,
                max_wait_action=settings.max_wait_action,
                transfer_target=settings.transfer_target,
            ),
        )
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._live: dict[str, bool] = {}  # human agent identity -> audio live
        self._fade_task: asyncio.Task[None] | None = None
        self._publication: rtc.LocalTrackPublication | None = None
        self._hold_since_ms = 0
        self._caller_masked = ""
        self._state_dirty = asyncio.Event()
        self._state_task: asyncio.Task[None] | None = None
        self.log = logging.LoggerAdapter(logger, {"room": self.room.name})

    # ---- the call, top to bottom ---------------------------------------------

    async def run(self) -> str:
        t0 = self.clock()
        self._bind_room_events()
        await self.ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
        self.player.start()
        self._publication = await self.room.local_participant.publish_track(
            self.player.track,
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        self.log.info(
            "hold audio published",
            extra={"publish_ms": round((self.clock() - t0) * 1000)},
        )
        self._state_dirty.set()
        self._state_task = asyncio.create_task(self._state_publisher(), name="hold-state")
        for p in list(self.room.remote_participants.values()):
            self._on_participant_connected(p)
        try:
            await self._run_lifecycle()
        finally:
            await self._close()
        return self.lifecycle.end_reason

    async def _run_lifecycle(self) -> None:
        while self.lifecycle.state is not State.DONE:
            deadline = self.lifecycle.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            try:
                event: Event = await asyncio.wait_for(self._events.get(), timeout)
            except TimeoutError:
                event = Tick()
            for action in self.lifecycle.handle(event, self.clock()):
                await self._do(action)

    # ---- carrying out the lifecycle's decisions ------------------------------

    async def _do(self, action: Action) -> None:
        if isinstance(action, StateChanged):
            if action.state is State.HOLDING and action.previous is State.WAITING:
                self._hold_since_ms = int(time.time() * 1000)
            self.log.info(f"state {action.previous} -> {action.state}")
            self._state_dirty.set()  # published by _state_publisher, never in the audio path
        elif isinstance(action, StartFade):
            self.log.info("agent audio live, fading hold audio out", extra={"agent": action.agent})
            self._fade_task = asyncio.create_task(self._fade(action.fade_id), name="hold-fade")
        elif isinstance(action, ResumeHold):
            self.log.info("no agent audio any more, resuming hold audio")
            await self._cancel_fade()
            await self.player.resume(self.settings.fade_ms)
        elif isinstance(action, HandOver):
            self.log.info("handed over", extra={"agent": action.agent})
        elif isinstance(action, HangUp):
            await self._hang_up(action.reason)
        elif isinstance(action, Transfer):
            await self._transfer(action.target, action.reason)
        elif isinstance(action, Leave):
            self.log.info(f"leaving: {action.reason}")

    async def _fade(self, fade_id: int) -> None:
        await self.player.fade_out(self.settings.fade_ms)
        self._events.put_nowait(FadeDone(fade_id))

    async def _cancel_fade(self) -> None:
        if self._fade_task is not None:
            self._fade_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fade_task
            self._fade_task = None

    async def _hang_up(self, reason: str) -> None:
        caller = self.lifecycle.caller
        self.log.info(f"hanging up the caller: {reason}")
        if caller is None:
            return
        try:
            await self.ctx.api.room.remove_participant(
                api.RoomParticipantIdentity(room=self.room.name, identity=caller)
            )
        except Exception as e:  # the caller may be gone already; the call ends either way
            self.log.warning(f"hang up failed: {e}")

    async def _transfer(self, target: str, reason: str) -> None:
        caller = self.lifecycle.caller
        self.log.info(f"transferring the caller: {reason}", extra={"target": target})
        if caller is None:
            return
        try:
            await self.ctx.transfer_sip_participant(caller, target)
        except Exception as e:
            self.log.warning(f"transfer failed, hanging up instead: {e}")
            await self._hang_up(f"transfer to {target} failed")

    async def _state_publisher(self) -> None:
        """Publish the latest state attributes whenever they change.

        Attributes go to the server and back: under load that round trip took
        over a second. Publishing here, off the lifecycle loop, keeps it out of
        the way of the fade; a burst of changes collapses into one update."""
        while True:
            await self._state_dirty.wait()
            self._state_dirty.clear()
            await self._publish_state()

    async def _publish_state(self) -> None:
        attrs = {
            ATTR_STATE: str(self.lifecycle.state),
            ATTR_SINCE: str(self._hold_since_ms) if self._hold_since_ms else "",
            ATTR_CALLER: self._caller_masked,
        }
        if not self.room.isconnected():
            return
        try:
            await self.room.local_participant.set_attributes(attrs)
        except Exception as e:  # attributes are for display; never end a call over them
            self.log.warning(f"could not publish state attributes: {e}")

    # ---- room events -> lifecycle events ---------------------------------------

    def _bind_room_events(self) -> None:
        r = self.room
        r.on("participant_connected", self._on_participant_connected)
        r.on("participant_disconnected", self._on_participant_disconnected)
        r.on("participant_attributes_changed", self._on_attributes_changed)
        r.on("track_subscribed", lambda _t, _pub, p: self._check_agent_audio(p))
        r.on("track_unsubscribed", lambda _t, _pub, p: self._check_agent_audio(p))
        r.on("track_muted", lambda p, _pub: self._check_agent_audio(p))
        r.on("track_unmuted", lambda p, _pub: self._check_agent_audio(p))
        r.on("track_unpublished", lambda _pub, p: self._check_agent_audio(p))
        r.on("disconnected", self._on_disconnected)

    def _role(self, p: rtc.Participant) -> Role:
        if not isinstance(p, rtc.RemoteParticipant):
            return Role.UNKNOWN
        return classify(kind_name(p), p.identity, p.attributes, self.settings.agent_rule)

    def _on_participant_connected(self, p: rtc.RemoteParticipant) -> None:
        role = self._role(p)
        if role is Role.CALLER and self.lifecycle.caller is None:
            self._caller_masked = mask_number(p.attributes.get("sip.phoneNumber"))
            call_id = p.attributes.get("sip.callID", "")
            self.log.extra = {"room": self.room.name, "sip.callID": call_id}
            self.ctx.log_context_fields = {**self.ctx.log_context_fields, "sip.callID": call_id}
            self.log.info("caller joined", extra={"caller": self._caller_masked})
            self._events.put_nowait(CallerJoined(p.identity))
            if is_sip_hangup(p.attributes):
                self._events.put_nowait(CallerLeft("caller hung up before we saw them"))
        elif role is Role.HUMAN_AGENT:
            self.log.info("human agent joined", extra={"agent": p.identity})
            self._check_agent_audio(p)
        elif role is not Role.CALLER:
            self.log.info(
                "participant joined, not a caller or agent: ignored",
                extra={"participant_kind": kind_name(p), "role": str(role)},
            )

    def _on_participant_disconnected(self, p: rtc.RemoteParticipant) -> None:
        if p.identity == self.lifecycle.caller:
            self._events.put_nowait(CallerLeft("caller hung up"))
        elif self._live.pop(p.identity, False):
            self._events.put_nowait(AgentAudio(p.identity, live=False))

    def _on_attributes_changed(self, _changed: dict[str, str], p: rtc.Participant) -> None:
        if p.identity == self.lifecycle.caller and is_sip_hangup(p.attributes):
            self._events.put_nowait(CallerLeft("caller hung up (sip.callStatus=hangup)"))
        elif isinstance(p, rtc.RemoteParticipant):
            self._check_agent_audio(p)  # a role=agent attribute may just have arrived

    def _check_agent_audio(self, p: rtc.RemoteParticipant) -> None:
        if self._role(p) is not Role.HUMAN_AGENT:
            return
        live = audio_live(p)
        if self._live.get(p.identity, False) != live:
            self._live[p.identity] = live
            self._events.put_nowait(AgentAudio(p.identity, live=live))

    def _on_disconnected(self, reason: Any) -> None:
        self._events.put_nowait(RoomClosed(f"room disconnected ({reason})"))

    # ---- teardown, in reverse order of acquisition ------------------------------

    async def _close(self) -> None:
        await self._cancel_fade()
        if self._state_task is not None:
            self._state_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._state_task
        with contextlib.suppress(TimeoutError):  # the final state, "done", for the web app
            await asyncio.wait_for(self._publish_state(), 2.0)
        if self._publication is not None and self.room.isconnected():
            with contextlib.suppress(Exception):
                await self.room.local_participant.unpublish_track(self._publication.sid)
        await self.player.aclose()
        self.log.info(f"call ended: {self.lifecycle.end_reason}")
