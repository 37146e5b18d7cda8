"""Fail-over end to end: the official SDKs, a real in-process mitmproxy with mitmllm's addons, the
relay, and loopback upstreams that fail in every way the commit gate must absorb.

Each test checks both sides: what the client parsed (a complete answer from the fallback, a real
HTTP error when the whole chain failed, or a terminal error event after commit) and what the
upstreams saw (which were asked, with which model and credentials, and whether they were
closed). Most tests run all four wire formats side by side, one route per format, so their
timeouts overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from mitmllm.engine.breaker import Breakers
from mitmllm.engine.relay import TOKEN_HEADER
from mitmllm.glue.recorder import is_flagged
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import OPENAI_RESPONSES
from mitmllm.mock.scenarios import plan_request
from mitmllm.mock.upstream import MockUpstream
from mitmllm.protocol.stream import StreamChecker
from tests.proxyharness import Proxy
from tests.relayharness import CLIENT_KEY
from tests.relayharness import CLIENT_MODEL
from tests.relayharness import FALLBACK_MODEL
from tests.relayharness import FORMATS
from tests.relayharness import KEEPALIVE
from tests.relayharness import SHORT
from tests.relayharness import SUCCESS_TERMINATORS
from tests.relayharness import TEXT
from tests.relayharness import Backlogged
from tests.relayharness import Raw
from tests.relayharness import Reply
from tests.relayharness import ScriptedUpstream
from tests.relayharness import SilentUpstream
from tests.relayharness import ask
from tests.relayharness import ask_each
from tests.relayharness import auth_header
from tests.relayharness import closed_port
from tests.relayharness import config
from tests.relayharness import dialect
from tests.relayharness import event_list
from tests.relayharness import failover_of
from tests.relayharness import failover_proxy
from tests.relayharness import fallback_hop
from tests.relayharness import fallback_of
from tests.relayharness import flows_by_format
from tests.relayharness import healthy_stream
from tests.relayharness import keepalives
from tests.relayharness import lifecycle_head
from tests.relayharness import meta
from tests.relayharness import per_format
from tests.relayharness import post
from tests.relayharness import primary_of
from tests.relayharness import request_body
from tests.relayharness import request_path
from tests.relayharness import rules
from tests.relayharness import starts
from tests.relayharness import two_hops
from tests.relayharness import until
from tests.relayharness import upstream
from tests.relayharness import without_keepalives
from tests.relayharness import write_config

FAILOVER_MARK = ":arrows_counterclockwise:"
#: A stall far longer than any relay timeout: only the relay can end it.
STALL = {"x-mock-stall-ms": "5000"}


def overload_status(fmt: str) -> int:
    return 529 if fmt == ANTHROPIC else 503


@contextlib.contextmanager
def checking(fmt: str) -> Iterator[None]:
    """Name the format in a failure of the checks of one format among several."""
    try:
        yield
    except AssertionError as e:
        e.add_note(f"format: {fmt}")
        raise


# --- what each format's client shows --------------------------------------------------------


def error_kind(reply: Reply) -> str | None:
    """The error type in the format's error body the client parsed."""
    body = reply.body
    if reply.fmt == ANTHROPIC:
        return body["error"]["type"]
    if reply.fmt == GEMINI:
        return body["error"]["status"]
    return body.get("type") if isinstance(body, dict) else None


def assert_served_by_fallback(reply: Reply, fmt: str) -> None:
    assert reply.error is None, reply.error
    assert reply.text == TEXT
    assert reply.model == CLIENT_MODEL[fmt], "the client sees the model it asked for"
    assert reply.complete


def assert_client_stream_is_clean(fmt: str, body: bytes) -> None:
    """Whole events only, exactly one start, and a complete stream by the validator."""
    events = event_list(body)
    if fmt != GEMINI:
        assert starts(fmt, events) == 1, "never a second message_start"
    checker = StreamChecker(dialect(fmt))
    checker.feed(body)
    checker.close()
    assert checker.validator is not None and checker.validator.complete
    assert [f.rule for f in checker.findings if f.severity == "error"] == []


def assert_not_forwarded(headers: dict[str, str]) -> None:
    """The relay's token and private headers never reach an upstream."""
    assert TOKEN_HEADER not in headers
    assert not [k for k in headers if k.startswith("x-mitmllm-")]


def assert_fallback_saw(fallback: MockUpstream, fmt: str) -> None:
    (seen,) = [r for r in fallback.received if r.fmt == fmt]
    assert seen.model == FALLBACK_MODEL[fmt], "each hop gets its own model"
    assert seen.stream
    assert_not_forwarded(seen.headers)


def upstreams_command(proxy: Proxy) -> dict[str, str]:
    """`mitmllm.upstreams` as mitmproxy runs it, one line per upstream by name."""
    out = proxy.master.commands.call("mitmllm.upstreams")
    return {line.split(":", 1)[0]: line for line in out.splitlines()}


# --- failures before commit: the fallback serves ------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """One way a primary fails before commit, and what the relay calls it."""

    name: str
    outcome: str  # the attempt's outcome ({status}: the format's overload status)
    scenario: str | None = None  # the mock scenario, when the mock plays the primary
    formats: tuple[str, ...] = FORMATS

    def outcome_for(self, fmt: str) -> str:
        return self.outcome.format(status=overload_status(fmt))


TRIGGERS = (
    Trigger("connect-error", "connect_error"),
    Trigger("connect-timeout", "connect_timeout"),
    Trigger("no-response", "header_timeout"),
    Trigger("server-error", "http_500", "server-error"),
    Trigger("overloaded", "http_{status}", "overloaded"),
    Trigger("request-timeout-408", "http_408"),
    Trigger("rate-limited", "http_429", "rate-limited"),
    Trigger("json-error-200", "error_in_200", "json-error-200"),
    Trigger("inband-error-first", "inband_error", "inband-error-first"),
    Trigger("comment-only", "empty", "comment-only"),
    Trigger("done-only", "empty", "done-only", formats=(OPENAI_CHAT,)),
    Trigger("stall-before-first", "first_event_timeout", "stall-before-first"),
)
TIMEOUT_408 = b'{"error": {"message": "request timed out upstream", "type": "timeout_error"}}'


@dataclass
class Primary:
    """The failing primary of a trigger, and what it can tell about what reached it."""

    url: str
    mock: MockUpstream | None = None
    scripted: ScriptedUpstream | None = None
    silent: SilentUpstream | None = None

    def requests(self, fmt: str) -> list[dict[str, str]] | None:
        """Headers of each request of `fmt` that reached it (None: it cannot tell)."""
        if self.mock is not None:
            return [r.headers for r in self.mock.received if r.fmt == fmt]
        if self.scripted is not None:
            return [r.headers for r in self.scripted.received if r.fmt == fmt]
        return None


