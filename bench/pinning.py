"""CPU pinning for `make bench`: the gateway (Envoy + service, or the LiteLLM proxy) on one core,
the load generator and the fake upstream on the others, so that the gateway's numbers are its own
and not shared with the load that drives it.

The bench process pins itself to the load CPUs first thing, before any thread exists (Linux
affinity is per thread and inherited by new threads and child processes), so the upstream it
spawns inherits them. Gateway processes are started under `taskset -c <gateway cpu>`, which sets
the affinity and execs the program (same pid), so every thread and child they make stays there.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    gateway: tuple[int, ...]
    load: tuple[int, ...]

    def describe(self) -> dict[str, object]:
        return {"gateway_cpus": list(self.gateway), "load_cpus": list(self.load)}


def plan() -> tuple[Layout | None, str]:
    """The layout on this machine, or None with the reason pinning is off."""
    if not hasattr(os, "sched_getaffinity"):
        return None, "no CPU affinity on this platform"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, f"only {len(cpus)} CPU available"
    if shutil.which("taskset") is None:
        return None, "taskset (util-linux) not found"
    # The gateway gets exactly one core whatever the machine: the unit of comparison.
    return Layout(gateway=(cpus[0],), load=tuple(cpus[1:])), ""


def pin_self(layout: Layout) -> None:
    """Pin the calling thread (call before any thread starts) to the load CPUs."""
    os.sched_setaffinity(0, set(layout.load))


def prefix(layout: Layout | None) -> list[str]:
    """The command prefix that starts a gateway process on the gateway CPU."""
    if layout is None:
        return []
    return ["taskset", "-c", ",".join(str(c) for c in layout.gateway)]
