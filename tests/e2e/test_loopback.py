"""Nothing leaves loopback: the stack's sockets during a live call."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from harness.rooms import agent_kinds_in_room, find_call_room
from harness.scenario import start_caller

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


async def test_stack_sockets_during_a_call(lk_env, lkapi, worker, work_dir):
    number = "+15551230007"
    proc, _rec, _res = await start_caller(
        lk_env, work_dir, number, [770.0, 1477.0], duration=6.0, tag="loopback"
    )
    room = await find_call_room(lkapi, number)
    for _ in range(60):
        if await agent_kinds_in_room(lkapi, room):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # media flowing both ways
    check = await asyncio.to_thread(
        subprocess.run,
        ["bash", "devstack/check_loopback.sh"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    await asyncio.wait_for(proc.wait(), 30)
    lines = check.stdout.splitlines()
    print("\n" + "\n".join(lines[-3:]))
    # no connection of any stack process has a peer off loopback, in any mode
    assert not [ln for ln in lines if "NOT LOOPBACK (peer" in ln], check.stdout
    if os.environ.get("DEVSTACK_NETNS"):
        # in the namespace there is no route out at all: the check must pass
        assert check.returncode == 0, check.stdout + check.stderr
    else:
        # on the host, livekit-sip binds its RTP socket to 0.0.0.0 (hard-coded
        # in the pinned release); those are the only non-loopback sockets allowed
        bad = [ln for ln in lines if "NOT LOOPBACK" in ln and "livekit-sip" not in ln]
        assert not bad, "\n".join(bad)
