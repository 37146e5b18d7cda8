"""The OpenAI Responses dialect: its validator (RSP-*), rewrites, commit gate and synthesis.

Broken streams are healthy ones (tests/openai_responses_streams.py) with one thing changed; where
cheap, the official openai SDK reads the same body through an httpx MockTransport to show what a
client does with it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import orjson
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.protocol.dialect import NO_DATA
from mitmllm.protocol.dialect import SENTINEL
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.openai_responses import DIALECT
from mitmllm.protocol.openai_responses import ResponsesValidator
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import decode_all
from mitmllm.protocol.stream import check_stream
from tests import openai_responses_streams as S
from tests.streamcheck import assert_chunking_invariant
from tests.streamcheck import chunkings
from tests.streamcheck import error_rules
from tests.streamcheck import errors
from tests.streamcheck import findings
from tests.streamcheck import repaired
from tests.streamcheck import rewrote

Payloads = list[dict[str, Any]]


def edited(stream: Callable[[], Payloads], edit: Callable[[Payloads], Any]) -> bytes:
    """The body of `stream()` after `edit` changed its payload list in place."""
    payloads = stream()
    edit(payloads)
    return S.body(payloads)


def edited_numbered(stream: Callable[[], Payloads], edit: Callable[[Payloads], Any]) -> bytes:
    """Like `edited`, but the edit sees (and may break) the sequence numbers."""
    payloads = S.number(stream())
    edit(payloads)
    return S.body(payloads, renumber=False)


def at(etype: str, nth: int = 0, **changes: Any) -> Callable[[Payloads], None]:
    """An edit that updates the `nth` payload of type `etype`."""

    def edit(p: Payloads) -> None:
        p[S.find(p, etype, nth)].update(changes)

    return edit


def warnings(body: bytes) -> set[str]:
    return {f.rule for f in findings(DIALECT, body) if f.severity == "warning"}


HEALTHY_TEXT = S.body(S.text_stream())
HEALTHY_TOOL = S.body(S.tool_stream())
DELTA = "response.output_text.delta"
ITEM_DONE = "response.output_item.done"


# --- building the broken streams ------------------------------------------------------------------


def drop_seq(p: Payloads) -> None:
    del p[S.find(p, DELTA)]["sequence_number"]


def repeat_seq(p: Payloads) -> None:
    i = S.find(p, DELTA, 1)
    p[i]["sequence_number"] = p[i - 1]["sequence_number"]


def second_created(p: Payloads) -> None:
    p.insert(2, copy.deepcopy(p[0]))


def first_item_at_1(p: Payloads) -> None:
    for q in p:
        if q.get("output_index") == 0:
            q["output_index"] = 1


def same_call_id(p: Payloads) -> None:
    cid = p[S.find(p, "response.output_item.added", 0)]["item"]["call_id"]
    for q in p:
        item = q.get("item")
        if isinstance(item, dict) and item.get("id", "").endswith("0001"):
            item["call_id"] = cid
    for item in p[-1]["response"]["output"]:
        if item["id"].endswith("0001"):
            item["call_id"] = cid


def args_into_message(p: Payloads) -> None:
    delta = p[S.find(p, DELTA)]
    p.insert(
        S.find(p, DELTA) + 1,
        {
            "type": "response.function_call_arguments.delta",
            "item_id": delta["item_id"],
            "output_index": 0,
            "delta": '{"',
        },
    )


def delta_after_item_done(p: Payloads) -> None:
    p.insert(S.find(p, ITEM_DONE) + 1, copy.deepcopy(p[S.find(p, DELTA)]))


def event_after_terminal(p: Payloads) -> None:
    p.append(copy.deepcopy(p[1]))


def unfinished_item(p: Payloads) -> None:
    del p[S.find(p, ITEM_DONE)]
    p[-1]["response"]["output"] = []


def failed(p: Payloads, error: dict[str, Any] | None = None) -> None:
    """The stream ends in response.failed instead of completing."""
    p[-1] = S.closing([], "response.failed", usage=None, error=error)


def inband_error(nested: bool) -> bytes:
    p = S.text_stream()[:6]
    err: dict[str, Any] = {
        "type": "error",
        "code": "server_error",
        "message": "The server had an error",
        "param": None,
    }
    if nested:
        err = {
            "type": "error",
            "error": {
                "type": "server_error",
                "code": "server_error",
                "message": "The server had an error",
                "param": None,
            },
        }
        return S.body(p + [err])
    end = S.closing(
        [],
        "response.failed",
        usage=None,
        error={"code": "server_error", "message": "The server had an error"},
    )
    return S.body(p + [err, end])


def done_before_terminal() -> bytes:
    p = S.text_stream()
    return S.splice(p, len(p) - 1, b"data: [DONE]\n\n")


def done_after_terminal() -> bytes:
    return HEALTHY_TEXT + b"data: [DONE]\n\n"


def dataless_event() -> bytes:
    return S.splice(S.text_stream(), 4, b"event: response.output_text.delta\n\n")


def comment_between_events() -> bytes:
    return S.splice(S.text_stream(), 4, b": keep-alive\n\n")


def broken_args(status: str = "completed") -> bytes:
    events, final = S.function_call(0, "get_weather", ['{"city": ', '"Par'])
    if status == "incomplete":
        events[-1]["item"]["status"] = final["status"] = "incomplete"
        return S.body(
            S.opening()
            + events
            + [
                S.closing(
                    [final],
                    "response.incomplete",
                    incomplete_details={"reason": "max_output_tokens"},
                )
            ]
        )
    return S.body(S.opening() + events + [S.closing([final])])


# (failing body, passing body, the error rules the failing body fires)
ERROR_TABLE = [
    pytest.param(
        edited_numbered(S.text_stream, drop_seq),
        HEALTHY_TEXT,
        {"RSP-2"},
        id="RSP-2-no-sequence-number",
    ),
    pytest.param(
        S.splice(S.text_stream(), 3, b"event: response.output_text.delta\ndata: [1]\n\n"),
        HEALTHY_TEXT,
        {"RSP-2"},
        id="RSP-2-array-payload",
    ),
    pytest.param(
        edited_numbered(S.text_stream, repeat_seq),
        HEALTHY_TEXT,
        {"RSP-3"},
        id="RSP-3-repeated-sequence-number",
    ),
    pytest.param(
        edited(S.text_stream, lambda p: p.pop(0)),
        HEALTHY_TEXT,
        {"RSP-4"},
        id="RSP-4-no-response-created",
    ),
    pytest.param(
        edited(S.text_stream, second_created),
        HEALTHY_TEXT,
        {"RSP-4"},
        id="RSP-4-second-response-created",
    ),
    pytest.param(
        edited(S.text_stream, at("response.in_progress", response=S.response(id="resp_other"))),
        HEALTHY_TEXT,
        {"RSP-4"},
        id="RSP-4-response-id-changes",
    ),
    pytest.param(
        edited(S.text_stream, first_item_at_1), HEALTHY_TEXT, {"RSP-5"}, id="RSP-5-output-index-gap"
    ),
    pytest.param(
        S.body(S.assemble(S.message(0, ["Hi"], msg_id=""))),
        HEALTHY_TEXT,
        {"RSP-5"},
        id="RSP-5-item-without-id",
    ),
    pytest.param(
        edited(S.parallel_tool_stream, same_call_id),
        S.body(S.parallel_tool_stream()),
        {"RSP-5"},
        id="RSP-5-duplicate-call-id",
    ),
    pytest.param(
        edited(S.text_stream, at(DELTA, output_index=5)),
        HEALTHY_TEXT,
        {"RSP-6"},
        id="RSP-6-unknown-output-index",
    ),
    pytest.param(
        edited(S.text_stream, at(DELTA, item_id="msg_other")),
        HEALTHY_TEXT,
        {"RSP-6"},
        id="RSP-6-wrong-item-id",
    ),
    pytest.param(
        edited(S.text_stream, args_into_message),
        HEALTHY_TEXT,
        {"RSP-6"},
        id="RSP-6-wrong-item-type",
    ),
    pytest.param(
        edited(S.text_stream, at(DELTA, content_index=1)),
        HEALTHY_TEXT,
        {"RSP-7"},
        id="RSP-7-delta-for-missing-part",
    ),
    pytest.param(
        edited(S.text_stream, at("response.content_part.added", content_index=1)),
        HEALTHY_TEXT,
        {"RSP-7"},
        id="RSP-7-part-added-out-of-order",
    ),
    pytest.param(
        edited(S.reasoning_stream, at("response.reasoning_summary_text.delta", summary_index=2)),
        S.body(S.reasoning_stream()),
        {"RSP-7"},
        id="RSP-7-missing-summary-part",
    ),
    pytest.param(
        edited(
            S.text_stream, at(ITEM_DONE, item={"id": "msg_other", "type": "message", "content": []})
        ),
        HEALTHY_TEXT,
        {"RSP-8"},
        id="RSP-8-item-identity-changes",
    ),
    pytest.param(
        edited(S.text_stream, delta_after_item_done),
        HEALTHY_TEXT,
        {"RSP-9"},
        id="RSP-9-delta-after-output-item-done",
    ),
    pytest.param(
        edited(S.text_stream, event_after_terminal),
        HEALTHY_TEXT,
        {"RSP-9"},
        id="RSP-9-event-after-terminal",
    ),
    pytest.param(
        edited(S.text_stream, lambda p: p[-1]["response"].update(status="in_progress")),
        HEALTHY_TEXT,
        {"RSP-10"},
        id="RSP-10-status-mismatch",
    ),
    pytest.param(
        edited(S.text_stream, lambda p: p[-1]["response"].update(output=None)),
        HEALTHY_TEXT,
        {"RSP-10"},
        id="RSP-10-completed-without-output",
    ),
    pytest.param(
        edited(S.text_stream, lambda p: p[-1]["response"].update(usage=None)),
        HEALTHY_TEXT,
        {"RSP-10"},
        id="RSP-10-completed-without-usage",
    ),
    pytest.param(
        edited(S.text_stream, unfinished_item),
        HEALTHY_TEXT,
        {"RSP-10"},
        id="RSP-10-unfinished-item",
    ),
    pytest.param(
        edited(S.tool_stream, lambda p: p.pop(S.find(p, ITEM_DONE, 1))),
        HEALTHY_TOOL,
        {"RSP-10"},
        id="RSP-10-item-never-done-but-listed",
    ),
    pytest.param(
        edited(S.text_stream, lambda p: p.append(copy.deepcopy(p[-1]))),
        HEALTHY_TEXT,
        {"RSP-10"},
        id="RSP-10-two-terminals",
    ),
    pytest.param(
        edited(S.text_stream, failed),
        edited(
            S.text_stream,
            lambda p: failed(p, {"code": "server_error", "message": "The model crashed"}),
        ),
        {"RSP-10"},
        id="RSP-10-failed-without-error",
    ),
    pytest.param(
        edited(S.text_stream, lambda p: p.pop()), HEALTHY_TEXT, {"RSP-11"}, id="RSP-11-no-terminal"
    ),
    pytest.param(S.body(S.text_stream()[:5]), HEALTHY_TEXT, {"RSP-11"}, id="RSP-11-cut-mid-item"),
    pytest.param(
        inband_error(nested=True), HEALTHY_TEXT, {"RSP-12"}, id="RSP-12-nested-error-event"
    ),
    pytest.param(
        inband_error(nested=False), HEALTHY_TEXT, {"RSP-12"}, id="RSP-12-flat-error-then-failed"
    ),
    pytest.param(
        S.body(S.text_stream()[:4]) + b'data: {"error":{"message":"overloaded"}}\n\n',
        HEALTHY_TEXT,
        {"RSP-12"},
        id="RSP-12-bare-error-object",
    ),
    pytest.param(
        done_before_terminal(), done_after_terminal(), {"RSP-13"}, id="RSP-13-done-before-terminal"
    ),
    pytest.param(broken_args(), HEALTHY_TOOL, {"OAI-12"}, id="OAI-12-arguments-not-json"),
    pytest.param(
        dataless_event(), comment_between_events(), {"SSE-13"}, id="SSE-13-event-without-data"
    ),
]


@pytest.mark.parametrize(("failing", "passing", "expected"), ERROR_TABLE)
def test_error_rules(failing: bytes, passing: bytes, expected: set[str]) -> None:
    assert errors(DIALECT, failing) == expected
    assert errors(DIALECT, passing) == set()


def rule_of(param: Any) -> str:
    """The rule ID a table entry's id starts with ("RSP-7-delta-..." -> "RSP-7")."""
    family, number, _what = str(param.id).split("-", 2)
    return f"{family}-{number}"


