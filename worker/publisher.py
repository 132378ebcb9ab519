"""What others see of a call, behind one small interface.

The call describes itself as a `CallView` (state, hold start, masked caller,
media verdict, store). `CallPublisher` hands it to every `Sink`:

- `RoomSink`: the worker's participant attributes (`hold.*`, `media.*`,
  `store.*`), the room's metadata (`store`) and the `hold.media` data message:
  what the store's web app reads in the room (names in protocol.py);
- `RegistrySink` (registry.py): the call's record in Redis, with heartbeats.

Publishing never sits in the audio path: state changes only mark the view
dirty, and one task per call publishes the latest view (a burst of changes
collapses into one update). A sink that fails is logged; it never ends a call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from livekit import api

from .aio import Log, stop_task
from .catalog import CallPlan
from .lifecycle import State
from .media.detector import Verdict
from .protocol import (
    ATTR_CALLER,
    ATTR_MEDIA_IN,
    ATTR_MEDIA_OUT,
    ATTR_MEDIA_REASON,
    ATTR_SINCE,
    ATTR_STATE,
    ATTR_STORE_ID,
    ATTR_STORE_MATCH,
    ATTR_STORE_NAME,
    MEDIA_MESSAGE_TYPE,
    ROOM_META_STORE,
)

FINAL_STATE_TIMEOUT_S = 2.0  # the last publication at the end of a call


@dataclass(frozen=True)
class CallView:
    """A call as others see it."""

    state: State
    hold_since_ms: int  # wall clock (ms) the hold began; 0 before
    caller_masked: str
    media: Verdict | None  # the latest one-way audio verdict
    store: CallPlan | None  # the store, once resolved (None: not known yet)
    # the full number: for the registry's desk and callback fields only (never logged)
    caller_number: str = field(default="", repr=False)
    # the worker gives the call up with the caller still there (a failed job,
    # the drain timeout, the room connection lost): another worker must take it
    orphaned: bool = False
    # human agents who were in the room and left: (identity, unix ms), for the
    # registry (the call goes back into line if the one who took it left)
    agents_left: tuple[tuple[str, int], ...] = ()
    end_reason: str = ""  # why the call ended (set at the end; no caller number in it)


class Sink(Protocol):
    async def state(self, view: CallView) -> None:
        """The latest view (called with the newest only, never in the audio path)."""

    async def store(self, view: CallView) -> None:
        """The call's store became known (view.store is set)."""

    async def media(self, view: CallView, fields: Mapping[str, Any]) -> None:
        """A new media verdict, with its details (`fields`)."""

    async def ended(self, view: CallView) -> None:
        """The call's end, with its final view (bounded in time by the publisher)."""


class RoomSink:
    """Attributes, room metadata and data messages in the call's room."""

    def __init__(self, room: Any, lkapi: Callable[[], Any], topic: str, log: Log) -> None:
        self.room = room
        self._api = lkapi  # the job's LiveKitAPI, looked up when first needed
        self._topic = topic
        self.log = log

    async def state(self, view: CallView) -> None:
        media = view.media
        attrs = {
            ATTR_STATE: str(view.state),
            ATTR_SINCE: str(view.hold_since_ms) if view.hold_since_ms else "",
            ATTR_CALLER: view.caller_masked,
            ATTR_MEDIA_IN: str(media.inbound) if media else "pending",
            ATTR_MEDIA_OUT: str(media.outbound) if media else "pending",
            ATTR_MEDIA_REASON: media.reason if media else "",
        }
        if view.store is not None and view.store.store_id:
            attrs[ATTR_STORE_ID] = view.store.store_id
            attrs[ATTR_STORE_NAME] = view.store.store_name
            attrs[ATTR_STORE_MATCH] = view.store.matched_by
        if not self.room.isconnected():
            return
        try:
            await self.room.local_participant.set_attributes(attrs)
        except Exception as e:  # attributes are for display; never end a call over them
            self.log.warning(f"could not publish state attributes: {e}")

    async def ended(self, view: CallView) -> None:
        await self.state(view)  # the final state: `done`, or the unfinished one

    async def store(self, view: CallView) -> None:
        """The store in the room's metadata (JSON) for the web app and webhooks;
        other keys already there are kept."""
        plan = view.store
        if plan is None or not plan.store_id:
            return
        current = self.room.metadata or ""
        try:
            meta = json.loads(current) if current.strip() else {}
        except json.JSONDecodeError:
            meta = None
        if not isinstance(meta, dict):
            self.log.warning("room metadata is not a JSON object; store left in attributes only")
            return
        meta[ROOM_META_STORE] = {
            "id": plan.store_id,
            "name": plan.store_name,
            "matched_by": plan.matched_by,
        }
        try:
            await self._api().room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room=self.room.name, metadata=json.dumps(meta))
            )
        except Exception as e:  # display only; never end a call over it
            self.log.warning(f"could not set the room metadata: {e}")

    async def media(self, view: CallView, fields: Mapping[str, Any]) -> None:
        if not self.room.isconnected():
            return
        payload = json.dumps(
            {
                "type": MEDIA_MESSAGE_TYPE,
                "room": self.room.name,
                "at": int(time.time() * 1000),
                **fields,
            }
        )
        try:
            await self.room.local_participant.publish_data(
                payload, reliable=True, topic=self._topic
            )
        except Exception as e:  # the attributes carry the same; never end a call over it
            self.log.warning(f"could not send the media data message: {e}")


class CallPublisher:
    def __init__(self, sinks: list[Sink], view: Callable[[], CallView], log: Log) -> None:
        self.sinks = sinks
        self._view = view
        self.log = log
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # store and media news in flight

    def start(self) -> None:
        self._dirty.set()
        self._task = asyncio.create_task(self._run(), name="hold-state")

    def changed(self) -> None:
        """The view changed: published soon, off the caller's path."""
        self._dirty.set()

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._each(lambda s, v: s.state(v))

    async def _each(self, call: Callable[[Sink, CallView], Coroutine[Any, Any, None]]) -> None:
        """Every sink at once: a slow one (the room's attributes can take the
        SDK's 5 s timeout) never holds back another (the registry, which the
        desk's waiting list reads)."""
        view = self._view()
        await asyncio.gather(*(self._one(sink, call, view) for sink in self.sinks))

    async def _one(
        self,
        sink: Sink,
        call: Callable[[Sink, CallView], Coroutine[Any, Any, None]],
        view: CallView,
    ) -> None:
        try:
            await call(sink, view)
        except Exception as e:  # a sink's own bug: logged, the call goes on
            self.log.warning(f"{type(sink).__name__} failed: {type(e).__name__}: {e}")

    async def store_known(self) -> None:
        self.changed()
        await self._each(lambda s, v: s.store(v))

    def media(self, fields: Mapping[str, Any]) -> None:
        self.changed()
        self._spawn(self._each(lambda s, v: s.media(v, fields)), "hold-media-data")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop publishing; the final view still goes out (within a bound)."""
        for task in [self._task, *self._tasks]:
            if task is not None:
                await stop_task(task, self.log)
        self._task = None
        try:
            async with asyncio.timeout(FINAL_STATE_TIMEOUT_S):
                await self._each(lambda s, v: s.ended(v))
        except Exception as e:  # TimeoutError included
            self.log.warning(f"could not publish the final state: {type(e).__name__}")
