"""One room's FFI events to that room only.

livekit.rtc (1.1.21, the release livekit-agents 1.8.9 pins) hands every
event of the process-wide FFI queue to every subscriber whose filter lets it
through, each with `loop.call_soon_threadsafe`. An `rtc.Room` subscribes with
a filter that drops only audio and video stream frames, and its listener then
ignores the room events of other rooms. Under the thread executor every call
is a job with its own event loop, so each call's statistics reads, hold-audio
pushes and room events wake the event loop of every other call in the
process: the work grows with the square of the calls held (the measured
cost, against a bare livekit.rtc process holding the same rooms in one
loop: BENCHMARKS.md).

`narrow(room)` swaps the room's filter for one that also drops what no room
listens to: the room events of other rooms, and the completions of audio
pushes and statistics reads (their callers subscribe on their own while they
wait). Everything else still reaches the room (RPC invocations, the
publish/unpublish completions it forwards to its participants). The SDK has
no option for this, so the swap reaches into its queue (`_subscribers`,
`_ffi_queue`, `_ffi_handle`); if they are not there (another release), it
changes nothing and says so once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from livekit.rtc._ffi_client import FfiClient

logger = logging.getLogger("hold-worker.ffi")

# Completions that only their own waiter subscribes for (capture_frame,
# get_stats), and the frames of media streams (the SDK's own filter).
NOT_FOR_ROOMS = frozenset(
    {"audio_stream_event", "video_stream_event", "capture_audio_frame", "get_stats"}
)

_warned = False


def room_filter(handle: int) -> Callable[[Any], bool]:
    def keep(e: Any) -> bool:
        which = e.WhichOneof("message")
        if which in NOT_FOR_ROOMS:
            return False
        if which == "room_event":
            return bool(e.room_event.room_handle == handle)
        return True

    return keep


def narrow(room: Any, queue: Any = None) -> bool:
    """Give `room`'s subscription to the FFI queue the narrower filter.

    `queue` is the FFI queue (the SDK's process-wide one by default). Returns
    whether the filter was swapped."""
    global _warned
    try:
        q = queue if queue is not None else FfiClient.instance.queue
        mine = room._ffi_queue
        handle = int(room._ffi_handle.handle)
        with q._lock:
            for i, (sub, loop, _old) in enumerate(q._subscribers):
                if sub is mine:
                    q._subscribers[i] = (sub, loop, room_filter(handle))
                    return True
    except (AttributeError, TypeError, ValueError) as e:
        if not _warned:
            logger.warning(f"cannot narrow the room's FFI events (livekit.rtc changed?): {e}")
            _warned = True
        return False
    if not _warned:
        logger.warning("the room's FFI subscription was not found: its events stay unfiltered")
        _warned = True
    return False
