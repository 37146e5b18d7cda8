"""Section `soak`: many concurrent streams through the relay, with faults drawn at random.

One in-process mitmproxy with mitmllm's addons, two mock upstreams, and one route per fault: its
chain is a primary that answers with that fault (the mock's scenario, chosen by the base URL)
and a healthy fallback, with sticky sessions on. Each stream asks one route (drawn with a fixed
seed), a share of the clients go away after a random number of bytes, and all of them run at
once. Afterwards every answer is compared with what the upstreams sent, which the mock's plans
reproduce byte for byte from the requests they recorded. Routes repair streams before the commit
gate (`mitmllm.protocol.repair`), so what the client may get of an upstream's bytes is those bytes
or what the repair stage makes of them, which the same protocol core computes offline:

* corrupted frames: events the client got that are neither an upstream's event, byte for byte,
  nor a repaired one, nor one mitmllm writes itself (a keep-alive, the terminal error event) on
  an event boundary;
* duplicate ``message_start``: answers with two, where the upstream that served sent one; and
  the upstream's own second ``message_start`` that reached the client (the repair drops it);
* lost bytes on healthy streams: for every answer the relay served in full, the upstream's
  bytes (repaired) the client did not get;
* state: no relay request or token left over, every breaker consistent with what its upstream
  did (a fallback that never failed is closed; an upstream that never failed has no failure), and
  every sticky session on an upstream that served that session.

`run_soak` is the whole procedure; the test suite runs it small and seeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from mitmproxy import http
from mitmproxy import options
from mitmproxy.tools.dump import DumpMaster

from mitmllm.bench.report import Report
from mitmllm.bench.report import at_most
from mitmllm.bench.report import mark
from mitmllm.engine.pipeline import Pipeline
from mitmllm.engine.relay import UPSTREAM_HEADER
from mitmllm.engine.sticky import session_key
from mitmllm.glue.addons import all_addons
from mitmllm.glue.failover import Failover
from mitmllm.mock.scenarios import HEADER_BIG_BYTES
from mitmllm.mock.scenarios import HEADER_STALL
from mitmllm.mock.scenarios import Action
from mitmllm.mock.scenarios import plan_request
from mitmllm.mock.upstream import MockUpstream
from mitmllm.mock.upstream import ReceivedRequest
from mitmllm.protocol import detect
from mitmllm.protocol.repair import Repairer
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import decode_all
from mitmllm.protocol.stream import StreamChecker

SECTION = "soak"
FALLBACK = "fallback"
#: The faults a primary answers with: every scenario of the mock that applies to a stream.
FAULTS: tuple[str, ...] = (
    "healthy",
    "thinking",
    "tool",
    "parallel-tools",
    "keepalive-mid-event",
    "keepalive-mid-data",
    "tool-index-1",
    "double-start",
    "comment-only",
    "done-only",
    "truncated",
    "json-error-200",
    "inband-error",
    "inband-error-first",
    "split-utf8",
    "crlf",
    "no-final-blank",
    "big-event",
    "overloaded",
    "rate-limited",
    "server-error",
    "request-timeout",
    "bad-request",
    "stall-before-first",
    "stall-after-commit",
    "slow",
    "drop",
    "long",
)
TIMEOUTS = {"connect": "5s", "first_event": "3s", "idle": "2s", "total": "60s", "keepalive": "60s"}
#: How long the mock's stalls last: past every timeout above.
STALL_MS = 8000
#: Attempt outcomes that are not an upstream's failure.
NOT_FAILED = frozenset({"ok", "pending", "client_error", "cancelled"})
STICKY_KEY = "header:x-session-id"
#: Seconds the whole soak may take before it is a hang.
DEADLINE = 300.0
SESSIONS = 4  # sticky sessions per route


@dataclass(frozen=True, slots=True)
class SoakSizes:
    streams: int
    seed: int = 1
    disconnect_share: float = 0.15


@dataclass(frozen=True, slots=True)
class Case:
    n: int
    fault: str
    session: str
    leave_after: int | None  # bytes after which the client goes away (None: reads it all)


@dataclass
class Answer:
    case: Case
    status: int = 0
    body: bytes = b""
    served_by: str | None = None
    left: bool = False
    error: str | None = None


@dataclass
class SoakResult:
    streams: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    corrupted_frames: int = 0
    duplicate_starts: int = 0  # made by mitmllm
    passed_on_starts: int = 0  # the upstream's own second message_start, passed on
    healthy: int = 0
    repaired: int = 0  # of the healthy: served as the repair stage mended them
    lost_bytes: int = 0
    disconnects: int = 0
    problems: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # answers of no known shape (fault, server)

    @property
    def clean(self) -> bool:
        return not (
            self.corrupted_frames or self.duplicate_starts or self.lost_bytes or self.problems
        )


def draw(sizes: SoakSizes) -> list[Case]:
    rng = random.Random(sizes.seed)
    out = []
    for n in range(sizes.streams):
        fault = FAULTS[n] if n < len(FAULTS) else rng.choice(FAULTS)  # every fault at least once
        leave = rng.randrange(1, 3000) if rng.random() < sizes.disconnect_share else None
        out.append(Case(n, fault, f"s{rng.randrange(SESSIONS)}", leave))
    return out


def config(primary: MockUpstream, fallback: MockUpstream) -> dict[str, Any]:
    upstreams: list[dict[str, Any]] = [
        {"name": FALLBACK, "base_url": fallback.url, "format": "anthropic", "auth": "none"}
    ]
    routes = []
    for fault in FAULTS:
        upstreams.append(
            {
                "name": f"primary-{fault}",
                "base_url": primary.url_for(fault),
                "format": "anthropic",
                "auth": "none",
            }
        )
        routes.append(
            {
                "name": f"soak-{fault}",
                "match": {"model": f"soak-{fault}"},
                "chain": [{"upstream": f"primary-{fault}"}, {"upstream": FALLBACK}],
                "timeouts": dict(TIMEOUTS),
                "sticky": {"key": STICKY_KEY, "ttl": "10m"},
            }
        )
    return {"version": 1, "upstreams": upstreams, "routes": routes}


# --- an in-process mitmproxy ----------------------------------------------------------------------


class _Flows:
    """Collects finished flows (after mitmllm's addons)."""

    def __init__(self) -> None:
        self.flows: list[http.HTTPFlow] = []
        self.changed = asyncio.Event()

    def response(self, flow: http.HTTPFlow) -> None:
        self.flows.append(flow)
        self.changed.set()

    error = response


@contextlib.asynccontextmanager
async def proxy(config_path: Path, target: str) -> AsyncIterator[tuple[DumpMaster, int, _Flows]]:
    master = DumpMaster(options.Options(), with_termlog=False, with_dumper=False)
    master.addons.remove(master.addons.get("errorcheck"))
    flows = _Flows()
    chain = master.addons.chain
    at = chain.index(master.addons.get("save"))
    for addon in reversed([*all_addons(), flows]):  # where a -s script's addons sit
        master.addons.register(addon)
        chain.insert(at, addon)
    master.options.update(
        listen_host="127.0.0.1",
        listen_port=0,
        mode=[f"reverse:{target}"],
        connection_strategy="lazy",
        mitmllm_config=str(config_path),
        mitmllm_summary=False,
    )
    task = asyncio.create_task(master.run())
    ps = master.addons.get("proxyserver")
    for _ in range(1000):
        if ps.is_running and ps.listen_addrs():
            break
        await asyncio.sleep(0.01)
    else:
        raise RuntimeError("the soak's proxy did not start listening")
    try:
        yield master, ps.listen_addrs()[0][1], flows
    finally:
        failover = master.addons.get("failover")
        if isinstance(failover, Failover):
            await failover.relay.stop()
        master.shutdown()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)


