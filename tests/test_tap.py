"""The taps under garbage: whatever bytes arrive, in whatever pieces, a tap never raises, always
returns a list, and passes every byte on (rewrites change values, never drop or add bytes
elsewhere); what it keeps is bounded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.bench.corpus import CALLS
from mitmllm.bench.corpus import FORMATS
from mitmllm.bench.corpus import long_stream
from mitmllm.bench.corpus import proxy_events
from mitmllm.engine.fixtures import load_fixture
from mitmllm.engine.keep import DEFAULT_LIMIT
from mitmllm.engine.keep import KeptBody
from mitmllm.engine.pipeline import Pipeline
from mitmllm.engine.rewrite import response_rewrites
from mitmllm.engine.validation import StreamResult
from mitmllm.glue.tap import Tap
from mitmllm.protocol import detect
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.gate import Gate
from mitmllm.protocol.payload import is_json
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.repair import Repairer
from mitmllm.protocol.sse import decode_all
from mitmllm.protocol.stream import StreamChecker
from tests import streamcheck

#: Pieces of real streams, so that garbage also looks like events, JSON and sentinels sometimes.
TOKENS = [
    b"data: ",
    b"data:",
    b"event: message_start\n",
    b"event: error\n",
    b": keep-alive\n\n",
    b"id: 1\n",
    b"retry: x\n",
    b"\n",
    b"\r\n",
    b"\r",
    b"\n\n",
    b"\xef\xbb\xbf",
    b"[DONE]",
    b'{"type":"message_start","message":{"model":"up","content":[]}}',
    b'{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","name":"t"}}',
    b'{"id":"c","model":"up","choices":[{"delta":{"tool_calls":[{"function":{"name":"t"}}]}}]}',
    b'{"modelVersion":"up","candidates":[]}',
    b'{"type":"response.created","response":{"model":"up"}}',
    b'{"model": 12345678901234567890123456789}',
    b'"\\u2028\\ud800',
    b"\xff\xfe",
    b"\xe4\xb8",
]
GARBAGE = st.lists(st.one_of(st.binary(max_size=24), st.sampled_from(TOKENS)), max_size=40).map(
    b"".join
)
CAPTURES = Path(__file__).parent.parent / "captures"
DIALECTS = [None, *(detect.by_name(n) for n in ("anthropic", "openai-chat", "gemini"))]


def _tap(dialect: Any, rewrites: bool, limit: int | None = None) -> Tap:
    rw = (
        response_rewrites(dialect, client_model="alias", names={"t": "client_tool"})
        if rewrites and dialect is not None
        else []
    )
    checker = StreamChecker(dialect, autodetect=dialect is None)
    return Tap(Pipeline(checker, rw), time.time(), body=KeptBody(limit))


def _fed(pipeline: Pipeline) -> list[bytes]:
    """What `pipeline.feed` is called with from now on (the list grows as it is)."""
    fed: list[bytes] = []
    feed = pipeline.feed

    def recording(chunk: bytes) -> bytes:
        fed.append(chunk)
        return feed(chunk)

    pipeline.feed = recording  # type: ignore[method-assign]
    return fed


def _run(tap: Tap, chunks: list[bytes]) -> bytes:
    out = []
    for chunk in [*chunks, b""]:
        result = tap(chunk)
        assert isinstance(result, list)
        out += result
    return b"".join(out)


@settings(max_examples=300, deadline=None)
@given(st.data(), GARBAGE, st.sampled_from(DIALECTS))
def test_garbage_passes_through_whole_and_never_raises(
    data: st.DataObject, garbage: bytes, dialect: Any
) -> None:
    chunks = data.draw(streamcheck.chunkings(garbage))
    tap = _tap(dialect, rewrites=False)
    assert _run(tap, chunks) == garbage  # not a byte lost, added or moved
    assert not tap.pipeline.failed and "TAP-1" not in tap.pipeline.findings.rules()
    assert tap.sent == garbage and tap.received == len(garbage)


@settings(max_examples=300, deadline=None)
@given(st.data(), GARBAGE, st.sampled_from(DIALECTS[1:]))
def test_garbage_with_rewrites_keeps_every_event(
    data: st.DataObject, garbage: bytes, dialect: Any
) -> None:
    chunks = data.draw(streamcheck.chunkings(garbage))
    tap = _tap(dialect, rewrites=True)
    out = _run(tap, chunks)
    assert not tap.pipeline.failed and "TAP-1" not in tap.pipeline.findings.rules()
    before, before_tail = decode_all(garbage)
    after, after_tail = decode_all(out)
    assert len(after) == len(before) and (before_tail is None) == (after_tail is None)
    changed = sum(a.raw != b.raw for a, b in zip(before, after, strict=True))
    changed += bool(before_tail and after_tail and before_tail.raw != after_tail.raw)
    assert changed == tap.rewritten  # only the events a rewrite named differ
    if not tap.rewritten:
        assert out == garbage


@settings(max_examples=100, deadline=None)
@given(st.data(), GARBAGE)
def test_what_a_tap_keeps_of_garbage_is_bounded(data: st.DataObject, garbage: bytes) -> None:
    chunks = data.draw(streamcheck.chunkings(garbage))
    tap = _tap(None, rewrites=False, limit=64)
    assert _run(tap, chunks) == garbage
    assert tap.body.total == len(garbage)
    assert len(tap.sent) <= 64 + 80  # the limit and the marker


@st.composite
def _stream_chunks(draw: st.DrawFn, fmt: str) -> list[bytes]:
    """A stream in `fmt`, sometimes with garbage between its events, as an upstream writes it
    (a few whole events per chunk) or cut anywhere."""
    pieces = list(long_stream(fmt, draw(st.integers(1, 40))).events)
    for _ in range(draw(st.integers(0, 2))):
        pieces.insert(draw(st.integers(0, len(pieces))), draw(GARBAGE))
    if draw(st.booleans()):  # the model again later (a restamp edits it), maybe its key escaped
        again = pieces[0]
        if draw(st.booleans()):
            again = again.replace(b'"model', b'"\\u006dodel')
        pieces.insert(draw(st.integers(1, len(pieces))), again)
    if draw(st.booleans()):
        out = draw(streamcheck.chunkings(b"".join(pieces)))
    else:
        out, i = [], 0
        while i < len(pieces):
            k = draw(st.integers(1, 4))
            out.append(b"".join(pieces[i : i + k]))
            i += k
    return [c for c in out if c]  # b"" ends the stream


def _outcome(tap: Tap) -> tuple[Any, ...]:
    checker = tap.pipeline.checker
    sent = tap.sent  # first: the chunks passed on but not read yet count once they are read
    offsets = [offset for offset, _ in tap.chunks]
    return (
        StreamResult.of(checker),
        checker.findings.to_list(),
        tap.pipeline.events,
        sent,
        (tap.chunk_count, tap.received, offsets),
        tap.body.total,  # the bytes sent, counted where none are kept too
    )


@settings(max_examples=400, deadline=None)
@given(st.data(), st.sampled_from(FORMATS), st.booleans())
def test_a_tap_that_defers_sends_and_finds_what_one_that_reads_every_chunk_does(
    data: st.DataObject, fmt: str, restamps: bool
) -> None:
    """Whole events passed on before the pipeline reads them (inspect-only; restamping, those
    without the model's key): the client gets the same lists call by call, and the flow the
    same findings, counts, chunk offsets and kept body, whether the stream ends or the
    connection dies (`close`), with the body and timings kept or not (not: most chunks take
    the tap's shortest path). And a tap that never defers (repairs on) reads each chunk by its
    own short path where no timings are kept: the same again."""
    chunks = data.draw(_stream_chunks(fmt))
    died = data.draw(st.none() | st.integers(0, len(chunks)))
    # a small limit: the body is cut, and the timings dropped, partway through the stream
    limit = data.draw(st.sampled_from([DEFAULT_LIMIT, 0, 300]))
    dialect = detect.by_name(fmt)
    taps = []
    for mode in ("defers", "reads", "direct"):
        checker = StreamChecker(dialect, request=dict(CALLS[fmt].body))
        rewrites = response_rewrites(dialect, client_model="alias", names=None) if restamps else []
        tap = Tap(Pipeline(checker, rewrites), time.time(), body=KeptBody(limit))
        assert tap.defers and not tap._direct
        tap.defers = mode == "defers"
        tap._direct = mode == "direct"
        tap.defer_bytes = data.draw(st.sampled_from([1, 300, 2000, 1 << 20]))
        taps.append(tap)
    deferring, reading, direct = taps
    for chunk in chunks[:died]:
        assert deferring(chunk) == reading(chunk) == direct(chunk)
    if died is None:
        assert deferring(b"") == reading(b"") == direct(b"")
    else:
        deferring.settle()
        assert deferring.close() == reading.close() == direct.close()
    assert _outcome(deferring) == _outcome(reading) == _outcome(direct)
    assert deferring.pipeline.rewritten == reading.pipeline.rewritten == direct.pipeline.rewritten
    assert (direct.first_event_ms is None) == (reading.first_event_ms is None)
    assert not deferring.pipeline.failed


def test_a_deferring_tap_keeps_the_excerpt_a_reading_tap_keeps_of_a_cut_body() -> None:
    """A body past a small limit keeps its start and its end, cut where the pieces recorded
    allow: a deferring tap records a batch's chunks as the pieces they were, so it keeps the
    excerpt a tap that reads every chunk keeps (a batch recorded as one piece once kept a
    different end, the connection dead amid the deltas; a random run found it)."""
    events = long_stream("anthropic", 12).events
    chunks = [*events[:3], b"".join(events[3:5]), *events[5:]]
    taps = []
    for defers in (True, False):
        checker = StreamChecker(detect.by_name("anthropic"), request=dict(CALLS["anthropic"].body))
        tap = Tap(Pipeline(checker), time.time(), body=KeptBody(300))
        tap.defers, tap.defer_bytes = defers, 300
        taps.append(tap)
    deferring, reading = taps
    for chunk in chunks[:7]:
        assert deferring(chunk) == reading(chunk)
    deferring.settle()
    assert deferring.close() == reading.close()
    assert deferring.body.cut and deferring.sent == reading.sent


def test_an_inspect_only_or_restamping_tap_defers_one_that_renames_tools_does_not() -> None:
    d = detect.by_name("anthropic")
    assert Tap(Pipeline(StreamChecker(d)), 0.0).defers
    restamp = response_rewrites(d, client_model="alias", names=None)
    assert Tap(Pipeline(StreamChecker(d), restamp), 0.0).defers
    renames = response_rewrites(d, client_model="alias", names={"t": "client_tool"})
    assert not Tap(Pipeline(StreamChecker(d), renames), 0.0).defers


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_restamping_tap_defers_the_chunks_without_the_models_key(fmt: str) -> None:
    """Anthropic's and Responses' deltas do not carry the model: chunks of them are deferred
    and read in batches. Chat's and Gemini's do: once the tap has learned their template, it
    stops asking (every chunk is read at once, as before, by the short path a repairing tap
    takes where no timings are kept)."""
    dialect = detect.by_name(fmt)
    events = long_stream(fmt, 120).events
    chunks = [b"".join(events[i : i + 4]) for i in range(0, len(events), 4)]
    checker = StreamChecker(dialect, request=dict(CALLS[fmt].body))
    tap = Tap(Pipeline(checker, response_rewrites(dialect, client_model="alias", names=None)), 0.0)
    tap.timing_cut = True  # as in mitmdump without a flow view: the shortest path
    fed = _fed(tap.pipeline)
    out = _run(tap, chunks)
    assert tap.pipeline.rewritten >= 1 and b'"alias"' in out
    assert StreamResult.of(checker).findings == []
    if fmt in ("anthropic", "openai-responses"):
        assert tap.defers and len(fed) < 8  # the model's events, where the template is learned
    else:
        assert not tap.defers and tap._direct and len(fed) >= len(chunks) - 3


class _BreaksOnce(KeptBody):
    """A kept body whose next `append` raises once `armed`: a bug of the tap's own."""

    armed = False

    def append(self, piece: bytes) -> None:
        if self.armed:
            self.armed = False
            raise RuntimeError("the tap's books broke")
        super().append(piece)


@pytest.mark.parametrize("repairs", [False, True])
@pytest.mark.parametrize("fmt", ["openai-chat", "gemini"])
def test_after_the_last_line_of_defence_every_chunk_passes_as_it_came(
    fmt: str, repairs: bool
) -> None:
    """A tap that reads each chunk at once by its shortest path (a restamp of deltas that carry
    the model, or repairs on) and breaks on its own after the pipeline read a chunk passes that
    chunk and every later one on as it came: no shortcut restamps a chunk after it."""
    dialect = detect.by_name(fmt)
    request = dict(CALLS[fmt].body)
    events = long_stream(fmt, 60).events
    chunks = [b"".join(events[i : i + 2]) for i in range(0, len(events), 2)]
    restamp = response_rewrites(dialect, client_model="alias", names=None)
    if repairs:
        findings = Findings()
        client = StreamChecker(dialect, request=request)
        pipeline = Pipeline(
            client,
            restamp,
            upstream=StreamChecker(dialect, findings, request=request),
            repairer=Repairer(dialect, findings, request=request),
            gate=Gate(dialect, client.findings, collect=False),
            lazy=True,
        )
    else:
        pipeline = Pipeline(StreamChecker(dialect, request=request), restamp)
    body = _BreaksOnce(DEFAULT_LIMIT)
    tap = Tap(pipeline, 0.0, body=body)
    tap.timing_cut = True  # as in mitmdump without a flow view: the shortest path
    half = len(chunks) // 2
    before = b"".join(b"".join(tap(chunk)) for chunk in chunks[:half])
    assert before.count(b'"alias"') >= half and tap._direct
    body.armed = True
    after = [tap(chunk) for chunk in chunks[half:]]
    assert pipeline.failed and not body.armed
    assert after == [[chunk] for chunk in chunks[half:]]


@pytest.mark.parametrize("fmt", FORMATS)
def test_what_a_restamp_edits_holds_the_models_key_as_the_dialect_spells_it(fmt: str) -> None:
    """The contract a deferring tap relies on (`TextBlind.marks`): an event whose payload the
    restamp edits holds `restamp_key`, or a \\u escape, in its bytes. Over the mock upstream's
    stream and every recorded fixture of the format; such an event is never `unmarked`, its
    key escaped or not."""
    dialect = detect.by_name(fmt)
    bodies = [b"".join(long_stream(fmt, 20).events)]
    for path in sorted(CAPTURES.rglob("*.json")):
        fixture = load_fixture(path)
        if fixture.format == fmt and fixture.stream and fixture.response is not None:
            bodies.append(fixture.response.content)
    pipeline = Pipeline(
        StreamChecker(dialect), response_rewrites(dialect, client_model="alias", names=None)
    )
    edited = 0
    for body in bodies:
        events, tail = decode_all(body)
        for ev in [*events, *([tail] if tail is not None else [])]:
            payload, _ = parse_json(ev.data) if ev.data is not None else (None, None)
            if not is_json(payload) or not dialect.restamp(payload, "alias"):
                continue
            edited += 1
            assert dialect.restamp_key in ev.raw or b"\\u" in ev.raw
            escaped = ev.raw.replace(dialect.restamp_key, b'"\\u006d' + dialect.restamp_key[2:])
            assert not pipeline.unmarked(ev.raw) and not pipeline.unmarked(escaped)
    assert edited


@pytest.mark.parametrize("defer_bytes", [300, 1 << 20])
def test_a_tap_that_fails_while_it_defers_sends_and_keeps_each_chunk_once(
    defer_bytes: int,
) -> None:
    """Deferred chunks are recorded with the batch the pipeline reads them in; when reading the
    batch fails, each chunk was sent once and is kept once, the rest passes through."""
    fmt = "anthropic"
    events = long_stream(fmt, 40).events
    chunks = [b"".join(events[i : i + 3]) for i in range(0, len(events), 3)]
    pipeline = Pipeline(StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body)))

    def broken(batch: bytes) -> bool:
        raise RuntimeError("the pipeline broke")

    pipeline.skim = broken  # type: ignore[method-assign]
    tap = Tap(pipeline, time.time())
    tap.defer_bytes = defer_bytes
    assert _run(tap, chunks) == b"".join(chunks)
    assert tap.sent == b"".join(chunks)
    assert pipeline.failed