def test_every_error_rule_of_the_family_has_a_table_entry() -> None:
    covered = {rule_of(p) for p in ERROR_TABLE}
    required = {
        r.id
        for r in RULES.values()
        if r.family == "RSP" and r.severity == Severity.ERROR and r.checked
    }
    assert required <= covered, f"no failing stream for {sorted(required - covered)}"


# --- healthy streams ------------------------------------------------------------------------------


def padded(payloads: Payloads) -> bytes:
    """Spaces after ':' and ',' and a different key order: JSON text is never byte-matched."""
    out = []
    for p in S.number(payloads):
        data = json.dumps(dict(reversed(list(p.items()))))
        out.append(f"event: {p['type']}\ndata: {data}\n\n".encode())
    return b"".join(out)


HEALTHY_BODIES = [
    *(pytest.param(S.body(fn()), id=name) for name, fn in S.HEALTHY.items()),
    pytest.param(S.body(S.reasoning_stream(), eol="\r\n"), id="crlf"),
    pytest.param(padded(S.tool_stream()), id="padded-json"),
    pytest.param(S.splice(S.text_stream(), 4, b": keep-alive\n\n"), id="keep-alive-comment"),
    pytest.param(
        S.splice(S.text_stream(), 2, S.encode({"type": "keepalive"})), id="keepalive-event"
    ),
]


