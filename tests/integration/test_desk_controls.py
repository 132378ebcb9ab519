"""The desk's controls after a take (hold, resume, transfer), a call going back
into line when its agent leaves, and the stores' waits: the desk in-process
on a loopback port over a real redis-server, calls written as their workers
write them (Registry.write), LiveKit's room service a recording fake."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import pytest

from tests.integration.test_desk import (
    FakeRoomService,
    bearer,
    make_desk,
    redis_state,
    serving,
)
from worker.protocol import CONTROL_TOPIC
from worker.registry import Registry, call_id

ROOM = "call-_+15550100123_ctl"


async def beat(
    registry: Registry,
    room: str = ROOM,
    store: str = "main",
    state: str = "holding",
    since: int = 1000,
    gone: dict[str, int] | None = None,
) -> str:
    """One heartbeat of the call's worker (as RegistrySink writes it)."""
    cid = call_id(room)
    assert await registry.write(
        cid,
        "hold-w",
        {"id": cid, "room": room, "state": state, "store": store, "hold_since": str(since)},
        store=store,
        previous_store=store,
        waiting=state in ("waiting", "holding"),
        hold_since=since,
        gone=gone,
    )
    return cid


async def post(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], body: Any = None
) -> tuple[int, dict[str, Any]]:
    async with http.post(url, headers=headers, json=body) as r:
        return r.status, await r.json()


async def listed(http: aiohttp.ClientSession, url: str, agent: str, store: str) -> list[Any]:
    async with http.get(f"{url}/calls", headers=bearer(agent, store)) as r:
        assert r.status == 200
        calls: list[Any] = (await r.json())["calls"]
        return calls


async def test_hold_and_resume_by_the_taker_reach_the_worker_only(registry: Registry) -> None:
    lk = FakeRoomService()
    cid = await beat(registry)
    async with serving(make_desk(registry, room_service=lk)) as url, aiohttp.ClientSession() as h:
        alice, bob = bearer("alice", "main"), bearer("bob", "main")
        # nobody took it yet: 409, and nothing sent
        assert (await post(h, f"{url}/calls/{cid}/hold", alice))[0] == 409
        assert (await post(h, f"{url}/calls/{cid}/take", alice))[0] == 200
        # taken, but the agent is not talking yet (holding): 409 with the state
        status, body = await post(h, f"{url}/calls/{cid}/hold", alice)
        assert status == 409 and "holding" in body["error"]
        await beat(registry, state="monitoring")
        before = await redis_state(registry)
        status, body = await post(h, f"{url}/calls/{cid}/hold", bob)  # not bob's call
        assert status == 403 and body["taken_by"] == "alice"
        assert (await post(h, f"{url}/calls/{cid}/resume", alice))[0] == 409  # not on hold
        assert await redis_state(registry) == before and lk.sent == []
        assert await post(h, f"{url}/calls/{cid}/hold", alice) == (
            200,
            {"id": cid, "action": "hold"},
        )
        await beat(registry, state="on_hold")
        assert (await post(h, f"{url}/calls/{cid}/resume", alice))[0] == 200
        sent = [
            (m.room, list(m.destination_identities), m.topic, json.loads(m.data)) for m in lk.sent
        ]
        assert sent == [
            (ROOM, ["hold-w"], CONTROL_TOPIC, {"action": "hold", "agent": "agent-alice"}),
            (ROOM, ["hold-w"], CONTROL_TOPIC, {"action": "resume", "agent": "agent-alice"}),
        ]
        async with h.get(f"{url}/calls/{cid}/history", headers=bob) as r:
            history = (await r.json())["history"]
        assert [(x["agent"], x["action"]) for x in history] == [
            ("alice", "take"),
            ("alice", "hold"),
            ("alice", "resume"),
        ]
        assert history[0]["at"] <= history[1]["at"] <= history[2]["at"]


