"""Fixtures for end-to-end tests on the real local stack.

Real servers only: Redis, livekit-server and livekit-sip from devstack/, the
worker as a real `python -m worker start` process, a pjsua2 SIP caller as the
carrier, and a livekit.rtc participant as the human agent. Nothing is faked.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from livekit import api

from tests.e2e.support import stack as stackmod
from tests.e2e.support.signals import write_tone_wav

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def lk_env() -> dict[str, str]:
    """The local stack is up (started if needed) and provisioned."""
    return stackmod.ensure_stack()


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.time)

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return out

    def messages(self) -> list[str]:
        return [r.get("message", "") for r in self.log_lines()]

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker(env: dict[str, str], log_dir: Path, **hold_env: str) -> WorkerProcess:
    hold_env.setdefault("HOLD_HTTP_PORT", "0")
    log_path = log_dir / f"worker-{int(time.time() * 1000)}.log"
    full_env = {**os.environ, **env, **hold_env, "PYTHONUNBUFFERED": "1"}
    f = open(log_path, "wb")  # noqa: SIM115 - closed when the process ends
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "start", "--log-level", "debug"],
        cwd=REPO,
        env=full_env,
        stdout=f,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    w = WorkerProcess(proc, log_path)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{w.text()[-3000:]}")
        if "registered worker" in w.text():
            return w
        time.sleep(0.1)
    stop_worker(w)
    raise RuntimeError(f"worker did not register within 60 s:\n{w.text()[-3000:]}")


def stop_worker(w: WorkerProcess, timeout: float = 30.0) -> int:
    if w.proc.poll() is None:
        w.proc.send_signal(signal.SIGTERM)
        try:
            w.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(w.proc.pid, signal.SIGKILL)
            w.proc.wait(5)
    return w.proc.returncode


@pytest.fixture(scope="module")
def worker(lk_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = start_worker(lk_env, tmp_path_factory.mktemp("worker"))
    yield w
    stop_worker(w)


@pytest.fixture(scope="session")
def hold_reference_8k() -> np.ndarray:
    """The default hold asset as the caller should hear it: 8 kHz, normalised."""
    import soxr

    from worker.hold.audio import load_hold_audio

    audio = load_hold_audio(
        REPO / "assets" / "hold-default.flac", level_dbfs=-20.0, max_seconds=600
    )
    return soxr.resample(audio.samples, 48_000, 8_000).astype(np.float32)


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
