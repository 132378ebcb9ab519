"""Stores on the real stack: routing by dialled number and by header, each
store's own hold audio (checked by spectrum at the caller), the default store
for an unknown number, announcements over ducked music, a malformed map, and
a store added by editing the map and re-running provision only.

Each store's hold audio is one pure tone, so the caller's recording says
which store's audio it got: the share of its energy at that tone.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from livekit import api

from harness import stack as stackmod
from harness.analysis import read_wav, tone_presence, write_tone_wav
from harness.rooms import find_call_room
from harness.scenario import start_caller
from harness.stack import WorkerProcess, start_worker, stop_worker
from worker.settings import DEFAULT_ANNOUNCEMENT

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TRUNK, RULE = "hold-e2e-stores", "hold-e2e-stores-calls"
NUMBERS = {"north": "+15550201", "south": "+15550202"}
UNMAPPED = "+15550209"  # on the trunk, in no store
EAST = "+15550203"  # the store added during the run
TONES = {"main": 440.0, "north": 620.0, "south": 880.0, "east": 1100.0}
WIN = 0.1  # analysis window (s)

MAP = """\
header: X-Store-Id
attribute: store.id
default: main
stores:
  main:
    name: Main Street
    hold_audio: main.wav
  north:
    name: North Mall
    numbers: ["{north}"]
    hold_audio: north.wav
    announcement: default
    announcement_every_s: 7
    announcement_first_s: 2
  south:
    name: South Side
    numbers: ["{south}"]
    header_values: ["0042"]
    hold_audio: south.wav
"""

EAST_ENTRY = f"""\
  east:
    name: East End
    numbers: ["{EAST}"]
    hold_audio: east.wav
"""


@dataclass
class Stores:
    dir: Path
    map: Path
    worker: WorkerProcess


def provision(lk_env: dict[str, str], store_map: Path) -> str:
    p = stackmod.provision(lk_env, TRUNK, RULE, "--stores", str(store_map), "--number", UNMAPPED)
    assert p.returncode == 0, p.stderr
    return p.stdout + p.stderr


@pytest.fixture(scope="module")
def stores(lk_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    d = tmp_path_factory.mktemp("stores")
    for key, hz in TONES.items():
        write_tone_wav(str(d / f"{key}.wav"), hz, seconds=2.0, rate=16000)
    store_map = d / "stores.yaml"
    store_map.write_text(MAP.format(**NUMBERS))
    print(f"\n{provision(lk_env, store_map).strip()}")
    w = start_worker(lk_env, d, HOLD_STORES=str(store_map))
    yield Stores(d, store_map, w)
    stop_worker(w)


def target(lk_env: dict[str, str], dialled: str) -> str:
    return lk_env["DEV_SIP_TARGET"].replace(lk_env["DEV_TRUNK_NUMBER"], dialled)


async def worker_attrs(lk: api.LiveKitAPI, room: str, key: str) -> dict[str, str]:
    """The hold worker's attributes once `key` is set (or what there is after 5 s)."""
    attrs: dict[str, str] = {}
    for _ in range(100):
        parts = (
            await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        ).participants
        agents = [p for p in parts if p.kind == api.ParticipantInfo.Kind.AGENT]
        attrs = dict(agents[0].attributes) if agents else {}
        if attrs.get(key):
            break
        await asyncio.sleep(0.05)
    return attrs


@dataclass
class Heard:
    attrs: dict[str, str]
    metadata: dict
    rec: np.ndarray
    rate: int

    def share(self, store: str, start_s: float = 1.0, end_s: float | None = None) -> float:
        """Median share of the recording's energy at the store's tone (from 1 s:
        the first second may still cross-fade from the default store's audio)."""
        end = None if end_s is None else int(end_s * self.rate)
        x = self.rec[int(start_s * self.rate) : end]
        return float(np.median(tone_presence(x, self.rate, TONES[store], WIN)))


