"""BENCHMARKS.md's capacity section from bench/capacity.py's JSON (issue 15)."""

from __future__ import annotations

from typing import Any

# Worker threads by what they do (names from /proc/PID/task/*/comm, digits
# dropped; libwebrtc and the SDK name their threads).
THREAD_GROUPS = (
    ("Opus encode (libwebrtc encoder queue)", ("AudioEncoder",)),
    ("hold audio capture (AudioSource 10 ms task)", ("AudioSourceCapt", "AudioSource")),
    ("decode / playout (synthetic audio device)", ("SyntheticAudio",)),
    ("WebRTC network and worker threads", ("network_thread", "worker_thread", "signaling")),
    ("FFI server (tokio)", ("tokio",)),
    ("Python", ("python", "MainThread", "asyncio", "ThreadPool", "job_thread", "Thread")),
)


def _pct(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{v * 100:.{digits}f} %"


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}"


def thread_groups(threads: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, share in threads.items():
        group = "other threads"
        for label, prefixes in THREAD_GROUPS:
            if name.startswith(prefixes):
                group = label
                break
        out[group] = out.get(group, 0.0) + share
    return out


def steps_table(doc: dict[str, Any]) -> str:
    lines = [
        "| worker | N | answered | worker CPU (one core) | per call | RSS per call over idle (MB) "
        "| gaps | longest gap (ms) | dead air p50 / p95 (ms) | handoff p50 / p95 (ms) "
        "| generator CPU | late ticks | passes |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --- |",
    ]
    for kind, steps in doc.get("steps", {}).items():
        for s in steps:
            if "error" in s:
                lines.append(f"| {kind} | {s['n']} | error: {s['error'][:90]} |" + " |" * 10)
                continue
            g = s.get("generator", {})
            lines.append(
                f"| {kind} | {s['n']} | {s.get('answered')}/{s['n']} | {_pct(s.get('worker_cpu'))} "
                f"| {_pct(s.get('cpu_per_call'), 2)} | {s.get('rss_per_call_over_idle_mb', 0):.1f} "
                f"| {_pct(s.get('gap_share'), 3)} | {_ms(s.get('longest_gap_ms'))} "
                f"| {_ms(s.get('dead_air_ms_p50'))} / {_ms(s.get('dead_air_ms_p95'))} "
                f"| {_ms(s.get('handoff_ms_p50'))} / {_ms(s.get('handoff_ms_p95'))} "
                f"| {_pct(g.get('cpu_steady_share'))} | {g.get('late_ticks', '-')} "
                f"| {'yes' if s.get('passes') else '**no**'} |"
            )
    return "\n".join(lines) + "\n"


def variants_table(doc: dict[str, Any]) -> str:
    rows = doc.get("variants", [])
    if not rows:
        return ""
    base = next(
        (s for s in doc.get("steps", {}).get("ours", []) if s.get("n") == doc["plan"]["at"]),
        None,
    )
    lines = [
        f"| ours at N = {doc['plan']['at']} | worker CPU | per call | vs defaults | gaps "
        "| dead air p95 | handoff p95 | passes |",
        "| --- | --: | --: | --: | --: | --: | --: | --- |",
    ]
    ref = base.get("cpu_per_call") if base else None
    if base and "error" not in base:
        lines.append(
            f"| defaults (the step above) | {_pct(base.get('worker_cpu'))} "
            f"| {_pct(ref, 2)} | 1.00 | {_pct(base.get('gap_share'), 3)} "
            f"| {_ms(base.get('dead_air_ms_p95'))} | {_ms(base.get('handoff_ms_p95'))} "
            f"| {'yes' if base.get('passes') else 'no'} |"
        )
    for r in rows:
        per = r.get("cpu_per_call")
        ratio = f"{per / ref:.2f}" if per and ref else "-"
        lines.append(
            f"| {r.get('variant')} | {_pct(r.get('worker_cpu'))} | {_pct(per, 2)} | {ratio} "
            f"| {_pct(r.get('gap_share'), 3)} | {_ms(r.get('dead_air_ms_p95'))} "
            f"| {_ms(r.get('handoff_ms_p95'))} | {'yes' if r.get('passes') else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def floors_table(doc: dict[str, Any]) -> str:
    floors = doc.get("floors", [])
    if not floors:
        return ""
    ours = {s["n"]: s for s in doc.get("steps", {}).get("ours", []) if "cpu_per_call" in s}
    lines = [
        "| floor | N | answered | CPU per room | ours per call at that N | ours / floor |",
        "| --- | --: | --: | --: | --: | --: |",
    ]
    for f in floors:
        if "error" in f:
            lines.append(f"| {f['mode']} | {f['n']} | error: {f['error'][:80]} | | | |")
            continue
        o = ours.get(f["n"], {}).get("cpu_per_call")
        ratio = f"{o / f['cpu_per_call']:.2f}" if o and f.get("cpu_per_call") else "-"
        lines.append(
            f"| {f['mode']} | {f['n']} | {f.get('answered')}/{f['n']} "
            f"| {_pct(f.get('cpu_per_call'), 2)} | {_pct(o, 2)} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def profile_tables(doc: dict[str, Any]) -> str:
    profs = [p for p in doc.get("profiles", []) if "threads" in p]
    if not profs:
        return ""
    groups: list[str] = []
    per_n = []
    for p in profs:
        g = thread_groups(p["threads"])
        per_n.append((p["n"], g, p))
        groups += [k for k in g if k not in groups]
    head = "| per held call (share of one core) | " + " | ".join(f"N = {n}" for n, _, _ in per_n)
    lines = [head + " |", "| --- |" + " --: |" * len(per_n)]
    for k in groups:
        cells = [_pct(g.get(k, 0.0) / max(1, p.get("answered") or 1), 2) for _, g, p in per_n]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    cells = [_pct(p.get("cpu_per_call"), 2) for _, _, p in per_n]
    lines.append("| **whole worker** | " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n"
    py_rows: list[str] = []
    for n, g, p in per_n:
        py = p.get("profile", {}).get("python")
        py_cpu = g.get("Python", 0.0) / max(1, p.get("answered") or 1)
        if py:
            parts = ", ".join(f"{k} {v * 100:.0f} %" for k, v in py.items())
            py_rows.append(f"- N = {n}: Python {_pct(py_cpu, 2)} per call, of which {parts}")
        elif p.get("profile", {}).get("pyspy_error"):
            py_rows.append(f"- N = {n}: py-spy: {p['profile']['pyspy_error']}")
    if py_rows:
        out += "\nThe Python threads' samples (py-spy, by the innermost frame's owner):\n\n"
        out += "\n".join(py_rows) + "\n"
    perf_rows = []
    for n, _, p in per_n:
        perf = p.get("profile", {}).get("perf")
        if perf:
            top = ", ".join(f"{r['thread']}/{r['dso']} {r['share'] * 100:.0f} %" for r in perf[:8])
            perf_rows.append(f"- N = {n}: {top}")
        elif p.get("profile", {}).get("perf_error"):
            perf_rows.append(f"- N = {n}: perf: {p['profile']['perf_error']}")
    if perf_rows:
        out += "\nperf (cpu-clock samples by thread and library; liblivekit_ffi.so is stripped, "
        out += "so native time is told apart by thread, not by function):\n\n"
        out += "\n".join(perf_rows) + "\n"
    return out


def render(doc: dict[str, Any]) -> str:
    cap = doc.get("capacity", {})
    crit = doc["criteria"]
    parts = [
        "## Held calls per worker core (the worker on a core of its own)\n",
        f"Run of {doc['date']} ({doc.get('minutes', 0):.0f} min, `python -m bench.capacity`; "
        "raw figures in `bench/capacity.json`). The worker under test runs alone on core "
        f"{doc['cores']['worker']} (`taskset`); livekit-server, Redis, livekit-sip, the guardian "
        f"and the load generator share core {doc['cores']['rest']}. The generator "
        "(`bench/loadgen`, Go, LiveKit's server SDK) joins N callers of kind `sip`, each "
        "publishing pre-encoded Opus, and counts the hold audio's RTP packets without "
        "decoding them; then one agent per room speaks (the handoff).\n",
        "**Held calls per worker core**: "
        + ", ".join(f"{k} **{v}**" for k, v in cap.items())
        + f" (the largest N, step 10, with every call answered, hold-stream gaps under "
        f"{crit['gap_share_max'] * 100:.1f} %, dead air p95 under "
        f"{crit['dead_air_p95_ms_max']:.0f} ms and handoff p95 under "
        f"{crit['handoff_p95_ms_max']:.0f} ms; the steps stop at the first N that fails).\n",
        steps_table(doc),
    ]
    v = variants_table(doc)
    if v:
        parts += [f"### Variants of ours at N = {doc['plan']['at']}, same run\n", v]
    f = floors_table(doc)
    if f:
        parts += [
            "### The floors, same run\n",
            "A bare livekit.rtc process on the worker's core (`bench/floor.py`), nothing of "
            "ours: `publish` publishes one track per room fed from memory in 500 ms pushes; "
            "`subscribe` also subscribes to the room's caller (decoded by the SDK, read by "
            "nobody).\n",
            f,
        ]
    p = profile_tables(doc)
    if p:
        parts += [
            "### Where a held call's CPU goes (ours, by thread)\n",
            "CPU of the worker's threads over the steady window (`/proc/PID/task`), by what "
            "each thread does, divided by the calls on hold.\n",
            p,
        ]
    return "\n".join(parts)
