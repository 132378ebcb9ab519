"""The local stack and the processes the harness runs on it.

- the stack: ``stack_env`` (what devstack/env.sh exports), ``ensure_stack``
  (up, idempotent, with a trunk and dispatch rule of the e2e run's own),
  ``provision`` (``python -m worker provision`` of a trunk and rule for one
  agent name, loopback only), the services' pid files (``service_pid``,
  ``stack_pids``) and ``restart_service`` (a real stop and start of one);
- hold workers as real processes: ``start_worker`` / ``stop_worker``
  (``python -m worker start``, the benchmark's baseline, or the container
  image's entry), each one's log kept for the e2e log scan (``STARTED``,
  ``ARCHIVE``); ``die_with_parent`` for any child that must not outlive
  the harness.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / ".devstack" / "run"  # devstack/up.sh writes <service>.pid here
SERVICES = ("livekit-server", "livekit-sip", "redis-server")
_PR_SET_PDEATHSIG = 1

# ------------------------------------------------------------------ the stack


def stack_env() -> dict[str, str]:
    """The variables devstack/env.sh exports, read by running it."""
    out = subprocess.run(
        ["bash", "-c", "source devstack/env.sh && env -0"],
        cwd=REPO,
        capture_output=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "DEV_"))},
    ).stdout.decode()
    pairs = (item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith(("LIVEKIT_", "DEV_", "SIP_"))}


SESSION_STARTED = 0.0  # wall time the e2e run brought the stack up (ensure_stack)
E2E_TRUNK = "hold-e2e"
E2E_RULE = "hold-e2e-calls"
E2E_NUMBER = "+15550199"


def _up() -> None:
    up = subprocess.run(["bash", "devstack/up.sh"], cwd=REPO, capture_output=True, text=True)
    if up.returncode != 0:
        raise RuntimeError(f"devstack/up.sh failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")


def ensure_stack() -> dict[str, str]:
    """Stack up, and a trunk + dispatch rule of the tests' own: their own
    number and a fresh agent name per run, so neither a `make dev` worker nor
    a worker left over from another run can take the tests' calls."""
    global SESSION_STARTED
    SESSION_STARTED = time.time()
    _up()
    env = stack_env()
    env["HOLD_AGENT_NAME"] = f"hold-e2e-{os.getpid()}-{secrets.token_hex(3)}"
    env["DEV_SIP_TARGET"] = env["DEV_SIP_TARGET"].replace(env["DEV_TRUNK_NUMBER"], E2E_NUMBER)
    env["DEV_TRUNK_NUMBER"] = E2E_NUMBER
    provision(
        env, E2E_TRUNK, E2E_RULE, "--number", E2E_NUMBER, "--header", "X-Store-Id=store.id",
        check=True,
    )  # fmt: skip
    return env


