"""Anthropic Messages <-> the neutral conversation model.

Requests: ``system`` (string or text blocks), ``messages`` of text / image / tool_use /
tool_result / thinking blocks, ``tools`` (client tools; server tools are gaps), ``tool_choice``
(``any`` is required, ``disable_parallel_tool_use``), ``max_tokens`` (required: a default is
sent when the client gave none), ``temperature`` / ``top_p`` / ``top_k``, ``stop_sequences``,
``thinking`` (``enabled`` with a budget, ``adaptive``). Prompt-cache hints are not carried.

Usage: ``input_tokens`` excludes the cache; ``cache_read_input_tokens`` and
``cache_creation_input_tokens`` are the neutral cache counts as they are.

Thinking: an Anthropic thinking block must carry Anthropic's signature, and an Anthropic client
sends its thinking blocks back on the next turn, where the API rejects an unsigned or foreign
one with 400. Reasoning that another format produced is therefore not shown to an Anthropic
client (XLT-2), and thinking blocks are sent upstream only to Anthropic itself.
"""

from __future__ import annotations

from typing import Any

import orjson

from mitmllm.protocol.conversation import KIND_STATUS
from mitmllm.protocol.conversation import ApiError
from mitmllm.protocol.conversation import BlockStart
from mitmllm.protocol.conversation import BlockStop
from mitmllm.protocol.conversation import ClientStream
from mitmllm.protocol.conversation import Converter
from mitmllm.protocol.conversation import End
from mitmllm.protocol.conversation import ErrorKind
from mitmllm.protocol.conversation import Failure
from mitmllm.protocol.conversation import Finish
from mitmllm.protocol.conversation import Gap
from mitmllm.protocol.conversation import Image
from mitmllm.protocol.conversation import Message
from mitmllm.protocol.conversation import Part
from mitmllm.protocol.conversation import Reasoning
from mitmllm.protocol.conversation import Request
from mitmllm.protocol.conversation import Response
from mitmllm.protocol.conversation import Start
from mitmllm.protocol.conversation import Stop
from mitmllm.protocol.conversation import StreamEvent
from mitmllm.protocol.conversation import StreamReader
from mitmllm.protocol.conversation import StreamWriter
from mitmllm.protocol.conversation import Text
from mitmllm.protocol.conversation import TextDelta
from mitmllm.protocol.conversation import Thinking
from mitmllm.protocol.conversation import ThinkingDelta
from mitmllm.protocol.conversation import Tool
from mitmllm.protocol.conversation import ToolArgsDelta
from mitmllm.protocol.conversation import ToolCall
from mitmllm.protocol.conversation import ToolChoice
from mitmllm.protocol.conversation import ToolResult
from mitmllm.protocol.conversation import UpstreamCall
from mitmllm.protocol.conversation import Usage
from mitmllm.protocol.conversation import UsageUpdate
from mitmllm.protocol.conversation import int_or_none
from mitmllm.protocol.conversation import kind_of_status
from mitmllm.protocol.conversation import mapping
from mitmllm.protocol.conversation import number_or_none
from mitmllm.protocol.conversation import safe_id
from mitmllm.protocol.conversation import str_or_none
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.payload import event_json
from mitmllm.protocol.payload import json_text
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import encode

FORMAT = "anthropic"
PATH = "/v1/messages"
#: Sent when a client of another format gave no output limit (Anthropic requires one).
DEFAULT_MAX_TOKENS = 4096
#: The smallest thinking budget the API accepts.
MIN_THINKING_BUDGET = 1024

_KNOWN = frozenset(
    {
        "model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k",
        "stop_sequences", "stream", "tools", "tool_choice", "thinking", "metadata",
    }
)  # fmt: skip

