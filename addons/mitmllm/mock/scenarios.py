"""What the mock upstream answers, byte for byte, per wire format and scenario (sans-I/O).

Theory of operation
-------------------
`plan_request` turns one HTTP request (method, path, query, headers, body) into a `Plan`: the
status, the headers and the `Step`s a server carries out in order (write these bytes after this
delay; stall; drop the connection). Nothing here touches a socket, a clock or a task, so every
scenario can be checked by reading its plan.

A request goes through these stages:

1. **Route**: the path names the wire format (``.../v1/messages``, ``.../chat/completions``,
   ``.../responses``, ``.../models/{model}:streamGenerateContent`` / ``:generateContent``). A
   ``/mock/NAME/`` prefix is stripped first, so a client's base URL can select a scenario.
2. **Scenario**: the ``x-mock-scenario`` header, else the path prefix, else a ``~NAME`` model
   suffix (always stripped before the model is echoed), else the server's default, else
   ``healthy``. ``x-mock-*`` headers tune the plan (`Options`).
3. **Reply**: what the model "says" (text, thinking, tool calls named after the request's tools).
4. **Render**: the reply as the format's events (`Frame`s tagged head / content / tail / end),
   or as the format's JSON body for a non-streaming request.
5. **Shape**: the scenario breaks the frames on purpose (cuts, splices, stalls, drops).
6. **Pace and re-chunk**: delays between events, then optional fixed-size writes.

A non-streaming request gets the format's JSON body: stream-only scenarios answer it as
``healthy``, timing scenarios delay or cut it. A Gemini ``:streamGenerateContent`` without
``alt=sse`` gets the JSON array Google sends then (GEM-1). ``.../v1/messages/count_tokens``
answers an estimate. Errors use each format's own body and status (an overload is 529 for
Anthropic, 503 for OpenAI and Gemini).

`SCENARIOS` is the documented table; `expected_rules` says which rule IDs a validator should
report for a scenario's stream (errors and warnings of a plain streaming request; info findings
are not listed). The rule catalogue (`mitmllm.mock.catalogue`) adds one broken stream per error
rule, served under the scenario name ``rule-<ID>``; `find_scenario` looks up both.
"""

from __future__ import annotations

import itertools
import random
import re
import string
import zlib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from enum import StrEnum
from typing import Any

import orjson

from mitmllm.protocol import sse

ANTHROPIC = "anthropic"
OPENAI_CHAT = "openai-chat"
OPENAI_RESPONSES = "openai-responses"
GEMINI = "gemini"
FORMATS: tuple[str, ...] = (ANTHROPIC, OPENAI_CHAT, OPENAI_RESPONSES, GEMINI)

HEADER_SCENARIO = "x-mock-scenario"
HEADER_CHUNK_SIZE = "x-mock-chunk-size"
HEADER_DELAY = "x-mock-delay-ms"
HEADER_STALL = "x-mock-stall-ms"
HEADER_EVENTS = "x-mock-events"
HEADER_BIG_BYTES = "x-mock-big-bytes"
#: Set by the server to its instance name, so a client can tell upstreams apart.
HEADER_UPSTREAM = "x-mock-upstream"

PATH_PREFIX = "/mock/"
MODEL_SUFFIX = "~"
#: Scenario names of the rule catalogue's broken streams (`mitmllm.mock.catalogue`).
CATALOGUE_PREFIX = "rule-"
DEFAULT_SCENARIO = "healthy"

#: Plans are deterministic: a fixed creation time instead of the clock.
CREATED = 1_700_000_000
DEFAULT_STALL = 30.0
DEFAULT_EVENTS = 1000
DEFAULT_BIG_BYTES = 32 * 1024 * 1024
SLOW_GAP = 0.05
#: Pause between the writes that split a character, so they leave as separate TCP segments.
SPLIT_GAP = 0.002
#: Where a scenario breaks a stream: after this many content events.
COMMIT_EVENTS = 2


# --- steps and plans ------------------------------------------------------------------------


class Action(StrEnum):
    WRITE = "write"
    STALL = "stall"  # write nothing for `delay` seconds (headers are already out)
    DROP = "drop"  # close the connection without ending the body


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the server does: wait `delay` seconds, then write `data` (or stall, or drop)."""

    data: bytes = b""
    delay: float = 0.0
    action: Action = Action.WRITE


def stall(seconds: float) -> Step:
    return Step(delay=seconds, action=Action.STALL)


DROP = Step(action=Action.DROP)


@dataclass(slots=True)
class Plan:
    """The whole answer to one request.

    `steps` may be a generator (long and big streams are produced lazily): iterate it once.
    `length` is the Content-Length of a JSON body; None means a chunked body.
    """

    status: int
    headers: list[tuple[str, str]]
    steps: Iterable[Step]
    length: int | None = None
    fmt: str | None = None
    scenario: str | None = None
    model: str | None = None
    stream: bool = False

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def body(self) -> bytes:
        """Everything the plan writes, joined (consumes `steps`)."""
        return b"".join(s.data for s in self.steps)


@dataclass(frozen=True, slots=True)
class Options:
    """Per-request modifiers, from ``x-mock-*`` headers."""

    chunk_size: int | None = None  # re-cut the body into writes of this many bytes
    delay: float | None = None  # seconds between events (None: the scenario's own)
    stall: float = DEFAULT_STALL  # seconds a stall lasts
    events: int = DEFAULT_EVENTS  # text deltas of the `long` scenario
    big_bytes: int = DEFAULT_BIG_BYTES  # size of the `big-event` text

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Options:
        """Parse the modifiers (`headers` with lower-case names); ValueError names the header."""
        chunk = _int_header(headers, HEADER_CHUNK_SIZE, minimum=1)
        delay = _int_header(headers, HEADER_DELAY, minimum=0)
        stall_ms = _int_header(headers, HEADER_STALL, minimum=0)
        events = _int_header(headers, HEADER_EVENTS, minimum=1)
        big = _int_header(headers, HEADER_BIG_BYTES, minimum=1)
        return cls(
            chunk_size=chunk,
            delay=None if delay is None else delay / 1000,
            stall=DEFAULT_STALL if stall_ms is None else stall_ms / 1000,
            events=DEFAULT_EVENTS if events is None else events,
            big_bytes=DEFAULT_BIG_BYTES if big is None else big,
        )


def _int_header(headers: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {raw!r}")
    return value


# --- frames: one encoded event each, tagged with its role in the stream ---------------------


class Kind(StrEnum):
    HEAD = "head"  # lifecycle before any output: message_start, response.created, role chunk
    CONTENT = "content"  # carries model output: text, thinking, tool calls
    TAIL = "tail"  # closes what content opened: block stops, finish, usage, *.done
    END = "end"  # the success terminator: message_stop, [DONE], response.completed, finishReason


@dataclass(frozen=True, slots=True)
class Ev:
    """An event before encoding: its SSE name (or None) and its data."""

    kind: Kind
    event: str | None
    data: str


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded event. The pacing stage puts the event gap before it."""

    kind: Kind
    data: bytes


Item = Frame | Step


# --- what the model says --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    key: str  # unique per request; each format adds its own id prefix


@dataclass(frozen=True, slots=True)
class Reply:
    text: Sequence[str] = ()
    thinking: Sequence[str] = ()
    tools: Sequence[ToolCall] = ()
    signature: str = "bW9jay10aGlua2luZy1zaWduYXR1cmU="

    @property
    def output_tokens(self) -> int:
        return max(1, len(self.text) + len(self.thinking) + 12 * len(self.tools))


TEXT = ("Hello", " from", " the", " mock", " upstream", ".")
THINKING = ("The user", " wants a short", " answer.")
UTF8_TEXT = ("Grüße", " aus", " 東京", " 🙂", " ✓")
TOOL_INTRO = ("Let me", " call a tool.")
#: Stands for the big-event text in rendered bytes until the stream is written (ASCII, so JSON
#: encoding leaves it as is).
BIG_TOKEN = "<<mock-big-event>>"
_BIG_TOKEN = BIG_TOKEN.encode()
_FILLER = (b"All work and no play makes a big event. " * 1700)[:65536]