@pytest.mark.parametrize("body", HEALTHY_BODIES)
def test_healthy_streams_have_no_errors_or_warnings(body: bytes) -> None:
    fs = findings(DIALECT, body)
    assert [f for f in fs if f.severity != Severity.INFO] == []


@pytest.mark.parametrize("name", list(S.HEALTHY))
def test_healthy_streams_fill_the_summary(name: str) -> None:
    _f, _pairs, checker = check_stream(DIALECT, S.body(S.HEALTHY[name]()))
    v = checker.validator
    assert isinstance(v, ResponsesValidator)
    assert v.model == S.MODEL
    assert v.complete and v.error is None
    assert v.finish == ("max_output_tokens" if name == "incomplete" else "completed")
    assert v.next_sequence == len(S.HEALTHY[name]())


def test_summary_of_failed_and_truncated_streams() -> None:
    *_, broken = check_stream(DIALECT, inband_error(nested=False))
    assert broken.validator is not None
    assert (broken.validator.finish, broken.validator.complete) == ("failed", False)
    assert broken.validator.error == "The server had an error"
    *_, cut = check_stream(DIALECT, S.body(S.text_stream()[:5]))
    assert cut.validator is not None
    assert (cut.validator.finish, cut.validator.complete, cut.validator.error) == (
        None,
        False,
        None,
    )


# --- warnings and per-instance severities ---------------------------------------------------------