@pytest.mark.parametrize("fmt", FORMATS)
def test_chunks_of_whole_events_are_deferred_in_every_framing(fmt: str) -> None:
    """LF and CRLF framed streams (Gemini's) alike: a chunk of whole events goes on untouched
    and is read with the next ones; a chunk that ends inside an event is read at once."""
    events = long_stream(fmt, 20).events
    tap = Tap(Pipeline(StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body))), 0.0)
    whole = b"".join(events[:3])
    assert tap(whole)[0] is whole and tap._deferred == [whole]
    assert tap(events[3][:-1]) == []  # held until the event is whole
    assert tap._deferred == []  # read, with what was deferred before it


@pytest.mark.parametrize("limit", [0, DEFAULT_LIMIT])
def test_where_no_timings_are_kept_whole_events_take_the_shortest_path(limit: int) -> None:
    """Where the flow keeps no chunk timings, the chunks of whole events after the first go on
    by the shortest path: deferred, counted when the pipeline reads them (timings kept: every
    chunk goes the full way, its arrival recorded)."""
    fmt = "anthropic"
    events = long_stream(fmt, 20).events
    checker = StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body))
    tap = Tap(Pipeline(checker), time.time(), body=KeptBody(limit))
    chunks = [b"".join(events[i : i + 2]) for i in range(0, len(events), 2)]
    assert tap(chunks[0]) == [chunks[0]]
    assert tap._passing is (limit == 0)
    for chunk in chunks[1:5]:
        assert tap(chunk)[0] is chunk
    assert tap._deferred == chunks[:5]
    assert (tap.chunk_count, tap.received) == (0, 0)  # counted once read
    tap.settle()
    assert (tap.chunk_count, tap.received) == (5, sum(map(len, chunks[:5])))
    assert len(tap.chunks) == (0 if limit == 0 else 5)


