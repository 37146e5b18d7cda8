"""Steady deltas: the byte-level shortcut gives what the full path gives, for every stream and
every chunking (findings, validator summary, counts and the bytes passed on)."""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Sequence
from enum import Enum
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import mitmllm.protocol.steady as steady_module
from mitmllm.bench.corpus import CALLS
from mitmllm.bench.corpus import FORMATS
from mitmllm.bench.corpus import group
from mitmllm.bench.corpus import long_stream
from mitmllm.engine.pipeline import Pipeline
from mitmllm.engine.pipeline import TextBlind
from mitmllm.engine.rewrite import response_rewrites
from mitmllm.engine.validation import StreamResult
from mitmllm.protocol import detect
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.gate import Gate
from mitmllm.protocol.gate import Verdict
from mitmllm.protocol.repair import Repairer
from mitmllm.protocol.steady import Steady
from mitmllm.protocol.steady import TooDeep
from mitmllm.protocol.steady import attributes
from mitmllm.protocol.steady import escaped_text
from mitmllm.protocol.steady import fingerprint
from mitmllm.protocol.steady import plain_span
from mitmllm.protocol.steady import plain_text
from mitmllm.protocol.stream import StreamChecker
from tests import anthropic_streams as ant
from tests import openai_chat_streams as chat
from tests import streamcheck

WORD = re.compile(rb" word(\d+)")
#: The formats whose text deltas the shortcut may take.
STEADY = sorted(f for f in FORMATS if detect.by_name(f).steady_paths)
#: The formats whose deltas may carry a pad (OpenAI's `obfuscation`).
PADDED = sorted(f for f in STEADY if detect.by_name(f).steady_pads)

# Texts a model streams (most of them), and the ones the shortcut must leave to the full path.
_plain = st.sampled_from(["Hello", " world", "a", "Grüße 東京 🙂", "x" * 300, " token", "{}"])
_texts = st.one_of(
    _plain,
    _plain,
    _plain,
    _plain,
    _plain,
    st.sampled_from(['say "hi"', "back\\slash", "tab\there", "line\nbreak", "\u2028", "\u0085"]),
    st.sampled_from(["", "nbsp\u00a0", "del\x7f", "</script>", '","index":1,"x":"']),
    st.sampled_from(["\ud800", "lone \udc00 low", "\ud83d\ude42 pair"]),
    st.text(max_size=12),
)
#: Texts the pattern of a template matches: short printable ASCII.
_ascii = st.sampled_from(["Hello", " world", "a", " token", "x" * 300, "{}", "1 < 2 & 3"])


def stream(
    fmt: str,
    texts: list[str],
    ascii_only: bool,
    pads: list[str] | None = None,
    *,
    first: bool = False,
) -> list[bytes]:
    """The mock's `long` stream in `fmt` with `texts` as its deltas, JSON-escaped as a sender
    might (raw UTF-8, or \\u escapes); with `pads`, each delta padded as OpenAI pads them (an
    ``obfuscation`` string, the last key of its object; `first`: the first)."""
    events = long_stream(fmt, len(texts)).events

    def escaped(value: str) -> bytes:
        # a lone surrogate has no UTF-8: a sender writes its escape (``\\ud800``)
        lone = any(0xD800 <= ord(c) <= 0xDFFF for c in value)
        return json.dumps(value, ensure_ascii=ascii_only or lone).encode()

    def text(m: re.Match[bytes]) -> bytes:
        return escaped(texts[int(m[1])])[1:-1]

    def padded(ev: bytes) -> bytes:
        m = WORD.search(ev)
        if pads is None or m is None:
            return ev
        pad = b'"obfuscation":' + escaped(pads[int(m[1])])
        if first:
            return ev.replace(b"data: {", b"data: {" + pad + b",", 1)
        end = ev.rindex(b"}")
        return ev[:end] + b"," + pad + ev[end:]

    return [WORD.sub(text, padded(ev)) for ev in events]


#: Pads OpenAI adds to its deltas (random letters and digits), and ones the shortcut leaves to
#: the full path.
_alnum = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=16)
_pads = st.one_of(
    _alnum, _alnum, _alnum, st.sampled_from(["", 'q"q', "b\\s", "ü", "tab\t", "x" * 2100, "\udc00"])
)


@st.composite
def any_stream(draw: st.DrawFn, fmt: str, texts: list[str]) -> list[bytes]:
    """`stream` with `texts`, its deltas padded (last, or first in their objects) or not."""
    where = draw(st.sampled_from([None, None, "last", "last", "first"]))
    pads = draw(st.lists(_pads, min_size=len(texts), max_size=len(texts))) if where else None
    return stream(fmt, texts, draw(st.booleans()), pads, first=where == "first")


def examples(n: int) -> settings:
    """Hypothesis settings for the property tests here: `n` examples of streams, slow and big
    as they may be, with no deadline."""
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@st.composite
def mutated(draw: st.DrawFn, events: list[bytes]) -> list[bytes]:
    """`events`, sometimes broken the ways streams break: reordered, dropped, repeated,
    keep-alives and ids between events, a delta for another block, a cut end."""
    out = list(events)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(out) - 1))
        kind = draw(
            st.sampled_from(
                [
                    "swap",
                    "drop",
                    "repeat",
                    "ping",
                    "id",
                    "index",
                    "blank",
                    "model",
                    "inside",
                    "other",
                    "others",
                    "finish",
                ]
            )
        )
        if kind == "swap" and i + 1 < len(out):
            out[i], out[i + 1] = out[i + 1], out[i]
        elif kind == "drop" and len(out) > 1:
            del out[i]
        elif kind == "repeat":
            out.insert(i, out[i])
        elif kind == "ping":
            out.insert(i, b": keep-alive\n\n")
        elif kind == "id":
            out[i] = b"id: 7\n" + out[i]
        elif kind == "index":
            out[i] = out[i].replace(b'"index":0', b'"index":1', 1)
        elif kind == "blank":
            out.insert(i, b"\n")
        elif kind == "model":  # this event already names the client's model: nothing to restamp
            out[i] = MODELS.sub(b'"' + ALIAS.encode() + b'"', out[i])
        elif kind == "finish":  # a finish_reason nobody knows, as long as null (a Chat rule)
            out[i] = out[i].replace(b'"finish_reason":null', b'"finish_reason":"no"', 1)
        elif kind == "other":  # another response's id, as long as this one's
            out[i] = out[i].replace(b"mock", b"moCk", 1)
        elif kind == "others":  # from here on, another response's events (a gateway's retry)
            out[i:] = [ev.replace(b"mock", b"moCk") for ev in out[i:]]
        elif kind == "inside":  # a keep-alive spliced into the event (the repairs rejoin it)
            at = draw(st.integers(1, max(1, len(out[i]) - 3)))
            out[i] = out[i][:at] + b"\n: keep-alive\n\n" + out[i][at:]
    if draw(st.integers(0, 5)) == 0:  # cut inside the last event
        out[-1] = out[-1][: draw(st.integers(1, len(out[-1])))]
    return out


@st.composite
def chunked(draw: st.DrawFn, pieces: list[bytes]) -> list[bytes]:
    """As an upstream writes them, a few whole events per chunk; or cut anywhere."""
    if draw(st.booleans()):
        return draw(streamcheck.chunkings(b"".join(pieces)))
    out, i = [], 0
    while i < len(pieces):
        k = draw(st.integers(1, 4))
        out.append(b"".join(pieces[i : i + k]))
        i += k
    return out


#: The model the client asked for, which a restamp shows it instead of the upstream's.
ALIAS = "client-alias"
#: The models the corpus' streams name, per format.
MODELS = re.compile(rb'"(claude-sonnet-4-5|gpt-4\.1|gemini-2\.5-flash|gpt-5)"')


def restamping(fmt: str) -> list[Any]:
    """The rewrites of a flow whose model rule sent another model upstream."""
    dialect = detect.by_name(fmt)
    assert dialect is not None
    return response_rewrites(dialect, client_model=ALIAS, names={"get_weather": "weather"})


def parses(checker: StreamChecker) -> list[int]:
    """How many events `checker` parses (the full path) from now on, as ``[n]``."""
    count = [0]
    original = checker.parse

    def counting(ev: Any) -> Any:
        count[0] += 1
        return original(ev)

    checker.parse = counting  # type: ignore[method-assign]
    return count


def fed(
    fmt: str, chunks: list[bytes], rewrites: Sequence[Any]
) -> tuple[StreamChecker, Pipeline, list[int], bytes]:
    """`chunks` through an inspecting pipeline with `rewrites`, the shortcut on: its checker,
    the pipeline, how many events the full path parsed (`parses`) and what the client got."""
    checker = StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body))
    pipeline = Pipeline(checker, rewrites)
    parsed = parses(checker)
    out = b"".join(pipeline.feed(c) for c in chunks) + pipeline.close()
    return checker, pipeline, parsed, out


