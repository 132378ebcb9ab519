"""Held calls per worker core (issue 15): the worker alone on a core of its own,
fed by synthetic callers that cost far less than it.

The machine has two cores. The worker under test runs on core 1 (``taskset``);
livekit-server, Redis, livekit-sip, the guardian and the load generator
(bench/loadgen, Go: N callers of participant kind ``sip`` publishing
pre-encoded Opus, one human agent per room for the handoff) run on core 0.
For each worker (ours, the baseline) and each N (step 10), a fresh worker:

1. idle CPU for a few seconds;
2. the generator joins N callers (one room each, an explicit dispatch of the
   worker per room); once every room has hold audio, ``--settle`` s, then a
   ``--steady`` window in which the worker's CPU (its process tree, /proc),
   its threads' CPU and its memory are measured, and the generator measures
   the hold stream of every room (RTP packets and sizes, no decoding: a gap is
   100 ms or more without an audio packet) and its own CPU and missed ticks;
3. an agent joins each room and speaks; handoff = the agent's first packet ->
   the end of the hold audio at the caller.

N passes when every call was answered, the hold stream's gaps are under 0.1 %
of the window, dead air p95 < 500 ms and handoff p95 < 700 ms. The headline,
held calls per worker core, is the largest N that passes; the steps stop at
the first N that fails.

Then, at ``--at`` calls (default: ours' capacity point, where the defaults
hold every call; at a saturated N every per-call figure is the core's limit):
variants of ours (the older
AudioStream levels, 1000 ms pushes, the call registry on), 2 and 4 worker
processes sharing the core, and the floors (bench/floor.py: a bare livekit.rtc
process that only publishes, and one that publishes and subscribes); and a
profile of ours at ``--profile`` sizes (py-spy for the Python threads, the
threads' CPU from /proc, perf by thread and library where the kernel allows).

    python -m bench.capacity [--sizes 10,20,...] [--json bench/capacity.json]

Needs the local stack and the built generator (bench/make-bench.sh does both).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bench import procstat
from harness.stack import WorkerProcess, stack_env, stack_pids, start_worker, stop_worker

REPO = Path(__file__).resolve().parents[1]
LOADGEN = REPO / ".devstack" / "bin" / "loadgen"
WORKER_CORE, REST_CORE = "1", "0"
GAP_MAX, DEAD_AIR_P95_MAX, HANDOFF_P95_MAX = 0.001, 500.0, 700.0
REDIS_URL = "redis://127.0.0.1:6390"


def log(msg: str) -> None:
    print(f"[capacity {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Plan:
    sizes: list[int]
    kinds: list[str]
    at: int = 0  # N of the variants and processes; 0: ours' capacity point
    steady: float = 20.0
    settle: float = 3.0
    idle: float = 3.0
    handoff_wait: float = 5.0
    join_interval: float = 0.2
    agent_interval: float = 0.2
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    processes: list[int] = field(default_factory=lambda: [2, 4])
    floors: bool = True
    floor_sizes: list[int] = field(default_factory=lambda: [10])  # and the variants' N
    profile: list[int] = field(default_factory=lambda: [1, 10, 30])
    profile_s: float = 10.0


VARIANTS: dict[str, dict[str, str]] = {
    # before the cut (issue 15): levels from an AudioStream of the decoded audio
    "stream": {"HOLD_MEDIA_LEVELS": "stream"},
    # before the cut: every FFI event to every call's event loop (the SDK's way)
    "fanout": {"HOLD_FFI_NARROW": "false"},
    # the worker as it was before this three cuts
    "before": {
        "HOLD_FFI_NARROW": "false",
        "HOLD_MEDIA_LEVELS": "stream",
        "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS": "500",
    },
    "chunk1000": {"HOLD_CHUNK_MS": "1000"},
    "poll1s": {"HOLD_MEDIA_POLL_S": "1.0"},
    # before: livekit-agents' event-loop watchdog on at 500 ms (two wake-ups
    # per 50 ms per call; the worker turns it off unless set)
    "loopmon500": {"LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS": "500"},
    # a phone-bound track (G.711 at 8 kHz at the far end): no RED, 24 kbit/s
    "nored": {"HOLD_TRACK_RED": "false"},
    "24k": {"HOLD_TRACK_MAX_BITRATE": "24000"},
    "nored-24k": {"HOLD_TRACK_RED": "false", "HOLD_TRACK_MAX_BITRATE": "24000"},
    "nored-24k-chunk1000": {
        "HOLD_TRACK_RED": "false",
        "HOLD_TRACK_MAX_BITRATE": "24000",
        "HOLD_CHUNK_MS": "1000",
    },
    # the production set-up: the call registry's record and 500 ms heartbeat
    "registry": {"HOLD_REDIS_URL": REDIS_URL},
}


# what `make bench` measures (the rest on demand: --variants)
DEFAULT_VARIANTS: tuple[str, ...] = (
    "before", "fanout", "stream", "loopmon500", "chunk1000", "poll1s", "nored-24k",
    "registry",
)  # fmt: skip

# ------------------------------------------------------------------ processes


def err_file(p: Path) -> BinaryIO:
    return p.open("wb")  # the child keeps its own descriptor


def pin_stack(cores: str = REST_CORE) -> dict[str, int]:
    """Every thread of the stack's services onto `cores` (the rest core; all
    of them again when the run ends)."""
    pids = stack_pids()
    for pid in pids.values():
        subprocess.run(
            ["taskset", "-a", "-p", "-c", cores, str(pid)],
            check=False,
            capture_output=True,
        )
    return pids


def worker_argv(kind: str) -> list[str]:
    mod = "worker" if kind == "ours" else "bench.baseline_worker"
    return ["taskset", "-c", WORKER_CORE, sys.executable, "-m", mod, "start", "--log-level", "info"]


def spawn(
    kind: str, env: dict[str, str], agent_name: str, log_dir: Path, extra: dict[str, str]
) -> WorkerProcess:
    if kind == "ours":
        hold = {"HOLD_AGENT_NAME": agent_name, "HOLD_MAX_CALLS": "400", **extra}
    else:
        hold = {"BENCH_AGENT_NAME": agent_name, "BENCH_BASELINE_LOAD": "off"}
    return start_worker({**env, **hold}, log_dir, argv=worker_argv(kind), register_timeout=90.0)


def tree_cpu(pids: list[int]) -> list[procstat.TreeSample]:
    return [procstat.sample_cpu(p) for p in pids]


def cpu_between(a: list[procstat.TreeSample], b: list[procstat.TreeSample]) -> float:
    return sum(procstat.cpu_seconds_between(x, y) for x, y in zip(a, b, strict=True))


def threads_of(pids: list[int]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for root in pids:
        for pid in procstat.descendants(root):
            out.update(procstat.thread_ticks(pid))
    return dict(out)


# ------------------------------------------------------------------ profile


def pyspy_bin() -> str | None:
    p = Path(sys.executable).parent / "py-spy"
    return str(p) if p.exists() else shutil.which("py-spy")


def classify_stack(stack: str) -> str:
    """A py-spy collapsed stack (outermost first) -> who spent the sample."""
    frames = stack.split(";")
    for f in reversed(frames):  # the innermost frame that names a known owner
        if "worker/" in f and "site-packages" not in f:
            return "ours"
        if "livekit/rtc/" in f:
            return "livekit.rtc (FFI events, audio frames)"
        if "livekit/agents/" in f:
            return "livekit-agents"
        if "/asyncio/" in f or "selectors.py" in f:
            return "asyncio event loop"
    return "other Python"


def pyspy_summary(raw: str) -> dict[str, float]:
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[classify_stack(stack)] += int(n)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in counts.most_common()}


PERF_DSO = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+(\S+)\s*$")


def perf_summary(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        m = PERF_DSO.match(line)
        if m:
            rows.append({"share": float(m.group(1)) / 100, "thread": m.group(2), "dso": m.group(3)})
    return rows[:25]


async def profile(pid: int, seconds: float, work: Path) -> dict[str, Any]:
    """py-spy (Python frames, not pausing the worker) and perf (threads x
    libraries) on the worker for `seconds`, both run on the rest core."""
    out: dict[str, Any] = {}
    procs = []
    spy = pyspy_bin()
    raw = work / f"pyspy-{pid}.txt"
    if spy:
        spy_cmd = [
            "taskset", "-c", REST_CORE, spy, "record", "--pid", str(pid), "--duration",
            str(int(seconds)), "--rate", "100", "--format", "raw", "--nonblocking",
            "--output", str(raw),
        ]  # fmt: skip
        procs.append(
            await asyncio.create_subprocess_exec(
                *spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    else:
        out["pyspy_error"] = "py-spy not installed (make setup installs it)"
    perf = shutil.which("perf")
    data = work / f"perf-{pid}.data"
    if perf:
        perf_cmd = [
            "taskset", "-c", REST_CORE, perf, "record", "-e", "cpu-clock", "-F", "499",
            "-p", str(pid), "-o", str(data), "--", "sleep", str(seconds),
        ]  # fmt: skip
        procs.append(
            await asyncio.create_subprocess_exec(
                *perf_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    else:
        out["perf_error"] = "perf not installed"
    await asyncio.gather(*(p.wait() for p in procs))
    if spy and raw.exists():
        out["python"] = pyspy_summary(raw.read_text())
    if perf and data.exists():
        rep = await asyncio.to_thread(
            subprocess.run,
            [perf, "report", "-i", str(data), "--stdio", "--sort", "comm,dso", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        out["perf"] = perf_summary(rep.stdout)
        if not out["perf"]:
            out["perf_error"] = (rep.stderr.strip().splitlines() or ["no samples"])[-1]
    return out


# ------------------------------------------------------------------ one run


async def sample_memory(pids: list[int], stop: asyncio.Event) -> dict[str, float]:
    rss, pss = [], []
    while True:
        mems = [procstat.memory(p) for p in pids]
        rss.append(sum(m["rss_mb"] for m in mems))
        pss.append(sum(m["pss_mb"] for m in mems))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)
        if stop.is_set():
            break
    return {"rss_mb": float(np.mean(rss)), "pss_mb": float(np.mean(pss))}


async def run_loadgen(
    n: int,
    agent_name: str,
    plan: Plan,
    work: Path,
    pids: list[int],
    *,
    handoff: bool = True,
    prefix: str = "cap-",
    runtag: str | None = None,
    profile_pid: int | None = None,
) -> dict[str, Any]:
    """Run the generator; measure `pids` (process trees) in its steady window."""
    runtag = runtag or f"{secrets.randbelow(9000) + 1000}"
    out_json = work / f"loadgen-{prefix}{runtag}.json"
    cmd = [
        "taskset", "-c", REST_CORE, str(LOADGEN), "-rooms", str(n), "-prefix", prefix,
        "-runtag", runtag, "-agent-name", agent_name, "-settle", str(plan.settle),
        "-steady", str(plan.steady), "-handoff-wait", str(plan.handoff_wait),
        "-answer-timeout", f"{int(30 + n)}s", f"-handoff={'true' if handoff else 'false'}",
        "-join-interval", f"{int(plan.join_interval * 1000)}ms",
        "-agent-interval", f"{int(plan.agent_interval * 1000)}ms",
        "-json", str(out_json),
    ]  # fmt: skip
    lg = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.PIPE, stderr=err_file(work / f"loadgen-{runtag}.err")
    )
    assert lg.stdout is not None
    res: dict[str, Any] = {}
    stop = asyncio.Event()
    mem_task: asyncio.Task[dict[str, float]] | None = None
    prof_task: asyncio.Task[dict[str, Any]] | None = None
    c0: list[procstat.TreeSample] = []
    th0: dict[str, int] = {}
    t0 = 0.0
    async for line in lg.stdout:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        name = ev.get("event")
        if name == "joined":
            res["joined"] = ev
        elif name == "steady_start":
            t0, c0, th0 = time.monotonic(), tree_cpu(pids), threads_of(pids)
            mem_task = asyncio.create_task(sample_memory(pids, stop))
            if profile_pid is not None:
                prof_task = asyncio.create_task(profile(profile_pid, plan.profile_s, work))
        elif name == "steady_end" and c0:
            dt = time.monotonic() - t0
            res["worker_cpu"] = cpu_between(c0, tree_cpu(pids)) / dt
            th1 = threads_of(pids)
            res["threads"] = {k: (th1.get(k, 0) - th0.get(k, 0)) / procstat.TICK / dt for k in th1}
            stop.set()
    await lg.wait()
    stop.set()
    if mem_task is not None:
        res.update(await mem_task)
    if prof_task is not None:
        res["profile"] = await prof_task
    if lg.returncode != 0 or not out_json.exists():
        err = (work / f"loadgen-{runtag}.err").read_text()[-2000:]
        raise RuntimeError(f"loadgen exited {lg.returncode}: {err}")
    res["loadgen"] = json.loads(out_json.read_text())
    return res


def verdict(n: int, r: dict[str, Any]) -> dict[str, Any]:
    s = r["loadgen"].get("summary", {})
    rooms = r["loadgen"].get("rooms", [])
    gap_ms = sum(x.get("gap_ms") or 0.0 for x in rooms)
    window_ms = 1000.0 * r.get("steady_s", 0.0) * max(1, len(rooms))
    gap = gap_ms / window_ms if window_ms else None
    dead, hand = s.get("dead_air_ms_p95"), s.get("handoff_ms_p95")
    answered = s.get("answered", 0)
    ok = (
        answered == n
        and gap is not None
        and gap < GAP_MAX
        and dead is not None
        and dead < DEAD_AIR_P95_MAX
        and hand is not None
        and hand < HANDOFF_P95_MAX
        and s.get("handoffs_measured", 0) == n
    )
    return {
        "n": n,
        "answered": answered,
        "gap_share": gap,
        "longest_gap_ms": max((x.get("longest_gap_ms") or 0.0 for x in rooms), default=None),
        "dead_air_ms_p50": s.get("dead_air_ms_p50"),
        "dead_air_ms_p95": dead,
        "handoff_ms_p50": s.get("handoff_ms_p50"),
        "handoff_ms_p95": hand,
        "handoffs_measured": s.get("handoffs_measured"),
        "passes": ok,
    }


async def measure(
    kind: str,
    n: int,
    env: dict[str, str],
    plan: Plan,
    work: Path,
    *,
    extra: dict[str, str] | None = None,
    processes: int = 1,
    profile_it: bool = False,
) -> dict[str, Any]:
    agent_name = f"cap-{kind}-{n}-{secrets.token_hex(3)}"
    ws: list[WorkerProcess] = []
    out: dict[str, Any] = {"kind": kind, "n": n, "processes": processes, "env": extra or {}}
    try:
        for _ in range(processes):
            ws.append(await asyncio.to_thread(spawn, kind, env, agent_name, work, extra or {}))
        pids = [w.proc.pid for w in ws]
        await asyncio.sleep(plan.idle / 2)
        c0, t0 = tree_cpu(pids), time.monotonic()
        await asyncio.sleep(plan.idle / 2)
        out["idle_cpu"] = cpu_between(c0, tree_cpu(pids)) / (time.monotonic() - t0)
        out["idle_rss_mb"] = sum(procstat.memory(p)["rss_mb"] for p in pids)
        r = await run_loadgen(
            n, agent_name, plan, work, pids, profile_pid=pids[0] if profile_it else None
        )
        r["steady_s"] = plan.steady
        out.update({k: v for k, v in r.items() if k != "loadgen"})
        out["generator"] = r["loadgen"].get("generator", {})
        out["loadgen_summary"] = r["loadgen"].get("summary", {})
        out.update(verdict(n, r))
        answered = max(1, out["answered"] or 0)
        out["cpu_per_call"] = out.get("worker_cpu", 0.0) / answered
        out["cpu_per_call_over_idle"] = (out.get("worker_cpu", 0.0) - out["idle_cpu"]) / answered
        out["rss_per_call_over_idle_mb"] = (out.get("rss_mb", 0.0) - out["idle_rss_mb"]) / answered
    finally:
        for w in ws:
            await asyncio.to_thread(stop_worker, w, 20.0)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.proc.pid, signal.SIGKILL)
    g = out.get("generator", {})
    log(
        f"{kind} N={n} x{processes} {extra or ''}: answered {out.get('answered')}, "
        f"cpu {out.get('worker_cpu', 0):.1%} ({out.get('cpu_per_call', 0):.2%}/call), "
        f"gaps {out.get('gap_share')}, dead air p95 {out.get('dead_air_ms_p95')}, "
        f"handoff p95 {out.get('handoff_ms_p95')}, generator {g.get('cpu_steady_share', 0):.1%} "
        f"late ticks {g.get('late_ticks')} -> {'pass' if out.get('passes') else 'FAIL'}"
    )
    return out


async def floor(mode: str, n: int, plan: Plan, work: Path) -> dict[str, Any]:
    runtag = f"{secrets.randbelow(9000) + 1000}"
    prefix = f"fl{mode[0]}-"
    rooms = work / f"floor-{runtag}.txt"
    rooms.write_text("\n".join(f"{prefix}{runtag}-{i}" for i in range(n)))
    env = {**os.environ, **stack_env()}
    p = await asyncio.create_subprocess_exec(
        "taskset", "-c", WORKER_CORE, sys.executable, "-m", "bench.floor", "--mode", mode,
        "--rooms-file", str(rooms), cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=err_file(work / f"floor-{runtag}.err"),
    )  # fmt: skip
    assert p.stdout is not None
    out: dict[str, Any] = {"mode": mode, "n": n}
    try:
        line = await asyncio.wait_for(p.stdout.readline(), 60 + n)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"floor {mode}: {(work / f'floor-{runtag}.err').read_text()[-800:]}")
        await asyncio.sleep(plan.idle)
        r = await run_loadgen(n, "", plan, work, [p.pid], handoff=False, prefix=prefix,
                              runtag=runtag)  # fmt: skip
        out["cpu"] = r.get("worker_cpu")
        out["cpu_per_call"] = (r.get("worker_cpu") or 0.0) / n
        out["rss_mb"] = r.get("rss_mb")
        out["threads"] = r.get("threads")
        out["answered"] = r["loadgen"].get("summary", {}).get("answered")
    finally:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(p.wait(), 15)
        if p.returncode is None:
            p.kill()
    log(f"floor {mode} N={n}: {out.get('cpu_per_call', 0):.2%} per room")
    return out


# ------------------------------------------------------------------ the run


async def run(plan: Plan) -> dict[str, Any]:
    env = stack_env()
    pinned = pin_stack()
    doc: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": {"worker": WORKER_CORE, "rest": REST_CORE, "stack_pinned": sorted(pinned)},
        "criteria": {
            "gap_share_max": GAP_MAX,
            "dead_air_p95_ms_max": DEAD_AIR_P95_MAX,
            "handoff_p95_ms_max": HANDOFF_P95_MAX,
        },
        "plan": {
            "steady": plan.steady,
            "settle": plan.settle,
            "at": plan.at,
            "join_interval": plan.join_interval,
            "agent_interval": plan.agent_interval,
        },
        "steps": {},
        "capacity": {},
    }
    try:
        await run_in(plan, env, doc)
    finally:
        pin_stack(f"0-{(os.cpu_count() or 2) - 1}")
    return doc


async def run_in(plan: Plan, env: dict[str, str], doc: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="capacity-") as tmp:
        work = Path(tmp)
        for kind in plan.kinds:
            steps = doc["steps"].setdefault(kind, [])
            best = 0
            for n in plan.sizes:
                try:
                    r = await measure(kind, n, env, plan, work)
                except Exception as e:  # a step that broke is a failed step
                    log(f"{kind} N={n}: {e!r}")
                    r = {"kind": kind, "n": n, "error": repr(e)[:500], "passes": False}
                steps.append(r)
                if not r.get("passes"):
                    break
                best = n
            doc["capacity"][kind] = best
        # variants where the default holds its calls (the capacity point):
        # at a saturated N every per-call figure is the core's limit
        at = plan.at or doc["capacity"].get("ours") or plan.sizes[0]
        doc["plan"]["at"] = at
        extra_runs: list[dict[str, Any]] = []
        if "ours" in plan.kinds:
            for name in plan.variants:
                with contextlib.suppress(Exception):
                    r = await measure("ours", at, env, plan, work, extra=VARIANTS[name])
                    r["variant"] = name
                    extra_runs.append(r)
            for k in plan.processes:
                with contextlib.suppress(Exception):
                    r = await measure("ours", at, env, plan, work, processes=k)
                    r["variant"] = f"{k} processes"
                    extra_runs.append(r)
        doc["variants"] = extra_runs
        if plan.floors:
            doc["floors"] = []
            for mode in ("publish", "subscribe"):
                for n in sorted({*plan.floor_sizes, at}):  # a bare process fills the core at ~40
                    try:
                        doc["floors"].append(await floor(mode, n, plan, work))
                    except Exception as e:
                        doc["floors"].append({"mode": mode, "n": n, "error": repr(e)[:500]})
        doc["profiles"] = []
        for n in plan.profile if "ours" in plan.kinds else []:
            try:
                r = await measure("ours", n, env, plan, work, profile_it=True)
            except Exception as e:
                r = {"n": n, "error": repr(e)[:500]}
            doc["profiles"].append(r)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,20,30,40,50,60,70,80")
    ap.add_argument("--only", choices=("ours", "baseline", "both"), default="both")
    ap.add_argument("--at", type=int, default=0, help="N of the variants (0: the capacity)")
    ap.add_argument("--steady", type=float, default=20.0)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--handoff-wait", type=float, default=5.0)
    ap.add_argument("--join-interval", type=float, default=0.2, help="s between callers")
    ap.add_argument("--agent-interval", type=float, default=0.2, help="s between agents")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"of {sorted(VARIANTS)}")
    ap.add_argument("--processes", default="2,4")
    ap.add_argument("--no-floors", action="store_true")
    ap.add_argument("--floor-sizes", default="10,30", help="floors at these N and the variants' N")
    ap.add_argument("--profile", default="1,10,30")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "capacity.json")
    a = ap.parse_args(argv)
    if not LOADGEN.exists():
        print(f"capacity: {LOADGEN} not built (bash bench/loadgen/build.sh)", file=sys.stderr)
        return 2
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        print("capacity: needs taskset and at least 2 cores", file=sys.stderr)
        return 2

    def ints(s: str) -> list[int]:
        return [int(x) for x in s.split(",") if x.strip()]

    plan = Plan(
        sizes=ints(a.sizes),
        kinds=["ours", "baseline"] if a.only == "both" else [a.only],
        at=a.at,
        steady=a.steady,
        settle=a.settle,
        handoff_wait=a.handoff_wait,
        join_interval=a.join_interval,
        agent_interval=a.agent_interval,
        variants=[v for v in a.variants.split(",") if v],
        processes=ints(a.processes),
        floors=not a.no_floors,
        floor_sizes=ints(a.floor_sizes),
        profile=ints(a.profile),
    )
    unknown = [v for v in plan.variants if v not in VARIANTS]
    if unknown:
        print(f"capacity: unknown variant(s) {unknown}; known: {sorted(VARIANTS)}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    doc = asyncio.run(run(plan))
    doc["minutes"] = (time.monotonic() - t0) / 60
    a.json.write_text(json.dumps(doc, indent=1, default=str))
    log(f"capacity {doc['capacity']}; wrote {a.json} ({doc['minutes']:.1f} min)")
    sys.stdout.flush()
    os._exit(0)  # the SDK's finalisers can panic at interpreter exit (RELIABILITY.md)


if __name__ == "__main__":
    sys.exit(main())
