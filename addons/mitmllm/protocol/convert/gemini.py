"""Gemini generateContent <-> the neutral conversation model.

Requests: the model is in the path (``models/{model}:streamGenerateContent?alt=sse`` streams);
``systemInstruction``, ``contents`` with roles ``user`` / ``model`` and parts (``text``,
``thought`` text, ``inlineData`` / ``fileData`` images, ``functionCall``, ``functionResponse``),
``tools[].functionDeclarations``, ``toolConfig.functionCallingConfig`` (``ANY`` is required, one
allowed name names the tool), ``generationConfig`` (``maxOutputTokens``, ``temperature``,
``topP``, ``topK``, ``stopSequences``, ``thinkingConfig``). Both JSON spellings are read
(``generationConfig`` and ``generation_config``).

Tool call ids: Gemini may leave ``functionCall.id`` out. A call without one gets a minted id
(``call_<turn>_<part>`` in a request, ``call_<n>`` in a response), and a ``functionResponse``
without one takes the id of the earliest unanswered call of the same name, so results meet
their calls in any format. Requests to Gemini carry the ids and, as Gemini matches results by
name, the call's name on each result (looked up from the call's id).

Usage: ``promptTokenCount`` includes ``cachedContentTokenCount``; output is
``candidatesTokenCount`` plus ``thoughtsTokenCount``.

Streams: function calls arrive whole; the finish reason may come on every chunk (older models),
so the last one is taken when the stream ends, which is Gemini's only terminator.
"""

from __future__ import annotations

from collections import deque
from typing import Any

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
from mitmllm.protocol.conversation import str_or_none
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.payload import INVALID
from mitmllm.protocol.payload import event_json
from mitmllm.protocol.payload import json_text
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import encode

FORMAT = "gemini"
EOL = "\r\n"  # what the API sends

_KNOWN = frozenset(
    {
        "contents", "systemInstruction", "system_instruction", "tools", "toolConfig",
        "tool_config", "generationConfig", "generation_config", "safetySettings",
        "safety_settings", "model",
    }
)  # fmt: skip

STOPS: dict[str, Stop] = {
    "STOP": Stop.END,
    "MAX_TOKENS": Stop.MAX_TOKENS,
    "SAFETY": Stop.REFUSAL,
    "RECITATION": Stop.REFUSAL,
    "BLOCKLIST": Stop.REFUSAL,
    "PROHIBITED_CONTENT": Stop.REFUSAL,
    "SPII": Stop.REFUSAL,
    "IMAGE_SAFETY": Stop.REFUSAL,
}
STOP_NAMES: dict[Stop, str] = {
    Stop.END: "STOP",
    Stop.TOOL_USE: "STOP",
    Stop.STOP_SEQUENCE: "STOP",
    Stop.PAUSE: "STOP",
    Stop.MAX_TOKENS: "MAX_TOKENS",
    Stop.REFUSAL: "SAFETY",
    Stop.OTHER: "OTHER",
}
ERROR_STATUSES: dict[str, ErrorKind] = {
    "INVALID_ARGUMENT": ErrorKind.INVALID_REQUEST,
    "FAILED_PRECONDITION": ErrorKind.INVALID_REQUEST,
    "UNAUTHENTICATED": ErrorKind.AUTHENTICATION,
    "PERMISSION_DENIED": ErrorKind.PERMISSION,
    "NOT_FOUND": ErrorKind.NOT_FOUND,
    "RESOURCE_EXHAUSTED": ErrorKind.RATE_LIMIT,
    "INTERNAL": ErrorKind.API_ERROR,
    "UNAVAILABLE": ErrorKind.OVERLOADED,
    "DEADLINE_EXCEEDED": ErrorKind.TIMEOUT,
}
ERROR_NAMES: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID_REQUEST: (400, "INVALID_ARGUMENT"),
    ErrorKind.AUTHENTICATION: (401, "UNAUTHENTICATED"),
    ErrorKind.PERMISSION: (403, "PERMISSION_DENIED"),
    ErrorKind.NOT_FOUND: (404, "NOT_FOUND"),
    ErrorKind.TOO_LARGE: (400, "INVALID_ARGUMENT"),
    ErrorKind.RATE_LIMIT: (429, "RESOURCE_EXHAUSTED"),
    ErrorKind.API_ERROR: (500, "INTERNAL"),
    ErrorKind.OVERLOADED: (503, "UNAVAILABLE"),
    ErrorKind.TIMEOUT: (504, "DEADLINE_EXCEEDED"),
}


