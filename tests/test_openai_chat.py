"""The OpenAI Chat Completions dialect: recognition, the OAI-* state machine, rewrites,
commit detection, synthesised events, and what the official openai SDK does with the streams."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.protocol import sse as codec
from mitmllm.protocol.dialect import INVALID
from mitmllm.protocol.dialect import NO_DATA
from mitmllm.protocol.dialect import SENTINEL
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.openai_chat import DIALECT
from mitmllm.protocol.openai_chat import ChatStreamValidator
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.stream import check_body
from mitmllm.protocol.stream import check_stream
from tests.openai_chat_streams import DONE
from tests.openai_chat_streams import HEALTHY
from tests.openai_chat_streams import MODEL
from tests.openai_chat_streams import N3_REQUEST
from tests.openai_chat_streams import NO_USAGE_REQUEST
from tests.openai_chat_streams import PARALLEL_TOOL_CALLS
from tests.openai_chat_streams import REASONING
from tests.openai_chat_streams import STREAM_REQUEST
from tests.openai_chat_streams import TEXT
from tests.openai_chat_streams import TOOL_CALL
from tests.openai_chat_streams import USAGE
from tests.openai_chat_streams import choice
from tests.openai_chat_streams import chunk
from tests.openai_chat_streams import finish
from tests.openai_chat_streams import one
from tests.openai_chat_streams import role
from tests.openai_chat_streams import sse
from tests.openai_chat_streams import text
from tests.openai_chat_streams import tool_args
from tests.openai_chat_streams import tool_start
from tests.openai_chat_streams import usage_chunk
from tests.streamcheck import assert_chunking_invariant
from tests.streamcheck import chunkings
from tests.streamcheck import error_rules
from tests.streamcheck import errors
from tests.streamcheck import findings
from tests.streamcheck import repaired
from tests.streamcheck import rewrote

CALL = "call_JMW1whyEaYG438VE1OIflxA2"


def warnings(body: bytes, request: Any = STREAM_REQUEST) -> set[str]:
    return {f.rule for f in findings(DIALECT, body, request) if f.severity == "warning"}


def raw_event(payload: dict[str, Any], event: str) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode()


def tool_stream(*frags: dict[str, Any], end: str = "tool_calls") -> bytes:
    return sse(one({"role": "assistant", "content": None}), *frags, finish(end), usage_chunk())


# --- every error rule: a minimal failing stream and its passing counterpart --------------------


@dataclass(frozen=True)
class Case:
    rule: str
    name: str
    bad: bytes
    good: bytes
    expected: frozenset[str]  # the error rules the bad stream fires
    request: Any = None

    @property
    def id(self) -> str:
        return f"{self.rule}-{self.name}"


def case(
    rule: str, name: str, bad: bytes, good: bytes, *also: str, request: Any = STREAM_REQUEST
) -> Case:
    return Case(rule, name, bad, good, frozenset({rule, *also}), request)


ERROR_CASES = [
    case(
        "SSE-13",
        "event-without-data",
        sse(role(), text("Hi"), b"event: ping\n\n", finish(), usage_chunk()),
        sse(role(), text("Hi"), b": ping\n\n", finish(), usage_chunk()),
        "OAI-1",
    ),
    case(
        "OAI-1",
        "empty-data",
        sse(role(), b"data:\n\n", text("Hi"), finish(), usage_chunk()),
        sse(role(), text("Hi"), finish(), usage_chunk()),
        "PAY-1",
    ),
    case(
        "OAI-1",
        "id-only-block",
        sse(role(), text("Hi"), b"id: 7\n\n", finish(), usage_chunk()),
        sse(role(), text("Hi"), finish(), usage_chunk()),
        "SSE-13",
    ),
    case(
        "OAI-2",
        "thread-event-name",
        sse(role(), raw_event(text("Hi"), "thread.message.delta"), finish(), usage_chunk()),
        sse(role(), text("Hi"), finish(), usage_chunk()),
    ),
    case("OAI-3", "no-done", TEXT.removesuffix(DONE), TEXT),
    case("OAI-3", "done-unterminated", TEXT[:-1], TEXT, "SSE-14"),
    case(
        "OAI-3",
        "lowercase-done",
        TEXT.removesuffix(DONE) + b"data: [done]\n\n",
        TEXT,
        "PAY-1",
        "OAI-17",
    ),
    case(
        "OAI-5",
        "id-changes",
        sse(role(), text("Hi", 0) | {"id": "chatcmpl-other"}, finish(), usage_chunk()),
        sse(role(), text("Hi"), finish(), usage_chunk()),
    ),
    case(
        "OAI-5",
        "created-changes",
        sse(role(), text("Hi") | {"created": 1728312399}, finish(), usage_chunk()),
        sse(role(), text("Hi"), finish(), usage_chunk()),
    ),
    case(
        "OAI-5",
        "wrong-object",
        sse(role() | {"object": "chat.completion"}, text("Hi"), finish(), usage_chunk()),
        sse(role(), text("Hi"), finish(), usage_chunk()),
    ),
    case(
        "OAI-5",
        "not-an-object",
        sse(role(), "[1, 2]", text("Hi"), finish(), usage_chunk()),
        sse(role(), text("Hi"), finish(), usage_chunk()),
    ),
    case(
        "OAI-6",
        "choices-null",
        sse(role(), chunk(None), text("Hi"), finish(), usage_chunk()),
        sse(role(), chunk([]), text("Hi"), finish(), usage_chunk()),
    ),
    case(
        "OAI-6",
        "choice-without-delta",
        sse(role(), chunk([{"index": 0, "finish_reason": None}]), finish(), usage_chunk()),
        sse(role(), chunk([choice({})]), finish(), usage_chunk()),
    ),
    case(
        "OAI-6",
        "index-beyond-n",
        sse(role(), role(1), text("Hi"), finish(), finish("stop", 1), usage_chunk()),
        sse(role(), text("Hi"), finish(), usage_chunk()),
    ),
    case(
        "OAI-8",
        "choice-1-first",
        sse(role(1), role(0), finish("stop", 0), finish("stop", 1), usage_chunk()),
        sse(role(0), role(1), finish("stop", 0), finish("stop", 1), usage_chunk()),
        request={**STREAM_REQUEST, "n": 2},
    ),
    case(
        "OAI-9",
        "name-repeated",
        tool_stream(
            tool_start(0, CALL, "get_weather"),
            one({"tool_calls": [{"index": 0, "function": {"name": "get_weather"}}]}),
            tool_args(0, "{}"),
        ),
        tool_stream(tool_start(0, CALL, "get_weather"), tool_args(0, "{}")),
    ),
    case(
        "OAI-9",
        "id-repeated",
        tool_stream(
            tool_start(0, CALL, "get_weather"),
            one({"tool_calls": [{"index": 0, "id": CALL, "function": {"arguments": "{}"}}]}),
        ),
        tool_stream(tool_start(0, CALL, "get_weather"), tool_args(0, "{}")),
    ),
    case(
        "OAI-9",
        "never-an-id",
        tool_stream(
            one({"tool_calls": [{"index": 0, "type": "function", "function": {"name": "f"}}]}),
            tool_args(0, "{}"),
        ),
        tool_stream(tool_start(0, CALL, "f"), tool_args(0, "{}")),
    ),
    case(
        "OAI-9",
        "no-type",
        tool_stream(
            one({"tool_calls": [{"index": 0, "id": CALL, "function": {"name": "f"}}]}),
            tool_args(0, "{}"),
        ),
        tool_stream(tool_start(0, CALL, "f"), tool_args(0, "{}")),
    ),
    case(
        "OAI-10",
        "first-index-1",
        tool_stream(tool_start(1, CALL, "get_weather"), tool_args(1, "{}")),
        tool_stream(tool_start(0, CALL, "get_weather"), tool_args(0, "{}")),
    ),
    case(
        "OAI-10",
        "identity-changes",
        tool_stream(
            tool_start(0, CALL, "get_weather", "{}"),
            tool_start(0, "call_other", "get_time", "{}"),
        ),
        tool_stream(
            tool_start(0, CALL, "get_weather", "{}"),
            tool_start(1, "call_other", "get_time", "{}"),
        ),
    ),
    case(
        "OAI-12",
        "arguments-cut",
        tool_stream(tool_start(0, CALL, "get_weather"), tool_args(0, '{"city": "Par')),
        tool_stream(tool_start(0, CALL, "get_weather"), tool_args(0, '{"city": "Paris"}')),
    ),
    case(
        "OAI-12",
        "arguments-array",
        tool_stream(tool_start(0, CALL, "get_weather"), tool_args(0, '["Paris"]')),
        tool_stream(tool_start(0, CALL, "get_weather"), tool_args(0, '{"city": "Paris"}')),
    ),
    case(
        "OAI-13",
        "no-finish",
        sse(role(), text("Hi"), usage_chunk()),
        sse(role(), text("Hi"), finish(), usage_chunk()),
    ),
    case(
        "OAI-13",
        "unknown-finish",
        sse(role(), text("Hi"), finish("eos"), usage_chunk()),
        sse(role(), text("Hi"), finish("stop"), usage_chunk()),
    ),
    case(
        "OAI-13",
        "output-after-finish",
        sse(role(), finish(), text("Hi"), usage_chunk()),
        sse(role(), text("Hi"), finish(), usage_chunk()),
    ),
    case(
        "OAI-13",
        "finishes-twice-differently",
        sse(role(), text("Hi"), finish("length"), finish("stop"), usage_chunk()),
        sse(role(), text("Hi"), finish("length"), usage_chunk()),
    ),
    case(
        "OAI-15",
        "usage-missing",
        sse(role(), text("Hi"), finish()),
        sse(role(), text("Hi"), finish(), usage_chunk()),
    ),
    case(
        "OAI-15",
        "usage-not-last",
        sse(role(), text("Hi"), usage_chunk(), finish()),
        sse(role(), text("Hi"), finish(), usage_chunk()),
    ),
    case(
        "OAI-15",
        "usage-without-counts",
        sse(role(), text("Hi"), finish(), usage_chunk({"prompt_tokens": 3})),
        sse(role(), text("Hi"), finish(), usage_chunk()),
    ),
    case(
        "OAI-16",
        "error-chunk",
        sse(
            role(),
            text("Hi"),
            {
                "error": {
                    "message": "The server had an error",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
        sse(role(), text("Hi"), finish(), usage_chunk()),
    ),
    case(
        "OAI-17",
        "rewrapped-comment",
        sse(role(), b"data: : OPENROUTER PROCESSING\n\n", text("Hi"), finish(), usage_chunk()),
        sse(role(), b": OPENROUTER PROCESSING\n\n", text("Hi"), finish(), usage_chunk()),
        "SSE-8",
        "PAY-1",
    ),
]


@pytest.mark.parametrize("c", ERROR_CASES, ids=lambda c: c.id)
def test_error_rule_fires_on_bad_stream_only(c: Case) -> None:
    assert errors(DIALECT, c.bad, c.request) == c.expected
    assert errors(DIALECT, c.good, c.request) == set()


def test_every_error_rule_of_the_family_has_a_case() -> None:
    wanted = {
        r.id
        for r in RULES.values()
        if r.family == "OAI" and r.severity == Severity.ERROR and r.checked
    }
    wanted.add("SSE-13")  # as it applies to chat streams: every data-less block is an error
    assert wanted <= {c.rule for c in ERROR_CASES}


# --- warnings: tolerated by the SDKs, but worth flagging ----------------------------------------

AZURE_FILTER = {"hate": {"filtered": False, "severity": "safe"}}
AZURE = sse(
    chunk(
        [],
        id="",
        created=0,
        model="",
        object="",
        system_fingerprint=None,
        prompt_filter_results=[{"prompt_index": 0, "content_filter_results": AZURE_FILTER}],
    ),
    role(),
    chunk([choice({"content": "Hi"}) | {"content_filter_results": AZURE_FILTER}]),
    finish(),
    chunk(
        [
            {
                "index": 0,
                "finish_reason": None,
                "content_filter_results": AZURE_FILTER,
                "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 2},
            }
        ],
        id="",
        created=0,
        model="",
        object="",
    ),
    usage_chunk(),
)

WARNING_CASES = [
    pytest.param(
        sse(role(), raw_event(text("Hi"), "message"), finish(), usage_chunk()),
        {"OAI-2"},
        set(),
        id="OAI-2-event-name",
    ),
    pytest.param(
        TEXT.removesuffix(DONE) + b"data: [DONE] \n\n",
        {"OAI-3"},
        {"PAY-1"},
        id="OAI-3-sentinel-variant",
    ),
    pytest.param(TEXT + b"data: [DONE]\n\n", {"OAI-4"}, set(), id="OAI-4-after-done"),
    pytest.param(AZURE, {"OAI-5"}, set(), id="OAI-5-azure-annotations"),
    pytest.param(
        sse(role(), text("Hi") | {"model": "gpt-4o-mini"}, finish(), usage_chunk()),
        {"OAI-5"},
        set(),
        id="OAI-5-model-changes",
    ),
    pytest.param(sse(text("Hi"), finish(), usage_chunk()), {"OAI-7"}, set(), id="OAI-7-no-role"),
    pytest.param(
        tool_stream(
            one({"tool_calls": [{"index": 0, "id": CALL, "type": "function"}]}),
            one({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}),
        ),
        {"OAI-9"},
        set(),
        id="OAI-9-id-and-name-split",
    ),
    pytest.param(
        tool_stream(
            tool_start(0, CALL, "f", "{"), tool_start(1, "call_2", "g", "{}"), tool_args(0, "}")
        ),
        {"OAI-11"},
        set(),
        id="OAI-11-interleaved",
    ),
    pytest.param(
        tool_stream(tool_start(0, CALL, "get_ipinfo")),
        {"OAI-12"},
        set(),
        id="OAI-12-empty-arguments",
    ),
    pytest.param(
        tool_stream(tool_start(0, CALL, "f", '{"a": "b'), end="length"),
        {"OAI-12"},
        set(),
        id="OAI-12-cut-by-length",
    ),
    pytest.param(
        tool_stream(tool_start(0, CALL, "f", "{}"), end="stop"),
        {"OAI-13"},
        set(),
        id="OAI-13-stop-after-tool-calls",
    ),
    pytest.param(
        sse(role(), text("Hi"), finish(), finish(), usage_chunk()),
        {"OAI-13"},
        set(),
        id="OAI-13-same-finish-twice",
    ),
    pytest.param(
        tool_stream(tool_start(0, CALL, "f", "{}"), text("Done.")),
        {"OAI-14"},
        set(),
        id="OAI-14-content-after-tools",
    ),
    pytest.param(
        sse(role(), text("Hi"), finish(), chunk(None, usage=USAGE)),
        {"OAI-15"},
        set(),
        id="OAI-15-vllm-choices-null",
    ),
    pytest.param(
        sse(role(), text("Hi"), finish() | {"usage": USAGE}),
        {"OAI-15"},
        set(),
        id="OAI-15-usage-on-last-content-chunk",
    ),
]


@pytest.mark.parametrize(("body", "warned", "errored"), WARNING_CASES)
def test_warning_rule(body: bytes, warned: set[str], errored: set[str]) -> None:
    assert warnings(body) == warned
    assert errors(DIALECT, body, STREAM_REQUEST) == errored


def test_OAI_5_azure_annotations_are_reported_once() -> None:
    assert findings(DIALECT, AZURE, STREAM_REQUEST).count("OAI-5") == 1


def test_OAI_16_failed_stream_is_not_also_truncated() -> None:
    body = sse(role(), text("Hi"), {"error": {"message": "overloaded"}}, done=False)
    f, _, checker = check_stream(DIALECT, body, request=STREAM_REQUEST)
    assert f.rules() == ["OAI-16"]
    v = checker.validator
    assert v is not None and v.error == "overloaded" and not v.complete


def test_OAI_3_truncation_is_reported_at_the_end() -> None:
    body = TEXT.removesuffix(DONE)
    f = findings(DIALECT, body, STREAM_REQUEST)
    (oai3,) = [x for x in f if x.rule == "OAI-3"]
    assert oai3.offset == len(body)
    assert "after finish_reason 'stop'" in oai3.message


def test_OAI_15_usage_not_required_without_include_usage() -> None:
    body = sse(role(), text("Hi"), finish())
    assert errors(DIALECT, body, NO_USAGE_REQUEST) == set()
    assert errors(DIALECT, body, None) == set()  # request unknown


# --- healthy streams --------------------------------------------------------------------------


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_stream_has_no_errors_or_warnings(name: str) -> None:
    body, request = HEALTHY[name]
    f = findings(DIALECT, body, request)
    assert [str(x) for x in f if x.severity != "info"] == []


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_stream_summary(name: str) -> None:
    body, request = HEALTHY[name]
    _, _, checker = check_stream(DIALECT, body, request=request)
    v = checker.validator
    assert v is not None
    assert (v.model, v.complete, v.error) == (MODEL, True, None)
    assert v.finish in ("stop", "tool_calls")


# --- chunking invariance ----------------------------------------------------------------------

CHUNKED = [
    (TOOL_CALL, STREAM_REQUEST),
    (PARALLEL_TOOL_CALLS.replace(b"\n", b"\r\n"), STREAM_REQUEST),
    (HEALTHY["n3"][0], N3_REQUEST),
    *[
        (c.bad, c.request)
        for c in ERROR_CASES
        if c.name
        in (
            "done-unterminated",
            "rewrapped-comment",
            "event-without-data",
            "name-repeated",
            "error-chunk",
            "usage-not-last",
        )
    ],
]


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_chunking_invariance(data: st.DataObject) -> None:
    body, request = data.draw(st.sampled_from(CHUNKED))
    assert_chunking_invariant(DIALECT, body, data.draw(chunkings(body)), request)


# --- the official SDK reading the same bytes --------------------------------------------------


def sdk_client(body: bytes) -> openai.OpenAI:
    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    http = httpx2.Client(transport=httpx2.MockTransport(reply))
    return openai.OpenAI(
        api_key="sk-test", base_url="http://upstream.test/v1", http_client=http, max_retries=0
    )


def sdk_final(body: bytes) -> Any:
    """What openai-python's `chat.completions.stream()` accumulates, or the exception it raises."""
    try:
        with sdk_client(body).chat.completions.stream(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            return stream.get_final_completion()
    except Exception as e:
        return e


def sdk_chunks(body: bytes) -> list[Any] | Exception:
    """What a plain `create(stream=True)` loop sees."""
    try:
        return list(
            sdk_client(body).chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    except Exception as e:
        return e


def bad(case_id: str) -> bytes:
    return next(c.bad for c in ERROR_CASES if c.id == case_id)


SDK_EFFECTS: list[Any] = [
    pytest.param("SSE-13-event-without-data", json.JSONDecodeError, id="SSE-13"),
    pytest.param("OAI-17-rewrapped-comment", json.JSONDecodeError, id="OAI-17"),
    pytest.param("OAI-16-error-chunk", openai.APIError, id="OAI-16"),
    pytest.param("OAI-10-first-index-1", IndexError, id="OAI-10"),
    pytest.param("OAI-8-choice-1-first", IndexError, id="OAI-8"),
    pytest.param("OAI-6-choices-null", TypeError, id="OAI-6-choices-null"),
    pytest.param("OAI-6-choice-without-delta", AttributeError, id="OAI-6-no-delta"),
]


@pytest.mark.parametrize(("case_id", "exc"), SDK_EFFECTS)
def test_sdk_raises_on_the_bad_stream(case_id: str, exc: type[Exception]) -> None:
    c = next(c for c in ERROR_CASES if c.id == case_id)
    assert isinstance(sdk_final(c.bad), exc)
    assert not isinstance(sdk_final(c.good), Exception)


def test_OAI_9_repeated_name_is_concatenated_by_the_sdk() -> None:
    calls = sdk_final(bad("OAI-9-name-repeated")).choices[0].message.tool_calls
    assert calls[0].function.name == "get_weatherget_weather"


def test_OAI_3_sdk_ends_quietly_on_a_truncated_stream() -> None:
    completion = sdk_final(bad("OAI-3-no-done"))
    assert not isinstance(completion, Exception)  # silent: only the validator notices
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == USAGE["total_tokens"]
    cut = TEXT[: TEXT.index(b'"finish_reason":"stop"')]
    cut = cut[: cut.rindex(b"\n\n") + 2]
    assert sdk_final(cut).choices[0].finish_reason is None
    assert "OAI-3" in errors(DIALECT, cut, STREAM_REQUEST)


def test_OAI_15_usage_before_the_last_chunk_is_lost_by_the_sdk() -> None:
    assert sdk_final(bad("OAI-15-usage-not-last")).usage is None
    good = next(c.good for c in ERROR_CASES if c.id == "OAI-15-usage-not-last")
    assert sdk_final(good).usage.total_tokens == USAGE["total_tokens"]


@pytest.mark.parametrize("name", ["text", "tool-call", "parallel-tool-calls", "refusal"])
def test_assemble_matches_the_sdk(name: str) -> None:
    body, request = HEALTHY[name]
    _, pairs, _ = check_stream(DIALECT, body, request=request)
    ours = DIALECT.assemble(pairs)
    theirs = sdk_final(body)
    msg = theirs.choices[0].message
    assert ours.stop_reason == theirs.choices[0].finish_reason
    assert ours.model == theirs.model and ours.id == theirs.id
    assert ours.usage["total_tokens"] == theirs.usage.total_tokens
    assert "".join(b.text for b in ours.blocks if b.kind == "text") == (msg.content or "")
    assert "".join(b.text for b in ours.blocks if b.kind == "refusal") == (msg.refusal or "")
    calls = [(b.id, b.name, b.input) for b in ours.blocks if b.kind == "tool_call"]
    assert calls == [
        (t.id, t.function.name, json.loads(t.function.arguments)) for t in msg.tool_calls or []
    ]


# --- synthesis ----------------------------------------------------------------------------------


def test_error_event_is_one_terminal_data_event() -> None:
    raw = DIALECT.error_event("upstream died", "server_error")
    events, partial = codec.decode_all(raw)
    assert partial is None and len(events) == 1
    ev = events[0]
    assert ev.event is None and ev.raw == raw
    payload = json.loads(ev.data or "")
    assert payload == {
        "error": {"message": "upstream died", "type": "server_error", "param": None, "code": None}
    }
    assert DIALECT.error_of(payload) == "upstream died"
    assert b"[DONE]" not in raw


def test_error_event_after_content_fails_the_stream_for_validator_and_sdk() -> None:
    body = sse(role(), text("Hel"), done=False) + DIALECT.error_event("upstream died")
    f, _, checker = check_stream(DIALECT, body, request=STREAM_REQUEST)
    assert f.rules() == ["OAI-16"]
    assert checker.validator is not None and checker.validator.error == "upstream died"
    chunks = sdk_chunks(body)
    assert isinstance(chunks, openai.APIError) and chunks.message == "upstream died"


def test_error_body() -> None:
    body = DIALECT.error_body(529, "all upstreams failed", "overloaded_error")
    payload = json.loads(body)
    assert payload["error"]["type"] == "overloaded_error"
    assert payload["error"]["param"] is None and payload["error"]["code"] is None
    assert DIALECT.error_of(payload) == "all upstreams failed"


def test_error_body_is_raised_by_the_sdk_as_the_status_error() -> None:
    body = DIALECT.error_body(503, "no upstream left")

    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(503, headers={"content-type": "application/json"}, content=body)

    client = openai.OpenAI(
        api_key="sk-test",
        base_url="http://upstream.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(reply)),
    )
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 503 and "no upstream left" in e.value.message


def test_keepalive_is_a_comment_the_stream_ignores() -> None:
    ka = DIALECT.keepalive()
    assert ka is not None
    events, partial = codec.decode_all(ka)
    assert partial is None and [e.is_comment for e in events] == [True]
    blocks = TEXT.split(b"\n\n")
    body = (b"\n\n" + ka).join(blocks[:3]) + b"\n\n" + b"\n\n".join(blocks[3:])
    assert body.count(ka) == 2
    assert [f for f in findings(DIALECT, body, STREAM_REQUEST) if f.severity != "info"] == []
    assert sdk_final(body).choices[0].message.content == sdk_final(TEXT).choices[0].message.content


# --- error_of -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"error": {"message": "Rate limit", "type": "rate_limit_error"}}, "Rate limit"),
        ({"error": {"message": "", "type": "server_error", "code": None}}, "server_error"),
        ({"error": "upstream timeout"}, "upstream timeout"),
        ({"object": "error", "message": "model not found", "code": 404}, "model not found"),
        ({"error": None, **text("Hi")}, None),
        (text("Hi"), None),
        ([1, 2], None),
        (SENTINEL, None),
    ],
)
def test_error_of(payload: Any, message: str | None) -> None:
    assert DIALECT.error_of(payload) == message


