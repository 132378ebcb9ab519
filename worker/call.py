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
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from livekit import api, rtc
from livekit.agents import AutoSubscribe, JobContext

from .catalog import CROSSFADE_MS, CallPlan, StoreCatalog
from .hold.player import HoldPlayer
from .lifecycle import (
    Action,
    AgentAudio,
    AgentPresence,
    CallerJoined,
    CallerLeft,
    CallLifecycle,
    Event,
    FadeDone,
    HandOver,
    HangUp,
    Leave,
    MediaHealth,
    RepublishHold,
    ResumeHold,
    RoomClosed,
    StartFade,
    State,
    StateChanged,
    Tick,
    Transfer,
)
from .masking import mask_number
from .media import metrics
from .media.detector import Inbound, Outbound, Verdict
from .media.levels import LevelWindow
from .media.monitor import InboundStats, MediaMonitor
from .roles import Role, classify, is_sip_hangup
from .settings import Settings

logger = logging.getLogger("hold-worker.call")

# Attributes the store's web app and backend read off the worker participant.
ATTR_STATE = "hold.state"
ATTR_SINCE = "hold.since"  # unix ms when hold began (the caller joined)
ATTR_CALLER = "hold.caller"  # masked caller number
ATTR_MEDIA_IN = "media.inbound"  # ok | missing | stopped | silent | pending
ATTR_MEDIA_OUT = "media.outbound"  # ok | not_subscribed | pending
ATTR_MEDIA_REASON = "media.reason"
ATTR_STORE_ID = "store.id"  # the store the caller dialled (store map)
ATTR_STORE_NAME = "store.name"
ATTR_STORE_MATCH = "store.matched_by"  # header | number | default

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
    """An unmuted audio track published to the room (its media is flowing to
    the server; our subscription follows within tens of milliseconds, inside
    the fade). Waiting for our own subscription added 50-100 ms to every
    handoff (measured: fade start 67-100 ms after the agent published)."""
    return any(
        pub.kind == rtc.TrackKind.KIND_AUDIO and not pub.muted
        for pub in p.track_publications.values()
    )


