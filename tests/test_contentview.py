"""The mitmweb contentviews: the story of a flow, the conversation, the answer, the events."""

from __future__ import annotations

import orjson
from mitmproxy import contentviews
from mitmproxy import http
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mitmllm.engine.report import METADATA_KEY
from mitmllm.engine.report import Attempt
from mitmllm.engine.report import End
from mitmllm.engine.report import FlowReport
from mitmllm.engine.report import Repair
from mitmllm.glue.contentview import WIDTH
from mitmllm.glue.contentview import LLMRequestContentview
from mitmllm.glue.contentview import LLMResponseContentview
from mitmllm.glue.contentview import LLMStreamContentview
from mitmllm.glue.contentview import render_request
from mitmllm.glue.contentview import render_stream
from mitmllm.protocol import detect
from mitmllm.protocol.findings import Finding
from mitmllm.protocol.rules import Severity
from tests import anthropic_streams
from tests.anthropic_streams import SHORT_TEXT as HEALTHY
from tests.anthropic_streams import SHORT_TEXT_INDEX_1 as INDEX_1

ANTHROPIC = detect.by_name("anthropic")

#: A request with everything a coding agent sends: system prompt, tools, a tool round trip.
AGENT_REQUEST = {
    "model": "claude-fast",
    "max_tokens": 1024,
    "stream": True,
    "system": [{"type": "text", "text": "You are a weather assistant."}],
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ],
    "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C, sunny"}
            ],
        },
    ],
}


def _flow(body: bytes, request: dict | None = None) -> http.HTTPFlow:
    req = request or {
        "model": "claude-test",
        "max_tokens": 10,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}],
    }
    return tflow.tflow(
        req=tutils.treq(method=b"POST", path=b"/v1/messages", content=orjson.dumps(req)),
        resp=tutils.tresp(content=body, headers=http.Headers(content_type="text/event-stream")),
    )


def _metadata(flow: http.HTTPFlow, message: http.Message) -> contentviews.Metadata:
    return contentviews.Metadata(
        flow=flow, http_message=message, content_type=message.headers.get("content-type")
    )


def test_stream_view_tells_the_answer_its_usage_then_the_numbered_events() -> None:
    text = render_stream(HEALTHY, ANTHROPIC)
    lines = text.splitlines()
    assert lines[0].startswith("Anthropic Messages: 7 events") and lines[0].endswith("ok")
    assert "usage: 5 in, 3 out" in lines
    answer, events = lines.index("--- message ---"), lines.index("--- events ---")
    assert answer < events, "the answer comes before the events"
    assert "  Hello 世界" in lines[answer:events] and "stop: end_turn" in lines[answer:events]
    assert any(line.startswith("#0 ") and "message_start" in line for line in lines[events:])


def test_stream_view_puts_findings_at_their_event() -> None:
    text = render_stream(INDEX_1, ANTHROPIC)
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("#1 "))
    assert "ANT-7" in lines[first + 1] and "error" in lines[first + 1]
    assert "ANT-7" in lines[0]  # and in the headline summary


def test_a_routed_flow_shows_every_attempt_its_findings_and_the_repairs() -> None:
    report = FlowReport(format="anthropic", model="claude-test", stream=True, route="claude")
    report.attempts = [
        Attempt(
            "primary",
            "https://primary.test/v1/messages",
            outcome="inband_error",
            status=200,
            error="Overloaded",
            duration_ms=40.0,
            findings=[Finding("ANT-20", Severity.ERROR, "in-band error event", event=1)],
        ),
        Attempt(
            "fallback",
            "https://fallback.test/v1/messages",
            outcome="ok",
            status=200,
            ttfe_ms=12.0,
            duration_ms=120.0,
            committed=True,
        ),
    ]
    report.upstream, report.fell_back, report.relay = "fallback", True, "ok"
    report.ttfe_ms, report.duration_ms = 60.0, 180.0
    report.repairs = [Repair("FIX-1", "SSE-18", "keep-alive removed from inside event 3", 3)]
    lines = render_stream(HEALTHY, ANTHROPIC, report=report).splitlines()
    assert "time: first event after 60 ms, 180 ms in total" in lines
    assert "--- attempts (route claude): served by fallback after 1 failed ---" in lines
    at = lines.index("--- attempts (route claude): served by fallback after 1 failed ---")
    assert lines[at + 1] == "1. primary: inband_error, HTTP 200, 40 ms"
    assert lines[at + 2] == "   error: Overloaded"
    assert lines[at + 3] == "   !! ANT-20 error @event 1: in-band error event"
    assert lines[at + 4] == (
        "2. fallback: ok, HTTP 200, first event 12 ms, 120 ms  <- served the client"
    )
    assert "   FIX-1 mends SSE-18 @event 3: keep-alive removed from inside event 3" in lines


def test_how_the_response_ended_is_said() -> None:
    gone = FlowReport(end=End.CLIENT_DISCONNECT, end_error="Client disconnected.")
    text = render_stream(HEALTHY[:200], ANTHROPIC, report=gone)
    assert "ended: the client went away before the end (Client disconnected.)" in text


def test_long_lines_are_wrapped() -> None:
    long_text = "word " * 400
    stream = anthropic_streams.message(anthropic_streams.text_block(0, long_text))
    text = render_stream(stream + b"data: {" + b"x" * 500 + b"\n\n", ANTHROPIC)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    answer = text.split("--- message ---")[1].split("stop:")[0]
    assert answer.split().count("word") == 400, "wrapped, nothing cut from the answer"


