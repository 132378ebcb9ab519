"""StoreCatalog: start-up errors name the setting and field; plans per store; reload."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import worker.hold.audio as audio_mod
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
    assert (a.store_id, a.matched_by, a.announcement, a.policy.max_wait) == ("a", "number", None, 0)
    assert b.store_id == "b" and b.announcement is not None and b.policy.max_wait == 60
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


# ---- defect 8 of issue 12: audio files edited on disk -------------------------


def restamp(path: Path, n: int) -> None:
    os.utime(path, ns=(n * 10**9, n * 10**9))  # a new version whatever the clock's resolution


def hz(audio: np.ndarray) -> float:
    x = audio[:48_000]
    return float(np.fft.rfftfreq(x.shape[0], 1 / 48_000)[np.argmax(np.abs(np.fft.rfft(x)))])


@pytest.fixture
def decode_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The threads that decoded (or looked up) audio through the catalog."""
    import worker.catalog as catalog_mod

    seen: list[str] = []
    real = catalog_mod.load_hold_audio

    def spy(*a: object, **kw: object) -> object:
        seen.append(threading.current_thread().name)
        return real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog_mod, "load_hold_audio", spy)
    return seen


def test_half_written_hold_audio_keeps_the_last_good(d: Path, decode_threads: list[str]) -> None:
    """HOLD_AUDIO overwritten by a half-written file: before the fix the next
    default_plan() (CallSession.__init__, on the event loop) decoded it there
    and raised, so every new call failed."""
    c = StoreCatalog(load_settings(audio=d / "a.wav"))
    c.load()
    old = c.default_plan().hold
    (d / "a.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")  # half-written: a bare header
    restamp(d / "a.wav", 1)
    decode_threads.clear()
    for _ in range(3):
        assert c.default_plan().hold is old  # no exception, the last good audio
    assert threading.current_thread().name not in decode_threads  # never on the caller
    c.wait_reloaded(10)
    assert c.default_plan().hold is old
    news = c.take_news()
    assert [lvl for lvl, _ in news] == [logging.ERROR] and "keeping the last good" in news[0][1]
    c.default_plan()
    c.wait_reloaded(10)
    assert c.take_news() == []  # logged once per version

    tone_file(d / "a.wav", 900)  # the upload completes
    restamp(d / "a.wav", 2)
    decode_threads.clear()
    c.default_plan()  # sees the change, decodes in the background
    assert threading.current_thread().name not in decode_threads
    c.wait_reloaded(10)
    new = c.default_plan().hold
    assert new is not old and hz(new.samples) == pytest.approx(900, abs=2)
    assert c.take_news() == [(logging.INFO, f"audio file reloaded: {d / 'a.wav'}")]


def test_plan_for_decodes_a_changed_file_itself(d: Path) -> None:
    c = StoreCatalog(load_settings(audio=d / "a.wav"))
    c.load()
    tone_file(d / "a.wav", 900)
    restamp(d / "a.wav", 3)
    plan = c.plan_for({})  # in a thread in call.py: the new audio for this very call
    assert hz(plan.hold.samples) == pytest.approx(900, abs=2)


def test_store_audio_edited_keeps_the_last_good(d: Path, decode_threads: list[str]) -> None:
    c = StoreCatalog(load_settings(stores=d / "stores.yaml"))
    c.load()
    old_a = c.default_plan().hold
    old_b = c.plan_for({"sip.trunkPhoneNumber": "+15550302"}).hold
    for name in ("a.wav", "b.wav"):
        (d / name).write_bytes(b"RIFF....WAVEfmt garbage")
        restamp(d / name, 4)
    decode_threads.clear()
    assert c.default_plan().hold is old_a
    assert threading.current_thread().name not in decode_threads
    assert c.plan_for({"sip.trunkPhoneNumber": "+15550302"}).hold is old_b
    c.wait_reloaded(10)
    news = c.take_news()
    assert len(news) == 2 and all(lvl == logging.ERROR for lvl, _ in news)


def test_decodes_kept_only_for_files_in_use(d: Path) -> None:
    m = d / "stores.yaml"
    c = StoreCatalog(load_settings(stores=m))
    c.load()
    for i in range(40):
        tone_file(d / f"s{i}.wav", 300 + 10 * i)
        m.write_text(
            f"default: s\nstores:\n  s: {{name: S, numbers: ['+15550301'], hold_audio: s{i}.wav}}\n"
        )
        restamp(m, 10 + i)
        assert hz(c.plan_for({}).hold.samples) == pytest.approx(300 + 10 * i, abs=2)
    assert len(c._good) <= 2  # HOLD_AUDIO and the one store's file
    assert len(audio_mod._cache) <= audio_mod.CACHE_MAX


def test_a_file_being_written_is_not_decoded_half_way(
    d: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WAV copied in place decodes "fine" to its first part: a changed file is
    only used once it has been still for WRITE_SETTLE_S."""
    import worker.catalog as catalog_mod

    monkeypatch.setattr(catalog_mod, "WRITE_SETTLE_S", 0.4)
    c = StoreCatalog(load_settings(audio=d / "a.wav"))
    c.load()
    old = c.default_plan().hold
    full = tone_file(d / "new.wav", 900).read_bytes()
    (d / "a.wav").write_bytes(full[: len(full) // 3])  # the copy, a third done
    assert c.default_plan().hold is old
    assert c.plan_for({}).hold is old  # not the first third of the new file
    (d / "a.wav").write_bytes(full)  # the copy completes
    c.wait_reloaded(10)
    new = c.default_plan().hold
    assert hz(new.samples) == pytest.approx(900, abs=2)
    assert new.seconds > 0.9  # the whole file, not a third of it


needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"
)


@needs_espeak
def test_unknown_store_language_stops_start_in_one_line(d: Path) -> None:
    (d / "stores.yaml").write_text(
        "default: a\nstores:\n  a: {name: A, hold_audio: a.wav, language: xx}\n"
    )
    with pytest.raises(CatalogError) as e:
        StoreCatalog(load_settings(stores=d / "stores.yaml", prompts_cache=d / "cache")).load()
    assert str(e.value) == (
        f"HOLD_STORES: {d / 'stores.yaml'}: stores.a.language: language 'xx' is not an "
        "espeak-ng voice (espeak-ng --voices lists them)"
    )


@needs_espeak
def test_position_plan_only_for_stores_that_announce(d: Path) -> None:
    (d / "stores.yaml").write_text(
        "default: a\nstores:\n"
        "  a: {name: A, numbers: ['+15550301'], hold_audio: a.wav}\n"
        "  b: {name: B, numbers: ['+15550302'], language: de,"
        " position_announcements: {enabled: true, every_s: 45}}\n"
    )
    c = StoreCatalog(load_settings(stores=d / "stores.yaml", prompts_cache=d / "cache"))
    c.load()
    assert c.announcing_stores() == ["b"]
    assert c.plan_for({"sip.trunkPhoneNumber": "+15550301"}).position is None
    b = c.plan_for({"sip.trunkPhoneNumber": "+15550302"})
    assert b.position is not None and b.position.settings.every_s == 45
    assert b.position.prompts.language == "de" and "caller_number" in b.position.prompts.audio
    assert list((d / "cache" / "de").glob("caller_number-*.wav"))
    rendered = c.prompts.rendered
    c.plan_for({"sip.trunkPhoneNumber": "+15550302"})
    assert c.prompts.rendered == rendered  # once


def test_no_store_map_no_position_announcements(d: Path) -> None:
    c = StoreCatalog(load_settings())
    c.load()
    assert c.default_plan().position is None and c.announcing_stores() == []
