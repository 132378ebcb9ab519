"""End to end on the real stack: hold audio at once, clean handoff, hangups, refusals."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from livekit import api

from harness.agents import HumanAgent
from harness.analysis import hold_span, read_wav
from harness.rooms import agent_kinds_in_room, await_monitoring, find_call_room
from harness.scenario import format_timeline, held_call, start_caller
from worker.logmask import mask_text

pytestmark = pytest.mark.e2e

FADE_MS = 400
REPO = Path(__file__).resolve().parents[2]


async def test_caller_hears_hold_then_agent(lk_env, lkapi, worker, work_dir, hold_reference_8k):
    out = await held_call(lk_env, lkapi, work_dir, hold_reference_8k, tag="flow")
    print(f"\nroom {out.room}\n{format_timeline(out)}")
    print(
        f"dead_air_ms={out.dead_air_ms} handoff_ms={out.handoff_ms} "
        f"caller_hears_agent={out.caller_hears_agent} agent_hears_caller={out.agent_hears_caller} "
        f"worker states after the agent spoke {out.worker_states}, "
        f"worker_left_after_hangup_ms={out.worker_left_after_hangup_ms}"
    )
    assert out.status_code == 200
    # (a) hold audio from the answer on: at most 1000 ms of dead air (target 500)
    assert out.dead_air_ms is not None, "the caller never heard the hold audio"
    assert out.dead_air_ms <= 1000
    # (b) hold gone within the fade plus 300 ms of the agent's first audio
    assert out.handoff_ms is not None
    assert out.handoff_ms <= FADE_MS + 300
    assert out.caller_hears_agent
    assert out.agent_hears_caller
    # (c) handed over, the worker stays: in the room, hold track unpublished,
    # hold.state monitoring; its job ends when the caller hangs up
    assert out.worker_monitoring_at is not None, out.worker_states
    assert out.worker_left_after_hangup_ms is not None, "the worker stayed after the hangup"
    assert 0 <= out.worker_left_after_hangup_ms <= 1000
    # a good call: media verdict ok both ways, never anything else
    print(f"media verdicts seen: {out.media_verdicts}")
    assert out.media_verdicts and out.media_verdicts[-1] == ("ok", "ok")
    assert all(v[0] in ("pending", "ok") for v in out.media_verdicts)


async def test_caller_hangs_up_during_hold(lk_env, lkapi, worker, work_dir):
    number = "+15551230002"
    proc, _rec, res = await start_caller(
        lk_env, work_dir, number, [770.0, 1336.0], duration=20.0, hangup_after=3.0, tag="hangup"
    )
    room = await find_call_room(lkapi, number)
    # the worker is in the room holding the call
    for _ in range(100):
        if await agent_kinds_in_room(lkapi, room):
            break
        await asyncio.sleep(0.05)
    assert await agent_kinds_in_room(lkapi, room), "the hold worker never joined"
    # the web app sees the call's state on the worker participant
    attrs = await worker_attributes(lkapi, room)
    for _ in range(40):
        if attrs.get("hold.state") == "holding":
            break
        await asyncio.sleep(0.05)
        attrs = await worker_attributes(lkapi, room)
    print(f"\nworker attributes while holding: {attrs}")
    assert attrs.get("hold.state") == "holding"
    assert attrs.get("hold.caller") == "+***0002"  # the last 4 of +15551230002, no more
    assert abs(int(attrs["hold.since"]) / 1000 - time.time()) < 30

    async def worker_gone_at() -> float:
        while await agent_kinds_in_room(lkapi, room):
            await asyncio.sleep(0.02)
        return time.time()

    watcher = asyncio.create_task(worker_gone_at())  # watch while the caller hangs up
    await asyncio.wait_for(proc.wait(), 30)
    result = json.loads(res.read_text())
    hung_up = result["events"]["hangup"]["wall"]
    left = await asyncio.wait_for(watcher, 5)
    assert left is not None, "the worker stayed in the room after the caller hung up"
    left_ms = (left - hung_up) * 1000
    print(f"\ncaller hung up; worker left the room {left_ms:.0f} ms later")
    assert left_ms <= 1000
    # the job ended cleanly: an ordinary end in the log, no error lines for this room
    await asyncio.sleep(0.5)
    lines = [r for r in worker.log_lines() if r.get("room") == mask_text(room)]
    assert any("call ended: caller hung up" in r.get("message", "") for r in lines)
    errors = [r for r in lines if r.get("level") in ("ERROR", "CRITICAL")]
    assert errors == []
    # caller numbers are masked in every line, the SDK's included
    unmasked = re.findall(r"\+\d{7,15}", worker.text())
    assert unmasked == [], unmasked[:5]


async def worker_attributes(lk: api.LiveKitAPI, room: str) -> dict[str, str]:
    parts = (await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants
    agents = [p for p in parts if p.kind == api.ParticipantInfo.Kind.AGENT]
    return dict(agents[0].attributes) if agents else {}


async def test_muted_agent_does_not_take_the_call_until_unmuted(
    lk_env, lkapi, worker, work_dir, hold_reference_8k
):
    """An agent who joins with the microphone muted must not leave the caller
    in silence: hold audio goes on until the agent's audio is live."""
    number = "+15551230005"
    proc, rec, res = await start_caller(
        lk_env, work_dir, number, [941.0, 1209.0], duration=12.0, tag="muted"
    )
    room = await find_call_room(lkapi, number)
    await asyncio.sleep(1.5)
    agent = HumanAgent(
        lk_env["LIVEKIT_URL"],
        lk_env["LIVEKIT_API_KEY"],
        lk_env["LIVEKIT_API_SECRET"],
        room,
        "agent-muted",
        1700.0,
    )
    try:
        await agent.join()
        await agent.speak(muted=True)
        muted_from = time.time()
        await asyncio.sleep(3.0)
        attrs = await worker_attributes(lkapi, room)
        print(f"\nagent muted for 3 s; worker state {attrs.get('hold.state')}")
        assert attrs.get("hold.state") == "holding"
        muted_until = time.time()
        agent.unmute()
        states: list[str] = []
        handed_over = await await_monitoring(lkapi, room, 8.0, states)
        print(f"after unmuting: worker states {states}")
        assert handed_over is not None, f"no handoff after unmuting: {states}"
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        await agent.leave()
    result = json.loads(res.read_text())
    started = result["recording"]["started"]
    t0 = started["wall"] if isinstance(started, dict) else float(started)
    audio, rate = read_wav(str(rec))
    seg = audio[int((muted_from + 0.5 - t0) * rate) : int((muted_until - t0) * rate)]
    span = hold_span(seg.astype("float32"), hold_reference_8k, rate)
    print(f"hold audio while the agent was muted: {span}")
    assert span is not None and span[1] - span[0] > 2.0, "the caller lost the hold audio"