def taken_whole(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events each `Steady.whole` call takes from now on (or `Steady.take_one`: one
    or none)."""
    whole, take_one = Steady.whole, Steady.take_one
    wholes: list[int] = []

    def spy(self: Steady, checker: StreamChecker, chunk: bytes, due: int | None = None) -> int:
        wholes.append(whole(self, checker, chunk, due))
        return wholes[-1]

    def spy_one(self: Steady, chunk: bytes) -> bytes | None:
        out = take_one(self, chunk)
        wholes.append(out is not None)
        return out

    monkeypatch.setattr(Steady, "whole", spy)
    monkeypatch.setattr(Steady, "take_one", spy_one)
    return wholes


def outcome(
    fmt: str, chunks: list[bytes], *, shortcut: bool, rewrites: Sequence[Any] = ()
) -> tuple[Any, ...]:
    checker = StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body), autodetect=True)
    pipeline = Pipeline(checker, rewrites)
    if not shortcut:
        pipeline.steady = None
    out = b"".join(pipeline.feed(c) for c in chunks) + pipeline.close()
    result = StreamResult.of(checker)
    return out, result, checker.data_events, checker.sentinels, pipeline.events, pipeline.rewritten


@examples(400)
@given(st.data())
def test_the_shortcut_changes_no_finding_no_count_and_no_byte(data: st.DataObject) -> None:
    fmt = data.draw(st.sampled_from(FORMATS))
    texts = data.draw(st.lists(_texts, min_size=4, max_size=16))
    events = data.draw(any_stream(fmt, texts))
    pieces = data.draw(mutated(events))
    chunks = data.draw(chunked(pieces))
    full = outcome(fmt, chunks, shortcut=False)
    assert outcome(fmt, chunks, shortcut=True) == full
    assert full[0] == b"".join(pieces)  # nothing rewritten: the bytes pass as they came


def _where(last: Any) -> tuple[int, int] | None:
    """The index and offset of an event, or of the `At` that stands for one."""
    return None if last is None else (last.index, last.offset)


@examples(300)
@given(st.data())
def test_with_text_blind_rewrites_the_shortcut_sends_what_the_full_path_sends(
    data: st.DataObject,
) -> None:
    """Restamping (and tool names mapped back): the shortcut gives the client the bytes the full
    path's splices give, and the same findings and counts, for mutated streams in any chunking."""
    fmt = data.draw(st.sampled_from(FORMATS))
    texts = data.draw(st.lists(_texts, min_size=4, max_size=16))
    events = data.draw(any_stream(fmt, texts))
    chunks = data.draw(chunked(data.draw(mutated(events))))
    rewrites = restamping(fmt)
    full = outcome(fmt, chunks, shortcut=False, rewrites=rewrites)
    assert outcome(fmt, chunks, shortcut=True, rewrites=rewrites) == full


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("per_chunk", [1, 4])
@pytest.mark.parametrize("restamp", [False, True], ids=["tap", "restamp"])
def test_a_healthy_stream_is_mostly_taken_by_its_bytes(
    fmt: str, per_chunk: int, restamp: bool
) -> None:
    """The shortcut is not idle: after a delta or two, the deltas are accepted by the bytes."""
    events = stream(fmt, [f"token {i} of a long answer" for i in range(200)], False)
    chunks = group(events, per_chunk)
    checker = StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body))
    rewrites = restamping(fmt) if restamp else []
    pipeline = Pipeline(checker, rewrites)
    parsed = parses(checker)
    out = [pipeline.feed(c) for c in chunks]
    pipeline.close()
    assert checker.events == len(events) and parsed[0] < 20
    assert checker.findings.to_list() == []
    full = outcome(fmt, chunks, shortcut=False, rewrites=rewrites)
    assert outcome(fmt, chunks, shortcut=True, rewrites=rewrites) == full
    sent = b"".join(events)
    if restamp:
        sent = MODELS.sub(b'"' + ALIAS.encode() + b'"', sent)
    assert b"".join(out) == full[0] == sent
    # every event that names the model is restamped (every Chat and Gemini delta, Anthropic's
    # message_start, Responses' response objects); chunks with none pass as they are, not copied
    assert full[-1] == (sum(1 for ev in events if MODELS.search(ev)) if restamp else 0)
    for o, c in zip(out, chunks, strict=True):
        assert o is c or (restamp and MODELS.search(c))


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("line", [b"id: 7\n", b": keep-alive\n"], ids=["id", "comment"])
@pytest.mark.parametrize("restamp", [False, True], ids=["tap", "restamp"])
def test_a_field_line_held_before_a_delta_makes_it_no_event_of_the_template(
    fmt: str, line: bytes, restamp: bool
) -> None:
    """An event whose first line came in the chunk before (an id, a comment a gateway
    writes) and whose rest is a steady delta's bytes: the decoder holds the line, the rest is
    no steady delta on its own (the line is part of its event), and what follows is read as
    before. The client gets every byte in order, the findings are the full path's."""
    events = stream(fmt, [f"token {i} of a long answer" for i in range(40)], False)
    k = 20  # long after the template is learned
    chunks = [*events[:k], line, *group(events[k:], 2)]
    rewrites = restamping(fmt) if restamp else []
    full = outcome(fmt, chunks, shortcut=False, rewrites=rewrites)
    assert outcome(fmt, chunks, shortcut=True, rewrites=rewrites) == full
    sent = b"".join(chunks)
    if restamp:
        sent = MODELS.sub(b'"' + ALIAS.encode() + b'"', sent)
    assert full[0] == sent


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("per_chunk", [1, 4])
def test_a_delta_with_an_escape_keeps_the_template_without_certifying_it_again(
    fmt: str, per_chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real texts carry escapes (a line break, a quote): such a delta is read by the full
    path, and is known by its payload as the template's event with another text; the
    template stays, and the stream is certified about once, not after every escape."""
    texts = [f"word {i}" if i % 5 else f"line {i}\nnext" for i in range(200)]
    events = stream(fmt, texts, False)
    chunks = group(events, per_chunk)
    certified = 0
    after = Steady.after

    def counting(self: Steady, *args: Any, **kwargs: Any) -> None:
        nonlocal certified
        certified += args[3][0] is not steady_module.SAME
        after(self, *args, **kwargs)

    monkeypatch.setattr(Steady, "after", counting)
    shortcut = outcome(fmt, chunks, shortcut=True)
    assert shortcut[1].findings == [] and certified == 1
    assert shortcut == outcome(fmt, chunks, shortcut=False)


#: Texts of a real answer: line breaks, quotes (many: as many as an event has of its own), a
#: backslash, escaped non-ASCII (an SDK that writes ASCII only), a surrogate pair.
ESCAPED = [
    "line\nbreak",
    'say "hi"',
    "a\\b",
    "caf\u00e9 \u2028",
    "smile \U0001f642",
    "tab\t",
    '"' * 40,
]


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("per_chunk", [1, 4])
@pytest.mark.parametrize("restamp", [False, True], ids=["tap", "restamp"])
def test_deltas_with_escapes_are_taken_by_their_bytes(
    fmt: str, per_chunk: int, restamp: bool
) -> None:
    """Texts with escapes, every other delta: taken by their bytes (whole chunks by the
    patterns where the format's allow, else one by one), to the same end as the full path."""
    texts = [ESCAPED[i % len(ESCAPED)] if i % 2 else f"word {i}" for i in range(200)]
    events = stream(fmt, texts, True)  # \u escapes for the non-ASCII
    chunks = group(events, per_chunk)
    rewrites = restamping(fmt) if restamp else []
    checker, _, parsed, out = fed(fmt, chunks, rewrites)
    assert checker.events == len(events) and parsed[0] < 20
    assert checker.findings.to_list() == []
    full = outcome(fmt, chunks, shortcut=False, rewrites=rewrites)
    assert outcome(fmt, chunks, shortcut=True, rewrites=rewrites) == full and out == full[0]


@pytest.mark.parametrize("per_chunk", [1, 4])
@pytest.mark.parametrize("cut", [False, True], ids=["whole JSON", "cut JSON"])
def test_a_tool_input_streamed_in_fragments_is_taken_by_its_bytes(
    per_chunk: int, cut: bool
) -> None:
    """A coding agent writes a file through a tool: its input streams as hundreds of
    partial_json fragments (JSON with escapes), which the validator keeps to judge the input
    whole at the block's stop (ANT-12). They are taken by their bytes, kept as the full path
    keeps them, and the input judged the same; a text block after it is taken as ever."""
    content = "".join(f'line {i}: print("x")\n' for i in range(150))
    document = json.dumps({"file_path": "/tmp/x.py", "content": content})
    if cut:
        document = document[:-5]
    fragments = ["", *(document[i : i + 12] for i in range(0, len(document), 12))]
    words = [f"word {i}" for i in range(100)]
    body = ant.message(
        ant.text_block(0, "Writing it."),
        ant.tool_block(1, "Write", *fragments),
        ant.text_block(2, *words),  # its texts read only for being empty, the input's kept
        reason="tool_use",
    )
    events = [block + b"\n\n" for block in body.split(b"\n\n") if block]
    chunks = group(events, per_chunk)
    checker = StreamChecker(detect.by_name("anthropic"), request=dict(CALLS["anthropic"].body))
    pipeline = Pipeline(checker)
    parsed = parses(checker)
    for c in chunks:
        pipeline.feed(c)
    pipeline.close()
    assert len(fragments) > 100 and parsed[0] < 20
    shortcut = outcome("anthropic", chunks, shortcut=True)
    assert shortcut == outcome("anthropic", chunks, shortcut=False)
    assert ("ANT-12" in {f["rule"] for f in shortcut[1].findings}) is cut
    assert gated("anthropic", chunks, shortcut=True) == gated("anthropic", chunks, shortcut=False)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=24),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)


def _fragments(data: st.DataObject) -> list[str]:
    """A tool's input as a JSON document (whole, or cut short; escaped to ASCII or not), in
    fragments of any size."""
    document = json.dumps({"input": data.draw(_json)}, ensure_ascii=data.draw(st.booleans()))
    if data.draw(st.booleans()):
        document = document[: data.draw(st.integers(0, len(document)))]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(document)), max_size=40)))
    return [document[a:b] for a, b in zip([0, *cuts], [*cuts, len(document)], strict=True)]


@examples(200)
@given(st.data())
def test_tool_inputs_in_any_fragments_give_what_the_full_path_gives(data: st.DataObject) -> None:
    """Any tool input (whole, or cut short), in fragments of any size, between text blocks,
    sometimes broken, in any chunking: the shortcut changes no finding, count or byte in the
    tap, and no verdict in the relay."""
    fragments = _fragments(data)
    words = [f"word {i}" for i in range(data.draw(st.integers(1, 6)))]
    body = ant.message(
        ant.text_block(0, *words),
        ant.tool_block(1, "Write", "", *fragments),
        ant.text_block(2, *words),
        reason="tool_use",
    )
    events = [block + b"\n\n" for block in body.split(b"\n\n") if block]
    if data.draw(st.booleans()):
        events = data.draw(mutated(events))
    chunks = data.draw(chunked(events))
    assert outcome("anthropic", chunks, shortcut=True) == outcome(
        "anthropic", chunks, shortcut=False
    )
    assert gated("anthropic", chunks, shortcut=True) == gated("anthropic", chunks, shortcut=False)


def _chat_tool_call(
    fragments: list[str],
    *,
    texts: Sequence[str] = (),
    second: bool = False,
    thoughts: Sequence[str] = (),
    field: str = "reasoning_content",
) -> list[bytes]:
    """A Chat Completions stream whose answer calls a tool with its arguments in `fragments`
    (after `thoughts` of a reasoning model in `field`, then `texts` of content, if any;
    `second`: a second call after it), as OpenAI streams it: the first fragment with the
    call's id, type and name, then the arguments alone."""
    payloads: list[Any] = [chat.role()]
    payloads += [chat.one({"content": None, field: t}) for t in thoughts]
    payloads += [chat.text(t) for t in texts]
    payloads += [chat.tool_start(0, "call_JMW1whyEaYG438VE1OIflxA2", "Write", "")]
    payloads += [chat.tool_args(0, f) for f in fragments]
    if second:
        payloads += [chat.tool_start(1, "call_DNYTawLBoN8fj3KN6qU9N1Ou", "Read", '{"path"')]
        payloads += [chat.tool_args(1, f) for f in (': "/tmp/x.py"', "}")]
    payloads += [chat.finish("tool_calls"), chat.usage_chunk()]
    body = chat.sse(*payloads)
    return [block + b"\n\n" for block in body.split(b"\n\n") if block]


def chat_both_ways(chunks: list[bytes]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """A Chat stream's `chunks` with the shortcut and without, inspected and restamped, and
    through the relay: the same each way; the shortcut's outcomes, inspected and restamped."""
    fmt = "openai-chat"
    shortcut = outcome(fmt, chunks, shortcut=True)
    assert shortcut == outcome(fmt, chunks, shortcut=False)
    rewrites = restamping(fmt)
    restamped = outcome(fmt, chunks, shortcut=True, rewrites=rewrites)
    assert restamped == outcome(fmt, chunks, shortcut=False, rewrites=rewrites)
    assert gated(fmt, chunks, shortcut=True) == gated(fmt, chunks, shortcut=False)
    return shortcut, restamped


@pytest.mark.parametrize("per_chunk", [1, 4])
@pytest.mark.parametrize("cut", [False, True], ids=["whole JSON", "cut JSON"])
def test_a_chat_tool_calls_arguments_in_fragments_are_taken_by_their_bytes(
    per_chunk: int, cut: bool
) -> None:
    """Through Chat Completions a coding agent writes a file in a tool call whose arguments
    stream as hundreds of fragments (JSON, so escapes), which the validator keeps to judge them
    whole at the finish (OAI-12). They are taken by their bytes, kept as the full path keeps
    them, and the arguments judged the same; the tap, a restamp and the relay alike."""
    content = "".join(f'line {i}: print("x")\n' for i in range(150))
    document = json.dumps({"file_path": "/tmp/x.py", "content": content})
    if cut:
        document = document[:-5]
    fragments = [document[i : i + 12] for i in range(0, len(document), 12)]
    chunks = group(_chat_tool_call(fragments), per_chunk)
    _, _, parsed, _ = fed("openai-chat", chunks, [])
    assert len(fragments) > 100 and parsed[0] < 20
    shortcut, restamped = chat_both_ways(chunks)
    assert ("OAI-12" in {f["rule"] for f in shortcut[1].findings}) is cut
    assert restamped[-1] == len(fragments) + 4  # every chunk (its role, start, finish, usage too)


@pytest.mark.parametrize("per_chunk", [1, 4])
@pytest.mark.parametrize("cut", [False, True], ids=["whole JSON", "cut JSON"])
def test_a_chat_tool_calls_padded_arguments_are_kept_as_the_full_path_keeps_them(
    per_chunk: int, cut: bool
) -> None:
    """The same call's fragments padded as OpenAI pads them, one a chunk (each then read by
    its parts) or a few: the arguments are kept, not the pads, and judged the same."""
    content = 'print("x")\n' * 40
    # (the numbers: fragments of plain texts too)
    document = json.dumps({"file_path": "/tmp/x.py", "content": content, "n": list(range(150))})
    if cut:
        document = document[:-5]
    fragments = [document[i : i + 12] for i in range(0, len(document), 12)]
    events = []
    for i, ev in enumerate(_chat_tool_call(fragments)):
        if b'"arguments":' in ev:
            end = ev.rindex(b"}")
            ev = ev[:end] + b',"obfuscation":"p%dQ"' % i + ev[end:]
        events.append(ev)
    chunks = group(events, per_chunk)
    _, _, parsed, _ = fed("openai-chat", chunks, [])
    assert parsed[0] < 20
    shortcut, _ = chat_both_ways(chunks)
    assert ("OAI-12" in {f["rule"] for f in shortcut[1].findings}) is cut


@pytest.mark.parametrize("per_chunk", [1, 4])
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_a_chat_reasoning_models_thoughts_are_taken_by_their_bytes(
    per_chunk: int, field: str
) -> None:
    """A reasoning model behind Chat Completions (DeepSeek's and vLLM's `reasoning_content`,
    OpenRouter's `reasoning`) streams hundreds of thoughts before its answer; the validator
    reads them only for being empty. They are taken by their bytes, as the answer's deltas
    are, and give the full path's bytes, findings, restamp and relay verdicts."""
    thoughts = [f'step {i}: so "x" holds' for i in range(200)]
    events = _chat_tool_call(['{"a": 1}'], thoughts=thoughts, texts=["ok"] * 50, field=field)
    chunks = group(events, per_chunk)
    _, _, parsed, _ = fed("openai-chat", chunks, [])
    assert parsed[0] < 24
    chat_both_ways(chunks)


def test_the_chat_validator_names_the_fragments_the_last_chunk_added_to() -> None:
    """`steady_sink` is a tool call's arguments fragments right after a chunk added one to
    them, and nothing after any other chunk (a content delta's text is read only for being
    empty): the shortcut keeps the texts it takes where the full path keeps them, and only
    those."""
    fmt = "openai-chat"
    checker = StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body))
    validator = checker.validator
    assert validator is not None
    seen = []
    for ev in _chat_tool_call(['{"a"', ": 1}"], texts=["Hi"]):
        checker.feed(ev)
        seen.append(validator.steady_sink())
    # role, content, the call's start (its first fragment, ""), two fragments, finish, usage,
    # [DONE]
    assert seen[:2] == [None, None] and seen[-3:] == [None, None, None]
    assert seen[2] is seen[3] is seen[4] and seen[4] == ["", '{"a"', ": 1}"]


