"""Translation between wire formats: streams at any chunking, whole bodies, errors, requests over
several turns, and the load-time feature check."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.engine.fixtures import load_fixture
from mitmllm.protocol.conversation import ApiError
from mitmllm.protocol.conversation import ClientStream
from mitmllm.protocol.conversation import ErrorKind
from mitmllm.protocol.detect import by_name
from mitmllm.protocol.dialect import Assembled
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.payload import json_text
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.stream import check_stream
from mitmllm.protocol.translate import ByteTranslator
from mitmllm.protocol.translate import NotTranslatable
from mitmllm.protocol.translate import StreamTranslator
from mitmllm.protocol.translate import report_gaps
from mitmllm.protocol.translate import translate_error
from mitmllm.protocol.translate import translate_request
from mitmllm.protocol.translate import translate_response
from mitmllm.protocol.translate import uncarried
from tests.streamcheck import chunkings
from tests.support.mockstreams import FORMATS
from tests.support.mockstreams import answer
from tests.support.mockstreams import error_answer
from tests.support.mockstreams import path_of
from tests.support.mockstreams import request_of

PAIRS = [(u, c) for u in FORMATS for c in FORMATS]
HEALTHY = ("healthy", "thinking", "tool", "parallel-tools", "split-utf8", "crlf")
CLIENT_MODEL = "the-model-the-client-asked-for"
#: The rule that says "this stream failed in-band", per client format.
FAILED = {
    "anthropic": "ANT-20",
    "openai-chat": "OAI-16",
    "openai-responses": "RSP-12",
    "gemini": "GEM-9",
}
#: The client's view of a request that asks for usage in the stream (Chat needs it asked).
CLIENT_REQUEST = {"stream": True, "stream_options": {"include_usage": True}}
CAPTURES = sorted((Path(__file__).parent.parent / "captures" / "healthy").glob("*.json"))


def client_stream() -> ClientStream:
    return ClientStream(CLIENT_MODEL, include_usage=True, created=1_700_000_000)


def translate(upstream: str, client: str, chunks: list[bytes]) -> tuple[bytes, ByteTranslator]:
    t = ByteTranslator(upstream, client, client_stream())
    out = b"".join(t.feed(c) for c in chunks) + t.close()
    return out, t


def check_client(client: str, body: bytes) -> tuple[Findings, Assembled, Any]:
    findings, pairs, checker = check_stream(by_name(client), body, request=CLIENT_REQUEST)
    return findings, by_name(client).assemble(pairs), checker  # type: ignore[union-attr]


def serious(findings: Findings) -> list[str]:
    return [str(f) for f in findings if f.severity != "info"]


def meaning(a: Assembled, *, thinking: bool) -> dict[str, Any]:
    """What a client makes of a message: its text, its tool calls (name, input), its reasoning."""
    text = "".join(b.text for b in a.blocks if b.kind == "text")
    calls = [(b.name, b.input) for b in a.blocks if b.kind == "tool_call"]
    out: dict[str, Any] = {"text": text, "calls": calls}
    if thinking:
        out["thinking"] = "".join(b.text for b in a.blocks if b.kind == "thinking")
    return out


# --- streams -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("upstream", "client"), PAIRS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_chunking_gives_the_same_client_stream_which_its_validator_passes(
    upstream: str, client: str, data: st.DataObject
) -> None:
    scenario = data.draw(st.sampled_from(HEALTHY))
    body = answer(upstream, scenario)
    whole, _ = translate(upstream, client, [body])
    parts, t = translate(upstream, client, data.draw(chunkings(body)))
    assert parts == whole
    findings, assembled, checker = check_client(client, parts)
    assert serious(findings) == [], f"{upstream} -> {client} ({scenario})"
    assert checker.validator.complete
    assert checker.validator.model == CLIENT_MODEL
    _, pairs, _ = check_stream(by_name(upstream), body)
    original = by_name(upstream).assemble(pairs)  # type: ignore[union-attr]
    shows = by_name(client).converter().shows_foreign_thinking  # type: ignore[union-attr]
    assert meaning(assembled, thinking=shows) == meaning(original, thinking=shows)
    assert not [f for f in t.findings if f.severity == "error"]


@pytest.mark.parametrize(
    "capture", CAPTURES, ids=lambda p: p.name.split("--")[0] + "-" + p.name.split("--")[2]
)
@pytest.mark.parametrize("client", FORMATS)
def test_recorded_streams_translate_for_every_client(capture: Path, client: str) -> None:
    fixture = load_fixture(capture)
    pieces = [piece for piece, _ in fixture.response.pieces()]
    out, t = translate(fixture.format, client, pieces)
    findings, assembled, checker = check_client(client, out)
    assert serious(findings) == []
    assert checker.validator.complete and t.translator.complete
    assert assembled.blocks, "the answer was lost"


@pytest.mark.parametrize(("upstream", "client"), PAIRS)
@pytest.mark.parametrize("scenario", ["inband-error", "inband-error-first"])
def test_an_in_band_error_becomes_the_clients_error_event_and_nothing_follows(
    upstream: str, client: str, scenario: str
) -> None:
    out, t = translate(upstream, client, [answer(upstream, scenario)])
    findings, _, checker = check_client(client, out)
    assert t.translator.failed and not t.translator.complete
    assert FAILED[client] in findings.rules()
    assert not checker.validator.complete  # no success terminator after the error
    assert [f.rule for f in findings if f.severity == "error"] == [FAILED[client]]


@pytest.mark.parametrize(("upstream", "client"), PAIRS)
def test_half_a_surrogate_pair_in_a_text_reaches_the_client_as_it_came(
    upstream: str, client: str
) -> None:
    """A model's emoji cut at a token boundary streams as half a surrogate pair's escape
    (``\\ud83d``, PAY-4). The client gets the same character in its own format and the rest
    of the answer; the writers once refused to encode it, and the client's stream stopped
    there (through the relay, with a success terminator at the end all the same)."""
    body = answer(upstream, "healthy")
    assert b"Hello" in body
    body = body.replace(b"Hello", b"Hello \\ud83d")
    out, t = translate(upstream, client, [body])
    findings, assembled, checker = check_client(client, out)
    assert t.translator.complete and not t.translator.failed
    assert checker.validator.complete
    assert "XLT-4" not in t.findings.rules() and "PAY-4" in findings.rules()
    _, pairs, _ = check_stream(by_name(upstream), body)
    original = by_name(upstream).assemble(pairs)  # type: ignore[union-attr]
    text = meaning(assembled, thinking=False)["text"]
    assert text == meaning(original, thinking=False)["text"] and "Hello \ud83d" in text


@pytest.mark.parametrize(("upstream", "client"), PAIRS)
def test_half_a_surrogate_pair_in_a_whole_answer_or_a_request_is_carried(
    upstream: str, client: str
) -> None:
    """The same in a whole answer and in a request (a user's message cut inside an emoji): the
    JSON the relay sends holds the same characters, escaped where UTF-8 has no bytes for them."""
    raw = answer(upstream, "healthy", stream=False)
    assert b"Hello" in raw
    payload, _ = parse_json(raw.replace(b"Hello", b"Hello \\ud83d"))
    body = translate_response(upstream, client, payload, client_stream(), Findings())
    sent = json_text(body).encode()
    assert "Hello \ud83d" in json.dumps(json.loads(sent), ensure_ascii=False)
    request = orjson.dumps(request_of(client)).replace(b"weather", b"weather \\udc00", 1)
    request_json, _ = parse_json(request)
    translated = translate_request(client, upstream, path_of(client), request_json)
    sent = json_text(translated.call.body).encode()
    assert "weather \udc00" in json.dumps(json.loads(sent), ensure_ascii=False)


@pytest.mark.parametrize(("upstream", "client"), PAIRS)
def test_a_cut_stream_never_gets_a_success_terminator(upstream: str, client: str) -> None:
    body = answer(upstream, "tool")
    out, t = translate(upstream, client, [body[: len(body) * 2 // 3]])
    _, _, checker = check_client(client, out)
    assert not t.translator.complete and not checker.validator.complete


@pytest.mark.parametrize(("upstream", "client"), PAIRS)
def test_the_translator_can_end_a_stream_with_the_clients_error(upstream: str, client: str) -> None:
    body = answer(upstream, "healthy")
    t = StreamTranslator(upstream, client, client_stream(), Findings())
    _, pairs, _ = check_stream(by_name(upstream), body)
    out = b"".join(t.event(ev, p) for ev, p in pairs[:3])
    out += t.fail(ApiError(ErrorKind.API_ERROR, "upstream stalled"))
    findings, _, checker = check_client(client, out)
    assert FAILED[client] in findings.rules() and not checker.validator.complete


def anthropic_stream_with_cache() -> bytes:
    def ev(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {orjson.dumps(data).decode()}\n\n".encode()

    usage = {
        "input_tokens": 10,
        "output_tokens": 1,
        "cache_read_input_tokens": 900,
        "cache_creation_input_tokens": 90,
    }
    start = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return b"".join(
        [
            ev("message_start", {"type": "message_start", "message": start}),
            ev(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            ev(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "Hi"},
                },
            ),
            ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ev(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                    "usage": {"output_tokens": 7},
                },
            ),
            ev("message_stop", {"type": "message_stop"}),
        ]
    )


def test_cache_tokens_and_the_stop_reason_reach_a_chat_client() -> None:
    out, _ = translate("anthropic", "openai-chat", [anthropic_stream_with_cache()])
    _, assembled, _ = check_client("openai-chat", out)
    assert assembled.stop_reason == "length"
    assert assembled.usage["prompt_tokens"] == 1000  # the whole prompt, cache included
    assert assembled.usage["prompt_tokens_details"] == {"cached_tokens": 900}
    assert assembled.usage["completion_tokens"] == 7


def test_cache_tokens_come_back_to_an_anthropic_client() -> None:
    chat, _ = translate("anthropic", "openai-chat", [anthropic_stream_with_cache()])
    back, _ = translate("openai-chat", "anthropic", [chat])
    _, assembled, _ = check_client("anthropic", back)
    assert assembled.stop_reason == "max_tokens"
    # Chat has no cache-write count: it folds into the uncached input
    assert assembled.usage["input_tokens"] == 100
    assert assembled.usage["cache_read_input_tokens"] == 900
    assert assembled.usage["output_tokens"] == 7


def test_a_chat_stream_without_usage_is_reported() -> None:
    body = answer("openai-chat", "healthy")
    without = b"".join(
        block + b"\n\n" for block in body.split(b"\n\n") if block and b'"usage":{' not in block
    )
    out, t = translate("openai-chat", "anthropic", [without])
    findings, assembled, _ = check_client("anthropic", out)
    assert serious(findings) == []
    assert "XLT-5" in t.findings.rules()
    assert assembled.usage["output_tokens"] == 0


def test_interleaved_chat_tool_calls_fail_the_client_stream() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {orjson.dumps(payload).decode()}\n\n".encode()

    def call(i: int, **fn: str) -> dict[str, Any]:
        head = {"id": f"call_{i}", "type": "function"} if "name" in fn else {}
        return {"tool_calls": [{"index": i, **head, "function": fn}]}

    body = b"".join(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk(call(0, name="a", arguments='{"x":')),
            chunk(call(1, name="b", arguments="{}")),
            chunk(call(0, arguments="1}")),
            chunk({}, "tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )
    out, t = translate("openai-chat", "anthropic", [body])
    findings, _, _ = check_client("anthropic", out)
    assert "XLT-4" in t.findings.rules()
    assert t.translator.failed and "ANT-20" in findings.rules()


def test_memory_per_stream_does_not_grow_with_the_stream() -> None:
    """The translator keeps per-stream state only: a stream ten times as long peaks at about
    the same memory (input and output are dropped chunk by chunk, as a relay does)."""

    envelope = b'"id":"c","object":"chat.completion.chunk","created":1,"model":"m"'

    def chunk(delta: bytes, finish: bytes = b"null") -> bytes:
        choice = b'{"index":0,"delta":' + delta + b',"finish_reason":' + finish + b"}"
        return b"data: {" + envelope + b',"choices":[' + choice + b"]}\n\n"

    def peak(events: int) -> int:
        piece = chunk(b'{"content":"lorem ipsum dolor "}')
        t = ByteTranslator("openai-chat", "anthropic", client_stream())
        t.feed(chunk(b'{"role":"assistant","content":""}'))
        tracemalloc.start()
        for _ in range(events):
            t.feed(piece)
        t.feed(chunk(b"{}", b'"stop"') + b"data: [DONE]\n\n")
        t.close()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(2_000), peak(20_000)
    assert large < small * 2 + 64 * 1024, (small, large)


def test_a_format_without_a_converter_is_refused() -> None:
    with pytest.raises(NotTranslatable, match="cannot translate|unknown wire format"):
        ByteTranslator("openai-chat", "smoke-signals", client_stream())


# --- whole responses and errors ----------------------------------------------------------------


@pytest.mark.parametrize(("upstream", "client"), PAIRS)
@pytest.mark.parametrize("scenario", ["healthy", "tool"])
def test_whole_responses_translate_and_pass_the_clients_checks(
    upstream: str, client: str, scenario: str
) -> None:
    payload, _ = parse_json(answer(upstream, scenario, stream=False))
    findings = Findings()
    body = translate_response(upstream, client, payload, client_stream(), findings)
    from mitmllm.protocol.stream import check_body

    checks = Findings()
    check_body(
        by_name(client),
        checks,
        status=200,
        body=orjson.dumps(body),
        content_type="application/json",
    )
    assert serious(checks) == []
    assembled = by_name(client).assemble([(_event(), body)])  # type: ignore[union-attr]
    original = by_name(upstream).assemble([(_event(), payload)])  # type: ignore[union-attr]
    if client != "openai-responses" and upstream != "openai-responses":  # Responses has no
        # whole-body assembly for humans; the checks above cover it
        assert meaning(assembled, thinking=False) == meaning(original, thinking=False)


def _event() -> Any:
    from mitmllm.protocol.sse import Event

    return Event(0, 0, b"")


@pytest.mark.parametrize(
    ("upstream", "scenario", "client", "status", "kind"),
    [
        ("anthropic", "overloaded", "openai-chat", 503, "server_error"),
        ("anthropic", "overloaded", "gemini", 503, "UNAVAILABLE"),
        ("openai-chat", "overloaded", "anthropic", 529, "overloaded_error"),
        ("gemini", "overloaded", "anthropic", 529, "overloaded_error"),
        ("anthropic", "rate-limited", "openai-chat", 429, "rate_limit_error"),
        ("openai-chat", "rate-limited", "anthropic", 429, "rate_limit_error"),
        ("gemini", "rate-limited", "openai-responses", 429, "rate_limit_error"),
        ("openai-responses", "rate-limited", "gemini", 429, "RESOURCE_EXHAUSTED"),
        ("openai-chat", "bad-request", "anthropic", 400, "invalid_request_error"),
        ("anthropic", "server-error", "openai-chat", 500, "server_error"),
    ],
)
def test_error_bodies_keep_their_meaning_in_the_clients_format(
    upstream: str, scenario: str, client: str, status: int, kind: str
) -> None:
    up_status, body, headers = error_answer(upstream, scenario)
    out = translate_error(upstream, client, up_status, body, retry_after=headers.get("retry-after"))
    assert out.status == status
    payload = orjson.loads(out.body)
    err = payload["error"]
    assert kind in (err.get("type"), err.get("status"))
    assert "mock upstream" in err["message"]
    assert out.headers.get("retry-after") == headers.get("retry-after")
    if status == 429:
        assert out.headers["retry-after"] == "2"


def test_a_non_json_error_body_still_becomes_the_clients_error() -> None:
    out = translate_error("openai-chat", "anthropic", 502, b"<html>Bad gateway</html>")
    assert out.status == 502
    assert orjson.loads(out.body)["error"]["type"] == "api_error"


# --- requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("client", "upstream"), PAIRS)
def test_a_request_reaches_every_upstream_with_its_meaning(client: str, upstream: str) -> None:
    t = translate_request(client, upstream, path_of(client), request_of(client), model="up-model")
    call = t.call
    assert call.path.startswith(
        path_of(upstream).rsplit(":", 1)[0].replace("gemini-2.5-flash", "up-model")
    )
    back = by_name(upstream).converter().parse_request(call.path, call.body, [])  # type: ignore[union-attr]
    assert back.model == "up-model"
    assert back.stream is True
    assert [m.role for m in back.messages] == ["user"]
    assert back.messages[0].parts[0].text == "What is the weather in Paris?"  # type: ignore[union-attr]
    assert [tool.name for tool in back.tools] == ["get_weather"]
    assert back.tools[0].schema["properties"] == {"city": {"type": "string"}}
    assert [g for g in t.gaps if g.severity != "info"] == []


def test_a_chat_upstream_is_asked_for_usage_in_the_stream() -> None:
    t = translate_request("anthropic", "openai-chat", "/v1/messages", request_of("anthropic"))
    assert t.call.body["stream_options"] == {"include_usage": True}
    assert t.call.body["max_tokens"] == 256


ANTHROPIC_CONVERSATION: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 1000,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "temperature": 0.2,
    "top_p": 0.9,
    "stop_sequences": ["END"],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18 C"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
}


@pytest.mark.parametrize("upstream", FORMATS)
def test_a_multi_turn_conversation_round_trips_through_every_format(upstream: str) -> None:
    gaps_to: list[Any] = []
    t = translate_request("anthropic", upstream, "/v1/messages", ANTHROPIC_CONVERSATION, model="m")
    gaps_to = t.gaps
    back = translate_request(upstream, "anthropic", t.call.path, t.call.body, model="m")
    body = back.call.body
    original = translate_request(
        "anthropic", "anthropic", "/v1/messages", ANTHROPIC_CONVERSATION, model="m"
    ).call.body
    assert body["messages"] == original["messages"]
    assert body["system"] == original["system"]
    assert body["tools"][0]["name"] == "get_weather"
    if upstream != "gemini":  # Gemini cannot forbid parallel calls (a gap)
        assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    else:
        assert "parallel_tool_calls" in [g.path for g in gaps_to]
    if upstream != "openai-responses":  # Responses has no stop sequences (a gap)
        assert body["stop_sequences"] == ["END"]
    else:
        assert "stop" in [g.path for g in gaps_to]
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9


def test_tool_call_ids_stay_consistent_over_turns_across_formats() -> None:
    """Turn 1: an Anthropic client is answered by a Chat upstream with a tool call. Turn 2: the
    client sends the result back with the id it saw; the Chat upstream gets the same id on the
    call and on the result."""
    chat_stream = answer("openai-chat", "tool")
    out, _ = translate("openai-chat", "anthropic", [chat_stream])
    _, assembled, _ = check_client("anthropic", out)
    (call,) = [b for b in assembled.blocks if b.kind == "tool_call"]
    _, pairs, _ = check_stream(by_name("openai-chat"), chat_stream)
    (original,) = [
        b for b in by_name("openai-chat").assemble(pairs).blocks if b.kind == "tool_call"
    ]  # type: ignore[union-attr]
    assert call.id == original.id
    turn2 = {
        **request_of("anthropic"),
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C"}],
            },
        ],
    }
    body = translate_request("anthropic", "openai-chat", "/v1/messages", turn2).call.body
    assistant, tool = body["messages"][1], body["messages"][2]
    assert assistant["tool_calls"][0]["id"] == tool["tool_call_id"] == original.id
    assert tool == {"role": "tool", "tool_call_id": original.id, "content": "18 C"}


def test_gemini_calls_without_ids_get_ids_that_find_their_results() -> None:
    gemini_stream = answer("gemini", "parallel-tools")
    out, _ = translate("gemini", "openai-chat", [gemini_stream])
    _, assembled, _ = check_client("openai-chat", out)
    calls = [b for b in assembled.blocks if b.kind == "tool_call"]
    assert len(calls) == 2 and len({c.id for c in calls}) == 2
    turn2 = {
        **request_of("openai-chat"),
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": orjson.dumps(c.input).decode()},
                    }
                    for c in calls
                ],
            },
            *(
                {"role": "tool", "tool_call_id": c.id, "content": f"result {i}"}
                for i, c in enumerate(calls)
            ),
        ],
    }
    body = translate_request("openai-chat", "gemini", "/v1/chat/completions", turn2).call.body
    model_turn, user_turn = body["contents"][1], body["contents"][2]
    names = [p["functionCall"]["name"] for p in model_turn["parts"]]
    answered = [p["functionResponse"]["name"] for p in user_turn["parts"]]
    assert answered == names
    assert [p["functionResponse"]["response"] for p in user_turn["parts"]] == [
        {"result": "result 0"},
        {"result": "result 1"},
    ]


def test_tool_ids_other_formats_reject_are_rewritten_alike_everywhere() -> None:
    weird = "functions.get_weather:0"
    conversation = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": weird,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": weird, "content": "18 C"},
        ],
    }
    body = translate_request(
        "openai-chat", "anthropic", "/v1/chat/completions", conversation
    ).call.body
    use = body["messages"][1]["content"][0]
    result = body["messages"][2]["content"][0]
    assert use["id"] == result["tool_use_id"] == "functions_get_weather_0"


def test_tool_names_the_upstreams_rules_rename_come_back_under_the_clients_name() -> None:
    long_name = "mcp__server__" + "x" * 70
    request = {
        **request_of("anthropic"),
        "tools": [{"name": long_name, "input_schema": {"type": "object", "properties": {}}}],
    }
    t = translate_request("anthropic", "openai-chat", "/v1/messages", request)
    upstream_name = t.call.body["tools"][0]["function"]["name"]
    assert upstream_name != long_name and len(upstream_name) <= 64
    assert t.names == {upstream_name: long_name}
    body = answer("openai-chat", "tool").replace(b'"get_weather"', orjson.dumps(upstream_name))
    tr = ByteTranslator("openai-chat", "anthropic", client_stream(), names=t.names)
    out = tr.feed(body) + tr.close()
    _, assembled, _ = check_client("anthropic", out)
    assert [b.name for b in assembled.blocks if b.kind == "tool_call"] == [long_name]


def test_a_stored_conversation_cannot_be_carried() -> None:
    request = {**request_of("openai-responses"), "previous_response_id": "resp_123"}
    t = translate_request("openai-responses", "anthropic", "/v1/responses", request)
    findings = Findings()
    report_gaps(t.gaps, findings)
    assert any(
        f.rule == "XLT-1" and f.severity == "error" and "/previous_response_id" in f.message
        for f in findings
    )


def test_thinking_settings_follow_the_request() -> None:
    chat = {**request_of("openai-chat"), "reasoning_effort": "high", "max_tokens": 30000}
    body = translate_request("openai-chat", "anthropic", "/v1/chat/completions", chat).call.body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 24576}
    anthropic = {
        **request_of("anthropic"),
        "max_tokens": 8000,
        "thinking": {"type": "enabled", "budget_tokens": 2000},
    }
    assert (
        translate_request("anthropic", "openai-chat", "/v1/messages", anthropic).call.body[
            "reasoning_effort"
        ]
        == "low"
    )
    gemini = translate_request("anthropic", "gemini", "/v1/messages", anthropic).call.body
    assert gemini["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 2000,
        "includeThoughts": True,
    }
    small = {**request_of("openai-chat"), "reasoning_effort": "high", "max_tokens": 500}
    t = translate_request("openai-chat", "anthropic", "/v1/chat/completions", small)
    assert "thinking" not in t.call.body and "reasoning" in [g.path for g in t.gaps]


# --- load time -----------------------------------------------------------------------------------


def test_uncarried_names_what_the_upstream_format_cannot_carry() -> None:
    features = ["stop", "top_k", "parallel_tool_calls", "tools", "images"]
    assert [g.path for g in uncarried("anthropic", "openai-responses", features)] == [
        "stop",
        "top_k",
    ]
    assert [g.path for g in uncarried("anthropic", "gemini", features)] == ["parallel_tool_calls"]
    assert [g.path for g in uncarried("anthropic", "openai-chat", features)] == ["top_k"]
    assert uncarried("openai-chat", "anthropic", features) == []
    # what the client's own format cannot say is never asked of the upstream
    assert uncarried("openai-chat", "openai-responses", ["top_k"]) == []


def test_uncarried_rejects_an_unknown_feature() -> None:
    (gap,) = uncarried("anthropic", "openai-chat", ["top_kk"])
    assert gap.severity == "error" and "unknown request feature" in gap.reason


def test_a_requests_features_are_what_it_uses() -> None:
    from mitmllm.protocol.convert.anthropic import CONVERTER

    request = CONVERTER.parse_request("/v1/messages", ANTHROPIC_CONVERSATION, [])
    assert request.features() == {
        "system",
        "text",
        "images",
        "tools",
        "tool_calls",
        "tool_results",
        "tool_choice.required",
        "parallel_tool_calls",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
    }


# --- any valid stream ----------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@st.composite
def conversations(draw: st.DrawFn) -> list[Any]:
    """A valid neutral stream: Start, blocks of text / thinking / tool calls, Finish, Usage, End."""
    from mitmllm.protocol.conversation import BlockStart
    from mitmllm.protocol.conversation import BlockStop
    from mitmllm.protocol.conversation import End
    from mitmllm.protocol.conversation import Finish
    from mitmllm.protocol.conversation import Start
    from mitmllm.protocol.conversation import Stop
    from mitmllm.protocol.conversation import TextDelta
    from mitmllm.protocol.conversation import ThinkingDelta
    from mitmllm.protocol.conversation import ToolArgsDelta
    from mitmllm.protocol.conversation import Usage
    from mitmllm.protocol.conversation import UsageUpdate

    events: list[Any] = [Start("up_1", "up-model", Usage(input_tokens=draw(st.integers(0, 99))))]
    kinds = draw(
        st.lists(st.sampled_from(["text", "thinking", "tool_call"]), min_size=1, max_size=4)
    )
    kinds.sort(key=lambda k: k == "tool_call")  # calls last: text after them is OAI-14
    calls = 0
    for i, kind in enumerate(kinds):
        if kind == "tool_call":
            events.append(BlockStart(i, kind, f"call_{calls}", f"tool_{calls}"))
            calls += 1
            if draw(st.integers(0, 4)) == 0:  # a call without arguments: no fragment at all
                events.append(BlockStop(i))
                continue
            args = orjson.dumps({"q": draw(_TEXT), "n": draw(st.integers(-5, 5))}).decode()
            cuts = sorted(draw(st.lists(st.integers(1, max(1, len(args) - 1)), max_size=3)))
            pieces = [args[a:b] for a, b in zip([0, *cuts], [*cuts, len(args)], strict=True)]
            events += [ToolArgsDelta(i, p) for p in pieces if p]
        else:
            events.append(BlockStart(i, kind))
            delta = TextDelta if kind == "text" else ThinkingDelta
            events += [delta(i, t) for t in draw(st.lists(_TEXT, min_size=1, max_size=3))]
        events.append(BlockStop(i))
    stop = Stop.TOOL_USE if calls else draw(st.sampled_from([Stop.END, Stop.MAX_TOKENS]))
    events.append(Finish(stop))
    usage = Usage(output_tokens=draw(st.integers(1, 500)), cache_read=draw(st.integers(0, 50)))
    events += [UsageUpdate(usage), End()]
    return events


def written(fmt: str, events: list[Any]) -> bytes:
    """The stream an upstream of `fmt` sends for these neutral events (its own writer)."""
    from mitmllm.protocol.translate import converter

    writer = converter(fmt).writer(ClientStream("up-model", include_usage=True), Findings())
    return b"".join(writer.write(e) for e in events)


@pytest.mark.parametrize(("upstream", "client"), PAIRS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=conversations(), data=st.data())
def test_any_valid_stream_translates_at_any_chunking(
    upstream: str, client: str, events: list[Any], data: st.DataObject
) -> None:
    body = written(upstream, events)
    up_findings, up_pairs, up_checker = check_stream(
        by_name(upstream), body, request=CLIENT_REQUEST
    )
    assert serious(up_findings) == [] and up_checker.validator.complete  # a valid upstream stream
    whole, _ = translate(upstream, client, [body])
    parts, _ = translate(upstream, client, data.draw(chunkings(body)))
    assert parts == whole
    findings, assembled, checker = check_client(client, parts)
    assert serious(findings) == [], f"{upstream} -> {client}"
    assert checker.validator.complete and checker.validator.model == CLIENT_MODEL
    original = by_name(upstream).assemble(up_pairs)  # type: ignore[union-attr]
    shows = by_name(client).converter().shows_foreign_thinking  # type: ignore[union-attr]
    thinking = shows and by_name(upstream).converter().shows_foreign_thinking  # type: ignore[union-attr]
    assert meaning(assembled, thinking=thinking) == meaning(original, thinking=thinking)