def test_stream_view_is_chosen_for_llm_streams_only() -> None:
    view = LLMStreamContentview()
    flow = _flow(HEALTHY)
    assert view.render_priority(HEALTHY, _metadata(flow, flow.response)) > 1
    assert "Anthropic Messages" in view.prettify(HEALTHY, _metadata(flow, flow.response))
    plain = tflow.tflow(
        resp=tutils.tresp(
            content=b"data: 1\n\n", headers=http.Headers(content_type="text/event-stream")
        )
    )
    assert view.render_priority(b"data: 1\n\n", _metadata(plain, plain.response)) < 1
    json_flow = tflow.tflow(resp=True)
    assert view.render_priority(b"{}", _metadata(json_flow, json_flow.response)) < 0


def test_request_view_shows_models_tools_system_and_the_conversation_by_role() -> None:
    flow = _flow(HEALTHY, AGENT_REQUEST)
    report = FlowReport(format="anthropic", model="claude-fast", stream=True)
    report.model_sent = "claude-haiku-4-5"
    report.rewrite = {"rule": "fast", "model": "claude-haiku-4-5", "model_from": "claude-fast"}
    flow.metadata[METADATA_KEY] = report.to_metadata()
    view = LLMRequestContentview()
    text = view.prettify(flow.request.content or b"", _metadata(flow, flow.request))
    lines = text.splitlines()
    assert "model asked: claude-fast" in lines
    assert "model sent:  claude-haiku-4-5 (rule fast)" in lines
    assert "tools offered: 1" in lines and "  - get_weather (custom, schema 62 bytes)" in lines
    assert lines[lines.index("--- system ---") + 1] == "  You are a weather assistant."
    talk = lines[lines.index("--- conversation: 3 messages ---") + 1 :]
    assert talk == [
        "user:",
        "  What is the weather in Paris?",
        "assistant:",
        "  Let me check.",
        '  tool call get_weather (toolu_1): {"city":"Paris"}',
        "user:",
        "  tool result for toolu_1: 18°C, sunny",
    ]
    assert view.render_priority(flow.request.content or b"", _metadata(flow, flow.request)) > 1


def test_request_view_shows_rewrites_before_and_after() -> None:
    report = FlowReport(
        model="claude-alias",
        model_sent="claude-sonnet-4-5",
        rewrite={
            "rule": "alias",
            "model": "claude-sonnet-4-5",
            "changes": [
                {
                    "action": "replace-schema",
                    "path": "/tools/0/function/parameters",
                    "before": {},
                    "after": {"type": "object", "properties": {}},
                    "reason": "empty schema",
                },
            ],
        },
    )
    body = {"model": "claude-sonnet-4-5", "stream": True, "messages": []}
    text = render_request(body, ANTHROPIC, "/v1/messages", report)
    assert "model sent:  claude-sonnet-4-5 (rule alias)" in text
    assert "before: {}" in text and 'after:  {"type": "object", "properties": {}}' in text


def test_a_whole_json_answer_has_its_story_too() -> None:
    body = orjson.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [{"type": "text", "text": "Hi"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 12, "output_tokens": 2, "cache_read_input_tokens": 10},
        }
    )
    flow = _flow(body, {"model": "claude-test", "max_tokens": 5, "messages": []})
    flow.response.headers["content-type"] = "application/json"
    report = FlowReport(format="anthropic", model="claude-test", ttfe_ms=None, duration_ms=900.0)
    flow.metadata[METADATA_KEY] = report.to_metadata()
    view = LLMResponseContentview()
    meta = _metadata(flow, flow.response)
    assert view.render_priority(body, meta) > 1
    text = view.prettify(body, meta)
    assert "usage: 12 in, 2 out, 10 cache read" in text and "time: 900 ms in total" in text
    assert '"stop_reason": "end_turn"' in text


def test_views_render_broken_input_without_raising() -> None:
    for body in (b"", b"\xff\xfe", b"data: {not json\n\n", b"event: x\n\nda", b": only\n\n"):
        assert render_stream(body, ANTHROPIC)
        assert render_stream(body, None)
    for request in ({}, {"messages": "x"}, {"messages": [1, {"content": 3}]}, [1]):
        assert render_request(request, ANTHROPIC, "/v1/messages", FlowReport())


def test_stream_view_of_a_repaired_flow_says_what_the_upstream_sent_and_what_was_mended() -> None:
    flow = _flow(HEALTHY)
    report = FlowReport(format="anthropic", client="ok", client_clean=True)
    report.findings.add("SSE-18", "cut", event=3)
    report.repairs = [Repair("FIX-2", "SSE-18, PAY-1", "keep-alive removed", event=2)]
    flow.metadata[METADATA_KEY] = report.to_metadata()
    text = LLMStreamContentview().prettify(HEALTHY, _metadata(flow, flow.response))
    lines = text.splitlines()
    mended = lines.index("--- repairs: 1 ---")
    assert lines[mended + 1] == "   FIX-2 mends SSE-18, PAY-1 @event 2: keep-alive removed"
    assert lines[mended + 2].endswith("validates as: ok")
    assert "SSE-18" in text and "Anthropic Messages" in text


def test_stream_view_of_an_unrepaired_flow_has_no_repairs() -> None:
    flow = _flow(HEALTHY)
    flow.metadata[METADATA_KEY] = FlowReport(format="anthropic").to_metadata()
    text = LLMStreamContentview().prettify(HEALTHY, _metadata(flow, flow.response))
    assert "repairs" not in text and "Anthropic Messages" in text
