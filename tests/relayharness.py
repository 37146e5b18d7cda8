"""Shared support for the fail-over tests: configs, odd upstreams, and clients per wire format.

Not a test module. The fail-over tests run a real in-process mitmproxy with all of mitmllm's
addons in front of loopback upstreams: `MockUpstream`s for the scenarios, plus the few
upstreams the mock cannot be (a port nobody listens on, a listener whose backlog is full, one
that accepts and never answers, one that answers a fixed status). Clients are the official SDKs
(Anthropic, OpenAI Chat Completions and Responses) and a raw aiohttp client for Gemini and for
byte-level checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import yaml
from aiohttp import web

from mitmllm.glue.addons import all_addons
from mitmllm.glue.failover import Failover
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import OPENAI_RESPONSES
from mitmllm.mock.scenarios import plan_request
from mitmllm.mock.scenarios import route as mock_route
from mitmllm.protocol import detect
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.dialect import StreamValidator
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import decode_all
from mitmllm.protocol.stream import StreamChecker
from tests.proxyharness import Proxy
from tests.proxyharness import running_proxy

FORMATS = (ANTHROPIC, OPENAI_CHAT, OPENAI_RESPONSES, GEMINI)
#: The model each client asks for, and what the fallback hop maps it to.
CLIENT_MODEL = {
    ANTHROPIC: "claude-sonnet-4-6",
    OPENAI_CHAT: "gpt-4o",
    OPENAI_RESPONSES: "gpt-5",
    GEMINI: "gemini-2.5-flash",
}
FALLBACK_MODEL = {
    ANTHROPIC: "claude-fallback",
    OPENAI_CHAT: "gpt-fallback",
    OPENAI_RESPONSES: "gpt-fallback",
    GEMINI: "gemini-fallback",
}
#: What every mock answer says (the `healthy` scenario's text).
TEXT = "Hello from the mock upstream."
CLIENT_KEY = "sk-client-own-key-0001"
#: Short enough that a failing attempt costs little, long enough for loopback under load.
TIMEOUTS = {"connect": "1s", "first_event": "1s", "idle": "1s", "total": "20s", "keepalive": "10s"}
#: For the tests that wait out a timeout on purpose.
SHORT = {"connect": "200ms", "first_event": "200ms", "idle": "200ms"}
#: Client timeout: far beyond any relay timeout, so a hang fails the test instead of passing.
CLIENT_TIMEOUT = 15.0
#: The success terminators a failed stream must never end with.
SUCCESS_TERMINATORS = {
    ANTHROPIC: b"message_stop",
    OPENAI_CHAT: b"[DONE]",
    OPENAI_RESPONSES: b"response.completed",
}
#: The keep-alive each format's client tolerates (Gemini: none).
KEEPALIVE: dict[str, bytes | None] = {
    ANTHROPIC: b'event: ping\ndata: {"type": "ping"}\n\n',
    OPENAI_CHAT: b": keep-alive\n\n",
    OPENAI_RESPONSES: b": keep-alive\n\n",
    GEMINI: None,
}


def dialect(fmt: str) -> Dialect:
    d = detect.by_name(fmt)
    assert d is not None
    return d


# --- configuration ------------------------------------------------------------------------------


def upstream(name: str, url: str, fmt: str, **extra: Any) -> dict[str, Any]:
    """An upstream without credentials of mitmllm's unless `api_key_env` is given."""
    out: dict[str, Any] = {"name": name, "base_url": url, "format": fmt}
    if "api_key_env" not in extra:
        out["auth"] = "none"
    return out | extra


def fallback_hop(name: str, fmt: str) -> dict[str, Any]:
    """A hop that maps the client's model to the fallback's own."""
    return {"upstream": name, "models": {"*": FALLBACK_MODEL[fmt]}}


