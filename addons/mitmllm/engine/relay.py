"""The relay: fail-over with a commit gate, for flows mitmproxy cannot retry itself.

mitmproxy cannot retry a flow once its request was sent, and cannot stream a body an addon makes
(design.md). So routed flows are pointed at this loopback HTTP server, which runs in mitmproxy's
own event loop and tries the upstreams of the route's chain in turn; mitmproxy streams the relay's
answer to the client like any upstream's, so the tap, validation and recording still apply.

Per attempt::

    connect ─► headers ─► lifecycle frames (held) ─► first content event = COMMIT ─► stream
       │          │              │                         │
       └──────────┴──────────────┴── failure before commit: next upstream, client sees nothing
                                                           └─ failure after: terminal error event

* Commit gate (`mitmllm.protocol.gate`): response headers and lifecycle frames (message_start,
  pings, empty block starts, response.created, role-only chunks) are held until the first content
  event. The stream is repaired first (`mitmllm.protocol.repair`, unless the route turns it off),
  and the gate judges what the client would get. Every failure before commit (connect error,
  5xx/529/408/429, an error in a 200, an in-band error event, a finding that breaks the client
  and no repair mends, an empty stream, a stall) moves on to the next upstream, is counted by its
  breaker, and is invisible to the client, so the client never sees two message_starts. When the
  whole chain fails before commit the client gets a real HTTP error status in its format's error
  body (with retry-after where known).
* After commit a failure (stall, cut, timeout) ends the stream with the format's own terminal
  error event and never with a success terminator.
* A slow first token does not starve the client: a stream's headers go out after
  `Timeouts.first_byte` without content (or at once with early commit), then keep-alives. Only
  headers and comments have gone out, so a later failure still moves to the next upstream; when
  every attempt fails after that point, the client gets the format's terminal error event.
* Timeouts are separate: connect, first content event, idle between parsed events (comments and
  pings do not count), and total per attempt. A timer that fires while bytes are already waiting
  is no stall (the event loop was busy, not the upstream). Keep-alives are written on event
  boundaries while the upstream is quiet, once headers are out (also while an upstream has not
  answered yet).
* After commit the stream is handed on from the upstream connection's own callbacks
  (`mitmllm.engine.pump`): each chunk goes through the pipeline and out to the client in the
  callback that parsed it. The request's task wakes only for the timers (idle, total,
  keep-alive), the end, a failure, and a client that is behind: then the upstream's reading is
  paused until the client's buffer drains. Where aiohttp's reader cannot be hooked, the task
  reads the rest itself, with the same outcomes (`Relay.callbacks` off does the same).
* Client cancellation (mitmproxy closes the connection) stops the chain and closes the upstream
  at once, and is never counted as an upstream failure.
* Credentials: each upstream authenticates with its own secret (from an environment variable).
  The client's credentials go only to the origin (scheme, host and port) the client addressed,
  unless the route says otherwise. Every credential in play (the client's, the upstreams' own)
  is masked in what the relay records and logs, so an upstream that echoes a key in an error
  does not put it into metadata, findings or logs. The relay answers only requests that carry a
  one-time token issued by the addon.
* Translation: an upstream of another wire format than the client's gets the request in its own
  format (`mitmllm.protocol.translate`). Its stream is checked, and repaired, in its own format
  (the attempt's findings); the translator turns its events into the client's format, and what
  the client would get is checked in the client's format and judged by the gate, which commits
  at the first content event the client would see. A stream that cannot be translated (XLT-4)
  fails the attempt before commit, and ends the client's stream with its error event after.
  Whole bodies and error statuses reach the client as its own format spells them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import ssl
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import unquote_plus
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from mitmllm.engine.breaker import retry_after as parse_retry_after
from mitmllm.engine.pipeline import Pipeline
from mitmllm.engine.pump import Pump
from mitmllm.engine.pump import unread
from mitmllm.engine.report import Attempt
from mitmllm.engine.report import Repair
from mitmllm.protocol import translate as xlt
from mitmllm.protocol.conversation import ApiError
from mitmllm.protocol.conversation import ClientStream
from mitmllm.protocol.conversation import ErrorKind
from mitmllm.protocol.conversation import kind_of_status
from mitmllm.protocol.credentials import AUTH_HEADERS
from mitmllm.protocol.credentials import CREDENTIAL_HEADERS
from mitmllm.protocol.credentials import CREDENTIAL_QUERY
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.dialect import is_json
from mitmllm.protocol.findings import Finding
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.gate import Gate
from mitmllm.protocol.payload import NO_DATA
from mitmllm.protocol.payload import copy_json
from mitmllm.protocol.payload import json_text
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.repair import Repairer
from mitmllm.protocol.sse import Event
from mitmllm.protocol.stream import StreamChecker
from mitmllm.protocol.stream import is_event_stream

logger = logging.getLogger("mitmllm.relay")

TOKEN_HEADER = "x-mitmllm-relay-token"
UPSTREAM_HEADER = "x-mitmllm-upstream"
SERVED_MODEL_HEADER = "x-mitmllm-served-model"

HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length",
        "accept-encoding", "content-encoding", TOKEN_HEADER,
    }
)  # fmt: skip
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})
DEFAULT_PORTS = {"http": 80, "https": 443}
#: What replaces a credential in the relay's records and logs.
MASK = "<redacted>"
# Shorter values are too likely to occur by chance (a key of "x" would mask every x).
MIN_SECRET = 8

Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin:
    """(scheme, host, port) of a URL, lower-case, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme, 0)


# --- what the addon hands to the relay ---------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    first_event: float = 60.0  # request sent -> first content event (commit)
    idle: float = 120.0  # between parsed events after commit
    total: float = 900.0  # one attempt, end to end
    keepalive: float = 15.0  # write a keep-alive after this much client-side silence
    # send a stream's headers (and keep-alives) after this long without content; None: at commit
    first_byte: float | None = None


@dataclass(frozen=True)
class Upstream:
    name: str
    base_url: str
    dialect: Dialect
    auth: str = "none"  # x-api-key | bearer | x-goog-api-key | api-key | none
    api_key_env: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    verify_tls: bool = True

    @property
    def host(self) -> str:
        return (urlsplit(self.base_url).hostname or "").lower()

    @property
    def origin(self) -> Origin:
        return origin_of(self.base_url)


