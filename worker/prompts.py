"""Spoken prompts for position announcements: rendered once, cached as files.

A store's prompt set is every phrase of announce.py and every number an
announcement may say, in the store's language. Each prompt is either the
store's own recording (`prompts_dir/<key>.wav`, or .flac/.ogg/.mp3) or
rendered once with espeak-ng into a WAV file under the cache directory
(`HOLD_PROMPTS_CACHE`), named by a hash of the voice, the text and the
espeak-ng version, so a changed text or a new espeak-ng renders again and
every worker process (and replica sharing the directory) reuses the file.
The files are decoded into 48 kHz mono float32 like the hold audio (silence
at either end trimmed, level normalised), kept read-only in memory and shared
by the process's calls; an announcement is composed from them by
concatenation (`PromptSet.compose`).

Why the espeak-ng command and not a Python TTS library: the only libraries
that speak offline in many languages (pyttsx3, py-espeak-ng) drive the same
espeak-ng through one process-wide engine with its own event loop, which is
not safe under the thread executor, and would be a new dependency for what
is about forty short files rendered once; the command is stable, is what
assets/make_announcement.sh already uses, and a failure stays in its process.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .announce import PHRASE_KEYS, built_in_phrases, prompt_texts
from .hold.audio import SAMPLE_RATE
from .hold.dsp import Audio, normalise, rms_dbfs
from .keypad import KEYPAD_PHRASE_KEYS, built_in_keypad_phrases, keypad_prompt_texts

ESPEAK = "espeak-ng"
# the project's announcement's voice settings (assets/make_announcement.sh)
ESPEAK_SPEED_WPM = 150
ESPEAK_PITCH = 40
RENDER_TIMEOUT_S = 20.0
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
MAX_PROMPT_S = 30.0
TRIM_BELOW_DB = 40.0  # silence at the ends: quieter than the peak by this much
WORD_GAP_S = 0.12  # between the prompts of one sentence
SENTENCE_GAP_S = 0.45  # between sentences


class PromptError(Exception):
    """One line for the operator."""


class UnknownLanguage(PromptError):
    """A store's language that espeak-ng has no voice for."""


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/hold-worker/prompts` (or ~/.cache/...), else a
    directory of this user's under the system temp directory."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg:
        return Path(xdg) / "hold-worker" / "prompts"
    home = Path.home() if "HOME" in os.environ else None
    if home is not None and home.is_dir() and os.access(home, os.W_OK):
        return home / ".cache" / "hold-worker" / "prompts"
    return Path(tempfile.gettempdir()) / f"hold-worker-prompts-{os.getuid()}"


def espeak_path() -> str | None:
    return shutil.which(ESPEAK)


@cache
def espeak_voices(espeak: str) -> frozenset[str]:
    """The voice names `espeak-ng --voices` lists (lower case), with the
    other languages each voice speaks (`(zh 5)`)."""
    out = subprocess.run(
        [espeak, "--voices"], capture_output=True, text=True, timeout=RENDER_TIMEOUT_S, check=True
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 2:
            continue
        names.add(cols[1].lower())
        names.update(m.lower() for m in re.findall(r"\(([^ )]+) \d+\)", line))
    return frozenset(names)


@cache
def espeak_version(espeak: str) -> str:
    out = subprocess.run(
        [espeak, "--version"], capture_output=True, text=True, timeout=RENDER_TIMEOUT_S, check=True
    ).stdout
    return out.strip()


def render(espeak: str, voice: str, text: str, out: Path) -> None:
    """Speak `text` with espeak-ng's `voice` into the WAV file `out`, atomically
    (a temporary file renamed over it: two processes rendering the same prompt
    at once both end with a whole file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=out.parent)
    os.close(fd)
    try:
        cmd = [espeak, "-v", voice, "-s", str(ESPEAK_SPEED_WPM), "-p", str(ESPEAK_PITCH)]
        # the text on stdin (UTF-8, -b 1): never read as an option
        subprocess.run(
            [*cmd, "-b", "1", "-w", tmp, "--stdin"],
            input=text.encode(),
            capture_output=True,
            timeout=RENDER_TIMEOUT_S,
            check=True,
        )
        os.replace(tmp, out)
    except subprocess.CalledProcessError as e:
        err = e.stderr.decode(errors="replace").strip().splitlines()
        raise PromptError(f"espeak-ng failed for {voice}: {err[-1] if err else e}") from None
    except subprocess.TimeoutExpired:
        raise PromptError(f"espeak-ng took over {RENDER_TIMEOUT_S:.0f} s for {voice}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def trim(samples: Audio) -> Audio:
    """Without the silence at either end (quieter than the peak by TRIM_BELOW_DB)."""
    if samples.shape[0] == 0:
        return samples
    floor = float(np.max(np.abs(samples))) * 10 ** (-TRIM_BELOW_DB / 20)
    loud = np.flatnonzero(np.abs(samples) > floor)
    if loud.shape[0] == 0:
        return samples[:0]
    return samples[loud[0] : loud[-1] + 1]


def load_prompt(path: Path, *, level_dbfs: float) -> Audio:
    """A prompt file as 48 kHz mono float32, trimmed and normalised, read-only."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as e:
        raise PromptError(f"{path}: not a readable audio file: {e}") from None
    if data.shape[0] > MAX_PROMPT_S * rate:
        raise PromptError(f"{path}: longer than {MAX_PROMPT_S:.0f} s")
    mono = data.mean(axis=1, dtype=np.float32)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    mono = trim(mono)
    if mono.shape[0] < SAMPLE_RATE // 20 or rms_dbfs(mono) <= -60.0:
        raise PromptError(f"{path}: silent (nothing to say)")
    out = normalise(mono, level_dbfs)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class PromptSet:
    """One language's (and store's) prompts, decoded: key -> samples."""

    language: str
    audio: Mapping[str, Audio]
    recorded: frozenset[str]  # the keys from the store's own files

    def compose(self, sentences: Sequence[Sequence[str]]) -> Audio:
        """One announcement: the prompts of each sentence with short gaps,
        a longer one between sentences."""
        word = np.zeros(int(WORD_GAP_S * SAMPLE_RATE), dtype=np.float32)
        sentence = np.zeros(int(SENTENCE_GAP_S * SAMPLE_RATE), dtype=np.float32)
        parts: list[Audio] = []
        for i, keys in enumerate(sentences):
            if i:
                parts.append(sentence)
            for j, key in enumerate(keys):
                if j:
                    parts.append(word)
                parts.append(self.audio[key])
        if not parts:
            return np.zeros(0, dtype=np.float32)
        out = np.concatenate(parts).astype(np.float32, copy=False)
        out.setflags(write=False)
        return out


def _recorded(prompts_dir: Path | None) -> dict[str, Path]:
    if prompts_dir is None:
        return {}
    found: dict[str, Path] = {}
    for f in sorted(prompts_dir.iterdir()):
        if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file():
            found.setdefault(f.stem, f)
    return found


class PromptLibrary:
    """The process's prompt sets, made once each (thread-safe)."""

    def __init__(self, cache_dir: Path, *, level_dbfs: float, espeak: str | None = "auto") -> None:
        """`espeak`: the espeak-ng command; "auto" finds it on PATH, None: none."""
        self.cache_dir = cache_dir
        self.level_dbfs = level_dbfs
        self.espeak = espeak_path() if espeak == "auto" else espeak
        self._lock = threading.Lock()
        self._sets: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], PromptSet] = {}
        self.rendered = 0  # espeak-ng runs by this library (tests: rendered once)

    def check_language(self, language: str) -> None:
        """PromptError unless espeak-ng has this voice (nothing to check without it)."""
        if self.espeak is None:
            return
        try:
            voices = espeak_voices(self.espeak)
        except (OSError, subprocess.SubprocessError) as e:
            raise PromptError(f"espeak-ng --voices failed: {e}") from None
        if language.lower() not in voices:
            raise UnknownLanguage(
                f"language {language!r} is not an espeak-ng voice (espeak-ng --voices lists them)"
            )

    def prompt_set(
        self, language: str, prompts_dir: Path | None, phrases: Mapping[str, str]
    ) -> PromptSet:
        """Every prompt of `language` (the store's recordings first), rendering
        the missing ones once; PromptError says what cannot be had."""
        texts = prompt_texts({**(built_in_phrases(language) or {}), **phrases})
        needed = [*PHRASE_KEYS, *(k for k in texts if k not in PHRASE_KEYS)]
        return self._set("position", language, prompts_dir, phrases, texts, needed)

    def keypad_set(
        self, language: str, prompts_dir: Path | None, phrases: Mapping[str, str]
    ) -> PromptSet:
        """The keypad options' prompts (keypad.py): its phrases and the digits."""
        texts = keypad_prompt_texts({**(built_in_keypad_phrases(language) or {}), **phrases})
        needed = [*KEYPAD_PHRASE_KEYS, *(k for k in texts if k not in KEYPAD_PHRASE_KEYS)]
        return self._set("keypad", language, prompts_dir, phrases, texts, needed)

    def _set(
        self,
        kind: str,
        language: str,
        prompts_dir: Path | None,
        phrases: Mapping[str, str],
        texts: Mapping[str, str],
        needed: Sequence[str],
    ) -> PromptSet:
        key = (kind, language.lower(), str(prompts_dir or ""), tuple(sorted(phrases.items())))
        with self._lock:
            got = self._sets.get(key)
            if got is None:
                got = self._make(language, prompts_dir, texts, needed)
                self._sets[key] = got
            return got

    def _make(
        self,
        language: str,
        prompts_dir: Path | None,
        texts: Mapping[str, str],
        needed: Sequence[str],
    ) -> PromptSet:
        recorded = _recorded(prompts_dir)
        audio: dict[str, Audio] = {}
        for k in needed:
            if k in recorded:
                audio[k] = load_prompt(recorded[k], level_dbfs=self.level_dbfs)
                continue
            if k not in texts:
                raise PromptError(
                    f"no text for the phrase {k!r} in {language!r}: give it in phrases "
                    f"or as a recording ({k}.wav in prompts_dir)"
                )
            audio[k] = load_prompt(
                self._rendered(language, texts[k], k), level_dbfs=self.level_dbfs
            )
        return PromptSet(language, audio, frozenset(k for k in needed if k in recorded))

    def _rendered(self, voice: str, text: str, key: str) -> Path:
        if self.espeak is None:
            raise PromptError(
                f"espeak-ng is not installed (apt-get install espeak-ng) and there is no "
                f"recording {key}.wav to use instead"
            )
        self.check_language(voice)
        digest = hashlib.sha256(
            f"{espeak_version(self.espeak)}\0{voice}\0{ESPEAK_SPEED_WPM}\0{ESPEAK_PITCH}\0{text}".encode()
        ).hexdigest()[:16]
        path = self.cache_dir / voice.lower() / f"{key}-{digest}.wav"
        if not path.is_file():
            try:
                render(self.espeak, voice, text, path)
            except OSError as e:
                raise PromptError(f"cannot write the prompt cache {path.parent}: {e}") from None
            self.rendered += 1
        return path
