"""The mock upstream: scenario plans (sans-I/O), the server that carries them out, and the
official SDKs reading its streams."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import itertools
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.mock import __main__ as cli
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import FORMATS
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import OPENAI_RESPONSES
from mitmllm.mock.scenarios import SCENARIOS
from mitmllm.mock.scenarios import Action
from mitmllm.mock.scenarios import Plan
from mitmllm.mock.scenarios import Step
from mitmllm.mock.scenarios import carries_tool_result
from mitmllm.mock.scenarios import expected_rules
from mitmllm.mock.scenarios import plan_request
from mitmllm.mock.scenarios import rechunk
from mitmllm.mock.scenarios import stall
from mitmllm.mock.upstream import MockUpstream
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.dialect import StreamValidator
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.sse import decode_all
from mitmllm.protocol.stream import StreamChecker
from mitmllm.protocol.stream import check_body
from mitmllm.protocol.stream import check_head
from tests.support.mockrequests import FAST
from tests.support.mockrequests import MODELS
from tests.support.mockrequests import PATHS
from tests.support.mockrequests import TOOLS
from tests.support.mockrequests import path_of
from tests.support.mockrequests import request_body

CASES = [(name, fmt) for name, s in SCENARIOS.items() for fmt in s.formats]


def plan(
    fmt: str,
    scenario: str | None = None,
    *,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    path: str | None = None,
    stream: bool = True,
    **kw: Any,
) -> Plan:
    h = dict(FAST)
    if scenario is not None:
        h["x-mock-scenario"] = scenario
    h.update(headers or {})
    query = {"alt": "sse"} if fmt == GEMINI and stream else {}
    raw = orjson.dumps(body if body is not None else request_body(fmt, stream=stream))
    return plan_request("POST", path or path_of(fmt, stream=stream), query, h, raw, **kw)


def payloads(body: bytes) -> list[tuple[str | None, Any]]:
    events, _ = decode_all(body)
    out = []
    for ev in events:
        if ev.data is not None:
            out.append((ev.event, ev.data if ev.data == "[DONE]" else orjson.loads(ev.data)))
    return out


# --- scenario selection and routing (sans-I/O) -----------------------------------------------


def test_scenario_selection_order_and_model_suffix_is_stripped() -> None:
    body = request_body(ANTHROPIC) | {"model": "claude-sonnet-4-6~tool-index-1"}
    path = "/mock/truncated/v1/messages"
    both = {"x-mock-scenario": "drop"}
    assert plan(ANTHROPIC, body=body, path=path, headers=both).scenario == "drop"
    assert plan(ANTHROPIC, body=body, path=path).scenario == "truncated"
    by_model = plan(ANTHROPIC, body=body, default_scenario="slow")
    assert by_model.scenario == "tool-index-1"
    assert by_model.model == "claude-sonnet-4-6"
    start = payloads(by_model.body())[0][1]
    assert start["message"]["model"] == "claude-sonnet-4-6"
    assert plan(ANTHROPIC, default_scenario="slow").scenario == "slow"
    assert plan(ANTHROPIC).scenario == "healthy"


def test_gemini_model_suffix_in_path() -> None:
    p = plan(GEMINI, path="/v1beta/models/gemini-2.5-pro~truncated:streamGenerateContent")
    assert (p.scenario, p.model) == ("truncated", "gemini-2.5-pro")
    chunks = [d for _, d in payloads(p.body())]
    assert {c["modelVersion"] for c in chunks} == {"gemini-2.5-pro"}
    assert not any("finishReason" in c["candidates"][0] for c in chunks)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_scenario_is_a_400_in_the_format_error_shape(fmt: str) -> None:
    p = plan(fmt, "no-such-thing")
    body = orjson.loads(p.body())
    assert p.status == 400
    message = body["error"]["message"]
    assert "no-such-thing" in message and "healthy" in message and "tool-index-1" in message
    if fmt == ANTHROPIC:
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    elif fmt == GEMINI:
        assert body["error"]["status"] == "INVALID_ARGUMENT" and body["error"]["code"] == 400
    else:
        assert body["error"]["type"] == "invalid_request_error"


def test_scenario_for_another_format_and_bad_modifier_are_400() -> None:
    p = plan(GEMINI, "tool-index-1")
    assert p.status == 400
    assert "anthropic, openai-chat" in orjson.loads(p.body())["error"]["message"]
    bad = plan(ANTHROPIC, headers={"x-mock-chunk-size": "0"})
    assert bad.status == 400
    assert "x-mock-chunk-size" in orjson.loads(bad.body())["error"]["message"]


def test_unknown_endpoint_is_404_and_count_tokens_answers() -> None:
    p = plan_request("GET", "/v1/models", {}, {}, b"")
    assert p.status == 404 and "/v1/models" in orjson.loads(p.body())["error"]["message"]
    count = plan(ANTHROPIC, path="/v1/messages/count_tokens")
    assert count.status == 200 and orjson.loads(count.body())["input_tokens"] > 0


# --- the scenario table -----------------------------------------------------------------------


def test_table_is_documented_and_names_only_registered_rules() -> None:
    for s in SCENARIOS.values():
        assert s.description and s.receives and s.formats, s.name
        for fmt in s.formats:
            unknown = expected_rules(s.name, fmt) - RULES.keys()
            assert not unknown, (s.name, fmt, unknown)
    assert expected_rules("tool-index-1", ANTHROPIC) == {"ANT-7"}
    assert expected_rules("keepalive-mid-event", ANTHROPIC) == {"SSE-13", "ANT-1"}
    with pytest.raises(KeyError):
        expected_rules("missing-done", GEMINI)


class _Sentinel(Dialect):
    """Only the generic layer: no state machine, the format's sentinel."""

    name = "generic"
    title = "generic"

    def __init__(self, sentinel: str | None) -> None:
        self.sentinel = sentinel  # type: ignore[misc]

    def match_request(self, method: str, path: str, body: Any) -> bool:
        return False

    def wants_stream(self, path: str, query: Any, body: Any) -> bool:
        return True

    def validator(self, request: Any = None) -> StreamValidator:
        return None  # type: ignore[return-value]

    def error_event(self, message: str, kind: str = "api_error") -> bytes:
        return b""

    def error_body(self, status: int, message: str, kind: str = "api_error") -> bytes:
        return b""