@contextlib.asynccontextmanager
async def primary_for(trigger: Trigger) -> AsyncIterator[Primary]:
    if trigger.scenario is not None:
        async with MockUpstream(default_scenario=trigger.scenario) as mock:
            yield Primary(mock.url, mock=mock)
    elif trigger.name == "connect-error":
        yield Primary(f"http://127.0.0.1:{closed_port()}")
    elif trigger.name == "connect-timeout":
        with Backlogged() as backlogged:
            yield Primary(backlogged.url)
    elif trigger.name == "no-response":
        async with SilentUpstream() as silent:
            yield Primary(silent.url, silent=silent)
    else:
        json = {"content-type": "application/json"}
        async with ScriptedUpstream(408, json, [(0, TIMEOUT_408)]) as scripted:
            yield Primary(scripted.url, scripted=scripted)


@pytest.mark.parametrize("trigger", TRIGGERS, ids=[t.name for t in TRIGGERS])
async def test_RLY_1_failure_before_commit_falls_back(tmp_path: Path, trigger: Trigger) -> None:
    formats = trigger.formats
    async with primary_for(trigger) as primary, MockUpstream() as fallback:
        async with two_hops(
            tmp_path, primary.url, fallback.url, formats=formats, timeouts=SHORT
        ) as proxy:
            replies = await ask_each(proxy, formats, headers=STALL)
            flows = await flows_by_format(proxy, len(formats))
            breakers = failover_of(proxy).breakers
        silent = primary.silent
        if silent is not None:
            assert silent.connections == len(formats)
            assert b"x-mitmllm" not in silent.received.lower()
            await until(lambda: silent.closed_by_peer == len(formats), what="the relay's hang-up")
    for fmt in formats:
        with checking(fmt):
            check_fell_back(trigger, fmt, replies[fmt], flows[fmt], primary, fallback, breakers)


def check_fell_back(
    trigger: Trigger,
    fmt: str,
    reply: Reply,
    flow: Any,
    primary: Primary,
    fallback: MockUpstream,
    breakers: Breakers,
) -> None:
    # the client: one complete answer from the fallback, under its own model name
    assert_served_by_fallback(reply, fmt)
    assert_client_stream_is_clean(fmt, flow.response.raw_content)

    # the upstreams: the primary was asked once, the fallback once with its own model
    assert_fallback_saw(fallback, fmt)
    seen = primary.requests(fmt)
    if seen is not None:
        assert len(seen) == 1
        assert_not_forwarded(seen[0])
    if primary.mock is not None:
        assert [r.model for r in primary.mock.received if r.fmt == fmt] == [CLIENT_MODEL[fmt]]

    # mitmweb: the flow shows the upstream that served it, its attempts and a marker
    m = meta(flow)
    assert flow.request.url.startswith(fallback.url)
    assert TOKEN_HEADER not in flow.request.headers
    first, second = m["attempts"]
    assert first["upstream"] == primary_of(fmt), first
    assert first["outcome"] == trigger.outcome_for(fmt), first
    assert first["duration_ms"] >= 0 and not first["committed"]
    assert first.get("status") or first.get("error")
    assert second["upstream"] == fallback_of(fmt) and second["outcome"] == "ok"
    assert second["status"] == 200 and second["committed"]
    assert second["ttfe_ms"] >= 0 and second["duration_ms"] >= second["ttfe_ms"]
    assert m["relay"] == "ok" and m["upstream"] == fallback_of(fmt) and m["fell_back"] is True
    assert m["complete"] is True
    assert rules(flow) == {"RLY-1"}
    assert flow.marked == FAILOVER_MARK

    # the breaker counted one retryable failure; a 429 opens it for its retry-after
    breaker = breakers[primary_of(fmt)]
    assert breaker.failures == 1
    if trigger.name == "rate-limited":
        assert first["retry_after"] == 2
        remaining = breaker.remaining()
        assert remaining is not None and 1 < remaining <= 2
    else:
        assert breaker.state == "closed"
    assert breakers[fallback_of(fmt)].failures == 0


# --- the whole chain fails before commit: a real HTTP error -------------------------------------


@dataclass(frozen=True)
class ChainFailure:
    trigger: str
    status: int  # 0: the format's overload status
    kind: dict[str, str]  # format -> error type in the body (Gemini: its google.rpc status)
    retry_after: str | None = None


def kinds(openai_and_anthropic: str, gemini: str) -> dict[str, str]:
    return dict.fromkeys(FORMATS, openai_and_anthropic) | {GEMINI: gemini}


CHAIN_FAILURES = (
    ChainFailure("overloaded", 0, kinds("overloaded_error", "UNAVAILABLE")),
    ChainFailure(
        "rate-limited", 429, kinds("rate_limit_error", "RESOURCE_EXHAUSTED"), retry_after="2"
    ),
    ChainFailure("connect-error", 502, kinds("api_error", "UNAVAILABLE")),
    ChainFailure("stall-before-first", 504, kinds("timeout_error", "DEADLINE_EXCEEDED")),
)


@pytest.mark.parametrize("case", CHAIN_FAILURES, ids=[c.trigger for c in CHAIN_FAILURES])
async def test_RLY_2_whole_chain_failed_is_a_real_http_error(
    tmp_path: Path, case: ChainFailure
) -> None:
    trigger = next(t for t in TRIGGERS if t.name == case.trigger)
    async with primary_for(trigger) as primary, primary_for(trigger) as fallback:
        async with two_hops(tmp_path, primary.url, fallback.url, timeouts=SHORT) as proxy:
            replies = await ask_each(proxy, headers=STALL)
            flows = await flows_by_format(proxy, len(FORMATS))

    for fmt in FORMATS:
        with checking(fmt):
            # the client: the real status in its format's error body, retry-after where known
            reply = replies[fmt]
            assert reply.status == (case.status or overload_status(fmt)), reply.error
            assert error_kind(reply) == case.kind[fmt]
            assert "every upstream failed" in reply.error_text
            assert reply.headers.get("retry-after") == case.retry_after
            assert reply.text == ""

            # the upstreams: each was tried once (when it can tell), in chain order
            if primary.mock is not None and fallback.mock is not None:
                p = [r.model for r in primary.mock.received if r.fmt == fmt]
                f = [r.model for r in fallback.mock.received if r.fmt == fmt]
                assert (p, f) == ([CLIENT_MODEL[fmt]], [FALLBACK_MODEL[fmt]])

            flow = flows[fmt]
            m = meta(flow)
            assert [a["upstream"] for a in m["attempts"]] == [primary_of(fmt), fallback_of(fmt)]
            assert all(a["outcome"] != "ok" and not a["committed"] for a in m["attempts"])
            assert m["relay"] == "failed_before_commit" and "upstream" not in m
            assert "RLY-2" in rules(flow) and flow.marked == ":x:"
            assert flow.request.url.startswith(primary.url), "none served: the client's URL"