@examples(200)
@given(st.data())
def test_chat_tool_arguments_in_any_fragments_give_what_the_full_path_gives(
    data: st.DataObject,
) -> None:
    """Any arguments (whole, or cut short), in fragments of any size, after a reasoning
    model's thoughts and content or not, with a second call after them or not, sometimes
    broken, in any chunking: the shortcut changes no finding, count or byte in the tap or a
    restamp, and no verdict in the relay."""
    fragments = _fragments(data)
    texts = [f"word {i}" for i in range(data.draw(st.integers(0, 4)))]
    thoughts = data.draw(st.lists(st.sampled_from(UTF8 + ["so", " then"]), max_size=6))
    field = data.draw(st.sampled_from(["reasoning_content", "reasoning"]))
    events = _chat_tool_call(
        fragments, texts=texts, second=data.draw(st.booleans()), thoughts=thoughts, field=field
    )
    if data.draw(st.booleans()):
        events = data.draw(mutated(events))
    chat_both_ways(data.draw(chunked(events)))


#: Texts in another language than English, as an upstream writes them (raw UTF-8), some with
#: escapes.
UTF8 = ["Grüße", '東京 "引用"', "emoji 🙂", "Zeile\nneu", "naïve \\ path", "ascii"]
#: Texts with characters Python calls unprintable, which the decoder and orjson take as any
#: other and the SSE grammar reports none of (a no-break space, a soft hyphen, an emoji's
#: zero-width joiner, a byte order mark, a C1 control that is no line break, a private-use one):
#: the shortcut takes them too, not read one by one through `str.isprintable`.
UNPRINTABLE = [
    f"Grüße{c}"
    for c in ["\u00a0", "\u00ad", "\U0001f469\u200d\U0001f4bb", "\ufeff", "\u0080", "\ue000"]
]


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("per_chunk", [1, 4])
@pytest.mark.parametrize("restamp", [False, True], ids=["tap", "restamp"])
@pytest.mark.parametrize("kinds", [UTF8, UNPRINTABLE], ids=["utf8", "unprintable"])
def test_deltas_with_utf8_texts_are_taken_by_their_bytes(
    fmt: str, per_chunk: int, restamp: bool, kinds: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """UTF-8 texts (most of a stream in any language but English), with escapes or without,
    and with characters Python calls unprintable: taken by their bytes, whole chunks of them at
    once (restamped too), each text read as the full path would take it, to the same end."""
    texts = [kinds[i % len(kinds)] + f" {i}" for i in range(200)]
    events = stream(fmt, texts, False)
    chunks = group(events, per_chunk)
    rewrites = restamping(fmt) if restamp else []
    wholes = taken_whole(monkeypatch)
    checker, _, parsed, out = fed(fmt, chunks, rewrites)
    assert checker.events == len(events) and parsed[0] < 20
    assert sum(wholes) > 0.9 * len(events)
    assert checker.findings.to_list() == []
    full = outcome(fmt, chunks, shortcut=False, rewrites=rewrites)
    assert outcome(fmt, chunks, shortcut=True, rewrites=rewrites) == full and out == full[0]


#: Two deltas' texts, as bytes in the stream, that one chunk of UTF-8 texts may hold and that
#: the full path reads otherwise than a text of code or of any language: the shortcut must
#: leave such a chunk to it (or take it to the same end).
ODD_PAIRS = {
    "a character cut between them": (b"Gr\xc3", b"\xb6\xc3\x9fe"),
    "a raw NEL": (b"a\xc2\x85b", b"\xc3\xbc"),
    "a raw line separator": (b"\xe2\x80\xa8", b"\xc3\xbc"),
    "no-break space": (b"\xc2\xa0", b'\xc3\xbc \\"q\\"'),
    "a lone surrogate": (b"\xc3\xbc \\ud800", b"x"),
    "a low surrogate first": (b"\xc3\xbc \\udc00\\ud800", b"x"),
    "an unknown escape": (b"\xc3\xbc \\x41", b"y"),
    "bytes no UTF-8 has": (b"\xc3\xbc \xff", b"\xc0\xaf"),
    "a keep-alive between": (b"\xc3\xbc", b"\xc3\xa4"),
}


@pytest.mark.parametrize(
    ("fmt", "padded"), [(f, False) for f in STEADY] + [(f, True) for f in PADDED]
)
@pytest.mark.parametrize("odd", list(ODD_PAIRS))
@pytest.mark.parametrize("restamp", [False, True], ids=["tap", "restamp"])
def test_a_chunk_of_utf8_texts_the_full_path_reads_otherwise_goes_its_way(
    fmt: str, padded: bool, odd: str, restamp: bool
) -> None:
    """Chunks of four deltas whose texts are code and other languages (escapes, bytes from
    0x80 up), padded or not, one of them with two texts (or a keep-alive between two events)
    that are no such texts together: the same findings, counts and bytes as the full path's,
    in the tap and in the repairing pipeline (the relay's, an inspected flow's with repairs)."""
    n = 40
    texts = [f'Grüße {i}, "東京"\n' for i in range(n)]
    pads = [f"pad{i}" for i in range(n)] if padded else None
    events = stream(fmt, [f"ODD{i}" for i in range(n)], False, pads)
    first, second = ODD_PAIRS[odd]
    at = next(i for i, ev in enumerate(events) if b"ODD21" in ev)
    for i, ev in enumerate(events):
        for k in range(n - 1, -1, -1):
            value = json.dumps(texts[k], ensure_ascii=False)[1:-1].encode()
            if odd != "a keep-alive between":
                value = {20: first, 21: second}.get(k, value)
            ev = ev.replace(b"ODD%d" % k, value)
        events[i] = ev
    if odd == "a keep-alive between":
        events[at] = b": keep-alive\n\n" + events[at]
    start = (at - 1) % 4  # the two deltas in one chunk, its second and third events
    chunks = [b"".join(events[i : i + 4]) for i in range(start, len(events), 4)]
    chunks = [b"".join(events[:start]), *chunks] if start else chunks
    assert any(events[at - 1] + events[at] in c for c in chunks)
    rewrites = restamping(fmt) if restamp else []
    full = outcome(fmt, chunks, shortcut=False, rewrites=rewrites)
    assert outcome(fmt, chunks, shortcut=True, rewrites=rewrites) == full
    repaired = gated(fmt, chunks, shortcut=False, rewrites=rewrites)
    assert gated(fmt, chunks, shortcut=True, rewrites=rewrites) == repaired


@pytest.mark.parametrize(
    ("fmt", "where"), [(f, "text") for f in STEADY] + [(f, "pad") for f in PADDED]
)
def test_a_lone_surrogate_is_reported_and_the_stream_still_read_to_its_end(
    fmt: str, where: str
) -> None:
    """A delta whose text (or pad) escapes half a surrogate pair (a model's emoji cut at a token
    boundary): the full path reports it (PAY-4) and the shortcut learns no template of it; it
    once tried, failed to encode the text, and stopped validating the stream (TAP-1)."""
    n = 12
    texts = [f"word {i}" for i in range(n)]
    pads = [f"pad{i}" for i in range(n)] if where == "pad" else None
    for i in range(1, n, 3):  # the second delta of a run is the one certified
        if pads is not None:
            pads[i] = "\ud83d"
        else:
            texts[i] = "cut \ud83d"
    events = stream(fmt, texts, False, pads)
    assert any(b"\\ud83d" in ev for ev in events)
    for rewrites in ([], restamping(fmt)):
        for per_chunk in (1, 3):
            chunks = group(events, per_chunk)
            full = outcome(fmt, chunks, shortcut=False, rewrites=rewrites)
            assert outcome(fmt, chunks, shortcut=True, rewrites=rewrites) == full
            rules = {f["rule"] for f in full[1].findings}
            assert "PAY-4" in rules and "TAP-1" not in rules
            repaired = gated(fmt, chunks, shortcut=False, rewrites=rewrites)
            assert gated(fmt, chunks, shortcut=True, rewrites=rewrites) == repaired


def test_a_text_ends_at_its_first_quote_that_no_backslash_escapes() -> None:
    chunk = b'{"text":"a\\"b\\\\\\"c\\\\","x":1}'
    start = chunk.index(b'"a') + 1
    end = steady_module._text_end(chunk, start)
    assert chunk[start:end] == b'a\\"b\\\\\\"c\\\\' and chunk[end : end + 2] == b'",'
    assert steady_module._text_end(b'"cut \\"', 1) == -1
    assert steady_module._text_end(b'"x"', 1) == 2


@pytest.mark.parametrize("fmt", ["anthropic", "openai-chat"])
def test_a_delta_with_an_escape_and_another_field_is_no_event_of_the_template(fmt: str) -> None:
    """An escaped delta for another block (an index as long) is read by the full path and
    flagged there; the template does not take it for one of its own."""
    texts = [f"word {i}" if i % 5 else f"line {i}\nnext" for i in range(30)]
    events = stream(fmt, texts, False)
    at = next(i for i, ev in enumerate(events) if b"line 15" in ev)
    events[at] = events[at].replace(b'"index":0', b'"index":1', 1)
    shortcut = outcome(fmt, events, shortcut=True)
    assert shortcut == outcome(fmt, events, shortcut=False)
    assert shortcut[1].findings  # the stray index is reported, as the full path reports it


@pytest.mark.parametrize("restamp", [False, True], ids=["tap", "restamp"])
@pytest.mark.parametrize("word", ["word", "Grüße"])
@pytest.mark.parametrize("per_chunk", [1, 4])
def test_a_padded_delta_for_another_choice_is_no_event_of_the_template(
    restamp: bool, word: str, per_chunk: int
) -> None:
    """A chunk of one padded delta is read by its parts (`Steady._one_padded`), one of a few
    restamped by runs (`_padded_runs`), the bytes before each text the template's: a delta
    for another choice (an index as long) is read by the full path and flagged there,
    restamped or not."""
    pads = [f"pad{i}" for i in range(30)]
    events = stream("openai-chat", [f"{word} {i}" for i in range(30)], False, pads)
    at = next(i for i, ev in enumerate(events) if f"{word} 15".encode() in ev)
    events[at] = events[at].replace(b'"index":0', b'"index":1', 1)
    rewrites = restamping("openai-chat") if restamp else []
    chunks = group(events, per_chunk)
    shortcut = outcome("openai-chat", chunks, shortcut=True, rewrites=rewrites)
    assert shortcut == outcome("openai-chat", chunks, shortcut=False, rewrites=rewrites)
    assert shortcut[1].findings  # the stray index is reported, as the full path reports it


@pytest.mark.parametrize("per_chunk", [1, 3])
def test_an_escaped_delta_that_finishes_its_choice_ends_the_template(per_chunk: int) -> None:
    """A Chat delta with an escape that also carries its choice's finish_reason changes the
    validator's state without a finding of its own: the template goes, and the deltas after
    it are flagged as the full path flags them (output after the finish_reason)."""
    texts = [f"word {i}" if i % 5 else f"line {i}\nnext" for i in range(30)]
    events = stream("openai-chat", texts, False)
    at = next(i for i, ev in enumerate(events) if b"line 15" in ev)
    events[at] = events[at].replace(b'"finish_reason":null', b'"finish_reason":"stop"', 1)
    chunks = group(events, per_chunk)
    shortcut = outcome("openai-chat", chunks, shortcut=True)
    assert shortcut == outcome("openai-chat", chunks, shortcut=False)
    assert "OAI-13" in {f["rule"] for f in shortcut[1].findings}


@pytest.mark.parametrize("fmt", PADDED)
@pytest.mark.parametrize("per_chunk", [1, 4])
@pytest.mark.parametrize("texts", ["ascii", "utf-8", "code"])
@pytest.mark.parametrize("restamp", [False, True], ids=["tap", "restamp"])
def test_padded_deltas_are_taken_by_their_bytes_whatever_their_pads(
    fmt: str, per_chunk: int, texts: str, restamp: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI pads every delta with random characters of random length (``obfuscation``, on by
    default): a delta's template has the pad as a second hole after its text, and the deltas
    are still taken by their bytes, whole chunks of them at once (texts of code, with escapes,
    and UTF-8 texts too), to the same end as the full path; restamped (Chat's deltas name the
    model), each as the full path's splice makes it, its pad kept."""
    rng = random.Random(7)
    alnum = string.ascii_letters + string.digits
    pads = ["".join(rng.choices(alnum, k=rng.randint(1, 16))) for _ in range(200)]
    words = [f"token {i} of a long answer" for i in range(200)]
    if texts == "utf-8":
        words = [f"Grüße {i} 東京" for i in range(200)]
    elif texts == "code":
        words = [f'    x = "{i}"\n' for i in range(200)]
    events = stream(fmt, words, False, pads)
    assert all(b'"obfuscation":"' + p.encode() + b'"' in b"".join(events) for p in pads[:5])
    chunks = group(events, per_chunk)
    rewrites = restamping(fmt) if restamp else []
    wholes = taken_whole(monkeypatch)
    checker, pipeline, parsed, out = fed(fmt, chunks, rewrites)
    assert checker.events == len(events) and parsed[0] < 20
    assert checker.findings.to_list() == []
    assert pipeline.steady is not None and pipeline.steady.mid.endswith(b'"obfuscation":"')
    # whole chunks of them in one match (with a counter, one format)
    assert sum(wholes) > 0.9 * len(events)
    full = outcome(fmt, chunks, shortcut=False, rewrites=rewrites)
    assert outcome(fmt, chunks, shortcut=True, rewrites=rewrites) == full and out == full[0]
    sent = b"".join(events)
    if restamp:
        sent = MODELS.sub(b'"' + ALIAS.encode() + b'"', sent)
        assert pipeline.steady.rewrites == (fmt == "openai-chat")  # Chat's deltas name it
    assert out == sent


@pytest.mark.parametrize("per_chunk", [1, 3])
@pytest.mark.parametrize("word", ["token", "Grüße"], ids=["pattern", "one by one"])
def test_a_restamp_between_a_text_and_its_pad_is_made_there(per_chunk: int, word: str) -> None:
    """A Chat delta whose model comes after its choices, between the text and the pad: the
    restamp edits the bytes there, and the client gets each event as the full path's splice
    makes it."""
    pads = [f"pad{i}" for i in range(30)]
    events = stream("openai-chat", [f"{word} {i}" for i in range(30)], False, pads)
    moved = []
    for ev in events:
        model = b'"model":"gpt-4.1",'
        if model in ev and b'"obfuscation"' in ev:
            ev = ev.replace(model, b"").replace(
                b',"obfuscation"', b',"model":"gpt-4.1","obfuscation"'
            )
        moved.append(ev)
    chunks = [b"".join(moved[i : i + per_chunk]) for i in range(0, len(moved), per_chunk)]
    rewrites = restamping("openai-chat")
    checker = StreamChecker(detect.by_name("openai-chat"), request=dict(CALLS["openai-chat"].body))
    pipeline = Pipeline(checker, rewrites)
    out = b"".join(pipeline.feed(c) for c in chunks) + pipeline.close()
    steady = pipeline.steady
    assert steady is not None and steady.rewrites and steady.out_mid != steady.mid
    full = outcome("openai-chat", chunks, shortcut=False, rewrites=rewrites)
    assert outcome("openai-chat", chunks, shortcut=True, rewrites=rewrites) == full
    assert out == full[0] == MODELS.sub(b'"' + ALIAS.encode() + b'"', b"".join(moved))


@examples(300)
@given(st.data())
def test_padded_deltas_give_what_the_full_path_gives_in_the_tap_the_restamp_and_the_relay(
    data: st.DataObject,
) -> None:
    """Streams whose deltas are mostly steady and padded (the common OpenAI stream), some of
    them broken, in any chunking: the shortcut changes no finding, count, verdict or byte in an
    inspected flow, a restamped one and the relay's pipeline."""
    fmt = data.draw(st.sampled_from(PADDED))
    texts = data.draw(st.lists(st.one_of(_ascii, _ascii, _ascii, _texts), min_size=4, max_size=30))
    pads = data.draw(st.lists(st.one_of(_alnum, _alnum, _alnum, _pads), min_size=len(texts)))
    events = stream(fmt, texts, data.draw(st.booleans()), pads)
    if data.draw(st.booleans()):
        events = data.draw(mutated(events))
    chunks = data.draw(chunked(events))
    rewrites = restamping(fmt) if data.draw(st.booleans()) else []
    full = outcome(fmt, chunks, shortcut=False, rewrites=rewrites)
    assert outcome(fmt, chunks, shortcut=True, rewrites=rewrites) == full
    assert gated(fmt, chunks, shortcut=True) == gated(fmt, chunks, shortcut=False)


@pytest.mark.parametrize("fmt", PADDED)
@pytest.mark.parametrize("cut", [5, 60], ids=["in the prefix", "in the text"])
def test_a_padded_delta_the_chunking_cuts_is_read_whole_by_the_full_path(
    fmt: str, cut: int
) -> None:
    """A cut event is not held against a padded template (what follows its text is not the
    template's suffix): here one that ends right after its text, which would look like the
    end of such an event to a template without the pad, and is no JSON."""
    pads = ["x7Qp"] * 8
    events = stream(fmt, [f"token {i} of a long answer" for i in range(8)], False, pads)
    bad = events[4]
    end = bad.index(b'of a long answer"') + len(b'of a long answer"')
    short = bad[:end] + b"}\n\n"  # Chat: no JSON; Responses: a delta without the keys after
    at = bad.index(b"token") if cut == 60 else cut
    chunks = [b"".join(events[:4]), short[:at], short[at:], b"".join(events[5:])]
    shortcut = outcome(fmt, chunks, shortcut=True)
    assert shortcut == outcome(fmt, chunks, shortcut=False)
    if fmt == "openai-chat":  # the short event is flagged, as the full path flags it
        assert shortcut[1].findings


def test_a_padded_counted_delta_alone_in_its_chunk_is_taken_by_its_parts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Most upstreams write one event a chunk, and a repairing tap reads each at once: a
    padded Responses delta is taken by a few comparisons (its count, the bytes around its
    text and pad), not by the pattern and the format, and turned down as they would."""
    pads = [f"pad{i}" for i in range(12)]
    events = stream("openai-responses", [f"word {i}" for i in range(12)], False, pads)
    checker = StreamChecker(detect.by_name("openai-responses"), request=None)
    pipeline = Pipeline(checker)
    for ev in events[:8]:
        pipeline.feed(ev)
    pipeline.settle()  # the books of the deltas taken, kept when read
    steady = pipeline.steady
    assert steady is not None and steady.mid and steady.counter is not None
    validator = checker.validator
    assert validator is not None
    wanted = validator.next_sequence
    one = events[8]
    assert b'"sequence_number":%d,' % wanted in one
    runs = 0
    counted_run = Steady._counted_run

    def spy(self: Steady, *args: Any) -> Any:
        nonlocal runs
        runs += 1
        return counted_run(self, *args)

    monkeypatch.setattr(Steady, "_counted_run", spy)
    for why, event in {
        "another count": one.replace(b":%d," % wanted, b":%d," % (wanted + 1), 1),
        "a quote in the pad": one.replace(b'"obfuscation":"pad', b'"obfuscation":"p"d', 1),
        "no pad": re.sub(rb'"obfuscation":"[^"]*"', b'"obfuscation":""', one),
        "the bytes before the pad": one.replace(b'"logprobs":[]', b'"logprobs":{}', 1),
    }.items():
        assert steady.whole(checker, event) == 0, why
        assert validator.next_sequence == wanted, why
    assert steady.whole(checker, one) == 1 and validator.next_sequence == wanted + 1
    text = json.loads(one.split(b"data: ", 1)[1])["delta"]
    assert runs == 0 and validator.steady_sink()[-1] == text


@pytest.mark.parametrize("per_chunk", [1, 2])
@pytest.mark.parametrize("word", ["token", "Grüße"], ids=["pattern", "one by one"])
def test_the_bytes_between_a_text_and_its_pad_are_the_templates_or_the_full_path_reads_them(
    per_chunk: int, word: str
) -> None:
    """What stands between a padded delta's text and its pad is checked as the prefix and
    suffix are: a delta whose finish_reason there is another value of the same length is
    read by the full path, and flagged as it flags it."""
    pads = [f"p{i}" for i in range(12)]
    events = stream("openai-chat", [f"{word} {i} of a long answer" for i in range(12)], False, pads)
    assert events[6].count(b'"finish_reason":null') == 1
    events[6] = events[6].replace(b'"finish_reason":null', b'"finish_reason":"no"')
    chunks = group(events, per_chunk)
    shortcut = outcome("openai-chat", chunks, shortcut=True)
    assert shortcut == outcome("openai-chat", chunks, shortcut=False)
    assert "OAI-13" in {f["rule"] for f in shortcut[1].findings}


@pytest.mark.parametrize("fmt", PADDED)
@pytest.mark.parametrize("per_chunk", [1, 4])
def test_the_relay_takes_padded_deltas_by_their_bytes_after_commit(
    fmt: str, per_chunk: int
) -> None:
    rng = random.Random(3)
    pads = ["".join(rng.choices(string.ascii_letters, k=rng.randint(1, 12))) for _ in range(200)]
    events = stream(fmt, [f"token {i} of a long answer" for i in range(200)], False, pads)
    chunks = group(events, per_chunk)
    pipeline, _gate = repairing(fmt, [], shortcut=True)
    upstream = pipeline.upstream
    parsed = parses(upstream)
    for c in chunks:
        pipeline.feed(c)
    pipeline.close()
    assert upstream.events == len(events) and parsed[0] < 20
    assert gated(fmt, chunks, shortcut=True) == gated(fmt, chunks, shortcut=False)


@pytest.mark.parametrize("fmt", STEADY)
def test_a_run_of_deltas_is_certified_once_from_its_second_delta(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first delta of a run moves the validator's state (its text is the first seen), so
    certifying it would take two fingerprints for a miss: the shortcut certifies the second
    and only that one, and the deltas after it go by their bytes."""
    events = stream(fmt, [f"token {i} of a long answer" for i in range(50)], False)
    checker = StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body))
    pipeline = Pipeline(checker)
    assert pipeline.steady is not None
    certified: list[bytes] = []
    after = Steady.after

    def counting(self: Steady, checker: Any, ev: Any, *args: Any, **kwargs: Any) -> None:
        certified.append(ev.raw)
        after(self, checker, ev, *args, **kwargs)

    monkeypatch.setattr(Steady, "after", counting)
    for ev in events:
        pipeline.feed(ev)
    pipeline.close()
    deltas = [ev for ev in events if b"token " in ev]
    assert certified == [deltas[1]]
    assert pipeline.steady.misses == 0 and checker.findings.to_list() == []


