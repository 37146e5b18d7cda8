"""OpenAI's padded deltas through a real mitmproxy with mitmllm, read by the official SDK.

OpenAI adds an ``obfuscation`` string of random characters and length to every delta of a Chat
Completions or Responses stream unless the client turns it off. The tap must take such deltas
by their bytes (as it takes unpadded ones), find nothing in a healthy stream, and pass every
byte on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio

from mitmllm.glue import flowstate
from mitmllm.glue.addons import all_addons
from mitmllm.mock.scenarios import HEADER_EVENTS
from mitmllm.mock.scenarios import HEADER_SCENARIO
from mitmllm.mock.upstream import MockUpstream
from mitmllm.protocol.stream import StreamChecker
from tests.proxyharness import Proxy
from tests.proxyharness import running_proxy

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Deltas of each stream (the mock's `long` scenario).
DELTAS = 300
HEADERS = {HEADER_SCENARIO: "long", HEADER_EVENTS: str(DELTAS)}
PADDED = {"include_obfuscation": True}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxy() -> AsyncIterator[Proxy]:
    async with (
        MockUpstream() as upstream,
        running_proxy(all_addons(), mode=f"reverse:{upstream.url}") as p,
    ):
        yield p


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events the checkers parsed (the full path), counted while the test runs."""
    count = [0]
    parse = StreamChecker.parse

    def counting(self: StreamChecker, ev: Any) -> Any:
        count[0] += 1
        return parse(self, ev)

    monkeypatch.setattr(StreamChecker, "parse", counting)
    return count


def _client(proxy: Proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="test", base_url=proxy.url + "/v1", max_retries=0)


async def _check_flow(proxy: Proxy, before: int, parsed: list[int]) -> None:
    flows = await proxy.log.wait(before + 1)
    flow = flows[before]
    state = flowstate.get(flow)
    assert state is not None and state.tap is not None
    assert state.findings.to_list() == []
    body = flow.response.raw_content if flow.response else None
    assert body is not None and body.count(b'"obfuscation":"') == DELTAS
    assert state.tap.sent == body  # every byte as it came
    # the full path read the first and last events, not the padded deltas
    assert parsed[0] < 20, parsed[0]


async def test_padded_chat_deltas_pass_the_tap_by_their_bytes(
    proxy: Proxy, parsed: list[int]
) -> None:
    before = len(proxy.log.flows)
    client = _client(proxy)
    async with client.chat.completions.stream(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "Say a lot."}],
        stream_options=PADDED,  # type: ignore[typeddict-item]
        extra_headers=HEADERS,
    ) as stream:
        completion = await stream.get_final_completion()
    await client.close()
    assert completion.choices[0].finish_reason == "stop"
    assert len(completion.choices[0].message.content or "") > DELTAS
    await _check_flow(proxy, before, parsed)


async def test_padded_responses_deltas_pass_the_tap_by_their_bytes(
    proxy: Proxy, parsed: list[int]
) -> None:
    before = len(proxy.log.flows)
    client = _client(proxy)
    async with client.responses.stream(
        model="gpt-5",
        input="Say a lot.",
        stream_options=PADDED,  # type: ignore[typeddict-item]
        extra_headers=HEADERS,
    ) as stream:
        response = await stream.get_final_response()
    await client.close()
    assert response.status == "completed" and len(response.output_text) > DELTAS
    await _check_flow(proxy, before, parsed)
