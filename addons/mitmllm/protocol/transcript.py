"""A request's conversation as a person reads it: system prompt, turns by role, tool calls and
their results (sans-I/O; for the mitmweb request view and the command line).

Each wire format spells a conversation its own way; `transcript` reads any of the four into one
small shape, keeping text as it is and naming everything else (an image, a tool call with its
arguments, a tool result with the call it answers). It reads, it never validates: whatever it
does not recognise shows up as an ``other`` part with its type, so nothing is hidden.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any


@dataclass(frozen=True, slots=True)
class Part:
    kind: str  # text | thinking | tool_call | tool_result | image | other
    text: str = ""
    name: str | None = None  # the tool's name (tool_call, tool_result where known), or a type
    id: str | None = None  # the tool call's id (tool_call, tool_result)
    error: bool = False  # a tool result that reports an error


@dataclass(slots=True)
class Turn:
    role: str  # user | assistant | tool (Chat's tool messages) | the format's own word
    parts: list[Part] = field(default_factory=list)


@dataclass(slots=True)
class Transcript:
    system: list[str] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)


def transcript(fmt: str | None, body: Any) -> Transcript:
    """The conversation in a request body of `fmt` (empty for anything else)."""
    read = _READERS.get(fmt or "")
    if read is None or not isinstance(body, dict):
        return Transcript()
    out = Transcript()
    read(body, out)
    return out


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _texts(value: Any) -> list[str]:
    """Text from a string or a list of text parts ({"text": ...} of any type)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [p["text"] for p in value if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


# --- Anthropic Messages -------------------------------------------------------------------------


def _anthropic(body: dict[str, Any], out: Transcript) -> None:
    out.system.extend(_texts(body.get("system")))
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        turn = Turn(str(m.get("role", "?")))
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for b in blocks if isinstance(blocks, list) else []:
            if isinstance(b, dict):
                turn.parts.append(_anthropic_block(b))
        out.turns.append(turn)


def _anthropic_block(b: dict[str, Any]) -> Part:
    kind = b.get("type")
    if kind == "text":
        return Part("text", str(b.get("text", "")))
    if kind in ("thinking", "redacted_thinking"):
        return Part("thinking", str(b.get("thinking", "(redacted)")))
    if kind in ("tool_use", "server_tool_use"):
        return Part("tool_call", _json(b.get("input", {})), b.get("name"), b.get("id"))
    if kind == "tool_result":
        text = "\n".join(_texts(b.get("content")))
        return Part("tool_result", text, None, b.get("tool_use_id"), bool(b.get("is_error")))
    if kind in ("image", "document"):
        return Part("image" if kind == "image" else "other", "", str(kind))
    return Part("other", "", str(kind))


# --- OpenAI Chat Completions --------------------------------------------------------------------


def _openai_chat(body: dict[str, Any], out: Transcript) -> None:
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        role = str(m.get("role", "?"))
        content = m.get("content")
        if role in ("system", "developer"):
            out.system.extend(_texts(content))
            continue
        turn = Turn(role)
        if role == "tool":
            turn.parts.append(
                Part("tool_result", "\n".join(_texts(content)), None, m.get("tool_call_id"))
            )
        else:
            turn.parts.extend(_chat_content(content))
            for call in m.get("tool_calls") or []:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    turn.parts.append(
                        Part("tool_call", _json(fn.get("arguments", "")), fn.get("name"),
                             call.get("id"))
                    )  # fmt: skip
        out.turns.append(turn)


def _chat_content(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [Part("text", content)]
    out = []
    for p in content if isinstance(content, list) else []:
        if isinstance(p, dict):
            kind = p.get("type")
            if kind == "text":
                out.append(Part("text", str(p.get("text", ""))))
            else:
                out.append(Part("image" if kind == "image_url" else "other", "", str(kind)))
    return out


# --- OpenAI Responses ---------------------------------------------------------------------------


def _openai_responses(body: dict[str, Any], out: Transcript) -> None:
    out.system.extend(_texts(body.get("instructions")))
    items = body.get("input")
    if isinstance(items, str):
        out.turns.append(Turn("user", [Part("text", items)]))
        return
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message" or "role" in item and kind not in _RESPONSES_ITEMS:
            role = str(item.get("role", "?"))
            texts = _texts(item.get("content"))
            if role in ("system", "developer"):
                out.system.extend(texts)
            else:
                out.turns.append(Turn(role, [Part("text", t) for t in texts]))
        elif kind in ("function_call", "custom_tool_call"):
            args = item.get("arguments", item.get("input", ""))
            part = Part("tool_call", _json(args), item.get("name"), item.get("call_id"))
            out.turns.append(Turn("assistant", [part]))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            part = Part("tool_result", _json(item.get("output", "")), None, item.get("call_id"))
            out.turns.append(Turn("tool", [part]))
        elif kind == "reasoning":
            summary = "\n".join(_texts(item.get("summary"))) or "(encrypted)"
            out.turns.append(Turn("assistant", [Part("thinking", summary)]))
        else:
            out.turns.append(Turn(str(item.get("role", "?")), [Part("other", "", str(kind))]))


_RESPONSES_ITEMS = frozenset(
    {"function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output",
     "reasoning"}
)  # fmt: skip


# --- Gemini -------------------------------------------------------------------------------------


def _gemini(body: dict[str, Any], out: Transcript) -> None:
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, dict):
        out.system.extend(_texts(system.get("parts")))
    for c in body.get("contents") or []:
        if not isinstance(c, dict):
            continue
        turn = Turn("assistant" if c.get("role") == "model" else str(c.get("role", "user")))
        for p in c.get("parts") or []:
            if not isinstance(p, dict):
                continue
            if isinstance(p.get("text"), str):
                turn.parts.append(Part("thinking" if p.get("thought") else "text", p["text"]))
            elif isinstance(p.get("functionCall"), dict):
                call = p["functionCall"]
                turn.parts.append(
                    Part("tool_call", _json(call.get("args", {})), call.get("name"), call.get("id"))
                )
            elif isinstance(p.get("functionResponse"), dict):
                resp = p["functionResponse"]
                turn.parts.append(
                    Part("tool_result", _json(resp.get("response", {})), resp.get("name"),
                         resp.get("id"))
                )  # fmt: skip
            elif "inlineData" in p or "fileData" in p:
                turn.parts.append(Part("image", "", "inlineData" if "inlineData" in p else "file"))
            else:
                turn.parts.append(Part("other", "", next(iter(p), "part")))
        out.turns.append(turn)


_READERS: dict[str, Callable[[dict[str, Any], Transcript], None]] = {
    "anthropic": _anthropic,
    "openai-chat": _openai_chat,
    "openai-responses": _openai_responses,
    "gemini": _gemini,
}