class TakeOnly(Steady):
    """The shortcut without its whole-chunk fast paths: every chunk goes to `take`."""

    __slots__ = ()

    def whole(self, checker: StreamChecker, chunk: bytes, due: int | None = None) -> int:
        return 0

    def take_one(self, chunk: bytes) -> bytes | None:
        return None


def picture(pipeline: Pipeline) -> Any:
    """The state of a pipeline (checker, validator, decoder, shortcut) and its findings.
    `last_start` is `take`'s answer to its caller, the relay, which does not use `whole`;
    `taken_text` and `due_texts`, what a repairing pipeline reads of the last count;
    `others`, patterns made when first needed. The pipeline's `_lane` is its shortcut or
    None: whether it is set."""
    scratch = frozenset({"last_start", "whole_out", "taken_text", "due_texts", "others"})
    assert pipeline._lane in (None, pipeline.steady)
    return (
        attributes(pipeline, skip=frozenset({"steady", "_lane"})),
        pipeline._lane is None,
        attributes(pipeline.steady, skip=scratch),
        checker_picture(pipeline.checker),
    )


def checker_picture(checker: StreamChecker) -> Any:
    return (
        attributes(checker),
        attributes(checker.validator),
        attributes(checker.decoder),
        checker.findings.to_list(),
        dict(checker.findings.suppressed),
    )