def _either(obj: Any, camel: str, snake: str) -> Any:
    o = mapping(obj)
    value = o.get(camel)
    return o.get(snake) if value is None else value


# --- requests --------------------------------------------------------------------------------


def _parse_request(path: str, body: Any, gaps: list[Gap]) -> Request:
    from mitmllm.protocol.gemini import DIALECT  # the path grammar lives with the dialect

    b = mapping(body)
    path = path.split("?", 1)[0]
    req = Request(
        model=DIALECT.request_model(path, body), stream=DIALECT.wants_stream(path, {}, body)
    )
    for key in b:
        if key not in _KNOWN:
            gaps.append(Gap(f"/{key}", f"{key!r} has no counterpart in other formats"))
    for key in ("safetySettings", "safety_settings"):
        if key in b:
            gaps.append(Gap(f"/{key}", "safety settings are not carried", "info"))
    system = _either(b, "systemInstruction", "system_instruction")
    for part in mapping(system).get("parts") or ():
        text = mapping(part).get("text")
        if isinstance(text, str) and text:
            req.system.append(Text(text))
    pending: dict[str, deque[str]] = {}  # name -> ids of calls not yet answered
    contents = b.get("contents")
    for i, c in enumerate(contents if isinstance(contents, list) else ()):
        c = mapping(c)
        msg = Message("assistant" if c.get("role") == "model" else "user")
        parts = c.get("parts")
        for j, part in enumerate(parts if isinstance(parts, list) else ()):
            p = _part(mapping(part), f"/contents/{i}/parts/{j}", f"call_{i}_{j}", pending, gaps)
            if p is not None:
                msg.parts.append(p)
        req.messages.append(msg)
    tools = b.get("tools")
    for i, t in enumerate(tools if isinstance(tools, list) else ()):
        t = mapping(t)
        key = "functionDeclarations" if "functionDeclarations" in t else "function_declarations"
        decls = t.get(key)
        if not isinstance(decls, list):
            gaps.append(Gap(f"/tools/{i}", "a server tool runs only at Google"))
            continue
        for d in decls:
            d = mapping(d)
            if isinstance(d.get("name"), str):
                schema = d.get("parameters") or _either(
                    d, "parametersJsonSchema", "parameters_json_schema"
                )
                req.tools.append(Tool(d["name"], str_or_none(d.get("description")), schema))
    fc = _either(
        _either(b, "toolConfig", "tool_config"), "functionCallingConfig", "function_calling_config"
    )
    if isinstance(fc, dict):
        mode = str(fc.get("mode") or "AUTO").upper()
        names = _either(fc, "allowedFunctionNames", "allowed_function_names")
        if mode in ("ANY", "VALIDATED") and isinstance(names, list) and len(names) == 1:
            req.tool_choice = ToolChoice("tool", str(names[0]))
        else:
            req.tool_choice = ToolChoice({"ANY": "required", "NONE": "none"}.get(mode, "auto"))  # type: ignore[arg-type]
    g = _either(b, "generationConfig", "generation_config")
    req.max_tokens = int_or_none(_either(g, "maxOutputTokens", "max_output_tokens"))
    req.temperature = number_or_none(mapping(g).get("temperature"))
    req.top_p = number_or_none(_either(g, "topP", "top_p"))
    req.top_k = int_or_none(_either(g, "topK", "top_k"))
    stops = _either(g, "stopSequences", "stop_sequences")
    req.stop = [s for s in stops if isinstance(s, str)] if isinstance(stops, list) else []
    if (int_or_none(_either(g, "candidateCount", "candidate_count")) or 1) > 1:
        gaps.append(Gap("/generationConfig/candidateCount", "only one candidate is translated"))
    thinking = _either(g, "thinkingConfig", "thinking_config")
    if isinstance(thinking, dict):
        budget = int_or_none(_either(thinking, "thinkingBudget", "thinking_budget"))
        level = str_or_none(_either(thinking, "thinkingLevel", "thinking_level"))
        include = _either(thinking, "includeThoughts", "include_thoughts") is True
        if budget is not None and budget > 0:
            req.reasoning = Reasoning(level, budget, include)
        elif budget == -1 or level or include:
            req.reasoning = Reasoning(level or "medium", None, include)
    return req


