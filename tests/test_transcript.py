"""A request's conversation in each wire format, as the request view shows it."""

from __future__ import annotations

from typing import Any

import pytest

from mitmllm.protocol import detect
from mitmllm.protocol.transcript import Part
from mitmllm.protocol.transcript import transcript

#: The same exchange in every format: a system prompt, a question, a tool call, its result.
BODIES: dict[str, dict[str, Any]] = {
    "anthropic": {
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Use the tool.", "signature": "s"},
                    {"type": "tool_use", "id": "c1", "name": "weather", "input": {"city": "Paris"}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1",
                                          "content": [{"type": "text", "text": "18C"}]}]},
        ],
    },
    "openai-chat": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        ]
    },
    "openai-responses": {
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
            {"type": "function_call", "call_id": "c1", "name": "weather",
             "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "18C"},
        ],
    },
    "gemini": {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "weather",
                                                          "args": {"city": "Paris"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "weather",
                                                             "response": {"t": "18C"}}}]},
        ],
    },
}  # fmt: skip


#: Where each format's request goes (Gemini names the model in the path).
PATHS = {
    "anthropic": "/v1/messages",
    "openai-chat": "/v1/chat/completions",
    "openai-responses": "/v1/responses",
    "gemini": "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
}


def read(fmt: str | None, body: Any) -> Any:
    return transcript(detect.by_name(fmt), PATHS.get(fmt or "", "/"), body)


@pytest.mark.parametrize("fmt", list(BODIES))
def test_every_format_reads_as_system_question_tool_call_and_result(fmt: str) -> None:
    t = read(fmt, BODIES[fmt])
    assert t.system == ["Be brief."]
    parts = [p for turn in t.turns for p in turn.parts if p.kind != "thinking"]
    question, call, result = parts
    assert question == Part("text", "Weather in Paris?")
    assert call.kind == "tool_call" and call.name == "weather"
    assert call.text.replace(" ", "") == '{"city":"Paris"}'
    assert result.kind == "tool_result" and "18C" in result.text
    if fmt != "gemini":  # Gemini matches results to calls by name, not by id
        assert call.id == result.id == "c1"
    assert t.turns[0].role == "user"
    assert next(turn for turn in t.turns if call in turn.parts).role == "assistant"


def test_thinking_and_what_is_not_text_are_named_not_hidden() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "data": "xx"}},
                    {"type": "search_result", "content": []},
                ],
            }
        ]
    }
    t = read("anthropic", body)
    (turn,) = t.turns
    assert [(p.kind, p.name) for p in turn.parts] == [("image", "image")]
    (unread,) = t.unread
    assert unread.startswith("/messages/0/content/1: ") and "search_result" in unread
    thinking = read("anthropic", BODIES["anthropic"]).turns[1].parts[0]
    assert thinking == Part("thinking", "Use the tool.")


@pytest.mark.parametrize("body", [None, [], "x", {"messages": "x"}, {"messages": [1, {"x": 1}]}])
@pytest.mark.parametrize("fmt", [*BODIES, None, "other"])
def test_anything_that_is_not_a_conversation_reads_as_little_as_it_holds(
    fmt: str | None, body: Any
) -> None:
    t = read(fmt, body)
    assert t.system == [] and all(not turn.parts for turn in t.turns)