def test_RSP_1_missing_or_mismatched_event_names_warn() -> None:
    nameless = b"".join(S.encode(p, name=None) for p in S.number(S.text_stream()))
    assert warnings(nameless) == {"RSP-1"} and errors(DIALECT, nameless) == set()
    p = S.number(S.text_stream())
    renamed = (
        S.body(p[:3], renumber=False)
        + S.encode(p[3], name="message")
        + S.body(p[4:], renumber=False)
    )
    assert warnings(renamed) == {"RSP-1"} and errors(DIALECT, renamed) == set()


def test_RSP_3_gaps_and_a_late_start_warn() -> None:
    def gap(p: Payloads) -> None:
        for q in p[4:]:
            q["sequence_number"] += 3

    def late(p: Payloads) -> None:
        for q in p:
            q["sequence_number"] += 7

    for body in (edited_numbered(S.text_stream, gap), edited_numbered(S.text_stream, late)):
        assert warnings(body) == {"RSP-3"} and errors(DIALECT, body) == set()


def test_RSP_8_done_values_that_differ_from_the_deltas_warn() -> None:
    for etype, field in (
        ("response.output_text.done", "text"),
        ("response.content_part.done", "part"),
    ):
        value: Any = S.text_part("Goodbye") if field == "part" else "Goodbye"
        body = edited(S.text_stream, at(etype, **{field: value}))
        assert warnings(body) == {"RSP-8"} and errors(DIALECT, body) == set()
    args = edited(
        S.tool_stream, at("response.function_call_arguments.done", arguments='{"city":"Rome"}')
    )
    assert warnings(args) == {"RSP-8"}
    renamed = edited(S.tool_stream, at("response.function_call_arguments.done", name="other"))
    assert warnings(renamed) == {"RSP-8"}


def test_RSP_13_done_after_the_terminal_is_only_a_warning() -> None:
    fs = findings(DIALECT, done_after_terminal())
    assert [(f.rule, f.severity) for f in fs] == [("RSP-13", Severity.WARNING)]


def test_RSP_14_unknown_event_types_warn() -> None:
    body = edited(S.text_stream, lambda p: p.insert(3, {"type": "response.mystery"}))
    assert warnings(body) == {"RSP-14"} and errors(DIALECT, body) == set()


def test_OAI_12_arguments_cut_by_max_output_tokens_only_warn() -> None:
    fs = findings(DIALECT, broken_args("incomplete"))
    assert [(f.rule, f.severity) for f in fs] == [("OAI-12", Severity.WARNING)]


def test_SSE_13_a_bare_event_field_is_not_dispatched_by_the_sdks() -> None:
    body = S.splice(S.text_stream(), 4, b"event:\n\n")
    assert "SSE-13" not in {f.rule for f in findings(DIALECT, body)}


@pytest.mark.parametrize(
    "failing",
    [pytest.param(p.values[0], id=p.id) for p in ERROR_TABLE if rule_of(p) in ("RSP-6", "RSP-7")],
)
def test_a_misrouted_event_is_not_blamed_again_as_RSP_8(failing: bytes) -> None:
    # The validator drops the misrouted delta; the .done text then differs from its own
    # accumulation, not from what the server sent.
    assert warnings(failing) == set()


def test_a_stream_of_comments_only_is_empty_and_truncated() -> None:
    assert errors(DIALECT, b": keep-alive\n\n: keep-alive\n\n") == {"SSE-15", "RSP-11"}
    assert errors(DIALECT, b"data: [DONE]\n\n") == {"SSE-15", "RSP-11", "RSP-13"}


def test_an_error_as_the_first_event_is_a_failure_not_a_misordered_stream() -> None:
    error_first = S.body(
        [{"type": "error", "code": "rate_limit_exceeded", "message": "Slow down", "param": None}]
    )
    assert errors(DIALECT, error_first) == {"RSP-12"}
    assert errors(DIALECT, DIALECT.error_event("Slow down", sequence_number=0)) == {"RSP-12"}


def test_findings_point_at_the_event() -> None:
    body = edited(S.text_stream, at(DELTA, 1, item_id="msg_other"))
    (f,) = findings(DIALECT, body).by_severity(Severity.ERROR)
    events, _ = decode_all(body)
    ev = events[S.find(S.text_stream(), DELTA, 1)]
    assert (f.rule, f.event, f.offset) == ("RSP-6", ev.index, ev.offset)
    assert "msg_other" in f.message


# --- what the official SDK does with the same bodies ----------------------------------------------


