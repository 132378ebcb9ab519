"""Cost of a call after the handoff (issue 12 item 7): the worker stays in the
room with ``hold.state=monitoring`` (no published track, no media
subscription, only room events). What does such a call cost, against one on
hold?

For each N, with a fresh hold worker (defaults, plus a Prometheus port):

1. idle: the registered worker with no call, over ``--idle`` seconds;
2. holding: N SIP calls placed through livekit-sip (bench/caller.py, pjsua2,
   each sending a DTMF-pair tone), every call's worker attribute
   ``hold.state=holding``, ``--settle`` seconds, then a ``--steady`` window;
3. monitoring: a livekit.rtc human agent joins each call and speaks (unmuted
   tone), every call reaches ``hold.state=monitoring`` with no published
   track (after the worker's 3 s handoff settle), ``--settle`` seconds, then
   the same window. Agents and callers stay; caller and agent exchange media
   through the SFU the whole time.

Measured in every window (bench/procstat.py, bench/run.py's Window): CPU of
the worker process (user + system, all threads, as a share of one core), RSS
and PSS (mean of samples every 2 s), the whole machine's busy share, the
stack's and the callers' CPU; and, as the worker's own account, its CPU by
thread name (/proc/PID/task) and its Prometheus metrics (``hold_calls`` by
state, ``process_cpu_seconds_total``, ``process_resident_memory_bytes``).

    python -m bench.monitoring [--sizes 1,10] [--steady 20]
        [--json bench/monitoring.json] [--md bench/monitoring.md]

Needs the local stack; `make bench-monitoring` runs it in the tests' network
namespace (bench/make-monitoring.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from livekit import api

from bench import procstat
from bench import run as br
from harness.agents import HumanAgent
from harness.analysis import write_tone_wav
from harness.rooms import publishes_audio, worker_info
from harness.stack import stack_env, stop_worker

KIND = "monitoring"  # its own trunk, number and room prefix (bench/run.py's tables)
br.NUMBER[KIND] = "+15550303"
br.PREFIX[KIND] = "bm-"
log = br.log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics(port: int) -> dict[str, float]:
    """The worker's own Prometheus figures (a few of them)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith(("hold_calls{", "process_cpu_seconds_total", "process_resident")):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def window(pid: int, callers: list[int], seconds: float, port: int) -> dict[str, Any]:
    """CPU (worker, machine, stack, callers, this harness: the agents), memory,
    the worker's threads and its own metrics over one window."""
    win = br.Window(pid, callers)
    harness = os.getpid()
    h0 = procstat.sample_cpu(harness)
    t0, m0 = procstat.thread_ticks(pid), metrics(port)
    win.start()
    mem = await br.sample_memory(pid, seconds)
    cpu = win.stop()
    t1, m1 = procstat.thread_ticks(pid), metrics(port)
    h1 = procstat.sample_cpu(harness)
    dt = cpu["seconds"]
    threads = {k: (v - t0.get(k, 0)) / procstat.TICK / dt for k, v in t1.items()}
    own_cpu = m1.get("process_cpu_seconds_total", 0.0) - m0.get("process_cpu_seconds_total", 0.0)
    return {
        **cpu,
        **mem,
        "agents_harness_cpu": procstat.cpu_seconds_between(h0, h1) / dt,
        "threads_cpu": dict(sorted(threads.items(), key=lambda kv: -kv[1])),
        "prometheus": m1,
        "prometheus_cpu": own_cpu / dt if m0 else None,
    }


async def states(lk: api.LiveKitAPI, rooms: list[str]) -> dict[str, str]:
    """Each room's worker `hold.state` (+ '/track' while it publishes audio)."""

    async def one(room: str) -> str:
        w = await worker_info(lk, room)
        if w is None:
            return "(gone)"
        return w.attributes.get("hold.state", "") + ("/track" if publishes_audio(w) else "")

    return dict(zip(rooms, await asyncio.gather(*(one(r) for r in rooms)), strict=True))


