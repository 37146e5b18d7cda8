"""The relay on its own: its one-time tokens, and the timers of one attempt.

These drive `Relay` directly over loopback HTTP, without mitmproxy (the fail-over tests run the
same relay behind a real proxy): a plan is issued, the request carries its token, and the
upstreams are the mock or scripted byte sequences.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import AsyncIterator
from collections.abc import Sequence

import aiohttp
import orjson
import pytest
import pytest_asyncio
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.bench.corpus import LIFECYCLE_EVENTS
from mitmllm.bench.corpus import proxy_events
from mitmllm.engine.pipeline import Pipeline
from mitmllm.engine.pump import Pump
from mitmllm.engine.relay import TOKEN_HEADER
from mitmllm.engine.relay import Hop
from mitmllm.engine.relay import Plan
from mitmllm.engine.relay import Relay
from mitmllm.engine.relay import Timeouts
from mitmllm.engine.relay import Upstream
from mitmllm.engine.relay import _Exchange
from mitmllm.engine.relay import _Stages
from mitmllm.engine.relay import origin_of
from mitmllm.engine.relay import redact_url
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import OPENAI_RESPONSES
from mitmllm.mock.upstream import MockUpstream
from mitmllm.protocol.repair import Repairer
from mitmllm.protocol.sse import decode_all
from mitmllm.protocol.sse import encode
from mitmllm.protocol.stream import StreamChecker
from tests.relayharness import Raw
from tests.relayharness import ScriptedUpstream
from tests.relayharness import dialect
from tests.relayharness import event_list
from tests.relayharness import healthy_stream
from tests.relayharness import lifecycle_head
from tests.relayharness import request_body
from tests.relayharness import request_path
from tests.relayharness import starts
from tests.relayharness import until


@pytest_asyncio.fixture(params=[True, False], ids=["pumped", "awaited"])
async def relay(request: pytest.FixtureRequest) -> AsyncIterator[Relay]:
    """A started relay; each test runs with committed streams handed on from the upstream
    connection's callbacks, and read in the request's task (`Relay.callbacks`)."""
    r = Relay(env={})
    r.callbacks = request.param
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


def plan(fmt: str, urls: Sequence[str], **timeouts: float) -> Plan:
    d = dialect(fmt)
    hops = [Hop(Upstream(f"up{i}", url, d)) for i, url in enumerate(urls)]
    return Plan(
        route="test",
        hops=hops,
        dialect=d,
        wants_stream=True,
        client_origin=("http", "127.0.0.1", 1),
        timeouts=Timeouts(**timeouts),
    )


async def send(relay: Relay, fmt: str, token: str | None) -> Raw:
    headers = {TOKEN_HEADER: token} if token is not None else {}
    url = f"http://127.0.0.1:{relay.port}{request_path(fmt)}"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=request_body(fmt), headers=headers) as resp:
            body = await resp.read()
    return Raw(fmt, resp.status, resp.headers, body)


# --- tokens -------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "made-up-token"], ids=["none", "empty", "unknown"])
async def test_relay_refuses_requests_without_a_valid_token(
    relay: Relay, token: str | None
) -> None:
    async with MockUpstream() as up:
        relay.issue(plan(ANTHROPIC, [up.url]))  # a token exists, but not this one
        raw = await send(relay, ANTHROPIC, token)
    assert raw.status == 403
    assert "token" in raw.json()["error"]["message"]
    assert up.received == []


async def test_token_is_one_time_and_never_forwarded(relay: Relay) -> None:
    async with MockUpstream() as up:
        token = relay.issue(plan(ANTHROPIC, [up.url]))
        first = await send(relay, ANTHROPIC, token)
        again = await send(relay, ANTHROPIC, token)
    assert first.status == 200 and first.validator().complete
    assert again.status == 403
    (seen,) = up.received
    assert TOKEN_HEADER not in seen.headers and token not in repr(seen)


async def test_revoked_token_is_refused(relay: Relay) -> None:
    async with MockUpstream() as up:
        token = relay.issue(plan(ANTHROPIC, [up.url]))
        relay.revoke(token)
        assert (await send(relay, ANTHROPIC, token)).status == 403
    assert up.received == []


# --- timers measured on parsed events -----------------------------------------------------------


def anthropic_started() -> bytes:
    """message_start, a text block start and one text delta: committed."""
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Hi"},
    }
    return lifecycle_head(ANTHROPIC) + encode(
        orjson.dumps(delta).decode(), event="content_block_delta"
    )


async def test_pings_do_not_keep_a_dead_stream_alive(relay: Relay) -> None:
    # After commit the upstream sends only pings, every 50 ms, for 2 s: the idle timer (300 ms)
    # counts parsed events, so the stream is ended anyway.
    ping = encode('{"type": "ping"}', event="ping")
    steps = [(0.0, anthropic_started())] + [(0.05, ping)] * 40
    async with ScriptedUpstream(steps=steps) as up:
        p = plan(ANTHROPIC, [up.url], idle=0.2, first_event=1.0)
        raw = await send(relay, ANTHROPIC, relay.issue(p))
    events = event_list(raw.body)
    last = orjson.loads(events[-1].data or "")
    assert (
        last["error"]["type"] == "timeout_error" and "idle limit 0.2s" in last["error"]["message"]
    )
    assert 3 <= sum(ev.event == "ping" for ev in events) < 20, "cut long before the pings end"
    assert b"message_stop" not in raw.body
    (attempt,) = p.attempts
    assert attempt.outcome == "stall_after_commit" and p.outcome == "failed_after_commit"
    assert up.cancelled == 1, "the upstream connection was closed"
    assert relay.pumped == relay.callbacks, "the stall was found by the pump's timer"


async def test_comments_do_not_keep_a_dead_stream_alive(relay: Relay) -> None:
    started = lifecycle_head(OPENAI_CHAT) + encode(
        orjson.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
            }
        ).decode()
    )
    steps = [(0.0, started)] + [(0.05, b": still thinking\n\n")] * 40
    async with ScriptedUpstream(steps=steps) as up:
        p = plan(OPENAI_CHAT, [up.url], idle=0.2, first_event=1.0)
        raw = await send(relay, OPENAI_CHAT, relay.issue(p))
    error = raw.validator().error
    assert error and "idle limit" in error
    assert b"[DONE]" not in raw.body
    assert up.cancelled == 1


async def test_comments_before_content_do_not_beat_the_first_event_timeout(relay: Relay) -> None:
    steps = [(0.05, b": OPENROUTER PROCESSING\n\n")] * 40
    async with ScriptedUpstream(steps=steps) as slow, MockUpstream() as healthy:
        p = plan(OPENAI_CHAT, [slow.url, healthy.url], first_event=0.2)
        raw = await send(relay, OPENAI_CHAT, relay.issue(p))
    assert raw.status == 200 and raw.validator().complete
    assert b"OPENROUTER" not in raw.body, "the failed attempt's bytes stay held"
    assert [a.outcome for a in p.attempts] == ["first_event_timeout", "ok"]
    assert p.attempts[0].status == 200


async def test_total_limit_ends_a_slow_attempt(relay: Relay) -> None:
    # Events 50 ms apart never trip the idle timer; the attempt's total limit still ends it.
    async with MockUpstream(default_scenario="long") as up:
        p = plan(GEMINI, [up.url], idle=1.0, total=0.4)
        token = relay.issue(p)
        url = f"http://127.0.0.1:{relay.port}{request_path(GEMINI)}"
        headers = {TOKEN_HEADER: token, "x-mock-events": "40", "x-mock-delay-ms": "50"}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=request_body(GEMINI), headers=headers) as resp:
                body = await resp.read()
    last = orjson.loads(event_list(body)[-1].data or "")
    assert last["error"]["status"] == "DEADLINE_EXCEEDED"
    assert "attempt limit of 0.4s" in last["error"]["message"]
    assert p.attempts[0].outcome == "stall_after_commit"


def test_credentials_in_the_query_are_redacted_for_display() -> None:
    url = "https://generativelanguage.googleapis.com/v1beta/models/g:x?alt=sse&key=AIzaSECRET"
    assert redact_url(url).endswith("?alt=sse&key=***")
    assert redact_url("http://h/v1/messages") == "http://h/v1/messages"


class ThreadedUpstream:
    """An upstream on its own thread, so it keeps sending while the relay's event loop is busy:
    one chunked 200 response of `chunks`, each after `gap` seconds."""

    def __init__(self, chunks: Sequence[bytes], gap: float) -> None:
        self.chunks = chunks
        self.gap = gap
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ThreadedUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for chunk in self.chunks:
                time.sleep(self.gap)
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.sendall(b"0\r\n\r\n")


async def test_events_that_arrive_while_the_loop_is_busy_are_not_a_stall(relay: Relay) -> None:
    # The upstream sends an event every 50 ms; the relay's loop is blocked for 400 ms, twice
    # the idle limit. Events arrived meanwhile: the stream goes on.
    body = healthy_stream(ANTHROPIC)
    events = [ev.raw for ev in event_list(body)]
    with ThreadedUpstream(events, gap=0.05) as up:
        p = plan(ANTHROPIC, [up.url], idle=0.2, first_event=1.0)
        token = relay.issue(p)
        asyncio.get_running_loop().call_later(0.25, time.sleep, 0.4)
        raw = await send(relay, ANTHROPIC, token)
    assert raw.body == body
    assert p.attempts[0].outcome == "ok"
    assert relay.pumped == relay.callbacks


# --- origins --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://API.example.com/v1", ("https", "api.example.com", 443)),
        ("https://api.example.com:443", ("https", "api.example.com", 443)),
        ("http://api.example.com", ("http", "api.example.com", 80)),
        ("http://api.example.com:8443/x", ("http", "api.example.com", 8443)),
        ("http://127.0.0.1:9000", ("http", "127.0.0.1", 9000)),
    ],
)
def test_origin_is_scheme_host_and_port(url: str, origin: tuple[str, str, int]) -> None:
    assert origin_of(url) == origin


def test_client_credentials_go_only_to_the_origin_the_client_addressed() -> None:
    d = dialect(ANTHROPIC)
    same = Upstream("same", "https://api.example.com", d)
    http = Upstream("http", "http://api.example.com:443", d)  # same host and port, other scheme
    port = Upstream("port", "https://api.example.com:8443", d)
    p = Plan("r", [Hop(same), Hop(http), Hop(port)], d, True, ("https", "api.example.com", 443))
    ex = _Exchange(Relay(env={}), p, _Request(), b"")
    assert [ex._may_forward(u) for u in (same, http, port)] == [True, False, False]
    p.forward_client_credentials = True  # the route says otherwise
    assert all(ex._may_forward(u) for u in (same, http, port))


class _Request:
    """What `_Exchange` reads of the client's request before an attempt."""

    headers = {"x-api-key": "sk-client-key-0001"}
    query_string = "key=sk-client-query-key"