def reported(p: Plan, dialect: Dialect | None, request: Any) -> set[str]:
    """Rules (error and warning) a proxy's checker reports for this answer to a stream request."""
    findings = Findings()
    body = p.body()
    content_type = p.header("content-type") or ""
    check_head(findings, status=p.status, headers=dict(p.headers), wants_stream=True)
    if content_type.startswith("text/event-stream"):
        checker = StreamChecker(dialect, findings, request=request)
        checker.feed(body)
        checker.close()
    elif not isinstance(dialect, _Sentinel):
        check_body(
            dialect,
            findings,
            status=p.status,
            body=body,
            content_type=content_type,
            request=request,
        )
    return {f.rule for f in findings if f.severity != Severity.INFO}


@pytest.mark.parametrize(("scenario", "fmt"), CASES, ids=[f"{s}-{f}" for s, f in CASES])
def test_expected_generic_rules(scenario: str, fmt: str) -> None:
    """The format-independent part of each expectation holds for the bytes the plan writes
    (HTTP-5 needs a dialect to recognise the error body: see the cross-check below)."""
    generic = _Sentinel("[DONE]" if fmt == OPENAI_CHAT else None)
    want = {
        r
        for r in expected_rules(scenario, fmt)
        if r.split("-")[0] in ("SSE", "PAY", "HTTP") and r != "HTTP-5"
    }
    assert reported(plan(fmt, scenario), generic, None) == want


DIALECTS = {
    ANTHROPIC: "anthropic",
    OPENAI_CHAT: "openai_chat",
    OPENAI_RESPONSES: "openai_responses",
    GEMINI: "gemini",
}


@pytest.mark.parametrize(("scenario", "fmt"), CASES, ids=[f"{s}-{f}" for s, f in CASES])
def test_expected_rules_match_the_dialect_validators(scenario: str, fmt: str) -> None:
    module = pytest.importorskip(f"mitmllm.protocol.{DIALECTS[fmt]}")
    request = request_body(fmt)
    got = reported(plan(fmt, scenario, body=request), module.DIALECT, request)
    assert got == expected_rules(scenario, fmt)