# --- failure after commit: a terminal error event, never a clean end ----------------------------

#: After commit the relay hands each chunk on from the upstream connection's callbacks; read in
#: its task instead (the fallback when aiohttp's reader cannot be hooked), the outcomes are the
#: same. The tests of the committed phase run both ways.
BOTH_WAYS = pytest.mark.parametrize("callbacks", [True, False], ids=["pumped", "awaited"])


AFTER_COMMIT = {
    "stall-after-commit": "stall_after_commit",
    "drop": "failed_after_commit",
    "truncated": "failed_after_commit",
}


def success_terminated(fmt: str, body: bytes) -> bool:
    if fmt == GEMINI:
        return b"finishReason" in body
    return SUCCESS_TERMINATORS[fmt] in body


@BOTH_WAYS
@pytest.mark.parametrize("scenario", list(AFTER_COMMIT))
async def test_RLY_3_failure_after_commit_ends_with_an_error_event(
    tmp_path: Path, scenario: str, callbacks: bool
) -> None:
    async with MockUpstream(default_scenario=scenario) as primary, MockUpstream() as fallback:
        async with two_hops(
            tmp_path, primary.url, fallback.url, callbacks=callbacks, timeouts=SHORT
        ) as proxy:
            replies = await ask_each(proxy, headers=STALL)
            flows = await flows_by_format(proxy, len(FORMATS))
            breakers = failover_of(proxy).breakers
            pumped = failover_of(proxy).relay.pumped
        if scenario == "stall-after-commit":
            # the stall came after commit: the pump's timer found it (the others end in one read)
            assert pumped == (len(FORMATS) if callbacks else 0)
            await until(lambda: primary.cancelled == len(FORMATS), what="the primary's close")

    # committed to the primary, so the fallback is never asked
    assert len(primary.received) == len(FORMATS) and fallback.received == []
    for fmt in FORMATS:
        if (scenario, fmt) == ("truncated", ANTHROPIC):
            continue  # only message_stop is missing: mended (tests/test_repair_through_proxy.py)
        with checking(fmt):
            # the client raised after part of the answer; the stream never looked complete
            reply = replies[fmt]
            assert reply.error is not None and not reply.complete
            assert reply.text and TEXT.startswith(reply.text)
            if scenario != "truncated":  # cut before its terminator only
                assert reply.text != TEXT
            body = flows[fmt].response.raw_content
            events = event_list(body)
            last = events[-1]
            assert last.data is not None and dialect(fmt).error_of(orjson.loads(last.data))
            assert not success_terminated(fmt, body), "no success terminator after a failure"
            if fmt != GEMINI:
                assert starts(fmt, events) == 1

            m = meta(flows[fmt])
            (attempt,) = m["attempts"]
            assert attempt["outcome"] == AFTER_COMMIT[scenario] and attempt["committed"]
            assert attempt["error"]
            assert m["relay"] == "failed_after_commit" and "RLY-3" in rules(flows[fmt])
            assert flows[fmt].marked == ":x:"
            assert flows[fmt].request.url.startswith(primary.url)
            assert breakers[primary_of(fmt)].failures == 1, "a broken stream counts"


@BOTH_WAYS
async def test_inband_error_after_commit_is_passed_on_not_retried(
    tmp_path: Path, callbacks: bool
) -> None:
    async with MockUpstream(default_scenario="inband-error") as primary, MockUpstream() as fallback:
        async with two_hops(tmp_path, primary.url, fallback.url, callbacks=callbacks) as proxy:
            replies = await ask_each(proxy)
            flows = await flows_by_format(proxy, len(FORMATS))
    assert fallback.received == []
    for fmt in FORMATS:
        with checking(fmt):
            assert replies[fmt].error is not None
            assert replies[fmt].text and replies[fmt].text != TEXT
            assert meta(flows[fmt])["attempts"][0]["outcome"] == "inband_error_after_commit"
            assert "RLY-3" in rules(flows[fmt])


# --- other 4xx: the request's fault, returned as it is ------------------------------------------


async def test_other_4xx_is_returned_as_is_and_not_counted(tmp_path: Path) -> None:
    async with MockUpstream(default_scenario="bad-request") as primary, MockUpstream() as fallback:
        async with two_hops(tmp_path, primary.url, fallback.url) as proxy:
            replies = await ask_each(proxy)
            flows = await flows_by_format(proxy, len(FORMATS))
            breakers = failover_of(proxy).breakers
    assert len(primary.received) == len(FORMATS) and fallback.received == []
    for fmt in FORMATS:
        with checking(fmt):
            assert replies[fmt].status == 400
            assert "Invalid request (mock upstream)" in replies[fmt].error_text, "its own body"
            (attempt,) = meta(flows[fmt])["attempts"]
            assert attempt["outcome"] == "client_error" and attempt["status"] == 400
            breaker = breakers[primary_of(fmt)]
            assert breaker.failures == 0 and breaker.state == "closed"
            assert not rules(flows[fmt]) & {"RLY-1", "RLY-2", "RLY-3"}
            assert flows[fmt].request.url.startswith(primary.url)


async def test_404_is_returned_as_is(tmp_path: Path) -> None:
    fmt = OPENAI_CHAT
    body = dialect(fmt).error_body(404, "no such model", "invalid_request_error")
    json = {"content-type": "application/json"}
    async with ScriptedUpstream(404, json, [(0, body)]) as primary, MockUpstream() as fallback:
        async with two_hops(tmp_path, primary.url, fallback.url, formats=[fmt]) as proxy:
            reply = await ask(proxy.url, fmt)
            breaker = failover_of(proxy).breakers[primary_of(fmt)]
    assert reply.status == 404 and reply.body["message"] == "no such model"
    assert len(primary.received) == 1 and fallback.received == []
    assert breaker.failures == 0


# --- long streams -------------------------------------------------------------------------------


@BOTH_WAYS
async def test_long_stream_with_gaps_below_idle_is_never_cut(
    tmp_path: Path, callbacks: bool
) -> None:
    # 12 text deltas 40 ms apart: each stream outlasts the idle and first-event limits together.
    headers = {"x-mock-events": "12", "x-mock-delay-ms": "40"}
    words = "".join(f" word{i}" for i in range(12))
    async with MockUpstream(default_scenario="long") as primary, MockUpstream() as fallback:
        async with two_hops(
            tmp_path, primary.url, fallback.url, callbacks=callbacks, timeouts=SHORT
        ) as proxy:
            replies = await ask_each(proxy, headers=headers)
            flows = await flows_by_format(proxy, len(FORMATS))
            # The mock counts a stream as completed after its last write returns, which can be
            # after the client has read everything.
            await until(lambda: primary.completed == len(FORMATS), what="all streams completed")
    assert primary.cancelled == 0
    assert fallback.received == []
    for fmt in FORMATS:
        with checking(fmt):
            reply = replies[fmt]
            assert reply.error is None and reply.finish in ("end_turn", "stop", "completed", "STOP")
            assert reply.text == words
            (attempt,) = meta(flows[fmt])["attempts"]
            assert attempt["outcome"] == "ok"
            assert attempt["duration_ms"] > 400, "longer than idle and first event together"