STOPS: dict[str, Stop] = {
    "end_turn": Stop.END,
    "max_tokens": Stop.MAX_TOKENS,
    "model_context_window_exceeded": Stop.MAX_TOKENS,
    "stop_sequence": Stop.STOP_SEQUENCE,
    "tool_use": Stop.TOOL_USE,
    "pause_turn": Stop.PAUSE,
    "refusal": Stop.REFUSAL,
}
STOP_NAMES: dict[Stop, str] = {
    Stop.END: "end_turn",
    Stop.MAX_TOKENS: "max_tokens",
    Stop.STOP_SEQUENCE: "stop_sequence",
    Stop.TOOL_USE: "tool_use",
    Stop.PAUSE: "pause_turn",
    Stop.REFUSAL: "refusal",
    Stop.OTHER: "end_turn",
}
ERROR_TYPES: dict[str, ErrorKind] = {
    "invalid_request_error": ErrorKind.INVALID_REQUEST,
    "authentication_error": ErrorKind.AUTHENTICATION,
    "permission_error": ErrorKind.PERMISSION,
    "not_found_error": ErrorKind.NOT_FOUND,
    "request_too_large": ErrorKind.TOO_LARGE,
    "rate_limit_error": ErrorKind.RATE_LIMIT,
    "api_error": ErrorKind.API_ERROR,
    "overloaded_error": ErrorKind.OVERLOADED,
    "timeout_error": ErrorKind.TIMEOUT,
}
ERROR_NAMES: dict[ErrorKind, str] = {v: k for k, v in ERROR_TYPES.items()}
ERROR_STATUS: dict[ErrorKind, int] = {**KIND_STATUS, ErrorKind.OVERLOADED: 529}


# --- requests --------------------------------------------------------------------------------


def _parse_request(body: Any, gaps: list[Gap]) -> Request:
    b = mapping(body)
    req = Request(
        model=str_or_none(b.get("model")),
        max_tokens=int_or_none(b.get("max_tokens")),
        temperature=number_or_none(b.get("temperature")),
        top_p=number_or_none(b.get("top_p")),
        top_k=int_or_none(b.get("top_k")),
        stream=b.get("stream") is True,
    )
    stops = b.get("stop_sequences")
    req.stop = [s for s in stops if isinstance(s, str)] if isinstance(stops, list) else []
    for key in b:
        if key not in _KNOWN:
            gaps.append(Gap(f"/{key}", f"{key!r} has no counterpart in other formats"))
    if "metadata" in b:
        gaps.append(Gap("/metadata", "request metadata is not carried", "info"))
    system = b.get("system")
    if isinstance(system, str):
        req.system = [Text(system)] if system else []
    elif isinstance(system, list):
        for i, block in enumerate(system):
            part = _part(block, f"/system/{i}", gaps)
            if isinstance(part, Text):
                req.system.append(part)
    messages = b.get("messages")
    for i, m in enumerate(messages if isinstance(messages, list) else ()):
        m = mapping(m)
        content = m.get("content")
        msg = Message("assistant" if m.get("role") == "assistant" else "user")
        if isinstance(content, str):
            msg.parts.append(Text(content))
        elif isinstance(content, list):
            for j, block in enumerate(content):
                part = _part(block, f"/messages/{i}/content/{j}", gaps)
                if part is not None:
                    msg.parts.append(part)
        req.messages.append(msg)
    tools = b.get("tools")
    for i, t in enumerate(tools if isinstance(tools, list) else ()):
        t = mapping(t)
        name = t.get("name")
        if t.get("type") not in (None, "custom") or not isinstance(name, str):
            gaps.append(Gap(f"/tools/{i}", f"server tool {t.get('type')!r} runs only at Anthropic"))
            continue
        req.tools.append(Tool(name, str_or_none(t.get("description")), t.get("input_schema")))
    choice = b.get("tool_choice")
    if isinstance(choice, dict):
        mode = {"auto": "auto", "any": "required", "tool": "tool", "none": "none"}.get(
            str(choice.get("type")), "auto"
        )
        parallel = False if choice.get("disable_parallel_tool_use") is True else None
        req.tool_choice = ToolChoice(mode, str_or_none(choice.get("name")), parallel)  # type: ignore[arg-type]
    thinking = mapping(b.get("thinking"))
    if thinking.get("type") == "enabled":
        req.reasoning = Reasoning(budget=int_or_none(thinking.get("budget_tokens")), summary=True)
    elif thinking.get("type") == "adaptive":
        req.reasoning = Reasoning(effort="medium", summary=True)
    return req


