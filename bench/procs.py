"""What the bench's child processes cost, read from /proc (Linux; no psutil needed).

- `cpu_seconds(pids)`: user+system CPU of the processes and all their descendants (utime+stime of
  /proc/<pid>/stat, which sums every thread of the process, living and exited).
- `peak_rss_mb(pid)`: VmHWM (peak resident set) of one process.

Starting and stopping them is the launcher the tests use too (tests/support/procs.py: `spawn`,
`Child`, `free_port`, `wait_tcp`), imported here so that the bench's modules say `procs.spawn`.
"""

from __future__ import annotations

import os

from tests.support.procs import Child, die_with_parent, free_port, spawn, wait_tcp

__all__ = [
    "Child",
    "cpu_seconds",
    "die_with_parent",
    "free_port",
    "machine_busy_seconds",
    "peak_rss_mb",
    "rss_mb",
    "spawn",
    "tree",
    "wait_tcp",
]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _children_of() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        out.setdefault(int(fields[1]), []).append(int(entry))
    return out


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    children = _children_of()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _own_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0.0
    # Fields after "(comm)": state is field 3, utime 14, stime 15 (1-based).
    fields = raw[raw.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_seconds(pid: int, *, with_children: bool = True) -> float:
    """CPU seconds used so far by pid (and its living descendants)."""
    pids = tree(pid) if with_children else [pid]
    return sum(_own_cpu(p) for p in pids)


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs of the machine have spent busy since boot (/proc/stat)."""
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def _status_kb(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mb(pid: int, *, with_children: bool = False) -> float:
    """Peak resident set (VmHWM) in MB; with_children sums the tree's peaks."""
    pids = tree(pid) if with_children else [pid]
    return sum(_status_kb(p, b"VmHWM:") for p in pids) / 1024.0


def rss_mb(pid: int) -> float:
    return _status_kb(pid, b"VmRSS:") / 1024.0
