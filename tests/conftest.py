"""Hooks for the whole suite."""

from __future__ import annotations

import os
import sys

import pytest

_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Once pytest has reported everything, leave without the interpreter's
    finalization when the LiveKit SDK's native library is loaded: its threads
    may still call into Python while it finalizes and abort the process
    ("panic in a function that cannot unwind", exit 134 after every test had
    passed, seen on the stack). The worker leaves the same way
    (worker/__main__.py)."""
    if _exit_status and "livekit.rtc._ffi_client" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])
