"""Capacity benchmark on the real stack: the hold worker against a minimal
livekit-agents worker (bench/baseline_worker.py, BackgroundAudioPlayer, process
per job), N concurrent held calls placed through livekit-sip by the pjsua2 SIP
caller stand-in.

For each worker and each N, with a fresh worker process:

1. idle: CPU and memory of the registered worker with no call;
2. hold round: N calls placed ``--call-interval`` apart; once every call is
   answered and ``--settle`` seconds have passed, a ``--steady`` window:
   CPU (user + system of the worker and all its descendants, /proc), RSS and
   PSS of the tree, the whole machine's busy share, livekit-server's,
   livekit-sip's and the callers' CPU; then a livekit.rtc human agent joins
   each call (``--agent-interval`` apart) and speaks; the callers hang up
   ``--handoff-wait`` seconds after the last agent spoke;
3. drain round: N new calls on hold, SIGTERM to the worker, the calls are
   kept ``--drain-hold`` seconds more and then hung up; measured: SIGTERM ->
   worker exit, hangup -> exit, and whether any call lost its hold audio or
   was hung up by the far end before that;
4. analysis of every caller's recording (bench/analysis.py): dead air
   (200 OK -> hold audio), handoff (agent's first audio -> hold gone), the
   silent share of the hold period.

    python -m bench.run [--sizes 1,10,25,50] [--only ours|baseline|both]
        [--steady 20] [--json bench/results.json] [--md bench/results.md]
        [--benchmarks-md BENCHMARKS.md]

Needs the local stack (devstack/up.sh; with DEVSTACK_NETNS, run this inside
the namespace: see bench/make-bench.sh, which `make bench` runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import secrets
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api

from bench import procstat
from bench.analysis import analyse
from harness import stack
from harness.agents import HumanAgent
from harness.analysis import hold_reference_8k, write_tone_wav
from harness.rooms import AGENT, caller_number, participants, rooms_with_callers
from harness.stack import (
    WorkerProcess,
    die_with_parent,
    stack_env,
    stack_pids,
    start_worker,
    stop_worker,
)
from worker.protocol import SIP_CALL_STATUS

REPO = Path(__file__).resolve().parents[1]
# How long a drained worker may take to exit after its last call is hung up
# before the run records it as not exited (and why: why_not_exited).
DRAIN_EXIT_WAIT_S = 60.0
KINDS = ("ours", "baseline")
NUMBER = {"ours": "+15550301", "baseline": "+15550302"}
PREFIX = {"ours": "bo-", "baseline": "bb-"}
AGENT_HZ = 1700.0


@dataclass
class Plan:
    sizes: list[int]
    kinds: list[str]
    steady: float = 20.0
    settle: float = 3.0
    idle: float = 5.0
    call_interval: float = 0.1
    agent_interval: float = 0.1
    handoff_wait: float = 5.0
    drain_hold: float = 3.0
    drain: bool = True
    baseline_load: str = "off"
    ours_env: dict[str, str] = field(default_factory=dict)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------ stack / workers


def provision(env: dict[str, str], kind: str, agent_name: str) -> None:
    stack.provision(
        env, f"bench-{kind}", f"bench-{kind}-calls",
        "--room-prefix", PREFIX[kind], "--number", NUMBER[kind],
        agent_name=agent_name, check=True,
    )  # fmt: skip


def spawn_worker(
    kind: str, env: dict[str, str], agent_name: str, log_dir: Path, plan: Plan
) -> WorkerProcess:
    if kind == "ours":
        cmd = [sys.executable, "-m", "worker", "start", "--log-level", "info"]
        extra = {
            "HOLD_AGENT_NAME": agent_name,
            "HOLD_HTTP_PORT": "0",
            "HOLD_MAX_CALLS": "100",
            **plan.ours_env,
        }
    else:
        cmd = [sys.executable, "-m", "bench.baseline_worker", "start", "--log-level", "info"]
        extra = {"BENCH_AGENT_NAME": agent_name, "BENCH_BASELINE_LOAD": plan.baseline_load}
    try:
        return start_worker({**env, **extra}, log_dir, cmd=tuple(cmd[1:]), register_timeout=90.0)
    except RuntimeError as e:
        raise RuntimeError(f"{kind} {e}") from None


# ------------------------------------------------------------------ calls


@dataclass
class Call:
    number: str
    proc: asyncio.subprocess.Process
    result: Path
    record: Path
    room: str = ""
    agent: HumanAgent | None = None


async def place_calls(
    env: dict[str, str], kind: str, tag: str, n: int, work: Path, send_wav: Path, plan: Plan
) -> list[Call]:
    target = env["DEV_SIP_TARGET"].replace(env["DEV_TRUNK_NUMBER"], NUMBER[kind])
    calls = []
    for i in range(n):
        number = f"+1777{tag}{i:03d}"
        rec, res = work / f"{kind}-{tag}-{i}-heard.wav", work / f"{kind}-{tag}-{i}.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.caller", "--target", target, "--from", number,
            "--send-wav", str(send_wav), "--record", str(rec), "--duration", "600",
            "--result", str(res), "--answer-timeout", "60",
            cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        calls.append(Call(number, proc, res, rec))
        if i < n - 1:
            await asyncio.sleep(plan.call_interval)
    return calls


async def wait_answered(
    lk: api.LiveKitAPI, kind: str, calls: list[Call], timeout: float, skip: set[str]
) -> float:
    """Until every call's room has the SIP participant and the worker (livekit-sip
    answers once the worker is in), or timeout. Fills call.room. Returns the time."""
    by_number = {c.number: c for c in calls}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        taken = frozenset(skip | {c.room for c in calls if c.room})
        for room, parts in await rooms_with_callers(lk, PREFIX[kind], taken, occupied_only=True):
            if not any(p.kind == AGENT for p in parts):
                continue
            for p in parts:
                c = by_number.get(caller_number(p) or "")
                if c is not None and p.attributes.get(SIP_CALL_STATUS, "active") == "active":
                    c.room = room
        if all(c.room for c in calls):
            break
        if all(c.proc.returncode is not None for c in calls if not c.room):
            break  # the rest have given up
        await asyncio.sleep(0.5)
    return time.time()


async def why_not_exited(lk: api.LiveKitAPI, w: WorkerProcess, calls: list[Call]) -> dict[str, Any]:
    """What a worker still running DRAIN_EXIT_WAIT_S after its last call was
    hung up was doing: who is left in the drained calls' rooms (a caller that
    never left keeps a drain waiting; an empty room does not), its processes,
    and every thread's Python stack (SIGUSR1: both workers register
    faulthandler for it) at the end of its log, whose tail is kept here
    because the work directory is not."""
    rooms: dict[str, list[str]] = {}
    callers_left = True
    for c in calls:
        if not c.room:
            continue
        try:
            parts = await participants(lk, c.room)
        except Exception as e:  # the room's listing is evidence, not the run
            rooms[c.room] = [f"not listed: {e!r}"]
            callers_left = False
            continue
        rooms[c.room] = [f"{p.identity} ({api.ParticipantInfo.Kind.Name(p.kind)})" for p in parts]
        callers_left = callers_left and not any(caller_number(p) for p in parts)
    tree = procstat.descendants(w.proc.pid)
    processes = {pid: procstat.describe(pid) for pid in tree}
    for pid in tree:
        if procstat.catches(pid, signal.SIGUSR1):  # not the forkserver: it would die
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
            await asyncio.sleep(0.5)  # one process's stacks at a time in the shared log
    return {
        "waited_s": DRAIN_EXIT_WAIT_S,
        "callers_left": callers_left,
        "rooms": rooms,
        "processes": processes,
        "log_tail": w.text().splitlines()[-120:],
    }


async def hang_up(calls: list[Call], timeout: float = 30.0) -> None:
    for c in calls:
        if c.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGUSR1)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.proc.wait() for c in calls)), timeout)
    except TimeoutError:
        for c in calls:
            if c.proc.returncode is None:
                c.proc.kill()
        await asyncio.gather(*(c.proc.wait() for c in calls))


# ------------------------------------------------------------------ one worker, one N


class Window:
    """CPU of the worker tree (and of the stack and callers) over a window."""

    def __init__(self, worker_pid: int, caller_pids: list[int]) -> None:
        self.worker_pid, self.caller_pids = worker_pid, caller_pids
        self.others = stack_pids()

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.w0 = procstat.sample_cpu(self.worker_pid)
        self.o0 = {k: procstat.sample_cpu(p) for k, p in self.others.items()}
        self.c0 = [procstat.sample_cpu(p) for p in self.caller_pids]
        self.m0 = procstat.machine_busy()

    def stop(self) -> dict[str, float]:
        w1 = procstat.sample_cpu(self.worker_pid)
        o1 = {k: procstat.sample_cpu(p) for k, p in self.others.items()}
        c1 = [procstat.sample_cpu(p) for p in self.caller_pids]
        m1 = procstat.machine_busy()
        dt = time.monotonic() - self.t0
        out = {
            "seconds": dt,
            "worker_cpu": procstat.cpu_seconds_between(self.w0, w1) / dt,
            "machine_busy": (m1[0] - self.m0[0]) / max(1, m1[1] - self.m0[1]),
            "callers_cpu": sum(
                procstat.cpu_seconds_between(a, b) for a, b in zip(self.c0, c1, strict=True)
            )
            / dt,
        }
        for k in self.others:
            out[f"{k}_cpu"] = procstat.cpu_seconds_between(self.o0[k], o1[k]) / dt
        return out


async def sample_memory(pid: int, seconds: float, every: float = 2.0) -> dict[str, float]:
    samples = []
    end = time.monotonic() + seconds
    while True:
        samples.append(procstat.memory(pid))
        if time.monotonic() + every > end:
            break
        await asyncio.sleep(every)
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    return {
        "rss_mb": float(np.mean([s["rss_mb"] for s in samples])),
        "rss_mb_max": float(np.max([s["rss_mb"] for s in samples])),
        "pss_mb": float(np.mean([s["pss_mb"] for s in samples])),
        "processes": int(np.max([s["processes"] for s in samples])),
    }


async def measure(
    kind: str, n: int, env: dict[str, str], agent_name: str, work: Path, plan: Plan, ref: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind, "n": n}
    send_wav = Path(write_tone_wav(str(work / "caller-send.wav"), [697.0, 1209.0], seconds=2.0))
    w = await asyncio.to_thread(spawn_worker, kind, env, agent_name, work, plan)
    pid = w.proc.pid
    jobs: list[dict[str, Any]] = []
    try:
        async with api.LiveKitAPI(
            env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
        ) as lk:
            await asyncio.sleep(plan.idle / 2)
            win = Window(pid, [])
            win.start()
            mem = await sample_memory(pid, plan.idle / 2, every=1.0)
            out["idle"] = {**win.stop(), **mem}
            log(
                f"{kind} N={n}: idle cpu {out['idle']['worker_cpu']:.1%} rss {mem['rss_mb']:.0f} MB"
            )

            # ---- hold round
            t_place = time.time()
            calls = await place_calls(env, kind, f"{KINDS.index(kind) + 1}1{n:02d}", n, work,
                                      send_wav, plan)  # fmt: skip
            t_all = await wait_answered(lk, kind, calls, 30 + 0.6 * n, set())
            held = [c for c in calls if c.room]
            out["answered"] = len(held)
            out["setup_s"] = t_all - t_place
            log(f"{kind} N={n}: {len(held)}/{n} calls on hold after {t_all - t_place:.1f} s")
            await asyncio.sleep(plan.settle)
            win = Window(pid, [c.proc.pid for c in calls if c.proc.returncode is None])
            win.start()
            mem = await sample_memory(pid, plan.steady)
            out["steady"] = {**win.stop(), **mem}
            log(
                f"{kind} N={n}: steady cpu {out['steady']['worker_cpu']:.1%} "
                f"rss {mem['rss_mb']:.0f} MB machine {out['steady']['machine_busy']:.0%}"
            )

            async def agent_for(c: Call, i: int) -> None:
                await asyncio.sleep(i * plan.agent_interval)
                c.agent = HumanAgent(
                    env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"],
                    c.room, f"agent-bench-{i}", AGENT_HZ, record=False,
                )  # fmt: skip
                await c.agent.join()
                await c.agent.speak()

            agents = await asyncio.gather(
                *(agent_for(c, i) for i, c in enumerate(held)), return_exceptions=True
            )
            out["agent_errors"] = [repr(a) for a in agents if isinstance(a, BaseException)]
            await asyncio.sleep(plan.handoff_wait)
            t_end = time.time()
            await hang_up(calls)
            await asyncio.gather(*(c.agent.leave() for c in held if c.agent))
            for c in calls:
                jobs.append(
                    {
                        "round": "hold",
                        "number": c.number,
                        "result": str(c.result),
                        "ref": str(ref),
                        "agent_hz": AGENT_HZ,
                        "agent_first_audio": c.agent.first_audio_at if c.agent else None,
                        "hold_until": t_end,
                    }
                )

            # ---- drain round
            if plan.drain:
                await asyncio.sleep(1.0)
                skip = {c.room for c in calls}
                calls = await place_calls(env, kind, f"{KINDS.index(kind) + 1}2{n:02d}", n,
                                          work, send_wav, plan)  # fmt: skip
                t_all = await wait_answered(lk, kind, calls, 30 + 0.6 * n, skip)
                n_held = sum(1 for c in calls if c.room)
                await asyncio.sleep(min(plan.settle, 2.0))
                t_term = time.time()
                w.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(plan.drain_hold)
                alive_at_hangup = w.proc.poll() is None
                t_hang = time.time()
                await hang_up(calls)
                t_exit = None
                deadline = time.monotonic() + DRAIN_EXIT_WAIT_S
                while time.monotonic() < deadline:
                    if w.proc.poll() is not None:
                        t_exit = time.time()
                        break
                    await asyncio.sleep(0.05)
                out["drain"] = {
                    "calls_on_hold": n_held,
                    "alive_at_hangup": alive_at_hangup,
                    "sigterm_to_exit_s": (t_exit - t_term) if t_exit else None,
                    "hangup_to_exit_s": (t_exit - t_hang) if t_exit else None,
                    "exit_code": w.proc.returncode,
                    "held_for_s": t_hang - t_term,
                }
                if t_exit is None:
                    out["drain"]["not_exited"] = await why_not_exited(lk, w, calls)
                log(f"{kind} N={n}: drain {out['drain']}")
                for c in calls:
                    jobs.append(
                        {
                            "round": "drain",
                            "number": c.number,
                            "result": str(c.result),
                            "ref": str(ref),
                            "hold_from": t_term,
                            "hold_until": t_hang - 0.2,
                        }
                    )
    finally:
        await asyncio.to_thread(stop_worker, w, 20.0)  # SIGTERM, then the group SIGKILL
        with contextlib.suppress(ProcessLookupError):
            os.killpg(w.proc.pid, signal.SIGKILL)  # stray job processes
        out["worker_log"] = str(w.log_path)
    out["jobs"] = jobs
    return out


def summarise(run: dict[str, Any], per_call: list[dict[str, Any]]) -> dict[str, Any]:
    hold = [c for c in per_call if c["round"] == "hold"]
    drain = [c for c in per_call if c["round"] == "drain"]
    n = run["n"]
    # per call = per call actually on hold in the window (some may not have been answered)
    on_hold = max(1, run.get("answered") or 0)

    def pct(vals: list[float], q: float) -> float | None:
        return float(np.percentile(vals, q)) if vals else None

    dead = [c["dead_air_ms"] for c in hold if c["dead_air_ms"] is not None]
    hand = [c["handoff_ms"] for c in hold if c["handoff_ms"] is not None]
    gap_s = sum(c["gap_seconds"] or 0.0 for c in hold)
    hold_s = sum(c["hold_seconds"] or 0.0 for c in hold)
    s = {
        "n": n,
        "answered": run.get("answered"),
        "setup_s": run.get("setup_s"),
        "idle_cpu": run["idle"]["worker_cpu"],
        "idle_rss_mb": run["idle"]["rss_mb"],
        "idle_pss_mb": run["idle"]["pss_mb"],
        "cpu_total": run["steady"]["worker_cpu"],
        "cpu_per_call": run["steady"]["worker_cpu"] / on_hold,
        "cpu_per_call_over_idle": (run["steady"]["worker_cpu"] - run["idle"]["worker_cpu"])
        / on_hold,
        "rss_mb": run["steady"]["rss_mb"],
        "pss_mb": run["steady"]["pss_mb"],
        "processes": run["steady"]["processes"],
        "rss_per_call_over_idle_mb": (run["steady"]["rss_mb"] - run["idle"]["rss_mb"]) / on_hold,
        "pss_per_call_over_idle_mb": (run["steady"]["pss_mb"] - run["idle"]["pss_mb"]) / on_hold,
        "machine_busy": run["steady"]["machine_busy"],
        "stack_cpu": {
            k: v for k, v in run["steady"].items() if k.endswith("_cpu") and k != "worker_cpu"
        },
        "dead_air_ms_p50": pct(dead, 50),
        "dead_air_ms_p95": pct(dead, 95),
        "dead_air_n": len(dead),
        "handoff_ms_p50": pct(hand, 50),
        "handoff_ms_p95": pct(hand, 95),
        "handoff_n": len(hand),
        "gap_share": (gap_s / hold_s) if hold_s else None,
        "hold_seconds_analysed": hold_s,
        "longest_gap_s": max((c["longest_gap_s"] or 0.0 for c in hold), default=None),
        "agent_errors": len(run.get("agent_errors", [])),
        "hold_never_stopped": sum(1 for c in hold if c.get("hold_reaches_end")),
    }
    if "drain" in run:
        d = run["drain"]
        cut = [
            c["number"]
            for c in drain
            if c["answered"] and (c["hangup_by"] == "remote" or (c["gap_share"] or 0.0) > 0.5)
        ]
        s.update(
            drain_sigterm_to_exit_s=d["sigterm_to_exit_s"],
            drain_hangup_to_exit_s=d["hangup_to_exit_s"],
            drain_calls_on_hold=d["calls_on_hold"],
            drain_alive_at_hangup=d["alive_at_hangup"],
            drain_held_for_s=d["held_for_s"],
            drain_calls_cut=len(cut),
            drain_not_exited_after_s=d.get("not_exited", {}).get("waited_s"),
            drain_callers_left=d.get("not_exited", {}).get("callers_left"),
            drain_gap_share=(
                sum(c["gap_seconds"] or 0.0 for c in drain)
                / max(1e-9, sum(c["hold_seconds"] or 0.0 for c in drain))
            )
            if drain
            else None,
        )
    return s


def resummarise(doc: dict[str, Any]) -> None:
    """Recompute the summaries of a results JSON from its raw figures."""
    for kind, per_n in doc["raw"].items():
        for n_s, r in per_n.items():
            wall = doc["results"][kind][n_s].get("wall_s")
            doc["results"][kind][n_s] = {**summarise(r, r["calls"]), "wall_s": wall}
    add_slopes(doc["results"])


def hold_reference(path: Path) -> None:
    np.save(path, hold_reference_8k())


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


async def run(plan: Plan, work: Path, save: Any) -> dict[str, Any]:
    env = stack_env()
    ref = work / "hold-ref-8k.npy"
    hold_reference(ref)
    names = {k: f"bench-{k}-{os.getpid()}-{secrets.token_hex(3)}" for k in plan.kinds}
    for k in plan.kinds:
        provision(env, k, names[k])
    results: dict[str, Any] = {k: {} for k in plan.kinds}
    raw: dict[str, Any] = {k: {} for k in plan.kinds}
    # spawn, not fork: the harness runs livekit.rtc (native threads) by then
    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
        for n in plan.sizes:
            for k in plan.kinds:
                t0 = time.monotonic()
                try:
                    r = await measure(k, n, env, names[k], work, plan, ref)
                except Exception as exc:  # report what failed, go on with the rest
                    log(f"{k} N={n}: FAILED: {exc!r}")
                    results[k][str(n)] = {"n": n, "error": repr(exc)}
                    save(results, raw)
                    continue
                per_call = list(pool.map(analyse, r["jobs"]))
                for job, c in zip(r["jobs"], per_call, strict=True):
                    c["round"] = job["round"]
                s = summarise(r, per_call)
                s["wall_s"] = time.monotonic() - t0
                results[k][str(n)] = s
                raw[k][str(n)] = {**{x: y for x, y in r.items() if x != "jobs"}, "calls": per_call}
                log(f"{k} N={n}: {json.dumps({x: y for x, y in s.items() if x != 'stack_cpu'})}")
                save(results, raw)
    return {"results": results, "raw": raw}


# ------------------------------------------------------------------ report


def _fmt(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "%":
        return f"{v * 100:.2f} %"
    if unit == "ms":
        return f"{v:.0f}"
    if unit == "s":
        return f"{v:.2f}"
    if unit == "MB":
        return f"{v:.1f}"
    return str(v)


ROWS = [
    ("calls answered / placed", "answered", ""),
    ("worker CPU per call on hold (share of one core)", "cpu_per_call", "%"),
    ("worker CPU, all calls on hold (share of one core)", "cpu_total", "%"),
    ("worker CPU idle, no call", "idle_cpu", "%"),
    ("RSS of the worker's processes, calls on hold (MB)", "rss_mb", "MB"),
    ("RSS per call over the idle worker (MB)", "rss_per_call_over_idle_mb", "MB"),
    ("RSS per additional call over N=1 (MB)", "rss_per_call_over_n1_mb", "MB"),
    ("PSS of the worker's processes (MB)", "pss_mb", "MB"),
    ("PSS per call over the idle worker (MB)", "pss_per_call_over_idle_mb", "MB"),
    ("processes in the worker's tree", "processes", ""),
    ("dead air p50 (ms)", "dead_air_ms_p50", "ms"),
    ("dead air p95 (ms)", "dead_air_ms_p95", "ms"),
    ("handoff p50 (ms)", "handoff_ms_p50", "ms"),
    ("handoff p95 (ms)", "handoff_ms_p95", "ms"),
    ("hold-stream gaps (silent share of hold)", "gap_share", "%"),
    ("longest gap (s)", "longest_gap_s", "s"),
    ("SIGTERM -> worker exit, calls on hold (s)", "drain_sigterm_to_exit_s", "s"),
    ("last hangup -> worker exit (s)", "drain_hangup_to_exit_s", "s"),
    ("calls cut during the drain", "drain_calls_cut", ""),
    ("whole machine busy during the window", "machine_busy", "%"),
]


def add_slopes(results: dict[str, Any]) -> None:
    for per_n in results.values():
        one = per_n.get("1")
        for n_s, s in per_n.items():
            n = int(n_s)
            held = s.get("answered") or n
            if one and "rss_mb" in one and "rss_mb" in s and held > 1:
                s["rss_per_call_over_n1_mb"] = (s["rss_mb"] - one["rss_mb"]) / (held - 1)


def markdown_table(results: dict[str, Any], sizes: list[int]) -> str:
    lines = [
        "| N | figure | ours | baseline | ours / baseline |",
        "| --: | --- | --: | --: | --: |",
    ]
    for n in sizes:
        o = results.get("ours", {}).get(str(n), {})
        b = results.get("baseline", {}).get(str(n), {})
        for label, key, unit in ROWS:
            ov, bv = o.get(key), b.get(key)
            if key == "answered":
                ov = f"{ov}/{n}" if ov is not None else ("error" if "error" in o else None)
                bv = f"{bv}/{n}" if bv is not None else ("error" if "error" in b else None)
                ratio = "-"
            else:
                ratio = (
                    f"{ov / bv:.2f}"
                    if isinstance(ov, (int, float)) and isinstance(bv, (int, float)) and bv
                    else "-"
                )
            cells = [_fmt(ov, unit), _fmt(bv, unit)]
            if key in ("drain_sigterm_to_exit_s", "drain_hangup_to_exit_s"):
                for i, side in enumerate((o, b)):
                    if side.get(key) is None and side.get("drain_not_exited_after_s"):
                        cells[i] = f"not within {side['drain_not_exited_after_s']:.0f} s"
            lines.append(f"| {n} | {label} | {cells[0]} | {cells[1]} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,10,25,50")
    ap.add_argument("--only", choices=("ours", "baseline", "both"), default="both")
    ap.add_argument("--steady", type=float, default=20.0, help="steady window (s)")
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--call-interval", type=float, default=0.1)
    ap.add_argument("--agent-interval", type=float, default=0.1)
    ap.add_argument("--handoff-wait", type=float, default=5.0)
    ap.add_argument("--drain-hold", type=float, default=3.0)
    ap.add_argument("--no-drain", action="store_true")
    ap.add_argument("--baseline-load", choices=("off", "default"), default="off")
    ap.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the hold worker (e.g. HOLD_CHUNK_MS=100; repeat)",
    )
    ap.add_argument("--json", default="bench/results.json")
    ap.add_argument("--md", default="bench/results.md")
    ap.add_argument("--keep", action="store_true", help="keep the recordings (work dir)")
    a = ap.parse_args(argv)
    plan = Plan(
        sizes=[int(x) for x in a.sizes.split(",") if x.strip()],
        kinds=list(KINDS) if a.only == "both" else [a.only],
        steady=a.steady,
        settle=a.settle,
        idle=a.idle,
        call_interval=a.call_interval,
        agent_interval=a.agent_interval,
        handoff_wait=a.handoff_wait,
        drain_hold=a.drain_hold,
        drain=not a.no_drain,
        baseline_load=a.baseline_load,
        ours_env=dict(kv.split("=", 1) for kv in a.ours_env),
    )
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    log(f"plan {asdict(plan)}; work dir {work}")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.monotonic()
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])

    def save(results: dict[str, Any], raw: dict[str, Any]) -> None:
        """Written after every worker x N, so an interrupted run keeps what it measured."""
        add_slopes(results)
        doc = {
            "date": started,
            "duration_s": time.monotonic() - t0,
            "machine": machine(),
            "command": command,
            "plan": asdict(plan),
            "work_dir": str(work) if a.keep else None,
            "results": results,
            "raw": raw,
        }
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=1, default=str))
        Path(a.md).write_text(markdown_table(results, plan.sizes))

    out = asyncio.run(run(plan, work, save))
    save(out["results"], out["raw"])
    print(Path(a.md).read_text())
    if not a.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