async def call(
    lk_env, lk, work: Path, dialled: str, caller: str, *, seconds: float, header: str = ""
) -> Heard:
    extra = ("--header", f"X-Store-Id:{header}") if header else ()
    proc, rec, _res = await start_caller(
        lk_env,
        work,
        caller,
        [697.0, 1209.0],
        duration=seconds,
        target=target(lk_env, dialled),
        tag=f"store-{caller[-4:]}",
        extra=extra,
    )
    room = await find_call_room(lk, caller)
    attrs = await worker_attrs(lk, room, "store.id")
    meta: dict = {}
    for _ in range(40):
        rooms = (await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms
        if rooms and rooms[0].metadata:
            meta = json.loads(rooms[0].metadata)
            break
        await asyncio.sleep(0.05)
    await asyncio.wait_for(proc.wait(), seconds + 30)
    x, rate = read_wav(str(rec))
    return Heard(attrs, meta, x, rate)


def shares(h: Heard) -> dict[str, float]:
    return {k: round(h.share(k), 3) for k in TONES}


async def test_two_numbers_two_stores_each_caller_hears_its_own(stores, lk_env, lkapi, work_dir):
    north, south = await asyncio.gather(
        call(lk_env, lkapi, work_dir, NUMBERS["north"], "+15551240001", seconds=5.0),
        call(lk_env, lkapi, work_dir, NUMBERS["south"], "+15551240002", seconds=5.0),
    )
    print(f"\nnorth caller: {shares(north)} attrs={north.attrs} meta={north.metadata}")
    print(f"south caller: {shares(south)} attrs={south.attrs} meta={south.metadata}")
    assert north.attrs["store.id"] == "north" and north.attrs["store.name"] == "North Mall"
    assert north.attrs["store.matched_by"] == "number"
    assert south.attrs["store.id"] == "south" and south.attrs["store.matched_by"] == "number"
    assert north.metadata["store"] == {"id": "north", "name": "North Mall", "matched_by": "number"}
    assert south.metadata["store"]["id"] == "south"
    # each caller's recording is its own store's tone, not the other's or the default's
    # (north's first announcement starts at 2 s, so judge it on 1-2 s and after it ends)
    assert north.share("north", 1.0, 1.9) > 0.5 and north.share("south") < 0.05
    assert north.share("main") < 0.05
    assert south.share("south") > 0.5 and south.share("north") < 0.05
    assert south.share("main") < 0.05


async def test_header_routes_and_unknown_number_gets_the_default(stores, lk_env, lkapi, work_dir):
    by_header, unknown = await asyncio.gather(
        call(lk_env, lkapi, work_dir, UNMAPPED, "+15551240003", seconds=4.0, header="0042"),
        call(lk_env, lkapi, work_dir, UNMAPPED, "+15551240004", seconds=4.0),
    )
    print(f"\nheader 0042: {shares(by_header)} attrs={by_header.attrs}")
    print(f"unknown number: {shares(unknown)} attrs={unknown.attrs}")
    assert by_header.attrs["store.id"] == "south"
    assert by_header.attrs["store.matched_by"] == "header"
    assert by_header.share("south") > 0.5 and by_header.share("main") < 0.05
    assert unknown.attrs["store.id"] == "main" and unknown.attrs["store.matched_by"] == "default"
    assert unknown.share("main") > 0.5 and unknown.share("south") < 0.05
    assert "no store matches this call, using the default store" in stores.worker.messages()


def tone_db(x: np.ndarray, rate: int, hz: float) -> np.ndarray:
    """Per-window level of one tone, dBFS."""
    n = int(WIN * rate)
    frames = x[: len(x) // n * n].reshape(-1, n)
    ms = np.mean(frames * frames, axis=1)
    share = tone_presence(x, rate, hz, WIN, floor_dbfs=-90.0)
    return 10 * np.log10(np.maximum(share * ms, 1e-12))


async def test_announcement_at_its_interval_over_ducked_music(stores, lk_env, lkapi, work_dir):
    h = await call(lk_env, lkapi, work_dir, NUMBERS["north"], "+15551240005", seconds=15.0)
    rate = h.rate
    music = tone_db(h.rec, rate, TONES["north"])
    presence = tone_presence(h.rec, rate, TONES["north"], WIN, floor_dbfs=-90.0)
    n = int(WIN * rate)
    frames = h.rec[: len(h.rec) // n * n].reshape(-1, n)
    total_db = 10 * np.log10(np.maximum(np.mean(frames * frames, axis=1), 1e-12))
    # speech: most of a window's energy is not the music's tone
    speech = (presence < 0.5) & (total_db > -45)
    t = np.arange(len(speech)) * WIN
    # onsets: the first speech window after at least 1 s without speech
    onsets: list[float] = []
    quiet = 10
    for i, s in enumerate(speech):
        if t[i] < 1.0:  # the first second cross-fades from the default store's audio
            continue
        if s and quiet >= 10:
            onsets.append(round(float(t[i]), 1))
        quiet = 0 if s else quiet + 1
    # the announcement's length from the asset itself (the map says `default`)
    import soundfile as sf

    spoken = sf.info(str(DEFAULT_ANNOUNCEMENT)).duration
    in_speech = np.zeros_like(speech)
    for o in onsets:
        i = int(o / WIN)
        in_speech[i + 5 : i + int((spoken - 1.0) / WIN)] = True  # inside, clear of the ramps
    between = np.zeros_like(speech)
    between[10:15] = True  # 1.0-1.5 s: music alone, before the first
    if len(onsets) >= 1:
        j = int((onsets[0] + spoken + 0.8) / WIN)  # after the first one and its ramp up
        between[j : j + 10] = True
    duck = float(np.median(music[in_speech]) - np.median(music[between]))
    print(
        f"\nannouncement onsets (s after answer): {onsets}; music under speech "
        f"{np.median(music[in_speech]):.1f} dBFS vs {np.median(music[between]):.1f} dBFS "
        f"alone: ducked {duck:.1f} dB (configured -14)"
    )
    assert len(onsets) == 2, onsets  # at about 2 s and 9 s in 15 s
    assert 1.0 <= onsets[0] <= 4.0
    assert 6.0 <= onsets[1] - onsets[0] <= 8.0  # every 7 s
    assert -20.0 <= duck <= -8.0
    assert h.attrs["store.id"] == "north"


def test_malformed_store_map_stops_the_worker_before_it_registers(lk_env, tmp_path):
    bad = tmp_path / "stores.yaml"
    bad.write_text("default: main\nstores:\n  main:\n    name: Main\n    numbers: [5550100]\n")
    p = subprocess.run(
        [sys.executable, "-m", "worker", "start"],
        cwd=REPO,
        env={**os.environ, **lk_env, "HOLD_STORES": str(bad), "HOLD_HTTP_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
    print(f"\nexit {p.returncode}: {lines}")
    assert p.returncode == 2
    errors = [ln for ln in lines if ln.startswith("config error:")]
    assert errors == [
        f"config error: HOLD_STORES: {bad}: stores.main.numbers.0: Input should be a valid string"
    ]
    assert not any("registered worker" in ln for ln in lines)


async def test_new_store_by_editing_the_map_and_provision_only(stores, lk_env, lkapi, work_dir):
    """No worker restart, no other file: the map and `provision` are enough."""
    stores.map.write_text(stores.map.read_text() + EAST_ENTRY)
    out = provision(lk_env, stores.map)
    assert EAST in out, out  # the trunk now takes the new store's number
    h = await call(lk_env, lkapi, work_dir, EAST, "+15551240006", seconds=4.0)
    print(f"\nnew store east: {shares(h)} attrs={h.attrs}")
    assert h.attrs["store.id"] == "east" and h.attrs["store.name"] == "East End"
    assert h.share("east") > 0.5 and h.share("main") < 0.05
    assert stores.worker.proc.poll() is None
    assert any(m.startswith("store map reloaded") for m in stores.worker.messages())
