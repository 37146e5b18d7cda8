"""Repairs and the commit gate through a real in-process mitmproxy, read by the official SDKs'
stream helpers (``messages.stream().get_final_message()``, ``chat.completions.stream()
.get_final_completion()``, ``responses.stream().get_final_response()``; Gemini as google-genai
reads it).

* Every breakage a repair covers, on a route with one upstream and on an inspect-only flow with
  ``mitmllm_repair``: the client gets the whole answer from one request, and the flow records
  what the upstream broke and what was mended (``~comment`` finds both).
* Every breakage no repair covers, before any content: the attempt fails, the fallback answers,
  exactly one request reaches each upstream, none of them a non-streaming retry.
* A slow first token: the client gets headers and keep-alives while the gate stays open, and a
  failure after that still moves to the next upstream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from mitmproxy import flowfilter

from mitmllm.glue.addons import all_addons
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import OPENAI_RESPONSES
from mitmllm.mock.upstream import MockUpstream
from mitmllm.protocol.rules import RULES
from tests.proxyharness import running_proxy
from tests.relayharness import CLIENT_KEY
from tests.relayharness import CLIENT_MODEL
from tests.relayharness import CLIENT_TIMEOUT
from tests.relayharness import FORMATS
from tests.relayharness import KEEPALIVE
from tests.relayharness import TIMEOUTS
from tests.relayharness import ask_each
from tests.relayharness import event_list
from tests.relayharness import failover_proxy
from tests.relayharness import fallback_of
from tests.relayharness import flows_by_format
from tests.relayharness import meta
from tests.relayharness import primary_of
from tests.relayharness import starts
from tests.relayharness import two_hops
from tests.relayharness import upstream
from tests.relayharness import write_config

#: The breakages a repair covers, and the formats the mock serves them in.
MENDED: dict[str, Sequence[str]] = {
    "keepalive-mid-event": (ANTHROPIC, OPENAI_RESPONSES),
    "keepalive-mid-data": FORMATS,
    "keepalive-race": FORMATS,
    "no-final-blank": FORMATS,
    "double-start": (ANTHROPIC, OPENAI_RESPONSES),
    "truncated": (ANTHROPIC,),  # ends after message_delta: only message_stop is missing
    "missing-done": (OPENAI_CHAT,),
}
#: The rule each mended breakage broke (what ~comment must find on the flow).
BROKE = {
    "keepalive-mid-event": "SSE-13",
    "keepalive-mid-data": "SSE-18",
    "keepalive-race": "SSE-18",
    "no-final-blank": "SSE-14",
    "double-start": None,  # the rules differ per format; checked through the repair
    "truncated": "ANT-18",
    "missing-done": "OAI-3",
}
#: Catalogue breakages no repair covers, broken before any content.
UNMENDED = {
    "rule-ANT-4": ANTHROPIC,
    "rule-ANT-6": ANTHROPIC,
    "rule-SSE-7": OPENAI_CHAT,
    "rule-OAI-8": OPENAI_CHAT,
    "rule-RSP-2": OPENAI_RESPONSES,
    "rule-RSP-5": OPENAI_RESPONSES,
}


def single(url: str, formats: Sequence[str], **route: Any) -> dict[str, Any]:
    """Per format a route with one upstream: no fallback to hide a broken stream."""
    return {
        "upstreams": [upstream(f"only-{fmt}", url, fmt) for fmt in formats],
        "routes": [
            {
                "name": f"route-{fmt}",
                "chain": [{"upstream": f"only-{fmt}"}],
                "timeouts": dict(TIMEOUTS),
                **route,
            }
            for fmt in formats
        ],
    }


def comment_finds(flow: Any, rule: str) -> bool:
    return flowfilter.match(flowfilter.parse(f"~comment {rule}"), flow)


# --- mended breakages ----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", list(MENDED))
async def test_a_route_with_one_upstream_serves_the_mended_stream(
    tmp_path: Path, scenario: str
) -> None:
    formats = MENDED[scenario]
    async with MockUpstream(default_scenario=scenario) as up:
        cfg = write_config(tmp_path, single(up.url, formats))
        async with failover_proxy(cfg, up.url) as proxy:
            replies = await ask_each(proxy, formats)
            flows = await flows_by_format(proxy, len(formats))
    assert sorted(r.fmt for r in up.received) == sorted(formats), "one request per format"
    assert all(r.stream for r in up.received), "no non-streaming retry"
    for fmt in formats:
        reply, flow = replies[fmt], flows[fmt]
        assert reply.complete, (fmt, reply)
        assert reply.model == CLIENT_MODEL[fmt]
        m = meta(flow)
        (attempt,) = m["attempts"]
        assert attempt["outcome"] == "ok" and attempt["repairs"], (fmt, attempt)
        fixes = {r["rule"] for r in attempt["repairs"]}
        assert fixes <= {f["rule"] for f in m["findings"]}, "the repairs are the flow's"
        assert comment_finds(flow, "FIX-"), flow.comment
        if BROKE[scenario] is not None:
            assert comment_finds(flow, BROKE[scenario]), flow.comment
        broke = {f["rule"] for f in attempt["findings"]}
        assert all(set(RULES[f].mends) & broke for f in fixes), (fixes, broke)
        assert m.get("repaired") and flow.marked == ":wrench:"
        if fmt != GEMINI:
            assert starts(fmt, event_list(flow.response.raw_content)) == 1


@pytest.mark.parametrize("scenario", list(MENDED))
async def test_an_inspect_only_flow_is_mended_with_the_repair_option(scenario: str) -> None:
    formats = MENDED[scenario]
    async with MockUpstream(default_scenario=scenario) as up:
        async with running_proxy(
            all_addons(), mode=f"reverse:{up.url}", mitmllm_repair=True
        ) as proxy:
            replies = await ask_each(proxy, formats)
            flows = await flows_by_format(proxy, len(formats))
    for fmt in formats:
        reply, flow = replies[fmt], flows[fmt]
        assert reply.complete, (fmt, reply)
        m = meta(flow)
        found = {f["rule"] for f in m["findings"]}
        assert any(r.startswith("FIX-") for r in found), found
        if BROKE[scenario] is not None:
            assert BROKE[scenario] in found, "what the upstream sent stays on the flow"
        assert m["client"] == "ok" or "error" not in m["client"], m["client"]
        assert comment_finds(flow, "FIX-") and flow.marked == ":wrench:"


async def test_without_the_option_an_inspect_only_flow_is_passed_as_it_came() -> None:
    async with MockUpstream(default_scenario="keepalive-mid-data") as up:
        async with running_proxy(all_addons(), mode=f"reverse:{up.url}") as proxy:
            with pytest.raises(ValueError, match="Unterminated string"):  # the SDK's JSON error
                await ask_each(proxy, (ANTHROPIC,))
            (flow,) = await proxy.log.wait(1)
    assert not any(f["rule"].startswith("FIX-") for f in meta(flow)["findings"])
    assert flow.marked == ":x:"


async def test_a_route_can_turn_repairs_off_and_then_fails_the_broken_attempt(
    tmp_path: Path,
) -> None:
    async with MockUpstream(default_scenario="keepalive-mid-data") as up:
        cfg = write_config(tmp_path, single(up.url, (ANTHROPIC,), repair={"enabled": False}))
        async with failover_proxy(cfg, up.url) as proxy:
            replies = await ask_each(proxy, (ANTHROPIC,))
            flows = await flows_by_format(proxy, 1)
    reply = replies[ANTHROPIC]
    assert reply.status == 502 and reply.error is not None
    (attempt,) = meta(flows[ANTHROPIC])["attempts"]
    assert attempt["outcome"] == "broken_stream" and attempt["error"].startswith("PAY-1: ")


# --- tool calls: the breakages the issue names ---------------------------------------------------

WEATHER = {
    "name": "get_weather",
    "description": "weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _anthropic_tool_call(base_url: str) -> Any:
    async def run() -> Any:
        client = anthropic.AsyncAnthropic(
            base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=CLIENT_TIMEOUT
        )
        try:
            async with client.messages.stream(
                model=CLIENT_MODEL[ANTHROPIC],
                max_tokens=64,
                messages=[{"role": "user", "content": "weather?"}],
                tools=[WEATHER],  # type: ignore[list-item]
            ) as stream:
                return await stream.get_final_message()
        finally:
            await client.close()

    return asyncio.run(run())


def _chat_tool_call(base_url: str) -> Any:
    async def run() -> Any:
        client = openai.AsyncOpenAI(
            base_url=base_url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=CLIENT_TIMEOUT
        )
        tool = {
            "type": "function",
            "function": {"name": WEATHER["name"], "parameters": WEATHER["input_schema"]},
        }
        try:
            async with client.chat.completions.stream(
                model=CLIENT_MODEL[OPENAI_CHAT],
                messages=[{"role": "user", "content": "weather?"}],
                tools=[tool],  # type: ignore[list-item]
            ) as stream:
                return await stream.get_final_completion()
        finally:
            await client.close()

    return asyncio.run(run())


async def test_a_tool_call_at_index_1_reaches_both_sdks_as_their_first_call(tmp_path: Path) -> None:
    """anthropic-python raised IndexError on it; openai-python misaligned the call."""
    async with MockUpstream(default_scenario="tool-index-1") as up:
        cfg = write_config(tmp_path, single(up.url, (ANTHROPIC, OPENAI_CHAT)))
        async with failover_proxy(cfg, up.url) as proxy:
            message = await asyncio.to_thread(_anthropic_tool_call, proxy.url)
            completion = await asyncio.to_thread(_chat_tool_call, proxy.url)
            flows = await flows_by_format(proxy, 2)
    (block,) = message.content
    assert (block.type, block.name, message.stop_reason) == ("tool_use", "get_weather", "tool_use")
    assert isinstance(block.input, dict) and block.input
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    assert len(up.received) == 2
    assert "FIX-6" in {f["rule"] for f in meta(flows[ANTHROPIC])["findings"]}
    assert "FIX-11" in {f["rule"] for f in meta(flows[OPENAI_CHAT])["findings"]}


# --- breakages no repair covers: the attempt fails, the fallback answers ------------------------


@pytest.mark.parametrize("scenario", list(UNMENDED))
async def test_an_unmended_breakage_before_content_falls_back(
    tmp_path: Path, scenario: str
) -> None:
    fmt = UNMENDED[scenario]
    async with MockUpstream(default_scenario=scenario) as primary, MockUpstream() as fallback:
        async with two_hops(tmp_path, primary.url, fallback.url, formats=[fmt]) as proxy:
            replies = await ask_each(proxy, (fmt,))
            flows = await flows_by_format(proxy, 1)
            breakers = next(a for a in proxy.addons if hasattr(a, "breakers")).breakers
    reply = replies[fmt]
    assert reply.complete, reply
    assert len(primary.received) == 1 and len(fallback.received) == 1, "one request to each"
    assert all(r.stream for r in (*primary.received, *fallback.received)), "no non-streaming retry"
    m = meta(flows[fmt])
    first, second = m["attempts"]
    rule = scenario.removeprefix("rule-")
    assert (first["upstream"], first["outcome"]) == (primary_of(fmt), "broken_stream")
    assert not first["committed"]
    assert rule in first["error"] or rule in {f["rule"] for f in first.get("findings", [])}
    assert (second["upstream"], second["outcome"]) == (fallback_of(fmt), "ok")
    assert breakers[primary_of(fmt)].failures == 1, "the breaker counts a broken stream"
    assert comment_finds(flows[fmt], rule)
    assert starts(fmt, event_list(flows[fmt].response.raw_content)) <= 1


# --- a slow first token ------------------------------------------------------------------------

SLOW = {"first_byte": "200ms", "keepalive": "100ms", "first_event": "1s"}
STALL = {"x-mock-stall-ms": "3000"}


async def test_a_slow_first_token_gets_headers_and_keepalives_and_still_fails_over(
    tmp_path: Path,
) -> None:
    """The primary sends nothing for 3 s: the client gets headers and keep-alives after 200 ms,
    and when the primary's first-event timeout fires the fallback still answers."""
    formats = (ANTHROPIC, OPENAI_CHAT, OPENAI_RESPONSES)
    async with MockUpstream(default_scenario="stall-before-first") as primary:
        async with MockUpstream() as fallback:
            async with two_hops(
                tmp_path, primary.url, fallback.url, formats=formats, timeouts=SLOW
            ) as proxy:
                replies = await ask_each(proxy, formats, headers=STALL)
                flows = await flows_by_format(proxy, len(formats))
    for fmt in formats:
        assert replies[fmt].complete, (fmt, replies[fmt])
        events = event_list(flows[fmt].response.raw_content)
        assert sum(ev.raw == KEEPALIVE[fmt] for ev in events) >= 2, "kept alive while waiting"
        assert starts(fmt, events) == 1, "the failed attempt sent nothing but keep-alives"
        m = meta(flows[fmt])
        assert [a["outcome"] for a in m["attempts"]] == ["first_event_timeout", "ok"]
        assert replies[fmt].model == CLIENT_MODEL[fmt], "restamped after the early headers"


