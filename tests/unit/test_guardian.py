"""Guardian's decision (pure): re-dispatch only a hold agent that died mid-call, caller present."""

from __future__ import annotations

from worker.guardian import AGENT, SIP, Member, redispatch_reason

STANDARD = 0
caller = Member(SIP, {"sip.phoneNumber": "+15550123", "sip.callStatus": "active"})


def agent(state: str) -> Member:
    return Member(AGENT, {"hold.state": state} if state else {})


def test_dead_hold_agent_with_caller_is_redispatched() -> None:
    for state in ("waiting", "holding", "handing_off"):
        assert redispatch_reason(agent(state), [caller]) is not None


def test_clean_exits_and_others_are_left_alone() -> None:
    assert redispatch_reason(agent("done"), [caller]) is None  # finished cleanly
    assert redispatch_reason(agent("monitoring"), [caller]) is None  # handed over
    assert redispatch_reason(agent(""), [caller]) is None  # another kind of agent
    human = Member(STANDARD, {"hold.state": "holding"})
    assert redispatch_reason(human, [caller]) is None


def test_no_caller_or_another_hold_agent_means_no_dispatch() -> None:
    assert redispatch_reason(agent("holding"), []) is None
    gone = Member(SIP, {"sip.callStatus": "hangup"})
    assert redispatch_reason(agent("holding"), [gone]) is None
    left = Member(SIP, caller.attributes, disconnected=True)
    assert redispatch_reason(agent("holding"), [left]) is None
    assert redispatch_reason(agent("holding"), [caller, agent("holding")]) is None
    # an AI or other agent without hold.state does not count as a hold worker
    assert redispatch_reason(agent("holding"), [caller, agent("")]) is not None
