"""mitmweb in a subprocess and Debian's headless Chromium driven by Playwright, for UI tests.

Not a test module. Playwright never downloads a browser here: it drives the system's Chromium
(`CHROMIUM`, installed by `.ci/install-browser`). Tests call `missing()` to skip when the browser
or the Python package is absent; setting `MITMLLM_BROWSER_REQUIRED=1` turns that skip into a
failure, so CI cannot pass by silently skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from playwright.async_api import Page

#: Debian's `chromium` package.
CHROMIUM = Path("/usr/bin/chromium")

#: Without the background-networking flags Chromium keeps dialling Google services, which on a
#: closed network means a stream of refused connections.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

REQUIRED_ENV = "MITMLLM_BROWSER_REQUIRED"

#: The repository's mitmproxy script that loads every mitmllm addon.
ADDON_SCRIPT = Path(__file__).resolve().parents[1] / "addons" / "mitmllm_addon.py"

#: How long mitmweb may take to serve its UI (it imports mitmproxy and mitmllm first).
STARTUP_TIMEOUT = 20.0


def missing() -> str | None:
    """Why a browser test cannot run here, or None when it can."""
    if importlib.util.find_spec("playwright") is None:
        return (
            "the Python package `playwright` is not installed (a dev dependency of the project; "
            "its bundled browsers are not needed)"
        )
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: run .ci/install-browser (installs Debian's chromium)"
    return None


def required() -> bool:
    """Whether a missing browser must fail the run instead of skipping (set in CI)."""
    return os.environ.get(REQUIRED_ENV, "") not in ("", "0")


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Mitmweb:
    """A running mitmweb: its UI address, the token that opens it, and its log file."""

    port: int
    token: str
    log: Path
    process: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def login_url(self) -> str:
        """The UI with the token as a query parameter; mitmweb answers with an auth cookie."""
        return f"{self.url}?token={self.token}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.asynccontextmanager
async def running_mitmweb(
    rfile: Path,
    workdir: Path,
    *,
    columns: Sequence[str] = ("icon", "path", "method", "status", "size", "time", "comment"),
    extra: Sequence[str] = (),
) -> AsyncIterator[Mitmweb]:
    """Run `mitmweb -s addons/mitmllm_addon.py --rfile RFILE` until the block ends.

    The UI listens on 127.0.0.1 (a free port), is protected by a random token, opens no browser
    and runs no proxy server: it only shows the flows read from `rfile`. `workdir` holds its
    configuration directory (CA files) and log.
    """
    token = secrets.token_urlsafe(16)
    log = workdir / "mitmweb.log"
    confdir = workdir / "mitmproxy-conf"
    confdir.mkdir(parents=True, exist_ok=True)
    # A sequence option takes one `--set` per item; a comma list would be a single item.
    column_args = [arg for c in columns for arg in ("--set", f"web_columns={c}")]
    # The free port can be taken between probing and listening: try again with another one.
    for _attempt in range(3):
        port = free_port()
        args = [
            "-s",
            str(ADDON_SCRIPT),
            "--rfile",
            str(rfile),
            "--set",
            f"confdir={confdir}",
            "--set",
            "server=false",
            "--set",
            "web_open_browser=false",
            "--set",
            "web_host=127.0.0.1",
            "--set",
            f"web_port={port}",
            "--set",
            f"web_password={token}",
            *column_args,
            *extra,
        ]
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from mitmproxy.tools.main import mitmweb; mitmweb()",
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                # unbuffered, so the log is readable while mitmweb runs (and after a crash)
                env=os.environ | {"PYTHONUNBUFFERED": "1"},
            )
        web = Mitmweb(port, token, log, process)
        try:
            if await _serving(web):
                break
        except BaseException:
            await _stop(process)
            raise
        await _stop(process)
        if "Address already in use" not in web.log_text():
            raise RuntimeError(f"mitmweb did not start:\n{web.log_text()}")
    else:
        raise RuntimeError(f"mitmweb found no free port:\n{web.log_text()}")
    try:
        yield web
    finally:
        await _stop(process)


async def _serving(web: Mitmweb) -> bool:
    """Poll until the UI answers with the token (True) or mitmweb exits (False)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    headers = {"Authorization": f"Bearer {web.token}"}
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if web.process.returncode is not None:
                return False
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(web.url + "flows", headers=headers) as resp:
                    if resp.status == 200:
                        return True
            await asyncio.sleep(0.05)
    raise TimeoutError(f"mitmweb did not serve {web.url} in {STARTUP_TIMEOUT:.0f} s")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 5)
    except TimeoutError:
        process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def chromium_page(workdir: Path) -> AsyncIterator[Page]:
    """A page in headless Chromium with a fresh profile under `workdir`.

    If the block fails, a screenshot of the page is saved as `workdir/screenshot.png`.
    """
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            workdir / "chromium-profile",
            executable_path=CHROMIUM,
            headless=True,
            args=list(CHROMIUM_FLAGS),
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            try:
                yield page
            except BaseException:
                shot = workdir / "screenshot.png"
                with contextlib.suppress(Exception):
                    await page.screenshot(path=shot, full_page=True)
                    print(f"screenshot of the failing page: {shot}")
                raise
        finally:
            await context.close()