# --- recognition --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "ok"),
    [
        ("POST", "/v1/chat/completions", True),
        ("POST", "/api/openai/v1/chat/completions", True),
        ("POST", "/openai/deployments/gpt-4o/chat/completions", True),
        ("POST", "/chat/completions/", True),
        ("post", "/v1/chat/completions", True),
        ("GET", "/v1/chat/completions", False),
        ("POST", "/v1/completions", False),
        ("POST", "/v1/responses", False),
        ("POST", "/v1/chat/completions/chatcmpl-123", False),
        ("POST", "/v1/messages", False),
    ],
)
def test_match_request(method: str, path: str, ok: bool) -> None:
    assert DIALECT.match_request(method, path, {"model": "m", "messages": []}) is ok


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ({"stream": True}, True),
        ({"stream": False}, False),
        ({}, False),
        ({"stream": "true"}, False),
        (None, False),
    ],
)
def test_wants_stream(body: Any, ok: bool) -> None:
    assert DIALECT.wants_stream("/v1/chat/completions", {}, body) is ok


@pytest.mark.parametrize(
    ("payload", "event", "ok"),
    [
        (role(), None, True),
        (json.loads(AZURE.split(b"\n\n")[0].removeprefix(b"data: ")), None, True),
        ({"id": "x", "choices": [{"index": 0, "delta": {"content": "a"}}]}, None, True),
        (
            {"type": "response.created", "sequence_number": 0, "response": {}},
            "response.created",
            False,
        ),
        ({"type": "message_start", "message": {}}, "message_start", False),
        ({"candidates": [{"content": {"parts": [{"text": "a"}]}}]}, None, False),
        ({"error": {"message": "x"}}, None, False),
        (SENTINEL, None, False),
    ],
)
def test_match_payload(payload: Any, event: str | None, ok: bool) -> None:
    assert DIALECT.match_payload(payload, event) is ok