def sdk(body: bytes, status: int = 200, content_type: str = "text/event-stream") -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers={"content-type": content_type}, content=body)

    return openai.OpenAI(
        api_key="test",
        base_url="http://upstream.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def final_response(body: bytes) -> Any:
    with sdk(body).responses.stream(model="gpt-5", input="hi") as stream:
        return stream.get_final_response()


SDK_TABLE = [
    pytest.param(
        edited(S.text_stream, lambda p: p.pop(0)),
        RuntimeError,
        "Expected to have received `response.created`",
        id="RSP-4",
    ),
    pytest.param(
        edited(S.text_stream, at(DELTA, output_index=5)),
        RuntimeError,
        "before receiving its output item",
        id="RSP-6",
    ),
    pytest.param(edited(S.text_stream, args_into_message), AssertionError, None, id="RSP-6-type"),
    pytest.param(edited(S.text_stream, at(DELTA, content_index=1)), IndexError, None, id="RSP-7"),
    pytest.param(
        edited(
            S.text_stream, at(ITEM_DONE, item={"id": "msg_other", "type": "message", "content": []})
        ),
        RuntimeError,
        "identity changed",
        id="RSP-8",
    ),
    pytest.param(
        edited(S.text_stream, unfinished_item), RuntimeError, "unfinished output items", id="RSP-10"
    ),
    pytest.param(
        edited(S.text_stream, lambda p: p.pop()),
        RuntimeError,
        "Didn't receive a `response.completed` event",
        id="RSP-11",
    ),
    pytest.param(
        inband_error(nested=True), openai.APIError, "The server had an error", id="RSP-12"
    ),
    pytest.param(
        done_before_terminal(),
        RuntimeError,
        "Didn't receive a `response.completed` event",
        id="RSP-13",
    ),
]


@pytest.mark.parametrize(("body", "exc", "match"), SDK_TABLE)
def test_sdk_fails_on_the_broken_stream(
    body: bytes, exc: type[Exception], match: str | None
) -> None:
    with pytest.raises(exc, match=re.escape(match) if match else None):
        final_response(body)


@pytest.mark.parametrize("name", [n for n in S.HEALTHY if n != "incomplete"])
def test_sdk_reads_the_healthy_streams(name: str) -> None:
    payloads = S.HEALTHY[name]()
    got = final_response(S.body(payloads))
    assert got.status == "completed"
    assert [o.type for o in got.output] == [o["type"] for o in payloads[-1]["response"]["output"]]
    assembled = DIALECT.assemble(check_stream(DIALECT, S.body(payloads))[1])
    texts = [b.text for b in assembled.blocks if b.kind == "text"]
    assert "".join(texts) == got.output_text


# --- chunking -------------------------------------------------------------------------------------

CHUNKED = {
    "healthy": S.body(S.parallel_tool_stream()),
    "crlf": S.body(S.text_stream(), eol="\r\n"),
    "truncated": S.body(S.text_stream()[:7]),
    "error-event": inband_error(nested=True),
    "done-early": done_before_terminal(),
    "comment-mid-event": HEALTHY_TEXT.replace(b"\ndata: ", b"\n: ping\n\ndata: ", 1),
    "cut-mid-data": HEALTHY_TEXT[:-25],
}


@pytest.mark.parametrize("name", list(CHUNKED))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_chunking_invariance(name: str, data: st.DataObject) -> None:
    body = CHUNKED[name]
    assert_chunking_invariant(DIALECT, body, data.draw(chunkings(body)))


def test_the_chunked_bodies_are_broken_as_intended() -> None:
    assert errors(DIALECT, CHUNKED["healthy"]) == set()
    assert errors(DIALECT, CHUNKED["comment-mid-event"]) == {"SSE-13"}
    assert errors(DIALECT, CHUNKED["cut-mid-data"]) == {"SSE-14", "RSP-11"}


# --- recognition ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "ours"),
    [
        ("POST", "/v1/responses", {"model": "gpt-5", "input": "hi"}, True),
        ("POST", "/api/openai/v1/responses", {"model": "gpt-5"}, True),
        ("POST", "/openai/responses/", None, True),
        ("post", "/v1/responses", {}, True),
        ("GET", "/v1/responses/resp_123", None, False),
        ("GET", "/v1/responses", None, False),
        ("POST", "/v1/responses/input_tokens", {"model": "gpt-5"}, False),
        ("POST", "/v1/responses/resp_123/cancel", None, False),
        ("POST", "/v1/chat/completions", {"model": "gpt-5"}, False),
        ("POST", "/v1/responses", ["not", "an", "object"], False),
    ],
)
def test_match_request(method: str, path: str, body: Any, ours: bool) -> None:
    assert DIALECT.match_request(method, path, body) is ours


def test_wants_stream() -> None:
    assert DIALECT.wants_stream("/v1/responses", {}, {"model": "m", "stream": True})
    assert not DIALECT.wants_stream("/v1/responses", {}, {"model": "m", "stream": False})
    assert not DIALECT.wants_stream("/v1/responses", {"stream": "true"}, {"model": "m"})
    assert not DIALECT.wants_stream("/v1/responses", {}, None)


def test_match_payload() -> None:
    created = S.number(S.text_stream())[0]
    assert DIALECT.match_payload(created, "response.created")
    assert DIALECT.match_payload({"type": "error", "sequence_number": 0, "message": "x"}, None)
    assert not DIALECT.match_payload({"type": "message_start", "message": {}}, "message_start")
    assert not DIALECT.match_payload({"object": "chat.completion.chunk", "choices": []}, None)
    assert not DIALECT.match_payload({"type": "error", "error": {"type": "overloaded"}}, "error")
    assert not DIALECT.match_payload(SENTINEL, None)


def test_request_model_and_set_request_model() -> None:
    body = {"model": "gpt-5", "input": "hi", "stream": True}
    assert DIALECT.request_model("/v1/responses", body) == "gpt-5"
    assert DIALECT.request_model("/v1/responses", {"input": "hi"}) is None
    path, new = DIALECT.set_request_model("/v1/responses", body, "gpt-5-mini")
    assert (path, new["model"], new is body) == ("/v1/responses", "gpt-5-mini", True)


