"""The guardian: its decision (pure), and the re-dispatch around it against a fake LiveKit API:
retries, de-duplication, stale events, claims (a real redis-server for two replicas)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application, post
from google.protobuf.json_format import MessageToJson
from livekit import api

from worker.guardian import (
    AGENT,
    SIP,
    UNFINISHED,
    Guardian,
    GuardianError,
    LocalClaims,
    Member,
    RedisClaims,
    RetryPolicy,
    claim_key,
    make_claims,
    redispatch_reason,
)
from worker.lifecycle import State
from worker.settings import Settings

STANDARD = int(api.ParticipantInfo.Kind.STANDARD)
NUMBER = "+15550100123"
ROOM = f"call-_{NUMBER}_abc"
NOW = 1_800_000_000.0
caller = Member(SIP, {"sip.phoneNumber": "+15550123", "sip.callStatus": "active"})
RULE = Settings().agent_rule


def agent(state: str, **attrs: str) -> Member:
    return Member(AGENT, {"hold.state": state, **attrs} if state else dict(attrs))


def human(identity: str = "agent-alice", live: bool = True, **attrs: str) -> Member:
    return Member(STANDARD, attrs, identity=identity, audio_live=live)


# ---- the decision ----------------------------------------------------------------


def test_every_state_but_done_is_unfinished() -> None:
    assert {State(s) for s in UNFINISHED} == set(State) - {State.DONE}
    for state in State:
        if state is not State.DONE:  # settling and monitoring too: the worker stays
            assert redispatch_reason(agent(state.value), [caller], RULE) is not None, state


def test_clean_exits_and_others_are_left_alone() -> None:
    assert redispatch_reason(agent(State.DONE.value), [caller]) is None  # finished cleanly
    assert redispatch_reason(agent(""), [caller]) is None  # another kind of agent
    human_left = Member(STANDARD, {"hold.state": "holding"})
    assert redispatch_reason(human_left, [caller]) is None


def test_no_caller_or_another_hold_agent_means_no_dispatch() -> None:
    assert redispatch_reason(agent("holding"), []) is None
    gone = Member(SIP, {"sip.callStatus": "hangup"})
    assert redispatch_reason(agent("holding"), [gone]) is None
    left = Member(SIP, caller.attributes, disconnected=True)
    assert redispatch_reason(agent("holding"), [left]) is None
    assert redispatch_reason(agent("holding"), [caller, agent("holding")]) is None
    # an AI or other agent without hold.state does not count as a hold worker
    assert redispatch_reason(agent("holding"), [caller, agent("")]) is not None


def test_a_hold_agent_still_joining_counts_as_present() -> None:
    dead = agent("holding", **{"lk.agent.name": "hold-agent"})
    joining = agent("", **{"lk.agent.name": "hold-agent"})  # no hold.state yet
    assert redispatch_reason(dead, [caller, joining]) is None
    other = agent("", **{"lk.agent.name": "ai-assistant"})
    assert redispatch_reason(dead, [caller, other]) is not None
    gone = Member(AGENT, {"hold.state": "holding"}, disconnected=True)
    assert redispatch_reason(dead, [caller, gone]) is not None


def test_a_live_human_agent_means_no_dispatch() -> None:
    dead = agent(State.MONITORING.value)
    assert redispatch_reason(dead, [caller, human()], RULE) is None  # by identity prefix
    by_role = human("web-7", role="agent")
    assert redispatch_reason(dead, [caller, by_role], RULE) is None  # by attribute
    # present but not live (muted, no audio track): the caller needs hold audio
    assert redispatch_reason(dead, [caller, human(live=False)], RULE) is not None
    # an observer with a microphone is not an agent
    assert redispatch_reason(dead, [caller, human("observer-1")], RULE) is not None
    # the rule comes from the settings
    staff = Settings(agent_identity_prefix="staff-").agent_rule
    assert redispatch_reason(dead, [caller, human("staff-bob")], staff) is None
    assert redispatch_reason(dead, [caller, human("staff-bob")], RULE) is not None


def test_a_human_agent_leaving_the_caller_alone_needs_the_hold_agent() -> None:
    # the hold worker died while the agent talked (no re-dispatch then); now
    # the agent leaves: nobody brings hold audio back
    for left in (human(), human("web-7", role="agent"), human(live=False)):
        assert redispatch_reason(left, [caller], RULE, "hold-agent") is not None, left
    # a participant that is not a human agent leaving changes nothing
    assert redispatch_reason(human("observer-1"), [caller], RULE, "hold-agent") is None
    # the hold worker is alive (it stays in the room after a handoff) or joining
    for hold in (
        agent(State.MONITORING.value),
        agent("", **{"lk.agent.name": "hold-agent"}),
    ):
        assert redispatch_reason(human(), [caller, hold], RULE, "hold-agent") is None, hold
    other = agent("", **{"lk.agent.name": "ai-assistant"})
    assert redispatch_reason(human(), [caller, other], RULE, "hold-agent") is not None
    # another human agent is live; one who is muted is not
    assert redispatch_reason(human(), [caller, human("agent-bob")], RULE, "hold-agent") is None
    muted = human("agent-bob", live=False)
    assert redispatch_reason(human(), [caller, muted], RULE, "hold-agent") is not None
    # the caller is gone
    assert redispatch_reason(human(), [], RULE, "hold-agent") is None
    hangup = Member(SIP, {"sip.callStatus": "hangup"})
    assert redispatch_reason(human(), [hangup], RULE, "hold-agent") is None


# ---- a fake LiveKit API ---------------------------------------------------------


def participant(
    identity: str,
    kind: int,
    attributes: dict[str, str] | None = None,
    tracks: list[api.TrackInfo] | None = None,
) -> api.ParticipantInfo:
    return api.ParticipantInfo(
        sid=f"PA_{identity}",
        identity=identity,
        kind=kind,  # type: ignore[arg-type]
        attributes=attributes or {},
        tracks=tracks or [],
        state=api.ParticipantInfo.State.ACTIVE,
    )


SIP_CALLER = participant(
    f"sip_{NUMBER}", SIP, {"sip.phoneNumber": NUMBER, "sip.callStatus": "active"}
)


def audio(muted: bool = False) -> api.TrackInfo:
    return api.TrackInfo(sid="TR_a", type=api.TrackType.AUDIO, muted=muted)


class FakeLiveKit:
    """room.list_participants and agent_dispatch.create_dispatch; failures on demand."""

    def __init__(self, participants: list[api.ParticipantInfo] | None = None) -> None:
        self.participants = [SIP_CALLER] if participants is None else participants
        self.list_failures: list[BaseException] = []
        self.dispatch_failures: list[BaseException] = []
        self.list_calls = 0
        self.dispatches: list[api.CreateAgentDispatchRequest] = []
        self.hang = False
        self.room = self
        self.agent_dispatch = self

    async def __aenter__(self) -> FakeLiveKit:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def list_participants(
        self, req: api.ListParticipantsRequest
    ) -> api.ListParticipantsResponse:
        self.list_calls += 1
        await asyncio.sleep(0)  # let concurrent deliveries interleave
        if self.hang:
            self.hang = False
            await asyncio.sleep(3600)
        if self.list_failures:
            raise self.list_failures.pop(0)
        return api.ListParticipantsResponse(participants=self.participants)

    async def create_dispatch(self, req: api.CreateAgentDispatchRequest) -> api.AgentDispatch:
        await asyncio.sleep(0)
        if self.dispatch_failures:
            raise self.dispatch_failures.pop(0)
        self.dispatches.append(req)
        return api.AgentDispatch(room=req.room, agent_name=req.agent_name)


class Sleeps:
    """An injected sleep that returns at once and advances an injected monotonic clock."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.now = 0.0

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.now += delay

    def monotonic(self) -> float:
        return self.now