def test_request_model() -> None:
    body = {"model": "gpt-4o", "messages": []}
    assert DIALECT.request_model("/v1/chat/completions", body) == "gpt-4o"
    path, new = DIALECT.set_request_model("/v1/chat/completions", body, "deepseek-chat")
    assert path == "/v1/chat/completions" and new is body and body["model"] == "deepseek-chat"
    assert DIALECT.request_model("/v1/chat/completions", {"messages": []}) is None


def test_request_tools() -> None:
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    body = {
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": params}},
            {"type": "custom", "custom": {"name": "apply_patch", "format": {"type": "text"}}},
            {"type": "function"},
            "junk",
        ],
        "functions": [{"name": "legacy", "parameters": {"type": "object", "properties": {}}}],
    }
    tools = DIALECT.request_tools(body)
    assert [(t.name, t.kind) for t in tools] == [
        ("get_weather", "function"),
        ("apply_patch", "custom"),
        ("legacy", "function"),
    ]
    assert tools[0].schema == params
    assert DIALECT.request_tools({"messages": []}) == [] and DIALECT.request_tools(None) == []


# --- rewrites -----------------------------------------------------------------------------------


def test_restamp_stream_chunk_and_completion() -> None:
    c = text("Hi")
    assert rewrote(DIALECT.restamp, c, "claude-via-proxy") is True
    assert c["model"] == "claude-via-proxy"
    assert rewrote(DIALECT.restamp, c, "claude-via-proxy") is False
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [],
    }
    assert (
        rewrote(DIALECT.restamp, completion, "gpt-4o") is True and completion["model"] == "gpt-4o"
    )


