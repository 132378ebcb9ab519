"""BENCHMARKS.md from bench/run.py's JSON.

python -m bench.report bench/results.json BENCHMARKS.md [--command "make bench"]
    [--note "text appended under 'Notes on this run'"] [--capacity bench/capacity.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench import capacity_report
from bench.run import markdown_table

METHOD = """\
## How it is measured

For each worker and each N a fresh worker process is started on the local stack
(Redis, livekit-server, livekit-sip, all in one network namespace on loopback);
N SIP calls are placed through livekit-sip by the pjsua2 caller stand-in
(`bench/caller.py`, the e2e caller hung up by a signal), 100 ms apart.

- **CPU**: user + system time of the worker process and every process below it
  (`/proc/PID/stat`, all threads, plus reaped children), over the steady window
  that starts `settle` seconds after the last call was answered, while all N
  calls are on hold; divided by the window and by N, as a share of one core.
  "Idle" is the same with no call.
- **Memory**: RSS (`VmRSS`) summed over the worker's processes (shared pages
  counted once per process, as the issue asks) and PSS (`smaps_rollup`, shared
  pages split), averaged over the window. Per call: (N calls - idle) / N, and
  (N - N=1) / (N - 1).
- **Dead air**: the caller's 200 OK to the first hold audio in the caller's
  recording (hold audio found by correlation with the hold file, as in the e2e
  tests: `harness/analysis.py` `hold_span`).
- **Handoff**: after the window a livekit.rtc human agent joins each call,
  100 ms apart, and speaks a tone; its first pushed frame to the end of the
  hold audio in that caller's recording (the 400 ms fade is part of it).
- **Gaps**: share of 20 ms windows under -60 dBFS in the caller's recording
  between the first hold audio and the agent's first audio, over all calls
  (the hold file itself has none).
