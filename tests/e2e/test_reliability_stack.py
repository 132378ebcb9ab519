"""Fault matrix, part 1: a server of the stack restarts while a call is on hold.

For each of livekit-sip (killed: a crash), livekit-server and Redis
(SIGTERM: a restart), on the real stack: what the held caller heard and
when, what became of the call's room and the worker's job, and how long
until a NEW call is answered with hold audio again (the worker must
reconnect and re-register by itself). RELIABILITY.md holds the table.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from harness.analysis import CallerAudio
from harness.rooms import held_by_worker
from harness.scenario import start_caller
from harness.stack import restart_service
from tests.e2e.support.tones import TONE_HOLD_HZ

pytestmark = pytest.mark.e2e

HOLD_HZ = TONE_HOLD_HZ  # the hold audio is one tone, so "hearing hold" is a tone share


async def new_call_recovers(lk_env, work_dir, after: float, tag: str) -> tuple[float, int]:
    """Place calls until one is answered with hold audio; seconds after `after`, tries."""
    for attempt in range(1, 30):
        proc, _rec, res = await start_caller(
            lk_env,
            work_dir,
            f"+155512500{attempt:02d}",
            [697.0],
            duration=3.0,
            tag=f"{tag}-{attempt}",
            answer_timeout=10.0,
        )
        await proc.wait()
        if res.exists():
            a = CallerAudio.load(res)
            if a.result.get("answered"):
                heard = a.first_heard(HOLD_HZ, a.t0)
                if heard is not None:
                    return heard - after, attempt
        await asyncio.sleep(1.0)
    raise AssertionError(f"no new call heard hold audio after {tag}")


@pytest.mark.parametrize(
    ("service", "sig"),
    [
        ("livekit-sip", signal.SIGKILL),
        ("livekit-server", signal.SIGKILL),
        ("redis-server", signal.SIGTERM),
    ],
)
async def test_server_restart_while_a_call_is_on_hold(
    tone_worker, lk_env, lkapi, work_dir, service, sig
):
    number = {"livekit-sip": "+15551251001", "livekit-server": "+15551251002"}.get(
        service, "+15551251003"
    )
    proc, _rec, res = await start_caller(
        lk_env, work_dir, number, [697.0, 1209.0], duration=40.0, tag=f"held-{service}"
    )
    room = await held_by_worker(lkapi, number)
    await asyncio.sleep(3.0)  # on hold for a while
    fault_at = time.time()
    r = await asyncio.to_thread(restart_service, service, sig)
    recovery_s, tries = await new_call_recovers(lk_env, work_dir, fault_at, service)
    await asyncio.wait_for(proc.wait(), 60)
    a = CallerAudio.load(res)
    down = r.stopped_at
    before = a.heard(HOLD_HZ, fault_at - 2.5, fault_at - 0.2)
    resumed = a.first_heard(HOLD_HZ, down + 0.5)
    gap = a.heard(HOLD_HZ, down + 0.5, resumed or a.ended_at)
    ended_by = a.result.get("hangup_by")
    room_log = [
        f"{rec.get('timestamp', '')[11:19]} {rec.get('message')}"
        for rec in tone_worker.log_lines()
        if str(rec.get("room", "")).endswith(room.rsplit("_", 1)[-1])  # logs mask the number
        and str(rec.get("message", "")).startswith(("state", "one-way", "call ended"))
    ]
    print(
        f"\n{service} {r.signal}: gone {r.stop_s:.1f} s after the signal, healthy again "
        f"{r.start_s:.1f} s later.\n  held caller: hold {before:.0%} before; after the "
        f"process died: "
        + (
            f"silence, hold again after {resumed - down:.1f} s"
            if resumed
            else f"no hold again; call ended {a.ended_at - down:.1f} s later ({ended_by})"
        )
        + f" (hold in {gap:.0%} of the gap)\n  room/worker: {room_log}\n"
        f"  new call heard hold audio {recovery_s:.1f} s after the fault ({tries} tries)"
    )
    assert before > 0.9, "the caller was on hold before the fault"
    assert tone_worker.proc.poll() is None, "the worker survives the fault"
    if service == "livekit-sip":
        # the SIP leg dies with livekit-sip (no BYE reaches the caller); the
        # worker reports the dead media within the one-way audio bound
        assert resumed is None
        assert any("one-way audio: inbound_stopped" in ln for ln in room_log), room_log
        assert recovery_s < 10
    elif service == "livekit-server":
        # livekit-sip keeps the SIP call and rejoins the room; the worker is
        # dispatched again and the caller hears hold audio again
        assert resumed is not None and resumed - down < 15
        assert recovery_s < 15
    else:  # Redis with an append-only file: trunks and rules survive
        assert resumed is not None and resumed - down < 3
        assert recovery_s < 5