@pytest.mark.parametrize("fmt", STEADY)
@examples(150)
@given(st.data())
def test_whole_chunks_of_steady_deltas_leave_what_take_leaves(
    fmt: str, data: st.DataObject
) -> None:
    """`Steady.whole` (a chunk of whole steady deltas in one match) is `take` made cheap: fed
    the same chunks, a pipeline with it and one without it send the same bytes and are in the
    same state after each chunk, findings included, for mutated streams in every chunking,
    with and without a restamp (whose rewritten chunks `whole` writes in one call too)."""
    # runs of printable ASCII deltas (what `whole` takes), with the others between them
    texts = data.draw(st.lists(st.one_of(_ascii, _ascii, _texts), min_size=4, max_size=24))
    events = stream(fmt, texts, data.draw(st.booleans()))
    chunks = data.draw(chunked(data.draw(mutated(events))))
    rewrites = restamping(fmt) if data.draw(st.booleans()) else []
    pipeline, twin = (
        Pipeline(
            StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body), autodetect=True),
            rewrites,
        )
        for _ in range(2)
    )
    assert twin.steady is not None
    twin.steady.__class__ = TakeOnly
    for chunk in chunks:
        assert pipeline.feed(chunk) == twin.feed(chunk)
        pipeline.settle()  # the books `whole` leaves to be kept when read
        assert picture(pipeline) == picture(twin)
        steady = pipeline.steady
        assert steady is not None and (steady.prefix is not None or steady.lone == 0)
    assert pipeline.close() == twin.close()
    assert picture(pipeline) == picture(twin)


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("per_chunk", [1, 2, 4])
@pytest.mark.parametrize("restamp", [False, True])
def test_chunks_of_whole_steady_deltas_take_the_fast_path(
    fmt: str, per_chunk: int, restamp: bool
) -> None:
    """`whole` is not idle: most chunks of a healthy stream are counted in one match, and pass
    on as the very object, or restamped in one call."""
    events = stream(fmt, [f"token {i} of a long answer" for i in range(200)], False)
    chunks = group(events, per_chunk)
    pipeline = Pipeline(
        StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body)),
        restamping(fmt) if restamp else [],
    )
    steady = pipeline.steady
    assert steady is not None
    taken = []
    original = steady.whole

    original_one = steady.take_one

    class Counting(Steady):
        __slots__ = ()

        def whole(self, checker: StreamChecker, chunk: bytes, due: int | None = None) -> int:
            n = original(checker, chunk, due)
            taken.append(n)
            return n

        def take_one(self, chunk: bytes) -> bytes | None:
            out = original_one(chunk)
            taken.append(out is not None)
            ones.append(out is not None)
            return out

    ones: list[bool] = []
    steady.__class__ = Counting
    out = [pipeline.feed(c) for c in chunks]
    assert sum(taken) > len(events) - 20 * per_chunk
    # one event a chunk, of a template without a counter: by its text, not a pattern
    assert (sum(ones) > len(events) - 20) == (per_chunk == 1 and fmt != "openai-responses")
    if restamp:
        alias = b'"' + ALIAS.encode() + b'"'
        assert out == [MODELS.sub(alias, c) for c in chunks]
        assert fmt == "openai-responses" or any(o != c for o, c in zip(out, chunks, strict=True))
    else:
        assert all(o is c for o, c in zip(out, chunks, strict=True))
    assert pipeline.checker.findings.to_list() == []


@pytest.mark.parametrize("fmt", PADDED)
@pytest.mark.parametrize("restamp", [False, True], ids=["tap", "restamp"])
def test_padded_deltas_one_a_chunk_are_taken_by_their_parts(fmt: str, restamp: bool) -> None:
    """Padded deltas one a chunk (as most upstreams write them): each taken by where its text
    and pad lie, passed on as the very chunk, or restamped as the full path's splice makes it
    (Chat's deltas name the model), its pad kept."""
    pads = ["p" * (1 + i % 9) + str(i) for i in range(100)]
    events = stream(fmt, [f"token {i} of a long answer" for i in range(100)], False, pads)
    rewrites = restamping(fmt) if restamp else []
    pipeline = Pipeline(StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body)), rewrites)
    taken = []
    for chunk in events:
        steady = pipeline.steady
        assert steady is not None
        uses, out = steady.misses == 0 and steady.used, pipeline.feed(chunk)
        taken.append((chunk, out, uses and steady.mid != b"" and pipeline._due > 0))
    out = b"".join(o for _, o, _ in taken) + pipeline.close()
    assert sum(t for _, _, t in taken) > len(events) - 20  # one at a time by their parts
    sent = b"".join(events)
    assert out == (MODELS.sub(b'"' + ALIAS.encode() + b'"', sent) if restamp else sent)
    if not (restamp and fmt == "openai-chat"):  # (Responses' deltas do not name the model)
        assert sum(o is c for c, o, _ in taken) > len(events) - 20  # the very chunks
    assert pipeline.checker.findings.to_list() == []
    full = outcome(fmt, events, shortcut=False, rewrites=rewrites)
    assert outcome(fmt, events, shortcut=True, rewrites=rewrites) == full and out == full[0]


@pytest.mark.parametrize("fmt", STEADY)
def test_bytes_that_do_not_end_as_the_template_ends_are_turned_down_by_their_end(
    fmt: str,
) -> None:
    """`may_end`: no template, nothing may end a steady event; once learned, every steady delta
    ends as the template ends, the stream's last events do not, and `whole` takes no chunk
    that ends otherwise."""
    events = long_stream(fmt, 60).events
    pipeline = Pipeline(StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body)))
    steady = pipeline.steady
    assert steady is not None and not steady.may_end(events[-1])
    for ev in events[:-6]:
        pipeline.feed(ev)
    assert steady.prefix is not None
    deltas = events[10:-6]
    assert all(steady.may_end(ev) for ev in deltas)
    assert not steady.may_end(events[-1])
    assert steady.whole(pipeline.checker, b"".join(deltas[:3]) + events[-1]) == 0


def test_pipelines_that_repair_hand_events_on_or_rewrite_blindly_have_no_shortcut() -> None:
    """A pipeline that repairs, hands events on or has a rewrite not known to be text-blind
    reads every event; a stream in an unknown format has no template to learn."""
    assert STEADY == ["anthropic", "gemini", "openai-chat", "openai-responses"]
    assert Steady.of(StreamChecker(None)) is None
    d = detect.by_name("anthropic")
    checker = StreamChecker(d)
    assert Pipeline(checker).steady is not None
    assert Pipeline(checker, [lambda payload: []]).steady is None  # it could read the text
    assert Pipeline(checker, [TextBlind(lambda payload: [])]).steady is not None
    assert Pipeline(checker, on_event=lambda ev, payload: None).steady is None
    assert Pipeline(checker, gate=Gate(d, checker.findings)).steady is None  # the gate judges
    up = StreamChecker(d)
    assert Pipeline(checker, upstream=up, repairer=Repairer(d, up.findings)).steady is None


def test_plain_text_is_only_text_a_json_string_carries_unescaped() -> None:
    assert plain_text("Grüße 東京 🙂 <b>".encode())
    for bad in (b'say "hi"', b"back\\slash", b"tab\there", b"\xff", "\u2028".encode(), b"\x7f"):
        assert not plain_text(bad)


def test_fingerprint_compares_state_by_value_and_ignores_reporting_references() -> None:
    class Block:
        __slots__ = ("index", "parts")

        def __init__(self, index: int) -> None:
            self.index, self.parts = index, ["a"]

    a, b = Block(0), Block(0)
    assert fingerprint({"open": [a], "seen": {"x"}}) == fingerprint({"open": [b], "seen": {"x"}})
    b.parts.append("b")
    assert fingerprint([a]) != fingerprint([b])
    assert fingerprint(print) == fingerprint(len)  # callables are references
    # Findings are references too, whatever they hold; a set is a set however it was made
    full = Findings()
    full.add("SSE-1", "x")
    assert fingerprint([Findings()]) == fingerprint([full])
    assert fingerprint({"b", "a"}) == fingerprint(frozenset({"a", "b"})) != fingerprint(["a", "b"])


def test_fingerprint_pictures_every_object_of_a_class_alike_the_first_as_the_next() -> None:
    """How an object is pictured is worked out once a class: the same answers for the first
    object of a class and the next, for the kinds of state a validator keeps."""

    class Counts(dict[str, int]):
        pass

    class Hook:
        def __call__(self) -> None:
            pass

    class Colour(Enum):
        RED = 1

    class Part:
        def __init__(self, text: str) -> None:
            self.text = text

    for make in (
        lambda: Counts(a=1),
        lambda: Hook(),
        lambda: Colour.RED,
        lambda: Part("t"),
        lambda: (1, ["x"]),
    ):
        first, second = fingerprint(make()), fingerprint(make())
        assert first == second
    assert fingerprint(Counts(a=1)) == fingerprint({"a": 1})
    assert fingerprint(Hook()) == "<ref>" and fingerprint(Colour.RED) is Colour.RED
    assert fingerprint(Part("t")) != fingerprint(Part("u"))


def test_an_object_reached_twice_is_pictured_by_its_value_once_and_a_cycle_is_too_deep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A validator's item kept by index and by id: its picture is the one an equal copy in each
    place gives, it follows the object's changes, and one pass takes it once. A cycle still
    ends in TooDeep (nothing is certified), as before pictures were kept."""

    class Item:
        __slots__ = ("id", "parts")

        def __init__(self) -> None:
            self.id, self.parts = "msg", ["a"]

    class State:
        def __init__(self, by_index: Item, by_id: Item) -> None:
            self.items = {0: by_index}
            self.ids = {"msg": by_id}

    shared = Item()
    twice, copies = State(shared, shared), State(Item(), Item())
    assert attributes(twice) == attributes(copies)
    shared.parts.append("b")
    assert attributes(twice) != attributes(copies)

    taken: list[int] = []
    whole = steady_module.attributes

    def counting(obj: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        taken.append(id(obj))
        return whole(obj, *args, **kwargs)

    monkeypatch.setattr(steady_module, "attributes", counting)
    counting(twice)
    assert taken.count(id(shared)) == 1
    monkeypatch.undo()

    loop = State(Item(), Item())
    loop.items[0].parts.append(loop)  # type: ignore[arg-type]
    with pytest.raises(TooDeep):
        attributes(loop)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_healthy_stream_with_any_texts_gives_the_same_with_and_without_the_shortcut(
    data: st.DataObject,
) -> None:
    fmt = data.draw(st.sampled_from(STEADY))
    mostly_plain = st.one_of(_plain, _plain, _plain, _texts)
    texts = data.draw(st.lists(mostly_plain, min_size=4, max_size=40))
    events = data.draw(any_stream(fmt, texts))
    chunks = data.draw(chunked(events))
    assert outcome(fmt, chunks, shortcut=True) == outcome(fmt, chunks, shortcut=False)


@given(
    st.one_of(
        st.binary(max_size=40),
        st.text(max_size=20).map(str.encode),
        # big texts, read another way: one odd byte or character among thousands
        st.tuples(st.integers(1900, 3000), st.binary(max_size=2), st.text(max_size=2)).map(
            lambda t: b"x" * t[0] + t[1] + t[2].encode() + b"y"
        ),
    )
)
def test_plain_text_reads_ascii_without_decoding_and_agrees_with_the_definition(
    text: bytes,
) -> None:
    """A plain text: valid UTF-8 without a quote or a backslash; printable, if ASCII; beyond
    ASCII, no C0 control or DEL and no line separator the SSE grammar reports on (characters
    Python calls unprintable otherwise, the decoder and orjson take as any other)."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        decoded = None
    expected = decoded is not None and b'"' not in text and b"\\" not in text
    if expected and decoded is not None:
        if decoded.isascii():
            expected = decoded.isprintable()
        else:
            expected = not any(
                c < " " or c in "\x7f\x85\u2028\u2029" for c in decoded
            )  # (C1 controls, no-break spaces, format characters: taken)
    assert plain_text(text) == expected


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("separator", ["\x85", "\u2028", "\u2029"])
@pytest.mark.parametrize("quoted", [False, True])
def test_a_line_separator_among_deltas_beyond_ascii_is_read_the_full_way(
    fmt: str, separator: str, quoted: bool
) -> None:
    """A chunk of steady deltas beyond ASCII is read in one match, its texts then looked at
    for the line separators the grammar reports (`_utf8_texts`): each of the three, in one
    delta among others, with escapes in the texts or without, is reported as the full path
    reports it, and the chunk passes as it came."""
    text = 'Grüße aus 東京 🙂 "hi"' if quoted else "Grüße aus 東京 🙂"
    texts = [f"{text} {i}" for i in range(12)]
    texts[6] = f"vor {separator} nach"
    events = stream(fmt, texts, False)
    chunks = group(events, 4)
    shortcut = outcome(fmt, chunks, shortcut=True)
    assert shortcut == outcome(fmt, chunks, shortcut=False)
    assert shortcut[0] == b"".join(events)
    assert "SSE-3a" in {f["rule"] for f in shortcut[1].findings}


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("piece", [997, 4096, 16384])
def test_big_deltas_the_chunking_cuts_are_taken_by_their_bytes(fmt: str, piece: int) -> None:
    """A delta that arrives in pieces is held by the shortcut (not copied into the decoder, not
    decoded, not parsed) and goes out whole once its last byte is in."""
    texts = [f"{i} " + "big delta text " * 2000 for i in range(12)]
    events = stream(fmt, texts, False)
    body = b"".join(events)
    chunks = [body[i : i + piece] for i in range(0, len(body), piece)]
    checker = StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body))
    pipeline = Pipeline(checker)
    parsed = parses(checker)
    out = [pipeline.feed(c) for c in chunks]
    out.append(pipeline.close())
    assert b"".join(out) == body and parsed[0] < len(events) - len(texts) + 3
    ends = {len(b"".join(events[: i + 1])) for i in range(len(events))}
    sent = 0
    for o in out:
        sent += len(o)
        assert not o or sent in ends  # whole events only
    assert outcome(fmt, chunks, shortcut=True) == outcome(fmt, chunks, shortcut=False)


