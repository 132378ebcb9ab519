"""Issue 16 on the real stack: the desk (`python -m worker desk`) as a process
over the stack's Redis, beside a real hold worker; pjsua2 callers through
livekit-sip, livekit.rtc agents joining with the token the desk's take
returned. What the caller heard is measured in the caller's own recording.

Two stores, each with its own dialled number and its own hold audio (one pure
tone each), so a recording says whose hold audio played; each agent speaks a
tone of its own. One worker and one desk serve the whole module.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import numpy as np
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from livekit import api

from harness import stack as stackmod
from harness.agents import HumanAgent
from harness.analysis import WINDOW_S, CallerAudio, write_tone_wav
from harness.rooms import participants
from harness.scenario import PlacedCall as Caller
from harness.scenario import place_call
from harness.stack import WorkerProcess, start_desk
from tests.e2e.test_agent_controls import state_of, wait_state
from tests.e2e.test_registry_recovery import redis_url
from tests.e2e.test_stores import target
from worker.desk import mint_token
from worker.registry import call_key, history_key

pytestmark = pytest.mark.e2e

TRUNK, RULE = "hold-e2e-desk", "hold-e2e-desk-calls"
# store ids of this run's own: each store's waits (kept in Redis for days) start empty
RUN = secrets.token_hex(3)
NORTH, SOUTH = f"north-{RUN}", f"south-{RUN}"
NUMBERS = {NORTH: "+15550221", SOUTH: "+15550222"}
HOLD_HZ = {NORTH: 620.0, SOUTH: 880.0}  # each store's hold audio: one tone
A_HZ, B_HZ, C_HZ = 1500.0, 2100.0, 1300.0  # the agents' voices (no harmonic of a hold tone)
CALLER_HZ = 697.0
HEARD = 0.2  # share of a window's energy at a tone that counts as heard (gap analysis)
MAP = f"""\
default: {NORTH}
stores:
  {NORTH}:
    name: North Mall
    numbers: ["{NUMBERS[NORTH]}"]
    hold_audio: north.wav
  {SOUTH}:
    name: South Side
    numbers: ["{NUMBERS[SOUTH]}"]
    hold_audio: south.wav
"""
# fields of a call's record the desk's actions write (not the worker's heartbeat)
DESK_FIELDS = ("taken_by", "taken_at", "state", "store", "ended_reason", "ended_by")


# ---- the module's worker and desk ----------------------------------------------------


@dataclass
class DeskStack:
    url: str
    secret: str
    worker: WorkerProcess
    desk: WorkerProcess

    def token(self, agent: str, *stores: str, ttl_s: int = 600) -> str:
        return mint_token(self.secret, agent, stores, ttl_s=ttl_s)


@pytest.fixture(scope="module")
def desk(lk_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeskStack]:
    d = tmp_path_factory.mktemp("desk")
    for store, hz in HOLD_HZ.items():
        write_tone_wav(str(d / f"{store.split('-')[0]}.wav"), hz, seconds=2.0, rate=16000)
    store_map = d / "stores.yaml"
    store_map.write_text(MAP)
    p = stackmod.provision(lk_env, TRUNK, RULE, "--stores", str(store_map))
    assert p.returncode == 0, p.stderr
    run = start_desk(lk_env, d, store_map, redis_url())
    try:
        yield DeskStack(run.url, run.secret, run.worker, run.desk)
    finally:
        run.stop()
        print(f"\ndesk log (tail):\n{run.desk.text()[-3000:]}")


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# ---- talking to the desk ---------------------------------------------------------------


async def call_desk(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(
        method, url, headers=headers, json=body, timeout=aiohttp.ClientTimeout(total=15.0)
    ) as r:
        return r.status, await r.json(content_type=None)


def one_line_error(body: Any) -> str:
    """Every refusal is {"error": "<one line>"} (plus who took it or has the offer)."""
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    assert body["error"] and "\n" not in body["error"], body
    assert set(body) <= {"error", "taken_by", "offered_to"}, body
    return str(body["error"])


def by_id(calls: list[dict[str, Any]], cid: str) -> dict[str, Any] | None:
    return next((c for c in calls if c["id"] == cid), None)


class Feed:
    """One agent's `GET /events` stream: every `calls` event with its arrival
    (wall time)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str, name: str) -> None:
        self.http, self.base, self.token, self.name = http, base, token, name
        self.events: list[tuple[float, list[dict[str, Any]]]] = []
        self.status = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with self.http.get(
            f"{self.base}/events",
            params={"access_token": self.token},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as r:
            self.status = r.status
            if r.status != 200:
                return
            event, data = "", []
            async for raw in r.content:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if event == "calls" and data:
                        self.events.append((time.time(), json.loads("\n".join(data))["calls"]))
                    event, data = "", []
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)

    async def until(
        self, pred: Callable[[list[dict[str, Any]]], Any], timeout: float, after: float = 0.0
    ) -> tuple[float, list[dict[str, Any]]]:
        """The first event that arrived after `after` whose list satisfies `pred`."""
        deadline = time.monotonic() + timeout
        i = 0
        while True:
            while i < len(self.events):
                t, calls = self.events[i]
                i += 1
                if t >= after and pred(calls):
                    return t, calls
            if self.task.done():
                self.task.result()
                raise AssertionError(f"{self.name}'s event stream ended (status {self.status})")
            if time.monotonic() > deadline:
                last = self.events[-1][1] if self.events else None
                raise AssertionError(f"{self.name}: no such event in {timeout} s; last {last}")
            await asyncio.sleep(0.01)

    def gone_at(self, cid: str) -> float | None:
        """Arrival of the first event without the call after one with it."""
        present = False
        for t, calls in self.events:
            if by_id(calls, cid):
                present = True
            elif present:
                return t
        return None

    def seen(self) -> list[dict[str, Any]]:
        return [c for _t, calls in self.events for c in calls]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def record(cid: str) -> dict[str, str]:
    r = aioredis.from_url(redis_url(), decode_responses=True)
    try:
        return dict(await r.hgetall(call_key(cid)))
    finally:
        await r.aclose()


