"""The benchmark: it feeds the healthy streams it claims to, frames and paces them as it says,
measures latency, memory and garbage collections as it says, and ``python -m mitmllm.bench
--quick`` runs every section end to end. No figure is asserted, only how figures are made."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import math
import os
import re
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.bench import SECTIONS
from mitmllm.bench import concurrency
from mitmllm.bench import cores
from mitmllm.bench.__main__ import main
from mitmllm.bench.__main__ import parse_args
from mitmllm.bench.corpus import CALLS
from mitmllm.bench.corpus import FORMATS
from mitmllm.bench.corpus import LIFECYCLE_EVENTS
from mitmllm.bench.corpus import RESTAMP_ALIAS
from mitmllm.bench.corpus import STAMP
from mitmllm.bench.corpus import STAMP_DIGITS
from mitmllm.bench.corpus import KiB
from mitmllm.bench.corpus import MiB
from mitmllm.bench.corpus import big_event_chunks
from mitmllm.bench.corpus import codec_corpus
from mitmllm.bench.corpus import delta_text
from mitmllm.bench.corpus import group
from mitmllm.bench.corpus import lifecycle_events
from mitmllm.bench.corpus import proxy_events
from mitmllm.bench.corpus import proxy_request
from mitmllm.bench.latency import PacedRun
from mitmllm.bench.latency import PacedStream
from mitmllm.bench.latency import paced_run
from mitmllm.bench.memory import HEADER_BYTES
from mitmllm.bench.memory import _serve_stream
from mitmllm.bench.memory import expected_bytes
from mitmllm.bench.memory import stream_parts
from mitmllm.bench.proxy import DIRECT
from mitmllm.bench.proxy import GC_SCRIPT
from mitmllm.bench.proxy import PLAIN
from mitmllm.bench.proxy import RELAY
from mitmllm.bench.proxy import RELAY_ROWS
from mitmllm.bench.proxy import RELAY_TTFB
from mitmllm.bench.proxy import REPAIR
from mitmllm.bench.proxy import RESTAMP
from mitmllm.bench.proxy import TAP
from mitmllm.bench.proxy import WORKER
from mitmllm.bench.proxy import Baseline
from mitmllm.bench.proxy import BenchError
from mitmllm.bench.proxy import EventCounter
from mitmllm.bench.proxy import Marker
from mitmllm.bench.proxy import Measured
from mitmllm.bench.proxy import Process
from mitmllm.bench.proxy import ProxySizes
from mitmllm.bench.proxy import Run
from mitmllm.bench.proxy import Running
from mitmllm.bench.proxy import Setup
from mitmllm.bench.proxy import addon_script
from mitmllm.bench.proxy import checkout
from mitmllm.bench.proxy import extract_baseline
from mitmllm.bench.proxy import http_client
from mitmllm.bench.proxy import interpreter_code
from mitmllm.bench.proxy import place
from mitmllm.bench.proxy import plan_rows
from mitmllm.bench.proxy import proxy_figures
from mitmllm.bench.proxy import relay_figures
from mitmllm.bench.proxy import relay_ready
from mitmllm.bench.proxy import relay_unavailable
from mitmllm.bench.proxy import resolve_baseline
from mitmllm.bench.proxy import setups
from mitmllm.bench.proxy import sizes_figures
from mitmllm.bench.proxy import turns
from mitmllm.bench.proxy import unplace
from mitmllm.bench.report import MISS
from mitmllm.bench.report import Report
from mitmllm.bench.report import at_least
from mitmllm.bench.report import at_most
from mitmllm.bench.report import hot_spots
from mitmllm.bench.report import median
from mitmllm.bench.report import percentile
from mitmllm.bench.report import profile
from mitmllm.bench.upstream import Connection
from mitmllm.bench.upstream import framed
from mitmllm.bench.upstream import paced
from mitmllm.bench.upstream import stamp
from mitmllm.bench.upstream import stream_format
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


@pytest.mark.parametrize("fmt", FORMATS)
def test_proxy_stream_in_every_format_is_healthy_with_the_deltas_asked_for(fmt: str) -> None:
    for text_bytes in (None, 4 * KiB):
        events = proxy_events(40, fmt=fmt, text_bytes=text_bytes)
        assert len(events) == 40
        request = dict(CALLS[fmt].body)
        findings, pairs, _ = check_stream(detect.by_name(fmt), b"".join(events), request=request)
        assert problems(findings) == []
        texts = [delta_text(i, text_bytes=text_bytes) for i in range(40 - lifecycle_events(fmt))]
        # each delta is the first event that carries its text (Responses repeats it later)
        sizes = [len(next(e for e in events if t.encode() in e)) for t in texts]
        if text_bytes is None:
            assert min(sizes) >= 150 and max(sizes) <= 400
        else:
            assert text_bytes < min(sizes) and max(sizes) < text_bytes + 400


@pytest.mark.parametrize("fmt", FORMATS)
def test_mixed_proxy_streams_carry_code_and_other_languages_and_stay_healthy(fmt: str) -> None:
    """The streams of the mixed rows: most deltas' texts have an escape (a line break, a
    quote) or characters beyond ASCII, as a coding agent's answers do; the same events as
    the prose streams, and as healthy."""
    plain = proxy_events(40, fmt=fmt)
    events = proxy_events(40, fmt=fmt, mixed=True)
    assert len(events) == len(plain) == 40
    texts = [delta_text(i, mixed=True) for i in range(40 - lifecycle_events(fmt))]
    wire = [orjson.dumps(t)[1:-1] for t in texts]
    assert all(any(w in e for e in events) for w in wire)  # in JSON as the APIs send them
    odd = [w for w in wire if b"\\" in w or not w.isascii()]
    assert len(odd) > 0.75 * len(wire)
    assert any(b"\\" in w and not w.isascii() for w in wire)
    request = dict(CALLS[fmt].body)
    findings, _pairs, _ = check_stream(detect.by_name(fmt), b"".join(events), request=request)
    assert problems(findings) == []


@pytest.mark.parametrize("fmt", ["openai-chat", "openai-responses"])
def test_padded_proxy_streams_pad_every_delta_and_stay_healthy(fmt: str) -> None:
    """The streams of the padded rows: OpenAI's, an ``obfuscation`` pad on each delta."""
    plain = proxy_events(40, fmt=fmt)
    events = proxy_events(40, fmt=fmt, padded=True)
    deltas = [e for e in events if b"delta" in e and b"obfuscation" in e]
    assert len(events) == len(plain) == 40 and len(deltas) == 40 - lifecycle_events(fmt)
    request = dict(CALLS[fmt].body)
    findings, _pairs, _ = check_stream(detect.by_name(fmt), b"".join(events), request=request)
    assert problems(findings) == []
    path, headers, body = proxy_request(40, fmt=fmt, padded=True)
    assert headers["x-bench-padded"] == "1" and b'"include_obfuscation":true' in body
    assert framed(40, 1, fmt, None, True) == tuple(b"%x\r\n%b\r\n" % (len(e), e) for e in events)
    with pytest.raises(ValueError, match="no pads"):
        proxy_events(40, fmt="anthropic", padded=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_upstream_answers_in_the_format_the_request_path_names(fmt: str) -> None:
    path, _headers, _body = proxy_request(10, fmt=fmt, model=RESTAMP_ALIAS)
    assert stream_format(f"POST {path} HTTP/1.1") == fmt
    assert framed(10, 1, fmt) == tuple(
        b"%x\r\n%b\r\n" % (len(ev), ev) for ev in proxy_events(10, fmt=fmt)
    )
    # The alias reaches the upstream where the format carries the model (Gemini: the path).
    assert RESTAMP_ALIAS in (path if fmt == "gemini" else _body.decode())


async def test_each_answer_of_the_upstream_carries_ids_of_its_own() -> None:
    """As a real upstream's: two answers to the same request differ in their ids (as long as
    the mock's), and in nothing else."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    path, headers, body = proxy_request(12, fmt="openai-chat")
    try:
        async with http_client() as client:
            answers = []
            for _ in range(2):
                async with client.post(
                    f"http://127.0.0.1:{port}{path}", headers=headers, data=body
                ) as resp:
                    answers.append(await resp.read())
    finally:
        server.close()
        await server.wait_closed()
    mock = b"".join(proxy_events(12, fmt="openai-chat"))
    ids = [re.findall(rb'"id":"chatcmpl-(\w+)"', a) for a in answers]
    assert len(set(ids[0])) == len(set(ids[1])) == 1 and ids[0][0] != ids[1][0]
    assert len(ids[0][0]) == len(ids[1][0]) == len(b"mock")
    assert [a.replace(i[0], b"mock") for a, i in zip(answers, ids, strict=True)] == [mock, mock]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(FORMATS), st.lists(st.integers(min_value=0, max_value=5000), max_size=20))
def test_event_counter_counts_each_event_once_however_the_body_is_cut(
    fmt: str, cuts: list[int]
) -> None:
    body = b"".join(proxy_events(12, fmt=fmt))
    bounds = sorted({0, len(body), *(c % len(body) for c in cuts)})
    counter = EventCounter(crlf=fmt == "gemini")
    for a, b in pairwise(bounds):
        counter.feed(body[a:b])
    assert counter.count == 12


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
    printed = io.StringIO()
    report = Report(out=printed)
    fast = report.add("codec", "fast enough", 41.0, "MB/s", at_least(40))
    slow = report.add("codec", "too slow", 12.0, "MB/s", at_least(40))
    late = report.add("proxy", "added TTFB", 0.7, "ms", at_most(0.5))
    info = report.add("proxy", "no target", 3.0, "x")
    gone = report.add("relay", "not measured", None, note="not available yet")
    assert (fast.met, slow.met, late.met, info.met, gone.met) == (True, False, False, None, None)
    report.summary()
    out = printed.getvalue()
    assert "1 of 3 targets met" in out
    assert f"{MISS}: codec / too slow" in out and f"{MISS}: proxy / added TTFB" in out
    assert "not available yet" in out
    assert [f["met"] for f in report.to_json()["figures"]] == [True, False, False, None, None]


def test_a_median_figure_shows_the_lowest_and_highest_repetition() -> None:
    from mitmllm import docs

    printed = io.StringIO()
    report = Report(out=printed)
    ratios = [1.31, 1.12, 1.2, float("nan"), 1.18]
    fig = report.add("proxy", "tap / plain", median(ratios[:3]), "x", at_most(1.15), spread=ratios)
    one = report.add("proxy", "one repetition", 1.0, "x", spread=[1.0])
    assert fig.spread == (1.12, 1.31) and fig.spread_text() == " (1.12-1.31)"
    assert one.spread is None and one.spread_text() == ""  # nothing to spread over
    report.summary()
    out = printed.getvalue()
    assert "1.20 x (1.12-1.31)" in out and f"{MISS}: proxy / tap / plain: 1.20 x (1.12-1.31)" in out
    figures = report.to_json()["figures"]
    assert figures[0]["spread"] == [1.12, 1.31] and figures[1]["spread"] is None
    table = docs.bench_markdown(report.to_json())
    assert "| proxy | tap / plain | 1.20 x (1.12-1.31) | <= 1.15 x | **no** |" in table
    assert "| proxy | one repetition | 1.00 x |  |  |" in table


def test_percentile_is_a_measured_value_by_nearest_rank() -> None:
    xs = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 90) == 5.0
    assert percentile(xs, 1) == 1.0


def test_hot_spots_name_the_functions_that_took_the_time() -> None:
    printed = io.StringIO()
    report = Report(out=printed)

    def busy() -> int:
        return sum(i * i for i in range(20_000))

    hot_spots(report, "busy", profile(busy))
    out = printed.getvalue()
    assert "hot spots: busy" in out and "(busy)" in out and "(<genexpr>)" in out


def test_rows_of_a_relay_that_cannot_run_have_no_values_and_say_why() -> None:
    printed = io.StringIO()
    report = Report(out=printed)
    relay_unavailable(report, "not available yet (no relay)")
    sizes = concurrency.ConcurrencySizes(streams=4, events=65, rate=20, ramp=0.0, settle=0.1)
    concurrency.unavailable(report, RELAY, sizes, "not available yet (no relay)")
    assert report.figures and all(f.value is None and f.met is None for f in report.figures)
    assert {f.section for f in report.figures} == {"relay", "concurrency"}
    out = printed.getvalue()
    assert all(
        f"{label}: relay / plain, events/s: not available yet (no relay)" in out
        for label in RELAY_ROWS
    )
    assert "relay: proxy RSS peak: not available yet (no relay)" in out


def test_only_rejects_an_unknown_section() -> None:
    assert parse_args(["--only", "codec,big"]).only == ["codec", "big"]
    assert parse_args([]).pin is False and parse_args(["--pin"]).pin is True
    with pytest.raises(SystemExit):
        parse_args(["--only", "codec,nope"])


# It takes 30-60 s on two idle cores and starts several mitmdump processes; the bound only
# catches a hang, on a machine whose cores are busy with something else too.
@pytest.mark.timeout(900)
def test_quick_run_prints_every_section(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out_json = tmp_path / "figures.json"
    code = main(["--quick", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.index("machine:") < out.index("== codec")
    for section in SECTIONS:
        assert f"\n== {section}" in out
    assert out.rindex("== summary") > max(out.index(f"\n== {s}") for s in SECTIONS)
    assert "CPU per event of each load (µs): " in out, "each setup loaded twice, as listed"
    data = orjson.loads(out_json.read_bytes())
    assert data["machine"]["mitmproxy"] and data["machine"]["cores"]
    assert {f["section"] for f in data["figures"]} == set(SECTIONS)
    # The targets are in the figures, with a verdict wherever the relay ran.
    figures = {(f["section"], f["name"]): f for f in data["figures"]}
    for section, name, target in [
        ("proxy", "gemini, 4 events/chunk: tap / plain, CPU per event", "<= 1.15 x"),
        ("proxy", "openai-chat, 1 event/chunk: tap / plain, events/s", ">= 0.900 x"),
        ("proxy", "openai-responses, 1 event/chunk: restamp / tap, CPU per event", "<= 1.10 x"),
        ("proxy", "anthropic, 4 events/chunk: repair / tap, CPU per event", "<= 1.10 x"),
        ("sizes", "64 KiB events: tap / plain, CPU per event", "<= 1.30 x"),
    ]:
        figure = figures[(section, name)]
        assert figure["target"] == target and figure["met"] in (True, False), figure
    targeted = [
        ("relay", f"{RELAY_ROWS[0]}: relay / plain, events/s", ">= 0.700 x"),
        ("relay", RELAY_TTFB, "<= 2.00 ms"),
        ("concurrency", "relay: added latency p99", "<= 10.0 ms"),
        ("concurrency", "relay: CPU per event / plain", "<= 1.50 x"),
    ]
    for section, name, target in targeted:
        figure = figures[(section, name)]
        if relay_ready() is None:
            assert figure["target"] == target and figure["met"] in (True, False), figure
        else:
            assert figure["value"] is None and figure["note"], figure
    assert figures[("concurrency", "plain: proxy RSS peak")]["unit"] == "MiB"


# --- per-event latency: stamped, paced streams ------------------------------------------------


def test_stamped_stream_is_the_proxy_stream_with_one_stamp_per_delta() -> None:
    plain, stamped = proxy_events(60), proxy_events(60, stamped=True)
    assert [len(e) for e in stamped] == [len(e) for e in plain]
    findings, pairs, _ = check_stream(detect.by_name("anthropic"), b"".join(stamped))
    assert problems(findings) == []
    assert [ev.raw.count(STAMP) for ev, _ in pairs] == [0, 0, 0] + [1] * 54 + [0, 0, 0]
    assert b"".join(stamped).count(STAMP[:1]) == 54  # nothing else can be mistaken for one


def test_paced_upstream_writes_the_stamped_stream_with_its_clock_in_the_stamps() -> None:
    stream = paced(20)
    before = time.monotonic_ns()
    frames = [stamp(delta, at) for delta, at in stream.deltas]
    after = time.monotonic_ns()
    body = []
    for part in (stream.head, *frames, stream.tail):
        while part:
            size, _, rest = part.partition(b"\r\n")
            n = int(size, 16)
            body.append(rest[:n])
            assert rest[n : n + 2] == b"\r\n"
            part = rest[n + 2 :]
    assert body[-1] == b""  # the last chunk ends the response
    events = body[:-1]
    clocks = [int(e[e.index(STAMP) + len(STAMP) :][:STAMP_DIGITS]) for e in events if STAMP in e]
    assert len(clocks) == 20 - LIFECYCLE_EVENTS
    assert before <= clocks[0] <= clocks[-1] <= after
    blank = [e[: e.find(STAMP) + len(STAMP)] + b"0" * STAMP_DIGITS + e[e.find(STAMP) + 22 :]
             if STAMP in e else e for e in events]  # fmt: skip
    assert blank == proxy_events(20, stamped=True)


def stamped_body(deltas: int, first: int = 10**12) -> tuple[bytes, list[int]]:
    """A stamped stream with the stamps filled in: first, first+1, ..."""
    events = proxy_events(deltas + LIFECYCLE_EVENTS, stamped=True)
    clocks: list[int] = []
    out = []
    for ev in events:
        if STAMP in ev:
            at = ev.index(STAMP) + len(STAMP)
            clocks.append(first + len(clocks))
            ev = ev[:at] + b"%020d" % clocks[-1] + ev[at + STAMP_DIGITS :]
        out.append(ev)
    return b"".join(out), clocks


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_paced_client_reads_every_stamp_once_however_the_body_is_cut(cuts: list[int]) -> None:
    body, clocks = stamped_body(8)
    bounds = sorted({0, len(body), *(c % len(body) for c in cuts)})
    stream = PacedStream()
    for n, (a, b) in enumerate(pairwise(bounds)):
        stream.feed(body[a:b], 10**13 + n)
    assert stream.events == 8 + LIFECYCLE_EVENTS and stream.stamps == 8
    assert stream.first_sent == clocks[0]
    assert stream.sent == clocks[1:]  # the first delta is the time to first byte's
    assert stream.received == sorted(stream.received)
    # Each stamp counts as received when the chunk that completes it arrives.
    for sent, received in zip(stream.sent, stream.received, strict=True):
        end = body.index(b"%020d" % sent) + STAMP_DIGITS
        chunk = next(i for i, (a, b) in enumerate(pairwise(bounds)) if a < end <= b)
        assert received == 10**13 + chunk


def synthetic(sent: list[list[int]], delay: list[list[int]], rate: float) -> PacedRun:
    streams = []
    for s, d in zip(sent, delay, strict=True):
        ps = PacedStream(first_sent=s[0] - round(1e9 / rate))
        ps.sent, ps.received = list(s), [t + x for t, x in zip(s, d, strict=True)]
        streams.append(ps)
    return PacedRun(streams, rate)


def test_steady_state_is_while_every_stream_runs_after_settling() -> None:
    ms = 1_000_000
    # Two streams at 100/s (10 ms apart): one from 10 ms to 1 s, one from 210 ms to 1.2 s.
    a = [10 * ms * i for i in range(1, 101)]
    b = [200 * ms + t for t in a]
    lat = [[ms] * 100, [ms] * 100]
    lat[0][0] = lat[1][-1] = 500 * ms  # the opening and closing stragglers
    run = synthetic([a, b], lat, rate=100)
    window = run.steady(settle=0.1)
    assert window is not None
    assert window.start == 200 * ms + 100 * ms and window.end == 1000 * ms
    assert run.latency(99, window) == 1.0 and run.latency(100) == 500.0
    assert run.held(window) == pytest.approx(2 * 100, rel=0.02)  # both streams keep up
    assert run.steady(settle=0.9) is None  # the streams overlap for less than that


def test_held_falls_when_the_proxy_spaces_events_out() -> None:
    ms = 1_000_000
    sent = [10 * ms * i for i in range(1, 201)]
    # A proxy that can pass only every other interval: the backlog grows by 5 ms per event.
    slow = synthetic([sent], [[5 * ms * i for i in range(200)]], rate=100)
    window = slow.steady(settle=0.0)
    assert window is not None
    assert slow.held(window) == pytest.approx(100 / 1.5, rel=0.05)
    assert slow.latency(50, window) > 400


async def test_paced_run_through_the_upstream_keeps_its_pace_and_every_stamp() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with http_client() as client:
            run = await paced_run(client, port, streams=3, events=16, rate=200, ramp=0.01)
    finally:
        server.close()
        await server.wait_closed()
    assert [(s.events, s.stamps) for s in run.streams] == [(16, 10)] * 3
    assert all(s.served_by is None for s in run.streams)
    for s in run.streams:
        # Due times are counted from the first delta: the upstream never writes ahead of them.
        assert s.sent[-1] - s.first_sent >= 9 * 5_000_000 - 1_000_000
        assert all(r >= t for t, r in zip(s.sent, s.received, strict=True))
    assert len(run.latencies_ms()) == 27


# --- the proxy's memory, CPU and garbage collections ------------------------------------------

proc_fs = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


@proc_fs
async def test_peak_rss_sees_memory_held_for_a_moment() -> None:
    rss = concurrency.PeakRss(os.getpid())
    assert rss.before is not None
    rss.start()
    blob = b"x" * (64 * MiB)  # written, so resident
    await asyncio.sleep(0.3)
    del blob
    peak = await rss.stop()
    assert peak is not None and peak - rss.before >= 60 * 1024


@proc_fs
def test_cpu_seconds_count_this_process_working() -> None:
    before = concurrency.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    after = concurrency.cpu_seconds(os.getpid())
    assert before is not None and after is not None and after - before >= 0.1


@proc_fs
def test_cpu_seconds_are_finer_than_a_clock_tick_where_the_scheduler_tells_them() -> None:
    """/proc/PID/stat counts 10 ms ticks, as much as a short run costs the proxy; where the
    kernel keeps each thread's runtime, the reading agrees with this process's own clock to
    well under a tick."""
    if concurrency._runtime_seconds(os.getpid()) is None:
        pytest.skip("this kernel keeps no runtime per thread (/proc/PID/task/*/sched)")
    before, own_before = concurrency.cpu_seconds(os.getpid()), time.process_time()
    while time.process_time() < own_before + 0.05:
        pass
    after, own_after = concurrency.cpu_seconds(os.getpid()), time.process_time()
    assert before is not None and after is not None
    assert abs((after - before) - (own_after - own_before)) < 0.003


def test_gc_script_logs_full_collections_the_proxy_reads_back(tmp_path: Path) -> None:
    log = tmp_path / "proxy.gc"
    namespace: dict[str, object] = {}
    callbacks = list(gc.callbacks)
    t0 = time.monotonic_ns()
    try:
        exec(GC_SCRIPT.format(out=str(log)), namespace)
        gc.collect(0)  # not a full one: not logged
        gc.collect()
    finally:
        gc.callbacks[:] = callbacks
    t1 = time.monotonic_ns()
    proc = Process("relay", None, tmp_path / "relay.log", gc_log=log)  # type: ignore[arg-type]
    pauses = proc.full_collections(t0, t1)
    assert pauses and all(0 <= p < (t1 - t0) / 1e6 for p in pauses)
    assert proc.full_collections(t1 + 1, t1 + 10**9) == []


# --- the relay's and the concurrency run's figures ---------------------------------------------


def measured(ttfb_ms: dict[str, float], relay_rate: float, latency: dict[str, float]) -> Measured:
    setups = [Setup(n, None if n == DIRECT else ()) for n in (DIRECT, PLAIN, TAP, RELAY)]
    m = Measured(setups)
    rates = {DIRECT: 300_000.0, PLAIN: 40_000.0, TAP: 20_000.0, RELAY: relay_rate}
    for label in RELAY_ROWS:
        for name, rate in rates.items():
            cpu = None if name == DIRECT else 40_000 / rate
            m.runs[(label, name)] = [Run(40_000, 40_000 / rate, cpu)]
    for name in rates:
        m.ttfb[name] = [ttfb_ms[name] / 1000] * 5
        m.latency[name] = [latency[name]] * 50
    return m


@pytest.mark.parametrize(
    ("relay_rate", "relay_ttfb", "met"),
    [(30_000.0, 3.0, (True, True)), (20_000.0, 5.0, (False, False))],
    ids=["met", "missed"],
)
def test_relay_figures_judge_the_rate_and_ttfb_targets_from_the_measurements(
    relay_rate: float, relay_ttfb: float, met: tuple[bool, bool]
) -> None:
    printed = io.StringIO()
    report = Report(out=printed)
    ttfb = {DIRECT: 0.3, PLAIN: 2.0, TAP: 2.1, RELAY: relay_ttfb}
    latency = {DIRECT: 0.05, PLAIN: 0.15, TAP: 0.25, RELAY: 0.45}
    missed = relay_figures(report, measured(ttfb, relay_rate, latency))
    assert missed == (not met[0], not met[1])
    figures = {f.name: f for f in report.figures}
    assert figures[f"{RELAY_ROWS[0]}: relay / plain, events/s"].met is met[0]
    # the target is at one event per chunk
    assert figures[f"{RELAY_ROWS[1]}: relay / plain, events/s"].target is None
    # CPU per event: one second for 40,000 events is 25 µs
    assert figures[f"{RELAY_ROWS[0]}: relay CPU per event"].value == pytest.approx(1e6 / relay_rate)
    assert figures[f"{RELAY_ROWS[0]}: relay / plain, CPU per event"].value == pytest.approx(
        40_000 / relay_rate
    )
    assert figures[RELAY_TTFB].met is met[1]
    assert figures["per-event latency p50: direct (baseline)"].value == pytest.approx(0.05)
    assert figures["per-event latency p50 added: relay"].value == pytest.approx(0.4)
    assert figures["per-event latency added: relay / plain"].value == pytest.approx(4.0)
    assert figures["per-event latency added: relay / tap-only"].value == pytest.approx(2.0)


def loaded(
    name: str, delay_ms: float, pid: int | None, gcs: list[float] | None
) -> concurrency.Loaded:
    ms = 1_000_000
    sent = [[50 * ms * i + k * ms for i in range(1, 60)] for k in range(4)]
    delays = [[round(delay_ms * ms)] * 59 for _ in range(4)]
    delays[0][-20] = 400 * ms  # one straggler among some 230: the maximum, not the p99
    run = synthetic(sent, delays, rate=20)
    for stream in run.streams:
        stream.events = LIFECYCLE_EVENTS + 1 + len(stream.sent)
    endpoint = concurrency.Endpoint(name, 1, pid)
    if pid is None:
        return concurrency.Loaded(endpoint, run, full_collections=gcs)
    # CPU time per event: the delay in ms as microseconds (a proxy that adds more costs more)
    cpu = delay_ms * 1e-6 * sum(s.events for s in run.streams)
    return concurrency.Loaded(endpoint, run, 100 * 1024, 150 * 1024, 0.5, gcs, cpu)


@pytest.mark.parametrize(("relay_ms", "met"), [(8.0, True), (12.0, False)], ids=["met", "missed"])
def test_concurrency_figures_judge_the_relay_p99_target_from_the_measurements(
    relay_ms: float, met: bool
) -> None:
    printed = io.StringIO()
    report = Report(out=printed)
    sizes = concurrency.ConcurrencySizes(streams=4, events=65, rate=20, ramp=0.0, settle=0.1)
    runs = [
        loaded(DIRECT, 1.0, None, None),
        loaded(PLAIN, 2.0, 11, [5.0]),
        loaded(RELAY, 1.0 + relay_ms, 12, [30.0, 90.0]),
    ]
    missed = concurrency.figures(report, runs, sizes, baseline=DIRECT, targeted=RELAY)
    figures = {f.name: f for f in report.figures}
    relay = figures["relay: added latency p99"]
    assert relay.value == pytest.approx(relay_ms) and relay.met is met
    cpu = figures["relay: CPU per event / plain"]
    assert cpu.value == pytest.approx((1.0 + relay_ms) / 2.0)
    assert figures["relay: CPU per event"].value == pytest.approx(1.0 + relay_ms)
    assert cpu.met is ((1.0 + relay_ms) / 2.0 <= 1.5)
    assert missed == [f for f in (relay, cpu) if f.missed]
    assert figures["plain: added latency p99"].target is None
    assert figures["plain: added latency p50"].value == pytest.approx(1.0)
    assert figures["relay: proxy RSS peak"].value == pytest.approx(150)
    assert figures["relay: proxy CPU"].value == pytest.approx(50)
    assert figures["direct: events/s held of 80"].value == pytest.approx(80, rel=0.05)
    out = printed.getvalue()
    assert "2, max 90 ms" in out
    assert ("2 full garbage collections" in out) is not met


# --- memory: the long stream --------------------------------------------------------------------


def test_memory_stream_is_a_healthy_anthropic_stream() -> None:
    head, chunk, tail = stream_parts()
    assert chunk.endswith(b"\n\n") and len(chunk) <= 64 * KiB
    findings, pairs, checker = check_stream(detect.by_name("anthropic"), head + chunk * 3 + tail)
    assert not findings.to_list() and checker.validator is not None
    assert checker.validator.complete


async def test_memory_upstream_sends_the_bytes_it_promises() -> None:
    app = web.Application()
    app.router.add_post("/{tail:.*}", _serve_stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with http_client() as client:
            for total in (1, 300 * KiB, 2 * MiB):
                async with client.post(
                    f"http://127.0.0.1:{port}/v1/messages", headers={HEADER_BYTES: str(total)}
                ) as resp:
                    got = len(await resp.read())
                assert got == expected_bytes(total) >= total
    finally:
        await runner.cleanup()


# --- CPU time per event: the proxy and sizes sections ------------------------------------------


def test_rows_cover_every_format_and_chunking_and_run_enough_events() -> None:
    sizes = ProxySizes(
        events=20_000,
        reps=1,
        ttfb_requests=1,
        warmup_requests=1,
        latency_events=16,
        latency_rate=100,
        stream_events=1000,
        big_bytes=64 * MiB,
    )
    rows = {r.label: r for r in plan_rows(sizes, ["proxy", "sizes"], FORMATS, relay=False)}
    for fmt in FORMATS:
        one, four = rows[f"{fmt}, 1 event/chunk"], rows[f"{fmt}, 4 events/chunk"]
        assert (one.per_chunk, four.per_chunk) == (1, 4)
        assert {DIRECT, PLAIN, TAP, RESTAMP, REPAIR} <= set(one.setups)
        assert (WORKER in one.setups) is (fmt == "anthropic")
        # as many upstream chunks per run at four events per chunk as at one
        assert one.streams * one.stream_events == 20_000
        assert four.streams * four.stream_events == 80_000
    # OpenAI's formats again, padded as OpenAI pads them by default
    padded = {label for label, r in rows.items() if r.padded}
    assert padded == {
        f"{fmt}, padded, {shape}"
        for fmt in ("openai-chat", "openai-responses")
        for shape in ("1 event/chunk", "4 events/chunk")
    }
    assert all(set(rows[label].setups) == {PLAIN, TAP, RESTAMP, REPAIR} for label in padded)
    # every format again, its texts code and other languages, as a coding agent gets them
    mixed = {label for label, r in rows.items() if r.mixed}
    assert mixed == {
        f"{fmt}, mixed texts, {shape}"
        for fmt in FORMATS
        for shape in ("1 event/chunk", "4 events/chunk")
    }
    assert all(set(rows[label].setups) == {PLAIN, TAP, RESTAMP, REPAIR} for label in mixed)
    assert not any(rows[label].padded for label in mixed)
    big = rows["64 KiB events"]
    assert big.text_bytes == 64 * KiB and big.streams >= 10
    assert big.streams * big.stream_events * 64 * KiB >= 60 * MiB
    assert RELAY not in {n for r in rows.values() for n in r.setups}
    with_relay = plan_rows(sizes, ["relay"], FORMATS, relay=True)
    assert [r.label for r in with_relay] == list(RELAY_ROWS)
    assert all(r.setups == (PLAIN, TAP, RELAY) for r in with_relay)


def runs_of(cpu_us: dict[str, float], rate: dict[str, float], label: str, m: Measured) -> None:
    """One run per setup of 10,000 events with these figures."""
    for name in rate:
        cpu = cpu_us[name] * 10_000 / 1e6 if name in cpu_us else None
        m.runs[(label, name)] = [Run(10_000, 10_000 / rate[name], cpu)]


@pytest.mark.parametrize(("tap_us", "met"), [(45.0, True), (60.0, False)], ids=["met", "missed"])
def test_proxy_figures_judge_cpu_per_event_against_plain_and_restamp_against_the_tap(
    tap_us: float, met: bool
) -> None:
    sizes = ProxySizes(20_000, 1, 1, 1, 16, 100)
    rows = plan_rows(sizes, ["proxy"], ["openai-chat"], relay=False)
    names = (DIRECT, PLAIN, TAP, RESTAMP, REPAIR)
    m = Measured([Setup(n, None if n == DIRECT else ()) for n in names])
    m.rows = rows
    for r in rows:
        cpu = {PLAIN: 40.0, TAP: tap_us, RESTAMP: tap_us * 1.2, REPAIR: tap_us * 1.05}
        rate = {DIRECT: 900_000.0, PLAIN: 24_000.0} | {n: 1e6 / cpu[n] for n in names[2:]}
        runs_of(cpu, rate, r.label, m)
    report = Report(out=io.StringIO())
    misses = proxy_figures(report, m)
    figures = {f.name: f for f in report.figures}
    for r in rows:
        tap = figures[f"{r.label}: tap / plain, CPU per event"]
        assert tap.value == pytest.approx(tap_us / 40.0) and tap.met is met
        assert figures[f"{r.label}: tap CPU per event"].value == pytest.approx(tap_us)
        assert figures[f"{r.label}: tap / plain, events/s"].value == pytest.approx(
            1e6 / tap_us / 24_000
        )
        restamp = figures[f"{r.label}: restamp / tap, CPU per event"]
        assert restamp.value == pytest.approx(1.2) and restamp.met is False
        repair = figures[f"{r.label}: repair / tap, CPU per event"]
        assert repair.value == pytest.approx(1.05) and repair.met is True
    # The worst misses are profiled: the restamp row always, the tap's only when it missed.
    assert set(misses) == ({RESTAMP} if met else {TAP, RESTAMP})


# --- this code against another revision's (--against) ---------------------------------------

IN_GIT = (checkout() / ".git").exists()
needs_git = pytest.mark.skipif(not IN_GIT, reason="runs from a git checkout only")


def test_against_runs_the_addon_setups_again_in_the_proxy_rows_only() -> None:
    sizes = ProxySizes(20_000, 1, 1, 1, 16, 100)
    base = Baseline("abc1234")
    rows = plan_rows(sizes, ["proxy", "sizes"], ["gemini"], relay=False, baseline=base)
    for r in rows:
        twins = tuple(n for n in r.setups if "@" in n)
        if r.text_bytes is None:  # the proxy section's: each addon setup's twin, after them
            assert twins == ("tap@abc1234", "restamp@abc1234", "repair@abc1234"), r
            assert r.setups[: -len(twins)] == tuple(n for n in r.setups if "@" not in n)
        else:  # the sizes section compares with plain only
            assert not twins, r
    without = plan_rows(sizes, ["proxy"], ["gemini"], relay=False)
    assert not any("@" in n for r in without for n in r.setups)


def test_a_twin_is_its_setup_run_from_the_other_revisions_tree(tmp_path: Path) -> None:
    tree = tmp_path / "old" / "addons"
    tree.mkdir(parents=True)
    base = Baseline("abc1234", tree)
    names = [PLAIN, TAP, RESTAMP, REPAIR, *(base.name(n) for n in (TAP, RESTAMP, REPAIR))]
    assert names[-3:] == ["tap@abc1234", "restamp@abc1234", "repair@abc1234"]
    assert base.twins(names) == dict(zip((TAP, RESTAMP, REPAIR), names[-3:], strict=True))
    got = {s.name: s for s in setups(tmp_path, 1, names, base)}
    ours = str(addon_script())
    theirs = str(tree / "mitmllm_addon.py")
    for name in (TAP, RESTAMP, REPAIR):
        mine, twin = got[name], got[base.name(name)]
        assert mine.tree is None and twin.tree == tree
        assert mine.args is not None and twin.args is not None
        # the same arguments, the other revision's script in place of this one's
        assert ours in mine.args and theirs in twin.args and ours not in twin.args
        assert [a for a in twin.args if a != theirs] == [a for a in mine.args if a != ours]
        assert (twin.tapped, twin.restamped) == (mine.tapped, mine.restamped)
    assert got[PLAIN].tree is None


def test_the_other_trees_mitmllm_is_the_one_a_twin_proxy_imports(tmp_path: Path) -> None:
    # an installed mitmllm (this one, editable) must not win over the tree put first
    tree = tmp_path / "addons"
    (tree / "mitmllm").mkdir(parents=True)
    (tree / "mitmllm" / "__init__.py").write_text("", encoding="utf-8")
    code = interpreter_code(tree)
    assert code.endswith(interpreter_code()) and interpreter_code() in code
    prefix = code.removesuffix(interpreter_code())
    done = subprocess.run(
        [sys.executable, "-c", prefix + "import mitmllm; print(mitmllm.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(done.stdout.strip()) == tree / "mitmllm" / "__init__.py"


@needs_git
def test_against_resolves_a_revision_and_extracts_its_addons(tmp_path: Path) -> None:
    head = subprocess.run(
        ["git", "-C", str(checkout()), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    base = resolve_baseline("HEAD")
    assert base.rev == head and base.tree is None
    got = extract_baseline(base, tmp_path)
    assert got.tree is not None and (got.tree / "mitmllm_addon.py").is_file()
    assert (got.tree / "mitmllm" / "glue" / "tap.py").is_file()
    with pytest.raises(BenchError, match="no such commit"):
        resolve_baseline("no-such-revision")


def test_against_needs_the_proxy_section_and_a_revision_that_exists(capsys) -> None:  # type: ignore[no-untyped-def]
    assert parse_args(["--only", "proxy", "--against", "HEAD"]).against == "HEAD"
    with pytest.raises(SystemExit):
        parse_args(["--only", "codec", "--against", "HEAD"])
    assert main(["--quick", "--only", "proxy", "--against", "no-such-revision"]) == 2
    assert "no such commit" in capsys.readouterr().err


def test_against_figures_are_each_setup_over_its_twin_in_each_repetition() -> None:
    sizes = ProxySizes(20_000, 1, 1, 1, 16, 100)
    base = Baseline("abc1234")
    rows = plan_rows(sizes, ["proxy"], ["openai-chat"], relay=False, baseline=base)
    names = [n for n in rows[0].setups]
    m = Measured([Setup(n, None if n == DIRECT else ()) for n in names])
    m.rows = rows
    for r in rows:
        cpu = {PLAIN: 40.0, TAP: 44.0, RESTAMP: 48.0, REPAIR: 50.0}
        cpu |= {base.name(TAP): 48.4, base.name(RESTAMP): 48.0, base.name(REPAIR): 40.0}
        runs_of(cpu, {n: 20_000.0 for n in r.setups}, r.label, m)
    out = io.StringIO()
    report = Report(out=out)
    proxy_figures(report, m)
    figures = {f.name: f for f in report.figures}
    for r in rows:
        assert figures[f"{r.label}: tap / tap@abc1234, CPU per event"].value == pytest.approx(
            44.0 / 48.4
        )
        restamp = figures[f"{r.label}: restamp / restamp@abc1234, CPU per event"]
        assert restamp.value == pytest.approx(1.0) and restamp.target is None
        repair = figures[f"{r.label}: repair / repair@abc1234, CPU per event"]
        assert repair.value == pytest.approx(1.25)
    assert "repair / repair@abc1234" in out.getvalue()


# Two rows, eight proxies, about 20 s: the twins start from the extracted revision and carry
# each stream as this code's setups do (`check` proves the tap and the restamp saw them).
@needs_git
@pytest.mark.timeout(600)
def test_quick_run_against_a_revision_compares_every_addon_setup(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out_json = tmp_path / "figures.json"
    code = main(
        ["--quick", "--only", "proxy", "--formats", "gemini", "--against", "HEAD"]
        + ["--json", str(out_json)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    data = orjson.loads(out_json.read_bytes())
    rev = data["settings"]["against"]
    assert rev and f"against revision {rev}: tap@{rev}, restamp@{rev}, repair@{rev}" in out
    figures = {f["name"]: f for f in data["figures"]}
    for shape in ("1 event/chunk", "4 events/chunk"):
        for name in (TAP, RESTAMP, REPAIR):
            figure = figures[f"gemini, {shape}: {name} / {name}@{rev}, CPU per event"]
            assert figure["value"] > 0 and figure["target"] is None, figure


def test_sizes_figures_give_the_cpu_each_kib_adds() -> None:
    sizes = ProxySizes(20_000, 1, 1, 1, 16, 100, big_bytes=8 * MiB)
    m = Measured([Setup(n, None if n == DIRECT else ()) for n in (DIRECT, PLAIN, TAP)])
    m.rows = plan_rows(sizes, ["sizes"], FORMATS, relay=False)
    for r in m.rows:
        kib = (r.text_bytes or 0) / KiB
        runs_of({PLAIN: 10 * kib, TAP: 12 * kib}, {DIRECT: 1e6, PLAIN: 1e4, TAP: 8e3}, r.label, m)
    report = Report(out=io.StringIO())
    worst = sizes_figures(report, m)
    figures = {f.name: f for f in report.figures}
    assert figures["4 KiB events: tap CPU added per KiB"].value == pytest.approx(2.0)
    assert figures["64 KiB events: tap CPU added per KiB"].value == pytest.approx(2.0)
    assert figures["4 KiB events: tap / plain, CPU per event"].target is None
    big = figures["64 KiB events: tap / plain, CPU per event"]
    assert big.value == pytest.approx(1.2) and big.met is True
    assert worst is None


def test_a_ratio_is_the_median_of_each_repetitions_ratio_not_a_ratio_of_medians() -> None:
    # Each repetition runs both setups back to back: the machine drifted (the third repetition
    # ran everything twice as slow), and the tap cost 1.2x plain in every repetition.
    m = Measured([Setup(PLAIN, ()), Setup(TAP, ())])
    label = "row"
    plain_us, tap_us = [10.0, 11.0, 20.0], [12.0, 13.2, 24.0]
    m.runs[(label, PLAIN)] = [Run(1000, 1000 / (1e6 / us), us * 1000 / 1e6) for us in plain_us]
    m.runs[(label, TAP)] = [Run(1000, 1000 / (1e6 / us), us * 1000 / 1e6) for us in tap_us]
    assert m.cpu_ratio(label, TAP, PLAIN) == pytest.approx(1.2)
    assert m.cpu_ratios(label, TAP, PLAIN) == pytest.approx([1.2] * 3)
    assert m.rate_ratio(label, TAP, PLAIN) == pytest.approx(1 / 1.2)
    # the ratio of the medians would have said 13.2 / 11 = 1.2 only by luck: not with drift
    m.runs[(label, TAP)] = [
        Run(1000, 1000 / (1e6 / us), us * 1000 / 1e6) for us in (12.0, 26.4, 24.0)
    ]
    assert m.cpu_ratio(label, TAP, PLAIN) == pytest.approx(1.2)
    assert m.cpu(label, TAP) / m.cpu(label, PLAIN) == pytest.approx(24.0 / 11.0)
    # a setup without a CPU figure (direct) has no ratio
    m.runs[(label, DIRECT)] = [Run(1000, 0.01, None)] * 3
    assert m.cpu_ratio(label, DIRECT, PLAIN) != m.cpu_ratio(label, DIRECT, PLAIN)  # NaN


def test_within_a_repetition_the_setups_take_turns_stream_by_stream() -> None:
    # Run back to back, a setup each, a repetition carried the machine's drift within it (its
    # speed moved by half within a minute) into each ratio; in turns, each setup sees it alike.
    a, b, c = Setup("a", ()), Setup("b", ()), Setup("c", ())
    for rep in range(4):
        order = [s.name for s in turns([a, b, c], 5, rep)]
        assert len(order) == 15
        rounds = [order[i : i + 3] for i in range(0, 15, 3)]
        assert all(sorted(r) == ["a", "b", "c"] for r in rounds)  # one stream each, in turn
        assert {r[0] for r in rounds} == {"a", "b", "c"}  # no setup always goes first
    assert [s.name for s in turns([a, b], 3, 1)] == ["b", "a", "a", "b", "b", "a"]
    # a setup's run is the sum of its streams
    run = Run(1000, 0.5, 0.01) + Run(1000, 0.25, 0.02)
    assert (run.events, run.seconds, run.cpu) == (2000, 0.75, pytest.approx(0.03))
    assert (Run(10, 1.0, None) + Run(10, 1.0, None)).cpu is None


def test_the_proxies_get_the_last_core_and_the_load_the_others() -> None:
    placement = cores.plan(frozenset({0, 1}))
    if not hasattr(os, "sched_setaffinity"):
        assert placement is None
        return
    assert placement == cores.Placement(frozenset({1}), frozenset({0}))
    assert "core 1" in placement.describe()
    wide = cores.plan(frozenset({2, 5, 7}))
    assert wide is not None and wide.proxy == {7} and wide.load == {2, 5}
    assert cores.plan(frozenset({3})) is None  # one core: nothing to set apart


@proc_fs
@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity and two cores",
)
def test_pin_moves_every_thread_of_a_process_and_of_its_children() -> None:
    import subprocess
    import sys

    # a parent with a second thread, and a child of its own; each prints when it is running
    code = (
        "import subprocess, sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; print(1, flush=True); "
        "time.sleep(60)'], stdout=subprocess.PIPE)\n"
        "child.stdout.readline()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        one = frozenset({max(os.sched_getaffinity(0))})
        tids = cores.threads(parent.pid)
        assert parent.pid in tids and child in tids and len(tids) >= 3
        assert cores.pin(parent.pid, one)
        assert all(os.sched_getaffinity(t) == one for t in tids)
        # tree=False leaves the child where it was
        every = frozenset(os.sched_getaffinity(0))
        assert cores.pin(parent.pid, every, tree=False)
        assert os.sched_getaffinity(parent.pid) == every and os.sched_getaffinity(child) == one
        assert not cores.pin(2**22 + 12345, one)  # no such process: nothing moved
    finally:
        parent.kill()
        parent.wait(30)
        if child:
            with contextlib.suppress(OSError):
                os.kill(child, 9)


@proc_fs
@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity and two cores",
)
def test_place_puts_the_proxies_on_their_core_and_the_load_with_this_process() -> None:
    import subprocess
    import sys

    sleeper = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    upstream = subprocess.Popen(sleeper, stdin=subprocess.PIPE)
    proxy = subprocess.Popen(sleeper, stdin=subprocess.PIPE)
    own = cores.usable()
    try:
        placement = cores.plan()
        assert placement is not None
        running = Running(
            Process("upstream", upstream, Path("upstream.log")),
            [Setup(PLAIN, ())],
            {PLAIN: Process(PLAIN, proxy, Path("plain.log"))},
        )
        printed = io.StringIO()
        place(Report(out=printed), running)
        assert os.sched_getaffinity(proxy.pid) == placement.proxy
        assert os.sched_getaffinity(upstream.pid) == placement.load
        assert os.sched_getaffinity(0) == placement.load  # the client
        assert "pinned: proxies on core" in printed.getvalue()
    finally:
        unplace(own)
        for p in (upstream, proxy):
            p.kill()
            p.wait(30)
    assert os.sched_getaffinity(0) == own


@proc_fs
def test_tree_cpu_seconds_count_the_children_of_a_process() -> None:
    import subprocess
    import sys

    spin = "import time\nt = time.process_time() + 0.3\nwhile time.process_time() < t: pass"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {spin!r}])",
        ]
    )
    try:
        deadline = time.monotonic() + 30
        seen = 0.0
        while parent.poll() is None and time.monotonic() < deadline:
            own = concurrency.cpu_seconds(parent.pid) or 0.0
            seen = max(seen, (concurrency.tree_cpu_seconds(parent.pid) or 0.0) - own)
            time.sleep(0.02)
    finally:
        parent.wait(30)
    # the child's spinning shows in the tree, though the parent only waits
    assert seen >= 0.15


@given(st.lists(st.integers(0, 40), max_size=4), st.booleans())
def test_the_restamp_check_finds_the_model_wherever_the_reads_cut_it(
    cuts: list[int], there: bool
) -> None:
    # A model value that two reads (or more) cut used to go unseen: a restamp that worked was
    # reported as failed.
    body = b'data: {"model":"' + (b"bench-alias" if there else b"bench-other") + b'","x":1}\n\n'
    marker = Marker(b"bench-alias")
    points = sorted({0, len(body), *(c % len(body) for c in cuts)})
    for a, b in pairwise(points):
        marker.feed(body[a:b])
    assert marker.found is there


def _loaded(cpu_seconds: float | None, name: str = "x") -> concurrency.Loaded:
    run = PacedRun(streams=[PacedStream(events=1000)], rate=20.0)
    endpoint = concurrency.Endpoint(name, 1, 2)
    return concurrency.Loaded(endpoint, run, cpu_seconds=cpu_seconds)


def test_the_concurrency_figures_come_from_each_setups_median_load() -> None:
    odd = [_loaded(c) for c in (0.3, 0.1, 0.2)]
    assert concurrency.median_load(odd) is odd[2], "0.2 s: the middle one"
    even = [_loaded(c) for c in (0.4, 0.1, 0.3, 0.2)]
    assert concurrency.median_load(even) is even[3], "the lower middle one"
    unmeasured = [_loaded(None), _loaded(None)]
    assert concurrency.median_load(unmeasured) is unmeasured[0]
    assert concurrency.median_load([_loaded(None), odd[1]]) is odd[1]


def test_the_concurrency_cpu_ratio_is_the_median_of_each_repetitions_ratio() -> None:
    # three repetitions: the machine drifted (plain's second load cost twice its first), the
    # relay cost 1.4x plain in each; a ratio of median loads would say 0.2 / 0.1 = 2
    loads = {
        PLAIN: [_loaded(c, PLAIN) for c in (0.1, 0.2, 0.05)],
        RELAY: [_loaded(c, RELAY) for c in (0.14, 0.28, 0.2)],
        TAP: [_loaded(None, TAP), _loaded(0.1, TAP), _loaded(0.06, TAP)],
    }
    paired = concurrency.paired_ratios(loads, PLAIN)
    assert paired[RELAY] == pytest.approx([1.4, 1.4, 4.0])
    assert math.isnan(paired[TAP][0]) and paired[TAP][1:] == pytest.approx([0.5, 1.2])
    assert PLAIN not in paired
    sizes = concurrency.ConcurrencySizes(streams=1, events=1000, rate=20, ramp=0.0, settle=0.0)
    medians = {name: concurrency.median_load(runs) for name, runs in loads.items()}
    report = Report(out=io.StringIO())
    concurrency.figures(
        report, list(medians.values()), sizes, baseline=DIRECT, targeted=RELAY, paired=paired
    )
    figures = {f.name: f for f in report.figures}
    relay = figures["relay: CPU per event / plain"]
    assert relay.value == pytest.approx(1.4) and relay.met
    assert relay.spread == pytest.approx((1.4, 4.0))
    assert figures["tap: CPU per event / plain"].spread == pytest.approx((0.5, 1.2))
