"""CPU time and memory of a process and all its descendants, from /proc.

CPU is user + system clock ticks (``/proc/PID/stat`` fields 14-15, every thread
of the process) plus what its reaped children used (fields 16-17), so a job
process that ends inside a window still counts. Memory: resident set size
(VmRSS, shared pages counted in every process that maps them) and the
proportional set size (``smaps_rollup`` Pss, shared pages split between the
processes sharing them), summed over the tree.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces
    return raw[raw.rfind(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """root and every process below it (by parent pid)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        if f is None:
            continue
        children.setdefault(int(f[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def describe(pid: int) -> str:
    """A process's state letter (R, S, D, Z, T...) and command line, or "gone"."""
    f = _stat_fields(pid)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as c:
            cmd = c.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    return f"{f[0]} {cmd}" if f else "gone"


def catches(pid: int, sig: int) -> bool:
    """Whether the process has a handler for `sig` (/proc's SigCgt mask): a
    signal whose default action is to end a process is sent only to those."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except OSError:
        pass
    return False


@dataclass
class TreeSample:
    """Per-pid (own ticks, reaped children's ticks) of a process tree at one moment."""

    own: dict[int, int] = field(default_factory=dict)
    reaped: dict[int, int] = field(default_factory=dict)


def sample_cpu(root: int) -> TreeSample:
    s = TreeSample()
    for pid in descendants(root):
        f = _stat_fields(pid)
        if f is None:
            continue
        # after the "(comm) " prefix: state=0, ppid=1, ..., utime=11, stime=12,
        # cutime=13, cstime=14
        s.own[pid] = int(f[11]) + int(f[12])
        s.reaped[pid] = int(f[13]) + int(f[14])
    return s


def cpu_seconds_between(a: TreeSample, b: TreeSample) -> float:
    """CPU seconds the tree used between two samples: processes alive at both
    count their difference, processes born in between count all their time,
    and a parent's reaped-children counter adds what exited in between."""
    ticks = 0
    for pid, t in b.own.items():
        ticks += t - a.own.get(pid, 0) if pid in a.own else t
        if pid in a.reaped:
            ticks += b.reaped[pid] - a.reaped[pid]
    return ticks / TICK


def memory(root: int) -> dict[str, float]:
    """RSS and PSS of the tree in MB, and how many processes it has."""
    rss_kb = pss_kb = 0
    pids = descendants(root)
    n = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss_kb += int(line.split()[1])
                        break
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss_kb += int(line.split()[1])
                        break
            n += 1
        except OSError:
            continue
    return {"rss_mb": rss_kb / 1024, "pss_mb": pss_kb / 1024, "processes": n}


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    total = sum(parts[:8])  # without guest (already in user)
    return total - idle, total


def thread_ticks(pid: int) -> dict[str, int]:
    """CPU ticks of the worker's threads, summed by thread name (digits dropped)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    raw = f.read().decode(errors="replace")
            except OSError:
                continue
            name = re.sub(r"[\d\s_-]+$", "", raw[raw.find("(") + 1 : raw.rfind(")")]) or "?"
            fields = raw[raw.rfind(")") + 2 :].split()
            out[name] = out.get(name, 0) + int(fields[11]) + int(fields[12])
    return out
