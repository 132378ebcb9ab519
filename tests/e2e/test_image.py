"""The container image, built for real by devstack/image.sh, holds and hands over a call.

`podman run` is refused by this sandbox, so the test runs the image's own
entry point (its Entrypoint, Cmd, Env, WorkingDir and User from `podman image
inspect`) in a chroot on `podman image mount`, with the root file system
read-only (as deploy/k8s/hold-worker.yaml runs it), a tmpfs on /tmp and the
LiveKit credentials as a mounted secret directory. Everything else is the
real stack: livekit-server, livekit-sip, a pjsua2 caller, a livekit.rtc agent.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.scenario import format_timeline, held_call
from harness.stack import WorkerProcess, start_worker, stop_worker
from tests.e2e.support.ci import unavailable

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".devstack" / "image"
IMAGE = "localhost/hold-worker:test"
SECRETS_IN_IMAGE = "/run/secrets/livekit"
HEALTH_PORT = 18081


def podman(*args: str) -> str:
    p = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"podman {' '.join(args)}: {p.stderr.strip()}"
    return p.stdout.strip()


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    reason = STATE / "skip-reason"
    if reason.exists():
        # devstack/image.sh could not install podman or debootstrap (or build
        # the base): a skip on a developer's machine, a failure under CI=true.
        unavailable(f"container image not built: {reason.read_text().strip()}")
    if not (STATE / "image-id").exists():
        pytest.fail("no image: run devstack/image.sh first (make test does)")
    (info,) = json.loads(podman("image", "inspect", IMAGE))
    summary = STATE / "summary"
    if summary.exists():
        print(f"\n{summary.read_text().strip()}")
    return info


@pytest.fixture(scope="module")
def rootfs(image: dict[str, Any]) -> Iterator[Path]:
    path = Path(podman("image", "mount", IMAGE))
    try:
        yield path
    finally:
        subprocess.run(["podman", "image", "unmount", IMAGE], capture_output=True, timeout=60)


def in_image(
    image: dict[str, Any], rootfs: Path, secrets: Path | None, argv: list[str]
) -> list[str]:
    """argv that runs `argv` the way a container runtime would run the image:
    its WorkingDir and User, a read-only root, /proc, /dev, tmpfs /tmp and /run."""
    cfg = image["Config"]
    user = cfg.get("User") or "0:0"
    workdir = cfg.get("WorkingDir") or "/"
    q = shlex.quote
    setup = [
        "set -e",
        "R=$(mktemp -d /tmp/hold-image-root.XXXXXX)",
        f"mount --bind {q(str(rootfs))} $R",
        "mount -o remount,bind,ro $R",
        "mount -t proc proc $R/proc",
        "mount --rbind /dev $R/dev",
        "mount -t tmpfs -o mode=1777 tmpfs $R/tmp",
        "mount -t tmpfs -o mode=755 tmpfs $R/run",
    ]
    if secrets is not None:
        setup += [
            f"mkdir -p $R{SECRETS_IN_IMAGE}",
            f"mount --bind -o ro {q(str(secrets))} $R{SECRETS_IN_IMAGE}",
        ]
    inner = f"cd {q(workdir)} && exec {' '.join(q(a) for a in argv)}"
    setup.append(f"exec chroot --userspec={q(user)} $R /bin/sh -c {q(inner)}")
    return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", "; ".join(setup)]


def image_env(image: dict[str, Any]) -> dict[str, str]:
    env = dict(e.split("=", 1) for e in image["Config"].get("Env") or [])
    env.setdefault("HOME", "/home/hold")
    return env


def test_image_metadata(image: dict[str, Any], rootfs: Path) -> None:
    cfg = image["Config"]
    env = image_env(image)
    print(
        f"image config: user={cfg.get('User')} entry={cfg.get('Entrypoint')} cmd={cfg.get('Cmd')}"
    )
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["python", "-m", "worker"] and cfg["Cmd"] == ["start"]
    assert "8081/tcp" in cfg["ExposedPorts"]
    assert env["PYTHONUNBUFFERED"] == "1" and env["HOLD_HTTP_HOST"] == "0.0.0.0"
    assert not [k for k in env if k.startswith("LIVEKIT_")], "no credentials baked in"
    assert cfg.get("StopSignal") == "SIGTERM"
    hc = image.get("Healthcheck") or cfg.get("Healthcheck") or {}
    assert "worker.healthcheck" in " ".join(hc.get("Test", [])), hc
    site = next((rootfs / "opt" / "hold" / "lib").glob("python3*/site-packages"))
    assert (site / "livekit" / "agents").is_dir()
    assert not (site / "pytest").exists() and not (site / "mypy").exists(), "test tools in image"
    assert not list((rootfs / "app").glob(".env*"))


@pytest.fixture(scope="module")
def image_worker(
    image: dict[str, Any], rootfs: Path, lk_env, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """The image's entry point (`python -m worker start`) registered with the stack,
    its LiveKit credentials read from a mounted secret directory."""
    work = tmp_path_factory.mktemp("image")
    secrets = work / "livekit-secret"
    secrets.mkdir(mode=0o755)
    for k in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        (secrets / k).write_text(lk_env[k] + "\n")  # kubectl keeps the newline
        (secrets / k).chmod(0o644)  # readable by the image's user, as a k8s secret
    work.chmod(0o755)
    env = {
        **image_env(image),
        "HOLD_AGENT_NAME": lk_env["HOLD_AGENT_NAME"],
        "HOLD_SECRETS_DIR": SECRETS_IN_IMAGE,
    }
    cfg = image["Config"]
    argv = in_image(image, rootfs, secrets, [*cfg["Entrypoint"], *cfg["Cmd"]])
    t0 = time.monotonic()
    w = start_worker(env, work, argv=argv, inherit_env=False, HOLD_HTTP_PORT=str(HEALTH_PORT))
    print(f"\nimage worker registered {time.monotonic() - t0:.1f} s after start")
    try:
        yield w
    finally:
        if w.proc.poll() is None:
            stop_worker(w)


def test_image_worker_runs_as_its_user_and_is_healthy(
    image: dict[str, Any], rootfs: Path, image_worker: WorkerProcess
) -> None:
    status = Path(f"/proc/{image_worker.proc.pid}/status").read_text()
    uid = next(ln.split()[1] for ln in status.splitlines() if ln.startswith("Uid:"))
    assert uid == "10001", "the worker runs as the image's non-root user"
    assert "hold worker (start): agent=" in image_worker.text()  # start-up summary
    assert "LIVEKIT_API_SECRET" not in image_worker.text()
    cfg = image["Config"]
    test = (image.get("Healthcheck") or cfg.get("Healthcheck"))["Test"]
    hc_argv = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
    p = subprocess.run(
        in_image(image, rootfs, None, hc_argv),
        env={**image_env(image), "HOLD_HTTP_PORT": str(HEALTH_PORT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    print(f"HEALTHCHECK: exit {p.returncode}: {p.stdout.strip()} {p.stderr.strip()}")
    assert p.returncode == 0 and " 200 OK" in p.stdout


async def test_image_holds_and_hands_over_a_call(
    image_worker: WorkerProcess, lk_env, lkapi, work_dir, hold_reference_8k
) -> None:
    out = await held_call(lk_env, lkapi, work_dir, hold_reference_8k, tag="image")
    print(f"\nroom {out.room}\n{format_timeline(out)}")
    print(
        f"image: dead_air_ms={out.dead_air_ms} handoff_ms={out.handoff_ms} "
        f"caller_hears_agent={out.caller_hears_agent} worker states {out.worker_states} "
        f"worker_left_after_hangup_ms={out.worker_left_after_hangup_ms}"
    )
    assert out.status_code == 200
    assert out.dead_air_ms is not None and out.dead_air_ms <= 1000
    assert out.handoff_ms is not None and out.handoff_ms <= 1000
    assert out.caller_hears_agent and out.agent_hears_caller
    # handed over: the worker stays, unpublished and monitoring, until the caller hangs up
    assert out.worker_monitoring_at is not None, out.worker_states
    assert out.worker_left_after_hangup_ms is not None
    assert 0 <= out.worker_left_after_hangup_ms <= 1000
    assert image_worker.proc.poll() is None


def test_image_worker_drains_on_sigterm(image_worker: WorkerProcess) -> None:
    t0 = time.monotonic()
    image_worker.proc.send_signal(signal.SIGTERM)
    code = image_worker.proc.wait(60)
    took = time.monotonic() - t0
    print(f"image worker: SIGTERM -> exit {code} in {took:.1f} s (no call held)")
    assert code == 0
    assert "draining worker" in image_worker.messages()
    # the drain done, the process leaves before livekit-agents' shutdown
    # (worker/server.py HoldServer)
    assert "drained: no call left, leaving" in image_worker.messages()
    assert "shutting down worker" not in image_worker.messages()
