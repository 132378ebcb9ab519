"""One real held call, end to end, and what the caller and the agent heard.

Used by the e2e tests and by `make demo` (harness/demo.py). The carrier stand-in (pjsua2) dials
livekit-sip; the dispatch rule makes a room and dispatches the hold worker;
after a while a livekit.rtc "human agent" joins and speaks. Afterwards the
recordings are analysed:

- hold audio in the caller's recording is found by normalised correlation
  against the hold asset (resampled to 8 kHz), window by window
  (analysis.hold_span);
- the agent's and the caller's signals are tones, found with Goertzel
  (analysis.tone_presence).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api

from harness.agents import HumanAgent
from harness.analysis import (
    WINDOW_S,
    CallerAudio,
    hold_span,
    notch,
    read_wav,
    tone_presence,
    write_tone_wav,
)
from harness.rooms import (
    await_monitoring,
    find_call_room,
    held_by_worker,
    worker_gone_at,
    worker_info,
)
from harness.sip import dialled
from harness.stack import REPO
from worker.protocol import ATTR_MEDIA_IN, ATTR_MEDIA_OUT
from worker.registry import call_id

TONE_SHARE = 0.2  # share of a window's energy at the tone that counts as "heard"


@dataclass
class CallOutcome:
    room: str = ""
    status_code: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    dead_air_ms: float | None = None
    handoff_ms: float | None = None
    hold_gone_wall: float | None = None
    agent_first_audio_wall: float | None = None
    caller_hears_agent: bool = False
    agent_hears_caller: bool = False
    caller_hears_other_agents: list[float] = field(default_factory=list)
    agent_hears_other_callers: list[float] = field(default_factory=list)
    # After the handoff the worker stays in the room, its hold track
    # unpublished, `hold.state` monitoring (HOLD_LEAVE_AFTER_HANDOFF=false, the default) ...
    worker_monitoring_at: float | None = None
    worker_states: list[str] = field(default_factory=list)  # hold.state values seen after
    # ... and leaves when the caller hangs up: ms from the caller's hangup to
    # the worker gone from the room (None: still there 5 s after the hangup).
    worker_left_after_hangup_ms: float | None = None
    recording: np.ndarray | None = None
    record_rate: int = 8000
    agent_heard: np.ndarray | None = None  # 48 kHz, what the agent heard from the caller
    rec_path: Path | None = None
    media_verdicts: list[tuple[str, str]] = field(default_factory=list)
    agent_hz: float = 0.0
    caller_freqs: tuple[float, ...] = ()

    def note(self, what: str, wall: float | None = None) -> None:
        self.timeline.append((wall if wall is not None else time.time(), what))


async def watch_media(lk: api.LiveKitAPI, out: CallOutcome) -> None:
    """Note in the timeline each media verdict the worker publishes."""
    seen = ("", "")
    while True:
        w = await worker_info(lk, out.room)
        if w is not None:
            now = (w.attributes.get(ATTR_MEDIA_IN, ""), w.attributes.get(ATTR_MEDIA_OUT, ""))
            if now != seen and now[0]:
                seen = now
                out.media_verdicts.append(now)
                out.note(f"worker reports media inbound={now[0]} outbound={now[1]}")
        await asyncio.sleep(0.1)


async def start_caller(
    env: dict[str, str],
    work: Path,
    number: str,
    freqs: list[float],
    duration: float,
    hangup_after: float | None = None,
    target: str | None = None,
    tag: str = "caller",
    answer_timeout: float = 15.0,
    send_wav: Path | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[asyncio.subprocess.Process, Path, Path]:
    wav = send_wav or Path(write_tone_wav(str(work / f"{tag}-send.wav"), freqs, seconds=2.0))
    rec, res = work / f"{tag}-heard.wav", work / f"{tag}-result.json"
    args = [
        sys.executable,
        "-m",
        "harness.sip.caller",
        "--target",
        target or env["DEV_SIP_TARGET"],
        "--from",
        number,
        "--send-wav",
        str(wav),
        "--record",
        str(rec),
        "--duration",
        str(duration),
        "--result",
        str(res),
        "--answer-timeout",
        str(answer_timeout),
        *extra,
    ]
    if hangup_after is not None:
        args += ["--hangup-after", str(hangup_after)]
    dialled.record(number)  # sip_caller records it too; this even if it fails to start
    proc = await asyncio.create_subprocess_exec(*args, cwd=REPO)
    return proc, rec, res


async def held_call(
    env: dict[str, str],
    lk: api.LiveKitAPI,
    work: Path,
    hold_ref_8k: np.ndarray,
    *,
    number: str = "+15551230001",
    caller_freqs: tuple[float, ...] = (697.0, 1209.0),
    agent_hz: float = 1700.0,  # not a note or harmonic of the hold music
    agent_after_s: float = 3.0,
    duration_s: float = 8.0,
    tag: str = "call",
    analyse: bool = True,
    agent_delay_s: float = 0.0,
) -> CallOutcome:
    out = CallOutcome()
    url, key, secret = env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
    proc, rec_path, res_path = await start_caller(
        env, work, number, list(caller_freqs), duration_s, tag=tag
    )
    out.note("caller dials the trunk")
    agent: HumanAgent | None = None
    gone_at: float | None = None
    watch_gone: asyncio.Task[float | None] | None = None
    try:
        out.room = await find_call_room(lk, number)
        out.note(f"room {out.room} has the SIP participant")
        watcher = asyncio.create_task(watch_media(lk, out))
        await asyncio.sleep(agent_after_s + agent_delay_s)
        watcher.cancel()
        agent = HumanAgent(url, key, secret, out.room, f"agent-{tag}", agent_hz)
        await agent.join()
        out.note("human agent joined")
        await agent.speak()
        out.note("human agent publishes audio")
        # after the fade and the settle window (3 s) the worker stays in the
        # room, silent: hold track unpublished, hold.state monitoring
        out.worker_monitoring_at = await await_monitoring(lk, out.room, 8.0, out.worker_states)
        if out.worker_monitoring_at:
            out.note("hold worker monitoring (in the room, unpublished)", out.worker_monitoring_at)
        # the caller hangs up at the end of duration_s: the worker's job ends
        watch_gone = asyncio.create_task(worker_gone_at(lk, out.room, duration_s + 35))
        await asyncio.wait_for(proc.wait(), duration_s + 30)
        try:
            gone_at = await asyncio.wait_for(watch_gone, 5.0)
        except TimeoutError:
            gone_at = None
        if gone_at:
            out.note("hold worker has left the room", gone_at)
    finally:
        if watch_gone is not None:
            watch_gone.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if agent is not None:
            await agent.leave()

    out.result = json.loads(res_path.read_text())
    out.status_code = int(out.result.get("status_code") or 0)
    ev = out.result.get("events", {})
    hung_up = (ev.get("hangup") or ev.get("disconnected") or {}).get("wall")
    if gone_at is not None and hung_up:
        out.worker_left_after_hangup_ms = (gone_at - float(hung_up)) * 1000
    out.rec_path = rec_path
    out.agent_hz, out.caller_freqs = agent_hz, caller_freqs
    if agent is not None:
        out.agent_first_audio_wall = agent.first_audio_at
        out.agent_heard = agent.heard_audio()
    if analyse:
        analyse_call(out, hold_ref_8k)
    return out


def analyse_call(out: CallOutcome, hold_ref_8k: np.ndarray) -> CallOutcome:
    """What the caller and the agent heard. CPU-heavy: run it after the calls,
    never while other calls are live in the same event loop."""
    ev = out.result["events"]
    if ev.get("answered"):
        out.note("caller gets 200 OK", ev["answered"]["wall"])
    if out.rec_path is None or not out.rec_path.exists():
        return out
    rec, rate = read_wav(str(out.rec_path))
    out.recording, out.record_rate = rec.astype(np.float32), rate
    started = out.result["recording"]["started"]
    rec_t0 = started["wall"] if isinstance(started, dict) else float(started)
    offset = float(out.result["recording"]["offset_from_answer_s"])
    agent_hz = out.agent_hz

    span = hold_span(
        notch(out.recording, rate, [agent_hz]), notch(hold_ref_8k, rate, [agent_hz]), rate
    )
    if span is not None:
        onset, end = span
        out.dead_air_ms = (offset + onset) * 1000
        out.note("caller hears hold audio", rec_t0 + onset)
        out.hold_gone_wall = rec_t0 + end
        out.note("hold audio gone at the caller", out.hold_gone_wall)

    if out.agent_heard is not None:
        agent_share = tone_presence(rec, rate, agent_hz, window_s=WINDOW_S)
        heard = np.flatnonzero(agent_share >= TONE_SHARE)
        out.caller_hears_agent = heard.size >= 5
        if heard.size:
            out.note("caller hears the agent", rec_t0 + heard[0] * WINDOW_S)
        if out.agent_first_audio_wall and out.hold_gone_wall:
            out.handoff_ms = (out.hold_gone_wall - out.agent_first_audio_wall) * 1000
        if out.agent_heard.size:
            shares = [
                tone_presence(out.agent_heard, 48_000, f, window_s=WINDOW_S)
                for f in out.caller_freqs
            ]
            both = np.minimum.reduce(shares)
            out.agent_hears_caller = int(np.sum(both >= TONE_SHARE / 2)) >= 5
    out.timeline.sort()
    return out


def format_timeline(out: CallOutcome) -> str:
    if not out.timeline:
        return ""
    t0 = out.timeline[0][0]
    return "\n".join(f"  +{(t - t0) * 1000:7.0f} ms  {what}" for t, what in out.timeline)


@dataclass
class PlacedCall:
    """A pjsua2 caller whose call a hold worker holds: its process, its
    result file, and the call's room and registry id."""

    number: str
    proc: asyncio.subprocess.Process
    result: Path
    room: str = ""
    cid: str = ""

    async def done(self, timeout: float = 60.0) -> CallerAudio:
        """The caller's recording once it hung up."""
        await asyncio.wait_for(self.proc.wait(), timeout)
        return CallerAudio.load(self.result)

    def answered_at(self) -> float:
        return float(json.loads(self.result.read_text())["events"]["answered"]["wall"])

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def place_call(
    env: dict[str, str],
    lk: api.LiveKitAPI,
    work: Path,
    number: str,
    *,
    freqs: list[float],
    duration: float,
    target: str,
    tag: str,
    extra: tuple[str, ...] = (),
) -> PlacedCall:
    """Dial `target` from `number` and return once a hold worker holds the call."""
    proc, _rec, res = await start_caller(
        env, work, number, freqs, duration=duration, target=target, tag=tag, extra=extra
    )
    c = PlacedCall(number, proc, res)
    try:
        c.room = await held_by_worker(lk, number, timeout=15.0)
    except BaseException:
        await c.stop()
        raise
    c.cid = call_id(c.room)
    return c