# --- wire shapes (sans-I/O) -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_requested_model_is_echoed(fmt: str) -> None:
    body = request_body(fmt)
    path = path_of(fmt)
    if fmt == GEMINI:
        path = path.replace("gemini-2.5-flash", "gemini-echo~healthy")
    else:
        body["model"] = "echo-model~healthy"
    want = "gemini-echo" if fmt == GEMINI else "echo-model"
    p = plan(fmt, body=body, path=path)
    assert p.model == want
    events = payloads(p.body())
    if fmt == ANTHROPIC:
        assert events[0][1]["message"]["model"] == want
    elif fmt == OPENAI_CHAT:
        assert {d["model"] for _, d in events if d != "[DONE]"} == {want}
    elif fmt == OPENAI_RESPONSES:
        assert {d["response"]["model"] for _, d in events if "response" in d} == {want}
    else:
        assert {d["modelVersion"] for _, d in events} == {want}
    body = request_body(fmt, stream=False)
    path = path_of(fmt, stream=False)
    if fmt == GEMINI:
        path = path.replace("gemini-2.5-flash", "gemini-echo~tool")
    else:
        body["model"] = "echo-model~tool"
    answer = orjson.loads(plan(fmt, body=body, path=path, stream=False).body())
    assert answer.get("model", answer.get("modelVersion")) == want


