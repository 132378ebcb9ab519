"""Real faults on the local stack: restart a server, read what a caller heard when.

`restart_service` stops one of the stack's processes for real (SIGTERM, or
SIGKILL for a crash) and starts it again with devstack/up.sh, which is
idempotent and waits until every service answers its health check.
`CallerAudio` turns a SIP caller's recording into "did they hear tone X
between these two wall-clock times".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .signals import read_wav, tone_presence

REPO = Path(__file__).resolve().parents[3]
RUN = REPO / ".devstack" / "run"
WIN = 0.1
# The fault tests' hold audio is one tone (conftest's `tone_worker`), so
# "the caller hears hold audio" is the share of that tone in 100 ms windows.
TONE_HOLD_HZ = 500.0


def service_pid(name: str) -> int:
    return int((RUN / f"{name}.pid").read_text().strip())


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@dataclass
class Restart:
    name: str
    signal: str
    stopped_at: float  # wall time the process was gone
    up_at: float  # wall time devstack/up.sh reported every service healthy
    stop_s: float
    start_s: float


def restart_service(name: str, sig: int = signal.SIGTERM, down_s: float = 0.0) -> Restart:
    pid = service_pid(name)
    t0 = time.time()
    os.kill(pid, sig)
    deadline = t0 + 15
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.02)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.02)
    stopped = time.time()
    time.sleep(down_s)
    up = subprocess.run(["bash", "devstack/up.sh"], cwd=REPO, capture_output=True, text=True)
    if up.returncode != 0:
        raise RuntimeError(f"devstack/up.sh after stopping {name}: {up.stderr[-1500:]}")
    upped = time.time()
    return Restart(
        name, signal.Signals(sig).name, stopped, upped, stopped - t0, upped - stopped - down_s
    )


@dataclass
class CallerAudio:
    result: dict
    rec: np.ndarray
    rate: int
    t0: float  # wall time of the recording's first sample

    @classmethod
    def load(cls, result_path: Path) -> CallerAudio:
        """The call's result and recording (an empty recording if never answered)."""
        res = json.loads(result_path.read_text())
        started = res["recording"].get("started")
        if not res.get("answered") or not started or not Path(res["recording"]["path"]).exists():
            return cls(res, np.zeros(0), 8000, 0.0)
        rec, rate = read_wav(res["recording"]["path"])
        return cls(res, rec, rate, float(started["wall"]))

    def share(self, hz: float) -> np.ndarray:
        return tone_presence(self.rec, self.rate, hz, WIN)

    def heard(self, hz: float, start: float, end: float, min_share: float = 0.3) -> float:
        """Fraction of the windows between two wall times in which tone hz is heard."""
        s = self.share(hz)
        i0 = max(0, int((start - self.t0) / WIN))
        i1 = min(len(s), int((end - self.t0) / WIN))
        if i1 <= i0:
            return 0.0
        return float(np.mean(s[i0:i1] >= min_share))

    def first_heard(self, hz: float, after: float, min_share: float = 0.3) -> float | None:
        """Wall time of the first window after `after` with tone hz."""
        s = self.share(hz)
        i0 = max(0, int((after - self.t0) / WIN))
        idx = np.flatnonzero(s[i0:] >= min_share)
        return None if idx.size == 0 else self.t0 + (i0 + int(idx[0])) * WIN

    def last_heard(self, hz: float, min_share: float = 0.3) -> float | None:
        idx = np.flatnonzero(self.share(hz) >= min_share)
        return None if idx.size == 0 else self.t0 + int(idx[-1]) * WIN

    @property
    def ended_at(self) -> float:
        ev = self.result["events"]
        return float((ev.get("disconnected") or ev.get("hangup") or {}).get("wall", 0.0))
