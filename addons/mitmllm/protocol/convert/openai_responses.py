"""OpenAI Responses <-> the neutral conversation model.

Requests: ``instructions`` and ``system`` / ``developer`` input messages are the system prompt;
``input`` (a string, or items: messages with ``input_text`` / ``output_text`` / ``input_image``
parts, ``function_call``, ``function_call_output``, ``reasoning``), ``tools`` (function tools;
built-in tools are gaps), ``tool_choice``, ``parallel_tool_calls``, ``max_output_tokens``,
``temperature``, ``top_p``, ``reasoning`` (effort, summary). A stored conversation
(``previous_response_id``) cannot be carried to another format: the upstream would see only the
last turn. A request rendered for a Responses upstream sets ``store: false`` (nothing refers to
a stored response later) and asks for reasoning summaries when reasoning is asked for.

Usage: ``input_tokens`` counts the whole prompt, ``input_tokens_details.cached_tokens`` the cached
part; ``output_tokens`` includes ``output_tokens_details.reasoning_tokens``.

Streams written for a Responses client repeat every item whole in its ``*.done`` events and the
whole output in ``response.completed`` (the format requires it; its SDKs do the same), so this
writer keeps the answer's output as it goes: the one writer whose memory grows with the answer.
"""

from __future__ import annotations

from typing import Any

from mitmllm.protocol.conversation import KIND_STATUS
from mitmllm.protocol.conversation import ApiError
from mitmllm.protocol.conversation import BlockKind
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
from mitmllm.protocol.conversation import mapping
from mitmllm.protocol.conversation import number_or_none
from mitmllm.protocol.conversation import safe_id
from mitmllm.protocol.conversation import str_or_none
from mitmllm.protocol.conversation import text_of
from mitmllm.protocol.convert.openai_chat import ERROR_NAMES
from mitmllm.protocol.convert.openai_chat import image_of_url
from mitmllm.protocol.convert.openai_chat import url_of_image
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.payload import event_json
from mitmllm.protocol.payload import json_text
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import encode

FORMAT = "openai-responses"
PATH = "/v1/responses"

_KNOWN = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
        "max_output_tokens", "temperature", "top_p", "stream", "reasoning", "store", "metadata",
        "previous_response_id", "include", "text", "truncation", "user", "stream_options",
        "prompt_cache_key", "service_tier",
    }
)  # fmt: skip
_QUIET = frozenset(
    {
        "store",
        "include",
        "truncation",
        "user",
        "metadata",
        "prompt_cache_key",
        "service_tier",
        "stream_options",
    }
)
INCOMPLETE: dict[str, Stop] = {"max_output_tokens": Stop.MAX_TOKENS, "content_filter": Stop.REFUSAL}
INCOMPLETE_NAMES: dict[Stop, str] = {
    Stop.MAX_TOKENS: "max_output_tokens",
    Stop.REFUSAL: "content_filter",
}


# --- requests --------------------------------------------------------------------------------


