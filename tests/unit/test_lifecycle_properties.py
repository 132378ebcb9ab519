"""Property-based: no sequence of events leaves a call stuck, and none raises.

A "driver" plays the adapter's part: it feeds random room events with
advancing time, delivers a Tick whenever `next_deadline()` is due, and
completes every fade the lifecycle starts (FadeDone with its id), unless the
sequence cancels it first. Whatever happens, the call must end in DONE once
the caller hangs up or the room closes, a WAITING call must always have a
deadline, and a hold-audio handoff is never started without a live agent.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.lifecycle import (
    AgentAudio,
    AgentPresence,
    CallerJoined,
    CallerLeft,
    CallLifecycle,
    CallPolicy,
    Draining,
    Event,
    FadeDone,
    HandOver,
    HangUp,
    Leave,
    MediaHealth,
    RoomClosed,
    StartFade,
    State,
    Tick,
    Transfer,
)

AGENTS = ["agent-a", "agent-b"]

events = st.one_of(
    st.builds(CallerJoined, st.sampled_from(["sip_caller", "sip_other"])),
    st.builds(AgentAudio, st.sampled_from(AGENTS), st.booleans()),
    st.builds(AgentPresence, st.sampled_from(AGENTS), st.booleans()),
    st.builds(MediaHealth, st.booleans(), st.sampled_from(["ok", "missing", "silent"])),
    st.builds(FadeDone, st.integers(0, 5)),
    st.just(Tick()),
    st.just(Draining()),
)
policies = st.builds(
    CallPolicy,
    caller_join_timeout=st.floats(0.5, 60),
    max_wait=st.sampled_from([0.0, 1.0, 30.0]),
    max_wait_action=st.sampled_from(["hangup", "transfer"]),
    transfer_target=st.sampled_from(["", "tel:+15550111"]),
    handoff_settle=st.sampled_from([0.0, 0.5, 3.0]),
    leave_after_handoff=st.booleans(),
    agent_quiet_after=st.sampled_from([0.0, 5.0, 30.0]),
    media_action=st.sampled_from(["none", "hangup", "transfer"]),
    media_action_after=st.floats(0.5, 30),
)


def drive(lc: CallLifecycle, seq: list[tuple[Event, float]], now: float) -> float:
    live: set[str] = set()
    for ev, dt in seq:
        now += dt
        deadline = lc.next_deadline()
        if deadline is not None and deadline <= now:
            for a in lc.handle(Tick(), deadline):
                check_action(lc, a, live)
        if isinstance(ev, AgentAudio):
            if ev.live:
                live.add(ev.identity)
            else:
                live.discard(ev.identity)
        if isinstance(ev, AgentPresence) and not ev.present:
            live.discard(ev.identity)
        for a in lc.handle(ev, now):
            check_action(lc, a, live)
            if isinstance(a, StartFade):  # the adapter's fade completes
                for b in lc.handle(FadeDone(a.fade_id), now + 0.4):
                    check_action(lc, b, live)
        if lc.state is State.WAITING:
            assert lc.next_deadline() is not None, "a call waiting for its caller must time out"
    return now


def check_action(lc: CallLifecycle, a: object, live: set[str]) -> None:
    if isinstance(a, StartFade):
        assert a.agent in live, f"fade started for {a.agent}, live agents {live}"
    if isinstance(a, Transfer):
        assert a.target.startswith(("tel:", "sip:"))
    if isinstance(a, HandOver | HangUp | Leave | Transfer):
        assert lc.state in (
            State.DONE,
            State.SETTLING,
            State.MONITORING,
            State.HOLDING,
            State.HANDING_OFF,
        )


@settings(max_examples=400, deadline=None)
@given(
    t=policies,
    seq=st.lists(st.tuples(events, st.floats(0, 5)), max_size=40),
    end=st.sampled_from([CallerLeft(), RoomClosed()]),
)
def test_every_sequence_ends_when_the_caller_or_room_goes(
    t: CallPolicy, seq: list[tuple[Event, float]], end: Event
) -> None:
    lc = CallLifecycle(started_at=0.0, policy=t)
    now = drive(lc, seq, 0.0)
    lc.handle(end, now + 1)
    if lc.state is State.WAITING:
        # a SIP leg leaving before we had a caller is not ours: the join timer
        # still ends the call
        assert isinstance(end, CallerLeft) and lc.caller is None
        deadline = lc.next_deadline()
        assert deadline is not None
        lc.handle(Tick(), max(deadline, now + 1))
    assert lc.state is State.DONE
    assert lc.end_reason, "every ended call says why"
    # and DONE is final: no timer left, and no event brings it back or acts
    assert lc.next_deadline() is None
    for ev, _ in seq:
        assert lc.handle(ev, now + 2) == []
        assert lc.state is State.DONE


@settings(max_examples=300, deadline=None)
@given(t=policies, seq=st.lists(st.tuples(events, st.floats(0, 5)), max_size=40))
def test_a_caller_with_no_agent_is_never_left_without_hold_or_a_timer(
    t: CallPolicy, seq: list[tuple[Event, float]]
) -> None:
    """Without any live agent, a call is HOLDING (hold audio on), WAITING with a
    deadline, or DONE; never HANDING_OFF, SETTLING or MONITORING with nobody
    to talk to."""
    lc = CallLifecycle(started_at=0.0, policy=t)
    now = drive(lc, seq, 0.0)
    for a in AGENTS:  # every agent goes away
        lc.handle(AgentAudio(a, live=False), now)
        lc.handle(AgentPresence(a, present=False), now)
    if lc.state is State.HANDING_OFF:
        # a fade in flight was cancelled by the agent going quiet -> hold resumes
        raise AssertionError("still handing off with no live agent")
    assert lc.state in (State.WAITING, State.HOLDING, State.DONE), lc.state