@pytest.mark.parametrize("per", [1, 4])
@pytest.mark.parametrize("mixed", [False, True], ids=["prose", "code-and-languages"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_batch_that_is_not_all_steady_reads_its_runs_of_steady_deltas_in_one_match(
    fmt: str, mixed: bool, per: int
) -> None:
    """A batch with the stream's start (the template is learned in it) or its end (the last
    pieces have the closing events) is read piece by piece only where it must be: the deltas
    after the learned template, and those before the closing events, go in one match each,
    texts of code and other languages too, and before a Responses stream's `output_text.done`,
    which ends as its deltas do; what is sent and found is what a tap that reads every chunk
    gets."""
    events = proxy_events(130, fmt=fmt, mixed=True) if mixed else long_stream(fmt, 120).events
    chunks = [b"".join(events[i : i + per]) for i in range(0, len(events), per)]
    taps = []
    for defers in (True, False):
        tap = Tap(Pipeline(StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body))), 0.0)
        tap.defers = defers
        tap.defer_bytes = 1 << 20  # the whole stream is one batch, read at its end
        taps.append(tap)
    deferring, reading = taps
    fed = _fed(deferring.pipeline)
    for chunk in [*chunks, b""]:
        assert deferring(chunk) == reading(chunk)
    assert _outcome(deferring) == _outcome(reading)
    # the pieces up to the template's second delta, and the closing ones
    assert len(fed) < (12 if per == 1 else 8)