def _part(
    p: Any, ptr: str, minted: str, pending: dict[str, deque[str]], gaps: list[Gap]
) -> Part | None:
    if isinstance(p.get("text"), str):
        if p.get("thought") is True:
            return Thinking(p["text"], str_or_none(p.get("thoughtSignature")), FORMAT)
        return Text(p["text"])
    inline = _either(p, "inlineData", "inline_data")
    if isinstance(inline, dict):
        mime = str_or_none(_either(inline, "mimeType", "mime_type"))
        if mime and mime.startswith("image/"):
            return Image(mime, str_or_none(inline.get("data")))
    file = _either(p, "fileData", "file_data")
    if isinstance(file, dict):
        mime = str_or_none(_either(file, "mimeType", "mime_type"))
        if mime is None or mime.startswith("image/"):
            return Image(mime, None, str_or_none(_either(file, "fileUri", "file_uri")))
    call = _either(p, "functionCall", "function_call")
    if isinstance(call, dict):
        name = str(call.get("name") or "")
        minted_or_given = str_or_none(call.get("id")) or minted
        pending.setdefault(name, deque()).append(minted_or_given)
        return ToolCall(minted_or_given, name, json_text(call.get("args") or {}))
    result = _either(p, "functionResponse", "function_response")
    if isinstance(result, dict):
        name = str(result.get("name") or "")
        queue = pending.get(name)
        given = str_or_none(result.get("id"))
        if given is not None and queue and given in queue:
            queue.remove(given)
        call_id = given if given is not None else (queue.popleft() if queue else minted)
        response = result.get("response")
        return ToolResult(call_id, (Text(_result_text(response)),), _is_error(response), name)
    if "thoughtSignature" in p or "thought_signature" in p:
        return None  # a bare signature part: nothing to carry
    gaps.append(Gap(ptr, f"part {sorted(p)[:1]} has no counterpart in other formats"))
    return None


def _result_text(response: Any) -> str:
    """A functionResponse's response as the text other formats carry: the one string of a
    ``{"result" | "output" | "content": str}`` object, else its JSON."""
    r = mapping(response)
    if len(r) == 1:
        ((key, value),) = r.items()
        if key in ("result", "output", "content", "error") and isinstance(value, str):
            return value
    return json_text(response) if response is not None else ""


def _is_error(response: Any) -> bool:
    r = mapping(response)
    return len(r) == 1 and "error" in r


def _render_request(req: Request, model: str, gaps: list[Gap]) -> UpstreamCall:
    names = {p.id: p.name for m in req.messages for p in m.parts if isinstance(p, ToolCall)}
    contents: list[dict[str, Any]] = []
    dropped_thinking = False
    for m in req.messages:
        parts: list[dict[str, Any]] = []
        for p in m.parts:
            if isinstance(p, Text):
                if p.text:
                    parts.append({"text": p.text})
            elif isinstance(p, Image):
                if p.data is not None:
                    parts.append(
                        {"inlineData": {"mimeType": p.media_type or "image/png", "data": p.data}}
                    )
                else:
                    parts.append(
                        {
                            "fileData": {
                                "mimeType": p.media_type or "image/png",
                                "fileUri": p.url or "",
                            }
                        }
                    )
            elif isinstance(p, ToolCall):
                call = {"id": p.id, "name": p.name, "args": _args(p, gaps)}
                parts.append({"functionCall": call})
            elif isinstance(p, ToolResult):
                name = p.name or names.get(p.call_id)
                if name is None:
                    gaps.append(
                        Gap(f"tool_results/{p.call_id}", "no earlier call names this result's tool")
                    )
                    name = "tool"
                if any(isinstance(c, Image) for c in p.content):
                    gaps.append(
                        Gap("tool_result.images", "a Gemini function response carries text only")
                    )
                result = {"id": p.call_id, "name": name, "response": _response_object(p)}
                parts.append({"functionResponse": result})
            elif isinstance(p, Thinking):
                dropped_thinking = True
        if not parts:
            continue
        role = "model" if m.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    if dropped_thinking:
        gaps.append(Gap("thinking_history", "earlier reasoning is not sent back", "info"))
    body: dict[str, Any] = {"contents": contents}
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": t.text} for t in req.system if t.text]}
    if req.tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": t.name,
                        **({"description": t.description} if t.description else {}),
                        **(
                            {"parameters": t.schema}
                            if isinstance(t.schema, dict) and t.schema.get("properties")
                            else {}
                        ),
                    }
                    for t in req.tools
                ]
            }
        ]
    c = req.tool_choice
    if c is not None:
        config: dict[str, Any] = {
            "mode": {"required": "ANY", "tool": "ANY", "none": "NONE"}.get(c.mode, "AUTO")
        }
        if c.mode == "tool" and c.name:
            config["allowedFunctionNames"] = [c.name]
        body["toolConfig"] = {"functionCallingConfig": config}
        if c.parallel is False:
            gaps.append(Gap("parallel_tool_calls", "Gemini cannot forbid parallel calls"))
    g: dict[str, Any] = {}
    for key, value in (
        ("maxOutputTokens", req.max_tokens),
        ("temperature", req.temperature),
        ("topP", req.top_p),
        ("topK", req.top_k),
    ):
        if value is not None:
            g[key] = value
    if req.stop:
        g["stopSequences"] = list(req.stop)
    if req.reasoning is not None:
        g["thinkingConfig"] = {
            "thinkingBudget": req.reasoning.budget_tokens(),
            "includeThoughts": True,
        }
    if g:
        body["generationConfig"] = g
    method = "streamGenerateContent?alt=sse" if req.stream else "generateContent"
    return UpstreamCall(f"/v1beta/models/{model}:{method}", body, gaps)


