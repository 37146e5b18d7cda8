"""Plain requests in each wire format, as the mock upstream's tests send them (not a test
module)."""

from __future__ import annotations

from typing import Any

from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import OPENAI_RESPONSES

PATHS = {
    ANTHROPIC: "/v1/messages",
    OPENAI_CHAT: "/v1/chat/completions",
    OPENAI_RESPONSES: "/v1/responses",
    GEMINI: "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
}
MODELS = {
    ANTHROPIC: "claude-sonnet-4-6",
    OPENAI_CHAT: "gpt-4o",
    OPENAI_RESPONSES: "gpt-5",
    GEMINI: "gemini-2.5-flash",
}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
TOOLS: dict[str, list[dict[str, Any]]] = {
    ANTHROPIC: [
        {"name": "forecast", "input_schema": SCHEMA},
        {"name": "web_search", "type": "web_search_20250305"},  # a server tool: never called
        {"name": "clock", "input_schema": {"type": "object", "properties": {}}},
    ],
    OPENAI_CHAT: [
        {"type": "function", "function": {"name": "forecast", "parameters": SCHEMA}},
        {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}},
    ],
    OPENAI_RESPONSES: [
        {"type": "web_search"},
        {"type": "function", "name": "forecast", "parameters": SCHEMA},
        {"type": "function", "name": "clock", "parameters": {"type": "object"}},
    ],
    GEMINI: [
        {
            "functionDeclarations": [
                {
                    "name": "forecast",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"city": {"type": "STRING"}, "days": {"type": "INTEGER"}},
                        "required": ["city", "days"],
                    },
                },
                {"name": "clock"},
            ]
        }
    ],
}
FAST = {"x-mock-stall-ms": "20", "x-mock-big-bytes": "70000", "x-mock-events": "5"}


def request_body(fmt: str, *, stream: bool = True, tools: bool = False) -> dict[str, Any]:
    """A plain request (no stream_options) in the format's shape."""
    body: dict[str, Any]
    if fmt == ANTHROPIC:
        body = {
            "model": MODELS[fmt],
            "max_tokens": 64,
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        }
    elif fmt == OPENAI_CHAT:
        body = {
            "model": MODELS[fmt],
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        }
    elif fmt == OPENAI_RESPONSES:
        body = {"model": MODELS[fmt], "stream": stream, "input": "hi"}
    else:
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    if tools:
        body["tools"] = TOOLS[fmt]
    return body


def path_of(fmt: str, *, stream: bool = True) -> str:
    path = PATHS[fmt]
    return (
        path
        if stream or fmt != GEMINI
        else path.replace("streamGenerateContent", "generateContent")
    )