async def test_when_every_attempt_fails_after_early_headers_the_client_gets_an_error_event(
    tmp_path: Path,
) -> None:
    async with MockUpstream(default_scenario="stall-before-first") as up:
        slow = dict(TIMEOUTS) | {"first_byte": "200ms"}
        cfg = write_config(tmp_path, single(up.url, (ANTHROPIC,), timeouts=slow))
        async with failover_proxy(cfg, up.url) as proxy:
            replies = await ask_each(proxy, (ANTHROPIC,), headers=STALL)
            flows = await flows_by_format(proxy, 1)
    reply = replies[ANTHROPIC]
    assert reply.error is not None and reply.status == 200, "an error event, not an HTTP status"
    body = flows[ANTHROPIC].response.raw_content
    assert b"event: error" in body and b"message_stop" not in body
    assert b"message_start" not in body, "nothing of the failed attempt"
    assert meta(flows[ANTHROPIC])["relay"] == "failed_before_commit"


# --- a stream that starts over after content ------------------------------------------------------


@pytest.mark.parametrize("fmt", [ANTHROPIC, OPENAI_RESPONSES])
async def test_a_stream_that_starts_over_after_content_ends_with_an_error_not_a_second_answer(
    tmp_path: Path, fmt: str
) -> None:
    """A gateway retried after the client had part of the answer: no repair joins two answers,
    so the client's stream ends there with its format's error event (the SDK raises), and the
    second start never reaches it. (Had the restart come before the relay sent anything, the
    attempt would simply have failed, as any before commit.)"""
    spaced = {"x-mock-delay-ms": "30"}  # the relay has sent the first content when it comes
    async with MockUpstream(default_scenario="restart-after-content") as up:
        cfg = write_config(tmp_path, single(up.url, (fmt,)))
        async with failover_proxy(cfg, up.url) as proxy:
            replies = await ask_each(proxy, (fmt,), headers=spaced)
            flows = await flows_by_format(proxy, 1)
    reply, flow = replies[fmt], flows[fmt]
    assert reply.error is not None and "started its answer over" in reply.error_text, reply
    assert len(up.received) == 1, "one request, no retry"
    assert starts(fmt, event_list(flow.response.raw_content)) == 1, "never a second start"
    m = meta(flow)
    (attempt,) = m["attempts"]
    assert attempt["outcome"] == "restarted_after_commit" and attempt["committed"]
    assert "RLY-3" in {f["rule"] for f in m["findings"]} and comment_finds(flow, "RLY-3")