def guardian(lk: FakeLiveKit, **kw: Any) -> tuple[Guardian, Sleeps]:
    sleeps = Sleeps()
    kw.setdefault("clock", lambda: NOW)
    g = Guardian(
        "http://lk.invalid",
        "key",
        "secret-secret-secret-secret-secret",
        "hold-agent",
        rule=RULE,
        api_factory=lambda: lk,
        sleep=sleeps,
        monotonic=sleeps.monotonic,
        **kw,
    )
    return g, sleeps


def left_event(
    event_id: str = "EV_1",
    state: str = State.HOLDING.value,
    created_at: float = NOW - 2,
    sid: str = "PA_worker1",
) -> api.WebhookEvent:
    return api.WebhookEvent(
        event="participant_left",
        id=event_id,
        created_at=int(created_at),
        room=api.Room(name=ROOM),
        participant=api.ParticipantInfo(
            sid=sid,
            identity="agent-AJ_worker1",
            kind=api.ParticipantInfo.Kind.AGENT,
            attributes={"hold.state": state, "lk.agent.name": "hold-agent-blue"},
        ),
    )


def human_left_event(
    event_id: str = "EV_h1",
    identity: str = "agent-alice",
    attributes: dict[str, str] | None = None,
    kind: int = STANDARD,
) -> api.WebhookEvent:
    return api.WebhookEvent(
        event="participant_left",
        id=event_id,
        created_at=int(NOW - 2),
        room=api.Room(name=ROOM),
        participant=api.ParticipantInfo(
            sid=f"PA_{identity}",
            identity=identity,
            kind=kind,  # type: ignore[arg-type]
            attributes=attributes or {},
            state=api.ParticipantInfo.State.DISCONNECTED,
        ),
    )


