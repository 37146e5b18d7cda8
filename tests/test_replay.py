"""The replay upstream: recorded chunking and timing, matching, clear misses, cut streams."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest
from mitmproxy.test import tflow

from mitmllm.engine import fixtures
from mitmllm.engine.fixtures import Fixture
from mitmllm.engine.replay import ReplayUpstream
from mitmllm.engine.replay import request_key
from tests.support.fixtureflows import CRLF
from tests.support.fixtureflows import HEALTHY
from tests.support.fixtureflows import REQUEST
from tests.support.fixtureflows import recorded
from tests.support.fixtureflows import sse_flow

PATH = "/v1/generate"


def timed(body: bytes, times: list[tuple[int, float]], **kw: object) -> Fixture:
    return fixtures.from_flow(sse_flow(body, **kw), upstream_body=body, chunks=times)  # type: ignore[arg-type]


async def post(up: ReplayUpstream, body: Any = REQUEST) -> tuple[int, Any, bytes]:
    """POST a JSON body (or raw bytes) to the replay upstream: status, headers, body."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession() as s, s.post(up.url + PATH, data=data, headers=headers) as r:
        return r.status, r.headers, await r.read()


async def read_chunks(resp: aiohttp.ClientResponse, t0: float) -> list[tuple[bytes, float]]:
    """The HTTP chunks of a response as they arrived (bytes, ms since t0)."""
    out: list[tuple[bytes, float]] = []
    buf = b""
    async for data, end_of_chunk in resp.content.iter_chunks():
        buf += data
        if end_of_chunk and buf:
            out.append((buf, (time.monotonic() - t0) * 1000))
            buf = b""
    if buf:
        out.append((buf, (time.monotonic() - t0) * 1000))
    return out


# Split inside a UTF-8 character and between CR and LF, 60 ms apart.
CUTS = [CRLF.index(b"\xc3") + 1, CRLF.index(b"\r\n") + 1, CRLF.index(b"\xe4") + 1]


@pytest.mark.parametrize("speed", [1.0, 2.0])
async def test_replays_chunk_boundaries_and_timing_within_tolerance(speed: float) -> None:
    offsets = [0, *sorted(CUTS)]
    fx = timed(CRLF, [(o, 30.0 + 60.0 * i) for i, o in enumerate(offsets)])
    async with ReplayUpstream([fx], speed=speed) as up, aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        async with s.post(up.url + PATH, json=REQUEST) as resp:
            assert resp.status == 200
            got = await read_chunks(resp, t0)
    assert fx.response is not None
    assert [piece for piece, _ in got] == [piece for piece, _ in fx.response.pieces()]
    for (_, at), (_, ms) in zip(got, fx.response.pieces(), strict=True):
        assert at == pytest.approx(ms / speed, abs=40), "chunk arrived off its recorded time"
    assert up.served[0].fixture == fx.name


async def test_status_and_headers_are_replayed_without_hop_by_hop_ones() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    flow = sse_flow(body, status=529, headers={"x-request-id": "req_1", "connection": "keep-alive"})
    flow.response.headers["content-type"] = "application/json"  # type: ignore[union-attr]
    flow.response.headers["transfer-encoding"] = "chunked"  # type: ignore[union-attr]
    fx = fixtures.from_flow(flow)
    async with ReplayUpstream([fx], speed=float("inf")) as up:
        status, headers, got = await post(up)
    assert status == 529 and got == body
    assert headers["x-request-id"] == "req_1"
    assert headers["content-type"] == "application/json"
    assert "keep-alive" not in headers.getall("connection", [])
    assert headers.getall("transfer-encoding", []) in ([], ["chunked"])


async def test_a_recorded_content_length_body_is_not_chunked() -> None:
    body = b'{"id": "x", "content": []}'
    flow = sse_flow(body, headers={"content-length": str(len(body))})
    flow.response.headers["content-type"] = "application/json"  # type: ignore[union-attr]
    async with ReplayUpstream([fixtures.from_flow(flow)], speed=float("inf")) as up:
        _, headers, got = await post(up)
    assert headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in headers
    assert got == body


async def test_matching_ignores_volatile_and_redacted_fields_and_key_order() -> None:
    recorded_request = {**REQUEST, "metadata": {"user_id": "session-1"}, "api_key": "sk-live-1"}
    fx = recorded(HEALTHY, request=recorded_request)
    assert "request.body.api_key" in fx.redacted
    # Another run: another session id, a real key, an end-user id, keys in another order.
    sent = {"api_key": "sk-live-2", "user": "u-9", "metadata": {"user_id": "session-2"}}
    sent.update(reversed(list(REQUEST.items())))  # type: ignore[arg-type]
    async with ReplayUpstream([fx], speed=float("inf")) as up:
        status, _, got = await post(up, sent)
    assert (status, got) == (200, HEALTHY)


