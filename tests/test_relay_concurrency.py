"""100 concurrent streams through mitmproxy and the relay, with faults drawn at random (seeded).

Every request names the fault its primary plays and the fault its fallback plays (the hops map
the client's model to a mock model with a ``~scenario`` suffix), so each answer has exactly one
right outcome: complete and valid, a real HTTP error, or a terminal error event. Whatever the
interleaving, no client may get a corrupted frame, a cut body or a second message_start.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import OPENAI_RESPONSES
from mitmllm.mock.upstream import MockUpstream
from tests.relayharness import CLIENT_MODEL
from tests.relayharness import FORMATS
from tests.relayharness import SUCCESS_TERMINATORS
from tests.relayharness import Raw
from tests.relayharness import dialect
from tests.relayharness import event_list
from tests.relayharness import failover_proxy
from tests.relayharness import request_body
from tests.relayharness import request_path
from tests.relayharness import starts
from tests.relayharness import until
from tests.relayharness import upstream
from tests.relayharness import write_config

STREAMS = 100
SEED = 20_240_521

#: Primary faults, by what the relay must make of them.
SERVES = ("healthy", "slow")
BEFORE_COMMIT = (
    "overloaded",
    "server-error",
    "json-error-200",
    "inband-error-first",
    "comment-only",
    "stall-before-first",
)
AFTER_COMMIT = ("stall-after-commit", "drop", "truncated", "inband-error")
CLIENT_FAULT = ("bad-request",)
PRIMARY_FAULTS = SERVES + BEFORE_COMMIT + AFTER_COMMIT + CLIENT_FAULT
#: Fallback faults (asked only after a primary failed before commit).
FALLBACK_FAULTS = ("healthy", "healthy", "healthy", "overloaded", "stall-before-first", "drop")
STALLS = ("stall-before-first", "stall-after-commit")
#: Faults after commit that a repair mends: an Anthropic stream truncated after message_delta.
MENDED = {("truncated", ANTHROPIC)}


@dataclass(frozen=True)
class Case:
    fmt: str
    primary: str
    fallback: str

    @property
    def model(self) -> str:
        return f"{CLIENT_MODEL[self.fmt]}.{self.primary}.{self.fallback}"

    @property
    def expected(self) -> str:
        """complete | error-event | http-error | client-error"""
        if self.primary in SERVES or (self.primary, self.fmt) in MENDED:
            return "complete"
        if self.primary in AFTER_COMMIT:
            return "error-event"
        if self.primary in CLIENT_FAULT:
            return "client-error"
        if self.fallback == "healthy":
            return "complete"
        return "error-event" if self.fallback == "drop" else "http-error"

    @property
    def reaches_fallback(self) -> bool:
        return self.primary in BEFORE_COMMIT


def cases() -> list[Case]:
    rng = random.Random(SEED)
    return [
        Case(rng.choice(FORMATS), rng.choice(PRIMARY_FAULTS), rng.choice(FALLBACK_FAULTS))
        for _ in range(STREAMS)
    ]


def chaos_config(primary: str, fallback: str) -> dict[str, Any]:
    """Per format a route primary -> fallback; each hop turns the client's model into the mock
    model that plays the fault the model names."""
    upstreams, routes = [], []
    for fmt in FORMATS:
        p, f = f"primary-{fmt}", f"fallback-{fmt}"
        upstreams += [upstream(p, primary, fmt), upstream(f, fallback, fmt)]
        routes.append(
            {
                "name": f"chaos-{fmt}",
                "chain": [
                    {"upstream": p, "models": {f"*.{s}.*": f"p~{s}" for s in PRIMARY_FAULTS}},
                    {"upstream": f, "models": {f"*.{s}": f"f~{s}" for s in FALLBACK_FAULTS}},
                ],
                # A hundred streams share one event loop with their proxy and upstreams: limits
                # far above what a healthy attempt takes there, even on two busy cores.
                "timeouts": {"first_event": "3s", "idle": "3s", "total": "40s"},
            }
        )
    # Breakers out of the way: every request must meet the faults it names.
    return {"upstreams": upstreams, "routes": routes, "breaker": {"failures": 1000}}


async def run(http: aiohttp.ClientSession, proxy_url: str, case: Case) -> Raw:
    fmt = case.fmt
    headers = {"x-mock-stall-ms": "8000", "x-mock-delay-ms": "20"}
    url = proxy_url + request_path(fmt, case.model)
    async with http.post(url, json=request_body(fmt, case.model), headers=headers) as resp:
        body = bytearray()
        cut = False
        try:
            async for data, _ in resp.content.iter_chunks():
                body += data
        except aiohttp.ClientPayloadError:
            cut = True
        return Raw(fmt, resp.status, resp.headers, bytes(body), cut)


def outcome(case: Case, raw: Raw) -> str:
    """What the client got, checked for well-formedness on the way."""
    assert not raw.cut, "every body ends properly, even a failed one"
    if raw.status != 200:
        error = dialect(case.fmt).error_of(raw.json())
        assert error, raw.body[:200]
        return "client-error" if raw.status == 400 else "http-error"
    events = event_list(raw.body)  # whole events only: no corrupted frame
    if case.fmt != GEMINI:
        assert starts(case.fmt, events) == 1, "exactly one message_start"
    checker = raw.check()
    findings = {f.rule for f in checker.findings if f.severity == "error"}
    assert not {r for r in findings if r.startswith(("SSE-", "PAY-"))}, findings
    v = checker.validator
    assert v is not None
    if v.error is None:
        assert v.complete and not findings, findings
        assert v.model == CLIENT_MODEL[case.fmt] + f".{case.primary}.{case.fallback}"
        return "complete"
    last = next(ev for ev in reversed(events) if ev.data not in (None, "[DONE]"))
    assert dialect(case.fmt).error_of(orjson.loads(last.data or "")), "ends on the error"
    if case.fmt in (ANTHROPIC, OPENAI_RESPONSES):
        assert SUCCESS_TERMINATORS[case.fmt] not in raw.body
    elif case.fmt == OPENAI_CHAT and case.primary != "inband-error":
        assert b"[DONE]" not in raw.body  # only the upstream's own error chunk has one after it
    return "error-event"


async def test_100_concurrent_streams_with_random_faults(tmp_path: Path) -> None:
    todo = cases()
    assert {c.expected for c in todo} == {"complete", "error-event", "http-error", "client-error"}
    async with MockUpstream(name="primary") as primary, MockUpstream(name="fallback") as fallback:
        path = write_config(tmp_path, chaos_config(primary.url, fallback.url))
        async with failover_proxy(path, primary.url) as proxy:
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=90)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
                answers = await asyncio.gather(*(run(http, proxy.url, c) for c in todo))
            flows = await proxy.log.wait(STREAMS)

        # Every upstream request ended (none left open), the stalled ones closed by the relay.
        def ended(up: MockUpstream) -> bool:
            return up.completed + up.cancelled + up.dropped == len(up.received)

        await until(lambda: ended(primary) and ended(fallback), what="every upstream to end")
        assert primary.cancelled >= sum(c.primary in STALLS for c in todo)
        assert fallback.cancelled >= sum(
            c.reaches_fallback and c.fallback == "stall-before-first" for c in todo
        )

    got = [outcome(c, a) for c, a in zip(todo, answers, strict=True)]
    wrong = [(c, g) for c, g in zip(todo, got, strict=True) if g != c.expected]
    assert wrong == []
    # The upstreams saw exactly the attempts the faults call for, with the mapped models.
    assert len(primary.received) == STREAMS
    assert len(fallback.received) == sum(c.reaches_fallback for c in todo)
    assert sorted(r.scenario or "" for r in primary.received) == sorted(c.primary for c in todo)
    assert sorted(r.scenario or "" for r in fallback.received) == sorted(
        c.fallback for c in todo if c.reaches_fallback
    )
    # mitmweb: each flow lists the attempts it took, one or two
    attempts = {c.model: 1 + c.reaches_fallback for c in todo}
    assert len(flows) == STREAMS
    for f in flows:
        assert len(f.metadata["mitmllm"]["attempts"]) == attempts[f.metadata["mitmllm"]["model"]]
    assert primary.dropped + fallback.dropped == sum(c.primary == "drop" for c in todo) + sum(
        c.reaches_fallback and c.fallback == "drop" for c in todo
    )