# --- client cancellation ------------------------------------------------------------------------


async def read_a_little_then_leave(proxy: Proxy, fmt: str) -> tuple[int, bytes]:
    url = proxy.url + request_path(fmt)
    headers = STALL | auth_header(fmt, CLIENT_KEY)
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=request_body(fmt), headers=headers) as resp:
            return resp.status, await resp.content.readany()


@BOTH_WAYS
async def test_client_cancel_after_commit_closes_the_upstream(
    tmp_path: Path, callbacks: bool
) -> None:
    slow = {"idle": "10s"}
    async with MockUpstream(default_scenario="stall-after-commit") as primary:
        async with MockUpstream() as fallback:
            async with two_hops(
                tmp_path, primary.url, fallback.url, callbacks=callbacks, timeouts=slow
            ) as proxy:
                got = await asyncio.gather(
                    *(read_a_little_then_leave(proxy, fmt) for fmt in FORMATS)
                )
                # the clients are gone: the relay must close the stalled primary at once
                await until(lambda: primary.cancelled == len(FORMATS), what="the upstreams' close")
                flows = await flows_by_format(proxy, len(FORMATS))
                breakers = failover_of(proxy).breakers
    assert all(status == 200 and part for status, part in got), "committed: part of the answer"
    assert fallback.received == [], "a cancelled request is not retried elsewhere"
    for fmt in FORMATS:
        with checking(fmt):
            (attempt,) = meta(flows[fmt])["attempts"]
            assert attempt["outcome"] == "cancelled"
            assert meta(flows[fmt])["relay"] == "cancelled"
            for name in (primary_of(fmt), fallback_of(fmt)):
                assert breakers[name].failures == 0 and breakers[name].state == "closed"
                assert breakers[name].last_error is None


async def test_client_cancel_before_commit_stops_the_chain(tmp_path: Path) -> None:
    fmt = ANTHROPIC
    slow = {"first_event": "10s"}
    async with MockUpstream(default_scenario="stall-before-first") as primary:
        async with MockUpstream() as fallback:
            async with two_hops(
                tmp_path, primary.url, fallback.url, formats=[fmt], timeouts=slow
            ) as proxy:
                client = asyncio.create_task(post(proxy.url, fmt, headers=STALL))
                await until(lambda: len(primary.received) == 1, what="the primary to be asked")
                client.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await client
                await until(lambda: primary.cancelled == 1, what="the upstream to be closed")
                (flow,) = await proxy.log.wait(1)
                breaker = failover_of(proxy).breakers[primary_of(fmt)]
                relay = failover_of(proxy).relay
                await until(lambda: relay.active == 0, what="the relay to finish")
    assert fallback.received == []
    assert [a["outcome"] for a in meta(flow)["attempts"]] == ["cancelled"]
    assert meta(flow)["relay"] == "cancelled"
    assert breaker.failures == 0 and breaker.state == "closed"


# --- credentials --------------------------------------------------------------------------------


def credentials_in(headers: dict[str, str], query: dict[str, str]) -> set[str]:
    """Every credential value an upstream was sent."""
    values = {
        v.removeprefix("Bearer ")
        for k, v in headers.items()
        if k in ("authorization", "x-api-key", "api-key", "x-goog-api-key")
    }
    return values | {v for k, v in query.items() if k in ("key", "api_key")}


#: Where each format's upstream takes its key by default.
OWN_AUTH = {
    ANTHROPIC: "x-api-key",
    OPENAI_CHAT: "authorization",
    OPENAI_RESPONSES: "authorization",
    GEMINI: "x-goog-api-key",
}


async def test_client_credentials_never_reach_another_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MITMLLM_TEST_FALLBACK_KEY", "sk-fallback-own-key")
    async with MockUpstream(default_scenario="overloaded") as primary, MockUpstream() as fallback:
        other_host = f"http://localhost:{fallback.port}"  # this machine, another host name
        own_key = {"api_key_env": "MITMLLM_TEST_FALLBACK_KEY"}
        cfg = per_format(primary.url, other_host, fallback_extra=own_key)
        async with failover_proxy(write_config(tmp_path, cfg), primary.url) as proxy:
            raws = await asyncio.gather(
                *(
                    post(proxy.url, fmt, query={"key": CLIENT_KEY} if fmt == GEMINI else None)
                    for fmt in FORMATS
                )
            )
    for fmt, raw in zip(FORMATS, raws, strict=True):
        with checking(fmt):
            assert raw.status == 200 and raw.validator().complete
            (p,) = [r for r in primary.received if r.fmt == fmt]
            (f,) = [r for r in fallback.received if r.fmt == fmt]
            assert CLIENT_KEY in credentials_in(p.headers, p.query), "the addressed host's"
            assert credentials_in(f.headers, f.query) == {"sk-fallback-own-key"}
            assert "sk-fallback-own-key" in f.headers[OWN_AUTH[fmt]]
            assert CLIENT_KEY not in repr(f), "not in a header, the query or the body"


async def test_client_credentials_never_reach_another_port_of_the_same_host(
    tmp_path: Path,
) -> None:
    # Same host name, another port: another origin. The keyless fallback gets no credential.
    async with MockUpstream(default_scenario="overloaded") as primary, MockUpstream() as fallback:
        assert primary.url.split(":")[1] == fallback.url.split(":")[1]  # //127.0.0.1
        cfg = per_format(primary.url, fallback.url)
        async with failover_proxy(write_config(tmp_path, cfg), primary.url) as proxy:
            raws = await asyncio.gather(
                *(
                    post(proxy.url, fmt, query={"key": CLIENT_KEY} if fmt == GEMINI else None)
                    for fmt in FORMATS
                )
            )
            # The Anthropic SDK with a bearer token, as the issue saw it.
            sdk = anthropic.AsyncAnthropic(auth_token=CLIENT_KEY, base_url=proxy.url, max_retries=0)
            message = await sdk.messages.create(
                model=CLIENT_MODEL[ANTHROPIC],
                max_tokens=20,
                messages=[{"role": "user", "content": "hi"}],
            )
            await sdk.close()
    assert message.content
    for fmt, raw in zip(FORMATS, raws, strict=True):
        with checking(fmt):
            assert raw.status == 200 and raw.validator().complete
            assert all(CLIENT_KEY in credentials_in(p.headers, p.query) for p in primary.received)
            for f in (r for r in fallback.received if r.fmt == fmt):
                assert credentials_in(f.headers, f.query) == set()
                assert CLIENT_KEY not in repr(f)
    assert len(fallback.received) == len(FORMATS) + 1