#: Stands for an odd byte in a big text until the stream is built (JSON would escape it).
ODD = "@odd@"
#: What a big text may carry that the full path reads otherwise: raw bytes JSON forbids or a
#: sender escapes, characters the SSE grammar reports, a bad UTF-8 sequence.
ODD_BYTES = [
    b'"',
    b"\\",
    b"\\n",
    b"\n",
    b"\r",
    b"\n: keep-alive\n\n",
    b"\t",
    b"\x00",
    b"\x1f",
    b"\x7f",
    b"\xff",
    b"\xe6\x9d",
    "\u2028".encode(),
    "\u0085".encode(),
    "\u00a0".encode(),
    "é".encode(),
    "é\x7f".encode(),  # DEL beyond ASCII: no steady text holds it, whatever else it holds
    "東".encode(),
    "🙂".encode(),
]
_odd_bytes = st.sampled_from(ODD_BYTES)


@given(
    st.one_of(
        st.binary(max_size=40),
        st.tuples(st.text(max_size=20), st.booleans()).map(
            lambda t: json.dumps(t[0], ensure_ascii=t[1])[1:-1].encode()
        ),
        st.tuples(
            st.text(max_size=12),
            st.sampled_from([*ODD_BYTES, b"\\ud800", "\u2029".encode()]),
            st.text(max_size=12),
        ).map(
            lambda t: (
                json.dumps(t[0], ensure_ascii=False)[1:-1].encode()
                + t[1]
                + json.dumps(t[2] + "\n", ensure_ascii=False)[1:-1].encode()
            )
        ),
    )
)
def test_escaped_text_is_a_json_strings_bytes_the_grammar_reports_nothing_on(text: bytes) -> None:
    """A text with escapes the shortcut takes: the bytes of a non-empty JSON string (valid
    escapes, no lone surrogate, valid UTF-8) with no raw C0 control, DEL or line separator the
    SSE grammar reports (NEL, U+2028, U+2029)."""
    try:
        decoded = text.decode("utf-8")
        orjson.loads(b'"' + text + b'"')
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        expected = False
    else:
        expected = bool(text) and not any(c < " " or c in "\x7f\x85\u2028\u2029" for c in decoded)
    assert escaped_text(text) == expected


@st.composite
def big_text(draw: st.DrawFn, i: int) -> str:
    """A text of 2-6 KiB (the size `plain_span` reads in place), now and then with an odd byte
    somewhere (`ODD`), or non-ASCII throughout."""
    size = draw(st.integers(2048, 6000))
    body = (f"{i} " + "big delta text " * 400)[:size]
    if draw(st.integers(0, 4)) == 0:
        body = body.replace("delta", "Grüße")
    if draw(st.booleans()):
        at = draw(st.integers(0, len(body)))
        body = body[:at] + ODD + body[at:]
    return body


@st.composite
def cut_anywhere(draw: st.DrawFn, body: bytes) -> list[bytes]:
    """`body` in pieces: of one size, or cut at up to 24 places (big events in two or more)."""
    if draw(st.booleans()):
        size = draw(st.integers(200, 9000))
        return [body[i : i + size] for i in range(0, len(body), size)]
    cuts = draw(st.lists(st.integers(1, len(body) - 1), max_size=24))
    return streamcheck.split(body, cuts)


@examples(250)
@given(st.data())
def test_big_texts_read_in_place_give_what_the_full_path_gives(data: st.DataObject) -> None:
    """Big deltas, whole in a chunk or cut into pieces that are only searched for escapes until
    the event is complete (`plain_span` then reads the text where it is): the same bytes,
    findings and counts as the full path, whatever odd byte the text carries, for every
    chunking, with and without text-blind rewrites."""
    fmt = data.draw(st.sampled_from(STEADY))
    texts = [data.draw(big_text(i)) for i in range(data.draw(st.integers(3, 7)))]
    events = stream(fmt, texts, False)
    odd = data.draw(_odd_bytes)
    events = [ev.replace(ODD.encode(), odd) for ev in events]
    pieces = data.draw(mutated(events)) if data.draw(st.booleans()) else events
    chunks = data.draw(cut_anywhere(b"".join(pieces)))
    rewrites = restamping(fmt) if data.draw(st.booleans()) else []
    full = outcome(fmt, chunks, shortcut=False, rewrites=rewrites)
    assert outcome(fmt, chunks, shortcut=True, rewrites=rewrites) == full


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("odd", ODD_BYTES, ids=repr)
@pytest.mark.parametrize(
    ("at", "cuts"),
    [(100, [4500]), (8990, [4500]), (4500, [3000, 6000]), (100, [30]), (8990, [9000])],
    ids=["first-piece", "last-piece", "middle-piece", "prefix-cut", "suffix-cut"],
)
def test_an_odd_byte_in_a_cut_big_text_gives_what_the_full_path_gives(
    fmt: str, odd: bytes, at: int, cuts: list[int]
) -> None:
    """Every odd byte in the first, a middle or the last piece of a big text cut in big pieces
    (which are only searched for escapes until the event is complete)."""
    texts = [f"{i} " + "big delta text " * 600 for i in range(6)]
    texts[3] = texts[3][:at] + ODD + texts[3][at:]
    events = [ev.replace(ODD.encode(), odd) for ev in stream(fmt, texts, False)]
    i = next(i for i, ev in enumerate(events) if b"3 big delta text" in ev)
    chunks = [*events[:i], *streamcheck.split(events[i], cuts), *events[i + 1 :]]
    assert len(chunks) == len(events) + len(cuts)
    assert outcome(fmt, chunks, shortcut=True) == outcome(fmt, chunks, shortcut=False)


@pytest.mark.parametrize("odd", [b"", *ODD_BYTES], ids=repr)
@given(st.integers(2048, 5000), st.integers(0, 5000))
def test_plain_span_reads_a_quoted_text_in_place_as_plain_text_reads_it(
    odd: bytes, size: int, at: int
) -> None:
    text = b"x" * size
    text = text[:at] + odd + text[at:]
    raw = b'{"text":"' + text + b'"}'
    start = raw.index(b'"', 8) + 1
    end = len(raw) - 2
    assert plain_span(raw, start, end) == plain_text(text)
    if b"\\" not in text:  # the caller searched the pieces for escapes already
        assert plain_span(raw, start, end, escapes=False) == plain_text(text)


# --- the relay's pipeline: repairs and a commit gate ---------------------------------------------


def repairing(
    fmt: str, rewrites: Sequence[Any], *, shortcut: bool, collect: bool = True, lazy: bool = False
) -> tuple[Pipeline, Gate]:
    """A repairing pipeline (the upstream's checker, the repairs, the client's checker, a
    commit gate): the relay's (its gate collects what it lets out), or an inspected flow's
    with repairs on (its gate only judges; `lazy` books) and `rewrites`, its restamp."""
    dialect = detect.by_name(fmt)
    request = dict(CALLS[fmt].body)
    upstream = StreamChecker(dialect, request=request)
    client = StreamChecker(dialect, request=request)
    repairer = Repairer(dialect, upstream.findings, request=request)
    gate = Gate(dialect, client.findings, collect=collect)
    pipeline = Pipeline(
        client, rewrites, upstream=upstream, repairer=repairer, gate=gate, lazy=lazy
    )
    if not shortcut:
        pipeline.gated = None
    return pipeline, gate


def held(pipeline: Pipeline) -> tuple[Any, ...]:
    """What every part of a repairing pipeline holds."""
    upstream, client, repairer = pipeline.upstream, pipeline.checker, pipeline.repairer
    assert repairer is not None
    mender = repairer.mender
    return (
        StreamResult.of(upstream),
        StreamResult.of(client),
        upstream.findings.to_list(),
        client.findings.to_list(),
        repairer.repairs,
        (repairer.index, repairer.offset),
        getattr(mender, mender.COUNTED) if mender is not None and mender.COUNTED else None,
        pipeline.events,
        pipeline.rewritten,
        client.trailing,
    )


def gated(
    fmt: str,
    chunks: list[bytes],
    *,
    shortcut: bool,
    rewrites: Sequence[Any] = (),
    lazy: bool = True,
    where: bool = False,
) -> tuple[Any, ...]:
    """A stream through the relay's pipeline, or an inspected flow's with repairs on and a
    restamp (`repairing`): what the gate lets out and decides after each chunk, and what every
    part of it holds at the end; `where` a repair would default to after each chunk (lazy
    books place it when read: at the end only)."""
    pipeline, gate = repairing(fmt, rewrites, shortcut=shortcut, lazy=lazy)
    repairer = pipeline.repairer
    seen = []
    for chunk in [*chunks, None]:
        if chunk is None:
            pipeline.close()
            gate.close()
        else:
            pipeline.feed(chunk)
        at = _where(repairer._last) if where or chunk is None else None
        seen.append((gate.take(), gate.verdict, gate.outcome, gate.progress, gate.events, at))
    return (seen, *held(pipeline))


@st.composite
def broken(draw: st.DrawFn) -> tuple[str, list[bytes], list[Any]]:
    """A stream in any format, broken as the repairs mend (or not), in any chunking, and the
    restamp of its flow or none."""
    fmt = draw(st.sampled_from(FORMATS))
    texts = draw(st.lists(_texts, min_size=4, max_size=16))
    events = draw(any_stream(fmt, texts))
    chunks = draw(chunked(draw(mutated(events))))
    return fmt, chunks, restamping(fmt) if draw(st.booleans()) else []


@examples(300)
@given(broken())
def test_in_the_relay_the_shortcut_changes_no_verdict_no_finding_and_no_byte(
    case: tuple[str, list[bytes], list[Any]],
) -> None:
    """After commit, steady deltas pass the relay's pipeline by their bytes: the client gets
    the same bytes when the gate lets them out, the gate decides the same, and both checkers and
    the repairs hold the same, for broken streams the repairs mend (or not) in any chunking;
    restamped too (an inspected flow with repairs on and a model rule), each event as the full
    path rewrites it."""
    fmt, chunks, rewrites = case
    full = gated(fmt, chunks, shortcut=False, rewrites=rewrites, lazy=False, where=True)
    assert gated(fmt, chunks, shortcut=True, rewrites=rewrites, lazy=False, where=True) == full
    lazy = gated(fmt, chunks, shortcut=True, rewrites=rewrites)
    assert lazy == gated(fmt, chunks, shortcut=False, rewrites=rewrites)


