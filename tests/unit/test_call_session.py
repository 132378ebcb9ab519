"""CallSession regressions, one per defect of the hold-integrity issue, on the
fake room (tests/unit/fakeroom.py) with the real lifecycle and HoldPlayer.

Each test failed on the code before its fix (a6ab5a3)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Iterator

import numpy as np
import pytest
from livekit import rtc

from tests.unit.fakeroom import FakeParticipant, FakePublication, World, caller
from worker.hold.audio import SAMPLE_RATE
from worker.lifecycle import CallPolicy, State
from worker.roles import AgentRule, Role, classify
from worker.room_events import kind_name
from worker.settings import Settings

FADE_S = 0.4
MAX_STEP = 1.1 * (math.pi / 2) / (SAMPLE_RATE * FADE_S) + 3 / 16384


def settings(**kw: object) -> Settings:
    return Settings(chunk_ms=500, fade_ms=400, _env_file=None, **kw)  # type: ignore[arg-type]


@pytest.fixture
def world() -> Iterator[World]:
    w = World(policy=CallPolicy(caller_join_timeout=60.0))
    yield w
    w.close()


def start(w: World, s: Settings | None = None) -> tuple[object, asyncio.Task[str]]:
    s = s or settings()
    policy = CallPolicy(
        caller_join_timeout=60.0,
        handoff_settle=s.handoff_settle_s,
        leave_after_handoff=s.leave_after_handoff,
        agent_quiet_after=s.agent_quiet_s,
    )
    w.plan = dataclasses.replace(w.plan, policy=policy)
    sess = w.session(s)
    task = w.loop.create_task(sess.run())
    w.run_for(0.01)
    return sess, task


def agent(w: World, name: str, *, muted: bool = False, role: bool = False) -> FakeParticipant:
    p = FakeParticipant(name, attributes={"role": "agent"} if role else {})
    w.room.join(p)
    w.room.publish(p, muted)
    return p


def level(w: World, t0: float, t1: float) -> tuple[float, float]:
    g = w.gains(t0, t1)
    return float(g.min()), float(g.max())


def test_failed_publication_hangs_up_and_tears_down(world: World) -> None:
    """Defect 1: it returned without hanging up or closing the monitor."""
    world.publish_failures = 3
    world.publish_delay = 0.1
    _sess, task = start(world)
    world.room.join(caller())  # joins while the publication is being tried
    world.run_for(3.0)
    assert task.done() and task.result().startswith("hold audio could not be published")
    assert world.ctx.api.room.removed == ["sip_+15550100123"]
    assert world.monitors and all(m.closed for m in world.monitors)
    assert world.room.local_participant.attributes_history[-1]["hold.state"] == "done"


def test_agent_recognised_by_attribute_keeps_the_music_off(world: World) -> None:
    """Defect 2: an agent with role=agent (set after joining) was never
    'present'; when the prefix-named agent left, hold came back over them."""
    sess, _task = start(world, settings(handoff_settle_s=0.0))
    world.room.join(caller())
    world.run_for(1.0)
    agent(world, "agent-1")
    web = FakeParticipant("web-7")
    world.room.join(web)
    world.room.publish(web, False)
    world.room.set_attributes(web, {"role": "agent"})
    world.run_for(2.0)
    world.room.leave("agent-1")
    world.run_for(2.0)
    t = world.loop.time()
    assert sess.lifecycle.state is not State.HOLDING  # type: ignore[attr-defined]
    assert level(world, t - 1.5, t)[1] == 0.0, "hold audio over a live agent"


def test_live_agent_leaving_in_the_settle_window_with_a_muted_one_present(world: World) -> None:
    """Defect 3: the worker left after the settle time and the caller was alone."""
    sess, task = start(world, settings(handoff_settle_s=3.0))
    world.room.join(caller())
    world.run_for(1.0)
    agent(world, "agent-b", muted=True)
    agent(world, "agent-a")
    world.run_for(1.0)
    assert sess.lifecycle.state is State.SETTLING  # type: ignore[attr-defined]
    world.room.leave("agent-a")
    t = world.loop.time()
    world.run_for(4.0)
    assert not task.done()
    assert level(world, t + FADE_S + 0.1, t + 4.0)[0] > 0.98, "caller alone in silence"


def test_caller_joining_during_publication_is_handled_once(world: World) -> None:
    """Defect 4: two CallerJoined, two store tasks, two monitors."""
    world.publish_delay = 0.3
    sess, _task = start(world)
    world.room.join(caller())  # during the publication; replayed after it
    world.run_for(1.0)
    assert world.resolve_calls == 1
    assert len(world.monitors) == 1
    assert sess.monitor is world.monitors[0]  # type: ignore[attr-defined]


def test_hangup_while_caller_joined_is_still_queued(world: World) -> None:
    """Defect 4: the hangup was judged against lifecycle.caller (not yet set)
    and lost; the call waited for its join timeout."""
    world.publish_delay = 0.3
    _sess, task = start(world)
    world.room.join(caller())
    world.room.leave("sip_+15550100123")  # before the lifecycle saw the join
    world.run_for(1.0)
    assert task.done() and task.result() == "caller hung up"


def test_resume_mid_fade_has_no_click(world: World) -> None:
    """Defect 5: a resume 150 ms into a fade dropped the gain 0.83 -> 0."""
    _sess, _task = start(world)
    world.room.join(caller())
    world.run_for(1.0)
    a = agent(world, "agent-1")
    world.run_for(0.15)
    world.room.set_muted(a, next(iter(a.track_publications.values())), True)
    world.run_for(1.0)
    t = world.loop.time()
    g = world.gains(0.5, t)
    steps = np.abs(np.diff(g))
    assert float(steps.max()) <= MAX_STEP, f"click of {steps.max():.3f}"
    assert level(world, t - 0.3, t)[0] > 0.98  # and hold is back up


def test_new_fade_during_a_resume_ramp_has_no_click(world: World) -> None:
    """Defect 5, the other way: a fade during a resume jumped to full level."""
    _sess, _task = start(world)
    world.room.join(caller())
    world.run_for(1.0)
    a = agent(world, "agent-1")
    pub = next(iter(a.track_publications.values()))
    world.run_for(0.45)  # faded out
    world.room.set_muted(a, pub, True)
    world.run_for(0.1)  # resuming
    world.room.set_muted(a, pub, False)
    world.run_for(1.0)
    g = world.gains(0.5, world.loop.time())
    assert float(np.abs(np.diff(g)).max()) <= MAX_STEP


def test_dead_player_is_replaced(world: World) -> None:
    """Defect 6: a failing player task stopped hold audio with nothing noticing."""
    _sess, _task = start(world)
    world.room.join(caller())
    world.run_for(1.0)
    for track in world.room.local_participant.published.values():
        track.source.fail_next = True
    world.run_for(3.0)
    t = world.loop.time()
    assert level(world, t - 1.0, t)[0] > 0.98, "hold audio did not come back"
    assert len(world.room.local_participant.published) == 1


def test_teardown_survives_failed_tasks(world: World) -> None:
    """Defect 6: an exception stored in the store task aborted teardown
    before `done` was published and the track unpublished."""
    world.resolve_fails = False
    world.resolve_delay = 0.2

    async def broken(_attrs: dict[str, str]) -> object:
        return object()  # not a plan: the store task fails after resolving

    sess, task = start(world)
    sess._resolve_plan = broken  # type: ignore[attr-defined]
    world.room.join(caller())
    world.run_for(1.0)
    world.room.leave("sip_+15550100123")
    world.run_for(1.0)
    assert task.done() and task.exception() is None
    assert not world.room.local_participant.published
    assert world.room.local_participant.attributes_history[-1]["hold.state"] == "done"


def test_structured_log_fields_reach_the_record(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 7: LoggerAdapter dropped every extra= field on Python 3.11."""
    caplog.set_level(logging.INFO, logger="hold-worker.call")
    sess, _task = start(world)
    world.room.join(caller())
    world.run_for(0.5)
    published = [r for r in caplog.records if r.getMessage() == "hold audio published"]
    joined = [r for r in caplog.records if r.getMessage() == "caller joined"]
    assert published and isinstance(published[0].__dict__.get("publish_ms"), int)
    assert joined and joined[0].__dict__.get("caller") == sess.people.caller_masked  # type: ignore[attr-defined]
    assert joined[0].__dict__.get("room") == world.room.name


