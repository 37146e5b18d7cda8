"""The Gemini dialect: recognition, the GEM rules, rewriting, synthesis, reassembly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.protocol.dialect import INVALID
from mitmllm.protocol.dialect import NO_DATA
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.gemini import DIALECT
from mitmllm.protocol.gemini import GeminiValidator
from mitmllm.protocol.gemini import State
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.splice import splice_event
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import decode_all
from mitmllm.protocol.stream import check_body
from mitmllm.protocol.stream import check_stream
from tests import gemini_streams as gs
from tests.streamcheck import assert_chunking_invariant
from tests.streamcheck import chunkings
from tests.streamcheck import error_rules
from tests.streamcheck import errors
from tests.streamcheck import findings
from tests.streamcheck import repaired
from tests.streamcheck import rewrote
from tests.streamcheck import rules

FIRST = gs.sse(gs.chunk(gs.text("Hello"), use=gs.usage(9)))
LAST = gs.sse(gs.chunk(gs.text(" world."), finish="STOP", use=gs.usage(9, 3)))
GOOD = FIRST + LAST


def gem_errors(data: bytes) -> set[str]:
    return {r for r in errors(DIALECT, data) if r.startswith("GEM-")}


def body_errors(data: bytes) -> set[str]:
    f = Findings()
    check_body(DIALECT, f, status=200, body=data, content_type="application/json")
    return {x.rule for x in f if x.severity == Severity.ERROR and x.rule.startswith("GEM-")}


def final(**cand: Any) -> bytes:
    """A final chunk whose one candidate is `cand` (plus finishReason STOP unless given)."""
    cand.setdefault("finishReason", "STOP")
    return gs.sse({"candidates": [cand], "usageMetadata": gs.usage(9, 3)})


def content(*parts: Any) -> dict[str, Any]:
    return {"parts": list(parts), "role": "model"}


# --- every error rule: a failing stream and its passing counterpart ---------------------------


@dataclass(frozen=True)
class Case:
    id: str
    bad: bytes
    good: bytes
    also: frozenset[str] = frozenset()  # other GEM errors the bad input must raise
    body: bool = False  # a non-streaming JSON body rather than a stream

    @property
    def rule(self) -> str:
        return "-".join(self.id.split("-")[:2])


ERROR_CASES = [
    Case(
        "GEM-1-json-array",
        json.dumps([gs.chunk(gs.text("Hi")), gs.chunk(gs.text("!"), finish="STOP")]).encode(),
        json.dumps(gs.chunk(gs.text("Hi!"), finish="STOP")).encode(),
        body=True,
    ),
    Case("GEM-2-keepalive-comment", FIRST + b": keep-alive\r\n\r\n" + LAST, GOOD),
    Case("GEM-2-event-line", FIRST + b"event: message\r\n" + LAST, GOOD),
    Case("GEM-2-id-line", b"id: 1\r\n" + FIRST + LAST, GOOD),
    Case("GEM-2-retry-block", b"retry: 3000\r\n\r\n" + GOOD, GOOD),
    Case("GEM-2-dataless-event", FIRST + b"event: ping\r\n\r\n" + LAST, GOOD),
    Case("GEM-2-comment-inside-event", FIRST + b": hb\r\n" + LAST, GOOD),
    Case("GEM-2-unknown-field-before", FIRST + b"x-trace: 7\r\n" + LAST, GOOD),
    Case("GEM-2-unknown-field-after", FIRST + LAST[:-2] + b"x-trace: 7\r\n\r\n", GOOD),
    Case("GEM-2-case-variant-field", b"D" + FIRST[1:] + LAST, GOOD),
    Case("GEM-5-done-sentinel", GOOD + b"data: [DONE]\r\n\r\n", GOOD),
    Case("GEM-6-unterminated-final", GOOD[:-2], GOOD, also=frozenset({"GEM-8"})),
    Case("GEM-6-unterminated-final-lf", GOOD[:-4] + b"\n", GOOD, also=frozenset({"GEM-8"})),
    Case(
        "GEM-7-payload-array",
        FIRST + b"data: [" + LAST[6:-4] + b"]\r\n\r\n",
        GOOD,
        also=frozenset({"GEM-8"}),
    ),
    Case("GEM-7-payload-number", FIRST + b"data: 42\r\n\r\n" + LAST, GOOD),
    Case("GEM-7-candidates-object", FIRST + gs.sse({"candidates": {"0": {}}}) + LAST, GOOD),
    Case("GEM-7-candidate-string", FIRST + gs.sse({"candidates": ["hi"]}) + LAST, GOOD),
    Case("GEM-7-content-string", FIRST + final(content="hi"), FIRST + final(content=content())),
    Case(
        "GEM-7-parts-object",
        FIRST + final(content={"parts": {"text": "x"}}),
        FIRST + final(content=content(gs.text("x"))),
    ),
    Case(
        "GEM-7-part-string",
        FIRST + final(content=content("x")),
        FIRST + final(content=content(gs.text("x"))),
    ),
    Case(
        "GEM-7-text-number",
        FIRST + final(content=content({"text": 5})),
        FIRST + final(content=content(gs.text("5"))),
    ),
    Case(
        "GEM-7-thought-string",
        FIRST + final(content=content({"text": "x", "thought": "yes"})),
        FIRST + final(content=content(gs.thought("x"))),
    ),
    Case(
        "GEM-7-args-fragment",
        FIRST + final(content=content({"functionCall": {"name": "f", "args": '{"a": '}})),
        FIRST + final(content=content({"functionCall": {"name": "f", "args": {"a": 1}}})),
    ),
    Case(
        "GEM-7-call-without-name",
        FIRST + final(content=content({"functionCall": {"args": {}}})),
        FIRST + final(content=content({"functionCall": {"name": "f"}})),
    ),
    Case("GEM-7-index-string", FIRST + final(index="0"), FIRST + final(index=0)),
    Case("GEM-7-finish-number", FIRST + final(finishReason=1), FIRST + final()),
    Case(
        "GEM-7-usage-list",
        FIRST + gs.sse({"candidates": [{"finishReason": "STOP"}], "usageMetadata": []}),
        FIRST + gs.sse({"candidates": [{"finishReason": "STOP"}], "usageMetadata": {}}),
    ),
    Case(
        "GEM-7-feedback-string",
        gs.sse({"promptFeedback": "SAFETY"}),
        gs.sse({"promptFeedback": {"blockReason": "SAFETY"}}),
        also=frozenset({"GEM-8"}),
    ),
    Case(
        "GEM-7-model-version-number",
        FIRST + gs.sse({**gs.chunk(gs.text("!"), finish="STOP"), "modelVersion": 2}),
        FIRST + gs.sse(gs.chunk(gs.text("!"), finish="STOP")),
    ),
    Case("GEM-8-cut-on-event-boundary", FIRST, GOOD),
    Case("GEM-8-empty-body", b"", GOOD),
    Case("GEM-8-usage-only", gs.sse({"usageMetadata": gs.usage(9)}), GOOD),
    Case(
        "GEM-8-output-after-finish",
        gs.sse(gs.chunk(gs.text("Hi"), finish="STOP")) + FIRST,
        gs.sse(gs.chunk(gs.text("Hi"), finish="STOP"))
        + gs.sse(gs.chunk(gs.text("!"), finish="STOP")),
    ),
    Case(
        "GEM-8-one-candidate-open",
        gs.sse(
            {
                "candidates": [
                    {"content": content(gs.text("a")), "index": 0},
                    {"content": content(gs.text("b")), "index": 1, "finishReason": "STOP"},
                ]
            }
        ),
        gs.TWO_CANDIDATES,
    ),
    Case("GEM-9-error-chunk", FIRST + gs.sse(gs.ERROR_CHUNK), GOOD),
    Case(
        "GEM-9-error-not-first-key",
        FIRST + gs.sse({"usageMetadata": {}, **gs.ERROR_CHUNK}),
        GOOD,
    ),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: c.id)
def test_error_rule_fires_and_its_counterpart_passes(case: Case) -> None:
    check = body_errors if case.body else gem_errors
    assert check(case.bad) == {case.rule} | case.also
    assert check(case.good) == set()


def test_every_checked_error_rule_of_the_family_has_a_case() -> None:
    wanted = {
        r.id
        for r in RULES.values()
        if r.family == "GEM" and r.severity == Severity.ERROR and r.checked
    }
    assert wanted - {c.rule for c in ERROR_CASES} == set()


def test_GEM_2_replaces_SSE_13_for_dataless_blocks() -> None:
    found = rules(DIALECT, FIRST + b"event: ping\r\n\r\n" + LAST)
    assert "GEM-2" in found
    assert "SSE-13" not in found


def test_GEM_9_error_not_first_key_says_the_sdk_will_not_raise() -> None:
    f = findings(DIALECT, FIRST + gs.sse({"usageMetadata": {}, **gs.ERROR_CHUNK}))
    (gem9,) = [x for x in f if x.rule == "GEM-9"]
    assert "not the first key" in gem9.message
    assert "UNAVAILABLE" in gem9.message


# --- warnings ---------------------------------------------------------------------------------


WARNING_CASES = [
    ("GEM-3", FIRST + b"data:" + LAST[6:]),
    (
        "GEM-4",
        FIRST + b'data: {"candidates": [{"finishReason": "STOP"}],\r\ndata: '
        b'"usageMetadata": {}}\r\n\r\n',
    ),
    ("GEM-7", FIRST + gs.sse({"modelVersion": gs.MODEL}) + LAST),
    ("GEM-7", FIRST + gs.sse(gs.chunk(gs.text("x"), finish="STOP", rid="other"))),
    ("GEM-7", FIRST + gs.sse(gs.chunk(gs.text("x"), finish="STOP", model="gemini-2.5-pro"))),
    ("GEM-7", FIRST + final(content={"parts": [gs.text("x")], "role": "user"})),
    ("GEM-8", FIRST + final(finishReason="SOMETHING_NEW")),
    ("GEM-8", FIRST + gs.sse({"candidates": [{"finishReason": "STOP", "index": 0}]})),
]


@pytest.mark.parametrize(("rule", "data"), WARNING_CASES, ids=[c[0] for c in WARNING_CASES])
def test_warning_rules(rule: str, data: bytes) -> None:
    f = findings(DIALECT, data)
    assert rule in {x.rule for x in f if x.severity == Severity.WARNING}
    assert {x.rule for x in f if x.severity == Severity.ERROR} == set()


def test_GEM_8_unknown_finish_reason_still_finishes() -> None:
    _, _, checker = check_stream(DIALECT, FIRST + final(finishReason="SOMETHING_NEW"))
    assert checker.validator is not None
    assert checker.validator.complete
    assert checker.validator.finish == "SOMETHING_NEW"


# --- healthy streams --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(gs.HEALTHY))
def test_healthy_stream_has_no_errors_or_warnings(name: str) -> None:
    f, _, checker = check_stream(DIALECT, gs.HEALTHY[name])
    assert [str(x) for x in f if x.severity != Severity.INFO] == []
    v = checker.validator
    assert isinstance(v, GeminiValidator)
    assert v.state == State.FINISHED
    assert v.complete
    assert v.error is None
    assert v.finish is not None


def test_summary_fields_follow_the_stream() -> None:
    v = DIALECT.validator()
    f = Findings()
    first, last = decode_all(GOOD)[0]
    v.on_event(first, json.loads(first.data or ""), f)
    assert (v.model, v.finish, v.complete, v.state) == (gs.MODEL, None, False, State.STREAMING)
    v.on_event(last, json.loads(last.data or ""), f)
    assert (v.finish, v.complete, v.state) == ("STOP", True, State.FINISHED)
    v.on_close(f, end_offset=len(GOOD), events=2)
    assert list(f) == []


def test_GEM_8_empty_text_after_the_finish_does_not_reopen_the_candidate() -> None:
    trailer = gs.sse(gs.chunk(gs.text(""), use=gs.usage(9, 3)))
    assert gem_errors(GOOD + trailer) == set()
    assert gem_errors(GOOD + FIRST) == {"GEM-8"}


def test_lone_blank_lines_are_not_reported() -> None:
    assert rules(DIALECT, b"\r\n" + FIRST + b"\r\n\r\n" + LAST) == set()


def test_lf_and_cr_framings_are_accepted() -> None:
    lf = GOOD.replace(b"\r\n", b"\n")
    cr = GOOD.replace(b"\r\n", b"\r")
    assert rules(DIALECT, lf) == set()
    assert rules(DIALECT, cr) == set()


# --- chunking invariance ----------------------------------------------------------------------

CHUNKING_BODIES = [
    gs.TEXT,
    gs.THINKING_TOOL,
    FIRST + b": keep-alive\r\n\r\n" + LAST,
    GOOD + b"data: [DONE]\r\n\r\n",
    GOOD[:-2],
    FIRST + gs.sse(gs.ERROR_CHUNK),
    FIRST + b"event: message\r\n" + LAST,
    FIRST + b"data:" + LAST[6:],
]


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_chunking_invariance(data: st.DataObject) -> None:
    body = data.draw(st.sampled_from(CHUNKING_BODIES))
    assert_chunking_invariant(DIALECT, body, data.draw(chunkings(body)))


# --- what google-genai makes of the bytes -------------------------------------------------------


def read_by_google_genai(body: bytes, chunk: int = 7) -> Exception | None:
    """Stream `body` (in `chunk`-byte pieces) to the real google-genai client; what it raised."""
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=parts)

    client = genai.Client(
        api_key="test",
        http_options=genai_types.HttpOptions(
            base_url="https://gemini.test",
            api_version="v1beta",
            httpx_client=httpx.Client(transport=httpx.MockTransport(handler)),
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )
    try:
        for _ in client.models.generate_content_stream(model="m", contents="hi"):
            pass
    except Exception as e:  # noqa: BLE001 - what the client raises is the result
        return e
    return None


LINE_VIEW_BODIES = [c.bad for c in ERROR_CASES if c.rule == "GEM-2"] + [
    FIRST + b"data:" + LAST[6:],
    *gs.HEALTHY.values(),
    GOOD.replace(b"\r\n", b"\r"),
    GOOD + b"data: [DONE]\r\n\r\n",
]


@pytest.mark.parametrize("body", LINE_VIEW_BODIES)
def test_GEM_2_GEM_3_and_PAY_1_fire_exactly_when_google_genai_rejects_the_stream(
    body: bytes,
) -> None:
    # google-genai treats every non-empty line that does not start with 'data: ' as part of a
    # raw JSON error body, and parses the data of every event (a [DONE] sentinel included) as
    # JSON: either way it raises UnknownApiResponseError.
    raised = read_by_google_genai(body)
    assert raised is None or isinstance(raised, genai_errors.UnknownApiResponseError), raised
    assert (raised is not None) == bool({"GEM-2", "GEM-3", "PAY-1"} & rules(DIALECT, body))


# --- recognition ------------------------------------------------------------------------------

STREAM_PATHS = [
    "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
    "/v1/models/gemini-2.5-pro:streamGenerateContent",
    "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash"
    ":streamGenerateContent",
    "/v1/publishers/google/models/gemini-3-pro-preview:streamGenerateContent",
    "/api/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent",
    "/v1beta/models/gemini-2.5-flash%3AstreamGenerateContent",
    "/v1beta/tunedModels/my-tuned-1:streamGenerateContent",
]
UNARY_PATHS = [p.replace("streamGenerateContent", "generateContent") for p in STREAM_PATHS]


@pytest.mark.parametrize("path", STREAM_PATHS + UNARY_PATHS)
def test_match_request(path: str) -> None:
    assert DIALECT.match_request("POST", path, {"contents": []})
    assert not DIALECT.match_request("GET", path, None)


@pytest.mark.parametrize(
    "path",
    [
        "/v1beta/models/gemini-2.5-flash:countTokens",
        "/v1beta/models/gemini-2.5-flash:embedContent",
        "/v1beta/models/gemini-2.5-flash",
        "/v1beta/openai/chat/completions",
        "/v1/messages",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContentX",
    ],
)
def test_match_request_rejects_other_methods(path: str) -> None:
    assert not DIALECT.match_request("POST", path, {"contents": []})


def test_wants_stream() -> None:
    for path in STREAM_PATHS:
        assert DIALECT.wants_stream(path, {"alt": "sse"}, {})
    for path in UNARY_PATHS:
        assert not DIALECT.wants_stream(path, {}, {})
    assert not DIALECT.wants_stream("/v1/chat/completions", {}, {"stream": True})


@pytest.mark.parametrize(
    ("query", "fires"),
    [({"alt": "sse"}, False), ({"alt": "SSE"}, False), ({}, True), ({"alt": "json"}, True)],
)
def test_GEM_1_check_request(query: dict[str, str], fires: bool) -> None:
    f = Findings()
    DIALECT.check_request(STREAM_PATHS[0], query, f)
    assert f.rules() == (["GEM-1"] if fires else [])
    g = Findings()
    DIALECT.check_request(UNARY_PATHS[0], {}, g)
    assert list(g) == []


def test_match_payload() -> None:
    assert DIALECT.match_payload(gs.chunk(gs.text("x")), None)
    assert DIALECT.match_payload({"usageMetadata": {}}, None)
    assert DIALECT.match_payload(gs.ERROR_CHUNK, None)
    assert not DIALECT.match_payload(gs.chunk(gs.text("x")), "message")
    assert not DIALECT.match_payload({"object": "chat.completion.chunk", "choices": []}, None)
    assert not DIALECT.match_payload({"type": "message_start", "message": {}}, None)
    assert not DIALECT.match_payload(
        {"error": {"message": "x", "type": "server_error", "code": None}}, None
    )
    assert not DIALECT.match_payload([gs.chunk(gs.text("x"))], None)


# --- request rewriting ------------------------------------------------------------------------


def test_request_model_reads_the_path() -> None:
    assert DIALECT.request_model(STREAM_PATHS[0], {"model": "ignored"}) == "gemini-2.5-flash"
    assert DIALECT.request_model(STREAM_PATHS[2], None) == "gemini-2.0-flash"
    assert DIALECT.request_model("/v1beta/models/my%40model:generateContent", {}) == "my@model"
    assert DIALECT.request_model("/v1/messages", {"model": "claude"}) is None


@pytest.mark.parametrize("path", STREAM_PATHS + UNARY_PATHS)
def test_set_request_model_rewrites_only_the_model_segment(path: str) -> None:
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    before = json.dumps(body)
    new_path, new_body = DIALECT.set_request_model(path, body, "gemini-2.5-pro")
    assert new_body is body
    assert json.dumps(new_body) == before
    assert DIALECT.request_model(new_path, body) == "gemini-2.5-pro"
    old = DIALECT.request_model(path, body)
    assert old is not None
    assert new_path == path.replace(old, "gemini-2.5-pro")


def test_set_request_model_percent_encodes() -> None:
    path, _ = DIALECT.set_request_model(STREAM_PATHS[0], {}, "my model/v:1@2")
    assert path == "/v1beta/models/my%20model%2Fv%3A1@2:streamGenerateContent"
    assert DIALECT.request_model(path, {}) == "my model/v:1@2"
    path, _ = DIALECT.set_request_model(STREAM_PATHS[0], {}, "models/gemini-2.5-pro")
    assert path == "/v1beta/models/gemini-2.5-pro:streamGenerateContent"
    with pytest.raises(ValueError, match="no Gemini model"):
        DIALECT.set_request_model("/v1/messages", {}, "x")


def test_request_tools() -> None:
    tools = DIALECT.request_tools(gs.REQUEST)
    assert [(t.name, t.kind) for t in tools] == [
        ("get_weather", "function"),
        ("get_time", "function"),
        ("ping", "function"),
        ("googleSearch", "googleSearch"),
    ]
    assert tools[0].schema["properties"] == {"location": {"type": "STRING"}}
    assert tools[1].schema["properties"] == {"timezone": {"type": "string"}}
    assert tools[2].schema is None
    snake = {"tools": [{"function_declarations": [{"name": "f", "parameters": {}}]}]}
    assert [(t.name, t.schema) for t in DIALECT.request_tools(snake)] == [("f", {})]
    assert DIALECT.request_tools({"tools": "x"}) == []
    assert DIALECT.request_tools({"tools": [1, {"functionDeclarations": [2, {}]}]}) == []
    assert DIALECT.request_tools(None) == []


# --- response rewriting -----------------------------------------------------------------------


def test_restamp_sets_model_version() -> None:
    c = gs.chunk(gs.text("x"))
    assert rewrote(DIALECT.restamp, c, "gemini-2.5-pro")
    assert c["modelVersion"] == "gemini-2.5-pro"
    assert not rewrote(DIALECT.restamp, c, "gemini-2.5-pro")
    bare: dict[str, Any] = {"candidates": []}
    assert not rewrote(DIALECT.restamp, bare, "m")
    assert "modelVersion" not in bare
    assert not rewrote(DIALECT.restamp, dict(gs.ERROR_CHUNK), "m")
    assert not rewrote(DIALECT.restamp, INVALID, "m")
    assert not rewrote(DIALECT.restamp, None, "m")


def test_restamp_whole_bodies() -> None:
    body = gs.chunk(gs.text("x"), finish="STOP")
    assert rewrote(DIALECT.restamp, body, "alias")
    assert body["modelVersion"] == "alias"
    array = [gs.chunk(gs.text("a")), {"usageMetadata": {}}, gs.chunk(gs.text("b"))]
    assert rewrote(DIALECT.restamp, array, "alias")
    assert [c.get("modelVersion") for c in array] == ["alias", None, "alias"]


def test_restamp_keeps_the_event_byte_identical_but_for_the_model() -> None:
    ev = decode_all(FIRST)[0][0]
    payload = json.loads(ev.data or "")
    out = splice_event(ev, DIALECT.restamp(payload, "alias"))
    assert out.raw == FIRST.replace(gs.MODEL.encode(), b"alias")
    assert rules(DIALECT, out.raw + LAST) == {"GEM-7"}  # the model changed mid-stream


def test_rename_tools() -> None:
    c = gs.chunk(
        gs.call("mcp__weather__get", {"city": "Oslo"}),
        gs.text("and"),
        gs.call("other", {}),
    )
    names = {"mcp__weather__get": "get_weather"}
    assert rewrote(DIALECT.rename_tools, c, names)
    calls = [
        p["functionCall"]["name"]
        for p in c["candidates"][0]["content"]["parts"]
        if "functionCall" in p
    ]
    assert calls == ["get_weather", "other"]
    assert not rewrote(DIALECT.rename_tools, c, names)
    assert not rewrote(DIALECT.rename_tools, gs.chunk(gs.text("x")), names)
    assert not rewrote(DIALECT.rename_tools, gs.ERROR_CHUNK, names)
    array = [gs.chunk(gs.call("mcp__weather__get", {}))]
    assert rewrote(DIALECT.rename_tools, array, names)
    assert array[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "get_weather"
    odd = {"candidates": [{"content": {"parts": [{"functionCall": {"name": ["x"]}}, 3]}}, 4]}
    assert not rewrote(DIALECT.rename_tools, odd, names)


# --- commit gate ------------------------------------------------------------------------------

EV = Event(0, 0, b"data: {}\r\n\r\n", data="{}")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(gs.chunk(gs.text("Hi")), True, id="text"),
        pytest.param(gs.chunk(gs.thought("hmm")), True, id="thought"),
        pytest.param(gs.chunk(gs.call("f", {})), True, id="function-call"),
        pytest.param(gs.chunk({"text": "", "thoughtSignature": "sig"}), True, id="signature"),
        pytest.param(gs.chunk(gs.text(""), finish="STOP"), True, id="finish"),
        pytest.param({"candidates": [{"finishReason": "SAFETY"}]}, True, id="finish-no-content"),
        pytest.param({"promptFeedback": {"blockReason": "SAFETY"}}, True, id="blocked"),
        pytest.param(gs.chunk(gs.text("")), False, id="empty-text"),
        pytest.param(gs.chunk(), False, id="no-parts"),
        pytest.param({"candidates": [{"content": {"role": "model"}}]}, False, id="role-only"),
        pytest.param({"usageMetadata": gs.usage(3)}, False, id="usage-only"),
        pytest.param({"promptFeedback": {"safetyRatings": []}}, False, id="ratings-only"),
        pytest.param(gs.ERROR_CHUNK, False, id="error"),
        pytest.param(NO_DATA, False, id="no-data"),
        pytest.param(INVALID, False, id="invalid"),
        pytest.param([gs.chunk(gs.text("Hi"))], False, id="array"),
    ],
)
def test_is_content(payload: Any, expected: bool) -> None:
    assert DIALECT.is_content(EV, payload) is expected


# --- synthesis --------------------------------------------------------------------------------


def test_error_event_is_one_crlf_event_with_error_first() -> None:
    raw = DIALECT.error_event("upstream failed", "overloaded_error")
    assert raw.startswith(b'data: {"error":')
    assert raw.endswith(b"\r\n\r\n")
    events, partial = decode_all(raw)
    assert partial is None
    assert len(events) == 1
    payload = json.loads(events[0].data or "")
    assert payload == {
        "error": {"code": 503, "message": "upstream failed", "status": "UNAVAILABLE"}
    }
    assert DIALECT.error_of(payload) == "upstream failed"
    assert not DIALECT.is_content(events[0], payload)


def test_error_event_ends_a_committed_stream_as_failed_not_truncated() -> None:
    f, _, checker = check_stream(DIALECT, FIRST + DIALECT.error_event("upstream stalled"))
    assert {x.rule for x in f if x.severity == Severity.ERROR} == {"GEM-9"}
    v = checker.validator
    assert v is not None
    assert v.error == "upstream stalled"
    assert not v.complete


def test_error_event_as_google_genai_reads_it() -> None:
    # google-genai raises ClientError / ServerError for a chunk that is an error object, with the
    # code and message it carries; the event is plain ASCII whatever the message holds.
    raw = DIALECT.error_event("bad\u2028line\nbreak \u00e9", "rate_limit_error")
    raised = read_by_google_genai(raw, chunk=3)
    assert isinstance(raised, genai_errors.ClientError), raised
    assert raised.code == 429
    assert raised.status == "RESOURCE_EXHAUSTED"
    assert raised.message == "bad\u2028line\nbreak \u00e9"
    assert raw.isascii()


@pytest.mark.parametrize(
    ("kind", "code", "status"),
    [
        ("api_error", 500, "INTERNAL"),
        ("overloaded_error", 503, "UNAVAILABLE"),
        ("rate_limit_error", 429, "RESOURCE_EXHAUSTED"),
        ("timeout_error", 504, "DEADLINE_EXCEEDED"),
        ("invalid_request_error", 400, "INVALID_ARGUMENT"),
        ("authentication_error", 401, "UNAUTHENTICATED"),
        ("UNAVAILABLE", 503, "UNAVAILABLE"),
        ("no_such_kind", 500, "INTERNAL"),
    ],
)
def test_error_event_kinds(kind: str, code: int, status: str) -> None:
    payload = json.loads(DIALECT.error_event("m", kind)[len(b"data: ") :])
    assert payload["error"]["code"] == code
    assert payload["error"]["status"] == status


@pytest.mark.parametrize(
    ("status", "kind", "rpc"),
    [
        (400, "api_error", "INVALID_ARGUMENT"),
        (401, "api_error", "UNAUTHENTICATED"),
        (403, "api_error", "PERMISSION_DENIED"),
        (404, "api_error", "NOT_FOUND"),
        (429, "api_error", "RESOURCE_EXHAUSTED"),
        (500, "api_error", "INTERNAL"),
        (502, "api_error", "UNAVAILABLE"),
        (503, "api_error", "UNAVAILABLE"),
        (504, "api_error", "DEADLINE_EXCEEDED"),
        (529, "overloaded_error", "UNAVAILABLE"),
        (418, "api_error", "FAILED_PRECONDITION"),
        (418, "billing_error", "FAILED_PRECONDITION"),
        (507, "overloaded_error", "UNAVAILABLE"),
        (507, "api_error", "INTERNAL"),
    ],
)
def test_error_body(status: int, kind: str, rpc: str) -> None:
    raw = DIALECT.error_body(status, "all upstreams failed", kind)
    body = json.loads(raw)
    assert list(body) == ["error"]
    assert body["error"] == {"code": status, "message": "all upstreams failed", "status": rpc}
    assert DIALECT.error_of(body) == "all upstreams failed"
    assert DIALECT.match_payload(body, None)


def test_keepalive_is_none_because_google_genai_rejects_comments() -> None:
    assert DIALECT.keepalive() is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (gs.ERROR_CHUNK, "The model is overloaded."),
        ([gs.chunk(gs.text("a")), gs.ERROR_CHUNK], "The model is overloaded."),
        ({"error": {"code": 500, "status": "INTERNAL"}}, "INTERNAL"),
        ({"error": "quota"}, "quota"),
        ({"error": None, "candidates": []}, None),
        (gs.chunk(gs.text("a")), None),
        ([gs.chunk(gs.text("a"))], None),
        ("error", None),
        (NO_DATA, None),
    ],
)
def test_error_of(payload: Any, message: str | None) -> None:
    assert DIALECT.error_of(payload) == message


# --- non-streaming bodies ---------------------------------------------------------------------


def json_findings(payload: Any, status: int = 200) -> Findings:
    f = Findings()
    DIALECT.check_json_response(status, payload, f)
    return f


def test_check_json_response_accepts_a_generate_content_response() -> None:
    body = gs.chunk(gs.text("Hi"), gs.call("f", {"a": 1}), finish="STOP")
    assert list(json_findings(body)) == []


def test_check_json_response_shape_rules() -> None:
    bad_args = gs.chunk({"functionCall": {"name": "f", "args": "{}"}}, finish="STOP")
    assert json_findings(bad_args).rules() == ["GEM-7"]
    unfinished = json_findings(gs.chunk(gs.text("Hi")))
    assert [(x.rule, x.severity) for x in unfinished] == [("GEM-8", Severity.WARNING)]
    assert json_findings([gs.chunk(gs.text("Hi"))]).rules() == ["GEM-1"]
    assert json_findings("x").rules() == ["GEM-7"]
    assert list(json_findings(gs.ERROR_CHUNK, status=503)) == []
    assert list(json_findings([gs.ERROR_CHUNK], status=429)) == []


def test_error_wrapped_in_200_is_HTTP_5() -> None:
    f = Findings()
    check_body(
        DIALECT,
        f,
        status=200,
        body=json.dumps(gs.ERROR_CHUNK).encode(),
        content_type="application/json; charset=UTF-8",
    )
    assert f.rules() == ["HTTP-5"]


# --- for humans -------------------------------------------------------------------------------


def pairs(body: bytes) -> list[tuple[Event, Any]]:
    return check_stream(DIALECT, body)[1]


def test_assemble_thinking_and_tool_call() -> None:
    msg = DIALECT.assemble(pairs(gs.THINKING_TOOL))
    assert (msg.id, msg.model, msg.stop_reason) == (gs.RESPONSE_ID, gs.MODEL, "STOP")
    assert [(b.kind, b.name) for b in msg.blocks] == [("thinking", None), ("tool_call", "weather")]
    assert msg.blocks[0].text.startswith("**Checking the weather**")
    assert msg.blocks[1].input == {"city": "San Francisco"}
    assert msg.usage["thoughtsTokenCount"] == 95
    assert msg.error is None


def test_assemble_merges_text_and_keeps_parallel_calls_apart() -> None:
    msg = DIALECT.assemble(pairs(gs.TEXT))
    assert [b.text for b in msg.blocks] == [
        "The weather in Tōkyō is 18°C and sunny — 晴れ. Enjoy your day!\n"
    ]
    msg = DIALECT.assemble(pairs(gs.PARALLEL_TOOLS))
    assert [(b.kind, b.name, b.input) for b in msg.blocks] == [
        ("text", None, None),
        ("tool_call", "get_weather", {"location": "Paris", "unit": "celsius"}),
        ("tool_call", "get_time", {"timezone": "Europe/Paris"}),
    ]


def test_assemble_candidates_blocked_and_failed() -> None:
    msg = DIALECT.assemble(pairs(gs.TWO_CANDIDATES))
    assert [(b.choice, b.text) for b in msg.blocks] == [(0, "Red."), (1, "Blue!")]
    assert DIALECT.assemble(pairs(gs.BLOCKED)).stop_reason == "PROHIBITED_CONTENT"
    failed = DIALECT.assemble(pairs(FIRST + gs.sse(gs.ERROR_CHUNK)))
    assert failed.error == "The model is overloaded."
    assert failed.stop_reason is None
    assert [b.text for b in failed.blocks] == ["Hello"]


def test_summarize() -> None:
    p = pairs(
        b": hb\r\n\r\n"
        + gs.sse(gs.chunk(gs.text("Hello world, this is a long sentence")))
        + gs.sse(gs.chunk(gs.call("get_weather", {}), finish="STOP"))
        + gs.sse({"usageMetadata": gs.usage(3, 4)})
        + gs.sse(gs.ERROR_CHUNK)
        + b"data: [DONE]\r\n\r\n"
    )
    assert [DIALECT.summarize(ev, payload) for ev, payload in p] == [
        "comment ': hb'",
        'text "Hello world, this is a l…"',
        "function_call get_weather, finish STOP",
        "usage 7 tokens",
        'error UNAVAILABLE 503 "The model is overloaded."',
        "[DONE]",
    ]


# --- robustness -------------------------------------------------------------------------------

_VOCAB = st.sampled_from(
    [
        "candidates",
        "content",
        "parts",
        "text",
        "thought",
        "functionCall",
        "name",
        "args",
        "finishReason",
        "index",
        "promptFeedback",
        "blockReason",
        "usageMetadata",
        "error",
        "modelVersion",
        "responseId",
        "role",
        "STOP",
    ]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 3) | _VOCAB,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_VOCAB, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_JSON, min_size=1, max_size=4))
def test_no_payload_crashes_the_dialect(payloads: list[Any]) -> None:
    data = b"".join(gs.sse(p) for p in payloads)
    f, got, _ = check_stream(DIALECT, data)
    for ev, payload in got:
        DIALECT.is_content(ev, payload)
        DIALECT.summarize(ev, payload)
        DIALECT.error_of(payload)
        rewrote(DIALECT.restamp, payload, "m")
        rewrote(DIALECT.rename_tools, payload, {"STOP": "x"})
    DIALECT.assemble(got)
    DIALECT.check_json_response(200, payloads[0], Findings())
    assert all(x.rule != "TAP-1" for x in f)


# --- repairs (GeminiMender) ----------------------------------------------------------------------


def fix_rules(f: Findings) -> list[str]:
    return [x.rule for x in f if x.rule.startswith("FIX-")]


AFTER_FIRST = gs.TEXT.index(b"\r\n\r\n") + 4


@pytest.mark.parametrize(
    "extra",
    [b": keep-alive\r\n\r\n", b"event: ping\r\n\r\n", b"id: 7\r\n\r\n"],
    ids=["comment", "event", "id"],
)
def test_repair_removes_blocks_without_data(extra: bytes) -> None:
    broken = gs.TEXT[:AFTER_FIRST] + extra + gs.TEXT[AFTER_FIRST:]
    assert "GEM-2" in errors(DIALECT, broken)
    out, upstream, client = repaired(DIALECT, [broken])
    assert out == gs.TEXT and fix_rules(upstream) == ["FIX-4"] and list(client) == []


@pytest.mark.parametrize(
    "line",
    [b": keep-alive\r\n", b"event: chunk\r\n", b"retry: 5\r\n"],
    ids=["comment", "event", "retry"],
)
def test_repair_removes_lines_other_than_data_from_an_event(line: bytes) -> None:
    broken = line + gs.TEXT
    assert "GEM-2" in errors(DIALECT, broken)
    out, upstream, client = repaired(DIALECT, [broken])
    assert out == gs.TEXT and fix_rules(upstream) == ["FIX-4"] and list(client) == []


def test_repair_removes_a_done_sentinel() -> None:
    out, upstream, client = repaired(DIALECT, [gs.TEXT + b"data: [DONE]\r\n\r\n"])
    assert out == gs.TEXT and fix_rules(upstream) == ["FIX-5"] and list(client) == []


def test_repair_adds_no_finish_reason() -> None:
    cut = gs.TEXT[: gs.TEXT.rindex(b"data:")]
    out, upstream, client = repaired(DIALECT, [cut])
    assert out == cut and fix_rules(upstream) == [] and "GEM-8" in error_rules(client)
