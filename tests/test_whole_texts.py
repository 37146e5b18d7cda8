"""Big events read without decoding the texts they repeat.

A big block of the common shape comes from the decoder `unread` (`sse.Event.unread`): its data
line is decoded, and checked for what the grammar reports, only when something reads it. The
checker reads a Responses done event (which repeats the whole text streamed, tens of KiB) by
leaving out the texts its validator holds already, each found as the JSON string it would be
(`StreamChecker._with_whole_texts`). Every test here compares against the checker that decodes
every block at once (`eager`): the same events, payloads, findings, verdicts and bytes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import pickle
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mitmllm.protocol.sse as sse
import mitmllm.protocol.stream as stream
from mitmllm.protocol import detect
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.openai_responses import DONE_TEXTS
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.splice import splice_event
from mitmllm.protocol.sse import Decoder
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import Notes
from mitmllm.protocol.sse import parse_block
from mitmllm.protocol.sse import parse_text
from mitmllm.protocol.stream import StreamChecker
from tests import openai_responses_streams as R
from tests.test_steady import examples
from tests.test_steady import gated
from tests.test_steady import outcome
from tests.test_steady import restamping

FMT = "openai-responses"
R_DIALECT = detect.by_name(FMT)


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Every block decoded at once, as before unread blocks: the reference."""
    saved = sse._BIG_DATA
    sse._BIG_DATA = 1 << 40
    try:
        yield
    finally:
        sse._BIG_DATA = saved


def both_ways(chunks: list[bytes]) -> tuple[Any, ...]:
    """A Responses stream's `chunks` inspected, restamped, and through the relay's pipeline
    (repairs, gate): the same each way, unread blocks or not; the inspected outcome."""
    rewrites = restamping(FMT)
    ways = []
    for way in (contextlib.nullcontext, eager):
        with way():
            ways.append(
                (
                    outcome(FMT, chunks, shortcut=True),
                    outcome(FMT, chunks, shortcut=False),
                    outcome(FMT, chunks, shortcut=True, rewrites=rewrites),
                    gated(FMT, chunks, shortcut=True),
                    gated(FMT, chunks, shortcut=True, rewrites=rewrites, lazy=True),
                )
            )
    assert ways[0] == ways[1]
    return ways[0][0]


def fed(body: bytes) -> tuple[list[tuple[Event, Any]], list[Any]]:
    """`body` through a checker: each event with its payload, and the findings."""
    checker = StreamChecker(R_DIALECT)
    pairs = checker.feed(body)
    checker.close()
    return pairs, checker.findings.to_list()


def fed_both_ways(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[tuple[Event, Any]], list[Any], list[tuple[int, bool]], list[tuple[Event, Any]]]:
    """`body` through a checker, with the same payloads and findings as the eager one's: its
    pairs, findings, how each unread event was read (`spied`), and the eager one's pairs."""
    with eager():
        reference, expected = fed(body)
    seen = spied(monkeypatch)
    pairs, found = fed(body)
    assert found == expected
    assert [p for _, p in pairs] == [p for _, p in reference]
    return pairs, found, seen, reference


