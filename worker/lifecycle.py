"""The life of one held call as a pure state machine.

    WAITING ──caller joins──► HOLDING ──agent audio live──► HANDING_OFF ──fade done──► SETTLING
       │                        ▲  ▲                          │                          │
       │ no caller in time      │  └──no agent audio any more─┘◄──no agent audio────────┘
       ▼                        │                                          settle time │
     DONE                       └───every agent left, or quiet too long─── MONITORING ◄┘
                                                          (or DONE with leave_after_handoff)
                 max wait, or broken media for long enough (optional action):
                 hang up / transfer ─► DONE;  caller hangs up (any state) ─► DONE;
                 hold audio cannot be published ─► hang up the caller ─► DONE

    An agent who has the call (HANDING_OFF, SETTLING, MONITORING) may put the
    caller on hold: ─► ON_HOLD (hold audio back, every agent's audio cut from
    the caller, live agent audio does not fade it); resume ─► the agents heard
    again and the fade ─► HANDING_OFF (HOLDING if no agent audio is live);
    every agent gone while ON_HOLD ─► HOLDING (what was cut given back).

The adapter (call.py) keeps the hold track published (silent) through
SETTLING, so hold audio comes back at once if the agent drops right after
taking the call; on MONITORING (HandOver) it unpublishes the track and drops
its media subscriptions, and it publishes the track again on RepublishHold.

Events go in with the time they happened; actions come out for the adapter
to carry out. Deadlines are data (durations come from the `CallPolicy`):
`next_deadline()` says when the adapter must deliver a `Tick`.
Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from .keypad import NO_AGENTS_GOODBYE


class State(StrEnum):
    WAITING = "waiting"  # in the room, hold track published, no caller yet
    HOLDING = "holding"  # caller present, hearing hold audio
    HANDING_OFF = "handing_off"  # fading hold audio out under the agent
    SETTLING = "settling"  # just handed over: silent, ready to resume at once
    MONITORING = "monitoring"  # handed over, still in the room, silent, watching events
    ON_HOLD = "on_hold"  # an agent put the caller on hold: hold audio, agents cut off
    DONE = "done"  # left (or leaving); nothing more happens


# ---- events -----------------------------------------------------------------


@dataclass(frozen=True)
class CallerJoined:
    identity: str


@dataclass(frozen=True)
class CallerLeft:
    reason: str = "caller hung up"


@dataclass(frozen=True)
class AgentAudio:
    """A human agent's audio is live (subscribed, unmuted) or not any more."""

    identity: str
    live: bool


@dataclass(frozen=True)
class AgentPresence:
    """A human agent joined (present=True) or left the room."""

    identity: str
    present: bool


@dataclass(frozen=True)
class MediaHealth:
    """The one-way audio detector's opinion of the caller's media changed."""

    ok: bool
    verdict: str


@dataclass(frozen=True)
class FadeDone:
    fade_id: int


@dataclass(frozen=True)
class Tick:
    """Time has passed; timers may be due."""


@dataclass(frozen=True)
class RoomClosed:
    reason: str = "room closed"


@dataclass(frozen=True)
class Draining:
    """The worker is shutting down (SIGTERM): calls still on hold are kept
    until handed over; handed-over calls are left to their agents (the
    guardian brings hold back from another worker if every agent leaves)."""


@dataclass(frozen=True)
class HoldFailed:
    """Hold audio could not be published (or its player died and could not be
    brought back): the caller must not be left in silence, so hang up."""

    reason: str


@dataclass(frozen=True)
class AgentHold:
    """An agent asks to put the caller on hold (hold=True) or to resume."""

    agent: str
    hold: bool


@dataclass(frozen=True)
class CallerChose:
    """The caller's keypad (keypad.py) ends the call: a confirmed callback
    (hang up, after a goodbye) or the operator (transfer to `target`)."""

    action: Literal["hangup", "transfer"]
    reason: str
    target: str = ""
    goodbye: str = ""  # the prompt (keypad.py) said before hanging up


@dataclass(frozen=True)
class AgentsSignedIn:
    """How many of the store's agents the desk has seen lately (None: not
    known, no registry). Chooses which maximum wait applies."""

    count: int | None


Event = (
    AgentHold
    | CallerChose
    | AgentsSignedIn
    | CallerJoined
    | CallerLeft
    | AgentAudio
    | AgentPresence
    | MediaHealth
    | FadeDone
    | Tick
    | RoomClosed
    | HoldFailed
    | Draining
)


# ---- actions ----------------------------------------------------------------


@dataclass(frozen=True)
class StartFade:
    fade_id: int
    agent: str


@dataclass(frozen=True)
class ResumeHold:
    pass


