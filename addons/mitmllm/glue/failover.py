"""The fail-over addon: routes matching flows through the relay and reports what happened.

A flow that matches a configured route is pointed at the relay (loopback, same event loop) in
the `request` hook, with a one-time token; the relay tries the route's upstreams in turn. When
response headers arrive the flow is shown with the upstream that served it (not the relay's
loopback address), and the client gets its own model and tool names back. When the flow ends, its
attempts go to `flow.metadata`, and the relay's outcome to findings (RLY-1 served by a fallback,
RLY-2 every upstream failed, RLY-3 failed after the response started); a hop of another wire
format adds what its translation could not carry (XLT-*).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from fnmatch import fnmatch
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from mitmproxy import command
from mitmproxy import ctx
from mitmproxy import http

from mitmllm.engine import relay as relaymod
from mitmllm.engine.breaker import Breakers
from mitmllm.engine.config import Config
from mitmllm.engine.config import Route
from mitmllm.engine.pipeline import Rewrite
from mitmllm.engine.relay import TOKEN_HEADER
from mitmllm.engine.relay import Hop
from mitmllm.engine.relay import Plan
from mitmllm.engine.relay import Relay
from mitmllm.engine.rewrite import edits_of
from mitmllm.engine.rewrite import response_rewrites
from mitmllm.engine.rewrite import rewrite_request
from mitmllm.engine.sticky import StickySessions
from mitmllm.engine.sticky import session_key
from mitmllm.glue import flowstate
from mitmllm.glue.configaddon import ConfigLoader
from mitmllm.glue.flowstate import LLMFlow
from mitmllm.protocol import detect
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.payload import copy_json
from mitmllm.protocol.splice import Edit

logger = logging.getLogger(__name__)


def match_route(config: Config, host: str, path: str, model: str | None, fmt: str) -> Route | None:
    """The first route whose match holds for this request."""
    for route in config.routes:
        m = route.match
        if m.host and not fnmatch(host.lower(), m.host.lower()):
            continue
        if m.path and not fnmatchcase(path, m.path):
            continue
        if m.model and (model is None or not any(fnmatchcase(model, g) for g in m.model)):
            continue
        if config.route_format(route) != fmt:
            continue
        return route
    return None


def _connect_lazily() -> None:
    """Fail-over needs mitmproxy to connect upstream only when a request is there to route.

    With mitmproxy's default, a reverse proxy connects to its target as soon as a client
    connects, and drops the client before any hook runs when the target is down, so the route
    never gets its chance.
    """
    if getattr(ctx.options, "connection_strategy", "lazy") != "lazy":
        logger.info(
            "mitmllm: routes are configured, so connection_strategy is set to lazy (an eager "
            "connect to a dead upstream would drop clients before a route could fail over)"
        )
        ctx.options.update(connection_strategy="lazy")


class _StickyByRoute:
    """Sticky sessions with each route's own TTL."""

    def __init__(self) -> None:
        self.routes: dict[str, StickySessions] = {}

    def configure(self, config: Config) -> None:
        old, self.routes = self.routes, {}
        for r in config.routes:
            if r.sticky is not None:
                keep = old.get(r.name)
                if keep is not None and keep.ttl == r.sticky.ttl:
                    self.routes[r.name] = keep
                else:
                    self.routes[r.name] = StickySessions(r.sticky.ttl)

    # `is not None`, not truth: an empty StickySessions has len() 0 and is falsy.
    def get(self, route: str, key: str | None) -> str | None:
        s = self.routes.get(route)
        return s.get(route, key) if s is not None else None

    def set(self, route: str, key: str | None, upstream: str) -> None:
        s = self.routes.get(route)
        if s is not None:
            s.set(route, key, upstream)

    def forget(self, route: str, key: str | None) -> None:
        s = self.routes.get(route)
        if s is not None:
            s.forget(route, key)


def _prepare(dialect: Dialect) -> relaymod.Prepare:
    """Per-hop request rewriting: the hop's model mapping and tool flavour."""

    def prepare(
        hop: Hop, raw_path: str, body: Any, raw: bytes
    ) -> tuple[str, bytes | None, dict[str, Any]]:
        path, sep, query = raw_path.partition("?")
        model = hop.map_model(dialect.request_model(path, body))
        rw = rewrite_request(dialect, path, copy_json(body), model=model, flavour=hop.flavour)
        new_body = rw.body_bytes(raw, body) if rw.body_changed else None
        info = rw.to_dict()
        info["model"] = rw.model_to or rw.model_from
        return rw.path + sep + query, new_body, info

    return prepare


