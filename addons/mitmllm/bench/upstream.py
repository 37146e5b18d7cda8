"""The proxy benchmark's upstream: an SSE server that writes one event per HTTP chunk, as fast
as the socket takes them.

It runs in its own process (``python -m mitmllm.bench.upstream``) so that the proxy under test
has a core of its own, and it must outrun mitmproxy, so it is as thin as HTTP/1.1 allows: the
chunked framing of each answer is built once and cached, and a response is a loop of
``transport.write`` calls held back only by the socket's flow control. (The mock upstream, built
on aiohttp with a task per step, is the realistic server; this one is the fast one.) The
benchmark measures it without a proxy too, to show it is not the bottleneck.

Any POST is answered with `mitmllm.bench.corpus.proxy_events` in the wire format its path names
(``/v1/messages``, ``/v1/chat/completions``, ``/v1/responses``, ``…:streamGenerateContent``),
shaped by request headers: ``x-bench-events`` (events in the stream), ``x-bench-per-chunk``
(events per HTTP chunk), ``x-bench-text-bytes`` (text per delta, for big events) and
``x-bench-padded: 1`` (OpenAI's pads on each delta, in the formats that have them) and
``x-bench-texts: mixed`` (texts of code and of other languages than English: escapes, UTF-8).
With ``x-bench-interval-us`` the stream is paced instead, as a model generates tokens: the
lifecycle events at once, then one text delta per HTTP chunk every that many microseconds, each
stamped with this process's monotonic clock (nanoseconds, shared by every process of the
machine) at the moment it is written; the client subtracts it from its own clock on arrival.
Each answer carries ids of its own, as a real upstream's do (a Chat or Gemini stream names its
response in every event, a Responses stream its item): the mock's ``mock`` in them becomes four
characters of the answer's own, so a proxy cannot reuse what it made of one stream's events for
the next one's.
The response echoes the request's accept-encoding in ``x-bench-accept-encoding``: mitmllm asks
upstreams for ``identity`` on the flows it recognises, which is how the benchmark knows the addon
really tapped its stream. Connections are kept alive; the port is printed as the first line of
stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import sys
import time
from dataclasses import dataclass
from functools import cache

from mitmllm.bench.corpus import PADDED_FORMATS
from mitmllm.bench.corpus import STAMP
from mitmllm.bench.corpus import STAMP_DIGITS
from mitmllm.bench.corpus import group
from mitmllm.bench.corpus import proxy_events
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import route

HEADER_EVENTS = "x-bench-events"
HEADER_PER_CHUNK = "x-bench-per-chunk"
HEADER_INTERVAL = "x-bench-interval-us"
HEADER_ACCEPT_ENCODING = "x-bench-accept-encoding"
HEADER_TEXT_BYTES = "x-bench-text-bytes"
HEADER_PADDED = "x-bench-padded"
HEADER_TEXTS = "x-bench-texts"
DEFAULT_EVENTS = 100
END = b"0\r\n\r\n"
#: What the mock's ids hold in place of an answer's own (chatcmpl-mock, msg_mock, mock-mock)
MOCK_ID = b"mock"
_ANSWERS = itertools.count(1)
_DIGITS = b"0123456789abcdefghijklmnopqrstuvwxyz"


def own_id(n: int) -> bytes:
    """Four characters of the `n`th answer's own, in place of `MOCK_ID` (as long as it)."""
    out = bytearray()
    for _ in range(len(MOCK_ID)):
        n, digit = divmod(n, len(_DIGITS))
        out.append(_DIGITS[digit])
    return bytes(out)


@cache
def framed(
    events: int,
    per_chunk: int,
    fmt: str = ANTHROPIC,
    text_bytes: int | None = None,
    padded: bool = False,
    mixed: bool = False,
) -> tuple[bytes, ...]:
    """The stream's HTTP chunks, each already framed for chunked transfer encoding."""
    stream = proxy_events(events, fmt=fmt, text_bytes=text_bytes, padded=padded, mixed=mixed)
    return tuple(b"%x\r\n%b\r\n" % (len(c), c) for c in group(stream, max(1, per_chunk)))


def stream_format(request_line: str) -> str:
    """The wire format a request line's path asks for (Anthropic when it names none)."""
    parts = request_line.split(" ")
    path = parts[1].partition("?")[0] if len(parts) > 1 else ""
    where = route("POST", path)
    return where.fmt if where is not None else ANTHROPIC


