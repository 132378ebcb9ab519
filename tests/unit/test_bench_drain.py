"""bench/run.py's record of a worker that did not exit after its drain: who
was left in the drained rooms, its processes, and every thread's stack from
its log; and the table's cell for it. A real process stands in for the hung
worker; the LiveKit listing is a fake (no server in unit tests)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from livekit import api

from bench import procstat
from bench import run as bench_run
from harness.stack import WorkerProcess
from worker.protocol import SIP_PHONE_NUMBER

HUNG = """
import faulthandler, signal, subprocess, sys, threading, time
# a helper process without a SIGUSR1 handler, as livekit-agents' forkserver is
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
faulthandler.register(signal.SIGUSR1, all_threads=True)
def a_job_that_never_ends():
    time.sleep(60)
threading.Thread(target=a_job_that_never_ends, daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


class FakeRooms:
    def __init__(self, rooms: dict[str, list[api.ParticipantInfo]]) -> None:
        self.rooms = rooms

    async def list_participants(self, req: api.ListParticipantsRequest) -> Any:
        return SimpleNamespace(participants=self.rooms.get(req.room, []))


def hung_worker(tmp_path: Path) -> WorkerProcess:
    log = tmp_path / "worker.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-c", HUNG], stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    w = WorkerProcess(proc=proc, log_path=log)
    deadline = time.monotonic() + 30
    while "ready" not in w.text() and time.monotonic() < deadline:
        time.sleep(0.05)
    return w


def call(room: str) -> bench_run.Call:
    return bench_run.Call("+15550100", None, Path("r"), Path("w"), room=room)  # type: ignore[arg-type]


def report(w: WorkerProcess, rooms: dict[str, list[api.ParticipantInfo]]) -> dict[str, Any]:
    lk = SimpleNamespace(room=FakeRooms(rooms))
    calls = [call(r) for r in rooms]
    return asyncio.run(bench_run.why_not_exited(lk, w, calls))  # type: ignore[arg-type]


AGENT = api.ParticipantInfo(identity="hold-agent", kind=api.ParticipantInfo.Kind.AGENT)
CALLER = api.ParticipantInfo(
    identity="sip_caller",
    kind=api.ParticipantInfo.Kind.SIP,
    attributes={SIP_PHONE_NUMBER: "+15550100"},
)


def test_a_hung_worker_is_described_and_left_running(tmp_path: Path) -> None:
    w = hung_worker(tmp_path)
    try:
        r = report(w, {"room-a": [AGENT], "room-b": []})
        assert w.proc.poll() is None  # asked, not killed
        assert len(r["processes"]) == 2, r["processes"]
        helper = next(pid for pid in r["processes"] if pid != w.proc.pid)
        assert procstat.describe(helper).startswith("S "), "SIGUSR1 ended a helper"
    finally:
        os.killpg(w.proc.pid, signal.SIGKILL)
        w.proc.wait()
    assert r["callers_left"] is True
    assert r["rooms"] == {"room-a": ["hold-agent (AGENT)"], "room-b": []}
    assert r["processes"][w.proc.pid].startswith("S ")  # asleep in the hang
    assert any("a_job_that_never_ends" in line for line in r["log_tail"]), r["log_tail"]


def test_a_caller_still_in_a_room_is_not_taken_for_the_workers_hang(tmp_path: Path) -> None:
    w = hung_worker(tmp_path)
    try:
        r = report(w, {"room-a": [AGENT], "room-b": [AGENT, CALLER]})
    finally:
        os.killpg(w.proc.pid, signal.SIGKILL)
        w.proc.wait()
    assert r["callers_left"] is False
    assert r["rooms"]["room-b"] == ["hold-agent (AGENT)", "sip_caller (SIP)"]


def test_the_table_says_a_worker_did_not_exit() -> None:
    ours = {"drain_sigterm_to_exit_s": 2.25, "drain_hangup_to_exit_s": 1.25}
    base = {
        "drain_sigterm_to_exit_s": None,
        "drain_hangup_to_exit_s": None,
        "drain_not_exited_after_s": 60.0,
    }
    table = bench_run.markdown_table({"ours": {"2": ours}, "baseline": {"2": base}}, [2])
    assert "| 2 | SIGTERM -> worker exit, calls on hold (s) | 2.25 | not within 60 s | - |" in table
    assert "| 2 | last hangup -> worker exit (s) | 1.25 | not within 60 s | - |" in table
