"""The call registry (worker/registry.py) and the guardian's heartbeat watch
(worker/heartbeats.py) against a real redis-server on loopback (Debian's,
started here on a free port); LiveKit's API is a recording fake."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import pytest
from livekit import api

from tests.integration.redis_server import RedisServer
from worker.heartbeats import HeartbeatWatch
from worker.lifecycle import State
from worker.protocol import ATTR_STATE, SIP_PHONE_NUMBER
from worker.publisher import CallView
from worker.registry import Registry, RegistrySink, call_id, connect

log = logging.getLogger("test-registry")


def fields(room: str, state: str = "holding") -> dict[str, str]:
    return {"room": room, "state": state, "caller": "+***0123", "participant_sid": "PA_x"}


async def test_owner_fencing_and_one_takeover_of_two(registry: Registry) -> None:
    cid = call_id("call-a")
    w = dict(store="s1", previous_store="s1", waiting=True, hold_since=1000)
    assert await registry.write(cid, "agent-A", fields("call-a"), **w)
    rec = await registry.record(cid)
    assert rec["owner"] == "agent-A" and int(rec["heartbeat"]) > 0 and rec["room"] == "call-a"
    # two guardians at once: one wins
    wins = await asyncio.gather(*(registry.takeover(cid, "agent-A") for _ in range(2)))
    assert sorted(wins) == [False, True]
    # the old worker (only paused) may not write or end it any more ...
    assert not await registry.write(cid, "agent-A", fields("call-a"), **w)
    assert not await registry.end(cid, "agent-A", "s1")
    # ... the replica the guardian dispatched may
    assert await registry.write(cid, "agent-B", fields("call-a"), **w)
    assert (await registry.record(cid))["owner"] == "agent-B"
    assert not await registry.write(cid, "agent-A", fields("call-a"), **w)
    assert await registry.end(cid, "agent-B", "s1")
    assert await registry.record(cid) == {}
    assert await registry.waiting("s1") == []


async def test_position_in_line_per_store(registry: Registry) -> None:
    async def put(
        room: str, store: str, since: int, prev: str | None = None, state: str = "holding"
    ) -> None:
        await registry.write(
            call_id(room),
            f"w-{room}",
            fields(room, state),
            store=store,
            previous_store=prev or store,
            waiting=state in ("waiting", "holding"),
            hold_since=since,
        )

    await put("r1", "s1", 3000)
    await put("r2", "s1", 1000)
    await put("r3", "s2", 2000)
    assert await registry.position("s1", call_id("r2")) == 1
    assert await registry.position("s1", call_id("r1")) == 2
    assert await registry.position("s2", call_id("r3")) == 1
    await put("r2", "s1", 1000, state="monitoring")  # handed to an agent: out of line
    assert await registry.position("s1", call_id("r1")) == 1
    assert await registry.position("s1", call_id("r2")) is None
    await put("r1", "s2", 3000, prev="s1")  # the store became known: moves lines
    assert await registry.waiting("s1") == []
    assert await registry.waiting("s2") == [call_id("r3"), call_id("r1")]


async def test_stale_uses_server_time_and_records_expire(redis_server: RedisServer) -> None:
    reg = Registry(connect(redis_server.url), record_ttl_ms=300)
    try:
        cid = call_id("call-x")
        await reg.write(
            cid, "w", fields("call-x"), store="-", previous_store="-", waiting=False, hold_since=0
        )
        _now, ids = await reg.stale(200)
        assert ids == []
        await asyncio.sleep(0.45)
        _now, ids = await reg.stale(200)
        assert ids == [cid]  # stale, and ...
        assert await reg.record(cid) == {}  # ... the record expired by itself
    finally:
        await reg.aclose()


@dataclass
class FakeLocal:
    identity: str = "agent-AJ_one"
    sid: str = "PA_one"


@dataclass
class FakeRoom:
    name: str = "call-_+15550100123_abc"
    local_participant: FakeLocal = field(default_factory=FakeLocal)


def view(state: State = State.HOLDING, *, orphaned: bool = False) -> CallView:
    return CallView(state, 1000, "+***0123", None, None, "+15550100123", orphaned)


async def test_sink_heartbeats_rebuilds_after_a_redis_restart_and_logs_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    reg = Registry(connect(redis_server.url))
    room = FakeRoom()
    sink = RegistrySink(reg, room, on_taken_over=lambda: None, log=log, heartbeat_s=0.1)
    try:
        await sink.state(view())
        t0 = sink.writes
        await asyncio.sleep(0.55)
        assert sink.writes - t0 >= 4  # refreshed every 100 ms here (400 ms by default)
        rec = await reg.record(sink.cid)
        assert rec["caller_number"] == "+15550100123" and rec["caller"] == "+***0123"
        redis_server.stop()
        await asyncio.sleep(0.5)
        redis_server.start()  # empty: --save ""
        await asyncio.sleep(0.8)
        rec = await reg.record(sink.cid)
        assert rec.get("owner") == "agent-AJ_one" and rec.get("state") == "holding"
        warnings = [r for r in caplog.records if "registry unavailable" in r.getMessage()]
        assert len(warnings) == 1
        assert not any("+15550100123" in r.getMessage() for r in caplog.records)
        await sink.ended(view(State.DONE))
        assert await reg.record(sink.cid) == {}
    finally:
        await reg.aclose()


async def test_sink_taken_over_stops_writing_and_orphan_is_stale_at_once(
    registry: Registry,
) -> None:
    told: list[int] = []
    room = FakeRoom()
    sink = RegistrySink(
        registry, room, on_taken_over=lambda: told.append(1), log=log, heartbeat_s=0.05
    )
    await sink.state(view())
    assert await registry.takeover(sink.cid, "agent-AJ_one")
    await asyncio.sleep(0.3)
    assert told == [1] and sink.taken_over
    await sink.ended(view(State.DONE))
    assert (await registry.record(sink.cid))["owner"] == "guardian:agent-AJ_one"  # untouched

    other = RegistrySink(registry, FakeRoom(name="call-other"), on_taken_over=lambda: None, log=log)
    await other.state(view())
    await other.ended(view(orphaned=True))
    _now, ids = await registry.stale(1500)
    assert other.cid in ids  # given up alive: a guardian may act on it at once


# ---- the heartbeat watch, with a fake LiveKit API -------------------------------


@dataclass
class FakeLiveKit:
    rooms: dict[str, list[api.ParticipantInfo]]
    removed: list[tuple[str, str]] = field(default_factory=list)
    dispatched: list[str] = field(default_factory=list)

    def factory(self) -> Any:
        kit = self

        class Room:
            async def list_participants(self, req: api.ListParticipantsRequest) -> Any:
                await asyncio.sleep(0.01)
                if req.room not in kit.rooms:
                    raise api.TwirpError(api.TwirpErrorCode.NOT_FOUND, "room not found", 404)
                return api.ListParticipantsResponse(participants=kit.rooms[req.room])

            async def remove_participant(self, req: api.RoomParticipantIdentity) -> None:
                kit.removed.append((req.room, req.identity))

        class Dispatch:
            async def create_dispatch(self, req: api.CreateAgentDispatchRequest) -> None:
                kit.dispatched.append(req.room)

        class Lk:
            room = Room()
            agent_dispatch = Dispatch()

        @asynccontextmanager
        async def ctx() -> AsyncIterator[Any]:
            yield Lk()

        return ctx


def sip_caller() -> api.ParticipantInfo:
    return api.ParticipantInfo(
        identity="sip_+15550100123",
        kind=api.ParticipantInfo.Kind.SIP,
        attributes={SIP_PHONE_NUMBER: "+15550100123"},
    )


def worker_p(identity: str, state: str = "holding") -> api.ParticipantInfo:
    return api.ParticipantInfo(
        identity=identity, kind=api.ParticipantInfo.Kind.AGENT, attributes={ATTR_STATE: state}
    )


def live_agent() -> api.ParticipantInfo:
    return api.ParticipantInfo(
        identity="agent-alice",
        kind=api.ParticipantInfo.Kind.STANDARD,
        tracks=[api.TrackInfo(type=api.TrackType.AUDIO, muted=False)],
    )


async def test_two_guardians_take_each_stale_call_over_exactly_once(registry: Registry) -> None:
    rooms = {f"call-{i}": [sip_caller(), worker_p(f"agent-dead-{i}")] for i in range(5)}
    rooms["call-gone"] = [worker_p("agent-dead-g")]  # the caller hung up meanwhile
    rooms["call-agent"] = [sip_caller(), worker_p("agent-dead-a"), live_agent()]
    for room, people in rooms.items():
        await registry.write(
            call_id(room),
            people[-1].identity if room == "call-gone" else people[1].identity,
            fields(room),
            store="s1",
            previous_store="s1",
            waiting=True,
            hold_since=1,
        )
    kit = FakeLiveKit(rooms)
    watches = [
        HeartbeatWatch(registry, kit.factory(), "hold-agent", stale_after_s=0.5, poll_s=0.05)
        for _ in range(2)
    ]
    await asyncio.sleep(0.6)
    results = await asyncio.gather(*(w.scan_once() for w in watches))
    done = sorted(r for rs in results for r in rs)
    assert done.count("taken over") == 5, done
    assert sorted(kit.dispatched) == sorted(f"call-{i}" for i in range(5))
    assert sorted(kit.removed) == sorted((f"call-{i}", f"agent-dead-{i}") for i in range(5))
    assert await registry.record(call_id("call-gone")) == {}  # forgotten
    assert "call-agent" not in kit.dispatched  # a live human agent has the caller
    # the dispatched replicas write; nothing is taken over twice
    for i in range(5):
        assert await registry.write(
            call_id(f"call-{i}"),
            f"agent-new-{i}",
            fields(f"call-{i}"),
            store="s1",
            previous_store="s1",
            waiting=True,
            hold_since=1,
        )
    await asyncio.gather(*(w.scan_once() for w in watches))
    assert len(kit.dispatched) == 5
    assert sum(w.taken_over for w in watches) == 5


async def test_guardian_claims_survive_a_redis_restart(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (full e2e run): after the stack's Redis restarted, the
    guardian's pooled connection was dead, its next claim failed and fell back
    to a local one, and a call taken over by the other guardian was dispatched
    a second time by the webhook path."""
    from worker.guardian import RedisClaims, make_claims

    claims = make_claims(redis_server.url)
    assert isinstance(claims, RedisClaims)
    try:
        assert await claims.claim("hold-guardian:claim:a")
        redis_server.stop()
        redis_server.start()  # empty, and the pooled connection is dead
        assert await claims.claim("hold-guardian:claim:b")
        assert not any("redis claim failed" in r.getMessage() for r in caplog.records)
        assert await claims.client.get("hold-guardian:claim:b") is not None
    finally:
        await claims.client.aclose()


