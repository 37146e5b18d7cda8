"""``python -m mitmllm.bench [--quick] [--only SECTION[,SECTION]] [--formats FORMAT[,FORMAT]]
[--against REV] [--json FILE]``

Prints the machine, then each section's figures, then one table with every figure, its target
and whether it was met. Exits 0 whatever the figures; 1 only if a measurement could not be made.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path

import orjson

from mitmllm.bench import SECTIONS
from mitmllm.bench import big
from mitmllm.bench import codec
from mitmllm.bench import memory
from mitmllm.bench import proxy
from mitmllm.bench import soak
from mitmllm.bench.concurrency import ConcurrencySizes
from mitmllm.bench.corpus import FORMATS
from mitmllm.bench.corpus import KiB
from mitmllm.bench.corpus import MiB
from mitmllm.bench.report import Report
from mitmllm.bench.report import machine
from mitmllm.bench.report import print_machine


@dataclass(frozen=True, slots=True)
class Sizes:
    codec: codec.CodecSizes
    big: big.BigSizes
    proxy: proxy.ProxySizes
    concurrency: ConcurrencySizes
    memory: memory.MemorySizes
    soak: soak.SoakSizes


#: The default run: a few minutes on two cores.
DEFAULT = Sizes(
    codec=codec.CodecSizes(budget=4 * MiB, runs=5),
    big=big.BigSizes(mib=(8, 16, 32), runs=3),
    proxy=proxy.ProxySizes(
        events=16_000,
        reps=5,
        ttfb_requests=200,
        warmup_requests=20,
        latency_events=506,
        latency_rate=500,
    ),
    # The load: 100 conversations at 20 tokens/s, 10 s each, opened over a second.
    concurrency=ConcurrencySizes(streams=100, events=206, rate=20, ramp=1.0, settle=1.0, reps=3),
    memory=memory.MemorySizes(mib=256),
    soak=soak.SoakSizes(streams=100, seed=1),
)
#: Every section end to end in seconds; its figures say little.
QUICK = Sizes(
    codec=codec.CodecSizes(budget=64 * KiB, runs=1),
    big=big.BigSizes(mib=(1, 2, 4), runs=1),
    proxy=proxy.ProxySizes(
        events=300,
        reps=1,
        ttfb_requests=10,
        warmup_requests=2,
        latency_events=56,
        latency_rate=500,
        stream_events=100,
        big_bytes=2 * MiB,
    ),
    concurrency=ConcurrencySizes(streams=40, events=26, rate=20, ramp=0.2, settle=0.2, reps=2),
    memory=memory.MemorySizes(mib=4),
    soak=soak.SoakSizes(streams=30, seed=1),
)


def parse_sections(text: str) -> list[str]:
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(
            f"unknown section {', '.join(unknown) or repr(text)}; choose from {','.join(SECTIONS)}"
        )
    return wanted


def parse_formats(text: str) -> list[str]:
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in FORMATS]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(unknown) or repr(text)}; choose from {','.join(FORMATS)}"
        )
    return wanted


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mitmllm.bench",
        description="Print mitmllm's figures: codec throughput, big events, proxy and relay "
        "overhead, many streams at once. "
        "Figures that miss their target are marked MISS; the run never fails on a slow machine.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: every section in seconds (smoke test)"
    )
    parser.add_argument(
        "--only",
        type=parse_sections,
        default=list(SECTIONS),
        metavar="SECTION[,SECTION]",
        help=f"run only these sections ({','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--formats",
        type=parse_formats,
        default=list(FORMATS),
        metavar="FORMAT[,FORMAT]",
        help=f"the proxy section's wire formats ({','.join(FORMATS)})",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run each proxy of the proxy sections on a core of its own and the client and the "
        "upstream on the others (needs three cores or more to mean much: on two, the load's one "
        "core caps the big-event rows)",
    )
    parser.add_argument(
        "--against",
        default=None,
        metavar="REV",
        help="run the proxy section's addon setups (tap, restamp, repair) a second time from "
        "git revision REV's code, taking turns with this code's, and print this code's CPU per "
        "event against REV's in every row: a change of a few per cent shows side by side, "
        "where the machine's drift hides it between runs (needs a git checkout)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the figures as JSON"
    )
    args = parser.parse_args(argv)
    if args.against is not None and proxy.SECTION not in args.only:
        parser.error("--against compares the proxy section's setups: run it (--only proxy)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    baseline = None
    if args.against is not None:
        try:
            baseline = proxy.resolve_baseline(args.against)
        except proxy.BenchError as e:
            print(f"mitmllm bench: {e}", file=sys.stderr)
            return 2
    report = Report()
    report.machine = machine()
    report.settings = {
        "quick": args.quick,
        "sections": args.only,
        "formats": args.formats,
        "pinned": args.pin,
        "against": baseline.rev if baseline is not None else None,
        **asdict(sizes),
    }
    report.print(
        "mitmllm bench" + (" --quick: tiny sizes, the figures mean little" if args.quick else "")
    )
    print_machine(report)
    t0 = time.perf_counter()
    interrupted = False
    steps: list[tuple[str, Callable[[], None]]] = []
    if "codec" in args.only:
        steps.append(("codec", lambda: codec.run(report, sizes.codec)))
    if "big" in args.only:
        steps.append(("big", lambda: big.run(report, sizes.big)))
    # The relay and concurrency sections share the proxy section's processes.
    proxy_sections = [s for s in args.only if s in proxy.SECTIONS]
    if proxy_sections:
        steps.append(
            (
                "proxy",
                lambda: proxy.run(
                    report,
                    sizes.proxy,
                    sizes.concurrency,
                    proxy_sections,
                    args.formats,
                    pin=args.pin,
                    baseline=baseline,
                ),
            )
        )
    if "soak" in args.only:
        steps.append(("soak", lambda: soak.run(report, sizes.soak)))
    if "memory" in args.only:
        steps.append(("memory", lambda: memory.run(report, sizes.memory)))
    try:
        for name, step in steps:
            try:
                step()
            except Exception:  # one broken section must not hide the others' figures
                report.fail(f"section {name}:\n{traceback.format_exc()}")
    except KeyboardInterrupt:
        report.print("\ninterrupted; figures so far:")
        interrupted = True
    report.summary()
    report.print(f"\n  run took {time.perf_counter() - t0:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2))
        report.print(f"  figures written to {args.json}")
    return 1 if interrupted or report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
