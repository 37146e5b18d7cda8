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

from mitmllm.engine.report import METADATA_KEY
from mitmllm.engine.report import FlowReport
from mitmllm.engine.report import Repair
from mitmllm.glue.addons import inspection_addons
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import expected_rules
from mitmllm.mock.upstream import MockUpstream
from tests import browser
from tests.proxyharness import running_proxy
from tests.relayharness import config
from tests.relayharness import failover_proxy
from tests.relayharness import fallback_hop
from tests.relayharness import upstream
from tests.relayharness import write_config

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
    """Record a healthy and a `tool-index-1` Anthropic stream through the inspector into a
    flow file, as ``mitmdump -w`` does."""
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
    }
    async with MockUpstream(name="mock") as upstream:
        async with running_proxy(
            inspection_addons(), mode=f"reverse:{upstream.url}", save_stream_file=str(path)
        ) as proxy:
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
    with path.open("rb") as f:
        saved = list(io.FlowReader(f).stream())
    assert [f.id for f in saved] == [f.id for f in flows]
    assert all(f.response and f.response.raw_content for f in saved), "the streams were kept"


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


# --- the story of a routed flow --------------------------------------------------------------

#: What a coding agent sends: a system prompt, a tool, a tool call and its result.
AGENT_REQUEST = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 64,
    "stream": True,
    "system": "You are a weather assistant.",
    "tools": [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ],
    "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C, sunny"}
            ],
        },
    ],
}
#: A repair as the repair stage records it on a flow.
REPAIR = Repair("FIX-1", "SSE-18", "keep-alive removed from inside event 4", event=4)


async def record_routed_flow(path: Path, tmp_path: Path) -> None:
    """A primary that answers 529 and a fallback that serves, through every mitmllm addon;
    the saved flow also carries a repair, as a repaired stream's report does."""
    async with (
        MockUpstream(name="primary", default_scenario="overloaded") as primary,
        MockUpstream(name="fallback") as fallback,
    ):
        cfg = config(
            [
                upstream("primary", primary.url, ANTHROPIC),
                upstream("fallback", fallback.url, ANTHROPIC),
            ],
            ["primary", fallback_hop("fallback", ANTHROPIC)],
            name="claude",
        )
        async with failover_proxy(write_config(tmp_path, cfg), primary.url) as proxy:
            async with aiohttp.ClientSession() as client:
                headers = {"x-mock-delay-ms": "0"}
                async with client.post(
                    proxy.url + "/v1/messages", json=AGENT_REQUEST, headers=headers
                ) as resp:
                    assert resp.status == 200
                    await resp.read()
            (flow,) = await proxy.log.wait(1)
    report = FlowReport.from_metadata(flow.metadata[METADATA_KEY])
    assert report.fell_back and len(report.attempts) == 2, "precondition: a failed-over flow"
    report.repairs.append(REPAIR)
    flow.metadata[METADATA_KEY] = report.to_metadata()
    with path.open("wb") as f:
        io.FlowWriter(f).add(flow)


async def test_request_view_attempts_and_repairs_read_as_text(tmp_path: Path) -> None:
    from playwright.async_api import expect

    flows_file = tmp_path / "routed.mitm"
    await record_routed_flow(flows_file, tmp_path)
    async with (
        browser.running_mitmweb(flows_file, tmp_path) as web,
        browser.chromium_page(tmp_path) as page,
    ):
        try:
            page.set_default_timeout(UI_TIMEOUT_MS)
            await page.goto(web.login_url)
            rows = page.locator(".flow-table tbody tr.has-request")
            await expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
            await expect(rows.first.locator(".col-comment")).to_have_text(
                "RLY-1: served by fallback after primary (http_529)"
            )
            await rows.first.click()
            detail = page.locator(".flow-detail")

            await detail.locator("nav a", has_text="Request").click()
            request = detail.locator("section.request .contentview")
            await expect(request.locator(".controls h5")).to_have_text("LLM request")
            text = request.locator("pre")
            for line in (
                "model asked: claude-sonnet-4-6",
                "model sent:  claude-fallback (route claude, upstream fallback)",
                "tools offered: 1",
                "--- system ---",
                "You are a weather assistant.",
                "--- conversation: 3 messages ---",
                "What is the weather in Paris?",
                'tool call get_weather (toolu_1): {"city":"Paris"}',
                "tool result for toolu_1: 18°C, sunny",
            ):
                await expect(text).to_contain_text(line)

            await detail.locator("nav a", has_text="Response").click()
            response = detail.locator("section.response .contentview")
            await expect(response.locator(".controls h5")).to_have_text("LLM stream")
            text = response.locator("pre")
            for line in (
                "--- attempts (route claude): served by fallback after 1 failed ---",
                "1. primary: http_529, HTTP 529",
                "2. fallback: ok, HTTP 200, first event",
                "<- served the client",
                "--- repairs: 1 ---",
                "FIX-1 mends SSE-18 @event 4: keep-alive removed from inside event 4",
                "usage: ",
                "--- message ---",
            ):
                await expect(text).to_contain_text(line)
        except BaseException:
            print(f"mitmweb log ({web.log}):\n{web.log_text()}")
            raise
