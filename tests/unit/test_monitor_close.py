"""The caller's audio stream closes within a bound even when the SDK's
AudioStream.aclose() never returns (it waits for an FFI end-of-stream event
that, once the caller's track is gone, does not always come: in CI a call's
teardown hung 35 s on it)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from worker.media import monitor


class StuckStream:
    """One frame, then the end; aclose() waits forever (as the SDK's can)."""

    def __init__(self) -> None:
        self.closing_cancelled = False

    def __aiter__(self) -> StuckStream:
        self._sent = False
        return self

    async def __anext__(self) -> Any:
        if self._sent:
            raise StopAsyncIteration
        self._sent = True
        return SimpleNamespace(frame=SimpleNamespace(data=np.zeros(1600, np.int16).tobytes()))

    async def aclose(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.closing_cancelled = True
            raise


async def test_a_stuck_stream_close_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = StuckStream()
    monkeypatch.setattr(monitor.rtc.AudioStream, "from_track", lambda **_kw: stream)
    monkeypatch.setattr(monitor, "STREAM_CLOSE_S", 0.2, raising=False)

    async def read() -> list[np.ndarray]:
        return [x async for x in monitor.audio_levels(object())]

    t0 = time.monotonic()
    frames = await asyncio.wait_for(read(), 5.0)  # before the bound: hung here
    took = time.monotonic() - t0
    assert len(frames) == 1 and frames[0].shape == (1600,)
    assert took < 2.0 and stream.closing_cancelled