def _parse_request(body: Any, gaps: list[Gap]) -> Request:
    b = mapping(body)
    req = Request(
        model=str_or_none(b.get("model")),
        max_tokens=int_or_none(b.get("max_output_tokens")),
        temperature=number_or_none(b.get("temperature")),
        top_p=number_or_none(b.get("top_p")),
        stream=b.get("stream") is True,
    )
    for key in b:
        if key not in _KNOWN:
            gaps.append(Gap(f"/{key}", f"{key!r} has no counterpart in other formats"))
        elif key in _QUIET:
            gaps.append(Gap(f"/{key}", f"{key!r} is not carried", "info"))
    if b.get("previous_response_id"):
        gaps.append(
            Gap(
                "/previous_response_id",
                "a stored conversation cannot be carried: the upstream sees only this turn",
                "error",
            )
        )
    fmt = mapping(mapping(b.get("text")).get("format"))
    if fmt and fmt.get("type") != "text":
        gaps.append(Gap("/text/format", f"output format {fmt.get('type')!r} is not carried"))
    instructions = b.get("instructions")
    if isinstance(instructions, str) and instructions:
        req.system.append(Text(instructions))
    items = b.get("input")
    if isinstance(items, str):
        req.messages.append(Message("user", [Text(items)]))
    for i, item in enumerate(items if isinstance(items, list) else ()):
        _item(mapping(item), f"/input/{i}", req, gaps)
    tools = b.get("tools")
    for i, t in enumerate(tools if isinstance(tools, list) else ()):
        t = mapping(t)
        if t.get("type") != "function" or not isinstance(t.get("name"), str):
            gaps.append(Gap(f"/tools/{i}", f"tool type {t.get('type')!r} runs only at OpenAI"))
            continue
        req.tools.append(Tool(t["name"], str_or_none(t.get("description")), t.get("parameters")))
    choice = b.get("tool_choice")
    parallel = False if b.get("parallel_tool_calls") is False else None
    if choice in ("auto", "none", "required"):
        req.tool_choice = ToolChoice(choice, None, parallel)  # type: ignore[arg-type]
    elif isinstance(choice, dict) and choice.get("type") == "function":
        req.tool_choice = ToolChoice("tool", str_or_none(choice.get("name")), parallel)
    elif parallel is False:
        req.tool_choice = ToolChoice("auto", None, parallel)
    reasoning = mapping(b.get("reasoning"))
    effort = reasoning.get("effort")
    if reasoning and effort != "none":
        req.reasoning = Reasoning(str_or_none(effort), None, reasoning.get("summary") is not None)
    return req


def _item(item: Any, ptr: str, req: Request, gaps: list[Gap]) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        parts = _content(item.get("content"), ptr, gaps)
        if role in ("system", "developer"):
            req.system.append(Text(text_of(parts)))
        else:
            _append(req, "assistant" if role == "assistant" else "user", parts)
    elif kind == "function_call":
        call = ToolCall(
            str(item.get("call_id") or ""),
            str(item.get("name") or ""),
            str(item.get("arguments") or "{}"),
        )
        _append(req, "assistant", [call])
    elif kind == "function_call_output":
        output = item.get("output")
        content: list[Part] = (
            [Text(output)] if isinstance(output, str) else _content(output, ptr, gaps)
        )
        result = ToolResult(
            str(item.get("call_id") or ""), tuple(p for p in content if isinstance(p, Text | Image))
        )
        _append(req, "user", [result])
    elif kind == "reasoning":
        summary = item.get("summary")
        text = "".join(str(mapping(s).get("text") or "") for s in summary or ())
        _append(
            req, "assistant", [Thinking(text, str_or_none(item.get("encrypted_content")), FORMAT)]
        )
    else:
        gaps.append(Gap(ptr, f"input item {kind!r} has no counterpart in other formats"))


def _append(req: Request, role: Any, parts: list[Part]) -> None:
    if req.messages and req.messages[-1].role == role and role == "assistant":
        req.messages[-1].parts.extend(parts)
    else:
        req.messages.append(Message(role, list(parts)))


def _content(content: Any, ptr: str, gaps: list[Gap]) -> list[Part]:
    if isinstance(content, str):
        return [Text(content)]
    out: list[Part] = []
    for j, part in enumerate(content if isinstance(content, list) else ()):
        p = mapping(part)
        kind = p.get("type")
        if kind in ("input_text", "output_text", "text"):
            out.append(Text(str(p.get("text") or "")))
        elif kind == "refusal":
            out.append(Text(str(p.get("refusal") or "")))
        elif kind == "input_image" and isinstance(p.get("image_url"), str):
            out.append(image_of_url(p["image_url"]))
        else:
            gaps.append(Gap(f"{ptr}/content/{j}", f"content part {kind!r} is not carried"))
    return out