async def desk_view(cid: str) -> dict[str, Any]:
    """What a desk action may change: its fields of the record, and the history."""
    r = aioredis.from_url(redis_url(), decode_responses=True)
    try:
        rec = await r.hgetall(call_key(cid))
        history = await r.lrange(history_key(cid), 0, -1)
    finally:
        await r.aclose()
    return {**{k: rec.get(k) for k in DESK_FIELDS}, "history": history}


async def dial(
    lk_env: dict[str, str],
    lkapi: api.LiveKitAPI,
    work: Path,
    store: str,
    number: str,
    duration: float,
) -> Caller:
    return await place_call(
        lk_env,
        lkapi,
        work,
        number,
        freqs=[CALLER_HZ],
        duration=duration,
        target=target(lk_env, NUMBERS[store]),
        tag=f"desk-{number[-4:]}",
    )


async def waiting_for(feed: Feed, cid: str, timeout: float = 10.0) -> dict[str, Any]:
    _t, calls = await feed.until(lambda cs: by_id(cs, cid), timeout)
    got = by_id(calls, cid)
    assert got is not None
    return got


async def take_and_talk(
    d: DeskStack, http: aiohttp.ClientSession, cid: str, agent_id: str, store: str, hz: float
) -> tuple[HumanAgent, dict[str, Any]]:
    """`agent_id` takes the call at the desk, joins its room with the token the
    desk returned and speaks its tone."""
    status, body = await call_desk(
        http, "POST", f"{d.url}/calls/{cid}/take", d.token(agent_id, store)
    )
    assert status == 200, body
    agent = HumanAgent(
        body["url"],
        "",
        "",
        body["room"],
        f"agent-{agent_id}",
        hz,
        record=False,
        token=body["token"],
    )
    await agent.join()
    await agent.speak()
    return agent, body


async def waits(d: DeskStack, http: aiohttp.ClientSession, store: str) -> dict[str, Any]:
    status, body = await call_desk(
        http, "GET", f"{d.url}/stores/{store}/waits", d.token("w-watch", store)
    )
    assert status == 200, body
    assert body["store"] == store, body
    return dict(body)


async def waits_until(
    d: DeskStack,
    http: aiohttp.ClientSession,
    store: str,
    before: dict[str, Any],
    taken: int,
    abandoned: int,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """The store's waits once `taken` and `abandoned` grew by these counts
    since `before` (the worker writes an abandoned wait when its call ends);
    what there is after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        now = await waits(d, http, store)
        grew = (now["taken"] - before["taken"], now["abandoned"] - before["abandoned"])
        if grew == (taken, abandoned) or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.1)


def grew(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, int]:
    return after["taken"] - before["taken"], after["abandoned"] - before["abandoned"]


async def settled(lk: api.LiveKitAPI, c: Caller, state: str, timeout: float = 10.0) -> float:
    """The worker says `state` in the room (hold.state) and its record in Redis
    says it too (written just after); the record's lag behind the attribute, s."""
    seen = await wait_state(lk, c.room, state, timeout)
    deadline = time.monotonic() + 3.0
    while (await record(c.cid)).get("state") != state:
        assert time.monotonic() < deadline, f"record never {state!r}: {await record(c.cid)}"
        await asyncio.sleep(0.01)
    return time.time() - seen


async def in_room(lk: api.LiveKitAPI, room: str, identity: str) -> bool:
    return any(p.identity == identity for p in await participants(lk, room))


def actions(history: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(e["action"]), str(e["agent"])) for e in history["history"]]


