"""CallSession: one held call, from the room's first second to its end.

The story of a call, top to bottom in `run()`:

1. connect to the room (audio only) and publish the hold track at once, before
   the caller's SIP participant has finished joining, so the first RTP packet
   livekit-sip forwards to the carrier already carries hold audio (a failed
   publication is retried; if it keeps failing the caller is hung up rather
   than left in silence);
2. feed room events (caller joined / hung up, a human agent present, their
   audio live or quiet) and timer ticks into the pure lifecycle (lifecycle.py);
3. carry out what it decides: fade, settle, hand over (unpublish and stay
   cheaply in the room), bring hold audio back, hang up or transfer after the
   maximum wait, or leave;
4. on the way out release everything in reverse order, whatever failed.

This file translates between livekit and the pure core; it holds no rules of
its own. The room, the job context, the player and the media monitor come in
through small seams (`ctx`, `make_player`, `make_monitor`, `resolve_plan`), so
tests run a whole call against a fake room (tests/unit/test_call_model.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

from livekit import api, rtc
from livekit.agents import AutoSubscribe, JobContext
from livekit.rtc.room import EventTypes

from .catalog import CROSSFADE_MS, CallPlan, StoreCatalog
from .hold.audio import HoldAudio
from .hold.player import HoldPlayer
from .lifecycle import (
    Action,
    AgentAudio,
    AgentPresence,
    CallerJoined,
    CallerLeft,
    CallLifecycle,
    Draining,
    Event,
    FadeDone,
    HandOver,
    HangUp,
    HoldFailed,
    Leave,
    MediaHealth,
    RepublishHold,
    ResumeHold,
    RoomClosed,
    Settle,
    StartFade,
    State,
    StateChanged,
    Tick,
    Transfer,
)
from .masking import mask_number
from .media import metrics
from .media.detector import Inbound, Outbound, Thresholds, Verdict
from .media.levels import LevelWindow
from .media.monitor import InboundStats, MediaMonitor
from .protocol import (
    ATTR_CALLER,
    ATTR_MEDIA_IN,
    ATTR_MEDIA_OUT,
    ATTR_MEDIA_REASON,
    ATTR_SINCE,
    ATTR_STATE,
    ATTR_STORE_ID,
    ATTR_STORE_MATCH,
    ATTR_STORE_NAME,
    MEDIA_MESSAGE_TYPE,
    MEDIA_VERDICT,
    ROOM_META_STORE,
    SIP_CALL_ID,
    SIP_PHONE_NUMBER,
    SIP_TRUNK_PHONE_NUMBER,
)
from .roles import Role, classify, is_sip_hangup
from .settings import Settings

logger = logging.getLogger("hold-worker.call")

# Waits before the 2nd and 3rd attempt to publish the hold track.
PUBLISH_RETRY_DELAYS_S = (0.5, 1.0)
# A hold player that dies is replaced; more often than this in one call and
# the caller is hung up instead (something is badly wrong with the process).
MAX_PLAYER_RECOVERIES = 3
DRAIN_POLL_S = 1.0  # how often a call checks whether its worker is draining

VerdictCallback = Callable[[Verdict, InboundStats | None, LevelWindow], None]
MonitorFactory = Callable[..., Any]


def kind_name(p: rtc.Participant) -> str:
    """The participant kind as roles.classify expects it: "sip", "connector", ..."""
    try:
        return str(rtc.ParticipantKind.Name(p.kind)).removeprefix("PARTICIPANT_KIND_").lower()
    except ValueError:  # a kind newer than this SDK
        return f"kind{int(p.kind)}"


def audio_live(p: rtc.RemoteParticipant) -> bool:
    """An unmuted audio track published to the room (its media is flowing to
    the server; our subscription, if any, follows inside the fade)."""
    return any(
        pub.kind == rtc.TrackKind.KIND_AUDIO and not pub.muted
        for pub in p.track_publications.values()
    )


class CallLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A LoggerAdapter that merges a call's `extra=` fields with its own.

    The standard adapter replaces them on Python 3.11 (3.13 added
    `merge_extra`), so every structured field of a call was silently dropped."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class _PlayerDied:
    """Internal queue item: the hold player's task failed."""