def test_request_tools() -> None:
    body = {
        "tools": [
            *S.TOOLS,
            {"type": "mcp", "server_label": "deepwiki", "server_url": "https://mcp.example"},
            {
                "type": "function",
                "function": {"name": "chat_style", "parameters": {"type": "object"}},
            },
            "garbage",
        ]
    }
    tools = DIALECT.request_tools(body)
    assert [(t.name, t.kind) for t in tools] == [
        ("get_weather", "function"),
        ("apply_patch", "custom"),
        ("web_search", "web_search"),
        ("deepwiki", "mcp"),
        ("chat_style", "function"),
    ]
    assert tools[0].schema == S.TOOLS[0]["parameters"]
    assert DIALECT.request_tools({"model": "m"}) == []


# --- rewrites -------------------------------------------------------------------------------------


def test_restamp_stream_events_and_bodies() -> None:
    p = S.number(S.text_stream())
    created, delta, completed = p[0], p[S.find(p, DELTA)], p[-1]
    assert rewrote(DIALECT.restamp, created, "client-model") and created["response"]["model"] == (
        "client-model"
    )
    assert not rewrote(
        DIALECT.restamp, created, "client-model"
    )  # already what the client asked for
    assert not rewrote(DIALECT.restamp, delta, "client-model") and "model" not in delta
    assert rewrote(DIALECT.restamp, completed, "client-model")
    whole = S.response("completed", [])
    assert rewrote(DIALECT.restamp, whole, "client-model") and whole["model"] == "client-model"
    assert not rewrote(DIALECT.restamp, {"error": {"message": "x"}}, "client-model")
    assert not rewrote(DIALECT.restamp, SENTINEL, "client-model")


def test_rename_tools_in_items_argument_dones_and_responses() -> None:
    names = {"get_weather_v2": "get_weather", "patch": "apply_patch"}
    p = S.number(
        S.assemble(
            S.function_call(0, "get_weather_v2", ['{"city":"Oslo"}']),
            S.custom_call(1, "patch", ["x"]),
        )
    )
    for q in p:
        for tool in q.get("response", {}).get("tools", []):
            if tool.get("name") == "get_weather":
                tool["name"] = "get_weather_v2"
    changed = [rewrote(DIALECT.rename_tools, q, names) for q in p]
    renamed = {q["type"] for q, c in zip(p, changed, strict=True) if c}
    assert renamed == {
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.done",
        ITEM_DONE,
        "response.completed",
    }
    text = orjson.dumps(p).decode()
    assert "get_weather_v2" not in text and '"patch"' not in text
    assert not any(rewrote(DIALECT.rename_tools, q, names) for q in p)  # nothing left to map
    body = S.response("completed", [S.function_call(0, "get_weather_v2", ["{}"])[1]])
    assert rewrote(DIALECT.rename_tools, body, names) and body["output"][0]["name"] == "get_weather"
    assert not rewrote(DIALECT.rename_tools, body, {})


# --- commit gate and synthesis --------------------------------------------------------------------


def _event(payload: Any) -> Event:
    return Event(0, 0, b"", event=payload.get("type") if isinstance(payload, dict) else None)


@pytest.mark.parametrize("name", list(S.HEALTHY))
def test_is_content_holds_back_exactly_the_lifecycle_frames(name: str) -> None:
    p = S.number(S.HEALTHY[name]())
    flags = [DIALECT.is_content(_event(q), q) for q in p]
    first = flags.index(True)
    assert not any(flags[:first])
    assert p[first]["type"] in (
        DELTA,
        "response.reasoning_summary_text.delta",
        "response.output_item.added",
    )
    assert flags[-1]  # the terminal commits


def test_is_content_cases() -> None:
    ev = Event(0, 0, b": keep-alive\n\n", comments=("keep-alive",))
    assert not DIALECT.is_content(ev, NO_DATA)
    assert not DIALECT.is_content(ev, SENTINEL)
    for lifecycle in (
        "response.created",
        "response.queued",
        "response.in_progress",
        "keepalive",
        "error",
        "response.failed",
    ):
        assert not DIALECT.is_content(ev, {"type": lifecycle}), lifecycle
    assert not DIALECT.is_content(ev, {"type": DELTA, "delta": ""})
    assert not DIALECT.is_content(
        ev, {"type": "response.content_part.added", "part": S.text_part()}
    )
    assert DIALECT.is_content(
        ev, {"type": "response.content_part.added", "part": S.text_part("Hi")}
    )
    tool_added = S.function_call(0, "f", ["{}"])[0][0]
    assert DIALECT.is_content(ev, tool_added)
    assert DIALECT.is_content(ev, {"type": "response.incomplete", "response": {}})


def test_error_event_decodes_to_one_terminal_error() -> None:
    raw = DIALECT.error_event("upstream died", "server_error")
    events, partial = decode_all(raw)
    assert partial is None and len(events) == 1 and events[0].event == "error"
    data = orjson.loads(events[0].data or "")
    assert data["type"] == "error" and data["message"] == "upstream died"
    assert data["error"] == {
        "type": "server_error",
        "code": "server_error",
        "message": "upstream died",
        "param": None,
    }
    assert DIALECT.error_of(data) == "upstream died"
    assert not DIALECT.is_content(events[0], data)