class Clock:
    """A clock that says how often it was read; each reading a second later."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return 100.0 + self.reads


@pytest.mark.parametrize("rewrites", [False, True], ids=["deferring", "rewriting"])
@pytest.mark.parametrize("keep", [0, None], ids=["nothing kept", "all kept"])
def test_the_clock_is_read_for_what_the_tap_records_and_the_first_byte_out(
    rewrites: bool, keep: int | None
) -> None:
    fmt = "anthropic"
    dialect = detect.by_name(fmt)
    rw = response_rewrites(dialect, client_model=None, names={"t": "x"}) if rewrites else []
    clock = Clock()
    checker = StreamChecker(dialect, request=dict(CALLS[fmt].body))
    tap = Tap(Pipeline(checker, rw), 100.0, clock=clock, body=KeptBody(keep))
    assert tap.defers is not rewrites
    chunks = long_stream(fmt, 40).chunks(None)
    first, rest = chunks[0][:10], [chunks[0][10:], *chunks[1:]]
    assert tap(first) == []  # part of an event: nothing goes out yet
    assert tap.first_event_ms is None
    assert clock.reads == (0 if keep == 0 else 1)  # its arrival, where timings are kept
    assert tap(rest[0])  # the first event goes out: read last in this call
    assert tap.first_event_ms == pytest.approx(clock.reads * 1000)
    _run(tap, rest[1:])
    # two arrivals were read before it where timings are kept
    assert tap.first_event_ms == pytest.approx((3 if keep is None else 1) * 1000)
    if keep == 0:  # no chunk timings kept: only the first byte out read the clock
        assert tap.timing_cut and tap.chunks == []
        assert clock.reads == 1
    else:  # every chunk's arrival, and the first byte out
        assert len(tap.chunks) == tap.chunk_count == len(chunks) + 1
        assert clock.reads == tap.chunk_count + 1
    assert StreamResult.of(checker).findings == []
