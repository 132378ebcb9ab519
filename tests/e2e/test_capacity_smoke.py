"""`make bench`'s capacity run in small (bench/capacity.py): both workers at
N = 2 on a core of their own fed by the Go load generator, one variant, the
floors and a profile, short windows. Asserts that every figure was produced
and that the calls were held (no timing bounds: the figures are
BENCHMARKS.md's business)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import capacity_report

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_capacity_harness_produces_every_figure(lk_env, tmp_path):
    if not (REPO / ".devstack" / "bin" / "loadgen").exists():
        pytest.fail("the load generator is not built: make setup (bash bench/loadgen/build.sh)")
    out = tmp_path / "capacity.json"
    cmd = [
        sys.executable, "-m", "bench.capacity", "--sizes", "2", "--only", "both",
        "--steady", "3", "--settle", "1", "--handoff-wait", "3", "--variants", "stream",
        "--processes", "2", "--profile", "2", "--floor-sizes", "2", "--json", str(out),
    ]  # fmt: skip
    env = {**os.environ, **lk_env}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    print(p.stdout[-2500:])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads(out.read_text())
    for kind in ("ours", "baseline"):
        (step,) = doc["steps"][kind]
        assert "error" not in step, step
        assert step["answered"] == 2 and step["handoffs_measured"] == 2, step
        assert step["worker_cpu"] > 0 and step["generator"]["ticks"] > 0, step
        assert step["gap_share"] is not None and step["dead_air_ms_p95"] is not None
    (variant, procs) = doc["variants"]
    assert variant["variant"] == "stream" and variant["answered"] == 2, variant
    assert procs["processes"] == 2 and procs["answered"] == 2, procs
    assert {(f["mode"], f["n"]) for f in doc["floors"]} == {("publish", 2), ("subscribe", 2)}
    for f in doc["floors"]:
        assert f.get("answered") == f["n"] and f["cpu"] > 0, f
    (prof,) = doc["profiles"]
    assert prof["threads"] and prof["profile"].get("python"), prof.get("profile")
    md = capacity_report.render(doc)
    assert "Held calls per worker core" in md and "| ours | 2 | 2/2 |" in md
