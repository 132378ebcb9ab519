"""The desk (worker/desk.py) served in-process on a real loopback port, over a
real redis-server; the calls are written as their workers write them
(Registry.write), and LiveKit's room service is a recording fake."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from livekit import api

from tests.integration.redis_server import RedisServer
from worker.desk import Desk, LiveKitAccess, mint_token, verify_token
from worker.registry import Registry, call_id, history_key

SECRET = "d" * 40
LK = LiveKitAccess("ws://127.0.0.1:7880", "devkey", "k" * 40)
REPO = Path(__file__).resolve().parents[2]


@dataclass
class FakeRoomService:
    """LiveKit's RoomService: every room has a SIP caller and the hold worker."""

    removed: list[tuple[str, str]] = field(default_factory=list)
    sent: list[api.SendDataRequest] = field(default_factory=list)

    async def list_participants(self, req: api.ListParticipantsRequest) -> Any:
        return api.ListParticipantsResponse(
            participants=[
                api.ParticipantInfo(identity="sip_caller", kind=api.ParticipantInfo.Kind.SIP),
                api.ParticipantInfo(identity="hold-w", kind=api.ParticipantInfo.Kind.AGENT),
            ]
        )

    async def remove_participant(self, req: api.RoomParticipantIdentity) -> None:
        self.removed.append((req.room, req.identity))

    async def send_data(self, req: api.SendDataRequest) -> None:
        self.sent.append(req)


@asynccontextmanager
async def serving(desk: Desk) -> AsyncIterator[str]:
    runner = web.AppRunner(desk.app(), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def make_desk(registry: Registry, **kw: Any) -> Desk:
    return Desk(
        registry,
        secret=SECRET,
        livekit=LK,
        room_service=kw.pop("room_service", FakeRoomService()),
        show_caller_number=frozenset({"downtown"}),
        **kw,
    )


async def hold(
    registry: Registry, room: str, store: str, since: int, state: str = "holding"
) -> str:
    """One heartbeat write of the call's worker, as RegistrySink makes it."""
    cid = call_id(room)
    ok = await registry.write(
        cid,
        f"w-{room}",
        {
            "id": cid,
            "room": room,
            "state": state,
            "store": store,
            "caller": "+***0123",
            "caller_number": "+15550100123",
            "hold_since": str(since),
            "media": "ok",
        },
        store=store,
        previous_store=store,
        waiting=state in ("waiting", "holding"),
        hold_since=since,
    )
    assert ok
    return cid


def bearer(agent: str, *stores: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, agent, stores)}"}


async def redis_state(registry: Registry) -> dict[str, Any]:
    """Every key and its value: to show that a refused request changed nothing."""
    c = registry.client
    out: dict[str, Any] = {}
    async for key in c.scan_iter():
        kind = await c.type(key)
        if kind == "hash":
            out[key] = await c.hgetall(key)
        elif kind == "zset":
            out[key] = await c.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            out[key] = await c.lrange(key, 0, -1)
        else:
            out[key] = kind
    return out


async def test_agents_see_their_stores_calls_by_wait_with_positions(registry: Registry) -> None:
    r1 = await hold(registry, "call-1", "main", 3000)
    r2 = await hold(registry, "call-2", "main", 1000)
    r3 = await hold(registry, "call-3", "downtown", 2000)
    await hold(registry, "call-4", "main", 500, state="monitoring")  # with an agent
    async with serving(make_desk(registry)) as url, aiohttp.ClientSession() as http:
        seen: dict[str, list[dict[str, Any]]] = {}
        for agent, stores in (
            ("alice", ["main"]),
            ("bob", ["downtown"]),
            ("carol", ["main", "downtown"]),
        ):
            async with http.get(f"{url}/calls", headers=bearer(agent, *stores)) as r:
                assert r.status == 200
                seen[agent] = (await r.json())["calls"]
        assert [(c["id"], c["position"]) for c in seen["alice"]] == [(r2, 1), (r1, 2)]
        assert [(c["id"], c["position"]) for c in seen["bob"]] == [(r3, 1)]
        assert [(c["id"], c["store"], c["position"]) for c in seen["carol"]] == [
            (r2, "main", 1),
            (r3, "downtown", 1),
            (r1, "main", 2),
        ]
        first = seen["alice"][0]
        assert first["room"] == "call-2" and first["waiting_since"] == 1000
        assert first["caller"] == "+***0123" and first["media"] == "ok"
        assert first["transferred"] is False
        assert "caller_number" not in first  # main does not show numbers ...
        assert seen["bob"][0]["caller_number"] == "+15550100123"  # ... downtown does
        async with http.get(f"{url}/health") as r:
            assert r.status == 200
        async with http.get(f"{url}/openapi.json") as r:
            doc = await r.json()
            assert doc["openapi"].startswith("3.") and "/calls/{id}/take" in doc["paths"]