def test_error_event_continues_the_stream_and_the_sdk_raises() -> None:
    head = S.body(S.text_stream()[:6])
    _f, _pairs, checker = check_stream(DIALECT, head)
    assert isinstance(checker.validator, ResponsesValidator)
    seq = checker.validator.next_sequence
    body = head + DIALECT.error_event("upstream died", sequence_number=seq)
    assert errors(DIALECT, body) == {"RSP-12"}
    assert warnings(body) == set()
    with pytest.raises(openai.APIError, match="upstream died"):
        final_response(body)
    # Without a number the field is left out: nothing else to flag, and the SDK still raises.
    unnumbered = head + DIALECT.error_event("upstream died")
    assert errors(DIALECT, unnumbered) == {"RSP-12"} and warnings(unnumbered) == set()
    with pytest.raises(openai.APIError, match="upstream died"):
        final_response(unnumbered)


def test_error_body_is_what_the_sdk_reads_for_an_http_error() -> None:
    raw = DIALECT.error_body(429, "slow down", "rate_limit_error")
    assert orjson.loads(raw) == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}
    }
    with pytest.raises(openai.RateLimitError, match="slow down") as info:
        sdk(raw, status=429, content_type="application/json").responses.create(
            model="gpt-5", input="hi"
        )
    assert info.value.type == "rate_limit_error"


def test_keepalive_is_a_comment_that_changes_nothing() -> None:
    ka = DIALECT.keepalive()
    assert ka is not None
    (ev,), _ = decode_all(ka)
    assert ev.is_comment
    p = S.number(S.text_stream())
    body = b"".join(S.encode(q) + ka for q in p)
    assert findings(DIALECT, body).rules() == []
    assert final_response(body).output_text == "Hello! How can I help?"


def test_error_of() -> None:
    flat = {
        "type": "error",
        "code": "rate_limit_exceeded",
        "message": "Too many",
        "param": None,
        "sequence_number": 3,
    }
    nested = {
        "type": "error",
        "sequence_number": 2,
        "error": {"type": "server_error", "code": "server_error", "message": "Boom"},
    }
    end = S.closing([], "response.failed", error={"code": "server_error", "message": "Dead"})
    assert DIALECT.error_of(flat) == "Too many"
    assert DIALECT.error_of(nested) == "Boom"
    assert DIALECT.error_of(end) == "Dead"
    assert (
        DIALECT.error_of(
            {
                "error": {
                    "message": "Invalid model",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": None,
                }
            }
        )
        == "Invalid model"
    )
    assert DIALECT.error_of(S.response("failed", [], error={"message": "Dead"})) == "Dead"
    assert DIALECT.error_of(S.response("completed", [])) is None
    assert DIALECT.error_of(S.number(S.text_stream())[3]) is None
    assert DIALECT.error_of({"type": "error"}) == "error event without a message"
    assert DIALECT.error_of(SENTINEL) is None


# --- non-streaming bodies -------------------------------------------------------------------------


def check_body(payload: Any, status: int = 200) -> Findings:
    f = Findings()
    DIALECT.check_json_response(status, payload, f)
    return f


def test_check_json_response() -> None:
    items = [
        S.reasoning(0, ["x"])[1],
        S.function_call(1, "get_weather", ['{"city":"Paris"}'])[1],
        S.message(2, ["Done."])[1],
    ]
    healthy = S.response("completed", copy.deepcopy(items), usage=S.USAGE)
    assert check_body(healthy).rules() == []
    bad_args = copy.deepcopy(healthy)
    bad_args["output"][1]["arguments"] = '{"city": "Par'
    assert [(f.rule, f.severity) for f in check_body(bad_args)] == [("OAI-12", Severity.ERROR)]
    bad_args["status"] = "incomplete"
    assert [(f.rule, f.severity) for f in check_body(bad_args)] == [("OAI-12", Severity.WARNING)]
    dup = copy.deepcopy(healthy)
    dup["output"][2]["id"] = dup["output"][0]["id"]
    dup["output"][1]["call_id"] = ""
    assert check_body(dup).rules() == ["RSP-5"] and len(check_body(dup)) == 2
    assert check_body({**healthy, "output": None}).rules() == ["RSP-10"]
    assert check_body({**healthy, "usage": None}).rules() == ["RSP-10"]
    assert check_body({"error": {"message": "x"}}, status=200).rules() == []
    assert check_body(bad_args, status=500).rules() == []


# --- for humans -----------------------------------------------------------------------------------


def assembled(body: bytes) -> Any:
    return DIALECT.assemble(check_stream(DIALECT, body)[1])


def test_assemble_reasoning_and_tool_call() -> None:
    a = assembled(S.body(S.tool_stream()))
    assert (a.id, a.model, a.stop_reason) == (S.RESP_ID, S.MODEL, "completed")
    assert a.usage == S.USAGE and a.error is None
    assert [(b.kind, b.name) for b in a.blocks] == [
        ("thinking", None),
        ("tool_call", "get_weather"),
    ]
    assert a.blocks[0].text == "**Checking the weather**"
    assert a.blocks[1].input == {"city": "Paris"}
    assert a.blocks[1].id == "call_Kfzsl8lPJayEwvd0rkI0001"