def _args(call: ToolCall, gaps: list[Gap]) -> dict[str, Any]:
    value, _ = parse_json(call.arguments or "{}")
    if isinstance(value, dict):
        return value
    gaps.append(Gap(f"tool_calls/{call.id}", "tool call arguments are not a JSON object; {} sent"))
    return {}


def _response_object(result: ToolResult) -> dict[str, Any]:
    text = result.text
    if result.is_error:
        return {"error": text}
    value, _ = parse_json(text) if text.lstrip().startswith("{") else (INVALID, None)
    return value if isinstance(value, dict) else {"result": text}


# --- responses -------------------------------------------------------------------------------


def usage_of(value: Any) -> Usage:
    u = mapping(value)
    prompt = int_or_none(u.get("promptTokenCount"))
    cached = int_or_none(u.get("cachedContentTokenCount"))
    candidates = int_or_none(u.get("candidatesTokenCount"))
    thoughts = int_or_none(u.get("thoughtsTokenCount"))
    output = (
        None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    )
    return Usage(
        input_tokens=None if prompt is None else max(prompt - (cached or 0), 0),
        output_tokens=output,
        cache_read=cached,
        reasoning_tokens=thoughts,
    )


def usage_dict(u: Usage) -> dict[str, Any]:
    thoughts = u.reasoning_tokens or 0
    candidates = max((u.output_tokens or 0) - thoughts, 0)
    out: dict[str, Any] = {"promptTokenCount": u.prompt_tokens, "candidatesTokenCount": candidates}
    if u.cache_read:
        out["cachedContentTokenCount"] = u.cache_read
    if thoughts:
        out["thoughtsTokenCount"] = thoughts
    out["totalTokenCount"] = u.prompt_tokens + candidates + thoughts
    return out


def _candidate(payload: Any) -> dict[str, Any]:
    candidates = mapping(payload).get("candidates")
    for c in candidates if isinstance(candidates, list) else ():
        if mapping(c).get("index", 0) == 0:
            return dict(mapping(c))
    return {}


def _stop(payload: Any, tool_calls: bool) -> Stop | None:
    reason = _candidate(payload).get("finishReason")
    if reason is None:
        blocked = mapping(mapping(payload).get("promptFeedback")).get("blockReason")
        return Stop.REFUSAL if blocked else None
    stop = STOPS.get(str(reason), Stop.OTHER)
    return Stop.TOOL_USE if tool_calls and stop is Stop.END else stop