@dataclass(frozen=True)
class Hop:
    upstream: Upstream
    models: tuple[tuple[str, str], ...] = ()  # (glob, model), first match wins
    flavour: str = "none"  # tool-schema flavour for this upstream

    def map_model(self, model: str | None) -> str | None:
        if model is None:
            return None
        for pattern, target in self.models:
            if fnmatchcase(model, pattern):
                return target
        return model


#: Prepares the upstream request for one hop: (path, parsed body, the client's body bytes) ->
#: (path, body bytes or None for the client's, info). It must not change the parsed body.
Prepare = Callable[[Hop, str, Any, bytes], tuple[str, bytes | None, dict[str, Any]]]


@dataclass
class Plan:
    """One routed request: the chain to try, and (filled by the relay) what happened."""

    route: str
    hops: list[Hop]
    dialect: Dialect
    wants_stream: bool
    #: (scheme, host, port) the client addressed: the only origin its credentials may go to
    client_origin: Origin
    timeouts: Timeouts = field(default_factory=Timeouts)
    forward_client_credentials: bool = False
    early_commit: bool = False
    repair: bool = True  # mend what a repair can (mitmllm.protocol.repair) before the gate
    fails: frozenset[str] | None = None  # rules that fail an attempt before commit (None: default)
    prepare: Prepare | None = None
    sticky_key: str | None = None
    # results
    attempts: list[Attempt] = field(default_factory=list)
    served: Hop | None = None
    served_model: str | None = None
    served_info: dict[str, Any] = field(default_factory=dict)
    outcome: str = "pending"  # ok | failed_before_commit | failed_after_commit | cancelled
    headers_early: bool = False  # the client got headers before any attempt committed


class _Fail(Exception):
    """An attempt failed; `outcome` says how. Raised before commit only."""

    def __init__(
        self,
        outcome: str,
        error: str,
        status: int | None = None,
        retry_after: float | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        upstream: Dialect | None = None,
    ) -> None:
        super().__init__(error)
        self.outcome = outcome
        self.error = error
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.headers = headers
        self.upstream = upstream  # the failing upstream's format, when its body says the kind


# --- the relay ---------------------------------------------------------------------------------


class Relay:
    """A loopback HTTP server running routed requests through their upstream chains."""

    def __init__(
        self,
        *,
        breakers: Any = None,
        sticky: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.breakers = breakers
        self.sticky = sticky
        self.clock = clock
        self.wall_clock = wall_clock  # the creation time translated chunks carry
        self.env = env if env is not None else os.environ
        self._plans: dict[str, Plan] = {}
        self._server: asyncio.AbstractServer | None = None
        self._web: web.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._insecure_session: aiohttp.ClientSession | None = None
        self.port = 0
        self.active = 0
        #: Committed streams are handed on from the upstream connection's callbacks
        #: (`mitmllm.engine.pump`); off, they are read chunk by chunk by the request's task.
        self.callbacks = True
        self.pumped = 0  # committed streams that were handed on from callbacks

    # --- lifecycle ---

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._web = web.Server(self._handle, handler_cancellation=True, access_log=None)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._web, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            if self._web is not None:
                await self._web.shutdown(1.0)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        for s in (self._session, self._insecure_session):
            if s is not None:
                await s.close()
        self._session = self._insecure_session = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def issue(self, plan: Plan) -> str:
        """Register a plan; the returned one-time token must come with the request."""
        token = secrets.token_urlsafe(18)
        self._plans[token] = plan
        return token

    def revoke(self, token: str) -> None:
        self._plans.pop(token, None)

    def _client(self, verify: bool) -> aiohttp.ClientSession:
        if verify:
            if self._session is None or self._session.closed:
                self._session = _session(ssl.create_default_context())
            return self._session
        if self._insecure_session is None or self._insecure_session.closed:
            self._insecure_session = _session(False)
        return self._insecure_session

    # --- one routed request ---

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        token = request.headers.get(TOKEN_HEADER, "")
        plan = self._plans.pop(token, None)
        if plan is None:
            return web.json_response(
                {"error": {"type": "forbidden", "message": "mitmllm relay: unknown or used token"}},
                status=403,
            )
        self.active += 1
        try:
            body = await request.read()
            return await _Exchange(self, plan, request, body).run()
        except asyncio.CancelledError:
            if plan.outcome != "ok":  # a client that closes after the whole answer is served
                plan.outcome = "cancelled"
            raise
        finally:
            self.active -= 1


def _session(ssl_ctx: Any) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, ssl=ssl_ctx, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )


@dataclass(frozen=True, slots=True)
class _Read:
    """One attempt's upstream response being read: what every step of reading it needs."""

    up: aiohttp.ClientResponse
    hop: Hop
    attempt: Attempt
    info: dict[str, Any]  # what the request's preparation or translation noted for the answer
    t0: float  # the attempt's start (relay clock)
    deadline_first: float  # the first content event's
    deadline_total: float  # the attempt's


