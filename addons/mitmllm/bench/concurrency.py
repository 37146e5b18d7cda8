"""Section `concurrency`: many conversations at a realistic token rate through one proxy.

`streams` paced streams (`mitmllm.bench.latency`), each `rate` text deltas a second, their
starts spread over `ramp` seconds, through each setup in turn: no proxy (``direct``, the
baseline), plain mitmdump, mitmdump with the addon (tap-only) and with the relay. The figures
come from the steady state: deltas written while every stream runs, from `settle` seconds after
the last one opened to the first one's end. Per setup:

* events/s held: the deltas per second that reached the client in the steady state, all
  streams together, against the offered ``streams x rate``;
* per-event latency (client receive - upstream send, one clock), p50 and p99 over every delta
  written in the steady state; what a proxy adds is its percentile minus the direct run's (the
  client and the upstream under the same load): a difference of percentiles, not a percentile
  of differences. The whole run's p99 (opening and closing included) is printed next to it;
* the proxy's resident memory: the peak during the run (VmHWM of ``/proc/PID/status``, reset
  just before the run; sampled VmRSS where the reset is not allowed) next to its RSS before,
  and the CPU time it used over the run (its child processes' too), as a share of one core
  (Python runs on one) and per event carried, against plain mitmdump's per event;
* the full garbage collections the proxy ran meanwhile: each one stops every stream of the
  process for its length, which shows in the latency's tail and in no profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from mitmllm.bench.corpus import LIFECYCLE_EVENTS
from mitmllm.bench.latency import PacedRun
from mitmllm.bench.latency import PacedStream
from mitmllm.bench.latency import paced_run
from mitmllm.bench.report import Figure
from mitmllm.bench.report import Report
from mitmllm.bench.report import at_most
from mitmllm.bench.report import mark
from mitmllm.bench.report import median
from mitmllm.bench.report import ratio

SECTION = "concurrency"
#: The issues' targets for the relay under this load: p99 added per-event latency, and CPU time
#: per event against plain mitmdump's.
TARGET_ADDED_P99_MS = 10.0
TARGET_CPU_RATIO = 1.5
#: Seconds between two samples of a proxy's RSS, where its peak cannot be reset.
RSS_SAMPLE = 0.1


@dataclass(frozen=True, slots=True)
class ConcurrencySizes:
    streams: int
    events: int  # events per stream: LIFECYCLE_EVENTS of them, the rest paced deltas
    rate: float  # deltas per second and stream
    ramp: float  # seconds over which the streams start
    settle: float  # seconds after the last start before the steady state begins
    #: loads of each setup, in rotating order; the figures are each setup's median run (by CPU
    #: per event), since one run's CPU per event moves by a fifth on a busy two-core machine
    reps: int = 1

    @property
    def deltas(self) -> int:
        return self.events - LIFECYCLE_EVENTS


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One setup to load: where it listens and, for a proxy, its process."""

    name: str
    port: int
    pid: int | None  # None: no proxy
    description: str = ""
    #: the lengths (ms) of the full collections the proxy began between two clock values (ns)
    full_collections: Callable[[int, int], list[float]] | None = None


@dataclass(frozen=True, slots=True)
class Loaded:
    """One setup under the load."""

    endpoint: Endpoint
    run: PacedRun
    rss_before_kib: int | None = None
    rss_peak_kib: int | None = None
    cpu: float | None = None  # the proxy's CPU seconds per second of the run
    full_collections: list[float] | None = None  # ms each
    cpu_seconds: float | None = None  # the proxy's CPU time over the run, its children's too

    @property
    def events(self) -> int:
        """Every event the client read, all streams together."""
        return sum(s.events for s in self.run.streams)

    @property
    def cpu_per_event(self) -> float | None:
        """The proxy's CPU time per event carried, in microseconds."""
        if self.cpu_seconds is None or not self.events:
            return None
        return self.cpu_seconds / self.events * 1e6


# --- the proxy's memory and CPU --------------------------------------------------------------