def test_restamp_leaves_annotations_and_errors_alone() -> None:
    annotation = chunk([], id="", created=0, model="", object="", prompt_filter_results=[])
    assert rewrote(DIALECT.restamp, annotation, "gpt-4o") is False and annotation["model"] == ""
    err = {"error": {"message": "x"}}
    assert rewrote(DIALECT.restamp, err, "gpt-4o") is False and "model" not in err
    assert rewrote(DIALECT.restamp, SENTINEL, "gpt-4o") is False


def test_restamped_stream_validates() -> None:
    _, pairs, _ = check_stream(DIALECT, TEXT, request=STREAM_REQUEST)
    changed = [rewrote(DIALECT.restamp, p, "alias") for _, p in pairs]
    assert changed.count(True) == 7  # every chunk incl. the usage chunk; not [DONE]
    body = b"".join(
        ev.with_data(json.dumps(p)).raw if isinstance(p, dict) else ev.raw for ev, p in pairs
    )
    _, _, checker = check_stream(DIALECT, body, request=STREAM_REQUEST)
    assert checker.validator is not None and checker.validator.model == "alias"
    assert checker.findings.rules() == []


def test_rename_tools_in_stream_fragments() -> None:
    names = {"mcp__weather__get": "get_weather"}
    first = tool_start(0, CALL, "mcp__weather__get")
    assert rewrote(DIALECT.rename_tools, first, names) is True
    assert first["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert rewrote(DIALECT.rename_tools, first, names) is False
    assert rewrote(DIALECT.rename_tools, tool_args(0, "{}"), names) is False
    assert rewrote(DIALECT.rename_tools, text("mcp__weather__get"), names) is False
    legacy = one({"function_call": {"name": "mcp__weather__get", "arguments": ""}})
    assert rewrote(DIALECT.rename_tools, legacy, names) is True
    assert legacy["choices"][0]["delta"]["function_call"]["name"] == "get_weather"


def test_rename_tools_in_a_completion() -> None:
    completion = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "up_a", "arguments": "{}"},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "keep", "arguments": "{}"},
                        },
                    ],
                },
            }
        ],
    }
    assert rewrote(DIALECT.rename_tools, completion, {"up_a": "a"}) is True
    calls = completion["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["a", "keep"]
    assert rewrote(DIALECT.rename_tools, completion, {}) is False


# --- commit gate --------------------------------------------------------------------------------


def _ev(payload: Any) -> codec.Event:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return codec.parse_block(codec.encode(data), 0, 0)


@pytest.mark.parametrize(
    ("payload", "content"),
    [
        pytest.param(role(), False, id="role-only"),
        pytest.param(one({"role": "assistant", "content": None}), False, id="role-null-content"),
        pytest.param(AZURE.split(b"\n\n")[0], False, id="azure-annotation"),
        pytest.param({"error": {"message": "x"}}, False, id="error"),
        pytest.param(text(""), False, id="empty-text"),
        pytest.param(text("Hi"), True, id="text"),
        pytest.param(one({"reasoning_content": "hmm"}), True, id="reasoning"),
        pytest.param(one({"refusal": "No."}), True, id="refusal"),
        pytest.param(tool_start(0, CALL, "f"), True, id="tool-call"),
        pytest.param(finish(), True, id="finish"),
        pytest.param(usage_chunk(), True, id="usage"),
    ],
)
def test_is_content(payload: Any, content: bool) -> None:
    if isinstance(payload, bytes):
        payload = json.loads(payload.removeprefix(b"data: "))
    assert DIALECT.is_content(_ev(payload), payload) is content


@pytest.mark.parametrize("marker", [NO_DATA, SENTINEL, INVALID])
def test_is_content_false_for_non_json(marker: Any) -> None:
    ev = codec.parse_block(b": keep-alive\n\n", 0, 0)
    assert DIALECT.is_content(ev, marker) is False


def test_commit_happens_at_the_first_output_chunk() -> None:
    _, pairs, _ = check_stream(DIALECT, TOOL_CALL, request=STREAM_REQUEST)
    first = next(i for i, (ev, p) in enumerate(pairs) if DIALECT.is_content(ev, p))
    assert first == 1  # after the role-only chunk, at the tool call's first fragment


# --- for humans ---------------------------------------------------------------------------------


def test_assemble_parallel_tool_calls() -> None:
    _, pairs, _ = check_stream(DIALECT, PARALLEL_TOOL_CALLS, request=STREAM_REQUEST)
    a = DIALECT.assemble(pairs)
    assert [(b.kind, b.name, b.input) for b in a.blocks] == [
        ("tool_call", "get_weather", {"city": "Edinburgh"}),
        ("tool_call", "get_stock_price", {"ticker": "AAPL", "exchange": "NASDAQ"}),
    ]
    assert a.stop_reason == "tool_calls" and a.usage == USAGE and a.error is None


def test_assemble_reasoning_and_choices() -> None:
    _, pairs, _ = check_stream(DIALECT, REASONING, request=STREAM_REQUEST)
    a = DIALECT.assemble(pairs)
    assert [(b.kind, b.text) for b in a.blocks] == [
        ("thinking", "The user asks for 2+2. That is 4."),
        ("text", "2 + 2 = 4"),
    ]
    body, request = HEALTHY["n3"]
    _, pairs, _ = check_stream(DIALECT, body, request=request)
    a = DIALECT.assemble(pairs)
    assert [(b.choice, b.text) for b in a.blocks] == [(0, "Paris!"), (1, "Lyon"), (2, "Nice")]
    assert a.stop_reason == "stop"


def test_assemble_failed_stream_and_broken_arguments() -> None:
    body = sse(
        role(), tool_start(0, CALL, "f", '{"a": '), {"error": {"message": "overloaded"}}, done=False
    )
    _, pairs, _ = check_stream(DIALECT, body, request=STREAM_REQUEST)
    a = DIALECT.assemble(pairs)
    assert a.error == "overloaded" and a.stop_reason is None
    assert [(b.name, b.text, b.input) for b in a.blocks] == [("f", '{"a": ', None)]


def test_summarize() -> None:
    s = DIALECT.summarize
    assert s(_ev(role()), role()) == "role assistant"
    assert s(_ev(text("Hello world, how are you")), text("Hello world, how are you today")) == (
        'content "Hello world, how are you…"'
    )
    assert s(_ev(tool_start(1, CALL, "get_weather")), tool_start(1, CALL, "get_weather")) == (
        "tool_call get_weather #1"
    )
    assert s(_ev(tool_args(0, '{"a"')), tool_args(0, '{"a"')) == 'tool_args #0 "{"a""'
    assert s(_ev(finish()), finish()) == "finish stop"
    assert s(_ev(usage_chunk()), usage_chunk()) == "usage 76+24=100"
    assert s(_ev(text("x", 2)), text("x", 2)) == '[2] content "x"'
    assert s(_ev({"error": {"message": "boom"}}), {"error": {"message": "boom"}}) == 'error "boom"'
    assert s(codec.parse_block(b"data: [DONE]\n\n", 0, 0), SENTINEL) == "[DONE]"
    assert s(codec.parse_block(b": keep-alive\n\n", 0, 0), NO_DATA) == ": keep-alive"


# --- non-streaming responses --------------------------------------------------------------------


def completion(*tool_calls: dict[str, Any], finish_reason: str = "tool_calls") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": list(tool_calls),
                },
            }
        ],
        "usage": USAGE,
    }