class _Exchange:
    """One client request through its chain. Holds the client response once it exists."""

    def __init__(self, relay: Relay, plan: Plan, request: web.BaseRequest, body: bytes) -> None:
        self.relay = relay
        self.plan = plan
        self.request = request
        self.body = body
        self.response: web.StreamResponse | None = None  # headers sent once set
        self.last_write = 0.0
        self.started = relay.clock()
        self.stages: _Stages | None = None  # the current attempt's stream, once it streams
        self.translation: _Translation | None = None  # the current attempt's, if translated
        body_json, _ = parse_json(body) if body else (None, None)
        self.body_json: Any = body_json
        self.secrets = _secrets_of(request.headers, request.query_string, plan, relay.env)

    async def run(self) -> web.StreamResponse:
        plan = self.plan
        clock = self.relay.clock
        body_json = self.body_json
        hops = self._order()
        if plan.early_commit and plan.wants_stream:
            plan.headers_early = True
            await self._send_headers(200, {"content-type": "text/event-stream"}, None)
        last_fail: _Fail | None = None
        for i, hop in enumerate(hops):
            attempt = Attempt(hop.upstream.name, hop.upstream.base_url)
            plan.attempts.append(attempt)
            t0 = clock()
            try:
                await self._attempt(hop, attempt, body_json, t0)
            except _Fail as fail:
                # what was wrong with the failed stream, and what its translation could not carry
                self._record_findings(attempt)
                self.stages = self.translation = None
                attempt.outcome, attempt.error = fail.outcome, self.mask(fail.error)
                attempt.retry_after = fail.retry_after
                if fail.status is not None:  # a stall after a 200 keeps the 200 on record
                    attempt.status = fail.status
                attempt.duration_ms = round((clock() - t0) * 1000, 1)
                self._record(hop, attempt)
                last_fail = fail
                logger.info(
                    "relay %s: %s failed (%s: %s)%s",
                    plan.route,
                    hop.upstream.name,
                    fail.outcome,
                    attempt.error,
                    "; trying the next upstream" if i + 1 < len(hops) else "",
                )
                continue
            except asyncio.CancelledError:
                attempt.duration_ms = round((clock() - t0) * 1000, 1)
                if attempt.outcome == "ok":
                    # The client closed once its stream's terminal event was in (the OpenAI SDKs
                    # do, right after [DONE]): it got the whole answer, from this upstream.
                    if self.stages is not None:
                        self._record_findings(attempt)
                    self._record(hop, attempt)
                else:
                    attempt.outcome = "cancelled"
                raise
            attempt.duration_ms = round((clock() - t0) * 1000, 1)
            self._record(hop, attempt)
            if attempt.committed and plan.sticky_key and self.relay.sticky is not None:
                if attempt.outcome == "ok":
                    self._stick(hop, i)
                else:  # it broke mid-stream: the next turn starts from the chain's order again
                    self.relay.sticky.forget(plan.route, plan.sticky_key)
            assert self.response is not None
            return self.response
        return await self._give_up(last_fail)

    def _order(self) -> list[Hop]:
        plan = self.plan
        hops = list(plan.hops)
        sticky = self.relay.sticky
        if plan.sticky_key and sticky is not None:
            name = sticky.get(plan.route, plan.sticky_key)
            for h in hops:
                if h.upstream.name == name:
                    hops.remove(h)
                    hops.insert(0, h)
                    break
        breakers = self.relay.breakers
        if breakers is not None:
            # The k-th occurrence of a name is the k-th hop with that name (a chain may list
            # one upstream twice, with different models).
            names = breakers.order([h.upstream.name for h in hops])
            pending: dict[str, list[Hop]] = {}
            for h in hops:
                pending.setdefault(h.upstream.name, []).append(h)
            hops = [pending[n].pop(0) for n in names]
        return hops

    def _stick(self, hop: Hop, index: int) -> None:
        plan = self.plan
        sticky = self.relay.sticky
        if hop is plan.hops[0]:
            sticky.forget(plan.route, plan.sticky_key)
        else:
            sticky.set(plan.route, plan.sticky_key, hop.upstream.name)

    def _record(self, hop: Hop, attempt: Attempt) -> None:
        breakers = self.relay.breakers
        if breakers is None or attempt.outcome in ("cancelled",):
            return
        if attempt.outcome == "untranslatable" and attempt.status is None:
            return  # the request could not be written in its format: not the upstream's failure
        with contextlib.suppress(Exception):
            breakers.record_attempt(hop.upstream.name, attempt)

    # --- one attempt ---

    async def _attempt(self, hop: Hop, attempt: Attempt, body_json: Any, t0: float) -> None:
        plan = self.plan
        upstream = hop.upstream
        path = self.request.raw_path
        body: bytes | None = self.body
        info: dict[str, Any] = {}
        translated = upstream.dialect.name != plan.dialect.name
        self.stages = self.translation = None
        if translated:
            self.translation = tr = self._translate_request(hop, path, body_json)
            lost = next((g for g in tr.request.gaps if g.severity == "error"), None)
            if lost is not None:  # the upstream would answer another question than the client's
                raise _Fail("untranslatable", f"XLT-1 {lost.path}: {lost.reason}"[:300])
            path, body, info = tr.path, tr.body, tr.info
        elif plan.prepare is not None and body_json is not None and is_json(body_json):
            path, new_body, info = plan.prepare(hop, path, body_json, self.body)
            if new_body is not None:
                body = new_body
        url = upstream.base_url.rstrip("/") + path
        attempt.url = redact_url(url)
        # A key for the client's API never goes to another API.
        forward = not translated and self._may_forward(upstream)
        headers = self._upstream_headers(upstream, forward, translated)
        if headers is None:
            raise _Fail(
                "no_credential",
                f"environment variable {upstream.api_key_env} is not set for upstream "
                f"{upstream.name!r}",
            )
        url = url if forward else _strip_credential_query(url)
        timeouts = plan.timeouts
        session = self.relay._client(upstream.verify_tls)
        clock = self.relay.clock
        deadline_first = t0 + timeouts.first_event
        deadline_total = t0 + timeouts.total
        try:
            async with asyncio.timeout(timeouts.connect + timeouts.first_event):
                up = await self._keeping_alive(
                    session.request(
                        self.request.method,
                        url,
                        data=body,
                        headers=headers,
                        allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(
                            total=None, connect=timeouts.connect, sock_connect=timeouts.connect
                        ),
                    ),
                    plan.dialect,
                )
        except aiohttp.ConnectionTimeoutError as e:
            # Told apart by the exception, not the clock: the attempt's start is not the
            # connect's start (the first attempt also builds the TLS context).
            raise _Fail("connect_timeout", f"no connection within {timeouts.connect:g}s") from e
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise _Fail(
                "header_timeout", f"no response within {clock() - t0:.1f}s ({type(e).__name__})"
            ) from e
        except aiohttp.ClientError as e:
            raise _Fail("connect_error", f"{type(e).__name__}: {e}"[:300]) from e
        try:
            await self._consume(_Read(up, hop, attempt, info, t0, deadline_first, deadline_total))
        finally:
            up.close()  # closes the connection if the body was not read to the end

    async def _keeping_alive(
        self, pending: Awaitable[aiohttp.ClientResponse], dialect: Dialect
    ) -> aiohttp.ClientResponse:
        """Wait for an upstream's response head; meanwhile the client gets its headers once the
        first byte is due, and keep-alives once it has headers, as while a stream is quiet."""
        if self._keepalive_due(dialect) is None:
            return await pending
        task = asyncio.ensure_future(pending)
        try:
            while not task.done():
                due = self._keepalive_due(dialect)
                await asyncio.wait({task}, timeout=None if due is None else max(due, 0.0))
                if not task.done():
                    await self._keep_alive(dialect)
        except BaseException:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                (await task).close()  # a response that arrived just too late
            raise
        return task.result()

    def _keepalive_due(self, dialect: Dialect) -> float | None:
        """Seconds until the client is owed something while nothing comes: its response
        headers (`Timeouts.first_byte` after the request arrived, for a stream), then a
        keep-alive every `Timeouts.keepalive`; None if nothing is owed."""
        timeouts = self.plan.timeouts
        now = self.relay.clock()
        if self.response is None:
            if timeouts.first_byte is None or not self.plan.wants_stream:
                return None
            return self.started + timeouts.first_byte - now
        if dialect.keepalive() is None:
            return None
        return self.last_write + timeouts.keepalive - now

    async def _keep_alive(self, dialect: Dialect) -> None:
        """Give the client what it is owed (see `_keepalive_due`). Nothing but headers and
        comments goes out, so the gate stays open: a failure still moves to the next upstream."""
        if self.response is None:
            logger.info(
                "relay %s: no content after %gs; sending the client headers and keep-alives",
                self.plan.route,
                self.relay.clock() - self.started,
            )
            self.plan.headers_early = True
            await self._send_headers(200, {"content-type": "text/event-stream"}, None)
        await self._write(dialect.keepalive() or b"")

    def mask(self, text: str) -> str:
        """`text` with every credential in play replaced (for records, logs, messages)."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def _translate_request(self, hop: Hop, raw_path: str, body_json: Any) -> _Translation:
        """The client's request in the hop's format, and what its answer needs to come back."""
        plan = self.plan
        if body_json is None or not is_json(body_json):
            raise _Fail(
                "untranslatable", "the request body is not JSON, so it cannot be translated"
            )
        path = raw_path.split("?", 1)[0]  # the client's query belongs to the client's API
        client_model = plan.dialect.request_model(path, body_json)
        try:
            tr = xlt.translate_request(
                plan.dialect,
                hop.upstream.dialect,
                path,
                copy_json(body_json),  # the next hop reads the client's body too
                model=hop.map_model(client_model),
                flavour=hop.flavour,
            )
        except Exception as e:  # a converter bug must fail this attempt, not the flow
            logger.exception("relay %s: translating the request failed", plan.route)
            raise _Fail("untranslatable", f"{type(e).__name__}: {e}"[:300]) from e
        findings = Findings()
        xlt.report_gaps(tr.gaps, findings)
        upstream_model = tr.call.body.get("model") or hop.map_model(client_model)
        info: dict[str, Any] = {
            "model": upstream_model,
            "translated": f"{plan.dialect.name} -> {hop.upstream.dialect.name}",
        }
        if tr.sanitized is not None and tr.sanitized.changes:
            info["tools"] = tr.sanitized.to_dict()
        stream = ClientStream(
            client_model or upstream_model or "",
            include_usage=tr.request.include_usage,
            created=int(self.relay.wall_clock()),
        )
        body = json_text(tr.call.body).encode()
        return _Translation(hop.upstream.dialect, tr.call.path, body, info, stream, tr, findings)

    def _may_forward(self, upstream: Upstream) -> bool:
        """The client's credentials go to the origin it addressed, or where the route says."""
        return self.plan.forward_client_credentials or upstream.origin == self.plan.client_origin

    def _upstream_headers(
        self, upstream: Upstream, forward: bool, translated: bool = False
    ) -> dict[str, str] | None:
        """The request headers for `upstream`: the client's (without its credentials unless
        `forward`; without its own API's headers when `translated`), the upstream's configured
        ones and its key."""
        client_own = self.plan.dialect.own_headers if translated else ()
        out: dict[str, str] = {}
        for k, v in self.request.headers.items():
            lk = k.lower()
            if lk in HOP_BY_HOP or lk.startswith("x-mitmllm-"):
                continue
            if lk in CREDENTIAL_HEADERS and not forward:
                continue
            if client_own and lk.startswith(client_own):
                continue  # anthropic-version means nothing to (or breaks) another API
            out[k] = v
        if translated:
            out.update(upstream.dialect.required_headers)
        out["accept-encoding"] = "identity"
        for k, v in upstream.headers.items():
            out[k] = v
        if upstream.api_key_env:
            secret = self.relay.env.get(upstream.api_key_env)
            if not secret:
                return None
            for k in list(out):
                if k.lower() in AUTH_HEADERS:
                    del out[k]
            if upstream.auth == "bearer":
                out["authorization"] = f"Bearer {secret}"
            elif upstream.auth in ("x-api-key", "x-goog-api-key", "api-key"):
                out[upstream.auth] = secret
        return out

    async def _consume(self, read: _Read) -> None:
        up, hop, attempt = read.up, read.hop, read.attempt
        plan = self.plan
        dialect = hop.upstream.dialect
        status = up.status
        attempt.status = status
        ctype = up.headers.get("content-type", "")
        if status in RETRYABLE_STATUS or status >= 500:
            raw = await _read_some(up, 64 * 1024, 5.0)
            retry_after = parse_retry_after(up.headers)  # retry-after-ms (OpenAI) or retry-after
            raise _Fail(
                f"http_{status}",
                _error_text(dialect, raw) or f"HTTP {status}",
                status,
                retry_after,
                raw,
                up.headers,
                dialect,
            )
        if 200 <= status < 300 and is_event_stream(ctype):
            await self._stream(read)
            return
        # A whole body: JSON answer, other 4xx (the client's fault: passed on, not retried).
        remaining = max(0.1, read.deadline_total - self.relay.clock())
        try:
            async with asyncio.timeout(remaining):
                raw = await up.read()
        except TimeoutError as e:
            raise _Fail("total_timeout", "body not complete within the attempt's time") from e
        except aiohttp.ClientError as e:
            raise _Fail("read_error", f"{type(e).__name__}: {e}"[:300]) from e
        if 200 <= status < 300:
            payload, _ = parse_json(raw)
            err = dialect.error_of(payload) if is_json(payload) else None
            if err is not None:
                raise _Fail("error_in_200", err[:300], status)
            if plan.wants_stream and not raw.strip():
                raise _Fail("empty", "empty body for a stream request", status)
            attempt.outcome = "ok"
        else:
            attempt.outcome = "client_error"
        attempt.ttfe_ms = round((self.relay.clock() - read.t0) * 1000, 1)
        self._serve(hop, read.info)
        headers: Mapping[str, str] = up.headers
        if self.translation is not None:
            status, raw, headers = self._translate_body(status, raw, up.headers)
            dialect = plan.dialect
        if self.response is not None:  # early commit: headers already out
            await self._write(
                raw
                if is_event_stream(ctype)
                else dialect.error_event(
                    _error_text(dialect, raw) or f"upstream answered HTTP {status}"
                )
            )
            await self.response.write_eof()
            return
        attempt.committed = True
        resp = await self._send_headers(status, headers, hop)
        await resp.write(raw)
        await resp.write_eof()

    def _translate_body(
        self, status: int, raw: bytes, headers: Mapping[str, str]
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """A whole upstream body (an answer or a 4xx error) in the client's format."""
        tr = self.translation
        assert tr is not None
        plan = self.plan
        out = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "retry-after")}
        if 200 <= status < 300:
            payload, _ = parse_json(raw)
            body = xlt.translate_response(
                tr.upstream, plan.dialect, payload, tr.stream, tr.findings, names=tr.request.names
            )
            out["content-type"] = "application/json"
            return status, json_text(body).encode(), out
        err = xlt.translate_error(
            tr.upstream, plan.dialect, status, raw, retry_after=headers.get("retry-after")
        )
        out.update(err.headers)
        return err.status, err.body, out

    async def _stream(self, read: _Read) -> None:
        up, hop, attempt, t0 = read.up, read.hop, read.attempt, read.t0
        deadline_first, deadline_total = read.deadline_first, read.deadline_total
        plan = self.plan
        clock = self.relay.clock
        timeouts = plan.timeouts
        stages = self.stages = _Stages(
            hop.upstream.dialect,
            plan.dialect,
            request=self.body_json,
            repair=plan.repair,
            fails=plan.fails,
            translation=self.translation,
        )
        gate = stages.gate
        committed = False
        progress = 0
        last_event = clock()
        content = up.content
        pumpable = self.relay.callbacks
        while True:
            now = clock()
            if committed or stages.started:
                deadline = min(last_event + timeouts.idle, deadline_total)
            else:
                deadline = min(deadline_first, deadline_total)
            wait = deadline - now
            due = self._keepalive_due(plan.dialect)
            try:
                chunk = await _read(content, min(wait, due) if due is not None else wait)
            except aiohttp.ClientError as e:
                if not committed:
                    raise _Fail("read_error", f"{type(e).__name__}: {e}"[:300], up.status) from e
                return await self._end_with_error(
                    attempt, f"upstream connection failed mid-stream: {type(e).__name__}"
                )
            if chunk is None:
                if clock() >= deadline - 1e-3:
                    return await self._stall(
                        hop, attempt, committed, stages.started, clock() - t0, last_event
                    )
                await self._keep_alive(plan.dialect)
                continue
            if not chunk:
                break
            stages.feed(chunk)
            if stages.progress != progress:
                progress = stages.progress
                last_event = clock()
            if stages.untranslatable is not None:
                raise _Fail("untranslatable", stages.untranslatable, up.status)
            if gate.failed and committed:  # the stream started over: end it, not a 2nd answer
                return await self._restarted(hop, attempt)
            if gate.failed:
                raise _Fail(gate.outcome or "broken_stream", gate.reason or "", up.status)
            if gate.committed and not committed:
                committed = True
                await self._commit(read)
            await self._write(gate.take())
            if committed and attempt.outcome == "pending" and stages.client_complete:
                # The client has its terminal event: served, whatever the upstream does next.
                attempt.outcome = plan.outcome = "ok"
            if committed and stages.over:
                # The client's stream has ended with its error event: nothing more can follow.
                return await self._ended_in_error(attempt)
            if committed and pumpable:
                if await self._pumped(read, last_event):
                    return
                pumpable = False  # read the rest here
        await self._finish(read, committed)

    async def _pumped(self, read: _Read, last_event: float) -> bool:
        """The rest of a committed stream, handed on from the upstream connection's callbacks
        (`mitmllm.engine.pump`): each chunk goes through the stages and out to the client within
        the callback. This task only wakes for the end, a failure, a stop, a timer (idle, total,
        keep-alive) or a client that is behind. False if the body cannot be pumped: the caller
        reads it the usual way, with the same outcomes."""
        up, attempt, deadline_total = read.up, read.attempt, read.deadline_total
        plan = self.plan
        stages = self.stages
        response = self.response
        transport = self.request.transport
        assert stages is not None and response is not None
        if transport is None or transport.is_closing():
            return False
        await response.write(b"")  # the headers, if they still wait for a body
        framed = response.headers.get("transfer-encoding", "").lower() == "chunked"
        high = transport.get_write_buffer_limits()[1]
        gate = stages.gate
        clock = self.relay.clock
        timeouts = plan.timeouts
        progress = stages.progress

        def sink(chunk: bytes) -> None:
            nonlocal progress, last_event
            stages.feed(chunk)
            count = stages.progress
            if count != progress:
                progress = count
                last_event = clock()
            if gate.failed:  # the stream started over: end it, not a 2nd answer
                pump.stop("restarted")
                return
            data = gate.take()
            if data:
                if transport.is_closing():
                    raise ConnectionResetError("the client's connection is closed")
                if not framed:
                    transport.write(data)
                elif len(data) < _JOIN_BELOW:
                    transport.write(b"%x\r\n%b\r\n" % (len(data), data))
                else:  # a big event is not copied to frame it
                    transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
                self.last_write = clock()
                if transport.get_write_buffer_size() > high:
                    pump.pause()  # the client is behind: stop reading the upstream
            if attempt.outcome == "pending" and stages.client_complete:
                # The client has its terminal event: served, whatever the upstream does next.
                attempt.outcome = plan.outcome = "ok"
            if stages.over:  # the client's stream has ended with its error event
                pump.stop("over")

        connection = up.connection
        pump = Pump(up.content, sink, connection.protocol if connection is not None else None)
        if not pump.start():
            return False
        self.relay.pumped += 1
        try:
            while not pump.done:
                if pump.paused:
                    # The client is behind: the upstream waits for it (as a write waits for
                    # aiohttp's drain in the task's way), and that time is not the upstream's.
                    await self.request.writer.drain()
                    last_event = max(last_event, clock())
                    pump.resume()
                    continue
                deadline = min(last_event + timeouts.idle, deadline_total)
                due = self._keepalive_due(plan.dialect)
                wait = deadline - clock()
                await pump.wait(wait if due is None else min(wait, due))
                if pump.done or pump.paused:
                    continue
                deadline = min(last_event + timeouts.idle, deadline_total)  # events meanwhile
                if clock() >= deadline - 1e-3:
                    # Bytes that arrived while the event loop was busy elsewhere are no stall
                    # (as in `_read`): give the loop its turns to read them, then judge.
                    seen = progress
                    for _ in range(2):
                        await asyncio.sleep(0)
                    if pump.done or progress != seen:
                        continue
                    await self._stall(read.hop, attempt, True, True, clock() - read.t0, last_event)
                    return True
                due = self._keepalive_due(plan.dialect)
                if due is not None and due <= 0:
                    await self._keep_alive(plan.dialect)
        finally:
            pump.close()
        if pump.stopped == "error":
            assert pump.error is not None
            raise pump.error  # a fault of mitmllm's own, raised as the read would have
        if pump.stopped == "restarted":
            await self._restarted(read.hop, attempt)
        elif pump.stopped == "over":
            await self._ended_in_error(attempt)
        elif pump.error is not None:
            await self._end_with_error(
                attempt, f"upstream connection failed mid-stream: {type(pump.error).__name__}"
            )
        else:
            await self._finish(read, True)
        return True

    async def _finish(self, read: _Read, committed: bool) -> None:
        """The upstream's body ended: the stream's last events, and the attempt's outcome."""
        up, hop, attempt = read.up, read.hop, read.attempt
        plan = self.plan
        stages = self.stages
        assert stages is not None
        gate = stages.gate
        # the unterminated tail (if any) never reaches the client
        stages.close()
        if stages.untranslatable is not None and not committed:
            raise _Fail("untranslatable", stages.untranslatable, up.status)
        if gate.failed and committed:
            return await self._restarted(hop, attempt)
        if gate.failed:
            raise _Fail(gate.outcome or "empty", gate.reason or "", up.status)
        if not committed:  # the first content arrived in the final flush
            await self._commit(read)
        await self._write(gate.take())
        if stages.over:
            return await self._ended_in_error(attempt)
        self._record_findings(attempt)
        client = stages.client
        v = client.validator
        if v is not None and not v.complete and v.error is None:
            dropped = (
                f" ({stages.dropped} bytes of a partial event dropped)" if stages.dropped else ""
            )
            return await self._end_with_error(
                attempt, f"upstream {hop.upstream.name} ended the stream before its end{dropped}"
            )
        attempt.outcome = "ok" if v is None or v.error is None else "inband_error_after_commit"
        plan.outcome = "ok" if attempt.outcome == "ok" else "failed_after_commit"
        assert self.response is not None
        await self.response.write_eof()

    async def _restarted(self, hop: Hop, attempt: Attempt) -> None:
        """The upstream started its answer over after commit (the gate failed `restarted`): what
        passed before the restart goes out, then the client's stream ends with an error."""
        stages = self.stages
        assert stages is not None
        await self._write(stages.gate.take())
        attempt.outcome = "restarted_after_commit"
        await self._end_with_error(
            attempt, f"upstream {hop.upstream.name} started its answer over ({stages.gate.reason})"
        )

    async def _ended_in_error(self, attempt: Attempt) -> None:
        """A translated stream ended with the client's error event after commit (the upstream's
        in-band error, or a stream the client's format cannot carry, XLT-4)."""
        stages = self.stages
        assert stages is not None
        v = stages.client.validator
        if stages.broken is not None:
            attempt.outcome = "untranslatable_after_commit"
            attempt.error = stages.broken
        else:
            attempt.outcome = "inband_error_after_commit"
            attempt.error = self.mask(v.error) if v is not None and v.error else None
        self._record_findings(attempt)
        self.plan.outcome = "failed_after_commit"
        assert self.response is not None
        with contextlib.suppress(ConnectionError):
            await self.response.write_eof()

    async def _commit(self, read: _Read) -> None:
        """The first content event arrived: this attempt serves the client from now on."""
        attempt = read.attempt
        attempt.committed = True
        attempt.ttfe_ms = round((self.relay.clock() - read.t0) * 1000, 1)
        self._serve(read.hop, read.info)
        if self.response is None:
            await self._send_headers(read.up.status, read.up.headers, read.hop)

    async def _stall(
        self,
        hop: Hop,
        attempt: Attempt,
        committed: bool,
        started: bool,
        elapsed: float,
        last_event: float,
    ) -> None:
        timeouts = self.plan.timeouts
        idle = self.relay.clock() - last_event
        if not committed:
            if elapsed >= timeouts.total:
                raise _Fail("total_timeout", f"attempt exceeded {timeouts.total:g}s")
            if started:  # content the client cannot see (reasoning for an Anthropic client)
                raise _Fail(
                    "idle_timeout",
                    f"sent no event for {idle:.1f}s (idle limit {timeouts.idle:g}s), before any "
                    "content the client's format shows",
                )
            raise _Fail("first_event_timeout", f"no content event within {timeouts.first_event:g}s")
        what = (
            f"exceeded the attempt limit of {timeouts.total:g}s"
            if elapsed >= timeouts.total
            else f"sent no event for {idle:.1f}s (idle limit {timeouts.idle:g}s)"
        )
        attempt.outcome = "stall_after_commit"
        await self._end_with_error(
            attempt, f"upstream {hop.upstream.name} {what}", kind="timeout_error"
        )

    async def _end_with_error(
        self, attempt: Attempt, message: str, kind: str = "api_error"
    ) -> None:
        """End the client's stream (committed) with its format's terminal error event."""
        if attempt.outcome in ("pending", "ok"):
            attempt.outcome = "failed_after_commit"
        attempt.error = message = self.mask(message)
        self._record_findings(attempt)
        self.plan.outcome = "failed_after_commit"
        logger.warning(
            "relay %s: %s; ending the stream with an error event", self.plan.route, message
        )
        stages = self.stages
        if stages is not None and stages.translator is not None:
            # Written by the client's stream writer, which knows where its stream stands.
            await self._write(stages.fail(message, kind))
        else:
            await self._write(self.plan.dialect.error_event(message, kind))
        assert self.response is not None
        with contextlib.suppress(ConnectionError):
            await self.response.write_eof()

    def _record_findings(self, attempt: Attempt) -> None:
        """What the upstream's stream broke and what mitmllm mended in it (its FIX-* findings),
        and what its translation could not carry (XLT-*), on the attempt; credentials are
        masked in the messages (an in-band error may quote them)."""
        found: list[Finding] = []
        if self.stages is not None:
            found += self.stages.upstream.findings
        if self.translation is not None:
            found += self.translation.findings
        found = [replace(f, message=self.mask(f.message)) for f in found]  # errors may quote keys
        attempt.findings = [f for f in found if not f.rule.startswith("FIX-")]
        attempt.repairs = [Repair.from_finding(f) for f in found if f.rule.startswith("FIX-")]

    # --- the client side ---

    def _serve(self, hop: Hop, info: dict[str, Any]) -> None:
        plan = self.plan
        plan.served = hop
        plan.served_info = info
        plan.served_model = info.get("model")
        if plan.outcome == "pending":
            plan.outcome = "ok"

    async def _send_headers(
        self, status: int, headers: Mapping[str, str], hop: Hop | None
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=status)
        for k, v in headers.items():
            lk = k.lower()
            if lk in HOP_BY_HOP or lk in ("content-length", "date", "server"):
                continue
            resp.headers.add(k, v)
        if hop is not None:
            resp.headers[UPSTREAM_HEADER] = hop.upstream.name
            model = self.plan.served_model
            if model:
                resp.headers[SERVED_MODEL_HEADER] = model
        resp.headers["x-mitmllm-attempts"] = str(len(self.plan.attempts))
        await resp.prepare(self.request)  # type: ignore[arg-type]
        self.response = resp
        self.last_write = self.relay.clock()
        return resp

    async def _write(self, data: bytes) -> None:
        if not data or self.response is None:
            return
        await self.response.write(data)
        self.last_write = self.relay.clock()

    async def _give_up(self, fail: _Fail | None) -> web.StreamResponse:
        plan = self.plan
        plan.outcome = "failed_before_commit"
        dialect = plan.dialect
        summary = "; ".join(f"{a.upstream}: {a.outcome}" for a in plan.attempts) or "no upstream"
        message = f"mitmllm: every upstream failed ({summary})"
        if self.response is not None:  # early commit: headers went out already
            await self._write(dialect.error_event(message, _kind_for(fail)))
            await self.response.write_eof()
            return self.response
        status = _status_for(fail)
        body = dialect.error_body(status, message, _kind_for(fail))
        if fail is not None and fail.upstream is not None and fail.upstream.name != dialect.name:
            status, body = _client_error(fail, dialect, message)
        resp = web.Response(status=status, body=body, content_type="application/json")
        retry_after = [a.retry_after for a in plan.attempts if a.retry_after]
        if retry_after:
            resp.headers["retry-after"] = str(max(1, round(min(retry_after))))
        resp.headers["x-mitmllm-attempts"] = str(len(plan.attempts))
        self.response = resp
        return resp


