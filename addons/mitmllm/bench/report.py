"""Figures, targets and how the benchmark prints them.

A `Figure` is one measured number with its unit and, where the project has one, a `Target`.
A figure that misses its target is printed like any other, marked MISS; the benchmark never
fails because a machine is slow. `Report` collects the figures of a run, prints the final table
and writes them as JSON. `machine()` describes where the figures were measured and `hot_spots`
formats a cProfile run, printed where a figure misses.
"""

from __future__ import annotations

import cProfile
import datetime
import math
import os
import platform
import pstats
import statistics
import sys
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import TextIO

MISS = "MISS"
MET = "met"

# The rows of a profile worth reading: the rest is noise below a few per cent.
PROFILE_TOP = 12


@dataclass(frozen=True, slots=True)
class Target:
    """What a figure should reach: at least (``>=``) or at most (``<=``) `value`."""

    op: str  # ">=" or "<="
    value: float

    def met(self, x: float) -> bool:
        return x >= self.value if self.op == ">=" else x <= self.value

    def describe(self, unit: str) -> str:
        return f"{self.op} {fmt_number(self.value)}{(' ' + unit) if unit else ''}"


def at_least(value: float) -> Target:
    return Target(">=", value)


def at_most(value: float) -> Target:
    return Target("<=", value)


@dataclass(slots=True)
class Figure:
    """One number of the run. `value` None: not measured (see `note`)."""

    section: str
    name: str
    value: float | None
    unit: str = ""
    target: Target | None = None
    note: str = ""
    #: the lowest and highest of the values the figure is the median of (each repetition's
    #: ratio), where it is one: how far one repetition can be from another on this machine
    spread: tuple[float, float] | None = None

    @property
    def met(self) -> bool | None:
        """True / False against the target; None without a target or a value."""
        if self.target is None or self.value is None or math.isnan(self.value):
            return None
        return self.target.met(self.value)

    @property
    def missed(self) -> bool:
        return self.met is False

    def shown(self) -> str:
        if self.value is None:
            return self.note or "n/a"
        return f"{fmt_number(self.value)}{(' ' + self.unit) if self.unit else ''}"

    def spread_text(self) -> str:
        """`` (low-high)`` of the repetitions, or nothing."""
        if self.spread is None:
            return ""
        low, high = self.spread
        return f" ({fmt_number(low)}-{fmt_number(high)})"

    def target_text(self) -> str:
        return self.target.describe(self.unit) if self.target else "-"

    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        met = self.met
        return "-" if met is None else (MET if met else MISS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": self.target.describe(self.unit) if self.target else None,
            "met": self.met,
            "note": self.note,
            "spread": list(self.spread) if self.spread is not None else None,
        }


def fmt_number(x: float) -> str:
    """About three significant figures, whole numbers above 1000: 41.2, 0.873, 123,456; a
    count (an int) as it is: 0, 14."""
    if isinstance(x, int):
        return f"{x:,}"
    if math.isnan(x):
        return "nan"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


