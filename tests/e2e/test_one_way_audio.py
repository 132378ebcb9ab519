"""One-way audio on the real stack, with real faults.

The caller's RTP is really dropped (an nftables rule in the test's network
namespace, tests/e2e/support/faults.py) or really carries zeros or line noise.
The worker's verdicts are read where people look: its participant attributes
(media.inbound / media.outbound), the data messages on its topic, and its
Prometheus metrics. Each test prints the detection latency it measured; the
module prints the false-alarm count of the whole set.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from livekit import api, rtc

from harness.agents import HumanAgent, room_token
from harness.analysis import hold_span, read_wav, write_line_noise_wav, write_silence_wav
from harness.rooms import find_call_room
from harness.scenario import start_caller
from harness.stack import start_worker, stop_worker
from tests.e2e.support.faults import RtpBlock, free_rtp_port
from worker.logmask import mask_text

pytestmark = pytest.mark.e2e
METRICS_PORT = 9478
FALSE_ALARMS: list[str] = []


@pytest.fixture(scope="module")
def worker(lk_env, tmp_path_factory):
    w = start_worker(
        lk_env,
        tmp_path_factory.mktemp("worker-media"),
        HOLD_MONITOR_AFTER_HANDOFF="true",
        HOLD_METRICS_PORT=str(METRICS_PORT),
    )
    yield w
    stop_worker(w)
    print(f"\none-way audio set: {len(FALSE_ALARMS)} false alarm(s) {FALSE_ALARMS}")
    assert not FALSE_ALARMS


@dataclass
class Verdicts:
    """The worker's media attributes over time, polled every 100 ms."""

    seen: list[tuple[float, str, str, str]] = field(default_factory=list)  # t, in, out, state

    def first(self, inbound: str, after: float = 0.0) -> float | None:
        return next((t for t, i, _o, _s in self.seen if i == inbound and t >= after), None)

    def states(self) -> list[str]:
        return [s for _t, _i, _o, s in self.seen]

    def bad_between(self, t0: float, t1: float) -> list[str]:
        return [
            f"{i}/{o}"
            for t, i, o, _s in self.seen
            if t0 <= t < t1 and (i not in ("ok", "pending") or o == "not_subscribed")
        ]


async def watch(lk: api.LiveKitAPI, room: str, v: Verdicts) -> None:
    last = None
    while True:
        try:
            parts = (
                await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            ).participants
        except api.TwirpError:
            parts = []
        for p in parts:
            if p.kind == api.ParticipantInfo.Kind.AGENT:
                a = p.attributes
                now = (a.get("media.inbound", ""), a.get("media.outbound", ""), a.get("hold.state"))
                if now != last and now[0]:
                    last = now
                    v.seen.append((time.time(), *now))
        await asyncio.sleep(0.1)


class DataListener:
    """A plain participant (ignored by the worker) reading the worker's data topic."""

    def __init__(self, env: dict[str, str], room: str) -> None:
        self.env, self.room_name = env, room
        self.room = rtc.Room()
        self.messages: list[tuple[float, dict]] = []

    async def join(self) -> None:
        def on_data(pkt: rtc.DataPacket) -> None:
            if pkt.topic == "hold.media":
                self.messages.append((time.time(), json.loads(pkt.data)))

        self.room.on("data_received", on_data)
        token = room_token(
            self.env["LIVEKIT_API_KEY"],
            self.env["LIVEKIT_API_SECRET"],
            self.room_name,
            "webapp-observer",
        )
        await self.room.connect(self.env["LIVEKIT_URL"], token)

    async def leave(self) -> None:
        await self.room.disconnect()


def answered_at(res: Path) -> float:
    return json.loads(res.read_text())["events"]["answered"]["wall"]