class _Stages:
    """One attempt's stream on its way to the client, sans-I/O: the upstream's own checks and
    repairs in its format (`upstream` holds the attempt's findings), the translation into the
    client's format when the hop speaks another, and the checks of what the client would get
    (`client`), which the `gate` judges. Untranslated, the client's side is the repaired
    stream itself."""

    def __init__(
        self,
        upstream: Dialect,
        client: Dialect,
        *,
        request: Any,
        repair: bool,
        fails: frozenset[str] | None,
        translation: _Translation | None,
    ) -> None:
        own_request = translation.request.call.body if translation is not None else request
        self.upstream = StreamChecker(upstream)
        self.translator: xlt.StreamTranslator | None = None
        self.translation = translation
        repaired = self.upstream
        repairer = None
        if repair:
            repaired = StreamChecker(upstream)
            repairer = Repairer(upstream, self.upstream.findings, request=own_request)
        self.client = repaired
        if translation is not None:
            self.client = StreamChecker(client, request=request)
            self.translator = xlt.StreamTranslator(
                upstream,
                client,
                translation.stream,
                translation.findings,
                names=translation.request.names,
            )
        self.gate = Gate(client, self.client.findings, fails=fails)
        # Untranslated, the gate judges the repaired stream itself: the pipeline hands it each
        # event (and, after commit, may count steady deltas by their bytes); translated, each
        # event goes through the translator first.
        self.pipeline = Pipeline(
            repaired,
            upstream=self.upstream if repairer is not None else None,
            repairer=repairer,
            on_event=self._translate if translation is not None else None,
            gate=self.gate if translation is None else None,
            # the books of steady deltas kept when read (the gate is told each chunk at once)
            lazy=repairer is not None and translation is None,
        )
        self.repaired = repaired  # the upstream's stream as repaired, in its format
        self.broken: str | None = None  # the first XLT-4: the stream could not be translated
        self.untranslatable: str | None = None  # ... and it came before commit
        # The upstream's own liveness, for translated streams: events that carry data, and
        # whether one was content, though the client may not see it (reasoning is dropped for
        # Anthropic clients); the timers go by it, the commit by what the client sees.
        self._events = 0
        self._content = False

    @property
    def progress(self) -> int:
        """Events that show the upstream is alive (for the idle timer)."""
        return self._events if self.translator is not None else self.gate.progress

    @property
    def started(self) -> bool:
        """The upstream sent content (in its own judgement): from then on the idle timer runs,
        not the first event's."""
        return self._content or self.gate.committed

    @property
    def dropped(self) -> int:
        """Bytes of an unterminated final event the client does not get."""
        return len(self.repaired.trailing)

    @property
    def client_complete(self) -> bool:
        """What the client got has its format's success terminator (and no in-band error)."""
        v = self.client.validator
        return v is not None and v.complete and v.error is None

    @property
    def over(self) -> bool:
        """The client's stream ended with its error event (translated streams only)."""
        return self.translator is not None and self.translator.failed

    def feed(self, chunk: bytes) -> None:
        self.pipeline.feed(chunk)

    def close(self) -> None:
        self.pipeline.close()
        if self.translator is not None and self.untranslatable is None:
            # Whole events only, so the client's checker holds nothing back; it stays open for
            # the error event that may still end the client's stream.
            self._client_bytes(self.translator.close())
        self.gate.close()

    def fail(self, message: str, kind: str) -> bytes:
        """The client's stream (translated, committed) ends with its format's error event."""
        assert self.translator is not None
        error = ApiError(_ERROR_KINDS.get(kind, ErrorKind.API_ERROR), message)
        self._client_bytes(self.translator.fail(error))
        return self.gate.take()

    def _translate(self, ev: Event, payload: Any) -> None:
        if self.untranslatable is not None:
            return  # the attempt failed: nothing of it goes to the client
        assert self.translator is not None and self.translation is not None
        upstream = self.translation.upstream
        if payload is not NO_DATA and not upstream.is_heartbeat(ev, payload):
            self._events += 1
            self._content = self._content or upstream.is_content(ev, payload)
        findings = self.translation.findings
        seen = findings.count("XLT-4")
        data = self.translator.event(ev, payload)
        if findings.count("XLT-4") > seen and self.broken is None:
            self.broken = next(
                (f.message for f in reversed(findings.items) if f.rule == "XLT-4"),
                "the upstream stream could not be translated",
            )
            if not self.gate.committed:
                self.untranslatable = self.broken
                return
        self._client_bytes(data)

    def _client_bytes(self, data: bytes) -> None:
        if data:
            for ev, payload in self.client.feed(data):
                self.gate.push(ev, payload)


