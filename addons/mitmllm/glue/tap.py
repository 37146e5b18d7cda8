"""The stream tap: what mitmproxy calls with every upstream chunk of an LLM event stream.

mitmproxy's rules for a `flow.response.stream` callable (see the mitmproxy notes): it is called
once per upstream chunk and once more with b"" at end of stream; it must always return a list (a
bare b"" mid-stream ends an HTTP/1.1 chunked body) and must never raise (an exception drops the
chunk). The tap keeps both rules whatever happens in the pipeline it drives, records what the
client was sent (for mitmweb and saved flows), and when each upstream chunk arrived (for
fixtures). It runs once per chunk inside the proxy core, so it does as little as it can there.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Callable

from mitmllm.engine.pipeline import Pipeline

logger = logging.getLogger(__name__)


class Tap:
    def __init__(self, pipeline: Pipeline, t0: float, clock: Callable[[], float] = time.time):
        self.pipeline = pipeline
        self.t0 = t0  # request start, same clock as mitmproxy's timestamps
        self.clock = clock
        # What the client was sent, as the pieces the pipeline returned: joined once at the end,
        # so a long stream does not keep reallocating one growing buffer.
        self._sent: list[bytes] = []
        self._offsets = array("q")  # upstream offset of each chunk
        self._times = array("d")  # clock() when it arrived
        self.received = 0
        self.finished = False  # saw end of stream
        self._first_out: float | None = None
        self._last_out: float | None = None

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

    @property
    def last_event_ms(self) -> float | None:
        return None if self._last_out is None else (self._last_out - self.t0) * 1000

    def __call__(self, chunk: bytes) -> list[bytes]:
        try:
            now = self.clock()
            if chunk:
                self._offsets.append(self.received)
                self._times.append(now)
                self.received += len(chunk)
                out = self.pipeline.feed(chunk)
            else:
                self.finished = True
                out = self.pipeline.close()
            if out:
                if self._first_out is None:
                    self._first_out = now
                self._last_out = now
                self._sent.append(out)
                return [out]
            return []
        except Exception:  # the pipeline never raises; this is the last line of defence
            logger.exception("mitmllm tap failed; passing the chunk through")
            self.pipeline.failed = True
            if chunk:
                self._sent.append(chunk)
                return [chunk]
            return []
