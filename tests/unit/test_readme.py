"""The README stays true to the code: every setting is documented, and the
sections a reader relies on are there (one was lost once in a rewrite)."""

from __future__ import annotations

import re
from pathlib import Path

from worker.lifecycle import State
from worker.settings import ENV_PREFIX, Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()

REQUIRED_SECTIONS = [
    "## The two commands",
    "## How it fits Bird → LiveKit",
    "## Configuration",
    "## Deployment: the container image and many replicas",
    "## Reliability",
    "## Measured figures",
    "## One-way audio: caught while the caller is still on hold",
    "### What the room sees (measured on the local stack)",
    "### livekit-sip's own media timeouts, and what the web app should do",
    "## Layout",
]


def test_every_setting_is_documented() -> None:
    missing = [
        ENV_PREFIX + name.upper()
        for name in Settings.model_fields
        if f"`{ENV_PREFIX}{name.upper()}`" not in README
    ]
    assert not missing, f"settings not in the README: {missing}"


def test_required_sections_are_there() -> None:
    headings = set(re.findall(r"^#{2,3} .*$", README, flags=re.M))
    missing = [h for h in REQUIRED_SECTIONS if not any(x.startswith(h) for x in headings)]
    assert not missing, f"README sections missing: {missing}"


def test_every_call_state_is_documented() -> None:
    missing = [s.value for s in State if s.value not in README]
    assert not missing, f"hold.state values not in the README: {missing}"


def test_every_name_of_the_contract_is_documented() -> None:
    """worker/protocol.py is what the web app and backends read: each of its
    names is in the README."""
    from worker import protocol

    names = {
        k: v
        for k, v in vars(protocol).items()
        if k.isupper() and isinstance(v, str) and not k.startswith("_")
    }
    assert len(names) > 15
    missing = [f"{k}={v}" for k, v in names.items() if f"`{v}" not in README]
    assert not missing, f"contract names not in the README: {missing}"