def inspected(
    fmt: str, chunks: list[bytes], *, shortcut: bool, lazy: bool, rewrites: Sequence[Any]
) -> tuple[Any, ...]:
    """A stream through an inspected flow's pipeline with repairs on (its gate only judges):
    what the client gets of each chunk, and what every part holds once its books are kept."""
    pipeline, gate = repairing(fmt, rewrites, shortcut=shortcut, collect=False, lazy=lazy)
    sent = [pipeline.feed(c) for c in chunks]
    sent.append(pipeline.close())
    pipeline.settle()
    gate.close()
    assert pipeline.repairer is not None
    where = _where(pipeline.repairer._last)
    return (sent, (gate.verdict, gate.outcome, gate.progress, gate.events), where, *held(pipeline))


@examples(300)
@given(broken())
def test_an_inspected_flow_with_repairs_keeps_its_books_lazily_to_the_same_end(
    case: tuple[str, list[bytes], list[Any]],
) -> None:
    """With repairs on, an inspected flow's pipeline keeps the books of the steady deltas it
    takes after commit when they are read (`settle`), not per chunk: the client gets the same
    bytes of every chunk, and every part holds the same at the end, as keeping them at once
    and as the full way, for broken streams in any chunking, restamped or not."""
    fmt, chunks, rewrites = case
    lazy = inspected(fmt, chunks, shortcut=True, lazy=True, rewrites=rewrites)
    assert lazy == inspected(fmt, chunks, shortcut=True, lazy=False, rewrites=rewrites)
    assert lazy == inspected(fmt, chunks, shortcut=False, lazy=False, rewrites=rewrites)


def test_only_a_repairing_pipeline_with_a_gate_keeps_lazy_books() -> None:
    """An inspected flow's gate only judges: it is told at the books; the relay's lets out
    each chunk it judged: it is told at once (its progress runs the relay's timers)."""
    d = detect.by_name("anthropic")
    up, client = StreamChecker(d), StreamChecker(d)
    with pytest.raises(ValueError, match="lazy"):
        Pipeline(client, lazy=True)
    with pytest.raises(ValueError, match="lazy"):
        Pipeline(client, upstream=up, repairer=Repairer(d, up.findings), lazy=True)
    judging = Gate(d, client.findings, collect=False)
    pipeline = Pipeline(
        client, upstream=up, repairer=Repairer(d, up.findings), gate=judging, lazy=True
    )
    assert pipeline.lazy and not pipeline._tell
    relays = Gate(d, client.findings)
    pipeline = Pipeline(
        client, upstream=up, repairer=Repairer(d, up.findings), gate=relays, lazy=True
    )
    assert pipeline.lazy and pipeline._tell


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("per_chunk", [1, 4])
@pytest.mark.parametrize("restamps", [False, True], ids=["relay", "repairing restamp"])
def test_in_the_relay_a_healthy_stream_is_mostly_taken_by_its_bytes(
    fmt: str, per_chunk: int, restamps: bool
) -> None:
    """The relay's pipeline, or an inspected flow's with repairs on and a model rule: a healthy
    stream's deltas go by their bytes after commit (restamped as the full path would)."""
    events = stream(fmt, [f"token {i} of a long answer" for i in range(200)], False)
    chunks = group(events, per_chunk)
    rewrites = restamping(fmt) if restamps else []
    pipeline, gate = repairing(fmt, rewrites, shortcut=True, lazy=True)  # as the relay keeps it
    upstream, client = pipeline.upstream, pipeline.checker
    parsed = parses(upstream)
    out = b""
    alias = b'"%s"' % ALIAS.encode()
    for c in chunks:
        committed = gate.committed
        pipeline.feed(c)
        taken = gate.take()
        out += taken
        if committed:  # after commit, each chunk goes out as it is judged (the gate is told)
            assert taken == (MODELS.sub(alias, c) if restamps else c)
    pipeline.close()
    gate.close()
    out += gate.take()
    assert gate.verdict is Verdict.PASS and not client.findings and not upstream.findings
    if restamps:  # every model the upstream named is the client's
        assert MODELS.sub(alias, b"".join(events)) == out
        assert pipeline.rewritten == len(MODELS.findall(b"".join(events))) > 0
    else:
        assert out == b"".join(events)
    assert parsed[0] < 20 and gate.progress == gate.events - (fmt == "anthropic")  # the ping
    assert gated(fmt, chunks, shortcut=True, rewrites=rewrites) == gated(
        fmt, chunks, shortcut=False, rewrites=rewrites
    )


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("per_chunk", [1, 4])
@pytest.mark.parametrize("restamps", [False, True], ids=["repairs", "repairs and restamp"])
def test_an_inspected_flow_with_repairs_counts_its_chunks_of_steady_deltas_in_one_go(
    fmt: str, per_chunk: int, restamps: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With repairs on, an inspected flow's pipeline takes a healthy stream's chunks of steady
    deltas by their bytes after commit and keeps even the upstream checker's books of them
    when they are read: a run of them is counted once (`Pipeline._pay`), its counts (Responses'
    sequence numbers) wanted further on from chunk to chunk, and every part ends as with the
    books kept at once."""
    events = stream(fmt, [f"token {i} of a long answer" for i in range(200)], False)
    chunks = group(events, per_chunk)
    rewrites = restamping(fmt) if restamps else []
    pipeline, gate = repairing(fmt, rewrites, shortcut=True, collect=False, lazy=True)
    assert pipeline.gated is not None
    counted: list[int] = []  # the events of each call that counts steady deltas upstream
    count = Steady._count

    def counting(self: Steady, checker: StreamChecker, events: int, *args: Any) -> None:
        if checker is pipeline.upstream:
            counted.append(events)
        count(self, checker, events, *args)

    monkeypatch.setattr(Steady, "_count", counting)
    half = len(chunks) // 2
    out = b"".join(pipeline.feed(c) for c in chunks[:half])
    upstream_events = pipeline.upstream.events  # amid the run: not counted yet
    out += b"".join(pipeline.feed(c) for c in chunks[half:]) + pipeline.close()
    pipeline.settle()
    gate.close()
    assert gate.verdict is Verdict.PASS and not pipeline.upstream.findings
    if restamps:
        assert MODELS.sub(b'"%s"' % ALIAS.encode(), b"".join(events)) == out
    else:
        assert out == b"".join(events)
    # one count for the run (the events about the template's first delta, and the last
    # chunk's, are counted as `take` takes them)
    assert len(counted) <= 5 and max(counted) > 150
    assert upstream_events < 20
    monkeypatch.undo()
    assert inspected(fmt, chunks, shortcut=True, lazy=True, rewrites=rewrites) == inspected(
        fmt, chunks, shortcut=False, lazy=False, rewrites=rewrites
    )


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("per_chunk", [1, 3, 4])
def test_after_a_stream_cut_after_steady_deltas_the_repairs_stand_at_the_last_one(
    fmt: str, per_chunk: int
) -> None:
    """A stream that stops after a run of steady deltas taken whole (their books kept later):
    the repairs place what they note next at the last delta, the last chunk's last event, as
    where the books are kept at once and where every event goes the full way."""
    events = stream(fmt, [f"token {i} of a long answer" for i in range(40)], False)
    last = next(i for i, ev in enumerate(events) if b"token 39" in ev)  # the last delta
    chunks = group(events[: last + 1], per_chunk)
    lazy = inspected(fmt, chunks, shortcut=True, lazy=True, rewrites=[])
    assert lazy == inspected(fmt, chunks, shortcut=True, lazy=False, rewrites=[])
    assert lazy == inspected(fmt, chunks, shortcut=False, lazy=False, rewrites=[])
    assert lazy[2] is not None  # (where a repair defaults to: the last delta)


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("per_chunk", [1, 3, 4])
@pytest.mark.parametrize("restamp", [False, True], ids=["tap", "restamp"])
def test_a_stream_that_ends_after_chunks_of_steady_deltas_ends_as_the_full_path_ends_it(
    fmt: str, per_chunk: int, restamp: bool
) -> None:
    """Without repairs, the checker's books of the chunks of steady deltas taken whole are kept
    when read too: a stream that ends right after them (none of its closing events) is
    counted, placed and reported at its end as the full path would, with no `settle` first."""
    events = stream(fmt, [f"token {i} of a long answer" for i in range(40)], False)
    last = next(i for i, ev in enumerate(events) if b"token 39" in ev)  # the last delta
    chunks = group(events[: last + 1], per_chunk)
    rewrites = restamping(fmt) if restamp else []
    shortcut = outcome(fmt, chunks, shortcut=True, rewrites=rewrites)
    assert shortcut == outcome(fmt, chunks, shortcut=False, rewrites=rewrites)
    assert shortcut[1].findings  # cut short: reported


#: The formats whose first event, again, says the stream starts over (the gate fails).
RESTARTING = ("anthropic", "openai-responses")


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("per_chunk", [1, 4])
def test_steady_deltas_after_a_restart_or_a_cut_line_go_the_full_way_with_lazy_books(
    fmt: str, per_chunk: int
) -> None:
    """Deltas are taken whole only after commit and where the decoder holds nothing: after a
    gateway's retry starts the stream over (the gate fails after commit) and after a chunk that
    ends inside a block (a comment line, its blank line in no chunk yet), they go the full way,
    as where the books are kept at once and where every event goes the full way."""
    events = stream(fmt, [f"token {i} of a long answer" for i in range(60)], False)
    at = next(i for i, ev in enumerate(events) if b"token 30" in ev)
    retry = [ev.replace(b"mock", b"moCk") for ev in events]
    chunks = group([*events[:at], *retry], per_chunk)
    cut = [*group(events[:at], per_chunk), events[at] + b": keep-alive\n", *events[at + 1 :]]
    for case in (chunks, cut):
        lazy = inspected(fmt, case, shortcut=True, lazy=True, rewrites=[])
        assert lazy == inspected(fmt, case, shortcut=True, lazy=False, rewrites=[])
        assert lazy == inspected(fmt, case, shortcut=False, lazy=False, rewrites=[])
    pipeline, gate = repairing(fmt, [], shortcut=True, collect=False, lazy=True)
    for c in chunks:
        pipeline.feed(c)
    # a second message_start, response.created: the stream starts over (Chat's and Gemini's
    # retries are reported, and the gate lets them pass)
    assert gate.verdict is (Verdict.FAIL if fmt in RESTARTING else Verdict.PASS)


def break_shortcut_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next chunk the shortcut takes whole (`Steady.whole`, or `Steady.take_one` for one
    event) meets a bug."""
    originals = {name: getattr(Steady, name) for name in ("whole", "take_one")}

    def broken(*args: Any) -> Any:
        for name, original in originals.items():  # once
            monkeypatch.setattr(Steady, name, original)
        raise RuntimeError("a bug")

    for name in originals:
        monkeypatch.setattr(Steady, name, broken)


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("per_chunk", [1, 2])
def test_after_an_internal_error_amid_steady_deltas_nothing_more_is_counted(
    fmt: str, per_chunk: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug while steady deltas are taken whole (their books kept later), one a chunk or more:
    the stream goes on as it came, the flow reports the internal error, and what came after it
    is not counted."""
    events = stream(fmt, [f"token {i} of a long answer" for i in range(60)], False)
    at = next(i for i, ev in enumerate(events) if b"token 30" in ev)
    pipeline, gate = repairing(fmt, [], shortcut=True, collect=False, lazy=True)
    out = b"".join(pipeline.feed(ev) for ev in events[:at])
    assert pipeline._quick
    counted = pipeline.upstream.events + pipeline._due
    break_shortcut_once(monkeypatch)
    out += b"".join(pipeline.feed(c) for c in group(events[at:], per_chunk)) + pipeline.close()
    pipeline.settle()
    assert out == b"".join(events)
    assert "TAP-1" in [f.rule for f in pipeline.upstream.findings.items]
    assert pipeline.upstream.events == counted
    assert "mitmllm pipeline failed" in caplog.text


@pytest.mark.parametrize("fmt", STEADY)
@pytest.mark.parametrize("where", ["shortcut", "full path"])
@pytest.mark.parametrize("restamp", [False, True], ids=["tap", "restamp"])
@pytest.mark.parametrize("per_chunk", [1, 2])
def test_after_an_internal_error_without_repairs_the_rest_goes_on_as_it_came(
    fmt: str,
    where: str,
    restamp: bool,
    per_chunk: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without repairs, a bug while steady deltas are taken whole (one a chunk or more), or
    while the full path reads an event among them (a keep-alive): the flow reports the
    internal error, and every chunk from there on goes on as it came, none taken by the
    shortcut (nothing restamped, nothing more counted)."""
    events = stream(fmt, [f"token {i} of a long answer" for i in range(60)], False)
    at = next(i for i, ev in enumerate(events) if b"token 30" in ev)
    checker = StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body))
    pipeline = Pipeline(checker, restamping(fmt) if restamp else [])
    for ev in events[:at]:
        pipeline.feed(ev)
    assert pipeline._lane is not None
    rest = group(events[at:], per_chunk)
    if where == "shortcut":
        break_shortcut_once(monkeypatch)
    else:
        rest = [b": keep-alive\n\n", *rest]
        original, owner, name = StreamChecker.parse, StreamChecker, "parse"

        def broken(*args: Any) -> Any:
            monkeypatch.setattr(owner, name, original)  # once
            raise RuntimeError("a bug")

        monkeypatch.setattr(owner, name, broken)
    out = pipeline.feed(rest[0])
    counted = pipeline.events
    out += b"".join(pipeline.feed(chunk) for chunk in rest[1:]) + pipeline.close()
    assert out == b"".join(rest)
    assert pipeline.failed and pipeline.events == counted
    assert "TAP-1" in checker.findings.rules()
    assert "mitmllm pipeline failed" in caplog.text


