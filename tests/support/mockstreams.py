"""Requests and streams of every wire format, from the mock upstream's plans (sans-I/O).

Not a test module: the translation tests use it to get realistic upstream streams and whole
bodies in each format without a server.
"""

from __future__ import annotations

from typing import Any

import orjson

from mitmllm.mock.scenarios import plan_request

FORMATS = ("anthropic", "openai-chat", "openai-responses", "gemini")
MODELS = {
    "anthropic": "claude-sonnet-4-6",
    "openai-chat": "gpt-4.1-mini",
    "openai-responses": "gpt-5-mini",
    "gemini": "gemini-2.5-flash",
}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def path_of(fmt: str, *, stream: bool = True) -> str:
    if fmt == "gemini":
        method = "streamGenerateContent" if stream else "generateContent"
        return f"/v1beta/models/{MODELS[fmt]}:{method}"
    return {
        "anthropic": "/v1/messages",
        "openai-chat": "/v1/chat/completions",
        "openai-responses": "/v1/responses",
    }[fmt]


def request_of(fmt: str, *, stream: bool = True, tools: bool = True) -> dict[str, Any]:
    """A one-turn request asking "What is the weather in Paris?" with one tool declared."""
    question = "What is the weather in Paris?"
    if fmt == "anthropic":
        body: dict[str, Any] = {
            "model": MODELS[fmt],
            "max_tokens": 256,
            "messages": [{"role": "user", "content": question}],
        }
        if tools:
            body["tools"] = [{"name": "get_weather", "input_schema": SCHEMA}]
    elif fmt == "openai-chat":
        body = {"model": MODELS[fmt], "messages": [{"role": "user", "content": question}]}
        if tools:
            body["tools"] = [
                {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}
            ]
        if stream:
            body["stream_options"] = {"include_usage": True}
    elif fmt == "openai-responses":
        body = {"model": MODELS[fmt], "input": question}
        if tools:
            body["tools"] = [{"type": "function", "name": "get_weather", "parameters": SCHEMA}]
    else:
        body = {"contents": [{"role": "user", "parts": [{"text": question}]}]}
        if tools:
            body["tools"] = [
                {"functionDeclarations": [{"name": "get_weather", "parameters": SCHEMA}]}
            ]
    if stream and fmt != "gemini":
        body["stream"] = True
    return body


def answer(fmt: str, scenario: str = "healthy", *, stream: bool = True) -> bytes:
    """The mock upstream's whole answer body for `scenario` in `fmt`."""
    plan = plan_request(
        "POST",
        path_of(fmt, stream=stream),
        {"alt": "sse"} if stream and fmt == "gemini" else {},
        {"x-mock-scenario": scenario},
        orjson.dumps(request_of(fmt, stream=stream)),
    )
    return plan.body()


def error_answer(fmt: str, scenario: str) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of an error scenario (``overloaded``, ``rate-limited``, ...)."""
    plan = plan_request(
        "POST",
        path_of(fmt),
        {"alt": "sse"} if fmt == "gemini" else {},
        {"x-mock-scenario": scenario},
        orjson.dumps(request_of(fmt)),
    )
    return plan.status, plan.body(), {k.lower(): v for k, v in plan.headers}