#: The relay's error kinds (Anthropic's words) as the neutral model's.
_ERROR_KINDS = {
    "api_error": ErrorKind.API_ERROR,
    "timeout_error": ErrorKind.TIMEOUT,
    "overloaded_error": ErrorKind.OVERLOADED,
    "rate_limit_error": ErrorKind.RATE_LIMIT,
}


@dataclass
class _Translation:
    """One attempt's translation: the request in the upstream's format, and what the client's
    side needs to turn the answer back. Its findings are XLT-*."""

    upstream: Dialect
    path: str
    body: bytes
    info: dict[str, Any]
    stream: ClientStream
    request: xlt.TranslatedRequest
    findings: Findings


#: A chunk of the client's stream shorter than this is framed by copying it (cheaper than a
#: write of three pieces); a longer one is written without a copy.
_JOIN_BELOW = 2048


def _client_error(fail: _Fail, client: Dialect, message: str) -> tuple[int, bytes]:
    """Status and body for the client when the last failure came from an upstream of another
    format: the kind its own body or status says, in the client's words (an overload is 529 for
    Anthropic clients and 503 for the others; 429 stays 429)."""
    assert fail.upstream is not None
    payload, _ = parse_json(fail.body) if fail.body else (None, None)
    if isinstance(payload, dict):
        kind = xlt.converter(fail.upstream).parse_error(fail.status, payload).kind
    else:
        kind = kind_of_status(fail.status or _status_for(fail))
    return xlt.converter(client).render_error(ApiError(kind, message, fail.status))