def test_anthropic_stream_shape() -> None:
    events = payloads(plan(ANTHROPIC, "thinking").body())
    names = [e for e, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert all(e == d["type"] for e, d in events)
    blocks = [d["content_block"]["type"] for _, d in events if d["type"] == "content_block_start"]
    assert blocks == ["thinking", "text"]
    assert any(d.get("delta", {}).get("type") == "signature_delta" for _, d in events)
    raw = plan(ANTHROPIC, "healthy").body()
    assert b'"index":0 }' in raw and b'{"type": "ping"}' in raw  # padded JSON, like the API


def test_chat_usage_chunk_only_when_requested() -> None:
    plain = payloads(plan(OPENAI_CHAT).body())
    assert plain[-1][1] == "[DONE]" and all("usage" not in d for _, d in plain[:-1])
    body = request_body(OPENAI_CHAT) | {"stream_options": {"include_usage": True}}
    with_usage = payloads(plan(OPENAI_CHAT, body=body).body())
    last = with_usage[-2][1]
    assert last["choices"] == [] and last["usage"]["total_tokens"] > 0
    assert all(d["usage"] is None for _, d in with_usage[:-2])


@pytest.mark.parametrize("fmt", [OPENAI_CHAT, OPENAI_RESPONSES])
@pytest.mark.parametrize("scenario", ["thinking", "parallel-tools"])
def test_openai_deltas_are_padded_only_when_the_request_asks(fmt: str, scenario: str) -> None:
    """OpenAI pads each delta with an ``obfuscation`` string (random characters of random
    length) unless the client turns it off; the mock pads when asked, the same for the same
    stream, and only deltas."""
    assert b"obfuscation" not in plan(fmt, scenario).body()
    body = request_body(fmt) | {"stream_options": {"include_obfuscation": True}}
    raw = plan(fmt, scenario, body=body).body()
    assert raw == plan(fmt, scenario, body=body).body()
    events = [d for _, d in payloads(raw) if isinstance(d, dict)]
    if fmt == OPENAI_CHAT:
        deltas = [d for d in events if d["choices"] and d["choices"][0]["finish_reason"] is None]
        deltas = [d for d in deltas if "role" not in d["choices"][0]["delta"]]
    else:
        deltas = [d for d in events if d["type"].endswith(".delta")]
    pads = [d.get("obfuscation") for d in deltas]
    assert len(deltas) > 3 and all(isinstance(p, str) and p.isalnum() for p in pads)
    assert len(set(pads)) > 1 and len({len(p) for p in pads}) > 1
    assert sum("obfuscation" in d for d in events) == len(deltas)
    assert all(list(d)[-1] == "obfuscation" for d in deltas)  # the last key, as OpenAI sends it


def test_responses_sequence_numbers_and_terminal() -> None:
    events = payloads(plan(OPENAI_RESPONSES, "parallel-tools").body())
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert events[0][0] == "response.created" and events[-1][0] == "response.completed"
    output = events[-1][1]["response"]["output"]
    assert [i["type"] for i in output] == ["message", "function_call", "function_call"]


def test_gemini_stream_is_crlf_with_finish_reason_last() -> None:
    raw = plan(GEMINI, "thinking").body()
    assert raw.count(b"\r\n\r\n") == raw.count(b"data: ") and b"event:" not in raw
    chunks = [d for _, d in payloads(raw)]
    assert chunks[0]["candidates"][0]["content"]["parts"][0]["thought"] is True
    assert [("finishReason" in c["candidates"][0]) for c in chunks] == [False] * (
        len(chunks) - 1
    ) + [True]


def test_gemini_stream_without_alt_sse_is_a_json_array() -> None:
    raw = plan_request("POST", PATHS[GEMINI], {}, {}, orjson.dumps(request_body(GEMINI))).body()
    chunks = orjson.loads(raw)
    assert isinstance(chunks, list) and chunks[-1]["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize("fmt", FORMATS)
def test_tool_names_and_arguments_come_from_the_request(fmt: str) -> None:
    body = request_body(fmt, tools=True)
    events = payloads(plan(fmt, "parallel-tools", body=body).body())
    calls: list[tuple[str, Any]] = []
    if fmt == ANTHROPIC:
        json_by_index: dict[int, str] = {}
        for _, d in events:
            if d["type"] == "content_block_start" and d["content_block"]["type"] == "tool_use":
                calls.append((d["content_block"]["name"], d["index"]))
            if d["type"] == "content_block_delta" and d["delta"]["type"] == "input_json_delta":
                json_by_index[d["index"]] = (
                    json_by_index.get(d["index"], "") + d["delta"]["partial_json"]
                )
        calls = [(name, orjson.loads(json_by_index[i])) for name, i in calls]
    elif fmt == OPENAI_CHAT:
        args: dict[int, list[str]] = {}
        names: dict[int, str] = {}
        for _, d in events[:-1]:
            for tc in d["choices"][0]["delta"].get("tool_calls", []):
                if "id" in tc:
                    names[tc["index"]] = tc["function"]["name"]
                args.setdefault(tc["index"], []).append(tc["function"]["arguments"])
        calls = [(names[i], orjson.loads("".join(args[i]))) for i in sorted(names)]
    elif fmt == OPENAI_RESPONSES:
        calls = [
            (d["item"]["name"], orjson.loads(d["item"]["arguments"]))
            for e, d in events
            if e == "response.output_item.done" and d["item"]["type"] == "function_call"
        ]
    else:
        calls = [
            (p["functionCall"]["name"], p["functionCall"]["args"])
            for _, d in events
            for p in d["candidates"][0]["content"]["parts"]
            if "functionCall" in p
        ]
    assert calls == [("forecast", {"city": "Paris", "days": 3}), ("clock", {})]


@pytest.mark.parametrize("fmt", FORMATS)
def test_json_requests_get_the_format_body(fmt: str) -> None:
    p = plan(fmt, "tool", body=request_body(fmt, stream=False, tools=True), stream=False)
    raw = p.body()
    assert p.status == 200 and p.length == len(raw) and not p.stream
    body = orjson.loads(raw)
    if fmt == ANTHROPIC:
        assert body["stop_reason"] == "tool_use"
        assert body["content"][-1]["input"] == {"city": "Paris", "days": 3}
    elif fmt == OPENAI_CHAT:
        call = body["choices"][0]["message"]["tool_calls"][0]["function"]
        assert orjson.loads(call["arguments"]) == {"city": "Paris", "days": 3}
    elif fmt == OPENAI_RESPONSES:
        assert body["status"] == "completed" and body["output"][-1]["name"] == "forecast"
    else:
        parts = body["candidates"][0]["content"]["parts"]
        assert parts[-1]["functionCall"]["args"] == {"city": "Paris", "days": 3}
    # a stream-only scenario answers a JSON request with the healthy body
    plain = request_body(fmt, stream=False)
    shaped = plan(fmt, "keepalive-mid-data", body=plain, stream=False)
    assert shaped.body() == plan(fmt, "healthy", body=plain, stream=False).body()


def test_big_event_plan_is_generated_lazily_from_one_buffer() -> None:
    p = plan(ANTHROPIC, "big-event", headers={"x-mock-big-bytes": str(32 * 1024 * 1024)})
    total, largest, buffers = 0, 0, set()
    for step in p.steps:
        total += len(step.data)
        largest = max(largest, len(step.data))
        if len(step.data) == 65536:
            buffers.add(id(step.data))
    assert total > 32 * 1024 * 1024 and largest == 65536 and len(buffers) == 1


# --- re-chunking ------------------------------------------------------------------------------

steps_strategy = st.lists(
    st.one_of(
        st.builds(Step, st.binary(max_size=40), st.sampled_from([0.0, 0.5])),
        st.builds(stall, st.just(1.0)),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(steps_strategy, st.integers(1, 17))
def test_rechunk_keeps_bytes_order_and_timing(steps: list[Step], size: int) -> None:
    out = list(rechunk(steps, size))
    assert b"".join(s.data for s in out) == b"".join(s.data for s in steps)
    assert sum(s.delay for s in out) == pytest.approx(sum(s.delay for s in steps))
    assert [s.action for s in out if s.action is not Action.WRITE] == [
        s.action for s in steps if s.action is not Action.WRITE
    ]
    for i, s in enumerate(out):
        followed_by_barrier = i + 1 == len(out) or out[i + 1].action is not Action.WRITE
        if s.action is Action.WRITE and not followed_by_barrier:
            assert len(s.data) == size


# --- the server -------------------------------------------------------------------------------


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    async with MockUpstream(name="mock-a") as up:
        yield up


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    up: MockUpstream,
    fmt: str,
    headers: dict[str, str] | None = None,
    *,
    body: dict[str, Any] | None = None,
    stream: bool = True,
) -> tuple[aiohttp.ClientResponse, list[tuple[float, bytes]], BaseException | None]:
    """POST and read the body as it arrives: (response, [(time, HTTP chunk)], transport error)."""
    query = "?alt=sse" if fmt == GEMINI and stream else ""
    url = up.url + path_of(fmt, stream=stream) + query
    chunks: list[tuple[float, bytes]] = []
    error: BaseException | None = None
    payload = body if body is not None else request_body(fmt, stream=stream)
    async with http.post(url, json=payload, headers=headers or {}) as resp:
        try:
            async for data, _ in resp.content.iter_chunks():
                chunks.append((time.monotonic(), data))
        except aiohttp.ClientPayloadError as e:
            error = e
    return resp, chunks, error


@pytest.mark.parametrize(("scenario", "fmt"), CASES, ids=[f"{s}-{f}" for s, f in CASES])
async def test_every_scenario_over_http_writes_its_plan(
    upstream: MockUpstream, http: aiohttp.ClientSession, scenario: str, fmt: str
) -> None:
    headers = FAST | {"x-mock-scenario": scenario, "x-mock-delay-ms": "0"}
    resp, chunks, error = await post(http, upstream, fmt, headers)
    seen = upstream.received[-1]
    want = plan_request(
        seen.method, seen.path, seen.query, seen.headers, seen.body, ident=seen.ident
    )
    assert resp.status == want.status
    assert resp.headers["x-mock-upstream"] == "mock-a"
    assert resp.headers.get("x-mock-scenario") == scenario
    assert resp.headers["content-type"] == want.header("content-type")
    assert resp.headers.get("retry-after") == want.header("retry-after")
    assert b"".join(c for _, c in chunks) == want.body()
    assert (error is not None) == (scenario == "drop")
    assert (seen.scenario, seen.fmt, seen.model) == (scenario, fmt, MODELS[fmt])


async def test_received_records_what_the_upstream_saw(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    body = request_body(ANTHROPIC) | {"model": "claude-haiku-4-5~tool"}
    url = upstream.url_for("thinking") + "/v1/messages?beta=true"
    async with http.post(url, json=body, headers={"x-api-key": "k1"}) as resp:
        await resp.read()
    seen = upstream.received[0]
    assert (seen.method, seen.path, seen.query) == (
        "POST",
        "/mock/thinking/v1/messages",
        {"beta": "true"},
    )
    assert seen.headers["x-api-key"] == "k1" and seen.json == body
    assert orjson.loads(seen.body) == body
    assert (seen.scenario, seen.fmt, seen.model, seen.stream) == (
        "thinking",
        ANTHROPIC,
        "claude-haiku-4-5",
        True,
    )
    assert upstream.completed == 1 and upstream.cancelled == 0


async def test_default_scenario_and_name() -> None:
    async with (
        MockUpstream(default_scenario="overloaded", name="primary") as up,
        aiohttp.ClientSession() as http,
    ):
        resp, chunks, _ = await post(http, up, ANTHROPIC)
        assert resp.status == 529 and resp.headers["x-mock-upstream"] == "primary"
        assert orjson.loads(b"".join(c for _, c in chunks))["error"]["type"] == "overloaded_error"
        resp, _, _ = await post(http, up, OPENAI_CHAT, {"x-mock-scenario": "healthy"})
        assert resp.status == 200
    with pytest.raises(ValueError, match="unknown mock scenario"):
        MockUpstream(default_scenario="nope")


async def test_chunk_size_modifier_sets_http_chunk_boundaries(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    _, chunks, _ = await post(http, upstream, ANTHROPIC, {"x-mock-chunk-size": "7"})
    sizes = [len(c) for _, c in chunks]
    assert set(sizes[:-1]) == {7} and 0 < sizes[-1] <= 7
    seen = upstream.received[-1]
    unchunked = plan_request(seen.method, seen.path, seen.query, {}, seen.body, ident=seen.ident)
    assert b"".join(c for _, c in chunks) == unchunked.body()


async def test_delay_modifier_spaces_events(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    # The healthy Gemini stream has 7 events: 6 gaps. Sleeps make the totals lower bounds (a
    # busy machine only makes them longer); single gaps seen by the client also depend on when
    # its reads get scheduled, so they are not asserted.
    start = time.monotonic()
    _, chunks, _ = await post(http, upstream, GEMINI, {"x-mock-delay-ms": "40"})
    assert len(chunks) == 7, "one write per event"
    assert time.monotonic() - start >= 6 * 0.04
    start = time.monotonic()
    await post(http, upstream, GEMINI, {"x-mock-scenario": "slow"})
    assert time.monotonic() - start >= 6 * 0.05


async def test_split_utf8_cuts_characters_between_http_chunks(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    _, chunks, _ = await post(http, upstream, OPENAI_CHAT, {"x-mock-scenario": "split-utf8"})
    cut = [c for _, c in chunks if c[-1] >= 0xC0]  # ends with the lead byte of a character
    assert len(cut) >= len("üß東京🙂✓")
    text = "".join(
        d["choices"][0]["delta"].get("content") or ""
        for _, d in payloads(b"".join(c for _, c in chunks))[:-1]
    )
    assert text == "Grüße aus 東京 🙂 ✓"


async def test_stall_before_first_sends_headers_then_waits(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    # Headers take milliseconds and the first event at least the stall: the bound on the headers
    # is far above what they take, so only headers held back with the event miss it.
    headers = {"x-mock-scenario": "stall-before-first", "x-mock-stall-ms": "1500"}
    url = upstream.url + PATHS[OPENAI_CHAT]
    start = time.monotonic()
    async with http.post(url, json=request_body(OPENAI_CHAT), headers=headers) as resp:
        headers_at = time.monotonic() - start
        await resp.content.readany()
        first_at = time.monotonic() - start
        await resp.read()
    assert headers_at < 1.0 and first_at >= 1.5


async def test_stall_after_commit_pauses_after_content(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    headers = {"x-mock-scenario": "stall-after-commit", "x-mock-stall-ms": "400"}
    _, chunks, _ = await post(http, upstream, ANTHROPIC, headers)
    gaps = [(b[0] - a[0], a[1]) for a, b in itertools.pairwise(chunks)]
    pauses = [data for gap, data in gaps if gap >= 0.3]
    assert len(pauses) == 1 and b'"text":" from"' in pauses[0]  # after the 2nd text delta


async def test_client_disconnect_is_counted_without_tracebacks(
    upstream: MockUpstream, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"x-mock-scenario": "stall-after-commit", "x-mock-stall-ms": "5000"}
    url = upstream.url + PATHS[ANTHROPIC]
    resp = await http.post(url, json=request_body(ANTHROPIC), headers=headers)
    await resp.content.readuntil(b'"text":" from"')
    resp.close()  # the client goes away in the middle of the stall
    loop = asyncio.get_running_loop()
    end = loop.time() + 30  # a bound that only catches a hang
    while not upstream.cancelled and loop.time() < end:
        await asyncio.sleep(0.01)
    assert upstream.cancelled == 1 and upstream.completed == 0
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_drop_closes_the_connection_mid_body(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    _, chunks, error = await post(http, upstream, OPENAI_RESPONSES, {"x-mock-scenario": "drop"})
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert b"response.output_text.delta" in b"".join(c for _, c in chunks)
    _, _, json_error = await post(
        http, upstream, ANTHROPIC, {"x-mock-scenario": "drop"}, stream=False
    )
    assert json_error is not None
    assert upstream.dropped == 2 and upstream.cancelled == 0


async def test_big_event_streams_in_bounded_memory(
    upstream: MockUpstream, http: aiohttp.ClientSession
) -> None:
    url = upstream.url + PATHS[OPENAI_CHAT]
    headers = {"x-mock-scenario": "big-event"}
    tracemalloc.start()
    try:
        total = 0
        tail = b""
        async with http.post(url, json=request_body(OPENAI_CHAT), headers=headers) as resp:
            async for data in resp.content.iter_chunked(1 << 16):
                total += len(data)
                tail = (tail + data)[-64:]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 32 * 1024 * 1024 and tail.endswith(b"data: [DONE]\n\n")
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while streaming a 32 MiB event"


# --- the official SDKs ------------------------------------------------------------------------

SDK_SCENARIOS = ["healthy", "thinking", "tool", "parallel-tools"]
TOOL_INPUT = {"city": "Paris", "days": 3}


@pytest.mark.parametrize("scenario", SDK_SCENARIOS)
async def test_anthropic_sdk_reads_complete_messages(upstream: MockUpstream, scenario: str) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=upstream.url_for(scenario), api_key="test", max_retries=0
    )
    async with client.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=64,
        tools=TOOLS[ANTHROPIC],
        messages=[{"role": "user", "content": "hi"}],
    ) as stream:
        message = await stream.get_final_message()
    await client.close()
    kinds = [b.type for b in message.content]
    assert message.model == "claude-sonnet-4-6"
    if scenario in ("healthy", "thinking"):
        assert message.stop_reason == "end_turn"
        assert message.content[-1].text == "Hello from the mock upstream."
        if scenario == "thinking":
            thinking = message.content[0]
            assert thinking.type == "thinking" and thinking.signature
            assert thinking.thinking == "The user wants a short answer."
    else:
        tools = [b for b in message.content if b.type == "tool_use"]
        assert message.stop_reason == "tool_use" and kinds[0] == "text"
        assert [(t.name, t.input) for t in tools] == [("forecast", TOOL_INPUT), ("clock", {})][
            : len(tools)
        ]
        assert len(tools) == (2 if scenario == "parallel-tools" else 1)


@pytest.mark.parametrize("scenario", SDK_SCENARIOS)
async def test_openai_chat_sdk_reads_complete_completions(
    upstream: MockUpstream, scenario: str
) -> None:
    client = openai.AsyncOpenAI(base_url=upstream.url + "/v1", api_key="test", max_retries=0)
    async with client.chat.completions.stream(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        tools=TOOLS[OPENAI_CHAT],
        stream_options={"include_usage": True},
        extra_headers={"x-mock-scenario": scenario},
    ) as stream:
        completion = await stream.get_final_completion()
    await client.close()
    choice = completion.choices[0]
    assert completion.model == "gpt-4o" and completion.usage and completion.usage.total_tokens
    if scenario in ("healthy", "thinking"):
        assert choice.finish_reason == "stop"
        assert choice.message.content == "Hello from the mock upstream."
        if scenario == "thinking":
            extra = choice.message.model_extra or {}
            assert extra.get("reasoning_content") == "The user wants a short answer."
    else:
        calls = choice.message.tool_calls or []
        assert choice.finish_reason == "tool_calls"
        assert [(c.function.name, orjson.loads(c.function.arguments)) for c in calls] == [
            ("forecast", TOOL_INPUT),
            ("clock", {}),
        ][: len(calls)]
        assert len(calls) == (2 if scenario == "parallel-tools" else 1)


@pytest.mark.parametrize("scenario", SDK_SCENARIOS)
async def test_openai_responses_sdk_reads_complete_responses(
    upstream: MockUpstream, scenario: str
) -> None:
    client = openai.AsyncOpenAI(base_url=upstream.url + "/v1", api_key="test", max_retries=0)
    async with client.responses.stream(
        model="gpt-5",
        input="hi",
        tools=TOOLS[OPENAI_RESPONSES],
        extra_headers={"x-mock-scenario": scenario},
    ) as stream:
        response = await stream.get_final_response()
    await client.close()
    kinds = [item.type for item in response.output]
    assert response.model == "gpt-5" and response.status == "completed"
    assert response.usage and response.usage.total_tokens
    if scenario in ("healthy", "thinking"):
        assert response.output_text == "Hello from the mock upstream."
        assert kinds == (["reasoning", "message"] if scenario == "thinking" else ["message"])
    else:
        calls = [i for i in response.output if i.type == "function_call"]
        assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [
            ("forecast", TOOL_INPUT),
            ("clock", {}),
        ][: len(calls)]
        assert len(calls) == (2 if scenario == "parallel-tools" else 1)


async def test_sdks_raise_on_inband_errors(upstream: MockUpstream) -> None:
    ant = anthropic.AsyncAnthropic(
        base_url=upstream.url_for("inband-error"), api_key="test", max_retries=0
    )
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        async with ant.messages.stream(
            model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            await stream.get_final_message()
    oai = openai.AsyncOpenAI(
        base_url=upstream.url_for("inband-error-first") + "/v1", api_key="test", max_retries=0
    )
    with pytest.raises(openai.APIError, match="mock upstream"):
        async with oai.responses.stream(model="gpt-5", input="hi") as rstream:
            await rstream.get_final_response()
    await ant.close()
    await oai.close()


# --- the command line -------------------------------------------------------------------------


def test_cli_lists_every_scenario() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["--list"]) == 0
    listed = out.getvalue()
    assert all(f"{name} " in listed for name in SCENARIOS)
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        cli.parse_args(["--scenario", "nope"])


def test_dialect_modules_are_named_as_expected() -> None:
    """The expectation cross-check above skips a format whose module is missing; make sure the
    names it imports are right for the modules that exist."""
    found = 0
    for module in DIALECTS.values():
        with contextlib.suppress(ModuleNotFoundError):
            found += hasattr(importlib.import_module(f"mitmllm.protocol.{module}"), "DIALECT")
    assert found == 4


# --- a turn that carries a tool's result is answered in text ------------------------------------

TOOL_RESULT_TURNS = {
    ANTHROPIC: {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
            {"role": "system", "content": "a reminder Claude Code appends"},
        ]
    },
    OPENAI_CHAT: {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "1"}]},
    OPENAI_RESPONSES: {"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]},
    GEMINI: {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f"}}]}]},
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tool_scenario_answers_the_turn_with_the_tool_result_in_text(fmt: str) -> None:
    """A mock that called a tool on every turn would keep an agent looping on its tools."""
    body = {**request_body(fmt, tools=True), **TOOL_RESULT_TURNS[fmt]}
    assert carries_tool_result(fmt, body)
    assert not carries_tool_result(fmt, request_body(fmt, tools=True))
    data = plan(fmt, "tool", body=body).body()
    call = {
        ANTHROPIC: b'"type":"tool_use"',
        OPENAI_CHAT: b'"tool_calls":[',
        OPENAI_RESPONSES: b'"type":"function_call"',
        GEMINI: b'"functionCall"',
    }[fmt]
    assert b"Hello" in data and call not in data
    assert call in plan(fmt, "tool", body=request_body(fmt, tools=True)).body()