def _render_request(req: Request, model: str, gaps: list[Gap]) -> UpstreamCall:
    items: list[dict[str, Any]] = []
    dropped_thinking = False
    for m in req.messages:
        content: list[dict[str, Any]] = []
        for p in m.parts:
            if isinstance(p, Text):
                if p.text:
                    kind = "output_text" if m.role == "assistant" else "input_text"
                    content.append({"type": kind, "text": p.text})
            elif isinstance(p, Image):
                content.append({"type": "input_image", "image_url": url_of_image(p)})
            elif isinstance(p, ToolCall | ToolResult):
                if content:
                    items.append({"role": m.role, "content": content})
                    content = []
                if isinstance(p, ToolCall):
                    items.append(
                        {
                            "type": "function_call",
                            "call_id": p.id,
                            "name": p.name,
                            "arguments": p.arguments or "{}",
                        }
                    )
                else:
                    if any(isinstance(c, Image) for c in p.content):
                        gaps.append(
                            Gap(
                                "tool_result.images",
                                "a function_call_output carries text only here",
                            )
                        )
                    items.append(
                        {"type": "function_call_output", "call_id": p.call_id, "output": p.text}
                    )
            elif isinstance(p, Thinking):
                dropped_thinking = True
        if content:
            items.append({"role": m.role, "content": content})
    if dropped_thinking:
        gaps.append(Gap("thinking_history", "earlier reasoning is not sent back", "info"))
    body: dict[str, Any] = {"model": model, "input": items, "store": False}
    if req.system:
        body["instructions"] = "\n\n".join(t.text for t in req.system)
    if req.max_tokens is not None:
        body["max_output_tokens"] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None:
        gaps.append(Gap("top_k", "Responses has no top_k"))
    if req.stop:
        gaps.append(Gap("stop", "Responses has no stop sequences"))
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "parameters": t.schema
                if isinstance(t.schema, dict)
                else {"type": "object", "properties": {}},
                "strict": False,
            }
            for t in req.tools
        ]
    c = req.tool_choice
    if c is not None:
        body["tool_choice"] = {"type": "function", "name": c.name} if c.mode == "tool" else c.mode
        if c.parallel is False and req.tools:
            body["parallel_tool_calls"] = False
    if req.reasoning is not None:
        body["reasoning"] = {"effort": req.reasoning.effort_name(), "summary": "auto"}
    if req.stream:
        body["stream"] = True
    return UpstreamCall(PATH, body, gaps)


# --- responses -------------------------------------------------------------------------------


def usage_of(value: Any) -> Usage:
    u = mapping(value)
    prompt = int_or_none(u.get("input_tokens"))
    cached = int_or_none(mapping(u.get("input_tokens_details")).get("cached_tokens"))
    return Usage(
        input_tokens=None if prompt is None else max(prompt - (cached or 0), 0),
        output_tokens=int_or_none(u.get("output_tokens")),
        cache_read=cached,
        reasoning_tokens=int_or_none(
            mapping(u.get("output_tokens_details")).get("reasoning_tokens")
        ),
    )


def usage_dict(u: Usage) -> dict[str, Any]:
    out = u.output_tokens or 0
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cache_read or 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens or 0},
        "total_tokens": u.prompt_tokens + out,
    }


def _stop_of(response: Any, tool_calls: bool) -> Stop:
    r = mapping(response)
    if r.get("status") == "incomplete":
        return INCOMPLETE.get(str(mapping(r.get("incomplete_details")).get("reason")), Stop.OTHER)
    return Stop.TOOL_USE if tool_calls else Stop.END


def _parse_response(payload: Any, findings: Findings) -> Response:
    p = mapping(payload)
    resp = Response(str_or_none(p.get("id")), str_or_none(p.get("model")))
    output = p.get("output")
    for item in output if isinstance(output, list) else ():
        it = mapping(item)
        kind = it.get("type")
        if kind == "message":
            resp.parts.extend(x for x in _content(it.get("content"), "", []) if isinstance(x, Text))
        elif kind == "reasoning":
            summary = it.get("summary")
            text = "".join(str(mapping(s).get("text") or "") for s in summary or ())
            resp.parts.append(Thinking(text, str_or_none(it.get("encrypted_content")), FORMAT))
        elif kind == "function_call":
            resp.parts.append(
                ToolCall(
                    str(it.get("call_id") or ""),
                    str(it.get("name") or ""),
                    str(it.get("arguments") or "{}"),
                )
            )
        else:
            findings.add("XLT-3", f"output item {kind!r} has no counterpart in the client's format")
    resp.stop = _stop_of(p, any(isinstance(x, ToolCall) for x in resp.parts))
    resp.usage = usage_of(p.get("usage"))
    return resp