def test_every_credential_in_play_is_masked() -> None:
    d = dialect(GEMINI)
    up = Upstream("own", "https://x.example", d, api_key_env="OWN")
    p = Plan("r", [Hop(up)], d, True, ("https", "x.example", 443))
    ex = _Exchange(Relay(env={"OWN": "sk-upstream-own-key"}), p, _Request(), b"")
    text = "sk-client-key-0001 / sk-client-query-key / sk-upstream-own-key / short"
    assert ex.mask(text) == "<redacted> / <redacted> / <redacted> / short"


OWN_KEY = "sk-upstream-own-key-echoed"


async def test_a_key_an_in_band_error_quotes_is_masked_in_the_attempt(relay: Relay) -> None:
    """The typed attempt keeps the failed stream's findings; their messages are masked too."""
    d = dialect(ANTHROPIC)
    echo = lifecycle_head(ANTHROPIC) + d.error_event(f"invalid x-api-key {OWN_KEY}")
    relay.env = {"OWN": OWN_KEY}
    async with ScriptedUpstream(steps=[(0.0, echo)]) as bad, MockUpstream() as good:
        p = plan(ANTHROPIC, [bad.url, good.url])
        p.hops[0] = Hop(Upstream("up0", bad.url, d, auth="x-api-key", api_key_env="OWN"))
        raw = await send(relay, ANTHROPIC, relay.issue(p))
    assert raw.status == 200 and raw.validator().complete
    first = p.attempts[0]
    assert first.outcome != "ok" and first.findings, first
    recorded = [first.error or "", *(f.message for f in first.findings)]
    assert OWN_KEY not in " ".join(recorded)
    assert any("<redacted>" in text for text in recorded), recorded


