"""Last in the e2e run: every worker log of the run holds no secret and no unmasked number.

Scans the logs of all workers this pytest process started (ours, and the
image's), after the calls of every other test: the API secret, any JWT (an access token), the trunk
password, and E.164 numbers (callers' and stores') outside their masked form.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.support.workerproc import ARCHIVE, STARTED, archive

pytestmark = pytest.mark.e2e

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
E164 = re.compile(r"\+\d{7,15}")


def test_no_secret_or_unmasked_number_in_any_worker_log(lk_env):
    for w in STARTED:
        archive(w)  # still running ones too
    logs = list(ARCHIVE)
    secret = lk_env["LIVEKIT_API_SECRET"]
    lines = sum(t.count("\n") for _, t in logs)
    found = {
        "api secret": [p for p, t in logs if secret in t],
        "jwt": [p for p, t in logs if JWT.search(t)],
        "unmasked number": [f"{p}: {E164.findall(t)[:3]}" for p, t in logs if E164.search(t)],
    }
    print(f"\nscanned {len(logs)} worker logs, {lines} lines: {found}")
    assert len(logs) >= 5, "the e2e run should have started several workers"
    assert found == {"api secret": [], "jwt": [], "unmasked number": []}