def fn_call(args: str, name: str = "get_weather") -> dict[str, Any]:
    return {"id": CALL, "type": "function", "function": {"name": name, "arguments": args}}


def json_findings(payload: Any, status: int = 200) -> list[tuple[str, str]]:
    f = Findings()
    check_body(
        DIALECT,
        f,
        status=status,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        request={"model": "gpt-4o"},
    )
    return [(x.rule, str(x.severity)) for x in f]


def test_check_json_response() -> None:
    assert json_findings(completion(fn_call('{"city": "Paris"}'))) == []
    assert json_findings(completion(fn_call('{"city": '))) == [("OAI-12", "error")]
    assert json_findings(
        completion(
            fn_call(
                '{"city": ',
            ),
            finish_reason="length",
        )
    ) == [("OAI-12", "warning")]
    assert json_findings(completion(fn_call(""))) == [("OAI-12", "warning")]
    assert json_findings(completion(fn_call("{}", name=""))) == [("OAI-9", "error")]
    broken = completion()
    broken["choices"][0].pop("message")
    assert json_findings(broken) == [("OAI-6", "error")]


def test_check_json_response_error_bodies() -> None:
    err = json.loads(DIALECT.error_body(500, "boom"))
    assert json_findings(err, 200) == [("HTTP-5", "error")]  # an error wrapped in a 200
    assert json_findings(err, 500) == []