def _parse_response(payload: Any, findings: Findings) -> Response:
    p = mapping(payload)
    resp = Response(str_or_none(p.get("responseId")), str_or_none(p.get("modelVersion")))
    parts = mapping(_candidate(p).get("content")).get("parts")
    for part in parts if isinstance(parts, list) else ():
        q = mapping(part)
        call = _either(q, "functionCall", "function_call")
        if isinstance(q.get("text"), str):
            if q.get("thought") is True:
                resp.parts.append(
                    Thinking(q["text"], str_or_none(q.get("thoughtSignature")), FORMAT)
                )
            elif q["text"]:
                resp.parts.append(Text(q["text"]))
        elif isinstance(call, dict):
            call_id = (
                str_or_none(call.get("id"))
                or f"call_{sum(isinstance(x, ToolCall) for x in resp.parts)}"
            )
            resp.parts.append(
                ToolCall(
                    call_id,
                    str(call.get("name") or ""),
                    json_text(call.get("args") or {}),
                )
            )
        elif not ("thoughtSignature" in q and len(q) == 1):
            findings.add("XLT-3", f"part {sorted(q)[:1]} has no counterpart in the client's format")
    resp.stop = _stop(p, any(isinstance(x, ToolCall) for x in resp.parts)) or Stop.END
    resp.usage = usage_of(p.get("usageMetadata"))
    return resp


def _render_response(resp: Response, client: ClientStream, findings: Findings) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for part in resp.parts:
        if isinstance(part, Thinking):
            parts.append({"text": part.text, "thought": True})
        elif isinstance(part, Text):
            parts.append({"text": part.text})
        elif isinstance(part, ToolCall):
            value, _ = parse_json(part.arguments or "{}")
            parts.append(
                {
                    "functionCall": {
                        "id": part.id,
                        "name": part.name,
                        "args": value if isinstance(value, dict) else {},
                    }
                }
            )
    return _chunk(
        parts, STOP_NAMES[resp.stop], usage_dict(resp.usage), client.model, resp.id or client.id
    )