# --- garbage ------------------------------------------------------------------------------------

NOISE = st.lists(
    st.one_of(
        st.binary(max_size=24),
        st.sampled_from(
            [b"\n", b"\r\n", b"\n\n", b"data: ", b"event: x\n", b": c\n\n", b"data: {\n\n", b"\xff"]
        ),
    ),
    max_size=30,
).map(b"".join)


async def _relay_garbage(
    before: bytes, after: bytes, pieces: list[int], repair: bool, callbacks: bool
) -> tuple[Raw, bytes]:
    upstream = before + anthropic_started() + after
    cuts = sorted({p % max(1, len(upstream)) for p in pieces} | {0, len(upstream)})
    steps = [(0.0, upstream[a:b]) for a, b in itertools.pairwise(cuts) if b > a]
    relay = Relay(env={})
    relay.callbacks = callbacks
    await relay.start()
    try:
        async with ScriptedUpstream(steps=steps) as up:
            p = plan(ANTHROPIC, [up.url], first_event=2.0, idle=2.0)
            p.repair = repair
            raw = await send(relay, ANTHROPIC, relay.issue(p))
    finally:
        await relay.stop()
    return raw, upstream


@pytest.mark.parametrize("fmt", [ANTHROPIC, OPENAI_CHAT, OPENAI_RESPONSES, GEMINI])
def test_an_attempt_with_repairs_lets_each_chunk_out_and_counts_its_steady_deltas_when_read(
    fmt: str,
) -> None:
    """An untranslated attempt with repairs (the relay's default): after commit each chunk of
    steady deltas goes out as it is judged, and the books of them are kept in one go when read
    (before the full way reads an event, at the end), not chunk by chunk; the client's
    stream is complete and the same bytes."""
    d = dialect(fmt)
    events = proxy_events(300, fmt=fmt)
    stages = _Stages(d, d, request=request_body(fmt), repair=True, fails=None, translation=None)
    assert stages.pipeline.lazy
    out = b""
    behind = 0  # the most events the upstream's checker was behind the stream
    for n, ev in enumerate(events, 1):
        stages.feed(ev)
        out += stages.gate.take()
        behind = max(behind, n - stages.upstream.events)
    stages.close()
    out += stages.gate.take()
    assert out == b"".join(events) and stages.client_complete
    assert stages.upstream.events == len(events) and behind > 250


