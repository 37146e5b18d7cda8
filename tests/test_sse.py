"""The SSE codec: WHATWG parsing, losslessness and chunking invariance, grammar findings."""

from __future__ import annotations

import re
import sys
import tracemalloc

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.protocol.findings import Findings
from mitmllm.protocol.sse import _BIG_DATA
from mitmllm.protocol.sse import Decoder
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import data_span
from mitmllm.protocol.sse import decode_all
from mitmllm.protocol.sse import encode
from mitmllm.protocol.sse import parse_block
from mitmllm.protocol.sse import parse_common
from mitmllm.protocol.sse import parse_text
from mitmllm.protocol.stream import BYTES_FROM
from mitmllm.protocol.stream import StreamChecker
from tests import streamcheck


def reference_dispatch(body: bytes) -> list[tuple[str | None, str]]:
    """The WHATWG 'interpret an event stream' algorithm, written plainly, for comparison."""
    text = body.decode("utf-8", errors="replace")
    text = text.removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)
    complete = lines[:-1]  # the last piece has no terminator: not a line yet (discarded at EOF)
    out = []
    event, data = None, []
    for line in complete:
        if line == "":
            if data:
                out.append((event, "\n".join(data)))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    return out


def dispatched(events: list[Event]) -> list[tuple[str | None, str]]:
    return [(e.event, e.data) for e in events if e.data is not None]


# --- generated streams -------------------------------------------------------------------------

_text = st.text(
    alphabet=st.sampled_from(list('ab {}":,[]é€😀') + ["\u2028", "\u0085", "\x0b"]),
    max_size=12,
)
_line = st.one_of(
    _text.map(lambda t: "data: " + t),
    _text.map(lambda t: "data:" + t),
    st.just("data"),
    _text.map(lambda t: "event: " + t),
    st.just("id: 7"),
    st.just("retry: 10"),
    st.just("retry: x"),
    _text.map(lambda t: ": " + t),
    st.just("Data: x"),
    st.just('{"error":1}'),
    st.just("  "),
    st.just(""),
    st.just(""),
)
_eol = st.sampled_from(["\n", "\n", "\r\n", "\r"])


@st.composite
def sse_bodies(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_line, _eol), max_size=25))
    body = "".join(line + eol for line, eol in lines).encode("utf-8")
    if draw(st.booleans()):
        body = b"\xef\xbb\xbf" + body
    if draw(st.integers(0, 9)) == 0:  # sometimes: invalid UTF-8
        i = draw(st.integers(0, len(body)))
        body = body[:i] + draw(st.sampled_from([b"\xff", b"\xe2\x82", b"\xc3"])) + body[i:]
    if draw(st.booleans()):
        body += draw(_text).encode("utf-8")  # a trailing partial line
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_chunking_gives_same_events_findings_and_bytes(data: st.DataObject) -> None:
    body = data.draw(sse_bodies())
    chunks = data.draw(streamcheck.chunkings(body))
    streamcheck.assert_chunking_invariant(None, body, chunks)


@settings(max_examples=300, deadline=None)
@given(sse_bodies())
def test_dispatch_matches_whatwg_reference(body: bytes) -> None:
    events, partial = decode_all(body)
    assert b"".join(e.raw for e in events) + (partial.raw if partial else b"") == body
    assert dispatched(events) == reference_dispatch(body)


@settings(max_examples=200, deadline=None)
@given(sse_bodies())
def test_one_byte_chunks(body: bytes) -> None:
    dec = Decoder()
    events: list[Event] = []
    for i in range(len(body)):
        events += dec.feed(body[i : i + 1])
    more, partial = dec.close()
    whole, whole_partial = decode_all(body)
    assert [e.raw for e in events + more] == [e.raw for e in whole]
    assert (partial.raw if partial else None) == (whole_partial.raw if whole_partial else None)


# The shapes the byte-level parser takes, and their near misses: every field order, spacing and
# line end around them, and data that the grammar reports on.
_common_name = st.sampled_from(
    ["content_block_delta", "message_start", "", " x", "a:b", "é", "ping\x00"]
)
_common_data = st.one_of(
    _text,
    st.sampled_from(['{"a":1}', ":x", "", "[DONE]", " lead", "a\x85b", "\u2029"]),
)