async def _read(content: aiohttp.StreamReader, wait: float) -> bytes | None:
    """The next chunk within `wait` seconds (b"" at the end of the body), or None if none came."""
    try:
        if wait > 0:
            try:
                async with asyncio.timeout(wait):
                    return await content.readany()
            except TimeoutError:
                pass
        # Bytes that arrived while the event loop was busy elsewhere are not a stall. Sockets
        # that became readable meanwhile are read on the loop's next turns (one to poll them,
        # one to run their callbacks), so give it those before judging.
        for _ in range(2):
            await asyncio.sleep(0)
        if content.at_eof():
            return b""
        return content.read_nowait() or None
    except aiohttp.ClientPayloadError:
        rest = unread(content)
        if rest:
            return rest  # the failure is raised again by the next read
        raise


async def _read_some(up: aiohttp.ClientResponse, limit: int, timeout: float) -> bytes:
    try:
        async with asyncio.timeout(timeout):
            return await up.content.read(limit)
    except (TimeoutError, aiohttp.ClientError):
        return b""


def _error_text(dialect: Dialect, raw: bytes) -> str | None:
    if not raw:
        return None
    payload, _ = parse_json(raw)
    if is_json(payload):
        err = dialect.error_of(payload)
        if err:
            return err
    return raw[:200].decode("utf-8", "replace")


