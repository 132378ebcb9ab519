"""make demo: one simulated call end to end on the local stack, with a timeline.

A pjsua2 SIP caller (the carrier's stand-in) dials the trunk, the hold worker
answers the room with hold audio, a livekit.rtc "human agent" joins after 3 s
and speaks, the worker fades out and stays, silent, until the caller hangs
up. The last line is machine-readable:

demo: dead_air_ms=<n> handoff_ms=<n> caller_hears_agent=<yes|no> agent_hears_caller=<yes|no>
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from livekit import api

from harness.analysis import hold_reference_8k
from harness.scenario import format_timeline, held_call
from harness.stack import ensure_stack, start_worker, stop_worker


def yn(b: bool) -> str:
    return "yes" if b else "no"


async def run(env: dict[str, str], work: Path) -> int:
    ref = hold_reference_8k()
    worker = start_worker(env, work)
    print(f"worker registered (log {worker.log_path})")
    try:
        async with api.LiveKitAPI(
            env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
        ) as lk:
            out = await held_call(env, lk, work, ref, number="+15551239999", tag="demo")
    finally:
        stop_worker(worker)
    print(f"room {out.room}, SIP status {out.status_code}")
    print(format_timeline(out))
    dead = "n/a" if out.dead_air_ms is None else f"{out.dead_air_ms:.0f}"
    hand = "n/a" if out.handoff_ms is None else f"{out.handoff_ms:.0f}"
    media = out.media_verdicts[-1] if out.media_verdicts else ("none", "none")
    print(f"media verdict while on hold: inbound={media[0]} outbound={media[1]}")
    print(
        f"demo: dead_air_ms={dead} handoff_ms={hand} "
        f"caller_hears_agent={yn(out.caller_hears_agent)} "
        f"agent_hears_caller={yn(out.agent_hears_caller)}"
    )
    ok = out.dead_air_ms is not None and out.caller_hears_agent and out.agent_hears_caller
    return 0 if ok else 1


def main() -> int:
    env = ensure_stack()
    with tempfile.TemporaryDirectory(prefix="demo-") as d:
        return asyncio.run(run(env, Path(d)))


if __name__ == "__main__":
    sys.exit(main())
