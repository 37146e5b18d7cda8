"""Where the benchmark's processes run: each proxy on a core of its own, the load on the others.

The proxy sections measure a proxy's CPU time per event. The client (this process) and the
upstream are busy the whole run too; left to the scheduler, they share the proxy's core part of
the time, and the proxy's figure then carries their cache misses and migrations: on a two-core
machine, runs of the same proxy moved by a fifth between repetitions. So, as the figures the
targets come from were taken, every proxy (its threads, and the processes it starts: the
validation worker) is pinned to one core, and the client and the upstream to the others. The
proxies take turns (one runs a stream at a time), so they share that core without meeting.

Linux only (``os.sched_setaffinity``), and only with two usable cores or more; elsewhere nothing
is pinned and the report says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mitmllm.bench.concurrency import descendants


@dataclass(frozen=True, slots=True)
class Placement:
    """The cores of the proxies and of the load (the client and the upstream)."""

    proxy: frozenset[int]
    load: frozenset[int]

    def describe(self) -> str:
        return f"proxies on core {_cores(self.proxy)}, client and upstream on {_cores(self.load)}"


def _cores(cpus: Iterable[int]) -> str:
    return ", ".join(str(c) for c in sorted(cpus))


def usable() -> frozenset[int] | None:
    """The cores this process may run on; None where the platform does not say."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:
        return None
    try:
        return frozenset(getaffinity(0))
    except OSError:
        return None


def plan(cores: frozenset[int] | None = None) -> Placement | None:
    """The last usable core for the proxies, the others for the load; None with fewer than two
    (or where affinity cannot be set)."""
    cores = usable() if cores is None else cores
    if cores is None or len(cores) < 2 or not hasattr(os, "sched_setaffinity"):
        return None
    proxy = frozenset({max(cores)})
    return Placement(proxy, cores - proxy)


def threads(pid: int, *, tree: bool = True) -> list[int]:
    """Every thread of the process (`tree`: and of the processes it started)."""
    out: list[int] = []
    for p in [pid, *descendants(pid)] if tree else [pid]:
        try:
            out += [int(t.name) for t in Path(f"/proc/{p}/task").iterdir()]
        except OSError:
            continue
    return out


def pin(pid: int, cpus: frozenset[int], *, tree: bool = True) -> bool:
    """Run the process and its threads (`tree`: and the processes it started) on `cpus`; what
    it starts later inherits them. False when none of them could be moved."""
    moved = False
    for tid in threads(pid, tree=tree) or [pid]:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:  # gone meanwhile, or not allowed
            continue
        moved = True
    return moved
