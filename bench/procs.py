"""Child processes of the bench and what they cost, read from /proc (Linux; no psutil needed).

- `Child`: a started process (own session, SIGTERM on bench exit via setpriv --pdeathsig where
  available), its log file, and `stop()`.
- `cpu_seconds(pids)`: user+system CPU of the processes and all their descendants (utime+stime of
  /proc/<pid>/stat, which sums every thread of the process, living and exited).
- `peak_rss_mb(pid)`: VmHWM (peak resident set) of one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> list[str]:
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float  # time.perf_counter() when spawned

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_dir: Path,
    stdout_pipe: bool = False,
    prefix: Sequence[str] = (),
) -> Child:
    """Start argv in its own session (so that stop() reaches its whole process group); stderr
    (and stdout unless piped) go to log_dir/<name>.log. prefix (e.g. `taskset -c 0`) must exec
    the program so that the child's pid is the program's."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    try:
        proc = subprocess.Popen(
            [*die_with_parent(), *prefix, *argv],
            env=dict(env),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            start_new_session=True,
        )
    finally:
        log.close()
    return Child(name=name, proc=proc, log_path=log_path, started_at=time.perf_counter())


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


async def wait_tcp(port: int, timeout: float, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited during startup:\n{child.log_tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"port {port} not open after {timeout}s") from None
            await asyncio.sleep(0.01)
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return
