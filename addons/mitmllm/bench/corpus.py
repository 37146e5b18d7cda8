"""What the benchmark feeds: the same bytes for every configuration it compares.

* Codec corpora: the mock upstream's `long` stream in each wire format, built by its scenario
  builder (`plan_request` with ``x-mock-events``) and sized to a byte budget. The mock writes one
  event per step, so the steps are the one-event-per-chunk feed; `Corpus.chunks` re-cuts them.
* Big events: the mock's `big-event` stream (Anthropic) with one text delta of N bytes, cut in
  64 KiB pieces as a socket would deliver it.
* The proxy stream: a healthy Anthropic stream whose text deltas are 150-200 bytes each, as
  Claude sends them; the benchmark's upstream writes it one event (or a few) per HTTP chunk.
  Its stamped variant starts every delta's text with `STAMP` and room for the upstream's clock,
  which a paced upstream fills in as it writes the event (per-event latency); its padded one
  pads each delta as OpenAI does, its mixed one cuts the texts from code and prose in other
  languages than English (escapes, UTF-8), as a coding agent gets them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import HEADER_BIG_BYTES
from mitmllm.mock.scenarios import HEADER_CHUNK_SIZE
from mitmllm.mock.scenarios import HEADER_EVENTS
from mitmllm.mock.scenarios import HEADER_SCENARIO
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import OPENAI_RESPONSES
from mitmllm.mock.scenarios import plan_request
from mitmllm.protocol import sse

KiB = 1024
MiB = 1024 * 1024

#: The model the pipeline benchmark restamps every response to.
RESTAMP_MODEL = "bench-restamped-model"


@dataclass(frozen=True, slots=True)
class Call:
    """One streaming request in a wire format, as a client sends it."""

    path: str
    query: Mapping[str, str]
    body: Mapping[str, Any]

    def encoded(self) -> bytes:
        return orjson.dumps(self.body)


_PROMPT = "Write a long story about a proxy that reads every event."

CALLS: dict[str, Call] = {
    ANTHROPIC: Call(
        "/v1/messages",
        {},
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 8192,
            "stream": True,
            "messages": [{"role": "user", "content": _PROMPT}],
        },
    ),
    OPENAI_CHAT: Call(
        "/v1/chat/completions",
        {},
        {
            "model": "gpt-4.1",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": _PROMPT}],
        },
    ),
    OPENAI_RESPONSES: Call(
        "/v1/responses",
        {},
        {"model": "gpt-5", "stream": True, "input": _PROMPT},
    ),
    GEMINI: Call(
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        {"alt": "sse"},
        {"contents": [{"role": "user", "parts": [{"text": _PROMPT}]}]},
    ),
}

FORMATS: tuple[str, ...] = tuple(CALLS)
#: The formats whose deltas OpenAI pads (``obfuscation``), and how a request asks for pads.
PADDED_FORMATS: tuple[str, ...] = (OPENAI_CHAT, OPENAI_RESPONSES)
PADDED: dict[str, Any] = {"include_obfuscation": True}


@dataclass(frozen=True, slots=True)
class Corpus:
    """One format's stream, one element of `events` per event as the upstream writes it."""

    fmt: str
    request: Mapping[str, Any]
    events: tuple[bytes, ...]

    @property
    def body(self) -> bytes:
        return b"".join(self.events)

    @property
    def size(self) -> int:
        return sum(len(e) for e in self.events)

    def chunks(self, size: int | None) -> list[bytes]:
        """The stream as a socket would deliver it: one event per chunk (`size` None), or
        `size`-byte pieces cut across event boundaries."""
        if size is None:
            return list(self.events)
        body = self.body
        return [body[i : i + size] for i in range(0, len(body), size)]


def long_stream(fmt: str, events: int, *, padded: bool = False) -> Corpus:
    """The mock's `long` scenario in `fmt` with `events` text deltas; `padded`: each delta
    with an ``obfuscation`` pad, as OpenAI sends them by default (Chat and Responses)."""
    call = CALLS[fmt]
    headers = {HEADER_SCENARIO: "long", HEADER_EVENTS: str(events)}
    body = call.body
    if padded:
        body = {**body, "stream_options": {**body.get("stream_options", {}), **PADDED}}
    plan = plan_request("POST", call.path, call.query, headers, orjson.dumps(body))
    if plan.status != 200 or not plan.stream:
        raise RuntimeError(f"mock upstream answered {plan.status} for a long {fmt} stream")
    return Corpus(fmt, body, tuple(s.data for s in plan.steps if s.data))


