"""Cross-format fail-over end to end: the official SDKs' stream helpers through a real in-process
mitmproxy with mitmllm's addons, the relay translating to an upstream of another wire format.

Each case runs three turns of one conversation: a text answer, a tool call, and a second turn
that carries the tool result back. The upstream of the other format serves either alone (the
route always translates) or as the fallback after the primary answered 529 or stalled
before its first event. Each upstream must see exactly one request per turn, and the id the
client saw on the tool call must be the id the upstream gets on the call and on its result.
Responses and Gemini clients (openai's `responses.stream`, google-genai's
`generate_content_stream`) get a text answer and a tool call the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from google import genai
from google.genai import types as genai_types

from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import OPENAI_RESPONSES
from mitmllm.mock.upstream import MockUpstream
from tests.proxyharness import Proxy
from tests.relayharness import CLIENT_KEY
from tests.relayharness import CLIENT_MODEL
from tests.relayharness import CLIENT_TIMEOUT
from tests.relayharness import TEXT
from tests.relayharness import ScriptedUpstream
from tests.relayharness import ask
from tests.relayharness import config
from tests.relayharness import dialect
from tests.relayharness import failover_proxy
from tests.relayharness import meta
from tests.relayharness import upstream
from tests.relayharness import write_config

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
#: How the primary fails before the first event: HTTP 529 with the client format's overloaded
#: error, or a stall before the first event (None: there is no primary; the route always
#: serves the client through translation).
PRIMARIES = [None, "529", "stall-before-first"]
#: The relay's outcomes per turn for each primary.
OUTCOMES = {
    None: ["ok"],
    "529": ["http_529", "ok"],
    "stall-before-first": ["first_event_timeout", "ok"],
}


@asynccontextmanager
async def primary_upstream(client: str, how: str | None) -> AsyncIterator[Any]:
    """The client-format primary: scripted for a 529 (the mock answers OpenAI formats' overload
    with 503), the mock's scenario otherwise."""
    if how == "529":
        body = dialect(client).error_body(529, "Overloaded", "overloaded_error")
        json = {"content-type": "application/json"}
        async with ScriptedUpstream(529, json, [(0.0, body)]) as scripted:
            yield scripted
    else:
        async with MockUpstream(name="primary") as mock:
            yield mock


@asynccontextmanager
async def served_across(
    tmp_path: Path, client: str, other: str, primary: str | None, models: dict[str, str]
) -> AsyncIterator[tuple[Proxy, Any, MockUpstream]]:
    """A proxy whose route takes `client` requests and serves them from a `other` upstream,
    after a `client`-format primary failing as `primary` says, if given."""
    async with primary_upstream(client, primary) as p, MockUpstream(name="fallback") as f:
        ups = [upstream("fallback", f.url, other)]
        chain: list[dict[str, Any]] = []
        if primary is not None:
            url = p.url if isinstance(p, ScriptedUpstream) else p.url_for(primary)
            ups.append(upstream("primary", url, client))
            chain.append({"upstream": "primary"})
        chain.append({"upstream": "fallback", "models": models})
        cfg = config(ups, chain, match={"format": client}, translate=True)
        async with failover_proxy(write_config(tmp_path, cfg), p.url) as proxy:
            yield proxy, p, f


def in_thread(coro: Any) -> Any:
    """Run a client on its own loop in a worker thread, as a real client runs in its own
    process (SDK parsing must not delay the proxy's timers)."""
    return asyncio.to_thread(asyncio.run, coro)


# --- Anthropic client, OpenAI Chat upstream ----------------------------------------------------


async def anthropic_turn(base_url: str, model: str, messages: list[Any]) -> Any:
    client = anthropic.AsyncAnthropic(
        base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=CLIENT_TIMEOUT
    )
    try:
        async with client.messages.stream(
            model=model,
            max_tokens=256,
            messages=messages,
            tools=[{"name": "get_weather", "description": "Weather", "input_schema": SCHEMA}],
        ) as stream:
            async for _ in stream:
                pass
            return await stream.get_final_message()
    finally:
        await client.close()


