"""The pure call lifecycle under a fake clock: every state against every event."""

from __future__ import annotations

import pytest

from worker.lifecycle import (
    AgentAudio,
    AgentHold,
    AgentPresence,
    CallerJoined,
    CallerLeft,
    CallLifecycle,
    CallPolicy,
    Draining,
    FadeDone,
    HandOver,
    HangUp,
    HoldFailed,
    HoldForAgent,
    Leave,
    MediaHealth,
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


def lc(**policy: object) -> CallLifecycle:
    return CallLifecycle(started_at=0.0, policy=CallPolicy(**policy))  # type: ignore[arg-type]


def kinds(actions: list[object]) -> list[type]:
    return [type(a) for a in actions]


def holding(**policy: object) -> CallLifecycle:
    m = lc(**policy)
    m.handle(CallerJoined("sip_caller"), 1.0)
    assert m.state is State.HOLDING
    return m


def handing_off(**policy: object) -> tuple[CallLifecycle, int]:
    m = holding(**policy)
    acts = m.handle(AgentAudio("agent-1", live=True), 5.0)
    fade = next(a for a in acts if isinstance(a, StartFade))
    return m, fade.fade_id


# ---- WAITING -----------------------------------------------------------------


def test_waiting_caller_joins_starts_holding() -> None:
    m = lc()
    acts = m.handle(CallerJoined("sip_1"), 0.3)
    assert acts == [StateChanged(State.HOLDING, State.WAITING)]
    assert m.caller == "sip_1" and m.hold_started_at == 0.3


def test_waiting_no_caller_within_timeout_leaves() -> None:
    m = lc(caller_join_timeout=10.0)
    assert m.next_deadline() == 10.0
    assert m.handle(Tick(), 9.99) == []
    acts = m.handle(Tick(), 10.0)
    assert kinds(acts) == [StateChanged, Leave]
    assert "no caller joined within 10 s" in m.end_reason
    assert m.state is State.DONE


def test_waiting_agent_before_caller_then_caller_is_handed_over_at_once() -> None:
    m = lc()
    assert m.handle(AgentAudio("agent-1", live=True), 0.5) == []
    assert m.state is State.WAITING  # nobody to hand over to yet
    acts = m.handle(CallerJoined("sip_1"), 1.0)
    assert m.state is State.HANDING_OFF
    assert isinstance(acts[-1], StartFade) and acts[-1].agent == "agent-1"


def test_waiting_agent_went_quiet_before_caller_means_plain_hold() -> None:
    m = lc()
    m.handle(AgentAudio("agent-1", live=True), 0.5)
    m.handle(AgentAudio("agent-1", live=False), 0.7)
    m.handle(CallerJoined("sip_1"), 1.0)
    assert m.state is State.HOLDING


def test_waiting_caller_left_without_caller_is_ignored() -> None:
    m = lc()
    assert m.handle(CallerLeft(), 0.5) == []
    assert m.state is State.WAITING


def test_waiting_room_closed_ends_without_leave() -> None:
    m = lc()
    acts = m.handle(RoomClosed("room deleted"), 0.5)
    assert kinds(acts) == [StateChanged]
    assert m.state is State.DONE and m.end_reason == "room deleted"


def test_waiting_fade_done_is_ignored() -> None:
    m = lc()
    assert m.handle(FadeDone(1), 0.1) == []
    assert m.state is State.WAITING


# ---- HOLDING -----------------------------------------------------------------


def test_holding_agent_audio_live_starts_fade() -> None:
    m = holding()
    acts = m.handle(AgentAudio("agent-1", live=True), 5.0)
    assert kinds(acts) == [StateChanged, StartFade]
    assert m.state is State.HANDING_OFF


def test_holding_agent_without_audio_keeps_holding() -> None:
    m = holding()
    assert m.handle(AgentAudio("agent-1", live=False), 5.0) == []
    assert m.state is State.HOLDING


def test_holding_caller_hangs_up() -> None:
    m = holding()
    acts = m.handle(CallerLeft("caller hung up"), 3.0)
    assert kinds(acts) == [StateChanged, Leave]
    assert m.state is State.DONE


def test_holding_no_timer_when_max_wait_off() -> None:
    m = holding()
    assert m.next_deadline() is None
    assert m.handle(Tick(), 10_000.0) == []
    assert m.state is State.HOLDING


def test_holding_max_wait_hangs_up() -> None:
    m = holding(max_wait=60.0)
    assert m.next_deadline() == 61.0
    assert m.handle(Tick(), 60.9) == []
    acts = m.handle(Tick(), 61.0)
    assert kinds(acts) == [StateChanged, HangUp, Leave]


def test_holding_max_wait_transfers() -> None:
    m = holding(max_wait=30.0, max_wait_action="transfer", transfer_target="tel:+15550100")
    acts = m.handle(Tick(), 31.0)
    assert kinds(acts) == [StateChanged, Transfer, Leave]
    t = acts[1]
    assert isinstance(t, Transfer) and t.target == "tel:+15550100"


def test_holding_stale_fade_done_ignored() -> None:
    m = holding()
    assert m.handle(FadeDone(99), 2.0) == []


def test_holding_second_caller_join_is_ignored() -> None:
    m = holding()
    assert m.handle(CallerJoined("sip_other"), 2.0) == []
    assert m.caller == "sip_caller"


# ---- HANDING_OFF -----------------------------------------------------------


def test_handoff_without_settle_hands_over_and_stays() -> None:
    m, fid = handing_off(handoff_settle=0.0)
    acts = m.handle(FadeDone(fid), 5.4)
    assert acts == [StateChanged(State.MONITORING, State.HANDING_OFF), HandOver("agent-1")]
    assert m.state is State.MONITORING


def test_handoff_settles_then_stays_in_the_room() -> None:
    """Default: silent (track still published) for handoff_settle s after the
    fade, then hand over (unpublish) and stay."""
    m, fid = handing_off()
    acts = m.handle(FadeDone(fid), 5.4)
    assert acts == [StateChanged(State.SETTLING, State.HANDING_OFF), Settle("agent-1")]
    assert m.state is State.SETTLING and m.next_deadline() == 5.4 + 3.0
    assert m.handle(Tick(), 6.0) == []
    acts = m.handle(Tick(), 8.4)
    assert acts == [StateChanged(State.MONITORING, State.SETTLING), HandOver("agent-1")]
    assert m.state is State.MONITORING


def test_leave_after_handoff_is_the_old_behaviour() -> None:
    m, fid = handing_off(leave_after_handoff=True)
    m.handle(FadeDone(fid), 5.4)
    acts = m.handle(Tick(), 8.4)
    assert kinds(acts) == [StateChanged, HandOver, Leave]
    assert acts[1] == HandOver("agent-1", stay=False)
    assert m.state is State.DONE and m.end_reason == "handed over to agent-1"


def test_agent_drops_right_after_the_handoff_gets_the_caller_back_on_hold() -> None:
    for gone in (AgentPresence("agent-1", present=False), AgentAudio("agent-1", live=False)):
        m, fid = handing_off()
        m.handle(AgentPresence("agent-1", present=True), 5.0)
        m.handle(FadeDone(fid), 5.4)
        acts = m.handle(gone, 5.9)
        assert kinds(acts) == [StateChanged, ResumeHold], gone
        assert m.state is State.HOLDING and m.settle_until is None
        assert m.hold_started_at == 5.9


def test_settling_live_agent_leaves_while_another_is_present_but_muted() -> None:
    """Defect 3: agent A live and leaving, agent B present and muted: the
    caller gets hold back (it used to settle, leave and strand them)."""
    m = holding()
    m.handle(AgentPresence("agent-a", True), 2.0)
    m.handle(AgentPresence("agent-b", True), 2.0)
    acts = m.handle(AgentAudio("agent-a", live=True), 3.0)
    fid = next(a for a in acts if isinstance(a, StartFade)).fade_id
    m.handle(FadeDone(fid), 3.4)
    assert m.state is State.SETTLING
    acts = m.handle(AgentPresence("agent-a", present=False), 4.0)
    assert kinds(acts) == [StateChanged, ResumeHold]
    assert m.state is State.HOLDING


def test_holding_fades_for_an_agent_live_before_hold_came_back() -> None:
    """Defect 2: back on hold with an agent whose audio is live already:
    the next event of any kind starts the fade."""
    m = monitoring()
    m.handle(AgentAudio("agent-2", live=True), 6.0)  # recognised late, no presence event
    acts = m.handle(AgentPresence("agent-1", False), 7.0)
    assert m.state is State.MONITORING and acts == []  # agent-2 is live: no hold
    m.handle(AgentAudio("agent-2", live=False), 8.0)
    acts = m.handle(AgentPresence("agent-2", False), 8.5)
    assert kinds(acts) == [StateChanged, RepublishHold]
    m.handle(AgentAudio("agent-3", live=True), 9.0)
    assert m.state is State.HANDING_OFF


def test_hold_failed_hangs_up_now_or_when_the_caller_arrives() -> None:
    m = holding()
    acts = m.handle(HoldFailed("publish failed"), 2.0)
    assert kinds(acts) == [StateChanged, HangUp, Leave]
    m = lc()
    assert m.handle(HoldFailed("publish failed"), 0.5) == []
    acts = m.handle(CallerJoined("sip_1"), 1.0)
    assert kinds(acts) == [StateChanged, HangUp, Leave] and m.state is State.DONE


def test_handoff_agent_mutes_again_resumes_hold_and_old_fade_is_stale() -> None:
    m, fid = handing_off()
    acts = m.handle(AgentAudio("agent-1", live=False), 5.2)
    assert kinds(acts) == [StateChanged, ResumeHold]
    assert m.state is State.HOLDING
    assert m.handle(FadeDone(fid), 5.4) == []  # the cancelled fade's completion
    assert m.state is State.HOLDING
    acts = m.handle(AgentAudio("agent-1", live=True), 6.0)
    new = next(a for a in acts if isinstance(a, StartFade))
    assert new.fade_id != fid


def test_handoff_two_agents_one_mutes_fade_continues() -> None:
    m, fid = handing_off()
    assert m.handle(AgentAudio("agent-2", live=True), 5.1) == []
    assert m.handle(AgentAudio("agent-1", live=False), 5.2) == []
    assert m.state is State.HANDING_OFF
    acts = m.handle(FadeDone(fid), 5.4)
    assert acts[-1] == Settle("agent-2")


def test_handoff_hangup_during_fade() -> None:
    m, fid = handing_off()
    acts = m.handle(CallerLeft("caller hung up"), 5.2)
    assert kinds(acts) == [StateChanged, Leave]
    assert m.handle(FadeDone(fid), 5.4) == []
    assert m.state is State.DONE


def test_handoff_max_wait_does_not_interrupt() -> None:
    m = holding(max_wait=10.0)
    m.handle(AgentAudio("agent-1", live=True), 10.5)  # agent just in time
    assert m.next_deadline() is None
    assert m.handle(Tick(), 11.5) == []
    assert m.state is State.HANDING_OFF


def test_resumed_hold_after_deadline_applies_max_wait_on_next_tick() -> None:
    m = holding(max_wait=10.0)
    m.handle(AgentAudio("agent-1", live=True), 10.5)
    m.handle(AgentAudio("agent-1", live=False), 10.7)
    assert m.next_deadline() == 11.0
    acts = m.handle(Tick(), 11.0)
    assert HangUp in kinds(acts)


def test_handoff_room_closed() -> None:
    m, _ = handing_off()
    m.handle(RoomClosed(), 5.1)
    assert m.state is State.DONE


# ---- DONE --------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        CallerJoined("x"),
        CallerLeft(),
        AgentAudio("agent-1", True),
        AgentAudio("agent-1", False),
        FadeDone(1),
        Tick(),
        RoomClosed(),
    ],
)
def test_done_ignores_everything(event: object) -> None:
    m = holding()
    m.handle(CallerLeft(), 2.0)
    assert m.handle(event, 3.0) == []  # type: ignore[arg-type]
    assert m.state is State.DONE
    assert m.next_deadline() is None


