"""Ten calls at once: each in its own room, each hears hold audio, no cross-talk."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from harness.analysis import WINDOW_S, tone_presence
from harness.scenario import analyse_call, held_call

pytestmark = pytest.mark.e2e

N = 10
LOWS, HIGHS = (697.0, 770.0, 852.0, 941.0), (1209.0, 1336.0, 1477.0, 1633.0)
CALLER_TONES = [(LOWS[i % 4], HIGHS[(i + i // 4) % 4]) for i in range(N)]
# agent tones: none is a note or harmonic of the hold music, 100 Hz or more apart
AGENT_TONES = [1650.0, 1850.0, 2100.0, 2200.0, 2450.0, 2550.0, 2650.0, 2750.0, 2850.0, 2950.0]


def windows_with(x: np.ndarray, rate: int, freq: float, share: float) -> int:
    return int(np.sum(tone_presence(x, rate, freq, window_s=WINDOW_S) >= share))


async def test_ten_calls_at_once_no_cross_talk(lk_env, lkapi, worker, work_dir, hold_reference_8k):
    assert len(set(CALLER_TONES)) == N
    outs = await asyncio.gather(
        *[
            held_call(
                lk_env,
                lkapi,
                work_dir,
                hold_reference_8k,
                number=f"+1555123{1000 + i}",
                caller_freqs=CALLER_TONES[i],
                agent_hz=AGENT_TONES[i],
                agent_after_s=5.0,
                agent_delay_s=0.3 * i,  # agents arrive over 3 s, as people do
                duration_s=30.0,  # slow handoffs on a loaded machine still leave time
                tag=f"c{i}",
                analyse=False,  # analysed below, once every call has ended
            )
            for i in range(N)
        ]
    )
    for o in outs:
        analyse_call(o, hold_reference_8k)
    rooms = {o.room for o in outs}
    print()
    for i, o in enumerate(outs):
        print(
            f"call {i}: room {o.room} dead_air_ms={o.dead_air_ms and round(o.dead_air_ms)} "
            f"handoff_ms={o.handoff_ms and round(o.handoff_ms)} hears_agent={o.caller_hears_agent} "
            f"agent_hears_caller={o.agent_hears_caller}"
        )
    assert len(rooms) == N, "each call must get its own room"
    dead = sorted(o.dead_air_ms for o in outs if o.dead_air_ms is not None)
    assert len(dead) == N, "every caller must hear hold audio"
    print(f"dead air p50={dead[N // 2]:.0f} ms max={dead[-1]:.0f} ms")
    # Ten INVITEs in the same instant on 2 cores that also run the ten SIP
    # callers and agents: a generous bound here; the single-call test holds
    # the 1000 ms one, and the benchmarks measure p95 under load.
    assert dead[-1] <= 3000
    for i, o in enumerate(outs):
        assert o.status_code == 200
        assert o.caller_hears_agent and o.agent_hears_caller, f"call {i}"
        assert o.recording is not None and o.agent_heard is not None
        # cross-talk: no other agent's tone at caller i, no other caller's tones at agent i
        for j in range(N):
            if j == i:
                continue
            leaked = windows_with(o.recording, o.record_rate, AGENT_TONES[j], 0.2)
            assert leaked <= 1, f"caller {i} hears agent {j} ({leaked} windows)"
            others = [f for f in CALLER_TONES[j] if f not in CALLER_TONES[i]]
            shares = [tone_presence(o.agent_heard, 48_000, f, window_s=WINDOW_S) for f in others]
            both = np.minimum.reduce(shares)
            assert int(np.sum(both >= 0.1)) <= 1, f"agent {i} hears caller {j}"
