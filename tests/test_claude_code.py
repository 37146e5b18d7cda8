"""Claude Code itself through mitmdump + mitmllm, against the mock upstream: it prints the answer
when the upstream splices keep-alives into its events or leaves out message_stop, on a route with
one upstream and on a route with a fallback, and never needs more than one request per upstream.
It also gets its answer and a working tool call from an upstream that speaks only OpenAI Chat (a
route with ``translate: true``).

Claude Code is the npm package ``@anthropic-ai/claude-code`` (a native binary), installed into
``.cache/claude-code`` by ``.ci/install-claude-code`` (``just test`` runs it). Without it the
test is skipped, unless ``MITMLLM_CLAUDE_CODE_REQUIRED`` is set, as CI sets it. It runs offline:
an API key in the environment instead of a login, and Claude Code's telemetry, error reports,
auto-updates and other non-essential traffic switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mitmllm.demo.mitmdump import Mitmdump
from mitmllm.demo.mitmdump import command
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import TEXT
from mitmllm.mock.scenarios import sample_arguments
from mitmllm.mock.upstream import MockUpstream

ROOT = Path(__file__).resolve().parents[1]
CLAUDE = Path(
    os.environ.get("MITMLLM_CLAUDE") or ROOT / ".cache/claude-code/node_modules/.bin/claude"
)
#: A run that hangs fails the test; a healthy one takes about a second.
RUN_TIMEOUT = 120.0
ANSWER = "".join(TEXT)
#: Claude Code's switches for running without a login or any traffic but the API's.
OFFLINE = {
    "ANTHROPIC_API_KEY": "sk-ant-e2e-not-a-real-key",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_BUG_COMMAND": "1",
    "DISABLE_COST_WARNINGS": "1",
}

#: The part of the Read tool's schema the mock's arguments follow, and the file it reads.
READ_SCHEMA = {"type": "object", "properties": {"file_path": {"type": "string"}}}
FILE_TEXT = "It is 18 C in the mock's city today.\n"

pytestmark = pytest.mark.skipif(
    not CLAUDE.exists() and not os.environ.get("MITMLLM_CLAUDE_CODE_REQUIRED"),
    reason="Claude Code is not installed (run .ci/install-claude-code)",
)


def route_config(primary: str, fallback: str | None, fmt: str = ANTHROPIC) -> dict[str, Any]:
    """A route for Claude Code's requests to `primary` (and `fallback`); a `primary` of another
    wire format serves them translated, every Claude model mapped to one of its own."""
    upstreams = [{"name": "primary", "base_url": primary, "format": fmt, "auth": "none"}]
    chain: list[dict[str, Any]] = [{"upstream": "primary"}]
    if fmt != ANTHROPIC:
        chain[0]["models"] = {"*": "gpt-4.1-mini"}
    if fallback is not None:
        upstreams.append(
            {"name": "fallback", "base_url": fallback, "format": ANTHROPIC, "auth": "none"}
        )
        chain.append({"upstream": "fallback"})
    timeouts = {"connect": "2s", "first_event": "10s", "idle": "10s"}
    route: dict[str, Any] = {"name": "claude", "chain": chain, "timeouts": timeouts}
    if fmt != ANTHROPIC:
        route |= {"match": {"format": ANTHROPIC}, "translate": True}
    return {"upstreams": upstreams, "routes": [route]}


@contextlib.asynccontextmanager
async def mitmdump(
    tmp: Path, primary: str, fallback: str | None, fmt: str = ANTHROPIC
) -> AsyncIterator[Mitmdump]:
    """``mitmdump -s addons/mitmllm_addon.py`` in front of `primary`, with a route to it (and
    to `fallback`)."""
    config = tmp / "mitmllm.yaml"
    config.write_text(yaml.safe_dump(route_config(primary, fallback, fmt), sort_keys=False))
    proc = Mitmdump(command(primary, config, tmp / "flows.mitm"), tmp / "mitmdump.log")
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()


async def claude(
    base_url: str, home: Path, prompt: str = "Say hello.", *args: str
) -> tuple[int, str, str]:
    """Run ``claude -p PROMPT [ARGS]`` against `base_url`: (exit status, stdout, stderr)."""
    home.mkdir(exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not k.startswith(("ANTHROPIC_", "CLAUDE"))
    }
    env |= OFFLINE | {"HOME": str(home), "ANTHROPIC_BASE_URL": base_url}
    proc = await asyncio.create_subprocess_exec(
        str(CLAUDE),
        "-p",
        prompt,
        *args,
        cwd=home,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def messages(up: MockUpstream) -> list[Any]:
    """The API requests an upstream got (Claude Code also sends a HEAD / to check it is there)."""
    return [r for r in up.received if r.method == "POST"]


def test_claude_code_is_installed() -> None:
    assert CLAUDE.exists(), f"{CLAUDE} is missing: run .ci/install-claude-code"


@pytest.mark.parametrize("scenario", ["keepalive-race", "keepalive-mid-event", "truncated"])
@pytest.mark.parametrize("with_fallback", [False, True], ids=["one-upstream", "with-fallback"])
async def test_claude_code_prints_the_answer_of_a_mended_stream(
    tmp_path: Path, scenario: str, with_fallback: bool
) -> None:
    async with MockUpstream(default_scenario=scenario, name="primary") as primary:
        async with MockUpstream(name="fallback") as fallback:
            second = fallback.url if with_fallback else None
            async with mitmdump(tmp_path, primary.url, second) as proxy:
                status, out, err = await claude(proxy.url, tmp_path / "home")
    assert status == 0 and out.strip() == ANSWER, (status, out, err, proxy.tail())
    (request,) = messages(primary)  # no retry, no non-streaming second try
    assert request.stream
    assert messages(fallback) == [], "the primary's mended stream served"


async def test_claude_code_gets_the_fallbacks_answer_when_no_repair_can_help(
    tmp_path: Path,
) -> None:
    """message_start carries content (ANT-6): no repair may drop it, so the attempt fails
    before commit and the fallback answers, one request each."""
    async with MockUpstream(default_scenario="rule-ANT-6", name="primary") as primary:
        async with MockUpstream(name="fallback") as fallback:
            async with mitmdump(tmp_path, primary.url, fallback.url) as proxy:
                status, out, err = await claude(proxy.url, tmp_path / "home")
    assert status == 0 and out.strip() == ANSWER, (status, out, err, proxy.tail())
    assert len(messages(primary)) == 1 and len(messages(fallback)) == 1
    assert all(r.stream for r in (*messages(primary), *messages(fallback)))


async def test_claude_code_answers_after_a_tool_call_at_index_1(tmp_path: Path) -> None:
    """The first turn calls Claude Code's first tool from block index 1 (mended to 0): Claude
    Code asks for approval it cannot get in -p mode and sends that as the tool's result; the mock
    answers a turn that carries a tool result in text, which Claude Code prints. (The Agent tool
    is left out: it would start a sub-agent with a conversation of its own.)"""
    async with MockUpstream(default_scenario="tool-index-1", name="primary") as primary:
        async with mitmdump(tmp_path, primary.url, None) as proxy:
            status, out, err = await claude(
                proxy.url, tmp_path / "home", "What is 2+2?", "--disallowedTools", "Agent"
            )
    assert status == 0 and out.strip() == ANSWER, (status, out, err, proxy.tail())
    first, second = messages(primary)  # the tool call, then the turn with its result
    turns = [m for m in second.json["messages"] if m.get("role") != "system"]
    assert [b["type"] for b in turns[-1]["content"]] == ["tool_result"]
    assert turns[-2]["content"][0]["type"] == "tool_use", "the mended call, as the client saw it"


async def test_claude_code_is_served_by_an_openai_chat_upstream(tmp_path: Path) -> None:
    """The route's only upstream speaks OpenAI Chat: Claude Code's requests are translated, and
    so are the answers. The first turn calls Claude Code's one tool (Read, of the file the mock's
    arguments name); Claude Code runs it and sends its result back, which reaches the upstream
    as a Chat tool message with the call's id, and prints the answer to that turn. The client's
    key never reaches the Chat API."""
    home = tmp_path / "home"
    home.mkdir()
    path = sample_arguments(READ_SCHEMA)["file_path"]  # what the mock asks Read for
    (home / path).write_text(FILE_TEXT)
    async with MockUpstream(default_scenario="tool", name="chat") as chat:
        async with mitmdump(tmp_path, chat.url, None, OPENAI_CHAT) as proxy:
            status, out, err = await claude(proxy.url, home, "What is 2+2?", "--tools", "Read")
    assert status == 0 and out.strip() == ANSWER, (status, out, err, proxy.tail())
    calls = messages(chat)
    assert all(r.path == "/v1/chat/completions" and r.stream for r in calls), calls
    first, second = calls  # the tool call, then the turn with its result
    assert first.json["model"] == "gpt-4.1-mini"
    assert [t["function"]["name"] for t in first.json["tools"]] == ["Read"]
    (call,) = second.json["messages"][-2]["tool_calls"]
    assert call["function"]["name"] == "Read"
    result = second.json["messages"][-1]
    assert (result["role"], result["tool_call_id"]) == ("tool", call["id"])
    assert FILE_TEXT.strip() in result["content"], "Read ran and its result came back"
    keys = ("x-api-key", "authorization")
    assert not any(k in r.headers for r in calls for k in keys), "the client's key stayed home"