@dataclass(frozen=True)
class Settle:
    """Fade finished: stay silent with the hold track still published, ready
    to resume at once, until the settle time has passed."""

    agent: str


@dataclass(frozen=True)
class HandOver:
    """The handoff is confirmed: unpublish the hold track and stay in the room
    (cheaply) unless `stay` is False, in which case the adapter leaves."""

    agent: str
    stay: bool = True


@dataclass(frozen=True)
class RepublishHold:
    """Every agent left (or went quiet too long) after the handoff: publish
    hold audio again, faded in."""


@dataclass(frozen=True)
class HoldForAgent:
    """An agent put the caller on hold: hold audio back (faded in, published
    again if need be) and every agent's audio cut from the caller."""

    agent: str


@dataclass(frozen=True)
class ResumeForAgent:
    """The agent resumes: the caller hears the agents again (a fade of the hold
    audio follows when their audio is live)."""

    agent: str


@dataclass(frozen=True)
class HangUp:
    reason: str
    goodbye: str = ""  # a prompt (keypad.py) said first, where the store has it


@dataclass(frozen=True)
class OfferCallback:
    """The maximum wait passed and the store offers a callback: the caller
    hears the offer and confirms with a key; no answer ends the call with a
    goodbye (the call's keypad sends CallerChose either way)."""

    reason: str


@dataclass(frozen=True)
class Transfer:
    target: str
    reason: str


@dataclass(frozen=True)
class Leave:
    reason: str


@dataclass(frozen=True)
class StateChanged:
    state: State
    previous: State


Action = (
    HoldForAgent
    | ResumeForAgent
    | StartFade
    | ResumeHold
    | Settle
    | HandOver
    | RepublishHold
    | HangUp
    | OfferCallback
    | Transfer
    | Leave
    | StateChanged
)

# callback: offer a callback (the store's keypad); hangup: after a goodbye
# prompt where the store has one
MaxWaitAction = Literal["hangup", "transfer", "callback"]
MediaAction = Literal["none", "hangup", "transfer"]


@dataclass(frozen=True)
class CallPolicy:
    """How one call is run: its deadlines, what to do when they pass (hang up or
    transfer, and where to), and whether to stay in the room after the handoff.
    Per store: the catalog builds it from the settings and the store map."""

    caller_join_timeout: float = 30.0  # seconds in WAITING before giving up
    max_wait: float = 0.0  # seconds on hold before the fallback; 0 = off
    max_wait_action: MaxWaitAction = "hangup"
    # with none of the store's agents signed in (AgentsSignedIn(0)): this
    # maximum wait instead, and its own action; 0 = max_wait applies throughout
    max_wait_no_agents: float = 0.0
    no_agents_action: MaxWaitAction = "hangup"
    transfer_target: str = ""
    # After the fade, stay this long with the silent hold track published: an
    # agent who drops or mutes right after taking the call gets the caller
    # back on hold at once.
    handoff_settle: float = 3.0
    # After the settle time: leave the room (the old behaviour) instead of
    # staying, unpublished, to bring hold audio back if every agent leaves.
    leave_after_handoff: bool = False
    # After the handoff, an agent present but with no audio live for this
    # long counts as gone (hold audio comes back); 0 = only when they leave.
    agent_quiet_after: float = 30.0
    media_action: MediaAction = "none"  # what to do when media stays broken
    media_action_after: float = 15.0  # ... for this long


