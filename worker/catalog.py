"""The stores this worker serves, decoded and ready, and the plan for one call.

StoreCatalog holds the validated store map (worker/stores.py) and decodes
each store's hold audio and announcement once per process (hold/audio.py
caches by file). The map is re-read when its file changes, so a store added
to the map (and to the trunk by `python -m worker provision`) is served by
running workers from their next call; a map that no longer validates is
logged and the last good one kept.

Audio files edited on disk (HOLD_AUDIO, HOLD_ANNOUNCEMENT, a store's files)
are treated the same way: the catalog keeps the last good decode of each
file. `default_plan()` (called on the event loop by every new call) never
decodes and never raises over a bad file: it returns the last good audio and,
when a file changed, starts one background thread to decode it. `plan_for()`
(already run in a thread) decodes changed files itself. A changed file is
used once it has been still for WRITE_SETTLE_S (a copy in progress is not
taken half-way). A file that fails to decode (half-written, corrupt) is
logged once per version (`take_news`) and its last good audio stays. Only
the decodes of files the settings and the current map name are kept. Until
a file's first good decode (`load()` at start-up) there is nothing to fall
back on: default_plan() then decodes it and may raise, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from pathlib import Path

from .hold.audio import SAMPLE_RATE, HoldAudio, HoldAudioError, load_hold_audio
from .hold.program import Announcement
from .lifecycle import CallPolicy
from .prompts import PromptError, PromptLibrary, PromptSet, UnknownLanguage, default_cache_dir
from .settings import DEFAULT_ANNOUNCEMENT, Settings
from .stores import (
    KeypadOptions,
    PositionAnnouncements,
    Store,
    StoreMap,
    StoreMapError,
    load_store_map,
)

CROSSFADE_MS = 300  # default audio -> the store's, once the store is known
# A changed audio file is decoded once it has been still this long: a file
# being copied in place may decode "successfully" to its first part (WAV).
# Writing a new file and renaming it over the old one avoids the wait.
WRITE_SETTLE_S = 1.0


class CatalogError(Exception):
    """One line for the operator, starting with the setting's name."""


@dataclass(frozen=True)
class PositionPlan:
    """A store's position announcements: when, what, and its prompts."""

    settings: PositionAnnouncements
    prompts: PromptSet


@dataclass(frozen=True)
class KeypadPlan:
    """A store's keypad options (keypad.py): the keys, where the operator is,
    whether the callback keeps the full number, and the prompts."""

    settings: KeypadOptions
    operator_target: str
    full_number: bool
    prompts: PromptSet


@dataclass(frozen=True)
class CallPlan:
    store_id: str
    store_name: str
    matched_by: str  # header | number | default | none (no store map)
    hold: HoldAudio
    announcement: Announcement | None
    policy: CallPolicy
    position: PositionPlan | None = None  # the store's position announcements, if on
    keypad: KeypadPlan | None = None  # the store's keypad options, if any


_AudioKey = tuple[str, bool]  # (path, loop): loop=False is an announcement


@dataclass
class _Good:
    """The last good decode of one file, and the file version it came from."""

    stamp: tuple[int, int] | None
    audio: HoldAudio
    failed: set[tuple[int, int] | None] = dc_field(default_factory=set)  # versions noted bad


