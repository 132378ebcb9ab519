"""Skipping is for a developer's machine; under CI a missing prerequisite fails.

A CI run (`CI=true`, as GitHub Actions, GitLab CI and most others set it)
exists to prove things; a test that skips there proves nothing while the
run stays green. `unavailable()` is what a test calls when something it
needs is missing: outside CI it skips with the reason, under CI it fails
with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import pytest

_TRUE = {"true", "1", "yes"}


def in_ci(env: Mapping[str, str] | None = None) -> bool:
    """CI=true (or 1, yes; any case) in the environment."""
    env = os.environ if env is None else env
    return env.get("CI", "").strip().lower() in _TRUE


def when_unavailable(env: Mapping[str, str] | None = None) -> Literal["skip", "fail"]:
    return "fail" if in_ci(env) else "skip"


def unavailable(reason: str, env: Mapping[str, str] | None = None) -> None:
    """Skip outside CI, fail under CI=true; never returns."""
    if when_unavailable(env) == "fail":
        pytest.fail(f"{reason} (CI=true: a CI run must not skip this test)", pytrace=False)
    pytest.skip(reason)
