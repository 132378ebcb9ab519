"""Maximum wait on the real stack: the worker hangs the caller up when it expires."""

from __future__ import annotations

import asyncio
import json

import pytest

from harness.rooms import find_call_room
from harness.scenario import start_caller
from harness.stack import start_worker, stop_worker
from worker.logmask import mask_text

pytestmark = pytest.mark.e2e
MAX_WAIT_S = 3.0


@pytest.fixture(scope="module")
def worker(lk_env, tmp_path_factory):
    w = start_worker(
        lk_env, tmp_path_factory.mktemp("worker-maxwait"), HOLD_MAX_WAIT_S=str(MAX_WAIT_S)
    )
    yield w
    stop_worker(w)


async def test_max_wait_hangs_up(lk_env, lkapi, worker, work_dir):
    number = "+15551230006"
    proc, _rec, res = await start_caller(
        lk_env, work_dir, number, [697.0, 1477.0], duration=15.0, tag="maxwait"
    )
    room = await find_call_room(lkapi, number)
    await asyncio.wait_for(proc.wait(), 40)
    result = json.loads(res.read_text())
    ev = result["events"]
    held_s = ev["disconnected"]["wall"] - ev["answered"]["wall"]
    print(f"\nmax wait {MAX_WAIT_S} s: the caller was hung up after {held_s:.2f} s")
    assert result["answered"] and result["hangup_by"] == "remote"
    assert MAX_WAIT_S - 0.5 <= held_s <= MAX_WAIT_S + 2.0
    await asyncio.sleep(0.5)
    lines = [r.get("message", "") for r in worker.log_lines() if r.get("room") == mask_text(room)]
    assert any("hanging up the caller: max wait of 3 s reached" in m for m in lines)
