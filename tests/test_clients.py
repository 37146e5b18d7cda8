"""The official SDKs' own stream helpers, through mitmllm, for every demo scenario.

Each row of the demo is read with the helper an application would use: Anthropic
`messages.stream(...).get_final_message()`, OpenAI `chat.completions.stream(...)
.get_final_completion()` and `responses.stream(...).get_final_response()`, Google's `google-genai`
`aio.models.generate_content_stream(...)`. The client must get either a complete, correct message
or the documented outcome below, and the flow must carry the findings that explain it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import pytest_asyncio
from google import genai
from google.genai import types as genai_types

from mitmllm.demo.config import demo_config
from mitmllm.demo.scenarios import LONG_TOOL_NAME
from mitmllm.demo.scenarios import ROW_HEADER
from mitmllm.demo.scenarios import ROWS
from mitmllm.demo.scenarios import Group
from mitmllm.demo.scenarios import Row
from mitmllm.glue.addons import all_addons
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import expected_rules
from mitmllm.mock.upstream import MockUpstream
from tests.proxyharness import Proxy
from tests.proxyharness import running_proxy

TEXT = "Hello from the mock upstream."
TEXTS = {"split-utf8": "Grüße aus 東京 🙂 ✓"}  # what the mock says, by scenario
COMPLETE = "complete"

#: What the client gets when it is not a complete, correct message: the exception it raises, or
#: "silent: ..." where the SDK returns without an error (the cases mitmllm exists to flag).
DOCUMENTED: dict[str, str] = {
    "anthropic keepalive-mid-event": "silent: a delta is lost",
    "responses keepalive-mid-event": "JSONDecodeError",
    "chat keepalive-mid-data": "JSONDecodeError",
    "anthropic tool-index-1": "IndexError",
    "chat tool-index-1": "IndexError",
    "anthropic double-start": "silent: both attempts merged",
    "responses double-start": "RuntimeError",
    "chat comment-only": "AssertionError",  # the helper finds no chunk at all
    # google-genai 2.8 reads every non-blank line as JSON, comments included.
    "gemini comment-only": "UnknownApiResponseError",
    "chat done-only": "AssertionError",
    "chat missing-done": "silent: looks complete",
    "anthropic truncated": "silent: looks complete",
    "responses truncated": "RuntimeError",
    "gemini truncated": "silent: no finish reason",
    "anthropic inband-error": "APIStatusError",
    "chat inband-error": "APIError",
    "anthropic no-final-blank": "silent: looks complete",
    "chat no-final-blank": "silent: looks complete",
    # anthropic 2.17 wraps the dropped connection in its own error (older versions let httpx's
    # RemoteProtocolError through).
    "anthropic drop": "APIConnectionError",
    "anthropic stall-after-commit": "APIStatusError",
    "chat stall-after-commit": "APIError",
    "anthropic bad-request": "BadRequestError",
}

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxy(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Proxy]:
    path: Path = tmp_path_factory.mktemp("clients") / "demo.yaml"
    async with MockUpstream(name="primary") as primary, MockUpstream(name="fallback") as fallback:
        path.write_text(demo_config(primary.url, fallback.url))
        async with running_proxy(
            all_addons(), mode=f"reverse:{primary.url}", mitmllm_config=str(path)
        ) as p:
            yield p


async def _read(row: Row, url: str) -> tuple[str, str | None, tuple[str, ...], bool]:
    """(text, model, tool names, finished) with the format's official helper."""
    headers = {ROW_HEADER: row.key, **row.headers}
    if row.fmt == ANTHROPIC:
        client = anthropic.AsyncAnthropic(api_key="demo", base_url=url, max_retries=0)
        async with client.messages.stream(
            model=row.request_model,
            max_tokens=64,
            extra_headers=headers,
            messages=[{"role": "user", "content": "Say hello."}],
        ) as stream:
            m = await stream.get_final_message()
        await client.close()
        text = "".join(b.text for b in m.content if b.type == "text")
        tools = tuple(b.name for b in m.content if b.type == "tool_use")
        return text, m.model, tools, m.stop_reason is not None
    if row.fmt == OPENAI_CHAT:
        client_o = openai.AsyncOpenAI(api_key="demo", base_url=url + "/v1", max_retries=0)
        kwargs: dict[str, Any] = {}
        if row.group is Group.REWRITE:
            kwargs["tools"] = [
                {"type": "function", "function": {"name": LONG_TOOL_NAME, "parameters": {}}}
            ]
        async with client_o.chat.completions.stream(
            model=row.request_model,
            extra_headers=headers,
            messages=[{"role": "user", "content": "Say hello."}],
            **kwargs,
        ) as stream_c:
            c = await stream_c.get_final_completion()
        await client_o.close()
        msg = c.choices[0].message
        calls = tuple(t.function.name for t in msg.tool_calls or ())
        return msg.content or "", c.model, calls, c.choices[0].finish_reason is not None
    if row.fmt == GEMINI:
        client_g = genai.Client(
            api_key="demo",
            http_options=genai_types.HttpOptions(
                base_url=url,
                api_version="v1beta",
                headers=headers,
                retry_options=genai_types.HttpRetryOptions(attempts=1),
            ),
        )
        chunks = [
            chunk
            async for chunk in await client_g.aio.models.generate_content_stream(
                model=row.request_model, contents="Say hello."
            )
        ]
        await client_g.aio.aclose()
        text = "".join(
            part.text or ""
            for chunk in chunks
            for cand in chunk.candidates or ()
            for part in (cand.content.parts if cand.content else None) or ()
        )
        finished = any(cand.finish_reason for ch in chunks for cand in ch.candidates or ())
        model = chunks[-1].model_version if chunks else None
        return text, model, (), finished
    client_r = openai.AsyncOpenAI(api_key="demo", base_url=url + "/v1", max_retries=0)
    async with client_r.responses.stream(
        model=row.request_model, input="Say hello.", extra_headers=headers
    ) as stream_r:
        r = await stream_r.get_final_response()
    await client_r.close()
    return r.output_text, r.model, (), r.status == "completed"


