"""The rewriter addon end to end: a real proxy, the mock upstream, the official SDKs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anthropic
import openai
import orjson
import pytest
import pytest_asyncio

from mitmllm.glue.addons import all_addons
from mitmllm.mock.upstream import MockUpstream
from tests.proxyharness import Proxy
from tests.proxyharness import running_proxy
from tests.relayharness import ScriptedUpstream

LONG = "mcp__workspace__" + "search_the_codebase_for_symbols_and_their_references_" * 2
CONFIG = """
version: 1
models:
  - name: alias
    match: claude-alias
    to: claude-sonnet-4-5
  - name: capped
    match: claude-capped
    params:
      max_tokens: {max: 100}
      temperature: {set: 1.0}
  - name: chat-tools
    match: gpt-alias
    to: gpt-4o
    tools: openai
  - name: responses
    match: resp-alias
    to: gpt-5
  - name: gemini
    match: gemini-alias
    to: gemini-2.5-flash
"""

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[MockUpstream, Proxy, Path]]:
    path = tmp_path_factory.mktemp("rw") / "mitmllm.yaml"
    path.write_text(CONFIG)
    async with MockUpstream(name="mock") as upstream:
        async with running_proxy(
            all_addons(), mode=f"reverse:{upstream.url}", mitmllm_config=str(path)
        ) as proxy:
            yield upstream, proxy, path


async def _flow(proxy: Proxy, n: int):  # type: ignore[no-untyped-def]
    flows = await proxy.log.wait(n)
    return flows[n - 1]


async def test_alias_is_mapped_upstream_and_restamped_for_the_client(setup) -> None:  # type: ignore[no-untyped-def]
    upstream, proxy, _ = setup
    n = len(proxy.log.flows)
    client = anthropic.AsyncAnthropic(api_key="k", base_url=proxy.url, max_retries=0)
    async with client.messages.stream(
        model="claude-alias", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        message = await stream.get_final_message()
        served = stream.response.headers.get("x-mitmllm-served-model")
    await client.close()
    assert message.model == "claude-alias"  # the client sees the model it asked for
    assert upstream.received[-1].model == "claude-sonnet-4-5"  # the upstream got the target
    assert served == "claude-sonnet-4-5"
    flow = await _flow(proxy, n + 1)
    meta = flow.metadata["mitmllm"]
    assert meta["rewrite"]["model"] == "claude-sonnet-4-5" and meta["rewrite"]["rule"] == "alias"
    assert meta["model_sent"] == "claude-sonnet-4-5" and meta["model"] == "claude-alias"
    assert [f for f in meta["findings"] if f["severity"] != "info"] == []


async def test_tools_are_sanitized_upstream_and_named_back_for_the_client(setup) -> None:  # type: ignore[no-untyped-def]
    upstream, proxy, _ = setup
    n = len(proxy.log.flows)
    client = openai.AsyncOpenAI(api_key="k", base_url=proxy.url + "/v1", max_retries=0)
    tools = [{"type": "function", "function": {"name": LONG, "parameters": {}}}]
    async with client.chat.completions.stream(
        model="gpt-alias",
        messages=[{"role": "user", "content": "find it"}],
        tools=tools,  # type: ignore[arg-type]
        extra_headers={"x-mock-scenario": "tool"},
    ) as stream:
        completion = await stream.get_final_completion()
    await client.close()
    seen = upstream.received[-1]
    sent_tool = seen.json["tools"][0]["function"]
    assert len(sent_tool["name"]) <= 64 and sent_tool["name"] != LONG
    assert sent_tool["parameters"] == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    assert seen.json["model"] == "gpt-4o"
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == LONG  # mapped back: the client sees its own tool name
    assert completion.model == "gpt-alias"
    meta = (await _flow(proxy, n + 1)).metadata["mitmllm"]
    assert meta["rewrite"]["names"] == {sent_tool["name"]: LONG}
    assert [f for f in meta["findings"] if f["severity"] != "info"] == []


async def test_responses_and_gemini_aliases(setup) -> None:  # type: ignore[no-untyped-def]
    upstream, proxy, _ = setup
    client = openai.AsyncOpenAI(api_key="k", base_url=proxy.url + "/v1", max_retries=0)
    async with client.responses.stream(model="resp-alias", input="hi") as stream:
        response = await stream.get_final_response()
    await client.close()
    assert response.model == "resp-alias" and upstream.received[-1].model == "gpt-5"

    async with aiohttp.ClientSession() as http:
        url = proxy.url + "/v1beta/models/gemini-alias:streamGenerateContent?alt=sse"
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        async with http.post(url, json=body) as resp:
            raw = await resp.read()
    assert upstream.received[-1].path.endswith("/models/gemini-2.5-flash:streamGenerateContent")
    versions = {
        orjson.loads(line[6:]).get("modelVersion")
        for line in raw.split(b"\r\n")
        if line.startswith(b"data: ")
    }
    assert versions == {"gemini-alias"}


async def test_parameter_constraints_and_untouched_bodies(setup) -> None:  # type: ignore[no-untyped-def]
    upstream, proxy, _ = setup
    async with aiohttp.ClientSession() as http:
        body = {
            "model": "claude-capped",
            "max_tokens": 4096,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        }
        async with http.post(proxy.url + "/v1/messages", json=body) as resp:
            await resp.read()
        seen = upstream.received[-1].json
        assert seen["max_tokens"] == 100 and seen["temperature"] == 1.0

        raw = b'{ "model" : "claude-other",  "max_tokens": 5, "messages": [] , "stream": true}'
        async with http.post(
            proxy.url + "/v1/messages", data=raw, headers={"content-type": "application/json"}
        ) as resp:
            await resp.read()
        assert upstream.received[-1].body == raw  # no rule: byte-identical


async def test_invalid_body_is_passed_as_is_and_flagged(setup) -> None:  # type: ignore[no-untyped-def]
    upstream, proxy, _ = setup
    n = len(proxy.log.flows)
    raw = b'{"model": ["claude-alias"], "max_tokens": 5, "messages": []}'
    async with aiohttp.ClientSession() as http:
        async with http.post(
            proxy.url + "/v1/messages", data=raw, headers={"content-type": "application/json"}
        ) as resp:
            await resp.read()
    assert upstream.received[-1].body == raw
    meta = (await _flow(proxy, n + 1)).metadata["mitmllm"]
    assert "REQ-3" in meta["summary"]


async def test_non_streamed_body_is_restamped(setup) -> None:  # type: ignore[no-untyped-def]
    upstream, proxy, _ = setup
    client = anthropic.AsyncAnthropic(api_key="k", base_url=proxy.url, max_retries=0)
    message = await client.messages.create(
        model="claude-alias", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    await client.close()
    assert message.model == "claude-alias" and upstream.received[-1].model == "claude-sonnet-4-5"


async def test_config_reload_keeps_last_good_on_a_bad_edit(setup) -> None:  # type: ignore[no-untyped-def]
    upstream, proxy, path = setup
    loader = proxy.addons[0]
    good = path.read_text()
    try:
        path.write_text(good.replace("to: claude-sonnet-4-5", "to: claude-haiku-4-5"))
        os.utime(path, (1, 1_000_000_000))
        assert loader.reload_if_changed()
        path.write_text("models: [ {match: }")  # broken YAML
        os.utime(path, (1, 1_000_000_100))
        assert not loader.reload_if_changed()
        client = anthropic.AsyncAnthropic(api_key="k", base_url=proxy.url, max_retries=0)
        await client.messages.create(
            model="claude-alias", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
        await client.close()
        assert upstream.received[-1].model == "claude-haiku-4-5"  # the last good config
    finally:
        path.write_text(good)
        os.utime(path, (1, 1_000_000_200))
        loader.reload_if_changed()
        await asyncio.sleep(0)


# --- splices through the proxy: only the model value's bytes differ ---------------------------

SPLICE_CONFIG = """
version: 1
models:
  - name: alias
    match: client-model
    to: up-model
