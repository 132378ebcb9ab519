"""Decoding hold files: formats, rates, channels, depths, bad files, limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from worker.hold.audio import SAMPLE_RATE, HoldAudioError, clear_cache, load_hold_audio
from worker.hold.dsp import rms_dbfs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def write_tone(path: Path, freq: float, rate: int, channels: int, subtype: str, seconds=2.0):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def dominant_hz(x: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    win = x[:rate] * np.hanning(min(rate, x.shape[0]))
    spec = np.abs(np.fft.rfft(win))
    return float(np.fft.rfftfreq(win.shape[0], 1 / rate)[np.argmax(spec)])


@pytest.mark.parametrize(
    ("name", "freq", "rate", "channels", "subtype"),
    [
        ("mono8k.wav", 440.0, 8_000, 1, "PCM_16"),
        ("stereo44k.wav", 1000.0, 44_100, 2, "PCM_16"),
        ("deep24.wav", 660.0, 96_000, 1, "PCM_24"),
        ("float32.wav", 523.25, 22_050, 2, "FLOAT"),
        ("tone.flac", 880.0, 32_000, 1, "PCM_16"),
        ("tone.ogg", 750.0, 16_000, 1, "VORBIS"),
        ("tone.mp3", 600.0, 44_100, 2, "MPEG_LAYER_III"),
    ],
)
def test_any_format_becomes_48k_mono_at_pitch_and_level(
    tmp_path: Path, name: str, freq: float, rate: int, channels: int, subtype: str
) -> None:
    path = write_tone(tmp_path / name, freq, rate, channels, subtype)
    audio = load_hold_audio(path, level_dbfs=-20.0, max_seconds=60)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.source_rate == rate and audio.source_channels == channels
    # about 2 s minus the 50 ms seam fold (MP3 adds encoder padding)
    assert audio.seconds == pytest.approx(1.95, abs=0.1)
    got = dominant_hz(audio.samples[SAMPLE_RATE // 4 :])
    assert got == pytest.approx(freq, abs=2.0), f"{name}: pitch {got:.1f} Hz"
    assert rms_dbfs(audio.samples[SAMPLE_RATE // 4 : -SAMPLE_RATE // 4]) == pytest.approx(
        -20.0, abs=0.5
    )


def test_decoded_once_and_shared_read_only(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "a.wav", 440.0, 8000, 1, "PCM_16")
    a = load_hold_audio(path, level_dbfs=-20.0, max_seconds=60)
    b = load_hold_audio(path, level_dbfs=-20.0, max_seconds=60)
    assert a is b
    with pytest.raises(ValueError):
        a.samples[0] = 1.0


def test_default_asset_is_usable() -> None:
    audio = load_hold_audio(REPO / "assets" / "hold-default.flac", level_dbfs=-20.0, max_seconds=60)
    assert 10.0 < audio.seconds < 30.0
    assert rms_dbfs(audio.samples) == pytest.approx(-20.0, abs=0.5)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HoldAudioError, match="not found"):
        load_hold_audio(tmp_path / "nope.wav", level_dbfs=-20.0, max_seconds=60)


def test_not_audio(tmp_path: Path) -> None:
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio\n")
    with pytest.raises(HoldAudioError, match="not a readable audio file"):
        load_hold_audio(p, level_dbfs=-20.0, max_seconds=60)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(HoldAudioError, match="not a file"):
        load_hold_audio(tmp_path, level_dbfs=-20.0, max_seconds=60)


def test_corrupt_halfway(tmp_path: Path) -> None:
    good = write_tone(tmp_path / "x.flac", 440.0, 48000, 1, "PCM_16", seconds=4.0)
    raw = bytearray(good.read_bytes())
    half = len(raw) // 2
    raw[half:] = bytes(len(raw) - half)  # zero out the second half of the stream
    bad = tmp_path / "bad.flac"
    bad.write_bytes(bytes(raw))
    try:
        audio = load_hold_audio(bad, level_dbfs=-20.0, max_seconds=60)
    except HoldAudioError as e:
        assert "corrupt" in str(e) or "readable" in str(e)
    else:  # libsndfile may stop at the damage: then what is kept must be real audio
        assert audio.seconds < 4.0
        assert dominant_hz(audio.samples) == pytest.approx(440.0, abs=2.0)


def test_too_long_is_refused_before_decoding(tmp_path: Path) -> None:
    p = write_tone(tmp_path / "long.wav", 440.0, 8000, 1, "PCM_16", seconds=5.0)
    with pytest.raises(HoldAudioError, match=r"too long.*HOLD_MAX_AUDIO_SECONDS"):
        load_hold_audio(p, level_dbfs=-20.0, max_seconds=3.0)


def test_silent_file_refused(tmp_path: Path) -> None:
    p = tmp_path / "silence.wav"
    sf.write(str(p), np.zeros(16000), 8000)
    with pytest.raises(HoldAudioError, match="silent"):
        load_hold_audio(p, level_dbfs=-20.0, max_seconds=60)


def test_too_short_refused(tmp_path: Path) -> None:
    p = write_tone(tmp_path / "blip.wav", 440.0, 8000, 1, "PCM_16", seconds=0.1)
    with pytest.raises(HoldAudioError, match="too short"):
        load_hold_audio(p, level_dbfs=-20.0, max_seconds=60)


@pytest.mark.parametrize("rate", [8_000, 44_100, 48_000])
@pytest.mark.parametrize("dc", [0.5, -0.25, 0.01])
def test_dc_only_file_refused(tmp_path: Path, rate: int, dc: float) -> None:
    """A constant signal passes the silence check, but the caller hears nothing."""
    p = tmp_path / "dc.wav"
    sf.write(str(p), np.full(rate * 2, dc), rate, subtype="PCM_16")
    with pytest.raises(HoldAudioError, match=r"no audible content.*constant \(DC\) offset"):
        load_hold_audio(p, level_dbfs=-20.0, max_seconds=60)


def test_dc_with_inaudible_residue_refused(tmp_path: Path) -> None:
    """DC plus a 2 Hz drift and noise far below it: still nothing to hear."""
    rate = 16_000
    t = np.arange(rate * 2) / rate
    x = (
        0.5
        + 0.2 * np.sin(2 * np.pi * 2.0 * t)
        + 1e-5 * np.random.default_rng(1).normal(size=t.size)
    )
    p = tmp_path / "drift.wav"
    sf.write(str(p), x, rate, subtype="FLOAT")
    with pytest.raises(HoldAudioError, match="no audible content"):
        load_hold_audio(p, level_dbfs=-20.0, max_seconds=60)


def test_dc_offset_is_removed_from_usable_audio(tmp_path: Path) -> None:
    """A tone on a large DC offset plays as the tone at the target level."""
    rate = 8_000
    t = np.arange(rate * 2) / rate
    p = tmp_path / "offset.wav"
    sf.write(str(p), 0.5 + 0.1 * np.sin(2 * np.pi * 440.0 * t), rate, subtype="PCM_16")
    audio = load_hold_audio(p, level_dbfs=-20.0, max_seconds=60)
    x = np.asarray(audio.samples, dtype=np.float64)
    assert abs(float(np.mean(x))) < 1e-3
    assert abs(rms_dbfs(audio.samples) - (-20.0)) < 0.5
    assert abs(dominant_hz(audio.samples) - 440.0) < 2.0


def test_quiet_but_audible_file_accepted(tmp_path: Path) -> None:
    """The floor is for silence, not for a quietly mastered file (-50 dBFS)."""
    p = write_tone(tmp_path / "quiet.wav", 440.0, 16_000, 1, "FLOAT")
    data, rate = sf.read(str(p))
    sf.write(str(p), data * (10 ** (-50 / 20) / 0.3 * np.sqrt(2)), rate, subtype="FLOAT")
    audio = load_hold_audio(p, level_dbfs=-20.0, max_seconds=60)
    assert abs(rms_dbfs(audio.samples) - (-20.0)) < 0.5


def test_cache_keeps_one_version_per_file_and_is_bounded(tmp_path: Path) -> None:
    """Issue 12 defect 8: the decode cache was never trimmed (every version of
    every file ever decoded stayed in memory)."""
    import os

    from worker.hold import audio as audio_mod

    p = tmp_path / "edited.wav"
    for i in range(5):  # the same file edited five times
        write_tone(p, 300.0 + 100 * i, 8000, 1, "PCM_16", seconds=0.5)
        os.utime(p, ns=(i * 10**9, i * 10**9))
        load_hold_audio(p, level_dbfs=-20.0, max_seconds=60)
    assert len(audio_mod._cache) == 1
    for i in range(audio_mod.CACHE_MAX + 10):  # many different files
        q = write_tone(tmp_path / f"f{i}.wav", 440.0, 8000, 1, "PCM_16", seconds=0.3)
        load_hold_audio(q, level_dbfs=-20.0, max_seconds=60)
    assert len(audio_mod._cache) == audio_mod.CACHE_MAX
    last = tmp_path / f"f{audio_mod.CACHE_MAX + 9}.wav"
    assert load_hold_audio(last, level_dbfs=-20.0, max_seconds=60) is load_hold_audio(
        last, level_dbfs=-20.0, max_seconds=60
    )
