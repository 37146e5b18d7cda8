"""A replay upstream: recorded fixtures served over HTTP, at their recorded chunking and pace.

It stands in for a real LLM API (or the mock upstream) in the demo and end-to-end tests: point a
client or mitmproxy's reverse mode at `ReplayUpstream.url` and every request that matches a fixture
gets that fixture's response: its status, headers (without hop-by-hop and length headers, which
are the server's business), and body written chunk by chunk at the recorded offsets, each at its
recorded time after the request arrived, divided by `speed`. A stream that was cut when it was
recorded is cut again (the connection is aborted after the last recorded byte); a request that got
no response at all is answered 502 with the recorded error.

Matching: a request matches a fixture when the method, path (without query), wire format, model,
stream flag and JSON body agree. Before the bodies are compared these fields are dropped from
both, because clients fill them per run or per user: `VOLATILE_FIELDS`, and every body field the
fixture had redacted (its value is masked in the file). Everything else must be equal, key order
and whitespace aside. IDs a replayed response hands out (``previous_response_id``, tool call IDs)
come back identical on the next turn, so multi-turn conversations replay. When several fixtures
match the same request they are served in turn.

A request no fixture matches is answered 404 with a JSON error naming the request's method, path,
format and model and the fixtures that are loaded; its shape (``error.message``) is one the
Anthropic and OpenAI SDKs display.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from mitmllm.engine.fixtures import Fixture
from mitmllm.engine.fixtures import iter_fixtures
from mitmllm.engine.fixtures import load_fixture
from mitmllm.engine.fixtures import recognise
from mitmllm.engine.fixtures import split_url

logger = logging.getLogger("mitmllm.replay")

#: Request body fields ignored when matching (dotted paths): set per user, session or run.
VOLATILE_FIELDS = (
    "metadata.user_id",  # Anthropic: Claude Code puts a session id here
    "user",  # OpenAI: end-user id
    "safety_identifier",  # OpenAI: end-user id (successor of `user`)
    "prompt_cache_key",  # OpenAI: often derived from a session id
)
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
MAX_REQUEST_BYTES = 64 * 2**20
_LISTED = 50  # fixtures named in a 404 answer


@dataclass(frozen=True)
class RequestKey:
    """What a request is matched on."""

    method: str
    path: str
    format: str | None
    model: str | None
    stream: bool
    body: bytes  # canonical JSON (sorted keys) without ignored fields, or the raw body

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "format": self.format,
            "model": self.model,
            "stream": self.stream,
        }


def request_key(
    method: str, url_or_path: str, body: bytes, ignore: Iterable[str] = VOLATILE_FIELDS
) -> RequestKey:
    seen = recognise(method, url_or_path, body)
    path, _ = split_url(url_or_path)
    parsed = seen.body
    if isinstance(parsed, dict | list):
        parsed = orjson.loads(orjson.dumps(parsed))  # a private copy to drop fields from
        for dotted in ignore:
            _drop(parsed, dotted.split("."))
        canonical = orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)
    else:
        canonical = body
    return RequestKey(
        method.upper(),
        path,
        seen.dialect.name if seen.dialect else None,
        seen.model,
        seen.stream,
        canonical,
    )


def _drop(node: Any, path: list[str]) -> None:
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        if not rest:
            node.pop(head, None)
        elif head in node:
            _drop(node[head], rest)
    elif isinstance(node, list) and rest and head.isdigit() and int(head) < len(node):
        _drop(node[int(head)], rest)


def _ignored_fields(fixtures: Iterable[Fixture]) -> tuple[str, ...]:
    """VOLATILE_FIELDS plus the body fields any fixture had redacted."""
    fields = dict.fromkeys(VOLATILE_FIELDS)
    for fx in fixtures:
        for where in fx.redacted:
            if where.startswith("request.body."):
                fields[where.removeprefix("request.body.")] = None
    return tuple(fields)


@dataclass(frozen=True)
class Served:
    """One request the replay upstream answered (for tests and logs)."""

    method: str
    path: str
    fixture: str | None  # None: no fixture matched (404)
    status: int


class ReplayUpstream:
    """Serves fixtures on 127.0.0.1. See the module docstring."""

    def __init__(
        self,
        fixtures: Iterable[Fixture | str | Path],
        *,
        speed: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0 (1.0 = as recorded, inf = no delays): {speed}")
        self.speed = speed
        self.host = host
        self.port = port
        self.fixtures: list[Fixture] = []
        for item in fixtures:
            if isinstance(item, Fixture):
                self.fixtures.append(item)
            else:
                self.fixtures.extend(load_fixture(p) for p in iter_fixtures(item))
        self.ignore = _ignored_fields(self.fixtures)
        self._index: dict[RequestKey, list[Fixture]] = {}
        for fx in self.fixtures:
            key = request_key(fx.request.method, fx.request.url, fx.request.content, self.ignore)
            self._index.setdefault(key, []).append(fx)
        self._turns: Counter[RequestKey] = Counter()
        self.served: list[Served] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        logger.info("replaying %d fixtures on %s", len(self.fixtures), self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ReplayUpstream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def match(self, method: str, path_qs: str, body: bytes) -> Fixture | RequestKey:
        """The fixture to serve next for this request, or the request's key when none matches."""
        key = request_key(method, path_qs, body, self.ignore)
        candidates = self._index.get(key)
        if not candidates:
            return key
        turn = self._turns[key]
        self._turns[key] += 1
        return candidates[turn % len(candidates)]

    # --- serving ---------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        found = self.match(request.method, request.path_qs, body)
        if isinstance(found, RequestKey):
            self.served.append(Served(request.method, request.path, None, 404))
            logger.warning("replay: no fixture for %s", found.describe())
            return web.json_response(self._no_match(found), status=404)
        self.served.append(Served(request.method, request.path, found.name, _status(found)))
        try:
            return await self._serve(request, found)
        except ConnectionError:  # the client went away; nothing to answer
            return web.Response(status=499)

    async def _serve(self, request: web.Request, fx: Fixture) -> web.StreamResponse:
        resp = fx.response
        if resp is None:
            return web.json_response(
                {
                    "type": "error",
                    "error": {
                        "type": "replay_no_response",
                        "message": f"fixture {fx.name}: the recorded request got no response "
                        f"({fx.error})",
                    },
                },
                status=502,
            )
        t0 = asyncio.get_running_loop().time()
        pieces = resp.pieces()
        headers_ms = resp.headers_ms
        if pieces and headers_ms is not None:  # headers never come after the first byte
            headers_ms = min(headers_ms, pieces[0][1])
        await self._until(t0, headers_ms)
        out = web.StreamResponse(status=resp.status, reason=resp.reason or None)
        for k, v in resp.headers:
            if k.lower() not in HOP_BY_HOP:
                out.headers.add(k, v)
        cut = fx.error is not None
        if not cut and any(k.lower() == "content-length" for k, _ in resp.headers):
            out.content_length = len(resp.content)
        await out.prepare(request)
        for piece, ms in pieces:
            await self._until(t0, ms)
            await out.write(piece)
        if cut and request.transport is not None:
            request.transport.abort()  # the recorded stream was cut here: cut it again
            return out
        await out.write_eof()
        return out

    async def _until(self, t0: float, ms: float | None) -> None:
        if not ms or math.isinf(self.speed):
            return
        delay = t0 + ms / 1000 / self.speed - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    def _no_match(self, key: RequestKey) -> dict[str, Any]:
        req = key.describe()
        loaded = [
            {
                "fixture": fx.name,
                **request_key(
                    fx.request.method, fx.request.url, fx.request.content, self.ignore
                ).describe(),
            }
            for fx in self.fixtures[:_LISTED]
        ]
        message = (
            f"no replay fixture matches {key.method} {key.path} (format {key.format}, model "
            f"{key.model}, stream {key.stream}); {len(self.fixtures)} fixtures loaded. Requests "
            "match on method, path, format, model, stream and JSON body (ignoring "
            f"{', '.join(self.ignore)}); record this exchange to add it."
        )
        return {
            "type": "error",
            "error": {"type": "replay_no_match", "message": message},
            "request": req,
            "fixtures": loaded,
        }


def _status(fx: Fixture) -> int:
    return fx.response.status if fx.response is not None else 502
