"""Per-event latency: paced streams whose text deltas carry the time the upstream wrote them.

The benchmark's upstream writes a paced stream's deltas at a token rate and stamps each with its
monotonic clock (`mitmllm.bench.corpus.STAMP`); the client here notes its own monotonic clock
when the chunk that completes a stamp arrives. Both processes run on one machine and read the
same clock, so receive minus send is the event's one-way latency: the upstream's socket, the
proxy (if any), the client's event loop. The same run without a proxy (``direct``) is the
baseline the proxies are compared with.

Only the deltas after a stream's first count: the first one comes with the response's head,
and what a proxy does there is the time to first byte, measured on its own. A run is `streams`
such streams at once, their starts spread out so that their events interleave as independent
conversations' do instead of arriving in bursts. Its steady state (`PacedRun.steady`) is the
stretch while every stream runs, once the proxy has settled after the last one opened: opening
and closing many connections at once is a different load from carrying them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

import aiohttp

from mitmllm.bench.corpus import STAMP
from mitmllm.bench.corpus import STAMP_DIGITS
from mitmllm.bench.corpus import proxy_request
from mitmllm.bench.report import percentile
from mitmllm.bench.upstream import HEADER_ACCEPT_ENCODING
from mitmllm.engine.relay import UPSTREAM_HEADER

_STAMPED = len(STAMP) + STAMP_DIGITS


class LatencyError(Exception):
    """A paced stream could not be read (an error status, an empty body)."""


@dataclass(slots=True)
class PacedStream:
    """One paced response as the client saw it."""

    events: int = 0  # every event, stamped or not
    stamps: int = 0  # stamped events (deltas)
    #: per delta after the first: the upstream's clock when it wrote it, the client's when it
    #: arrived (ns)
    sent: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    first_sent: int = 0  # the first delta's stamp (ns)
    accept_encoding: str = ""  # what the upstream was asked for
    served_by: str | None = None  # the upstream the relay names, if the relay served it
    _carry: bytes = b""  # the start of a stamp that the next chunk completes
    _last: bytes = b""  # the last byte of the previous chunk

    def feed(self, chunk: bytes, now: int) -> None:
        """One chunk of the body, arrived at `now` (ns): count its events, note its stamps."""
        self.events += chunk.count(b"\n\n") + (self._last == b"\n" and chunk[:1] == b"\n")
        self._last = chunk[-1:]
        data = self._carry + chunk if self._carry else chunk
        # Keep whatever could still be the start of a stamp: read it with the next chunk.
        cut = data.rfind(STAMP[:1], max(0, len(data) - _STAMPED + 1))
        if cut == -1:
            self._carry = b""
        else:
            self._carry, data = data[cut:], data[:cut]
        self.read(data, now)

    def read(self, data: bytes, now: int) -> None:
        """Note every stamp in `data` (whole ones only) as received at `now`."""
        i = 0
        while True:
            j = data.find(STAMP, i)
            if j == -1:
                return
            i = j + _STAMPED
            sent = int(data[j + len(STAMP) : i])
            self.stamps += 1
            if self.stamps == 1:
                self.first_sent = sent
                continue
            self.sent.append(sent)
            self.received.append(now)


async def paced_stream(
    client: aiohttp.ClientSession,
    port: int,
    events: int,
    interval_us: int,
    *,
    delay: float = 0.0,
    headers: Mapping[str, str] | None = None,
) -> PacedStream:
    """One paced stream of `events` events through 127.0.0.1:`port`, requested after `delay`
    seconds, with `headers` besides the stream's own."""
    if delay > 0:
        await asyncio.sleep(delay)
    path, request_headers, body = proxy_request(events, interval_us=interval_us)
    request_headers.update(headers or {})
    url = f"http://127.0.0.1:{port}{path}"
    out = PacedStream()
    async with client.post(url, data=body, headers=request_headers) as resp:
        if resp.status != 200:
            text = (await resp.read())[:300]
            raise LatencyError(f"{url} answered {resp.status}: {text!r}")
        async for chunk in resp.content.iter_any():
            out.feed(chunk, time.monotonic_ns())
        out.accept_encoding = resp.headers.get(HEADER_ACCEPT_ENCODING, "")
        out.served_by = resp.headers.get(UPSTREAM_HEADER)
    if out.events == 0:
        raise LatencyError(f"{url} sent an empty body")
    return out


@dataclass(frozen=True, slots=True)
class Window:
    """A stretch of the upstream's (and the client's) clock, in ns."""

    start: int
    end: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / 1e9

    def __contains__(self, t: int) -> bool:
        return self.start <= t <= self.end


@dataclass(frozen=True, slots=True)
class PacedRun:
    """`streams` paced streams at once: every stream as read, and the run's pace."""

    streams: list[PacedStream]
    rate: float  # deltas per second and stream, as offered

    @property
    def offered(self) -> float:
        """Deltas per second the upstream was asked for, all streams together."""
        return self.rate * len(self.streams)

    def latencies_ms(self, window: Window | None = None) -> list[float]:
        """The latency of every measured delta (of those written within `window`), in ms."""
        return [
            (r - t) / 1e6
            for s in self.streams
            for t, r in zip(s.sent, s.received, strict=True)
            if window is None or t in window
        ]

    def latency(self, p: float, window: Window | None = None) -> float:
        """The p-th percentile of the per-event latency (within `window`), in ms."""
        return percentile(self.latencies_ms(window), p)

    def steady(self, settle: float) -> Window | None:
        """While every stream ran: from `settle` seconds after the last stream's first delta
        to the first stream's last one. None if the streams overlap less than that."""
        streams = [s for s in self.streams if s.sent]
        if not streams:
            return None
        start = max(s.first_sent for s in streams) + round(settle * 1e9)
        end = min(s.sent[-1] for s in streams)
        return Window(start, end) if end > start else None

    def held(self, window: Window) -> float:
        """Deltas per second that reached the client within `window`, all streams together. A
        proxy that keeps up holds the offered rate; one that falls behind holds less."""
        arrived = sum(1 for s in self.streams for r in s.received if r in window)
        return arrived / window.seconds


async def paced_run(
    client: aiohttp.ClientSession,
    port: int,
    *,
    streams: int,
    events: int,
    rate: float,
    ramp: float | None = None,
    check: Callable[[PacedStream], object] | None = None,
    headers: Mapping[str, str] | None = None,
) -> PacedRun:
    """`streams` paced streams through 127.0.0.1:`port` at once, each `events` events long with
    `rate` deltas per second, started one after the other across `ramp` seconds (default: one
    interval); `check` sees each stream as it arrived."""
    interval = 1 / rate
    ramp = interval if ramp is None else ramp
    got = await asyncio.gather(
        *(
            paced_stream(
                client,
                port,
                events,
                round(interval * 1e6),
                delay=k * ramp / streams,
                headers=headers,
            )
            for k in range(streams)
        )
    )
    if check is not None:
        for stream in got:
            check(stream)
    return PacedRun(list(got), rate)
