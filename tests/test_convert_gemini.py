"""Gemini generateContent <-> the neutral model, mapping by mapping."""

from __future__ import annotations

from typing import Any

import orjson

from mitmllm.protocol.conversation import ApiError
from mitmllm.protocol.conversation import BlockStart
from mitmllm.protocol.conversation import BlockStop
from mitmllm.protocol.conversation import ClientStream
from mitmllm.protocol.conversation import End
from mitmllm.protocol.conversation import ErrorKind
from mitmllm.protocol.conversation import Finish
from mitmllm.protocol.conversation import Gap
from mitmllm.protocol.conversation import Request
from mitmllm.protocol.conversation import Start
from mitmllm.protocol.conversation import Stop
from mitmllm.protocol.conversation import TextDelta
from mitmllm.protocol.conversation import ToolArgsDelta
from mitmllm.protocol.conversation import ToolCall
from mitmllm.protocol.conversation import ToolChoice
from mitmllm.protocol.conversation import ToolResult
from mitmllm.protocol.conversation import Usage
from mitmllm.protocol.conversation import UsageUpdate
from mitmllm.protocol.convert.gemini import CONVERTER
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.sse import Event

PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"


def parse(body: dict[str, Any], path: str = PATH) -> tuple[Request, list[Gap]]:
    gaps: list[Gap] = []
    return CONVERTER.parse_request(path, body, gaps), gaps


def test_the_model_and_stream_come_from_the_path_and_both_spellings_are_read() -> None:
    req, _ = parse(
        {
            "contents": [],
            "generation_config": {"max_output_tokens": 9, "topK": 3, "stop_sequences": ["x"]},
            "tool_config": {
                "function_calling_config": {"mode": "ANY", "allowed_function_names": ["f"]}
            },
        },
        PATH + "?alt=sse",
    )
    assert (req.model, req.stream) == ("gemini-2.5-flash", True)
    assert (req.max_tokens, req.top_k, req.stop) == (9, 3, ["x"])
    assert req.tool_choice == ToolChoice("tool", "f")


def test_calls_without_ids_get_ids_and_results_find_them_by_name() -> None:
    req, _ = parse(
        {
            "contents": [
                {"role": "user", "parts": [{"text": "go"}]},
                {
                    "role": "model",
                    "parts": [
                        {"functionCall": {"name": "a", "args": {}}},
                        {"functionCall": {"name": "b", "args": {"x": 1}}},
                    ],
                },
                {
                    "role": "user",
                    "parts": [
                        {"functionResponse": {"name": "b", "response": {"result": "B"}}},
                        {"functionResponse": {"name": "a", "response": {"temp": 18}}},
                    ],
                },
            ]
        }
    )
    calls = req.messages[1].parts
    assert calls == [ToolCall("call_1_0", "a", "{}"), ToolCall("call_1_1", "b", '{"x":1}')]
    results = req.messages[2].parts
    assert [(r.call_id, r.text) for r in results if isinstance(r, ToolResult)] == [
        ("call_1_1", "B"),
        ("call_1_0", '{"temp":18}'),
    ]


def test_rendering_names_results_after_their_calls_and_omits_empty_schemas() -> None:
    from mitmllm.protocol.conversation import Message
    from mitmllm.protocol.conversation import Text
    from mitmllm.protocol.conversation import Tool

    req = Request(
        tools=[Tool("noargs", None, {"type": "object", "properties": {}})],
        tool_choice=ToolChoice("auto", parallel=False),
        messages=[
            Message("assistant", [ToolCall("toolu_1", "noargs", "")]),
            Message("user", [ToolResult("toolu_1", (Text('{"ok": true}'),))]),
        ],
    )
    gaps: list[Gap] = []
    call = CONVERTER.render_request(req, "gemini-x", gaps)
    assert call.path == "/v1beta/models/gemini-x:generateContent"
    assert call.body["tools"] == [{"functionDeclarations": [{"name": "noargs"}]}]
    assert call.body["contents"][1]["parts"] == [
        {"functionResponse": {"id": "toolu_1", "name": "noargs", "response": {"ok": True}}}
    ]
    assert [g.path for g in gaps] == ["parallel_tool_calls"]


def chunk(parts: list[Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "modelVersion": "gemini-x", "responseId": "r1", **extra}


def test_reader_ends_at_the_close_with_the_last_finish_reason() -> None:
    reader = CONVERTER.reader(Findings())
    out: list[Any] = []
    # older models put a finish reason on every chunk: text after it is still the answer
    out += reader.read(Event(0, 0, b""), chunk([{"text": "Hi"}], "STOP"))
    out += reader.read(Event(1, 0, b""), chunk([{"text": " there"}], "STOP"))
    out += reader.read(
        Event(2, 0, b""),
        chunk(
            [{"functionCall": {"name": "f", "args": {"a": 1}}}],
            "STOP",
            usageMetadata={
                "promptTokenCount": 10,
                "cachedContentTokenCount": 4,
                "candidatesTokenCount": 2,
                "thoughtsTokenCount": 5,
            },
        ),
    )
    out += reader.close()
    assert out == [
        Start("r1", "gemini-x"),
        BlockStart(0, "text"),
        TextDelta(0, "Hi"),
        TextDelta(0, " there"),
        BlockStop(0),
        BlockStart(1, "tool_call", "call_0", "f"),
        ToolArgsDelta(1, '{"a":1}'),
        BlockStop(1),
        UsageUpdate(Usage(input_tokens=6, output_tokens=7, cache_read=4, reasoning_tokens=5)),
        Finish(Stop.TOOL_USE),
        End(),
    ]


def test_a_stream_without_a_finish_reason_does_not_end() -> None:
    reader = CONVERTER.reader(Findings())
    reader.read(Event(0, 0, b""), chunk([{"text": "Hi"}]))
    assert reader.close() == []


def test_writer_sends_a_call_whole_when_it_ends() -> None:
    w = CONVERTER.writer(ClientStream("asked"), Findings())
    assert w.write(Start("msg_1")) == b""
    assert w.write(BlockStart(0, "tool_call", "toolu_1", "f")) == b""
    assert w.write(ToolArgsDelta(0, '{"a":')) == b""
    out = w.write(ToolArgsDelta(0, "1}")) + w.write(BlockStop(0))
    assert out.endswith(b"\r\n\r\n")
    payload = orjson.loads(out[6:])
    assert payload["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"id": "toolu_1", "name": "f", "args": {"a": 1}}}
    ]
    assert payload["modelVersion"] == "asked"


def test_errors_keep_googles_status_names() -> None:
    status, body = CONVERTER.render_error(ApiError(ErrorKind.RATE_LIMIT, "slow"))
    assert status == 429
    assert orjson.loads(body) == {
        "error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED"}
    }
    assert CONVERTER.parse_error(None, orjson.loads(body)).kind is ErrorKind.RATE_LIMIT
    assert (
        CONVERTER.parse_error(
            None, {"error": {"code": 503, "message": "m", "status": "UNAVAILABLE"}}
        ).kind
        is ErrorKind.OVERLOADED
    )


def test_a_blocked_prompt_is_a_refusal() -> None:
    resp = CONVERTER.parse_response({"promptFeedback": {"blockReason": "SAFETY"}}, Findings())
    assert resp.stop is Stop.REFUSAL and resp.parts == []
