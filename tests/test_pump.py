"""The pump on its own: a real aiohttp client reads a loopback server's chunked body, and the pump
hands it to a sink from the connection's callbacks (`mitmllm.engine.pump`).

The server writes what the test pushes, when it pushes it, so each test knows what has arrived
before the pump starts and what arrives after.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from typing import cast

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from mitmllm.engine import pump
from mitmllm.engine.pump import Pump
from tests.relayharness import until

CUT = object()  # pushed: the server drops the connection mid-body


class Frames(list[bytes]):
    """Pushed: HTTP chunks the server sends in one write (so the client reads them at once)."""


class Last(bytes):
    """Pushed: the body's last chunk and its end, in one write."""


class Feeder:
    """A loopback server answering each request with a chunked body of what the test pushes
    (`None` ends it, `CUT` drops the connection)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Feeder:
        app = web.Application()
        app.router.add_get("/", self._handle)
        # a client that left cancels its handler, which may wait for a push that never comes
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        self.push(CUT)  # a handler still waiting ends
        await self._runner.cleanup()

    def push(self, *items: object) -> None:
        for item in items:
            self.queue.put_nowait(item)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        while (item := await self.queue.get()) is not None:
            if item is CUT:
                assert request.transport is not None
                request.transport.abort()
                return resp
            if isinstance(item, Last):
                await resp.write_eof(bytes(item))
                return resp
            if isinstance(item, Frames):
                await resp.write(b"")  # the headers
                assert request.transport is not None
                request.transport.write(b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in item))
                continue
            assert isinstance(item, bytes)
            await resp.write(item)
        await resp.write_eof()
        return resp


@pytest_asyncio.fixture
async def feeder() -> AsyncIterator[Feeder]:
    async with Feeder() as f:
        yield f


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def arrived(resp: aiohttp.ClientResponse, n: int) -> None:
    """Until aiohttp's reader has received `n` bytes of the body (unread)."""
    await until(lambda: resp.content.total_bytes >= n, timeout=10, what=f"{n} bytes in")


def started(resp: aiohttp.ClientResponse) -> tuple[Pump, list[bytes]]:
    """A pump on `resp`'s body, started, and the list its sink fills."""
    assert resp.connection is not None
    got: list[bytes] = []
    pump = Pump(resp.content, got.append, resp.connection.protocol)
    assert pump.start()
    return pump, got


async def test_every_byte_reaches_the_sink_in_order_held_ones_first(
    feeder: Feeder, http: aiohttp.ClientSession
) -> None:
    feeder.push(b"one ", b"two ")
    async with http.get(feeder.url) as resp:
        await arrived(resp, 8)  # these wait in aiohttp's buffer when the pump starts
        pump, got = started(resp)
        assert b"".join(got) == b"one two ", "the held bytes, at once"
        feeder.push(b"three ", b"four", None)
        await pump.wait(10)
        assert pump.ended and pump.error is None and pump.stopped is None
        pump.close()
        assert b"".join(got) == b"one two three four"
        assert type(resp.content) is aiohttp.StreamReader, "aiohttp's own reader again"
        assert resp.connection is None, "at the end of the body the connection was released"


async def test_a_connection_cut_mid_body_ends_the_pump_with_the_failure(
    feeder: Feeder, http: aiohttp.ClientSession
) -> None:
    feeder.push(b"first")
    async with http.get(feeder.url) as resp:
        await arrived(resp, 5)
        pump, got = started(resp)
        feeder.push(b"second", CUT)
        await pump.wait(10)
        pump.close()
    assert pump.ended and isinstance(pump.error, aiohttp.ClientError)
    assert b"".join(got) == b"firstsecond", "what came before the cut is not lost"


async def test_a_sink_that_raises_stops_the_pump_and_keeps_the_error(
    feeder: Feeder, http: aiohttp.ClientSession
) -> None:
    seen: list[bytes] = []

    def sink(chunk: bytes) -> None:
        seen.append(chunk)
        raise ValueError("a bug in the sink")

    feeder.push(b"a")
    async with http.get(feeder.url) as resp:
        await resp.content.readexactly(1)  # the pump starts on an empty buffer
        assert resp.connection is not None
        pump = Pump(resp.content, sink, resp.connection.protocol)
        assert pump.start()
        feeder.push(b"b", b"c", None)
        await pump.wait(10)
        assert pump.stopped == "error" and isinstance(pump.error, ValueError)
        await until(lambda: resp.content.is_eof(), what="the body's end")
        pump.close()
    assert len(seen) == 1 and seen[0] in (b"b", b"bc"), "nothing more goes to a sink that failed"


async def test_pause_stops_reading_the_upstream_and_resume_loses_nothing(
    feeder: Feeder, http: aiohttp.ClientSession
) -> None:
    async with http.get(feeder.url) as resp:
        pump, got = started(resp)
        transport = resp.connection.transport if resp.connection else None
        assert transport is not None
        waiting = asyncio.create_task(pump.wait(60))
        await asyncio.sleep(0)  # the task waits
        pump.pause()
        assert pump.paused and not transport.is_reading()
        await asyncio.wait_for(waiting, 10)  # a pause wakes the waiting task
        feeder.push(*(b"%04d" % i for i in range(50)), None)
        pump.resume()
        assert not pump.paused and transport.is_reading()
        await pump.wait(10)
        pump.close()
    assert pump.ended and pump.error is None
    assert b"".join(got) == b"".join(b"%04d" % i for i in range(50))