def test_validator_from_request() -> None:
    assert DIALECT.validator(STREAM_REQUEST).include_usage is True
    assert DIALECT.validator(NO_USAGE_REQUEST).include_usage is False
    assert DIALECT.validator(N3_REQUEST).n == 3
    assert DIALECT.validator(None).n is None and DIALECT.validator(None).include_usage is None
    assert isinstance(DIALECT.validator(), ChatStreamValidator)
    ev = codec.parse_block(b"event: ping\n\n", 0, 0)
    assert DIALECT.dataless_severity(ev) == Severity.ERROR


def test_name_and_sentinel() -> None:
    assert (DIALECT.name, DIALECT.sentinel) == ("openai-chat", "[DONE]")


# --- robustness: whatever the upstream sends, nothing raises ----------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def or_junk(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, strategy, JSON)


def fields(**optional: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: or_junk(v) for k, v in optional.items()})


FRAGMENT = fields(
    index=st.integers(0, 2),
    id=st.sampled_from(["call_1", "call_2"]),
    type=st.just("function"),
    function=fields(name=st.sampled_from(["f", "up_f"]), arguments=st.sampled_from(["{", "}", ""])),
)
DELTA = fields(
    role=st.just("assistant"),
    content=st.text(max_size=3),
    refusal=st.text(max_size=3),
    reasoning_content=st.text(max_size=3),
    tool_calls=st.lists(FRAGMENT, max_size=2),
    function_call=fields(name=st.just("up_f"), arguments=st.text(max_size=2)),
    audio=fields(data=st.text(max_size=2), expires_at=st.integers()),
)
CHOICE = fields(
    index=st.integers(0, 2),
    delta=DELTA,
    message=DELTA,
    finish_reason=st.sampled_from([None, "stop", "tool_calls", "length"]),
    logprobs=st.none(),
    content_filter_results=st.just({}),
)
CHUNK = fields(
    id=st.sampled_from(["chatcmpl-1", ""]),
    object=st.sampled_from(["chat.completion.chunk", "chat.completion", "", "error"]),
    created=st.integers(0, 1),
    model=st.sampled_from([MODEL, ""]),
    choices=st.lists(CHOICE, max_size=3),
    usage=st.just(USAGE),
    error=fields(message=st.text(max_size=3), type=st.just("server_error")),
    prompt_filter_results=st.just([]),
    message=st.text(max_size=3),
)
REQUEST = st.one_of(
    st.none(), JSON, fields(n=st.integers(1, 3), stream_options=fields(include_usage=st.booleans()))
)