class Failover:
    def __init__(self, config: ConfigLoader) -> None:
        self.loader = config
        self.breakers = Breakers()
        self.sticky = _StickyByRoute()
        self.relay = Relay(breakers=self.breakers, sticky=self.sticky)
        self._started: asyncio.Task[None] | None = None
        config.subscribe(self._configure)

    def _configure(self, config: Config) -> None:
        b = config.breaker
        self.breakers.configure(
            [u.name for u in config.upstreams],
            failures=b.failures,
            open_for=b.open_for,
            max_open_for=b.max_open_for,
        )
        self.sticky.configure(config)
        if config.routes:
            _connect_lazily()

    # --- lifecycle -----------------------------------------------------------------------------

    def running(self) -> None:
        # Sync on purpose (an async `running` stops script hot-reload); the relay starts here.
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self.relay.start())

    async def _relay_ready(self) -> bool:
        if self._started is None:
            self.running()
        assert self._started is not None
        try:
            await asyncio.shield(self._started)
        except Exception:
            logger.exception("mitmllm: the fail-over relay could not start; routes are off")
            return False
        return self.relay.running

    def done(self) -> None:
        # Sync on purpose (mitmproxy calls `done` synchronously when a script is unloaded).
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.create_task(self.relay.stop())
        self._started = None

    # --- hooks ---------------------------------------------------------------------------------

    async def request(self, flow: http.HTTPFlow) -> None:
        state = flowstate.get(flow)
        config = self.loader.config
        if state is None or state.dialect is None or flow.response is not None or not config.routes:
            return
        req = flow.request
        path = req.path.split("?", 1)[0]
        route = match_route(config, req.pretty_host, path, state.model, state.dialect.name)
        if route is None or not await self._relay_ready():
            return
        plan = self._plan(config, route, state, flow)
        token = self.relay.issue(plan)
        state.plan = plan
        state.report.route = route.name
        state.report.client_url = relaymod.redact_url(req.pretty_url)
        req.headers[TOKEN_HEADER] = token
        req.scheme, req.host, req.port = "http", "127.0.0.1", self.relay.port

    def _plan(self, config: Config, route: Route, state: LLMFlow, flow: http.HTTPFlow) -> Plan:
        hops = []
        for h in route.chain:
            up = config.upstream(h.upstream)
            dialect = detect.by_name(up.format)
            assert dialect is not None  # the configuration only admits known formats
            hops.append(
                Hop(
                    relaymod.Upstream(
                        name=up.name,
                        base_url=up.base_url,
                        dialect=dialect,
                        auth=up.auth,
                        api_key_env=up.api_key_env,
                        headers=dict(up.headers),
                        verify_tls=up.verify_tls,
                    ),
                    models=tuple(h.models.items()),
                    flavour=h.tools or up.tools,
                )
            )
        t = config.timeouts(route)
        repair = config.repair_of(route)
        key = None
        if route.sticky is not None:
            key = session_key(route.sticky.key, flow.request.headers, state.request)
        assert state.dialect is not None
        return Plan(
            route=route.name,
            hops=hops,
            dialect=state.dialect,
            wants_stream=state.wants_stream,
            # What the client addressed (the reverse target in reverse mode), before the
            # request is pointed at the relay.
            client_origin=(
                flow.request.scheme.lower(),
                flow.request.host.lower(),
                flow.request.port,
            ),
            timeouts=relaymod.Timeouts(
                connect=t.connect,
                first_event=t.first_event,
                idle=t.idle,
                total=t.total,
                keepalive=t.keepalive,
                first_byte=t.first_byte,
            ),
            forward_client_credentials=route.forward_client_credentials,
            early_commit=route.early_commit,
            repair=repair.enabled,
            fails=None if repair.fail_on is None else frozenset(repair.fail_on),
            prepare=_prepare(state.dialect),
            sticky_key=key,
        )

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = flowstate.get(flow)
        if state is None or state.plan is None:
            return
        plan = state.plan
        self._show_upstream(flow, state, plan)
        if state.dialect is None:
            return
        if plan.served is None:
            if plan.headers_early:  # headers went out before any upstream committed
                state.rewrites.append(self._deferred_rewrites(state))
            return
        state.rewrites.extend(self._response_rewrites(state))

    def _response_rewrites(self, state: LLMFlow) -> list[Rewrite]:
        """Show the client its own model and tool names, whatever the serving hop was sent."""
        plan = state.plan
        assert state.dialect is not None and plan is not None
        served_model = plan.served_model
        if served_model and served_model != state.model:
            state.report.model_sent = served_model
        names = plan.served_info.get("names") or {}
        client_model = state.model if served_model and served_model != state.model else None
        return response_rewrites(state.dialect, client_model=client_model, names=names)

    def _deferred_rewrites(self, state: LLMFlow) -> Rewrite:
        """The response rewrites of whichever hop serves, known only once one commits (the relay
        decides before it sends the first content event; keep-alives come earlier)."""
        built: list[Rewrite] | None = None

        def rewrite(payload: Any) -> list[Edit]:
            nonlocal built
            if built is None:
                if state.plan is None or state.plan.served is None:
                    return []
                built = self._response_rewrites(state)
            return edits_of(built, payload)

        return rewrite

    def _show_upstream(self, flow: http.HTTPFlow, state: LLMFlow, plan: Plan) -> None:
        """Show the flow with the upstream that served it, not the relay; drop the token."""
        flow.request.headers.pop(TOKEN_HEADER, None)
        url = plan.attempts[-1].url if plan.served is not None and plan.attempts else None
        client_url = state.report.client_url
        if url and client_url and plan.served is not None and "translated" in plan.served_info:
            # The flow holds the client's request: keep its path (the upstream was sent
            # another format's, on record in the attempts), shown at the upstream's origin.
            served, asked = urlsplit(url), urlsplit(client_url)
            url = urlunsplit((served.scheme, served.netloc, asked.path, asked.query, ""))
        url = url or client_url
        if url:
            with contextlib.suppress(ValueError):
                flow.request.url = url

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        state = flowstate.get(flow)
        if state is None or state.plan is None or state.report.relay is not None:
            return
        plan = state.plan
        report = state.report
        if TOKEN_HEADER in flow.request.headers:  # the flow never got response headers
            self.relay.revoke(flow.request.headers[TOKEN_HEADER])
            self._show_upstream(flow, state, plan)
        elif plan.headers_early and plan.served is not None:  # served after headers went out
            self._show_upstream(flow, state, plan)
        outcome = plan.outcome
        last = plan.attempts[-1] if plan.attempts else None
        if flow.error is not None and last is not None and last.outcome == "pending":
            # The client went away mid-attempt; the relay sees the cancellation a moment later.
            last.outcome = outcome = "cancelled"
            last.error = flow.error.msg
        # The report shares the relay's attempts (one typed record, filled by the relay).
        report.attempts = plan.attempts
        report.relay = outcome
        f = report.findings
        served = next((a for a in reversed(plan.attempts) if a.committed), None)
        if served is not None and served.repairs:
            # What mitmllm changed in what the client got is the flow's to show (FIX-*).
            report.repairs = list(served.repairs)
            f.extend([r.to_finding() for r in served.repairs])
        if plan.served is not None:
            report.upstream = plan.served.upstream.name
            report.translated = plan.served_info.get("translated")
            if report.translated and served is not None:
                # What the translation could not carry is the flow's too (the upstream's own
                # findings stay on its attempt: they are in another format than the client's).
                f.extend([x for x in served.findings if x.rule.startswith("XLT-")])
            index = next((i for i, h in enumerate(plan.hops) if h is plan.served), 0)
            if index > 0 or len(plan.attempts) > 1:
                report.fell_back = True
                failed = ", ".join(f"{a.upstream} ({a.outcome})" for a in plan.attempts if a.failed)
                f.add("RLY-1", f"served by {plan.served.upstream.name} after {failed or 'a skip'}")
        if plan.outcome == "failed_before_commit":
            f.add(
                "RLY-2",
                "; ".join(
                    f"{a.upstream}: {a.outcome} {a.error or ''}".strip() for a in plan.attempts
                )
                or "no upstream available",
            )
        elif plan.outcome == "failed_after_commit":
            f.add("RLY-3", (last.error if last else None) or "the upstream failed mid-stream")
        for t in self.breakers.drain():
            logger.warning("mitmllm breaker: %s", t)

    # --- commands ------------------------------------------------------------------------------

    @command.command("mitmllm.upstreams")
    def upstreams(self) -> str:
        """Every upstream's circuit breaker: state, failures, open window, last error."""
        rows = self.breakers.snapshot()
        if not rows:
            return "no upstreams configured (see mitmllm_config)"
        lines = []
        for r in rows:
            until = r.get("open_until")
            window = f" open for {until:.0f}s more" if until else ""
            err = f" last error: {r['last_error']}" if r.get("last_error") else ""
            lines.append(
                f"{r['name']}: {r['state']} failures={r.get('failures', 0)} "
                f"trips={r.get('trips', 0)}{window}{err}"
            )
        return "\n".join(lines)