async def wait_states(lk: api.LiveKitAPI, rooms: list[str], want: str, timeout: float) -> float:
    """Until every room's worker is in `want` (and publishes no track for
    monitoring); polled every 0.5 s so that ten rooms cost the server little."""
    t0 = time.monotonic()
    while True:
        now = await states(lk, rooms)
        if all(s == want for s in now.values()):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"not all {want} after {timeout:.0f} s: {now}")
        await asyncio.sleep(0.5)


async def leave_all(calls: list[br.Call]) -> None:
    agents = [c.agent for c in calls if c.agent]
    for c in calls:
        c.agent = None
    await asyncio.gather(*(x.leave() for x in agents))


async def measure(n: int, env: dict[str, str], name: str, work: Path, a: Any) -> dict[str, Any]:
    port = free_port()
    plan = br.Plan(sizes=[n], kinds=[KIND], ours_env={"HOLD_METRICS_PORT": str(port)})
    send_wav = Path(write_tone_wav(str(work / "caller-send.wav"), [697.0, 1209.0], seconds=2.0))
    w = await asyncio.to_thread(br.spawn_worker, "ours", env, name, work, plan)
    pid = w.proc.pid
    out: dict[str, Any] = {"n": n, "worker_log": str(w.log_path)}
    calls: list[br.Call] = []
    try:
        async with api.LiveKitAPI(
            env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
        ) as lk:
            await asyncio.sleep(2.0)
            out["idle"] = await window(pid, [], a.idle, port)
            log(f"N={n}: idle cpu {out['idle']['worker_cpu']:.1%} rss {out['idle']['rss_mb']:.0f}")

            calls = await br.place_calls(env, KIND, f"3{n:02d}", n, work, send_wav, plan)
            await br.wait_answered(lk, KIND, calls, 30 + 0.6 * n, set())
            held = [c for c in calls if c.room]
            if len(held) < n:
                raise RuntimeError(f"only {len(held)}/{n} calls answered")
            rooms = [c.room for c in held]
            await wait_states(lk, rooms, "holding/track", 20.0)
            await asyncio.sleep(a.settle)
            pids = [c.proc.pid for c in calls]
            out["holding"] = await window(pid, pids, a.steady, port)
            out["holding"]["states_after"] = await states(lk, rooms)
            log(f"N={n}: holding cpu {out['holding']['worker_cpu']:.1%} "
                f"rss {out['holding']['rss_mb']:.0f} MB")  # fmt: skip

            async def agent_for(c: br.Call, i: int) -> None:
                await asyncio.sleep(i * plan.agent_interval)
                c.agent = HumanAgent(
                    env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"],
                    c.room, f"agent-mon-{i}", br.AGENT_HZ, record=False,
                )  # fmt: skip
                await c.agent.join()
                await c.agent.speak()

            await asyncio.gather(*(agent_for(c, i) for i, c in enumerate(held)))
            out["to_monitoring_s"] = await wait_states(lk, rooms, "monitoring", 30.0 + n)
            log(f"N={n}: all {n} monitoring {out['to_monitoring_s']:.1f} s after the agents spoke")
            await asyncio.sleep(a.settle)
            out["monitoring"] = await window(pid, pids, a.steady, port)
            out["monitoring"]["states_after"] = await states(lk, rooms)
            log(f"N={n}: monitoring cpu {out['monitoring']['worker_cpu']:.1%} "
                f"rss {out['monitoring']['rss_mb']:.0f} MB")  # fmt: skip
            out["callers_alive"] = sum(1 for c in calls if c.proc.returncode is None)
            # after: every call ended, the same worker; how much memory it keeps
            await br.hang_up(calls)
            await leave_all(calls)
            await asyncio.sleep(a.settle)
            out["after"] = await window(pid, [], a.idle, port)
    finally:
        await br.hang_up(calls)
        await leave_all(calls)
        await asyncio.to_thread(stop_worker, w, 20.0)  # SIGTERM, then the group SIGKILL
        text = w.text()
        out["subscription_warnings"] = text.count("could not change a subscription")
        out["errors_in_log"] = text.count('"level": "ERROR"')
    return out


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    n, idle = r["n"], r["idle"]
    s: dict[str, Any] = {
        "n": n,
        "idle_cpu": idle["worker_cpu"],
        "idle_rss_mb": idle["rss_mb"],
        "idle_pss_mb": idle["pss_mb"],
    }
    for st in ("holding", "monitoring"):
        x = r[st]
        s[f"{st}_cpu"] = x["worker_cpu"]
        s[f"{st}_cpu_per_call"] = x["worker_cpu"] / n
        s[f"{st}_cpu_per_call_over_idle"] = (x["worker_cpu"] - idle["worker_cpu"]) / n
        s[f"{st}_rss_mb"] = x["rss_mb"]
        s[f"{st}_pss_mb"] = x["pss_mb"]
        s[f"{st}_rss_per_call_over_idle_mb"] = (x["rss_mb"] - idle["rss_mb"]) / n
        s[f"{st}_pss_per_call_over_idle_mb"] = (x["pss_mb"] - idle["pss_mb"]) / n
        s[f"{st}_machine_busy"] = x["machine_busy"]
        s[f"{st}_prometheus_cpu"] = x["prometheus_cpu"]
    if "after" in r:
        s["after_cpu"] = r["after"]["worker_cpu"]
        s["after_rss_mb"] = r["after"]["rss_mb"]
        s["after_pss_mb"] = r["after"]["pss_mb"]
    for st in ("holding", "monitoring"):
        after = r[st].get("states_after", {}).values()
        s[f"{st}_states_after_window"] = {v: list(after).count(v) for v in set(after)}
    s["subscription_warnings"] = r.get("subscription_warnings")
    s["errors_in_log"] = r.get("errors_in_log")
    s["to_monitoring_s"] = r.get("to_monitoring_s")
    s["cpu_per_call_saved"] = (
        s["holding_cpu_per_call_over_idle"] - (s["monitoring_cpu_per_call_over_idle"])
    )
    return s


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f} %"