class CallSession:
    def __init__(
        self,
        ctx: JobContext,
        settings: Settings,
        catalog: StoreCatalog,
        *,
        clock: Callable[[], float] = time.monotonic,
        make_player: Callable[..., HoldPlayer] | None = None,
        make_monitor: MonitorFactory = MediaMonitor,
        resolve_plan: Callable[[dict[str, str]], Awaitable[CallPlan]] | None = None,
        publish_retry_delays: tuple[float, ...] = PUBLISH_RETRY_DELAYS_S,
        is_draining: Callable[[], bool] | None = None,
    ) -> None:
        self.ctx = ctx
        self.room = ctx.room
        self.settings = settings
        self.clock = clock
        self.catalog = catalog
        self._make_player_seam = make_player or HoldPlayer
        self._make_monitor = make_monitor
        self._resolve_plan = resolve_plan or self._plan_in_thread
        self._retry_delays = publish_retry_delays
        self._is_draining = is_draining
        self._drain_task: asyncio.Task[None] | None = None
        # Until the caller's SIP participant says which store was called: the
        # default store's audio (or HOLD_AUDIO), no announcement yet.
        self.plan = catalog.default_plan()
        self.player: HoldPlayer | None = self._new_player(self.plan.hold)
        self.lifecycle = CallLifecycle(started_at=clock(), policy=self.plan.policy)
        self.monitor: Any = None  # MediaMonitor while watching the caller's media
        self._media: Verdict | None = None
        self._store_task: asyncio.Task[None] | None = None
        self._store_known = False  # store attributes only once resolved
        self._announcing = False
        self._tasks: set[asyncio.Task[None]] = set()  # data messages in flight
        self._events: asyncio.Queue[Event | _PlayerDied] = asyncio.Queue()
        # Who is who, decided when the room event arrives (not when the
        # lifecycle gets to it), so no event is judged against stale state.
        self._seen: set[str] = set()  # participants already classified as joined
        self._caller: str | None = None
        self._agents: set[str] = set()  # human agents present
        self._live: dict[str, bool] = {}  # human agent identity -> audio live
        self._fade_task: asyncio.Task[None] | None = None
        self._publication: rtc.LocalTrackPublication | None = None
        self._quiet = False  # handed over: no track, no media subscriptions
        self._recoveries = 0
        self._hold_since_ms = 0
        self._caller_masked = ""
        self._state_dirty = asyncio.Event()
        self._state_task: asyncio.Task[None] | None = None
        self._bound: list[tuple[EventTypes, Callable[..., Any]]] = []
        self.log = CallLog(logger, {"room": self.room.name})

    # ---- the call, top to bottom ---------------------------------------------

    async def run(self) -> str:
        t0 = self.clock()
        self._bind_room_events()
        try:
            await self.ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
            metrics.CALLS.labels(state=str(State.WAITING)).inc()
            if await self._bring_up_hold():
                self.log.info(
                    "hold audio published",
                    extra={"publish_ms": round((self.clock() - t0) * 1000)},
                )
            self._state_dirty.set()
            self._state_task = asyncio.create_task(self._state_publisher(), name="hold-state")
            if self._is_draining is not None:
                self._drain_task = asyncio.create_task(self._watch_drain(), name="hold-drain")
            # Participants already in the room when we connected (those who
            # joined since came through participant_connected; _seen skips them).
            for p in list(self.room.remote_participants.values()):
                self._on_participant_connected(p)
            await self._run_lifecycle()
        finally:
            await self._close()
        return self.lifecycle.end_reason

    async def _run_lifecycle(self) -> None:
        while self.lifecycle.state is not State.DONE:
            deadline = self.lifecycle.next_deadline()
            # at least 1 ms: a wait shorter than the clock's resolution could
            # wake a hair before the deadline, over and over, without time passing
            timeout = None if deadline is None else max(0.001, deadline - self.clock())
            item: Event | _PlayerDied
            try:
                item = await asyncio.wait_for(self._events.get(), timeout)
            except TimeoutError:
                item = Tick()
            if isinstance(item, _PlayerDied):
                await self._recover_player()
                continue
            for action in self.lifecycle.handle(item, self.clock()):
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
            await self._cancel_fade()
            self._fade_task = asyncio.create_task(self._fade(action.fade_id), name="hold-fade")
        elif isinstance(action, ResumeHold):
            self.log.info("no agent audio any more, resuming hold audio")
            await self._cancel_fade()
            if self.player is not None:
                await self.player.resume(self.settings.fade_ms)
        elif isinstance(action, Settle):
            self.log.info("hold audio faded out under the agent", extra={"agent": action.agent})
        elif isinstance(action, HandOver):
            metrics.HANDOFFS.inc()
            await self._cancel_fade()
            await self._unpublish()
            if action.stay:
                await self._go_quiet()
                self.log.info("handed over, staying in the room", extra={"agent": action.agent})
            else:
                self.log.info("handed over", extra={"agent": action.agent})
        elif isinstance(action, RepublishHold):
            self.log.info("every agent left or went quiet, bringing hold audio back")
            await self._cancel_fade()
            self._wake_up()
            if self._publication is not None and self.player is not None:
                await self.player.resume(self.settings.fade_ms)
            else:
                await self._bring_up_hold(fade_in_ms=self.settings.fade_ms)
        elif isinstance(action, HangUp):
            await self._hang_up(action.reason)
        elif isinstance(action, Transfer):
            await self._transfer(action.target, action.reason)
        elif isinstance(action, Leave):
            self.log.info(f"leaving: {action.reason}")

    # ---- the hold track --------------------------------------------------------

    def _new_player(self, audio: HoldAudio) -> HoldPlayer:
        return self._make_player_seam(
            audio, chunk_ms=self.settings.chunk_ms, on_failure=self._on_player_failure
        )

    def _on_player_failure(self, _error: BaseException) -> None:
        self._events.put_nowait(_PlayerDied())

    async def _bring_up_hold(self, fade_in_ms: int = 0, *, silent: bool = False) -> bool:
        """Publish the hold track; on failure tell the lifecycle (which hangs
        up the caller rather than leave them in silence)."""
        try:
            await self._publish_hold(fade_in_ms, silent=silent)
            return True
        except Exception as e:
            self.log.error(f"could not publish the hold audio: {type(e).__name__}: {e}")
            await self._unpublish()
            self._events.put_nowait(HoldFailed(f"hold audio could not be published ({e})"))
            return False

    async def _publish_hold(self, fade_in_ms: int = 0, *, silent: bool = False) -> None:
        if self._publication is not None:
            return
        if self.player is None:
            self.player = self._new_player(self.plan.hold)
        player = self.player
        if self._caller is not None and not self._announcing:
            await self._start_announcements()
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
                self._publication = await self.room.local_participant.publish_track(
                    player.track,
                    rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
                )
                player.start(fade_in_ms, silent=silent)  # no-op if started above
                return
            except Exception as e:  # seen on an overloaded server: publication timed out
                if attempt == len(self._retry_delays):
                    raise
                self.log.warning(f"publishing the hold audio failed, retrying: {e}")

    async def _unpublish(self) -> None:
        """Take the hold track off the room and release its player (the next
        publication makes a new one, with the call's own store audio)."""
        if self._publication is not None and self.room.isconnected():
            try:
                await self.room.local_participant.unpublish_track(self._publication.sid)
            except Exception as e:  # the room may be closing; the player goes either way
                self.log.warning(f"unpublishing the hold audio failed: {e}")
        self._publication = None
        player, self.player = self.player, None
        if player is not None:
            await player.aclose()
        self._announcing = False

    async def _recover_player(self) -> None:
        """The hold player died: replace it, at the level the caller should hear."""
        state = self.lifecycle.state
        if self._publication is None or state in (State.MONITORING, State.DONE):
            return  # nothing was playing
        self._recoveries += 1
        self.log.error(f"hold audio player died, replacing it ({self._recoveries})")
        # A fade in flight ends by itself: the dead player counts as silent.
        under_agent = state in (State.HANDING_OFF, State.SETTLING)
        await self._unpublish()
        if self._recoveries > MAX_PLAYER_RECOVERIES:
            self._events.put_nowait(HoldFailed("hold audio player keeps failing"))
            return
        await self._bring_up_hold(self.settings.fade_ms, silent=under_agent)

    async def _fade(self, fade_id: int) -> None:
        if self.player is not None:
            await self.player.fade_out(self.settings.fade_ms)
        self._events.put_nowait(FadeDone(fade_id))

    async def _cancel_fade(self) -> None:
        task, self._fade_task = self._fade_task, None
        if task is not None:
            await _stop(task, self.log)

    # ---- after the handoff: in the room at near-zero cost ---------------------

    def _media_publications(self) -> list[rtc.RemoteTrackPublication]:
        return [
            pub
            for p in self.room.remote_participants.values()
            for pub in p.track_publications.values()
            if pub.kind == rtc.TrackKind.KIND_AUDIO
        ]

    async def _go_quiet(self) -> None:
        """No published track (done by HandOver), no media subscriptions: only
        room events, which is all it takes to notice every agent leaving."""
        if self.settings.monitor_after_handoff:
            return  # still watching the caller's media, by request
        self._quiet = True
        if self.monitor is not None:
            monitor, self.monitor = self.monitor, None
            await _quietly(monitor.aclose(), self.log)
        for pub in self._media_publications():
            _set_subscribed(pub, False, self.log)

    def _wake_up(self) -> None:
        """Back on hold after the handoff: subscribe to the caller again and
        watch their media."""
        if not self._quiet:
            return
        self._quiet = False
        caller = self.room.remote_participants.get(self._caller or "")
        if caller is not None:
            for pub in caller.track_publications.values():
                if pub.kind == rtc.TrackKind.KIND_AUDIO:
                    _set_subscribed(pub, True, self.log)
        if self._caller is not None:
            self._start_monitor(self._caller)

    # ---- hanging up and transferring ---------------------------------------------

    async def _hang_up(self, reason: str) -> None:
        caller = self._caller
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
        caller = self._caller
        self.log.info(f"transferring the caller: {reason}", extra={"target": target})
        if caller is None:
            return
        try:
            await self.ctx.transfer_sip_participant(caller, target)
        except Exception as e:
            self.log.warning(f"transfer failed, hanging up instead: {e}")
            await self._hang_up(f"transfer to {target} failed")

    # ---- what the web app sees -----------------------------------------------------

    async def _state_publisher(self) -> None:
        """Publish the latest state attributes whenever they change.

        Attributes go to the server and back, slowly under load. Publishing
        here, off the lifecycle loop, keeps it out of the way of the fade; a
        burst of changes collapses into one update."""
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

    async def _plan_in_thread(self, attributes: dict[str, str]) -> CallPlan:
        # may decode a store added since start: off the event loop
        return await asyncio.to_thread(self.catalog.plan_for, attributes)

    async def _apply_store(self, attributes: dict[str, str]) -> None:
        """Resolve the store from the SIP participant, then play its audio and
        announcements and apply its limits. Never ends the call: on any error
        the default store's plan stays."""
        try:
            plan = await self._resolve_plan(attributes)
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
                    "dialled": attributes.get(SIP_TRUNK_PHONE_NUMBER),
                },
            )
        elif plan.store_id:
            self.log.info(
                f"store {plan.store_id} ({plan.matched_by})", extra={"store.id": plan.store_id}
            )
        playing = self.player is not None and self.player.running
        if self.lifecycle.state in (State.WAITING, State.HOLDING) and playing:
            assert self.player is not None
            await self.player.switch(plan.hold, CROSSFADE_MS)
            await self._start_announcements()
        self._state_dirty.set()
        if plan.store_id:
            await self._publish_room_metadata(plan)

    def _set_plan(self, plan: CallPlan) -> None:
        self.plan = plan
        self.lifecycle.policy = plan.policy  # per-store max wait and fallback
        self._events.put_nowait(Tick())  # the lifecycle re-reads its deadlines

    async def _start_announcements(self) -> None:
        if self.player is not None:
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
        meta[ROOM_META_STORE] = {
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
        handlers: list[tuple[EventTypes, Callable[..., Any]]] = [
            ("participant_connected", self._on_participant_connected),
            ("participant_disconnected", self._on_participant_disconnected),
            ("participant_attributes_changed", self._on_attributes_changed),
            ("track_published", self._on_track_published),
            ("track_subscribed", lambda _t, _pub, p: self._check_agent(p)),
            ("track_unsubscribed", lambda _t, _pub, p: self._check_agent(p)),
            ("track_muted", lambda p, _pub: self._check_agent(p)),
            ("track_unmuted", lambda p, _pub: self._check_agent(p)),
            ("track_unpublished", lambda _pub, p: self._check_agent(p)),
            ("disconnected", self._on_disconnected),
        ]
        for name, handler in handlers:
            self.room.on(name, handler)
        self._bound = handlers

    def _unbind_room_events(self) -> None:
        for name, handler in self._bound:
            with contextlib.suppress(Exception):
                self.room.off(name, handler)
        self._bound = []

    def _role(self, p: rtc.Participant) -> Role:
        if p is self.room.local_participant:
            return Role.UNKNOWN
        return classify(kind_name(p), p.identity, p.attributes, self.settings.agent_rule)

    def _on_participant_connected(self, p: rtc.RemoteParticipant) -> None:
        if p.identity in self._seen:
            return  # replayed after the publish, or a duplicate event
        self._seen.add(p.identity)
        role = self._role(p)
        if role is Role.CALLER and self._caller is None:
            self._caller = p.identity
            self._caller_masked = mask_number(p.attributes.get(SIP_PHONE_NUMBER))
            call_id = p.attributes.get(SIP_CALL_ID, "")
            self.log.extra = {"room": self.room.name, SIP_CALL_ID: call_id}
            self.ctx.log_context_fields = {**self.ctx.log_context_fields, SIP_CALL_ID: call_id}
            self.log.info("caller joined", extra={"caller": self._caller_masked})
            self._events.put_nowait(CallerJoined(p.identity))
            self._store_task = asyncio.create_task(
                self._apply_store(dict(p.attributes)), name="hold-store"
            )
            self._start_monitor(p.identity)
            if is_sip_hangup(p.attributes):
                self._events.put_nowait(CallerLeft("caller hung up before we saw them"))
        elif role is Role.HUMAN_AGENT:
            self._check_agent(p)
        elif role is not Role.CALLER:
            self.log.info(
                "participant joined, not a caller or agent: ignored",
                extra={"participant_kind": kind_name(p), "role": str(role)},
            )

    def _on_participant_disconnected(self, p: rtc.RemoteParticipant) -> None:
        self._seen.discard(p.identity)
        if p.identity == self._caller:
            self._events.put_nowait(CallerLeft("caller hung up"))
        elif p.identity in self._agents:
            self._agents.discard(p.identity)
            self._live.pop(p.identity, None)
            self.log.info("human agent left", extra={"agent": p.identity})
            self._events.put_nowait(AgentPresence(p.identity, present=False))

    def _on_attributes_changed(self, _changed: dict[str, str], p: rtc.Participant) -> None:
        if p.identity == self._caller and is_sip_hangup(p.attributes):
            self._events.put_nowait(CallerLeft("caller hung up (sip.callStatus=hangup)"))
        elif p is not self.room.local_participant:
            self._check_agent(p)  # type: ignore[arg-type]  # a role=agent attribute may just have arrived

    def _on_track_published(
        self, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        if self._quiet and pub.kind == rtc.TrackKind.KIND_AUDIO:
            _set_subscribed(pub, False, self.log)  # handed over: decode nothing
        self._check_agent(p)

    def _check_agent(self, p: rtc.RemoteParticipant) -> None:
        """A human agent: present (however recognised, whenever) and whether
        their audio is live. Both are events for the lifecycle."""
        if p.identity not in self._agents:
            if p.identity == self._caller or self._role(p) is not Role.HUMAN_AGENT:
                return
            if p.identity not in self.room.remote_participants:
                return  # an event for someone who has left already
            self._agents.add(p.identity)
            self._seen.add(p.identity)
            self.log.info("human agent joined", extra={"agent": p.identity})
            self._events.put_nowait(AgentPresence(p.identity, present=True))
        live = audio_live(p)
        if self._live.get(p.identity, False) != live:
            self._live[p.identity] = live
            self._events.put_nowait(AgentAudio(p.identity, live=live))

    # ---- media: one-way audio verdicts ----------------------------------------

    def _start_monitor(self, caller: str) -> None:
        if self.monitor is not None:
            return
        thresholds: Thresholds = self.settings.media_thresholds
        self.monitor = self._make_monitor(
            self.room,
            caller,
            joined_at=self.clock(),
            thresholds=thresholds,
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
            MEDIA_VERDICT: v.name,
            ATTR_MEDIA_IN: str(v.inbound),
            ATTR_MEDIA_OUT: str(v.outbound),
            ATTR_MEDIA_REASON: v.reason,
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
            {
                "type": MEDIA_MESSAGE_TYPE,
                "room": self.room.name,
                "at": int(time.time() * 1000),
                **fields,
            }
        )
        self._spawn(self._send_data(payload), "hold-media-data")
        if v.inbound is not Inbound.PENDING or v.outbound is not Outbound.PENDING:
            self._events.put_nowait(MediaHealth(ok=not bad, verdict=v.name))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_data(self, payload: str) -> None:
        if not self.room.isconnected():
            return
        try:
            await self.room.local_participant.publish_data(
                payload, reliable=True, topic=self.settings.media_topic
            )
        except Exception as e:  # the attributes carry the same; never end a call over it
            self.log.warning(f"could not send the media data message: {e}")

    async def _watch_drain(self) -> None:
        """Tell the lifecycle once the worker starts draining (SIGTERM)."""
        assert self._is_draining is not None
        while not self._is_draining():
            await asyncio.sleep(DRAIN_POLL_S)
        self.log.info("worker draining: leaving once the call is handed over")
        self._events.put_nowait(Draining())

    def _on_disconnected(self, reason: Any) -> None:
        self._events.put_nowait(RoomClosed(f"room disconnected ({reason})"))

    # ---- teardown, in reverse order of acquisition ------------------------------

    async def _close(self) -> None:
        """Release everything; a failure of one part never stops the rest, and
        the final state is always published (`done`, or the unfinished state
        the guardian acts on if the call ended by an error)."""
        if self.lifecycle.state is not State.DONE:  # ended by an error, not by the lifecycle
            metrics.CALLS.labels(state=str(self.lifecycle.state)).dec()
        self._unbind_room_events()
        await self._cancel_fade()
        if self._store_task is not None:
            await _stop(self._store_task, self.log)
        if self.monitor is not None:
            monitor, self.monitor = self.monitor, None
            await _quietly(monitor.aclose(), self.log)
        for task in (self._state_task, self._drain_task):
            if task is not None:
                await _stop(task, self.log)
        for task in list(self._tasks):
            await _stop(task, self.log)
        try:
            await asyncio.wait_for(self._publish_state(), 2.0)
        except Exception as e:  # TimeoutError included
            self.log.warning(f"could not publish the final state: {type(e).__name__}")
        await self._unpublish()
        self.log.info(f"call ended: {self.lifecycle.end_reason or 'error'}")


async def _stop(task: asyncio.Task[None], log: logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
    """Cancel a task and wait for it; whatever it raised is logged, not raised."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():  # we were cancelled ourselves
            raise
    except Exception as e:
        log.error(f"{task.get_name()} had failed: {type(e).__name__}: {e}")


async def _quietly(aw: Awaitable[None], log: logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
    try:
        await aw
    except Exception as e:
        log.error(f"teardown step failed: {type(e).__name__}: {e}")


def _set_subscribed(pub: rtc.RemoteTrackPublication, on: bool, log: logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
    try:
        pub.set_subscribed(on)
    except Exception as e:  # best effort: costs CPU, never the call
        log.warning(f"could not change a subscription: {e}")
