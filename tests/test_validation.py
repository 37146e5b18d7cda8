"""The validation worker: the same findings as in the proxy, and a safe fall-back when it dies."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from mitmllm.engine.validation import ValidationWorker
from mitmllm.glue.inspector import Inspector
from mitmllm.glue.inspector import Recognizer
from mitmllm.mock.upstream import MockUpstream
from mitmllm.protocol import detect
from mitmllm.protocol.stream import check_stream
from tests.anthropic_streams import SHORT_TEXT_INDEX_1 as INDEX_1
from tests.proxyharness import running_proxy

BODY = {
    "model": "claude-test",
    "max_tokens": 16,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


async def _alive(inspector: Inspector) -> ValidationWorker:
    worker = inspector.worker
    assert worker is not None, "the inspector made no validation worker while running"
    await asyncio.wait_for(worker.started.wait(), 60)  # a bound that only catches a hang
    assert worker.alive
    return worker


async def test_worker_results_equal_in_proxy_validation_at_any_batching() -> None:
    worker = ValidationWorker()
    await worker.start()
    try:
        expected, _, _ = check_stream(detect.by_name("anthropic"), INDEX_1)
        for size in (1, 7, 64, len(INDEX_1)):
            sid = worker.open("anthropic", BODY)
            for i in range(0, len(INDEX_1), size):
                worker.feed(sid, INDEX_1[i : i + size])
            result = await asyncio.wait_for(worker.close(sid), 10)
            assert result.findings == expected.to_list()
            assert result.format == "anthropic" and result.events == 7
    finally:
        worker.stop()


async def test_a_dead_worker_flags_streams_in_flight_and_the_proxy_takes_over() -> None:
    inspector = Inspector()
    async with MockUpstream() as upstream:
        async with running_proxy(
            [Recognizer(), inspector], mode=f"reverse:{upstream.url}", mitmllm_worker=True
        ) as proxy:
            worker = await _alive(inspector)
            async with aiohttp.ClientSession() as http:
                # A slow stream is in flight when the worker dies.
                headers = {"x-mock-scenario": "slow", "x-mock-delay-ms": "100"}
                async with http.post(
                    proxy.url + "/v1/messages", json=BODY, headers=headers
                ) as resp:
                    await resp.content.readany()
                    assert worker._process is not None
                    worker._process.kill()
                    await resp.read()
                (cut,) = await proxy.log.wait(1)
                rules = [f["rule"] for f in cut.metadata["mitmllm"]["findings"]]
                assert rules == ["TAP-1"], rules
                assert "not validated" in cut.metadata["mitmllm"]["findings"][0]["message"]

                # The next stream is validated in the proxy.
                headers = {"x-mock-scenario": "tool-index-1"}
                async with http.post(
                    proxy.url + "/v1/messages", json=BODY, headers=headers
                ) as resp:
                    body = await resp.read()
                flows = await proxy.log.wait(2)
                assert not worker.alive
                assert "ANT-7" in flows[1].metadata["mitmllm"]["summary"]
                assert flows[1].response.raw_content == body
                assert orjson.loads(body.split(b"data: ", 2)[1].split(b"\n")[0])


async def test_rewritten_streams_stay_in_the_proxy() -> None:
    from mitmllm.glue import flowstate
    from mitmllm.glue.tap import Tap

    inspector = Inspector()
    async with MockUpstream() as upstream:
        async with running_proxy(
            [Recognizer(), inspector], mode=f"reverse:{upstream.url}", mitmllm_worker=True
        ) as proxy:
            await _alive(inspector)
            seen: list[object] = []
            original = inspector.responseheaders

            def with_rewrite(flow):  # type: ignore[no-untyped-def]
                state = flowstate.get(flow)
                if state is not None:
                    state.rewrites.append(lambda payload: [])
                original(flow)
                seen.append(state.tap if state else None)

            inspector.responseheaders = with_rewrite  # type: ignore[method-assign]
            async with aiohttp.ClientSession() as http:
                async with http.post(proxy.url + "/v1/messages", json=BODY) as resp:
                    await resp.read()
            await proxy.log.wait(1)
            assert isinstance(seen[0], Tap)


async def test_a_client_that_leaves_mid_stream_is_no_upstream_finding_in_the_worker() -> None:
    """The worker is told to skip the end-of-stream rules: the client ended the stream."""
    inspector = Inspector()
    async with MockUpstream() as upstream:
        async with running_proxy(
            [Recognizer(), inspector], mode=f"reverse:{upstream.url}", mitmllm_worker=True
        ) as proxy:
            await _alive(inspector)
            headers = {"x-mock-scenario": "slow", "x-mock-delay-ms": "50"}
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    proxy.url + "/v1/messages", json=BODY, headers=headers
                ) as resp:
                    assert await resp.content.readany()
                    resp.close()
            (flow,) = await proxy.log.wait(1)
    meta = flow.metadata["mitmllm"]
    assert meta["end"] == "client_disconnect", meta
    assert meta["findings"] == [] and not flow.marked
