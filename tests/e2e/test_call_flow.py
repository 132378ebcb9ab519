"""End to end on the real stack: hold audio at once, clean handoff, hangups, refusals."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.e2e.support.scenario import (
    agent_kinds_in_room,
    find_call_room,
    format_timeline,
    held_call,
    start_caller,
)

pytestmark = pytest.mark.e2e

FADE_MS = 400


async def test_caller_hears_hold_then_agent(lk_env, lkapi, worker, work_dir, hold_reference_8k):
    out = await held_call(lk_env, lkapi, work_dir, hold_reference_8k, tag="flow")
    print(f"\nroom {out.room}\n{format_timeline(out)}")
    print(
        f"dead_air_ms={out.dead_air_ms} handoff_ms={out.handoff_ms} "
        f"caller_hears_agent={out.caller_hears_agent} agent_hears_caller={out.agent_hears_caller} "
        f"worker_left={out.worker_left}"
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
    assert out.worker_left