def passed_on(upstream: bytes, repair: bool) -> bytes:
    """The whole events the relay passes on of `upstream`: the upstream's own, or what the
    repair stage makes of them (an unterminated tail never reaches the client)."""
    d = dialect(ANTHROPIC)
    request = request_body(ANTHROPIC)
    if not repair:
        events, _ = decode_all(upstream)
        return b"".join(e.raw for e in events)
    up, client = StreamChecker(d, request=request), StreamChecker(d, request=request)
    pipeline = Pipeline(client, upstream=up, repairer=Repairer(d, up.findings, request=request))
    out = pipeline.feed(upstream) + pipeline.close()
    return out[: len(out) - len(pipeline.trailing)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NOISE, NOISE, st.lists(st.integers(0, 10_000), max_size=6), st.booleans(), st.booleans())
def test_garbage_through_the_relay_never_raises_and_loses_no_byte(
    before: bytes, after: bytes, pieces: list[int], repair: bool, callbacks: bool
) -> None:
    raw, upstream = asyncio.run(_relay_garbage(before, after, pieces, repair, callbacks))
    if raw.status != 200:  # the garbage before the content made the attempt fail: an HTTP error
        assert raw.status in (502, 504) and raw.json()["type"] == "error"
        return
    # Every complete event of the upstream (without repairs byte for byte, with them as the
    # repair stage mends them, whatever the chunking) reached the client, in order; at most one
    # terminal error event follows, and the partial block at the end is all that is dropped.
    complete = passed_on(upstream, repair)
    assert raw.body.startswith(complete)
    rest = raw.body[len(complete) :]
    if rest:
        (ev,) = event_list(rest)
        assert ev.event == "error" and orjson.loads(ev.data or "")["type"] == "error"


