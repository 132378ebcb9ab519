"""The floors a held call's cost is compared with (issue 15): a bare
livekit.rtc process, nothing else of ours, in N rooms.

- ``publish``: in each room, publishes one audio track fed from memory (the
  default hold audio, decoded once, pushed in 500 ms chunks like the worker)
  and subscribes to nothing;
- ``subscribe``: the same, and subscribes to the room's caller (auto
  subscription; no AudioStream, no statistics read: the SDK decodes a
  subscribed track by itself).

It joins as participant kind ``agent`` so that the load generator
(bench/loadgen) counts it as the hold audio; the rooms are the generator's,
named by ``--rooms-file`` (one name per line, written by the driver). It runs
until SIGTERM/SIGINT and prints ``ready <n>`` once every room has its track.

    python -m bench.floor --mode publish|subscribe --rooms-file FILE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import numpy as np
from livekit import api, rtc

from worker.hold.audio import SAMPLE_RATE, load_hold_audio
from worker.settings import DEFAULT_HOLD_AUDIO

CHUNK_MS = 500


def token(room: str, identity: str) -> str:
    return (
        api.AccessToken(os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"])
        .with_identity(identity)
        .with_kind("agent")
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


async def hold_room(name: str, pcm: np.ndarray, subscribe: bool, ready: asyncio.Event) -> None:
    room = rtc.Room()
    await room.connect(
        os.environ["LIVEKIT_URL"],
        token(name, f"floor-{name}"),
        rtc.RoomOptions(auto_subscribe=subscribe),
    )
    source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=2 * CHUNK_MS)
    track = rtc.LocalAudioTrack.create_audio_track("hold", source)
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    ready.set()
    n = SAMPLE_RATE * CHUNK_MS // 1000
    pos = 0
    try:
        while True:
            if pos + n > pcm.shape[0]:
                pos = 0
            chunk = pcm[pos : pos + n]
            pos += n
            await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, n))
    finally:
        with contextlib.suppress(Exception):
            await room.disconnect()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("publish", "subscribe"), required=True)
    ap.add_argument("--rooms-file", type=Path, required=True)
    a = ap.parse_args()
    rooms = [r for r in a.rooms_file.read_text().split() if r]
    audio = load_hold_audio(DEFAULT_HOLD_AUDIO, level_dbfs=-20.0, max_seconds=600.0)
    pcm = np.clip(audio.samples * 32767.0, -32768, 32767).astype(np.int16)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    events = [asyncio.Event() for _ in rooms]
    tasks = [
        asyncio.create_task(hold_room(r, pcm, a.mode == "subscribe", e))
        for r, e in zip(rooms, events, strict=True)
    ]
    await asyncio.gather(*(e.wait() for e in events))
    print(f"ready {len(rooms)}", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    sys.stdout.flush()
    os._exit(0)  # the SDK's finalisers can panic at interpreter exit (RELIABILITY.md)


if __name__ == "__main__":
    asyncio.run(main())