def metric(name: str, label: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).read()
    for line in body.decode().splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_rtp_never_arrives(lk_env, lkapi, worker, work_dir):
    port = free_rtp_port()
    number = "+15551230101"
    with RtpBlock(src_port=port) as block:
        proc, _rec, res = await start_caller(
            lk_env,
            work_dir,
            number,
            [697.0, 1336.0],
            duration=9.0,
            tag="never",
            extra=("--rtp-port", str(port)),
        )
        room = await find_call_room(lkapi, number)
        listener = DataListener(lk_env, room)
        await listener.join()
        v = Verdicts()
        watcher = asyncio.create_task(watch(lkapi, room, v))
        await asyncio.wait_for(proc.wait(), 40)
        watcher.cancel()
        await listener.leave()
        dropped = block.dropped()
    t_answer = answered_at(res)
    flagged = v.first("missing")
    assert flagged is not None, f"never flagged: {v.seen}"
    latency = flagged - t_answer
    msgs = [m for _t, m in listener.messages if m.get("media.verdict") == "no_inbound_media"]
    print(
        f"\nRTP never arrives ({dropped} packets dropped): flagged 'missing' {latency:.2f} s "
        f"after the 200 OK; data message: {bool(msgs)}; "
        f"metric no_inbound_media={metric('hold_media_verdicts_total', 'no_inbound_media')}"
    )
    assert dropped > 0
    assert latency <= 5.0
    assert msgs and msgs[0]["media.inbound"] == "missing" and msgs[0]["room"] == room
    assert metric("hold_media_verdicts_total", 'verdict="no_inbound_media"') >= 1
    lines = [r for r in worker.log_lines() if r.get("room") == mask_text(room)]
    warn = [r for r in lines if "one-way audio: no_inbound_media" in r.get("message", "")]
    assert warn and warn[0].get("sip.callID", "").startswith("SCL_")


async def test_rtp_stops_after_a_good_start(lk_env, lkapi, worker, work_dir):
    port = free_rtp_port()
    number = "+15551230102"
    proc, _rec, res = await start_caller(
        lk_env,
        work_dir,
        number,
        [697.0, 1477.0],
        duration=22.0,
        tag="stops",
        extra=("--rtp-port", str(port)),
    )
    room = await find_call_room(lkapi, number)
    v = Verdicts()
    watcher = asyncio.create_task(watch(lkapi, room, v))
    await asyncio.sleep(10.0)
    block = RtpBlock(src_port=port).start()
    t_block = time.time()
    try:
        await asyncio.wait_for(proc.wait(), 40)
    finally:
        block.stop()
        watcher.cancel()
    flagged = v.first("stopped", after=t_block)
    assert flagged is not None, f"never flagged: {v.seen}"
    FALSE_ALARMS.extend(f"stops:{b}" for b in v.bad_between(0, t_block))
    print(
        f"\nRTP stops 10 s into a good call: flagged 'stopped' {flagged - t_block:.2f} s later; "
        f"verdicts {[(round(t - answered_at(res), 1), i, o) for t, i, o, _s in v.seen]}"
    )
    assert flagged - t_block <= 8.0
    assert v.first("ok") is not None and v.first("ok") < t_block


async def test_silent_caller_with_rtp_flowing_is_never_flagged(lk_env, lkapi, worker, work_dir):
    number = "+15551230103"
    noise = Path(write_line_noise_wav(str(work_dir / "noise.wav"), 10.0, level_dbfs=-60.0))
    proc, _rec, _res = await start_caller(
        lk_env, work_dir, number, [], duration=60.0, tag="silent", send_wav=noise
    )
    room = await find_call_room(lkapi, number)
    v = Verdicts()
    watcher = asyncio.create_task(watch(lkapi, room, v))
    await asyncio.wait_for(proc.wait(), 90)
    watcher.cancel()
    bad = v.bad_between(0, time.time())
    FALSE_ALARMS.extend(f"silent:{b}" for b in bad)
    print(f"\ncaller silent (-60 dBFS line noise) for 60 s: verdicts {[x[1:3] for x in v.seen]}")
    assert v.first("ok") is not None
    assert bad == []