# --- translated hops ----------------------------------------------------------------------------


def chat_chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-up",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return encode(orjson.dumps(chunk).decode())


def chat_call(index: int, name: str | None = None, arguments: str = "") -> dict[str, object]:
    call: dict[str, object] = {"index": index, "function": {"arguments": arguments}}
    if name is not None:
        call |= {"id": f"call_{name}", "type": "function", "function": {"name": name}}
    return call


#: Two Chat tool calls whose fragments take turns: no sequential format can carry them.
INTERLEAVED = chat_chunk(
    {"tool_calls": [chat_call(0, "a"), chat_call(1, "b"), chat_call(0, arguments="{}")]}
)
CHAT_TEXT = chat_chunk({"role": "assistant", "content": "Hi"})
CHAT_END = chat_chunk({}, "stop") + encode("[DONE]")


def served_whole(raw: Raw) -> bool:
    """One complete message of the mock's, without an error: the failed attempt left no trace."""
    v = raw.validator()
    return v.complete and v.error is None and starts(raw.fmt, raw.events()) == 1


def translated(
    client: str,
    hops: Sequence[tuple[str, str]],
    *,
    timeouts: dict[str, float] | None = None,
    repair: bool = True,
    api_key_env: str | None = None,
) -> Plan:
    """A plan for a `client` request over (url, format) hops; a hop of another format maps
    every model to its own, and authenticates with bearer `api_key_env` if given."""
    ups = []
    for i, (url, fmt) in enumerate(hops):
        models = (("*", "up-model"),) if fmt != client else ()
        auth = "bearer" if api_key_env else "none"
        ups.append(Hop(Upstream(f"up{i}", url, dialect(fmt), auth, api_key_env), models))
    return Plan(
        route="test",
        hops=ups,
        dialect=dialect(client),
        wants_stream=True,
        # the first hop's origin: a hop of the client's format there would get its key
        client_origin=origin_of(hops[0][0]),
        timeouts=Timeouts(**(timeouts or {})),
        repair=repair,
    )


async def test_a_stream_that_cannot_be_translated_before_commit_moves_on(relay: Relay) -> None:
    # The first content event the client would see (the tool call) comes in the same upstream
    # event as the interleaving: XLT-4 before commit fails the attempt, invisibly.
    steps = [(0.0, CHAT_TEXT.replace(b'"content":"Hi"', b'"content":""') + INTERLEAVED)]
    async with ScriptedUpstream(steps=steps, hold=True) as chat, MockUpstream() as fallback:
        p = translated(ANTHROPIC, [(chat.url, OPENAI_CHAT), (fallback.url, ANTHROPIC)])
        raw = await send(relay, ANTHROPIC, relay.issue(p))
    assert raw.status == 200 and served_whole(raw)
    first, second = p.attempts
    assert (first.outcome, first.committed) == ("untranslatable", False)
    assert "XLT-4" in {f.rule for f in first.findings}
    assert (second.outcome, second.committed) == ("ok", True)
    assert p.served is p.hops[1]


async def test_a_stream_that_cannot_be_translated_after_commit_ends_at_once(relay: Relay) -> None:
    # The upstream keeps its connection open after the interleaving: the client's stream must
    # end with its error event now, not when a timer runs out.
    steps = [(0.0, CHAT_TEXT), (0.05, INTERLEAVED)]
    async with ScriptedUpstream(steps=steps, hold=True) as chat:
        p = translated(ANTHROPIC, [(chat.url, OPENAI_CHAT)], timeouts={"idle": 60.0})
        async with asyncio.timeout(30):  # only catches a hang
            raw = await send(relay, ANTHROPIC, relay.issue(p))
        await until(lambda: chat.cancelled == 1, what="the relay to close the upstream")
    v = raw.validator()
    assert v.error is not None and "interleaved" in v.error
    assert b"message_stop" not in raw.body
    (attempt,) = p.attempts
    assert (attempt.outcome, attempt.committed) == ("untranslatable_after_commit", True)
    assert "XLT-4" in {f.rule for f in attempt.findings}
    assert p.outcome == "failed_after_commit"
    assert relay.pumped == relay.callbacks, "the pump's sink stopped it"


