"""What each benchmark caller heard: dead air, handoff, gaps in the hold stream.

Reuses the harness's analysis (harness/analysis.py: ``hold_span`` finds
the hold audio in the caller's 8 kHz recording by normalised correlation
against the hold asset; ``notch`` removes the agent's tone). To stay cheap on
long recordings it looks only where it needs to: the first seconds after the
answer for the onset (dead air), the seconds around the agent's arrival for
the end (handoff).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis import hold_span, notch, read_wav

GAP_WINDOW_S = 0.02
GAP_DBFS = -60.0
ONSET_BLOCK_S = 3.0  # onset search: 3 s slices every 2 s


def _onset(rec: np.ndarray, ref: np.ndarray, rate: int, limit_s: float) -> float | None:
    step, block = int(2.0 * rate), int(ONSET_BLOCK_S * rate)
    for b in range(0, min(rec.shape[0], int(limit_s * rate)), step):
        span = hold_span(rec[b : b + block], ref, rate)
        if span is not None:
            return b / rate + span[0]
    return None


def silent_share(rec: np.ndarray, rate: int, t0: float, t1: float) -> tuple[float, float, float]:
    """(silent share, seconds examined, longest silent run in s) of 20 ms
    windows in rec[t0:t1] whose RMS is under GAP_DBFS."""
    w = int(GAP_WINDOW_S * rate)
    a, b = max(0, int(t0 * rate)), min(rec.shape[0], int(t1 * rate))
    n = (b - a) // w
    if n <= 0:
        return 0.0, 0.0, 0.0
    frames = rec[a : a + n * w].reshape(n, w)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    silent = 20 * np.log10(np.maximum(rms, 1e-10)) < GAP_DBFS
    longest = run = 0
    for s in silent:
        run = run + 1 if s else 0
        longest = max(longest, run)
    return float(np.mean(silent)), n * GAP_WINDOW_S, longest * GAP_WINDOW_S


def analyse(job: dict[str, Any]) -> dict[str, Any]:
    """One call. job: result (path of the caller's JSON), ref (path of the
    8 kHz reference .npy), agent_first_audio (wall time or None), agent_hz,
    hold_until (wall time: end of the hold period for the gap share when no
    agent came), hold_from (wall time: start of that period instead of the
    onset, for the drain round)."""
    res = json.loads(Path(job["result"]).read_text())
    out: dict[str, Any] = {
        "number": job.get("number"),
        "answered": bool(res.get("answered")),
        "status_code": res.get("status_code"),
        "hangup_by": res.get("hangup_by"),
        "errors": res.get("errors", []),
        "dead_air_ms": None,
        "handoff_ms": None,
        "gap_share": None,
        "gap_seconds": None,
        "hold_seconds": None,
        "longest_gap_s": None,
    }
    rec_info = res.get("recording") or {}
    started = rec_info.get("started")
    path = Path(rec_info.get("path") or "")
    if not out["answered"] or not started or not path.exists():
        return out
    rec, rate = read_wav(str(path))
    rec = rec.astype(np.float32)
    ref = np.load(job["ref"])
    rec_t0 = float(started["wall"])
    offset = float(rec_info.get("offset_from_answer_s") or 0.0)

    agent_at = job.get("agent_first_audio")
    agent_hz = float(job.get("agent_hz") or 1700.0)
    onset_limit = (agent_at - rec_t0) if agent_at else rec.shape[0] / rate
    onset = _onset(rec, ref, rate, onset_limit)
    if onset is not None:
        out["dead_air_ms"] = (offset + onset) * 1000.0

    if agent_at:
        a = max(0, int((agent_at - rec_t0 - 2.0) * rate))
        seg = notch(rec[a:], rate, [agent_hz])
        span = hold_span(seg, notch(ref, rate, [agent_hz]), rate)
        if span is not None:
            gone = rec_t0 + a / rate + span[1]
            out["handoff_ms"] = (gone - agent_at) * 1000.0
            out["hold_reaches_end"] = span[1] >= seg.shape[0] / rate - 0.3

    hold_from = job.get("hold_from")
    t_from = (hold_from - rec_t0) if hold_from else onset
    t_to = (agent_at or job.get("hold_until") or 0.0) - rec_t0
    if t_from is not None and t_to > t_from:
        share, secs, longest = silent_share(rec, rate, t_from, t_to)
        out.update(
            gap_share=share, hold_seconds=secs, gap_seconds=share * secs, longest_gap_s=longest
        )
    return out
