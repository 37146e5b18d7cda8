"""Section `big`: one huge event costs linear time and memory.

An Anthropic stream carrying a single text delta of 8, 16 and 32 MiB arrives in 64 KiB chunks
and goes through the codec and the validator (`StreamChecker`). If buffering or scanning were
quadratic, four times the event would cost sixteen times as much; linear is four.

Time and memory are measured in separate passes, because tracemalloc slows allocation down:
time is the median of several untraced runs, memory the peak of one traced run (Python
allocations made while the stream is fed, so the chunks themselves do not count).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from dataclasses import dataclass

from mitmllm.bench.corpus import MiB
from mitmllm.bench.corpus import big_event_chunks
from mitmllm.bench.report import Report
from mitmllm.bench.report import at_most
from mitmllm.bench.report import hot_spots
from mitmllm.bench.report import mark
from mitmllm.bench.report import median
from mitmllm.bench.report import profile
from mitmllm.protocol import detect
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.stream import StreamChecker

SECTION = "big"
#: Linear growth gives 4 for four times the event, quadratic 16. The slack absorbs noise and
#: the step a buffer takes when it outgrows the CPU caches (measured: 4.4-4.9 for 32/8).
LINEAR_SLACK = 1.5
CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class BigSizes:
    mib: tuple[int, ...]  # event sizes, smallest first; the figures compare the last to the first
    runs: int


def feed(chunks: list[bytes]) -> StreamChecker:
    checker = StreamChecker(detect.by_name("anthropic"))
    for chunk in chunks:
        checker.feed(chunk)
    checker.close()
    return checker


def seconds(chunks: list[bytes]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    feed(chunks)
    return time.perf_counter() - t0


def peak_bytes(chunks: list[bytes]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        feed(chunks)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run(report: Report, sizes: BigSizes) -> None:
    first, last = sizes.mib[0], sizes.mib[-1]
    report.heading(f"big: one event of {', '.join(map(str, sizes.mib))} MiB in 64 KiB chunks")
    report.print(
        f"  decode+validate (Anthropic); time: median of {sizes.runs} runs; "
        "memory: tracemalloc peak"
    )
    rows = []
    measured: dict[int, tuple[float, int]] = {}
    chunks: list[bytes] = []
    for i, mib in enumerate(sizes.mib):
        chunks = big_event_chunks(mib * MiB, CHUNK)
        checker = feed(chunks)  # warm-up, and the stream must be one the validator accepts
        errors = [f for f in checker.findings if f.severity is Severity.ERROR]
        if errors:
            report.print(f"  note: the {mib} MiB stream has findings: {checker.findings.summary()}")
        if i == 0:
            feed(chunks)
        t = median([seconds(chunks) for _ in range(sizes.runs)])
        peak = peak_bytes(chunks)
        measured[mib] = (t, peak)
        name = f"{mib} MiB event"
        ft = report.add(SECTION, f"{name}: time", t * 1000, "ms")
        fper = report.add(SECTION, f"{name}: time per MiB", t * 1000 / mib, "ms/MiB")
        fmem = report.add(SECTION, f"{name}: peak memory", peak / MiB, "MiB")
        fx = report.add(SECTION, f"{name}: peak / event size", peak / (mib * MiB), "x")
        rows.append([f"{mib} MiB", mark(ft), mark(fper), mark(fmem), mark(fx)])
    report.table(["event", "time", "per MiB", "peak memory", "peak / event"], rows)
    scale = f"{last}/{first}"
    (t0, m0), (t1, m1) = measured[first], measured[last]
    linear = last / first
    target = at_most(LINEAR_SLACK * linear)
    ftime = report.add(SECTION, f"time {scale} (linear = {linear:g})", t1 / t0, "x", target)
    fmem = report.add(SECTION, f"peak memory {scale} (linear = {linear:g})", m1 / m0, "x", target)
    report.print(f"  {ftime.name}: {mark(ftime)}; {fmem.name}: {mark(fmem)}")
    if ftime.missed or fmem.missed:
        report.print()
        hot_spots(report, f"decode+validate of the {last} MiB event", profile(lambda: feed(chunks)))
