"""Last in the e2e run: every worker log of the run holds no secret and no unmasked number.

Scans the logs of all workers this pytest process started (ours, and the
image's), after the calls of every other test: the API secret, any JWT (an
access token), E.164 numbers (callers' and stores') outside their masked
form, and, independently of the masking code, the digits of every caller
number the run actually dialled with (support/dialled.py records them), in any
formatting: separators between the digits, with or without the country code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.sip import dialled
from harness.stack import ARCHIVE, STARTED, archive

pytestmark = pytest.mark.e2e

REPO_RUN = Path(__file__).resolve().parents[2] / ".devstack" / "run"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
# A +number anywhere in a text (searches the logs for numbers left unmasked).
NUMBER_IN_TEXT = re.compile(r"\+\d{7,15}")
# What a process that died of a native fault leaves in its log: Python's fault
# handler (worker/__main__.py enables it), glibc's heap checks, a Rust panic
# that cannot unwind. Anchored at a line's start: the worker's own log lines
# are JSON objects and never match.
NATIVE_FAULT = re.compile(
    r"^(?:Fatal Python error: .*|(?:malloc|free|realloc|munmap_chunk|malloc_consolidate)"
    r"\(\): .*|double free or corruption.*|corrupted size vs\. prev_size.*"
    r"|.*panic in a function that cannot unwind.*)$",
    re.M,
)


def test_no_secret_or_unmasked_number_in_any_worker_log(lk_env):
    for w in STARTED:
        archive(w)  # still running ones too
    logs = list(ARCHIVE)
    secret = lk_env["LIVEKIT_API_SECRET"]
    lines = sum(t.count("\n") for _, t in logs)
    callers = sorted(dialled.recorded())
    found = {
        "api secret": [p for p, t in logs if secret in t],
        "jwt": [p for p, t in logs if JWT.search(t)],
        "unmasked number": [
            f"{p}: {NUMBER_IN_TEXT.findall(t)[:3]}" for p, t in logs if NUMBER_IN_TEXT.search(t)
        ],
        "caller number": [
            f"{p}: {n} as {hits}" for p, t in logs for n in callers if (hits := dialled.find(n, t))
        ],
    }
    print(
        f"\nscanned {len(logs)} worker logs, {lines} lines, for {len(callers)} caller numbers: "
        f"{found}"
    )
    assert logs, "the e2e run started workers"
    assert callers, f"the e2e run dialled calls, and recorded their caller numbers ({dialled.ENV})"
    assert found == {"api secret": [], "jwt": [], "unmasked number": [], "caller number": []}


def test_no_worker_died_of_a_native_fault():
    """Under the thread executor a fault in the SDK's native code ends every
    call of the process at once (RELIABILITY.md); one in the run is a failure
    of its own, named here with what the process's threads were doing, rather
    than only the timeouts of the tests whose calls it ended."""
    for w in STARTED:
        archive(w)
    faults = {}
    for path, text in ARCHIVE:
        m = NATIVE_FAULT.search(text)
        if m:
            faults[path] = text[m.start() : m.start() + 4000]
    print(f"\nnative faults in {len(ARCHIVE)} worker logs: {len(faults)}")
    for path, tail in faults.items():
        print(f"--- {path}\n{tail}")
    assert faults == {}, list(faults)


def test_guardian_redispatched_only_the_killed_worker(lk_env):
    """Every call of the run ended with a participant_left webhook for its hold
    worker; the guardian must re-dispatch none of them, except the one call
    whose worker test_reliability_workers.py kills (if it ran)."""
    from datetime import datetime

    from harness import stack as stackmod

    log = REPO_RUN / "guardian.log"
    assert log.exists(), "devstack/up.sh starts the guardian"
    since = stackmod.SESSION_STARTED
    lines = []
    for ln in log.read_text(errors="replace").splitlines():
        try:
            at = datetime.strptime(ln[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if at >= since:
            lines.append(ln)
    redispatched = [ln for ln in lines if "re-dispatched the hold agent" in ln]
    failed = [ln for ln in lines if "re-dispatch failed" in ln]
    print(f"\nguardian this run: {len(lines)} lines, {len(redispatched)} re-dispatches")
    assert len(redispatched) <= 1 and failed == []