def _part(block: Any, ptr: str, gaps: list[Gap]) -> Part | None:
    b = mapping(block)
    kind = b.get("type")
    if "cache_control" in b:
        gaps.append(Gap(f"{ptr}/cache_control", "prompt-cache hints are not carried", "info"))
    if kind == "text":
        return Text(str(b.get("text") or ""))
    if kind == "image":
        return _image(mapping(b.get("source")), ptr, gaps)
    if kind == "tool_use":
        return ToolCall(
            str(b.get("id") or ""),
            str(b.get("name") or ""),
            json_text(b.get("input") or {}),
        )
    if kind == "tool_result":
        content = b.get("content")
        parts: list[Text | Image] = []
        if isinstance(content, str):
            parts.append(Text(content))
        elif isinstance(content, list):
            for k, c in enumerate(content):
                inner = _part(c, f"{ptr}/content/{k}", gaps)
                if isinstance(inner, Text | Image):
                    parts.append(inner)
        return ToolResult(str(b.get("tool_use_id") or ""), tuple(parts), b.get("is_error") is True)
    if kind == "thinking":
        return Thinking(str(b.get("thinking") or ""), str_or_none(b.get("signature")), FORMAT)
    if kind == "redacted_thinking":
        return Thinking("", str_or_none(b.get("data")), FORMAT)
    gaps.append(Gap(ptr, f"content block type {kind!r} has no counterpart in other formats"))
    return None


def _image(source: Any, ptr: str, gaps: list[Gap]) -> Image | None:
    s = mapping(source)
    if s.get("type") == "base64":
        return Image(str_or_none(s.get("media_type")), str_or_none(s.get("data")))
    if s.get("type") == "url":
        return Image(url=str_or_none(s.get("url")))
    gaps.append(Gap(f"{ptr}/source", f"image source {s.get('type')!r} is not carried"))
    return None


def _render_request(req: Request, model: str, gaps: list[Gap]) -> UpstreamCall:
    max_tokens = req.max_tokens
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
        gaps.append(Gap("max_tokens", f"no output limit given; {DEFAULT_MAX_TOKENS} sent", "info"))
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    if req.system:
        body["system"] = [{"type": "text", "text": t.text} for t in req.system if t.text]
    body["messages"] = _render_messages(req.messages, gaps)
    if req.tools:
        body["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": t.schema if isinstance(t.schema, dict) else {"type": "object"},
            }
            for t in req.tools
        ]
    if req.tool_choice is not None:
        c = req.tool_choice
        choice: dict[str, Any] = {"type": {"required": "any"}.get(c.mode, c.mode)}
        if c.mode == "tool":
            choice["name"] = c.name
        if c.parallel is False and c.mode != "none":
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    for key, value in (
        ("temperature", req.temperature),
        ("top_p", req.top_p),
        ("top_k", req.top_k),
    ):
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.reasoning is not None:
        budget = min(max(req.reasoning.budget_tokens(), MIN_THINKING_BUDGET), max_tokens - 1)
        if budget < MIN_THINKING_BUDGET:
            gaps.append(
                Gap("reasoning", f"max_tokens {max_tokens} leaves no room for a thinking budget")
            )
        else:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
            # Extended thinking accepts only the default temperature and no top_k.
            for key in ("temperature", "top_k"):
                if body.pop(key, None) is not None:
                    gaps.append(Gap(key, f"{key} cannot be combined with thinking", "info"))
    if req.stream:
        body["stream"] = True
    return UpstreamCall(PATH, body, gaps)