def test_assemble_a_truncated_stream_from_its_deltas() -> None:
    p = S.parallel_tool_stream()
    a = assembled(S.body(p[: S.find(p, "response.function_call_arguments.done", 1)]))
    assert a.stop_reason is None
    assert [(b.kind, b.input) for b in a.blocks] == [
        ("tool_call", {"city": "Paris"}),
        ("tool_call", {"city": "Tokyo"}),
    ]
    events, _final = S.message(0, ["Hal", "f a sen"])
    a = assembled(S.body(S.opening() + events[:4]))
    assert [(b.kind, b.text) for b in a.blocks] == [("text", "Half a sen")]


def test_assemble_errors_and_incomplete_streams() -> None:
    a = assembled(inband_error(nested=False))
    assert (a.stop_reason, a.error) == ("failed", "The server had an error")
    a = assembled(S.body(S.incomplete_stream()))
    assert a.stop_reason == "max_output_tokens"
    assert [(b.kind, b.text) for b in a.blocks] == [("text", "The answer is long and")]
    a = assembled(S.body(S.search_stream()))
    assert [(b.kind, b.name) for b in a.blocks] == [("other", "web_search_call"), ("text", None)]


def test_summarize() -> None:
    p = S.number(S.tool_stream())
    lines = [DIALECT.summarize(_event(q), q) for q in p]
    assert lines[0] == f"created {S.MODEL}"
    assert "output_item.added function_call get_weather #1" in lines
    assert "function_call_arguments.delta 'Paris'" in lines
    assert lines[-1] == "completed in=36 out=87"
    assert DIALECT.summarize(_event({}), SENTINEL) == "[DONE]"
    comment = Event(0, 0, b": keep-alive\n\n", comments=("keep-alive",))
    assert DIALECT.summarize(comment, NO_DATA) == ": keep-alive"
    err = {"type": "error", "message": "Boom", "sequence_number": 1}
    assert DIALECT.summarize(_event(err), err) == "error: Boom"


# --- repairs (ResponsesMender) -------------------------------------------------------------------


def fix_rules(f: Findings) -> list[str]:
    return [x.rule for x in f if x.rule.startswith("FIX-")]


def shifted(p: Payloads, start: int, by: int) -> None:
    for q in p[start:]:
        q["sequence_number"] += by


@pytest.mark.parametrize(
    ("start", "by"), [(0, 5), (4, 2), (4, -1)], ids=["offset", "gap", "repeat"]
)
def test_repair_renumbers_sequence_numbers(start: int, by: int) -> None:
    broken = edited_numbered(S.text_stream, lambda p: shifted(p, start, by))
    assert "RSP-3" in findings(DIALECT, broken).rules()
    out, upstream, client = repaired(DIALECT, [broken])
    assert out == S.body(S.text_stream())
    assert fix_rules(upstream) == ["FIX-12"] and error_rules(client) == set()


def test_repair_renumbers_output_and_content_indices() -> None:
    events, item = S.message(1, ["Hi", " there"], msg_id="msg_1")
    for e in events:
        if "content_index" in e:
            e["content_index"] = 2
    broken = S.body(S.assemble((events, item)))
    assert {"RSP-5", "RSP-7"} <= errors(DIALECT, broken)
    out, upstream, client = repaired(DIALECT, [broken])
    assert out == S.body(S.assemble(S.message(0, ["Hi", " there"], msg_id="msg_1")))
    assert set(fix_rules(upstream)) == {"FIX-13"} and error_rules(client) == set()


def test_repair_keeps_an_event_for_an_item_never_added_naming_none() -> None:
    """Renumbering must not hand an orphan event to the item that took its number."""
    events, item = S.message(1, ["Hi"], msg_id="msg_1")
    orphan = {
        "type": "response.output_text.delta",
        "item_id": "msg_x",
        "output_index": 0,
        "content_index": 0,
        "delta": "stray",
        "logprobs": [],
    }
    payloads = S.assemble((events[:3] + [orphan] + events[3:], item))
    out, _, client = repaired(DIALECT, [S.body(payloads)])
    assert b'"output_index":1000000' in out and "RSP-6" in error_rules(client)


def test_repair_removes_done_from_a_responses_stream() -> None:
    body = S.body(S.text_stream())
    out, upstream, client = repaired(DIALECT, [body + b"data: [DONE]\n\n"])
    assert out == body and fix_rules(upstream) == ["FIX-5"] and list(client) == []


def test_repair_drops_a_response_created_repeated_before_content() -> None:
    stream = S.text_stream()
    body = S.body(stream[:1]) + S.body(stream)
    assert "RSP-4" in errors(DIALECT, body)
    out, upstream, client = repaired(DIALECT, [body])
    assert out == S.body(stream)
    assert fix_rules(upstream) == ["FIX-7"] and list(client) == []


def test_repair_adds_no_terminal_event_to_a_cut_stream() -> None:
    """response.completed carries usage, which only the upstream knows."""
    cut = S.body(S.text_stream()[:-1])
    out, upstream, client = repaired(DIALECT, [cut])
    assert out == cut and fix_rules(upstream) == [] and "RSP-11" in error_rules(client)
