"""The mock upstream server: a real HTTP server on 127.0.0.1 that carries out scenario plans.

All decisions are made by `mitmllm.mock.scenarios.plan_request`; this module only moves bytes:
it reads the request, records it, sends the plan's headers, then writes each step (after its
delay) as its own HTTP chunk, stalls, or drops the connection.

A client that goes away cancels the handler at once (aiohttp's handler cancellation), so a
stalled or slow stream stops writing as soon as the proxy closes the upstream connection; the
`cancelled` counter records it, and nothing is logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from mitmllm.mock.scenarios import HEADER_UPSTREAM
from mitmllm.mock.scenarios import SCENARIOS
from mitmllm.mock.scenarios import Action
from mitmllm.mock.scenarios import Plan
from mitmllm.mock.scenarios import find_scenario
from mitmllm.mock.scenarios import plan_request

logger = logging.getLogger(__name__)

#: How long `stop()` lets running responses finish before it cancels them.
SHUTDOWN_GRACE = 0.2


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the upstream saw it."""

    method: str
    path: str  # as sent, with any /mock/NAME/ prefix
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any  # the parsed body, or None
    scenario: str | None  # the scenario that answered (None: routing or selection failed)
    fmt: str | None
    model: str | None  # the model as echoed (any ~scenario suffix stripped)
    stream: bool
    ident: str  # stamped into the answer's ids (msg_IDENT, chatcmpl-IDENT, ...)


class MockUpstream:
    """Anthropic, OpenAI (Chat Completions, Responses) and Gemini in one server, per scenario.

    ``async with MockUpstream(default_scenario="overloaded", name="primary") as up:`` starts it
    on 127.0.0.1 and a free port; point clients at `up.url` (or `up.url_for("tool")`).
    """

    def __init__(
        self,
        *,
        default_scenario: str | None = None,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if default_scenario is not None and find_scenario(default_scenario) is None:
            raise ValueError(
                f"unknown mock scenario {default_scenario!r}; valid: {', '.join(SCENARIOS)}"
            )
        self.default_scenario = default_scenario
        self.name = name
        self.host = host
        self.received: list[ReceivedRequest] = []
        #: responses cut short because the client went away
        self.cancelled = 0
        #: responses written to their end
        self.completed = 0
        #: connections closed on purpose by a `drop` step
        self.dropped = 0
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("mock upstream already started")
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_GRACE
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]
        self._stopping = False

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._stopping = True
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> MockUpstream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("mock upstream not started")
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:PORT`` (OpenAI clients add ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    def url_for(self, scenario: str) -> str:
        """A base URL that selects `scenario` for every request sent under it."""
        return f"{self.url}/mock/{scenario}"

    # --- serving --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        ident = f"{len(self.received) + 1:04d}"
        plan = plan_request(
            request.method,
            request.path,
            dict(request.query),
            request.headers,
            body,
            default_scenario=self.default_scenario,
            ident=ident,
        )
        self.received.append(self._record(request, body, plan, ident))
        logger.debug(
            "%s %s -> %d (%s, %s)",
            request.method,
            request.path,
            plan.status,
            plan.fmt,
            plan.scenario,
        )
        headers = CIMultiDict(plan.headers)
        if self.name is not None:
            headers[HEADER_UPSTREAM] = self.name
        response = web.StreamResponse(status=plan.status, headers=headers)
        if plan.length is None:
            response.enable_chunked_encoding()
        else:
            response.content_length = plan.length
        try:
            await response.prepare(request)
            for step in plan.steps:
                if step.delay:
                    await asyncio.sleep(step.delay)
                if step.action is Action.DROP:
                    self.dropped += 1
                    if request.transport is not None:
                        request.transport.close()  # sends what was written, then FIN
                    return response
                if step.data:
                    await response.write(step.data)
            await response.write_eof()
        except asyncio.CancelledError:
            if not self._stopping:
                self.cancelled += 1
            raise
        except ConnectionResetError:
            self.cancelled += 1
            return response
        self.completed += 1
        return response

    @staticmethod
    def _record(request: web.Request, body: bytes, plan: Plan, ident: str) -> ReceivedRequest:
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        return ReceivedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            json=parsed,
            scenario=plan.scenario,
            fmt=plan.fmt,
            model=plan.model,
            stream=plan.stream,
            ident=ident,
        )
