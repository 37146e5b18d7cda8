"""A real mitmproxy, in process, on 127.0.0.1 port 0, with mitmllm's addons loaded as `-s` would.

Not a test module. Scripts passed with `-s` run before mitmproxy's built-in Save addon; addons
added with `master.addons.add` would run after it and their metadata would not be saved, so the
addons are inserted where a script would sit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mitmproxy import http
from mitmproxy import options
from mitmproxy.tools.dump import DumpMaster

#: A generous bound on start-up (it takes well under a second): it only catches a hang.
START_TIMEOUT = 60.0


class FlowLog:
    """Collects finished flows (runs after mitmllm's addons), and says when the proxy runs."""

    def __init__(self) -> None:
        self.flows: list[http.HTTPFlow] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.running_event = asyncio.Event()

    def running(self) -> None:
        # mitmproxy calls `running` once its servers listen.
        self.running_event.set()

    def response(self, flow: http.HTTPFlow) -> None:
        self._add(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._add(flow)

    def _add(self, flow: http.HTTPFlow) -> None:
        self.flows.append(flow)
        for n, fut in self._waiters:
            if len(self.flows) >= n and not fut.done():
                fut.set_result(None)

    async def wait(self, n: int = 1, timeout: float = 60) -> list[http.HTTPFlow]:
        if len(self.flows) < n:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append((n, fut))
            await asyncio.wait_for(fut, timeout)
        return self.flows


@dataclass
class Proxy:
    master: DumpMaster
    port: int
    log: FlowLog
    addons: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def running_proxy(
    addons: Sequence[Any],
    *,
    mode: str = "regular",
    **opts: Any,
) -> AsyncIterator[Proxy]:
    """Start mitmdump's master with `addons`; `mode` is e.g. "regular" or "reverse:http://...".

    Options of mitmllm's addons can be passed as keyword arguments. The tests read each flow's
    body, as mitmweb would: unless they say otherwise, flows keep their streams
    (``mitmllm_keep_body=8MiB``; by default mitmdump alone keeps none).
    """
    master = DumpMaster(options.Options(), with_termlog=False, with_dumper=False)
    # mitmproxy exits when anything logs an error while it starts; in a test process that can be
    # an earlier test's leftover (a client closed after its loop), which is not this proxy's.
    master.addons.remove(master.addons.get("errorcheck"))
    log = FlowLog()
    chain = master.addons.chain
    save_index = chain.index(master.addons.get("save"))
    for addon in reversed([*addons, log]):
        master.addons.register(addon)
        chain.insert(save_index, addon)
    if "mitmllm_keep_body" in master.options and "mitmllm_keep_body" not in opts:
        opts["mitmllm_keep_body"] = "8MiB"
    master.options.update(
        listen_host="127.0.0.1",
        listen_port=0,
        mode=[mode],
        connection_strategy="lazy",
        **opts,
    )
    task = asyncio.create_task(master.run())
    started = asyncio.ensure_future(log.running_event.wait())
    await asyncio.wait({started, task}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        started.cancel()
        if task.done():
            task.result()  # the master's own error, if it raised one
        raise RuntimeError(f"the proxy was not running within {START_TIMEOUT:g}s")
    ps = master.addons.get("proxyserver")
    try:
        yield Proxy(master, ps.listen_addrs()[0][1], log, list(addons))
    finally:
        master.shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