async def test_transfer_to_another_store_waits_there_and_the_next_take_removes_the_first(
    registry: Registry,
) -> None:
    lk = FakeRoomService()
    cid = await beat(registry, since=5000)
    desk = make_desk(registry, room_service=lk, stores=frozenset({"main", "north"}))
    async with serving(desk) as url, aiohttp.ClientSession() as h:
        alice, carol = bearer("alice", "main"), bearer("carol", "north")
        assert (await post(h, f"{url}/calls/{cid}/take", alice))[0] == 200
        await beat(registry, state="monitoring", since=5000)
        before = await redis_state(registry)
        for body, status in [
            ({"store": "nowhere"}, 404),
            ({"store": "north", "note": 5}, 400),
            ({"agent": "alice"}, 400),
            ({"agent": "Not An Id"}, 400),
            ([1, 2], 400),
        ]:
            got = await post(h, f"{url}/calls/{cid}/transfer", alice, body)
            assert got[0] == status, (body, got)
        assert (await post(h, f"{url}/calls/{cid}/transfer", carol, {"store": "north"}))[0] == 403
        assert await redis_state(registry) == before and lk.sent == []

        note = "wants the\n blue one in size 9"
        status, body = await post(
            h, f"{url}/calls/{cid}/transfer", alice, {"store": "north", "note": note}
        )
        assert status == 200 and body == {
            "id": cid,
            "store": "north",
            "note": "wants the blue one in size 9",
        }
        # the caller on hold at once (the worker was talking: monitoring)
        assert [json.loads(m.data)["action"] for m in lk.sent] == ["hold"]
        # the worker's heartbeats (on hold now) keep it in north's line, not main's
        await beat(registry, state="on_hold", since=5000)
        assert await registry.waiting("north") == [cid] and await registry.waiting("main") == []
        assert await listed(h, url, "bob", "main") == []
        [call] = await listed(h, url, "carol", "north")
        assert call["id"] == cid and call["store"] == "north" and call["position"] == 1
        assert call["transferred"] and call["transfer_note"] == "wants the blue one in size 9"
        assert call["transferred_by"] == "alice" and call["waiting_since"] == 5000
        # alice may no longer act on it; main's agents cannot see it
        assert (await post(h, f"{url}/calls/{cid}/hold", alice))[0] == 403

        status, took = await post(h, f"{url}/calls/{cid}/take", carol)
        assert status == 200 and took["store"] == "north"
        assert lk.removed == [(ROOM, "agent-alice")]  # the first agent leaves now
        await beat(registry, state="holding", since=5000)  # every agent gone: holding
        assert await registry.waiting("north") == []
        rec = await registry.record(cid)
        assert rec["taken_by"] == "carol" and "transferred" not in rec
        assert rec["store"] == "main" and rec["transfer_store"] == "north"
        async with h.get(f"{url}/calls/{cid}/history", headers=carol) as r:
            history = (await r.json())["history"]
        assert [(x["agent"], x["action"]) for x in history] == [
            ("alice", "take"),
            ("alice", "transfer"),
            ("carol", "take"),
        ]
        assert history[1]["to_store"] == "north" and history[1]["note"] == call["transfer_note"]
        assert history[0]["wait_ms"] == history[0]["at"] - 5000
        # the call ends: out of every line, counted nowhere as abandoned; the
        # history says how it ended
        await registry.end(cid, "hold-w", "main", reason="caller hung up")
        assert await registry.record(cid) == {} and await registry.waiting("north") == []
        end = (await registry.history(cid))[-1]
        assert end["action"] == "end" and end["reason"] == "caller hung up"
        assert end["agent"] == "carol" and end["waited_ms"] == end["at"] - 5000
        assert await registry.waits("north") == [] and await registry.waits("main") != []


async def test_a_transfer_offered_to_one_agent_is_theirs_until_the_offer_ends(
    registry: Registry,
) -> None:
    lk = FakeRoomService()
    cid = await beat(registry)
    desk = make_desk(registry, room_service=lk, offer_s=1)
    async with serving(desk) as url, aiohttp.ClientSession() as h:
        alice, bob, dave = (bearer(a, "main") for a in ("alice", "bob", "dave"))
        assert (await post(h, f"{url}/calls/{cid}/take", alice))[0] == 200
        status, body = await post(h, f"{url}/calls/{cid}/transfer", alice, {"agent": "bob"})
        assert status == 200 and body["offered_to"] == "bob" and body["store"] == "main"
        assert lk.sent == []  # the worker was holding (no agent talking): nothing to hold
        [call] = await listed(h, url, "dave", "main")
        assert call["offered_to"] == "bob"
        status, body = await post(h, f"{url}/calls/{cid}/take", dave)
        assert status == 409 and body["offered_to"] == "bob"
        await asyncio.sleep(1.1)  # the offer ends: anyone of the store may take it
        assert "offered_to" not in (await listed(h, url, "dave", "main"))[0]
        assert (await post(h, f"{url}/calls/{cid}/take", dave))[0] == 200
        assert (await post(h, f"{url}/calls/{cid}/take", bob))[0] == 409


async def test_the_call_goes_back_into_line_when_its_agent_leaves(registry: Registry) -> None:
    cid = await beat(registry)
    async with serving(make_desk(registry)) as url, aiohttp.ClientSession() as h:
        # an agent who left before this take does not send it back
        assert (await post(h, f"{url}/calls/{cid}/take", bearer("alice", "main")))[0] == 200
        await beat(registry, state="holding", gone={"alice": 1})
        assert await registry.waiting("main") == []
        assert (await registry.record(cid))["taken_by"] == "alice"
        await beat(registry, state="monitoring")
        # another agent leaving changes nothing
        await beat(registry, state="monitoring", gone={"bob": int(time.time() * 1000)})
        assert (await registry.record(cid))["taken_by"] == "alice"
        # alice's tab closes: hold is back (holding), the call is in line again
        await beat(registry, state="holding", gone={"alice": int(time.time() * 1000) + 5})
        rec = await registry.record(cid)
        assert "taken_by" not in rec and rec["requeued"] == "1"
        assert await registry.waiting("main") == [cid]
        [call] = await listed(h, url, "bob", "main")
        assert call["requeued"] == 1 and call["position"] == 1
        assert (await post(h, f"{url}/calls/{cid}/take", bearer("bob", "main")))[0] == 200
        history = await registry.history(cid)
        assert [(x["agent"], x["action"]) for x in history] == [
            ("alice", "take"),
            ("alice", "requeue"),
            ("bob", "take"),
        ]