@settings(max_examples=200, deadline=None)
@given(payloads=st.lists(or_junk(CHUNK), max_size=6), done=st.booleans(), request=REQUEST)
def test_no_payload_crashes_the_dialect(payloads: list[Any], done: bool, request: Any) -> None:
    body = b"".join(codec.encode(json.dumps(p)) for p in payloads) + (DONE if done else b"")
    f, pairs, checker = check_stream(DIALECT, body, request=request)
    assert all(x.rule.startswith(("OAI-", "SSE-", "PAY-")) for x in f), f.summary()
    DIALECT.assemble(pairs)
    for ev, p in pairs:
        DIALECT.is_content(ev, p)
        DIALECT.summarize(ev, p)
        DIALECT.error_of(p)
        rewrote(DIALECT.rename_tools, p, {"up_f": "f"})
        rewrote(DIALECT.restamp, p, "alias")
        DIALECT.check_json_response(200, p, Findings(), request)
    DIALECT.request_tools(request)


# --- repairs (ChatMender) ------------------------------------------------------------------------


def fix_rules(f: Findings) -> list[str]:
    return [x.rule for x in f if x.rule.startswith("FIX-")]


def test_repair_adds_done_after_every_choice_finished() -> None:
    out, upstream, client = repaired(DIALECT, [TEXT[: -len(DONE)]], STREAM_REQUEST)
    assert out == TEXT
    assert fix_rules(upstream) == ["FIX-10"] and list(client) == []