# ---- monitor mode and media actions ------------------------------------------


def monitoring(**policy: object) -> CallLifecycle:
    m = holding(handoff_settle=0.0, **policy)
    m.handle(AgentPresence("agent-1", True), 4.0)
    acts = m.handle(AgentAudio("agent-1", live=True), 5.0)
    fid = next(a for a in acts if isinstance(a, StartFade)).fade_id
    acts = m.handle(FadeDone(fid), 5.4)
    assert acts[-1] == HandOver("agent-1", stay=True)
    assert m.state is State.MONITORING
    return m


def test_monitor_mode_stays_after_handoff() -> None:
    m = monitoring()
    assert m.handle(AgentAudio("agent-1", live=False), 6.0) == []  # a mute is not a leave
    assert m.state is State.MONITORING


def test_monitoring_agent_quiet_too_long_brings_hold_back() -> None:
    m = monitoring(agent_quiet_after=20.0)
    m.handle(AgentAudio("agent-1", live=False), 6.0)
    assert m.next_deadline() == 26.0
    assert m.handle(Tick(), 25.9) == []
    acts = m.handle(Tick(), 26.0)
    assert kinds(acts) == [StateChanged, RepublishHold]
    m = monitoring(agent_quiet_after=20.0)
    m.handle(AgentAudio("agent-1", live=False), 6.0)
    m.handle(AgentAudio("agent-1", live=True), 10.0)  # unmuted in time
    assert m.next_deadline() is None and m.state is State.MONITORING