async def test_ten_agents_race_for_one_call_and_one_wins(registry: Registry) -> None:
    cid = await hold(registry, "call-_+15550100123_race", "main", 1000)
    other = await hold(registry, "call-other", "main", 2000)
    async with serving(make_desk(registry)) as url, aiohttp.ClientSession() as http:

        async def take(agent: str) -> tuple[int, dict[str, Any]]:
            async with http.post(f"{url}/calls/{cid}/take", headers=bearer(agent, "main")) as r:
                return r.status, await r.json()

        t0 = time.monotonic()
        results = await asyncio.gather(*(take(f"agent{i}") for i in range(10)))
        took = time.monotonic() - t0
        wins = [(i, body) for i, (status, body) in enumerate(results) if status == 200]
        losses = [body for status, body in results if status == 409]
        print(f"\nrace: 10 agents, {len(wins)} won, {len(losses)} got 409, in {took * 1000:.0f} ms")
        assert len(wins) == 1 and len(losses) == 9
        i, won = wins[0]
        winner = f"agent{i}"
        assert won["room"] == "call-_+15550100123_race" and won["url"] == LK.url
        grant = jwt.decode(won["token"], LK.api_secret, algorithms=["HS256"])
        assert grant["sub"] == f"agent-{winner}"
        video = grant["video"]
        assert video["room"] == "call-_+15550100123_race"
        assert video["roomJoin"] and video["canPublish"] and video["canSubscribe"]
        assert not video.get("roomAdmin") and not video.get("roomList")
        assert not video.get("roomCreate")
        assert grant["exp"] - grant["nbf"] == 600
        for body in losses:
            assert body["taken_by"] == winner and winner in body["error"]
            assert "\n" not in body["error"]

        async with http.get(f"{url}/calls", headers=bearer("x", "main")) as r:
            assert [c["id"] for c in (await r.json())["calls"]] == [other]
        # the worker's next heartbeat does not put it back in line
        await hold(registry, "call-_+15550100123_race", "main", 1000)
        assert await registry.waiting("main") == [other]
        rec = await registry.record(cid)
        assert rec["taken_by"] == winner and int(rec["taken_at"]) > 0
        async with http.get(f"{url}/calls", headers=bearer("x", "main")) as r:
            assert [c["id"] for c in (await r.json())["calls"]] == [other]
        async with http.get(f"{url}/calls/{cid}/history", headers=bearer("x", "main")) as r:
            history = (await r.json())["history"]
        assert [(h["agent"], h["action"]) for h in history] == [(winner, "take")]
        assert abs(history[0]["at"] - int(rec["taken_at"])) == 0