async def test_a_body_already_over_is_not_pumped(
    feeder: Feeder, http: aiohttp.ClientSession
) -> None:
    feeder.push(b"all of it", None)
    async with http.get(feeder.url) as resp:
        await until(lambda: resp.content.is_eof(), what="the body's end")
        got: list[bytes] = []
        assert not Pump(resp.content, got.append).start()
        assert got == [] and await resp.read() == b"all of it", "left as it was"


async def test_a_reader_of_another_class_is_not_pumped() -> None:
    class Other(aiohttp.StreamReader):
        __slots__ = ()

    loop = asyncio.get_running_loop()
    reader = Other(cast(Any, _Protocol()), 2**16, loop=loop)
    assert not Pump(reader, lambda chunk: None).start()
    assert type(reader) is Other


async def test_after_close_the_reader_buffers_as_before(
    feeder: Feeder, http: aiohttp.ClientSession
) -> None:
    async with http.get(feeder.url) as resp:
        pump, got = started(resp)
        feeder.push(b"pumped")
        await until(lambda: got == [b"pumped"], what="the pumped chunk")
        pump.close()
        feeder.push(b"read", None)
        assert await resp.read() == b"read"


async def test_wait_returns_when_its_time_is_up(
    feeder: Feeder, http: aiohttp.ClientSession
) -> None:
    async with http.get(feeder.url) as resp:
        pump, _ = started(resp)
        await pump.wait(0.01)  # nothing came: the caller's timer
        assert not pump.done
        pump.stop("enough")
        await pump.wait(10)
        assert pump.done and pump.stopped == "enough"
        pump.close()


class _Protocol:
    """Just enough of a protocol for a reader that is never fed."""

    _reading_paused = False

    def pause_reading(self) -> None:
        raise AssertionError("not fed")


@pytest.mark.parametrize("pieces", [1, 3, 17])
async def test_chunking_does_not_change_what_the_sink_gets(
    feeder: Feeder, http: aiohttp.ClientSession, pieces: int
) -> None:
    body = bytes(range(256)) * 40
    step = -(-len(body) // pieces)
    async with http.get(feeder.url) as resp:
        pump, got = started(resp)
        feeder.push(*(body[i : i + step] for i in range(0, len(body), step)), None)
        await pump.wait(10)
        pump.close()
    assert b"".join(got) == body


@pytest.mark.parametrize("wrapped", [True, False], ids=["batched", "one-by-one"])
async def test_the_chunks_of_one_read_reach_the_sink_together(
    feeder: Feeder, http: aiohttp.ClientSession, wrapped: bool
) -> None:
    chunks = [b"event %02d;" % i for i in range(50)]
    async with http.get(feeder.url) as resp:
        assert resp.connection is not None
        protocol = resp.connection.protocol
        if not wrapped:  # as where the loop bound `data_received` before the pump came
            protocol.data_received = protocol.data_received  # type: ignore[method-assign,union-attr]
        got: list[bytes] = []
        pump = Pump(resp.content, got.append, protocol)
        assert pump.start()
        feeder.push(Frames(chunks))
        await until(lambda: b"".join(got) == b"".join(chunks), what="every chunk")
        pump.close()
        own = "data_received" in vars(protocol)
        assert own == (not wrapped), "after close, the connection's own again"
    # one read of the socket (one send on loopback): one piece for the sink, or one per chunk
    assert got == ([b"".join(chunks)] if wrapped else chunks)


def test_this_aiohttp_is_one_the_pump_was_verified_with() -> None:
    # The suite proves the hook on the aiohttp it runs with; a version it does not know is read
    # the usual way (`Relay.callbacks` off shows that way works).
    assert pump.AVAILABLE, f"aiohttp {aiohttp.__version__} is not in pump.VERIFIED"


async def test_an_aiohttp_not_verified_is_read_the_usual_way(
    feeder: Feeder, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pump, "AVAILABLE", False)
    feeder.push(b"as it was", None)
    async with http.get(feeder.url) as resp:
        got: list[bytes] = []
        assert not Pump(resp.content, got.append).start()
        assert await resp.read() == b"as it was" and got == []


async def test_a_pause_at_the_bodys_end_leaves_the_connection_fit_for_the_next_request(
    feeder: Feeder, http: aiohttp.ClientSession
) -> None:
    # The last chunk and the end come in one read; the sink pauses the socket on that chunk
    # (its client is behind) just as the connection goes back to the pool.
    feeder.push(b"first")
    got: list[bytes] = []

    def sink(chunk: bytes) -> None:
        got.append(chunk)
        if b"last" in chunk:
            pump.pause()

    async with http.get(feeder.url) as resp:
        await arrived(resp, 5)
        assert resp.connection is not None
        protocol = resp.connection.protocol
        pump = Pump(resp.content, sink, protocol)
        assert pump.start()
        feeder.push(Last(b"last"))
        await pump.wait(10)
        pump.close()
    assert pump.ended and pump.error is None and b"".join(got) == b"firstlast"
    assert protocol is not None and protocol.transport is not None
    assert protocol.transport.is_reading(), "back in the pool, the socket is read again"
    feeder.push(b"again", None)
    async with http.get(feeder.url) as again:  # on the pooled connection
        assert await asyncio.wait_for(again.read(), 10) == b"again"