async def test_an_unmatched_request_gets_a_404_naming_it_and_the_fixtures() -> None:
    fx = recorded(HEALTHY)
    other = {**REQUEST, "messages": [{"role": "user", "content": "something else"}]}
    async with ReplayUpstream([fx]) as up:
        status, _, got = await post(up, other)
    assert status == 404
    answer = orjson.loads(got)
    message = answer["error"]["message"]
    assert "no replay fixture matches POST /v1/generate" in message and "model m-1" in message
    assert answer["request"] == {
        "method": "POST",
        "path": PATH,
        "format": None,
        "model": "m-1",
        "stream": True,
    }
    assert [f["fixture"] for f in answer["fixtures"]] == [fx.name]
    assert up.served[0].fixture is None and up.served[0].status == 404


async def test_fixtures_for_the_same_request_are_served_in_turn(tmp_path: Path) -> None:
    first = recorded(HEALTHY)
    second = recorded(CRLF)
    for fx in (first, second):
        fixtures.write_new(tmp_path, fx)
    async with ReplayUpstream([tmp_path], speed=float("inf")) as up:
        bodies = [(await post(up))[2] for _ in range(3)]
    order = [f.response.content for f in up.fixtures]  # type: ignore[union-attr]
    assert bodies == [order[0], order[1], order[0]]
    assert sorted(order) == sorted([HEALTHY, CRLF])


async def test_a_stream_that_was_cut_is_cut_again() -> None:
    flow = sse_flow(HEALTHY[:30])
    flow.error = tflow.terr("HTTP/1 protocol error: incomplete chunked read")
    fx = fixtures.from_flow(flow, upstream_body=HEALTHY[:30], chunks=[(0, 1.0), (20, 2.0)])
    got = b""
    async with (
        ReplayUpstream([fx]) as up,
        aiohttp.ClientSession() as s,
        s.post(up.url + PATH, json=REQUEST) as resp,
    ):
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in resp.content.iter_any():
                got += data
    assert got == HEALTHY[:30]


async def test_a_request_that_got_no_response_is_answered_502() -> None:
    flow = tflow.tflow(req=sse_flow(b"").request)
    flow.error = tflow.terr("[Errno 111] Connect call failed")
    fx = fixtures.from_flow(flow)
    async with ReplayUpstream([fx]) as up:
        status, _, got = await post(up)
    assert status == 502
    assert "Connect call failed" in orjson.loads(got)["error"]["message"]


ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
    b'"role":"assistant","model":"claude-x","content":[],"stop_reason":null,'
    b'"stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hello \xe4\xb8\x96\xe7\x95\x8c"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    b'"stop_sequence":null},"usage":{"output_tokens":3}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


async def test_the_anthropic_sdk_streams_a_replayed_fixture() -> None:
    request = {
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        "model": "claude-x",
        "stream": True,
    }
    cut = ANTHROPIC_STREAM.index(b"\xe4") + 1  # inside a UTF-8 character
    fx = timed(
        ANTHROPIC_STREAM,
        [(0, 1.0), (cut, 2.0)],
        request=request,
        url="https://api.anthropic.com/v1/messages",
    )
    async with ReplayUpstream([fx], speed=float("inf")) as up:
        client = anthropic.AsyncAnthropic(api_key="test", base_url=up.url, max_retries=0)
        async with client.messages.stream(
            model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = await stream.get_final_text()
        await client.close()
    assert text == "Hello 世界"
    assert up.served[0].fixture == fx.name


def test_request_key_is_format_model_stream_and_canonical_body() -> None:
    a = request_key("post", "http://h/v1/generate?x=1", orjson.dumps(REQUEST))
    b = request_key("POST", "/v1/generate", orjson.dumps(dict(reversed(list(REQUEST.items())))))
    assert a == b and a.model == "m-1" and a.stream is True and a.path == PATH
    assert request_key("POST", PATH, b"not json").body == b"not json"


def test_speed_must_be_positive() -> None:
    with pytest.raises(ValueError, match="speed must be > 0"):
        ReplayUpstream([], speed=0)


async def test_it_listens_on_a_free_loopback_port() -> None:
    up = ReplayUpstream([])
    await up.start()
    try:
        assert up.port != 0 and up.url == f"http://127.0.0.1:{up.port}"
    finally:
        await up.stop()
