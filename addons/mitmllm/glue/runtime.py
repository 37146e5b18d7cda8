"""Process housekeeping for a long-running proxy, and the line that says it is ready.

Python's full garbage collections scan every live object, and in a proxy that has loaded
mitmproxy, the SDK-sized dependencies and mitmllm that is a lot of objects: a full collection
paused every stream for 70-100 ms under load (measured by the bench's concurrency run). Objects
that exist once start-up is over live for the whole process, so they are moved out of the
collector's view (`gc.freeze`); collections then scan only what flows create.

mitmproxy prints "listening at" before its last start-up check, and exits after it if anything
logged an error while starting (a bad option, a script that failed to load). So "listening" does
not mean "serving". Once that check has passed, this addon logs `READY` with the proxy's address:
programs that start mitmdump (the demo, tests, scripts) wait for that line or for the process to
exit, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import gc
import logging

from mitmproxy import ctx

logger = logging.getLogger(__name__)

#: The start of the line logged once mitmproxy is serving with mitmllm loaded.
READY = "mitmllm ready"
#: mitmdump's termlog_verbosity names, as logging levels.
_VERBOSITY = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "alert": logging.INFO + 1,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def shown(level: int) -> bool:
    """Would a log record of `level` be shown? mitmweb and the console keep an event log
    (their ``eventstore``); mitmdump prints what ``termlog_verbosity`` lets through. A line per
    flow that nobody shows still costs mitmproxy a wake-up of its event loop and a call of
    every addon (its legacy ``add_log`` event): ``mitmdump -q`` paid that for nothing. Without
    either (another master, tests), assume it is."""
    master = getattr(ctx, "master", None)
    if master is None or master.addons.get("eventstore") is not None:
        return True
    verbosity = getattr(master.options, "termlog_verbosity", None)
    return verbosity is None or level >= _VERBOSITY.get(verbosity, logging.INFO)


class Runtime:
    def __init__(self) -> None:
        self.ready = asyncio.Event()  # set with the READY line (binds to the loop on first use)

    def running(self) -> None:
        # Sync on purpose: an async `running` stops mitmproxy's script hot-reload.
        gc.collect()
        gc.freeze()
        asyncio.get_running_loop().call_soon(self._announce_once_started)

    def _announce_once_started(self) -> None:
        """Log READY once mitmproxy's start-up error check has passed (never if it fails)."""
        check = ctx.master.addons.get("errorcheck")
        if check is not None:
            if check.logger.has_errored:
                return  # mitmproxy exits now, having said why
            if check.logger in logging.getLogger().handlers:
                # The check runs right after the `running` hook; look again on the next turn of
                # the event loop (a callback, not a timer: nothing waits for a guessed time).
                asyncio.get_running_loop().call_soon(self._announce_once_started)
                return
        server = ctx.master.addons.get("proxyserver")
        addresses = server.listen_addrs() if server is not None else []
        where = ", ".join(_address(a) for a in addresses) or "no listener"
        logger.info("%s: proxy at %s", READY, where)
        self.ready.set()


def _address(addr: tuple) -> str:  # type: ignore[type-arg]
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