async def test_commit_waits_for_content_the_client_would_see(relay: Relay) -> None:
    # A role-only chunk becomes the client's message_start: held, so when the upstream then
    # stalls, the fallback serves and the client sees one message_start.
    steps = [(0.0, chat_chunk({"role": "assistant", "content": ""}))]
    async with ScriptedUpstream(steps=steps, hold=True) as chat, MockUpstream() as fallback:
        p = translated(
            ANTHROPIC,
            [(chat.url, OPENAI_CHAT), (fallback.url, ANTHROPIC)],
            timeouts={"first_event": 0.3},
        )
        raw = await send(relay, ANTHROPIC, relay.issue(p))
    assert served_whole(raw)
    assert [a.outcome for a in p.attempts] == ["first_event_timeout", "ok"]


async def test_reasoning_the_client_does_not_see_keeps_the_upstream_alive(relay: Relay) -> None:
    # The Chat upstream reasons for longer than the first-event limit before its text; an
    # Anthropic client gets no reasoning (XLT-2), so nothing commits meanwhile, but the upstream
    # is alive: the idle timer runs, not the first event's, and the answer arrives.
    thought = chat_chunk({"reasoning_content": "hmm"})
    steps = [(0.0, chat_chunk({"role": "assistant", "content": ""}))]
    steps += [(0.1, thought)] * 8 + [(0.1, CHAT_TEXT + CHAT_END)]
    async with ScriptedUpstream(steps=steps) as chat:
        p = translated(
            ANTHROPIC, [(chat.url, OPENAI_CHAT)], timeouts={"first_event": 0.4, "idle": 1.0}
        )
        raw = await send(relay, ANTHROPIC, relay.issue(p))
    v = raw.validator()
    assert v.complete and v.error is None
    assert b"thinking" not in raw.body
    (attempt,) = p.attempts
    assert attempt.outcome == "ok" and "XLT-2" in {f.rule for f in attempt.findings}


async def test_a_translated_stream_is_repaired_in_the_upstreams_format(relay: Relay) -> None:
    # An Anthropic stream without its message_stop (ANT-18): the repair adds it in Anthropic's
    # format (FIX-9), so the Chat client gets its [DONE]; without repairs it gets an error.
    body = healthy_stream(ANTHROPIC)
    cut = body[: body.index(b"event: message_stop")]
    results = {}
    for repair in (True, False):
        async with ScriptedUpstream(steps=[(0.0, cut)]) as up:
            p = translated(OPENAI_CHAT, [(up.url, ANTHROPIC)], repair=repair)
            raw = await send(relay, OPENAI_CHAT, relay.issue(p))
        results[repair] = (raw, p.attempts[0])
    raw, attempt = results[True]
    v = raw.validator()
    assert v.complete and v.error is None and raw.body.endswith(b"data: [DONE]\n\n")
    assert [r.rule for r in attempt.repairs] == ["FIX-9"]
    assert "ANT-18" in {f.rule for f in attempt.findings}  # in the upstream's own format
    assert attempt.outcome == "ok"
    raw, attempt = results[False]
    v = raw.validator()  # the Chat client's own error chunk ends it, and no [DONE]
    assert v.error is not None and "ended the stream before its end" in v.error
    assert not v.complete and b"[DONE]" not in raw.body
    assert attempt.outcome == "failed_after_commit" and not attempt.repairs


