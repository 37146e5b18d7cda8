"""OpenAI Chat Completions <-> the neutral conversation model.

Requests: ``system`` / ``developer`` messages become the system prompt; ``user`` content parts
(text, ``image_url`` as a URL or a data URL); ``assistant`` content, ``tool_calls`` and the
``reasoning_content`` some compatible hosts return; ``tool`` messages are tool results;
``tools`` (function tools), ``tool_choice``, ``parallel_tool_calls``, ``max_tokens`` /
``max_completion_tokens``, ``temperature``, ``top_p``, ``stop``, ``reasoning_effort``, and
``stream_options.include_usage``. A request rendered for a Chat upstream always asks for usage in
the stream: other formats report it, so the translation needs it.

Usage: ``prompt_tokens`` counts the whole prompt, ``prompt_tokens_details.cached_tokens`` the
part read from the cache (the neutral input is the difference); ``completion_tokens`` includes
``completion_tokens_details.reasoning_tokens``.

Reasoning: hosts that stream reasoning (DeepSeek, vLLM, OpenRouter, Ollama) put it in
``delta.reasoning_content`` or ``delta.reasoning``; both are read, and a Chat client is shown
reasoning as ``reasoning_content`` (the official SDKs keep unknown fields, others ignore it).
Only the first choice is translated.
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
from mitmllm.protocol.conversation import kind_of_status
from mitmllm.protocol.conversation import mapping
from mitmllm.protocol.conversation import number_or_none
from mitmllm.protocol.conversation import safe_id
from mitmllm.protocol.conversation import str_or_none
from mitmllm.protocol.conversation import text_of
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.payload import SENTINEL
from mitmllm.protocol.payload import event_json
from mitmllm.protocol.payload import json_text
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import encode

FORMAT = "openai-chat"
PATH = "/v1/chat/completions"

_KNOWN = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
        "stop", "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls",
        "reasoning_effort", "reasoning", "n", "user",
    }
)  # fmt: skip

STOPS: dict[str, Stop] = {
    "stop": Stop.END,
    "length": Stop.MAX_TOKENS,
    "tool_calls": Stop.TOOL_USE,
    "function_call": Stop.TOOL_USE,
    "content_filter": Stop.REFUSAL,
}
STOP_NAMES: dict[Stop, str] = {
    Stop.END: "stop",
    Stop.MAX_TOKENS: "length",
    Stop.TOOL_USE: "tool_calls",
    Stop.STOP_SEQUENCE: "stop",
    Stop.REFUSAL: "content_filter",
    Stop.PAUSE: "stop",
    Stop.OTHER: "stop",
}
ERROR_NAMES: dict[ErrorKind, tuple[str, str | None]] = {
    ErrorKind.INVALID_REQUEST: ("invalid_request_error", None),
    ErrorKind.AUTHENTICATION: ("invalid_request_error", "invalid_api_key"),
    ErrorKind.PERMISSION: ("invalid_request_error", "permission_denied"),
    ErrorKind.NOT_FOUND: ("invalid_request_error", "not_found"),
    ErrorKind.TOO_LARGE: ("invalid_request_error", "request_too_large"),
    ErrorKind.RATE_LIMIT: ("rate_limit_error", "rate_limit_exceeded"),
    ErrorKind.API_ERROR: ("server_error", None),
    ErrorKind.OVERLOADED: ("server_error", "overloaded"),
    ErrorKind.TIMEOUT: ("server_error", "timeout"),
}
_ERROR_WORDS: dict[str, ErrorKind] = {
    "invalid_request_error": ErrorKind.INVALID_REQUEST,
    "invalid_api_key": ErrorKind.AUTHENTICATION,
    "authentication_error": ErrorKind.AUTHENTICATION,
    "permission_error": ErrorKind.PERMISSION,
    "not_found_error": ErrorKind.NOT_FOUND,
    "rate_limit_error": ErrorKind.RATE_LIMIT,
    "rate_limit_exceeded": ErrorKind.RATE_LIMIT,
    "insufficient_quota": ErrorKind.RATE_LIMIT,
    "requests": ErrorKind.RATE_LIMIT,
    "tokens": ErrorKind.RATE_LIMIT,
    "server_error": ErrorKind.API_ERROR,
    "overloaded": ErrorKind.OVERLOADED,
    "overloaded_error": ErrorKind.OVERLOADED,
    "timeout": ErrorKind.TIMEOUT,
}


# --- requests --------------------------------------------------------------------------------


def _parse_request(body: Any, gaps: list[Gap]) -> Request:
    b = mapping(body)
    options = mapping(b.get("stream_options"))
    req = Request(
        model=str_or_none(b.get("model")),
        max_tokens=int_or_none(b.get("max_completion_tokens")) or int_or_none(b.get("max_tokens")),
        temperature=number_or_none(b.get("temperature")),
        top_p=number_or_none(b.get("top_p")),
        stream=b.get("stream") is True,
        include_usage=options.get("include_usage") is True,
    )
    stop = b.get("stop")
    req.stop = [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str)]
    for key in b:
        if key not in _KNOWN:
            gaps.append(Gap(f"/{key}", f"{key!r} has no counterpart in other formats"))
    if b.get("n") not in (None, 1):
        gaps.append(Gap("/n", "only one choice is translated"))
    if "user" in b:
        gaps.append(Gap("/user", "the end-user id is not carried", "info"))
    effort = b.get("reasoning_effort")
    if not isinstance(effort, str):
        effort = mapping(b.get("reasoning")).get("effort")
    if isinstance(effort, str) and effort != "none":
        req.reasoning = Reasoning(effort=effort)
    messages = b.get("messages")
    for i, m in enumerate(messages if isinstance(messages, list) else ()):
        _message(mapping(m), f"/messages/{i}", req, gaps)
    tools = b.get("tools")
    for i, t in enumerate(tools if isinstance(tools, list) else ()):
        t = mapping(t)
        fn = mapping(t.get("function"))
        name = fn.get("name")
        if t.get("type") != "function" or not isinstance(name, str):
            gaps.append(Gap(f"/tools/{i}", f"tool type {t.get('type')!r} is not carried"))
            continue
        req.tools.append(Tool(name, str_or_none(fn.get("description")), fn.get("parameters")))
    choice = b.get("tool_choice")
    parallel = False if b.get("parallel_tool_calls") is False else None
    if choice in ("auto", "none", "required"):
        req.tool_choice = ToolChoice(choice, None, parallel)  # type: ignore[arg-type]
    elif isinstance(choice, dict):
        name = str_or_none(mapping(choice.get("function")).get("name"))
        req.tool_choice = ToolChoice("tool", name, parallel)
    elif parallel is False:
        req.tool_choice = ToolChoice("auto", None, parallel)
    return req


def _message(m: Any, ptr: str, req: Request, gaps: list[Gap]) -> None:
    role = m.get("role")
    content = m.get("content")
    if role in ("system", "developer"):
        if req.messages:
            gaps.append(
                Gap(ptr, "a system message inside the conversation joins the system prompt", "info")
            )
        text = content if isinstance(content, str) else text_of(_parts(content, ptr, gaps))
        if text:
            req.system.append(Text(text))
        return
    if role == "tool":
        parts = [Text(content)] if isinstance(content, str) else _parts(content, ptr, gaps)
        result = ToolResult(
            str(m.get("tool_call_id") or ""), tuple(p for p in parts if isinstance(p, Text | Image))
        )
        req.messages.append(Message("user", [result]))
        return
    if role == "assistant":
        msg = Message("assistant")
        reasoning = m.get("reasoning_content") or m.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            msg.parts.append(Thinking(reasoning, None, FORMAT))
        if isinstance(content, str):
            if content:
                msg.parts.append(Text(content))
        else:
            msg.parts.extend(_parts(content, ptr, gaps))
        calls = m.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            c = mapping(call)
            fn = mapping(c.get("function"))
            args = fn.get("arguments")
            msg.parts.append(
                ToolCall(
                    str(c.get("id") or ""),
                    str(fn.get("name") or ""),
                    args if isinstance(args, str) else json_text(args or {}),
                )
            )
        if "function_call" in m:
            gaps.append(Gap(f"{ptr}/function_call", "legacy function_call is not carried"))
        req.messages.append(msg)
        return
    if role != "user":
        gaps.append(Gap(f"{ptr}/role", f"role {role!r} is not carried"))
        return
    parts = [Text(content)] if isinstance(content, str) else _parts(content, ptr, gaps)
    req.messages.append(Message("user", list(parts)))


def _parts(content: Any, ptr: str, gaps: list[Gap]) -> list[Part]:
    out: list[Part] = []
    for j, part in enumerate(content if isinstance(content, list) else ()):
        p = mapping(part)
        kind = p.get("type")
        if kind in ("text", "refusal"):
            out.append(Text(str(p.get(kind) or "")))
        elif kind == "image_url":
            url = mapping(p.get("image_url")).get("url")
            if isinstance(url, str):
                out.append(image_of_url(url))
        else:
            gaps.append(Gap(f"{ptr}/content/{j}", f"content part {kind!r} is not carried"))
    return out


def image_of_url(url: str) -> Image:
    """An image from a URL; a ``data:`` URL becomes inline base64."""
    if url.startswith("data:") and ";base64," in url[:200]:
        head, data = url[5:].split(";base64,", 1)
        return Image(head or None, data)
    return Image(url=url)


def url_of_image(image: Image) -> str:
    if image.data is not None:
        return f"data:{image.media_type or 'image/png'};base64,{image.data}"
    return image.url or ""


def _render_request(req: Request, model: str, gaps: list[Gap]) -> UpstreamCall:
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": "\n\n".join(t.text for t in req.system)})
    dropped_thinking = False
    for m in req.messages:
        if m.role == "assistant":
            text = text_of(m.parts)
            calls = [
                {
                    "id": p.id,
                    "type": "function",
                    "function": {"name": p.name, "arguments": p.arguments or "{}"},
                }
                for p in m.parts
                if isinstance(p, ToolCall)
            ]
            dropped_thinking |= any(isinstance(p, Thinking) for p in m.parts)
            if not text and not calls:
                continue
            msg: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
            continue
        rest: list[Part] = []
        for p in m.parts:
            if isinstance(p, ToolResult):
                if any(isinstance(c, Image) for c in p.content):
                    gaps.append(Gap("tool_result.images", "a Chat tool message carries text only"))
                if p.is_error:
                    gaps.append(
                        Gap("tool_result.is_error", "a Chat tool message has no error flag", "info")
                    )
                messages.append({"role": "tool", "tool_call_id": p.call_id, "content": p.text})
            elif isinstance(p, Text | Image):
                rest.append(p)
        if rest:
            messages.append({"role": "user", "content": _render_content(rest)})
    if dropped_thinking:
        gaps.append(Gap("thinking_history", "earlier reasoning is not sent back", "info"))
    body: dict[str, Any] = {"model": model, "messages": messages}
    if req.max_tokens is not None:
        body["max_tokens"] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None:
        gaps.append(Gap("top_k", "Chat Completions has no top_k"))
    if req.stop:
        body["stop"] = list(req.stop)
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.schema
                    if isinstance(t.schema, dict)
                    else {"type": "object", "properties": {}},
                },
            }
            for t in req.tools
        ]
    c = req.tool_choice
    if c is not None:
        if c.mode == "tool":
            body["tool_choice"] = {"type": "function", "function": {"name": c.name}}
        else:
            body["tool_choice"] = c.mode
        if c.parallel is False and req.tools:
            body["parallel_tool_calls"] = False
    if req.reasoning is not None:
        body["reasoning_effort"] = req.reasoning.effort_name()
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return UpstreamCall(PATH, body, gaps)


def _render_content(parts: list[Part]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, Text) for p in parts):
        return text_of(parts)
    return [
        {"type": "text", "text": p.text}
        if isinstance(p, Text)
        else {"type": "image_url", "image_url": {"url": url_of_image(p)}}
        for p in parts
        if isinstance(p, Text | Image)
    ]


# --- responses -------------------------------------------------------------------------------


def usage_of(value: Any) -> Usage:
    u = mapping(value)
    prompt = int_or_none(u.get("prompt_tokens"))
    cached = int_or_none(mapping(u.get("prompt_tokens_details")).get("cached_tokens"))
    return Usage(
        input_tokens=None if prompt is None else max(prompt - (cached or 0), 0),
        output_tokens=int_or_none(u.get("completion_tokens")),
        cache_read=cached,
        reasoning_tokens=int_or_none(
            mapping(u.get("completion_tokens_details")).get("reasoning_tokens")
        ),
    )


def usage_dict(u: Usage) -> dict[str, Any]:
    prompt, completion = u.prompt_tokens, u.output_tokens or 0
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if u.cache_read is not None:
        out["prompt_tokens_details"] = {"cached_tokens": u.cache_read}
    if u.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return out


def _parse_response(payload: Any, findings: Findings) -> Response:
    p = mapping(payload)
    resp = Response(str_or_none(p.get("id")), str_or_none(p.get("model")))
    choices = p.get("choices")
    choice = mapping(choices[0]) if isinstance(choices, list) and choices else {}
    if isinstance(choices, list) and len(choices) > 1:
        findings.add(
            "XLT-3", f"{len(choices) - 1} further choice(s) dropped: only the first is translated"
        )
    m = mapping(choice.get("message"))
    reasoning = m.get("reasoning_content") or m.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        resp.parts.append(Thinking(reasoning, None, FORMAT))
    if isinstance(m.get("content"), str) and m["content"]:
        resp.parts.append(Text(m["content"]))
    if isinstance(m.get("refusal"), str) and m["refusal"]:
        resp.parts.append(Text(m["refusal"]))
    calls = m.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        c = mapping(call)
        fn = mapping(c.get("function"))
        args = fn.get("arguments")
        resp.parts.append(
            ToolCall(
                str(c.get("id") or ""),
                str(fn.get("name") or ""),
                args if isinstance(args, str) else "{}",
            )
        )
    resp.stop = _stop(choice.get("finish_reason"), any(isinstance(x, ToolCall) for x in resp.parts))
    resp.usage = usage_of(p.get("usage"))
    return resp


def _stop(reason: Any, tool_calls: bool) -> Stop:
    stop = STOPS.get(str(reason), Stop.END)
    # Several compatible servers say "stop" after tool calls; the calls are what matters.
    return Stop.TOOL_USE if tool_calls and stop is Stop.END else stop


def completion_id(upstream_id: str | None, client: ClientStream) -> str:
    if client.id:
        return client.id
    if upstream_id and upstream_id.startswith("chatcmpl"):
        return upstream_id
    return "chatcmpl-" + safe_id(upstream_id or "mitmllm", "")


def _render_response(resp: Response, client: ClientStream, findings: Findings) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text_of(resp.parts) or None}
    thinking = "".join(p.text for p in resp.parts if isinstance(p, Thinking))
    if thinking:
        message["reasoning_content"] = thinking
    calls = [
        {
            "id": p.id,
            "type": "function",
            "function": {"name": p.name, "arguments": p.arguments or "{}"},
        }
        for p in resp.parts
        if isinstance(p, ToolCall)
    ]
    if calls:
        message["tool_calls"] = calls
    return {
        "id": completion_id(resp.id, client),
        "object": "chat.completion",
        "created": client.created,
        "model": client.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": STOP_NAMES[resp.stop],
            }
        ],
        "usage": usage_dict(resp.usage),
    }


# --- errors ----------------------------------------------------------------------------------


def _parse_error(status: int | None, payload: Any) -> ApiError:
    p = mapping(payload)
    err = p.get("error")
    e = mapping(err)
    message = str_or_none(e.get("message")) or (err if isinstance(err, str) else None)
    kind = kind_of_status(status) if status else None
    if kind is None or kind is ErrorKind.API_ERROR:
        for word in (e.get("code"), e.get("type")):
            if isinstance(word, str) and word in _ERROR_WORDS:
                kind = _ERROR_WORDS[word]
                break
            if isinstance(word, int) and not isinstance(word, bool) and word >= 400:
                kind = kind_of_status(word)
                break
    return ApiError(
        kind or ErrorKind.API_ERROR, message or f"upstream error {status or ''}".strip(), status
    )


def error_object(error: ApiError) -> dict[str, Any]:
    kind, code = ERROR_NAMES[error.kind]
    return {"error": {"message": error.message, "type": kind, "param": None, "code": code}}


def _render_error(error: ApiError) -> tuple[int, bytes]:
    status = KIND_STATUS[error.kind]
    if error.kind is ErrorKind.API_ERROR and error.status and error.status >= 500:
        status = error.status
    return status, json_text(error_object(error)).encode()


# --- streams ---------------------------------------------------------------------------------


class ChatReader(StreamReader):
    """Chat chunks -> neutral events: text, reasoning and tool-call fragments of choice 0 become
    blocks in the order they arrive; a finish_reason closes the last; [DONE] ends."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.started = False
        self.index = -1  # the neutral index of the open block
        self.open: BlockKind | None = None
        self.tool = -1  # the upstream tool-call index of the open (or last) call
        self.tools_seen = 0
        self.finished = False
        self.failed = False
        self.warned_choices = False

    def read(self, ev: Event, payload: Any) -> list[StreamEvent]:
        if self.failed:
            return []  # the client's stream already ended with an error
        if payload is SENTINEL:
            return self._close_block() + [End()]
        p = mapping(payload)
        if not p:
            return []
        if p.get("error") or p.get("object") == "error":
            return [Failure(_parse_error(None, p))]
        out: list[StreamEvent] = []
        if not self.started:
            self.started = True
            out.append(Start(str_or_none(p.get("id")), str_or_none(p.get("model"))))
        choices = p.get("choices")
        for c in choices if isinstance(choices, list) else ():
            c = mapping(c)
            if c.get("index", 0) != 0:
                if not self.warned_choices:
                    self.warned_choices = True
                    self.findings.add("XLT-3", "choices after the first are dropped")
                continue
            out += self._delta(mapping(c.get("delta")))
            reason = c.get("finish_reason")
            if reason is not None and not self.finished:
                self.finished = True
                out += self._close_block()
                out.append(Finish(_stop(reason, self.tools_seen > 0)))
        if isinstance(p.get("usage"), dict):
            out.append(UsageUpdate(usage_of(p["usage"])))
        return out

    def _delta(self, d: Any) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        reasoning = d.get("reasoning_content")
        if not isinstance(reasoning, str):
            reasoning = d.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out += self._ensure("thinking")
            out.append(ThinkingDelta(self.index, reasoning))
        for key in ("content", "refusal"):
            text = d.get(key)
            if isinstance(text, str) and text:
                out += self._ensure("text")
                out.append(TextDelta(self.index, text))
        calls = d.get("tool_calls")
        for position, call in enumerate(calls if isinstance(calls, list) else ()):
            out += self._tool_fragment(mapping(call), position)
        return out

    def _tool_fragment(self, call: Any, position: int) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        index = call.get("index", position)
        fn = mapping(call.get("function"))
        if index != self.tool or self.open != "tool_call":
            if isinstance(index, int) and index <= self.tool:
                message = f"tool call {index} continues after call {self.tool} began"
                self.findings.add("XLT-4", f"{message}: interleaved calls cannot be translated")
                self.failed = True
                return [
                    Failure(
                        ApiError(
                            ErrorKind.API_ERROR, f"upstream interleaved tool calls ({message})"
                        )
                    )
                ]
            self.tool = index if isinstance(index, int) else self.tool + 1
            out += self._close_block()
            self.index += 1
            self.open = "tool_call"
            self.tools_seen += 1
            call_id = str_or_none(call.get("id")) or f"call_{self.index}"
            out.append(BlockStart(self.index, "tool_call", call_id, str(fn.get("name") or "")))
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            out.append(ToolArgsDelta(self.index, args))
        return out

    def _ensure(self, kind: BlockKind) -> list[StreamEvent]:
        if self.open == kind:
            return []
        out = self._close_block()
        self.index += 1
        self.open = kind
        out.append(BlockStart(self.index, kind))
        return out

    def _close_block(self) -> list[StreamEvent]:
        if self.open is None:
            return []
        self.open = None
        return [BlockStop(self.index)]


