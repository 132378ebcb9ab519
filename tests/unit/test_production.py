"""Production start-up: mounted secrets, checks that refuse or warn, the health probe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_settings import _clean_env, run_cli  # noqa: F401 (autouse fixture)
from worker.production import SecretsError, check_production, load_secrets_dir, summary
from worker.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def write_secret(d: Path, **values: str) -> Path:
    d.mkdir(exist_ok=True)
    for k, v in values.items():
        (d / k).write_text(v)
    return d


def test_secrets_dir_fills_only_what_env_lacks(tmp_path: Path) -> None:
    d = write_secret(
        tmp_path / "lk",
        LIVEKIT_URL="wss://p.livekit.cloud\n",
        LIVEKIT_API_KEY="APIfromfile",
        LIVEKIT_API_SECRET="from-file\n",
    )
    env = {"LIVEKIT_API_KEY": "APIfromenv"}
    taken = load_secrets_dir(d, env)
    assert taken == ["LIVEKIT_URL", "LIVEKIT_API_SECRET"]
    # the trailing newline kubectl keeps is stripped; env wins over the file
    assert env == {
        "LIVEKIT_URL": "wss://p.livekit.cloud",
        "LIVEKIT_API_KEY": "APIfromenv",
        "LIVEKIT_API_SECRET": "from-file",
    }


def test_secrets_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="not a directory"):
        load_secrets_dir(tmp_path / "missing", {})
    d = write_secret(tmp_path / "lk", LIVEKIT_API_SECRET="  \n")
    with pytest.raises(SecretsError, match="LIVEKIT_API_SECRET is empty"):
        load_secrets_dir(d, {})


def test_checks_pass_for_a_cloud_deployment() -> None:
    s = load_settings(http_host="0.0.0.0", metrics_port=9100)
    env = {"LIVEKIT_URL": "wss://p.livekit.cloud", "LIVEKIT_API_SECRET": "x" * 40}
    found = check_production(s, env, in_container=True)
    assert found.errors == [] and found.warnings == []


def test_checks_refuse_dev_secret_and_unreachable_ports() -> None:
    env = {"LIVEKIT_URL": "ws://livekit.store.example:7880", "LIVEKIT_API_SECRET": "secret"}
    found = check_production(load_settings(http_port=0), env, in_container=False)
    assert any("development secret" in e for e in found.errors)
    assert [e.split(":")[0] for e in found.errors] == ["LIVEKIT_API_SECRET"]
    assert any(w.startswith("HOLD_HTTP_PORT") for w in found.warnings)
    assert any("unencrypted" in w for w in found.warnings)
    clash = check_production(load_settings(metrics_port=8081), {}, in_container=False)
    assert [e.split(":")[0] for e in clash.errors] == ["HOLD_METRICS_PORT"]


def test_checks_local_stack_is_fine_and_container_loopback_warns() -> None:
    env = {"LIVEKIT_URL": "ws://127.0.0.1:7880", "LIVEKIT_API_SECRET": "secret"}
    assert check_production(load_settings(), env, in_container=False).errors == []
    found = check_production(load_settings(), env, in_container=True)
    assert found.errors == [] and found.warnings[0].startswith("HOLD_HTTP_HOST")


def test_summary_has_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_API_SECRET", "s3cr3t-value")
    line = summary(load_settings(drain_timeout_s=600))
    assert "drain_timeout_s=600" in line and "max_calls=20" in line
    assert "s3cr3t" not in line and "\n" not in line


def test_cli_start_refuses_dev_secret_against_remote_server() -> None:
    p = run_cli(
        {
            "LIVEKIT_URL": "wss://p.livekit.cloud",
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "devsecret-loopback-only-not-a-real-secret",
            "HOLD_HTTP_HOST": "0.0.0.0",  # no container warning (this machine may be one)
        },
        "start",
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        "config error: LIVEKIT_API_SECRET: a development secret against a non-local "
        "server (p.livekit.cloud); use the project's key pair"
    ]


def test_cli_secrets_dir_missing_is_one_line(tmp_path: Path) -> None:
    p = run_cli({"HOLD_SECRETS_DIR": str(tmp_path / "nope")}, "start")
    assert p.returncode == 2
    want = f"config error: HOLD_SECRETS_DIR: {tmp_path / 'nope'} is not a directory"
    assert p.stderr.strip() == want


def test_healthcheck_fails_when_nothing_listens() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "worker.healthcheck"],
        cwd=REPO,
        env={**os.environ, "HOLD_HTTP_PORT": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 1 and "unreachable" in p.stdout
