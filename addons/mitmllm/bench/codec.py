"""Section `codec`: codec and validator throughput, in process, one core.

Each format's `long` corpus goes through three stages, fed the same chunks:

* decode: the SSE codec alone (`Decoder`);
* validate: codec + payload parsing + the format's validator (`StreamChecker`);
* rewrite: the whole `Pipeline` with a rewrite that restamps the model on every payload
  (`Dialect.restamp`), spliced into each event it changes.

The stages take turns within each repetition, so a machine that slows down mid-run slows all of
them alike; the first repetition warms up and is dropped, the figure is the median of the rest.
Only the feeding is timed: building the corpus and the stage objects is not.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmllm.bench.corpus import FORMATS
from mitmllm.bench.corpus import RESTAMP_MODEL
from mitmllm.bench.corpus import Corpus
from mitmllm.bench.corpus import KiB
from mitmllm.bench.corpus import codec_corpus
from mitmllm.bench.report import Figure
from mitmllm.bench.report import Report
from mitmllm.bench.report import at_least
from mitmllm.bench.report import hot_spots
from mitmllm.bench.report import mark
from mitmllm.bench.report import median
from mitmllm.bench.report import profile
from mitmllm.engine.pipeline import Pipeline
from mitmllm.protocol import detect
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.sse import Decoder
from mitmllm.protocol.stream import StreamChecker

SECTION = "codec"
#: The issue's target for codec + validators, on one core.
TARGET_MB_S = 40.0

DECODE = "decode"
VALIDATE = "validate"
REWRITE = "rewrite"
STAGES = (DECODE, VALIDATE, REWRITE)

#: (label, chunk size): one event per chunk as a token-by-token upstream sends them, and 16 KiB
#: reads as a fast upstream or a replay delivers them.
CHUNKINGS: tuple[tuple[str, int | None], ...] = (
    ("1 event/chunk", None),
    ("16 KiB chunks", 16 * KiB),
)


@dataclass(frozen=True, slots=True)
class CodecSizes:
    budget: int  # corpus bytes per format
    runs: int  # measured repetitions (after one warm-up)


def run_stage(stage: str, corpus: Corpus, chunks: list[bytes]) -> tuple[float, int]:
    """Seconds and events for one pass of `chunks` through a fresh `stage`."""
    dialect = detect.by_name(corpus.fmt)
    request = dict(corpus.request)
    if stage == DECODE:
        decoder = Decoder()
        t0 = time.perf_counter()
        n = 0
        for chunk in chunks:
            n += len(decoder.feed(chunk))
        n += len(decoder.close()[0])
        return time.perf_counter() - t0, n
    if stage == VALIDATE:
        checker = StreamChecker(dialect, request=request)
        t0 = time.perf_counter()
        n = 0
        for chunk in chunks:
            n += len(checker.feed(chunk))
        n += len(checker.close())
        return time.perf_counter() - t0, n
    if dialect is None:
        raise ValueError(f"no dialect named {corpus.fmt!r}")

    def restamp(payload: Any) -> list[Edit]:
        return dialect.restamp(payload, RESTAMP_MODEL)

    pipeline = Pipeline(StreamChecker(dialect, request=request), [restamp])
    t0 = time.perf_counter()
    for chunk in chunks:
        pipeline.feed(chunk)
    pipeline.close()
    return time.perf_counter() - t0, pipeline.events


def measure(corpus: Corpus, chunks: list[bytes], runs: int) -> dict[str, tuple[float, int]]:
    """Median seconds (and events) per stage, stages interleaved, one warm-up dropped."""
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    events: dict[str, int] = {}
    for rep in range(1 + runs):
        for stage in STAGES:
            gc.collect()
            seconds, n = run_stage(stage, corpus, chunks)
            if rep:
                times[stage].append(seconds)
            events[stage] = n
    return {s: (median(times[s]), events[s]) for s in STAGES}


def run(report: Report, sizes: CodecSizes) -> None:
    report.heading(
        f"codec: SSE codec + validators, in process, one core (target >= {TARGET_MB_S:g} MB/s)"
    )
    report.print(
        f"  corpus: the mock's `long` stream per format, ~{sizes.budget / 1e6:.1f} MB each; "
        f"median of {sizes.runs} runs after a warm-up"
    )
    rows: list[list[str]] = []
    misses: dict[str, tuple[float, str, Corpus, list[bytes]]] = {}
    totals: dict[str, list[float]] = {label: [0.0, 0.0] for label, _ in CHUNKINGS}
    for fmt in FORMATS:
        corpus = codec_corpus(fmt, sizes.budget)
        mb = corpus.size / 1e6
        for label, size in CHUNKINGS:
            chunks = corpus.chunks(size)
            res = measure(corpus, chunks, sizes.runs)
            (t_dec, n_dec), (t_val, n_val), (t_rw, n_rw) = (res[s] for s in STAGES)
            where = f"{fmt}, {label}"
            dec = report.add(SECTION, f"{where}: decode", mb / t_dec, "MB/s")
            val = report.add(
                SECTION, f"{where}: decode+validate", mb / t_val, "MB/s", at_least(TARGET_MB_S)
            )
            val_ev = report.add(SECTION, f"{where}: decode+validate", n_val / t_val, "events/s")
            rw_ev = report.add(SECTION, f"{where}: pipeline+restamp", n_rw / t_rw, "events/s")
            ratio = report.add(
                SECTION, f"{where}: restamp/validate", (n_rw / t_rw) / (n_val / t_val), "x"
            )
            totals[label][0] += corpus.size
            totals[label][1] += t_val
            rows.append(
                [
                    fmt,
                    label,
                    f"{len(chunks):,}",
                    f"{n_val:,}",
                    f"{mb:.2f}",
                    mark(dec),
                    mark(val),
                    mark(val_ev),
                    mark(rw_ev),
                    mark(ratio),
                ]
            )
            if val.missed and (fmt not in misses or (val.value or 0.0) < misses[fmt][0]):
                misses[fmt] = (val.value or 0.0, label, corpus, chunks)
    report.table(
        [
            "format",
            "feed",
            "chunks",
            "events",
            "MB",
            "decode",
            "decode+validate",
            "validate ev/s",
            "restamp ev/s",
            "restamp/validate",
        ],
        rows,
    )
    overall: list[Figure] = []
    for label, (total_bytes, total_seconds) in totals.items():
        overall.append(
            report.add(
                SECTION,
                f"all formats, {label}: decode+validate",
                total_bytes / 1e6 / total_seconds,
                "MB/s",
                at_least(TARGET_MB_S),
            )
        )
    report.print("  " + "; ".join(f"{f.name}: {mark(f)}" for f in overall))
    for fmt, (_value, label, corpus, chunks) in misses.items():
        report.print()
        stats = profile(_stage_call(VALIDATE, corpus, chunks))
        hot_spots(report, f"{fmt} decode+validate, {label}", stats)


def _stage_call(stage: str, corpus: Corpus, chunks: list[bytes]) -> Callable[[], object]:
    return lambda: run_stage(stage, corpus, chunks)
