"""Keypad options while holding (worker/keypad.py, call.py): the pure menu, and
a whole call against the fake room: callback asked, read back, confirmed and
stored; cancelled by another key or by time; operator transfer; a key during
a prompt cuts it; stray keys (not the caller's, unknown ones) and bursts
change nothing else; a store without keypad options keeps today's behaviour."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from livekit import rtc

from tests.unit.fakeroom import LEVEL, FakeParticipant, FakeRegistry, World, caller
from worker.catalog import KeypadPlan
from worker.hold.audio import SAMPLE_RATE
from worker.hold.dsp import dbfs_to_amplitude
from worker.keypad import (
    CALLBACK_CONFIRM,
    CALLBACK_NUMBER,
    KEYPAD_PHRASE_KEYS,
    CallbackConfirmed,
    Cancelled,
    KeypadMenu,
    ReadBack,
    ToOperator,
    digit_key,
    last_four,
)
from worker.lifecycle import CallPolicy, State
from worker.prompts import PromptSet
from worker.settings import Settings
from worker.stores import KeypadOptions, StoreMapModel

OPERATOR = "tel:+15550111"
PROMPT = 0.1  # every prompt's constant level
PROMPT_S = 1.0  # every prompt's length
DUCK = dbfs_to_amplitude(-14.0)


# ---- the pure menu ---------------------------------------------------------------


def menu(**kw: Any) -> KeypadMenu:
    args: dict[str, Any] = {
        "callback_key": "1",
        "confirm_key": "1",
        "confirm_timeout_s": 8.0,
        "operator_key": "0",
        "operator_target": OPERATOR,
        "caller_number": "+15550101234",
    }
    return KeypadMenu(**{**args, **kw})


def test_last_four() -> None:
    assert last_four("+1 555 010-1234") == "1234"
    assert last_four("+123") == ""
    assert last_four("") == ""


def test_callback_read_back_then_confirm() -> None:
    m = menu()
    got = m.key("1", 10.0)
    assert got == ReadBack(
        [
            [CALLBACK_NUMBER, *(digit_key(d) for d in "1234")],
            [CALLBACK_CONFIRM, digit_key("1")],
        ]
    )
    assert m.state == "confirming" and m.deadline == 18.0
    m.prompt_ends(14.0)
    assert m.deadline == 22.0  # the time to answer counts from the prompt's end
    assert m.key("1", 15.0) == CallbackConfirmed()
    assert m.state == "done"
    assert m.key("0", 16.0) is None  # nothing after the decision


def test_other_key_or_time_cancels() -> None:
    m = menu()
    m.key("1", 0.0)
    assert isinstance(m.key("5", 1.0), Cancelled) and m.state == "idle"
    m.key("1", 2.0)
    assert m.tick(9.9) is None
    assert m.tick(10.0) == Cancelled("no key in time") and m.state == "idle"


def test_operator_unknown_keys_and_inactive() -> None:
    m = menu()
    assert m.key("7", 0.0) is None and m.key("x", 0.0) is None
    assert m.key("0", 0.0, active=False) is None  # an agent has the call
    assert m.ignored == 3 and m.state == "idle"
    assert m.key("0", 1.0) == ToOperator(OPERATOR)
    assert m.key("0", 1.1) is None  # once


def test_no_callback_without_a_number() -> None:
    m = menu(caller_number="anonymous")
    assert m.key("1", 0.0) is None and m.state == "idle"


def test_store_map_keypad_settings_and_one_line_errors() -> None:
    def store(**keypad: Any) -> dict[str, Any]:
        return {
            "default": "main",
            "stores": {"main": {"name": "Main", "transfer_target": OPERATOR, "keypad": keypad}},
        }

    m = StoreMapModel.model_validate(store(callback_key="1", operator_key="0"))
    st = m.stores["main"]
    assert st.keypad.enabled and st.operator_target == OPERATOR
    assert st.callback_full_number is False  # show_caller_number's default
    assert not StoreMapModel.model_validate(store()).stores["main"].keypad.enabled
    for bad, says in (
        ({"callback_key": "x"}, "is not a key"),
        ({"callback_key": "1", "operator_key": "1"}, "both '1'"),
        ({"confirm_key": "#"}, "a digit 0-9"),
        ({"webhook": {"url": "ftp://x", "secret_env": "S"}}, "http"),
        ({"webhook": {"url": "https://x", "secret_env": "lower"}}, "environment variable"),
        ({"phrases": {"nope": "x"}}, "not a keypad phrase"),
    ):
        with pytest.raises(ValueError, match=says):
            StoreMapModel.model_validate(store(**bad))
    no_target = {
        "default": "main",
        "stores": {"main": {"name": "M", "keypad": {"operator_key": "0"}}},
    }
    with pytest.raises(ValueError, match="operator_target"):
        StoreMapModel.model_validate(no_target)
    callback_fallback = {
        "default": "main",
        "stores": {"main": {"name": "M", "fallback": "callback"}},
    }
    with pytest.raises(ValueError, match=r"callback needs keypad\.callback_key"):
        StoreMapModel.model_validate(callback_fallback)


# ---- a whole call against the fake room ------------------------------------------


def prompts() -> PromptSet:
    keys = [*KEYPAD_PHRASE_KEYS, *(digit_key(d) for d in "0123456789")]
    audio = {k: np.full(int(PROMPT_S * SAMPLE_RATE), PROMPT, dtype=np.float32) for k in keys}
    return PromptSet("en", audio, frozenset())


def settings() -> Settings:
    return Settings(chunk_ms=100, fade_ms=400, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def world() -> Iterator[World]:
    w = World(policy=CallPolicy(caller_join_timeout=60.0))
    yield w
    w.close()


def start(
    w: World, *, keypad: bool = True, full_number: bool = True, **opts: Any
) -> tuple[Any, asyncio.Task[str], FakeRegistry, FakeParticipant]:
    kp = KeypadOptions.model_validate(
        {"callback_key": "1", "operator_key": "0", "confirm_timeout_s": 4.0, **opts}
    )
    plan = KeypadPlan(kp, OPERATOR, full_number, prompts()) if keypad else None
    w.plan = dataclasses.replace(w.plan, store_id="main", keypad=plan)
    reg = FakeRegistry()
    sess = w.session(settings(), registry=reg)
    task = w.loop.create_task(sess.run())
    w.run_for(0.01)
    c = caller()
    w.room.join(c)
    w.run_for(1.0)
    assert sess.lifecycle.state is State.HOLDING
    return sess, task, reg, c


def press(w: World, digits: str, who: Any, gap_s: float = 0.0) -> None:
    for d in digits:
        w.room.emit("sip_dtmf_received", rtc.SipDTMF(code=0, digit=d, participant=who))
        if gap_s:
            w.run_for(gap_s)


def prompt_heard(w: World, t0: float, t1: float) -> float:
    """Share of the time between t0 and t1 in which a prompt is heard over
    the ducked music (gains: the music's level is 1.0)."""
    g = w.gains(t0, t1)
    return float(np.mean(np.abs(g - DUCK - PROMPT / LEVEL) < 0.02))


def test_callback_asked_read_back_confirmed_stored_and_the_call_ends(world: World) -> None:
    sess, task, reg, c = start(world)
    t0 = world.loop.time()
    press(world, "1", c)
    world.run_for(2.0)
    # the read-back: 4 digits and "to confirm press 1" (7 prompts of 1 s, and gaps)
    assert prompt_heard(world, t0 + 0.5, t0 + 2.0) > 0.9
    assert sess.keypad.state == "confirming"
    assert reg.callbacks == []
    press(world, "1", c)
    world.run_for(5.0)
    assert len(reg.callbacks) == 1
    entry = reg.callbacks[0]
    assert entry["store"] == "main" and entry["number"] == "+15550100123"
    assert entry["caller"] != entry["number"] and "0123" not in entry["caller"][:-4]
    assert entry["waited_ms"] >= 0 and len(entry["id"]) == 16
    assert world.ctx.api.room.removed == [c.identity]
    assert task.done() and task.result() == "callback requested"


def test_callback_without_the_full_number_where_the_store_does_not_allow_it(world: World) -> None:
    _sess, _task, reg, c = start(world, full_number=False)
    press(world, "1", c)
    world.run_for(0.5)
    press(world, "1", c)
    world.run_for(0.5)
    assert len(reg.callbacks) == 1 and "number" not in reg.callbacks[0]


def test_a_key_during_the_prompt_cuts_it_and_cancels(world: World) -> None:
    sess, task, reg, c = start(world)
    press(world, "1", c)
    world.run_for(1.5)
    t_key = world.loop.time()
    assert prompt_heard(world, t_key - 0.5, t_key) > 0.6  # mid read-back (a word gap in it)
    press(world, "5", c)  # neither the confirm key: cancels, and cuts the prompt
    world.run_for(3.0)
    assert prompt_heard(world, t_key + 0.2, t_key + 3.0) == 0.0
    # the music is back at full level within the duck's ramp
    g = world.gains(t_key + 0.8, t_key + 3.0)
    assert float(np.min(g)) == pytest.approx(1.0, abs=0.01)
    assert sess.keypad.state == "idle" and reg.callbacks == [] and not task.done()


def test_no_answer_in_time_cancels_back_to_the_music(world: World) -> None:
    sess, task, reg, c = start(world)
    press(world, "1", c)
    world.run_for(2.0)
    assert sess.keypad.state == "confirming"
    world.run_for(16.0)  # read-back (about 7.6 s) + confirm_timeout_s 4 s
    assert sess.keypad.state == "idle" and reg.callbacks == [] and not task.done()
    assert float(np.min(world.gains(world.loop.time() - 1.0, world.loop.time()))) == pytest.approx(
        1.0, abs=0.01
    )


def test_operator_key_transfers_with_the_fallback(world: World) -> None:
    _sess, task, _reg, c = start(world)
    press(world, "0", c)
    world.run_for(1.0)
    assert world.ctx.transfers == [(c.identity, OPERATOR)]
    assert task.done() and task.result() == "caller asked for the operator"


def test_a_failed_transfer_hangs_up(world: World) -> None:
    async def refused(_identity: str, _target: str) -> None:
        raise RuntimeError("REFER refused")

    world.ctx.transfer_sip_participant = refused  # type: ignore[method-assign]
    _sess, task, _reg, c = start(world)
    press(world, "0", c)
    world.run_for(1.0)
    assert world.ctx.api.room.removed == [c.identity] and task.done()


def test_stray_keys_change_nothing(world: World) -> None:
    sess, task, reg, c = start(world)
    other = FakeParticipant("agent-x")
    world.room.join(other)
    world.run_for(0.2)
    t0 = world.loop.time()
    press(world, "0", other)  # not this call's caller: the operator key does nothing
    press(world, "1", None)  # from a server SDK: nothing either
    press(world, "79*#", c, gap_s=0.05)  # unknown keys
    world.run_for(2.0)
    assert world.ctx.transfers == [] and reg.callbacks == []
    assert sess.keypad.state == "idle" and sess.people.stray_keys == 2
    assert prompt_heard(world, t0, t0 + 2.0) == 0.0  # nothing said either
    assert float(np.min(world.gains(t0, t0 + 2.0))) == pytest.approx(1.0, abs=0.01)
    assert not task.done()


def test_a_burst_of_keys_does_one_thing(world: World) -> None:
    _sess, task, reg, c = start(world)
    press(world, "7#00000", c)  # within one loop turn
    world.run_for(1.0)
    assert world.ctx.transfers == [(c.identity, OPERATOR)]
    assert reg.callbacks == [] and task.done()


def test_callback_not_stored_keeps_the_caller_waiting(world: World) -> None:
    sess, task, reg, c = start(world)
    reg.fail = True
    press(world, "1", c)
    world.run_for(0.5)
    press(world, "1", c)
    world.run_for(2.0)
    assert world.ctx.api.room.removed == [] and not task.done()
    assert sess.keypad.state == "idle"


def test_an_agent_answering_while_the_callback_is_stored_does_not_keep_the_call(
    world: World,
) -> None:
    """The caller's confirmation decides: the request stored, the call ends
    with the goodbye, even though an agent spoke while the registry wrote it
    (the agent's events were handled first and the caller's choice was
    dropped: a stored callback for a caller the agent was talking to)."""
    _sess, task, reg, c = start(world)
    reg.store_s = 0.5
    press(world, "1", c)
    world.run_for(0.5)
    press(world, "1", c)
    world.run_for(0.1)  # storing
    agent = FakeParticipant("agent-1", attributes={"role": "agent"})
    world.room.join(agent)
    world.room.publish(agent, False)
    world.run_for(10.0)
    assert len(reg.callbacks) == 1
    assert task.done() and task.result() == "callback requested"
    assert world.ctx.api.room.removed == [c.identity]


def test_keys_while_an_agent_has_the_call_change_nothing(world: World) -> None:
    sess, task, _reg, c = start(world)
    agent = FakeParticipant("agent-1", attributes={"role": "agent"})
    world.room.join(agent)
    world.room.publish(agent, False)
    world.run_for(5.0)
    assert sess.lifecycle.state is not State.HOLDING
    press(world, "0", c)
    world.run_for(1.0)
    assert world.ctx.transfers == [] and not task.done()


def test_a_store_without_keypad_options_ignores_keys(world: World) -> None:
    sess, task, reg, c = start(world, keypad=False)
    press(world, "10", c, gap_s=0.1)
    world.run_for(1.0)
    assert sess.keypad is None and world.ctx.transfers == [] and reg.callbacks == []
    assert not task.done()