HOLD_WORKER = participant("agent-AJ_live", AGENT, {"hold.state": State.MONITORING.value})


# ---- the re-dispatch ---------------------------------------------------------------


async def test_dead_hold_agent_is_dispatched_again_under_its_own_agent_name() -> None:
    lk = FakeLiveKit()
    g, _ = guardian(lk)
    assert await g.process(left_event()) == "dispatched"
    assert [(d.room, d.agent_name) for d in lk.dispatches] == [(ROOM, "hold-agent-blue")]
    assert g.dispatched == 1


async def test_a_finished_call_or_another_event_makes_no_request() -> None:
    lk = FakeLiveKit()
    g, _ = guardian(lk)
    assert await g.process(left_event(state=State.DONE.value)) == "finished"
    joined = left_event("EV_2")
    joined.event = "participant_joined"
    assert await g.process(joined) == "ignored"
    assert lk.list_calls == 0 and lk.dispatches == []


async def test_list_participants_failures_are_retried_with_backoff() -> None:
    lk = FakeLiveKit()
    lk.list_failures = [
        ConnectionResetError("reset"),
        api.TwirpError("unavailable", "x", status=503),
    ]
    g, sleeps = guardian(lk)
    assert await g.process(left_event()) == "dispatched"
    assert lk.list_calls == 3 and len(lk.dispatches) == 1
    assert sleeps.delays == [0.25, 0.5]  # exponential


async def test_create_dispatch_failure_is_retried_and_dispatches_once() -> None:
    lk = FakeLiveKit()
    lk.dispatch_failures = [TimeoutError(), ConnectionResetError("reset")]
    g, sleeps = guardian(lk)
    assert await g.process(left_event()) == "dispatched"
    assert len(lk.dispatches) == 1
    assert sleeps.delays == [0.25, 0.5]


async def test_retries_are_bounded_and_a_redelivery_is_acted_on() -> None:
    lk = FakeLiveKit()
    lk.dispatch_failures = [ConnectionResetError("down")] * 100
    g, sleeps = guardian(lk)
    with pytest.raises(GuardianError, match="create dispatch failed 6 times"):
        await g.process(left_event())
    assert sleeps.delays == [0.25, 0.5, 1.0, 2.0, 4.0] and sum(sleeps.delays) < 10
    # LiveKit delivers the failed webhook again: neither the de-dup nor the
    # claim of the failed attempt stops it
    lk.dispatch_failures = []
    assert await g.process(left_event()) == "dispatched"
    assert len(lk.dispatches) == 1


