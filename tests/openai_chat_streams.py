"""Chat Completions stream bodies for the tests, built in the shape of the live OpenAI API.

The envelope's key order, compact separators, `logprobs: null` / `finish_reason: null` on every
choice, the role-only first chunk, `arguments: ""` on a tool call's first fragment and the usage
chunk with `choices: []` follow the recordings that ship with openai-python. Not a test module.
"""

from __future__ import annotations

import json
from typing import Any

ID = "chatcmpl-AF3kZq8hTn0Yk2qLbYw1X9cRvS4dE"
CREATED = 1728312345
MODEL = "gpt-4o-2024-08-06"
FINGERPRINT = "fp_5f8c1e2d3a"
DONE = b"data: [DONE]\n\n"
USAGE = {
    "prompt_tokens": 76,
    "completion_tokens": 24,
    "total_tokens": 100,
    "completion_tokens_details": {"reasoning_tokens": 0},
}
STREAM_REQUEST: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


def chunk(choices: list[dict[str, Any]] | None, **extra: Any) -> dict[str, Any]:
    """A chunk envelope; `extra` adds or overrides top-level keys (None values included)."""
    d: dict[str, Any] = {
        "id": ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
    }
    d.update(extra)
    return d


def choice(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def one(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    """A chunk with a single choice."""
    return chunk([choice(delta, finish, index)])


def role(index: int = 0) -> dict[str, Any]:
    return one({"role": "assistant", "content": "", "refusal": None}, index=index)


def text(t: str, index: int = 0) -> dict[str, Any]:
    return one({"content": t}, index=index)


def finish(reason: str = "stop", index: int = 0) -> dict[str, Any]:
    return one({}, reason, index)


def usage_chunk(usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return chunk([], usage=usage or USAGE)


def tool_start(
    index: int, call_id: str, name: str, args: str = "", choice_index: int = 0
) -> dict[str, Any]:
    frag = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": args},
    }
    return one({"tool_calls": [frag]}, index=choice_index)


def tool_args(index: int, args: str, choice_index: int = 0) -> dict[str, Any]:
    return one(
        {"tool_calls": [{"index": index, "function": {"arguments": args}}]}, index=choice_index
    )


def sse(*events: dict[str, Any] | bytes | str, done: bool = True) -> bytes:
    """Encode payloads as data-only events; bytes pass through as they are (raw events)."""
    out = []
    for e in events:
        if isinstance(e, bytes):
            out.append(e)
        elif isinstance(e, str):
            out.append(f"data: {e}\n\n".encode())
        else:
            out.append(b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n")
    if done:
        out.append(DONE)
    return b"".join(out)


# --- healthy streams ----------------------------------------------------------------------------

TEXT = sse(
    role(),
    text("The"),
    text(" weather"),
    text(" in Paris is"),
    text(" mild today: 18°C ☀️"),
    finish("stop"),
    usage_chunk(),
)

TOOL_CALL = sse(
    one({"role": "assistant", "content": None}),
    tool_start(0, "call_JMW1whyEaYG438VE1OIflxA2", "get_weather"),
    tool_args(0, '{"ci'),
    tool_args(0, 'ty": "'),
    tool_args(0, "Paris"),
    tool_args(0, '", "unit'),
    tool_args(0, '": "c"}'),
    finish("tool_calls"),
    usage_chunk(),
)

PARALLEL_TOOL_CALLS = sse(
    one({"role": "assistant", "content": None}),
    tool_start(0, "call_JMW1whyEaYG438VE1OIflxA2", "get_weather"),
    tool_args(0, '{"city": '),
    tool_args(0, '"Edinburgh"}'),
    tool_start(1, "call_DNYTawLBoN8fj3KN6qU9N1Ou", "get_stock_price"),
    tool_args(1, '{"ticker": "AAPL", '),
    tool_args(1, '"exchange": "NASDAQ"}'),
    finish("tool_calls"),
    usage_chunk(),
)

# DeepSeek / vLLM reasoning models: `reasoning_content` deltas before the answer, no refusal.
REASONING = sse(
    one({"role": "assistant", "content": None, "reasoning_content": ""}),
    one({"content": None, "reasoning_content": "The user asks for 2+2."}),
    one({"content": None, "reasoning_content": " That is 4."}),
    one({"content": "2 + 2 = ", "reasoning_content": None}),
    one({"content": "4", "reasoning_content": None}),
    finish("stop"),
    usage_chunk(
        {
            "prompt_tokens": 12,
            "completion_tokens": 30,
            "total_tokens": 42,
            "completion_tokens_details": {"reasoning_tokens": 22},
        }
    ),
)

REFUSAL = sse(
    one({"role": "assistant", "content": None, "refusal": ""}),
    one({"refusal": "I'm sorry, "}),
    one({"refusal": "I can't help with that."}),
    finish("stop"),
    usage_chunk(),
)

# n=3, choices interleaved but each introduced in order (as the live n=3 recording does)
N3_REQUEST: dict[str, Any] = {**STREAM_REQUEST, "n": 3}
N3 = sse(
    role(0),
    text("Paris", 0),
    role(1),
    text("Lyon", 1),
    role(2),
    text("Nice", 2),
    text("!", 0),
    finish("stop", 0),
    finish("stop", 1),
    finish("length", 2),
    usage_chunk(),
)

# Without stream_options.include_usage: no usage chunk; OpenRouter keep-alive comments.
NO_USAGE_REQUEST: dict[str, Any] = {
    k: v for k, v in STREAM_REQUEST.items() if k != "stream_options"
}
OPENROUTER = sse(
    b": OPENROUTER PROCESSING\n\n",
    role(),
    b": OPENROUTER PROCESSING\n\n",
    text("Bonjour"),
    text(" !"),
    finish("stop"),
)

HEALTHY: dict[str, tuple[bytes, dict[str, Any]]] = {
    "text": (TEXT, STREAM_REQUEST),
    "tool-call": (TOOL_CALL, STREAM_REQUEST),
    "parallel-tool-calls": (PARALLEL_TOOL_CALLS, STREAM_REQUEST),
    "reasoning": (REASONING, STREAM_REQUEST),
    "refusal": (REFUSAL, STREAM_REQUEST),
    "n3": (N3, N3_REQUEST),
    "openrouter-comments": (OPENROUTER, NO_USAGE_REQUEST),
}