ECHO_KEY = "sk-primary-own-key-echoed"


async def test_keys_an_upstream_echoes_are_masked_everywhere_mitmllm_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An upstream that repeats the keys it was sent in its error message: neither the client's
    # key nor the upstream's own may reach metadata, the comment, the log or a fixture.
    fmt = ANTHROPIC
    monkeypatch.setenv("MITMLLM_TEST_ECHO_KEY", ECHO_KEY)
    body = dialect(fmt).error_body(
        500, f"bad keys: x-api-key={ECHO_KEY} client={CLIENT_KEY}", "api_error"
    )
    json_headers = {"content-type": "application/json"}
    captures = tmp_path / "captures"
    async with ScriptedUpstream(500, json_headers, [(0, body)]) as echoing:
        async with MockUpstream() as fallback:
            cfg = config(
                [
                    upstream("primary", echoing.url, fmt, api_key_env="MITMLLM_TEST_ECHO_KEY"),
                    upstream("fallback", fallback.url, fmt),
                ],
                ["primary", "fallback"],
            )
            async with failover_proxy(
                write_config(tmp_path, cfg),
                echoing.url,
                mitmllm_capture="all",
                mitmllm_capture_dir=str(captures),
            ) as proxy:
                raw = await post(proxy.url, fmt)
                (flow,) = await proxy.log.wait(1)
    assert raw.status == 200
    (seen,) = echoing.received
    assert seen.headers["x-api-key"] == ECHO_KEY  # the upstream's own key went to it
    assert CLIENT_KEY not in repr(seen)
    first = meta(flow)["attempts"][0]
    assert first["outcome"] == "http_500" and "<redacted>" in first["error"]
    written = [p.read_text() for p in captures.rglob("*.json")]
    assert written, "the flow was recorded"
    for where, text in [
        ("metadata", orjson.dumps(flow.metadata).decode()),
        ("comment", flow.comment),
        ("log", caplog.text),
        ("fixture", "\n".join(written)),
    ]:
        assert ECHO_KEY not in text, where
        assert CLIENT_KEY not in text, where


async def test_each_upstream_gets_its_own_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MITMLLM_TEST_PRIMARY_KEY", "sk-primary-own-key")
    monkeypatch.setenv("MITMLLM_TEST_FALLBACK_KEY", "sk-fallback-own-key")
    async with MockUpstream(default_scenario="overloaded") as primary, MockUpstream() as fallback:
        cfg = per_format(
            primary.url,
            fallback.url,
            primary_extra={"api_key_env": "MITMLLM_TEST_PRIMARY_KEY"},
            fallback_extra={"api_key_env": "MITMLLM_TEST_FALLBACK_KEY"},
        )
        async with failover_proxy(write_config(tmp_path, cfg), primary.url) as proxy:
            replies = await ask_each(proxy)
    for fmt in FORMATS:
        with checking(fmt):
            assert_served_by_fallback(replies[fmt], fmt)
            (p,) = [r for r in primary.received if r.fmt == fmt]
            (f,) = [r for r in fallback.received if r.fmt == fmt]
            assert credentials_in(p.headers, p.query) == {"sk-primary-own-key"}
            assert credentials_in(f.headers, f.query) == {"sk-fallback-own-key"}
            assert "sk-primary-own-key" in p.headers[OWN_AUTH[fmt]]


@pytest.mark.parametrize("forward", [False, True], ids=["default", "forward_client_credentials"])
async def test_forward_client_credentials_only_when_configured(
    tmp_path: Path, forward: bool
) -> None:
    fmt = OPENAI_CHAT
    async with MockUpstream(default_scenario="overloaded") as primary, MockUpstream() as fallback:
        cfg = config(
            [
                upstream("primary", primary.url, fmt),
                upstream("fallback", f"http://localhost:{fallback.port}", fmt),
            ],
            ["primary", "fallback"],
            forward_client_credentials=forward,
        )
        async with failover_proxy(write_config(tmp_path, cfg), primary.url) as proxy:
            reply = await ask(proxy.url, fmt)
    assert reply.complete
    (f,) = fallback.received
    assert credentials_in(f.headers, f.query) == ({CLIENT_KEY} if forward else set())


async def test_missing_key_skips_the_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fmt = ANTHROPIC
    monkeypatch.delenv("MITMLLM_TEST_UNSET_KEY", raising=False)
    async with MockUpstream() as primary, MockUpstream() as fallback:
        cfg = config(
            [
                upstream("primary", primary.url, fmt, api_key_env="MITMLLM_TEST_UNSET_KEY"),
                upstream("fallback", fallback.url, fmt),
            ],
            ["primary", fallback_hop("fallback", fmt)],
        )
        async with failover_proxy(write_config(tmp_path, cfg), primary.url) as proxy:
            reply = await ask(proxy.url, fmt)
            (flow,) = await proxy.log.wait(1)
    assert_served_by_fallback(reply, fmt)
    assert primary.received == [], "never sent without its key (nor with the client's)"
    first = meta(flow)["attempts"][0]
    assert first["outcome"] == "no_credential" and "MITMLLM_TEST_UNSET_KEY" in first["error"]


# --- keep-alives and early commit ---------------------------------------------------------------


@BOTH_WAYS
async def test_keepalives_only_on_event_boundaries(tmp_path: Path, callbacks: bool) -> None:
    # A 250 ms pause after two content events, keep-alives every 40 ms: several are due.
    timeouts = {"idle": "3s", "keepalive": "40ms"}
    async with MockUpstream(default_scenario="stall-after-commit") as primary:
        async with MockUpstream() as fallback:
            async with two_hops(
                tmp_path, primary.url, fallback.url, callbacks=callbacks, timeouts=timeouts
            ) as proxy:
                replies = await ask_each(proxy, headers={"x-mock-stall-ms": "250"})
                flows = await flows_by_format(proxy, len(FORMATS))
    for fmt in FORMATS:
        with checking(fmt):
            assert replies[fmt].complete and replies[fmt].model == CLIENT_MODEL[fmt]
            (seen,) = [r for r in primary.received if r.fmt == fmt]
            sent = plan_request(
                seen.method,
                seen.path,
                seen.query,
                seen.headers,
                seen.body,
                default_scenario="stall-after-commit",
                ident=seen.ident,
            ).body()
            got = flows[fmt].response.raw_content
            events, upstream_events = event_list(got), event_list(sent)
            # Without the keep-alives, the client got the upstream's events byte for byte.
            assert without_keepalives(fmt, events) == without_keepalives(fmt, upstream_events)
            if fmt == GEMINI:
                assert got == sent, "Gemini clients get no keep-alives at all"
                continue
            added = keepalives(fmt, events) - keepalives(fmt, upstream_events)
            assert 3 <= added <= 12
            keepalive = KEEPALIVE[fmt]
            assert keepalive is not None
            assert got.index(keepalive * 2) > got.index(b"Hello"), "only after commit"


