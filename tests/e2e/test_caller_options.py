"""Issue 18 on the real stack: what a waiting caller hears and can do.

Position announcements: three pjsua2 callers of one store (its own id per
run, so its line and waits start empty) hear "you are caller number 1, 2, 3",
found in each caller's own recording by correlating the worker's cached prompt
files (worker/prompts.py, the same HOLD_PROMPTS_CACHE) against it; once the
first caller is taken at the desk (and its agent joins), the other two hear 1
and 2 at their next announcement. An unknown store language stops
`python -m worker start` with one line.

The store's hold audio is one tone, notched out of the recordings before the
prompts are looked for.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
import soxr

from harness import stack as stackmod
from harness.analysis import (
    PROMPT_CORR,
    CallerAudio,
    best_prompt,
    find_prompt,
    notch,
    write_tone_wav,
)
from harness.scenario import PlacedCall, place_call
from harness.stack import REPO, DeskRun, start_desk
from tests.e2e.test_desk_stack import take_and_talk
from tests.e2e.test_registry_recovery import redis_url
from tests.e2e.test_stores import target
from worker.announce import CALLER_NUMBER
from worker.desk import mint_token
from worker.prompts import WORD_GAP_S, PromptLibrary

pytestmark = pytest.mark.e2e

TRUNK, RULE = "hold-e2e-options", "hold-e2e-options-calls"
RUN = secrets.token_hex(3)
STORE = f"line-{RUN}"
NUMBER = "+15550231"
HOLD_HZ = 440.0
AGENT_HZ = 1500.0
FIRST_S, EVERY_S = 4.0, 12.0
MAP = f"""\
default: {STORE}
stores:
  {STORE}:
    name: Line Store
    numbers: ["{NUMBER}"]
    hold_audio: hold.wav
    position_announcements:
      enabled: true
      first_after_s: {FIRST_S}
      every_s: {EVERY_S}
      min_gap_s: 5
      announce_wait: false
"""


def caller_number(i: int) -> str:
    return f"+1555{int(RUN, 16) % 10_000:04d}{180 + i:03d}"


@dataclass
class OptionsStack:
    run: DeskRun
    cache: Path
    lk_env: dict[str, str]

    def token(self, agent: str) -> str:
        return mint_token(self.run.secret, agent, (STORE,), ttl_s=600)


@pytest.fixture(scope="module")
def options(
    lk_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OptionsStack]:
    d = tmp_path_factory.mktemp("options")
    write_tone_wav(str(d / "hold.wav"), HOLD_HZ, seconds=2.0, rate=16000)
    store_map = d / "stores.yaml"
    store_map.write_text(MAP)
    cache = d / "prompts"
    p = stackmod.provision(lk_env, TRUNK, RULE, "--stores", str(store_map))
    assert p.returncode == 0, p.stderr
    env = {**lk_env, "HOLD_PROMPTS_CACHE": str(cache)}
    run = start_desk(env, d, store_map, redis_url())
    try:
        yield OptionsStack(run, cache, lk_env)
    finally:
        run.stop()
        print(f"\nworker log (tail):\n{run.worker.text()[-2000:]}")


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def prompts_8k(cache: Path) -> dict[str, np.ndarray]:
    """The store's prompts as the worker made them (the same cached files,
    rendered by nobody here: the worker rendered them at start), at 8 kHz."""
    lib = PromptLibrary(cache, level_dbfs=-20.0)
    ps = lib.prompt_set("en", None, {})
    assert lib.rendered == 0, "the worker's cache should already hold every prompt"
    return {
        k: np.asarray(soxr.resample(v, 48_000, 8_000), dtype=np.float32)
        for k, v in ps.audio.items()
    }


def heard_positions(
    audio: CallerAudio, prompts: dict[str, np.ndarray]
) -> list[tuple[float, int, float, float]]:
    """(wall time, number, score of "caller number", score of the number) of
    every position announcement in the caller's recording."""
    rec = notch(audio.rec, audio.rate, [HOLD_HZ, 2 * HOLD_HZ])
    numbers = {
        k: v for k, v in prompts.items() if k in ("number_1", "number_2", "number_3", "number_4")
    }
    lead = prompts[CALLER_NUMBER]
    out = []
    for start, score in find_prompt(rec, audio.rate, lead):
        after = start + lead.shape[0] / audio.rate + WORD_GAP_S - 0.1
        key, n_score = best_prompt(rec, audio.rate, numbers, after, 0.25)
        # 0: the number is not there (cut off by the hang-up)
        n = int(key.rsplit("_", 1)[1]) if key and n_score >= PROMPT_CORR else 0
        out.append((audio.t0 + start, n, score, n_score))
    return out


