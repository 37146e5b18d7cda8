"""Tests for the Anthropic Messages dialect: the stream grammar (rule by rule), its rewrites,
commit gate, synthesised events, and what the official SDK makes of the same bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.protocol.anthropic import DIALECT
from mitmllm.protocol.dialect import INVALID
from mitmllm.protocol.dialect import NO_DATA
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import decode_all
from mitmllm.protocol.stream import check_body
from mitmllm.protocol.stream import check_stream
from tests import anthropic_streams as S
from tests.streamcheck import assert_chunking_invariant
from tests.streamcheck import chunkings
from tests.streamcheck import error_rules
from tests.streamcheck import errors
from tests.streamcheck import findings
from tests.streamcheck import repaired
from tests.streamcheck import rewrote
from tests.streamcheck import rules
from tests.streamcheck import run

TEXT0 = {"type": "text", "text": ""}
DELTA_HI = {
    "type": "content_block_delta",
    "index": 0,
    "delta": {"type": "text_delta", "text": "hi"},
}


def text_delta(index: int, text: str) -> bytes:
    return S.delta(index, {"type": "text_delta", "text": text})


def by_severity(body: bytes, severity: Severity) -> set[str]:
    return {f.rule for f in findings(DIALECT, body) if f.severity == severity}


# --- one failing and one passing stream per error rule ------------------------------------------


@dataclass(frozen=True)
class Case:
    """A stream that breaks `rule` (and no other error rule) and its repaired twin."""

    rule: str
    failing: bytes
    passing: bytes


ERROR_CASES = [
    Case(
        "ANT-1",
        S.message(S.block_start(0, TEXT0) + S.event(None, DELTA_HI) + S.block_stop(0)),
        S.message(S.block_start(0, TEXT0) + text_delta(0, "hi") + S.block_stop(0)),
    ),
    Case(
        "ANT-2",
        S.message(
            S.block_start(0, TEXT0)
            + text_delta(0, "hi")
            + S.event("content_block_stop", {"index": 0})
        ),
        S.message(
            S.block_start(0, TEXT0)
            + text_delta(0, "hi")
            + S.event("content_block_stop", {"type": "content_block_stop", "index": 0})
        ),
    ),
    Case(
        "ANT-4",
        S.text_block(0, "hi") + S.message_delta() + S.STOP,
        S.message_start() + S.text_block(0, "hi") + S.message_delta() + S.STOP,
    ),
    Case(
        "ANT-5",
        S.message_start() + S.message(S.text_block(0, "hi")),
        S.message(S.text_block(0, "hi")),
    ),
    Case(
        "ANT-6",
        S.message_start(content=[{"type": "text", "text": "Hi"}])
        + S.text_block(0, "hi")
        + S.message_delta()
        + S.STOP,
        S.message_start(content=[]) + S.text_block(0, "hi") + S.message_delta() + S.STOP,
    ),
    Case(
        "ANT-7",
        S.message(S.text_block(0, "a"), S.text_block(2, "b")),
        S.message(S.text_block(0, "a"), S.text_block(1, "b")),
    ),
    Case(
        "ANT-9",
        S.message(
            S.block_start(0, TEXT0)
            + text_delta(0, "a")
            + S.block_start(1, TEXT0)
            + S.block_stop(0)
            + text_delta(1, "b")
            + S.block_stop(1)
        ),
        S.message(
            S.block_start(0, TEXT0)
            + text_delta(0, "a")
            + S.block_stop(0)
            + S.block_start(1, TEXT0)
            + text_delta(1, "b")
            + S.block_stop(1)
        ),
    ),
    Case(
        "ANT-10",
        S.message(S.block_start(0, TEXT0) + text_delta(1, "hi") + S.block_stop(0)),
        S.message(S.block_start(0, TEXT0) + text_delta(0, "hi") + S.block_stop(0)),
    ),
    Case(
        "ANT-11",
        S.message(
            S.block_start(0, TEXT0)
            + S.delta(0, {"type": "thinking_delta", "thinking": "x"})
            + S.block_stop(0)
        ),
        S.message(
            S.block_start(0, TEXT0)
            + S.delta(0, {"type": "text_delta", "text": "x"})
            + S.block_stop(0)
        ),
    ),
    Case(
        "ANT-12",
        S.message(S.tool_block(0, "get_weather", "", '{"location": ', "Paris}"), reason="tool_use"),
        S.message(
            S.tool_block(0, "get_weather", "", '{"location": ', '"Paris"}'), reason="tool_use"
        ),
    ),
    Case(
        "ANT-14",
        S.message_start()
        + S.block_start(0, TEXT0)
        + text_delta(0, "hi")
        + S.message_delta()
        + S.STOP,
        S.message_start()
        + S.block_start(0, TEXT0)
        + text_delta(0, "hi")
        + S.block_stop(0)
        + S.message_delta()
        + S.STOP,
    ),
    Case(
        "ANT-15",
        S.message(S.text_block(0, "hi") + S.block_stop(3)),
        S.message(S.text_block(0, "hi")),
    ),
    Case(
        "ANT-16",
        S.message_start() + S.text_block(0, "hi") + S.message_delta(tokens=None) + S.STOP,
        S.message_start() + S.text_block(0, "hi") + S.message_delta(tokens=3) + S.STOP,
    ),
    Case(
        "ANT-18",
        S.message_start() + S.text_block(0, "hi") + S.message_delta(),
        S.message_start() + S.text_block(0, "hi") + S.message_delta() + S.STOP,
    ),
    Case(
        "ANT-19",
        S.message(S.text_block(0, "hi")) + S.message_delta(),
        S.message(S.text_block(0, "hi")) + S.PING,
    ),
    Case(
        "ANT-20",
        S.message_start()
        + S.text_block(0, "hi")
        + DIALECT.error_event("Overloaded", "overloaded_error"),
        S.message(S.text_block(0, "hi")),
    ),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: c.rule)
def test_error_rule_fires_on_failing_stream(case: Case) -> None:
    assert errors(DIALECT, case.failing) == {case.rule}


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: c.rule)
def test_error_rule_quiet_on_passing_stream(case: Case) -> None:
    assert [str(f) for f in findings(DIALECT, case.passing)] == []


def test_every_checked_error_rule_of_the_family_has_a_case() -> None:
    wanted = {
        r.id
        for r in RULES.values()
        if r.family == "ANT" and r.severity == Severity.ERROR and r.checked
    }
    assert wanted - {c.rule for c in ERROR_CASES} == set()


# --- healthy streams ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", S.HEALTHY.values(), ids=S.HEALTHY.keys())
def test_healthy_stream_has_no_errors_or_warnings(body: bytes) -> None:
    checker = run(DIALECT, [body])
    bad = [str(f) for f in checker.findings if f.severity != Severity.INFO]
    assert bad == []
    assert checker.validator is not None
    assert checker.validator.complete


def test_summary_attributes_follow_the_stream() -> None:
    checker = run(DIALECT, [S.TOOL])
    v = checker.validator
    assert v is not None
    assert (v.model, v.finish, v.error, v.complete) == (
        "claude-sonnet-4-5-20250929",
        "tool_use",
        None,
        True,
    )
    failed = run(
        DIALECT, [S.message_start() + DIALECT.error_event("Overloaded", "overloaded_error")]
    )
    v = failed.validator
    assert v is not None
    assert (v.error, v.complete) == ("Overloaded", False)


# --- the rules in more detail -------------------------------------------------------------------


def test_ANT_1_a_data_only_stream_is_reported_per_event_not_as_truncation_only() -> None:
    nameless = b"".join(S.event(None, json.loads(ev.data)) for ev in decode_all(S.TEXT)[0])
    found = findings(DIALECT, nameless)
    assert found.count("ANT-1") == 8
    assert {f.rule for f in found if f.severity == Severity.ERROR} == {"ANT-1", "ANT-18"}


def test_ANT_2_mismatch_is_processed_as_the_data_type() -> None:
    # named content_block_delta, but the data is the stop: the SDK builds a stop from it
    body = S.message(
        S.block_start(0, TEXT0)
        + text_delta(0, "hi")
        + S.event("content_block_delta", {"type": "content_block_stop", "index": 0})
    )
    assert errors(DIALECT, body) == {"ANT-2"}


def test_ANT_2_data_that_is_not_an_object() -> None:
    body = S.message(S.event("ping", "[1]") + S.text_block(0, "hi"))
    assert errors(DIALECT, body) == {"ANT-2"}


def test_ANT_3_unknown_event_is_a_warning() -> None:
    body = S.message(S.event("future_event", {"type": "future_event"}) + S.text_block(0, "hi"))
    assert by_severity(body, Severity.WARNING) == {"ANT-3"}
    assert errors(DIALECT, body) == set()


def test_ANT_3_unknown_delta_type_is_a_warning_not_a_mismatch() -> None:
    body = S.message(
        S.block_start(0, TEXT0)
        + S.delta(0, {"type": "future_delta"})
        + text_delta(0, "hi")
        + S.block_stop(0)
    )
    assert rules(DIALECT, body) == {"ANT-3"}


def test_ANT_4_error_before_message_start_is_not_an_order_error() -> None:
    body = S.PING + DIALECT.error_event("Overloaded", "overloaded_error")
    assert errors(DIALECT, body) == {"ANT-20"}


def test_ANT_5_second_message_start_after_message_stop() -> None:
    body = S.message(S.text_block(0, "a")) + S.message(S.text_block(0, "b"))
    assert errors(DIALECT, body) == {"ANT-5"}


def test_ANT_6_names_each_problem() -> None:
    body = (
        S.message_start(role="user", id="", usage={"input_tokens": 3}) + S.message_delta() + S.STOP
    )
    (finding,) = [f for f in findings(DIALECT, body) if f.rule == "ANT-6"]
    for part in ("role is 'user'", "id is missing", "usage.output_tokens"):
        assert part in finding.message


def test_ANT_7_first_block_at_index_1() -> None:
    assert errors(DIALECT, S.message(S.tool_block(1, "f", "{}"), reason="tool_use")) == {"ANT-7"}


@pytest.mark.parametrize(
    "block",
    [
        {"type": "future_block"},
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
    ],
    ids=["unknown", "text-not-empty", "input-not-empty"],
)
def test_ANT_8_block_starts_are_known_and_empty(block: dict[str, Any]) -> None:
    body = S.message(S.block_start(0, block) + S.block_stop(0))
    assert by_severity(body, Severity.WARNING) == {"ANT-8"}
    assert errors(DIALECT, body) == set()


def test_ANT_10_delta_after_its_block_stopped() -> None:
    body = S.message(S.text_block(0, "hi") + text_delta(0, "late"))
    assert errors(DIALECT, body) == {"ANT-10"}


def test_ANT_11_input_json_for_a_text_block() -> None:
    body = S.message(
        S.block_start(0, TEXT0)
        + S.delta(0, {"type": "input_json_delta", "partial_json": "{}"})
        + S.block_stop(0)
    )
    assert errors(DIALECT, body) == {"ANT-11"}


def test_ANT_12_is_a_warning_when_max_tokens_cut_the_tool_call() -> None:
    found = findings(DIALECT, S.MAX_TOKENS_IN_TOOL)
    assert {(f.rule, f.severity) for f in found} == {
        ("ANT-14", Severity.ERROR),  # the block was never stopped
        ("ANT-12", Severity.WARNING),
    }


def test_ANT_12_stopped_block_waits_for_the_stop_reason() -> None:
    body = S.message(S.tool_block(0, "write_file", '{"path": "a'), reason="max_tokens")
    assert [(f.rule, f.severity) for f in findings(DIALECT, body)] == [("ANT-12", Severity.WARNING)]


def test_ANT_12_is_an_error_when_the_stream_ends_before_a_stop_reason() -> None:
    body = S.message_start() + S.tool_block(0, "f", '{"a": ')
    assert errors(DIALECT, body) == {"ANT-12", "ANT-18"}


@pytest.mark.parametrize(
    ("fragments", "bad"),
    [((), False), (("",), False), (("[1, 2]",), True), (("{}", "{}"), True), (("{}",), False)],
    ids=["no-deltas", "empty", "array", "two-objects", "empty-object"],
)
def test_ANT_12_input_must_be_an_object(fragments: tuple[str, ...], bad: bool) -> None:
    body = S.message(S.tool_block(0, "f", *fragments), reason="tool_use")
    assert errors(DIALECT, body) == ({"ANT-12"} if bad else set())


def test_ANT_13_unsigned_thinking_block() -> None:
    body = S.message(
        S.block_start(0, {"type": "thinking", "thinking": "", "signature": ""})
        + S.delta(0, {"type": "thinking_delta", "thinking": "hmm"})
        + S.block_stop(0)
    )
    assert rules(DIALECT, body) == {"ANT-13"}
    assert by_severity(body, Severity.WARNING) == {"ANT-13"}


def test_ANT_15_second_stop_for_a_block() -> None:
    body = S.message(S.text_block(0, "hi") + S.block_stop(0))
    assert errors(DIALECT, body) == {"ANT-15"}


def test_ANT_12_unfinished_json_is_an_error_the_sdk_does_not_raise() -> None:
    # jiter's partial mode takes the prefix: the client silently runs the tool with {"location":}
    body = S.message(S.tool_block(0, "get_weather", '{"location": "Par'), reason="tool_use")
    assert errors(DIALECT, body) == {"ANT-12"}
    assert sdk_final_message(body).content[0].input == {}


@pytest.mark.parametrize(
    ("ending", "severity"),
    [
        (S.message_delta(None) + S.STOP, Severity.ERROR),
        (S.STOP, Severity.ERROR),
        (S.message_delta("stop_sequence") + S.STOP, Severity.ERROR),
        (S.message_delta(tokens=9) + S.message_delta(tokens=3) + S.STOP, Severity.ERROR),
        (S.message_delta("future_reason") + S.STOP, Severity.WARNING),
        (S.message_delta("end_turn", stop_sequence="\n\nHuman:") + S.STOP, Severity.WARNING),
    ],
    ids=[
        "null-stop-reason",
        "no-message-delta",
        "stop-sequence-missing",
        "usage-decreases",
        "unknown-stop-reason",
        "stray-stop-sequence",
    ],
)
def test_ANT_16_message_delta_requirements(ending: bytes, severity: Severity) -> None:
    body = S.message_start() + S.text_block(0, "hi") + ending
    assert by_severity(body, severity) == {"ANT-16"}
    assert errors(DIALECT, body) == ({"ANT-16"} if severity == Severity.ERROR else set())


def test_ANT_16_multiple_message_deltas_with_the_reason_on_the_last() -> None:
    body = (
        S.message_start()
        + S.text_block(0, "hi")
        + S.message_delta(None, 4)
        + S.message_delta("end_turn", 9)
        + S.STOP
    )
    assert rules(DIALECT, body) == set()


def test_ANT_16_block_after_message_delta() -> None:
    body = S.message_start() + S.message_delta() + S.text_block(0, "hi") + S.STOP
    assert errors(DIALECT, body) == {"ANT-16"}


def test_ANT_17_tool_use_stop_reason_without_a_tool_call() -> None:
    body = S.message(S.text_block(0, "hi"), reason="tool_use")
    assert rules(DIALECT, body) == {"ANT-17"}
    assert by_severity(body, Severity.WARNING) == {"ANT-17"}


def test_ANT_18_second_message_stop() -> None:
    assert errors(DIALECT, S.message(S.text_block(0, "hi")) + S.STOP) == {"ANT-18"}


def test_ANT_18_only_pings() -> None:
    assert errors(DIALECT, S.PING + S.PING) == {"ANT-18"}


def test_ANT_20_is_terminal_and_not_truncation() -> None:
    body = (
        S.message_start()
        + S.block_start(0, TEXT0)
        + DIALECT.error_event("boom")
        + text_delta(5, "ignored")
    )
    checker = run(DIALECT, [body])
    assert {f.rule for f in checker.findings} == {"ANT-20"}
    assert "api_error: boom" in checker.findings.items[0].message


def test_ANT_22_empty_text_block_is_info() -> None:
    body = S.message(S.text_block(0), reason="refusal")
    assert [(f.rule, f.severity) for f in findings(DIALECT, body)] == [("ANT-22", Severity.INFO)]


def test_SSE_13_dataless_ping_is_a_warning() -> None:
    body = (
        S.message_start() + b"event: ping\n\n" + S.text_block(0, "hi") + S.message_delta() + S.STOP
    )
    assert [(f.rule, f.severity) for f in findings(DIALECT, body)] == [("SSE-13", Severity.WARNING)]


def test_SSE_13_dataless_message_stop_is_an_error() -> None:
    body = (
        S.message_start() + S.text_block(0, "hi") + S.message_delta() + b"event: message_stop\n\n"
    )
    assert errors(DIALECT, body) == {"SSE-13", "ANT-18"}


def test_SSE_13_nameless_dataless_block_is_not_reported() -> None:
    ev = Event(0, 0, b"retry: 100\n\n", retry=100)
    assert DIALECT.dataless_severity(ev) is None


# --- chunking invariance ------------------------------------------------------------------------

CHUNKING_BODIES = [*S.HEALTHY.values(), S.MAX_TOKENS_IN_TOOL] + [
    c.failing for c in ERROR_CASES if c.rule in ("ANT-1", "ANT-7", "ANT-12", "ANT-18", "ANT-20")
]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_chunking_invariance(data: st.DataObject) -> None:
    body = data.draw(st.sampled_from(CHUNKING_BODIES))
    assert_chunking_invariant(DIALECT, body, data.draw(chunkings(body)))


# --- what the official SDK does with the same bytes --------------------------------------------


def sdk_final_message(body: bytes) -> Any:
    def respond(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = anthropic.Anthropic(
        api_key="test",
        base_url="http://anthropic.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(respond)),
    )
    with client.messages.stream(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        return stream.get_final_message()


def case(rule: str) -> Case:
    return next(c for c in ERROR_CASES if c.rule == rule)


@pytest.mark.parametrize("body", S.HEALTHY.values(), ids=S.HEALTHY.keys())
def test_sdk_reads_healthy_streams(body: bytes) -> None:
    message = sdk_final_message(body)
    assert message.stop_reason in ("end_turn", "tool_use")
    assert message.content


@pytest.mark.parametrize(
    ("rule", "exc"),
    [
        ("ANT-4", AssertionError),  # no message was ever started
        ("ANT-7", IndexError),
        ("ANT-10", IndexError),
        ("ANT-12", ValueError),
        ("ANT-15", IndexError),
        ("ANT-16", AttributeError),
        ("ANT-20", anthropic.APIStatusError),
    ],
)
def test_sdk_raises_on_failing_stream_and_parses_passing(rule: str, exc: type) -> None:
    with pytest.raises(exc):
        sdk_final_message(case(rule).failing)
    assert sdk_final_message(case(rule).passing).content


def test_sdk_silently_loses_data_ANT_1_ANT_11() -> None:
    for rule in ("ANT-1", "ANT-11"):
        assert sdk_final_message(case(rule).failing).content[0].text == ""
        assert sdk_final_message(case(rule).passing).content[0].text != ""


def test_sdk_returns_a_truncated_stream_as_if_complete_ANT_18() -> None:
    message = sdk_final_message(case("ANT-18").failing)
    assert message.content[0].text == "hi"  # no error: only the validator notices


def test_sdk_raises_on_synthesised_error_event() -> None:
    body = (
        S.message_start()
        + S.text_block(0, "hi")
        + DIALECT.error_event("upstream died", "overloaded_error")
    )
    with pytest.raises(anthropic.APIStatusError) as info:
        sdk_final_message(body)
    assert info.value.type == "overloaded_error"  # type: ignore[attr-defined]
    assert "upstream died" in str(info.value)


def test_sdk_ignores_keepalives() -> None:
    ka = DIALECT.keepalive()
    body = S.message_start() + ka + S.text_block(0, "hi") + ka + S.message_delta() + ka + S.STOP
    assert sdk_final_message(body).content[0].text == "hi"
    assert rules(DIALECT, body) == set()


# --- recognition --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "ours"),
    [
        ("POST", "/v1/messages", True),
        ("POST", "/api/anthropic/v1/messages", True),
        ("POST", "/v1/messages/", True),
        ("post", "/v1/messages", True),
        ("POST", "/v1/messages/count_tokens", False),
        ("GET", "/v1/messages", False),
        ("POST", "/v1/threads/thread_1/messages", False),
        ("POST", "/v1/chat/completions", False),
    ],
)
def test_match_request(method: str, path: str, ours: bool) -> None:
    assert DIALECT.match_request(method, path, {"model": "m", "messages": []}) is ours


@pytest.mark.parametrize(
    ("body", "stream"),
    [
        ({"stream": True}, True),
        ({"stream": False}, False),
        ({}, False),
        (None, False),
        ({"stream": "true"}, False),
    ],
)
def test_wants_stream(body: Any, stream: bool) -> None:
    assert DIALECT.wants_stream("/v1/messages", {}, body) is stream


@pytest.mark.parametrize(
    ("payload", "name", "ours"),
    [
        ({"type": "message_start", "message": {}}, "message_start", True),
        ({"type": "ping"}, "ping", True),
        ({"type": "message_start", "message": {}}, None, True),
        ({"type": "error", "error": {"type": "api_error", "message": "x"}}, "error", True),
        ({"type": "error", "code": "x", "message": "y", "sequence_number": 0}, "error", False),
        ({"type": "response.created", "sequence_number": 0}, "response.created", False),
        ({"object": "chat.completion.chunk", "choices": []}, None, False),
        ({"candidates": []}, None, False),
        ([1], None, False),
    ],
)
def test_match_payload(payload: Any, name: str | None, ours: bool) -> None:
    assert DIALECT.match_payload(payload, name) is ours


# --- rewriting ----------------------------------------------------------------------------------


def test_request_model_and_set_request_model() -> None:
    body = {"model": "claude-sonnet-4-5", "messages": []}
    assert DIALECT.request_model("/v1/messages", body) == "claude-sonnet-4-5"
    path, new = DIALECT.set_request_model("/v1/messages", body, "claude-opus-4-1")
    assert (path, new, body["model"]) == ("/v1/messages", body, "claude-opus-4-1")
    assert DIALECT.request_model("/v1/messages", {"messages": []}) is None


def test_request_tools() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    body = {
        "tools": [
            {"name": "get_weather", "description": "d", "input_schema": schema},
            {"type": "custom", "name": "apply", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            {"description": "no name"},
        ]
    }
    assert [(t.name, t.schema, t.kind) for t in DIALECT.request_tools(body)] == [
        ("get_weather", schema, "custom"),
        ("apply", {"type": "object"}, "custom"),
        ("web_search", None, "web_search_20250305"),
    ]
    assert DIALECT.request_tools({"messages": []}) == []


def first_payload(body: bytes, name: str) -> Any:
    ev = next(e for e in decode_all(body)[0] if e.event == name)
    return json.loads(ev.data)


def test_restamp_stream_and_body() -> None:
    start = first_payload(S.TEXT, "message_start")
    assert rewrote(DIALECT.restamp, start, "claude-opus-4-1") is True
    assert start["message"]["model"] == "claude-opus-4-1"
    assert rewrote(DIALECT.restamp, start, "claude-opus-4-1") is False  # already that model
    body = {"type": "message", "model": "gpt-4o", "content": []}
    assert rewrote(DIALECT.restamp, body, "claude-opus-4-1") is True
    assert body["model"] == "claude-opus-4-1"
    delta = first_payload(S.TEXT, "content_block_delta")
    assert rewrote(DIALECT.restamp, delta, "x") is False
    assert "model" not in delta
    assert rewrote(DIALECT.restamp, INVALID, "x") is False


def test_rename_tools_stream_and_body() -> None:
    names = {"upstream_weather": "get_weather"}
    start = json.loads(
        S.block_start(
            0, {"type": "tool_use", "id": "t", "name": "upstream_weather", "input": {}}
        ).split(b"data: ", 1)[1]
    )
    assert rewrote(DIALECT.rename_tools, start, names) is True
    assert start["content_block"]["name"] == "get_weather"
    assert rewrote(DIALECT.rename_tools, start, names) is False
    body = {
        "type": "message",
        "content": [
            {"type": "text", "text": "upstream_weather"},
            {"type": "tool_use", "id": "a", "name": "upstream_weather", "input": {}},
            {"type": "tool_use", "id": "b", "name": "other", "input": {}},
        ],
    }
    assert rewrote(DIALECT.rename_tools, body, names) is True
    assert [b.get("name") for b in body["content"]] == [None, "get_weather", "other"]
    assert body["content"][0]["text"] == "upstream_weather"
    assert (
        rewrote(DIALECT.rename_tools, first_payload(S.TEXT, "content_block_start"), names) is False
    )


# --- commit gate and synthesis ------------------------------------------------------------------


def is_content(raw: bytes) -> bool:
    (ev,), _ = decode_all(raw)
    payload = json.loads(ev.data) if ev.data is not None else NO_DATA
    return DIALECT.is_content(ev, payload)


@pytest.mark.parametrize(
    ("raw", "content"),
    [
        (S.message_start(), False),
        (S.PING, False),
        (b": keep-alive\n\n", False),
        (S.block_start(0, TEXT0), False),
        (S.block_start(0, {"type": "thinking", "thinking": "", "signature": ""}), False),
        (S.block_start(0, {"type": "tool_use", "id": "t", "name": "f", "input": {}}), False),
        (S.delta(0, {"type": "input_json_delta", "partial_json": ""}), False),
        (text_delta(0, ""), False),
        (DIALECT.error_event("x"), False),
        (S.event("future_event", {"type": "future_event"}), False),
        (S.block_stop(0), False),
        (text_delta(0, "Hi"), True),
        (S.delta(0, {"type": "input_json_delta", "partial_json": "{"}), True),
        (S.delta(0, {"type": "thinking_delta", "thinking": "hmm"}), True),
        (S.delta(0, {"type": "signature_delta", "signature": "Eq"}), True),
        (S.block_start(0, {"type": "redacted_thinking", "data": "EmwK"}), True),
        (
            S.block_start(0, {"type": "web_search_tool_result", "tool_use_id": "s", "content": []}),
            True,
        ),
        (S.block_start(0, {"type": "text", "text": "already"}), True),
        (S.message_delta(), True),
        (S.STOP, True),
    ],
)
def test_is_content(raw: bytes, content: bool) -> None:
    assert is_content(raw) is content


def test_error_event_decodes_to_a_terminal_error() -> None:
    raw = DIALECT.error_event("Overloaded", "overloaded_error")
    (ev,), partial = decode_all(raw)
    assert partial is None and ev.event == "error" and raw.endswith(b"\n\n")
    payload = json.loads(ev.data)
    assert payload == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert DIALECT.error_of(payload) == "Overloaded"
    assert DIALECT.error_event("x").startswith(b"event: error\n")
    assert (
        json.loads(decode_all(DIALECT.error_event("x"))[0][0].data)["error"]["type"] == "api_error"
    )


def test_error_event_survives_line_breaks_in_the_message() -> None:
    raw = DIALECT.error_event("line one\nline two")
    (ev,), _ = decode_all(raw)
    assert json.loads(ev.data)["error"]["message"] == "line one\nline two"


def test_error_body() -> None:
    raw = DIALECT.error_body(529, "Overloaded", "overloaded_error")
    assert json.loads(raw) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    f = Findings()
    check_body(DIALECT, f, status=200, body=raw, content_type="application/json")
    assert f.rules() == ["HTTP-5"]


def test_keepalive_is_a_ping_event() -> None:
    raw = DIALECT.keepalive()
    (ev,), partial = decode_all(raw)
    assert partial is None and ev.event == "ping" and json.loads(ev.data) == {"type": "ping"}
    assert DIALECT.is_content(ev, json.loads(ev.data)) is False


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
            "slow down",
        ),
        ({"type": "error", "error": {"type": "api_error"}, "request_id": "req_1"}, "api_error"),
        ({"error": {"message": "gateway says no", "code": 502}}, "gateway says no"),
        ({"error": "plain string"}, "plain string"),
        ({"type": "message", "content": []}, None),
        ({"type": "message_start", "message": {}}, None),
        ({"type": "response.failed", "error": {"message": "not ours"}}, None),
        ([{"error": "x"}], None),
        (INVALID, None),
    ],
)
def test_error_of(payload: Any, message: str | None) -> None:
    assert DIALECT.error_of(payload) == message


# --- non-streaming responses --------------------------------------------------------------------


def response(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "P"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 20},
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("overrides", "found"),
    [
        ({}, []),
        (
            {"content": [{"type": "tool_use", "id": "t", "name": "f", "input": '{"a":1}'}]},
            [("ANT-12", Severity.ERROR)],
        ),
        (
            {"content": [{"type": "future"}], "stop_reason": "end_turn"},
            [("ANT-8", Severity.WARNING)],
        ),
        ({"stop_reason": None}, [("ANT-16", Severity.ERROR)]),
        ({"stop_reason": "later"}, [("ANT-16", Severity.WARNING)]),
        ({"usage": {"input_tokens": 1}}, [("ANT-16", Severity.ERROR)]),
        ({"content": [{"type": "text", "text": "hi"}]}, [("ANT-17", Severity.WARNING)]),
    ],
    ids=["ok", "ANT-12", "ANT-8", "ANT-16-null", "ANT-16-unknown", "ANT-16-usage", "ANT-17"],
)
def test_check_json_response(overrides: dict[str, Any], found: list[tuple[str, Severity]]) -> None:
    f = Findings()
    DIALECT.check_json_response(200, response(**overrides), f)
    assert [(x.rule, x.severity) for x in f] == found


def test_check_json_response_skips_error_statuses() -> None:
    f = Findings()
    DIALECT.check_json_response(400, json.loads(DIALECT.error_body(400, "bad")), f)
    DIALECT.check_json_response(500, response(stop_reason=None), f)
    assert not f


# --- for humans ---------------------------------------------------------------------------------


def pairs(body: bytes) -> list[tuple[Event, Any]]:
    return check_stream(DIALECT, body)[1]


def test_assemble_tool_stream() -> None:
    msg = DIALECT.assemble(pairs(S.TOOL))
    assert (msg.id, msg.model, msg.stop_reason) == (
        "msg_014p7gG3wDgGV9EUtLvnow3U",
        "claude-sonnet-4-5-20250929",
        "tool_use",
    )
    text, tool = msg.blocks
    assert (text.kind, text.text) == (
        "text",
        "Okay, let's check the weather for San Francisco, CA:",
    )
    assert (tool.kind, tool.name, tool.id) == (
        "tool_call",
        "get_weather",
        "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
    )
    assert tool.input == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert msg.usage == {"input_tokens": 472, "output_tokens": 89}
    assert msg.error is None


def test_assemble_thinking_parallel_and_server_tools() -> None:
    thinking = DIALECT.assemble(pairs(S.THINKING))
    assert [(b.kind, b.text) for b in thinking.blocks] == [
        ("thinking", "The user asks for 27 * 453. 27 * 453 = 12231."),
        ("text", "27 * 453 = **12,231**"),
    ]
    parallel = DIALECT.assemble(pairs(S.PARALLEL_TOOLS))
    assert [(b.name, b.input) for b in parallel.blocks] == [
        ("get_weather", {"location": "Paris"}),
        ("get_time", {"timezone": "Europe/Paris"}),
    ]
    assert parallel.usage["cache_read_input_tokens"] == 512
    server = DIALECT.assemble(pairs(S.SERVER_TOOL))
    assert [(b.kind, b.name) for b in server.blocks] == [
        ("tool_call", "web_search"),
        ("other", "web_search_tool_result"),
        ("text", None),
    ]
    assert server.blocks[0].input == {"query": "weather NYC today"}
    assert server.usage["server_tool_use"] == {"web_search_requests": 1}


def test_assemble_truncated_tool_and_error() -> None:
    msg = DIALECT.assemble(pairs(S.MAX_TOKENS_IN_TOOL))
    assert msg.blocks[0].input is None  # the JSON never completed
    assert msg.blocks[0].text.startswith('{"path": "a.txt"')
    assert msg.stop_reason == "max_tokens"
    failed = DIALECT.assemble(
        pairs(
            S.message_start()
            + S.text_block(0, "par")
            + DIALECT.error_event("Overloaded", "overloaded_error")
        )
    )
    assert (failed.blocks[0].text, failed.error, failed.stop_reason) == ("par", "Overloaded", None)


def test_assemble_non_streaming_body() -> None:
    ev = Event(0, 0, b"")
    msg = DIALECT.assemble([(ev, response())])
    assert [(b.kind, b.name, b.input) for b in msg.blocks] == [
        ("text", None, None),
        ("tool_call", "get_weather", {"city": "P"}),
    ]
    assert (msg.stop_reason, msg.usage["output_tokens"]) == ("tool_use", 20)


def test_summarize() -> None:
    said = [DIALECT.summarize(ev, p) for ev, p in pairs(S.TOOL)]
    assert said[0] == "message_start claude-sonnet-4-5-20250929 msg_014p7gG3wDgGV9EUtLvnow3U"
    assert said[3] == 'text_delta "Okay"'
    assert said[2] == "ping"
    assert said[4] == 'text_delta ", let\'s check the weather for San Franci…"'
    assert "tool_use get_weather #1" in said
    assert said[-2] == "message_delta stop_reason=tool_use output_tokens=89"
    (ev,), _ = decode_all(b": keep-alive\n\n")
    assert DIALECT.summarize(ev, NO_DATA) == ": keep-alive"
    (ev,), _ = decode_all(DIALECT.error_event("Overloaded", "overloaded_error"))
    assert DIALECT.summarize(ev, json.loads(ev.data)) == "error overloaded_error: Overloaded"
    assert DIALECT.summarize(ev, {"type": "message_start", "message": [1]}) == (
        "message_start None None"
    )
    assert all("\n" not in s for s in said)


# --- repairs (MessageStreamMender) ---------------------------------------------------------------


def fix_rules(f: Findings) -> list[str]:
    return [x.rule for x in f if x.rule.startswith("FIX-")]


def test_repair_renumbers_a_first_block_at_index_1_and_its_events() -> None:
    tool = S.tool_block(1, "get_weather", '{"city":', ' "Paris"}')
    broken = S.message(tool, reason="tool_use")
    assert errors(DIALECT, broken) == {"ANT-7"}
    out, upstream, client = repaired(DIALECT, [broken])
    assert out == S.message(
        S.tool_block(0, "get_weather", '{"city":', ' "Paris"}'), reason="tool_use"
    )
    assert fix_rules(upstream) == ["FIX-6"] and list(client) == []


def test_repair_renumbers_a_gap_and_follows_a_reused_index() -> None:
    broken = S.message(S.text_block(0, "a") + S.text_block(2, "b") + S.text_block(2, "c"))
    out, upstream, client = repaired(DIALECT, [broken])
    assert out == S.message(S.text_block(0, "a") + S.text_block(1, "b") + S.text_block(2, "c"))
    assert fix_rules(upstream) == ["FIX-6"] and error_rules(client) == set()


def test_repair_drops_a_message_start_repeated_before_content() -> None:
    first = S.message_start(id="msg_first")
    healthy = S.message(S.text_block(0, "hi"))
    broken = first + S.event("ping", {"type": "ping"}) + healthy
    assert errors(DIALECT, broken) == {"ANT-5"}
    out, upstream, client = repaired(DIALECT, [broken])
    assert out == S.event("ping", {"type": "ping"}) + healthy
    assert fix_rules(upstream) == ["FIX-7"] and list(client) == []


def test_repair_keeps_a_second_message_start_after_content() -> None:
    broken = S.message(S.text_block(0, "hi")) + S.message(S.text_block(0, "again"))
    out, upstream, client = repaired(DIALECT, [broken])
    assert out == broken and fix_rules(upstream) == []
    assert "ANT-5" in error_rules(client)


def test_repair_closes_open_blocks_and_adds_message_stop_after_a_stop_reason() -> None:
    start = S.message_start() + S.block_start(0, TEXT0) + text_delta(0, "hi")
    broken = start + S.message_delta("end_turn")
    assert errors(DIALECT, broken) == {"ANT-14", "ANT-18"}
    out, upstream, client = repaired(DIALECT, [broken])
    assert out == start + S.block_stop(0) + S.message_delta("end_turn") + S.event(
        "message_stop", {"type": "message_stop"}
    )
    assert fix_rules(upstream) == ["FIX-8", "FIX-9"] and list(client) == []


def test_repair_adds_no_message_stop_without_a_stop_reason() -> None:
    """A stream cut before message_delta is truncated: mending it would make up the reason."""
    broken = S.message_start() + S.text_block(0, "hi")
    out, upstream, client = repaired(DIALECT, [broken])
    assert out == broken and fix_rules(upstream) == []
    assert "ANT-18" in error_rules(client)


def test_repair_adds_no_message_stop_after_an_error() -> None:
    broken = (
        S.message_start()
        + S.message_delta("end_turn")
        + S.event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "x"}})
    )
    out, upstream, _ = repaired(DIALECT, [broken])
    assert out == broken and fix_rules(upstream) == []


def test_repair_drops_a_cut_final_event_when_it_adds_message_stop() -> None:
    complete = S.message(S.text_block(0, "hi"))
    stop = S.event("message_stop", {"type": "message_stop"})
    broken = complete[: -len(stop)] + stop[:20]
    out, upstream, client = repaired(DIALECT, [broken])
    assert out == complete and list(client) == []
    assert "dropped" in next(f.message for f in upstream if f.rule == "FIX-9")


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_repair_never_crashes_and_never_invents_text(data: st.DataObject) -> None:
    """Any mix of events in one message: the repairer gives the same text as the upstream, or
    less of it (a second message_start, ANT-5, makes the SDKs merge two messages their own way)."""
    parts = data.draw(st.lists(st.sampled_from(FUZZ_EVENTS), max_size=10))
    body = S.message_start() + b"".join(parts)
    out, _, _ = repaired(DIALECT, data.draw(chunkings(body)))
    assert DIALECT.assemble(decode_pairs(out)).blocks == [] or _texts(out) <= _texts(body)


FUZZ_EVENTS = [
    S.block_start(0, TEXT0),
    S.block_start(1, TEXT0),
    text_delta(0, "a"),
    text_delta(1, "b"),
    S.block_stop(0),
    S.block_stop(1),
    S.message_delta("end_turn"),
    S.message_delta(None),
    S.event("message_stop", {"type": "message_stop"}),
    S.event("ping", {"type": "ping"}),
    b"event: content_block_delta\n: keep-alive\n\n",
    b": keep-alive\n\n",
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"c"}}\n\n',
]


def decode_pairs(body: bytes) -> list[tuple[Event, Any]]:
    return list(check_stream(DIALECT, body)[1])


def _texts(body: bytes) -> set[str]:
    return set(b.text for b in DIALECT.assemble(decode_pairs(body)).blocks if b.text)


def test_token_counts_beyond_64_bits_are_integers_not_a_finding() -> None:
    # orjson reads such a literal as a float; the SDKs' models still take it as an int.
    huge = b"123456789012345678901234567890"
    body = S.TEXT.replace(b'"output_tokens":15', b'"output_tokens":' + huge)
    body = body.replace(b'"input_tokens":25', b'"input_tokens":' + huge)
    assert body.count(huge) >= 2
    assert errors(DIALECT, body) == set()
    assert not {"ANT-6", "ANT-16"} & rules(DIALECT, body)