def _render_messages(messages: list[Message], gaps: list[Gap]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    dropped_thinking = False
    for m in messages:
        blocks: list[dict[str, Any]] = []
        for p in m.parts:
            if isinstance(p, Text):
                if p.text:  # the API rejects empty text blocks
                    blocks.append({"type": "text", "text": p.text})
            elif isinstance(p, Image):
                blocks.append(_render_image(p))
            elif isinstance(p, ToolCall):
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": safe_id(p.id),
                        "name": p.name,
                        "input": _args(p, gaps),
                    }
                )
            elif isinstance(p, ToolResult):
                block: dict[str, Any] = {"type": "tool_result", "tool_use_id": safe_id(p.call_id)}
                if any(isinstance(c, Image) for c in p.content):
                    block["content"] = [
                        _render_image(c)
                        if isinstance(c, Image)
                        else {"type": "text", "text": c.text}
                        for c in p.content
                        if isinstance(c, Image) or c.text
                    ]
                else:
                    block["content"] = p.text
                if p.is_error:
                    block["is_error"] = True
                blocks.append(block)
            elif isinstance(p, Thinking):
                if p.source == FORMAT and p.signature:
                    if p.text:
                        blocks.append(
                            {"type": "thinking", "thinking": p.text, "signature": p.signature}
                        )
                    else:
                        blocks.append({"type": "redacted_thinking", "data": p.signature})
                else:
                    dropped_thinking = True
        if not blocks:
            continue
        if out and out[-1]["role"] == m.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": m.role, "content": blocks})
    for msg in out:  # tool results open their user turn
        if msg["role"] == "user":
            msg["content"].sort(key=lambda b: b["type"] != "tool_result")
    if dropped_thinking:
        gaps.append(
            Gap("thinking_history", "reasoning from another format is not sent back", "info")
        )
    return out


def _render_image(p: Image) -> dict[str, Any]:
    if p.data is not None:
        source = {"type": "base64", "media_type": p.media_type or "image/png", "data": p.data}
    else:
        source = {"type": "url", "url": p.url or ""}
    return {"type": "image", "source": source}


def _args(call: ToolCall, gaps: list[Gap]) -> dict[str, Any]:
    try:
        value = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return value
    gaps.append(Gap(f"tool_calls/{call.id}", "tool call arguments are not a JSON object; {} sent"))
    return {}


# --- responses -------------------------------------------------------------------------------


def usage_of(value: Any) -> Usage:
    u = mapping(value)
    return Usage(
        input_tokens=int_or_none(u.get("input_tokens")),
        output_tokens=int_or_none(u.get("output_tokens")),
        cache_read=int_or_none(u.get("cache_read_input_tokens")),
        cache_write=int_or_none(u.get("cache_creation_input_tokens")),
    )


def usage_dict(u: Usage, *, start: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": u.input_tokens or 0,
        "output_tokens": 0 if start else (u.output_tokens or 0),
    }
    if u.cache_write is not None:
        out["cache_creation_input_tokens"] = u.cache_write
    if u.cache_read is not None:
        out["cache_read_input_tokens"] = u.cache_read
    return out


def _parse_response(payload: Any, findings: Findings) -> Response:
    p = mapping(payload)
    resp = Response(str_or_none(p.get("id")), str_or_none(p.get("model")))
    content = p.get("content")
    for block in content if isinstance(content, list) else ():
        b = mapping(block)
        kind = b.get("type")
        if kind == "text":
            resp.parts.append(Text(str(b.get("text") or "")))
        elif kind == "thinking":
            resp.parts.append(
                Thinking(str(b.get("thinking") or ""), str_or_none(b.get("signature")), FORMAT)
            )
        elif kind == "tool_use":
            args = json_text(b.get("input") or {})
            resp.parts.append(ToolCall(str(b.get("id") or ""), str(b.get("name") or ""), args))
        else:
            findings.add(
                "XLT-3", f"content block {kind!r} has no counterpart in the client's format"
            )
    resp.stop = STOPS.get(str(p.get("stop_reason")), Stop.END)
    resp.stop_sequence = str_or_none(p.get("stop_sequence"))
    resp.usage = usage_of(p.get("usage"))
    return resp


def message_id(upstream_id: str | None, client: ClientStream) -> str:
    if client.id:
        return client.id
    if upstream_id and upstream_id.startswith("msg_"):
        return upstream_id
    return "msg_" + safe_id(upstream_id or "mitmllm", "")