def codec_corpus(fmt: str, budget: int) -> Corpus:
    """The `long` stream in `fmt`, with as many text deltas as fit in about `budget` bytes."""
    small, large = long_stream(fmt, 64).size, long_stream(fmt, 128).size
    per_event = max(1, (large - small) // 64)
    fixed = small - 64 * per_event
    return long_stream(fmt, max(1, (budget - fixed) // per_event))


def big_event_chunks(size: int, piece: int = 64 * KiB) -> list[bytes]:
    """An Anthropic stream holding one text delta of `size` bytes, in `piece`-byte chunks."""
    call = CALLS[ANTHROPIC]
    headers = {
        HEADER_SCENARIO: "big-event",
        HEADER_BIG_BYTES: str(size),
        HEADER_CHUNK_SIZE: str(piece),
    }
    plan = plan_request("POST", call.path, call.query, headers, call.encoded())
    if plan.status != 200:
        raise RuntimeError(f"mock upstream answered {plan.status} for a big-event stream")
    return [s.data for s in plan.steps if s.data]


# --- the proxy stream ------------------------------------------------------------------------

PROXY_MODEL = "claude-sonnet-4-5"
#: The model a restamping client asks for: a model rule sends the request on under another name
#: and restamps every model value of the answer back to this one.
RESTAMP_ALIAS = "bench-alias"
_PROSE = (
    "The proxy reads every event on its way to the client and checks it against the rules of "
    "its wire format, then passes it on byte for byte, so a client never notices it is there. "
)
#: What a coding agent streams: code (line breaks, indents, quotes, a backslash) and prose in
#: more languages than English (bytes from 0x80 up, raw in the JSON as the APIs send them).
#: Most deltas cut from it carry an escape, a character beyond ASCII, or both.
_MIXED = (
    'Here is the fix \u2014 the parser now reads a "data:" line whole:\n\n```python\n'
    'def field(line: str) -> str:\n    if line.startswith("data:"):\n'
    '        return line[5:].removeprefix(" ")\n    return ""  # not a data line\n```\n'
    "Gr\u00f6\u00dfere Ereignisse pr\u00fcft er jetzt auch: "
    "\u4e8b\u4ef6\u6d41\u5df2\u4fee\u590d \u2705. "
    "A path on Windows, C:\\Users\\dev\\proxy, stays as it was.\n"
)


#: Events of an Anthropic proxy stream that are not text deltas: three before them, three after.
LIFECYCLE_EVENTS = 6
#: Opens the text of a stamped delta; STAMP_DIGITS decimal digits follow: the upstream's
#: monotonic clock in nanoseconds when it wrote the event. Nothing else in the stream holds "@".
STAMP = b"@t"
STAMP_DIGITS = 20


def proxy_path(fmt: str = ANTHROPIC, model: str | None = None) -> str:
    """The path (and query) a client of `fmt` posts a stream request to."""
    call = CALLS[fmt]
    path = call.path
    if fmt == GEMINI and model is not None:
        path = re.sub(r"/models/[^/:]+:", f"/models/{model}:", path)
    return path + ("?" + urlencode(call.query) if call.query else "")


def proxy_request(
    events: int,
    per_chunk: int = 1,
    *,
    interval_us: int | None = None,
    fmt: str = ANTHROPIC,
    text_bytes: int | None = None,
    model: str | None = None,
    padded: bool = False,
    mixed: bool = False,
) -> tuple[str, dict[str, str], bytes]:
    """(path, headers, body) of the request the client sends for a proxy stream in `fmt`; with
    `interval_us`, a stamped stream whose deltas the upstream writes that many microseconds
    apart; with `text_bytes`, deltas of that much text; with `model`, asking for that model;
    `padded`: asking for deltas padded as OpenAI pads them (``x-bench-padded`` tells the bench's
    upstream, the body asks as a client does); `mixed`: deltas of code and other languages
    (`delta_text`)."""
    call = CALLS[fmt]
    headers = {
        "content-type": "application/json",
        "x-bench-events": str(events),
        "x-bench-per-chunk": str(per_chunk),
    }
    if fmt == ANTHROPIC:
        headers["anthropic-version"] = "2023-06-01"
    if interval_us is not None:
        headers["x-bench-interval-us"] = str(interval_us)
    if text_bytes is not None:
        headers["x-bench-text-bytes"] = str(text_bytes)
    if padded:
        headers["x-bench-padded"] = "1"
    if mixed:
        headers["x-bench-texts"] = "mixed"
    body = dict(call.body)
    if model is not None and "model" in body:
        body["model"] = model
    if padded:
        body["stream_options"] = {**body.get("stream_options", {}), **PADDED}
    return proxy_path(fmt, model), headers, orjson.dumps(body)


def delta_text(
    i: int, *, stamped: bool = False, text_bytes: int | None = None, mixed: bool = False
) -> str:
    """The text of the `i`th delta: 40-84 characters of prose as Claude streams them, or
    `text_bytes` of it; `stamped`: starting with `STAMP` and room for the clock; `mixed`: of
    code and prose in more languages than English, as a coding agent gets them."""
    room = f"{STAMP.decode()}{'0' * STAMP_DIGITS} " if stamped else ""
    size = text_bytes if text_bytes is not None else 40 + (i * 13) % 45
    source = _MIXED if mixed else _PROSE
    start = (i * 37) % len(source)
    prose = source * (2 + size // len(source))
    return room + prose[start : start + max(0, size - len(room))]


def proxy_events(
    total: int,
    *,
    fmt: str = ANTHROPIC,
    stamped: bool = False,
    text_bytes: int | None = None,
    padded: bool = False,
    mixed: bool = False,
) -> list[bytes]:
    """A healthy stream in `fmt` of `total` events (at least the format's lifecycle events and
    one delta): lifecycle events around text deltas of `delta_text` (150-200 bytes per Anthropic
    delta event). `stamped`: each delta's text starts with `STAMP` and STAMP_DIGITS zeros;
    `padded`: each delta padded as OpenAI pads them (`PADDED_FORMATS` only); `mixed`: texts of
    code and other languages (`delta_text`)."""
    if padded and fmt not in PADDED_FORMATS:
        raise ValueError(f"{fmt} streams carry no pads")
    if fmt != ANTHROPIC:
        return _mock_events(
            fmt, total, stamped=stamped, text_bytes=text_bytes, padded=padded, mixed=mixed
        )
    deltas = max(1, total - LIFECYCLE_EVENTS)

    def event(payload: dict[str, Any]) -> bytes:
        return sse.encode(orjson.dumps(payload).decode(), event=payload["type"])

    message: dict[str, Any] = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": PROXY_MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 24, "output_tokens": 1},
    }
    out = [
        event({"type": "message_start", "message": message}),
        event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        event({"type": "ping"}),
    ]
    for i in range(deltas):
        text = delta_text(i, stamped=stamped, text_bytes=text_bytes, mixed=mixed)
        delta = {"type": "text_delta", "text": text}
        out.append(event({"type": "content_block_delta", "index": 0, "delta": delta}))
    out += [
        event({"type": "content_block_stop", "index": 0}),
        event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": deltas},
            }
        ),
        event({"type": "message_stop"}),
    ]
    return out


# The mock's `long` reply says " word0", " word1", ...: in JSON strings, never elsewhere.
_MOCK_WORD = re.compile(rb" word(\d+)")


def lifecycle_events(fmt: str) -> int:
    """Events of a proxy stream in `fmt` that are not text deltas."""
    if fmt == ANTHROPIC:
        return LIFECYCLE_EVENTS
    return len(long_stream(fmt, 1).events) - 1


def _mock_events(
    fmt: str,
    total: int,
    *,
    stamped: bool,
    text_bytes: int | None,
    padded: bool = False,
    mixed: bool = False,
) -> list[bytes]:
    """The mock's `long` stream in `fmt` with `total` events, its words replaced by prose (in
    JSON strings: escaped as JSON has them)."""
    deltas = max(1, total - lifecycle_events(fmt))

    def text(m: re.Match[bytes]) -> bytes:
        value = delta_text(int(m[1]), stamped=stamped, text_bytes=text_bytes, mixed=mixed)
        return orjson.dumps(value)[1:-1]

    return [_MOCK_WORD.sub(text, ev) for ev in long_stream(fmt, deltas, padded=padded).events]


def group(events: list[bytes], per_chunk: int) -> list[bytes]:
    """`per_chunk` events joined into each chunk."""
    if per_chunk <= 1:
        return list(events)
    return [b"".join(events[i : i + per_chunk]) for i in range(0, len(events), per_chunk)]