def keepalives_before_content(fmt: str, body: bytes) -> int:
    """How many keep-alives open the stream (Gemini: there must be no comment at all)."""
    keepalive = KEEPALIVE[fmt]
    if keepalive is None:
        assert all(ev.data is not None for ev in event_list(body)), "a comment in a Gemini stream"
        return 0
    count = 0
    for ev in event_list(body):
        if ev.raw != keepalive:
            break
        count += 1
    return count


async def test_early_commit_sends_headers_at_once_and_still_falls_back(tmp_path: Path) -> None:
    # The primary sends its lifecycle frames (message_start ...), then nothing: the first-event
    # timeout moves on. The client, which has headers already, gets keep-alives meanwhile, and
    # then the fallback's stream with its one message_start.
    timeouts = SHORT | {"keepalive": "40ms"}
    async with ScriptedUpstream(
        steps_for=lambda fmt: [(0, lifecycle_head(fmt or ""))], hold=True
    ) as primary:
        async with MockUpstream() as fallback:
            async with two_hops(
                tmp_path, primary.url, fallback.url, timeouts=timeouts, early_commit=True
            ) as proxy:
                replies = await ask_each(proxy)
                flows = await flows_by_format(proxy, len(FORMATS))
        await until(lambda: primary.cancelled == len(FORMATS), what="the primary's close")
    for fmt in FORMATS:
        with checking(fmt):
            flow = flows[fmt]
            assert_served_by_fallback(replies[fmt], fmt)
            assert flow.response.headers["x-mitmllm-attempts"] == "0", "before any attempt"
            got = flow.response.raw_content
            assert_client_stream_is_clean(fmt, got)
            ahead = keepalives_before_content(fmt, got)
            assert ahead == 0 if fmt == GEMINI else ahead >= 2
            outcomes = [a["outcome"] for a in meta(flow)["attempts"]]
            assert outcomes == ["first_event_timeout", "ok"]
            assert flow.request.url.startswith(fallback.url)
            assert rules(flow) == {"RLY-1"} and flow.marked == FAILOVER_MARK
    assert len(primary.received) == len(FORMATS) and len(fallback.received) == len(FORMATS)


async def test_early_commit_keeps_alive_while_an_upstream_does_not_answer(tmp_path: Path) -> None:
    timeouts = SHORT | {"keepalive": "40ms"}
    async with SilentUpstream() as primary, MockUpstream() as fallback:
        async with two_hops(
            tmp_path, primary.url, fallback.url, timeouts=timeouts, early_commit=True
        ) as proxy:
            replies = await ask_each(proxy)
            flows = await flows_by_format(proxy, len(FORMATS))
    for fmt in FORMATS:
        with checking(fmt):
            assert_served_by_fallback(replies[fmt], fmt)
            # No response head for connect + first event (400 ms): the client still hears.
            ahead = keepalives_before_content(fmt, flows[fmt].response.raw_content)
            assert ahead == 0 if fmt == GEMINI else ahead >= 4
            outcomes = [a["outcome"] for a in meta(flows[fmt])["attempts"]]
            assert outcomes == ["header_timeout", "ok"]


async def test_held_lifecycle_frames_of_a_failed_attempt_never_reach_the_client(
    tmp_path: Path,
) -> None:
    async with ScriptedUpstream(
        steps_for=lambda fmt: [(0, lifecycle_head(fmt or ""))], hold=True
    ) as primary:
        async with MockUpstream() as fallback:
            async with two_hops(tmp_path, primary.url, fallback.url, timeouts=SHORT) as proxy:
                replies = await ask_each(proxy)
                flows = await flows_by_format(proxy, len(FORMATS))
    for fmt in FORMATS:
        with checking(fmt):
            assert_served_by_fallback(replies[fmt], fmt)
            got = flows[fmt].response.raw_content
            assert_client_stream_is_clean(fmt, got)
            assert flows[fmt].response.headers["x-mitmllm-attempts"] == "2", "held to commit"
            head = lifecycle_head(fmt)
            assert not head or head not in got, "the failed attempt's start stayed held"


async def test_early_commit_whole_chain_failed_ends_with_an_error_event(tmp_path: Path) -> None:
    async with MockUpstream(default_scenario="overloaded") as primary:
        async with MockUpstream(default_scenario="overloaded") as fallback:
            async with two_hops(tmp_path, primary.url, fallback.url, early_commit=True) as proxy:
                replies = await ask_each(proxy)
                flows = await flows_by_format(proxy, len(FORMATS))
    for fmt in FORMATS:
        with checking(fmt):
            assert replies[fmt].error is not None
            assert "every upstream failed" in replies[fmt].error_text
            got = flows[fmt].response.raw_content
            (event,) = [ev for ev in event_list(got) if ev.raw != KEEPALIVE[fmt]]
            assert event.data and dialect(fmt).error_of(orjson.loads(event.data))
            assert not success_terminated(fmt, got)
            assert meta(flows[fmt])["relay"] == "failed_before_commit"
            assert "RLY-2" in rules(flows[fmt])


# --- circuit breakers ---------------------------------------------------------------------------


async def test_breaker_opens_on_retryable_failures_and_open_upstream_is_skipped(
    tmp_path: Path,
) -> None:
    fmt = ANTHROPIC
    p, f = primary_of(fmt), fallback_of(fmt)
    breaker = {"failures": 2, "open_for": "30s"}
    async with MockUpstream(default_scenario="server-error") as primary, MockUpstream() as fallback:
        async with two_hops(
            tmp_path, primary.url, fallback.url, formats=[fmt], breaker=breaker
        ) as proxy:
            assert "closed" in upstreams_command(proxy)[p]
            for _ in range(2):
                assert (await ask(proxy.url, fmt)).complete
            lines = upstreams_command(proxy)
            assert f"{p}: open failures=2 trips=1 open for" in lines[p]
            assert "last error: http_500" in lines[p]
            assert lines[f].startswith(f"{f}: closed failures=0")

            reply = await ask(proxy.url, fmt)
            flows = await proxy.log.wait(3)
    assert_served_by_fallback(reply, fmt)
    assert len(primary.received) == 2, "an open upstream is skipped"
    assert len(fallback.received) == 3
    skipped = meta(flows[2])
    assert [a["upstream"] for a in skipped["attempts"]] == [f]
    assert skipped["fell_back"] is True and flows[2].marked == FAILOVER_MARK


async def test_upstreams_command_prints_every_upstream(tmp_path: Path) -> None:
    async with MockUpstream() as primary, MockUpstream() as fallback:
        async with two_hops(tmp_path, primary.url, fallback.url) as proxy:
            lines = upstreams_command(proxy)
    names = [n for fmt in FORMATS for n in (primary_of(fmt), fallback_of(fmt))]
    assert sorted(lines) == sorted(names)
    assert all(f"{n}: closed failures=0 trips=0" == lines[n] for n in names)


