"""mitmweb with mitmllm, seen in a real browser.

Two Anthropic streams, one healthy and one with the `tool-index-1` fault, are recorded through a
real mitmproxy with the inspector and saved to a flows file. mitmweb serves that file with
mitmllm's script loaded, and headless Chromium checks what a user would do: filter `~marked`,
open the one flagged flow's response, and read the rule ID in the "LLM stream" contentview.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from mitmproxy import io

from mitmllm.glue.addons import inspection_addons
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import expected_rules
from mitmllm.mock.upstream import MockUpstream
from tests import browser
from tests.proxyharness import running_proxy

MISSING = browser.missing()
if MISSING is not None and browser.required():
    pytest.fail(f"{browser.REQUIRED_ENV} is set but {MISSING}", pytrace=False)

pytestmark = [
    pytest.mark.skipif(MISSING is not None, reason=f"browser test: {MISSING}"),
    pytest.mark.timeout(90),
]

BROKEN = "tool-index-1"
RULE = "ANT-7"
#: How long the page may take to show what a step waits for.
UI_TIMEOUT_MS = 10_000


async def record_flows(path: Path) -> None:
    """Record a healthy and a `tool-index-1` Anthropic stream through the inspector."""
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
    }
    async with MockUpstream(name="mock") as upstream:
        async with running_proxy(inspection_addons(), mode=f"reverse:{upstream.url}") as proxy:
            async with aiohttp.ClientSession() as client:
                for scenario in ("healthy", BROKEN):
                    headers = {"x-mock-scenario": scenario, "x-mock-delay-ms": "0"}
                    url = proxy.url + "/v1/messages"
                    async with client.post(url, json=body, headers=headers) as resp:
                        assert resp.status == 200
                        await resp.read()
            flows = await proxy.log.wait(2)
    healthy, broken = flows
    assert not healthy.marked and broken.marked, "precondition: only the broken flow is flagged"
    with path.open("wb") as f:
        writer = io.FlowWriter(f)
        for flow in flows:
            writer.add(flow)


async def test_ANT_7_marked_flow_shows_rule_in_llm_stream_view(tmp_path: Path) -> None:
    from playwright.async_api import expect  # here, so the module still loads to be skipped

    assert expected_rules(BROKEN, ANTHROPIC) == {RULE}
    flows_file = tmp_path / "flows.mitm"
    await record_flows(flows_file)

    async with (
        browser.running_mitmweb(flows_file, tmp_path) as web,
        browser.chromium_page(tmp_path) as page,
    ):
        try:
            page.set_default_timeout(UI_TIMEOUT_MS)
            await page.goto(web.login_url)
            rows = page.locator(".flow-table tbody tr.has-request")
            await expect(rows).to_have_count(2, timeout=UI_TIMEOUT_MS)

            await page.get_by_placeholder("Search").fill("~marked")
            await expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
            flagged = rows.first
            await expect(flagged.locator(".col-path .marker")).not_to_be_empty()
            await expect(flagged.locator(".col-comment")).to_contain_text(RULE)

            await flagged.click()
            detail = page.locator(".flow-detail")
            await detail.locator("nav a", has_text="Response").click()
            view = detail.locator("section.response .contentview")
            # "auto" picks mitmllm's view for an LLM event stream
            await expect(view.locator(".controls h5")).to_have_text(
                "LLM stream", timeout=UI_TIMEOUT_MS
            )
            await expect(view.locator("pre")).to_contain_text(
                f"{RULE} error", timeout=UI_TIMEOUT_MS
            )
        except BaseException:
            print(f"mitmweb log ({web.log}):\n{web.log_text()}")
            raise