# --- the clients ----------------------------------------------------------------------------------


async def ask(http_: aiohttp.ClientSession, port: int, case: Case) -> Answer:
    body = {
        "model": f"soak-{case.fault}",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": f"soak {case.n}"}],
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
    }
    headers = {
        "content-type": "application/json",
        "x-api-key": "sk-soak-client",
        "x-session-id": case.session,
        "x-soak-id": str(case.n),
        HEADER_STALL: str(STALL_MS),
        HEADER_BIG_BYTES: "262144",
    }
    answer = Answer(case)
    try:
        async with http_.post(
            f"http://127.0.0.1:{port}/v1/messages", data=orjson.dumps(body), headers=headers
        ) as resp:
            answer.status = resp.status
            answer.served_by = resp.headers.get(UPSTREAM_HEADER)
            got = bytearray()
            async for piece in resp.content.iter_any():
                got += piece
                if case.leave_after is not None and len(got) >= case.leave_after:
                    answer.left = True
                    resp.close()  # the client goes away mid-answer
                    break
            answer.body = bytes(got)
    except aiohttp.ClientError as e:
        answer.error = f"{type(e).__name__}: {e}"
    return answer


# --- the checks -----------------------------------------------------------------------------------

ANTHROPIC = detect.by_name("anthropic")


def sent_by(up: MockUpstream, r: ReceivedRequest) -> bytes:
    """The bytes `up` wrote for request `r` (its plan, reproduced from the request)."""
    plan = plan_request(
        r.method,
        r.path,
        r.query,
        r.headers,
        r.body,
        default_scenario=up.default_scenario,
        ident=r.ident,
    )
    out = bytearray()
    for step in plan.steps:
        if step.action is Action.DROP:
            break
        out += step.data
    return bytes(out)