"""
# A Chat stream with escapes (U+2028, <, é, a surrogate pair, \/), a number wider than 64 bits,
# odd spacing, and a last chunk without its blank line (no [DONE]).
CHAT_STREAM = [
    b'data: {"id":"c","object":"chat.completion.chunk","created":1, "model" : "up-model",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n',
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"up-model","choices":'
    b'[{"index":0,"delta":{"content":"\\u2028 \\u003c \\u00e9 \\ud83d\\ude00 \\/ caf\xc3\xa9"},'
    b'"finish_reason":null}]}\n\n',
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"up-model",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":123456789012345678901234567890,"completion_tokens":2,'
    b'"total_tokens":123456789012345678901234567892}}',
]
CLIENT_BODY = (
    b'{ "model" : "client-model", "stream": true,\n "messages": [{"role": "user", "content":'
    b' "\\/ \\u00e9 \\ud83d\\ude00 \\u2028 \\u003c"}], "seed": 123456789012345678901234567890}'
)


async def _raw_post(url: str, body: bytes) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.post(url, data=body, headers={"content-type": "application/json"}) as resp:
            return resp.status, await resp.read()


async def test_restamp_through_the_proxy_changes_only_the_model_bytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mitmllm.yaml"
    path.write_text(SPLICE_CONFIG)
    steps = [(0.0, c) for c in CHAT_STREAM]
    async with ScriptedUpstream(steps=steps) as upstream:
        async with running_proxy(
            all_addons(), mode=f"reverse:{upstream.url}", mitmllm_config=str(path)
        ) as proxy:
            status, got = await _raw_post(proxy.url + "/v1/chat/completions", CLIENT_BODY)
            flow = (await proxy.log.wait(1))[0]
    assert status == 200
    sent = b"".join(CHAT_STREAM)
    # The client: the upstream's bytes with the model value changed, the unterminated last
    # chunk included; escapes, spacing and the 30-digit integers as the upstream wrote them.
    assert got == sent.replace(b'"up-model"', b'"client-model"')
    # The upstream: the client's bytes with the model value changed.
    assert upstream.received[0].body == CLIENT_BODY.replace(b'"client-model"', b'"up-model"')
    meta = flow.metadata["mitmllm"]
    assert meta["events_rewritten"] == 3
    assert "SSE-14" in {f["rule"] for f in meta["findings"]}


async def test_whole_json_bodies_are_restamped_by_splicing(tmp_path: Path) -> None:
    path = tmp_path / "mitmllm.yaml"
    path.write_text(SPLICE_CONFIG)
    body = (
        b'{"id":"c","object":"chat.completion","created":1,"model" :"up-model","choices":[{"index"'
        b':0,"message":{"role":"assistant","content":"\\u2028\\u00e9\\/"},"finish_reason":"stop"}]'
        b',"usage":{"prompt_tokens":123456789012345678901234567890}}'
    )
    headers = {"content-type": "application/json"}
    async with ScriptedUpstream(headers=headers, steps=[(0.0, body)]) as upstream:
        async with running_proxy(
            all_addons(), mode=f"reverse:{upstream.url}", mitmllm_config=str(path)
        ) as proxy:
            request = CLIENT_BODY.replace(b'"stream": true', b'"stream": false')
            status, got = await _raw_post(proxy.url + "/v1/chat/completions", request)
    assert status == 200
    assert got == body.replace(b'"up-model"', b'"client-model"')