def spied(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Each unread event's index, and whether it was read by leaving out the texts it
    repeats, from now on."""
    seen: list[tuple[int, bool]] = []
    original = StreamChecker._with_whole_texts

    def spy(self: StreamChecker, ev: Event, span: tuple[int, int]) -> Any:
        payload = original(self, ev, span)
        seen.append((ev.index, payload is not None))
        return payload

    monkeypatch.setattr(StreamChecker, "_with_whole_texts", spy)
    return seen


# --- the decoder's unread blocks ----------------------------------------------------------------


_FILLERS = ["x", "Grüße 東京 ", "🙂", "\u2028", "\x85", "\x0b", '"', "\\"]


@st.composite
def big_blocks(draw: st.DrawFn) -> bytes:
    """A block of the common shape with a big data line: JSON or not, valid UTF-8 or not,
    with what the grammar reports on or not, LF or CRLF."""
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    parts = draw(st.lists(st.sampled_from(_FILLERS), min_size=1, max_size=6))
    unit = "".join(parts)
    text = unit * (sse._BIG_DATA // len(unit.encode()) + draw(st.integers(0, 2)))
    data = draw(st.sampled_from([b'{"text":%s}', b"%s", b":%s", b'{"text":%s']))
    value = data % orjson.dumps(text) if b"{" in data else data % text.encode()
    if draw(st.integers(0, 5)) == 0:  # invalid UTF-8 somewhere
        i = draw(st.integers(0, len(value) - 1))
        value = value[:i] + b"\xff" + value[i:]
    head = draw(st.sampled_from([b"", b"event: response.output_text.done" + eol]))
    return head + b"data: " + value + eol + eol


@examples(200)
@given(big_blocks(), st.integers(0, 3))
def test_an_unread_block_reads_as_the_general_parser_reads_it(raw: bytes, index: int) -> None:
    """Unread, a big block is the event the general parser makes of it once its data is read,
    with the same grammar findings as notes: at its place, or moved (a repair)."""
    offset = 0 if index == 0 else 40 * index
    notes = Notes()
    general = parse_text(raw, index, offset, notes)
    lazy = parse_block(raw, index, offset, Notes(), lazy=True)
    eager_ev = parse_block(raw, index, offset, Notes())
    if lazy.unread:
        assert eager_ev.data is not None and lazy.notes == ()
        twin = parse_block(raw, index, offset, Notes(), lazy=True)
        assert lazy.data == general.data and lazy.notes == tuple(notes.items)
        assert lazy == general and not lazy.unread
        # moved (a repair), it is read where it was: its findings worded as the eager ones
        moved = twin.at(index + 2, offset + 7)
        shifted = tuple((r, d, o + 7, s) for r, d, o, s in notes.items)
        assert moved.data == general.data and moved.notes == shifted
    else:  # not of the shape, or a comment as data: read at once
        assert lazy == eager_ev


def test_only_a_decoder_whose_notes_ride_on_the_events_leaves_blocks_unread() -> None:
    """A decoder that reports grammar findings itself decodes every block at once (a late
    note would be lost); one whose consumer reports the events' notes leaves big ones
    unread, small ones not."""
    big = b"data: " + orjson.dumps({"text": "\u2028" * sse._BIG_DATA}) + b"\n\n"
    small = b'data: {"text":"hi"}\n\n'
    assert [ev.unread for ev in Decoder().feed(big + small)] == [True, False]
    found = Findings()
    (ev,) = Decoder(found).feed(big)
    assert not ev.unread and [f.rule for f in found.items] == ["SSE-3a"]


# --- the checker: big events made of texts it holds ----------------------------------------------


_TEXTS = [
    "plain words and more of them ",
    "Grüße aus 東京, ",
    "emoji 🙂 here ",
    'a "quote" ',
    "back\\slash ",
    "tab\tand line\nbreak ",
    "slash / and <tags> ",
    "ctl \x01 ",
]


def big_text(draw: st.DrawFn, size: int = 17_000) -> list[str]:
    """A text of `size` characters or more, as its deltas."""
    units = draw(st.lists(st.sampled_from(_TEXTS), min_size=1, max_size=5))
    if draw(st.integers(0, 7)) == 0:
        units.append(draw(st.sampled_from(["\u2028", "\x85", "\ud83d"])))  # a hazard, a lone half
    unit = "".join(units)
    text = unit * (size // len(unit) + 1)
    step = draw(st.integers(40, 400))
    return [text[i : i + step] for i in range(0, len(text), step)]


#: What may be done to one done event (the payload, or its bytes once encoded).
_MUTATIONS = [
    "none",
    "text longer",
    "text shorter",
    "a character changed",
    "escaped as ASCII",
    "slashes escaped",
    "a mark in another field",
    "a \\u escape in another field",
    "the text as a key",
    "the text after an escaped quote",
    "cut JSON",
    "invalid UTF-8",
    "a line separator in another field",
]


def _encode(payload: dict[str, Any], eol: str = "\n") -> bytes:
    """One event as `R.encode` writes it; JSON with a lone surrogate as the only way JSON has
    (an escape), which orjson does not write."""
    try:
        data = orjson.dumps(payload)
    except TypeError:
        data = json.dumps(payload, separators=(",", ":")).encode()
    return f"event: {payload['type']}{eol}data: ".encode() + data + f"{eol}{eol}".encode()


def _mutate_payload(p: dict[str, Any], how: str) -> dict[str, Any]:
    text = _text_of(p)
    if text is None:
        return p
    if how == "text longer":
        return _with_text(p, text + "x")
    if how == "text shorter":
        return _with_text(p, text[:-1])
    if how == "a character changed":
        middle = len(text) // 2
        return _with_text(
            p, text[:middle] + ("y" if text[middle] != "y" else "z") + text[middle + 1 :]
        )
    if how == "a mark in another field":
        return {**p, "note": stream._MARK_LEAD.decode() + "0"}
    if how == "the text as a key":  # (and not as the value: that one would be found first)
        return {**_with_text(p, ""), "note": {text: 1}}
    if how == "the text after an escaped quote":
        return {**_with_text(p, ""), "note": '"' + text}
    if how == "a line separator in another field":
        return {**p, "note": "a\u2028b"}
    return p


def _text_of(node: Any) -> str | None:
    """The longest string in `node`."""
    if isinstance(node, str):
        return node
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    found = [t for t in (_text_of(v) for v in values) if t is not None]
    return max(found, key=len, default=None)


def _with_text(node: Any, text: str) -> Any:
    """`node` with its longest string replaced by `text`."""
    longest = _text_of(node)

    def put(n: Any) -> Any:
        if isinstance(n, str):
            return text if n == longest else n
        if isinstance(n, dict):
            return {k: put(v) for k, v in n.items()}
        if isinstance(n, list):
            return [put(v) for v in n]
        return n

    return put(node)


def _mutate_bytes(raw: bytes, how: str, cut: float = 0.5) -> bytes:
    head, sep, rest = raw.partition(b"data: ")
    end = rest.index(b"\n")
    data, tail = rest[:end].rstrip(b"\r"), rest[len(rest[:end].rstrip(b"\r")) :]
    if how == "escaped as ASCII":
        data = json.dumps(json.loads(data), separators=(",", ":")).encode()
    elif how == "slashes escaped":
        data = data.replace(b"/", b"\\/")
    elif how == "a \\u escape in another field":
        data = data[:-1] + b',"note":"\\u00e9"}'
    elif how == "cut JSON":
        data = data[: max(1, int(len(data) * cut))]
    elif how == "invalid UTF-8":
        data = data[:-1] + b',"note":"\xff"}'
    return head + sep + data + tail


@st.composite
def big_streams(draw: st.DrawFn) -> list[bytes]:
    """A Responses stream with big texts (a message, maybe a reasoning summary before it and
    a call's arguments after), one of its done events or its terminal event changed or not,
    LF or CRLF, in any chunking."""
    items = []
    if draw(st.booleans()):
        items.append(R.reasoning(len(items), big_text(draw)))
    items.append(R.message(len(items), big_text(draw)))
    if draw(st.booleans()):
        items.append(R.function_call(len(items), "get_weather", big_text(draw)))
    payloads = R.number(R.assemble(*items))
    big = [i for i, p in enumerate(payloads) if len(_encode(p)) > 16_000]
    at = draw(st.sampled_from(big))
    how = draw(st.sampled_from(_MUTATIONS))
    payloads[at] = _mutate_payload(payloads[at], how)
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    events = [_encode(p, eol=eol) for p in payloads]
    events[at] = _mutate_bytes(events[at], how, draw(st.floats(0.0, 0.999)))
    body = b"".join(events)
    cuts = sorted(draw(st.lists(st.integers(1, len(body) - 1), max_size=12)))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]


@examples(150)
@given(big_streams())
def test_big_events_read_by_their_texts_change_no_finding_no_verdict_and_no_byte(
    chunks: list[bytes],
) -> None:
    """Done events and the terminal event that repeat the texts streamed, as they came or
    changed (another text, other escapes, a mark, a key, cut, invalid UTF-8, a line
    separator), in any chunking: inspected, restamped, through the relay's pipeline, the same
    as when every block is decoded at once."""
    both_ways(chunks)


def _stream(*items: Any, eol: str = "\n") -> bytes:
    return b"".join(R.encode(p, eol=eol) for p in R.number(R.assemble(*items)))


_LONG = ['Grüße aus 東京, a "quote", a back\\slash, a path/to and a line\nbreak. '] * 400


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_the_done_events_of_a_long_answer_are_read_by_their_texts(
    monkeypatch: pytest.MonkeyPatch, eol: str
) -> None:
    """Each event that repeats a text streamed (the text's done event, its part's, its
    item's, the terminal one) is read without parsing that text again, and its payload is
    the one the full parse gives, the text in place."""
    body = _stream(R.reasoning(0, _LONG), R.message(1, _LONG), eol=eol)
    pairs, found, seen, reference = fed_both_ways(body, monkeypatch)
    assert [ok for _, ok in seen] == [True] * 7 and found == []
    assert [ev.raw for ev, _ in pairs] == [ev.raw for ev, _ in reference]
    completed = pairs[-1][1]["response"]["output"]
    assert completed[1]["content"][0]["text"] == "".join(_LONG)


@pytest.mark.parametrize("how", [m for m in _MUTATIONS if m != "none"])
def test_a_done_event_that_differs_is_read_the_full_way(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A done event whose text is not the one streamed, or is written otherwise, or whose
    other fields could be mistaken for a text left out, is read the full way: the findings
    and payloads the full parse gives."""
    payloads = R.number(R.assemble(R.message(0, _LONG)))
    at = R.find(payloads, "response.output_text.done")
    payloads[at] = _mutate_payload(payloads[at], how)
    events = [R.encode(p) for p in payloads]
    events[at] = _mutate_bytes(events[at], how, cut=0.9)
    body = b"".join(events)
    pairs, found, seen, _ = fed_both_ways(body, monkeypatch)
    assert (at, False) in seen  # the done event changed: read the full way
    assert both_ways([body]) is not None


def test_done_texts_kept_for_the_terminal_event_are_bounded_and_dropped_after_it() -> None:
    """The texts of the items done wait for the terminal event, the last ones only (the last
    item's, and those before it while at most `DONE_TEXTS` characters), and go with it."""
    size = DONE_TEXTS // 3 // 1000 * 1000  # each item's text: three fit, not four
    items = [R.message(i, ["x" * 1000] * (size // 1000)) for i in range(5)]
    body = _stream(*items)
    checker = StreamChecker(R_DIALECT)
    held: list[int] = []
    for ev in checker.decoder.feed(body):
        checker.check(ev, checker.parse(ev))
        held.append(sum(map(len, checker.validator._done_texts)))  # type: ignore[union-attr]
    assert max(held) <= DONE_TEXTS and held[-2] == 3 * size and held[-1] == 0
    assert checker.findings.to_list() == []


def test_a_mark_of_the_upstreams_own_keeps_the_text_out_of_the_wrong_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A done event whose text field is empty, the text streamed only inside another string
    (after an escaped quote), and a field that is exactly the mark the text would be left out
    as: nothing is put where it was not (the full parse's payload)."""
    payloads = R.number(R.assemble(R.message(0, _LONG)))
    at = R.find(payloads, "response.output_text.done")
    text = payloads[at]["text"]
    mark = stream._MARK_LEAD.decode() + "0"
    payloads[at] = {**payloads[at], "text": "", "note": '"' + text, "x": mark}
    body = b"".join(R.encode(p) for p in payloads)
    pairs, found, seen, _ = fed_both_ways(body, monkeypatch)
    assert pairs[at][1]["x"] == mark and pairs[at][1]["note"] == '"' + text
    assert (at, False) in seen


@pytest.mark.parametrize("how", ["invalid UTF-8", "a line separator in another field"])
def test_the_grammar_findings_of_a_big_event_reach_the_clients_side_of_the_relay(
    how: str,
) -> None:
    """Through the relay's pipeline, the grammar findings of a big event read the full way
    (its notes once it is read) are the client's stream's findings too, as the upstream's."""
    payloads = R.number(R.assemble(R.message(0, _LONG)))
    at = R.find(payloads, "response.output_text.done")
    payloads[at] = _mutate_payload(payloads[at], how)
    events = [R.encode(p) for p in payloads]
    events[at] = _mutate_bytes(events[at], how)
    seen = gated(FMT, [b"".join(events)], shortcut=True)
    upstream, client = seen[3], seen[4]
    rule = "SSE-1" if how == "invalid UTF-8" else "SSE-3a"
    assert [f["rule"] for f in upstream] == [f["rule"] for f in client] == [rule]


def test_a_text_beyond_a_mebibyte_is_left_out_of_the_parse_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above `BIG_JSON` the full way parses with the standard library (orjson's memory for
    a huge string); the events that repeat a text that big are read by it as well, with the
    payloads the full way gives."""
    body = _stream(R.message(0, ['Grüße, a "quote" and more words. '] * 40_000))
    assert max(len(line) for line in body.split(b"\n")) > (1 << 20)
    pairs, found, seen, _ = fed_both_ways(body, monkeypatch)
    assert [ok for _, ok in seen] == [True] * 4 and found == []


def test_big_deltas_are_not_looked_at_for_texts_they_repeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delta carries new text, and the texts grow with each: a big one is not searched for
    them (each search would join and encode the text so far: quadratic in the stream), only
    the events that repeat them."""
    body = _stream(R.message(0, ["x" * 20_000] * 30))
    asked: list[str | None] = []
    original = StreamChecker._encoded

    def encoded(self: StreamChecker, text: str) -> Any:
        asked.append(text[:1])
        return original(self, text)

    monkeypatch.setattr(StreamChecker, "_encoded", encoded)
    seen = spied(monkeypatch)
    pairs, found = fed(body)
    assert found == [] and len(seen) == 30 + 4  # the deltas, unread; the four that repeat
    assert [ok for _, ok in seen].count(True) == 4 and len(asked) == 4


def test_an_unread_event_copied_or_pickled_reads_as_the_original() -> None:
    raw = b"data: " + orjson.dumps({"text": "Grüße " * 4000}) + b"\n\n"
    (ev,) = Decoder().feed(raw)
    assert ev.unread
    for twin in (copy.deepcopy(ev), pickle.loads(pickle.dumps(ev))):
        assert twin.unread and twin.data == ev.data and twin == ev


def test_a_restamp_splices_an_unread_event_into_one_that_reads_as_the_eager_splice() -> None:
    """`response.completed` carries the model: its restamp splices the big event unread, and
    the new one reads as the splice of the event read at once, its data line where it is."""
    body = _stream(R.message(0, _LONG))
    raw = body[body.rindex(b"event: response.completed") :]
    edits = [Edit(("response", "model"), "bench-alias-with-a-longer-name")]
    (ev,) = Decoder().feed(raw)
    new = splice_event(ev, edits)
    assert ev.unread and new.unread
    assert new.unread_span == sse.data_span(new.raw)
    eager_new = splice_event(parse_block(raw, 0, 0), edits)
    assert new.raw == eager_new.raw and new.data == eager_new.data and new == eager_new