@pytest.mark.parametrize("primary", PRIMARIES)
async def test_an_anthropic_client_is_served_by_an_openai_chat_upstream(
    tmp_path: Path, primary: str | None
) -> None:
    models = {"*~tool": "gpt-4.1-mini~tool", "*": "gpt-4.1-mini"}
    async with served_across(tmp_path, ANTHROPIC, OPENAI_CHAT, primary, models) as (proxy, p, f):
        question = {"role": "user", "content": "What is the weather in Paris?"}
        text = await in_thread(anthropic_turn(proxy.url, "claude-sonnet-4-6", [question]))
        assert [b.text for b in text.content if b.type == "text"] == [TEXT]
        assert (text.model, text.stop_reason) == ("claude-sonnet-4-6", "end_turn")
        assert text.usage.output_tokens > 0

        call = await in_thread(anthropic_turn(proxy.url, "claude-sonnet-4-6~tool", [question]))
        (use,) = [b for b in call.content if b.type == "tool_use"]
        assert (use.name, call.stop_reason) == ("get_weather", "tool_use")
        assert use.input == {"city": "Paris"}

        followup = [
            question,
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in call.content],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C"}],
            },
        ]
        answer = await in_thread(anthropic_turn(proxy.url, "claude-sonnet-4-6", followup))
        assert [b.text for b in answer.content if b.type == "text"] == [TEXT]

        flows = await proxy.log.wait(3)
    # exactly one request per upstream per turn
    assert len(f.received) == 3
    assert len(p.received) == (0 if primary is None else 3)
    assert [r.path for r in f.received] == ["/v1/chat/completions"] * 3
    sent = f.received[2].json
    assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
    tool = next(m for m in sent["messages"] if m["role"] == "tool")
    assert assistant["tool_calls"][0]["id"] == tool["tool_call_id"] == use.id
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
    assert tool["content"] == "18 C"
    assert sent["stream_options"] == {"include_usage": True}
    # the client's Anthropic key never reaches the other API
    keys = {"x-api-key", "authorization"}
    assert all(not keys & r.headers.keys() for r in f.received)
    for flow in flows:
        info = meta(flow)
        assert info["translated"] == "anthropic -> openai-chat"
        assert info["upstream"] == "fallback"
        assert [a["outcome"] for a in info["attempts"]] == OUTCOMES[primary]
        # shown at the upstream that served it, with the client's own request path
        assert (flow.request.port, flow.request.path) == (f.port, "/v1/messages")
        errors = [x for x in info["findings"] if x["severity"] == "error"]
        assert errors == [], errors


# --- OpenAI Chat client, Anthropic upstream ----------------------------------------------------


async def chat_turn(base_url: str, model: str, messages: list[Any]) -> Any:
    client = openai.AsyncOpenAI(
        base_url=base_url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=CLIENT_TIMEOUT
    )
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}
    try:
        async with client.chat.completions.stream(
            model=model,
            messages=messages,
            tools=[tool],  # type: ignore[list-item]
        ) as stream:
            async for _ in stream:
                pass
            return await stream.get_final_completion()
    finally:
        await client.close()


