"""Every mock scenario, in every format, through a real mitmproxy with the inspector.

Two promises are checked end to end: the client receives exactly the bytes the upstream sent
(the tap never changes or loses a byte, and only ever emits whole events), and every broken
scenario is flagged with the rule IDs the scenario declares.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from mitmllm.glue.addons import inspection_addons
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import SCENARIOS
from mitmllm.mock.scenarios import expected_rules
from mitmllm.mock.scenarios import plan_request
from mitmllm.mock.upstream import MockUpstream
from tests.proxyharness import Proxy
from tests.proxyharness import running_proxy
from tests.support.mockrequests import FAST
from tests.support.mockrequests import path_of
from tests.support.mockrequests import request_body

CASES = [(name, fmt) for name, s in SCENARIOS.items() for fmt in s.formats]


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=[False, True], ids=["in-proxy", "worker"]
)
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[tuple[MockUpstream, Proxy]]:
    """The same proxy with streams validated in the proxy and in the validation worker."""
    async with MockUpstream(name="mock") as upstream:
        async with running_proxy(
            inspection_addons(), mode=f"reverse:{upstream.url}", mitmllm_worker=request.param
        ) as proxy:
            if request.param:
                worker = proxy.addons[1].worker  # its process starts in the background
                assert worker is not None
                await asyncio.wait_for(worker.started.wait(), 60)  # only catches a hang
                assert worker.alive
            yield upstream, proxy


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _post(
    proxy: Proxy,
    fmt: str,
    headers: dict[str, str],
    *,
    stream: bool = True,
    body: dict[str, Any] | None = None,
) -> tuple[int, bytes, bool]:
    query = "?alt=sse" if fmt == GEMINI and stream else ""
    url = proxy.url + path_of(fmt, stream=stream) + query
    got = bytearray()
    cut = False
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url, json=body or request_body(fmt, stream=stream), headers=headers
        ) as resp:
            try:
                async for data, _ in resp.content.iter_chunks():
                    got += data
            except aiohttp.ClientPayloadError:
                cut = True
            return resp.status, bytes(got), cut


@pytest.mark.parametrize(("scenario", "fmt"), CASES, ids=[f"{s}-{f}" for s, f in CASES])
async def test_scenario_is_passed_byte_identical_and_flagged(
    setup: tuple[MockUpstream, Proxy], scenario: str, fmt: str
) -> None:
    upstream, proxy = setup
    headers = FAST | {"x-mock-scenario": scenario, "x-mock-delay-ms": "0"}
    before = len(proxy.log.flows)
    status, got, cut = await _post(proxy, fmt, headers)
    flows = await proxy.log.wait(before + 1)
    flow = flows[before]
    seen = upstream.received[-1]
    want = plan_request(
        seen.method, seen.path, seen.query, seen.headers, seen.body, ident=seen.ident
    )
    assert status == want.status
    assert got == want.body(), "the client must get the upstream's bytes, unchanged"
    assert cut == (scenario == "drop")
    meta = flow.metadata["mitmllm"]
    assert meta["format"] == fmt
    flagged = {f["rule"] for f in meta["findings"] if f["severity"] in ("error", "warning")}
    assert flagged == expected_rules(scenario, fmt), meta["summary"]
    if flagged & {f["rule"] for f in meta["findings"] if f["severity"] == "error"}:
        assert flow.marked == ":x:" and flow.comment
    if scenario == "healthy":
        assert not flow.marked and meta["complete"] is True
    # mitmweb shows what the client got
    assert flow.response.raw_content == got


async def test_32_mib_event_streams_through(setup: tuple[MockUpstream, Proxy]) -> None:
    upstream, proxy = setup
    headers = {"x-mock-scenario": "big-event", "x-mock-big-bytes": str(32 << 20)}
    before = len(proxy.log.flows)
    status, got, cut = await _post(proxy, "anthropic", headers)
    (flow,) = (await proxy.log.wait(before + 1))[before:]
    assert status == 200 and not cut and len(got) > 32 << 20
    meta = flow.metadata["mitmllm"]
    # Nothing wrong with it; the flow only says it keeps the start and the end (8 MiB).
    assert [(f["rule"], f["severity"]) for f in meta["findings"]] == [("TAP-4", "info")]
    assert meta["complete"] is True and meta["body_kept"]["of"] == len(got)
    head, mark, tail = flow.response.raw_content.partition(b"\n: mitmllm: ")
    assert mark and got.startswith(head) and got.endswith(tail.partition(b"\n\n")[2])
    assert 4 << 20 <= len(head) + len(tail) <= (8 << 20) + 200  # the room is used


async def test_json_requests_are_checked_too(setup: tuple[MockUpstream, Proxy]) -> None:
    upstream, proxy = setup
    for fmt in ("anthropic", "openai-chat", "openai-responses", "gemini"):
        before = len(proxy.log.flows)
        status, got, _ = await _post(proxy, fmt, {"x-mock-scenario": "healthy"}, stream=False)
        (flow,) = (await proxy.log.wait(before + 1))[before:]
        assert status == 200
        meta = flow.metadata["mitmllm"]
        assert meta["stream"] is False and meta["format"] == fmt
        assert [f for f in meta["findings"] if f["severity"] != "info"] == []