def test_agents_dropping_long_after_the_handoff_get_hold_back(world: World) -> None:
    """Defect 10: after the settle window the worker left, so a caller whose
    agents all dropped later was alone in silence."""
    sess, _task = start(world, settings(handoff_settle_s=3.0))
    c = caller()
    world.room.join(c)
    world.run_for(1.0)
    agent(world, "agent-a")
    world.run_for(4.0)
    agent(world, "agent-b")
    world.run_for(5.0)
    assert sess.lifecycle.state is State.MONITORING  # type: ignore[attr-defined]
    assert not world.room.local_participant.published  # no track after the handoff
    assert not any(p.subscribed for p in c.track_publications.values())  # no media
    world.room.leave("agent-a")
    world.room.leave("agent-b")
    t = world.loop.time()
    world.run_for(3.0)
    assert level(world, t + 2.0, t + 3.0)[0] > 0.98, "no hold within 2 s of the agents leaving"
    assert any(p.subscribed for p in c.track_publications.values())  # watching again


def test_leave_after_handoff_setting_keeps_the_old_behaviour(world: World) -> None:
    _sess, task = start(world, settings(handoff_settle_s=0.5, leave_after_handoff=True))
    world.room.join(caller())
    world.run_for(1.0)
    agent(world, "agent-a")
    world.run_for(2.0)
    assert task.done() and task.result() == "handed over to agent-a"


