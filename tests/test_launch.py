"""`mitmllm proxy` and `mitmllm web` as a user starts them, and mitmdump with the script.

Each test runs the real command in a child process and reads what it prints: start-up is ready
when the command says it listens (never after a sleep), and fails when the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import aiohttp
import pytest
from mitmproxy import io as mio

from mitmllm.engine import fixtures
from mitmllm.mock.upstream import MockUpstream
from tests.browser import free_port
from tests.relayharness import closed_port

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "addons" / "mitmllm_addon.py"
BAD_CONFIG = ROOT / "tests" / "configs" / "bad-unknown-upstream.yaml"
MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))
CAPTURES = ROOT / "captures"
#: Generous bounds that only catch a hang.
START_TIMEOUT = 60.0
#: What mitmllm logs once mitmproxy serves (glue/runtime.py), with the proxy's address.
READY = re.compile(r"mitmllm ready: proxy at (\S+):(\d+)")
BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 32,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


@dataclass
class Running:
    """A child process whose combined output is read line by line as it comes."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    async def line_matching(self, pattern: str | re.Pattern[str]) -> re.Match[str]:
        """Read on until a line matches; fails if the process exits first."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        for line in self.lines:
            if m := rx.search(line):
                return m
        assert self.process.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.process.stdout.readline(), START_TIMEOUT)
            if not raw:
                raise AssertionError(
                    f"exited ({await self.process.wait()}) before printing {rx.pattern!r}:\n"
                    + "".join(self.lines)
                )
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if m := rx.search(line):
                return m


@contextlib.asynccontextmanager
async def running(*args: str) -> AsyncIterator[Running]:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    try:
        yield Running(process)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def finished(*args: str) -> tuple[int, str]:
    """Run to the end: exit status and everything printed."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), START_TIMEOUT)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


def mitmllm(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "mitmllm", *args)


async def test_proxy_listens_on_loopback_and_logs_one_line_per_flow(tmp_path: Path) -> None:
    async with MockUpstream(name="mock") as upstream:
        args = mitmllm("proxy", "--mode", f"reverse:{upstream.url}", "--listen-port", "0")
        async with running(*args, "--set", f"confdir={tmp_path}") as proxy:
            host, port = (await proxy.line_matching(READY)).groups()
            assert host == "127.0.0.1", "the proxy listens on loopback unless told otherwise"
            async with aiohttp.ClientSession() as http:
                for scenario in ("healthy", "tool-index-1"):
                    async with http.post(
                        f"http://127.0.0.1:{port}/v1/messages",
                        json=BODY,
                        headers={"x-mock-scenario": scenario, "x-mock-delay-ms": "0"},
                    ) as resp:
                        assert resp.status == 200
                        await resp.read()
            ok = await proxy.line_matching(r"mitmllm 127\.0\.0\.1: anthropic .* \| ok$")
            broken = await proxy.line_matching(r"mitmllm 127\.0\.0\.1: anthropic .* \| ANT-7")
            for m in (ok, broken):
                line = m.string.rstrip("\n")
                assert "\n" not in line and "stream" in line and "events" in line


async def test_a_bad_config_is_one_line_and_a_failed_exit_before_listening() -> None:
    status, out = await finished(*mitmllm("proxy", "--config", str(BAD_CONFIG), "-p", "0"))
    assert status != 0
    assert "Traceback" not in out and "listening" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert "routes.0.chain.1.upstream" in lines[0] and "did you mean 'fallback'" in lines[0]
    assert lines[0].startswith("mitmllm proxy: mitmllm_config:")


async def test_a_bad_config_in_mitmdump_s_is_one_message_without_a_traceback() -> None:
    """As close as mitmproxy allows: a script loads while mitmproxy already binds its port, so
    its "listening" line may come before the exit; the message itself is one line, once."""
    status, out = await finished(
        MITMDUMP, "-s", str(SCRIPT), "-p", "0", "--set", f"mitmllm_config={BAD_CONFIG}"
    )
    assert status != 0
    assert "Traceback" not in out
    assert out.count("routes.0.chain.1.upstream") == 1, out
    assert "Error logged during startup, exiting" in out