@pytest.mark.parametrize("row", ROWS, ids=[r.key for r in ROWS])
async def test_sdk_helper_gets_a_correct_message_or_the_documented_outcome(
    proxy: Proxy, row: Row
) -> None:
    before = len(proxy.log.flows)
    outcome = DOCUMENTED.get(row.key, COMPLETE)
    try:
        text, model, tools, finished = await _read(row, proxy.url)
    except Exception as e:  # noqa: BLE001 - the exception is the outcome under test
        got = type(e).__name__
        assert not outcome.startswith((COMPLETE, "silent")), f"{row.key}: raised {got}: {e}"
        assert got == outcome, f"{row.key}: raised {got}, documented {outcome}: {e}"
    else:
        if outcome == COMPLETE:
            assert finished, f"{row.key}: no end reason"
            if row.group is Group.REWRITE and row.fmt == OPENAI_CHAT:
                assert tools == (LONG_TOOL_NAME,)  # its own tool name, not the upstream's
            elif row.scenario == "tool-index-1":  # mended: one call, as the first block
                assert len(tools) == 1 and text == "", (row.key, tools, text)
            else:
                assert text == TEXTS.get(row.scenario, TEXT), (row.key, text)
                assert model is not None and row.request_model.split("~")[0] in model
        else:
            assert outcome.startswith("silent"), f"{row.key}: documented {outcome}, got {text!r}"
    flow = (await proxy.log.wait(before + 1))[-1]
    meta = flow.metadata["mitmllm"]
    flagged = {f["rule"] for f in meta["findings"] if f["severity"] in ("error", "warning")}
    if row.group is Group.BROKEN:
        assert expected_rules(row.scenario, row.fmt) <= flagged, meta["summary"]
    if outcome.startswith("silent"):
        assert flow.marked, "a silent failure must be flagged"
    if row.group is Group.REPAIR:  # the same breakage as a broken row, mended on its route
        assert meta["upstream"].endswith("primary") and "FIX-" in meta["summary"]
    if row.group is Group.FAILOVER and row.served_by == "fallback":
        assert meta["upstream"].endswith("fallback") and "RLY-1" in meta["summary"]
    if row.fallback_fmt:  # served by an upstream of another format, read in the client's
        assert meta["translated"] == f"{row.fmt} -> {row.fallback_fmt}"
        assert [a["outcome"] for a in meta["attempts"]] == ["http_529", "ok"]
