"""bench/capacity.py's pure parts and BENCHMARKS.md's capacity section."""

from __future__ import annotations

from typing import Any

from bench import capacity, capacity_report


def room(gap_ms: float) -> dict[str, Any]:
    return {"gap_ms": gap_ms, "longest_gap_ms": gap_ms}


def run(n: int, gaps: list[float], dead: float, hand: float, handoffs: int) -> dict[str, Any]:
    return {
        "steady_s": 20.0,
        "loadgen": {
            "rooms": [room(g) for g in gaps],
            "summary": {
                "answered": len(gaps),
                "dead_air_ms_p95": dead,
                "handoff_ms_p95": hand,
                "handoffs_measured": handoffs,
            },
        },
    }


def test_a_step_passes_only_when_every_bound_holds() -> None:
    ok = capacity.verdict(2, run(2, [0.0, 10.0], 120.0, 450.0, 2))
    assert ok["passes"] and ok["gap_share"] == 10.0 / 40_000.0
    assert not capacity.verdict(3, run(2, [0.0, 0.0], 120.0, 450.0, 2))["passes"]  # 2 of 3
    assert not capacity.verdict(2, run(2, [0.0, 40.0], 120.0, 450.0, 2))["passes"]  # 0.1 %
    assert not capacity.verdict(2, run(2, [0.0, 0.0], 500.0, 450.0, 2))["passes"]
    assert not capacity.verdict(2, run(2, [0.0, 0.0], 120.0, 700.0, 2))["passes"]
    assert not capacity.verdict(2, run(2, [0.0, 0.0], 120.0, 450.0, 1))["passes"]


LIB = "/usr/lib/py"
SITE = "/w/site-packages"


def test_python_samples_go_to_the_innermost_owner() -> None:
    raw = "\n".join(
        [
            f"run ({LIB}/asyncio/base_events.py:1);_run_once ({LIB}/asyncio/base_events.py:2) 50",
            f"_run_once ({LIB}/asyncio/base.py:2);poll_once (/w/worker/media/monitor.py:9) 20",
            f"_run_once ({LIB}/asyncio/x.py:2);capture_frame ({SITE}/livekit/rtc/source.py:1) 20",
            "main (<frozen runpy>:1) 10",
        ]
    )
    s = capacity.pyspy_summary(raw)
    assert s == {
        "asyncio event loop": 0.5,
        "ours": 0.2,
        "livekit.rtc (FFI events, audio frames)": 0.2,
        "other Python": 0.1,
    }


def test_threads_are_grouped_by_what_they_do() -> None:
    g = capacity_report.thread_groups(
        {"AudioEncoderQue": 0.05, "python": 0.07, "network_thread": 0.04, "worker_thread": 0.03,
         "SyntheticAudioD": 0.02, "tokio-rt-worker": 0.01, "weird": 0.001}
    )  # fmt: skip
    assert g["Opus encode (libwebrtc encoder queue)"] == 0.05
    assert g["WebRTC network and worker threads"] == 0.07
    assert g["Python"] == 0.07 and g["other threads"] == 0.001


def test_the_section_names_the_headline_and_marks_a_failed_step() -> None:
    step = {"n": 10, "answered": 10, "worker_cpu": 0.33, "cpu_per_call": 0.033,
            "rss_per_call_over_idle_mb": 2.0, "gap_share": 0.0, "longest_gap_ms": 0.0,
            "dead_air_ms_p50": 50, "dead_air_ms_p95": 80, "handoff_ms_p50": 420,
            "handoff_ms_p95": 450, "generator": {"cpu_steady_share": 0.06, "late_ticks": 0},
            "passes": True}  # fmt: skip
    bad = {**step, "n": 20, "passes": False, "dead_air_ms_p95": 900}
    doc = {
        "date": "2026-11-29T00:00:00Z",
        "minutes": 3,
        "cores": {"worker": "1", "rest": "0"},
        "criteria": {"gap_share_max": 0.001, "dead_air_p95_ms_max": 500.0,
                     "handoff_p95_ms_max": 700.0},
        "plan": {"at": 10, "join_interval": 0.2},
        "steps": {"ours": [step, bad]},
        "capacity": {"ours": 10},
        "variants": [{**step, "variant": "stream", "cpu_per_call": 0.05}],
        "floors": [{"mode": "subscribe", "n": 10, "answered": 10, "cpu_per_call": 0.025}],
    }  # fmt: skip
    md = capacity_report.render(doc)
    assert "ours **10**" in md
    assert "| ours | 20 | 10/20 |" in md and "**no** |" in md
    assert "| stream | 33.0 % | 5.00 % | 1.52 |" in md
    assert "| subscribe | 10 | 10/10 | 2.50 % | 3.30 % | 1.32 |" in md