def test_monitor_mode_resumes_hold_when_every_agent_left() -> None:
    m = monitoring()
    m.handle(AgentPresence("agent-2", True), 6.0)
    assert m.handle(AgentPresence("agent-1", False), 7.0) == []  # agent-2 is still there
    acts = m.handle(AgentPresence("agent-2", False), 8.0)
    assert kinds(acts) == [StateChanged, RepublishHold]
    assert m.state is State.HOLDING and m.hold_started_at == 8.0
    # and the next agent gets the call again
    acts = m.handle(AgentAudio("agent-3", live=True), 9.0)
    assert StartFade in kinds(acts)


def test_monitor_mode_caller_hangs_up() -> None:
    m = monitoring()
    acts = m.handle(CallerLeft(), 9.0)
    assert kinds(acts) == [StateChanged, Leave]


def test_agent_leaving_during_fade_resumes_hold() -> None:
    m, _ = handing_off()
    acts = m.handle(AgentPresence("agent-1", False), 5.2)
    assert kinds(acts) == [StateChanged, ResumeHold]


def test_media_action_hangs_up_after_the_delay() -> None:
    m = holding(media_action="hangup", media_action_after=10.0)
    m.handle(MediaHealth(ok=False, verdict="no_inbound_media"), 6.0)
    assert m.next_deadline() == 16.0
    assert m.handle(Tick(), 15.9) == []
    acts = m.handle(Tick(), 16.0)
    assert kinds(acts) == [StateChanged, HangUp, Leave]
    assert "no_inbound_media" in m.end_reason