def longest_gap(a: CallerAudio, tones: list[float], start: float, end: float) -> float:
    """The longest run (s) between two wall times of windows in which the caller
    heard none of these tones (silence, or anything else)."""
    heard = np.zeros(len(a.share(tones[0])), dtype=bool)
    for hz in tones:
        heard |= a.share(hz) >= HEARD
    i0, i1 = max(0, int((start - a.t0) / WINDOW_S)), min(len(heard), int((end - a.t0) / WINDOW_S))
    run = best = 0
    for h in heard[i0:i1]:
        run = 0 if h else run + 1
        best = max(best, run)
    return best * WINDOW_S


def rounded(x: float | None, ndigits: int = 2) -> float | None:
    return None if x is None else round(x, ndigits)


# ---- 1. each store's agents, their event streams, a race of ten ----------------------------


async def test_stores_see_their_own_calls_and_one_of_ten_agents_wins(
    desk, lk_env, lkapi, work_dir, http
):
    north = Feed(http, desk.url, desk.token("n-watch", NORTH), NORTH)
    south = Feed(http, desk.url, desk.token("s-watch", SOUTH), SOUTH)
    plan = [(NORTH, "+15551310001"), (NORTH, "+15551310002"), (SOUTH, "+15551310003")]
    callers: list[Caller] = []
    try:
        await north.until(lambda cs: True, 5.0)  # the list at once on connect
        await south.until(lambda cs: True, 5.0)
        w0 = {store: await waits(desk, http, store) for store in (NORTH, SOUTH)}
        for store, number in plan:
            callers.append(await dial(lk_env, lkapi, work_dir, store, number, duration=14.0))
        first_seen: dict[str, tuple[float, dict[str, Any]]] = {}
        for (store, _n), c in zip(plan, callers, strict=True):
            feed = north if store == NORTH else south
            t, calls = await feed.until(lambda cs, cid=c.cid: by_id(cs, cid), 10.0)
            first_seen[c.cid] = (t, by_id(calls, c.cid) or {})
        _s, north_list = await call_desk(http, "GET", f"{desk.url}/calls", north.token)
        _s, south_list = await call_desk(http, "GET", f"{desk.url}/calls", south.token)

        # ten agents of north race for the first call
        target_cid = callers[0].cid
        agents = [f"north-{i}" for i in range(10)]
        tokens = [desk.token(a, NORTH) for a in agents]
        t_take = time.time()
        answers = await asyncio.gather(
            *(call_desk(http, "POST", f"{desk.url}/calls/{target_cid}/take", t) for t in tokens)
        )
        t_gone, _ = await north.until(lambda cs: not by_id(cs, target_cid), 5.0, after=t_take)
        rec = await record(target_cid)
        _s, hist = await call_desk(http, "GET", f"{desk.url}/calls/{target_cid}/history", tokens[0])
        w_take = await waits(desk, http, NORTH)
        audios = [await c.done() for c in callers]
        # the two calls nobody took ended: abandoned, one in each store
        w1 = {
            NORTH: await waits_until(desk, http, NORTH, w0[NORTH], 1, 1),
            SOUTH: await waits_until(desk, http, SOUTH, w0[SOUTH], 0, 1),
        }
    finally:
        await north.close()
        await south.close()
        for c in callers:
            await c.stop()

    delays = {}
    for (store, _n), c, a in zip(plan, callers, audios, strict=True):
        t, call = first_seen[c.cid]
        delays[c.cid] = (
            round(t - c.answered_at(), 3),
            round(t - call["waiting_since"] / 1000, 3),
            store,
        )
        assert a.result.get("answered"), a.result
    # the two calls nobody took: off the list once their caller hung up
    abandoned = {}
    for feed, c, a in ((north, callers[1], audios[1]), (south, callers[2], audios[2])):
        gone = feed.gone_at(c.cid)
        abandoned[c.cid] = None if gone is None else round(gone - a.ended_at, 3)
    wins = [(a, body) for a, (status, body) in zip(agents, answers, strict=True) if status == 200]
    losses = [body for status, body in answers if status == 409]
    print(
        f"\ndesk, three calls for two stores: on the agent's event stream "
        f"{[d[0] for d in delays.values()]} s after the caller's answer "
        f"({[d[1] for d in delays.values()]} s after the record's hold_since; stores "
        f"{[d[2] for d in delays.values()]}); ten agents race: statuses "
        f"{sorted(s for s, _b in answers)}, winner {wins[0][0] if wins else None}; the call "
        f"left the stream {t_gone - t_take:.3f} s after the take; the two abandoned calls "
        f"left it {list(abandoned.values())} s after their caller hung up; waits {w1}"
    )
    assert all(d is not None and d <= 1.0 for d in abandoned.values()), abandoned
    # each agent saw only its own store's calls, in one line per store
    north_ids = {c.cid for (s, _n), c in zip(plan, callers, strict=True) if s == NORTH}
    south_ids = {c.cid for (s, _n), c in zip(plan, callers, strict=True) if s == SOUTH}
    assert all(c["store"] == NORTH for c in north.seen()), north.seen()
    assert all(c["store"] == SOUTH for c in south.seen()), south.seen()
    assert not south_ids & {c["id"] for c in north.seen()}
    assert not north_ids & {c["id"] for c in south.seen()}
    assert north_ids <= {c["id"] for c in north_list["calls"]}
    assert all(c["store"] == NORTH for c in north_list["calls"])
    assert south_ids <= {c["id"] for c in south_list["calls"]}
    assert all(c["store"] == SOUTH for c in south_list["calls"])
    assert [c["position"] for c in north_list["calls"]] == list(
        range(1, len(north_list["calls"]) + 1)
    )
    for _t, call in first_seen.values():
        assert call["caller"] and "1555131" not in call["caller"], call  # masked
        assert call["transferred"] is False, call
    assert all(d[0] <= 1.0 for d in delays.values()), delays
    # exactly one winner, nine 409 naming it
    assert len(wins) == 1 and len(losses) == 9, answers
    winner, body = wins[0]
    assert body["id"] == target_cid and body["room"] == callers[0].room
    assert body["store"] == NORTH and body["url"] == lk_env["LIVEKIT_URL"]
    grant = jwt.decode(body["token"], options={"verify_signature": False})
    assert grant["sub"] == f"agent-{winner}" and grant["video"]["room"] == callers[0].room
    for loss in losses:
        assert loss["taken_by"] == winner and winner in one_line_error(loss), loss
    assert rec.get("taken_by") == winner
    assert actions(hist) == [("take", winner)], hist
    assert t_gone - t_take <= 1.0
    # the store's waits: the take's wait (hold start to take) first among the recent ones
    race_wait = (body["taken_at"] - first_seen[target_cid][1]["waiting_since"]) / 1000
    assert grew(w0[NORTH], w_take) == (1, 0), (w0, w_take)
    assert w_take["recent_waits_s"][0] == pytest.approx(race_wait, abs=0.11), (race_wait, w_take)
    assert grew(w0[NORTH], w1[NORTH]) == (1, 1) and grew(w0[SOUTH], w1[SOUTH]) == (0, 1), w1
    if w0[NORTH]["taken"] == 0:  # this store's first taken call
        assert w_take["average_wait_s"] == pytest.approx(race_wait, abs=0.11), w_take


