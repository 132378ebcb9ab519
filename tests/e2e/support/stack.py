"""Bring the local stack up (idempotent) and provision the dev trunk and rule."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


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


def ensure_stack() -> dict[str, str]:
    """Stack up, and a trunk + dispatch rule of the tests' own: their own
    number and a fresh agent name per run, so neither a `make dev` worker nor
    a worker left over from another run can take the tests' calls."""
    global SESSION_STARTED
    SESSION_STARTED = time.time()
    up = subprocess.run(["bash", "devstack/up.sh"], cwd=REPO, capture_output=True, text=True)
    if up.returncode != 0:
        raise RuntimeError(f"devstack/up.sh failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
    env = stack_env()
    env["HOLD_AGENT_NAME"] = f"hold-e2e-{os.getpid()}-{secrets.token_hex(3)}"
    env["DEV_SIP_TARGET"] = env["DEV_SIP_TARGET"].replace(env["DEV_TRUNK_NUMBER"], E2E_NUMBER)
    env["DEV_TRUNK_NUMBER"] = E2E_NUMBER
    prov = provision(
        env, E2E_TRUNK, E2E_RULE, "--number", E2E_NUMBER, "--header", "X-Store-Id=store.id"
    )
    if prov.returncode != 0:
        raise RuntimeError(f"provision failed: {prov.stderr.strip()}")
    return env


def provision(
    env: dict[str, str], trunk: str, rule: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """`python -m worker provision` of a trunk + rule of the tests' own, for this
    run's agent name, accepting calls from loopback only."""
    return subprocess.run(
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
            env["HOLD_AGENT_NAME"],
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