@pytest.mark.parametrize(
    "kind",
    [rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR, rtc.ParticipantKind.PARTICIPANT_KIND_BRIDGE],
)
def test_connector_and_bridge_are_services(kind: int) -> None:
    """Defect 11: they were 'kind5'/'kind6', i.e. UNKNOWN rather than SERVICE."""
    p = FakeParticipant("agent-lookalike", kind=kind)
    assert classify(kind_name(p), p.identity, {}, AgentRule()) is Role.SERVICE  # type: ignore[arg-type]


def test_hold_fades_in_when_a_retried_publication_lands(world: World) -> None:
    """Found by the model: bringing hold back after the handoff with a failed
    first publication played the fade-in to nobody, then jumped to full level
    when the retry was published (a click of 1.0)."""
    _sess, _task = start(world, settings(handoff_settle_s=0.0))
    world.room.join(caller())
    world.run_for(1.0)
    agent(world, "agent-1")
    world.run_for(1.0)
    world.publish_failures = 1
    world.room.leave("agent-1")
    world.run_for(3.0)
    t = world.loop.time()
    g = world.gains(0.5, t)
    assert float(np.abs(np.diff(g)).max()) <= MAX_STEP
    assert level(world, t - 0.5, t)[0] > 0.98


def test_draining_worker_leaves_once_the_call_is_handed_over(world: World) -> None:
    """SIGTERM: a held call is kept until handed over, then left to the agent
    (the guardian covers a later drop), so a rolling update does not wait for
    every conversation to end."""
    draining = False
    world.plan = dataclasses.replace(world.plan, policy=CallPolicy(caller_join_timeout=60.0))
    sess = world.session(settings(), is_draining=lambda: draining)
    task = world.loop.create_task(sess.run())
    world.room.join(caller())
    world.run_for(1.0)
    draining = True
    world.run_for(3.0)
    assert not task.done() and sess.lifecycle.state is State.HOLDING
    agent(world, "agent-1")
    world.run_for(5.0)
    assert task.done() and "draining" in task.result()


def test_player_dying_during_the_fade_still_hands_over(world: World) -> None:
    """A fade waiting on a dead player ends (a dead player is silent), so the
    handoff is confirmed and the replacement stays silent under the agent."""
    sess, task = start(world, settings(handoff_settle_s=0.5))
    world.room.join(caller())
    world.run_for(1.0)
    for track in world.room.local_participant.published.values():
        track.source.fail_next = True  # the fade's first push fails
    agent(world, "agent-1")
    world.run_for(3.0)
    assert sess.lifecycle.state is State.MONITORING  # type: ignore[attr-defined]
    t = world.loop.time()
    assert level(world, 1.5, t)[1] == 0.0, "hold audio under the agent"
    assert not task.done()


def control(w: World, action: str, sender: FakeParticipant | None = None) -> None:
    """A control message (the desk through LiveKit's SendData, or an agent)."""
    import json
    from types import SimpleNamespace

    from worker.protocol import CONTROL_TOPIC

    packet = SimpleNamespace(
        data=json.dumps({"action": action, "agent": "agent-a"}).encode(),
        topic=CONTROL_TOPIC,
        participant=sender,
        kind=0,
    )
    w.room.emit("data_received", packet)