def _stamp_of(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _settle_left(stamp: tuple[int, int] | None) -> float:
    """Seconds until a file of this version has been still for WRITE_SETTLE_S."""
    if stamp is None:
        return 0.0
    age = (time.time_ns() - stamp[0]) / 1e9
    return WRITE_SETTLE_S - age if 0.0 <= age < WRITE_SETTLE_S else 0.0


class StoreCatalog:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._lock = threading.Lock()
        self._map: StoreMap | None = None
        self._stamp: tuple[int, int] | None = None
        self._good: dict[_AudioKey, _Good] = {}
        self._reloader: threading.Thread | None = None
        # Reload news, logged by the call that triggered it (plan_for runs in
        # a helper thread, whose log records livekit-agents' job logging
        # does not carry).
        self._news: list[tuple[int, str]] = []
        # The spoken prompts of position announcements (espeak-ng, rendered once).
        self.prompts = PromptLibrary(
            settings.prompts_cache or default_cache_dir(), level_dbfs=settings.level_dbfs
        )

    def _note(self, level: int, msg: str) -> None:
        with self._lock:
            self._news.append((level, msg))

    def take_news(self) -> list[tuple[int, str]]:
        with self._lock:
            news, self._news = self._news, []
        return news

    # -- loading ----------------------------------------------------------------

    def _audio(self, path: Path, *, loop: bool, decode: bool, strict: bool) -> HoldAudio:
        """The audio of one file: the last good decode while the file is unchanged.

        A changed file: `decode=False` (the event loop) returns the last good
        audio and leaves the decode to a background thread; `decode=True`
        decodes here, once the file has been still for WRITE_SETTLE_S (until
        then the last good audio, and the background thread waits for it). A
        changed file that fails to decode raises if `strict` (start-up and map
        validation) or if there is no good decode yet; otherwise it is noted
        once and the last good audio returned."""
        key = (str(path), loop)
        stamp = _stamp_of(path)
        with self._lock:
            good = self._good.get(key)
        if good is not None and (good.stamp == stamp or (not strict and stamp in good.failed)):
            return good.audio
        if good is not None and not strict and (not decode or _settle_left(stamp) > 0):
            self._reload_in_background()
            return good.audio
        try:
            audio = load_hold_audio(
                path, level_dbfs=self.s.level_dbfs, max_seconds=self.s.max_audio_seconds, loop=loop
            )
        except HoldAudioError as e:
            if strict or good is None:
                raise
            with self._lock:
                first = stamp not in good.failed
                good.failed.add(stamp)
            if first:
                self._note(
                    logging.ERROR, f"audio file changed but unusable, keeping the last good: {e}"
                )
            return good.audio
        if good is not None and not strict and _stamp_of(path) != stamp:
            self._reload_in_background()  # written to while we decoded
            return good.audio
        with self._lock:
            self._good[key] = _Good(stamp, audio)
        if good is not None:
            self._note(logging.INFO, f"audio file reloaded: {path}")
        return audio

    def _hold(self, path: Path | None, *, decode: bool = True, strict: bool = False) -> HoldAudio:
        return self._audio(path or self.s.audio, loop=True, decode=decode, strict=strict)

    def _announcement(
        self,
        path: Path | None,
        every_s: float,
        first_s: float | None,
        *,
        decode: bool = True,
        strict: bool = False,
    ) -> Announcement | None:
        if path is None:
            return None
        audio = self._audio(path, loop=False, decode=decode, strict=strict)
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
                        self._hold(store.hold_audio, strict=True)
                    else:
                        self._announcement(
                            store.announcement, store.announcement_every_s, None, strict=True
                        )
                except HoldAudioError as e:
                    raise StoreMapError(f"{m.path}: stores.{key}.{field}: {e}") from None
            try:
                self._prompts(store)
            except UnknownLanguage as e:
                raise StoreMapError(f"{m.path}: stores.{key}.language: {e}") from None
            except PromptError as e:
                raise StoreMapError(f"{m.path}: stores.{key}.position_announcements: {e}") from None
            try:
                self._keypad_prompts(store)
            except PromptError as e:
                raise StoreMapError(f"{m.path}: stores.{key}.keypad: {e}") from None

    def _prompts(self, store: Store) -> PromptSet | None:
        """The store's language checked against espeak-ng (where installed),
        and its prompts made once if it announces positions."""
        self.prompts.check_language(store.language)
        pa = store.position_announcements
        if not pa.enabled:
            return None
        return self.prompts.prompt_set(store.language, pa.prompts_dir, pa.phrases)

    def _keypad_prompts(self, store: Store) -> PromptSet | None:
        kp = store.keypad
        if not kp.enabled:
            return None
        pdir = store.position_announcements.prompts_dir
        return self.prompts.keypad_set(store.language, pdir, kp.phrases)

    def announcing_stores(self) -> list[str]:
        """The stores of the current map with position announcements on."""
        m = self._map
        if m is None:
            return []
        return [k for k, st in m.model.stores.items() if st.position_announcements.enabled]

    def load(self) -> StoreMap | None:
        """Validate the map and decode all audio; CatalogError names the setting."""
        try:
            self._hold(None, strict=True)
        except HoldAudioError as e:
            raise CatalogError(f"HOLD_AUDIO: {e}") from None
        try:
            self._announcement(self.s.announcement, self.s.announcement_every_s, None, strict=True)
        except HoldAudioError as e:
            raise CatalogError(f"HOLD_ANNOUNCEMENT: {e}") from None
        if self.s.stores is None:
            self._forget_unused()
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
        self._forget_unused()
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
                self._forget_unused()  # what the rejected map's validation decoded
                return self._map
            with self._lock:
                self._map, self._stamp = m, stamp
            self._forget_unused()
            self._note(logging.INFO, f"store map reloaded: {len(m.model.stores)} stores")
        return self._map

    def _forget_unused(self) -> None:
        """Keep the decodes of the files the settings and the current map name."""
        used: set[_AudioKey] = {(str(self.s.audio), True)}
        if self.s.announcement is not None:
            used.add((str(self.s.announcement), False))
        if self._map is not None:
            for store in self._map.model.stores.values():
                used.add((str(store.hold_audio or self.s.audio), True))
                if store.announcement is not None:
                    used.add((str(store.announcement), False))
        with self._lock:
            for key in [k for k in self._good if k not in used]:
                del self._good[key]

    def refresh(self) -> float | None:
        """Decode every kept file that changed (in the calling thread); never raises.

        Returns None when every kept file is decoded (or noted unusable), else
        the seconds until a file still being written may be tried again."""
        with self._lock:
            keys = list(self._good)
        later: float | None = None
        for path, loop in keys:
            try:
                self._audio(Path(path), loop=loop, decode=True, strict=False)
            except Exception as e:  # a bug, not a bad file (those are noted): keep serving
                self._note(logging.ERROR, f"audio reload failed: {path}: {e}")
                continue
            stamp = _stamp_of(Path(path))
            with self._lock:
                good = self._good.get((path, loop))
            if good is not None and good.stamp != stamp and stamp not in good.failed:
                later = max(later or 0.0, _settle_left(stamp))
        return later

    def _reload(self) -> None:
        for _ in range(120):  # a file rewritten for ever is not chased for ever
            later = self.refresh()
            if later is None:
                return
            time.sleep(later + 0.05)

    def _reload_in_background(self) -> None:
        """One thread at a time decodes changed files, off the event loop."""
        with self._lock:
            if self._reloader is not None and self._reloader.is_alive():
                return
            self._reloader = threading.Thread(
                target=self._reload, name="hold-audio-reload", daemon=True
            )
            self._reloader.start()

    def wait_reloaded(self, timeout: float | None = None) -> None:
        """For tests and shutdown: wait for a background reload to finish."""
        t = self._reloader
        if t is not None:
            t.join(timeout)

    # -- one call ---------------------------------------------------------------

    def default_plan(self) -> CallPlan:
        """Before the store is known (and without a store map).

        Runs on the event loop: never decodes (beyond a file's first decode,
        which `load()` does at start-up) and never raises over a bad file; a
        changed file is decoded in the background and used from a later call.
        """
        policy = CallPolicy(
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
            return self._plan(key, store, "default", policy, decode=False)
        return CallPlan(
            store_id="",
            store_name="",
            matched_by="none",
            hold=self._hold(None, decode=False),
            announcement=self._announcement(
                self.s.announcement, self.s.announcement_every_s, None, decode=False
            ),
            policy=policy,
        )

    def plan_for(self, attributes: dict[str, str]) -> CallPlan:
        """The plan for a caller with these SIP participant attributes (may decode: thread)."""
        self.refresh()  # changed files, decoded here rather than on the event loop
        base = self.default_plan()
        m = self.current()
        if m is None:
            return base
        r = m.resolve(attributes)
        return self._plan(r.key, r.store, r.matched_by, base.policy)

    def _plan(
        self, key: str, store: Store, matched_by: str, policy: CallPolicy, *, decode: bool = True
    ) -> CallPlan:
        try:
            hold = self._hold(store.hold_audio, decode=decode)
        except HoldAudioError as e:  # replaced by a broken file since the map was read
            self._note(logging.ERROR, f"store {key}: hold audio unusable, playing the default: {e}")
            hold = self._hold(None, decode=decode)
        try:
            ann = self._announcement(
                store.announcement,
                store.announcement_every_s,
                store.announcement_first_s,
                decode=decode,
            )
        except HoldAudioError as e:
            self._note(
                logging.ERROR, f"store {key}: announcement unusable, none for this call: {e}"
            )
            ann = None
        position = None
        try:
            prompts = self._prompts(store)
            if prompts is not None:
                position = PositionPlan(store.position_announcements, prompts)
        except PromptError as e:
            self._note(logging.ERROR, f"store {key}: no position announcements: {e}")
        keypad = None
        try:
            kp_prompts = self._keypad_prompts(store)
            if kp_prompts is not None:
                keypad = KeypadPlan(
                    store.keypad, store.operator_target, store.callback_full_number, kp_prompts
                )
        except PromptError as e:
            self._note(logging.ERROR, f"store {key}: no keypad options: {e}")
        policy = replace(
            policy,
            max_wait=policy.max_wait if store.max_wait_s is None else store.max_wait_s,
            max_wait_action=store.fallback or policy.max_wait_action,
            max_wait_no_agents=store.max_wait_no_agents_s or 0.0,
            no_agents_action=store.no_agents_fallback,
            transfer_target=store.transfer_target or policy.transfer_target,
        )
        return CallPlan(key, store.name, matched_by, hold, ann, policy, position, keypad)