#: The formats whose deltas carry an id of their response (Responses: of its item), and the
#: mock's id in them.
IDS = {"openai-chat": b"chatcmpl-mock", "gemini": b"mock-mock", "openai-responses": b"msg_mock"}


def _compiled() -> int:
    return sum(
        f.cache_info().misses
        for f in (
            steady_module._tiling,
            steady_module._counted,
            steady_module._fields,
            steady_module._counted_texts,
        )
    )


@pytest.mark.parametrize("fmt", sorted(IDS))
@pytest.mark.parametrize("restamp", [False, True], ids=["tap", "restamp"])
def test_streams_whose_deltas_carry_their_own_id_compile_no_template_of_their_own(
    fmt: str, restamp: bool
) -> None:
    """Chat's and Gemini's deltas carry their response's id, Responses' their item's, so each
    stream learns a template of its own. Its events are matched by expressions held by the
    template's lengths, one set for all the streams: no expression is compiled for a stream's
    own bytes (about a microsecond a byte), rewritten or not, counted or not."""
    events = long_stream(fmt, 60).events
    tiles = set()
    compiled = []
    for n in range(3):
        own = b"%04d" % n  # as long as the mock's "mock"
        chunks = [
            b"".join(events[i : i + 4]).replace(b"mock", own) for i in range(0, len(events), 4)
        ]
        checker = StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body))
        pipeline = Pipeline(checker, restamping(fmt) if restamp else ())
        steady = pipeline.steady
        assert steady is not None
        out = b"".join(pipeline.feed(c) for c in chunks[:6])
        assert steady.prefix is not None and steady.used
        assert IDS[fmt].replace(b"mock", own) in steady.prefix + steady.suffix
        tiles.add(steady.tiles)
        out += b"".join(pipeline.feed(c) for c in chunks[6:]) + pipeline.close()
        assert StreamResult.of(checker).findings == []
        assert restamp or out == b"".join(chunks)
        compiled.append(_compiled())
    assert len(tiles) == 1 and compiled[0] == compiled[1] == compiled[2]


@pytest.mark.parametrize("fmt", sorted(IDS))
@pytest.mark.parametrize("restamp", [False, True], ids=["tap", "restamp"])
def test_an_event_with_another_id_as_long_ends_the_run_of_steady_deltas(
    fmt: str, restamp: bool
) -> None:
    """The expression takes any bytes of the template's lengths for the first event's prefix
    and suffix and wants them again in every later event: the first event is checked against
    the template, an event with another id of the same length ends the run, as it ends the
    template's run in the full path."""
    events = long_stream(fmt, 30).events
    checker = StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body))
    pipeline = Pipeline(checker, restamping(fmt) if restamp else ())
    for ev in events[:8]:
        pipeline.feed(ev)
    pipeline.settle()  # the books of the deltas taken, kept when read
    steady = pipeline.steady
    assert steady is not None and steady.prefix is not None and steady.tiles is not None
    deltas = list(events[8:20])
    other = [ev.replace(IDS[fmt], IDS[fmt][:-1] + b"K") for ev in deltas]
    assert steady.leading(checker, b"".join(deltas)) == len(b"".join(deltas))
    assert steady.leading(checker, b"".join(other)) == 0  # its first event is not the template's
    mixed = b"".join(deltas[:5] + other[5:])
    assert steady.leading(checker, mixed) == len(b"".join(deltas[:5]))
    assert steady.whole(checker, b"".join(other)) == 0 and steady.whole(checker, mixed) == 0
    sent: list[bytes] = []
    assert steady.take(checker, mixed, sent, hold=False) == len(b"".join(deltas[:5]))
    assert steady.last_start == len(b"".join(deltas[:4]))
    # a chunk of one event, checked by its parts: the other id ends the run there too
    assert steady.whole(checker, other[5]) == 0
    assert steady.whole(checker, deltas[5]) == 1


@pytest.mark.parametrize("fmt", STEADY)
def test_a_stream_cut_inside_a_delta_after_lazy_books_closes_as_with_books_kept(fmt: str) -> None:
    """The books are kept before the end of the stream reads them: the cut final delta is
    placed, checked and reported where the events before it put it."""
    events = stream(fmt, [f"token {i} of a long answer" for i in range(40)], False)
    last = max(i for i, ev in enumerate(events) if b"token 39" in ev)
    body = b"".join(events[:last]) + events[last][: len(events[last]) // 2]
    chunks = [body[i : i + 300] for i in range(0, len(body), 300)]
    lazy = inspected(fmt, chunks, shortcut=True, lazy=True, rewrites=[])
    assert lazy == inspected(fmt, chunks, shortcut=True, lazy=False, rewrites=[])
    assert lazy == inspected(fmt, chunks, shortcut=False, lazy=False, rewrites=[])
    assert lazy[-1]  # the client got the cut delta as it came


def _count_last(ev: bytes) -> bytes:
    """A Responses event with its sequence number last, as some upstreams order the keys."""
    m = re.search(rb'"sequence_number":(\d+),', ev)
    if m is None:
        return ev
    ev = ev[: m.start()] + ev[m.end() :]
    end = ev.rindex(b"}")
    return ev[:end] + b',"sequence_number":' + m[1] + ev[end:]


@pytest.mark.parametrize("item", [b"msg_mock", b"msg_%d%s%%"], ids=["plain", "percent"])
@pytest.mark.parametrize("last", [False, True], ids=["count-first", "count-last"])
def test_counted_deltas_are_taken_when_their_counts_and_bytes_are_the_ones_wanted(
    item: bytes, last: bool
) -> None:
    """Responses' counted deltas in one chunk: the texts found by one pattern, the events
    they make with the counts wanted formatted in one go and compared with the chunk; a chunk
    of one delta by its parts, where its count puts them. Taken only when every count is the
    one wanted and every byte around the texts the template's (a ``%`` in the template is a
    byte like any other), whether the count comes before the text or after it; a chunk with
    another event among the deltas, even one as big as a done event's whole text, is turned
    down, as `take` would turn it down, and `leading` still finds the run before it."""
    fmt = "openai-responses"
    events = [ev.replace(b"msg_mock", item) for ev in long_stream(fmt, 40).events]
    if last:
        events = [_count_last(ev) for ev in events]
    checker = StreamChecker(detect.by_name(fmt), request=dict(CALLS[fmt].body))
    pipeline = Pipeline(checker)
    for ev in events[:8]:
        pipeline.feed(ev)
    pipeline.settle()  # the books of the deltas taken, kept when read
    steady = pipeline.steady
    assert steady is not None and steady.prefix is not None and steady.counter is not None
    assert steady.counter[0] is not last  # the count in the template's prefix, or its suffix
    assert item in steady.prefix
    deltas = events[8:20]
    assert all(b"output_text.delta" in ev for ev in deltas)

    def count_of(ev: bytes) -> int:
        m = re.search(rb'"sequence_number":(\d+)', ev)
        assert m is not None
        return int(m[1])

    def renumbered(ev: bytes, n: int) -> bytes:
        return ev.replace(b'"sequence_number":%d' % count_of(ev), b'"sequence_number":%d' % n)

    def other_byte(ev: bytes) -> bytes:
        return ev.replace(b'"output_index":0', b'"output_index":1')

    wanted = count_of(deltas[0])
    validator = checker.validator
    assert validator.next_sequence == wanted
    big = b"event: response.output_text.delta.other\ndata: " + b"x" * 60_000 + b"\n\n"
    zero = deltas[3].replace(b'"sequence_number":', b'"sequence_number":0')
    # each chunk with the events before the first one `take` would turn down
    turned_down = {
        "a count skipped": (
            deltas[:5] + [renumbered(ev, count_of(ev) + 1) for ev in deltas[5:]],
            5,
        ),
        "a count repeated": (
            deltas[:6] + [renumbered(deltas[6], count_of(deltas[5]))] + deltas[7:],
            6,
        ),
        "a count with a leading zero": (deltas[:3] + [zero] + deltas[4:], 3),
        "another event among them": (deltas[:4] + [big] + deltas[4:], 4),
        "a byte of the template changed": (deltas[:7] + [other_byte(deltas[7])] + deltas[8:], 7),
    }
    for why, (chunk, good) in turned_down.items():
        data = b"".join(chunk)
        assert steady.whole(checker, data) == 0, why
        assert validator.next_sequence == wanted, why  # nothing was counted
        assert steady.leading(checker, data) == len(b"".join(chunk[:good])), why
    # A done event (the whole text) after the deltas ends as they end: turned down by the
    # length of the last event, without a search through it for texts
    text = re.search(rb'"delta":"([^"]*)"', deltas[-1])
    assert text is not None
    done = (
        deltas[-1]
        .replace(b"output_text.delta", b"output_text.done")
        .replace(text[0], b'"text":"' + b"x" * 60_000 + b'"')
    )
    assert steady.may_end(done)

    class Spy:
        def __init__(self, pattern: re.Pattern[bytes]) -> None:
            self.pattern, self.calls = pattern, 0

        def findall(self, *args: Any) -> list[bytes]:
            self.calls += 1
            return self.pattern.findall(*args)

    spy = Spy(steady.texts)  # type: ignore[arg-type]
    steady.texts = spy  # type: ignore[assignment]
    try:
        assert steady.whole(checker, b"".join([*deltas, done])) == 0 and spy.calls == 0
    finally:
        steady.texts = spy.pattern
    assert steady.leading(checker, b"".join([*deltas, done])) == len(b"".join(deltas))
    one = deltas[0]
    for why, event in {
        "the next count": renumbered(one, wanted + 1),
        "the last count": renumbered(one, wanted - 1),
        "a count with a leading zero": one.replace(b'"sequence_number":', b'"sequence_number":0'),
        "a byte of the template changed": other_byte(one),
        "a quote in the text": one.replace(b'"delta":"', b'"delta":"x"', 1),
        "an escape that is none": one.replace(b'"delta":"', b'"delta":"\\x', 1),
        "half a surrogate pair": one.replace(b'"delta":"', b'"delta":"\\ud83d', 1),
    }.items():
        assert steady.whole(checker, event) == 0, why
        assert validator.next_sequence == wanted, why
    # an escaped quote is a text's (its JSON string's) own
    escaped = one.replace(b'"delta":"', b'"delta":"\\"', 1)
    assert steady.whole(checker, escaped) == 1 and validator.steady_sink()[-1].startswith('"')
    validator.next_sequence -= 1
    validator.steady_sink().pop()
    assert steady.whole(checker, one) == 1 and steady.last_start == 0
    assert validator.next_sequence == wanted + 1
    data = b"".join(deltas[1:])
    assert steady.whole(checker, data) == len(deltas) - 1
    assert validator.next_sequence == wanted + len(deltas)
    assert steady.last_start == len(b"".join(deltas[1:-1]))
    rest = b"".join(pipeline.feed(ev) for ev in events[20:]) + pipeline.close()
    assert rest == b"".join(events[20:])
    assert StreamResult.of(checker).findings == []