@st.composite
def common_blocks(draw: st.DrawFn) -> bytes:
    """One terminated block, most of them of the common shapes."""
    eol = draw(st.sampled_from(["\n", "\r\n", "\r", "\n"]))
    lines = []
    if draw(st.booleans()):
        lines.append(
            draw(st.sampled_from(["event: ", "event:", "Event: ", ": "])) + draw(_common_name)
        )
    lines.append(draw(st.sampled_from(["data: ", "data: ", "data:", "id: "])) + draw(_common_data))
    if draw(st.integers(0, 5)) == 0:
        lines.append(draw(st.sampled_from(["data: more", ": keep", "id: 1", "event: late"])))
    body = "".join(line + eol for line in lines) + draw(st.sampled_from([eol, eol, "\n", "\r\n"]))
    raw = body.encode("utf-8")
    if draw(st.integers(0, 9)) == 0:  # sometimes: invalid UTF-8
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + draw(st.sampled_from([b"\xff", b"\xe2\x82", b"\xc3"])) + raw[i:]
    return raw


@settings(max_examples=1000, deadline=None)
@given(common_blocks(), st.integers(0, 3))
def test_byte_level_parser_equals_the_text_parser_wherever_it_answers(
    raw: bytes, index: int
) -> None:
    """The byte-level fast path makes the very event the general parser makes, and only of
    blocks the grammar reports nothing on: findings cannot depend on which one ran."""
    offset = 0 if index == 0 else 17 * index
    fast = parse_common(raw, index, offset)
    found = Findings()
    general = parse_text(raw, index, offset, found)
    if fast is not None:
        assert fast == general and fast.notes == general.notes == ()
        assert found.to_list() == []
    assert parse_block(raw, index, offset) == general
    # where the fast path answers, its data is the bytes `data_span` points at, decoded
    span = data_span(raw)
    if fast is not None:
        assert span is not None and raw[span[0] : span[1]].decode() == fast.data
    if span is None:
        assert fast is None


def test_byte_level_parser_takes_the_shapes_llm_streams_send() -> None:
    for raw in (
        b'event: content_block_delta\ndata: {"type":"content_block_delta"}\n\n',
        b'data: {"choices":[]}\n\n',
        b'data: {"candidates":[]}\r\n\r\n',
        'data: {"text":"Grüße 東京"}\n\n'.encode(),
        b"data: [DONE]\n\n",
    ):
        assert parse_common(raw, 0, 0) == parse_text(raw, 0, 0)