async def test_breaker_ignores_client_errors(tmp_path: Path) -> None:
    fmt = OPENAI_CHAT
    breaker = {"failures": 1}
    async with MockUpstream(default_scenario="bad-request") as primary, MockUpstream() as fallback:
        async with two_hops(
            tmp_path, primary.url, fallback.url, formats=[fmt], breaker=breaker
        ) as proxy:
            for _ in range(3):
                assert (await ask(proxy.url, fmt)).status == 400
            line = upstreams_command(proxy)[primary_of(fmt)]
    assert len(primary.received) == 3 and fallback.received == []
    assert line.startswith(f"{primary_of(fmt)}: closed failures=0 trips=0")


async def test_last_remaining_upstream_is_always_tried(tmp_path: Path) -> None:
    fmt = ANTHROPIC
    breaker = {"failures": 1, "open_for": "30s"}
    async with MockUpstream(default_scenario="server-error") as primary:
        async with MockUpstream(default_scenario="server-error") as fallback:
            async with two_hops(
                tmp_path, primary.url, fallback.url, formats=[fmt], breaker=breaker
            ) as proxy:
                first = await ask(proxy.url, fmt)
                lines = upstreams_command(proxy)
                assert "open" in lines[primary_of(fmt)] and "open" in lines[fallback_of(fmt)]
                second = await ask(proxy.url, fmt)
                flows = await proxy.log.wait(2)
    assert first.status == 500 and second.status == 500, "a real attempt, not a made-up error"
    # Both open: the one whose window ends first (the primary, opened first) is tried anyway.
    assert len(primary.received) == 2 and len(fallback.received) == 1
    assert [a["upstream"] for a in meta(flows[1])["attempts"]] == [primary_of(fmt)]


async def test_success_closes_the_breaker(tmp_path: Path) -> None:
    fmt = OPENAI_RESPONSES
    breaker = {"failures": 1, "open_for": "200ms"}
    async with MockUpstream(default_scenario="overloaded") as primary, MockUpstream() as fallback:
        async with two_hops(
            tmp_path, primary.url, fallback.url, formats=[fmt], breaker=breaker
        ) as proxy:
            assert (await ask(proxy.url, fmt)).complete
            b = failover_of(proxy).breakers[primary_of(fmt)]
            assert b.state == "open"
            primary.default_scenario = "healthy"  # it recovers
            await until(lambda: b.remaining() is None, what="the open window to pass")
            assert "half_open" in upstreams_command(proxy)[primary_of(fmt)]
            reply = await ask(proxy.url, fmt)
            (_, flow) = await proxy.log.wait(2)
            line = upstreams_command(proxy)[primary_of(fmt)]
    assert reply.complete and reply.model == CLIENT_MODEL[fmt]
    assert len(primary.received) == 2 and len(fallback.received) == 1
    assert [a["upstream"] for a in meta(flow)["attempts"]] == [primary_of(fmt)]
    assert line.startswith(f"{primary_of(fmt)}: closed failures=0")


async def test_rate_limit_cooldown_skips_the_upstream_until_retry_after(tmp_path: Path) -> None:
    fmt = GEMINI
    async with MockUpstream(default_scenario="rate-limited") as primary, MockUpstream() as fallback:
        async with two_hops(tmp_path, primary.url, fallback.url, formats=[fmt]) as proxy:
            for _ in range(3):
                assert (await ask(proxy.url, fmt)).complete
            line = upstreams_command(proxy)[primary_of(fmt)]
    assert len(primary.received) == 1, "retry-after: 2 keeps it out of the next requests"
    assert len(fallback.received) == 3
    assert line.startswith(f"{primary_of(fmt)}: open failures=1 trips=0 open for")


async def test_retry_after_ms_is_honoured_too(tmp_path: Path) -> None:
    # OpenAI's own header; its SDK prefers it to retry-after.
    fmt = OPENAI_CHAT
    body = dialect(fmt).error_body(429, "slow down", "rate_limit_error")
    headers = {"content-type": "application/json", "retry-after-ms": "1500"}
    async with ScriptedUpstream(429, headers, [(0, body)]) as limited:
        async with two_hops(tmp_path, limited.url, limited.url, formats=[fmt]) as proxy:
            reply = await ask(proxy.url, fmt)
            (flow,) = await proxy.log.wait(1)
            breakers = failover_of(proxy).breakers
    assert reply.status == 429 and reply.headers["retry-after"] == "2"
    assert [a["retry_after"] for a in meta(flow)["attempts"]] == [1.5, 1.5]
    for name in (primary_of(fmt), fallback_of(fmt)):
        remaining = breakers[name].remaining()
        assert remaining is not None and 1 < remaining <= 1.5


async def test_a_failed_trial_waits_the_latest_retry_after_not_the_default(tmp_path: Path) -> None:
    fmt = OPENAI_CHAT
    body = dialect(fmt).error_body(429, "slow down", "rate_limit_error")
    headers = {"content-type": "application/json", "retry-after-ms": "300"}
    async with ScriptedUpstream(429, headers, [(0, body)]) as limited, MockUpstream() as fallback:
        async with two_hops(tmp_path, limited.url, fallback.url, formats=[fmt]) as proxy:
            breaker = failover_of(proxy).breakers[primary_of(fmt)]
            assert (await ask(proxy.url, fmt)).complete
            first = breaker.remaining()
            await until(lambda: breaker.remaining() is None, what="the retry-after to pass")
            assert (await ask(proxy.url, fmt)).complete  # the trial: 429, retry-after 300 ms again
            again = breaker.remaining()
    assert len(limited.received) == 2
    assert first is not None and 0 < first <= 0.3
    assert again is not None and 0 < again <= 0.3, "not the 30 s window of a trip"


# --- sticky sessions ----------------------------------------------------------------------------


async def test_sticky_session_stays_on_the_fallback_that_served_it(tmp_path: Path) -> None:
    fmt = ANTHROPIC
    sticky = {"key": "header:x-session-id", "ttl": "10m"}
    async with MockUpstream(default_scenario="overloaded") as primary, MockUpstream() as fallback:
        async with two_hops(
            tmp_path, primary.url, fallback.url, formats=[fmt], sticky=sticky
        ) as proxy:
            first = await ask(proxy.url, fmt, headers={"x-session-id": "conversation-a"})
            primary.default_scenario = "healthy"  # the primary recovers at once
            again = await ask(proxy.url, fmt, headers={"x-session-id": "conversation-a"})
            other = await ask(proxy.url, fmt, headers={"x-session-id": "conversation-b"})
            flows = await proxy.log.wait(3)
    assert first.complete and again.complete and other.complete
    assert [r.headers["x-session-id"] for r in primary.received] == [
        "conversation-a",  # failed: overloaded
        "conversation-b",  # a new conversation goes to the primary
    ]
    assert [r.headers["x-session-id"] for r in fallback.received] == [
        "conversation-a",
        "conversation-a",  # kept on the fallback (and its model) though the primary is back
    ]
    assert [r.model for r in fallback.received] == [FALLBACK_MODEL[fmt]] * 2
    assert [a["upstream"] for a in meta(flows[1])["attempts"]] == [fallback_of(fmt)]
    assert again.model == CLIENT_MODEL[fmt]


