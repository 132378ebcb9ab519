"""The hold worker as a real `python -m worker start` process, for e2e tests and the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """A worker must not outlive the test run that started it: a stray worker
    registered under the same agent name would take the next run's calls."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


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


WORKER_CMD = ("-m", "worker", "start", "--log-level", "info")


def start_worker(
    env: dict[str, str],
    log_dir: Path,
    *,
    cmd: tuple[str, ...] = WORKER_CMD,
    argv: list[str] | None = None,
    inherit_env: bool = True,
    register_timeout: float = 60.0,
    **hold_env: str,
) -> WorkerProcess:
    """Start a worker (ours by default, or `cmd` run by this Python, e.g. the
    benchmark's baseline, or a whole `argv`, e.g. the container image's entry
    in a chroot, with `inherit_env=False` so that only `env` reaches it) and
    return once it has registered with the server."""
    hold_env.setdefault("HOLD_HTTP_PORT", "0")
    log_path = log_dir / f"worker-{int(time.time() * 1000)}.log"
    full_env = {**(os.environ if inherit_env else {}), **env, **hold_env, "PYTHONUNBUFFERED": "1"}
    f = open(log_path, "wb")
    proc = subprocess.Popen(
        argv or [sys.executable, *cmd],
        cwd=REPO,
        env=full_env,
        stdout=f,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    w = WorkerProcess(proc, log_path)
    STARTED.append(w)
    deadline = time.time() + register_timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{w.text()[-3000:]}")
        if "registered worker" in w.text():
            return w
        time.sleep(0.1)
    stop_worker(w)
    raise RuntimeError(
        f"worker did not register within {register_timeout:g} s:\n{w.text()[-3000:]}"
    )


# Every worker log of this test run, kept after its temporary directory is
# gone, for tests/e2e/test_zz_log_scan.py (secrets, unmasked numbers).
STARTED: list[WorkerProcess] = []
ARCHIVE: list[tuple[str, str]] = []  # (log path, text)


def archive(w: WorkerProcess) -> None:
    if any(path == str(w.log_path) for path, _ in ARCHIVE):
        return
    try:
        ARCHIVE.append((str(w.log_path), w.text()))
    except OSError:
        pass


def stop_worker(w: WorkerProcess, timeout: float = 30.0) -> int:
    if w.proc.poll() is None:
        w.proc.send_signal(signal.SIGTERM)
        try:
            w.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(w.proc.pid, signal.SIGKILL)
            w.proc.wait(5)
    archive(w)
    return w.proc.returncode