@pytest.mark.parametrize("primary", PRIMARIES)
async def test_an_openai_chat_client_is_served_by_an_anthropic_upstream(
    tmp_path: Path, primary: str | None
) -> None:
    models = {"*~tool": "claude-sonnet-4-6~tool", "*": "claude-sonnet-4-6"}
    async with served_across(tmp_path, OPENAI_CHAT, ANTHROPIC, primary, models) as (proxy, p, f):
        question = {"role": "user", "content": "What is the weather in Paris?"}
        text = await in_thread(chat_turn(proxy.url, "gpt-4o", [question]))
        choice = text.choices[0]
        assert (choice.message.content, choice.finish_reason) == (TEXT, "stop")
        assert text.model == "gpt-4o"

        call = await in_thread(chat_turn(proxy.url, "gpt-4o~tool", [question]))
        choice = call.choices[0]
        assert choice.finish_reason == "tool_calls"
        (tc,) = choice.message.tool_calls
        assert tc.function.name == "get_weather"
        assert orjson.loads(tc.function.arguments) == {"city": "Paris"}

        followup = [
            question,
            {
                "role": "assistant",
                "content": choice.message.content,
                "tool_calls": [
                    {
                        "id": tc.id,
                        "type": "function",
                        "function": {"name": tc.function.name, "arguments": tc.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": tc.id, "content": "18 C"},
        ]
        answer = await in_thread(chat_turn(proxy.url, "gpt-4o", followup))
        assert answer.choices[0].message.content == TEXT

        flows = await proxy.log.wait(3)
    assert len(f.received) == 3
    assert len(p.received) == (0 if primary is None else 3)
    assert [r.path for r in f.received] == ["/v1/messages"] * 3
    sent = f.received[2].json
    use = sent["messages"][1]["content"][-1]
    result = sent["messages"][2]["content"][0]
    assert use["type"] == "tool_use" and result["type"] == "tool_result"
    assert use["id"] == result["tool_use_id"] == tc.id
    assert result["content"] == "18 C"
    assert all("authorization" not in r.headers for r in f.received)
    for flow in flows:
        info = meta(flow)
        assert info["translated"] == "openai-chat -> anthropic"
        assert info["upstream"] == "fallback"
        assert [a["outcome"] for a in info["attempts"]] == OUTCOMES[primary]
        errors = [x for x in info["findings"] if x["severity"] == "error"]
        assert errors == [], errors


# --- errors --------------------------------------------------------------------------------------


async def test_when_every_upstream_fails_the_client_gets_its_own_formats_status(
    tmp_path: Path,
) -> None:
    """An Anthropic client whose only upstream is an overloaded OpenAI host gets 529
    overloaded_error (the Anthropic SDK's OverloadedError), not OpenAI's 503."""
    async with MockUpstream(name="only") as only:
        ups = [upstream("only", only.url_for("overloaded"), OPENAI_CHAT)]
        cfg = config(
            ups,
            [{"upstream": "only", "models": {"*": "gpt-4.1-mini"}}],
            match={"format": ANTHROPIC},
            translate=True,
        )
        async with failover_proxy(write_config(tmp_path, cfg), only.url) as proxy:
            question = {"role": "user", "content": "hi"}
            with pytest.raises(anthropic.APIStatusError) as info:
                await in_thread(anthropic_turn(proxy.url, "claude-sonnet-4-6", [question]))
    assert info.value.status_code == 529
    assert isinstance(info.value, anthropic.InternalServerError)
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert len(only.received) == 1


async def test_a_rate_limit_keeps_429_and_retry_after_across_formats(tmp_path: Path) -> None:
    async with MockUpstream(name="only") as only:
        ups = [upstream("only", only.url_for("rate-limited"), ANTHROPIC)]
        cfg = config(
            ups,
            [{"upstream": "only", "models": {"*": "claude-sonnet-4-6"}}],
            match={"format": OPENAI_CHAT},
            translate=True,
        )
        async with failover_proxy(write_config(tmp_path, cfg), only.url) as proxy:
            with pytest.raises(openai.RateLimitError) as info:
                await in_thread(chat_turn(proxy.url, "gpt-4o", [{"role": "user", "content": "hi"}]))
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "2"
    assert len(only.received) == 1


async def test_a_whole_answer_is_translated_too(tmp_path: Path) -> None:
    async def ask(base_url: str) -> Any:
        client = anthropic.AsyncAnthropic(
            base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=CLIENT_TIMEOUT
        )
        try:
            return await client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=64,
                messages=[{"role": "user", "content": "hi"}],
            )
        finally:
            await client.close()

    models = {"*": "gpt-4.1-mini"}
    async with served_across(tmp_path, ANTHROPIC, OPENAI_CHAT, None, models) as (proxy, _, f):
        message = await in_thread(ask(proxy.url))
    assert [b.text for b in message.content if b.type == "text"] == [TEXT]
    assert (message.model, message.stop_reason) == ("claude-sonnet-4-6", "end_turn")
    assert message.usage.input_tokens > 0
    assert "stream" not in f.received[0].json
    assert f.received[0].json["model"] == "gpt-4.1-mini"


async def test_a_sticky_conversation_stays_on_the_translating_fallback(tmp_path: Path) -> None:
    sticky = {"key": "header:x-session-id", "ttl": "10m"}
    session = {"x-session-id": "conversation-a"}
    async with MockUpstream(default_scenario="overloaded") as p, MockUpstream() as f:
        ups = [upstream("primary", p.url, ANTHROPIC), upstream("fallback", f.url, OPENAI_CHAT)]
        chain = [{"upstream": "primary"}, {"upstream": "fallback", "models": {"*": "gpt-4.1"}}]
        cfg = config(ups, chain, translate=True, sticky=sticky)
        async with failover_proxy(write_config(tmp_path, cfg), p.url) as proxy:
            first = await ask(proxy.url, ANTHROPIC, headers=session)
            p.default_scenario = "healthy"  # the primary recovers at once
            again = await ask(proxy.url, ANTHROPIC, headers=session)
            flows = await proxy.log.wait(2)
    assert first.complete and again.complete
    assert again.model == CLIENT_MODEL[ANTHROPIC]  # restamped: the model the client asked for
    assert len(p.received) == 1, "the second turn went straight to the fallback"
    assert [r.path for r in f.received] == ["/v1/chat/completions"] * 2
    assert [a["upstream"] for a in meta(flows[1])["attempts"]] == ["fallback"]
    assert meta(flows[1])["translated"] == "anthropic -> openai-chat"


# --- Responses and Gemini clients ----------------------------------------------------------------


async def responses_turn(base_url: str, model: str) -> Any:
    client = openai.AsyncOpenAI(
        base_url=base_url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=CLIENT_TIMEOUT
    )
    tool = {"type": "function", "name": "get_weather", "parameters": SCHEMA, "strict": False}
    try:
        async with client.responses.stream(
            model=model,
            input="What is the weather in Paris?",
            tools=[tool],  # type: ignore[list-item]
        ) as stream:
            async for _ in stream:
                pass
            return await stream.get_final_response()
    finally:
        await client.close()


async def gemini_turn(base_url: str, model: str) -> list[Any]:
    client = genai.Client(
        api_key=CLIENT_KEY,
        http_options=genai_types.HttpOptions(
            base_url=base_url,
            api_version="v1beta",
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )
    tool = genai_types.Tool(
        function_declarations=[
            genai_types.FunctionDeclaration(
                name="get_weather", description="Weather", parameters_json_schema=SCHEMA
            )
        ]
    )
    try:
        stream = await client.aio.models.generate_content_stream(
            model=model,
            contents="What is the weather in Paris?",
            config=genai_types.GenerateContentConfig(tools=[tool]),
        )
        return [chunk async for chunk in stream]
    finally:
        await client.aio.aclose()


@pytest.mark.parametrize("primary", [None, "529"])
async def test_a_responses_client_is_served_by_an_anthropic_upstream(
    tmp_path: Path, primary: str | None
) -> None:
    models = {"*~tool": "claude-sonnet-4-6~tool", "*": "claude-sonnet-4-6"}
    async with served_across(tmp_path, OPENAI_RESPONSES, ANTHROPIC, primary, models) as (
        proxy,
        p,
        f,
    ):
        text = await in_thread(responses_turn(proxy.url, "gpt-5-mini"))
        call = await in_thread(responses_turn(proxy.url, "gpt-5-mini~tool"))
        flows = await proxy.log.wait(2)
    assert (text.output_text, text.status, text.model) == (TEXT, "completed", "gpt-5-mini")
    (fc,) = [o for o in call.output if o.type == "function_call"]
    assert fc.name == "get_weather" and orjson.loads(fc.arguments) == {"city": "Paris"}
    assert [r.path for r in f.received] == ["/v1/messages"] * 2
    assert all(r.headers.get("anthropic-version") for r in f.received)
    for flow in flows:
        info = meta(flow)
        assert info["translated"] == "openai-responses -> anthropic"
        assert [a["outcome"] for a in info["attempts"]] == OUTCOMES[primary]
        assert [x for x in info["findings"] if x["severity"] == "error"] == []


@pytest.mark.parametrize("primary", [None, "529"])
async def test_a_gemini_client_is_served_by_an_openai_chat_upstream(
    tmp_path: Path, primary: str | None
) -> None:
    models = {"*~tool": "gpt-4.1-mini~tool", "*": "gpt-4.1-mini"}
    async with served_across(tmp_path, GEMINI, OPENAI_CHAT, primary, models) as (proxy, p, f):
        text = await in_thread(gemini_turn(proxy.url, "gemini-2.5-flash"))
        call = await in_thread(gemini_turn(proxy.url, "gemini-2.5-flash~tool"))
        flows = await proxy.log.wait(2)
    said = "".join(
        part.text or ""
        for chunk in text
        for cand in chunk.candidates or ()
        for part in (cand.content.parts if cand.content else None) or ()
    )
    assert said == TEXT
    assert text[-1].candidates[0].finish_reason == "STOP"
    (fn,) = [
        part.function_call
        for chunk in call
        for cand in chunk.candidates or ()
        for part in (cand.content.parts if cand.content else None) or ()
        if part.function_call
    ]
    assert fn.name == "get_weather" and fn.args == {"city": "Paris"}
    assert [r.path for r in f.received] == ["/v1/chat/completions"] * 2
    for flow in flows:
        info = meta(flow)
        assert info["translated"] == "gemini -> openai-chat"
        assert [a["outcome"] for a in info["attempts"]] == OUTCOMES[primary]
        assert [x for x in info["findings"] if x["severity"] == "error"] == []


def _chat_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-cut",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4.1-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


#: Half a surrogate pair as an upstream writes it: its JSON escape (UTF-8 has no bytes for it).
CUT = b"\\ud83d"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_a_model_emoji_cut_in_half_crosses_formats_whole(
    tmp_path: Path, stream: bool
) -> None:
    """A model's emoji cut at a token boundary arrives as half a surrogate pair's escape
    (PAY-4). Translated for the client, streamed or whole, the answer reaches it whole with that
    character in it: the relay once failed to write it in the client's format, and the stream
    stopped at that delta."""
    if stream:
        events = [
            _chat_chunk({"role": "assistant", "content": ""}),
            _chat_chunk({"content": "Hello "}),
            _chat_chunk({"content": "CUT"}).replace(b"CUT", CUT),
            _chat_chunk({"content": " world"}),
            _chat_chunk({}, "stop"),
        ]
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        tail = orjson.dumps({"id": "chatcmpl-cut", "choices": [], "usage": usage})
        body = b"".join(b"data: " + e + b"\n\n" for e in [*events, tail]) + b"data: [DONE]\n\n"
        headers = {"content-type": "text/event-stream"}
    else:
        message = {"role": "assistant", "content": "Hello CUT world"}
        body = orjson.dumps(
            {
                "id": "chatcmpl-cut",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4.1-mini",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
        ).replace(b"CUT", CUT)
        headers = {"content-type": "application/json"}

    async def ask(base_url: str) -> str:
        client = anthropic.AsyncAnthropic(
            base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=CLIENT_TIMEOUT
        )
        kwargs: dict[str, Any] = {
            "model": "claude-sonnet-4-6",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}],
        }
        try:
            if stream:
                async with client.messages.stream(**kwargs) as s:
                    message = await s.get_final_message()
            else:
                message = await client.messages.create(**kwargs)
        finally:
            await client.close()
        assert message.stop_reason == "end_turn"
        return "".join(b.text for b in message.content if b.type == "text")

    async with ScriptedUpstream(200, headers, [(0.0, body)]) as scripted:
        ups = [upstream("chat", scripted.url, OPENAI_CHAT)]
        chain = [{"upstream": "chat", "models": {"*": "gpt-4.1-mini"}}]
        cfg = config(ups, chain, match={"format": ANTHROPIC}, translate=True)
        async with failover_proxy(write_config(tmp_path, cfg), scripted.url) as proxy:
            text = await in_thread(ask(proxy.url))
    assert text == "Hello \ud83d world"
    assert len(scripted.received) == 1
