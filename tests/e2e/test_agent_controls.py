"""Issue 16 on the real stack: an agent puts the caller on hold and resumes,
through the hold worker's LiveKit RPC methods, measured in the caller's own
recording (pjsua2 through livekit-sip)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from livekit import api

from harness.agents import HumanAgent
from harness.analysis import CallerAudio, write_tone_wav
from harness.rooms import held_by_worker
from harness.scenario import start_caller
from harness.stack import start_worker, stop_worker
from worker.protocol import ATTR_STATE, RPC_HOLD, RPC_RESUME

pytestmark = pytest.mark.e2e

HOLD_HZ = 500.0
AGENT_HZ = 1700.0


async def worker_identity(lk: api.LiveKitAPI, room: str) -> str:
    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants
    return next(p.identity for p in parts if p.kind == api.ParticipantInfo.Kind.AGENT)


async def state_of(lk: api.LiveKitAPI, room: str) -> str:
    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants
    return next(
        (
            p.attributes.get(ATTR_STATE, "")
            for p in parts
            if p.kind == api.ParticipantInfo.Kind.AGENT
        ),
        "",
    )


async def wait_state(lk: api.LiveKitAPI, room: str, want: str, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await state_of(lk, room) == want:
            return time.time()
        await asyncio.sleep(0.1)
    raise AssertionError(f"hold.state never {want!r} (last {await state_of(lk, room)!r})")


async def test_agent_hold_and_resume_at_the_caller(lk_env, lkapi, work_dir):
    hold = write_tone_wav(str(work_dir / "hold.wav"), HOLD_HZ, seconds=2.0, rate=16000)
    w = start_worker(lk_env, work_dir, HOLD_AUDIO=hold, HOLD_HANDOFF_SETTLE_S="1")
    agent = None
    try:
        number = "+15551290001"
        proc, _rec, res = await start_caller(
            lk_env, work_dir, number, [697.0], duration=30.0, tag="ctl"
        )
        room = await held_by_worker(lkapi, number, timeout=15.0)
        agent = HumanAgent(
            lk_env["LIVEKIT_URL"],
            lk_env["LIVEKIT_API_KEY"],
            lk_env["LIVEKIT_API_SECRET"],
            room,
            "agent-ctl",
            AGENT_HZ,
            record=False,
        )
        await agent.join()
        await agent.speak()
        await wait_state(lkapi, room, "monitoring")
        await asyncio.sleep(2.0)  # the caller hears the agent
        me = await worker_identity(lkapi, room)
        t_hold = time.time()
        answer = await agent.room.local_participant.perform_rpc(
            destination_identity=me, method=RPC_HOLD, payload=""
        )
        await wait_state(lkapi, room, "on_hold")
        await asyncio.sleep(6.0)  # on hold; the agent keeps sending its tone
        t_resume = time.time()
        again = await agent.room.local_participant.perform_rpc(
            destination_identity=me, method=RPC_RESUME, payload=""
        )
        await wait_state(lkapi, room, "monitoring")
        await asyncio.sleep(3.0)
        await agent.leave()
        agent = None
        await asyncio.wait_for(proc.wait(), 60)
        a = CallerAudio.load(res)
        hold_back = a.first_heard(HOLD_HZ, t_hold)
        agent_before = a.heard(AGENT_HZ, t_hold - 1.5, t_hold)
        agent_on_hold = a.heard(AGENT_HZ, t_hold + 1.0, t_resume)
        hold_on_hold = a.heard(HOLD_HZ, t_hold + 1.0, t_resume)
        agent_back = a.first_heard(AGENT_HZ, t_resume)
        hold_after = a.heard(HOLD_HZ, t_resume + 1.5, t_resume + 4.0)
        print(
            f"\nagent hold: hold audio at the caller "
            f"{hold_back and round(hold_back - t_hold, 2)} s "
            f"after the RPC (answer {answer}); on hold: hold {hold_on_hold:.0%}, agent "
            f"{agent_on_hold:.0%} of the windows (agent before the hold {agent_before:.0%}); "
            f"resume: agent heard {agent_back and round(agent_back - t_resume, 2)} s after the "
            f"RPC, hold afterwards {hold_after:.0%}"
        )
        assert json.loads(answer) == {"ok": True} and json.loads(again) == {"ok": True}
        assert agent_before > 0.9
        assert hold_back is not None and hold_back - t_hold <= 0.5
        assert hold_on_hold > 0.9 and agent_on_hold < 0.05
        assert agent_back is not None and agent_back - t_resume <= 1.0
        assert hold_after < 0.05
    finally:
        if agent is not None:
            await agent.leave()
        stop_worker(w)