# ---- 2. hold and resume through the desk ------------------------------------------------------


async def test_hold_and_resume_through_the_desk_at_the_caller(desk, lk_env, lkapi, work_dir, http):
    north = Feed(http, desk.url, desk.token("n-watch", NORTH), NORTH)
    c = await dial(lk_env, lkapi, work_dir, NORTH, "+15551310011", duration=60.0)
    agent = None
    url = f"{desk.url}/calls/{c.cid}"
    other = desk.token("north-other", NORTH)
    try:
        await waiting_for(north, c.cid)
        agent, _taken = await take_and_talk(desk, http, c.cid, "alice", NORTH, A_HZ)
        mine = desk.token("alice", NORTH)
        await settled(lkapi, c, "monitoring")
        # refused: resume while talking (409), hold by another agent (403)
        before = await desk_view(c.cid)
        refused = [
            await call_desk(http, "POST", f"{url}/resume", mine),
            await call_desk(http, "POST", f"{url}/hold", other),
        ]
        assert await desk_view(c.cid) == before
        await asyncio.sleep(2.0)  # the caller hears the agent
        t_hold = time.time()
        held = await call_desk(http, "POST", f"{url}/hold", mine)
        answered_hold = time.time() - t_hold
        lag = await settled(lkapi, c, "on_hold")
        during = await desk_view(c.cid)
        refused += [
            await call_desk(http, "POST", f"{url}/hold", mine),  # already on hold
            await call_desk(http, "POST", f"{url}/resume", other),
        ]
        assert await desk_view(c.cid) == during
        await asyncio.sleep(6.0 - (time.time() - t_hold))  # on hold; the agent keeps sending
        t_resume = time.time()
        resumed = await call_desk(http, "POST", f"{url}/resume", mine)
        await wait_state(lkapi, c.room, "monitoring")
        await asyncio.sleep(4.0)
        _s, hist = await call_desk(http, "GET", f"{url}/history", mine)
        hung = await call_desk(http, "POST", f"{url}/hangup", mine, {"reason": "served"})
        a = await c.done(15.0)
    finally:
        await north.close()
        if agent is not None:
            await agent.leave()
        await c.stop()

    hold_back = a.first_heard(HOLD_HZ[NORTH], t_hold)
    agent_before = a.heard(A_HZ, t_hold - 1.5, t_hold)
    agent_on_hold = a.heard(A_HZ, t_hold + 1.0, t_resume)
    hold_on_hold = a.heard(HOLD_HZ[NORTH], t_hold + 1.0, t_resume)
    agent_back = a.first_heard(A_HZ, t_resume)
    hold_after = a.heard(HOLD_HZ[NORTH], t_resume + 1.5, t_resume + 3.5)
    agent_after = a.heard(A_HZ, t_resume + 1.5, t_resume + 3.5)
    print(
        f"\ndesk hold: answered in {answered_hold:.3f} s, hold audio at the caller "
        f"{rounded(hold_back and hold_back - t_hold)} s after the POST; on hold: hold "
        f"{hold_on_hold:.0%}, agent {agent_on_hold:.0%} of the windows (agent before "
        f"{agent_before:.0%}); resume: agent heard {rounded(agent_back and agent_back - t_resume)} "
        f"s after the POST, then agent {agent_after:.0%} / hold {hold_after:.0%}; refused "
        f"{[s for s, _b in refused]}; history {actions(hist)}; the record said on_hold "
        f"{lag:.3f} s after the worker's attribute"
    )
    assert held == (200, {"id": c.cid, "action": "hold"}), held
    assert resumed == (200, {"id": c.cid, "action": "resume"}), resumed
    assert [s for s, _b in refused] == [409, 403, 409, 403], refused
    for _s, body in refused:
        one_line_error(body)
    assert agent_before > 0.9
    assert hold_back is not None and hold_back - t_hold <= 0.5
    assert hold_on_hold > 0.9 and agent_on_hold < 0.05
    assert agent_back is not None and agent_back - t_resume <= 1.0
    assert agent_after > 0.9 and hold_after < 0.05
    assert actions(hist) == [("take", "alice"), ("hold", "alice"), ("resume", "alice")], hist
    at = [int(e["at"]) for e in hist["history"]]
    assert at == sorted(at)
    assert abs(at[1] / 1000 - t_hold) < 1.0 and abs(at[2] / 1000 - t_resume) < 1.0, at
    assert hung[0] == 200, hung


