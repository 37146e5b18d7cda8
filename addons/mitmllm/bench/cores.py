"""Where the benchmark's processes run, with ``--pin``: each proxy on a core of its own, the load
(the client in this process, the upstream) on the others.

The issue's figures were taken that way. Left to the scheduler, the client and the upstream
share the proxy's core part of the time. Pinned, every proxy (its threads, and the processes it
starts: the validation worker) runs on the last core and the load on the others; the proxies
take turns (one runs a stream at a time), so they share that core without meeting.

Not the default: on two cores, runs of the same proxy spread no less pinned than not (checked
again with the paired ratios of `mitmllm.bench.proxy.Measured.cpu_ratio`), plain mitmdump alone
on a core reads each chunk as it comes rather than several at once, and the load's one core caps
the big-event rows (direct / plain fell from 1.6-1.9x to 1.3-1.4x at 64 KiB). It means more with
three cores or more.

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
