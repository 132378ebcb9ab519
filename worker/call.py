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

The parts around it, each testable with the fake room (tests/unit/fakeroom.py):
room_events.py translates room events into lifecycle events, hold/track.py
owns the hold track and its player, publisher.py publishes what others see.
This file carries out the lifecycle's actions; it holds no rules of its own.
The room, the job context, the player and the media monitor come in through
small seams (`ctx`, `make_player`, `make_monitor`, `resolve_plan`), so tests
run a whole call against a fake room (tests/unit/test_call_model.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from livekit import api, rtc
from livekit.agents import AutoSubscribe, JobContext

from . import ffi_fanout
from .aio import quietly, stop_task
from .announcer import PositionAnnouncer
from .catalog import CROSSFADE_MS, CallPlan, StoreCatalog
from .hold.audio import SAMPLE_RATE
from .hold.dsp import Audio
from .hold.player import HoldPlayer
from .hold.track import HoldTrack
from .keypad import (
    CALLBACK_DONE,
    NO_AGENTS_GOODBYE,
    CallbackConfirmed,
    Cancelled,
    KeyAction,
    KeypadMenu,
    ReadBack,
    ToOperator,
    offer,
)
from .lifecycle import (
    Action,
    AgentsSignedIn,
    CallerChose,
    CallLifecycle,
    Draining,
    Event,
    FadeDone,
    HandOver,
    HangUp,
    HoldFailed,
    HoldForAgent,
    Leave,
    MediaHealth,
    OfferCallback,
    RepublishHold,
    ResumeForAgent,
    ResumeHold,
    RoomClosed,
    Settle,
    StartFade,
    State,
    StateChanged,
    Tick,
    Transfer,
)
from .media import metrics
from .media.detector import Inbound, Outbound, Thresholds, Verdict
from .media.levels import LevelWindow
from .media.monitor import InboundStats, MediaMonitor, audio_levels
from .protocol import (
    ATTR_MEDIA_IN,
    ATTR_MEDIA_OUT,
    ATTR_MEDIA_REASON,
    MEDIA_VERDICT,
    SIP_CALL_ID,
    SIP_TRUNK_PHONE_NUMBER,
)
from .publisher import CallPublisher, CallView, RoomSink, Sink
from .registry import Registry, RegistrySink
from .room_events import RoomEvents, set_subscribed
from .settings import Settings

logger = logging.getLogger("hold-worker.call")

# Waits before the 2nd and 3rd attempt to publish the hold track.
PUBLISH_RETRY_DELAYS_S = (0.5, 1.0)
# A hold player that dies is replaced; more often than this in one call and
# the caller is hung up instead (something is badly wrong with the process).
MAX_PLAYER_RECOVERIES = 3
DRAIN_POLL_S = 1.0  # how often a call checks whether its worker is draining

MonitorFactory = Callable[..., Any]


class CallLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A LoggerAdapter that merges a call's `extra=` fields with its own.

    The standard adapter replaces them on Python 3.11 (3.13 added
    `merge_extra`), so every structured field of a call was silently dropped."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class _PlayerDied:
    """Internal queue item: the hold player's task failed."""


class _Key:
    """Internal queue item: a keypad digit from this call's caller."""

    def __init__(self, digit: str) -> None:
        self.digit = digit


REGISTRY_TIMEOUT_S = 2.0  # a callback request not stored by then is given up (music again)
AGENTS_POLL_S = 5.0  # how often a store with a maximum wait without agents asks who is in
# after a keypad prompt's last sample: the duck's ramp back up and the path to the caller
PROMPT_TAIL_S = 0.6


def _goodbye(reason: str) -> CallerChose:
    """The end of a maximum wait's callback offer not taken: the goodbye, then hang up."""
    return CallerChose("hangup", reason, goodbye=NO_AGENTS_GOODBYE)


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
        sinks: list[Sink] | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.ctx = ctx
        self.room = ctx.room
        self.settings = settings
        self.clock = clock
        self.catalog = catalog
        self._make_monitor = make_monitor
        self._resolve_plan = resolve_plan or self._plan_in_thread
        self._is_draining = is_draining
        self._drain_task: asyncio.Task[None] | None = None
        self.log = CallLog(logger, {"room": self.room.name})
        self._events: asyncio.Queue[Event | _PlayerDied | _Key] = asyncio.Queue()
        # Until the caller's SIP participant says which store was called: the
        # default store's audio (or HOLD_AUDIO), no announcement yet.
        self.plan = catalog.default_plan()
        self.hold = HoldTrack(
            self.room,
            make_player or HoldPlayer,
            chunk_ms=settings.chunk_ms,
            on_failure=lambda _e: self._events.put_nowait(_PlayerDied()),
            retry_delays=publish_retry_delays,
            log=self.log,
            red=settings.track_red,
            dtx=settings.track_dtx,
            max_bitrate=settings.track_max_bitrate,
        )
        self.hold.prepare(self.plan.hold)  # decoded and ready before the room connects
        self.lifecycle = CallLifecycle(started_at=clock(), policy=self.plan.policy)
        self.people = RoomEvents(
            self.room,
            settings.agent_rule,
            self.log,
            emit=self._events.put_nowait,
            on_caller=self._on_caller,
            on_audio_published=self._on_audio_published,
            on_key=lambda digit: self._events.put_nowait(_Key(digit)),
        )
        self.registry = registry
        self.keypad: KeypadMenu | None = None  # the store's keypad options, once known
        self._agents_task: asyncio.Task[None] | None = None
        self.record: RegistrySink | None = None  # the call in the registry (HOLD_REDIS_URL)
        if registry is not None:
            self.record = RegistrySink(
                registry,
                self.room,
                on_taken_over=self._on_taken_over,
                log=self.log,
                agent_name=settings.agent_name,
                agent_prefix=settings.agent_identity_prefix,
            )
        # "You are caller number 3 ...": needs the registry (the caller's place in line)
        self.announcer: PositionAnnouncer | None = None
        if registry is not None and self.record is not None:
            self.announcer = PositionAnnouncer(
                registry,
                self.record.cid,
                plan=lambda: self.plan.position if self._store_known else None,
                holding=lambda: (
                    self._holding_for_agent()
                    and (self.keypad is None or self.keypad.state == "idle")
                ),
                hold_since_ms=lambda: self._hold_since_ms,
                say=self._say,
                log=self.log,
                clock=clock,
            )
        self.publisher = CallPublisher(
            [
                RoomSink(self.room, lambda: ctx.api, settings.media_topic, self.log),
                *([self.record] if self.record else []),
                *(sinks or []),
            ],
            self.view,
            self.log,
        )
        self._orphaned = False  # given up with the caller still there (see _close)
        self._taken_over = False  # the registry says another worker holds the call
        self._side: set[asyncio.Task[None]] = set()  # subscription changes in flight
        self._subscriptions = asyncio.Lock()  # the caller's subscriptions, one change at a time
        self.monitor: Any = None  # MediaMonitor while watching the caller's media
        self._media: Verdict | None = None
        self._store_task: asyncio.Task[None] | None = None
        self._store_known = False  # store attributes only once resolved
        self._fade_task: asyncio.Task[None] | None = None
        self._recoveries = 0
        self._hold_since_ms = 0

    # ---- the call, top to bottom ---------------------------------------------

    async def run(self) -> str:
        t0 = self.clock()
        self.people.bind()
        try:
            await self.ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
            if self.settings.ffi_narrow and isinstance(self.room, rtc.Room):
                ffi_fanout.narrow(self.room)  # this call's events to this call only
            metrics.CALLS.labels(state=str(State.WAITING)).inc()
            if await self._bring_up_hold():
                self.log.info(
                    "hold audio published",
                    extra={"publish_ms": round((self.clock() - t0) * 1000)},
                )
            self.people.register_controls()
            self.publisher.start()
            if self.announcer is not None:
                self.announcer.start()
            if self._is_draining is not None:
                self._drain_task = asyncio.create_task(self._watch_drain(), name="hold-drain")
            self.people.catch_up()
            await self._run_lifecycle()
        finally:
            await self._close()
        return self.lifecycle.end_reason

    async def _run_lifecycle(self) -> None:
        while self.lifecycle.state is not State.DONE:
            keys_due = self.keypad.deadline if self.keypad is not None else None
            due = (self.lifecycle.next_deadline(), keys_due)
            deadline = min((d for d in due if d is not None), default=None)
            # at least 1 ms: a wait shorter than the clock's resolution could
            # wake a hair before the deadline, over and over, without time passing
            timeout = None if deadline is None else max(0.001, deadline - self.clock())
            item: Event | _PlayerDied | _Key
            try:
                async with asyncio.timeout(timeout):  # not wait_for: see aio.py
                    item = await self._events.get()
            except TimeoutError:
                item = Tick()
            if isinstance(item, _PlayerDied):
                await self._recover_player()
                continue
            if isinstance(item, _Key):
                await self._on_key(item.digit)
                continue
            if isinstance(item, Tick) and self.keypad is not None:
                await self._keypad_action(self.keypad.tick(self.clock()))
            for action in self.lifecycle.handle(item, self.clock()):
                await self._do(action)

    def view(self) -> CallView:
        """The call as others see it (publisher.py)."""
        return CallView(
            state=self.lifecycle.state,
            hold_since_ms=self._hold_since_ms,
            caller_masked=self.people.caller_masked,
            media=self._media,
            store=self.plan if self._store_known else None,
            caller_number=self.people.caller_number,
            orphaned=self._orphaned,
            agents_left=tuple(self.people.agents_left.items()),
            end_reason=self.lifecycle.end_reason,
        )

    def _on_taken_over(self) -> None:
        """The registry says another worker holds this call now (we were
        paused or cut off long enough for a guardian to move it): leave at once,
        hang up nobody."""
        self._taken_over = True
        self._events.put_nowait(RoomClosed("taken over by another worker"))

    # ---- carrying out the lifecycle's decisions ------------------------------

    async def _do(self, action: Action) -> None:
        if isinstance(action, StateChanged):
            if action.state is State.HOLDING and action.previous is State.WAITING:
                self._hold_since_ms = int(time.time() * 1000)
            self.log.info(f"state {action.previous} -> {action.state}")
            metrics.CALLS.labels(state=str(action.previous)).dec()
            if action.state is not State.DONE:
                metrics.CALLS.labels(state=str(action.state)).inc()
            self.publisher.changed()  # published off the lifecycle loop, never in the audio path
            if self.announcer is not None:
                self.announcer.update(self.clock())
        elif isinstance(action, StartFade):
            self.log.info("agent audio live, fading hold audio out", extra={"agent": action.agent})
            await self._cancel_fade()
            self._fade_task = asyncio.create_task(self._fade(action.fade_id), name="hold-fade")
        elif isinstance(action, ResumeHold):
            self.log.info("no agent audio any more, resuming hold audio")
            await self._cancel_fade()
            if self.hold.player is not None:
                await self.hold.player.resume(self.settings.fade_ms)
        elif isinstance(action, Settle):
            self.log.info("hold audio faded out under the agent", extra={"agent": action.agent})
        elif isinstance(action, HandOver):
            metrics.HANDOFFS.inc()
            await self._cancel_fade()
            await self.hold.unpublish()
            if action.stay:
                await self._go_quiet()
                self.log.info("handed over, staying in the room", extra={"agent": action.agent})
            else:
                self.log.info("handed over", extra={"agent": action.agent})
        elif isinstance(action, RepublishHold):
            self.log.info("every agent left or went quiet, bringing hold audio back")
            await self._cancel_fade()
            self._wake_up()
            if self.hold.published and self.hold.player is not None:
                await self.hold.player.resume(self.settings.fade_ms)
            else:
                await self._bring_up_hold(fade_in_ms=self.settings.fade_ms)
        elif isinstance(action, HoldForAgent):
            self.log.info("on hold by the agent: hold audio back", extra={"agent": action.agent})
            # the store is cut off first: a slow or retried publication of the
            # hold track must not leave the caller hearing the shop floor
            await self._caller_hears_agents(False)
            await self._cancel_fade()
            if self.hold.published and self.hold.player is not None:
                await self.hold.player.resume(self.settings.fade_ms)
            else:
                self._wake_up()
                await self._bring_up_hold(fade_in_ms=self.settings.fade_ms)
        elif isinstance(action, ResumeForAgent):
            self.log.info("the agent resumes the call", extra={"agent": action.agent})
            await self._caller_hears_agents(True)
        elif isinstance(action, HangUp):
            if action.goodbye:
                await self._say_and_wait(action.goodbye)
            await self._hang_up(action.reason)
        elif isinstance(action, OfferCallback):
            await self._offer_callback(action.reason)
        elif isinstance(action, Transfer):
            await self._transfer(action.target, action.reason)
        elif isinstance(action, Leave):
            self.log.info(f"leaving: {action.reason}")

    # ---- the hold track --------------------------------------------------------

    async def _bring_up_hold(self, fade_in_ms: int = 0, *, silent: bool = False) -> bool:
        """Publish the hold track; on failure tell the lifecycle (which hangs
        up the caller rather than leave them in silence)."""
        try:
            self.hold.prepare(self.plan.hold)
            if self.people.caller is not None and not self.hold.announcing:
                await self.hold.announce(self.plan.announcement)
            await self.hold.publish(self.plan.hold, fade_in_ms, silent=silent)
            return True
        except Exception as e:
            self.log.error(f"could not publish the hold audio: {type(e).__name__}: {e}")
            await self.hold.unpublish()
            self._events.put_nowait(HoldFailed(f"hold audio could not be published ({e})"))
            return False

    async def _recover_player(self) -> None:
        """The hold player died: replace it, at the level the caller should hear."""
        state = self.lifecycle.state
        if not self.hold.published or state in (State.MONITORING, State.DONE):
            return  # nothing was playing
        self._recoveries += 1
        self.log.error(f"hold audio player died, replacing it ({self._recoveries})")
        # A fade in flight ends by itself: the dead player counts as silent.
        under_agent = state in (State.HANDING_OFF, State.SETTLING)
        await self.hold.unpublish()
        if self._recoveries > MAX_PLAYER_RECOVERIES:
            self._events.put_nowait(HoldFailed("hold audio player keeps failing"))
            return
        await self._bring_up_hold(self.settings.fade_ms, silent=under_agent)

    async def _say(self, samples: Audio) -> None:
        """A one-shot announcement (the caller's position) over the ducked music."""
        if self.hold.player is not None:
            await self.hold.player.play_once(samples, duck_db=self.settings.announcement_duck_db)

    async def _fade(self, fade_id: int) -> None:
        if self.hold.player is not None:
            await self.hold.player.fade_out(self.settings.fade_ms)
        self._events.put_nowait(FadeDone(fade_id))

    async def _cancel_fade(self) -> None:
        task, self._fade_task = self._fade_task, None
        if task is not None:
            await stop_task(task, self.log)

    # ---- after the handoff: in the room at near-zero cost ---------------------

    async def _go_quiet(self) -> None:
        """No published track (done by HandOver), no media subscriptions: only
        room events, which is all it takes to notice every agent leaving."""
        if self.settings.monitor_after_handoff:
            return  # still watching the caller's media, by request
        self.people.quiet = True
        await self._stop_monitor()
        for pub in self.people.audio_publications():
            set_subscribed(pub, False, self.log)

    def _wake_up(self) -> None:
        """Back on hold after the handoff: subscribe to the caller again and
        watch their media."""
        if not self.people.quiet:
            return
        self.people.quiet = False
        for pub in self.people.audio_publications(self.people.caller):
            set_subscribed(pub, True, self.log)
        if self.people.caller is not None:
            self._start_monitor(self.people.caller)

    # ---- an agent's hold: the caller must not hear the store -------------------

    def _agent_audio_sids(self) -> list[str]:
        caller = self.people.caller
        return [
            pub.sid
            for identity, p in self.room.remote_participants.items()
            if identity != caller
            for pub in p.track_publications.values()
            if pub.kind == rtc.TrackKind.KIND_AUDIO
        ]

    async def _caller_hears_agents(
        self, on: bool, sids: list[str] | None = None, *, if_on_hold: bool = False
    ) -> None:
        """Subscribe the caller's SIP participant to the agents' audio, or not
        (LiveKit's server-side UpdateSubscriptions: livekit-sip then mixes
        only what it is subscribed to). One change at a time, in order: a cut
        of a newly published track (`if_on_hold`) that comes after a resume
        finds the hold over and changes nothing."""
        async with self._subscriptions:
            if if_on_hold and self.lifecycle.state is not State.ON_HOLD:
                return
            await self._update_subscriptions(on, sids)

    async def _update_subscriptions(self, on: bool, sids: list[str] | None) -> None:
        caller = self.people.caller
        sids = self._agent_audio_sids() if sids is None else sids
        if caller is None or not sids:
            return
        try:
            await self.ctx.api.room.update_subscriptions(
                api.UpdateSubscriptionsRequest(
                    room=self.room.name, identity=caller, track_sids=sids, subscribe=on
                )
            )
        except Exception as e:  # the hold audio plays either way
            self.log.warning(f"could not change what the caller hears: {type(e).__name__}: {e}")

    def _on_audio_published(
        self, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        """A track published (or brought in by someone joining) while the caller
        is on hold is cut from them too."""
        if self.lifecycle.state is State.ON_HOLD and p.identity != self.people.caller:
            task = asyncio.create_task(
                self._caller_hears_agents(False, [pub.sid], if_on_hold=True), name="hold-cut"
            )
            self._side.add(task)
            task.add_done_callback(self._side.discard)

    # ---- the caller's keypad (keypad.py) -------------------------------------------

    async def _on_key(self, digit: str) -> None:
        """A digit from this call's caller (room_events.py drops anyone else's)."""
        if self.keypad is None:
            return  # the store offers no keypad options: today's behaviour
        await self._keypad_action(
            self.keypad.key(digit, self.clock(), active=self._holding_for_agent())
        )

    def _holding_for_agent(self) -> bool:
        """The caller waits for an agent and hears the music: keys and
        position announcements mean something only now."""
        return self.lifecycle.state is State.HOLDING and self.hold.playing

    async def _choose(self, choice: CallerChose) -> None:
        """What the caller chose with a key is carried out at once, before the
        events queued since: an agent answering while the callback request
        was being stored must not leave a stored request and a call that goes
        on (the lifecycle drops a choice once an agent has the call)."""
        for action in self.lifecycle.handle(choice, self.clock()):
            await self._do(action)

    async def _keypad_action(self, action: KeyAction | None) -> None:
        if action is None or self.keypad is None:
            return  # an unknown key, or nothing due: ignored
        await self._cut_prompt()  # a key that does something cuts what is being said
        if isinstance(action, ReadBack):
            self.log.info("keypad: callback asked, reading the number back")
            await self._say_keys(action.sentences)
        elif isinstance(action, Cancelled):
            self.log.info(f"keypad: callback cancelled ({action.why})")
            if self.lifecycle.offered_at is not None:  # the maximum wait's offer, declined
                await self._choose(_goodbye("no callback after the maximum wait's offer"))
            elif self.announcer is not None:
                self.announcer.update(self.clock())
        elif isinstance(action, CallbackConfirmed):
            if await self._request_callback():
                await self._choose(
                    CallerChose("hangup", "callback requested", goodbye=CALLBACK_DONE)
                )
            else:
                self.keypad.not_stored()  # the caller keeps waiting
        elif isinstance(action, ToOperator):
            self.log.info(
                "keypad: the caller asks for the operator", extra={"target": action.target}
            )
            await self._choose(
                CallerChose("transfer", "caller asked for the operator", target=action.target)
            )

    async def _request_callback(self) -> bool:
        """Store the request in the registry (the desk shows it and sends the
        store's webhook); False if it could not be stored."""
        plan = self.plan.keypad
        if self.registry is None or self.record is None or plan is None:
            return False
        now_ms = int(time.time() * 1000)
        entry: dict[str, Any] = {
            "id": secrets.token_hex(8),
            "store": self.plan.store_id,
            "cid": self.record.cid,
            "caller": self.people.caller_masked,
            "waited_ms": max(0, now_ms - self._hold_since_ms) if self._hold_since_ms else 0,
        }
        if plan.full_number and self.people.caller_number:
            entry["number"] = self.people.caller_number  # never logged
        try:
            async with asyncio.timeout(REGISTRY_TIMEOUT_S):
                await self.registry.request_callback(entry)
        except Exception as e:
            self.log.error(f"keypad: the callback request could not be stored: {type(e).__name__}")
            return False
        self.log.info(
            "keypad: callback requested",
            extra={"callback.id": entry["id"], "store.id": entry["store"]},
        )
        return True

    async def _offer_callback(self, reason: str) -> None:
        """The maximum wait's callback offer: the number read back and how to
        confirm; no number (withheld) or no keypad prompts: the goodbye."""
        kp = self.keypad
        if kp is None or not kp.callback_possible():
            # inside the lifecycle's action: queued, handled next
            self._events.put_nowait(_goodbye(reason))
            return
        self.log.info(f"{reason}: offering a callback")
        read = kp.start_confirming(self.clock())
        await self._cut_prompt()
        await self._say_keys([*offer(kp.confirm_key), read.sentences[0]])

    async def _cut_prompt(self) -> None:
        if self.hold.player is not None:
            await self.hold.player.cut_once()

    async def _say_keys(self, sentences: list[list[str]]) -> None:
        """Say keypad prompts; the time to answer counts from their end."""
        plan = self.plan.keypad
        if plan is None:
            return
        samples = plan.prompts.compose(sentences)
        await self._say(samples)
        if self.keypad is not None:
            self.keypad.prompt_ends(self.clock() + samples.shape[0] / SAMPLE_RATE + PROMPT_TAIL_S)

    async def _say_and_wait(self, key: str) -> None:
        """Say one keypad prompt (a goodbye) and wait until it has been heard;
        nothing when the store has no keypad prompts."""
        plan = self.plan.keypad
        if plan is None or key not in plan.prompts.audio or not self.hold.playing:
            return
        samples = plan.prompts.audio[key]
        await self._cut_prompt()
        await self._say(samples)
        await asyncio.sleep(samples.shape[0] / SAMPLE_RATE + PROMPT_TAIL_S)

    async def _watch_agents(self) -> None:
        """Who of the store's agents is signed in (the desk saw them lately):
        chooses between the two maximum waits."""
        assert self.registry is not None
        last: int | None = None
        while True:
            try:
                async with asyncio.timeout(REGISTRY_TIMEOUT_S):
                    n: int | None = await self.registry.agents_signed_in(
                        self.plan.store_id, self.settings.desk_signed_in_s * 1000
                    )
            except Exception:
                n = None  # not known: the ordinary maximum wait applies
            if n != last:
                last = n
                self._events.put_nowait(AgentsSignedIn(n))
            await asyncio.sleep(AGENTS_POLL_S)

    # ---- hanging up and transferring ---------------------------------------------

    async def _hang_up(self, reason: str) -> None:
        caller = self.people.caller
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
        caller = self.people.caller
        self.log.info(f"transferring the caller: {reason}", extra={"target": target})
        if caller is None:
            return
        try:
            await self.ctx.transfer_sip_participant(caller, target)
        except Exception as e:
            self.log.warning(f"transfer failed, hanging up instead: {e}")
            await self._hang_up(f"transfer to {target} failed")

    # ---- the caller arrived: their store and their media --------------------------

    def _on_caller(self, p: rtc.RemoteParticipant) -> None:
        call_id = p.attributes.get(SIP_CALL_ID, "")
        self.ctx.log_context_fields = {**self.ctx.log_context_fields, SIP_CALL_ID: call_id}
        self._store_task = asyncio.create_task(
            self._apply_store(dict(p.attributes)), name="hold-store"
        )
        self._start_monitor(p.identity)

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
        self.plan = plan
        self.lifecycle.policy = plan.policy  # per-store max wait and fallback
        if plan.keypad is not None:
            kp = plan.keypad
            self.keypad = KeypadMenu(
                callback_key=kp.settings.callback_key,
                confirm_key=kp.settings.confirm_key,
                confirm_timeout_s=kp.settings.confirm_timeout_s,
                operator_key=kp.settings.operator_key,
                operator_target=kp.operator_target,
                caller_number=self.people.caller_number,
            )
        if (
            plan.policy.max_wait_no_agents > 0
            and self.registry is not None
            and self._agents_task is None
        ):
            self._agents_task = asyncio.create_task(self._watch_agents(), name="hold-agents")
        self._events.put_nowait(Tick())  # the lifecycle re-reads its deadlines
        self._store_known = True
        if self.announcer is not None:
            self.announcer.update(self.clock())
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
        if self.lifecycle.state in (State.WAITING, State.HOLDING) and self.hold.playing:
            assert self.hold.player is not None
            await self.hold.player.switch(plan.hold, CROSSFADE_MS)
            await self.hold.announce(plan.announcement)
        await self.publisher.store_known()

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
            levels=audio_levels if self.settings.media_levels == "stream" else None,
            poll_s=self.settings.media_poll_s,
        )
        self.monitor.start()

    async def _stop_monitor(self) -> None:
        if self.monitor is not None:
            monitor, self.monitor = self.monitor, None
            await quietly(monitor.aclose(), self.log)

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
        self.publisher.media(fields)
        if v.inbound is not Inbound.PENDING or v.outbound is not Outbound.PENDING:
            self._events.put_nowait(MediaHealth(ok=not bad, verdict=v.name))

    async def _watch_drain(self) -> None:
        """Tell the lifecycle once the worker starts draining (SIGTERM)."""
        assert self._is_draining is not None
        while not self._is_draining():
            await asyncio.sleep(DRAIN_POLL_S)
        self.log.info("worker draining: leaving once the call is handed over")
        self._events.put_nowait(Draining())

    # ---- teardown, in reverse order of acquisition ------------------------------

    async def _close(self) -> None:
        """Release everything; a failure of one part never stops the rest, and
        the final state is always published (`done`, or the unfinished state
        the guardian acts on if the call ended by an error)."""
        unfinished = self.lifecycle.state is not State.DONE  # an error, a cancellation
        if unfinished:
            metrics.CALLS.labels(state=str(self.lifecycle.state)).dec()
        # given up without the caller having left (perhaps before we even saw
        # them): the registry makes the call stale at once, and a guardian
        # looks whether a caller is there to move
        self._orphaned = (
            (unfinished or self.people.room_lost)
            and not self._taken_over
            and not self.people.caller_gone
        )
        self.people.unbind()
        if self.announcer is not None:
            await self.announcer.aclose()
        await self._cancel_fade()
        if self._store_task is not None:
            await stop_task(self._store_task, self.log)
        await self._stop_monitor()
        if self._drain_task is not None:
            await stop_task(self._drain_task, self.log)
        if self._agents_task is not None:
            await stop_task(self._agents_task, self.log)
        for task in list(self._side):
            await stop_task(task, self.log)
        await self.publisher.aclose()
        await self.hold.unpublish()
        self.log.info(f"call ended: {self.lifecycle.end_reason or 'error'}")