async def test_keepalives_on_a_translated_hop_are_the_clients(relay: Relay) -> None:
    # first_byte: the Anthropic client gets its headers and Anthropic pings while the Chat
    # upstream is slow to start, then the translated answer.
    steps = [(0.5, CHAT_TEXT + CHAT_END)]
    async with ScriptedUpstream(steps=steps) as chat:
        p = translated(
            ANTHROPIC, [(chat.url, OPENAI_CHAT)], timeouts={"first_byte": 0.05, "keepalive": 0.1}
        )
        raw = await send(relay, ANTHROPIC, relay.issue(p))
    events = raw.events()
    assert events[0].event == "ping" and p.headers_early
    v = raw.validator()
    assert v.complete and v.error is None and v.model == "claude-sonnet-4-6"


async def test_a_request_another_format_cannot_carry_is_not_sent(relay: Relay) -> None:
    # A Responses request that continues a conversation stored at OpenAI: a Chat upstream would
    # see only this turn. The attempt fails before anything is sent; the next hop serves.
    async with ScriptedUpstream(steps=[(0.0, CHAT_TEXT + CHAT_END)]) as chat:
        async with MockUpstream() as responses:
            p = translated(
                OPENAI_RESPONSES, [(chat.url, OPENAI_CHAT), (responses.url, OPENAI_RESPONSES)]
            )
            url = f"http://127.0.0.1:{relay.port}{request_path(OPENAI_RESPONSES)}"
            body = request_body(OPENAI_RESPONSES) | {"previous_response_id": "resp_1"}
            headers = {TOKEN_HEADER: relay.issue(p)}
            async with aiohttp.ClientSession() as http:
                async with http.post(url, json=body, headers=headers) as resp:
                    raw = Raw(OPENAI_RESPONSES, resp.status, resp.headers, await resp.read())
    assert chat.received == []
    assert served_whole(raw)
    first, second = p.attempts
    assert (first.outcome, first.status) == ("untranslatable", None)
    assert "previous_response_id" in (first.error or "")
    assert [f.rule for f in first.findings] == ["XLT-1"]
    assert second.outcome == "ok"


async def test_a_request_translated_for_anthropic_carries_the_headers_its_api_requires(
    relay: Relay,
) -> None:
    # The Messages API answers 400 without anthropic-version; an OpenAI client never sends one.
    async with ScriptedUpstream(steps=[(0.0, healthy_stream(ANTHROPIC))]) as claude:
        p = translated(OPENAI_CHAT, [(claude.url, ANTHROPIC)])
        headers = {TOKEN_HEADER: relay.issue(p), "openai-organization": "org-client"}
        url = f"http://127.0.0.1:{relay.port}/v1/chat/completions"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=request_body(OPENAI_CHAT), headers=headers) as resp:
                assert resp.status == 200
                await resp.read()
    (seen,) = claude.received
    assert seen.path == "/v1/messages"
    assert seen.headers.get("anthropic-version") == "2023-06-01"
    assert "openai-organization" not in seen.headers


@pytest.mark.parametrize("own_key", [False, True], ids=["no-key-of-its-own", "own-key"])
async def test_the_clients_key_never_goes_to_another_format(relay: Relay, own_key: bool) -> None:
    # The hop is at the origin the client addressed, so a hop of the client's format there
    # would get the client's credentials; a hop of another format gets none of them (only its
    # own key, when it has one).
    async with ScriptedUpstream(steps=[(0.0, CHAT_TEXT + CHAT_END)]) as chat:
        relay.env = {"CHAT_KEY": "sk-chat-own"}
        env = "CHAT_KEY" if own_key else None
        p = translated(ANTHROPIC, [(chat.url, OPENAI_CHAT)], api_key_env=env)
        url = f"http://127.0.0.1:{relay.port}/v1/messages?beta=true"
        headers = {
            TOKEN_HEADER: relay.issue(p),
            "x-api-key": "sk-client-key",
            "cookie": "session=sk-client-cookie",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "tools-2024-04-04",
        }
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=request_body(ANTHROPIC), headers=headers) as resp:
                assert resp.status == 200
                await resp.read()
    (seen,) = chat.received
    assert seen.path == "/v1/chat/completions"  # the client's query stays with its API
    assert not {"x-api-key", "cookie"} & seen.headers.keys()
    assert not [h for h in seen.headers if h.startswith("anthropic-")], "its API's headers stay"
    assert "sk-client" not in repr(seen)
    assert seen.headers.get("authorization") == ("Bearer sk-chat-own" if own_key else None)
    assert orjson.loads(seen.body)["model"] == "up-model"