class CallSession:
    def __init__(
        self,
        ctx: JobContext,
        settings: Settings,
        catalog: StoreCatalog,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.room = ctx.room
        self.settings = settings
        self.clock = clock
        self.catalog = catalog
        # Until the caller's SIP participant says which store was called: the
        # default store's audio (or HOLD_AUDIO), no announcement yet.
        self.plan = catalog.default_plan()
        self.player = HoldPlayer(self.plan.hold, chunk_ms=settings.chunk_ms)
        self.lifecycle = CallLifecycle(started_at=clock(), timers=self.plan.timers)
        self.monitor: MediaMonitor | None = None
        self._media: Verdict | None = None
        self._store_task: asyncio.Task[None] | None = None
        self._store_known = False  # store attributes only once resolved
        self._announcing = False
        self._send_task: asyncio.Task[None] | None = None
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
        try:
            await self._publish_hold()
        except Exception as e:  # seen on an overloaded server: publication timed out
            self.log.error(f"could not publish the hold audio, leaving the call: {e}")
            await self.player.aclose()
            return "hold audio could not be published"
        metrics.CALLS.labels(state=str(State.WAITING)).inc()
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
            metrics.CALLS.labels(state=str(action.previous)).dec()
            if action.state is not State.DONE:
                metrics.CALLS.labels(state=str(action.state)).inc()
            self._state_dirty.set()  # published by _state_publisher, never in the audio path
        elif isinstance(action, StartFade):
            self.log.info("agent audio live, fading hold audio out", extra={"agent": action.agent})
            self._fade_task = asyncio.create_task(self._fade(action.fade_id), name="hold-fade")
        elif isinstance(action, ResumeHold):
            self.log.info("no agent audio any more, resuming hold audio")
            await self._cancel_fade()
            await self.player.resume(self.settings.fade_ms)
        elif isinstance(action, HandOver):
            metrics.HANDOFFS.inc()
            if action.stay and self.settings.monitor_after_handoff:
                # monitor mode: silent, still watching the caller's media
                await self._unpublish()
                self.log.info("handed over, monitoring", extra={"agent": action.agent})
            else:
                # (with stay: the settle window; the silent hold track stays
                # published so hold audio can come back at once)
                self.log.info("handed over", extra={"agent": action.agent})
        elif isinstance(action, RepublishHold):
            self.log.info("every agent left or went quiet, resuming hold audio")
            if self._publication is not None:
                await self._cancel_fade()
                await self.player.resume(self.settings.fade_ms)
            else:
                await self._publish_hold(fade_in_ms=self.settings.fade_ms)
        elif isinstance(action, HangUp):
            await self._hang_up(action.reason)
        elif isinstance(action, Transfer):
            await self._transfer(action.target, action.reason)
        elif isinstance(action, Leave):
            self.log.info(f"leaving: {action.reason}")

    async def _publish_hold(self, fade_in_ms: int = 0) -> None:
        if self._publication is not None:
            return
        if self.lifecycle.caller is not None and not self._announcing:
            await self._start_announcements()
        self.player.start(fade_in_ms=fade_in_ms)
        self._publication = await self.room.local_participant.publish_track(
            self.player.track,
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )

    async def _unpublish(self) -> None:
        """Take the hold track off the room and release its player."""
        if self._publication is not None and self.room.isconnected():
            with contextlib.suppress(Exception):
                await self.room.local_participant.unpublish_track(self._publication.sid)
        self._publication = None
        await self.player.aclose()
        # for a resume: the call's own store audio and announcements again
        self.player = HoldPlayer(self.plan.hold, chunk_ms=self.settings.chunk_ms)
        self._announcing = False

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
        media = self._media
        attrs = {
            ATTR_STATE: str(self.lifecycle.state),
            ATTR_SINCE: str(self._hold_since_ms) if self._hold_since_ms else "",
            ATTR_CALLER: self._caller_masked,
            ATTR_MEDIA_IN: str(media.inbound) if media else "pending",
            ATTR_MEDIA_OUT: str(media.outbound) if media else "pending",
            ATTR_MEDIA_REASON: media.reason if media else "",
        }
        if self._store_known and self.plan.store_id:
            attrs[ATTR_STORE_ID] = self.plan.store_id
            attrs[ATTR_STORE_NAME] = self.plan.store_name
            attrs[ATTR_STORE_MATCH] = self.plan.matched_by
        if not self.room.isconnected():
            return
        try:
            await self.room.local_participant.set_attributes(attrs)
        except Exception as e:  # attributes are for display; never end a call over them
            self.log.warning(f"could not publish state attributes: {e}")

    # ---- the store this call is for ---------------------------------------------

    async def _apply_store(self, attributes: dict[str, str]) -> None:
        """Resolve the store from the SIP participant, then play its audio and
        announcements and apply its limits. Never ends the call: on any error
        the default store's plan stays."""
        try:
            # may decode a store added since start: off the event loop
            plan = await asyncio.to_thread(self.catalog.plan_for, attributes)
        except Exception as e:
            self.log.error(f"store resolution failed, keeping the default: {e}")
            return
        finally:
            for level, msg in self.catalog.take_news():
                self.log.log(level, msg)
        self._set_plan(plan)
        self._store_known = True
        if plan.matched_by == "default":
            self.log.warning(
                "no store matches this call, using the default store",
                extra={
                    "store.id": plan.store_id,
                    "dialled": attributes.get("sip.trunkPhoneNumber"),
                },
            )
        elif plan.store_id:
            self.log.info(
                f"store {plan.store_id} ({plan.matched_by})", extra={"store.id": plan.store_id}
            )
        if self.lifecycle.state in (State.WAITING, State.HOLDING) and self._publication:
            await self.player.switch(plan.hold, CROSSFADE_MS)
            await self._start_announcements()
        self._state_dirty.set()
        if plan.store_id:
            await self._publish_room_metadata(plan)

    def _set_plan(self, plan: CallPlan) -> None:
        self.plan = plan
        self.lifecycle.timers = plan.timers  # per-store max wait and fallback
        self._events.put_nowait(Tick())  # the lifecycle re-reads its deadlines

    async def _start_announcements(self) -> None:
        self._announcing = True
        await self.player.set_announcement(self.plan.announcement)

    async def _publish_room_metadata(self, plan: CallPlan) -> None:
        """The store in the room's metadata (JSON) for the web app and webhooks;
        other keys already there are kept."""
        current = self.room.metadata or ""
        try:
            meta = json.loads(current) if current.strip() else {}
        except json.JSONDecodeError:
            meta = None
        if not isinstance(meta, dict):
            self.log.warning("room metadata is not a JSON object; store left in attributes only")
            return
        meta["store"] = {
            "id": plan.store_id,
            "name": plan.store_name,
            "matched_by": plan.matched_by,
        }
        try:
            await self.ctx.api.room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room=self.room.name, metadata=json.dumps(meta))
            )
        except Exception as e:  # display only; never end a call over it
            self.log.warning(f"could not set the room metadata: {e}")

    # ---- room events -> lifecycle events ---------------------------------------

    def _bind_room_events(self) -> None:
        r = self.room
        r.on("participant_connected", self._on_participant_connected)
        r.on("participant_disconnected", self._on_participant_disconnected)
        r.on("participant_attributes_changed", self._on_attributes_changed)
        r.on("track_published", lambda _pub, p: self._check_agent_audio(p))
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
            self._store_task = asyncio.create_task(
                self._apply_store(dict(p.attributes)), name="hold-store"
            )
            self._start_monitor(p.identity)
            if is_sip_hangup(p.attributes):
                self._events.put_nowait(CallerLeft("caller hung up before we saw them"))
        elif role is Role.HUMAN_AGENT:
            self.log.info("human agent joined", extra={"agent": p.identity})
            self._events.put_nowait(AgentPresence(p.identity, present=True))
            self._check_agent_audio(p)
        elif role is not Role.CALLER:
            self.log.info(
                "participant joined, not a caller or agent: ignored",
                extra={"participant_kind": kind_name(p), "role": str(role)},
            )

    def _on_participant_disconnected(self, p: rtc.RemoteParticipant) -> None:
        if p.identity == self.lifecycle.caller:
            self._events.put_nowait(CallerLeft("caller hung up"))
        elif self._role(p) is Role.HUMAN_AGENT:
            self._live.pop(p.identity, None)
            self._events.put_nowait(AgentPresence(p.identity, present=False))

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

    # ---- media: one-way audio verdicts ----------------------------------------

    def _start_monitor(self, caller: str) -> None:
        self.monitor = MediaMonitor(
            self.room,
            caller,
            joined_at=self.clock(),
            thresholds=self.settings.media_thresholds,
            clock=self.clock,
            on_verdict=self._on_media_verdict,
        )
        self.monitor.start()

    def _on_media_verdict(
        self, v: Verdict, stats: InboundStats | None, window: LevelWindow
    ) -> None:
        self._media = v
        metrics.MEDIA_VERDICTS.labels(verdict=v.name).inc()
        fields = {
            "media.verdict": v.name,
            "media.inbound": str(v.inbound),
            "media.outbound": str(v.outbound),
            "media.reason": v.reason,
            "packets_received": stats.packets_received if stats else None,
            "concealed_samples": stats.concealed_samples if stats else None,
            "rms_dbfs": round(window.rms_dbfs, 1),
        }
        bad = v.inbound in (Inbound.MISSING, Inbound.STOPPED, Inbound.SILENT) or (
            v.outbound is Outbound.NOT_SUBSCRIBED
        )
        if bad:
            self.log.warning(f"one-way audio: {v.name}: {v.reason}", extra=fields)
        else:
            self.log.info(f"media {v.name}", extra=fields)
        self._state_dirty.set()
        payload = json.dumps(
            {"type": "media", "room": self.room.name, "at": int(time.time() * 1000), **fields}
        )
        self._send_task = asyncio.create_task(self._send_data(payload))
        if v.inbound is not Inbound.PENDING or v.outbound is not Outbound.PENDING:
            self._events.put_nowait(MediaHealth(ok=not bad, verdict=v.name))

    async def _send_data(self, payload: str) -> None:
        if not self.room.isconnected():
            return
        try:
            await self.room.local_participant.publish_data(
                payload, reliable=True, topic=self.settings.media_topic
            )
        except Exception as e:  # the attributes carry the same; never end a call over it
            self.log.warning(f"could not send the media data message: {e}")

    def _on_disconnected(self, reason: Any) -> None:
        self._events.put_nowait(RoomClosed(f"room disconnected ({reason})"))

    # ---- teardown, in reverse order of acquisition ------------------------------

    async def _close(self) -> None:
        if self.lifecycle.state is not State.DONE:  # ended by an error, not by the lifecycle
            metrics.CALLS.labels(state=str(self.lifecycle.state)).dec()
        await self._cancel_fade()
        if self._store_task is not None:
            self._store_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._store_task
        if self.monitor is not None:
            await self.monitor.aclose()
        if self._state_task is not None:
            self._state_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._state_task
        with contextlib.suppress(TimeoutError):  # the final state, "done", for the web app
            await asyncio.wait_for(self._publish_state(), 2.0)
        await self._unpublish()
        self.log.info(f"call ended: {self.lifecycle.end_reason}")