async def test_a_second_hold_refused_and_a_resume_accepted_right_after_a_hold(
    desk, lk_env, lkapi, work_dir, http
):
    """An agent's double click, or hold and resume in quick succession: once the
    desk said 200 to a hold, the call is on hold for that agent (the worker's
    record of it follows a little later)."""
    north = Feed(http, desk.url, desk.token("n-watch", NORTH), NORTH)
    c = await dial(lk_env, lkapi, work_dir, NORTH, "+15551310051", duration=60.0)
    agent = None
    url = f"{desk.url}/calls/{c.cid}"
    try:
        await waiting_for(north, c.cid)
        agent, _ = await take_and_talk(desk, http, c.cid, "gina", NORTH, A_HZ)
        gina = desk.token("gina", NORTH)
        await settled(lkapi, c, "monitoring")
        await asyncio.sleep(1.0)
        t0 = time.time()
        first = await call_desk(http, "POST", f"{url}/hold", gina)
        again = await call_desk(http, "POST", f"{url}/hold", gina)
        resumed = await call_desk(http, "POST", f"{url}/resume", gina)
        answered = time.time() - t0
        await asyncio.sleep(3.0)
        final = await state_of(lkapi, c.room)
        _s, hist = await call_desk(http, "GET", f"{url}/history", gina)
        hung = await call_desk(http, "POST", f"{url}/hangup", gina, {"reason": "served"})
        a = await c.done(15.0)
    finally:
        await north.close()
        if agent is not None:
            await agent.leave()
        await c.stop()
    agent_after = a.heard(A_HZ, t0 + 1.5, t0 + 3.0)
    print(
        f"\ndesk hold, hold again, resume within {answered:.3f} s: {first[0]} {again} "
        f"{resumed}; worker's state 3 s later {final!r}, the caller hears the agent "
        f"{agent_after:.0%}; history {actions(hist)}"
    )
    assert first[0] == 200, first
    assert again[0] == 409, again  # already on hold
    assert resumed[0] == 200, resumed
    assert actions(hist) == [("take", "gina"), ("hold", "gina"), ("resume", "gina")], hist
    assert final == "monitoring" and agent_after > 0.9
    assert hung[0] == 200, hung