async def test_unknown_number_is_refused_and_worker_unharmed(lk_env, lkapi, worker, work_dir):
    """livekit-sip answers an INVITE for a number no trunk has with 100 and 180
    and then drops it without a final response (LiveKit's flood protection:
    scanners learn nothing). The carrier sees ringing, then its own timeout."""
    jobs_before = worker.text().count("received job request")
    number = "+15559990000"
    target = lk_env["DEV_SIP_TARGET"].replace(lk_env["DEV_TRUNK_NUMBER"], number)
    sip_log = REPO / ".devstack" / "run" / "livekit-sip.log"
    log_from = sip_log.stat().st_size
    proc, _rec, res = await start_caller(
        lk_env,
        work_dir,
        "+15551230003",
        [852.0, 1477.0],
        duration=3.0,
        target=target,
        tag="refused",
        answer_timeout=5.0,
    )
    code = await asyncio.wait_for(proc.wait(), 40)
    result = json.loads(res.read_text())
    with sip_log.open("rb") as f:
        f.seek(log_from)
        sip_lines = [ln for ln in f.read().decode(errors="replace").splitlines() if number in ln]
    closed = [ln for ln in sip_lines if "Closing inbound call" in ln]
    print(
        f"\ncall to an unknown number: caller saw {result.get('provisional')} then "
        f"{result['status_code']} {result.get('reason')}; livekit-sip: {len(closed)} call closed"
    )
    assert code == 3 and not result["answered"]
    assert closed, "livekit-sip did not close the call"
    rooms = (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms
    assert not [r.name for r in rooms if number in r.name]
    assert worker.proc.poll() is None, "the worker died"
    assert worker.text().count("received job request") == jobs_before