async def test_one_registry_write_per_change(registry: Registry) -> None:
    """A media verdict or the store becoming known marks the view changed
    once: one write, not one from the change and another from the news."""
    from worker.publisher import CallPublisher

    sink = RegistrySink(registry, FakeRoom(), on_taken_over=lambda: None, log=log, heartbeat_s=60)
    pub = CallPublisher([sink], lambda: view(), log)
    pub.start()
    await asyncio.sleep(0.1)
    first = sink.writes
    pub.media({"media.verdict": "ok"})
    await asyncio.sleep(0.1)
    await pub.store_known()
    await asyncio.sleep(0.1)
    assert sink.writes - first <= 2, sink.writes - first  # two changes: at most two writes
    await pub.aclose()


async def test_sink_sends_the_call_back_into_line_when_its_taker_left(
    registry: Registry,
) -> None:
    """The worker's view lists the human agents who left; the desk agent who
    took the call among them (by identity `agent-<id>`, after the take): the
    record loses `taken_by` and the call is in its store's line again."""
    room = FakeRoom()
    sink = RegistrySink(registry, room, on_taken_over=lambda: None, log=log, heartbeat_s=60)
    plan: Any = SimpleNamespace(store_id="main")  # the sink reads the store's id only
    base = CallView(State.HOLDING, 1000, "+***0123", None, plan, "+15550100123")
    await sink.state(base)
    assert await registry.waiting("main") == [sink.cid]
    assert (await registry.take(sink.cid, "alice", "main"))[0] == "ok"
    await sink.state(replace(base, state=State.MONITORING))
    assert await registry.waiting("main") == []
    left = int(time.time() * 1000) + 1
    # a web observer (no agent prefix) and another agent leaving change nothing
    await sink.state(replace(base, agents_left=(("alice", left), ("agent-bob", left))))
    assert (await registry.record(sink.cid))["taken_by"] == "alice"
    await sink.state(replace(base, agents_left=(("agent-alice", left),)))
    rec = await registry.record(sink.cid)
    assert "taken_by" not in rec and rec["requeued"] == "1"
    assert await registry.waiting("main") == [sink.cid]
    assert [h["action"] for h in await registry.history(sink.cid)] == ["take", "requeue"]
    await sink.ended(replace(base, state=State.DONE))
    assert (await registry.waits("main"))[0]["outcome"] == "abandoned"