# ---- 3. transfer to another store -------------------------------------------------------------


async def test_transfer_to_another_store_no_silence_until_the_next_agent(
    desk, lk_env, lkapi, work_dir, http
):
    north = Feed(http, desk.url, desk.token("n-watch", NORTH), NORTH)
    south = Feed(http, desk.url, desk.token("s-watch", SOUTH), SOUTH)
    c = await dial(lk_env, lkapi, work_dir, NORTH, "+15551310021", duration=60.0)
    a_agent = b_agent = None
    url = f"{desk.url}/calls/{c.cid}"
    note = "wants the south store's tailor"
    try:
        await waiting_for(north, c.cid)
        w0 = {store: await waits(desk, http, store) for store in (NORTH, SOUTH)}
        a_agent, _ = await take_and_talk(desk, http, c.cid, "anna", NORTH, A_HZ)
        anna = desk.token("anna", NORTH)
        await wait_state(lkapi, c.room, "monitoring")
        before = await desk_view(c.cid)
        refused = [
            await call_desk(http, "POST", f"{url}/transfer", anna, {"store": "nowhere"}),
            await call_desk(
                http, "POST", f"{url}/transfer", desk.token("north-x", NORTH), {"store": SOUTH}
            ),
        ]
        assert await desk_view(c.cid) == before
        await asyncio.sleep(2.0)
        t_transfer = time.time()
        moved = await call_desk(
            http, "POST", f"{url}/transfer", anna, {"store": SOUTH, "note": note}
        )
        t_offered, south_calls = await south.until(
            lambda cs: (x := by_id(cs, c.cid)) and x["transferred"],
            5.0,
            after=t_transfer,
        )
        offered = by_id(south_calls, c.cid)
        _s, north_now = await call_desk(http, "GET", f"{desk.url}/calls", anna)
        await asyncio.sleep(2.5)  # on hold, waiting for south
        a_stayed = await in_room(lkapi, c.room, "agent-anna")  # until the next agent takes it
        t_b_take = time.time()
        b_agent, _ = await take_and_talk(desk, http, c.cid, "bert", SOUTH, B_HZ)
        bert = desk.token("bert", SOUTH)
        t_a_gone = None
        while time.time() - t_b_take < 5.0:
            if not await in_room(lkapi, c.room, "agent-anna"):
                t_a_gone = time.time()
                break
            await asyncio.sleep(0.05)
        t_left_south, _ = await south.until(lambda cs: not by_id(cs, c.cid), 5.0, after=t_b_take)
        await asyncio.sleep(5.0)
        _s, hist = await call_desk(http, "GET", f"{url}/history", bert)
        hung = await call_desk(http, "POST", f"{url}/hangup", bert, {"reason": "served"})
        a = await c.done(15.0)
        await asyncio.sleep(1.0)  # the call's end: no abandoned wait for a call taken
        w1 = {store: await waits(desk, http, store) for store in (NORTH, SOUTH)}
    finally:
        await north.close()
        await south.close()
        for ag in (a_agent, b_agent):
            if ag is not None:
                await ag.leave()
        await c.stop()

    holds = list(HOLD_HZ.values())
    assert b_agent is not None and b_agent.first_audio_at is not None
    hold_back = min(
        (t for t in (a.first_heard(hz, t_transfer) for hz in holds) if t is not None),
        default=None,
    )
    b_heard = a.first_heard(B_HZ, t_b_take)
    gap = longest_gap(a, [*holds, A_HZ, B_HZ], t_transfer, b_heard or a.ended_at)
    a_cut = a.heard(A_HZ, t_transfer + 1.0, t_b_take + 0.5)
    hold_while_waiting = max(a.heard(hz, t_transfer + 1.0, t_b_take) for hz in holds)
    b_after = a.heard(B_HZ, (b_heard or t_b_take) + 1.0, (b_heard or t_b_take) + 4.0)
    hold_after = max(
        a.heard(hz, (b_heard or t_b_take) + 1.5, (b_heard or t_b_take) + 4.0) for hz in holds
    )
    north_ids = [x["id"] for x in north_now.get("calls", [])]
    print(
        f"\ndesk transfer north -> south: hold audio "
        f"{rounded(hold_back and hold_back - t_transfer)} s after the POST; in south's list "
        f"{t_offered - t_transfer:.3f} s after it "
        f"({offered}); agent A while waiting {a_cut:.0%}, hold {hold_while_waiting:.0%}; B "
        f"heard {rounded(b_heard and b_heard - b_agent.first_audio_at)} s after B's first audio "
        f"({rounded(b_heard and b_heard - t_b_take)} s after B's take); A in the room until "
        f"then: {a_stayed}, removed "
        f"{rounded(t_a_gone and t_a_gone - t_b_take)} s after B's take; longest gap with "
        f"neither hold nor an agent {gap:.1f} s; after: B {b_after:.0%}, hold "
        f"{hold_after:.0%}; refused {[s for s, _b in refused]}; history {actions(hist)}; "
        f"waits taken/abandoned grew north {grew(w0[NORTH], w1[NORTH])}, south "
        f"{grew(w0[SOUTH], w1[SOUTH])}"
    )
    assert [s for s, _b in refused] == [404, 403], refused
    for _s, body in refused:
        one_line_error(body)
    assert moved[0] == 200 and moved[1]["id"] == c.cid, moved
    assert offered is not None and offered["transferred"] is True
    assert offered["transfer_note"] == note
    assert c.cid not in north_ids, north_now  # in south's line now, not north's
    assert t_offered - t_transfer <= 1.0
    assert hold_back is not None and hold_back - t_transfer <= 0.5
    assert a_cut < 0.05 and hold_while_waiting > 0.9
    assert a_stayed and t_a_gone is not None and t_a_gone - t_b_take <= 2.0
    assert t_left_south - t_b_take <= 1.0
    assert b_heard is not None and b_heard - b_agent.first_audio_at <= 2.0
    assert gap <= 0.5
    assert b_after > 0.9 and hold_after < 0.05
    assert actions(hist) == [("take", "anna"), ("transfer", "anna"), ("take", "bert")], hist
    # one wait counted, north's (the transferred call's second take is not a new wait)
    assert grew(w0[NORTH], w1[NORTH]) == (1, 0) and grew(w0[SOUTH], w1[SOUTH]) == (0, 0), w1
    assert hung[0] == 200, hung