_DEFAULT_TOOLS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("get_weather", {"location": "Paris"}),
    ("get_time", {"timezone": "Europe/Paris"}),
)
_SAMPLE_VALUES: dict[str, Any] = {
    "string": "Paris",
    "integer": 3,
    "number": 1.5,
    "boolean": True,
    "array": [],
    "object": {},
}


def request_tools(fmt: str, request: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, JSON schema) of the callable tools a request declares, in order."""
    tools: list[tuple[str, Any]] = []
    for tool in _list(request.get("tools")):
        if not isinstance(tool, dict):
            continue
        if fmt == ANTHROPIC:
            if tool.get("type") in (None, "custom") and isinstance(tool.get("name"), str):
                tools.append((tool["name"], tool.get("input_schema")))
        elif fmt == OPENAI_CHAT:
            fn = tool.get("function")
            if tool.get("type") == "function" and isinstance(fn, dict) and "name" in fn:
                tools.append((fn["name"], fn.get("parameters")))
        elif fmt == OPENAI_RESPONSES:
            if tool.get("type") == "function" and isinstance(tool.get("name"), str):
                tools.append((tool["name"], tool.get("parameters")))
        elif fmt == GEMINI:
            decls = tool.get("functionDeclarations", tool.get("function_declarations"))
            for decl in _list(decls):
                if isinstance(decl, dict) and isinstance(decl.get("name"), str):
                    schema = decl.get("parameters", decl.get("parametersJsonSchema"))
                    tools.append((decl["name"], schema))
    if fmt == OPENAI_CHAT:  # the legacy function-calling field
        for fn in _list(request.get("functions")):
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                tools.append((fn["name"], fn.get("parameters")))
    return tools


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def sample_arguments(schema: Any) -> dict[str, Any]:
    """Arguments that fit a tool's JSON schema: its required properties (or the first one)."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return {}
    props: dict[str, Any] = schema["properties"]
    required = [n for n in _list(schema.get("required")) if n in props] or list(props)[:1]
    return {name: _sample_value(props[name]) for name in required}


def _sample_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "mock"
    if _list(schema.get("enum")):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    kind = kind.lower() if isinstance(kind, str) else kind  # Gemini spells types in upper case
    return _SAMPLE_VALUES.get(kind, "mock") if isinstance(kind, str) else "mock"


# --- the request as the plan builders see it ------------------------------------------------


@dataclass(slots=True)
class Context:
    fmt: str
    model: str
    request: dict[str, Any]
    options: Options
    ident: str = "mock"
    stream: bool = True
    sse: bool = True  # False: a Gemini stream asked for without alt=sse (a JSON array)
    gap: float = 0.0
    input_tokens: int = 1

    @property
    def eol(self) -> str:
        return "\r\n" if self.fmt == GEMINI else "\n"

    @property
    def answers_tool_result(self) -> bool:
        """Does the request's last turn carry a tool's result? (Then the model answers it in
        text: a mock that called a tool on every turn would keep an agent looping.)"""
        return carries_tool_result(self.fmt, self.request)

    def tool_calls(self, n: int) -> tuple[ToolCall, ...]:
        tools = request_tools(self.fmt, self.request)
        declared = [(name, sample_arguments(schema)) for name, schema in tools]
        pool = declared or list(_DEFAULT_TOOLS)
        return tuple(
            ToolCall(name, args, f"{self.ident}_{i}")
            for i, (name, args) in enumerate(itertools.islice(itertools.cycle(pool), n))
        )


def _text_reply(ctx: Context) -> Reply:
    return Reply(text=TEXT)


def _thinking_reply(ctx: Context) -> Reply:
    return Reply(text=TEXT, thinking=THINKING)


def _tool_reply(ctx: Context) -> Reply:
    return Reply(text=TOOL_INTRO, tools=ctx.tool_calls(1))


def _parallel_tools_reply(ctx: Context) -> Reply:
    return Reply(text=TOOL_INTRO, tools=ctx.tool_calls(2))


def _bare_tool_reply(ctx: Context) -> Reply:
    return Reply(tools=ctx.tool_calls(1))


def _utf8_reply(ctx: Context) -> Reply:
    return Reply(text=UTF8_TEXT)


def _long_reply(ctx: Context) -> Reply:
    return Reply(text=tuple(f" word{i}" for i in range(ctx.options.events)))


def _big_reply(ctx: Context) -> Reply:
    return Reply(text=("A big event follows: ", BIG_TOKEN, " That was it."))


# --- JSON -------------------------------------------------------------------------------------


def _dumps(payload: Any, pad: int = 0) -> str:
    """Compact JSON; `pad` spaces before the closing brace, as the Anthropic API sends in places."""
    text = orjson.dumps(payload).decode()
    return text[:-1] + " " * pad + "}" if pad else text


def _fragments(arguments: dict[str, Any], parts: int = 3) -> list[str]:
    """A tool call's JSON arguments cut into pieces, as models stream them."""
    text = _dumps(arguments)
    if len(text) <= 2:
        return [text]
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


# --- Anthropic Messages -----------------------------------------------------------------------


def _anthropic_events(ctx: Context, reply: Reply, *, first_index: int = 0) -> Iterator[Ev]:
    def ev(kind: Kind, payload: dict[str, Any], pad: int = 0) -> Ev:
        return Ev(kind, payload["type"], _dumps(payload, pad))

    message: dict[str, Any] = {
        "id": f"msg_{ctx.ident}",
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(ctx, 1),
    }
    yield ev(Kind.HEAD, {"type": "message_start", "message": message})
    blocks: list[tuple[dict[str, Any], Iterable[dict[str, Any]]]] = []
    if reply.thinking:
        thoughts = ({"type": "thinking_delta", "thinking": t} for t in reply.thinking)
        signature = {"type": "signature_delta", "signature": reply.signature}
        signed = itertools.chain(thoughts, [signature])
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, signed))
    if reply.text:
        texts = ({"type": "text_delta", "text": t} for t in reply.text)
        blocks.append(({"type": "text", "text": ""}, texts))
    for call in reply.tools:
        start = {"type": "tool_use", "id": f"toolu_{call.key}", "name": call.name, "input": {}}
        parts = ("", *_fragments(call.arguments))
        blocks.append((start, ({"type": "input_json_delta", "partial_json": p} for p in parts)))
    for index, (block, deltas) in enumerate(blocks, start=first_index):
        kind = Kind.CONTENT if block["type"] == "tool_use" else Kind.HEAD
        yield ev(kind, {"type": "content_block_start", "index": index, "content_block": block})
        if index == first_index:
            yield Ev(Kind.HEAD, "ping", '{"type": "ping"}')
        for delta in deltas:
            yield ev(Kind.CONTENT, {"type": "content_block_delta", "index": index, "delta": delta})
        yield ev(Kind.TAIL, {"type": "content_block_stop", "index": index}, pad=1)
    stop = "tool_use" if reply.tools else "end_turn"
    yield ev(
        Kind.TAIL,
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": reply.output_tokens},
        },
    )
    yield ev(Kind.END, {"type": "message_stop"}, pad=8)


