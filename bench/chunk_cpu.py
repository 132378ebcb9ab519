"""CPU per hold stream against the chunk size pushed to rtc.AudioSource (offline).

Runs N HoldPlayers for S seconds in one process with real livekit.rtc sources
and tracks (no server), and reports process CPU time (user + system) per
stream as a share of one core. Usage:

    python -m bench.chunk_cpu [--streams 10] [--seconds 10] [--chunks 10,20,50,100,200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from worker.hold.audio import load_hold_audio
from worker.hold.player import HoldPlayer

REPO = Path(__file__).resolve().parents[1]


async def measure(chunk_ms: int, streams: int, seconds: float) -> tuple[float, int]:
    audio = load_hold_audio(
        REPO / "assets" / "hold-default.flac", level_dbfs=-20.0, max_seconds=600
    )
    players = [HoldPlayer(audio, chunk_ms=chunk_ms) for _ in range(streams)]
    for p in players:
        p.start()
    await asyncio.sleep(1.0)  # settle
    t0, c0 = time.monotonic(), os.times()
    f0 = sum(p.frames_pushed for p in players)
    await asyncio.sleep(seconds)
    t1, c1 = time.monotonic(), os.times()
    f1 = sum(p.frames_pushed for p in players)
    for p in players:
        await p.aclose()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return cpu / (t1 - t0) / streams, f1 - f0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--chunks", default="10,20,50,100,200")
    a = ap.parse_args()
    print(f"{'chunk_ms':>8} {'cpu_per_stream_%':>17} {'pushes/s/stream':>16}")
    for c in [int(x) for x in a.chunks.split(",")]:
        share, pushes = asyncio.run(measure(c, a.streams, a.seconds))
        rate = pushes / a.seconds / a.streams
        print(f"{c:>8} {share * 100:>17.2f} {rate:>16.1f}")


if __name__ == "__main__":
    main()