# ---- 4. the agent's tab closed ---------------------------------------------------------------


async def test_agent_tab_dropped_hold_back_and_call_back_in_line(
    desk, lk_env, lkapi, work_dir, http
):
    north = Feed(http, desk.url, desk.token("n-watch", NORTH), NORTH)
    c = await dial(lk_env, lkapi, work_dir, NORTH, "+15551310031", duration=60.0)
    agent = None
    url = f"{desk.url}/calls/{c.cid}"
    try:
        await waiting_for(north, c.cid)
        agent, _ = await take_and_talk(desk, http, c.cid, "carl", NORTH, C_HZ)
        await wait_state(lkapi, c.room, "monitoring")
        await asyncio.sleep(2.0)
        t_drop = time.time()
        await agent.room.disconnect()  # the tab closed
        t_back, calls = await north.until(
            lambda cs: (x := by_id(cs, c.cid)) and x.get("requeued"), 5.0, after=t_drop
        )
        again = by_id(calls, c.cid)
        rec = await record(c.cid)
        await asyncio.sleep(2.5)
        dora = desk.token("dora", NORTH)
        retaken = await call_desk(http, "POST", f"{url}/take", dora)
        _s, hist = await call_desk(http, "GET", f"{url}/history", dora)
        hung = await call_desk(http, "POST", f"{url}/hangup", dora, {"reason": "called back"})
        a = await c.done(15.0)
    finally:
        await north.close()
        if agent is not None:
            await agent.leave()
        await c.stop()

    hold_back = a.first_heard(HOLD_HZ[NORTH], t_drop)
    agent_before = a.heard(C_HZ, t_drop - 1.5, t_drop)
    hold_held = a.heard(HOLD_HZ[NORTH], t_drop + 2.0, t_drop + 4.5)
    print(
        f"\ndesk, agent's tab dropped: hold audio back at the caller "
        f"{rounded(hold_back and hold_back - t_drop)} s after the disconnect (agent before "
        f"{agent_before:.0%}, hold after {hold_held:.0%}); back in the waiting list "
        f"{t_back - t_drop:.3f} s after it ({again}); taken again: {retaken[0]}; history "
        f"{actions(hist)}"
    )
    assert agent_before > 0.9
    assert hold_back is not None and hold_back - t_drop <= 2.0
    assert hold_held > 0.9
    assert t_back - t_drop <= 1.5
    assert again is not None and again["store"] == NORTH
    assert not rec.get("taken_by"), rec
    assert retaken[0] == 200, retaken
    assert [x for x in actions(hist) if x[0] == "take"] == [("take", "carl"), ("take", "dora")]
    assert hung[0] == 200, hung