class ChatWriter(StreamWriter):
    """Neutral events -> Chat chunks with a constant envelope (id, created, model)."""

    def __init__(self, client: ClientStream, findings: Findings) -> None:
        self.client = client
        self.findings = findings
        self.id = client.id or "chatcmpl-mitmllm"
        self.tool = -1  # the client's tool-call index
        self.block: BlockKind | None = None
        self.args = False  # the open tool call got argument text
        self.finished = False
        self.usage = Usage()

    def write(self, e: StreamEvent) -> bytes:
        if isinstance(e, Start):
            self.id = completion_id(e.id, self.client)
            if e.usage is not None:
                self.usage.update(e.usage)
            return self._chunk({"role": "assistant", "content": ""})
        if isinstance(e, BlockStart):
            self.block = e.kind
            if e.kind != "tool_call":
                return b""
            self.tool += 1
            self.args = False
            call = {
                "index": self.tool,
                "id": e.id or f"call_{self.tool}",
                "type": "function",
                "function": {"name": e.name or "", "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if isinstance(e, TextDelta):
            return self._chunk({"content": e.text}) if e.text else b""
        if isinstance(e, ThinkingDelta):
            return self._chunk({"reasoning_content": e.text}) if e.text else b""
        if isinstance(e, ToolArgsDelta):
            if not e.fragment:
                return b""
            self.args = self.args or bool(e.fragment.strip())
            return self._chunk(
                {"tool_calls": [{"index": self.tool, "function": {"arguments": e.fragment}}]}
            )
        if isinstance(e, BlockStop):
            kind, self.block = self.block, None
            if kind == "tool_call" and not self.args:  # a call without arguments is {}
                return self._chunk(
                    {"tool_calls": [{"index": self.tool, "function": {"arguments": "{}"}}]}
                )
            return b""
        if isinstance(e, Finish):
            return self._finish(e.stop)
        if isinstance(e, UsageUpdate):
            self.usage.update(e.usage)
            return b""
        if isinstance(e, End):
            out = b"" if self.finished else self._finish(Stop.END)
            if self.client.include_usage:
                out += self._data(
                    {**self._envelope(), "choices": [], "usage": usage_dict(self.usage)}
                )
            return out + encode("[DONE]")
        if isinstance(e, Failure):
            return self._data(error_object(e.error))
        return b""

    def _finish(self, stop: Stop) -> bytes:
        self.finished = True
        choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": STOP_NAMES[stop]}
        return self._data({**self._envelope(), "choices": [choice]})

    def _envelope(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.client.created,
            "model": self.client.model,
        }

    def _chunk(self, delta: dict[str, Any]) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return self._data({**self._envelope(), "choices": [choice]})

    @staticmethod
    def _data(payload: dict[str, Any]) -> bytes:
        return encode(event_json(payload))


def _error_event(error: ApiError) -> bytes:
    return encode(event_json(error_object(error)))


#: The request features this format can carry.
_FEATURES = frozenset(
    {
        "system", "text", "images", "tools", "tool_calls", "tool_results",
        "tool_choice.auto", "tool_choice.none", "tool_choice.required", "tool_choice.tool",
        "parallel_tool_calls", "max_tokens", "temperature", "top_p", "stop", "reasoning",
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
    reader=ChatReader,
    writer=ChatWriter,
)
