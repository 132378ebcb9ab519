"""What the LiveKit server API says about call rooms: which room a caller is
in, whether the hold worker is there, its `hold.state`, whether it publishes.

Used by the e2e tests, the benchmark and the demo (through scenario.py).
"""

from __future__ import annotations

import asyncio
import time

from livekit import api

from worker.protocol import ATTR_STATE, SIP_PHONE_NUMBER

SIP = api.ParticipantInfo.Kind.SIP
AGENT = api.ParticipantInfo.Kind.AGENT


async def participants(lk: api.LiveKitAPI, room: str) -> list[api.ParticipantInfo]:
    """The room's participants; none if the room is gone."""
    try:
        resp = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    except api.TwirpError:
        return []
    return list(resp.participants)


async def rooms_with_callers(
    lk: api.LiveKitAPI,
    prefix: str = "call-",
    skip: frozenset[str] = frozenset(),
    *,
    occupied_only: bool = False,
) -> list[tuple[str, list[api.ParticipantInfo]]]:
    """Every room named `prefix`... (but those in `skip`) and its participants.
    `occupied_only`: only rooms whose listing counts a participant (cheaper
    for many rooms; the count lags a participant who just joined)."""
    out = []
    for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms:
        if not r.name.startswith(prefix) or r.name in skip:
            continue
        if occupied_only and r.num_participants < 1:
            continue
        out.append((r.name, await participants(lk, r.name)))
    return out


def caller_number(p: api.ParticipantInfo) -> str | None:
    """The caller's number if `p` is a SIP participant (livekit-sip's attribute)."""
    return p.attributes.get(SIP_PHONE_NUMBER) if p.kind == SIP else None


async def find_call_room(lk: api.LiveKitAPI, number: str, timeout: float = 15.0) -> str:
    """The call-* room whose SIP participant is the caller `number`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for room, parts in await rooms_with_callers(lk):
            if any(caller_number(p) == number for p in parts):
                return room
        await asyncio.sleep(0.05)
    raise AssertionError(f"no room with a SIP participant from {number} in {timeout} s")


async def agent_kinds_in_room(lk: api.LiveKitAPI, room: str) -> list[str]:
    """Identities of the room's agent participants (the hold worker)."""
    return [p.identity for p in await participants(lk, room) if p.kind == AGENT]


async def worker_info(lk: api.LiveKitAPI, room: str) -> api.ParticipantInfo | None:
    """The hold worker's participant (kind AGENT) in the room, if it is there."""
    return next((p for p in await participants(lk, room) if p.kind == AGENT), None)


def publishes_audio(p: api.ParticipantInfo) -> bool:
    return any(t.type == api.TrackType.AUDIO for t in p.tracks)


async def await_monitoring(
    lk: api.LiveKitAPI, room: str, timeout: float, seen: list[str] | None = None
) -> float | None:
    """Wall time at which the worker was seen in the room with `hold.state`
    monitoring and no published audio track (handed over, staying); None if
    not within `timeout` (it left, or never got there). Every state seen goes
    into `seen`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w = await worker_info(lk, room)
        state = w.attributes.get(ATTR_STATE, "") if w is not None else "(gone)"
        if seen is not None and (not seen or seen[-1] != state):
            seen.append(state)
        if w is not None and state == "monitoring" and not publishes_audio(w):
            return time.time()
        await asyncio.sleep(0.05)
    return None


async def worker_gone_at(
    lk: api.LiveKitAPI, room: str, timeout: float, interval: float = 0.1
) -> float | None:
    """Wall time at which the worker was no longer in the room (None: still there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not await agent_kinds_in_room(lk, room):
            return time.time()
        await asyncio.sleep(interval)
    return None


async def held_by_worker(lk: api.LiveKitAPI, number: str, timeout: float = 5.0) -> str:
    """The room of this caller's call, once an agent (the hold worker) is in it."""
    room = await find_call_room(lk, number)
    deadline = time.monotonic() + timeout
    while not await agent_kinds_in_room(lk, room) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return room