async def test_waits_count_taken_and_abandoned_calls_per_store(registry: Registry) -> None:
    now = int(time.time() * 1000)
    taken = await beat(registry, "call-a", since=now - 4000)
    gone = await beat(registry, "call-b", since=now - 9000)
    other = await beat(registry, "call-c", store="north", since=now - 1000)
    async with serving(make_desk(registry)) as url, aiohttp.ClientSession() as h:
        assert (await post(h, f"{url}/calls/{taken}/take", bearer("alice", "main")))[0] == 200
        for cid, store in ((taken, "main"), (gone, "main"), (other, "north")):
            await registry.end(cid, "hold-w", store)
        async with h.get(f"{url}/stores/main/waits", headers=bearer("alice", "main")) as r:
            assert r.status == 200
            waits = await r.json()
        print(f"\nwaits of main: {waits}")
        assert waits["store"] == "main" and waits["calls"] == 2
        assert waits["taken"] == 1 and waits["abandoned"] == 1
        assert 3.9 <= waits["average_wait_s"] <= 5.0
        assert waits["recent_waits_s"] == [waits["average_wait_s"]]
        async with h.get(f"{url}/stores/north/waits", headers=bearer("alice", "main")) as r:
            assert r.status == 403
        async with h.get(f"{url}/stores/north/waits", headers=bearer("carol", "north")) as r:
            north = await r.json()
        assert north["abandoned"] == 1 and north["average_wait_s"] is None


async def test_hold_then_resume_at_once_before_the_worker_writes_its_state(
    registry: Registry,
) -> None:
    """The record's `state` is the worker's, a few ms behind: the desk's own
    `held` mark decides (a second hold refused, a resume right after a hold
    accepted). Before: hold, hold, resume gave 200, 200, 409."""
    lk = FakeRoomService()
    cid = await beat(registry)
    async with serving(make_desk(registry, room_service=lk)) as url, aiohttp.ClientSession() as h:
        alice = bearer("alice", "main")
        assert (await post(h, f"{url}/calls/{cid}/take", alice))[0] == 200
        await beat(registry, state="monitoring")
        got = [
            (await post(h, f"{url}/calls/{cid}/{action}", alice))[0]
            for action in ("hold", "hold", "resume", "resume")
        ]
        assert got == [200, 409, 200, 409]
        assert [json.loads(m.data)["action"] for m in lk.sent] == ["hold", "resume"]
        assert [x["action"] for x in await registry.history(cid)] == ["take", "hold", "resume"]
        # on hold through the worker's RPC (no desk mark): the desk may resume it
        await beat(registry, state="on_hold")
        assert (await post(h, f"{url}/calls/{cid}/resume", alice))[0] == 200


async def test_a_closed_event_stream_ends_quietly(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A closed tab's stream stops being read and logs no error. Before: the
    next write raised ClientConnectionResetError, logged with a traceback."""
    await beat(registry)
    desk = make_desk(registry, poll_s=0.05)
    async with serving(desk) as url:
        async with aiohttp.ClientSession() as h:
            resp = await h.get(f"{url}/events", headers=bearer("alice", "main"))
            assert (await resp.content.readline()).startswith(b"event: calls")
            resp.close()
        await beat(registry, "call-new")  # the list changes after the client left
        await asyncio.sleep(0.5)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_a_call_hung_up_at_the_desk_is_not_requeued_when_its_agent_leaves(
    registry: Registry,
) -> None:
    """The agent hangs up at the desk and their page leaves the room; the
    worker may see them go before the caller: the call must not go back into
    line. Before: the history got `requeue` after `hangup` (a stack run)."""
    cid = await beat(registry)
    async with serving(make_desk(registry)) as url, aiohttp.ClientSession() as h:
        alice = bearer("alice", "main")
        assert (await post(h, f"{url}/calls/{cid}/take", alice))[0] == 200
        await beat(registry, state="monitoring")
        assert (await post(h, f"{url}/calls/{cid}/hangup", alice, {"reason": "done"}))[0] == 200
        await beat(registry, state="holding", gone={"alice": int(time.time() * 1000) + 5})
        assert (await registry.record(cid))["taken_by"] == "alice"
        assert await registry.waiting("main") == []
        assert [x["action"] for x in await registry.history(cid)] == ["take", "hangup"]