@dataclass(frozen=True, slots=True)
class Paced:
    """A stamped stream in three parts: what is written at once, the deltas, and the end."""

    head: bytes  # the lifecycle events before the first delta, framed one per HTTP chunk
    #: each delta unframed, with the offset of its stamp's digits
    deltas: tuple[tuple[bytes, int], ...]
    tail: bytes  # the events after the last delta, framed, and the last chunk


@cache
def paced(events: int) -> Paced:
    """The stamped stream of `events` events, in the parts a paced answer writes."""
    stream = proxy_events(events, stamped=True)
    stamped = [i for i, ev in enumerate(stream) if STAMP in ev]
    first, last = stamped[0], stamped[-1]
    return Paced(
        head=b"".join(b"%x\r\n%b\r\n" % (len(ev), ev) for ev in stream[:first]),
        deltas=tuple((ev, ev.index(STAMP) + len(STAMP)) for ev in stream[first : last + 1]),
        tail=b"".join(b"%x\r\n%b\r\n" % (len(ev), ev) for ev in stream[last + 1 :]) + END,
    )


def stamp(delta: bytes, at: int) -> bytes:
    """`delta` framed as one HTTP chunk, stamped with the clock now."""
    now = b"%0*d" % (STAMP_DIGITS, time.monotonic_ns())
    event = delta[:at] + now + delta[at + STAMP_DIGITS :]
    return b"%x\r\n%b\r\n" % (len(event), event)


def response_head(accept_encoding: str) -> bytes:
    return (
        "HTTP/1.1 200 OK\r\n"
        "content-type: text/event-stream; charset=utf-8\r\n"
        "cache-control: no-cache\r\n"
        "transfer-encoding: chunked\r\n"
        f"{HEADER_ACCEPT_ENCODING}: {accept_encoding}\r\n"
        "\r\n"
    ).encode("latin-1")


class Connection(asyncio.Protocol):
    """One client connection: requests one after the other, each answered with a stream."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.closed = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self.next_request()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()

    def next_request(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end == -1:
            return
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if len(self.buffer) < end + 4 + length:
            return  # the body is still on its way
        del self.buffer[: end + 4 + length]
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(
            self.respond(stream_format(lines[0]), headers)
        )

    async def respond(self, fmt: str, headers: dict[str, str]) -> None:
        transport = self.transport
        assert transport is not None
        interval = headers.get(HEADER_INTERVAL)
        if interval:
            await self.respond_paced(
                transport, headers, int(headers.get(HEADER_EVENTS) or DEFAULT_EVENTS), int(interval)
            )
            return
        text_bytes = headers.get(HEADER_TEXT_BYTES)
        chunks = framed(
            int(headers.get(HEADER_EVENTS) or DEFAULT_EVENTS),
            int(headers.get(HEADER_PER_CHUNK) or 1),
            fmt,
            int(text_bytes) if text_bytes else None,
            headers.get(HEADER_PADDED) == "1" and fmt in PADDED_FORMATS,
            headers.get(HEADER_TEXTS) == "mixed",
        )
        writable = self.writable
        own = own_id(next(_ANSWERS))
        transport.write(response_head(headers.get("accept-encoding", "")))
        for chunk in chunks:
            if not writable.is_set():
                await writable.wait()
                if self.closed:
                    return
            transport.write(chunk.replace(MOCK_ID, own))
        transport.write(END)
        self.done()

    async def respond_paced(
        self, transport: asyncio.Transport, headers: dict[str, str], events: int, interval_us: int
    ) -> None:
        stream = paced(events)
        transport.write(response_head(headers.get("accept-encoding", "")) + stream.head)
        start = time.monotonic()
        for i, (delta, at) in enumerate(stream.deltas):
            # Due times from the start, not from the previous write: a late write does not
            # push the rest of the stream back.
            wait = start + i * interval_us / 1e6 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not self.writable.is_set():
                await self.writable.wait()
            if self.closed:
                return
            transport.write(stamp(delta, at))
        transport.write(stream.tail)
        self.done()

    def done(self) -> None:
        self.busy = False
        if self.buffer:
            self.next_request()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, host, port)
    bound = server.sockets[0].getsockname()[1]
    print(bound, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mitmllm.bench.upstream",
        description="A fast SSE upstream for the proxy benchmark; prints its port.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