def _anthropic_usage(ctx: Context, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": ctx.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def _anthropic_message(ctx: Context, reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.thinking:
        thinking = "".join(reply.thinking)
        content.append({"type": "thinking", "thinking": thinking, "signature": reply.signature})
    if reply.text:
        content.append({"type": "text", "text": "".join(reply.text)})
    for call in reply.tools:
        content.append(
            {
                "type": "tool_use",
                "id": f"toolu_{call.key}",
                "name": call.name,
                "input": call.arguments,
            }
        )
    return {
        "id": f"msg_{ctx.ident}",
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": content,
        "stop_reason": "tool_use" if reply.tools else "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(ctx, reply.output_tokens),
    }


# --- OpenAI Chat Completions ----------------------------------------------------------------


def _include_usage(request: Mapping[str, Any]) -> bool:
    opts = request.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


def _obfuscation(ctx: Context) -> Iterator[str] | None:
    """The pads of the stream's deltas when the request asks for them
    (``stream_options.include_obfuscation: true``), as OpenAI adds them to every delta of
    Chat Completions and Responses streams (there by default): random letters and digits of
    random length, here the same for the same stream. None: not asked for."""
    opts = ctx.request.get("stream_options")
    if not isinstance(opts, dict) or opts.get("include_obfuscation") is not True:
        return None
    rng = random.Random(zlib.crc32(f"{ctx.fmt} {ctx.ident}".encode()))
    alphabet = string.ascii_letters + string.digits
    return ("".join(rng.choices(alphabet, k=rng.randint(1, 16))) for _ in itertools.count())


def _chat_usage(ctx: Context, reply: Reply) -> dict[str, Any]:
    out = reply.output_tokens
    return {
        "prompt_tokens": ctx.input_tokens,
        "completion_tokens": out,
        "total_tokens": ctx.input_tokens + out,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": len(reply.thinking)},
    }


def _chat_events(ctx: Context, reply: Reply, *, first_index: int = 0) -> Iterator[Ev]:
    envelope = {
        "id": f"chatcmpl-{ctx.ident}",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": ctx.model,
        "system_fingerprint": "fp_mock",
    }
    usage = _include_usage(ctx.request)
    pads = _obfuscation(ctx)

    def chunk(kind: Kind, delta: dict[str, Any], finish: str | None = None) -> Ev:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        payload: dict[str, Any] = {**envelope, "choices": [choice]}
        if usage:  # "all other chunks will also include a usage field, but with a null value"
            payload["usage"] = None
        if pads is not None and kind is Kind.CONTENT:
            payload["obfuscation"] = next(pads)
        return Ev(kind, None, _dumps(payload))

    yield chunk(Kind.HEAD, {"role": "assistant", "content": "", "refusal": None})
    for t in reply.thinking:  # what compatible servers (DeepSeek, vLLM) send
        yield chunk(Kind.CONTENT, {"reasoning_content": t})
    for t in reply.text:
        yield chunk(Kind.CONTENT, {"content": t})
    for index, call in enumerate(reply.tools, start=first_index):
        function = {"name": call.name, "arguments": ""}
        first = {"index": index, "id": f"call_{call.key}", "type": "function", "function": function}
        yield chunk(Kind.CONTENT, {"tool_calls": [first]})
        for part in _fragments(call.arguments):
            fragment = {"index": index, "function": {"arguments": part}}
            yield chunk(Kind.CONTENT, {"tool_calls": [fragment]})
    yield chunk(Kind.TAIL, {}, "tool_calls" if reply.tools else "stop")
    if usage:
        payload = {**envelope, "choices": [], "usage": _chat_usage(ctx, reply)}
        yield Ev(Kind.TAIL, None, _dumps(payload))
    yield Ev(Kind.END, None, "[DONE]")


def _chat_completion(ctx: Context, reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(reply.text) if reply.text else None,
        "refusal": None,
    }
    if reply.thinking:
        message["reasoning_content"] = "".join(reply.thinking)
    if reply.tools:
        message["tool_calls"] = [
            {
                "id": f"call_{c.key}",
                "type": "function",
                "function": {"name": c.name, "arguments": _dumps(c.arguments)},
            }
            for c in reply.tools
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": "tool_calls" if reply.tools else "stop",
    }
    return {
        "id": f"chatcmpl-{ctx.ident}",
        "object": "chat.completion",
        "created": CREATED,
        "model": ctx.model,
        "choices": [choice],
        "usage": _chat_usage(ctx, reply),
        "system_fingerprint": "fp_mock",
    }


# --- OpenAI Responses -------------------------------------------------------------------------


def _response(
    ctx: Context, reply: Reply, status: str, output: list[Any], *, error: Any = None
) -> dict[str, Any]:
    done = status != "in_progress"
    out = reply.output_tokens
    usage = {
        "input_tokens": ctx.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": len(reply.thinking)},
        "total_tokens": ctx.input_tokens + out,
    }
    return {
        "id": f"resp_{ctx.ident}",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": error,
        "incomplete_details": None,
        "instructions": ctx.request.get("instructions"),
        "max_output_tokens": ctx.request.get("max_output_tokens"),
        "model": ctx.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": _list(ctx.request.get("tools")),
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage if done and status == "completed" else None,
        "user": None,
        "metadata": {},
    }


def _responses_items(ctx: Context, reply: Reply) -> Iterator[tuple[Kind, str, dict[str, Any]]]:
    """(kind, type, fields) of every event between response.in_progress and the terminal;
    the final output items are collected by `_responses_output`."""
    index = 0
    if reply.thinking:
        item_id = f"rs_{ctx.ident}"
        at = {"item_id": item_id, "output_index": index, "summary_index": 0}
        yield (
            Kind.HEAD,
            "response.output_item.added",
            {"output_index": index, "item": {"id": item_id, "type": "reasoning", "summary": []}},
        )
        yield (
            Kind.HEAD,
            "response.reasoning_summary_part.added",
            {**at, "part": {"type": "summary_text", "text": ""}},
        )
        for t in reply.thinking:
            yield Kind.CONTENT, "response.reasoning_summary_text.delta", {**at, "delta": t}
        text = "".join(reply.thinking)
        part = {"type": "summary_text", "text": text}
        yield Kind.TAIL, "response.reasoning_summary_text.done", {**at, "text": text}
        yield Kind.TAIL, "response.reasoning_summary_part.done", {**at, "part": part}
        yield (
            Kind.TAIL,
            "response.output_item.done",
            {"output_index": index, "item": _reasoning_item(ctx, reply)},
        )
        index += 1
    if reply.text:
        item_id = f"msg_{ctx.ident}"
        at = {"item_id": item_id, "output_index": index, "content_index": 0}
        added = {
            "id": item_id,
            "type": "message",
            "status": "in_progress",
            "content": [],
            "role": "assistant",
        }
        yield Kind.HEAD, "response.output_item.added", {"output_index": index, "item": added}
        yield (
            Kind.HEAD,
            "response.content_part.added",
            {**at, "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}},
        )
        for t in reply.text:
            yield Kind.CONTENT, "response.output_text.delta", {**at, "delta": t, "logprobs": []}
        item = _message_item(ctx, reply)
        text = item["content"][0]["text"]
        yield Kind.TAIL, "response.output_text.done", {**at, "text": text, "logprobs": []}
        yield Kind.TAIL, "response.content_part.done", {**at, "part": item["content"][0]}
        yield Kind.TAIL, "response.output_item.done", {"output_index": index, "item": item}
        index += 1
    for call in reply.tools:
        item = _function_item(call, status="in_progress", arguments="")
        at = {"item_id": item["id"], "output_index": index}
        yield Kind.CONTENT, "response.output_item.added", {"output_index": index, "item": item}
        for piece in _fragments(call.arguments):
            yield Kind.CONTENT, "response.function_call_arguments.delta", {**at, "delta": piece}
        arguments = _dumps(call.arguments)
        yield (
            Kind.TAIL,
            "response.function_call_arguments.done",
            {**at, "name": call.name, "arguments": arguments},
        )
        done = _function_item(call, status="completed", arguments=arguments)
        yield Kind.TAIL, "response.output_item.done", {"output_index": index, "item": done}
        index += 1


def _reasoning_item(ctx: Context, reply: Reply) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": "".join(reply.thinking)}]
    return {"id": f"rs_{ctx.ident}", "type": "reasoning", "summary": summary}


def _message_item(ctx: Context, reply: Reply) -> dict[str, Any]:
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": "".join(reply.text)}
    return {
        "id": f"msg_{ctx.ident}",
        "type": "message",
        "status": "completed",
        "content": [part],
        "role": "assistant",
    }


def _function_item(call: ToolCall, *, status: str, arguments: str) -> dict[str, Any]:
    return {
        "id": f"fc_{call.key}",
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": f"call_{call.key}",
        "name": call.name,
    }


def _responses_output(ctx: Context, reply: Reply) -> list[dict[str, Any]]:
    output = []
    if reply.thinking:
        output.append(_reasoning_item(ctx, reply))
    if reply.text:
        output.append(_message_item(ctx, reply))
    for call in reply.tools:
        output.append(_function_item(call, status="completed", arguments=_dumps(call.arguments)))
    return output


def _responses_events(ctx: Context, reply: Reply) -> Iterator[Ev]:
    seq = itertools.count()
    pads = _obfuscation(ctx)

    def ev(kind: Kind, type_: str, fields: dict[str, Any]) -> Ev:
        payload = {"type": type_, "sequence_number": next(seq), **fields}
        if pads is not None and type_.endswith(".delta"):
            payload["obfuscation"] = next(pads)
        return Ev(kind, type_, _dumps(payload))

    yield ev(Kind.HEAD, "response.created", {"response": _response(ctx, reply, "in_progress", [])})
    yield ev(
        Kind.HEAD, "response.in_progress", {"response": _response(ctx, reply, "in_progress", [])}
    )
    for kind, type_, fields in _responses_items(ctx, reply):
        yield ev(kind, type_, fields)
    final = _response(ctx, reply, "completed", _responses_output(ctx, reply))
    yield ev(Kind.END, "response.completed", {"response": final})


# --- Gemini -----------------------------------------------------------------------------------


def _gemini_usage(ctx: Context, reply: Reply | None) -> dict[str, int]:
    if reply is None:  # chunks before the last one carry the prompt count only
        return {"promptTokenCount": ctx.input_tokens, "totalTokenCount": ctx.input_tokens}
    usage = {
        "promptTokenCount": ctx.input_tokens,
        "candidatesTokenCount": reply.output_tokens,
        "totalTokenCount": ctx.input_tokens + reply.output_tokens,
    }
    if reply.thinking:
        usage["thoughtsTokenCount"] = len(reply.thinking)
        usage["totalTokenCount"] += len(reply.thinking)
    return usage


def _gemini_response(
    ctx: Context, parts: list[dict[str, Any]], finish: str | None, usage: dict[str, int]
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish is not None:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": ctx.model,
        "responseId": f"mock-{ctx.ident}",
    }


def _gemini_events(ctx: Context, reply: Reply) -> Iterator[Ev]:
    def chunk(kind: Kind, parts: list[dict[str, Any]], final: bool = False) -> Ev:
        usage = _gemini_usage(ctx, reply if final else None)
        payload = _gemini_response(ctx, parts, "STOP" if final else None, usage)
        return Ev(kind, None, _dumps(payload))

    for t in reply.thinking:
        yield chunk(Kind.CONTENT, [{"text": t, "thought": True}])
    signature = reply.signature if reply.thinking else None
    for t in reply.text:
        part: dict[str, Any] = {"text": t}
        if signature is not None:  # the first part after the thoughts carries their signature
            part["thoughtSignature"], signature = signature, None
        yield chunk(Kind.CONTENT, [part])
    if reply.tools:  # function calls arrive whole, parallel ones in one chunk
        calls: list[dict[str, Any]] = [
            {"functionCall": {"name": c.name, "args": c.arguments}} for c in reply.tools
        ]
        if signature is not None:
            calls[0]["thoughtSignature"] = signature
        yield chunk(Kind.CONTENT, calls)
    yield chunk(Kind.END, [{"text": ""}], final=True)


def _gemini_body(ctx: Context, reply: Reply) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if reply.thinking:
        parts.append({"text": "".join(reply.thinking), "thought": True})
    if reply.text:
        parts.append({"text": "".join(reply.text)})
    parts.extend({"functionCall": {"name": c.name, "args": c.arguments}} for c in reply.tools)
    return _gemini_response(ctx, parts, "STOP", _gemini_usage(ctx, reply))


# --- errors, per format -----------------------------------------------------------------------


class ErrorKind(StrEnum):
    OVERLOADED = "overloaded"
    RATE_LIMIT = "rate_limit"
    SERVER = "server"
    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"


# kind -> (status, Anthropic error type, OpenAI type, OpenAI code, Gemini status, message)
_ERRORS: dict[ErrorKind, tuple[int, str, str, str | None, str, str]] = {
    ErrorKind.OVERLOADED: (
        529,
        "overloaded_error",
        "server_error",
        None,
        "UNAVAILABLE",
        "Overloaded (mock upstream)",
    ),
    ErrorKind.RATE_LIMIT: (
        429,
        "rate_limit_error",
        "requests",
        "rate_limit_exceeded",
        "RESOURCE_EXHAUSTED",
        "Rate limit reached (mock upstream); retry in 2s",
    ),
    ErrorKind.SERVER: (
        500,
        "api_error",
        "server_error",
        None,
        "INTERNAL",
        "Internal server error (mock upstream)",
    ),
    ErrorKind.INVALID_REQUEST: (
        400,
        "invalid_request_error",
        "invalid_request_error",
        None,
        "INVALID_ARGUMENT",
        "Invalid request (mock upstream)",
    ),
    ErrorKind.NOT_FOUND: (
        404,
        "not_found_error",
        "invalid_request_error",
        "not_found",
        "NOT_FOUND",
        "Not found (mock upstream)",
    ),
    ErrorKind.TIMEOUT: (
        408,
        "timeout_error",
        "timeout",
        None,
        "DEADLINE_EXCEEDED",
        "Request timed out (mock upstream)",
    ),
}


def error_status(fmt: str | None, kind: ErrorKind) -> int:
    """The HTTP status for an error kind. Only Anthropic uses 529; OpenAI and Gemini answer an
    overload with 503."""
    status = _ERRORS[kind][0]
    return 503 if status == 529 and fmt != ANTHROPIC else status


def error_payload(fmt: str | None, kind: ErrorKind, message: str | None = None) -> dict[str, Any]:
    """The format's error object (an HTTP error body, or the data of an in-band error)."""
    _, ant_type, oai_type, oai_code, gem_status, default = _ERRORS[kind]
    text = message or default
    if fmt == ANTHROPIC:
        return {"type": "error", "error": {"type": ant_type, "message": text}}
    if fmt == GEMINI:  # `error` first: google-genai recognises an error only by that prefix
        return {"error": {"code": error_status(fmt, kind), "message": text, "status": gem_status}}
    return {"error": {"message": text, "type": oai_type, "param": None, "code": oai_code}}


def error_plan(
    fmt: str | None,
    kind: ErrorKind,
    message: str | None = None,
    *,
    status: int | None = None,
    scenario: str | None = None,
    model: str | None = None,
    ident: str = "mock",
) -> Plan:
    """An HTTP error answer in the format's shape (`status` overrides the kind's own)."""
    body = orjson.dumps(error_payload(fmt, kind, message))
    code = error_status(fmt, kind) if status is None else status
    headers = [("content-type", "application/json"), *_id_headers(fmt, ident)]
    if code == 429:
        headers.append(("retry-after", "2"))
    if scenario is not None:
        headers.append((HEADER_SCENARIO, scenario))
    return Plan(code, headers, [Step(body)], len(body), fmt, scenario, model, False)


def _id_headers(fmt: str | None, ident: str) -> list[tuple[str, str]]:
    if fmt == ANTHROPIC:
        return [("request-id", f"req_{ident}")]
    if fmt in (OPENAI_CHAT, OPENAI_RESPONSES):
        return [("x-request-id", f"req_{ident}")]
    return []


def _inband_error(ctx: Context, *, sequence_number: int) -> list[Frame]:
    """The format's in-stream error, as the real APIs send it after HTTP 200."""
    eol = ctx.eol
    if ctx.fmt == ANTHROPIC:
        data = _dumps(error_payload(ANTHROPIC, ErrorKind.OVERLOADED))
        return [Frame(Kind.END, sse.encode(data, event="error", eol=eol))]
    if ctx.fmt == OPENAI_CHAT:  # OpenAI follows its error chunk with [DONE]
        data = _dumps(error_payload(OPENAI_CHAT, ErrorKind.SERVER))
        done = sse.encode("[DONE]", eol=eol)
        return [Frame(Kind.END, sse.encode(data, eol=eol)), Frame(Kind.END, done)]
    if ctx.fmt == OPENAI_RESPONSES:
        # The nested first-party variant: openai-python raises only when `error` is an object.
        error = {
            "type": "server_error",
            "code": "server_error",
            "message": "Internal server error (mock upstream)",
            "param": None,
        }
        data = _dumps({"type": "error", "error": error, "sequence_number": sequence_number})
        frames = [Frame(Kind.END, sse.encode(data, event="error", eol=eol))]
        if sequence_number:  # after a response.created, the response fails too
            failed = _response(
                ctx,
                Reply(),
                "failed",
                [],
                error={"code": "server_error", "message": error["message"]},
            )
            data = _dumps(
                {
                    "type": "response.failed",
                    "sequence_number": sequence_number + 1,
                    "response": failed,
                }
            )
            frames.append(Frame(Kind.END, sse.encode(data, event="response.failed", eol=eol)))
        return frames
    data = _dumps(error_payload(GEMINI, ErrorKind.OVERLOADED))
    return [Frame(Kind.END, sse.encode(data, eol=eol))]


# --- rendering --------------------------------------------------------------------------------


_EVENTS: dict[str, Callable[..., Iterator[Ev]]] = {
    ANTHROPIC: _anthropic_events,
    OPENAI_CHAT: _chat_events,
    OPENAI_RESPONSES: _responses_events,
    GEMINI: _gemini_events,
}
_BODIES: dict[str, Callable[[Context, Reply], dict[str, Any]]] = {
    ANTHROPIC: _anthropic_message,
    OPENAI_CHAT: _chat_completion,
    OPENAI_RESPONSES: lambda ctx, reply: _response(
        ctx, reply, "completed", _responses_output(ctx, reply)
    ),
    GEMINI: _gemini_body,
}


def events(ctx: Context, reply: Reply, **kw: Any) -> Iterator[Ev]:
    """The reply as the format's events, before encoding (a healthy stream)."""
    return _EVENTS[ctx.fmt](ctx, reply, **kw)


def frames(ctx: Context, reply: Reply, *, eol: str | None = None, **kw: Any) -> Iterator[Frame]:
    """The reply as the format's stream: SSE with the format's line ends (or `eol`); for a
    Gemini stream requested without alt=sse, the JSON array Google sends instead."""
    events = _EVENTS[ctx.fmt](ctx, reply, **kw)
    if not ctx.sse:
        for i, e in enumerate(events):
            yield Frame(e.kind, (b"[" if i == 0 else b",\r\n") + e.data.encode())
        yield Frame(Kind.END, b"]")
        return
    end = eol or ctx.eol
    for e in events:
        yield Frame(e.kind, sse.encode(e.data, event=e.event, eol=end))


def _after_content(items: Sequence[Frame], n: int = COMMIT_EVENTS) -> int:
    """The position just after the `n`th content frame (or the end)."""
    seen = 0
    for i, f in enumerate(items):
        if f.kind is Kind.CONTENT:
            seen += 1
            if seen == n:
                return i + 1
    return len(items)


def _first_content(items: Sequence[Frame], *, named: bool = False) -> int:
    for i, f in enumerate(items):
        if f.kind is Kind.CONTENT and (not named or f.data.startswith(b"event:")):
            return i
    raise ValueError("the stream has no content event")


def _big(data: bytes, size: int) -> Iterator[bytes]:
    """`data` with each big-event token replaced by `size` bytes of filler, in 64 KiB pieces
    that share one buffer."""
    pieces = data.split(_BIG_TOKEN)
    for i, piece in enumerate(pieces):
        if i:
            full, rest = divmod(size, len(_FILLER))
            yield from itertools.repeat(_FILLER, full)
            if rest:
                yield _FILLER[:rest]
        if piece:
            yield piece


# --- shapes: how each scenario treats the rendered stream ------------------------------------

Shape = Callable[[Context, Reply], Iterable[Item]]


def _as_is(ctx: Context, reply: Reply) -> Iterable[Item]:
    return frames(ctx, reply)


def _first_block_at_1(ctx: Context, reply: Reply) -> Iterable[Item]:
    return frames(ctx, reply, first_index=1)


def _interleaved_tools(ctx: Context, reply: Reply) -> Iterable[Item]:
    """Chat tool-call fragments of parallel calls alternate between the calls (some bridges
    stream calls side by side): every call opens, then the argument fragments take turns."""
    items = list(frames(ctx, reply))
    calls = [i for i, f in enumerate(items) if b'"tool_calls"' in f.data]
    heads = [i for i in calls if b'"type":"function"' in items[i].data]
    if len(heads) < 2:
        return items
    by_call = [
        [items[i] for i in calls if start <= i < end]
        for start, end in zip(heads, [*heads[1:], calls[-1] + 1], strict=True)
    ]
    reordered = [call[0] for call in by_call]
    for fragments in itertools.zip_longest(*(call[1:] for call in by_call)):
        reordered += [f for f in fragments if f is not None]
    return [*items[: calls[0]], *reordered, *items[calls[-1] + 1 :]]


def _keepalive_mid_event(ctx: Context, reply: Reply) -> Iterable[Item]:
    """A keep-alive comment and its blank line land between `event:` and `data:`: the blank
    line dispatches a data-less event and orphans the data."""
    items = list(frames(ctx, reply))
    i = _first_content(items, named=True)
    return [*items[:i], *_split_between_lines(items[i]), *items[i + 1 :]]


def _keepalive_mid_data(ctx: Context, reply: Reply) -> Iterable[Item]:
    """A keep-alive written into the middle of a `data:` line (a proxy passing bytes through):
    the line ends early and its rest becomes an unknown field."""
    items = list(frames(ctx, reply))
    i = _first_content(items)
    return [*items[:i], *_split_inside_line(items[i]), *items[i + 1 :]]


def _keepalive_race(ctx: Context, reply: Reply) -> Iterable[Item]:
    """A keep-alive spliced into every event, as a gateway's heartbeat timer racing its writer
    does: between `event:` and `data:` in every other named event, inside the data line in the
    rest."""
    for i, f in enumerate(frames(ctx, reply)):
        if f.data.startswith(b"event:") and i % 2 == 0:
            yield from _split_between_lines(f)
        else:
            yield from _split_inside_line(f)


def _split_between_lines(frame: Frame) -> list[Item]:
    data = frame.data
    cut = data.index(b"\n") + 1
    return [Frame(frame.kind, data[:cut]), Step(sse.encode(comment="keep-alive")), Step(data[cut:])]


def _split_inside_line(frame: Frame) -> list[Item]:
    data = frame.data
    start = data.index(b"data: ") + len(b"data: ")
    end = data.index(b"\n", start)
    cut = (start + end) // 2
    while not data[cut : cut + 1].isalnum():  # so the rest reads as a plain unknown field
        cut += 1
    keepalive = sse.encode(comment="keep-alive")
    return [Frame(frame.kind, data[:cut]), Step(keepalive), Step(data[cut:])]


def _double_start(ctx: Context, reply: Reply) -> Iterable[Item]:
    """The first event of a failed attempt, then a whole second attempt (a proxy that retried
    after forwarding the start)."""
    first = next(iter(frames(replace(ctx, ident=f"{ctx.ident}a"), reply)))
    return [first, *frames(ctx, reply)]


def _restart_after_content(ctx: Context, reply: Reply) -> Iterable[Item]:
    """A failed attempt's start and first content, then a whole second attempt (a gateway that
    retried after the client had part of the answer)."""
    first = list(frames(replace(ctx, ident=f"{ctx.ident}a"), reply))
    return [*first[: _after_content(first)], *frames(ctx, reply)]


def _comment_only(ctx: Context, reply: Reply) -> Iterable[Item]:
    comment = sse.encode(comment="OPENROUTER PROCESSING", eol=ctx.eol)
    return [Frame(Kind.HEAD, comment) for _ in range(3)]


def _done_only(ctx: Context, reply: Reply) -> Iterable[Item]:
    return [Frame(Kind.END, sse.encode("[DONE]", eol=ctx.eol))]


def _without_end(ctx: Context, reply: Reply) -> Iterable[Item]:
    return (f for f in frames(ctx, reply) if f.kind is not Kind.END)


def _truncated(ctx: Context, reply: Reply) -> Iterable[Item]:
    """Cut before the terminal event; a chat stream is cut before its finish chunk (without
    [DONE] alone it would be `missing-done`)."""
    cut = {Kind.TAIL, Kind.END} if ctx.fmt == OPENAI_CHAT else {Kind.END}
    return (f for f in frames(ctx, reply) if f.kind not in cut)


def _inband_error_after_content(ctx: Context, reply: Reply) -> Iterable[Item]:
    items = list(frames(ctx, reply))
    cut = _after_content(items)
    return [*items[:cut], *_inband_error(ctx, sequence_number=cut)]


def _inband_error_first(ctx: Context, reply: Reply) -> Iterable[Item]:
    return _inband_error(ctx, sequence_number=0)


def _split_utf8(ctx: Context, reply: Reply) -> Iterable[Item]:
    """Every multi-byte character is cut after its lead byte, the halves in separate writes."""
    for f in frames(ctx, reply):
        cuts = [i + 1 for i, b in enumerate(f.data) if b >= 0xC0]
        if not cuts:
            yield f
            continue
        bounds = [0, *cuts, len(f.data)]
        yield Frame(f.kind, f.data[: bounds[1]])
        for a, b in itertools.pairwise(bounds[1:]):
            yield Step(f.data[a:b], delay=SPLIT_GAP)


def _crlf(ctx: Context, reply: Reply) -> Iterable[Item]:
    return frames(ctx, reply, eol="\r\n")


def _no_final_blank(ctx: Context, reply: Reply) -> Iterable[Item]:
    items = list(frames(ctx, reply))
    last = items[-1]
    return [*items[:-1], Frame(last.kind, last.data[: -len(ctx.eol)])]


def _big_event(ctx: Context, reply: Reply) -> Iterable[Item]:
    size = ctx.options.big_bytes
    for f in frames(ctx, reply):
        if _BIG_TOKEN not in f.data:
            yield f
            continue
        pieces = _big(f.data, size)
        yield Frame(f.kind, next(pieces))
        yield from (Step(p) for p in pieces)


def _stall_before_first(ctx: Context, reply: Reply) -> Iterable[Item]:
    return [stall(ctx.options.stall), *frames(ctx, reply)]


def _stall_after_commit(ctx: Context, reply: Reply) -> Iterable[Item]:
    items = list(frames(ctx, reply))
    cut = _after_content(items)
    return [*items[:cut], stall(ctx.options.stall), *items[cut:]]


def _drop(ctx: Context, reply: Reply) -> Iterable[Item]:
    items = list(frames(ctx, reply))
    return [*items[: _after_content(items)], DROP]


# JSON (non-streaming) answers: the body in one write unless the scenario is about timing.
JsonShape = Callable[[Context, bytes], Iterable[Step]]


def _json_whole(ctx: Context, body: bytes) -> Iterable[Step]:
    return [Step(body)]


def _json_big(ctx: Context, body: bytes) -> Iterable[Step]:
    return (Step(p) for p in _big(body, ctx.options.big_bytes))


def _json_slow(ctx: Context, body: bytes) -> Iterable[Step]:
    return [Step(body, delay=ctx.gap)]


def _json_stall_before(ctx: Context, body: bytes) -> Iterable[Step]:
    return [stall(ctx.options.stall), Step(body)]


def _json_stall_after(ctx: Context, body: bytes) -> Iterable[Step]:
    half = len(body) // 2
    return [Step(body[:half]), stall(ctx.options.stall), Step(body[half:])]


def _json_drop(ctx: Context, body: bytes) -> Iterable[Step]:
    return [Step(body[: len(body) // 2]), DROP]


# --- pacing -----------------------------------------------------------------------------------


def pace(items: Iterable[Item], gap: float) -> Iterator[Step]:
    """Frames become writes with `gap` seconds before each (but the first); steps keep their
    own timing."""
    first = True
    for item in items:
        if isinstance(item, Step):
            yield item
            continue
        yield Step(item.data, 0.0 if first else gap)
        first = False


def rechunk(steps: Iterable[Step], size: int | None) -> Iterator[Step]:
    """Re-cut the written bytes into `size`-byte writes, across event boundaries.

    Bytes short of a full write wait, through delays, for the next event (as a TCP segment
    holding the end of one event and the start of the next would); a stall, a drop or the end
    of the body flushes them first, so what was sent before a stall arrives before it.
    """
    if size is None:
        yield from steps
        return
    pending = bytearray()
    delay = 0.0
    for step in steps:
        if step.action is not Action.WRITE:
            if pending:
                yield Step(bytes(pending), delay)
                pending.clear()
                delay = 0.0
            yield replace(step, delay=step.delay + delay)
            delay = 0.0
            continue
        delay += step.delay
        pending += step.data
        while len(pending) >= size:
            yield Step(bytes(pending[:size]), delay)
            del pending[:size]
            delay = 0.0
    if pending or delay:  # a trailing delay still holds back the end of the body
        yield Step(bytes(pending), delay)


# --- the scenario table -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the table. `expected` maps each format the scenario applies to onto the rule
    IDs a validator should report for its stream."""

    name: str
    description: str
    receives: str  # what a client gets
    expected: Mapping[str, frozenset[str]]
    reply: Callable[[Context], Reply] = _text_reply
    shape: Shape = _as_is
    json: JsonShape = _json_whole
    gap: float = 0.0  # default seconds between events
    error: ErrorKind | None = None  # an HTTP error scenario: every request gets this error
    error_status: int | None = None  # ... with this status instead of the kind's own
    stream_only: bool = False  # a JSON (non-streaming) request gets the healthy body
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers of a stream

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(f for f in FORMATS if f in self.expected)


def _every(*rules: str) -> dict[str, frozenset[str]]:
    return dict.fromkeys(FORMATS, frozenset(rules))


def _per(**by_format: set[str]) -> dict[str, frozenset[str]]:
    names = {
        "anthropic": ANTHROPIC,
        "chat": OPENAI_CHAT,
        "responses": OPENAI_RESPONSES,
        "gemini": GEMINI,
    }
    return {names[k]: frozenset(v) for k, v in by_format.items()}


_TABLE: tuple[Scenario, ...] = (
    Scenario("healthy", "a short text answer", "a complete message", _every()),
    Scenario(
        "thinking",
        "thinking then text: Anthropic thinking block with signature, Responses reasoning "
        "summary, Chat reasoning_content deltas, Gemini thought parts",
        "a complete message with its reasoning",
        _every(),
        reply=_thinking_reply,
    ),
    Scenario(
        "tool",
        "a sentence, then one tool call named after the request's first tool",
        "a message ending in a tool call with JSON arguments",
        _every(),
        reply=_tool_reply,
    ),
    Scenario(
        "parallel-tools",
        "a sentence, then two tool calls (the request's first two tools)",
        "a message ending in two tool calls",
        _every(),
        reply=_parallel_tools_reply,
    ),
    Scenario(
        "keepalive-mid-event",
        "a keep-alive comment and blank line between event: and data:",
        "a data-less event then a nameless one: SDKs fail JSON-parsing or drop the delta",
        _per(anthropic={"SSE-13", "ANT-1"}, responses={"SSE-13", "RSP-1"}),
        shape=_keepalive_mid_event,
        stream_only=True,
    ),
    Scenario(
        "keepalive-mid-data",
        "a keep-alive written inside a data: line",
        "a JSON parse error mid-stream",
        _per(
            anthropic={"PAY-1", "SSE-18"},
            chat={"PAY-1", "SSE-18", "OAI-17"},
            responses={"PAY-1", "SSE-18", "RSP-3", "RSP-8"},
            gemini={"PAY-1", "SSE-18", "GEM-2"},
        ),
        shape=_keepalive_mid_data,
        stream_only=True,
    ),
    Scenario(
        "keepalive-race",
        "a keep-alive spliced into every event: between event: and data: in every other named "
        "event, inside the data line in the rest (a heartbeat racing the writer)",
        "no event parses: the SDKs fail at the first one",
        _per(
            anthropic={"SSE-13", "ANT-1", "PAY-1", "SSE-18", "ANT-18"},
            chat={"PAY-1", "SSE-18", "OAI-17", "SSE-15", "OAI-3"},
            responses={"SSE-13", "RSP-1", "PAY-1", "SSE-18", "RSP-3", "RSP-7", "RSP-11"},
            gemini={"PAY-1", "SSE-18", "GEM-2", "SSE-15", "GEM-8"},
        ),
        shape=_keepalive_race,
        stream_only=True,
    ),
    Scenario(
        "tool-index-1",
        "a tool call at index 1 with nothing at index 0 (Anthropic block index, Chat tool-call "
        "index)",
        "anthropic-python IndexError; openai-python misaligned tool calls",
        _per(anthropic={"ANT-7"}, chat={"OAI-10"}),
        reply=_bare_tool_reply,
        shape=_first_block_at_1,
        stream_only=True,
    ),
    Scenario(
        "interleaved-tools",
        "a sentence, then two tool calls whose Chat argument fragments take turns",
        "openai-python accumulates both; helpers that finalize a call when the next begins cut "
        "it short",
        _per(chat={"OAI-11"}),
        reply=_parallel_tools_reply,
        shape=_interleaved_tools,
        stream_only=True,
    ),
    Scenario(
        "double-start",
        "the start event of a failed attempt, then a whole second attempt (a second "
        "message_start / response.created, as after a proxy retry)",
        "TS SDK throws; Python SDK merges both attempts",
        _per(anthropic={"ANT-5"}, responses={"RSP-3", "RSP-4", "RSP-10"}),
        shape=_double_start,
        stream_only=True,
    ),
    Scenario(
        "restart-after-content",
        "the start and first content of a failed attempt, then a whole second attempt (a "
        "second message_start / response.created after content, as after a gateway's retry)",
        "TS SDK throws; Python SDK merges both answers into one message",
        _per(
            anthropic={"ANT-5"}, responses={"RSP-3", "RSP-4", "RSP-5", "RSP-6", "RSP-8", "RSP-10"}
        ),
        shape=_restart_after_content,
        stream_only=True,
    ),
    Scenario(
        "comment-only",
        "three ': OPENROUTER PROCESSING' comments, then the end",
        "an empty answer and no error",
        _per(
            anthropic={"SSE-15", "ANT-18"},
            chat={"SSE-15", "OAI-3"},
            responses={"SSE-15", "RSP-11"},
            gemini={"SSE-15", "GEM-2", "GEM-8"},
        ),
        shape=_comment_only,
        stream_only=True,
    ),
    Scenario(
        "done-only",
        "'data: [DONE]' and nothing else",
        "an empty answer and no error",
        _per(chat={"SSE-15", "OAI-13"}),
        shape=_done_only,
        stream_only=True,
    ),
    Scenario(
        "missing-done",
        "a complete chat stream without its [DONE]",
        "a complete-looking answer; clients waiting for [DONE] hang",
        _per(chat={"OAI-3"}),
        shape=_without_end,
        stream_only=True,
    ),
    Scenario(
        "truncated",
        "the body ends cleanly before the terminal event: no message_stop / response.completed "
        "/ finishReason chunk; a chat stream stops before its finish chunk",
        "a partial answer that looks complete to lenient clients",
        _per(anthropic={"ANT-18"}, chat={"OAI-3"}, responses={"RSP-11"}, gemini={"GEM-8"}),
        shape=_truncated,
        stream_only=True,
    ),
    Scenario(
        "json-error-200",
        "HTTP 200 with a JSON error body (application/json), even for a stream",
        "SDK streams see zero events and no error",
        _every("HTTP-2", "HTTP-5"),
        error=ErrorKind.OVERLOADED,
        error_status=200,
    ),
    Scenario(
        "inband-error",
        "some content, then the format's in-stream error (Anthropic overloaded_error; Chat error "
        "chunk + [DONE]; Responses error + response.failed; Gemini error chunk)",
        "the SDK raises after part of the answer",
        _per(anthropic={"ANT-20"}, chat={"OAI-16"}, responses={"RSP-12"}, gemini={"GEM-9"}),
        shape=_inband_error_after_content,
        stream_only=True,
    ),
    Scenario(
        "inband-error-first",
        "the format's in-stream error as the first event",
        "the SDK raises before any content",
        _per(anthropic={"ANT-20"}, chat={"OAI-16"}, responses={"RSP-12"}, gemini={"GEM-9"}),
        shape=_inband_error_first,
        stream_only=True,
    ),
    Scenario(
        "split-utf8",
        "non-ASCII text; every multi-byte character split across two writes",
        "a complete message (decoders must hold partial characters)",
        _every(),
        reply=_utf8_reply,
        shape=_split_utf8,
        stream_only=True,
    ),
    Scenario(
        "crlf",
        "the healthy stream framed with CRLF (Gemini's own framing already is)",
        "a complete message",
        _every(),
        shape=_crlf,
        stream_only=True,
    ),
    Scenario(
        "no-final-blank",
        "the last event without its terminating blank line",
        "SDKs discard the last event (message_stop, [DONE], response.completed, finish chunk)",
        _per(
            anthropic={"SSE-14", "ANT-18"},
            chat={"SSE-14", "OAI-3"},
            responses={"SSE-14", "RSP-11"},
            gemini={"SSE-14", "GEM-6", "GEM-8"},
        ),
        shape=_no_final_blank,
        stream_only=True,
    ),
    Scenario(
        "big-event",
        "one text delta of x-mock-big-bytes (default 32 MiB), generated while it is written; "
        "Responses repeats the text in its *.done events and response.completed",
        "a complete message with a huge text",
        _every(),
        reply=_big_reply,
        shape=_big_event,
        json=_json_big,
    ),
    Scenario(
        "overloaded",
        "HTTP 529 (OpenAI, Gemini: 503) with the format's overloaded error body",
        "the SDK's overloaded / internal-server error, retried by default",
        _every("HTTP-1"),
        error=ErrorKind.OVERLOADED,
    ),
    Scenario(
        "rate-limited",
        "HTTP 429 with retry-after: 2 and the format's rate-limit error",
        "the SDK's RateLimitError, retried after 2 s by default",
        _every("HTTP-1"),
        error=ErrorKind.RATE_LIMIT,
    ),
    Scenario(
        "server-error",
        "HTTP 500 with the format's error body",
        "the SDK's InternalServerError",
        _every("HTTP-1"),
        error=ErrorKind.SERVER,
    ),
    Scenario(
        "request-timeout",
        "HTTP 408 with the format's timeout error",
        "the SDK's status error for 408, retried by default",
        _every("HTTP-1"),
        error=ErrorKind.TIMEOUT,
    ),
    Scenario(
        "bad-request",
        "HTTP 400 with the format's invalid-request error",
        "the SDK's BadRequestError (not retried)",
        _every(),  # HTTP-6 is info: the client's own request was refused
        error=ErrorKind.INVALID_REQUEST,
    ),
    Scenario(
        "stall-before-first",
        "response headers, then nothing for x-mock-stall-ms, then healthy",
        "a complete message after a long wait",
        _every(),
        shape=_stall_before_first,
        json=_json_stall_before,
    ),
    Scenario(
        "stall-after-commit",
        "a few content events, silence for x-mock-stall-ms, then the rest",
        "a complete message with a long pause in the middle",
        _every(),
        shape=_stall_after_commit,
        json=_json_stall_after,
    ),
    Scenario(
        "slow",
        "healthy with 50 ms between events (or x-mock-delay-ms)",
        "a complete message, slowly",
        _every(),
        gap=SLOW_GAP,
        json=_json_slow,
    ),
    Scenario(
        "drop",
        "a few content events, then the connection closes without ending the body",
        "a transport error (incomplete chunked read) after part of the answer",
        _per(anthropic={"ANT-18"}, chat={"OAI-3"}, responses={"RSP-11"}, gemini={"GEM-8"}),
        shape=_drop,
        json=_json_drop,
    ),
    Scenario(
        "long",
        "healthy with x-mock-events text deltas (default 1000), for benchmarks",
        "a complete, long message",
        _every(),
        reply=_long_reply,
    ),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in _TABLE}


def find_scenario(name: str) -> Scenario | None:
    """A scenario of the table, or a broken stream of the rule catalogue (``rule-ANT-9``)."""
    found = SCENARIOS.get(name)
    if found is None and name.startswith(CATALOGUE_PREFIX):
        # Imported here: the catalogue is built from this module's renderers.
        from mitmllm.mock.catalogue import CATALOGUE

        found = CATALOGUE.get(name)
    return found


def expected_rules(scenario: str, fmt: str) -> set[str]:
    """Rule IDs a validator should report (errors and warnings) for `scenario`'s stream in
    `fmt`, for a plain streaming request. KeyError if the scenario does not apply to `fmt`."""
    found = find_scenario(scenario)
    if found is None:
        raise KeyError(scenario)
    return set(found.expected[fmt])


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """What the path says about a request."""

    fmt: str
    path: str  # without the /mock/NAME/ prefix
    scenario: str | None = None  # from the /mock/NAME/ prefix
    model: str | None = None  # from the path (Gemini)
    stream: bool | None = None  # from the path (Gemini); None: the body's `stream` flag
    count_tokens: bool = False


_GEMINI_PATH = re.compile(
    r"/models/(?P<model>[^/]+):(?P<verb>streamGenerateContent|generateContent)$"
)


def route(method: str, path: str) -> Route | None:
    """The format a POST path belongs to, or None."""
    scenario = None
    if path.startswith(PATH_PREFIX):
        scenario, _, rest = path[len(PATH_PREFIX) :].partition("/")
        path = "/" + rest
    if method.upper() != "POST":
        return None
    if path.endswith("/messages/count_tokens"):
        return Route(ANTHROPIC, path, scenario, count_tokens=True)
    if path.endswith("/messages"):
        return Route(ANTHROPIC, path, scenario)
    if path.endswith("/chat/completions"):
        return Route(OPENAI_CHAT, path, scenario)
    if path.endswith("/responses"):
        return Route(OPENAI_RESPONSES, path, scenario)
    m = _GEMINI_PATH.search(path)
    if m:
        stream = m["verb"] == "streamGenerateContent"
        return Route(GEMINI, path, scenario, model=m["model"], stream=stream)
    return None


def plan_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    default_scenario: str | None = None,
    ident: str = "mock",
) -> Plan:
    """The whole answer to one request. `ident` makes the ids in the answer unique."""
    lower = {k.lower(): v for k, v in headers.items()}
    where = route(method, path)
    if where is None:
        message = (
            f"mock upstream: no LLM endpoint at {method} {path}; POST to .../v1/messages, "
            ".../chat/completions, .../responses or .../models/{model}:streamGenerateContent"
        )
        return error_plan(None, ErrorKind.NOT_FOUND, message, ident=ident)
    fmt = where.fmt
    try:
        request = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        request = None
    if not isinstance(request, dict):
        message = "mock upstream: the request body is not a JSON object"
        return error_plan(fmt, ErrorKind.INVALID_REQUEST, message, ident=ident)
    raw_model = where.model if where.model is not None else request.get("model")
    model, _, model_scenario = str(raw_model or "").partition(MODEL_SUFFIX)
    name = (
        lower.get(HEADER_SCENARIO)
        or where.scenario
        or model_scenario
        or default_scenario
        or DEFAULT_SCENARIO
    )
    scenario = find_scenario(name)
    if scenario is None:
        message = (
            f"unknown mock scenario {name!r}; valid scenarios: {', '.join(SCENARIOS)}, "
            f"or {CATALOGUE_PREFIX}<rule ID> for a broken stream of the rule catalogue"
        )
        return error_plan(fmt, ErrorKind.INVALID_REQUEST, message, model=model, ident=ident)
    if fmt not in scenario.expected:
        message = (
            f"mock scenario {name!r} does not apply to {fmt}; it applies to "
            f"{', '.join(scenario.formats)}"
        )
        return error_plan(fmt, ErrorKind.INVALID_REQUEST, message, model=model, ident=ident)
    try:
        options = Options.from_headers(lower)
    except ValueError as e:
        return error_plan(fmt, ErrorKind.INVALID_REQUEST, f"mock upstream: {e}", ident=ident)
    ctx = Context(
        fmt=fmt,
        model=model,
        request=request,
        options=options,
        ident=ident,
        stream=where.stream if where.stream is not None else bool(request.get("stream")),
        sse=fmt != GEMINI or query.get("alt") == "sse",
        gap=scenario.gap if options.delay is None else options.delay,
        input_tokens=max(1, len(body) // 4),
    )
    if where.count_tokens:
        payload = orjson.dumps({"input_tokens": ctx.input_tokens})
        return _json_answer(ctx, name, [Step(payload)], len(payload))
    return build_plan(scenario, ctx)


def _reply(scenario: Scenario, ctx: Context) -> Reply:
    reply = scenario.reply(ctx)
    if reply.tools and ctx.answers_tool_result:
        return Reply(text=TEXT)
    return reply


def carries_tool_result(fmt: str, request: Mapping[str, Any]) -> bool:
    """Is the last turn of `request` (a request body of `fmt`) a tool's result?"""
    if fmt == GEMINI:
        turns = request.get("contents")
        parts = turns[-1].get("parts") if isinstance(turns, list) and turns else None
        return isinstance(parts, list) and any(
            isinstance(p, dict) and "functionResponse" in p for p in parts
        )
    if fmt == OPENAI_RESPONSES:
        items = request.get("input")
        last = items[-1] if isinstance(items, list) and items else None
        return isinstance(last, dict) and str(last.get("type", "")).endswith("_output")
    messages = request.get("messages")
    turns = (
        [m for m in messages if isinstance(m, dict) and m.get("role") != "system"]
        if isinstance(messages, list)
        else []
    )  # Claude Code appends system reminders after a turn
    last = turns[-1] if turns else None
    if last is None:
        return False
    if fmt == OPENAI_CHAT:
        return last.get("role") == "tool"
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def build_plan(scenario: Scenario, ctx: Context) -> Plan:
    """`scenario`'s answer in `ctx`'s format, for a stream or a JSON request."""
    if scenario.error is not None:
        return error_plan(
            ctx.fmt,
            scenario.error,
            status=scenario.error_status,
            scenario=scenario.name,
            model=ctx.model,
            ident=ctx.ident,
        )
    if not ctx.stream:
        used = SCENARIOS[DEFAULT_SCENARIO] if scenario.stream_only else scenario
        body = orjson.dumps(_BODIES[ctx.fmt](ctx, _reply(used, ctx)))
        length = len(body)
        if used.json is _json_big:
            length += body.count(_BIG_TOKEN) * (ctx.options.big_bytes - len(_BIG_TOKEN))
        steps = rechunk(used.json(ctx, body), ctx.options.chunk_size)
        return _json_answer(ctx, scenario.name, steps, length)
    items = scenario.shape(ctx, _reply(scenario, ctx))
    steps = rechunk(pace(items, ctx.gap), ctx.options.chunk_size)
    headers = [
        ("content-type", "text/event-stream; charset=utf-8" if ctx.sse else "application/json"),
        ("cache-control", "no-cache"),
        *_id_headers(ctx.fmt, ctx.ident),
        (HEADER_SCENARIO, scenario.name),
        *scenario.headers,
    ]
    return Plan(200, headers, steps, None, ctx.fmt, scenario.name, ctx.model, True)


def _json_answer(ctx: Context, name: str, steps: Iterable[Step], length: int) -> Plan:
    headers = [
        ("content-type", "application/json"),
        *_id_headers(ctx.fmt, ctx.ident),
        (HEADER_SCENARIO, name),
    ]
    return Plan(200, headers, steps, length, ctx.fmt, name, ctx.model, False)


def describe() -> str:
    """The scenario table, then the rule catalogue, as text: name, formats, description, what a
    client receives."""
    from mitmllm.mock.catalogue import CATALOGUE

    rows = [*_TABLE, *CATALOGUE.values()]
    short = {ANTHROPIC: "ant", OPENAI_CHAT: "chat", OPENAI_RESPONSES: "resp", GEMINI: "gem"}
    width = max(len(s.name) for s in rows)
    lines = []
    for s in rows:
        formats = ",".join(short[f] for f in s.formats)
        if len(s.formats) == len(FORMATS):
            formats = "all"
        lines.append(f"{s.name:<{width}}  [{formats}] {s.description}")
        lines.append(f"{'':<{width}}  -> {s.receives}")
    return "\n".join(lines)
