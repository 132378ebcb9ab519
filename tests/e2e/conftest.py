"""Fixtures for end-to-end tests on the real local stack.

Real servers only: Redis, livekit-server and livekit-sip from devstack/, the
worker as a real `python -m worker start` process, a pjsua2 SIP caller as the
carrier, and a livekit.rtc participant as the human agent. Nothing is faked.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from livekit import api

from harness import analysis
from harness import stack as stackmod
from harness.analysis import write_tone_wav
from harness.sip import dialled
from harness.stack import WorkerProcess, start_worker, stop_worker
from tests.e2e.support.tones import TONE_HOLD_HZ

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def _record_caller_numbers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every call of the run notes its caller number here (support/dialled.py);
    sip_caller processes inherit the variable. test_zz_log_scan.py reads it."""
    path = tmp_path_factory.mktemp("dialled") / "callers.txt"
    path.touch()
    old = os.environ.get(dialled.ENV)
    os.environ[dialled.ENV] = str(path)
    yield
    if old is None:
        os.environ.pop(dialled.ENV, None)
    else:
        os.environ[dialled.ENV] = old


@pytest.fixture(scope="session")
def lk_env() -> dict[str, str]:
    """The local stack is up (started if needed) and provisioned."""
    return stackmod.ensure_stack()


@pytest.fixture(scope="module")
def worker(
    lk_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    w = start_worker(lk_env, tmp_path_factory.mktemp("worker"))
    yield w
    stop_worker(w)


@pytest.fixture(scope="module")
def tone_worker(
    lk_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker whose hold audio is one tone (tones.TONE_HOLD_HZ)."""
    d = tmp_path_factory.mktemp("tone-worker")
    hold = write_tone_wav(str(d / "hold.wav"), TONE_HOLD_HZ, seconds=2.0, rate=16000)
    w = start_worker(lk_env, d, HOLD_AUDIO=hold)
    yield w
    stop_worker(w)


@pytest.fixture(scope="session")
def hold_reference_8k() -> np.ndarray:
    """The default hold asset as the caller should hear it: 8 kHz, normalised."""
    return analysis.hold_reference_8k()


@pytest.fixture
def work_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="e2e-") as d:
        yield Path(d)


def caller_wav(work_dir: Path, freqs: tuple[float, ...], name: str = "caller.wav") -> Path:
    return Path(write_tone_wav(str(work_dir / name), list(freqs), seconds=2.0))


@pytest_asyncio.fixture
async def lkapi(lk_env: dict[str, str]) -> AsyncIterator[api.LiveKitAPI]:
    async with api.LiveKitAPI(
        lk_env["LIVEKIT_URL"], lk_env["LIVEKIT_API_KEY"], lk_env["LIVEKIT_API_SECRET"]
    ) as lk:
        yield lk


async def wait_for(pred, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await pred()
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