def _render_response(resp: Response, client: ClientStream, findings: Findings) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for part in resp.parts:
        if isinstance(part, Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ToolCall):
            value: Any
            try:
                value = orjson.loads(part.arguments or "{}")
            except orjson.JSONDecodeError:
                value = {}
            content.append(
                {"type": "tool_use", "id": safe_id(part.id), "name": part.name, "input": value}
            )
        elif isinstance(part, Thinking):
            if part.source == FORMAT and part.signature:
                content.append(
                    {"type": "thinking", "thinking": part.text, "signature": part.signature}
                )
            else:
                findings.add("XLT-2", "reasoning dropped: an Anthropic client cannot send it back")
    return {
        "id": message_id(resp.id, client),
        "type": "message",
        "role": "assistant",
        "model": client.model,
        "content": content,
        "stop_reason": STOP_NAMES[resp.stop],
        "stop_sequence": resp.stop_sequence,
        "usage": usage_dict(resp.usage),
    }


# --- errors ----------------------------------------------------------------------------------


def _parse_error(status: int | None, payload: Any) -> ApiError:
    err = mapping(mapping(payload).get("error"))
    kind = ERROR_TYPES.get(str(err.get("type")), kind_of_status(status))
    message = str_or_none(err.get("message")) or str_or_none(mapping(payload).get("message"))
    return ApiError(kind, message or f"upstream error {status or ''}".strip(), status)


def error_object(error: ApiError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_NAMES[error.kind], "message": error.message}}


def _render_error(error: ApiError) -> tuple[int, bytes]:
    status = ERROR_STATUS[error.kind]
    if error.kind is ErrorKind.API_ERROR and error.status and error.status >= 500:
        status = error.status  # 502, 500: the upstream's own
    return status, json_text(error_object(error)).encode()


# --- streams ---------------------------------------------------------------------------------


