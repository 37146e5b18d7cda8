"""mitmdump with the mitmllm addons, as a child process run the way a user runs it.

`Mitmdump.start` launches ``mitmllm proxy --mode reverse:UPSTREAM ...`` (mitmdump with every
mitmllm addon) on 127.0.0.1 and a free port (the kernel picks it), with everything it prints
going to a log file, and returns once mitmllm says the proxy is ready (mitmdump listens before its
last start-up check, so listening is not enough), or raises as soon as the process exits.
`Mitmdump.stop` interrupts it as Ctrl-C would, so that it finishes writing the flow file, and
kills it only if it does not exit in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import IO

from mitmllm.glue.runtime import READY

#: Seconds mitmdump may take to say it is ready (it takes about one).
START_TIMEOUT = 30.0
#: Seconds mitmdump may take to exit after an interrupt before it is killed.
STOP_TIMEOUT = 10.0

#: The line mitmllm logs once mitmproxy's start-up checks have passed (glue/runtime.py).
_READY = re.compile(re.escape(READY) + r": proxy at (?:127\.0\.0\.1|\[?::1\]?|localhost):(\d+)")


class MitmdumpError(Exception):
    """mitmdump could not be started or did not listen; the message says why."""


def command(upstream_url: str, config: Path, flows: Path) -> list[str]:
    """mitmdump's arguments (without the executable)."""
    return [
        "--mode",
        f"reverse:{upstream_url}",
        "--listen-port",
        "0",
        "--set",
        f"mitmllm_config={config}",
        "-w",
        str(flows),
    ]


def executable() -> list[str]:
    """``mitmllm proxy`` of this interpreter's environment, whatever the PATH says."""
    return [sys.executable, "-m", "mitmllm", "proxy"]


def relative(path: str | Path) -> str:
    """`path` relative to the working directory when it lies below it, as a user types it."""
    as_path, cwd = Path(path), Path.cwd()
    if as_path.is_absolute() and as_path.is_relative_to(cwd):
        return str(as_path.relative_to(cwd))
    return str(path)  # as given: Path() would fold the "//" of a URL


def shown(args: list[str]) -> str:
    """The command line as a user would type it."""
    out = ["mitmllm", "proxy"]
    for arg in args:
        key, eq, value = arg.partition("=")
        out.append(f"{key}={relative(value)}" if eq else relative(arg))
    return shlex.join(out)


class Mitmdump:
    """One mitmdump child process with `args`, its output in the file `log`."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log_path = log
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._ready: asyncio.Future[None] | None = None  # resolved at the ready line
        self._pump: asyncio.Task[None] | None = None  # copies the output to the log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    async def start(self) -> None:
        """Launch mitmdump and wait until it listens; MitmdumpError if it does not."""
        await self.launch()
        await self.listening()

    async def launch(self) -> None:
        """Start the process; `listening` then waits until it is ready."""
        self._log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # so the ready line comes out at once
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *executable(),
                *self.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        except OSError as e:
            raise MitmdumpError(f"cannot run mitmdump: {e}") from e
        self._ready = asyncio.get_running_loop().create_future()
        self._pump = asyncio.create_task(self._copy_output())

    async def _copy_output(self) -> None:
        """Copy everything mitmdump prints to the log, and resolve `_ready` at the ready line.

        Ends when mitmdump closes its output, that is when it exits.
        """
        assert self._proc is not None and self._proc.stdout is not None and self._log is not None
        assert self._ready is not None
        stdout, log, ready = self._proc.stdout, self._log, self._ready
        line = b""  # the line being read, until the ready line was seen
        while chunk := await stdout.read(65536):
            log.write(chunk)
            log.flush()
            if ready.done():
                continue
            *complete, line = (line + chunk).split(b"\n")
            for text in complete:
                found = _READY.search(text.decode("utf-8", "replace"))
                if found:
                    self.port = int(found.group(1))
                    ready.set_result(None)
                    break

    async def listening(self) -> None:
        """Wait until the launched mitmdump is ready; MitmdumpError as soon as it exits, or if it
        does not become ready within START_TIMEOUT."""
        proc = self._proc
        if proc is None or self._ready is None or self._pump is None:
            raise MitmdumpError("mitmdump was not launched")
        done, _ = await asyncio.wait(
            {self._ready, self._pump}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if self._ready in done:
            return
        if self._pump in done:  # its output ended: it exited
            status = await proc.wait()
            raise MitmdumpError(f"mitmdump exited with status {status} at start:\n{self.tail()}")
        raise MitmdumpError(f"mitmdump was not ready within {START_TIMEOUT:g}s:\n{self.tail()}")

    async def stop(self) -> int | None:
        """Interrupt mitmdump (it then completes the flow file) and wait; its exit status."""
        proc = self._proc
        try:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            if self._pump is not None:
                with contextlib.suppress(Exception):
                    await self._pump  # the rest of the output reaches the log
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
        return proc.returncode if proc is not None else None

    def tail(self, lines: int = 15) -> str:
        """The end of mitmdump's log, indented."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "  (no log)"
        return "\n".join("  " + line for line in text.splitlines()[-lines:]) or "  (empty log)"