def markdown(doc: dict[str, Any]) -> str:
    res = doc["results"]
    rows = [
        ("worker CPU, no call (share of one core)", "idle_cpu", None, _pct),
        ("worker CPU, all N calls", "holding_cpu", "monitoring_cpu", _pct),
        ("worker CPU per call", "holding_cpu_per_call", "monitoring_cpu_per_call", _pct),
        (
            "worker CPU per call over the idle worker",
            "holding_cpu_per_call_over_idle",
            "monitoring_cpu_per_call_over_idle",
            _pct,
        ),
        (
            "same, from the worker's own process_cpu_seconds_total",
            "holding_prometheus_cpu",
            "monitoring_prometheus_cpu",
            _pct,
        ),
        ("worker RSS / PSS, no call (MB)", "idle_rss_mb", None, None),
        ("worker RSS (MB)", "holding_rss_mb", "monitoring_rss_mb", None),
        ("worker PSS (MB)", "holding_pss_mb", "monitoring_pss_mb", None),
        (
            "RSS per call over the idle worker (MB)",
            "holding_rss_per_call_over_idle_mb",
            "monitoring_rss_per_call_over_idle_mb",
            None,
        ),
        (
            "PSS per call over the idle worker (MB)",
            "holding_pss_per_call_over_idle_mb",
            "monitoring_pss_per_call_over_idle_mb",
            None,
        ),
        ("whole machine busy", "holding_machine_busy", "monitoring_machine_busy", _pct),
        ("worker CPU after every call ended", "after_cpu", None, _pct),
        ("worker RSS / PSS after every call ended (MB)", "after_rss_mb", None, None),
    ]
    lines = [
        "| N | figure | holding | monitoring | difference |",
        "| --: | --- | --: | --: | --: |",
    ]
    for n_s, s in res.items():
        if "error" in s:
            lines.append(f"| {n_s} | error: {s['error'][:100]} | | | |")
            continue
        for label, hk, mk, fmt in rows:
            f = fmt or (lambda v: "-" if v is None else f"{v:.1f}")
            h, m = s.get(hk), s.get(mk) if mk else None
            if mk is None:
                if h is None:
                    continue
                if hk.endswith("_rss_mb"):
                    pss = s[hk.replace("rss", "pss")]
                    lines.append(f"| {n_s} | {label} | {h:.1f} / {pss:.1f} | | |")
                else:
                    lines.append(f"| {n_s} | {label} | {f(h)} | | |")
                continue
            d = f(m - h) if isinstance(h, float) and isinstance(m, float) else "-"
            lines.append(f"| {n_s} | {label} | {f(h)} | {f(m)} | {d} |")
    return "\n".join(lines) + "\n"