def response_id(upstream_id: str | None, client: ClientStream) -> str:
    if client.id:
        return client.id
    if upstream_id and upstream_id.startswith("resp_"):
        return upstream_id
    return "resp_" + safe_id(upstream_id or "mitmllm", "")


def _envelope(
    rid: str,
    client: ClientStream,
    status: str,
    output: list[Any],
    usage: Any,
    stop: Stop | None = None,
) -> dict[str, Any]:
    incomplete = (
        {"reason": INCOMPLETE_NAMES[stop]}
        if status == "incomplete" and stop in INCOMPLETE_NAMES
        else None
    )
    return {
        "id": rid,
        "object": "response",
        "created_at": client.created,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "model": client.model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


def _status(stop: Stop) -> str:
    return "incomplete" if stop in INCOMPLETE_NAMES else "completed"


def _render_response(resp: Response, client: ClientStream, findings: Findings) -> dict[str, Any]:
    rid = response_id(resp.id, client)
    output: list[dict[str, Any]] = []
    for i, part in enumerate(resp.parts):
        if isinstance(part, Text):
            output.append(_message_item(f"msg_{i}", part.text, "completed"))
        elif isinstance(part, Thinking):
            output.append(_reasoning_item(f"rs_{i}", part.text))
        elif isinstance(part, ToolCall):
            output.append(
                _call_item(f"fc_{i}", part.id, part.name, part.arguments or "{}", "completed")
            )
    return _envelope(rid, client, _status(resp.stop), output, usage_dict(resp.usage), resp.stop)


def _message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _reasoning_item(item_id: str, text: str | None) -> dict[str, Any]:
    summary = [] if text is None else [{"type": "summary_text", "text": text}]
    return {"id": item_id, "type": "reasoning", "summary": summary}


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


# --- errors ----------------------------------------------------------------------------------


def _parse_error(status: int | None, payload: Any) -> ApiError:
    from mitmllm.protocol.convert.openai_chat import CONVERTER as CHAT

    p = mapping(payload)
    if p.get("type") == "response.failed":
        err = mapping(mapping(p.get("response")).get("error"))
        return ApiError(
            _kind(err.get("code")), str_or_none(err.get("message")) or "response failed", status
        )
    if p.get("type") == "error" and not isinstance(p.get("error"), dict):
        return ApiError(_kind(p.get("code")), str_or_none(p.get("message")) or "error", status)
    return CHAT.parse_error(status, payload)


def _kind(code: Any) -> ErrorKind:
    from mitmllm.protocol.convert.openai_chat import _ERROR_WORDS

    return _ERROR_WORDS.get(str(code), ErrorKind.API_ERROR)


def error_object(error: ApiError, sequence_number: int | None = None) -> dict[str, Any]:
    kind, code = ERROR_NAMES[error.kind]
    data: dict[str, Any] = {"type": "error"}
    if sequence_number is not None:
        data["sequence_number"] = sequence_number
    data.update(code=code or kind, message=error.message, param=None)
    data["error"] = {"type": kind, "code": code or kind, "message": error.message, "param": None}
    return data


def _render_error(error: ApiError) -> tuple[int, bytes]:
    kind, code = ERROR_NAMES[error.kind]
    status = KIND_STATUS[error.kind]
    if error.kind is ErrorKind.API_ERROR and error.status and error.status >= 500:
        status = error.status
    return status, json_text(
        {"error": {"message": error.message, "type": kind, "param": None, "code": code}}
    ).encode()


# --- streams ---------------------------------------------------------------------------------


class ResponsesReader(StreamReader):
    """Responses events -> neutral events: output text and refusals are text blocks, reasoning
    summaries and reasoning text are thinking blocks, function calls are tool-call blocks; the
    terminal event carries the stop and the usage."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.index = -1
        self.open: BlockKind | None = None
        self.calls = 0

    def read(self, ev: Event, payload: Any) -> list[StreamEvent]:
        p = mapping(payload)
        kind = p.get("type")
        if kind == "response.created":
            r = mapping(p.get("response"))
            return [Start(str_or_none(r.get("id")), str_or_none(r.get("model")))]
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            return self._delta("text", p.get("delta"))
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return self._delta("thinking", p.get("delta"))
        if kind == "response.output_item.added":
            item = mapping(p.get("item"))
            if item.get("type") == "function_call":
                out = self._close()
                self.index += 1
                self.open = "tool_call"
                self.calls += 1
                out.append(
                    BlockStart(
                        self.index,
                        "tool_call",
                        str(item.get("call_id") or f"call_{self.index}"),
                        str(item.get("name") or ""),
                    )
                )
                if item.get("arguments"):
                    out.append(ToolArgsDelta(self.index, str(item["arguments"])))
                return out
            if item.get("type") not in ("message", "reasoning"):
                self.findings.add(
                    "XLT-3",
                    f"output item {item.get('type')!r} has no counterpart in the client's format",
                )
            return []
        if kind == "response.function_call_arguments.delta":
            if self.open == "tool_call" and isinstance(p.get("delta"), str) and p["delta"]:
                return [ToolArgsDelta(self.index, p["delta"])]
            return []
        if kind in (
            "response.output_item.done",
            "response.content_part.done",
            "response.reasoning_summary_part.done",
        ):
            return self._close()
        if kind in ("response.completed", "response.incomplete"):
            r = mapping(p.get("response"))
            out = self._close()
            if isinstance(r.get("usage"), dict):
                out.append(UsageUpdate(usage_of(r["usage"])))
            return out + [Finish(_stop_of(r, self.calls > 0)), End()]
        if kind in ("response.failed", "error"):
            return [Failure(_parse_error(None, p))]
        return []

    def _delta(self, kind: BlockKind, text: Any) -> list[StreamEvent]:
        if not isinstance(text, str) or not text:
            return []
        out = [] if self.open == kind else self._close()
        if self.open != kind:
            self.index += 1
            self.open = kind
            out.append(BlockStart(self.index, kind))
        out.append(
            TextDelta(self.index, text) if kind == "text" else ThinkingDelta(self.index, text)
        )
        return out

    def _close(self) -> list[StreamEvent]:
        if self.open is None:
            return []
        self.open = None
        return [BlockStop(self.index)]


class ResponsesWriter(StreamWriter):
    """Neutral events -> Responses events, numbered from 0. Keeps the output items for the
    ``*.done`` events and ``response.completed`` (see the module docstring)."""

    def __init__(self, client: ClientStream, findings: Findings) -> None:
        self.client = client
        self.findings = findings
        self.seq = 0
        self.id = client.id or "resp_mitmllm"
        self.output: list[dict[str, Any]] = []
        self.kind: BlockKind | None = None
        self.parts: list[str] = []  # the open item's text or arguments
        self.call: tuple[str, str] = ("", "")
        self.stop = Stop.END
        self.usage = Usage()

    def write(self, e: StreamEvent) -> bytes:
        if isinstance(e, Start):
            self.id = response_id(e.id, self.client)
            if e.usage is not None:
                self.usage.update(e.usage)
            r = _envelope(self.id, self.client, "in_progress", [], None)
            return self._ev("response.created", response=r) + self._ev(
                "response.in_progress", response=r
            )
        if isinstance(e, BlockStart):
            return self._start(e)
        if isinstance(e, TextDelta | ThinkingDelta | ToolArgsDelta):
            return self._delta(e)
        if isinstance(e, BlockStop):
            return self._stop()
        if isinstance(e, Finish):
            self.stop = e.stop
            return b""
        if isinstance(e, UsageUpdate):
            self.usage.update(e.usage)
            return b""
        if isinstance(e, End):
            status = _status(self.stop)
            r = _envelope(
                self.id, self.client, status, self.output, usage_dict(self.usage), self.stop
            )
            return self._ev(f"response.{status}", response=r)
        if isinstance(e, Failure):
            data = error_object(e.error, self.seq)
            self.seq += 1
            return encode(event_json(data), event="error")
        return b""

    @property
    def _at(self) -> dict[str, Any]:
        return {"item_id": self._item_id, "output_index": len(self.output)}

    @property
    def _item_id(self) -> str:
        prefix = {"text": "msg", "thinking": "rs", "tool_call": "fc"}[self.kind or "text"]
        return f"{prefix}_{len(self.output)}"

    def _start(self, e: BlockStart) -> bytes:
        self.kind = e.kind
        self.parts = []
        index = len(self.output)
        if e.kind == "text":
            item = _message_item(self._item_id, None, "in_progress")
            return self._ev("response.output_item.added", output_index=index, item=item) + self._ev(
                "response.content_part.added", **self._at, content_index=0, part=_text_part("")
            )
        if e.kind == "thinking":
            item = _reasoning_item(self._item_id, None)
            return self._ev("response.output_item.added", output_index=index, item=item) + self._ev(
                "response.reasoning_summary_part.added",
                **self._at,
                summary_index=0,
                part={"type": "summary_text", "text": ""},
            )
        self.call = (e.id or f"call_{index}", e.name or "")
        item = _call_item(self._item_id, *self.call, "", "in_progress")
        return self._ev("response.output_item.added", output_index=index, item=item)

    def _delta(self, e: TextDelta | ThinkingDelta | ToolArgsDelta) -> bytes:
        text = e.fragment if isinstance(e, ToolArgsDelta) else e.text
        if not text or self.kind is None:
            return b""
        self.parts.append(text)
        if self.kind == "text":
            return self._ev(
                "response.output_text.delta", **self._at, content_index=0, delta=text, logprobs=[]
            )
        if self.kind == "thinking":
            return self._ev(
                "response.reasoning_summary_text.delta", **self._at, summary_index=0, delta=text
            )
        return self._ev("response.function_call_arguments.delta", **self._at, delta=text)

    def _stop(self) -> bytes:
        kind = self.kind
        if kind is None:
            return b""
        text = "".join(self.parts)
        self.parts = []
        at, index = self._at, len(self.output)
        if kind == "text":
            item = _message_item(self._item_id, text, "completed")
            out = self._ev(
                "response.output_text.done", **at, content_index=0, text=text, logprobs=[]
            )
            out += self._ev(
                "response.content_part.done", **at, content_index=0, part=_text_part(text)
            )
        elif kind == "thinking":
            item = _reasoning_item(self._item_id, text)
            part = {"type": "summary_text", "text": text}
            out = self._ev("response.reasoning_summary_text.done", **at, summary_index=0, text=text)
            out += self._ev(
                "response.reasoning_summary_part.done", **at, summary_index=0, part=part
            )
        else:
            out = b""
            arguments = text
            if not text.strip():  # a call without arguments is {}, streamed like any other
                arguments += "{}"
                out = self._ev("response.function_call_arguments.delta", **at, delta="{}")
            item = _call_item(self._item_id, *self.call, arguments, "completed")
            out += self._ev(
                "response.function_call_arguments.done",
                **at,
                name=self.call[1],
                arguments=arguments,
            )
        out += self._ev("response.output_item.done", output_index=index, item=item)
        self.output.append(item)
        self.kind = None
        return out

    def _ev(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return encode(event_json(data), event=kind)


def _error_event(error: ApiError) -> bytes:
    return encode(event_json(error_object(error)), event="error")


#: The request features this format can carry.
_FEATURES = frozenset(
    {
        "system", "text", "images", "tools", "tool_calls", "tool_results",
        "tool_choice.auto", "tool_choice.none", "tool_choice.required", "tool_choice.tool",
        "parallel_tool_calls", "max_tokens", "temperature", "top_p", "reasoning",
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
    reader=ResponsesReader,
    writer=ResponsesWriter,
)
