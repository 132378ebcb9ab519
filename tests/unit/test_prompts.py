"""Spoken prompts: espeak-ng renders each prompt once into the cache; a store's
recordings replace rendered ones; an unknown language is one line; an
announcement is composed from the prompts. Needs espeak-ng (make setup
installs it); the tests that render skip without it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from worker.announce import CALLER_NUMBER, PHRASE_KEYS, number_key, spoken_numbers, what_to_say
from worker.hold.audio import SAMPLE_RATE
from worker.hold.dsp import rms_dbfs
from worker.prompts import (
    SENTENCE_GAP_S,
    WORD_GAP_S,
    PromptError,
    PromptLibrary,
    UnknownLanguage,
    default_cache_dir,
    trim,
)
from worker.waits import SpokenWait

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (make setup)"
)


def tone(path: Path, seconds: float = 0.5, hz: float = 440.0, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    x = np.concatenate(
        [np.zeros(rate // 10), 0.3 * np.sin(2 * np.pi * hz * t), np.zeros(rate // 5)]
    )
    sf.write(path, x, rate)
    return path


@needs_espeak
def test_rendered_once_and_reused_from_the_cache(tmp_path: Path) -> None:
    lib = PromptLibrary(tmp_path, level_dbfs=-20)
    en = lib.prompt_set("en", None, {})
    every = len(PHRASE_KEYS) + len(spoken_numbers())
    assert lib.rendered == every and len(en.audio) == every
    assert lib.prompt_set("en", None, {}) is en  # once per process
    files = sorted((tmp_path / "en").glob("*.wav"))
    assert len(files) == every
    # another process (a new library) on the same cache renders nothing
    again = PromptLibrary(tmp_path, level_dbfs=-20)
    again.prompt_set("en", None, {})
    assert again.rendered == 0
    # a changed text renders that prompt only
    again.prompt_set("en", None, {CALLER_NUMBER: "You are number"})
    assert again.rendered == 1
    for samples in en.audio.values():
        assert samples.dtype == np.float32 and not samples.flags.writeable
        assert abs(rms_dbfs(samples) - -20) < 1.5 or float(np.max(np.abs(samples))) > 0.85


@needs_espeak
def test_recordings_replace_rendered_prompts(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    tone(rec / f"{CALLER_NUMBER}.wav", 0.5)
    tone(rec / f"{number_key(3)}.flac", 0.25, hz=660)
    (rec / "notes.txt").write_text("not audio, not a prompt")
    lib = PromptLibrary(tmp_path / "cache", level_dbfs=-20)
    s = lib.prompt_set("en", rec, {})
    assert s.recorded == {CALLER_NUMBER, number_key(3)}
    # trimmed of its silence, resampled to 48 kHz
    assert abs(s.audio[CALLER_NUMBER].shape[0] - SAMPLE_RATE // 2) < SAMPLE_RATE // 100
    assert lib.rendered == len(PHRASE_KEYS) + len(spoken_numbers()) - 2


def test_all_recorded_needs_no_espeak(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    for key in [*PHRASE_KEYS, *(number_key(n) for n in spoken_numbers())]:
        tone(rec / f"{key}.wav", 0.1)
    lib = PromptLibrary(tmp_path / "cache", level_dbfs=-20, espeak=None)
    s = lib.prompt_set("pl", rec, {})
    assert lib.rendered == 0 and len(s.recorded) == len(s.audio)


def test_without_espeak_a_missing_recording_is_one_line(tmp_path: Path) -> None:
    lib = PromptLibrary(tmp_path, level_dbfs=-20, espeak=None)
    lib.check_language("anything")  # nothing to check it against
    with pytest.raises(PromptError) as e:
        lib.prompt_set("en", None, {})
    assert "espeak-ng is not installed" in str(e.value) and "\n" not in str(e.value)


@needs_espeak
def test_unknown_language_is_one_line(tmp_path: Path) -> None:
    lib = PromptLibrary(tmp_path, level_dbfs=-20)
    for ok in ("en", "en-us", "de", "zh", "cmn"):
        lib.check_language(ok)
    with pytest.raises(UnknownLanguage) as e:
        lib.check_language("xx")
    assert str(e.value) == (
        "language 'xx' is not an espeak-ng voice (espeak-ng --voices lists them)"
    )


@needs_espeak
def test_a_language_without_built_in_phrases_needs_them(tmp_path: Path) -> None:
    lib = PromptLibrary(tmp_path, level_dbfs=-20)
    with pytest.raises(PromptError, match=r"no text for the phrase 'caller_number' in 'pl'"):
        lib.prompt_set("pl", None, {})


@needs_espeak
def test_compose(tmp_path: Path) -> None:
    s = PromptLibrary(tmp_path, level_dbfs=-20).prompt_set("en", None, {})
    said = what_to_say(3, SpokenWait("minutes", 2), many_callers_above=10)
    out = s.compose(said)
    parts = [s.audio[k] for sentence in said for k in sentence]
    gaps = int(WORD_GAP_S * SAMPLE_RATE) * 3 + int(SENTENCE_GAP_S * SAMPLE_RATE)
    assert out.shape[0] == sum(p.shape[0] for p in parts) + gaps
    assert 2.0 < out.shape[0] / SAMPLE_RATE < 8.0
    assert s.compose([]).shape[0] == 0


def test_trim() -> None:
    x = np.concatenate([np.zeros(100), np.full(50, 0.5), np.zeros(30)]).astype(np.float32)
    assert trim(x).shape[0] == 50
    assert trim(np.zeros(10, dtype=np.float32)).shape[0] == 0


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "hold-worker" / "prompts"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    assert default_cache_dir().name.startswith("hold-worker-prompts-")
