"""The metrics addon: an optional Prometheus endpoint, off unless `mitmllm_metrics` is set.

    --set mitmllm_metrics=9464              http://127.0.0.1:9464/metrics
    --set mitmllm_metrics=127.0.0.1:9464    the same, the host spelled out

It counts every live LLM flow once mitmllm's report on it is final (it runs after the
inspector), and reads the breakers when Prometheus scrapes (see `mitmllm.engine.metrics`). The
endpoint is a small HTTP server in mitmproxy's own event loop, on loopback unless told
otherwise: the counts name routes, upstreams and hosts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import weakref
from typing import Any

from aiohttp import web
from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http

from mitmllm.engine.metrics import CONTENT_TYPE
from mitmllm.engine.metrics import Metrics
from mitmllm.glue import flowstate

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"


def parse_address(spec: str) -> tuple[str, int] | None:
    """``PORT`` or ``HOST:PORT`` (``[::1]:PORT`` for IPv6); None for '' (off)."""
    spec = spec.strip()
    if not spec:
        return None
    host, sep, port = spec.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, spec
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{port!r} is not a port number")
    return host, int(port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsExporter:
    def __init__(self, breakers: Any = None) -> None:
        self.metrics = Metrics(breakers)
        self.address: tuple[str, int] | None = None
        self.port = 0  # where it listens, once it does (a configured port 0 picks a free one)
        self._server: asyncio.AbstractServer | None = None
        self._running = False
        self._counted: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()

    def load(self, loader: Any) -> None:
        loader.add_option(
            "mitmllm_metrics",
            str,
            "",
            """Serve Prometheus metrics at http://HOST:PORT/metrics: a port (on 127.0.0.1) or
            HOST:PORT, e.g. 9464. Empty: off.""",
        )

    def configure(self, updated: set[str]) -> None:
        if "mitmllm_metrics" not in updated:
            return
        spec = ctx.options.mitmllm_metrics
        try:
            address = parse_address(spec)
        except ValueError as e:
            raise exceptions.OptionsError(
                f"mitmllm_metrics: {spec!r}: {e}; give a port (9464) or HOST:PORT "
                "(127.0.0.1:9464), or '' to turn metrics off"
            ) from e
        if address == self.address:
            return
        self.address = address
        if address is not None and not _loopback(address[0]):
            logger.warning(
                "mitmllm_metrics: serving metrics on %s, beyond loopback: anyone who reaches "
                "it reads the routes, upstreams and hosts of your traffic",
                address[0],
            )
        if self._running:
            asyncio.get_running_loop().create_task(self._restart())

    # --- lifecycle -----------------------------------------------------------------------------

    def running(self) -> None:
        # Sync on purpose (an async `running` stops script hot-reload); the server starts here.
        self._running = True
        if self.address is not None:
            asyncio.get_running_loop().create_task(self._restart())

    def done(self) -> None:
        self._running = False
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _restart(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            self.port = 0
        if self.address is None:
            return
        host, port = self.address
        try:
            server = await asyncio.get_running_loop().create_server(
                web.Server(self._handle, access_log=None), host, port
            )
        except OSError as e:
            logger.error(
                "mitmllm_metrics: cannot listen on %s:%d (%s); metrics are off until the "
                "option names a free port",
                host,
                port,
                e.strerror or e,
            )
            return
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        logger.info("mitmllm metrics: http://%s:%d/metrics", shown, self.port)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path != "/metrics":
            return web.Response(status=404, text="mitmllm serves its metrics at /metrics\n")
        return web.Response(body=self.metrics.exposition(), headers={"content-type": CONTENT_TYPE})

    # --- hooks ---------------------------------------------------------------------------------

    def response(self, flow: http.HTTPFlow) -> None:
        self._count(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._count(flow)

    def _count(self, flow: http.HTTPFlow) -> None:
        if self.address is None or not flow.live or flow in self._counted:
            return
        state = flowstate.get(flow)
        if state is None or not state.finalized:
            return
        self._counted.add(flow)
        self.metrics.record(state.report, flow.request.pretty_host)
