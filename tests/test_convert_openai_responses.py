"""OpenAI Responses <-> the neutral model, mapping by mapping."""

from __future__ import annotations

from typing import Any

import orjson

from mitmllm.protocol.conversation import ApiError
from mitmllm.protocol.conversation import BlockStart
from mitmllm.protocol.conversation import BlockStop
from mitmllm.protocol.conversation import ClientStream
from mitmllm.protocol.conversation import End
from mitmllm.protocol.conversation import ErrorKind
from mitmllm.protocol.conversation import Failure
from mitmllm.protocol.conversation import Finish
from mitmllm.protocol.conversation import Gap
from mitmllm.protocol.conversation import Message
from mitmllm.protocol.conversation import Request
from mitmllm.protocol.conversation import Start
from mitmllm.protocol.conversation import Stop
from mitmllm.protocol.conversation import Text
from mitmllm.protocol.conversation import TextDelta
from mitmllm.protocol.conversation import ToolCall
from mitmllm.protocol.conversation import ToolResult
from mitmllm.protocol.conversation import UsageUpdate
from mitmllm.protocol.convert.openai_responses import CONVERTER
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.sse import Event


def parse(body: dict[str, Any]) -> tuple[Request, list[Gap]]:
    gaps: list[Gap] = []
    return CONVERTER.parse_request("/v1/responses", body, gaps), gaps


def test_input_items_become_turns() -> None:
    req, gaps = parse(
        {
            "model": "gpt-5",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {
                    "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": "hm"}],
                    "encrypted_content": "E",
                },
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "18 C"},
                {"type": "web_search_call", "id": "ws"},
            ],
            "tools": [{"type": "web_search"}],
            "store": True,
        }
    )
    assert req.system == [Text("Be brief.")]
    assert req.messages[0] == Message("user", [Text("weather?")])
    assert [type(p).__name__ for p in req.messages[1].parts] == ["Thinking", "ToolCall"]
    assert req.messages[2] == Message("user", [ToolResult("call_1", (Text("18 C"),))])
    assert {g.path: g.severity for g in gaps} == {
        "/store": "info",
        "/input/4": "warning",
        "/tools/0": "warning",
    }


def test_rendering_uses_input_items_and_stores_nothing() -> None:
    req = Request(
        system=[Text("S")],
        stop=["END"],
        messages=[
            Message("user", [Text("go")]),
            Message("assistant", [Text("ok"), ToolCall("toolu_1", "f", '{"a":1}')]),
            Message("user", [ToolResult("toolu_1", (Text("done"),))]),
        ],
    )
    gaps: list[Gap] = []
    body = CONVERTER.render_request(req, "gpt-5", gaps).body
    assert body["store"] is False and body["instructions"] == "S"
    assert body["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": "go"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"type": "function_call", "call_id": "toolu_1", "name": "f", "arguments": '{"a":1}'},
        {"type": "function_call_output", "call_id": "toolu_1", "output": "done"},
    ]
    assert [g.path for g in gaps] == ["stop"]


def read(payloads: list[dict[str, Any]]) -> list[Any]:
    reader = CONVERTER.reader(Findings())
    out = []
    for i, p in enumerate(payloads):
        out += reader.read(Event(i, 0, b"", event=p["type"]), p)
    return out


def test_reader_ends_with_the_terminal_event() -> None:
    out = read(
        [
            {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5"}},
            {"type": "response.output_text.delta", "delta": "Hi"},
            {"type": "response.output_item.done"},
            {
                "type": "response.incomplete",
                "response": {
                    "status": "incomplete",
                    "incomplete_details": {"reason": "max_output_tokens"},
                    "usage": {"input_tokens": 5, "output_tokens": 9},
                },
            },
        ]
    )
    assert out[:4] == [
        Start("resp_1", "gpt-5"),
        BlockStart(0, "text"),
        TextDelta(0, "Hi"),
        BlockStop(0),
    ]
    assert isinstance(out[4], UsageUpdate) and out[4].usage.output_tokens == 9
    assert out[5:] == [Finish(Stop.MAX_TOKENS), End()]


def test_a_failed_response_is_a_failure() -> None:
    (failure,) = read(
        [
            {
                "type": "response.failed",
                "response": {
                    "status": "failed",
                    "error": {"code": "rate_limit_exceeded", "message": "slow"},
                },
            }
        ]
    )
    assert failure == Failure(ApiError(ErrorKind.RATE_LIMIT, "slow"))


def test_writer_numbers_events_and_repeats_items_whole_at_the_end() -> None:
    w = CONVERTER.writer(ClientStream("asked", created=5), Findings())
    out = b"".join(
        w.write(e)
        for e in [
            Start("msg_1"),
            BlockStart(0, "text"),
            TextDelta(0, "Hi"),
            BlockStop(0),
            Finish(Stop.END),
            End(),
        ]
    )
    events = [orjson.loads(block.split(b"data: ", 1)[1]) for block in out.split(b"\n\n") if block]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]
    assert final["type"] == "response.completed"
    assert final["response"]["model"] == "asked" and final["response"]["id"] == "resp_msg_1"
    assert final["response"]["output"][0]["content"][0]["text"] == "Hi"