class AnthropicReader(StreamReader):
    """Anthropic events -> neutral events. Blocks with no neutral counterpart (server tool
    calls and their results, redacted thinking) are skipped with XLT-3."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.skipping: int | None = None  # the upstream index of a skipped block
        self.index = -1  # the neutral index of the open block

    def read(self, ev: Event, payload: Any) -> list[StreamEvent]:
        p = mapping(payload)
        kind = p.get("type", ev.event)
        if kind == "message_start":
            m = mapping(p.get("message"))
            return [
                Start(
                    str_or_none(m.get("id")), str_or_none(m.get("model")), usage_of(m.get("usage"))
                )
            ]
        if kind == "content_block_start":
            return self._block_start(p)
        if kind == "content_block_delta":
            if p.get("index") == self.skipping:
                return []
            d = mapping(p.get("delta"))
            dtype = d.get("type")
            if dtype == "text_delta":
                return [TextDelta(self.index, str(d.get("text") or ""))]
            if dtype == "thinking_delta":
                return [ThinkingDelta(self.index, str(d.get("thinking") or ""))]
            if dtype == "input_json_delta":
                return [ToolArgsDelta(self.index, str(d.get("partial_json") or ""))]
            return []  # signatures and citations: no counterpart
        if kind == "content_block_stop":
            if p.get("index") == self.skipping:
                self.skipping = None
                return []
            return [BlockStop(self.index)]
        if kind == "message_delta":
            out: list[StreamEvent] = []
            d = mapping(p.get("delta"))
            if d.get("stop_reason") is not None:
                out.append(
                    Finish(
                        STOPS.get(str(d["stop_reason"]), Stop.OTHER),
                        str_or_none(d.get("stop_sequence")),
                    )
                )
            if isinstance(p.get("usage"), dict):
                out.append(UsageUpdate(usage_of(p["usage"])))
            return out
        if kind == "message_stop":
            return [End()]
        if kind == "error":
            return [Failure(_parse_error(None, p))]
        return []

    def _block_start(self, p: Any) -> list[StreamEvent]:
        block = mapping(p.get("content_block"))
        btype = block.get("type")
        if btype == "text":
            self.index += 1
            out: list[StreamEvent] = [BlockStart(self.index, "text")]
            if block.get("text"):
                out.append(TextDelta(self.index, str(block["text"])))
            return out
        if btype == "thinking":
            self.index += 1
            return [BlockStart(self.index, "thinking")]
        if btype == "tool_use":
            self.index += 1
            return [
                BlockStart(
                    self.index,
                    "tool_call",
                    str(block.get("id") or ""),
                    str(block.get("name") or ""),
                )
            ]
        self.skipping = p.get("index")
        self.findings.add(
            "XLT-3", f"content block {btype!r} has no counterpart in the client's format"
        )
        return []


class AnthropicWriter(StreamWriter):
    """Neutral events -> Anthropic events. message_delta waits for the end, where the stop
    reason and the final usage are both known."""

    def __init__(self, client: ClientStream, findings: Findings) -> None:
        self.client = client
        self.findings = findings
        self.index = -1  # the client's block index
        self.dropping = False  # inside a block the client does not get
        self.stop: Finish | None = None
        self.usage = Usage()

    def write(self, e: StreamEvent) -> bytes:
        if isinstance(e, Start):
            if e.usage is not None:
                self.usage.update(e.usage)
            message: dict[str, Any] = {
                "id": message_id(e.id, self.client),
                "type": "message",
                "role": "assistant",
                "model": self.client.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage_dict(self.usage, start=True),
            }
            return _event("message_start", {"type": "message_start", "message": message})
        if isinstance(e, BlockStart):
            if e.kind == "thinking":
                self.dropping = True
                self.findings.add(
                    "XLT-2", "reasoning dropped: an Anthropic client cannot send it back"
                )
                return b""
            self.index += 1
            if e.kind == "text":
                block: dict[str, Any] = {"type": "text", "text": ""}
            else:
                block = {
                    "type": "tool_use",
                    "id": safe_id(e.id or f"toolu_{self.index}"),
                    "name": e.name or "",
                    "input": {},
                }
            return _event(
                "content_block_start",
                {"type": "content_block_start", "index": self.index, "content_block": block},
            )
        if isinstance(e, TextDelta | ThinkingDelta | ToolArgsDelta):
            if self.dropping:
                return b""
            if isinstance(e, TextDelta):
                delta = {"type": "text_delta", "text": e.text}
            elif isinstance(e, ToolArgsDelta):
                delta = {"type": "input_json_delta", "partial_json": e.fragment}
            else:
                return b""
            return _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": self.index, "delta": delta},
            )
        if isinstance(e, BlockStop):
            if self.dropping:
                self.dropping = False
                return b""
            return _event("content_block_stop", {"type": "content_block_stop", "index": self.index})
        if isinstance(e, Finish):
            self.stop = e
            return b""
        if isinstance(e, UsageUpdate):
            self.usage.update(e.usage)
            return b""
        if isinstance(e, End):
            stop = self.stop or Finish(Stop.END)
            ending: dict[str, Any] = {
                "stop_reason": STOP_NAMES[stop.stop],
                "stop_sequence": stop.stop_sequence,
            }
            tail = _event(
                "message_delta",
                {"type": "message_delta", "delta": ending, "usage": usage_dict(self.usage)},
            )
            return tail + _event("message_stop", {"type": "message_stop"})
        if isinstance(e, Failure):
            return _event("error", error_object(e.error))
        return b""


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return encode(event_json(payload), event=name)


def _error_event(error: ApiError) -> bytes:
    return _event("error", error_object(error))


#: The request features this format can carry.
_FEATURES = frozenset(
    {
        "system", "text", "images", "tools", "tool_calls", "tool_results",
        "tool_result.images", "tool_choice.auto", "tool_choice.none", "tool_choice.required",
        "tool_choice.tool", "parallel_tool_calls", "max_tokens", "temperature", "top_p",
        "top_k", "stop", "reasoning",
    }
)  # fmt: skip

CONVERTER = Converter(
    format=FORMAT,
    features=_FEATURES,
    parse_request=lambda _path, body, gaps: _parse_request(body, gaps),
    render_request=_render_request,
    parse_response=_parse_response,
    render_response=_render_response,
    parse_error=_parse_error,
    render_error=_render_error,
    error_event=_error_event,
    reader=AnthropicReader,
    writer=AnthropicWriter,
    shows_foreign_thinking=False,
)