# --- a client that is behind ----------------------------------------------------------------------


async def read_behind(relay: Relay, token: str, ready: asyncio.Event) -> bytes:
    """A raw client with a small receive buffer that reads nothing until `ready`, then the whole
    response (the relay closes the connection after it); the chunked body, unframed."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", relay.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    body = orjson.dumps(request_body(ANTHROPIC))
    writer.write(
        b"POST %b HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"connection: close\r\n%b: %b\r\ncontent-length: %d\r\n\r\n%b"
        % (request_path(ANTHROPIC).encode(), TOKEN_HEADER.encode(), token.encode(), len(body), body)
    )
    await ready.wait()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower()
    out = bytearray()
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        out += await reader.readexactly(size)
        await reader.readexactly(2)
    writer.close()
    return bytes(out)


async def test_a_client_that_is_behind_holds_the_upstream_back_and_loses_nothing(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 24 MiB of 64 KiB text deltas, as fast as the upstream writes them, to a client that reads
    # nothing until the relay has stopped reading its upstream (pumped) or a while (awaited).
    events = proxy_events(384 + LIFECYCLE_EVENTS, text_bytes=64 * 1024)
    held, resumed = asyncio.Event(), []
    pause, resume = Pump.pause, Pump.resume

    def pausing(self: Pump) -> None:
        pause(self)
        held.set()

    def resuming(self: Pump) -> None:
        resumed.append(self.paused)
        resume(self)

    monkeypatch.setattr(Pump, "pause", pausing)
    monkeypatch.setattr(Pump, "resume", resuming)
    async with ScriptedUpstream(steps=[(0.0, ev) for ev in events]) as up:
        p = plan(ANTHROPIC, [up.url], idle=30.0, first_event=30.0)
        ready = asyncio.Event()
        client = asyncio.create_task(read_behind(relay, relay.issue(p), ready))
        if relay.callbacks:
            await asyncio.wait_for(held.wait(), 30)
        else:  # aiohttp's writer holds the relay back by awaiting its drain
            await until(lambda: bool(p.attempts) and p.attempts[0].committed, what="commit")
        ready.set()
        got = await asyncio.wait_for(client, 60)
    assert got == b"".join(events), "every byte, in order, once"
    assert p.attempts[0].outcome == "ok" and p.outcome == "ok"
    if relay.callbacks:
        assert True in resumed, "the upstream was read again once the client caught up"
        assert relay.pumped == 1


async def test_an_http_1_0_client_gets_the_stream_unframed(relay: Relay) -> None:
    # No chunked encoding for HTTP/1.0: the relay writes the events as they are and closes.
    body = healthy_stream(ANTHROPIC)
    events = [ev.raw for ev in event_list(body)]
    head = len(event_list(lifecycle_head(ANTHROPIC))) + 1  # up to the first content event
    steps = [(0.0, b"".join(events[:head])), (0.05, b"".join(events[head:-1])), (0.05, events[-1])]
    async with ScriptedUpstream(steps=steps) as up:
        p = plan(ANTHROPIC, [up.url], idle=5.0, first_event=5.0)
        token = relay.issue(p)
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        request = orjson.dumps(request_body(ANTHROPIC))
        writer.write(
            b"POST %b HTTP/1.0\r\ncontent-type: application/json\r\n%b: %b\r\n"
            b"content-length: %d\r\n\r\n%b"
            % (
                request_path(ANTHROPIC).encode(),
                TOKEN_HEADER.encode(),
                token.encode(),
                len(request),
                request,
            )  # fmt: skip
        )
        response = await asyncio.wait_for(reader.read(), 30)  # to the close
        writer.close()
    status, _, got = response.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.0 200") and b"chunked" not in status.lower()
    assert got == body
    assert p.attempts[0].outcome == "ok"