@pytest.mark.parametrize("size", [_BIG_DATA - 1, _BIG_DATA, _BIG_DATA + 1, 70_000])
@pytest.mark.parametrize(
    "filler",
    [b"x", "Grüße 東京 ".encode(), b"\xff", "\u2028".encode(), b'":"'],
    ids=["ascii", "utf-8", "invalid", "line-separator", "quotes"],
)
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_big_data_lines_decoded_in_place_equal_the_text_parser(
    size: int, filler: bytes, eol: bytes
) -> None:
    """A data line from `_BIG_DATA` bytes on is decoded from a view of its block, not a copy:
    the same event as the general parser's, and the same refusals (invalid UTF-8, a line
    separator hazard), on either side of that size."""
    room = size - len(b'{"text":""}')
    data = b'{"text":"' + filler * (room // len(filler)) + b"x" * (room % len(filler)) + b'"}'
    assert len(data) == size
    for head in (b"", b"event: response.output_text.done" + eol):
        raw = head + b"data: " + data + eol + eol
        fast = parse_common(raw, 3, 40)
        general = parse_text(raw, 3, 40, Findings())
        if filler in (b"\xff", "\u2028".encode()):
            assert fast is None
        else:
            assert fast == general and fast.data == data.decode()
        assert parse_block(raw, 3, 40) == general


@pytest.mark.parametrize("size", [BYTES_FROM - 1, BYTES_FROM, 70_000])
@pytest.mark.parametrize(
    "text",
    ["Grüße 東京 ", "emoji 🙂 ", "plain ", 'a \\"quote\\" ', "\\ud83d alone ", "\\u00e9 escaped "],
    ids=["utf-8", "beyond-bmp", "ascii", "escaped-quote", "lone-surrogate", "escape"],
)
@pytest.mark.parametrize("whole", [True, False], ids=["json", "cut-json"])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_the_checker_reads_a_big_data_line_beyond_ascii_from_its_bytes(
    size: int, text: str, whole: bool, eol: bytes
) -> None:
    """From `BYTES_FROM` characters on, a data line beyond ASCII is parsed from the block's
    bytes, not its decoded text (which orjson would encode again and keep that copy with): the
    same payload and the same findings as the text gives (a block of another shape, with a
    comment line, is read from its text), invalid or lone surrogates alike."""
    body = '{"type":"response.output_text.done","text":"' + text * (size // len(text) + 1)
    data = body[: size - 2] + '"}' if whole else body[:size]
    assert len(data) == size
    for head in (b"", b"event: response.output_text.done" + eol):
        raw = head + b"data: " + data.encode() + eol + eol
        other = head + b": keep" + eol + b"data: " + data.encode() + eol + eol
        ev, ev_other = parse_block(raw, 5, 80), parse_block(other, 5, 80)
        assert ev.data == ev_other.data == data and data_span(other) is None
        found, found_other = Findings(), Findings()
        size_before = sys.getsizeof(ev.data)
        payload = StreamChecker(None, found).parse(ev)
        assert payload == StreamChecker(None, found_other).parse(ev_other)
        assert found.to_list() == found_other.to_list()
        if not data.isascii() and size >= BYTES_FROM and found.to_list() == []:
            assert sys.getsizeof(ev.data) == size_before  # no UTF-8 copy kept with the text


def test_a_big_data_line_is_decoded_without_a_copy_of_its_bytes() -> None:
    """Only the event's text is allocated: no copy of the line to decode it (a Responses
    stream's done events carry its whole text, and each copy is fresh memory to fault in)."""
    size = 1 << 20
    raw = b"event: response.completed\ndata: " + b"x" * size + b"\n\n"
    tracemalloc.start()
    try:
        ev = parse_common(raw, 0, 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ev is not None and len(ev.data) == size
    assert peak < 1.5 * size, f"peak {peak / size:.1f}x the line"


# --- framing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"data: a\n\ndata: b\n\n",
        b"data: a\r\n\r\ndata: b\r\n\r\n",
        b"data: a\r\rdata: b\r\r",
        b"data: a\r\n\ndata: b\n\r\n",
    ],
    ids=["LF", "CRLF", "CR", "mixed"],
)
def test_SSE_4_all_line_terminators(body: bytes) -> None:
    events, partial = decode_all(body)
    assert [e.data for e in events] == ["a", "b"] and partial is None


def test_SSE_4_cr_at_chunk_end_waits_for_next_byte() -> None:
    dec = Decoder()
    assert dec.feed(b"data: a\r\n\r") == []  # the CR may be the start of CRLF
    (ev,) = dec.feed(b"\ndata: b")
    assert ev.raw == b"data: a\r\n\r\n"
    dec2 = Decoder()
    assert dec2.feed(b"data: a\r\r") == []
    events, partial = dec2.close()  # at EOF a lone CR is a terminator
    assert [e.raw for e in events] == [b"data: a\r\r"] and partial is None


def test_SSE_3_unicode_separators_are_not_line_breaks() -> None:
    body = 'data: {"t":"a\u2028b\u2029c\u0085d"}\n\n'.encode()
    f = Findings()
    (ev,), _ = decode_all(body, f)
    assert ev.data == '{"t":"a\u2028b\u2029c\u0085d"}'
    assert f.rules() == ["SSE-3a"]


@pytest.mark.parametrize(
    "char", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
)
@pytest.mark.parametrize("rest", ["plain ascii", "Grüße 東京"], ids=["ascii", "utf-8"])
@pytest.mark.parametrize("size", [40, 70_000], ids=["short", "big"])
def test_SSE_3a_each_raw_separator_hazard_is_reported_whatever_the_rest_of_the_line(
    char: str, rest: str, size: int
) -> None:
    """Each character a line splitter other than SSE's breaks lines at (a client that splits
    with `str.splitlines` cuts the data there) is reported, in a line of ASCII as in a line of
    any other text, short or big, by its code point."""
    text = (rest * (size // len(rest)))[: size // 2] + char + "x"
    assert text.isascii() == (rest.isascii() and char.isascii())
    f = Findings()
    (ev,), _ = decode_all(f"data: {text}\n\n".encode(), f)
    assert ev.data == text
    assert f.rules() == ["SSE-3a"]
    assert f"U+{ord(char):04X}" in f.items[0].message
    clean = Findings()
    decode_all(f"data: {rest}\n\n".encode(), clean)
    assert clean.rules() == []


def test_multibyte_split_across_chunks() -> None:
    body = 'data: {"t":"日本語😀"}\n\n'.encode()
    for cut in range(1, len(body)):
        dec = Decoder()
        events = dec.feed(body[:cut]) + dec.feed(body[cut:])
        assert [e.data for e in events] == ['{"t":"日本語😀"}']
        assert not dec.findings


def test_comments_blanks_and_partial_are_kept_as_blocks() -> None:
    body = b": hb\n\n\ndata: x\n\nevent: half"
    events, partial = decode_all(body)
    assert [e.raw for e in events] == [b": hb\n\n", b"\n", b"data: x\n\n"]
    assert events[0].is_comment and events[1].is_blank
    assert partial is not None and partial.raw == b"event: half" and not partial.terminated
    assert partial.event == "half"


def test_multiline_data_and_fields() -> None:
    (ev,), _ = decode_all(b"event: e\nid: 5\nretry: 100\ndata: a\ndata:\ndata: c\n\n")
    assert (ev.event, ev.id, ev.retry, ev.data) == ("e", "5", 100, "a\n\nc")


# --- grammar findings --------------------------------------------------------------------------

CASES = [
    # (rule, failing body, passing body)
    ("SSE-1", b'data: {"t":"\xff"}\n\n', b'data: {"t":"\xc3\xa9"}\n\n'),
    ("SSE-2", b"\xef\xbb\xbfdata: 1\n\n", b"data: 1\n\n"),
    ("SSE-3a", 'data: "a\u2028b"\n\n'.encode(), b'data: "a\\u2028b"\n\n'),
    ("SSE-7", b"Data: 1\n\n", b"data: 1\n\n"),
    ("SSE-8", b'{"error":"x"}\n\n', b'data: {"error":"x"}\n\n'),
    ("SSE-9", b"data: 1\ndata: 2\n\n", b"data: 12\n\n"),
    ("SSE-10", b"event: a\nevent: b\ndata: 1\n\n", b"event: b\ndata: 1\n\n"),
    ("SSE-12", b"retry: 1s\ndata: 1\n\n", b"retry: 1000\ndata: 1\n\n"),
    ("SSE-16", b"data: 1\n \n\n", b"data: 1\n\n"),
    ("SSE-17", b"data:1\n\n", b"data: 1\n\n"),
]


@pytest.mark.parametrize("rule,bad,good", CASES, ids=[c[0] for c in CASES])
def test_grammar_rule(rule: str, bad: bytes, good: bytes) -> None:
    assert rule in streamcheck.rules(None, bad)
    assert rule not in streamcheck.rules(None, good)


def test_SSE_8_comment_rewrapped_as_data_is_an_error() -> None:
    f = streamcheck.findings(None, b"data: : OPENROUTER PROCESSING\n\n")
    assert any(x.rule == "SSE-8" and x.severity == "error" for x in f)


def test_SSE_2_bom_inside_the_stream_is_an_error() -> None:
    f = streamcheck.findings(None, b"data: 1\n\n\xef\xbb\xbfdata: 2\n\n")
    assert [(x.rule, x.severity) for x in f] == [("SSE-2", "error")]


def test_SSE_1_reports_the_byte_offset() -> None:
    f = streamcheck.findings(None, b"data: 1\n\ndata: \xff\n\n")
    (finding,) = [x for x in f if x.rule == "SSE-1"]
    assert finding.offset == 15 and finding.event == 1


def test_findings_are_capped_per_rule() -> None:
    f = streamcheck.findings(None, b"data:1\n\n" * 50)
    assert f.count("SSE-17") == 50 and len([x for x in f if x.rule == "SSE-17"]) == 10
    assert f.suppressed["SSE-17"] == 40


# --- encoder -----------------------------------------------------------------------------------


def test_encode_roundtrip() -> None:
    raw = encode('{"a":1}\nsecond', event="message_delta", id="9")
    (ev,), partial = decode_all(raw)
    assert (ev.event, ev.id, ev.data, ev.raw) == ("message_delta", "9", '{"a":1}\nsecond', raw)
    assert partial is None
    assert encode(comment="keep-alive") == b": keep-alive\n\n"
    assert encode("x", eol="\r\n") == b"data: x\r\n\r\n"
    with pytest.raises(ValueError):
        encode("x", event="a\nb")
    with pytest.raises(ValueError):
        encode()


def test_with_data_keeps_style_of_the_original() -> None:
    ev = parse_block(b': c\r\nevent: e\r\ndata:{"a":1}\r\nid: 3\r\n\r\n', 4, 100)
    new = ev.with_data('{"a":2}')
    assert new.raw == b': c\r\nevent: e\r\ndata:{"a":2}\r\nid: 3\r\n\r\n'
    assert (new.index, new.offset, new.data, new.event) == (4, 100, '{"a":2}', "e")
    multi = parse_block(b"data: 1\ndata: 2\n\n", 0, 0).with_data("x")
    assert multi.raw == b"data: x\n\n"


# --- size --------------------------------------------------------------------------------------


def test_32_mib_event_is_scanned_once_in_linear_memory() -> None:
    """A huge event arriving in pieces: each feed scans only the new bytes (the resume point
    stays at the end of the buffer), and memory stays a small multiple of the event."""
    size = 32 << 20
    body = b"data: " + b"x" * size + b"\n\n"
    dec = Decoder()
    tracemalloc.start()
    try:
        events = []
        for i in range(0, len(body), 65536):
            events += dec.feed(body[i : i + 65536])
            if not events:
                assert dec._scan >= dec.pending - 2, "the scan must resume, not restart"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (ev,) = events
    assert len(ev.data) == size and dec.pending == 0
    assert peak < 5 * size, f"peak {peak / size:.1f}x the event"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_frame_emits_whole_blocks_only_and_loses_nothing(data: st.DataObject) -> None:
    body = data.draw(sse_bodies())
    chunks = data.draw(streamcheck.chunkings(body))
    framer = Decoder()
    pieces = [framer.frame(c) for c in chunks]
    tail = framer.close_frame()
    assert b"".join(pieces) + tail == body
    whole, partial = decode_all(body)
    complete = b"".join(e.raw for e in whole)
    framed = b"".join(pieces)
    assert complete.startswith(framed)  # never a partial block before the end of the stream
    for piece in pieces:  # and every piece is a run of whole blocks
        events, rest = decode_all(piece)
        assert rest is None and (events or not piece)


def test_offsets_continue_after_a_chunk_that_is_one_whole_block() -> None:
    dec = Decoder()
    (first,) = dec.feed(b"data: 1\n\n")
    (second,) = dec.feed(b"data: 2\n\n")
    assert (first.offset, second.offset, dec.offset) == (0, 9, 18)


def test_crlf_boundary_straddling_two_chunks_is_found() -> None:
    # The first chunk ends inside CRLF CRLF; the next completes it and holds a second event.
    dec = Decoder()
    assert dec.feed(b"data: a\r\n") == []
    events = dec.feed(b"\r\ndata: b\r\n\r\n")
    assert [e.data for e in events] == ["a", "b"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["data: x", "data: yy", ": c", "event: e", ""]), max_size=12),
    st.data(),
)
def test_crlf_streams_at_any_chunking(lines: list[str], data: st.DataObject) -> None:
    body = "".join(line + "\r\n" for line in lines).encode() + b"\r\n"
    chunks = data.draw(streamcheck.chunkings(body))
    streamcheck.assert_chunking_invariant(None, body, chunks)
    events, _ = decode_all(body)
    assert dispatched(events) == reference_dispatch(body)


# Big blocks: the blank line that ends one is searched for as a whole near its start, and past
# that from line end to line end (`_blank_line`), a bounded number of them before it searches as
# a whole again. Blocks whose blank line lies on either side of that border, or after more line
# ends than the hops, at any chunking, with LF or CRLF.
_big_line = st.sampled_from([0, 1, 7, 200, 440, 500, 503, 504, 505, 506, 510, 520, 2000]).map(
    lambda k: "data: " + "x" * k
)
_many_lines = st.integers(60, 75).map(lambda n: ["data: a"] * n)


@st.composite
def big_bodies(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    blocks = draw(
        st.lists(st.one_of(st.lists(_big_line, min_size=1, max_size=3), _many_lines), max_size=4)
    )
    return "".join("".join(line + eol for line in block) + eol for block in blocks).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(big_bodies(), st.data())
def test_big_blocks_at_any_chunking(body: bytes, data: st.DataObject) -> None:
    chunks = data.draw(streamcheck.chunkings(body))
    streamcheck.assert_chunking_invariant(None, body, chunks)
    events, rest = decode_all(body)
    assert rest is None and dispatched(events) == reference_dispatch(body)
    assert len(events) == body.count(b"\n\n") + body.count(b"\r\n\r\n")


def test_the_blank_line_past_the_first_bytes_of_a_block_is_found_where_it_is() -> None:
    for eol in (b"\n", b"\r\n"):
        for size in (505, 506, 507, 508, 509, 510, 511, 512, 513, 5000):
            block = b"data: " + b"x" * size + eol + eol
            lines = b"".join(b"data: %d" % i + eol for i in range(100)) + eol
            body = block + lines + block
            events, rest = decode_all(body)
            assert rest is None and [len(e.raw) for e in events] == [
                len(block),
                len(lines),
                len(block),
            ]
            dec = Decoder()
            assert [e.raw for e in dec.feed(block)] == [block]  # one whole block, one chunk