@dataclass
class Report:
    """Every figure of one run, in the order measured."""

    out: TextIO | None = None  # None: sys.stdout at the time of printing
    figures: list[Figure] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    #: measurements that could not be made (not figures that missed)
    failures: int = 0

    def add(
        self,
        section: str,
        name: str,
        value: float | None,
        unit: str = "",
        target: Target | None = None,
        note: str = "",
        spread: Sequence[float] = (),
    ) -> Figure:
        """A figure; `spread`: the values it is the median of (their lowest and highest are
        kept, when there are two or more that are numbers)."""
        values = [v for v in spread if not math.isnan(v)]
        bounds = (min(values), max(values)) if len(values) > 1 else None
        fig = Figure(section, name, value, unit, target, note, bounds)
        self.figures.append(fig)
        return fig

    def fail(self, message: str) -> None:
        self.failures += 1
        self.print(f"  FAILED: {message}")

    def print(self, text: str = "") -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def heading(self, title: str) -> None:
        self.print()
        self.print(f"== {title} " + "=" * max(0, 94 - len(title)))

    def table(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        indent: int = 2,
        left: int = 1,
    ) -> None:
        """The first `left` columns left-aligned, the rest right-aligned."""
        cells = [list(header), *[list(r) for r in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        for n, row in enumerate(cells):
            parts = [
                c.ljust(widths[i]) if i < left else c.rjust(widths[i]) for i, c in enumerate(row)
            ]
            self.print(" " * indent + "  ".join(parts).rstrip())
            if n == 0:
                self.print(" " * indent + "  ".join("-" * w for w in widths))

    def summary(self) -> None:
        """The final table: every figure, its target and whether it was met."""
        self.heading("summary: every figure")
        rows = []
        for f in self.figures:
            rows.append(
                [f.section, f.name, f.shown() + f.spread_text(), f.target_text(), f.verdict()]
            )
        self.table(["section", "figure", "value", "target", "met"], rows, left=2)
        with_target = [f for f in self.figures if f.met is not None]
        missed = [f for f in with_target if f.missed]
        self.print()
        self.print(f"  {len(with_target) - len(missed)} of {len(with_target)} targets met")
        if any(f.spread is not None for f in self.figures):
            self.print(
                "  (low-high): the lowest and highest of the repetitions' own figures, of which "
                "the value is the median"
            )
        for f in missed:
            self.print(
                f"  {MISS}: {f.section} / {f.name}: {f.shown()}{f.spread_text()} "
                f"(target {f.target_text()})"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "date": datetime.date.today().isoformat(),
            "machine": self.machine,
            "settings": self.settings,
            "figures": [f.to_dict() for f in self.figures],
        }


def mark(fig: Figure) -> str:
    """A figure as a table cell: its value, and MISS next to it if it missed its target."""
    return fig.shown() + (f" {MISS}" if fig.missed else "")


# --- statistics -------------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def ratio(a: float, b: float) -> float:
    """a / b, NaN where b is 0 (two figures too close to compare)."""
    return a / b if b else math.nan


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): a value that was actually measured."""
    if not xs:
        return math.nan
    ordered = sorted(xs)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


# --- where the figures come from --------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, cores, Python and mitmproxy version of this run."""
    import mitmproxy.version

    usable: int | None = None
    if hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "mitmproxy": mitmproxy.version.VERSION,
        "platform": platform.platform(terse=True),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def print_machine(report: Report) -> None:
    m = report.machine
    usable = m.get("cores_usable")
    cores = f"{m['cores']}" + (f" ({usable} usable)" if usable and usable != m["cores"] else "")
    report.print(f"machine:   {m['cpu']}, {cores} cores, {m['platform']}")
    report.print(f"software:  {m['python']}, mitmproxy {m['mitmproxy']}")


# --- hot spots --------------------------------------------------------------------------------


def profile(run: Callable[[], object]) -> pstats.Stats:
    """cProfile one call of `run`."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        run()
    finally:
        prof.disable()
    return pstats.Stats(prof)


def hot_spots(report: Report, title: str, stats: pstats.Stats, top: int = PROFILE_TOP) -> None:
    """Print the functions with the most time of their own (tottime), most first."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    ranked = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    report.print(f"  hot spots: {title} (cProfile, top {top} by tottime)")
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in ranked:
        where = name if filename == "~" else f"{short_path(filename)}:{line}({name})"
        rows.append(
            [
                where,
                f"{ncalls:,}",
                f"{tottime * 1000:.1f}",
                f"{100 * tottime / total:.1f}%",
                f"{cumtime * 1000:.1f}",
            ]
        )
    report.table(["function", "calls", "tottime ms", "share", "cumtime ms"], rows, indent=4)
    # Time spent inside mitmllm, callees included: what its entry points cost their callers.
    inside = sum(
        caller_stats[3]
        for (filename, _line, _name), (*_, callers) in raw.items()
        if _is_mitmllm(filename)
        for caller, caller_stats in callers.items()
        if not _is_mitmllm(caller[0])
    )
    report.print(
        f"    {100 * inside / total:.0f}% of the {total * 1000:.0f} ms profiled is in mitmllm"
    )


def _is_mitmllm(filename: str) -> bool:
    norm = filename.replace("\\", "/")
    return "/mitmllm/" in norm and "/mitmllm/bench/" not in norm


def short_path(filename: str) -> str:
    """A source path from the package down (``mitmllm/protocol/sse.py``), not the machine's."""
    norm = filename.replace("\\", "/")
    stdlib = f"/python{sys.version_info.major}.{sys.version_info.minor}/"
    for anchor in ("site-packages/", "/addons/", stdlib):
        i = norm.rfind(anchor)
        if i != -1:
            return norm[i + len(anchor) :]
    if norm.startswith(("<", "~")):
        return norm
    return os.path.basename(norm)
