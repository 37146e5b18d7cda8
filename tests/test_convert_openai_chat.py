"""OpenAI Chat Completions <-> the neutral model, mapping by mapping."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mitmllm.protocol.conversation import ApiError
from mitmllm.protocol.conversation import BlockStart
from mitmllm.protocol.conversation import BlockStop
from mitmllm.protocol.conversation import ClientStream
from mitmllm.protocol.conversation import End
from mitmllm.protocol.conversation import ErrorKind
from mitmllm.protocol.conversation import Finish
from mitmllm.protocol.conversation import Gap
from mitmllm.protocol.conversation import Image
from mitmllm.protocol.conversation import Message
from mitmllm.protocol.conversation import Request
from mitmllm.protocol.conversation import Start
from mitmllm.protocol.conversation import Stop
from mitmllm.protocol.conversation import Text
from mitmllm.protocol.conversation import TextDelta
from mitmllm.protocol.conversation import ThinkingDelta
from mitmllm.protocol.conversation import ToolArgsDelta
from mitmllm.protocol.conversation import ToolCall
from mitmllm.protocol.conversation import ToolResult
from mitmllm.protocol.conversation import Usage
from mitmllm.protocol.conversation import UsageUpdate
from mitmllm.protocol.convert.openai_chat import CONVERTER
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.payload import SENTINEL
from mitmllm.protocol.sse import Event


def parse(body: dict[str, Any]) -> tuple[Request, list[Gap]]:
    gaps: list[Gap] = []
    return CONVERTER.parse_request("/v1/chat/completions", body, gaps), gaps


def test_messages_become_turns() -> None:
    req, gaps = parse(
        {
            "model": "gpt",
            "max_completion_tokens": 50,
            "stop": "END",
            "n": 2,
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "hmm",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            ],
        }
    )
    assert req.system == [Text("Be brief.")]
    assert req.max_tokens == 50 and req.stop == ["END"]
    assert req.messages[0] == Message("user", [Text("look"), Image("image/jpeg", "AAAA")])
    assert [type(p).__name__ for p in req.messages[1].parts] == ["Thinking", "ToolCall"]
    assert req.messages[2] == Message("user", [ToolResult("call_1", (Text("ok"),))])
    assert [g.path for g in gaps] == ["/n"]


def test_rendering_splits_tool_results_into_tool_messages_and_asks_for_usage() -> None:
    req = Request(
        system=[Text("S")],
        stream=True,
        messages=[
            Message("assistant", [Text("Checking."), ToolCall("toolu_1", "f", '{"a":1}')]),
            Message("user", [ToolResult("toolu_1", (Text("ok"),), is_error=True), Text("more")]),
        ],
    )
    gaps: list[Gap] = []
    body = CONVERTER.render_request(req, "gpt", gaps).body
    assert body["messages"] == [
        {"role": "system", "content": "S"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a":1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "ok"},
        {"role": "user", "content": "more"},
    ]
    assert body["stream_options"] == {"include_usage": True}
    assert [g.path for g in gaps] == ["tool_result.is_error"]


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt",
        "choices": choices,
        **extra,
    }


def read(payloads: list[Any]) -> list[Any]:
    reader = CONVERTER.reader(Findings())
    out = []
    for i, p in enumerate(payloads):
        out += reader.read(Event(i, 0, b""), p)
    return out


def test_reader_turns_deltas_into_blocks_in_arrival_order() -> None:
    out = read(
        [
            chunk({"role": "assistant", "reasoning": "think"}),
            chunk({"content": "Hi"}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "f", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            chunk({}, "stop"),
            chunk(
                usage={
                    "prompt_tokens": 10,
                    "completion_tokens": 3,
                    "prompt_tokens_details": {"cached_tokens": 4},
                }
            ),
            SENTINEL,
        ]
    )
    assert out == [
        Start("chatcmpl-1", "gpt"),
        BlockStart(0, "thinking"),
        ThinkingDelta(0, "think"),
        BlockStop(0),
        BlockStart(1, "text"),
        TextDelta(1, "Hi"),
        BlockStop(1),
        BlockStart(2, "tool_call", "call_a", "f"),
        ToolArgsDelta(2, "{}"),
        BlockStop(2),
        Finish(Stop.TOOL_USE),  # "stop" after tool calls means the calls
        UsageUpdate(Usage(input_tokens=6, output_tokens=3, cache_read=4)),
        End(),
    ]


def test_writer_keeps_one_envelope_and_gives_argument_less_calls_an_object() -> None:
    w = CONVERTER.writer(ClientStream("asked", include_usage=False, created=7), Findings())
    out = b"".join(
        w.write(e)
        for e in [
            Start("msg_1", "claude"),
            BlockStart(0, "tool_call", "toolu_1", "f"),
            BlockStop(0),
            Finish(Stop.TOOL_USE),
            End(),
        ]
    )
    chunks = [orjson.loads(line[6:]) for line in out.split(b"\n\n") if line.startswith(b"data: {")]
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {("chatcmpl-msg_1", 7, "asked")}
    calls = [
        c["choices"][0]["delta"].get("tool_calls")
        for c in chunks
        if c["choices"][0]["delta"].get("tool_calls")
    ]
    assert calls[1] == [{"index": 0, "function": {"arguments": "{}"}}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert out.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in out  # not asked for


@pytest.mark.parametrize(
    ("status", "payload", "kind"),
    [
        (
            429,
            {"error": {"message": "slow", "type": "requests", "code": "rate_limit_exceeded"}},
            ErrorKind.RATE_LIMIT,
        ),
        (503, {"error": {"message": "busy", "type": "server_error"}}, ErrorKind.OVERLOADED),
        (None, {"error": {"message": "busy", "type": "overloaded_error"}}, ErrorKind.OVERLOADED),
        (None, {"error": {"message": "x", "code": 429}}, ErrorKind.RATE_LIMIT),
        (None, {"error": "plain"}, ErrorKind.API_ERROR),
    ],
)
def test_errors_are_read_by_status_then_by_code(
    status: int | None, payload: Any, kind: ErrorKind
) -> None:
    assert CONVERTER.parse_error(status, payload).kind is kind


def test_an_overload_is_503_for_chat_clients() -> None:
    status, body = CONVERTER.render_error(ApiError(ErrorKind.OVERLOADED, "busy"))
    assert status == 503
    assert orjson.loads(body)["error"] == {
        "message": "busy",
        "type": "server_error",
        "param": None,
        "code": "overloaded",
    }


def test_whole_completion_maps_refusals_and_length() -> None:
    payload = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "cut"},
                "finish_reason": "length",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": "other"},
                "finish_reason": "stop",
            },
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9},
    }
    findings = Findings()
    resp = CONVERTER.parse_response(payload, findings)
    assert resp.stop is Stop.MAX_TOKENS and resp.parts == [Text("cut")]
    assert findings.rules() == ["XLT-3"]