# ---- 5. tokens and refusals ------------------------------------------------------------------


async def test_bad_tokens_and_refusals_change_nothing(desk, lk_env, lkapi, work_dir, http):
    north = Feed(http, desk.url, desk.token("n-watch", NORTH), NORTH)
    c = await dial(lk_env, lkapi, work_dir, NORTH, "+15551310041", duration=60.0)
    url = f"{desk.url}/calls/{c.cid}"
    expired = desk.token("erin", NORTH, ttl_s=-60)
    forged = mint_token("f" * 64, "erin", [NORTH])
    elsewhere = desk.token("sam", SOUTH)
    unknown = secrets.token_hex(12)
    results: list[tuple[str, int, int]] = []

    async def refused(what: str, want: int, method: str, path: str, token: str | None) -> None:
        before = await desk_view(c.cid)
        body_in = {"reason": "nope"} if path.endswith("/hangup") else None
        status, body = await call_desk(http, method, path, token, body_in)
        one_line_error(body)
        after = await desk_view(c.cid)
        results.append((what, want, status))
        assert after == before, (what, before, after)

    log_from = len(desk.desk.text())
    # a browser tab that closes its event stream: the next change of the list
    # (the take below) must not be an error at the desk
    tab = Feed(http, desk.url, desk.token("tab", NORTH), "tab")
    try:
        await waiting_for(tab, c.cid)
        await tab.close()
        await waiting_for(north, c.cid)
        await refused("no token", 401, "GET", f"{desk.url}/calls", None)
        await refused("expired, list", 401, "GET", f"{desk.url}/calls", expired)
        await refused("expired, take", 401, "POST", f"{url}/take", expired)
        await refused("forged, take", 401, "POST", f"{url}/take", forged)
        await refused(
            "forged, events", 401, "GET", f"{desk.url}/events?access_token={forged}", None
        )
        await refused("other store, take", 403, "POST", f"{url}/take", elsewhere)
        await refused("other store, hangup", 403, "POST", f"{url}/hangup", elsewhere)
        await refused(
            "unknown call",
            404,
            "POST",
            f"{desk.url}/calls/{unknown}/take",
            desk.token("erin", NORTH),
        )
        waiting = await desk_view(c.cid)
        erin = desk.token("erin", NORTH)
        took = await call_desk(http, "POST", f"{url}/take", erin)
        taken = await desk_view(c.cid)
        await refused("taken, take", 409, "POST", f"{url}/take", desk.token("finn", NORTH))
        await refused(
            "taken, hangup by another", 403, "POST", f"{url}/hangup", desk.token("finn", NORTH)
        )
        await refused("expired, hangup", 401, "POST", f"{url}/hangup", expired)
        await refused("other store, history", 403, "GET", f"{url}/history", elsewhere)
        await refused(
            "other store, waits", 403, "GET", f"{desk.url}/stores/{NORTH}/waits", elsewhere
        )
        last = await call_desk(http, "POST", f"{url}/take", desk.token("finn", NORTH))
        unknown_rec = await record(unknown)
        hung = await call_desk(http, "POST", f"{url}/hangup", erin, {"reason": "done"})
        t_hung = time.time()
        a = await c.done(15.0)
        ended = time.time() - t_hung
    finally:
        await tab.close()
        await north.close()
        await c.stop()
    await asyncio.sleep(0.5)  # the closed stream's handler has written its next change
    errors = [ln for ln in desk.desk.text()[log_from:].splitlines() if " ERROR " in ln]

    print(
        f"\ndesk refusals (what, wanted, got): {results}; the take after them: {took[0]}; the "
        f"caller gone {ended:.2f} s after the hang-up; desk errors {errors}"
    )
    assert [got for _w, _want, got in results] == [want for _w, want, _got in results], results
    assert took[0] == 200 and waiting["taken_by"] is None and taken["taken_by"] == "erin"
    assert last[0] == 409 and last[1]["taken_by"] == "erin", last
    assert unknown_rec == {}
    assert hung[0] == 200 and a.result.get("answered")
    assert errors == [], errors  # e.g. "desk: request failed" when an event stream closed
