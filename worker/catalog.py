"""The stores this worker serves, decoded and ready, and the plan for one call.

StoreCatalog holds the validated store map (worker/stores.py) and decodes
each store's hold audio and announcement once per process (hold/audio.py
caches by file). The map is re-read when its file changes, so a store added
to the map (and to the trunk by `python -m worker provision`) is served by
running workers from their next call; a map that no longer validates is
logged and the last good one kept.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from .hold.audio import SAMPLE_RATE, HoldAudio, HoldAudioError, load_hold_audio
from .hold.program import Announcement
from .lifecycle import Timers
from .settings import DEFAULT_ANNOUNCEMENT, Settings
from .stores import Store, StoreMap, StoreMapError, load_store_map

CROSSFADE_MS = 300  # default audio -> the store's, once the store is known


class CatalogError(Exception):
    """One line for the operator, starting with the setting's name."""


@dataclass(frozen=True)
class CallPlan:
    store_id: str
    store_name: str
    matched_by: str  # header | number | default | none (no store map)
    hold: HoldAudio
    announcement: Announcement | None
    timers: Timers


class StoreCatalog:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._lock = threading.Lock()
        self._map: StoreMap | None = None
        self._stamp: tuple[int, int] | None = None
        # Reload news, logged by the call that triggered it (plan_for runs in
        # a helper thread, whose log records livekit-agents' job logging
        # does not carry).
        self._news: list[tuple[int, str]] = []

    def _note(self, level: int, msg: str) -> None:
        with self._lock:
            self._news.append((level, msg))

    def take_news(self) -> list[tuple[int, str]]:
        with self._lock:
            news, self._news = self._news, []
        return news

    # -- loading ----------------------------------------------------------------

    def _hold(self, path: Path | None) -> HoldAudio:
        return load_hold_audio(
            path or self.s.audio, level_dbfs=self.s.level_dbfs, max_seconds=self.s.max_audio_seconds
        )

    def _announcement(
        self, path: Path | None, every_s: float, first_s: float | None
    ) -> Announcement | None:
        if path is None:
            return None
        audio = load_hold_audio(
            path, level_dbfs=self.s.level_dbfs, max_seconds=self.s.max_audio_seconds, loop=False
        )
        return Announcement.make(
            audio.samples,
            SAMPLE_RATE,
            every_s=every_s,
            first_s=first_s,
            duck_db=self.s.announcement_duck_db,
        )

    def _decode_all(self, m: StoreMap) -> None:
        """Decode every store's audio; an error names the store and field."""
        for key, store in m.model.stores.items():
            for field in ("hold_audio", "announcement"):
                try:
                    if field == "hold_audio":
                        self._hold(store.hold_audio)
                    else:
                        self._announcement(store.announcement, store.announcement_every_s, None)
                except HoldAudioError as e:
                    raise StoreMapError(f"{m.path}: stores.{key}.{field}: {e}") from None

    def load(self) -> StoreMap | None:
        """Validate the map and decode all audio; CatalogError names the setting."""
        try:
            self._hold(None)
        except HoldAudioError as e:
            raise CatalogError(f"HOLD_AUDIO: {e}") from None
        try:
            self._announcement(self.s.announcement, self.s.announcement_every_s, None)
        except HoldAudioError as e:
            raise CatalogError(f"HOLD_ANNOUNCEMENT: {e}") from None
        if self.s.stores is None:
            return None
        try:
            m = load_store_map(self.s.stores, default_announcement=DEFAULT_ANNOUNCEMENT)
            self._decode_all(m)
        except StoreMapError as e:
            raise CatalogError(f"HOLD_STORES: {e}") from None
        st = self.s.stores.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if self._map is not None and stamp != self._stamp:  # a job runner's prewarm, later
            self._note(logging.INFO, f"store map reloaded: {len(m.model.stores)} stores")
        with self._lock:
            self._map, self._stamp = m, stamp
        return m

    def current(self) -> StoreMap | None:
        """The map, re-read first if its file changed since the last read."""
        if self.s.stores is None:
            return None
        try:
            st = self.s.stores.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError as e:
            self._note(logging.ERROR, f"store map unreadable, keeping the last good one: {e}")
            return self._map
        if stamp != self._stamp:
            try:
                m = load_store_map(self.s.stores, default_announcement=DEFAULT_ANNOUNCEMENT)
                self._decode_all(m)
            except StoreMapError as e:
                self._note(
                    logging.ERROR,
                    f"store map changed but is invalid, keeping the last good one: {e}",
                )
                with self._lock:
                    self._stamp = stamp  # do not retry on every call; the next edit will
                return self._map
            with self._lock:
                self._map, self._stamp = m, stamp
            self._note(logging.INFO, f"store map reloaded: {len(m.model.stores)} stores")
        return self._map

    # -- one call ---------------------------------------------------------------

    def default_plan(self) -> CallPlan:
        """Before the store is known (and without a store map)."""
        timers = Timers(
            caller_join_timeout=self.s.caller_join_timeout_s,
            max_wait=self.s.max_wait_s,
            max_wait_action=self.s.max_wait_action,
            transfer_target=self.s.transfer_target,
            handoff_settle=self.s.handoff_settle_s,
            leave_after_handoff=self.s.leave_after_handoff,
            agent_quiet_after=self.s.agent_quiet_s,
            media_action=self.s.media_action,
            media_action_after=self.s.media_action_after_s,
        )
        m = self._map
        if m is not None:
            key, store = m.default
            return self._plan(key, store, "default", timers)
        return CallPlan(
            store_id="",
            store_name="",
            matched_by="none",
            hold=self._hold(None),
            announcement=self._announcement(self.s.announcement, self.s.announcement_every_s, None),
            timers=timers,
        )

    def plan_for(self, attributes: dict[str, str]) -> CallPlan:
        """The plan for a caller with these SIP participant attributes (may decode: thread)."""
        base = self.default_plan()
        m = self.current()
        if m is None:
            return base
        r = m.resolve(attributes)
        return self._plan(r.key, r.store, r.matched_by, base.timers)

    def _plan(self, key: str, store: Store, matched_by: str, timers: Timers) -> CallPlan:
        try:
            hold = self._hold(store.hold_audio)
        except HoldAudioError as e:  # replaced by a broken file since the map was read
            self._note(logging.ERROR, f"store {key}: hold audio unusable, playing the default: {e}")
            hold = self._hold(None)
        try:
            ann = self._announcement(
                store.announcement, store.announcement_every_s, store.announcement_first_s
            )
        except HoldAudioError as e:
            self._note(
                logging.ERROR, f"store {key}: announcement unusable, none for this call: {e}"
            )
            ann = None
        timers = replace(
            timers,
            max_wait=timers.max_wait if store.max_wait_s is None else store.max_wait_s,
            max_wait_action=store.fallback or timers.max_wait_action,
            transfer_target=store.transfer_target or timers.transfer_target,
        )
        return CallPlan(key, store.name, matched_by, hold, ann, timers)
