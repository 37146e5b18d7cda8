"""The replay upstream in place of the mock: the seed corpus served back through a real proxy.

Every recorded stream of `captures/healthy` and `captures/scenarios` is requested again through
mitmproxy with the inspector, from a `ReplayUpstream` serving the recordings: the client gets the
recorded bytes and the live inspector reports what each fixture expects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio

from mitmllm.engine.fixtures import iter_fixtures
from mitmllm.engine.fixtures import load_fixture
from mitmllm.engine.replay import ReplayUpstream
from mitmllm.glue.addons import inspection_addons
from tests.proxyharness import Proxy
from tests.proxyharness import running_proxy

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
PATHS = [
    p
    for folder in ("healthy", "scenarios")
    for p in iter_fixtures(CAPTURES / folder)
    if (f := load_fixture(p)).response is not None and f.error is None and f.stream
]
SKIP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxy() -> AsyncIterator[Proxy]:
    async with ReplayUpstream(PATHS, speed=float("inf")) as upstream:
        async with running_proxy(inspection_addons(), mode=f"reverse:{upstream.url}") as p:
            yield p


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
async def test_recorded_stream_replays_through_the_proxy(proxy: Proxy, path: Path) -> None:
    fx = load_fixture(path)
    req = fx.request
    url = urlsplit(req.url)
    target = proxy.url + url.path + (f"?{url.query}" if url.query else "")
    headers = {k: v for k, v in req.headers if k.lower() not in SKIP_HEADERS}
    before = len(proxy.log.flows)
    async with aiohttp.ClientSession() as http:
        async with http.request(req.method, target, data=req.content, headers=headers) as r:
            got = await r.read()
            status = r.status
    flow = (await proxy.log.wait(before + 1))[before]
    assert fx.response is not None and status == fx.response.status
    assert got == fx.response.client_content
    found = [
        (f["rule"], f.get("event"))
        for f in flow.metadata["mitmllm"]["findings"]
        if f["severity"] != "info"
    ]
    expected = [(f.rule, f.event) for f in fx.expect.findings if f.severity != "info"]
    assert found == expected