def repaired(upstream: bytes, request: Any) -> bytes:
    """What the relay's repair stage makes of an upstream's bytes: its whole events (the relay
    never passes on an unterminated tail)."""
    up, client = (
        StreamChecker(ANTHROPIC, request=request),
        StreamChecker(ANTHROPIC, request=request),
    )
    repairer = Repairer(ANTHROPIC, up.findings, request=request)
    pipeline = Pipeline(client, upstream=up, repairer=repairer)
    out = pipeline.feed(upstream) + pipeline.close()
    return out[: len(out) - len(pipeline.trailing)]


def _starts(events: list[Event]) -> int:
    return sum(1 for e in events if e.event == "message_start")


def check(
    answers: list[Answer], primary: MockUpstream, fallback: MockUpstream, result: SoakResult
) -> None:
    assert ANTHROPIC is not None
    keepalive = ANTHROPIC.keepalive()
    by_id: dict[int, list[tuple[MockUpstream, ReceivedRequest]]] = {}
    for up in (primary, fallback):
        for r in up.received:
            soak_id = r.headers.get("x-soak-id")
            if soak_id is not None:
                by_id.setdefault(int(soak_id), []).append((up, r))
    for a in answers:
        result.streams += 1
        if a.left:
            result.disconnects += 1
        if a.error is not None and not a.left:
            result.outcomes["client error"] += 1
            result.problems.append(f"stream {a.case.n} ({a.case.fault}): {a.error}")
            continue
        asked = by_id.get(a.case.n, [])
        if a.status != 200:
            result.outcomes[f"HTTP {a.status}"] += 1
            continue
        served = [(up, r) for up, r in asked if _name_of(up, r) == a.served_by]
        if not served:
            result.problems.append(
                f"stream {a.case.n} ({a.case.fault}): served by {a.served_by!r}, which has no "
                "record of it"
            )
            continue
        up, r = served[-1]
        upstream = sent_by(up, r)
        mended = repaired(upstream, r.json)
        up_events, up_tail = decode_all(upstream)
        mended_events, _ = decode_all(mended)
        known = {e.raw for e in up_events} | {e.raw for e in mended_events}
        if up_tail is not None:
            known.add(up_tail.raw)
        events, tail = decode_all(a.body)
        for ev in events:
            if ev.raw in known or ev.raw == keepalive or _is_error_event(ev):
                continue
            result.corrupted_frames += 1
        if tail is not None and not a.left and tail.raw not in known:
            result.corrupted_frames += 1  # an answer that ends inside an event mitmllm wrote
        starts = _starts(events)
        if starts > 1:
            if _starts(up_events) > 1:
                result.passed_on_starts += 1
            else:
                result.duplicate_starts += 1
        if a.left:
            result.outcomes["client went away"] += 1
            continue
        if a.body == upstream:
            result.outcomes["served whole"] += 1
            result.healthy += 1
            continue
        if a.body == mended:
            result.outcomes["served repaired"] += 1
            result.healthy += 1
            result.repaired += 1
            continue
        # Ended early by mitmllm (after commit): the upstream's events (or the repaired ones) up
        # to a point, then the terminal error event; whatever is missing is what a broken
        # upstream did not finish. (Keep-alives aside on both sides: the upstream may send the
        # very same ping.)
        body_events = [e for e in events if e.raw != keepalive]
        if body_events and _is_error_event(body_events[-1]):
            prefix = b"".join(e.raw for e in body_events[:-1])
            if any(
                b"".join(e.raw for e in sent if e.raw != keepalive).startswith(prefix)
                for sent in (up_events, mended_events)
            ):
                result.outcomes["ended with an error event"] += 1
                continue
        result.outcomes["other"] += 1
        result.others.append(f"{a.case.fault} via {a.served_by}")
        if up.default_scenario is None and a.served_by == FALLBACK:
            result.lost_bytes += max(0, len(mended) - len(a.body))
            result.problems.append(f"stream {a.case.n}: the healthy fallback's answer differs")


