"""The mitmweb contentviews: numbered events, findings inline, the reassembled message."""

from __future__ import annotations

import orjson
from mitmproxy import contentviews
from mitmproxy import http
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mitmllm.glue.contentview import LLMRequestContentview
from mitmllm.glue.contentview import LLMStreamContentview
from mitmllm.glue.contentview import render_stream
from mitmllm.protocol import detect
from tests.test_inspector import HEALTHY
from tests.test_inspector import INDEX_1


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


def test_stream_view_numbers_events_and_reassembles_the_message() -> None:
    text = render_stream(HEALTHY, detect.by_name("anthropic"))
    lines = text.splitlines()
    assert lines[0].startswith("Anthropic Messages: 7 events") and lines[0].endswith("ok")
    assert any(line.startswith("#0 ") and "message_start" in line for line in lines)
    assert "--- message ---" in text
    assert "Hello 世界" in text and "stop: end_turn" in text


def test_stream_view_puts_findings_at_their_event() -> None:
    text = render_stream(INDEX_1, detect.by_name("anthropic"))
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("#1 "))
    assert "ANT-7" in lines[first + 1] and "error" in lines[first + 1]
    assert "ANT-7" in lines[0]  # and in the headline summary


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


def test_request_view_shows_model_stream_tools_and_messages() -> None:
    view = LLMRequestContentview()
    flow = _flow(HEALTHY)
    text = view.prettify(flow.request.content or b"", _metadata(flow, flow.request))
    assert "model: claude-test" in text and "stream: True" in text
    assert "messages: 1" in text and "tools: 1" in text and "get_weather" in text
    assert view.render_priority(flow.request.content or b"", _metadata(flow, flow.request)) > 1


def test_views_render_broken_input_without_raising() -> None:
    for body in (b"", b"\xff\xfe", b"data: {not json\n\n", b"event: x\n\nda", b": only\n\n"):
        assert render_stream(body, detect.by_name("anthropic"))
        assert render_stream(body, None)


def test_request_view_shows_rewrites_before_and_after() -> None:
    from mitmllm.glue.contentview import render_request

    meta = {
        "rewrite": {
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
        }
    }
    body = {"model": "claude-alias", "stream": True, "messages": []}
    text = render_request(body, detect.by_name("anthropic"), "/v1/messages", meta)
    assert "rewritten to: claude-sonnet-4-5 (rule alias)" in text
    assert "before: {}" in text and 'after:  {"type": "object", "properties": {}}' in text


def test_stream_view_of_a_repaired_flow_says_what_the_upstream_sent_and_what_was_mended() -> None:
    flow = _flow(HEALTHY)
    flow.metadata["mitmllm"] = {
        "summary": "SSE-18, PAY-1, FIX-2",
        "client": "ok",
        "findings": [
            {"rule": "SSE-18", "severity": "error", "event": 3, "message": "cut"},
            {"rule": "FIX-2", "severity": "info", "event": 2, "message": "keep-alive removed"},
        ],
    }
    text = LLMStreamContentview().prettify(HEALTHY, _metadata(flow, flow.response))
    head = text.splitlines()
    assert head[0] == "repaired by mitmllm; the upstream sent SSE-18, PAY-1, FIX-2"
    assert "validate as: ok" in head[1]
    assert head[2].startswith("  FIX-2 @event 2 (mends SSE-18, PAY-1") and "removed" in head[2]
    assert "Anthropic Messages" in text


def test_stream_view_of_an_unrepaired_flow_has_no_repair_header() -> None:
    flow = _flow(HEALTHY)
    flow.metadata["mitmllm"] = {"findings": [], "summary": "ok"}
    text = LLMStreamContentview().prettify(HEALTHY, _metadata(flow, flow.response))
    assert text.startswith("Anthropic Messages")