async def test_digital_silence(lk_env, lkapi, worker, work_dir):
    number = "+15551230104"
    zeros = Path(write_silence_wav(str(work_dir / "zeros.wav"), 5.0))
    proc, _rec, res = await start_caller(
        lk_env, work_dir, number, [], duration=14.0, tag="zeros", send_wav=zeros
    )
    room = await find_call_room(lkapi, number)
    v = Verdicts()
    watcher = asyncio.create_task(watch(lkapi, room, v))
    await asyncio.wait_for(proc.wait(), 40)
    watcher.cancel()
    flagged = v.first("silent")
    assert flagged is not None, f"never flagged: {v.seen}"
    latency = flagged - answered_at(res)
    print(f"\ncaller sends exact zeros: flagged 'silent' {latency:.2f} s after the 200 OK")
    assert latency <= 10.0
    assert v.first("missing") is None and v.first("stopped") is None  # packets do flow


async def test_faults_after_handoff_in_monitor_mode(
    lk_env, lkapi, worker, work_dir, hold_reference_8k
):
    """Monitor mode: after the handoff the worker stays, silent, and still
    catches digital silence and a stop; when the agent leaves, hold resumes."""
    port = free_rtp_port()
    number = "+15551230105"
    proc, rec, res = await start_caller(
        lk_env,
        work_dir,
        number,
        [852.0, 1209.0],
        duration=34.0,
        tag="monitor",
        extra=("--rtp-port", str(port), "--mute-after", "8"),
    )
    room = await find_call_room(lkapi, number)
    t_room = time.time()  # about the 200 OK; only used to schedule the faults
    v = Verdicts()
    watcher = asyncio.create_task(watch(lkapi, room, v))
    agent = HumanAgent(
        lk_env["LIVEKIT_URL"],
        lk_env["LIVEKIT_API_KEY"],
        lk_env["LIVEKIT_API_SECRET"],
        room,
        "agent-monitor",
        1700.0,
    )
    block: RtpBlock | None = None
    try:
        await asyncio.sleep(3.0)
        await agent.join()
        await agent.speak()
        for _ in range(60):
            if v.states() and v.states()[-1] == "monitoring":
                break
            await asyncio.sleep(0.1)
        assert v.states()[-1] == "monitoring", v.seen
        # zeros from answer + 8 s (the caller's --mute-after); then the RTP stops
        await asyncio.sleep(max(0.0, t_room + 19.0 - time.time()))
        block = RtpBlock(src_port=port).start()
        t_block = time.time()
        await asyncio.sleep(9.0)
        await agent.leave()
        t_left = time.time()
        await asyncio.wait_for(proc.wait(), 40)
    finally:
        if block is not None:
            block.stop()
        watcher.cancel()
    t_answer = answered_at(res)
    # when the caller really began sending zeros (its own mark, not answer + 8:
    # a loaded machine can start the zeros late)
    t_mute = json.loads(res.read_text())["events"]["muted"]["wall"]
    silent = v.first("silent", after=t_mute)
    stopped = v.first("stopped", after=t_block)
    print(
        f"\nmonitor mode: zeros from {round(t_mute - t_answer, 2)} s after the answer; "
        f"'silent' {silent and round(silent - t_mute, 2)} s after the zeros began,"
        f" 'stopped' {stopped and round(stopped - t_block, 2)} s after the block;"
        f" states {[(round(t - t_answer, 1), i, s) for t, i, _o, s in v.seen]}"
    )
    FALSE_ALARMS.extend(f"monitor:{b}" for b in v.bad_between(0, t_mute))
    assert silent is not None and silent - t_mute <= 10.0
    assert stopped is not None and stopped - t_block <= 8.0
    # every agent left: the worker holds the caller again, and the caller hears it
    resumed = next((t for t, _i, _o, s in v.seen if s == "holding" and t > t_left - 1), None)
    assert resumed is not None, v.seen
    audio, rate = read_wav(str(rec))
    started = json.loads(res.read_text())["recording"]["started"]
    t0 = started["wall"] if isinstance(started, dict) else float(started)
    after = audio[int((t_left + 1.0 - t0) * rate) :].astype("float32")
    span = hold_span(after, hold_reference_8k, rate)
    print(f"hold audio after the agent left: {span}")
    assert span is not None and span[1] - span[0] > 1.0
