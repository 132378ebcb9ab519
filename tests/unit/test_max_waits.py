"""Maximum waits as the queues people know (issue 18 part 3): with agents
signed in (max_wait), and with none signed in at all (max_wait_no_agents),
each with its own action: hang up with a goodbye prompt, transfer, or offer a
callback (the caller's keypad decides; no answer hangs up with the goodbye).
The lifecycle (pure), and a whole call against the fake room."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from tests.unit.fakeroom import FakeRegistry, World, caller
from tests.unit.test_keypad import OPERATOR, press, prompts, settings
from worker.catalog import KeypadPlan
from worker.keypad import NO_AGENTS_GOODBYE
from worker.lifecycle import (
    AgentAudio,
    AgentsSignedIn,
    CallerChose,
    CallerJoined,
    CallLifecycle,
    CallPolicy,
    HangUp,
    Leave,
    OfferCallback,
    State,
    StateChanged,
    Tick,
    Transfer,
)
from worker.stores import KeypadOptions


def holding(**policy: object) -> CallLifecycle:
    m = CallLifecycle(started_at=0.0, policy=CallPolicy(**policy))  # type: ignore[arg-type]
    m.handle(CallerJoined("sip_caller"), 0.0)
    return m


BOTH = {
    "max_wait": 600.0,
    "max_wait_action": "transfer",
    "transfer_target": OPERATOR,
    "max_wait_no_agents": 60.0,
    "no_agents_action": "hangup",
}


def test_with_agents_signed_in_the_ordinary_max_wait_and_its_action() -> None:
    m = holding(**BOTH)
    m.handle(AgentsSignedIn(2), 1.0)
    assert m.next_deadline() == 600.0
    assert m.handle(Tick(), 60.0) == []
    acts = m.handle(Tick(), 600.0)
    assert [type(a) for a in acts] == [StateChanged, Transfer, Leave]
    assert m.end_reason == "max wait of 600 s reached"


def test_with_none_signed_in_the_shorter_wait_hangs_up_with_a_goodbye() -> None:
    m = holding(**BOTH)
    assert m.handle(AgentsSignedIn(0), 70.0)[1:] == [
        HangUp("max wait without agents of 60 s reached", goodbye=NO_AGENTS_GOODBYE),
        Leave("max wait without agents of 60 s reached"),
    ]  # the news came after the limit: at once


def test_unknown_sign_ins_mean_the_ordinary_wait() -> None:
    m = holding(**BOTH)
    m.handle(AgentsSignedIn(None), 1.0)
    assert m.next_deadline() == 600.0
    m.handle(AgentsSignedIn(0), 2.0)
    assert m.next_deadline() == 60.0
    m.handle(AgentsSignedIn(1), 3.0)  # an agent signed in: the long wait again
    assert m.next_deadline() == 600.0


def test_callback_offer_then_the_callers_choice() -> None:
    m = holding(max_wait=30.0, max_wait_action="callback")
    assert m.handle(Tick(), 30.0) == [OfferCallback("max wait of 30 s reached")]
    assert m.state is State.HOLDING and m.next_deadline() is None  # the keypad decides
    acts = m.handle(CallerChose("hangup", "callback requested", goodbye="callback_done"), 40.0)
    assert acts[1:] == [
        HangUp("callback requested", goodbye="callback_done"),
        Leave("callback requested"),
    ]


def test_caller_choice_ignored_once_an_agent_has_the_call() -> None:
    m = holding()
    m.handle(AgentAudio("agent-1", live=True), 1.0)
    assert m.handle(CallerChose("transfer", "operator", target=OPERATOR), 2.0) == []
    assert m.state is State.HANDING_OFF


def test_operator_choice_transfers_to_its_own_target() -> None:
    m = holding(transfer_target="tel:+15550999")
    acts = m.handle(CallerChose("transfer", "caller asked for the operator", target=OPERATOR), 1.0)
    assert Transfer(OPERATOR, "caller asked for the operator") in acts


# ---- a whole call ------------------------------------------------------------------


@pytest.fixture
def world() -> Iterator[World]:
    w = World(policy=CallPolicy(caller_join_timeout=60.0))
    yield w
    w.close()


def no_agents_policy(action: str) -> CallPolicy:
    """10 minutes with agents signed in, 20 s without any."""
    return CallPolicy(
        caller_join_timeout=60.0,
        max_wait=600.0,
        max_wait_no_agents=20.0,
        no_agents_action=action,  # type: ignore[arg-type]
    )


def run_call(w: World, reg: FakeRegistry, policy: CallPolicy) -> object:
    kp = KeypadOptions.model_validate({"callback_key": "1", "confirm_timeout_s": 4.0})
    w.plan = dataclasses.replace(
        w.plan, store_id="main", policy=policy, keypad=KeypadPlan(kp, "", True, prompts())
    )
    sess = w.session(settings(), registry=reg)
    task = w.loop.create_task(sess.run())
    w.run_for(0.01)
    return sess, task


def test_nobody_signed_in_offer_declined_goodbye_then_hang_up(world: World) -> None:
    reg = FakeRegistry(signed_in=0)
    _sess, task = run_call(world, reg, no_agents_policy("callback"))
    c = caller()
    world.room.join(c)
    world.run_for(19.0)
    assert not task.done()
    world.run_for(3.0)  # the offer is being said
    assert world.ctx.api.room.removed == []
    world.run_for(30.0)  # no key: goodbye, then hung up
    assert world.ctx.api.room.removed == [c.identity]
    assert task.done() and task.result() == "no callback after the maximum wait's offer"


def test_nobody_signed_in_offer_accepted_stores_the_callback(world: World) -> None:
    reg = FakeRegistry(signed_in=0)
    _sess, task = run_call(world, reg, no_agents_policy("callback"))
    c = caller()
    world.room.join(c)
    world.run_for(23.0)
    press(world, "1", c)  # the confirm key, during the offer
    world.run_for(10.0)
    assert len(reg.callbacks) == 1 and task.done()
    assert task.result() == "callback requested"


def test_agents_signed_in_keep_the_caller_waiting(world: World) -> None:
    _sess, task = run_call(world, FakeRegistry(signed_in=3), no_agents_policy("hangup"))
    world.room.join(caller())
    world.run_for(60.0)
    assert not task.done() and world.ctx.api.room.removed == []
