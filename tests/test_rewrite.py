"""Streamed rewriting in the pipeline: only changed events are re-encoded, nothing else moves."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.engine.pipeline import Pipeline
from mitmllm.engine.rewrite import response_rewrites
from mitmllm.engine.rewrite import rewrite_request
from mitmllm.protocol import detect
from mitmllm.protocol.dialect import is_json
from mitmllm.protocol.sse import decode_all
from mitmllm.protocol.stream import StreamChecker
from tests import streamcheck

ANT = detect.by_name("anthropic")
CHAT = detect.by_name("openai-chat")
assert ANT is not None and CHAT is not None

# A message_start whose "model" key is padded and not first, text with escaped quotes and
# multi-byte characters, CRLF framing, an id field, and an unterminated final event.
ANTHROPIC = (
    b'event: message_start\r\nid: 1\r\ndata: {"type":"message_start","message":{"id":"msg_1",'
    b'"content":[],"type":"message","role":"assistant", "model" :  "up-model" ,'
    b'"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}'
    b"\r\n\r\n"
    b'event: content_block_start\r\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\r\n\r\n'
    b'event: content_block_delta\r\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"say \\"h\xc3\xa9llo\\" \xf0\x9f\x98\x80"}}\r\n\r\n'
    b'event: content_block_stop\r\ndata: {"type":"content_block_stop","index":0}\r\n\r\n'
    b'event: message_delta\r\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    b'"stop_sequence":null},"usage":{"output_tokens":4}}\r\n\r\n'
    b'event: message_stop\r\ndata: {"type":"message_stop"}'
)


def _chat(model: str = "up-model") -> bytes:
    chunks = [
        {"delta": {"role": "assistant", "content": ""}, "finish_reason": None},
        {"delta": {"content": 'a "quoted" \u00e9\u4e16\U0001f600'}, "finish_reason": None},
        {
            "delta": {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "up_tool", "arguments": ""},
                    }
                ]
            },
            "finish_reason": None,
        },
        {
            "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
            "finish_reason": None,
        },
        {"delta": {}, "finish_reason": "tool_calls"},
    ]
    out = b""
    for i, c in enumerate(chunks):
        payload = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, **c, "logprobs": None}],
        }
        sep = b", " if i % 2 else b","  # key spacing varies: never byte-match
        out += b"data: " + orjson.dumps(payload).replace(b",", sep) + b"\n\n"
    return out + b"data: [DONE]\n\n"


def _rewrite(dialect: Any, chunks: list[bytes], rewrites: list[Any]) -> tuple[bytes, Pipeline]:
    pipeline = Pipeline(StreamChecker(dialect), rewrites)
    out = b"".join(pipeline.feed(c) for c in chunks) + pipeline.close()
    return out, pipeline


def test_restamp_changes_only_the_event_that_carries_the_model() -> None:
    rewrites = response_rewrites(ANT, client_model="alias", names=None)
    out, pipeline = _rewrite(ANT, [ANTHROPIC], rewrites)
    before, before_tail = decode_all(ANTHROPIC)
    after, after_tail = decode_all(out)
    assert pipeline.rewritten == 1
    assert after[0].raw.startswith(b"event: message_start\r\nid: 1\r\ndata: ")  # id, CRLF kept
    assert orjson.loads(after[0].data)["message"]["model"] == "alias"
    assert [e.raw for e in after[1:]] == [e.raw for e in before[1:]]  # untouched: byte-identical
    assert after_tail is not None and after_tail.raw == before_tail.raw  # unterminated: as is
    assert "\u00e9" in after[2].data


def test_chat_restamp_and_tool_names_keep_text_exactly() -> None:
    rewrites = response_rewrites(CHAT, client_model="alias", names={"up_tool": "client.tool"})
    out, pipeline = _rewrite(CHAT, [_chat()], rewrites)
    assert pipeline.rewritten == 5 and not [f for f in pipeline.findings if f.severity != "info"]
    old = [orjson.loads(e.data) for e in decode_all(_chat())[0] if e.data != "[DONE]"]
    new = [orjson.loads(e.data) for e in decode_all(out)[0] if e.data != "[DONE]"]
    for a, b in zip(old, new, strict=True):
        assert b["model"] == "alias"
        a["model"] = "alias"
        calls = b["choices"][0]["delta"].get("tool_calls") or []
        if calls and "name" in calls[0]["function"]:
            assert calls[0]["function"]["name"] == "client.tool"
            a["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] = "client.tool"
        assert a == b  # escaped quotes and multi-byte text survive re-encoding
    assert out.endswith(b"data: [DONE]\n\n")


def test_a_rewrite_that_changes_nothing_leaves_the_stream_byte_identical() -> None:
    out, pipeline = _rewrite(
        CHAT, [_chat("alias")], response_rewrites(CHAT, client_model="alias", names={"other": "x"})
    )
    assert out == _chat("alias") and pipeline.rewritten == 0


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_rewriting_at_any_chunking_gives_identical_bytes(data: st.DataObject) -> None:
    body = data.draw(st.sampled_from([ANTHROPIC, _chat()]))
    dialect = ANT if body is ANTHROPIC else CHAT
    rewrites = response_rewrites(dialect, client_model="alias", names={"up_tool": "t"})
    chunks = data.draw(streamcheck.chunkings(body))
    whole, _ = _rewrite(dialect, [body], rewrites)
    parts, _ = _rewrite(dialect, chunks, rewrites)
    assert parts == whole
    untouched, _ = _rewrite(dialect, chunks, [])
    assert untouched == body


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"alias","max_tokens":5,"messages":[]}',
        b'{ "messages" : [], "max_tokens" : 5 , "model"\n:\t"alias" }',
        b'{"metadata":{"model":"not-this"},"model":"alias","messages":[]}',
    ],
    ids=["compact", "whitespace-and-order", "nested-model-key"],
)
def test_request_model_rewrite_reads_json_not_bytes(raw: bytes) -> None:
    body = orjson.loads(raw)
    rw = rewrite_request(ANT, "/v1/messages", body, model="target")
    assert rw.body_changed and body["model"] == "target"
    if "metadata" in body:
        assert body["metadata"]["model"] == "not-this"


def test_gemini_model_lives_in_the_path() -> None:
    gem = detect.by_name("gemini")
    assert gem is not None
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    rw = rewrite_request(gem, "/v1beta/models/alias:streamGenerateContent", body, model="target")
    assert rw.path_changed and not rw.body_changed
    assert rw.path == "/v1beta/models/target:streamGenerateContent"


def test_restamp_works_on_whole_json_bodies() -> None:
    body = {
        "id": "msg",
        "type": "message",
        "role": "assistant",
        "model": "up",
        "content": [{"type": "tool_use", "id": "t1", "name": "up_tool", "input": {}}],
    }
    for rewrite in response_rewrites(ANT, client_model="alias", names={"up_tool": "mine"}):
        assert rewrite(body)
    assert body["model"] == "alias" and body["content"][0]["name"] == "mine"
    assert is_json(body)