def _is_error_event(ev: Event) -> bool:
    """The terminal error event mitmllm writes: ``event: error`` with an error object."""
    if ev.event != "error" or ev.data is None:
        return False
    try:
        payload = orjson.loads(ev.data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(payload, dict) and payload.get("type") == "error"


def _name_of(up: MockUpstream, r: ReceivedRequest) -> str:
    if up.name == FALLBACK:
        return FALLBACK
    return f"primary-{r.scenario}"


def check_state(
    master: DumpMaster, flows: list[http.HTTPFlow], answers: list[Answer], result: SoakResult
) -> None:
    """Nothing left running, breakers that agree with the attempts, sticky sessions that agree
    with who served them."""
    failover = master.addons.get("failover")
    assert isinstance(failover, Failover)
    relay = failover.relay
    if relay.active:
        result.problems.append(f"{relay.active} relay requests still running")
    if relay._plans:
        result.problems.append(f"{len(relay._plans)} relay tokens never used nor revoked")
    failed: Counter[str] = Counter()
    for f in flows:
        meta = f.metadata.get("mitmllm") or {}
        for attempt in meta.get("attempts") or []:
            if attempt.get("outcome") not in NOT_FAILED:
                failed[attempt.get("upstream")] += 1
    for row in failover.breakers.snapshot():
        name, n = row["name"], failed[row["name"]]
        if row["failures"] > n or row["trips"] > n:
            result.problems.append(
                f"breaker {name} counts more than its {n} failed attempts: {row}"
            )
        if n == 0 and row["state"] != "closed":
            result.problems.append(f"breaker {name} is {row['state']} but never failed")
    keys = {s: session_key(STICKY_KEY, {"x-session-id": s}, None) for s in _sessions(answers)}
    served = {
        (f"soak-{a.case.fault}", keys[a.case.session], a.served_by)
        for a in answers
        if a.status == 200 and a.served_by
    }
    for route, sessions in failover.sticky.routes.items():
        for r, key, upstream in sessions.entries():
            if (r, key, upstream) not in served:
                result.problems.append(
                    f"sticky {route} -> {upstream}: it never served that session"
                )
            if upstream.startswith("primary-"):
                result.problems.append(f"sticky {route} -> {upstream}: the route's first hop")


def _sessions(answers: list[Answer]) -> set[str]:
    return {a.case.session for a in answers}


async def run_soak(sizes: SoakSizes) -> SoakResult:
    cases = draw(sizes)
    result = SoakResult()
    with tempfile.TemporaryDirectory(prefix="mitmllm-soak-") as tmp:
        async with MockUpstream(name="primary") as primary, MockUpstream(name=FALLBACK) as fallback:
            path = Path(tmp) / "soak.yaml"
            path.write_text(yaml.safe_dump(config(primary, fallback), sort_keys=False))
            async with proxy(path, primary.url) as (master, port, flows):
                timeout = aiohttp.ClientTimeout(total=DEADLINE)
                connector = aiohttp.TCPConnector(limit=0)
                async with aiohttp.ClientSession(
                    timeout=timeout, connector=connector, auto_decompress=False
                ) as http_:
                    answers = await asyncio.wait_for(
                        asyncio.gather(*(ask(http_, port, c) for c in cases)), DEADLINE
                    )
                async with asyncio.timeout(DEADLINE):
                    while len(flows.flows) < len(cases) or failover_busy(master):
                        flows.changed.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(flows.changed.wait(), 0.5)
                check(answers, primary, fallback, result)
                check_state(master, flows.flows, answers, result)
    return result


def failover_busy(master: DumpMaster) -> bool:
    failover = master.addons.get("failover")
    return isinstance(failover, Failover) and failover.relay.active > 0


def run(report: Report, sizes: SoakSizes) -> None:
    result = asyncio.run(run_soak(sizes))
    report.heading(
        f"soak: {sizes.streams} concurrent streams through the relay, faults drawn at random "
        f"(seed {sizes.seed})"
    )
    report.print(
        f"  {len(FAULTS)} faults of the mock upstream, each the primary of its own route with a "
        f"healthy fallback; {sizes.disconnect_share:.0%} of clients go away mid-answer"
    )
    figures = [
        report.add(SECTION, "corrupted frames", result.corrupted_frames, "", at_most(0)),
        report.add(SECTION, "duplicate message_start", result.duplicate_starts, "", at_most(0)),
        report.add(
            SECTION, "lost bytes on healthy streams", result.lost_bytes, "bytes", at_most(0)
        ),
        report.add(SECTION, "state problems afterwards", len(result.problems), "", at_most(0)),
    ]
    report.add(SECTION, "streams served whole", result.healthy, "")
    report.add(SECTION, "of them repaired", result.repaired, "")
    report.add(SECTION, "clients that went away", result.disconnects, "")
    report.add(SECTION, "upstream double starts passed on", result.passed_on_starts, "")
    for f in figures:
        report.print(f"  {f.name}: {mark(f)}")
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
    report.print(f"  outcomes: {outcomes}")
    report.print(f"  the upstream's own second message_start, passed on: {result.passed_on_starts}")
    for problem in result.problems[:20]:
        report.print(f"  problem: {problem}")
