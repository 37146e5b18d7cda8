"""Anthropic Messages <-> the neutral model, mapping by mapping."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mitmllm.protocol.conversation import ApiError
from mitmllm.protocol.conversation import BlockStart
from mitmllm.protocol.conversation import ClientStream
from mitmllm.protocol.conversation import End
from mitmllm.protocol.conversation import ErrorKind
from mitmllm.protocol.conversation import Finish
from mitmllm.protocol.conversation import Gap
from mitmllm.protocol.conversation import Message
from mitmllm.protocol.conversation import Reasoning
from mitmllm.protocol.conversation import Request
from mitmllm.protocol.conversation import Start
from mitmllm.protocol.conversation import Stop
from mitmllm.protocol.conversation import Text
from mitmllm.protocol.conversation import Thinking
from mitmllm.protocol.conversation import ToolCall
from mitmllm.protocol.conversation import ToolResult
from mitmllm.protocol.conversation import Usage
from mitmllm.protocol.conversation import UsageUpdate
from mitmllm.protocol.convert.anthropic import CONVERTER
from mitmllm.protocol.convert.anthropic import DEFAULT_MAX_TOKENS
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.sse import Event


def parse(body: dict[str, Any]) -> tuple[Request, list[Gap]]:
    gaps: list[Gap] = []
    return CONVERTER.parse_request("/v1/messages", body, gaps), gaps


def test_blocks_become_parts() -> None:
    req, gaps = parse(
        {
            "model": "claude",
            "max_tokens": 10,
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "is_error": True,
                            "content": [{"type": "text", "text": "boom"}],
                        },
                        {"type": "document", "source": {}},
                    ],
                },
            ],
        }
    )
    assert req.system == [Text("Be brief.")]
    assert req.messages[0] == Message("user", [Text("hi")])
    assert req.messages[1].parts == [
        Thinking("hmm", "sig", "anthropic"),
        ToolCall("toolu_1", "f", '{"a":1}'),
    ]
    assert req.messages[2].parts == [ToolResult("toolu_1", (Text("boom"),), True)]
    assert [g.path for g in gaps] == ["/messages/2/content/1"]


def test_server_tools_and_unknown_fields_are_gaps() -> None:
    _, gaps = parse(
        {
            "model": "c",
            "max_tokens": 1,
            "messages": [],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            "service_tier": "auto",
        }
    )
    assert {g.path for g in gaps} == {"/tools/0", "/service_tier"}


@pytest.mark.parametrize(
    ("choice", "mode", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
        ({"type": "tool", "name": "f"}, "tool", None),
        ({"type": "none"}, "none", None),
    ],
)
def test_tool_choice(choice: dict[str, Any], mode: str, parallel: bool | None) -> None:
    req, _ = parse({"model": "c", "max_tokens": 1, "messages": [], "tool_choice": choice})
    assert req.tool_choice is not None
    assert (req.tool_choice.mode, req.tool_choice.parallel) == (mode, parallel)
    body = CONVERTER.render_request(req, "c", []).body
    assert body["tool_choice"] == choice


def test_rendering_merges_turns_and_puts_tool_results_first() -> None:
    req = Request(
        messages=[
            Message("assistant", [ToolCall("call:1", "f", "{}")]),
            Message("user", [Text("and?")]),
            Message("user", [ToolResult("call:1", (Text("ok"),))]),
            Message("assistant", [Thinking("from elsewhere", None, "openai-chat"), Text("")]),
        ]
    )
    gaps: list[Gap] = []
    body = CONVERTER.render_request(req, "claude", gaps).body
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert body["messages"] == [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "call_1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "ok"},
                {"type": "text", "text": "and?"},
            ],
        },
    ]
    assert {g.path for g in gaps} == {"max_tokens", "thinking_history"}


def test_thinking_needs_room_below_max_tokens_and_drops_temperature() -> None:
    gaps: list[Gap] = []
    req = Request(max_tokens=5000, temperature=0.3, reasoning=Reasoning(effort="high"))
    body = CONVERTER.render_request(req, "c", gaps).body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4999}
    assert "temperature" not in body and "temperature" in [g.path for g in gaps]


def events(payloads: list[dict[str, Any]]) -> list[Any]:
    reader = CONVERTER.reader(Findings())
    out = []
    for i, p in enumerate(payloads):
        out += reader.read(Event(i, 0, b"", event=p["type"]), p)
    return out


def test_reader_maps_the_envelope_stop_and_cumulative_usage() -> None:
    out = events(
        [
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "model": "claude",
                    "usage": {"input_tokens": 3, "cache_read_input_tokens": 7},
                },
            },
            {
                "type": "message_delta",
                "delta": {"stop_reason": "pause_turn"},
                "usage": {"output_tokens": 9},
            },
            {"type": "message_stop"},
        ]
    )
    assert out == [
        Start("msg_1", "claude", Usage(input_tokens=3, cache_read=7)),
        Finish(Stop.PAUSE),
        UsageUpdate(Usage(output_tokens=9)),
        End(),
    ]


def test_reader_skips_server_tool_blocks_with_a_finding() -> None:
    findings = Findings()
    reader = CONVERTER.reader(findings)
    start = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {
            "type": "server_tool_use",
            "id": "srv",
            "name": "web_search",
            "input": {},
        },
    }
    assert reader.read(Event(0, 0, b""), start) == []
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "input_json_delta", "partial_json": "{}"},
    }
    assert reader.read(Event(1, 0, b""), delta) == []
    assert reader.read(Event(2, 0, b""), {"type": "content_block_stop", "index": 0}) == []
    text = {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "text", "text": ""},
    }
    assert reader.read(Event(3, 0, b""), text) == [BlockStart(0, "text")]
    assert findings.rules() == ["XLT-3"]


def test_writer_drops_foreign_thinking_with_a_finding() -> None:
    findings = Findings()
    w = CONVERTER.writer(ClientStream("claude"), findings)
    assert w.write(BlockStart(0, "thinking")) == b""
    assert findings.rules() == ["XLT-2"]


@pytest.mark.parametrize(
    ("kind", "status", "name"),
    [
        (ErrorKind.OVERLOADED, 529, "overloaded_error"),
        (ErrorKind.RATE_LIMIT, 429, "rate_limit_error"),
        (ErrorKind.INVALID_REQUEST, 400, "invalid_request_error"),
        (ErrorKind.TIMEOUT, 504, "timeout_error"),
    ],
)
def test_errors_both_ways(kind: ErrorKind, status: int, name: str) -> None:
    got_status, body = CONVERTER.render_error(ApiError(kind, "m"))
    assert got_status == status
    assert orjson.loads(body) == {"type": "error", "error": {"type": name, "message": "m"}}
    assert CONVERTER.parse_error(got_status, orjson.loads(body)).kind is kind


def test_a_5xx_of_the_upstreams_own_keeps_its_status() -> None:
    assert CONVERTER.render_error(ApiError(ErrorKind.API_ERROR, "bad gateway", 502))[0] == 502


def test_whole_message_stop_reasons_and_usage() -> None:
    payload = {
        "id": "msg_1",
        "type": "message",
        "model": "claude",
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 2, "cache_creation_input_tokens": 3},
    }
    resp = CONVERTER.parse_response(payload, Findings())
    assert resp.stop is Stop.TOOL_USE
    assert resp.usage == Usage(1, 2, cache_write=3)
    out = CONVERTER.render_response(resp, ClientStream("asked"), Findings())
    assert out["model"] == "asked" and out["stop_reason"] == "tool_use"
    assert out["usage"] == {"input_tokens": 1, "output_tokens": 2, "cache_creation_input_tokens": 3}