def config(
    upstreams: Sequence[Mapping[str, Any]],
    chain: Sequence[str | Mapping[str, Any]],
    *,
    timeouts: Mapping[str, str] | None = None,
    breaker: Mapping[str, Any] | None = None,
    **route: Any,
) -> dict[str, Any]:
    """A configuration with one route over `chain` (names or hop mappings)."""
    hops = [{"upstream": h} if isinstance(h, str) else dict(h) for h in chain]
    out: dict[str, Any] = {
        "upstreams": [dict(u) for u in upstreams],
        "routes": [
            {
                "name": route.pop("name", "llm"),
                "chain": hops,
                "timeouts": dict(TIMEOUTS) | dict(timeouts or {}),
                **route,
            }
        ],
    }
    if breaker is not None:
        out["breaker"] = dict(breaker)
    return out


def write_config(directory: Path, cfg: Mapping[str, Any], name: str = "mitmllm.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(dict(cfg), sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def failover_proxy(
    config_path: Path, target: str, *, callbacks: bool = True, **opts: Any
) -> AsyncIterator[Proxy]:
    """mitmproxy with all of mitmllm's addons, in reverse mode in front of `target`; with
    `callbacks` off, the relay reads committed streams in its task (`Relay.callbacks`)."""
    async with running_proxy(
        all_addons(), mode=f"reverse:{target}", mitmllm_config=str(config_path), **opts
    ) as proxy:
        failover_of(proxy).relay.callbacks = callbacks
        try:
            yield proxy
        finally:
            # The addon's `done` can only schedule this; the test's loop ends before it runs.
            await failover_of(proxy).relay.stop()


def primary_of(fmt: str) -> str:
    return f"primary-{fmt}"


def fallback_of(fmt: str) -> str:
    return f"fallback-{fmt}"


def per_format(
    primary: str,
    fallback: str,
    *,
    formats: Sequence[str] = FORMATS,
    timeouts: Mapping[str, str] | None = None,
    breaker: Mapping[str, Any] | None = None,
    primary_extra: Mapping[str, Any] | None = None,
    fallback_extra: Mapping[str, Any] | None = None,
    **route: Any,
) -> dict[str, Any]:
    """Per format a route `primary-FMT` -> `fallback-FMT` (the fallback hop maps the model to
    its own), so the formats of one test run side by side with breakers of their own."""
    upstreams: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    for fmt in formats:
        upstreams.append(upstream(primary_of(fmt), primary, fmt, **dict(primary_extra or {})))
        upstreams.append(upstream(fallback_of(fmt), fallback, fmt, **dict(fallback_extra or {})))
        routes.append(
            {
                "name": f"route-{fmt}",
                "chain": [{"upstream": primary_of(fmt)}, fallback_hop(fallback_of(fmt), fmt)],
                "timeouts": dict(TIMEOUTS) | dict(timeouts or {}),
                **route,
            }
        )
    out: dict[str, Any] = {"upstreams": upstreams, "routes": routes}
    if breaker is not None:
        out["breaker"] = dict(breaker)
    return out


@contextlib.asynccontextmanager
async def two_hops(
    directory: Path,
    primary: str,
    fallback: str,
    *,
    formats: Sequence[str] = FORMATS,
    callbacks: bool = True,
    **kw: Any,
) -> AsyncIterator[Proxy]:
    """The usual set-up: the client addresses `primary`; per format a route falls back to
    `fallback` (see `per_format`)."""
    cfg = per_format(primary, fallback, formats=formats, **kw)
    async with failover_proxy(write_config(directory, cfg), primary, callbacks=callbacks) as proxy:
        yield proxy


async def ask_each(proxy: Proxy, formats: Sequence[str] = FORMATS, **kw: Any) -> dict[str, Reply]:
    """One streamed request per format, all at once."""
    replies = await asyncio.gather(*(ask(proxy.url, fmt, **kw) for fmt in formats))
    return dict(zip(formats, replies, strict=True))


async def flows_by_format(proxy: Proxy, n: int) -> dict[str, Any]:
    """The finished flows (one per format) by format."""
    flows = await proxy.log.wait(n)
    return {meta(f)["format"]: f for f in flows}


def failover_of(proxy: Proxy) -> Failover:
    return next(a for a in proxy.addons if isinstance(a, Failover))


def meta(flow: Any) -> dict[str, Any]:
    value: dict[str, Any] = flow.metadata["mitmllm"]
    return value


def rules(flow: Any) -> set[str]:
    return {f["rule"] for f in meta(flow)["findings"]}


