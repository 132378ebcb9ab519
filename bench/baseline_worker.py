"""Baseline for the benchmark: the least livekit-agents code that holds a call.

A stock AgentServer (default executor: one process per job; default idle
processes) whose job joins the room, plays the hold file in a loop with
livekit-agents' own BackgroundAudioPlayer (its own track, no AgentSession
needed: ``start(room=...)`` only publishes the track and runs the mixer), and
when a human agent's microphone track arrives (identity ``agent-*``, audio,
subscribed) stops it with a 400 ms fade and leaves, as the hold worker does.
The caller leaving ends the job.

    python -m bench.baseline_worker start      (LIVEKIT_URL/API_KEY/API_SECRET)

Env: BENCH_AGENT_NAME (required), BENCH_HOLD_AUDIO (default
assets/hold-default.flac), BENCH_BASELINE_LOAD: ``default`` keeps
livekit-agents' CPU load function (the whole machine's CPU, unavailable from
70 %), ``off`` (the benchmark's default) reports no load, because on the
benchmark machine the SIP callers load the same CPUs and the default would
refuse the calls being measured.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
from pathlib import Path

from livekit import rtc
from livekit.agents import AgentServer, AutoSubscribe, JobContext, cli
from livekit.agents.voice.background_audio import AudioConfig, BackgroundAudioPlayer

REPO = Path(__file__).resolve().parents[1]

# Every thread's Python stack in the log on SIGUSR1 (the process goes on), as
# in our worker: the benchmark asks a worker that did not exit after its drain
# what it was doing. At import, so that job processes (which import this
# module for the entrypoint) answer too.
faulthandler.register(signal.SIGUSR1, all_threads=True)
HOLD_FILE = os.environ.get("BENCH_HOLD_AUDIO", str(REPO / "assets" / "hold-default.flac"))


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
    player = BackgroundAudioPlayer()
    await player.start(room=ctx.room)
    hold = player.play(AudioConfig(HOLD_FILE, fade_out=0.4), loop=True)

    done = asyncio.Event()
    handed_over = False

    def on_track(track: rtc.Track, _pub: object, p: rtc.RemoteParticipant) -> None:
        nonlocal handed_over
        if track.kind == rtc.TrackKind.KIND_AUDIO and p.identity.startswith("agent-"):
            handed_over = True
            done.set()

    def on_left(p: rtc.RemoteParticipant) -> None:
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP:
            done.set()

    ctx.room.on("track_subscribed", on_track)
    ctx.room.on("participant_disconnected", on_left)
    await done.wait()
    if handed_over:
        hold.stop()  # fades out over 400 ms
        await hold
    await player.aclose()
    await ctx.room.disconnect()
    ctx.shutdown("handed over" if handed_over else "caller left")


def build_server() -> AgentServer:
    kwargs: dict[str, object] = {"port": 0}
    if os.environ.get("BENCH_BASELINE_LOAD", "off") == "off":
        kwargs["load_fnc"] = lambda *_: 0.0
    server = AgentServer(**kwargs)  # type: ignore[arg-type]
    server.rtc_session(entrypoint, agent_name=os.environ["BENCH_AGENT_NAME"])
    return server


if __name__ == "__main__":
    if not os.environ.get("BENCH_AGENT_NAME"):
        sys.exit("BENCH_AGENT_NAME is not set")
    cli.run_app(build_server())