@dataclass
class CallLifecycle:
    started_at: float
    policy: CallPolicy = field(default_factory=CallPolicy)
    state: State = State.WAITING
    caller: str | None = None
    hold_started_at: float | None = None
    live_agents: list[str] = field(default_factory=list)  # in order of going live
    present_agents: set[str] = field(default_factory=set)
    media_bad_since: float | None = None
    media_verdict: str = ""
    end_reason: str = ""
    settle_until: float | None = None  # SETTLING: until when
    quiet_since: float | None = None  # MONITORING: no agent audio live since
    hold_failed: str = ""  # HoldFailed seen before any caller joined
    draining: bool = False  # leave once handed over
    held_by: str = ""  # ON_HOLD: the agent who put the caller on hold
    agents_signed_in: int | None = None  # the store's agents the desk saw lately
    offered_at: float | None = None  # a maximum wait's callback offer was made
    _fade_id: int = 0
    _handed_to: str = ""

    # -- deadlines ------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if self.state is State.WAITING:
            return self.started_at + self.policy.caller_join_timeout
        deadlines = []
        max_wait_at = self._max_wait_at()
        if max_wait_at is not None:
            deadlines.append(max_wait_at)
        if self._media_action_armed():
            assert self.media_bad_since is not None
            deadlines.append(self.media_bad_since + self.policy.media_action_after)
        if self.state is State.SETTLING and self.settle_until is not None:
            deadlines.append(self.settle_until)
        if (
            self.state is State.MONITORING
            and self.quiet_since is not None
            and self.policy.agent_quiet_after > 0
        ):
            deadlines.append(self.quiet_since + self.policy.agent_quiet_after)
        return min(deadlines) if deadlines else None

    def _max_wait(self) -> tuple[float, MaxWaitAction, str]:
        """The maximum wait that applies now: without agents signed in, the
        store's max_wait_no_agents (when set), else max_wait."""
        p = self.policy
        if self.agents_signed_in == 0 and p.max_wait_no_agents > 0:
            return p.max_wait_no_agents, p.no_agents_action, "max wait without agents"
        return p.max_wait, p.max_wait_action, "max wait"

    def _max_wait_at(self) -> float | None:
        """When the maximum wait that applies now runs out: only while holding
        for an agent, once per hold (not again after its callback offer)."""
        limit = self._max_wait()[0]
        if self.state is not State.HOLDING or limit <= 0 or self.offered_at is not None:
            return None
        assert self.hold_started_at is not None
        return self.hold_started_at + limit

    def _media_action_armed(self) -> bool:
        return (
            self.policy.media_action != "none"
            and self.media_bad_since is not None
            and self.state
            in (State.HOLDING, State.HANDING_OFF, State.SETTLING, State.MONITORING, State.ON_HOLD)
        )

    # -- transitions ----------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        if self.state is State.DONE:
            return []
        # Agents going live or quiet are tracked in every state, so an agent
        # who speaks before the caller arrives is handed the call on arrival.
        if isinstance(event, AgentAudio):
            self._track_agent(event)
            if event.live:  # live audio means present, however they were recognised
                self.present_agents.add(event.identity)
        if isinstance(event, AgentPresence):
            if event.present:
                self.present_agents.add(event.identity)
            else:
                self.present_agents.discard(event.identity)
                self._track_agent(AgentAudio(event.identity, live=False))
        if isinstance(event, MediaHealth):
            self.media_verdict = event.verdict
            if event.ok:
                self.media_bad_since = None
            elif self.media_bad_since is None:
                self.media_bad_since = now
        before = self.state
        actions = self._transition(event, now)
        if self.state is not before:
            actions.insert(0, StateChanged(self.state, before))
        return actions

    def _track_agent(self, event: AgentAudio) -> None:
        if event.live and event.identity not in self.live_agents:
            self.live_agents.append(event.identity)
        elif not event.live and event.identity in self.live_agents:
            self.live_agents.remove(event.identity)

    def _transition(self, event: Event, now: float) -> list[Action]:
        if isinstance(event, RoomClosed):
            return self._end(event.reason, leave=False)
        if isinstance(event, CallerLeft):
            if self.state is State.WAITING and self.caller is None:
                return []  # someone else's SIP leg; we have no caller yet
            return self._end(event.reason)
        if isinstance(event, Draining):
            self.draining = True
            if self.state is State.MONITORING:
                return self._end(f"handed over to {self._handed_to}; worker draining")
            return []
        if isinstance(event, HoldFailed):
            if self.caller is None:
                self.hold_failed = event.reason  # hang up the caller on arrival
                return []
            return self._hang_up_and_leave(event.reason)

        if (
            isinstance(event, Tick)
            and self._media_action_armed()
            and self.media_bad_since is not None
            and now >= self.media_bad_since + self.policy.media_action_after
        ):
            return self._media_action()

        if isinstance(event, AgentHold):
            return self._agent_hold(event, now)
        if isinstance(event, AgentsSignedIn):
            self.agents_signed_in = event.count  # and the deadline is looked at below
        if isinstance(event, CallerChose):
            if self.state is not State.HOLDING:
                return []  # an agent has the call (or is getting it): keys change nothing
            return self._hang_up_and_leave(
                event.reason, event.action, target=event.target, goodbye=event.goodbye
            )

        if self.state is State.ON_HOLD:
            if not self.present_agents:  # every agent gone: an ordinary hold now
                self.state = State.HOLDING
                self.held_by = ""
                self.hold_started_at = now
                # give back what was cut (an agent who joined meanwhile)
                return [ResumeForAgent("")]
            return []  # an agent's live microphone does not end an agent's hold

        if self.state is State.WAITING:
            if isinstance(event, CallerJoined):
                self.caller = event.identity
                self.hold_started_at = now
                self.state = State.HOLDING
                if self.hold_failed:
                    return self._hang_up_and_leave(self.hold_failed)
                if self.live_agents:
                    return self._start_fade()
                return []
            if isinstance(event, Tick) and now >= self.started_at + self.policy.caller_join_timeout:
                return self._end(f"no caller joined within {self.policy.caller_join_timeout:g} s")
            return []

        if self.state is State.HOLDING:
            # Any event: an agent may be live already (recognised late, or
            # live while hold audio was being brought back).
            if self.live_agents:
                return self._start_fade()
            due = self._max_wait_at()
            if isinstance(event, Tick | AgentsSignedIn) and due is not None and now >= due:
                return self._max_wait_expired(now)
            return []

        if self.state is State.HANDING_OFF:
            if not self.live_agents:
                self.state = State.HOLDING
                self._fade_id += 1  # a FadeDone of the cancelled fade is stale
                return [ResumeHold()]
            if isinstance(event, FadeDone) and event.fade_id == self._fade_id:
                self._handed_to = self.live_agents[0]
                if self.policy.handoff_settle > 0:
                    self.state = State.SETTLING
                    self.settle_until = now + self.policy.handoff_settle
                    return [Settle(self._handed_to)]
                return self._hand_over(now)
            return []

        if self.state is State.SETTLING:
            if not self.live_agents:  # dropped or muted at once: hold again, now
                self.state = State.HOLDING
                self.settle_until = None
                self.hold_started_at = now  # a new hold: max wait counts afresh
                return [ResumeHold()]
            if isinstance(event, Tick) and now >= (self.settle_until or now):
                self.settle_until = None
                return self._hand_over(now)
            return []

        # MONITORING: handed over, unpublished, watching room events
        if self.live_agents:
            self.quiet_since = None
            return []
        if self.quiet_since is None:
            self.quiet_since = now
        quiet_too_long = (
            self.policy.agent_quiet_after > 0
            and now >= self.quiet_since + self.policy.agent_quiet_after
        )
        if not self.present_agents or quiet_too_long:
            self.state = State.HOLDING
            self.quiet_since = None
            self.hold_started_at = now
            return [RepublishHold()]
        return []

    def _agent_hold(self, event: AgentHold, now: float) -> list[Action]:
        has_call = (State.HANDING_OFF, State.SETTLING, State.MONITORING)
        if event.hold and self.state in has_call:
            self.state = State.ON_HOLD
            self.held_by = event.agent
            self._fade_id += 1  # a fade in flight is stale
            self.settle_until = None
            self.quiet_since = None
            return [HoldForAgent(event.agent)]
        if not event.hold and self.state is State.ON_HOLD:
            self.held_by = ""
            self.hold_started_at = now
            self.state = State.HOLDING
            actions: list[Action] = [ResumeForAgent(event.agent)]
            if self.live_agents:
                actions += self._start_fade()
            return actions
        return []  # nothing to hold or resume: ignored

    def _hand_over(self, now: float) -> list[Action]:
        agent = self._handed_to
        if self.policy.leave_after_handoff or self.draining:
            self.state = State.DONE
            self.end_reason = f"handed over to {agent}"
            if self.draining and not self.policy.leave_after_handoff:
                self.end_reason += "; worker draining"
            return [HandOver(agent, stay=False), Leave(self.end_reason)]
        self.state = State.MONITORING
        self.quiet_since = None if self.live_agents else now
        return [HandOver(agent)]

    def _hang_up_and_leave(
        self, reason: str, action: str = "hangup", *, target: str = "", goodbye: str = ""
    ) -> list[Action]:
        """End the call for the caller: transfer them (if that is the action
        and there is a target) or hang up, then leave."""
        self.state = State.DONE
        self.end_reason = reason
        target = target or self.policy.transfer_target
        if action == "transfer" and target:
            return [Transfer(target, reason), Leave(reason)]
        return [HangUp(reason, goodbye=goodbye), Leave(reason)]

    def _media_action(self) -> list[Action]:
        t = self.policy
        reason = f"{self.media_verdict or 'one-way audio'} for {t.media_action_after:g} s"
        return self._hang_up_and_leave(reason, t.media_action)

    def _start_fade(self) -> list[Action]:
        self.state = State.HANDING_OFF
        self.offered_at = None  # an agent has the caller: a later hold counts afresh
        self._fade_id += 1
        return [StartFade(self._fade_id, self.live_agents[0])]

    def _max_wait_expired(self, now: float) -> list[Action]:
        limit, action, what = self._max_wait()
        reason = f"{what} of {limit:g} s reached"
        if action == "callback":
            self.offered_at = now  # the music goes on; the caller's keypad decides
            return [OfferCallback(reason)]
        return self._hang_up_and_leave(reason, action, goodbye=NO_AGENTS_GOODBYE)

    def _end(self, reason: str, *, leave: bool = True) -> list[Action]:
        self.state = State.DONE
        self.end_reason = reason
        return [Leave(reason)] if leave else []