async def test_retries_stop_at_the_time_budget() -> None:
    lk = FakeLiveKit()
    lk.list_failures = [ConnectionResetError("down")] * 100
    policy = RetryPolicy(delays=(1.0, 2.0, 4.0, 8.0, 16.0), budget_s=10.0)
    g, sleeps = guardian(lk, retry_policy=policy)
    with pytest.raises(GuardianError, match="list participants failed 4 times"):
        await g.process(left_event())
    assert sleeps.delays == [1.0, 2.0, 4.0]  # 8 more would pass 10 s
    assert lk.list_calls == 4 and lk.dispatches == []


async def test_a_hung_request_is_cut_off_and_retried() -> None:
    lk = FakeLiveKit()
    lk.hang = True
    g, sleeps = guardian(lk, retry_policy=RetryPolicy(attempt_timeout_s=0.05))
    started = time.monotonic()
    assert await g.process(left_event()) == "dispatched"
    assert time.monotonic() - started < 2
    assert lk.list_calls == 2 and sleeps.delays == [0.25]


async def test_a_room_that_is_gone_is_not_retried() -> None:
    lk = FakeLiveKit()
    lk.list_failures = [api.TwirpError("not_found", "room not found", status=404)]
    g, sleeps = guardian(lk)
    assert await g.process(left_event()) == "room gone"
    assert lk.list_calls == 1 and sleeps.delays == [] and lk.dispatches == []


async def test_the_same_delivery_twice_dispatches_once() -> None:
    lk = FakeLiveKit()
    g, _ = guardian(lk)
    assert await g.process(left_event()) == "dispatched"
    assert await g.process(left_event()) == "duplicate"
    # and at the same time
    lk2 = FakeLiveKit()
    g2, _ = guardian(lk2)
    outcomes = await asyncio.gather(g2.process(left_event()), g2.process(left_event()))
    assert sorted(outcomes) == ["dispatched", "duplicate"]
    assert len(lk.dispatches) == 1 and len(lk2.dispatches) == 1


async def test_another_event_for_the_same_departure_is_claimed_once() -> None:
    lk = FakeLiveKit()
    g, _ = guardian(lk)
    assert await g.process(left_event("EV_1")) == "dispatched"
    assert await g.process(left_event("EV_other")) == "claimed elsewhere"
    assert len(lk.dispatches) == 1


async def test_an_event_older_than_a_minute_is_ignored() -> None:
    lk = FakeLiveKit()
    g, _ = guardian(lk)
    assert await g.process(left_event("EV_old", created_at=NOW - 61)) == "stale"
    assert lk.list_calls == 0
    assert await g.process(left_event("EV_new", created_at=NOW - 59)) == "dispatched"


async def test_no_dispatch_into_a_room_with_a_hold_agent_or_a_live_human_agent() -> None:
    hold = participant("agent-AJ_2", AGENT, {"hold.state": "waiting"})
    lk = FakeLiveKit([SIP_CALLER, hold])
    g, _ = guardian(lk)
    assert await g.process(left_event("EV_1")) == "not needed"
    lk.participants = [SIP_CALLER, participant("agent-alice", STANDARD, tracks=[audio()])]
    assert await g.process(left_event("EV_2")) == "not needed"
    lk.participants = [SIP_CALLER, participant("web-1", STANDARD, {"role": "agent"}, [audio()])]
    assert await g.process(left_event("EV_3")) == "not needed"
    assert lk.dispatches == []
    # a human agent whose microphone is muted: the caller needs hold audio
    lk.participants = [SIP_CALLER, participant("agent-alice", STANDARD, tracks=[audio(True)])]
    assert await g.process(left_event("EV_4")) == "dispatched"


