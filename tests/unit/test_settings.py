"""Settings: defaults, validation, one-line errors naming the variable; the CLI exits 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from worker.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in list(os.environ):
        if k.startswith("HOLD_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults() -> None:
    s = load_settings()
    assert s.agent_name == "hold-agent"
    assert s.fade_ms == 400 and s.chunk_ms == 500 and s.max_wait_s == 0
    assert s.audio.name == "hold-default.flac"
    assert s.agent_rule.identity_prefix == "agent-"
    assert (s.agent_rule.role_attribute, s.agent_rule.role_value) == ("role", "agent")


def test_env_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HOLD_AGENT_NAME=store-hold\nHOLD_FADE_MS=250\n")
    monkeypatch.setenv("HOLD_FADE_MS", "300")  # the environment wins over .env
    s = load_settings()
    assert s.agent_name == "store-hold" and s.fade_ms == 300


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("HOLD_FADE_MS", "-1", "HOLD_FADE_MS"),
        ("HOLD_FADE_MS", "soon", "HOLD_FADE_MS"),
        ("HOLD_CHUNK_MS", "25", "multiple of 10"),
        ("HOLD_LEVEL_DBFS", "3", "HOLD_LEVEL_DBFS"),
        ("HOLD_MAX_WAIT_ACTION", "voicemail", "HOLD_MAX_WAIT_ACTION"),
        ("HOLD_TRANSFER_TARGET", "+15550100", "tel: or sip:"),
        ("HOLD_AGENT_ROLE_ATTRIBUTE", "agent", "key=value"),
        ("HOLD_EXECUTOR", "fork", "HOLD_EXECUTOR"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    msg = str(e.value)
    assert needle in msg and var in msg and "\n" not in msg


def test_transfer_needs_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOLD_MAX_WAIT_S", "60")
    monkeypatch.setenv("HOLD_MAX_WAIT_ACTION", "transfer")
    with pytest.raises(SettingsError, match="HOLD_TRANSFER_TARGET"):
        load_settings()
    monkeypatch.setenv("HOLD_TRANSFER_TARGET", "sip:desk@pbx.example")
    assert load_settings().transfer_target == "sip:desk@pbx.example"


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HOLD_", "LIVEKIT_"))}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr  # no traceback
    return lines[0]


def test_cli_bad_setting_exits_2_with_one_line() -> None:
    line = one_line_error(run_cli({"HOLD_FADE_MS": "-5"}, "start"))
    assert line.startswith("config error: HOLD_FADE_MS")


def test_cli_missing_hold_file(tmp_path: Path) -> None:
    line = one_line_error(run_cli({"HOLD_AUDIO": str(tmp_path / "gone.mp3")}, "start"))
    assert "HOLD_AUDIO" in line and "not found" in line


def test_cli_not_audio() -> None:
    line = one_line_error(run_cli({"HOLD_AUDIO": str(REPO / "pyproject.toml")}, "start"))
    assert "HOLD_AUDIO" in line and "not a readable audio file" in line


def test_cli_missing_livekit_url_and_no_secret_echo() -> None:
    line = one_line_error(run_cli({"LIVEKIT_API_SECRET": "s3cr3t-value"}, "start"))
    assert "LIVEKIT_URL" in line and "s3cr3t-value" not in line


# A worker's process aborting in native code (RELIABILITY.md: a heap-corruption
# abort in the SDK) must leave each thread's Python stack in its log: under the
# thread executor every held call is a thread of that process.
ABORT_IN_A_CALL = """
import os, threading, time
from worker.__main__ import main
try:
    main(["worker", "provision", "--help"])
except SystemExit:
    pass
def a_held_call():
    time.sleep(30)
threading.Thread(target=a_held_call, daemon=True).start()
time.sleep(0.3)
os.abort()
"""


def test_a_native_abort_leaves_every_threads_python_stack() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HOLD_", "LIVEKIT_"))}
    base.pop("PYTHONFAULTHANDLER", None)
    p = subprocess.run(
        [sys.executable, "-c", ABORT_IN_A_CALL],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == -signal.SIGABRT, p.stderr
    assert "Fatal Python error: Aborted" in p.stderr, p.stderr
    assert "a_held_call" in p.stderr, p.stderr  # the other thread's stack too


# A worker that hangs (a drain that never ends) is asked what it is doing
# with SIGUSR1: every thread's stack in its log, and it goes on running.
STACKS_ON_SIGUSR1 = """
import os, signal, threading, time
from worker.__main__ import enable_fault_stacks
enable_fault_stacks()
def a_hung_drain():
    time.sleep(30)
threading.Thread(target=a_hung_drain, daemon=True).start()
time.sleep(0.3)
os.kill(os.getpid(), signal.SIGUSR1)
time.sleep(0.3)
print("still running")
"""


def test_sigusr1_writes_every_threads_stack_and_the_worker_goes_on() -> None:
    p = subprocess.run(
        [sys.executable, "-c", STACKS_ON_SIGUSR1],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "still running", p.stdout
    assert "a_hung_drain" in p.stderr, p.stderr
