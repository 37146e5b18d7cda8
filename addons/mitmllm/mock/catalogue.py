"""The rule catalogue: one realistic broken exchange for every error rule an upstream can show.

Each `Breakage` is a healthy exchange of one wire format with exactly one defect, as it happens
in the wild (the breakages table of the rule catalogue, sse-rules §9), and the rule IDs the
validators report for it: the rule itself and what else the defect sets off (errors and
warnings; info findings are not listed). Most defects are in the stream: the mock serves them as
scenario ``rule-<ID>`` (`CATALOGUE`, looked up by `mitmllm.mock.scenarios.find_scenario`). A few
are in the request (GEM-1, REQ-3): the entry then says how the request is broken and which
scenario answers it.

`request` builds the request a client sends to see an entry (or any scenario): the format's
path, the query, the headers that select the scenario, and a small JSON body.

Error rules that no upstream and no request can show are in `NOT_FROM_UPSTREAM`, with the reason
and where they come from instead. Everything here is sans-I/O: plans in, frames out.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import orjson

from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import CATALOGUE_PREFIX
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import HEADER_SCENARIO
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import OPENAI_RESPONSES
from mitmllm.mock.scenarios import TEXT
from mitmllm.mock.scenarios import THINKING
from mitmllm.mock.scenarios import TOOL_INTRO
from mitmllm.mock.scenarios import UTF8_TEXT
from mitmllm.mock.scenarios import Context
from mitmllm.mock.scenarios import Ev
from mitmllm.mock.scenarios import Frame
from mitmllm.mock.scenarios import Kind
from mitmllm.mock.scenarios import Reply
from mitmllm.mock.scenarios import Scenario
from mitmllm.mock.scenarios import Shape
from mitmllm.mock.scenarios import events
from mitmllm.mock.scenarios import frames
from mitmllm.protocol import sse

# --- requests ---------------------------------------------------------------------------------

#: The model each format's requests ask for.
MODELS: dict[str, str] = {
    ANTHROPIC: "claude-sonnet-4-6",
    OPENAI_CHAT: "gpt-4.1-mini",
    OPENAI_RESPONSES: "gpt-5-mini",
    GEMINI: "gemini-2.5-flash",
}
_WEATHER = {
    "type": "object",
    "properties": {"location": {"type": "string", "description": "a city"}},
    "required": ["location"],
}
_TIME = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "description": "an IANA time zone"}},
    "required": ["timezone"],
}
#: Two tools per format, in the format's own declaration shape.
TOOLS: dict[str, list[dict[str, Any]]] = {
    ANTHROPIC: [
        {"name": "get_weather", "description": "Current weather", "input_schema": _WEATHER},
        {"name": "get_time", "description": "Current time", "input_schema": _TIME},
    ],
    OPENAI_CHAT: [
        {"type": "function", "function": {"name": "get_weather", "parameters": _WEATHER}},
        {"type": "function", "function": {"name": "get_time", "parameters": _TIME}},
    ],
    OPENAI_RESPONSES: [
        {"type": "function", "name": "get_weather", "parameters": _WEATHER},
        {"type": "function", "name": "get_time", "parameters": _TIME},
    ],
    GEMINI: [
        {
            "functionDeclarations": [
                {"name": "get_weather", "description": "Current weather", "parameters": _WEATHER},
                {"name": "get_time", "description": "Current time", "parameters": _TIME},
            ]
        }
    ],
}
PROMPT = "What is the weather in Paris?"


@dataclass(frozen=True, slots=True)
class Request:
    """One request to the mock: POST `path` with `query`, `headers` and the JSON `body`."""

    fmt: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def target(self) -> str:
        """The path with its query, as sent."""
        query = "&".join(f"{k}={v}" for k, v in self.query.items())
        return self.path + ("?" + query if query else "")

    def content(self) -> bytes:
        return orjson.dumps(self.body)


def request(
    fmt: str,
    scenario: str | None = None,
    *,
    stream: bool = True,
    tools: bool = False,
    sse_query: bool = True,
    **fields: Any,
) -> Request:
    """The request a client sends for `scenario` (None: the mock's default) in `fmt`.

    `fields` are set in the body (a None value is sent as null); `sse_query=False` leaves
    ``alt=sse`` off a Gemini stream request.
    """
    model = MODELS[fmt]
    body: dict[str, Any]
    if fmt == ANTHROPIC:
        body = {
            "model": model,
            "max_tokens": 256,
            "messages": [{"role": "user", "content": PROMPT}],
        }
    elif fmt == OPENAI_CHAT:
        body = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    elif fmt == OPENAI_RESPONSES:
        body = {"model": model, "input": PROMPT}
    else:
        body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    if fmt != GEMINI:
        body["stream"] = stream
    if tools:
        body["tools"] = TOOLS[fmt]
    body.update(fields)
    if fmt == GEMINI:
        verb = "streamGenerateContent" if stream else "generateContent"
        path = f"/v1beta/models/{model}:{verb}"
    else:
        path = {
            ANTHROPIC: "/v1/messages",
            OPENAI_CHAT: "/v1/chat/completions",
            OPENAI_RESPONSES: "/v1/responses",
        }[fmt]
    query = {"alt": "sse"} if fmt == GEMINI and stream and sse_query else {}
    headers = {"content-type": "application/json"}
    if scenario is not None:
        headers[HEADER_SCENARIO] = scenario
    return Request(fmt, path, query, headers, body)


# --- the entries ------------------------------------------------------------------------------


def _text(ctx: Context) -> Reply:
    return Reply(text=TEXT)


def _utf8(ctx: Context) -> Reply:
    return Reply(text=UTF8_TEXT)


def _thinking(ctx: Context) -> Reply:
    return Reply(text=TEXT, thinking=THINKING)


def _tool(ctx: Context) -> Reply:
    return Reply(text=TOOL_INTRO, tools=ctx.tool_calls(1))


@dataclass(frozen=True, slots=True)
class Breakage:
    """One error rule, broken the way it is broken in the wild.

    A stream breakage has a `shape` that breaks the healthy stream of `reply`; a request
    breakage (`shape` None) sends `body` / no ``alt=sse`` and is answered by `answer`.
    `expected` is what the validators report for the exchange; a request-side rule that only
    the rewriter reports (REQ-3) is the `rule` but not in `expected`.
    """

    rule: str
    fmt: str
    defect: str  # what is broken, in the words of the breakage
    seen: str  # where it was seen
    receives: str  # what an official client does with it
    also: frozenset[str] = frozenset()  # other rules (errors and warnings) the defect sets off
    shape: Shape | None = None
    reply: Callable[[Context], Reply] = _text
    tools: bool = False  # the request declares tools
    body: Mapping[str, Any] = field(default_factory=dict)  # set in the request body
    sse_query: bool = True
    answer: str | None = None  # the scenario that answers a request breakage
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers of the broken stream
    request_side: bool = False  # the rule is reported on the request, not by the validators
    intact: Shape | None = None  # the healthy stream `shape` breaks, if not the plain one

    @property
    def name(self) -> str:
        """The scenario name the mock serves the broken stream under."""
        return CATALOGUE_PREFIX + self.rule

    @property
    def expected(self) -> frozenset[str]:
        """Rule IDs (errors and warnings) the validators report for the exchange."""
        return self.also if self.request_side else self.also | {self.rule}

    def request(self) -> Request:
        scenario = self.name if self.shape is not None else self.answer
        return request(
            self.fmt, scenario, tools=self.tools, sse_query=self.sse_query, **dict(self.body)
        )

    def scenario(self) -> Scenario:
        assert self.shape is not None, f"{self.rule} is a request breakage"
        return Scenario(
            self.name,
            f"{self.rule}: {self.defect} ({self.seen})",
            self.receives,
            {self.fmt: self.expected},
            reply=self.reply,
            shape=self.shape,
            stream_only=True,
            headers=self.headers,
        )


# --- editing a healthy stream -----------------------------------------------------------------


def _events(ctx: Context, reply: Reply) -> list[Ev]:
    return list(events(ctx, reply))


def _load(ev: Ev) -> Any:
    return orjson.loads(ev.data)


def _dump(ev: Ev, payload: Any) -> Ev:
    """`ev` with a new payload (its name and kind kept)."""
    return Ev(ev.kind, ev.event, orjson.dumps(payload).decode())


def _encode(ctx: Context, evs: Iterable[Ev]) -> list[Frame]:
    return [Frame(e.kind, sse.encode(e.data, event=e.event, eol=ctx.eol)) for e in evs]


def _index(evs: list[Ev], test: Callable[[Ev, Any], bool], start: int = 0) -> int:
    """The position of the first event (from `start`) whose payload passes `test`."""
    for i in range(start, len(evs)):
        e = evs[i]
        payload = None if e.data == "[DONE]" else _load(e)
        if test(e, payload):
            return i
    raise ValueError("no such event in the stream")


def _typed(kind: str, **match: Any) -> Callable[[Ev, Any], bool]:
    """An `_index` test: a payload of `type` `kind` with these field values."""
    return lambda e, p: (
        isinstance(p, dict)
        and p.get("type") == kind
        and all(p.get(k) == v for k, v in match.items())
    )


def _tool_use_start(e: Ev, p: Any) -> bool:
    return _typed("content_block_start")(e, p) and p["content_block"]["type"] == "tool_use"


def _finish_chunk(e: Ev, p: Any) -> bool:
    return isinstance(p, dict) and any(c.get("finish_reason") for c in p["choices"])


def _resequence(evs: list[Ev]) -> list[Ev]:
    """Responses events numbered 0, 1, 2... again after events were moved or added."""
    out = []
    for n, e in enumerate(evs):
        payload = _load(e)
        payload["sequence_number"] = n
        out.append(_dump(e, payload))
    return out


# --- generic (SSE, HTTP) ----------------------------------------------------------------------


def _emoji_split_across_events(ctx: Context, reply: Reply) -> list[Frame]:
    """A gateway forwards each token's bytes as they come: the emoji's four bytes land in two
    events, half a character each."""
    fs = list(frames(ctx, reply))
    emoji = "🙂".encode()
    i = next(n for n, f in enumerate(fs) if emoji in f.data)
    head, tail = fs[i].data.replace(emoji, emoji[:2]), fs[i].data.replace(emoji, emoji[2:])
    return [*fs[:i], Frame(Kind.CONTENT, head), Frame(Kind.CONTENT, tail), *fs[i + 1 :]]


def _capitalised_data_field(ctx: Context, reply: Reply) -> list[Frame]:
    fs = list(frames(ctx, reply))
    i = next(n for n, f in enumerate(fs) if f.kind is Kind.CONTENT)
    return [*fs[:i], Frame(Kind.CONTENT, b"D" + fs[i].data[1:]), *fs[i + 1 :]]


def _bare_json_line(ctx: Context, reply: Reply) -> list[Frame]:
    fs = list(frames(ctx, reply))
    i = next(n for n, f in enumerate(fs) if f.kind is Kind.CONTENT)
    return [*fs[:i], Frame(Kind.CONTENT, fs[i].data.removeprefix(b"data: ")), *fs[i + 1 :]]


def _gzipped(ctx: Context, reply: Reply) -> list[Frame]:
    """The stream gzip-compressed as it goes (a sync flush after every event), as a server with
    response compression switched on sends it whatever the client asked for."""
    # A fixed gzip header (no name, no mtime, OS unknown): zlib's own header names the
    # platform, and the bytes must be the same wherever the mock runs.
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [Frame(Kind.HEAD, b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")]
    crc, size = 0, 0
    for f in frames(ctx, reply):
        crc, size = zlib.crc32(f.data, crc), size + len(f.data)
        out.append(Frame(f.kind, z.compress(f.data) + z.flush(zlib.Z_SYNC_FLUSH)))
    trailer = crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")
    out.append(Frame(Kind.END, z.flush() + trailer))
    return out


# --- Anthropic Messages -----------------------------------------------------------------------


def _ant_stop_named_delta(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    i = _index(evs, _typed("content_block_stop"))
    evs[i] = Ev(evs[i].kind, "content_block_delta", evs[i].data)
    return _encode(ctx, evs)


def _ant_block_before_start(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    start = evs.pop(_index(evs, _typed("message_start")))
    i = _index(evs, _typed("content_block_start"))
    evs.insert(i + 1, start)
    return _encode(ctx, evs)


def _ant_start_with_content(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    i = _index(evs, _typed("message_start"))
    payload = _load(evs[i])
    payload["message"]["content"] = [{"type": "text", "text": "".join(reply.text)}]
    evs[i] = _dump(evs[i], payload)
    return _encode(ctx, evs)


def _ant_block_opened_before_stop(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    stop = evs.pop(_index(evs, _typed("content_block_stop", index=0)))
    i = _index(evs, _typed("content_block_start", index=1))
    evs.insert(i + 1, stop)
    return _encode(ctx, evs)


def _ant_delta_after_stop(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    last = _index(evs, _typed("content_block_stop", index=0)) - 1
    late = evs.pop(last)
    evs.insert(_index(evs, _typed("content_block_stop", index=0)) + 1, late)
    return _encode(ctx, evs)


def _ant_thinking_as_text_delta(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    out = []
    for e in evs:
        p = _load(e)
        delta = p.get("delta") if isinstance(p, dict) else None
        if isinstance(delta, dict) and delta.get("type") == "thinking_delta":
            p["delta"] = {"type": "text_delta", "text": delta["thinking"]}
            e = _dump(e, p)
        out.append(e)
    return _encode(ctx, out)


def _ant_tool_input_cut(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    tool = _index(evs, _tool_use_start)
    stop = _index(evs, _typed("content_block_stop"), tool)
    del evs[stop - 1]  # the last partial_json fragment
    return _encode(ctx, evs)


def _ant_block_never_stopped(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    tool = _index(evs, _tool_use_start)
    del evs[_index(evs, _typed("content_block_stop"), tool)]
    return _encode(ctx, evs)


def _ant_stop_for_unopened_block(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    i = _index(evs, _typed("content_block_stop", index=0))
    evs.insert(i + 1, _dump(evs[i], {"type": "content_block_stop", "index": 1}))
    return _encode(ctx, evs)


def _ant_delta_without_usage(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    i = _index(evs, _typed("message_delta"))
    payload = _load(evs[i])
    del payload["usage"]
    evs[i] = _dump(evs[i], payload)
    return _encode(ctx, evs)


def _ant_usage_after_stop(ctx: Context, reply: Reply) -> list[Frame]:
    """The message_delta repeated after message_stop, as a bridge that reports usage late."""
    evs = _events(ctx, reply)
    late = evs[_index(evs, _typed("message_delta"))]
    return _encode(ctx, [*evs, Ev(Kind.END, late.event, late.data)])


# --- OpenAI Chat Completions -----------------------------------------------------------------


def _chat_empty_data(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    i = _index(evs, lambda e, p: e.kind is Kind.CONTENT)
    evs.insert(i, Ev(Kind.HEAD, None, ""))
    return _encode(ctx, evs)


def _chat_id_per_chunk(ctx: Context, reply: Reply) -> list[Frame]:
    out = []
    for n, e in enumerate(_events(ctx, reply)):
        if e.data != "[DONE]":
            p = _load(e)
            p["id"] = f"{p['id']}-{n}"
            e = _dump(e, p)
        out.append(e)
    return _encode(ctx, out)


def _chat_message_instead_of_delta(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    i = _index(evs, _finish_chunk)
    p = _load(evs[i])
    choice = p["choices"][0]
    choice["message"] = choice.pop("delta")
    evs[i] = _dump(evs[i], p)
    return _encode(ctx, evs)


def _chat_two_choices(ctx: Context, reply: Reply, *, race: bool = False) -> list[Frame]:
    """Two choices (n=2) generated side by side, each chunk of choice 0 then its twin of
    choice 1; with `race` the second choice's first chunk wins."""
    out = []
    for n, e in enumerate(_events(ctx, reply)):
        if e.data == "[DONE]":
            out.append(e)
            continue
        first, second = _load(e), _load(e)
        for c in second["choices"]:
            c["index"] = 1
        pair = [_dump(e, first), _dump(e, second)]
        out.extend(reversed(pair) if race and n == 0 else pair)
    return _encode(ctx, out)


def _chat_second_choice_first(ctx: Context, reply: Reply) -> list[Frame]:
    return _chat_two_choices(ctx, reply, race=True)


def _chat_name_in_every_fragment(ctx: Context, reply: Reply) -> list[Frame]:
    out = []
    name = None
    for e in _events(ctx, reply):
        if e.data != "[DONE]":
            p = _load(e)
            for call in p["choices"][0]["delta"].get("tool_calls") or ():
                fn = call["function"]
                if "name" in fn:
                    name = fn["name"]
                elif name is not None:
                    fn["name"] = name
                    e = _dump(e, p)
        out.append(e)
    return _encode(ctx, out)


def _chat_arguments_cut(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    finish = _index(evs, _finish_chunk)
    del evs[finish - 1]  # the last arguments fragment
    return _encode(ctx, evs)


def _chat_usage_before_finish(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    usage = evs.pop(_index(evs, lambda e, p: isinstance(p, dict) and p.get("usage") is not None))
    finish = _index(evs, _finish_chunk)
    evs.insert(finish, usage)
    return _encode(ctx, evs)


# --- OpenAI Responses -------------------------------------------------------------------------


def _rsp_no_sequence_number(ctx: Context, reply: Reply) -> list[Frame]:
    out = []
    for e in _events(ctx, reply):
        p = _load(e)
        p.pop("sequence_number", None)
        out.append(_dump(e, p))
    return _encode(ctx, out)


def _rsp_empty_item_id(ctx: Context, reply: Reply) -> list[Frame]:
    """The message item's id is empty everywhere it appears (consistently)."""
    evs = _events(ctx, reply)
    item_id = _load(evs[_index(evs, _typed("response.output_item.added"))])["item"]["id"]
    return _encode(ctx, [_dump(e, _replace_value(_load(e), item_id, "")) for e in evs])


def _replace_value(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: _replace_value(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_value(v, old, new) for v in node]
    return new if node == old else node


def _rsp_delta_item_id_changed(ctx: Context, reply: Reply) -> list[Frame]:
    out = []
    for e in _events(ctx, reply):
        p = _load(e)
        if p["type"] == "response.output_text.delta":
            p["item_id"] = p["item_id"] + "_" + str(p["sequence_number"])
            e = _dump(e, p)
        out.append(e)
    return _encode(ctx, out)


def _rsp_no_content_part_added(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    del evs[_index(evs, _typed("response.content_part.added"))]
    return _encode(ctx, _resequence(evs))


def _rsp_delta_after_item_done(ctx: Context, reply: Reply) -> list[Frame]:
    evs = _events(ctx, reply)
    done = _index(evs, _typed("response.output_text.done"))
    late = evs.pop(done - 1)
    evs.insert(_index(evs, _typed("response.output_item.done")) + 1, late)
    return _encode(ctx, _resequence(evs))


# --- Gemini -----------------------------------------------------------------------------------


def _gem_done_sentinel(ctx: Context, reply: Reply) -> list[Frame]:
    return _encode(ctx, [*_events(ctx, reply), Ev(Kind.END, None, "[DONE]")])


def _gem_args_as_string(ctx: Context, reply: Reply) -> list[Frame]:
    out = []
    for e in _events(ctx, reply):
        p = _load(e)
        for part in p["candidates"][0]["content"]["parts"]:
            call = part.get("functionCall")
            if call is not None:
                call["args"] = orjson.dumps(call["args"]).decode()
                e = _dump(e, p)
        out.append(e)
    return _encode(ctx, out)


# --- the table --------------------------------------------------------------------------------

_ENTRIES: tuple[Breakage, ...] = (
    # --- generic ---
    Breakage(
        "HTTP-4",
        ANTHROPIC,
        "the event stream is gzip-compressed (Content-Encoding: gzip) although the client asked "
        "for identity",
        "servers and gateways with response compression switched on for every content type",
        "an SDK decompresses it; a proxy or tap reading events as they pass sees only "
        "compressed bytes",
        frozenset({"TAP-2"}),
        shape=_gzipped,
        headers=(("content-encoding", "gzip"),),
    ),
    Breakage(
        "SSE-1",
        OPENAI_CHAT,
        "an emoji's four UTF-8 bytes split across two events, half a character in each",
        "B14/B15: api7/aisix#111, tenstorrent/tt-inference-server#2594",
        "openai-python raises UnicodeDecodeError; openai-node shows U+FFFD twice",
        shape=_emoji_split_across_events,
        reply=_utf8,
    ),
    Breakage(
        "SSE-7",
        OPENAI_CHAT,
        "one content chunk written with a capitalised 'Data:' field",
        "hand-written SSE servers",
        "every SSE parser ignores the field: the chunk's text is lost without an error",
        shape=_capitalised_data_field,
    ),
    Breakage(
        "SSE-8",
        OPENAI_CHAT,
        "one content chunk written as a bare JSON line, without its 'data: ' prefix",
        "stacklok/toolhive#6085",
        "the line is an unknown field to every parser: the chunk's text is lost without an error",
        shape=_bare_json_line,
    ),
    # --- Anthropic Messages ---
    Breakage(
        "ANT-2",
        ANTHROPIC,
        "a content_block_stop sent under the event name content_block_delta",
        "bridges that reuse the previous event's name",
        "the SDKs process the data's type; strict consumers dispatching by name mis-handle it",
        shape=_ant_stop_named_delta,
    ),
    Breakage(
        "ANT-4",
        ANTHROPIC,
        "message_start sent after the first content_block_start",
        "B9: router-for-me/CLIProxyAPI#530, NousResearch/hermes-agent#72833",
        "SDKs raise 'Unexpected event order, got content_block_start before \"message_start\"'",
        shape=_ant_block_before_start,
    ),
    Breakage(
        "ANT-6",
        ANTHROPIC,
        "message_start carries the finished message's content instead of an empty list",
        "bridges that build message_start from a whole response",
        "the SDK snapshot starts with a block, so every streamed block lands one index late",
        shape=_ant_start_with_content,
    ),
    Breakage(
        "ANT-9",
        ANTHROPIC,
        "the tool_use block starts before the text block is stopped",
        "bridges translating OpenAI tool calls, which interleave with content",
        "the TS SDK attributes events to the last block",
        shape=_ant_block_opened_before_stop,
        reply=_tool,
        tools=True,
    ),
    Breakage(
        "ANT-10",
        ANTHROPIC,
        "the text block's last delta arrives after its content_block_stop",
        "bridges flushing buffered text after closing the block",
        "both SDKs append it without a state check; consumers that finalised the block lose it",
        shape=_ant_delta_after_stop,
    ),
    Breakage(
        "ANT-11",
        ANTHROPIC,
        "the thinking block's deltas sent as text_delta",
        "bridges mapping reasoning_content onto a thinking block",
        "both SDKs silently discard the deltas: the thinking is lost",
        shape=_ant_thinking_as_text_delta,
        reply=_thinking,
    ),
    Breakage(
        "ANT-12",
        ANTHROPIC,
        "the tool_use block's last partial_json fragment is missing, so its input does not parse",
        "B10: BerriAI/litellm#32159 (a stream cut inside input_json_delta)",
        "SDKs raise 'Unable to parse tool parameter JSON from model'",
        shape=_ant_tool_input_cut,
        reply=_tool,
        tools=True,
    ),
    Breakage(
        "ANT-14",
        ANTHROPIC,
        "the tool_use block is never stopped before message_delta",
        "the anthropic-python fixture incomplete_partial_json_response.txt",
        "the message ends with a block the client never saw finish",
        shape=_ant_block_never_stopped,
        reply=_tool,
        tools=True,
    ),
    Breakage(
        "ANT-15",
        ANTHROPIC,
        "a content_block_stop for index 1, a block that was never started",
        "B6: QuantumNous/new-api#5482",
        "anthropic-python raises IndexError",
        shape=_ant_stop_for_unopened_block,
    ),
    Breakage(
        "ANT-16",
        ANTHROPIC,
        "message_delta without its usage object",
        "bridges following the extended-thinking doc example",
        "the SDK accumulators fail reading usage.output_tokens",
        shape=_ant_delta_without_usage,
    ),
    Breakage(
        "ANT-19",
        ANTHROPIC,
        "the message_delta (stop reason and usage) sent again after message_stop",
        "bridges that report usage once the upstream has finished",
        "SDKs merge events after the end into the finished message",
        shape=_ant_usage_after_stop,
    ),
    # --- OpenAI Chat Completions ---
    Breakage(
        "OAI-1",
        OPENAI_CHAT,
        "an empty 'data: ' line used as a keep-alive",
        "gateways heart-beating with empty data events",
        "both SDKs fail JSON-parsing the empty event",
        frozenset({"PAY-1"}),
        shape=_chat_empty_data,
    ),
    Breakage(
        "OAI-5",
        OPENAI_CHAT,
        "every chunk carries its own id",
        "compatible servers that number chunks",
        "SDK helpers cannot tell the chunks belong to one completion",
        shape=_chat_id_per_chunk,
    ),
    Breakage(
        "OAI-6",
        OPENAI_CHAT,
        "the finish chunk's choice carries 'message' (the non-streaming shape) instead of 'delta'",
        "B21: microsoft/autogen#6465",
        "clients reading choices[0].delta crash",
        shape=_chat_message_instead_of_delta,
    ),
    Breakage(
        "OAI-8",
        OPENAI_CHAT,
        "with n=2, the second choice's first chunk arrives before the first choice's",
        "servers generating choices concurrently and streaming in completion order",
        "openai-python raises IndexError building the snapshot",
        shape=_chat_second_choice_first,
        body={"n": 2},
        intact=_chat_two_choices,
    ),
    Breakage(
        "OAI-9",
        OPENAI_CHAT,
        "the tool name repeated in every tool-call fragment",
        "B19: NousResearch/hermes-agent#11984",
        "openai-python concatenates it: 'get_weatherget_weatherget_weather'",
        shape=_chat_name_in_every_fragment,
        reply=_tool,
        tools=True,
    ),
    Breakage(
        "OAI-12",
        OPENAI_CHAT,
        "the tool call's last arguments fragment is missing, so the arguments do not parse",
        "B23: sigoden/aichat#1217",
        "clients fail parsing the arguments ('non-JSON arguments')",
        shape=_chat_arguments_cut,
        reply=_tool,
        tools=True,
    ),
    Breakage(
        "OAI-15",
        OPENAI_CHAT,
        "with stream_options.include_usage, the usage chunk comes before the finish chunk",
        "compatible servers that send usage as soon as it is known",
        "openai-python overwrites the usage with the later chunk's null",
        shape=_chat_usage_before_finish,
        body={"stream_options": {"include_usage": True}},
    ),
    # --- OpenAI Responses ---
    Breakage(
        "RSP-2",
        OPENAI_RESPONSES,
        "no event carries a sequence_number",
        "early compatible Responses servers",
        "the SDK event models fail validation",
        shape=_rsp_no_sequence_number,
    ),
    Breakage(
        "RSP-5",
        OPENAI_RESPONSES,
        "the message item is added with an empty id",
        "compatible servers that leave item ids empty",
        "openai-node throws 'expected a non-empty output item id'",
        shape=_rsp_empty_item_id,
    ),
    Breakage(
        "RSP-6",
        OPENAI_RESPONSES,
        "each output_text.delta names an item_id of its own, not the message item's",
        "gateways that mint ids per event",
        "openai-node throws 'expected item_id'",
        shape=_rsp_delta_item_id_changed,
    ),
    Breakage(
        "RSP-7",
        OPENAI_RESPONSES,
        "text deltas without a response.content_part.added first",
        "compatible servers that skip content_part events",
        "openai-node throws 'missing content at index 0'",
        shape=_rsp_no_content_part_added,
    ),
    Breakage(
        "RSP-9",
        OPENAI_RESPONSES,
        "the message's last text delta arrives after its output_item.done",
        "gateways flushing buffered text after closing the item",
        "SDK accumulators reject the event",
        frozenset({"RSP-8"}),
        shape=_rsp_delta_after_item_done,
    ),
    # --- Gemini ---
    Breakage(
        "GEM-1",
        GEMINI,
        "streamGenerateContent requested without alt=sse: the answer is a JSON array",
        "clients porting the REST docs without the query parameter",
        "the SSE parser sees no events",
        frozenset({"HTTP-2"}),
        sse_query=False,
        answer="healthy",
    ),
    Breakage(
        "GEM-5",
        GEMINI,
        "a 'data: [DONE]' sentinel after the last chunk",
        "OpenAI-compatible gateways in front of Gemini",
        "google-genai raises UnknownApiResponseError",
        frozenset({"PAY-1"}),
        shape=_gem_done_sentinel,
    ),
    Breakage(
        "GEM-7",
        GEMINI,
        "functionCall.args sent as a JSON string instead of an object",
        "bridges converting OpenAI tool-call arguments",
        "google-genai fails validating the chunk",
        shape=_gem_args_as_string,
        reply=_tool,
        tools=True,
    ),
    # --- requests ---
    Breakage(
        "REQ-3",
        ANTHROPIC,
        "the request body's model is null (an unset model setting)",
        "clients whose model environment variable is empty",
        "no model rule applies; the upstream answers 400 (HTTP-6, the client's own error)",
        frozenset(),
        body={"model": None},
        answer="bad-request",
        request_side=True,
    ),
)

BREAKAGES: dict[str, Breakage] = {b.rule: b for b in _ENTRIES}
#: The stream breakages as mock scenarios, by scenario name (``rule-ANT-9``).
CATALOGUE: dict[str, Scenario] = {b.name: b.scenario() for b in _ENTRIES if b.shape is not None}

#: Error rules no upstream stream or request shows, and where they come from instead.
NOT_FROM_UPSTREAM: dict[str, str] = {
    "TAP-1": "an internal error of mitmllm's own tap, not something on the wire",
    "RLY-2": "the relay's outcome when every upstream of a route fails before the response "
    "started: seeded by a fail-over case, not a single upstream's stream",
    "RLY-3": "the relay's outcome when the serving upstream fails after the response started: "
    "seeded by a fail-over case",
    "XLT-4": "a translation's outcome when an upstream's stream, legal in its own format "
    "(interleaved Chat tool calls, the interleaved-tools scenario), cannot be written in the "
    "client's: seeded by a cross-format fail-over case",
}