def test_agent_hold_and_resume(world: World) -> None:
    """Issue 16: an agent puts the caller on hold (hold audio back within the
    fade, the agent's audio cut from the caller) and resumes (heard again,
    hold faded out)."""
    sess, _task = start(world, settings(handoff_settle_s=1.0))
    c = caller()
    world.room.join(c)
    world.run_for(1.0)
    a = agent(world, "agent-a")
    world.run_for(3.0)
    assert sess.lifecycle.state is State.MONITORING  # type: ignore[attr-defined]
    t_hold = world.loop.time()
    control(world, "hold")
    world.run_for(1.5)
    assert sess.lifecycle.state is State.ON_HOLD  # type: ignore[attr-defined]
    lo, _hi = level(world, t_hold + 0.6, t_hold + 1.5)
    assert lo > 0.99  # full hold audio within the fade (0.4 s) and a chunk
    agent_sids = [p.sid for p in a.track_publications.values()]
    subs = world.ctx.api.room.subscriptions
    assert subs == [(c.identity, agent_sids, False)]
    # a track the agent publishes while the caller is on hold is cut too
    late = world.room.publish(a, muted=False)
    world.run_for(0.2)
    assert subs[-1] == (c.identity, [late.sid], False)
    # an agent's live microphone does not fade the hold out
    world.run_for(3.0)
    assert level(world, world.loop.time() - 2.0, world.loop.time())[0] > 0.99
    control(world, "resume", sender=a)
    world.run_for(2.5)
    assert subs[-1] == (c.identity, [*agent_sids, late.sid], True)
    assert level(world, world.loop.time() - 1.0, world.loop.time())[1] < 0.01  # faded out
    assert sess.lifecycle.state is State.MONITORING  # type: ignore[attr-defined]


def test_control_from_the_caller_or_a_stranger_is_refused(world: World) -> None:
    sess, _task = start(world, settings(handoff_settle_s=1.0))
    c = caller()
    world.room.join(c)
    world.run_for(1.0)
    agent(world, "agent-a")
    world.run_for(3.0)
    control(world, "hold", sender=c)
    stranger = FakeParticipant("web-observer")
    world.room.join(stranger)
    control(world, "hold", sender=stranger)
    world.run_for(1.0)
    assert sess.lifecycle.state is State.MONITORING  # type: ignore[attr-defined]
    assert world.ctx.api.room.subscriptions == []


def test_on_hold_an_agent_joining_with_a_live_track_is_cut_and_given_back(world: World) -> None:
    """Found by the model test: a track a participant joined with (no
    track_published event) was heard by the caller on hold; and when every
    agent left the hold, a track cut meanwhile was never given back."""
    sess, _task = start(world, settings(handoff_settle_s=1.0))
    c = caller()
    world.room.join(c)
    world.run_for(1.0)
    a = agent(world, "agent-a")
    world.run_for(3.0)
    control(world, "hold")
    world.run_for(0.5)
    # a colleague and someone listening in join with their microphones on
    subs = world.ctx.api.room.subscriptions
    cut = []
    for name in ("agent-b", "web-listener"):
        p = FakeParticipant(name)
        pub = FakePublication(muted=False)
        p.track_publications[pub.sid] = pub
        world.room.join(p)
        world.run_for(0.2)
        assert subs[-1] == (c.identity, [pub.sid], False), name
        cut.append(pub.sid)
    world.room.leave("agent-b")
    world.room.leave(a.identity)
    world.run_for(0.5)
    assert sess.lifecycle.state is State.HOLDING  # type: ignore[attr-defined]
    # the hold is over with every agent gone: the listener is heard again
    assert subs[-1] == (c.identity, [cut[1]], True)


def test_hold_cuts_the_agents_before_a_slow_publication_of_hold_audio(world: World) -> None:
    """Found by the model test: the cut waited for the hold track's
    (retried) publication, so the caller heard the shop floor meanwhile."""
    sess, _task = start(world, settings(handoff_settle_s=0.5))
    c = caller()
    world.room.join(c)
    world.run_for(1.0)
    agent(world, "agent-a")
    world.run_for(3.0)
    assert sess.lifecycle.state is State.MONITORING  # type: ignore[attr-defined]
    world.publish_delay = 0.3
    world.publish_failures = 1  # republishing takes 0.3 + 0.5 + 0.3 s
    control(world, "hold")
    world.run_for(0.1)
    assert world.ctx.api.room.subscriptions[-1][2] is False