async def test_routes_make_a_dead_reverse_target_fail_over(tmp_path: Path) -> None:
    """mitmproxy connects eagerly by default and drops the client before any hook runs when the
    target is down; with routes configured mitmllm switches to lazy connects by itself."""
    dead = f"http://127.0.0.1:{closed_port()}"
    async with MockUpstream(name="fallback") as fallback:
        config = tmp_path / "mitmllm.yaml"
        config.write_text(
            f"""\
version: 1
upstreams:
  - {{name: primary, base_url: "{dead}", format: anthropic}}
  - {{name: fallback, base_url: "{fallback.url}", format: anthropic}}
routes:
  - name: claude
    chain: [{{upstream: primary}}, {{upstream: fallback}}]
""",
            encoding="utf-8",
        )
        args = mitmllm("proxy", "--config", str(config), "--mode", f"reverse:{dead}", "-p", "0")
        async with running(*args, "--set", f"confdir={tmp_path}") as proxy:
            _, port = (await proxy.line_matching(READY)).groups()
            await proxy.line_matching("connection_strategy is set to lazy")
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"http://127.0.0.1:{port}/v1/messages",
                    json=BODY,
                    headers={"x-mock-delay-ms": "0"},
                ) as resp:
                    assert resp.status == 200
                    assert b"message_stop" in await resp.read()
            await proxy.line_matching(r"via fallback after 1 failed")
    assert len(fallback.received) == 1


async def test_replaying_a_flow_file_prints_the_findings(tmp_path: Path) -> None:
    flows = tmp_path / "recorded.mitm"
    spliced = (
        CAPTURES / "scenarios" / "anthropic--claude-sonnet-4-6--keepalive-mid-data--522fd4.json"
    )
    with flows.open("wb") as fh:
        mio.FlowWriter(fh).add(fixtures.to_flow(fixtures.load_fixture(spliced)))
    status, out = await finished(
        MITMDUMP, "-nr", str(flows), "-s", str(SCRIPT), "--set", f"confdir={tmp_path}"
    )
    assert status == 0, out
    summary = next(line for line in out.splitlines() if "mitmllm mock.test:" in line)
    assert summary.endswith("| PAY-1, SSE-18, SSE-8")
    assert re.search(r"^  SSE-18 \(error\) @event 4: previous event's data was cut", out, re.M)


async def test_web_shows_mitmllm_s_comment_column_and_findings(tmp_path: Path) -> None:
    flows = tmp_path / "recorded.mitm"
    broken = CAPTURES / "scenarios" / "anthropic--claude-sonnet-4-6--double-start--1555d8.json"
    with flows.open("wb") as fh:
        mio.FlowWriter(fh).add(fixtures.to_flow(fixtures.load_fixture(broken)))
    token, port = secrets.token_urlsafe(12), free_port()
    args = mitmllm(
        "web",
        "--rfile",
        str(flows),
        "--set",
        "server=false",
        "--set",
        "web_open_browser=false",
        "--set",
        f"web_port={port}",
        "--set",
        f"web_password={token}",
        "--set",
        f"confdir={tmp_path}",
    )
    async with running(*args) as web:
        await web.line_matching(rf"Web server listening at http://127\.0\.0\.1:{port}/")
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(f"http://127.0.0.1:{port}/options.json") as resp:
                options = await resp.json()
            async with http.get(f"http://127.0.0.1:{port}/flows") as resp:
                (flow,) = await resp.json()
    assert "comment" in options["web_columns"]["value"]
    assert "ANT-5" in flow["comment"] and flow["marked"]


@pytest.mark.parametrize("command", ["proxy", "web"])
async def test_mitmproxy_s_own_help_is_passed_through(command: str) -> None:
    _, out = await finished(*mitmllm(command, "--", "--help"))  # mitmproxy exits 1 on --help
    assert "--listen-host" in out and "--set option[=value]" in out