def test_repair_adds_no_done_to_a_stream_cut_before_its_finish() -> None:
    cut = sse(role(), text("The"), done=False)
    out, upstream, client = repaired(DIALECT, [cut], STREAM_REQUEST)
    assert out == cut and fix_rules(upstream) == []
    assert "OAI-3" in error_rules(client)


def test_repair_adds_no_done_while_a_choice_of_n_is_open() -> None:
    cut = sse(role(0), role(1), finish("stop", 0), done=False)
    out, upstream, _ = repaired(DIALECT, [cut], {**STREAM_REQUEST, "n": 2})
    assert out == cut and fix_rules(upstream) == []


def test_repair_adds_no_done_after_an_error_chunk() -> None:
    failed = sse(
        role(), finish(), {"error": {"message": "boom", "type": "server_error"}}, done=False
    )
    out, upstream, _ = repaired(DIALECT, [failed], STREAM_REQUEST)
    assert out == failed and fix_rules(upstream) == []


def test_repair_renumbers_tool_calls_from_zero() -> None:
    broken = sse(
        role(),
        tool_start(1, "call_a", "get_weather"),
        tool_args(1, '{"city":"Paris"}'),
        tool_start(3, "call_b", "get_time"),
        tool_args(3, "{}"),
        finish("tool_calls"),
        usage_chunk(),
    )
    assert errors(DIALECT, broken, STREAM_REQUEST) == {"OAI-10"}
    out, upstream, client = repaired(DIALECT, [broken], STREAM_REQUEST)
    assert out == sse(
        role(),
        tool_start(0, "call_a", "get_weather"),
        tool_args(0, '{"city":"Paris"}'),
        tool_start(1, "call_b", "get_time"),
        tool_args(1, "{}"),
        finish("tool_calls"),
        usage_chunk(),
    )
    assert fix_rules(upstream) == ["FIX-11", "FIX-11"] and list(client) == []


def test_repair_gives_a_new_call_at_a_used_index_its_own_number() -> None:
    broken = sse(
        role(),
        tool_start(0, "call_a", "f", "{}"),
        tool_start(0, "call_b", "g", "{}"),
        finish("tool_calls"),
        usage_chunk(),
    )
    out, upstream, client = repaired(DIALECT, [broken], STREAM_REQUEST)
    assert b'"index":1,"id":"call_b"' in out
    assert fix_rules(upstream) == ["FIX-11"] and error_rules(client) == set()


@settings(max_examples=100, deadline=None)
@given(payloads=st.lists(or_junk(CHUNK), max_size=6), done=st.booleans(), request=REQUEST)
def test_no_payload_crashes_the_repairer(payloads: list[Any], done: bool, request: Any) -> None:
    body = b"".join(codec.encode(json.dumps(p)) for p in payloads) + (DONE if done else b"")
    out, upstream, _ = repaired(DIALECT, [body], request)
    assert out == body or fix_rules(upstream)