def test_media_recovering_disarms_the_action() -> None:
    m = holding(media_action="transfer", media_action_after=10.0, transfer_target="tel:+1555")
    m.handle(MediaHealth(ok=False, verdict="inbound_stopped"), 6.0)
    m.handle(MediaHealth(ok=True, verdict="ok"), 9.0)
    assert m.next_deadline() is None
    assert m.handle(Tick(), 30.0) == []


def test_media_action_off_by_default() -> None:
    m = holding()
    m.handle(MediaHealth(ok=False, verdict="no_inbound_media"), 6.0)
    assert m.next_deadline() is None


def test_draining_worker_leaves_handed_over_calls_and_keeps_held_ones() -> None:
    m = monitoring()
    acts = m.handle(Draining(), 6.0)
    assert kinds(acts) == [StateChanged, Leave] and "draining" in m.end_reason
    m = holding()
    assert m.handle(Draining(), 2.0) == [] and m.state is State.HOLDING  # still on hold
    acts = m.handle(AgentAudio("agent-1", live=True), 3.0)
    fid = next(a for a in acts if isinstance(a, StartFade)).fade_id
    m.handle(FadeDone(fid), 3.4)
    acts = m.handle(Tick(), 6.4)  # settle time over: handed over, and gone
    assert kinds(acts) == [StateChanged, HandOver, Leave] and acts[1] == HandOver(
        "agent-1", stay=False
    )