async def test_logs_carry_no_caller_number(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hold-worker.guardian")
    lk = FakeLiveKit()
    lk.list_failures = [ConnectionResetError(f"reset for {ROOM}")]
    g, _ = guardian(lk)
    assert await g.process(left_event()) == "dispatched"
    assert await g.process(left_event("EV_old", created_at=NOW - 3600)) == "stale"
    assert caplog.records
    digits = NUMBER.lstrip("+")
    for r in caplog.records:
        assert digits not in r.getMessage() and digits not in str(vars(r))


# ---- the webhook endpoint ----------------------------------------------------------


def signed(body: str, key: str, secret: str) -> str:
    sha = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return api.AccessToken(key, secret).with_sha256(sha).to_jwt()


async def test_webhook_endpoint_answers_500_until_livekit_recovers() -> None:
    lk = FakeLiveKit()
    lk.list_failures = [ConnectionResetError("down")] * 6
    g, _ = guardian(lk)
    app = Application()
    app.add_routes([post("/livekit/webhook", g.handle)])
    body = MessageToJson(left_event())
    async with TestClient(TestServer(app)) as client:
        auth = {"Authorization": signed(body, g.key, g.secret)}
        r = await client.post("/livekit/webhook", data=body, headers=auth)
        assert r.status == 500  # LiveKit delivers it again
        r = await client.post("/livekit/webhook", data=body, headers=auth)
        assert r.status == 200 and await r.text() == "dispatched"
        r = await client.post("/livekit/webhook", data=body, headers=auth)
        assert await r.text() == "duplicate"
        forged = {"Authorization": signed(body, g.key, "another-secret-another-secret-xx")}
        r = await client.post("/livekit/webhook", data=body, headers=forged)
        assert r.status == 401
    assert len(lk.dispatches) == 1


# ---- claims --------------------------------------------------------------------------


def test_without_redis_the_guardian_says_duplicates_are_possible(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hold-worker.guardian")
    assert isinstance(make_claims(""), LocalClaims)
    warned = [r for r in caplog.records if "HOLD_REDIS_URL" in r.getMessage()]
    assert len(warned) == 1 and "may both re-dispatch" in warned[0].getMessage()
    caplog.clear()
    assert isinstance(make_claims("redis://127.0.0.1:1/0"), RedisClaims)
    assert not caplog.records


def test_claim_key_is_per_departure_and_hides_the_number() -> None:
    assert claim_key(ROOM, "PA_1") == claim_key(ROOM, "PA_1")
    assert claim_key(ROOM, "PA_1") != claim_key(ROOM, "PA_2")
    assert claim_key(ROOM, "PA_1") != claim_key("call-_other", "PA_1")
    assert NUMBER.lstrip("+") not in claim_key(ROOM, "PA_1")


class BrokenRedis:
    async def set(self, *a: object, **kw: object) -> bool:
        raise ConnectionError("redis is down")

    async def eval(self, *a: object) -> int:
        raise ConnectionError("redis is down")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_redis_failure_does_not_stop_the_redispatch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import redis.asyncio as aioredis

    caplog.set_level(logging.WARNING, logger="hold-worker.guardian")
    closed = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    for client in (BrokenRedis(), closed):
        lk = FakeLiveKit()
        g, _ = guardian(lk, claims=RedisClaims(client))
        assert await g.process(left_event()) == "dispatched"
        # the local claim still holds in this replica
        assert await g.process(left_event("EV_again")) == "claimed elsewhere"
        assert len(lk.dispatches) == 1
    await closed.aclose()
    assert sum("redis claim failed" in r.getMessage() for r in caplog.records) == 2


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        msg = "redis-server is not installed (devstack/install.sh: apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    port = free_port()
    proc = subprocess.Popen(
        [
            *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)),
            *("--save", "", "--appendonly", "no", "--protected-mode", "yes"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_two_replicas_with_redis_dispatch_exactly_once(redis_url: str) -> None:
    import redis.asyncio as aioredis

    lk = FakeLiveKit()  # one LiveKit project behind both replicas
    clients = [aioredis.from_url(redis_url), aioredis.from_url(redis_url)]
    try:
        replicas = [guardian(lk, claims=RedisClaims(c))[0] for c in clients]
        for n in range(20):  # 20 calls, each delivered to both replicas at once
            ev = left_event(f"EV_{n}", sid=f"PA_worker{n}")
            outcomes = await asyncio.gather(*(g.process(ev) for g in replicas))
            assert sorted(outcomes) == ["claimed elsewhere", "dispatched"], n
        assert len(lk.dispatches) == 20
        assert sum(g.dispatched for g in replicas) == 20
        for c in clients:
            assert 0 < await c.ttl(claim_key(ROOM, "PA_worker0")) <= 120
    finally:
        for c in clients:
            await c.aclose()


async def test_two_replicas_with_redis_once_when_the_first_dispatch_fails(redis_url: str) -> None:
    import redis.asyncio as aioredis

    lk_a, lk_b = FakeLiveKit(), FakeLiveKit()
    lk_a.dispatch_failures = [ConnectionResetError("down")] * 100
    clients = [aioredis.from_url(redis_url), aioredis.from_url(redis_url)]
    try:
        a = guardian(lk_a, claims=RedisClaims(clients[0]))[0]
        b = guardian(lk_b, claims=RedisClaims(clients[1]))[0]
        with pytest.raises(GuardianError):
            await a.process(left_event())
        # the redelivery reaches the other replica: the failed claim was released
        assert await b.process(left_event()) == "dispatched"
        assert await a.process(left_event("EV_late")) == "claimed elsewhere"
        assert lk_a.dispatches == [] and len(lk_b.dispatches) == 1
    finally:
        for c in clients:
            await c.aclose()


async def test_two_replicas_without_redis_may_both_dispatch() -> None:
    # What the Redis claim prevents (and what the start-up warning says).
    lk = FakeLiveKit()
    replicas = [guardian(lk, claims=LocalClaims())[0] for _ in range(2)]
    ev = left_event()
    assert await asyncio.gather(*(g.process(ev) for g in replicas)) == ["dispatched"] * 2
    assert len(lk.dispatches) == 2


# ---- a human agent leaves ---------------------------------------------------------


async def test_the_last_human_agent_leaving_the_caller_alone_dispatches_the_hold_agent() -> None:
    # the hold worker dies while agent-alice talks to the caller: no dispatch
    alice = participant("agent-alice", STANDARD, tracks=[audio()])
    lk = FakeLiveKit([SIP_CALLER, alice])
    g, _ = guardian(lk)
    assert await g.process(left_event()) == "not needed"
    # then she leaves (LiveKit may still list her): the caller is alone
    lk.participants = [SIP_CALLER, alice]
    assert await g.process(human_left_event()) == "dispatched"
    # under our agent name (HOLD_AGENT_NAME), not the dead worker's
    assert [(d.room, d.agent_name) for d in lk.dispatches] == [(ROOM, "hold-agent")]
    assert g.dispatched == 1
    # the same de-dup and claim as a hold agent's departure
    assert await g.process(human_left_event()) == "duplicate"
    assert await g.process(human_left_event("EV_h_other")) == "claimed elsewhere"
    # a human agent recognised by the role attribute, in a room that never had
    # a hold worker: the same
    lk2 = FakeLiveKit()
    g2, _ = guardian(lk2)
    assert await g2.process(human_left_event(identity="web-7", attributes={"role": "agent"})) == (
        "dispatched"
    )
    assert [d.agent_name for d in lk2.dispatches] == ["hold-agent"]


async def test_a_human_agent_leaving_with_the_hold_worker_present_dispatches_nothing() -> None:
    # Normal operation: the hold worker stays in the room after the handoff
    # and brings hold back itself.
    lk = FakeLiveKit([SIP_CALLER, HOLD_WORKER])
    g, _ = guardian(lk)
    assert await g.process(human_left_event("EV_h1")) == "not needed"
    # one dispatched and still joining (our agent name, no hold.state yet)
    joining = participant("agent-AJ_new", AGENT, {"lk.agent.name": "hold-agent"})
    lk.participants = [SIP_CALLER, joining]
    assert await g.process(human_left_event("EV_h2", identity="agent-bob")) == "not needed"
    assert lk.list_calls == 2 and lk.dispatches == []
    # control: the same departure with no hold agent in the room dispatches
    lk.participants = [SIP_CALLER]
    assert await g.process(human_left_event("EV_h3", identity="agent-carol")) == "dispatched"


async def test_a_human_agent_leaving_while_another_is_live_dispatches_nothing() -> None:
    bob = participant("agent-bob", STANDARD, tracks=[audio()])
    lk = FakeLiveKit([SIP_CALLER, bob])
    g, _ = guardian(lk)
    assert await g.process(human_left_event("EV_h1")) == "not needed"
    by_role = participant("web-2", STANDARD, {"role": "agent"}, [audio()])
    lk.participants = [SIP_CALLER, by_role]
    assert await g.process(human_left_event("EV_h2")) == "not needed"
    assert lk.list_calls == 2 and lk.dispatches == []
    # the other one is there but muted: the caller hears nobody
    lk.participants = [SIP_CALLER, participant("agent-bob", STANDARD, tracks=[audio(True)])]
    assert await g.process(human_left_event("EV_h3")) == "dispatched"


async def test_a_human_agent_leaving_after_the_caller_dispatches_nothing() -> None:
    lk = FakeLiveKit([])
    g, _ = guardian(lk)
    assert await g.process(human_left_event("EV_h1")) == "not needed"
    hangup = participant(f"sip_{NUMBER}", SIP, {"sip.callStatus": "hangup"})
    lk.participants = [hangup]
    assert await g.process(human_left_event("EV_h2")) == "not needed"
    gone = api.ParticipantInfo()
    gone.CopyFrom(SIP_CALLER)
    gone.state = api.ParticipantInfo.State.DISCONNECTED
    lk.participants = [gone]
    assert await g.process(human_left_event("EV_h3")) == "not needed"
    assert lk.list_calls == 3 and lk.dispatches == []
    # control: with the caller still there it dispatches
    lk.participants = [SIP_CALLER]
    assert await g.process(human_left_event("EV_h4")) == "dispatched"


async def test_others_leaving_are_ignored_without_a_request() -> None:
    lk = FakeLiveKit()
    g, _ = guardian(lk)
    assert await g.process(human_left_event(identity="observer-1")) == "ignored"
    assert await g.process(human_left_event(identity=f"sip_{NUMBER}", kind=SIP)) == "ignored"
    assert lk.list_calls == 0 and lk.dispatches == []
    # control: a human agent leaving the same room is acted on
    assert await g.process(human_left_event(identity="agent-alice")) == "dispatched"


async def test_two_replicas_with_redis_dispatch_once_when_a_human_agent_leaves(
    redis_url: str,
) -> None:
    import redis.asyncio as aioredis

    lk = FakeLiveKit()
    clients = [aioredis.from_url(redis_url), aioredis.from_url(redis_url)]
    try:
        replicas = [guardian(lk, claims=RedisClaims(c))[0] for c in clients]
        for n in range(10):
            ev = human_left_event(f"EV_h{n}", identity=f"agent-{n}")
            outcomes = await asyncio.gather(*(g.process(ev) for g in replicas))
            assert sorted(outcomes) == ["claimed elsewhere", "dispatched"], n
        assert len(lk.dispatches) == 10
        assert {d.agent_name for d in lk.dispatches} == {"hold-agent"}
    finally:
        for c in clients:
            await c.aclose()
