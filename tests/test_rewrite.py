"""Rewriting in the pipeline and of requests: edits are spliced, so only the bytes of the values
a rewrite changes differ from the sender's; nothing else moves."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.engine.pipeline import Pipeline
from mitmllm.engine.pipeline import TextBlind
from mitmllm.engine.rewrite import edits_of
from mitmllm.engine.rewrite import response_rewrites
from mitmllm.engine.rewrite import rewrite_request
from mitmllm.mock.catalogue import request as mock_request
from mitmllm.mock.scenarios import plan_request
from mitmllm.protocol import detect
from mitmllm.protocol.models import Param
from mitmllm.protocol.payload import copy_json
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.splice import replaced
from mitmllm.protocol.splice import splice
from mitmllm.protocol.sse import decode_all
from mitmllm.protocol.steady import opaque_text
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


def test_restamp_changes_only_the_bytes_of_the_model_value() -> None:
    rewrites = response_rewrites(ANT, client_model="alias", names=None)
    out, pipeline = _rewrite(ANT, [ANTHROPIC], rewrites)
    assert pipeline.rewritten == 1
    # Spacing around the key, the id field, CRLF, every other event: the upstream's bytes.
    assert out == ANTHROPIC.replace(b'"model" :  "up-model" ,', b'"model" :  "alias" ,')


def test_chat_restamp_and_tool_names_change_only_those_values() -> None:
    rewrites = response_rewrites(CHAT, client_model="alias", names={"up_tool": "client.tool"})
    out, pipeline = _rewrite(CHAT, [_chat()], rewrites)
    assert pipeline.rewritten == 5 and not [f for f in pipeline.findings if f.severity != "info"]
    expected = _chat().replace(b'"up-model"', b'"alias"').replace(b'"up_tool"', b'"client.tool"')
    assert out == expected


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
    raw = (
        b'{"id":"msg","type":"message","role":"assistant","model":"up","content":'
        b'[{"type":"tool_use","id":"t1","name":"up_tool","input":{"q":"\\u00e9\\/"}}],'
        b'"usage":{"input_tokens":123456789012345678901234567890}}'
    )
    body = json.loads(raw)
    rewrites = response_rewrites(ANT, client_model="alias", names={"up_tool": "mine"})
    edits = edits_of(rewrites, body)
    assert len(edits) == 2
    out = splice(raw, edits)
    assert out == raw.replace(b'"up"', b'"alias"').replace(b'"up_tool"', b'"mine"')


# A Chat stream whose last chunk has no blank line after it (no [DONE]), with escapes and a
# number wider than 64 bits that re-encoding would have turned into a float.
CHAT_CUT = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"up-model",'
    b'"choices":[{"index":0,"delta":{"content":"\\u2028 \\u003c \\u00e9 \\ud83d\\ude00 \\/"},'
    b'"finish_reason":null}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"up-model",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":123456789012345678901234567890,"completion_tokens":1}}'
)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_an_unterminated_last_event_is_restamped_too(data: st.DataObject) -> None:
    rewrites = response_rewrites(CHAT, client_model="alias", names=None)
    chunks = data.draw(streamcheck.chunkings(CHAT_CUT))
    out, pipeline = _rewrite(CHAT, chunks, rewrites)
    assert out == CHAT_CUT.replace(b'"up-model"', b'"alias"')
    assert pipeline.rewritten == 2 and pipeline.trailing == out[out.rindex(b"data: ") :]
    assert "SSE-14" in pipeline.findings.rules()  # still reported: it was cut


def test_a_cut_last_event_is_passed_on_as_it_is() -> None:
    cut = CHAT_CUT[:-40]  # the JSON of the last event is incomplete
    out, pipeline = _rewrite(CHAT, [cut], response_rewrites(CHAT, client_model="a", names=None))
    assert out == cut.replace(b'"up-model"', b'"a"', 1) and pipeline.rewritten == 1


def test_request_rewrites_splice_into_the_clients_bytes() -> None:
    raw = (
        b'{ "model" : "alias",\n  "messages": [{"role":"user","content":"\\/ \\u00e9 \\ud83d\\ude00'
        b' \\u2028"}],\n  "max_tokens": 500, "temperature": 0.70,'
        b' "n": 123456789012345678901234567890}'
    )
    body = json.loads(raw)
    rw = rewrite_request(
        ANT,
        "/v1/messages",
        copy_json(body),
        model="target",
        params={"max_tokens": Param(max=100), "temperature": Param(drop=True)},
    )
    out = rw.body_bytes(raw, body)
    assert out == raw.replace(b'"alias"', b'"target"').replace(b"500", b"100").replace(
        b' "temperature": 0.70,', b""
    )
    assert rw.reencoded is None


# --- text-blind response rewrites: what lets the steady shortcut restamp -------------------------

#: The wire formats whose text deltas the steady shortcut takes.
STEADY = [d for d in detect.dialects() if d.steady_paths]


def _mock_payloads(fmt: str, scenario: str) -> list[Any]:
    """The JSON payloads of the mock's answer to a streaming request for `scenario`."""
    req = mock_request(fmt, scenario, tools=scenario != "healthy")
    plan = plan_request("POST", req.path, req.query, req.headers, req.content())
    events, _ = decode_all(plan.body())
    return [orjson.loads(ev.data) for ev in events if ev.data and ev.data.startswith("{")]


def _names(value: Any) -> set[str]:
    """Every string a "name" key holds in a payload (the tool names a stream mentions)."""
    if isinstance(value, dict):
        found = {v for k, v in value.items() if k == "name" and isinstance(v, str)}
        return found.union(*(_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_names(v) for v in value))
    return set()


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_response_rewrites_are_text_blind(data: st.DataObject) -> None:
    """Restamp and tool names: the same edits whatever the text at a steady path, and none at
    it (so a steady delta is restamped as the delta that was certified; see `TextBlind`)."""
    dialect = data.draw(st.sampled_from(STEADY))
    scenario = data.draw(st.sampled_from(["healthy", "thinking", "tool", "parallel-tools"]))
    payloads = _mock_payloads(dialect.name, scenario)
    names = {n: f"client_{n}" for n in set().union(*(_names(p) for p in payloads))}
    rewrites = response_rewrites(dialect, client_model="client-alias", names=names)
    assert all(isinstance(r, TextBlind) for r in rewrites)
    texts = st.text(max_size=8)
    carried = 0
    for payload in payloads:
        for path in dialect.steady_paths:
            if opaque_text(payload, path) is None:
                continue
            carried += 1
            one = replaced(payload, [Edit(path, data.draw(texts))])
            other = replaced(payload, [Edit(path, data.draw(texts))])
            edits = edits_of(rewrites, one)
            assert edits_of(rewrites, other) == edits
            for edit in edits:
                n = min(len(edit.path), len(path))
                assert edit.path[:n] != path[:n], f"{edit} lands on the text at {path}"
    assert carried  # every scenario streams text