# ---- ON_HOLD: an agent puts the caller on hold and resumes ---------------------


def handed_over() -> CallLifecycle:
    m, fade_id = handing_off()
    m.handle(FadeDone(fade_id), 5.5)
    m.handle(Tick(), 9.0)
    assert m.state is State.MONITORING
    return m


def test_agent_hold_from_monitoring_brings_hold_back_and_ignores_their_microphone() -> None:
    m = handed_over()
    acts = m.handle(AgentHold("agent-1", hold=True), 20.0)
    assert m.state is State.ON_HOLD and m.held_by == "agent-1"
    assert kinds(acts) == [StateChanged, HoldForAgent]
    # the agent keeps talking (a live microphone at the store): no fade
    assert m.handle(AgentAudio("agent-1", live=False), 21.0) == []
    assert m.handle(AgentAudio("agent-1", live=True), 22.0) == []
    assert m.state is State.ON_HOLD and m.next_deadline() is None


def test_resume_with_live_audio_fades_hold_out_again() -> None:
    m = handed_over()
    m.handle(AgentHold("agent-1", hold=True), 20.0)
    acts = m.handle(AgentHold("agent-1", hold=False), 30.0)
    assert kinds(acts) == [StateChanged, ResumeForAgent, StartFade]
    assert m.state is State.HANDING_OFF
    fade = acts[-1]
    assert isinstance(fade, StartFade)
    m.handle(FadeDone(fade.fade_id), 30.5)
    assert m.state is State.SETTLING


def test_resume_with_a_muted_agent_is_an_ordinary_hold_until_they_speak() -> None:
    m = handed_over()
    m.handle(AgentHold("agent-1", hold=True), 20.0)
    m.handle(AgentAudio("agent-1", live=False), 21.0)
    acts = m.handle(AgentHold("agent-1", hold=False), 30.0)
    assert kinds(acts) == [StateChanged, ResumeForAgent] and m.state is State.HOLDING
    assert kinds(m.handle(AgentAudio("agent-1", live=True), 31.0)) == [StateChanged, StartFade]


def test_every_agent_gone_while_on_hold_is_an_ordinary_hold() -> None:
    m = handed_over()
    m.handle(AgentHold("agent-1", hold=True), 20.0)
    acts = m.handle(AgentPresence("agent-1", present=False), 25.0)
    assert kinds(acts) == [StateChanged, ResumeForAgent]  # gives back what was cut
    assert m.state is State.HOLDING and m.held_by == ""


def test_hold_mid_fade_stales_the_fade_and_hold_is_ignored_where_nobody_has_the_call() -> None:
    m, fade_id = handing_off()
    m.handle(AgentHold("agent-1", hold=True), 5.2)
    assert m.state is State.ON_HOLD
    assert m.handle(FadeDone(fade_id), 5.6) == []  # the old fade's end changes nothing
    h = holding()
    assert h.handle(AgentHold("agent-1", hold=True), 3.0) == [] and h.state is State.HOLDING
    assert h.handle(AgentHold("agent-1", hold=False), 3.0) == []
    m2 = handed_over()
    assert m2.handle(AgentHold("agent-1", hold=False), 20.0) == []  # nothing to resume


def test_caller_hanging_up_on_hold_ends_the_call() -> None:
    m = handed_over()
    m.handle(AgentHold("agent-1", hold=True), 20.0)
    acts = m.handle(CallerLeft(), 21.0)
    assert m.state is State.DONE and kinds(acts) == [StateChanged, Leave]