def _chunk(
    parts: list[dict[str, Any]],
    finish: str | None,
    usage: dict[str, Any] | None,
    model: str,
    rid: str | None,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish is not None:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    out: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        out["usageMetadata"] = usage
    out["modelVersion"] = model
    if rid:
        out["responseId"] = rid
    return out


# --- errors ----------------------------------------------------------------------------------


def _parse_error(status: int | None, payload: Any) -> ApiError:
    err = mapping(mapping(payload).get("error"))
    code = int_or_none(err.get("code"))
    kind = ERROR_STATUSES.get(str(err.get("status")), kind_of_status(status or code))
    message = str_or_none(err.get("message"))
    return ApiError(
        kind, message or f"upstream error {status or code or ''}".strip(), status or code
    )


def error_object(error: ApiError) -> dict[str, Any]:
    status, name = ERROR_NAMES[error.kind]
    if error.kind is ErrorKind.API_ERROR and error.status and error.status >= 500:
        status = error.status
    return {"error": {"code": status, "message": error.message, "status": name}}


def _render_error(error: ApiError) -> tuple[int, bytes]:
    obj = error_object(error)
    return obj["error"]["code"], json_text(obj).encode()


# --- streams ---------------------------------------------------------------------------------


class GeminiReader(StreamReader):
    """Gemini chunks -> neutral events. Text and thought parts extend the open block of their
    kind; each function call is a whole block; the stream ends with the connection."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.started = False
        self.index = -1
        self.open: BlockKind | None = None
        self.calls = 0
        self.stop: Stop | None = None
        self.failed = False

    def read(self, ev: Event, payload: Any) -> list[StreamEvent]:
        p = mapping(payload)
        if not p:
            return []
        if "error" in p:
            self.failed = True
            return [Failure(_parse_error(None, p))]
        out: list[StreamEvent] = []
        if not self.started:
            self.started = True
            out.append(Start(str_or_none(p.get("responseId")), str_or_none(p.get("modelVersion"))))
        parts = mapping(_candidate(p).get("content")).get("parts")
        for part in parts if isinstance(parts, list) else ():
            out += self._part(mapping(part))
        stop = _stop(p, self.calls > 0)
        if stop is not None:
            self.stop = stop
        if isinstance(p.get("usageMetadata"), dict):
            out.append(UsageUpdate(usage_of(p["usageMetadata"])))
        return out

    def _part(self, q: Any) -> list[StreamEvent]:
        call = _either(q, "functionCall", "function_call")
        if isinstance(call, dict):
            out = self._close()
            self.index += 1
            call_id = str_or_none(call.get("id")) or f"call_{self.calls}"
            self.calls += 1
            args = json_text(call.get("args") or {})
            name = str(call.get("name") or "")
            return out + [
                BlockStart(self.index, "tool_call", call_id, name),
                ToolArgsDelta(self.index, args),
                BlockStop(self.index),
            ]
        text = q.get("text")
        if isinstance(text, str):
            kind: BlockKind = "thinking" if q.get("thought") is True else "text"
            if not text:
                return []
            out = [] if self.open == kind else self._close() + self._open(kind)
            out.append(
                ThinkingDelta(self.index, text)
                if kind == "thinking"
                else TextDelta(self.index, text)
            )
            return out
        if not ("thoughtSignature" in q and len(q) == 1):
            self.findings.add(
                "XLT-3", f"part {sorted(q)[:1]} has no counterpart in the client's format"
            )
        return []

    def _open(self, kind: BlockKind) -> list[StreamEvent]:
        self.index += 1
        self.open = kind
        return [BlockStart(self.index, kind)]

    def _close(self) -> list[StreamEvent]:
        if self.open is None:
            return []
        self.open = None
        return [BlockStop(self.index)]

    def close(self) -> list[StreamEvent]:
        if self.failed or self.stop is None:
            return []  # no finish reason: the stream was cut (GEM-8)
        return self._close() + [Finish(self.stop), End()]


class GeminiWriter(StreamWriter):
    """Neutral events -> Gemini chunks. A function call is sent whole when its block ends (its
    arguments are the only thing held); the finish reason and usage come in a final chunk."""

    def __init__(self, client: ClientStream, findings: Findings) -> None:
        self.client = client
        self.findings = findings
        self.id = client.id
        self.call: tuple[str, str] | None = None  # (id, name) of the call being assembled
        self.args: list[str] = []
        self.stop = Stop.END
        self.usage = Usage()

    def write(self, e: StreamEvent) -> bytes:
        if isinstance(e, Start):
            self.id = self.client.id or e.id or "mitmllm"
            if e.usage is not None:
                self.usage.update(e.usage)
            return b""
        if isinstance(e, BlockStart):
            if e.kind == "tool_call":
                self.call = (e.id or f"call_{e.index}", e.name or "")
                self.args = []
            return b""
        if isinstance(e, TextDelta):
            return self._send([{"text": e.text}]) if e.text else b""
        if isinstance(e, ThinkingDelta):
            return self._send([{"text": e.text, "thought": True}]) if e.text else b""
        if isinstance(e, ToolArgsDelta):
            self.args.append(e.fragment)
            return b""
        if isinstance(e, BlockStop):
            if self.call is None:
                return b""
            (call_id, name), self.call = self.call, None
            text = "".join(self.args).strip() or "{}"
            self.args = []
            value, _ = parse_json(text)
            if not isinstance(value, dict):
                self.findings.add("XLT-4", f"tool call {name!r} arguments are not a JSON object")
                value = {}
            return self._send([{"functionCall": {"id": call_id, "name": name, "args": value}}])
        if isinstance(e, Finish):
            self.stop = e.stop
            return b""
        if isinstance(e, UsageUpdate):
            self.usage.update(e.usage)
            return b""
        if isinstance(e, End):
            return self._data(
                _chunk(
                    [{"text": ""}],
                    STOP_NAMES[self.stop],
                    usage_dict(self.usage),
                    self.client.model,
                    self.id,
                )
            )
        if isinstance(e, Failure):
            return self._data(error_object(e.error))
        return b""

    def _send(self, parts: list[dict[str, Any]]) -> bytes:
        return self._data(_chunk(parts, None, None, self.client.model, self.id))

    @staticmethod
    def _data(payload: dict[str, Any]) -> bytes:
        return encode(event_json(payload), eol=EOL)


def _error_event(error: ApiError) -> bytes:
    return encode(event_json(error_object(error)), eol=EOL)


#: The request features this format can carry.
_FEATURES = frozenset(
    {
        "system", "text", "images", "tools", "tool_calls", "tool_results",
        "tool_choice.auto", "tool_choice.none", "tool_choice.required", "tool_choice.tool",
        "max_tokens", "temperature", "top_p", "top_k", "stop", "reasoning",
    }
)  # fmt: skip

CONVERTER = Converter(
    format=FORMAT,
    features=_FEATURES,
    parse_request=_parse_request,
    render_request=_render_request,
    parse_response=_parse_response,
    render_response=_render_response,
    parse_error=_parse_error,
    render_error=_render_error,
    error_event=_error_event,
    reader=GeminiReader,
    writer=GeminiWriter,
)