def provision(
    env: dict[str, str],
    trunk: str,
    rule: str,
    *args: str,
    agent_name: str | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`python -m worker provision` of a trunk + rule of the harness's own, for
    `agent_name` (default: the run's, env HOLD_AGENT_NAME), accepting calls
    from loopback only. With `check`, a failure raises RuntimeError."""
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "provision",
            "--trunk-name",
            trunk,
            "--rule-name",
            rule,
            "--agent-name",
            agent_name or env["HOLD_AGENT_NAME"],
            "--allowed-address",
            "127.0.0.1/32",
            *args,
        ],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and p.returncode != 0:
        raise RuntimeError(f"provision {trunk} failed: {p.stderr.strip()}")
    return p


def service_pid(name: str) -> int:
    """The pid of one of the stack's services, from its pid file."""
    return int((RUN / f"{name}.pid").read_text().strip())


def stack_pids() -> dict[str, int]:
    """The pids of the stack's services that have a readable pid file."""
    out = {}
    for name in SERVICES:
        try:
            out[name] = service_pid(name)
        except (OSError, ValueError):
            continue
    return out


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
    """Stop one of the stack's services for real (SIGTERM, or SIGKILL for a
    crash) and start it again with devstack/up.sh, which is idempotent and
    waits until every service answers its health check."""
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
    try:
        _up()
    except RuntimeError as e:
        raise RuntimeError(f"after stopping {name}: {e}") from None
    upped = time.time()
    return Restart(
        name, signal.Signals(sig).name, stopped, upped, stopped - t0, upped - stopped - down_s
    )


# ------------------------------------------------------------------ workers


def die_with_parent() -> None:
    """For `preexec_fn`: the child gets SIGTERM when the harness dies. A worker
    must not outlive the test run that started it: a stray worker registered
    under the same agent name would take the next run's calls."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.time)

    def log_lines(self) -> list[dict[str, Any]]:
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
    ready: str = "registered worker",
    **hold_env: str,
) -> WorkerProcess:
    """Start a worker (ours by default, or `cmd` run by this Python, e.g. the
    benchmark's baseline, or a whole `argv`, e.g. the container image's entry
    in a chroot, with `inherit_env=False` so that only `env` reaches it) and
    return once it has registered with the server (once its log says `ready`:
    another of our processes, such as a guardian, says something else)."""
    hold_env.setdefault("HOLD_HTTP_PORT", "0")
    log_path = log_dir / f"worker-{int(time.time() * 1000)}.log"
    full_env = {**(os.environ if inherit_env else {}), **env, **hold_env, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as f:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            argv or [sys.executable, *cmd],
            cwd=REPO,
            env=full_env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    w = WorkerProcess(proc, log_path)
    STARTED.append(w)
    deadline = time.time() + register_timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{w.text()[-3000:]}")
        if ready in w.text():
            return w
        time.sleep(0.1)
    stop_worker(w)
    raise RuntimeError(
        f"worker not ready ({ready!r}) within {register_timeout:g} s:\n{w.text()[-3000:]}"
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


def stop_worker(w: WorkerProcess, timeout: float = 30.0) -> int | None:
    """SIGTERM, SIGKILL to its process group after `timeout`; its exit code."""
    if w.proc.poll() is None:
        w.proc.send_signal(signal.SIGTERM)
        try:
            w.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(w.proc)
    archive(w)
    return w.proc.returncode


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the process group of a child started with start_new_session
    (a worker and its job processes), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def free_port() -> int:
    """A free TCP port on loopback (for a service started next)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, timeout: float = 10.0) -> None:
    """A service's GET /health answers 200 (the desk prints its line just
    before it binds)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1.0) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not healthy within {timeout} s")


@dataclass
class DeskRun:
    """A hold worker and the desk (`python -m worker desk`) over the same
    store map and Redis, as the desk's and the console's tests run them."""

    url: str
    secret: str = field(repr=False)
    worker: WorkerProcess
    desk: WorkerProcess

    def stop(self) -> None:
        stop_worker(self.desk)
        stop_worker(self.worker)


def start_desk(
    env: dict[str, str], work: Path, store_map: Path, redis_url: str, **desk_env: str
) -> DeskRun:
    """The worker (settle 1 s) and the desk on a free port with a secret of
    its own, both logging under `work`; returns once the desk is healthy."""
    shared = {"HOLD_STORES": str(store_map), "HOLD_REDIS_URL": redis_url}
    (work / "worker").mkdir(exist_ok=True)
    (work / "desk").mkdir(exist_ok=True)
    w = start_worker({**env, **shared}, work / "worker", HOLD_HANDOFF_SETTLE_S="1")
    secret, port = secrets.token_hex(32), free_port()
    desk = {
        **shared,
        "HOLD_DESK_SECRET": secret,
        "HOLD_DESK_HOST": "127.0.0.1",
        "HOLD_DESK_PORT": str(port),
        **desk_env,
    }
    try:
        dk = start_worker(
            {**env, **desk},
            work / "desk",
            argv=[sys.executable, "-m", "worker", "desk"],
            ready="hold desk: http://",
            register_timeout=30.0,
        )
    except BaseException:
        stop_worker(w)
        raise
    run = DeskRun(f"http://127.0.0.1:{port}", secret, w, dk)
    try:
        wait_healthy(run.url)
    except BaseException:
        run.stop()
        raise
    return run
