"""A response body handed on from the upstream connection's own callbacks.

The relay reads a committed stream for the rest of its life. Read the usual way, each chunk costs
a task wake-up, a timeout scope and aiohttp's write path on the way out, which together cost
about as much again as the loopback hop itself (README, figures). A `Pump` instead hands the
body to a synchronous `sink` from the connection's own callbacks, as soon as a read of the
socket is parsed; the sink runs the pipeline and writes to the client's transport. The relay's
task only wakes for what is rare: the end of the body, a connection failure, the sink asking to
stop, a client that is behind, or its timer (idle, total, keep-alive).

How it hooks in: aiohttp's parser feeds the body to its `aiohttp.StreamReader` through
`feed_data`, `feed_eof` and `set_exception`. `start()` switches the reader's class to a subclass
that passes those on to the pump (the class has no room for an attribute, so a registry keyed by
the reader's id finds its pump); `close()` switches it back. A reader of another class, or of an
aiohttp whose reader cannot be switched or whose version was not verified (`VERIFIED`), is not
pumped (`start()` returns False) and the relay reads it the usual way; tests run both ways. The
connection's `data_received` is wrapped too, so that the chunks one read of the socket holds
reach the sink together once its parser is done: a fast upstream's read holds many, and the
pipeline and the write to the client then run once for all of them. Without the wrapper (a loop
that binds `data_received` early) each chunk goes on alone, with the same bytes.

Promises:

* Order: bytes reach the sink in the order they arrived, those buffered before `start()` first.
* Nothing raises into aiohttp: an exception in the sink stops the pump and is kept in `error`
  for the relay's task, which raises it as the read would have.
* Backpressure: `pause()` stops reading the upstream's socket until `resume()`; what the read
  in progress holds still comes, nothing more is buffered.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

#: Each hooked reader's pump, by the reader's id (the reader has `__slots__`, so no attribute).
_PUMPS: dict[int, Pump] = {}

#: aiohttp's minor versions whose parser and reader were verified to work as the hook expects
#: (tests/test_pump.py). Another version is read the usual way: slower, never wrong, where a
#: parser that fed its reader some other way would leave the pumped stream waiting.
VERIFIED = frozenset({(3, 14)})


def _minor(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return ()


#: Whether this aiohttp is one the pump hooks into.
AVAILABLE = _minor(aiohttp.__version__) in VERIFIED


class _Hooked(aiohttp.StreamReader):
    """aiohttp's reader, with what its parser feeds it going to the reader's pump."""

    __slots__ = ()

    def feed_data(self, data: bytes, size: int = 0) -> bool:
        if data:
            _PUMPS[id(self)].data(data)
        return False

    def feed_eof(self) -> None:
        pump = _PUMPS[id(self)]
        pump.flush()  # the read's chunks before its end (the sink may pause the socket)
        aiohttp.StreamReader.feed_eof(self)  # resumes the socket; releases the connection
        pump.end(None)

    def set_exception(self, exc: BaseException, *args: Any) -> None:
        pump = _PUMPS[id(self)]
        pump.flush()
        aiohttp.StreamReader.set_exception(self, exc, *args)
        pump.end(exc)

    # The reader keeps the offsets of HTTP chunks for `readchunk()`, and pauses the connection
    # when too many wait unread. Nothing waits here.
    def begin_http_chunk_receiving(self) -> None:
        return None

    def end_http_chunk_receiving(self) -> None:
        return None


class Pump:
    """Hands each chunk of `reader`'s body to `sink(chunk)` as it arrives (see the module)."""

    def __init__(
        self,
        reader: aiohttp.StreamReader,
        sink: Callable[[bytes], None],
        connection: Any = None,
    ) -> None:
        self.reader = reader
        self.sink = sink
        self.connection = connection  # the upstream connection's protocol, for backpressure
        self.ended = False  # the body is over: its end (error None) or a failure (error set)
        self.stopped: str | None = None  # why the sink stopped the pump
        self.error: BaseException | None = None  # the connection's failure, or the sink's
        self.paused = False
        self._hooked = False
        self._waiter: asyncio.Future[None] | None = None
        # What one read of the connection parses goes to the sink at once (see `_batch`).
        self._received: Callable[[bytes], None] | None = None  # the connection's own
        self._batching = False
        self._pending: list[bytes] = []

    @property
    def done(self) -> bool:
        """Nothing more comes through: the body ended, failed, or the sink stopped it."""
        return self.ended or self.stopped is not None

    def start(self) -> bool:
        """Hook into the reader; False (and nothing changed) if it cannot be. Bytes the reader
        holds already go to the sink first."""
        reader = self.reader
        if not _switchable(reader) or reader.is_eof() or reader.exception() is not None:
            return False
        held: list[bytes] = []
        try:
            # Reading may resume a paused connection, whose parser then feeds the reader again.
            while chunk := reader.read_nowait():
                held.append(chunk)
        except Exception:  # the connection failed meanwhile: what it sent before still counts
            held.append(unread(reader))
        reader.__class__ = _Hooked
        _PUMPS[id(reader)] = self
        self._hooked = True
        protocol = self.connection
        own = getattr(protocol, "__dict__", None)
        if own is not None and "data_received" not in own:
            self._received = protocol.data_received
            protocol.data_received = self._batch
        if held:
            self.data(b"".join(held))
        if reader.is_eof() or reader.exception() is not None:
            self.end(reader.exception())
        return True

    def close(self) -> None:
        """Unhook; the reader is aiohttp's own again. Safe to call more than once."""
        if self._hooked:
            self._hooked = False
            self.reader.__class__ = aiohttp.StreamReader
            del _PUMPS[id(self.reader)]
        if self._received is not None:
            self._received = None
            del self.connection.data_received  # the class's own again
        if self.paused:  # a connection that goes back to the pool must be read again
            self.resume()
        self._wake()

    def stop(self, why: str) -> None:
        """Called by the sink: nothing more goes to it; the relay's task wakes."""
        if self.stopped is None:
            self.stopped = why
        self._wake()

    def pause(self) -> None:
        """Stop reading the upstream (the client is behind). The socket's reading stops; what
        the current read holds still comes (the sink may run after its parser is done, where
        aiohttp's own pause, which holds the parser too, does not belong)."""
        transport = self._transport()
        if not self.paused and transport is not None:
            self.paused = True
            transport.pause_reading()
            self._wake()  # the relay's task waits for the client to catch up

    def resume(self) -> None:
        """Read the upstream again."""
        if self.paused:
            self.paused = False
            transport = self._transport()
            if transport is not None:
                transport.resume_reading()

    async def wait(self, timeout: float) -> None:
        """Until the pump is done or `timeout` seconds passed."""
        if self.done:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(max(timeout, 0.0), self._wake) if timeout < math.inf else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None

    # --- from the connection and the reader ---

    def _batch(self, data: bytes) -> None:
        """The connection's `data_received` while pumped: its parser hands each HTTP chunk of
        the read to the reader, and the sink gets them all at once when it is done. A fast
        upstream's read holds many chunks: one pass of the pipeline and one write for all of
        them, as a task that reads what has come since it last ran gets them."""
        self._batching = True
        try:
            assert self._received is not None
            self._received(data)
        finally:
            self._batching = False
            self.flush()

    def data(self, chunk: bytes) -> None:
        if self._batching:
            self._pending.append(chunk)
        else:  # fed outside a read (the connection's own `data_received` is not ours)
            self._deliver(chunk)

    def flush(self) -> None:
        """What the read so far parsed goes to the sink."""
        pending = self._pending
        if pending:
            chunk = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._deliver(chunk)

    def _deliver(self, chunk: bytes) -> None:
        if self.done:
            return  # the attempt is over: what the upstream still sends goes nowhere
        try:
            self.sink(chunk)
        except Exception as e:  # never into aiohttp's parser: the relay's task raises it
            self.error = e
            self.stop("error")

    def end(self, error: BaseException | None) -> None:
        self.flush()  # the end came within a read: its chunks first
        if not self.ended:
            self.ended = True
            if self.error is None:
                self.error = error
        self._wake()

    def _transport(self) -> Any:
        protocol = self.connection
        transport = protocol.transport if protocol is not None else None
        return transport if transport is not None and not transport.is_closing() else None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _switchable(reader: aiohttp.StreamReader) -> bool:
    """Whether `reader` is aiohttp's own, of a verified version, and its class can be switched
    (an aiohttp whose reader changed its layout cannot be)."""
    if not AVAILABLE or type(reader) is not aiohttp.StreamReader:
        return False
    try:
        reader.__class__ = _Hooked
    except TypeError:
        return False
    reader.__class__ = aiohttp.StreamReader
    return True


def unread(reader: aiohttp.StreamReader) -> bytes:
    """Bytes that arrived before the connection failed. aiohttp raises the failure on the next
    read even while they wait in its buffer, but a stream cut after its content must still pass
    that content on, whenever it was got round to."""
    try:
        if reader._buffer:
            return reader._read_nowait(-1)
    except Exception:  # aiohttp's internals moved: the failure is raised as it is
        logger.debug("could not read the bytes before a connection failure", exc_info=True)
    return b""