def threads_md(doc: dict[str, Any], top: int = 8) -> str:
    """The worker's busiest threads in each state (share of one core)."""
    lines = []
    for n_s, r in doc["raw"].items():
        for st in ("idle", "holding", "monitoring", "after"):
            th = r.get(st, {}).get("threads_cpu", {})
            busy = ", ".join(f"{k} {v * 100:.1f} %" for k, v in list(th.items())[:top] if v > 0)
            gauge = {
                k.split('"')[1]: int(v)
                for k, v in r.get(st, {}).get("prometheus", {}).items()
                if k.startswith("hold_calls{") and v
            }
            lines.append(f"- N={n_s} {st}: {busy or 'none'}; worker's hold_calls: {gauge or '{}'}")
    return "\n".join(lines) + "\n"


async def main_async(a: Any, save: Any) -> None:
    env = stack_env()
    name = f"bench-mon-{os.getpid()}-{secrets.token_hex(3)}"
    br.provision(env, KIND, name)
    work = Path(tempfile.mkdtemp(prefix="bench-mon-"))
    for n in [int(x) for x in a.sizes.split(",") if x.strip()]:
        try:
            r = await measure(n, env, name, work, a)
            save(str(n), summarise(r), r)
        except Exception as exc:  # report what failed, go on with the rest
            log(f"N={n}: FAILED: {exc!r}")
            save(str(n), {"n": n, "error": repr(exc)}, {})
        await asyncio.sleep(2.0)
    shutil.rmtree(work, ignore_errors=True)  # the callers' recordings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.monitoring", description=__doc__)
    ap.add_argument("--sizes", default="1,10")
    ap.add_argument("--steady", type=float, default=20.0)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--json", default="bench/monitoring.json")
    ap.add_argument("--md", default="bench/monitoring.md")
    a = ap.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.monotonic()
    doc: dict[str, Any] = {
        "date": started,
        "machine": br.machine(),
        "command": "python -m bench.monitoring " + " ".join(argv or sys.argv[1:]),
        "plan": {"steady": a.steady, "settle": a.settle, "idle": a.idle},
        "results": {},
        "raw": {},
    }

    def save(n: str, summary: dict[str, Any], raw: dict[str, Any]) -> None:
        doc["results"][n], doc["raw"][n] = summary, raw
        doc["duration_s"] = time.monotonic() - t0
        Path(a.json).write_text(json.dumps(doc, indent=1, default=str))
        Path(a.md).write_text(
            f"{markdown(doc)}\nThe worker's busiest threads (share of one core):\n\n"
            f"{threads_md(doc)}"
        )
        log(f"N={n}: {json.dumps(summary)}")

    asyncio.run(main_async(a, save))
    print(Path(a.md).read_text())
    return 0 if all("error" not in s for s in doc["results"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
