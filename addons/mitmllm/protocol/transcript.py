"""A request's conversation as a person reads it: system prompt, turns by role, tool calls and
their results (sans-I/O; for the mitmweb request view and the command line).

The conversation is read by the format's own converter into the neutral model
(`mitmllm.protocol.conversation`), the same reading translation uses, so the view shows what
mitmllm understood of the request in any format, and a new format needs nothing here. Text is
kept as it is; an image, a tool call with its arguments and a tool result with the call it answers
are named; whatever the neutral model cannot hold is listed in `unread` with where it was, so
nothing is hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mitmllm.protocol import conversation as neutral
from mitmllm.protocol.dialect import Dialect


@dataclass(frozen=True, slots=True)
class Part:
    kind: str  # text | thinking | tool_call | tool_result | image
    text: str = ""
    name: str | None = None  # the tool's name (tool_call, tool_result where known), or a type
    id: str | None = None  # the tool call's id (tool_call, tool_result)
    error: bool = False  # a tool result that reports an error


@dataclass(slots=True)
class Turn:
    role: str  # user | assistant
    parts: list[Part] = field(default_factory=list)


@dataclass(slots=True)
class Transcript:
    system: list[str] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    #: what the reading could not hold: "where: why" (a JSON Pointer into the body)
    unread: list[str] = field(default_factory=list)


def transcript(dialect: Dialect | None, path: str, body: Any) -> Transcript:
    """The conversation in a request `body` sent to `path` in `dialect`'s format (empty for
    anything that is not one)."""
    converter = dialect.converter() if dialect is not None else None
    if converter is None or not isinstance(body, dict):
        return Transcript()
    gaps: list[neutral.Gap] = []
    try:
        request = converter.parse_request(path, body, gaps)
    except Exception as e:  # a view must show something for any body
        return Transcript(unread=[f"/: {type(e).__name__}: {e}"])
    return Transcript(
        system=[t.text for t in request.system],
        turns=[Turn(m.role, [_part(p) for p in m.parts]) for m in request.messages],
        unread=[f"{g.path}: {g.reason}" for g in gaps],
    )


def _part(p: neutral.Part) -> Part:
    if isinstance(p, neutral.Text):
        return Part("text", p.text)
    if isinstance(p, neutral.Thinking):
        return Part("thinking", p.text or "(redacted)")
    if isinstance(p, neutral.ToolCall):
        return Part("tool_call", p.arguments, p.name, p.id)
    if isinstance(p, neutral.ToolResult):
        return Part("tool_result", _result_text(p), p.name, p.call_id, p.is_error)
    return Part("image", p.url or "", p.media_type or "image")


def _result_text(p: neutral.ToolResult) -> str:
    images = sum(1 for c in p.content if isinstance(c, neutral.Image))
    text = p.text
    if images:
        text += f" [{images} image{'s' if images > 1 else ''}]"
    return text
