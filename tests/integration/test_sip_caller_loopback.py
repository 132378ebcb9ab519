"""Self-test of the pjsua2 carrier stand-in: sip_caller calls sip_answerer
over loopback, both as subprocesses, exactly as the e2e tests will use it.

Fails (never skips) when pjsua2 is missing: install tests/e2e/requirements.txt.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harness import analysis  # noqa: E402

CALLER_TONE = (697.0, 1209.0)  # the caller's signal (DTMF "1" pair)
ANSWERER_TONE = (852.0, 1477.0)  # the far end's signal (DTMF "9" pair)
WIN = 0.02  # 20 ms analysis windows = one RTP packet
PRESENT = 0.25  # each of two equal tones holds ~0.5 of the energy


@pytest.fixture(scope="module", autouse=True)
def _pjsua2_required() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import pjsua2; pjsua2.Endpoint; print(pjsua2.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"pjsua2 is not importable in {sys.executable}; install it with "
            f"`pip install -r tests/e2e/requirements.txt`.\n{proc.stderr[-2000:]}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def wavs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("wavs")
    caller = analysis.write_tone_wav(str(d / "caller.wav"), CALLER_TONE, 3.0)
    answerer = analysis.write_tone_wav(str(d / "answerer.wav"), ANSWERER_TONE, 3.0)
    # 1.0 s of silence, then the far-end tone: a known, exact "dead air"
    x, rate = analysis.read_wav(answerer)
    gap = str(d / "gap_then_tone.wav")
    import soundfile as sf

    sf.write(gap, np.concatenate([np.zeros(rate), x]), rate, subtype="PCM_16")
    return {"caller": caller, "answerer": answerer, "gap": gap}


class Answerer:
    def __init__(self, tmp: Path, *args: str, timeout: float = 20.0):
        self.result = tmp / "answerer.json"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harness.sip.answerer",
                "--port",
                "0",
                "--result",
                str(self.result),
                "--timeout",
                str(timeout),
                *args,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout, self.stderr = self.proc.stdout, self.proc.stderr
        self.port = self._wait_ready(15.0)

    def _wait_ready(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.stdout], [], [], 0.2)
            if r:
                line = self.stdout.readline()
                if line.startswith("READY "):
                    return int(line.split()[1])
                if not line and self.proc.poll() is not None:
                    break
        self.kill()
        pytest.fail(f"answerer did not become ready: {self.stderr.read()[-2000:]}")

    def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        try:
            self.proc.wait(timeout)
        finally:
            self.kill()
        assert self.result.exists(), f"answerer wrote no result; stderr: {self.stderr.read()}"
        data: dict[str, Any] = json.loads(self.result.read_text())
        return data

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def run_caller(
    tmp: Path, port: int, send_wav: str, *args: str, timeout: float = 60.0
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], float]:
    res_path, rec_path = tmp / "caller.json", tmp / "caller_heard.wav"
    cmd = [
        sys.executable,
        "-m",
        "harness.sip.caller",
        "--target",
        f"sip:+15550100@127.0.0.1:{port}",
        "--from",
        "+15551230123",
        "--send-wav",
        send_wav,
        "--record",
        str(rec_path),
        "--result",
        str(res_path),
        *args,
    ]
    if "--duration" not in args:
        cmd += ["--duration", "3"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - t0
    assert res_path.exists(), f"caller wrote no result (rc={proc.returncode}): {proc.stderr}"
    return proc, json.loads(res_path.read_text()), elapsed


def tone_mask(path: str, freqs: Sequence[float]) -> tuple[np.ndarray, int]:
    x, rate = analysis.read_wav(path)
    masks = [analysis.tone_presence(x, rate, f, WIN) > PRESENT for f in freqs]
    return np.logical_and.reduce(masks), rate


def assert_contains(path: str, freqs: Sequence[float], absent: Sequence[float]) -> float:
    """Tone ``freqs`` is present (continuously after its onset) and the
    ``absent`` tone is not; returns the onset time within the recording."""
    mask, _ = tone_mask(path, freqs)
    onset = analysis.first_window_where(mask, WIN)
    assert onset is not None, f"tone {freqs} not found in {path}"
    after = mask[round(onset / WIN) :]
    assert after.mean() > 0.9, (
        f"tone {freqs} only in {100 * after.mean():.0f}% of windows after onset"
    )
    other, _ = tone_mask(path, absent)
    assert not other.any(), f"unexpected tone {absent} in {path}"
    return onset


def test_answered_call_exchanges_audio(tmp_path: Path, wavs: dict[str, str]) -> None:
    ans = Answerer(
        tmp_path,
        "--answer-delay",
        "0.5",
        "--play",
        wavs["answerer"],
        "--record",
        str(tmp_path / "answerer_heard.wav"),
    )
    proc, res, elapsed = run_caller(
        tmp_path, ans.port, wavs["caller"], "--duration", "3", "--header", "X-Store-Id:store-7"
    )
    a = ans.finish()
    assert proc.returncode == 0, proc.stderr
    assert res["status_code"] == 200 and res["answered"] is True
    assert res["errors"] == [] and a["errors"] == []
    assert res["hangup_by"] == "local" and res["local_hangup_cause"] == "duration"
    ev = res["events"]
    ring = ev["answered"]["mono"] - ev["invite_sent"]["mono"]
    assert 0.45 < ring < 1.0, ring
    assert 2.9 < ev["hangup"]["mono"] - ev["answered"]["mono"] < 3.3
    assert elapsed < 10

    (call,) = a["calls"]
    assert call["headers"].get("X-Store-Id") == "store-7"
    assert call["headers"]["From"].startswith("sip:+15551230123@127.0.0.1")
    assert call["request_line"].startswith("INVITE sip:+15550100@127.0.0.1")

    rec = res["recording"]
    assert rec["sample_rate"] == 8000 and rec["channels"] == 1
    # sample 0 <=> recording.started: the file is exactly as long as the
    # wall-clock span it covers, so sample offsets are real time offsets
    assert abs(rec["duration_s"] - rec["expected_duration_s"]) < 0.06, rec
    assert abs(rec["offset_from_answer_s"]) < 0.05, rec

    onset = assert_contains(rec["path"], ANSWERER_TONE, CALLER_TONE)
    latency_ms = 1000 * (rec["offset_from_answer_s"] + onset)
    assert_contains(call["recording"]["path"], CALLER_TONE, ANSWERER_TONE)
    rec_ms = 1000 * rec["offset_from_answer_s"]
    print(
        f"\n[loopback] 200 OK -> first far-end tone in caller recording: {latency_ms:.0f} ms"
        f" (recorder started {rec_ms:.1f} ms after 200 OK, onset at {1000 * onset:.0f} ms"
        f" in file; ring {1000 * ring:.0f} ms)"
    )
    assert 0 <= latency_ms < 200


def test_dead_air_measurement_is_accurate(tmp_path: Path, wavs: dict[str, str]) -> None:
    """The far end answers and stays silent for exactly 1.0 s: the measured
    200 OK -> first tone must be ~1.0 s (plus loopback/jitter-buffer delay)."""
    ans = Answerer(tmp_path, "--play", wavs["gap"])
    proc, res, _ = run_caller(tmp_path, ans.port, wavs["caller"], "--duration", "2.5")
    a = ans.finish()
    assert proc.returncode == 0, proc.stderr
    rec = res["recording"]
    onset = assert_contains(rec["path"], ANSWERER_TONE, CALLER_TONE)
    measured = rec["offset_from_answer_s"] + onset
    # when the far end actually started its 1.0 s of silence (cross-process
    # CLOCK_MONOTONIC), relative to the caller's 200 OK moment
    expected = (
        a["calls"][0]["events"]["media_active"]["mono"] + 1.0 - res["events"]["answered"]["mono"]
    )
    print(
        f"\n[loopback] dead air: measured {1000 * measured:.0f} ms, far end's silence"
        f" ends at {1000 * expected:.0f} ms (diff {1000 * (measured - expected):+.0f} ms)"
    )
    assert -0.03 < measured - expected < 0.12


def test_rejected_call_exits_3(tmp_path: Path, wavs: dict[str, str]) -> None:
    ans = Answerer(tmp_path, "--answer-delay", "0.2", "--reject", "486")
    proc, res, _ = run_caller(tmp_path, ans.port, wavs["caller"])
    a = ans.finish()
    assert proc.returncode == 3, proc.stderr
    assert res["exit_code"] == 3
    assert res["status_code"] == 486 and res["answered"] is False
    assert res["reason"] == "Busy Here"
    assert res["hangup_by"] == "remote"
    assert res["recording"]["started"] is None and res["recording"]["exists"] is False
    assert a["calls"][0]["final_status"] == 486


def test_far_end_hangs_up_pcma(tmp_path: Path, wavs: dict[str, str]) -> None:
    ans = Answerer(tmp_path, "--codec", "PCMA", "--hangup-after", "1.0", "--play", wavs["answerer"])
    proc, res, _ = run_caller(
        tmp_path,
        ans.port,
        wavs["caller"],
        "--codec",
        "PCMA",
        "--duration",
        "6",
        "--log-file",
        str(tmp_path / "pj.log"),
    )
    ans.finish()
    assert proc.returncode == 0, proc.stderr
    assert res["hangup_by"] == "remote" and res["local_hangup_cause"] is None
    assert res["remote_hangup_reason"]["request_line"].startswith("BYE ")
    assert 0.9 < res["events"]["hangup"]["mono"] - res["events"]["answered"]["mono"] < 1.5
    assert_contains(res["recording"]["path"], ANSWERER_TONE, CALLER_TONE)
    sdp = [ln for ln in (tmp_path / "pj.log").read_text().splitlines() if ln.startswith("a=rtpmap")]
    assert sdp and all(("PCMA/8000" in ln) or ("telephone-event" in ln) for ln in sdp), sdp


def test_cancel_before_answer(tmp_path: Path, wavs: dict[str, str]) -> None:
    ans = Answerer(tmp_path, "--answer-delay", "5")
    proc, res, elapsed = run_caller(tmp_path, ans.port, wavs["caller"], "--hangup-after", "0.5")
    a = ans.finish()
    assert proc.returncode == 3, proc.stderr
    assert res["status_code"] == 487 and res["hangup_by"] == "local"
    assert res["local_hangup_cause"] == "hangup_after"
    assert a["calls"][0]["final_status"] == 487
    assert elapsed < 5


def test_usage_error_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.sip.caller",
            "--target",
            "sip:x@127.0.0.1",
            "--from",
            "1",
            "--send-wav",
            str(tmp_path / "missing.wav"),
            "--record",
            "r.wav",
            "--duration",
            "1",
            "--result",
            str(tmp_path / "r.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "does not exist" in proc.stderr