async def until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Bounded polling for something that happens after the client is done (the bound only
    catches a hang)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# --- upstreams the mock cannot be ---------------------------------------------------------------


def closed_port() -> int:
    """A loopback port that was bound and closed: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backlogged:
    """A listener that never accepts, its backlog filled: new connects hang (a connect timeout)."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._fillers: list[socket.socket] = []

    def __enter__(self) -> Backlogged:
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(self._listener.getsockname())
            self._fillers.append(s)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for s in self._fillers:
            s.close()
        self._listener.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"


class SilentUpstream:
    """Accepts connections and reads requests, but never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self.closed_by_peer = 0
        self.received = bytearray()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> SilentUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while data := await reader.read(65536):
                self.received += data
            self.closed_by_peer += 1
        except ConnectionError:
            self.closed_by_peer += 1
        finally:
            writer.close()


@dataclass
class Seen:
    """One request as a scripted upstream saw it."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def fmt(self) -> str | None:
        where = mock_route("POST", self.path.split("?", 1)[0])
        return where.fmt if where else None


Steps = Sequence[tuple[float, bytes]]


class ScriptedUpstream:
    """Answers every request with one fixed status and headers, and body steps per format.

    `steps` (or `steps_for(format)`) are (delay seconds, bytes) written in order as chunks; with
    `hold` the response then stays open until the client goes away (counted in `cancelled`).
    """

    def __init__(
        self,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        steps: Steps = (),
        *,
        steps_for: Callable[[str | None], Steps] | None = None,
        hold: bool = False,
    ) -> None:
        self.status = status
        self.headers = dict(headers or {"content-type": "text/event-stream"})
        self.steps_for = steps_for or (lambda fmt: steps)
        self.hold = hold
        self.received: list[Seen] = []
        self.cancelled = 0
        self._runner: web.AppRunner | None = None
        self._port = 0

    async def __aenter__(self) -> ScriptedUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        seen = Seen(request.path_qs, headers, body)
        self.received.append(seen)
        resp = web.StreamResponse(status=self.status, headers=self.headers)
        resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
            for delay, data in self.steps_for(seen.fmt):
                if delay:
                    await asyncio.sleep(delay)
                await resp.write(data)
            if self.hold:
                await asyncio.Event().wait()
            await resp.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            self.cancelled += 1
            raise
        return resp


# --- clients ------------------------------------------------------------------------------------