async def dial(
    s: OptionsStack, lkapi, work: Path, number: str, duration: float, tag: str
) -> PlacedCall:
    return await place_call(
        s.lk_env,
        lkapi,
        work,
        number,
        freqs=[697.0],
        duration=duration,
        target=target(s.lk_env, NUMBER),
        tag=tag,
    )


async def test_three_callers_hear_their_place_then_move_up(options, lkapi, work_dir, http):
    prompts = prompts_8k(options.cache)
    # numbers of this run's own: a room of an earlier run may still list its caller
    numbers = [caller_number(i) for i in range(3)]
    callers: list[PlacedCall] = []
    agent = None
    try:
        for i, n in enumerate(numbers):
            callers.append(await dial(options, lkapi, work_dir, n, 30.0, f"pos{i + 1}"))
            await asyncio.sleep(1.0)  # a defined order of hold starts
        # every caller has heard their first announcement (FIRST_S into the hold)
        await asyncio.sleep(FIRST_S + 1.5)
        t_take = time.time()
        agent, _ = await take_and_talk(_Desk(options), http, callers[0].cid, "ada", STORE, AGENT_HZ)
        heard = [await c.done(60.0) for c in callers]
    finally:
        if agent is not None:
            await agent.leave()
        for c in callers:
            await c.stop()

    said = [heard_positions(a, prompts) for a in heard]
    print(f"\ncaller 1 taken at +{t_take - callers[0].answered_at():.1f} s of its call")
    for i, (c, s) in enumerate(zip(callers, said, strict=True)):
        t_ans = c.answered_at()
        print(
            f"caller {i + 1} ({c.number[-4:]}): "
            + ", ".join(
                f"'caller number {n or '(cut off)'}' at +{t - t_ans:.1f} s (corr {sc:.2f}/{ns:.2f})"
                for t, n, sc, ns in s
            )
        )
    before = [[n for t, n, _s, _ns in s if t < t_take] for s in said]
    after = [[n for t, n, _s, _ns in s if t > t_take + 0.5] for s in said]
    assert before == [[1], [2], [3]], said
    # taken: caller 1 hears no more announcements; 2 and 3 move up
    assert after[0] == [], said
    assert after[1][:1] == [1] and after[2][:1] == [2], said


class _Desk:
    """What take_and_talk needs of test_desk_stack's DeskStack."""

    def __init__(self, s: OptionsStack) -> None:
        self.url = s.run.url
        self._s = s

    def token(self, agent: str, *_stores: str) -> str:
        return self._s.token(agent)


def test_unknown_language_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    write_tone_wav(str(tmp_path / "hold.wav"), HOLD_HZ, seconds=1.0, rate=16000)
    store_map = tmp_path / "stores.yaml"
    # a well-formed voice name espeak-ng does not have (announcements off: the
    # language is checked for every store, not only the announcing ones)
    store_map.write_text(
        MAP.replace(
            "    hold_audio: hold.wav\n", "    hold_audio: hold.wav\n    language: xx-nowhere\n"
        ).replace("enabled: true", "enabled: false")
    )
    env = {
        **os.environ,
        "HOLD_STORES": str(store_map),
        "HOLD_PROMPTS_CACHE": str(tmp_path / "cache"),
        "LIVEKIT_URL": "ws://127.0.0.1:1",
        "LIVEKIT_API_KEY": "k",
        "LIVEKIT_API_SECRET": "s" * 32,
    }
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "worker", "start"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [x for x in (p.stderr + p.stdout).splitlines() if x.strip()]
    print(f"\nexit {p.returncode} after {time.monotonic() - t0:.1f} s: {lines}")
    assert p.returncode != 0
    assert len(lines) == 1, lines
    assert f"stores.{STORE}.language" in lines[0], lines
    assert "'xx-nowhere' is not an espeak-ng voice" in lines[0], lines