async def post_as(proxy: Proxy, fmt: str, user: str) -> Raw:
    async with aiohttp.ClientSession() as http:
        body = request_body(fmt) | {"user": user}
        async with http.post(proxy.url + request_path(fmt), json=body) as resp:
            data = await resp.read()
    return Raw(fmt, resp.status, resp.headers, data)


async def test_sticky_session_is_released_when_its_upstream_breaks(tmp_path: Path) -> None:
    fmt = OPENAI_CHAT
    sticky = {"key": "body:user"}
    async with MockUpstream(default_scenario="overloaded") as primary, MockUpstream() as fallback:
        async with two_hops(
            tmp_path, primary.url, fallback.url, formats=[fmt], sticky=sticky
        ) as proxy:
            assert (await post_as(proxy, fmt, "u1")).status == 200
            primary.default_scenario = "healthy"
            fallback.default_scenario = "drop"  # the pinned upstream breaks mid-stream
            broken = await post_as(proxy, fmt, "u1")
            fallback.default_scenario = "healthy"
            after = await post_as(proxy, fmt, "u1")
    assert broken.validator().error, "ended with a terminal error event"
    assert after.validator().complete
    assert [r.json["user"] for r in primary.received] == ["u1", "u1"], "back to the primary"
    assert [r.json["user"] for r in fallback.received] == ["u1", "u1"]


# --- how a routed flow ends -----------------------------------------------------------------------


def _read_chat_with_the_sync_sdk(base_url: str) -> str:
    """The OpenAI SDK's synchronous stream: it closes the connection as soon as [DONE] is in."""
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    try:
        stream = client.chat.completions.create(
            model=CLIENT_MODEL[OPENAI_CHAT],
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    finally:
        client.close()


async def test_a_client_that_closes_after_done_through_the_relay_got_a_complete_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The upstream keeps its body open after [DONE] (as a slow end of body would); the SDK
    closes its connection first. The client got the whole answer: no abort, nothing flagged."""
    done = [(0.0, healthy_stream(OPENAI_CHAT))]
    async with ScriptedUpstream(steps=done, hold=True) as held:
        cfg = config([upstream("held", held.url, OPENAI_CHAT)], ["held"])
        async with failover_proxy(write_config(tmp_path, cfg), held.url) as proxy:
            with caplog.at_level(logging.INFO):
                text = await asyncio.to_thread(_read_chat_with_the_sync_sdk, proxy.url)
                (flow,) = await proxy.log.wait(1)
    assert text
    m = meta(flow)
    assert flow.error is not None, "precondition: the client closed before the end of body"
    assert m["end"] == "complete" and m["complete"] is True, m
    assert m["findings"] == [] and not flow.marked
    assert not is_flagged(flow), "capture=flagged would keep a healthy flow as a fixture"
    assert "ABORTED" not in caplog.text
    (attempt,) = m["attempts"]
    assert attempt["outcome"] == "ok" and m["relay"] == "ok", "served, not cancelled"


async def test_a_client_that_leaves_a_routed_stream_is_a_client_disconnect(
    tmp_path: Path,
) -> None:
    async with MockUpstream(name="primary") as primary, MockUpstream(name="fallback") as fallback:
        async with two_hops(tmp_path, primary.url, fallback.url, formats=[ANTHROPIC]) as proxy:
            headers = {"x-mock-scenario": "slow", "x-mock-delay-ms": "50"}
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    proxy.url + request_path(ANTHROPIC),
                    json=request_body(ANTHROPIC),
                    headers=headers,
                ) as resp:
                    assert resp.status == 200
                    assert await resp.content.readany()
                    resp.close()  # stop reading mid-stream
            (flow,) = await proxy.log.wait(1)
    m = meta(flow)
    assert m["end"] == "client_disconnect", m
    assert m["relay"] == "cancelled" and m["attempts"][-1]["outcome"] == "cancelled"
    assert not any(f["severity"] == "error" for f in m["findings"]), m["findings"]
    assert not flow.marked and not is_flagged(flow)


# --- splices: a fallback's answer differs from its bytes in the model value only -----------------

# The big integers sit where no rule asks for an integer: beyond 64 bits the parser gives a float,
# so in input_tokens or output_tokens ANT-6 / ANT-16 would fail the attempt at the commit gate.

ANTHROPIC_BYTES = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",'
    b'"role":"assistant", "model" : "claude-fallback","content":[],"stop_reason":null,'
    b'"usage":{"input_tokens":12,"output_tokens":1,'
    b'"cache_read_input_tokens":123456789012345678901234567890}}}\n\n',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
    b'{"type":"text_delta","text":"\\u2028 \\u003c \\u00e9 \\ud83d\\ude00 \\/ caf\xc3\xa9"}}\n\n',
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":3,"cache_read_input_tokens":123456789012345678901234567890}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]


async def test_fallback_answer_and_request_change_only_the_model_bytes(tmp_path: Path) -> None:
    fmt = ANTHROPIC
    body = (
        b'{"model" : "claude-sonnet-4-6", "max_tokens": 64, "stream": true, "messages": [{"role"'
        b': "user", "content": "\\/ \\u00e9 \\ud83d\\ude00 \\u2028"}], "metadata": {"n":'
        b" 123456789012345678901234567890}}"
    )
    steps = [(0.0, c) for c in ANTHROPIC_BYTES]
    async with MockUpstream(default_scenario="overloaded") as primary:
        async with ScriptedUpstream(steps=steps) as fallback:
            cfg = config(
                [upstream("primary", primary.url, fmt), upstream("fallback", fallback.url, fmt)],
                ["primary", fallback_hop("fallback", fmt)],
            )
            async with failover_proxy(write_config(tmp_path, cfg), primary.url) as proxy:
                async with aiohttp.ClientSession(auto_decompress=False) as http:
                    url = proxy.url + request_path(fmt)
                    headers = auth_header(fmt, CLIENT_KEY) | {"content-type": "application/json"}
                    async with http.post(url, data=body, headers=headers) as resp:
                        got = await resp.read()
    assert resp.status == 200
    sent = b"".join(ANTHROPIC_BYTES)
    assert got == sent.replace(b'"claude-fallback"', b'"claude-sonnet-4-6"')
    (seen,) = fallback.received
    assert seen.body == body.replace(b'"claude-sonnet-4-6"', b'"claude-fallback"')
