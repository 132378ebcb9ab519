"""StoreCatalog: start-up errors name the setting and field; plans per store; reload."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from worker.catalog import CatalogError, StoreCatalog
from worker.settings import load_settings


def tone_file(path: Path, hz: float) -> Path:
    t = np.arange(16000) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * hz * t), 16000)
    return path


@pytest.fixture
def d(tmp_path: Path) -> Path:
    tone_file(tmp_path / "a.wav", 500)
    tone_file(tmp_path / "b.wav", 700)
    (tmp_path / "stores.yaml").write_text(
        "default: a\nstores:\n"
        "  a: {name: A, numbers: ['+15550301'], hold_audio: a.wav}\n"
        "  b: {name: B, numbers: ['+15550302'], hold_audio: b.wav, announcement: default,"
        " max_wait_s: 60, fallback: hangup}\n"
    )
    return tmp_path


def test_plans(d: Path) -> None:
    c = StoreCatalog(load_settings(stores=d / "stores.yaml", max_wait_s=0))
    c.load()
    a = c.plan_for({"sip.trunkPhoneNumber": "+15550301"})
    b = c.plan_for({"sip.trunkPhoneNumber": "+15550302"})
    assert (a.store_id, a.matched_by, a.announcement, a.timers.max_wait) == ("a", "number", None, 0)
    assert b.store_id == "b" and b.announcement is not None and b.timers.max_wait == 60
    assert a.hold.samples is not b.hold.samples
    assert c.default_plan().store_id == "a"


def test_broken_store_audio_stops_start_with_its_field(d: Path) -> None:
    (d / "b.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(CatalogError) as e:
        StoreCatalog(load_settings(stores=d / "stores.yaml")).load()
    assert str(e.value).startswith("HOLD_STORES: ") and "stores.b.hold_audio: " in str(e.value)


def test_announcement_without_a_store_map(d: Path) -> None:
    c = StoreCatalog(load_settings(announcement=d / "b.wav", announcement_every_s=10))
    assert c.load() is None
    plan = c.plan_for({})
    assert plan.matched_by == "none" and plan.announcement is not None
    assert plan.announcement.every == 10 * 48_000
    with pytest.raises(CatalogError, match=r"^HOLD_ANNOUNCEMENT: "):
        StoreCatalog(load_settings(announcement=d / "missing.wav")).load()


def test_invalid_edit_keeps_the_last_good_map(d: Path) -> None:
    c = StoreCatalog(load_settings(stores=d / "stores.yaml"))
    c.load()
    m = d / "stores.yaml"
    m.write_text(m.read_text() + "  c: {name: C, numbers: ['not-a-number']}\n")
    os.utime(m, ns=(1, 1))  # a different stamp whatever the clock's resolution
    assert c.plan_for({"sip.trunkPhoneNumber": "+15550302"}).store_id == "b"
    news = c.take_news()
    assert [lvl for lvl, _ in news] == [logging.ERROR] and "keeping the last good" in news[0][1]
    m.write_text(m.read_text().replace("not-a-number", "+15550303"))
    os.utime(m, ns=(2, 2))
    assert c.plan_for({"sip.trunkPhoneNumber": "+15550303"}).store_id == "c"
    assert c.take_news()[0][1] == "store map reloaded: 3 stores"