def status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM); None where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux: 5 to /proc/PID/clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of the process so far; None where there is no /proc.

    To the nanosecond where the kernel tells the scheduler's runtime of each thread
    (/proc/PID/task/*/sched); else in clock ticks (/proc/PID/stat: 10 ms, as much as a run of
    a few thousand events costs the proxy, so too coarse for a ratio of two runs)."""
    precise = _runtime_seconds(pid)
    if precise is not None:
        return precise
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name in parentheses may hold spaces; the fields after it do not.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_RUNTIME = "se.sum_exec_runtime"


def _runtime_seconds(pid: int) -> float | None:
    """The CPU time of the process's threads by the scheduler's account (in ms with six
    decimals), or None where there is none (no such file, or a kernel that keeps it at 0).
    Threads that ended are not in it: mitmdump's run the whole time."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    total = 0.0
    for task in tasks:
        try:
            text = (task / "sched").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue  # the thread ended in between
        for line in text.splitlines():
            if line.startswith(_RUNTIME):
                total += float(line.rpartition(":")[2])
                break
        else:
            return None
    return total / 1000 if total > 0 else None


def descendants(pid: int) -> list[int]:
    """The process's children, grandchildren, ... (Linux: /proc/PID/task/*/children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text(encoding="ascii").split()
            except OSError:
                continue
            kids = [int(c) for c in children]
            out += kids
            todo += kids
    return out


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time of the process and the processes it started (mitmllm's validation worker is
    one), so work moved out of the proxy still counts; None where there is no /proc."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(cpu_seconds(child) or 0.0 for child in descendants(pid))


class PeakRss:
    """The peak RSS of a process over a stretch of time, in KiB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = status_kib(pid, "VmRSS")
        self.exact = self.before is not None and reset_peak(pid)
        self.sampled = self.before or 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(RSS_SAMPLE)
            self.sampled = max(self.sampled, status_kib(self.pid, "VmRSS") or 0)

    def start(self) -> None:
        if self.before is not None and not self.exact:
            self._task = asyncio.get_running_loop().create_task(self._sample())

    async def stop(self) -> int | None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.before is None:
            return None
        if self.exact:
            return status_kib(self.pid, "VmHWM")
        return max(self.sampled, status_kib(self.pid, "VmRSS") or 0)


# --- measurement -----------------------------------------------------------------------------


async def load(
    client: aiohttp.ClientSession,
    endpoint: Endpoint,
    sizes: ConcurrencySizes,
    check: Callable[[PacedStream], object] | None = None,
) -> Loaded:
    """The concurrency load through one setup."""
    pid = endpoint.pid
    rss = PeakRss(pid) if pid is not None else None
    cpu0 = tree_cpu_seconds(pid) if pid is not None else None
    t0 = time.monotonic_ns()
    if rss is not None:
        rss.start()
    run = await paced_run(
        client,
        endpoint.port,
        streams=sizes.streams,
        events=sizes.events,
        rate=sizes.rate,
        ramp=sizes.ramp,
        check=check,
    )
    t1 = time.monotonic_ns()
    cpu1 = tree_cpu_seconds(pid) if pid is not None else None
    used = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    cpu = used / (t1 - t0) * 1e9 if used is not None else None
    gcs = endpoint.full_collections(t0, t1) if endpoint.full_collections else None
    if rss is None:
        return Loaded(endpoint, run, full_collections=gcs)
    return Loaded(endpoint, run, rss.before, await rss.stop(), cpu, gcs, used)


# --- figures ---------------------------------------------------------------------------------


def describe(report: Report, sizes: ConcurrencySizes) -> None:
    report.heading(
        f"concurrency: {sizes.streams} streams at {sizes.rate:g} events/s each through one proxy"
    )
    report.print(
        f"  each stream: {sizes.deltas} stamped text deltas paced {1000 / sizes.rate:g} ms apart "
        f"(~{sizes.deltas / sizes.rate:.0f} s); starts spread over {sizes.ramp:g} s; offered "
        f"{sizes.streams * sizes.rate:,.0f} events/s"
    )
    report.print(
        f"  steady state: deltas written from {sizes.settle:g} s after the last stream's first "
        "delta to the first stream's last one; held: those that arrived in it per second"
    )
    report.print(
        "  latency: per delta after each stream's first, client receive - upstream send (one "
        "monotonic clock); added = a proxy's percentile - the run's without a proxy"
    )
    if sizes.reps > 1:
        report.print(
            f"  {sizes.reps} loads of each setup, setups in rotating order; the figures are each "
            "setup's median load by CPU per event, a ratio to plain's CPU per event the median "
            "of each repetition's ratio"
        )


def median_load(loads: Sequence[Loaded]) -> Loaded:
    """The load whose CPU per event is the median of `loads` (the lower one of an even count;
    the first when none was measured): its figures all come from one run."""
    measured = sorted((x for x in loads if x.cpu_per_event is not None), key=_cpu)
    if not measured:
        return loads[0]
    return measured[(len(measured) - 1) // 2]


def _cpu(x: Loaded) -> float:
    return x.cpu_per_event or 0.0


def paired_ratios(loads: dict[str, list[Loaded]], plain: str = "plain") -> dict[str, list[float]]:
    """Each setup's CPU per event / plain's, load by load: the nth load of every setup ran in
    the nth repetition, the setups back to back, so each ratio is taken under the same
    conditions (as the proxy section's ratios are). NaN where either was not measured."""
    base = loads.get(plain, [])
    out: dict[str, list[float]] = {}
    for name, runs in loads.items():
        if name == plain:
            continue
        out[name] = [
            ratio(x.cpu_per_event, b.cpu_per_event)
            if x.cpu_per_event is not None and b.cpu_per_event is not None
            else math.nan
            for x, b in zip(runs, base, strict=False)
        ]
    return out


def cpu_line(loads: dict[str, list[Loaded]]) -> str:
    """Each setup's CPU per event in every load, in µs: how much one run moves."""
    parts = []
    for name, runs in loads.items():
        values = [f"{x.cpu_per_event:.0f}" for x in runs if x.cpu_per_event is not None]
        if values:
            parts.append(f"{name} {', '.join(values)}")
    return "  CPU per event of each load (µs): " + "; ".join(parts)


def figures(
    report: Report,
    loaded: Sequence[Loaded],
    sizes: ConcurrencySizes,
    *,
    baseline: str,
    targeted: str,
    plain: str = "plain",
    paired: dict[str, list[float]] | None = None,
) -> list[Figure]:
    """Print and record the section's figures; those that missed their target. `baseline`
    names the setup without a proxy, `plain` plain mitmdump, `targeted` the one the targets
    apply to. `paired`: each setup's CPU per event / plain's in every repetition of the load
    (`paired_ratios`); a setup's ratio is then their median, with their spread, and the median
    load's ratio where it has none."""
    steady = {x.endpoint.name: x.run.steady(sizes.settle) for x in loaded}
    base = next((x for x in loaded if x.endpoint.name == baseline), None)
    base50 = base99 = base99_all = math.nan
    if base is not None:
        window = steady[baseline]
        base50, base99 = base.run.latency(50, window), base.run.latency(99, window)
        base99_all = base.run.latency(99)
    rows = []
    missed: list[Figure] = []
    plain_cpu = next((x.cpu_per_event for x in loaded if x.endpoint.name == plain), None)
    for x in loaded:
        name = x.endpoint.name
        run = x.run
        window = steady[name]
        if window is None:
            report.print(f"  note: {name}: the streams hardly overlapped; figures of the whole run")
        p50, p90, p99 = (run.latency(p, window) for p in (50, 90, 99))
        p99_all = run.latency(99)
        held = report.add(
            SECTION,
            f"{name}: events/s held of {run.offered:,.0f}",
            run.held(window) if window else math.nan,
            "events/s",
        )
        added50 = added99 = added99_all = rss = cpu = per_event = by_plain = None
        if name == baseline:
            report.add(SECTION, f"{name}: per-event latency p50", p50, "ms")
            report.add(SECTION, f"{name}: per-event latency p99", p99, "ms")
        else:
            added50 = report.add(SECTION, f"{name}: added latency p50", p50 - base50, "ms")
            added99 = report.add(
                SECTION,
                f"{name}: added latency p99",
                p99 - base99,
                "ms",
                at_most(TARGET_ADDED_P99_MS) if name == targeted else None,
            )
            added99_all = report.add(
                SECTION, f"{name}: added latency p99, whole run", p99_all - base99_all, "ms"
            )
            if added99.missed:
                missed.append(added99)
            note = "" if x.rss_peak_kib is not None else "no /proc on this system"
            peak = x.rss_peak_kib / 1024 if x.rss_peak_kib is not None else None
            rss = report.add(SECTION, f"{name}: proxy RSS peak", peak, "MiB", note=note)
            share = 100 * x.cpu if x.cpu is not None else None
            cpu = report.add(SECTION, f"{name}: proxy CPU", share, "% of a core", note=note)
            per_event = report.add(
                SECTION, f"{name}: CPU per event", x.cpu_per_event, "µs", note=note
            )
            if name != plain:
                reps = [r for r in (paired or {}).get(name, []) if not math.isnan(r)]
                by_plain = report.add(
                    SECTION,
                    f"{name}: CPU per event / plain",
                    median(reps)
                    if reps
                    else ratio(x.cpu_per_event, plain_cpu)
                    if x.cpu_per_event is not None and plain_cpu is not None
                    else None,
                    "x",
                    at_most(TARGET_CPU_RATIO) if name == targeted else None,
                    note=note or "no plain run",
                    spread=reps,
                )
                if by_plain.missed:
                    missed.append(by_plain)
        before = x.rss_before_kib
        rows.append(
            [
                name,
                mark(held),
                f"{ratio(held.value or math.nan, run.offered):.3f}",
                f"{p50:.2f}",
                f"{p90:.2f}",
                f"{p99:.2f}",
                f"{p99_all:.2f}",
                mark(added50) if added50 is not None else "-",
                mark(added99) if added99 is not None else "-",
                mark(added99_all) if added99_all is not None else "-",
                f"{before / 1024:.0f} MiB" if before is not None else "-",
                mark(rss) if rss is not None else "-",
                f"{cpu.value:.0f}%" if cpu is not None and cpu.value is not None else "-",
                mark(per_event) if per_event is not None else "-",
                mark(by_plain) if by_plain is not None else "-",
                collections(x.full_collections),
            ]
        )
    report.table(
        [
            "setup",
            "held",
            "/offered",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99 all",
            "added p50",
            "added p99",
            "added p99 all",
            "RSS before",
            "RSS peak",
            "CPU",
            "CPU/event",
            "/plain",
            "full GCs",
        ],
        rows,
    )
    for f in missed:
        x = next(x for x in loaded if f.name.startswith(f"{x.endpoint.name}: "))
        if x.full_collections and f.name.endswith("added latency p99"):
            report.print(
                f"  note: {x.endpoint.name}: {len(x.full_collections)} full garbage collections "
                f"in the proxy during the run, the longest {max(x.full_collections):.0f} ms; "
                "every stream of the process waits for each"
            )
    return missed


def collections(lengths: list[float] | None) -> str:
    """Full collections as a table cell: how many, and the longest."""
    if lengths is None:
        return "-"
    if not lengths:
        return "0"
    return f"{len(lengths)}, max {max(lengths):.0f} ms"


def unavailable(report: Report, name: str, sizes: ConcurrencySizes, reason: str) -> None:
    """The rows of a setup that could not be loaded, and why."""
    held = f"events/s held of {sizes.streams * sizes.rate:,.0f}"
    for what in (
        held,
        "added latency p50",
        "added latency p99",
        "proxy RSS peak",
        "CPU per event / plain",
    ):
        f = report.add(SECTION, f"{name}: {what}", None, note=reason)
        report.print(f"  {f.name}: {f.shown()}")