def _status_for(fail: _Fail | None) -> int:
    if fail is None:
        return 502
    if fail.status is not None and fail.status >= 400:
        return fail.status
    if fail.outcome.endswith("timeout"):
        return 504
    return 502


def _kind_for(fail: _Fail | None) -> str:
    if fail is None:
        return "api_error"
    if fail.status == 429:
        return "rate_limit_error"
    if fail.status in (503, 529):
        return "overloaded_error"
    if fail.outcome.endswith("timeout"):
        return "timeout_error"
    return "api_error"


def _secrets_of(
    headers: Mapping[str, str], query: str, plan: Plan, env: Mapping[str, str]
) -> list[str]:
    """Every credential value a routed request brings into play, longest first: the client's
    (headers, query) and the keys of the chain's upstreams."""
    found: set[str] = set()
    for k, v in headers.items():
        if k.lower() in CREDENTIAL_HEADERS:
            found.add(v.strip())
            found.add(v.split()[-1] if v.split() else v)
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if name.lower() in CREDENTIAL_QUERY and value:
            found.update({value, unquote_plus(value)})
    for hop in plan.hops:
        if hop.upstream.api_key_env:
            secret = env.get(hop.upstream.api_key_env)
            if secret:
                found.add(secret)
    return sorted((s for s in found if len(s) >= MIN_SECRET), key=len, reverse=True)


def _strip_credential_query(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [p for p in parts.query.split("&") if p.split("=", 1)[0].lower() not in CREDENTIAL_QUERY]
    return parts._replace(query="&".join(kept)).geturl()


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [
        (p if p.split("=", 1)[0].lower() not in CREDENTIAL_QUERY else p.split("=", 1)[0] + "=***")
        for p in parts.query.split("&")
    ]
    return parts._replace(query="&".join(kept)).geturl()
