"""Fault matrix, part 4: a burst of INVITEs larger than the worker's capacity.

Ten INVITEs within one second against one worker that reports itself full
at five calls (HOLD_MAX_CALLS=5). Every call must end up either answered
with hold audio, or refused with a SIP error; none may be answered and left
in silence. The 50-in-a-second run at the default capacity (20) is
`make burst` (the same test with BURST_N=50 BURST_CAPACITY=20).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from harness.analysis import CallerAudio, write_tone_wav
from harness.scenario import start_caller
from harness.stack import start_worker, stop_worker
from tests.e2e.support.outcome import answered_span, refusal

pytestmark = pytest.mark.e2e

HOLD_HZ = 500.0
# `make burst` runs the benchmark-sized row: 50 INVITEs, capacity 20 (the default).
N = int(os.environ.get("BURST_N", "10"))
CAPACITY = int(os.environ.get("BURST_CAPACITY", "5"))


async def test_burst_beyond_capacity_is_held_or_refused_never_stuck(lk_env, work_dir):
    hold = write_tone_wav(str(work_dir / "hold.wav"), HOLD_HZ, seconds=2.0, rate=16000)
    w = start_worker(lk_env, work_dir, HOLD_AUDIO=hold, HOLD_MAX_CALLS=str(CAPACITY))
    try:
        t0 = time.time()
        calls = []
        for i in range(N):
            calls.append(
                await start_caller(
                    lk_env,
                    work_dir,
                    f"+155512540{i:02d}",
                    [697.0],
                    duration=8.0,
                    tag=f"burst{i}",
                    answer_timeout=40.0,
                )
            )
            await asyncio.sleep(min(0.1, 1.0 / N))
        sent_in = time.time() - t0
        await asyncio.gather(*(asyncio.wait_for(p.wait(), 60) for p, _r, _s in calls))
        outcomes = []
        rang: list[dict] = []
        # Every call must state what happened to it: an answered call its
        # times and recording, a refused one its SIP status and when it came
        # (support/outcome.py fails, saying what is missing, otherwise).
        for i, (_p, _rec, res) in enumerate(calls):
            assert res.exists(), f"burst{i}: the caller wrote no result ({res})"
            a = CallerAudio.load(res)
            r = a.result
            if r.get("answered"):
                answered_after, ended_at = answered_span(r, f"burst{i}")
                assert a.rec.size > 0, f"burst{i}: answered, but its recording is empty or missing"
                held = a.heard(HOLD_HZ, a.t0 + 1.0, ended_at)
                kind = "held" if held > 0.8 else "gappy hold" if held >= 0.1 else "silent"
                outcomes.append((kind, round(answered_after, 1), round(held, 2)))
            else:
                code, reason, rang_s = refusal(r, f"burst{i}")
                rang.append({"refused": True, "rang_s": round(rang_s, 1)})
                outcomes.append((f"refused {code} {reason}", None))
        print(f"\n{N} INVITEs in {sent_in:.2f} s, capacity {CAPACITY}: {outcomes}; {rang}")
        print(json.dumps({k: sum(o[0] == k for o in outcomes) for k in {o[0] for o in outcomes}}))
        assert not [o for o in outcomes if o[0] == "silent"], "a call answered into silence"
        assert sum(o[0] == "held" for o in outcomes) >= CAPACITY
        # the rest are refused by livekit-sip at the trunk's ringing timeout
        # (provision --ringing-timeout, 20 s), not left to our 40 s CANCEL
        refused = [o for o in outcomes if o[0].startswith("refused")]
        assert all("487" not in o[0] for o in refused), refused
        assert all(r["rang_s"] < 30 for r in rang if r["refused"]), rang
    finally:
        stop_worker(w)