def request_body(fmt: str, model: str | None = None) -> dict[str, Any]:
    """A streaming request of `fmt` (Gemini: the model goes into the path instead)."""
    model = model or CLIENT_MODEL[fmt]
    if fmt == ANTHROPIC:
        return {
            "model": model,
            "max_tokens": 64,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
    if fmt == OPENAI_CHAT:
        return {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    if fmt == OPENAI_RESPONSES:
        return {"model": model, "stream": True, "input": "hi"}
    return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def request_path(fmt: str, model: str | None = None) -> str:
    if fmt == ANTHROPIC:
        return "/v1/messages"
    if fmt == OPENAI_CHAT:
        return "/v1/chat/completions"
    if fmt == OPENAI_RESPONSES:
        return "/v1/responses"
    return f"/v1beta/models/{model or CLIENT_MODEL[fmt]}:streamGenerateContent?alt=sse"


def auth_header(fmt: str, key: str) -> dict[str, str]:
    """How each format's client sends its key."""
    if fmt == ANTHROPIC:
        return {"x-api-key": key}
    if fmt == GEMINI:
        return {"x-goog-api-key": key}
    return {"authorization": f"Bearer {key}"}


@dataclass
class Raw:
    """What a raw HTTP client received."""

    fmt: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    cut: bool = False  # the body ended without its chunked terminator

    def events(self) -> list[Event]:
        return event_list(self.body)

    def check(self) -> StreamChecker:
        checker = StreamChecker(dialect(self.fmt))
        checker.feed(self.body)
        checker.close()
        return checker

    def validator(self) -> StreamValidator:
        """The format's validator after the whole body: complete, error, model."""
        v = self.check().validator
        assert v is not None
        return v

    def json(self) -> Any:
        return orjson.loads(self.body)


async def post(
    base_url: str,
    fmt: str,
    *,
    model: str | None = None,
    headers: Mapping[str, str] | None = None,
    key: str | None = CLIENT_KEY,
    query: Mapping[str, str] | None = None,
) -> Raw:
    """POST a streaming request and read the whole answer as bytes."""
    h = (auth_header(fmt, key) if key else {}) | dict(headers or {})
    url = base_url + request_path(fmt, model)
    if query:
        url += ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in query.items())
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as http:
        async with http.post(url, json=request_body(fmt, model), headers=h) as resp:
            body = bytearray()
            cut = False
            try:
                async for data, _ in resp.content.iter_chunks():
                    body += data
            except aiohttp.ClientPayloadError:
                cut = True
            return Raw(fmt, resp.status, resp.headers, bytes(body), cut)


@dataclass
class Reply:
    """What a client made of an answer: the parsed message, or the error it raised."""

    fmt: str
    text: str = ""
    model: str | None = None
    finish: str | None = None
    error: BaseException | None = None
    status: int | None = None  # HTTP status of an error answer
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None  # the error body the client parsed

    @property
    def complete(self) -> bool:
        return self.error is None and self.text == TEXT and self.finish in FINISHED

    @property
    def error_text(self) -> str:
        return str(self.error or "")


FINISHED = {"end_turn", "stop", "completed", "STOP"}


async def ask(
    base_url: str,
    fmt: str,
    *,
    model: str | None = None,
    headers: Mapping[str, str] | None = None,
    key: str = CLIENT_KEY,
) -> Reply:
    """Stream one answer with the format's official client (Gemini: raw aiohttp).

    The client runs on its own event loop in a worker thread, as a real client runs in its own
    process: parsing in the SDKs takes long enough to delay the proxy's and relay's timers
    when they share a loop.
    """
    if fmt == ANTHROPIC:
        run = _ask_anthropic
    elif fmt == OPENAI_CHAT:
        run = _ask_chat
    elif fmt == OPENAI_RESPONSES:
        run = _ask_responses
    else:
        run = _ask_gemini
    return await asyncio.to_thread(asyncio.run, run(base_url, model, headers, key))


def _status_error(reply: Reply, e: anthropic.APIStatusError | openai.APIStatusError) -> Reply:
    reply.error = e
    reply.status = e.status_code
    reply.headers = {k.lower(): v for k, v in e.response.headers.items()}
    reply.body = e.body
    return reply


async def _ask_anthropic(
    base_url: str, model: str | None, headers: Mapping[str, str] | None, key: str
) -> Reply:
    reply = Reply(ANTHROPIC)
    client = anthropic.AsyncAnthropic(
        base_url=base_url, api_key=key, max_retries=0, timeout=CLIENT_TIMEOUT
    )
    try:
        async with client.messages.stream(
            model=model or CLIENT_MODEL[ANTHROPIC],
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers=dict(headers or {}),
        ) as stream:
            async for text in stream.text_stream:
                reply.text += text
            message = await stream.get_final_message()
        reply.model, reply.finish = message.model, message.stop_reason
    except anthropic.APIStatusError as e:
        return _status_error(reply, e)
    except anthropic.APIError as e:
        reply.error = e
    finally:
        await client.close()
    return reply


def _openai(base_url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=CLIENT_TIMEOUT
    )


async def _ask_chat(
    base_url: str, model: str | None, headers: Mapping[str, str] | None, key: str
) -> Reply:
    reply = Reply(OPENAI_CHAT)
    client = _openai(base_url, key)
    try:
        async with client.chat.completions.stream(
            model=model or CLIENT_MODEL[OPENAI_CHAT],
            messages=[{"role": "user", "content": "hi"}],
            extra_headers=dict(headers or {}),
        ) as stream:
            async for event in stream:
                if event.type == "content.delta":
                    reply.text += event.delta
            completion = await stream.get_final_completion()
        reply.model = completion.model
        reply.finish = completion.choices[0].finish_reason if completion.choices else None
    except openai.APIStatusError as e:
        return _status_error(reply, e)
    except openai.APIError as e:
        reply.error = e
    finally:
        await client.close()
    return reply


async def _ask_responses(
    base_url: str, model: str | None, headers: Mapping[str, str] | None, key: str
) -> Reply:
    reply = Reply(OPENAI_RESPONSES)
    client = _openai(base_url, key)
    try:
        async with client.responses.stream(
            model=model or CLIENT_MODEL[OPENAI_RESPONSES],
            input="hi",
            extra_headers=dict(headers or {}),
        ) as stream:
            async for event in stream:
                if event.type == "response.output_text.delta":
                    reply.text += event.delta
            response = await stream.get_final_response()
        reply.model, reply.finish = response.model, response.status
    except openai.APIStatusError as e:
        return _status_error(reply, e)
    except openai.APIError as e:
        reply.error = e
    finally:
        await client.close()
    return reply


class GeminiError(Exception):
    """An error a Gemini client would raise: an HTTP error body or an error chunk."""


async def _ask_gemini(
    base_url: str, model: str | None, headers: Mapping[str, str] | None, key: str
) -> Reply:
    # google-genai reads the stream line by line and raises on any chunk with an `error`.
    reply = Reply(GEMINI)
    raw = await post(base_url, GEMINI, model=model, headers=headers, key=key)
    if raw.status != 200:
        reply.status = raw.status
        reply.headers = {k.lower(): v for k, v in raw.headers.items()}
        reply.body = orjson.loads(raw.body)
        reply.error = GeminiError(f"HTTP {raw.status}: {raw.body[:300]!r}")
        return reply
    if raw.cut:
        reply.error = GeminiError("the stream was cut")
    for ev in raw.events():
        if ev.data is None:
            continue
        chunk = orjson.loads(ev.data)
        if chunk.get("error") is not None:
            reply.error = GeminiError(str(chunk["error"]))
            return reply
        reply.model = chunk.get("modelVersion", reply.model)
        for cand in chunk.get("candidates") or []:
            for part in (cand.get("content") or {}).get("parts") or []:
                if not part.get("thought"):
                    reply.text += part.get("text", "")
            reply.finish = cand.get("finishReason") or reply.finish
    return reply


# --- reading what the client got ----------------------------------------------------------------


def event_list(body: bytes) -> list[Event]:
    """The events of a body that must be event-aligned: no partial event at its end."""
    events, partial = decode_all(body)
    assert partial is None, f"partial event at the end of the stream: {body[-200:]!r}"
    assert b"".join(ev.raw for ev in events) == body
    return events


START_TYPES = {ANTHROPIC: "message_start", OPENAI_RESPONSES: "response.created"}


def starts(fmt: str, events: Sequence[Event]) -> int:
    """How many stream-start events (message_start, response.created, role chunks) there are."""
    count = 0
    for ev in events:
        if ev.data is None or ev.data == "[DONE]":
            continue
        payload = orjson.loads(ev.data)
        if fmt in START_TYPES:
            count += payload.get("type") == START_TYPES[fmt]
        elif fmt == OPENAI_CHAT:
            choices = payload.get("choices") or []
            count += any((c.get("delta") or {}).get("role") for c in choices)
    return count


def without_keepalives(fmt: str, events: Sequence[Event]) -> list[bytes]:
    keepalive = KEEPALIVE[fmt]
    return [ev.raw for ev in events if ev.raw != keepalive]


def keepalives(fmt: str, events: Sequence[Event]) -> int:
    keepalive = KEEPALIVE[fmt]
    return sum(ev.raw == keepalive for ev in events)


def healthy_stream(fmt: str, model: str | None = None) -> bytes:
    """The mock's healthy stream for a plain request of `fmt`."""
    path = request_path(fmt, model)
    path, _, query = path.partition("?")
    plan = plan_request(
        "POST", path, dict([query.split("=")]) if query else {}, {}, orjson.dumps(request_body(fmt))
    )
    return plan.body()


def lifecycle_head(fmt: str) -> bytes:
    """The events of a healthy stream before its first content event (message_start, ping,
    an empty block start; a role chunk; response.created ...; nothing for Gemini)."""
    d = dialect(fmt)
    out = []
    for ev in event_list(healthy_stream(fmt)):
        payload = orjson.loads(ev.data) if ev.data else None
        if d.is_content(ev, payload):
            break
        out.append(ev.raw)
    return b"".join(out)