async def _events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of a Server-Sent Events stream; comments as ("comment", text)."""
    event, data = "message", ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "":
            yield event, data
            event, data = "message", ""


async def test_event_stream_shows_new_and_taken_calls_within_a_second(registry: Registry) -> None:
    first = await hold(registry, "call-first", "main", 1000)
    desk = make_desk(registry, keepalive_s=0.6)
    async with serving(desk) as url, aiohttp.ClientSession() as http:
        token = mint_token(SECRET, "alice", ["main"])
        async with http.get(f"{url}/events", params={"access_token": token}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            stream = _events(resp)

            async def until(pred: Any) -> float:
                t0 = time.monotonic()
                async with asyncio.timeout(3):
                    async for event, data in stream:
                        if event == "calls" and pred([c["id"] for c in json.loads(data)["calls"]]):
                            return time.monotonic() - t0
                raise AssertionError("stream ended")

            await until(lambda ids: ids == [first])
            t0 = time.monotonic()
            new = await hold(registry, "call-new", "main", 2000)
            appeared = await until(lambda ids: ids == [first, new])
            async with http.post(f"{url}/calls/{first}/take", headers=bearer("bob", "main")) as r:
                assert r.status == 200
            gone = await until(lambda ids: ids == [new])
            print(
                f"\nSSE: new call shown after {appeared * 1000:.0f} ms, taken call gone after "
                f"{gone * 1000:.0f} ms (poll every {desk.poll_s * 1000:.0f} ms)"
            )
            assert appeared < 1.0 and gone < 1.0
            assert time.monotonic() - t0 < 2.0
            async with asyncio.timeout(2):  # nothing changes: a keep-alive comment
                async for event, _data in stream:
                    if event == "comment":
                        break
    async with serving(desk) as url, aiohttp.ClientSession() as http:
        async with http.get(f"{url}/events") as r:
            assert r.status == 401


async def test_refusals_are_one_line_json_and_change_nothing(registry: Registry) -> None:
    cid = await hold(registry, "call-x", "main", 1000)
    taken = await hold(registry, "call-taken", "main", 2000)
    assert (await registry.take(taken, "carol", "main"))[0] == "ok"
    expired = jwt.encode(
        {"sub": "alice", "name": "A", "stores": ["main"], "exp": int(time.time()) - 5},
        SECRET,
        algorithm="HS256",
    )
    forged = mint_token("f" * 40, "alice", ["main"])
    cases = [
        ("no token", "POST", f"/calls/{cid}/take", {}, 401),
        ("expired", "POST", f"/calls/{cid}/take", {"Authorization": f"Bearer {expired}"}, 401),
        ("forged", "POST", f"/calls/{cid}/take", {"Authorization": f"Bearer {forged}"}, 401),
        ("forged list", "GET", "/calls", {"Authorization": f"Bearer {forged}"}, 401),
        ("other store", "POST", f"/calls/{cid}/take", bearer("bob", "downtown"), 403),
        ("other store hangup", "POST", f"/calls/{cid}/hangup", bearer("bob", "downtown"), 403),
        ("other store history", "GET", f"/calls/{taken}/history", bearer("bob", "downtown"), 403),
        ("unknown", "POST", f"/calls/{'0' * 24}/take", bearer("alice", "main"), 404),
        ("not an id", "POST", "/calls/nope/take", bearer("alice", "main"), 404),
        ("taken", "POST", f"/calls/{taken}/take", bearer("alice", "main"), 409),
        ("taken hangup", "POST", f"/calls/{taken}/hangup", bearer("alice", "main"), 403),
        ("no reason", "POST", f"/calls/{cid}/hangup", bearer("alice", "main"), 400),
        ("no route", "GET", "/nowhere", {}, 404),
    ]
    before = await redis_state(registry)
    kit = FakeRoomService()
    async with (
        serving(make_desk(registry, room_service=kit)) as url,
        aiohttp.ClientSession() as http,
    ):
        for name, method, path, headers, status in cases:
            body = {"reason": "bye"} if name.endswith("hangup") else None
            async with http.request(method, url + path, headers=headers, json=body) as r:
                got = await r.json()
                print(f"{name}: {r.status} {got}")
                assert r.status == status, name
                assert isinstance(got["error"], str) and got["error"], name
                assert "\n" not in got["error"], name
                if name.startswith("taken"):
                    assert got["taken_by"] == "carol"
    assert await redis_state(registry) == before
    assert kit.removed == []


async def test_hangup_records_the_reason_and_the_history_outlives_the_call(
    registry: Registry,
) -> None:
    cid = await hold(registry, "call-h", "main", 1000)
    free = await hold(registry, "call-free", "main", 2000)
    kit = FakeRoomService()
    async with (
        serving(make_desk(registry, room_service=kit)) as url,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(f"{url}/calls/{cid}/take", headers=bearer("alice", "main")) as r:
            assert r.status == 200
        reason = {"reason": "customer\nserved"}
        async with http.post(
            f"{url}/calls/{cid}/hangup", headers=bearer("alice", "main"), json=reason
        ) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["removed"] == 1
        assert kit.removed == [("call-h", "sip_caller")]
        rec = await registry.record(cid)
        assert rec["ended_reason"] == "customer served" and rec["ended_by"] == "alice"
        # nobody took this one: any agent of the store may hang it up
        async with http.post(
            f"{url}/calls/{free}/hangup", headers=bearer("dave", "main"), json={"reason": "spam"}
        ) as r:
            assert r.status == 200
        # the caller gone, the worker ends the call: the record goes, the history stays
        assert await registry.end(cid, "w-call-h", "main")
        assert await registry.record(cid) == {}
        ttl = await registry.client.pttl(history_key(cid))
        assert 0 < ttl <= 60_000
        async with http.get(f"{url}/calls/{cid}/history", headers=bearer("erin", "main")) as r:
            assert r.status == 200
            got = (await r.json())["history"]
        assert [(h["agent"], h["action"], h.get("reason")) for h in got] == [
            ("alice", "take", None),
            ("alice", "hangup", "customer served"),
            ("alice", "end", "hung up by the agent"),  # written as the worker ends it
        ]
        assert got[0]["at"] <= got[1]["at"] <= got[2]["at"]
        async with http.get(f"{url}/calls/{cid}/history", headers=bearer("bob", "downtown")) as r:
            assert r.status == 403


# ---- the command --------------------------------------------------------------------


def run_desk(args: list[str], tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HOLD_", "LIVEKIT_"))}
    return subprocess.run(
        [sys.executable, "-m", "worker", "desk", *args],
        cwd=tmp,  # no .env of the checkout
        env={**base, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_desk_token_command_prints_a_token_that_verifies(tmp_path: Path) -> None:
    got = run_desk(
        ["token", "--agent", "alice", "--store", "main", "--store", "other", "--ttl", "120"],
        tmp_path,
        HOLD_DESK_SECRET=SECRET,
    )
    assert got.returncode == 0, got.stderr
    agent = verify_token(got.stdout.strip(), SECRET)
    assert agent.id == "alice" and agent.stores == ("main", "other")
    assert 100 < agent.exp - time.time() <= 120


@pytest.mark.parametrize(
    ("args", "env", "expect"),
    [
        ([], {}, "config error: HOLD_DESK_SECRET is not set"),
        ([], {"HOLD_DESK_SECRET": "short"}, "config error: HOLD_DESK_SECRET: must be at least 32"),
        ([], {"HOLD_DESK_SECRET": SECRET}, "config error: HOLD_REDIS_URL is not set"),
        (
            [],
            {"HOLD_DESK_SECRET": SECRET, "HOLD_REDIS_URL": "redis://127.0.0.1:1/0"},
            "config error: LIVEKIT_URL is not set",
        ),
        (
            ["token", "--agent", "Alice!", "--store", "main"],
            {"HOLD_DESK_SECRET": SECRET},
            "config error: token claim sub",
        ),
        (
            ["token", "--agent", "a", "--store", "main"],
            {},
            "config error: HOLD_DESK_SECRET is not set",
        ),
        ([], {"HOLD_DESK_PORT": "x"}, "config error: HOLD_DESK_PORT: "),
    ],
)
def test_config_errors_are_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], expect: str
) -> None:
    got = run_desk(args, tmp_path, **env)
    assert got.returncode == 2
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expect), got.stderr
    assert SECRET not in got.stderr + got.stdout


async def test_redis_down_is_a_503_not_a_crash(
    redis_server: RedisServer, registry: Registry
) -> None:
    async with serving(make_desk(registry)) as url, aiohttp.ClientSession() as http:
        redis_server.stop()
        for path, headers in (("/health", {}), ("/calls", bearer("alice", "main"))):
            async with http.get(url + path, headers=headers) as r:
                got = await r.json()
                assert r.status == 503 and "call registry unavailable" in got["error"], got
