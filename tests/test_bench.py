"""The benchmark: it feeds the healthy streams it claims to, frames them as it says, and
``python -m mitmllm.bench --quick`` runs every section end to end. No figure is asserted."""

from __future__ import annotations

import io

import orjson
import pytest

from mitmllm.bench import SECTIONS
from mitmllm.bench.__main__ import main
from mitmllm.bench.__main__ import parse_args
from mitmllm.bench.corpus import FORMATS
from mitmllm.bench.corpus import KiB
from mitmllm.bench.corpus import MiB
from mitmllm.bench.corpus import big_event_chunks
from mitmllm.bench.corpus import codec_corpus
from mitmllm.bench.corpus import group
from mitmllm.bench.corpus import proxy_events
from mitmllm.bench.proxy import ROWS
from mitmllm.bench.proxy import concurrency
from mitmllm.bench.proxy import relay_unavailable
from mitmllm.bench.report import MISS
from mitmllm.bench.report import Report
from mitmllm.bench.report import at_least
from mitmllm.bench.report import at_most
from mitmllm.bench.report import hot_spots
from mitmllm.bench.report import percentile
from mitmllm.bench.report import profile
from mitmllm.bench.upstream import framed
from mitmllm.protocol import detect
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.stream import check_stream


def problems(findings: Findings) -> list[str]:
    return [str(f) for f in findings if f.severity is not Severity.INFO]


@pytest.mark.parametrize("fmt", FORMATS)
def test_codec_corpus_is_a_healthy_stream_written_one_event_per_chunk(fmt: str) -> None:
    corpus = codec_corpus(fmt, 32 * KiB)
    findings, pairs, _ = check_stream(
        detect.by_name(fmt), corpus.body, request=dict(corpus.request)
    )
    assert problems(findings) == []
    assert [ev.raw for ev, _ in pairs] == corpus.chunks(None)
    assert 24 * KiB < corpus.size < 40 * KiB
    assert b"".join(corpus.chunks(1000)) == corpus.body
    assert {len(c) for c in corpus.chunks(1000)[:-1]} == {1000}


def test_big_event_is_one_healthy_event_in_64_KiB_chunks() -> None:
    chunks = big_event_chunks(MiB)
    findings, pairs, _ = check_stream(detect.by_name("anthropic"), b"".join(chunks))
    assert problems(findings) == []
    assert max(len(ev.raw) for ev, _ in pairs) > MiB
    assert {len(c) for c in chunks[:-1]} == {64 * KiB}


def test_proxy_stream_is_healthy_with_deltas_of_150_to_200_bytes() -> None:
    events = proxy_events(200)
    assert len(events) == 200
    findings, pairs, _ = check_stream(detect.by_name("anthropic"), b"".join(events))
    assert problems(findings) == []
    deltas = [len(ev.raw) for ev, _ in pairs if ev.event == "content_block_delta"]
    assert len(deltas) == 194
    assert min(deltas) >= 150 and max(deltas) <= 200


@pytest.mark.parametrize("per_chunk", [1, 4])
def test_upstream_writes_per_chunk_events_in_each_http_chunk(per_chunk: int) -> None:
    events = proxy_events(50)
    chunks = []
    for frame in framed(50, per_chunk):
        size, _, rest = frame.partition(b"\r\n")
        assert rest.endswith(b"\r\n") and len(rest) == int(size, 16) + 2
        chunks.append(rest[:-2])
    assert b"".join(chunks) == b"".join(events)
    assert chunks == group(events, per_chunk)
    assert all(c.count(b"\n\n") == per_chunk for c in chunks[:-1])


def test_report_marks_a_missed_target_and_counts_only_targets() -> None:
    report = Report(out=io.StringIO())
    fast = report.add("codec", "fast enough", 41.0, "MB/s", at_least(40))
    slow = report.add("codec", "too slow", 12.0, "MB/s", at_least(40))
    late = report.add("proxy", "added TTFB", 0.7, "ms", at_most(0.5))
    info = report.add("proxy", "no target", 3.0, "x")
    gone = report.add("relay", "not measured", None, note="not available yet")
    assert (fast.met, slow.met, late.met, info.met, gone.met) == (True, False, False, None, None)
    report.summary()
    out = report.out.getvalue()  # type: ignore[attr-defined]
    assert "1 of 3 targets met" in out
    assert f"{MISS}: codec / too slow" in out and f"{MISS}: proxy / added TTFB" in out
    assert "not available yet" in out
    assert [f["met"] for f in report.to_json()["figures"]] == [True, False, False, None, None]


def test_percentile_is_a_measured_value_by_nearest_rank() -> None:
    xs = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 90) == 5.0
    assert percentile(xs, 1) == 1.0


def test_hot_spots_name_the_functions_that_took_the_time() -> None:
    report = Report(out=io.StringIO())

    def busy() -> int:
        return sum(i * i for i in range(20_000))

    hot_spots(report, "busy", profile(busy))
    out = report.out.getvalue()  # type: ignore[attr-defined]
    assert "hot spots: busy" in out and "(busy)" in out and "(<genexpr>)" in out


def test_hooks_report_rows_without_values_and_say_why() -> None:
    report = Report(out=io.StringIO())
    relay_unavailable(report, "not available yet (no relay)")
    concurrency(report)
    assert report.figures and all(f.value is None and f.met is None for f in report.figures)
    assert {f.section for f in report.figures} == {"relay", "concurrency"}
    out = report.out.getvalue()  # type: ignore[attr-defined]
    assert all(f"{label}: relay / plain: not available yet (no relay)" in out for label, _ in ROWS)
    assert "proxy RSS: not available yet" in out


def test_only_rejects_an_unknown_section() -> None:
    assert parse_args(["--only", "codec,big"]).only == ["codec", "big"]
    with pytest.raises(SystemExit):
        parse_args(["--only", "codec,nope"])


def test_quick_run_prints_every_section(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out_json = tmp_path / "figures.json"
    code = main(["--quick", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.index("machine:") < out.index("== codec")
    for section in SECTIONS:
        assert f"\n== {section}" in out
    assert out.rindex("== summary") > max(out.index(f"\n== {s}") for s in SECTIONS)
    data = orjson.loads(out_json.read_bytes())
    assert data["machine"]["mitmproxy"] and data["machine"]["cores"]
    assert {f["section"] for f in data["figures"]} == set(SECTIONS)
