"""The stream taps: what mitmproxy calls with every upstream chunk of an LLM event stream.

mitmproxy's rules for a `flow.response.stream` callable (see the mitmproxy notes): it is called
once per upstream chunk and once more with b"" at end of stream; it must always return a list (a
bare b"" mid-stream ends an HTTP/1.1 chunked body) and must never raise (an exception drops the
chunk). Both taps keep these rules whatever happens behind them, emit whole events only, and
record what the client was sent (for mitmweb and saved flows) and when each upstream chunk
arrived (for fixtures). They run once per chunk inside the proxy core, so they do as little as
they can there.

* `Tap` drives the whole pipeline in place: frame, validate, rewrite.
* `FramingTap` only frames, and leaves validation to the `ValidationWorker` process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections.abc import Callable
from typing import Any

from mitmllm.engine.pipeline import Pipeline
from mitmllm.engine.validation import StreamResult
from mitmllm.engine.validation import ValidationWorker
from mitmllm.protocol.sse import Decoder

logger = logging.getLogger(__name__)


class StreamRecord:
    """What a tap keeps about the stream it passes on."""

    rewritten = 0  # events the tap changed

    def __init__(self, t0: float, clock: Callable[[], float] = time.time) -> None:
        self.t0 = t0  # request start, same clock as mitmproxy's timestamps
        self.clock = clock
        # What the client was sent, as the pieces the tap returned: joined once at the end,
        # so a long stream does not keep reallocating one growing buffer.
        self._sent: list[bytes] = []
        self._offsets = array("q")  # upstream offset of each chunk
        self._times = array("d")  # clock() when it arrived
        self.received = 0
        self.finished = False  # saw end of stream
        self._first_out: float | None = None

    def _arrived(self, chunk: bytes, now: float) -> None:
        self._offsets.append(self.received)
        self._times.append(now)
        self.received += len(chunk)

    def _emitted(self, out: bytes, now: float) -> list[bytes]:
        if self._first_out is None:
            self._first_out = now
        self._sent.append(out)
        return [out]

    @property
    def sent(self) -> bytes:
        """Everything the client was sent so far."""
        if len(self._sent) > 1:
            self._sent[:] = [b"".join(self._sent)]
        return self._sent[0] if self._sent else b""

    @property
    def chunks(self) -> list[tuple[int, float]]:
        """(upstream offset, ms since the request started) of every upstream chunk."""
        t0 = self.t0
        return [
            (offset, round((t - t0) * 1000, 3))
            for offset, t in zip(self._offsets, self._times, strict=True)
        ]

    @property
    def chunk_count(self) -> int:
        return len(self._offsets)

    @property
    def first_event_ms(self) -> float | None:
        return None if self._first_out is None else (self._first_out - self.t0) * 1000


class Tap(StreamRecord):
    """Frames, validates and (when the flow has rewrites) rewrites the stream in place."""

    def __init__(self, pipeline: Pipeline, t0: float, clock: Callable[[], float] = time.time):
        super().__init__(t0, clock)
        self.pipeline = pipeline

    @property
    def rewritten(self) -> int:  # type: ignore[override]
        return self.pipeline.rewritten

    def __call__(self, chunk: bytes) -> list[bytes]:
        try:
            now = self.clock()
            if chunk:
                # `_arrived`, inline: this runs once per upstream chunk inside the proxy core
                self._offsets.append(self.received)
                self._times.append(now)
                self.received += len(chunk)
                out = self.pipeline.feed(chunk)
            else:
                self.finished = True
                out = self.pipeline.close()
            if not out:
                return []
            if self._first_out is None:
                self._first_out = now
            self._sent.append(out)
            return [out]
        except Exception:  # the pipeline never raises; this is the last line of defence
            logger.exception("mitmllm tap failed; passing the chunk through")
            self.pipeline.failed = True
            if chunk:
                self._sent.append(chunk)
                return [chunk]
            return []


class FramingTap(StreamRecord):
    """A tap that only frames: whole events go out at once, validation happens in the worker.

    Used when `mitmllm_worker` is on and nothing in the stream is rewritten. The bytes of each
    complete event go to a `ValidationWorker`, which runs the same checks as `Tap`.
    """

    def __init__(
        self,
        worker: ValidationWorker,
        fmt: str | None,
        request: Any,
        t0: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(t0, clock)
        self.worker = worker
        self.sid = worker.open(fmt, request)
        self.framer = Decoder()
        self.failed = False

    def __call__(self, chunk: bytes) -> list[bytes]:
        try:
            now = self.clock()
            if self.failed:
                out = chunk
            elif chunk:
                self._arrived(chunk, now)
                out = self.framer.frame(chunk)
            else:
                self.finished = True
                out = self.framer.close_frame()
            if not out:
                return []
            if not self.failed:
                self.worker.feed(self.sid, out)
            return self._emitted(out, now)
        except Exception:
            logger.exception("mitmllm tap failed; passing the rest of the stream through")
            self.failed = True
            held = bytes(self.framer._buf) + chunk
            self.framer._buf.clear()
            if held:
                self._sent.append(held)
                return [held]
            return []

    def result(self) -> asyncio.Future[StreamResult]:
        """Close the stream at the worker (running its end-of-stream checks): its findings."""
        if not self.finished and not self.failed:
            rest = self.framer.close_frame()  # never reached the client: only validated
            self.worker.feed(self.sid, rest)
        return self.worker.close(self.sid)
