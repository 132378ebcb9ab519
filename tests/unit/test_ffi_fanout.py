"""worker/ffi_fanout.py on the SDK's own FfiQueue (livekit.rtc's class, no
server): a room's subscription keeps its own events and loses the rest."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from livekit.rtc._ffi_client import FfiQueue
from livekit.rtc._proto import ffi_pb2 as proto_ffi

from worker import ffi_fanout


def room_event(handle: int) -> proto_ffi.FfiEvent:
    e = proto_ffi.FfiEvent()
    e.room_event.room_handle = handle
    e.room_event.connection_quality_changed.participant_identity = "x"
    return e


def fake_room(q: FfiQueue[Any], handle: int) -> Any:
    """What narrow() reads of an rtc.Room: its queue subscription and handle,
    subscribed the way Room.connect() does it."""
    sub = q.subscribe(
        asyncio.get_running_loop(),
        filter_fn=lambda e: e.WhichOneof("message") not in ("audio_stream_event",),
    )
    return SimpleNamespace(_ffi_queue=sub, _ffi_handle=SimpleNamespace(handle=handle))


def events() -> dict[str, proto_ffi.FfiEvent]:
    capture, stats, publish, rpc = (proto_ffi.FfiEvent() for _ in range(4))
    capture.capture_audio_frame.async_id = 1
    stats.get_stats.async_id = 2
    publish.publish_track.async_id = 3
    rpc.rpc_method_invocation.invocation_id = 4
    return {
        "own room event": room_event(7),
        "other room event": room_event(8),
        "capture completion": capture,
        "stats completion": stats,
        "publish completion": publish,
        "rpc invocation": rpc,
    }


async def received(room: Any) -> list[str]:
    await asyncio.sleep(0)  # call_soon_threadsafe delivers on the next turn
    names = {id(v): k for k, v in EVENTS.items()}
    out = []
    while not room._ffi_queue.empty():
        out.append(names[id(room._ffi_queue.get_nowait())])
    return out


EVENTS = events()


async def test_a_narrowed_room_gets_its_own_events_only() -> None:
    q: FfiQueue[Any] = FfiQueue()
    mine, other = fake_room(q, 7), fake_room(q, 8)
    waiter = q.subscribe(asyncio.get_running_loop())  # capture_frame waits like this
    assert ffi_fanout.narrow(mine, q) is True
    for e in EVENTS.values():
        q.put(e)
    assert await received(mine) == ["own room event", "publish completion", "rpc invocation"]
    assert len(await received(other)) == 6  # not narrowed: everything, as the SDK does
    assert waiter.qsize() == 6  # a waiter's own subscription is untouched
    q.unsubscribe(mine._ffi_queue)  # the SDK's unsubscribe still finds it
    assert all(s is not mine._ffi_queue for s, _, _ in q._subscribers)


async def test_an_unknown_sdk_changes_nothing_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    q: FfiQueue[Any] = FfiQueue()
    ffi_fanout._warned = False
    with caplog.at_level(logging.WARNING, "hold-worker.ffi"):
        assert ffi_fanout.narrow(SimpleNamespace(), q) is False
        assert ffi_fanout.narrow(SimpleNamespace(), q) is False
        stranger = SimpleNamespace(_ffi_queue=object(), _ffi_handle=SimpleNamespace(handle=1))
        assert ffi_fanout.narrow(stranger, q) is False
    assert len(caplog.records) == 1 and "cannot narrow" in caplog.text
