"""Gemini `alt=sse` stream bodies for tests, in the shape the API sends them.

Google writes each chunk as one ``data: `` line with CRLF line ends, JSON with a space after
each colon and none after commas, ``usageMetadata``/``modelVersion``/``responseId`` on every
chunk, and ``finishReason`` plus the full usage on the last chunk. Not a test module.
"""

from __future__ import annotations

import json
from typing import Any

MODEL = "gemini-2.5-flash"
RESPONSE_ID = "qpc2afWVFJK4vr0Pq6WiyAU"


def dumps(obj: Any) -> str:
    """JSON the way the Gemini API formats it."""
    return json.dumps(obj, separators=(",", ": "), ensure_ascii=False)


def sse(obj: Any) -> bytes:
    """One Gemini event."""
    return b"data: " + dumps(obj).encode("utf-8") + b"\r\n\r\n"


def body(*chunks: Any) -> bytes:
    return b"".join(sse(c) for c in chunks)


def usage(prompt: int, out: int | None = None, thoughts: int | None = None) -> dict[str, Any]:
    u: dict[str, Any] = {"promptTokenCount": prompt}
    if out is not None:
        u["candidatesTokenCount"] = out
    total = prompt + (out or 0) + (thoughts or 0)
    u["totalTokenCount"] = total
    u["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if thoughts is not None:
        u["thoughtsTokenCount"] = thoughts
    return u


def chunk(
    *parts: dict[str, Any],
    finish: str | None = None,
    index: int | None = 0,
    use: dict[str, Any] | None = None,
    model: str = MODEL,
    rid: str = RESPONSE_ID,
) -> dict[str, Any]:
    """A GenerateContentResponse with one candidate."""
    cand: dict[str, Any] = {"content": {"parts": list(parts), "role": "model"}}
    if finish is not None:
        cand["finishReason"] = finish
    if index is not None:
        cand["index"] = index
    return {
        "candidates": [cand],
        "usageMetadata": use if use is not None else usage(9),
        "modelVersion": model,
        "responseId": rid,
    }


def text(t: str) -> dict[str, Any]:
    return {"text": t}


def thought(t: str) -> dict[str, Any]:
    return {"text": t, "thought": True}


def call(name: str, args: dict[str, Any], signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


SIGNATURE = "CikBcsjafFK168IbtVtoxVV0Tsn8O+eU45rzJahzwuKGmMbdMdfpmNpgBwplAXLI2nyA/pIFcnZw"

#: Plain text, with non-ASCII characters (multi-byte UTF-8 for chunk-split tests).
TEXT = body(
    chunk(text("The weather in Tōkyō is"), use=usage(12)),
    chunk(text(" 18°C and sunny — 晴れ."), use=usage(12)),
    chunk(text(" Enjoy your day!\n"), finish="STOP", use=usage(12, 17)),
)

#: Thinking, then a function call with its thought signature, then an empty final text part.
THINKING_TOOL = body(
    chunk(thought("**Checking the weather**\n\nI'll call the `weather` tool.\n\n"), use=usage(131)),
    chunk(call("weather", {"city": "San Francisco"}, SIGNATURE), use=usage(131, 15, 95)),
    chunk(text(""), finish="STOP", use=usage(131, 15, 95)),
)

#: Text, then two function calls in one chunk (parallel calls), the finish on its own chunk.
PARALLEL_TOOLS = body(
    chunk(text("Let me look both up."), use=usage(40)),
    chunk(
        call("get_weather", {"location": "Paris", "unit": "celsius"}, SIGNATURE),
        call("get_time", {"timezone": "Europe/Paris"}),
        use=usage(40, 31),
    ),
    chunk(text(""), finish="STOP", use=usage(40, 31)),
)

#: A single chunk holding the whole function call and the finish (as gemini-2.5-flash sends it).
ONE_CHUNK_TOOL = sse(
    {
        "candidates": [
            {
                "content": {"parts": [call("getWeather", {"location": "Tokyo"})], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
                "finishMessage": "Model generated function call(s).",
            }
        ],
        "usageMetadata": usage(83, 14, 104),
        "modelVersion": MODEL,
        "responseId": RESPONSE_ID,
    }
)

#: candidateCount 2: both candidates in every chunk, each finishing on the last one.
TWO_CANDIDATES = body(
    {
        "candidates": [
            {"content": {"parts": [text("Red")], "role": "model"}, "index": 0},
            {"content": {"parts": [text("Blue")], "role": "model"}, "index": 1},
        ],
        "usageMetadata": usage(7),
        "modelVersion": MODEL,
        "responseId": RESPONSE_ID,
    },
    {
        "candidates": [
            {
                "content": {"parts": [text(".")], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            },
            {
                "content": {"parts": [text("!")], "role": "model"},
                "finishReason": "STOP",
                "index": 1,
            },
        ],
        "usageMetadata": usage(7, 4),
        "modelVersion": MODEL,
        "responseId": RESPONSE_ID,
    },
)

#: The older gemini-pro style: finishReason STOP and safetyRatings on every chunk, no index.
LEGACY = body(
    *(
        {
            "candidates": [
                {
                    "content": {"parts": [text(t)], "role": "model"},
                    "finishReason": "STOP",
                    "index": 0,
                    "safetyRatings": [
                        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}
                    ],
                }
            ],
            "usageMetadata": usage(5, n),
        }
        for n, t in enumerate(["Once upon", " a time there", " was a fox."], start=1)
    )
)

#: A prompt blocked before generation: no candidates, promptFeedback.blockReason.
BLOCKED = sse(
    {
        "promptFeedback": {
            "blockReason": "PROHIBITED_CONTENT",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
            ],
        },
        "usageMetadata": usage(20),
        "modelVersion": MODEL,
        "responseId": RESPONSE_ID,
    }
)

#: Vertex AI: createTime, trafficType, a MAX_TOKENS finish with a content that has no parts.
VERTEX = body(
    {
        "candidates": [{"content": {"role": "model", "parts": [text("A long story")]}}],
        "usageMetadata": {"trafficType": "ON_DEMAND"},
        "modelVersion": "gemini-2.0-flash-001",
        "createTime": "2025-06-01T10:00:00.000000Z",
        "responseId": "x1",
    },
    {
        "candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {
            "promptTokenCount": 4,
            "candidatesTokenCount": 16,
            "totalTokenCount": 20,
            "trafficType": "ON_DEMAND",
        },
        "modelVersion": "gemini-2.0-flash-001",
        "createTime": "2025-06-01T10:00:00.000000Z",
        "responseId": "x1",
    },
)

HEALTHY = {
    "text": TEXT,
    "thinking-tool": THINKING_TOOL,
    "parallel-tools": PARALLEL_TOOLS,
    "one-chunk-tool": ONE_CHUNK_TOOL,
    "two-candidates": TWO_CANDIDATES,
    "legacy-every-chunk-stop": LEGACY,
    "blocked-prompt": BLOCKED,
    "vertex-max-tokens": VERTEX,
}

#: An in-stream failure after HTTP 200, as the API sends it.
ERROR_CHUNK = {
    "error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}
}

#: A request with function declarations (both schema spellings) and a server tool.
REQUEST = {
    "contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}],
    "tools": [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"location": {"type": "STRING"}},
                        "required": ["location"],
                    },
                },
                {
                    "name": "get_time",
                    "parametersJsonSchema": {
                        "type": "object",
                        "properties": {"timezone": {"type": "string"}},
                    },
                },
                {"name": "ping"},
            ]
        },
        {"googleSearch": {}},
    ],
}