- **Drain**: N new calls on hold, SIGTERM to the worker, the calls kept
  on hold `drain_hold` seconds, then hung up; SIGTERM -> process exit, last
  hangup -> exit. livekit-agents drains by waiting for its jobs, so a held call
  keeps the worker alive until the caller hangs up (ours: `HOLD_DRAIN_TIMEOUT_S`,
  900 s; livekit-agents' default is 1 h).
  A call counts as cut if the far end hung up or more than half of its
  recording after the SIGTERM is silent.
- **Baseline** (`bench/baseline_worker.py`): stock `AgentServer` (process per
  job, default idle processes), `BackgroundAudioPlayer` playing
  `assets/hold-default.flac` in a loop on its own track, stopped with a 400 ms
  fade when the agent's audio arrives. Its load function is off by default
  (`--baseline-load default` keeps livekit-agents' CPU load, which counts the
  benchmark's own callers on the same CPUs and refuses calls from 70 %).
- The callers (pjsua2), the human agents and the servers share the machine's
  cores with the worker under test: "machine busy" in the context table is
  the whole machine during the window.
"""


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def context_table(results: dict[str, Any], sizes: list[int]) -> str:
    lines = [
        "| N | worker | answered | setup s | machine busy | livekit-server | livekit-sip "
        "| callers (all) | run s |",
        "| --: | --- | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for n in sizes:
        for kind, per_n in results.items():
            s = per_n.get(str(n))
            if not s:
                continue
            if "error" in s:
                lines.append(f"| {n} | {kind} | error: {s['error'][:80]} | | | | | | |")
                continue
            st = s.get("stack_cpu", {})
            lines.append(
                f"| {n} | {kind} | {s['answered']}/{n} | {s['setup_s']:.1f} "
                f"| {_pct(s['machine_busy'])} | {_pct(st.get('livekit-server_cpu'))} "
                f"| {_pct(st.get('livekit-sip_cpu'))} | {_pct(st.get('callers_cpu'))} "
                f"| {s.get('wall_s', 0):.0f} |"
            )
    return "\n".join(lines) + "\n"


def targets(results: dict[str, Any], sizes: list[int]) -> str:
    ours, base = results.get("ours", {}), results.get("baseline", {})
    out = []
    for n in sizes:
        o, b = ours.get(str(n), {}), base.get(str(n), {})
        if "cpu_per_call" in o and "cpu_per_call" in b:
            r = o["cpu_per_call"] / b["cpu_per_call"]
            out.append(
                f"- N={n}: CPU per held call {o['cpu_per_call'] * 100:.2f} % vs baseline "
                f"{b['cpu_per_call'] * 100:.2f} %: ratio {r:.2f} "
                f"({'met' if r <= 0.5 else 'missed'}, target <= 0.50)"
            )
        for key, label in (
            ("rss_per_call_over_idle_mb", "RSS per call over idle"),
            ("rss_per_call_over_n1_mb", "RSS per additional call over N=1"),
        ):
            if o.get(key) is not None:
                out.append(
                    f"- N={n}: {label} {o[key]:.1f} MB "
                    f"({'met' if o[key] <= 10 else 'missed'}, target <= 10 MB)"
                )
        if o.get("dead_air_ms_p95") is not None:
            v = o["dead_air_ms_p95"]
            out.append(
                f"- N={n}: dead air p95 {v:.0f} ms ({'met' if v <= 500 else 'missed'}, "
                "target <= 500 ms)"
            )
    out.append(
        "- held calls per worker core: the capacity section above (the SIP path's two "
        "cores cannot feed 40 calls to one worker core)"
    )
    return "\n".join(out) + "\n"


def render(
    doc: dict[str, Any], command: str, note: str = "", capacity: dict[str, Any] | None = None
) -> str:
    m = doc["machine"]
    sizes = doc["plan"]["sizes"]
    res = doc["results"]
    missing = [
        f"{k} N={n}"
        for n in [1, 10, 20]
        for k in ("ours", "baseline")
        if str(n) not in res.get(k, {}) or "error" in res.get(k, {}).get(str(n), {})
    ]
    plan = doc["plan"]
    parts = [
        "# Benchmarks: hold worker vs a minimal livekit-agents worker\n",
        "Generated by `make bench` (`bench/make-bench.sh` -> `python -m bench.run` -> "
        "`python -m bench.report`); the raw figures, per call, are in `bench/results.json`.\n",
        "## This run\n",
        f"- date (UTC): {doc['date']}, {doc['duration_s'] / 60:.1f} min",
        f"- machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, "
        f"Linux {m['kernel']}, Python {m['python']}",
        f"- command: `{command}` (runs `{doc['command']}` in the stack's network namespace)",
        f"- steady window {plan['steady']:.0f} s after a {plan['settle']:.0f} s settle; "
        f"idle window {plan['idle']:.0f} s; calls {plan['call_interval'] * 1000:.0f} ms apart; "
        f"agents {plan['agent_interval'] * 1000:.0f} ms apart; drain: calls held "
        f"{plan['drain_hold']:.0f} s after SIGTERM",
        f"- not measured in this run: {', '.join(missing) if missing else 'nothing'}\n",
        capacity_report.render(capacity) if capacity else "",
        "## Through the SIP path: livekit-sip and pjsua2 callers on the same two cores\n",
        "### Figures (ours = the hold worker"
        + (
            f" with {', '.join(f'{k}={v}' for k, v in plan['ours_env'].items())}"
            if plan.get("ours_env")
            else ", defaults: thread executor, 500 ms chunks"
        )
        + ")\n",
        markdown_table(res, sizes),
        "### Targets (issue 5)\n",
        targets(res, sizes),
        "### Context: what else was using the machine during the window\n",
        "CPU as a share of one core (the machine has "
        f"{m['nproc']}); machine busy is the share of all cores.\n",
        context_table(res, sizes),
    ]
    if note:
        parts += ["## Notes on this run\n", note.strip() + "\n"]
    parts.append(METHOD)
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("out")
    ap.add_argument("--command", default="make bench")
    ap.add_argument("--note", default="")
    ap.add_argument("--capacity", type=Path, default=None)
    a = ap.parse_args()
    doc = json.loads(Path(a.json).read_text())
    cap = json.loads(a.capacity.read_text()) if a.capacity and a.capacity.exists() else None
    Path(a.out).write_text(render(doc, a.command, a.note, cap))


if __name__ == "__main__":
    main()
