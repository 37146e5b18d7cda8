"""The stream tap: what mitmproxy calls with every upstream chunk of an LLM event stream.

mitmproxy's rules for a `flow.response.stream` callable (see the mitmproxy notes): it is called
once per upstream chunk and once more with b"" at end of stream; it must always return a list (a
bare b"" mid-stream ends an HTTP/1.1 chunked body) and must never raise (an exception drops the
chunk). The tap keeps both rules whatever happens in the pipeline it drives, records what the
client was sent (for mitmweb and saved flows), and the arrival time of each upstream chunk (for
fixtures).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mitmllm.engine.pipeline import Pipeline

logger = logging.getLogger(__name__)


class Tap:
    def __init__(self, pipeline: Pipeline, t0: float, clock: Callable[[], float] = time.time):
        self.pipeline = pipeline
        self.t0 = t0  # request start, same clock as mitmproxy's timestamps
        self.clock = clock
        self.sent = bytearray()  # what the client was sent
        self.chunks: list[tuple[int, float]] = []  # (upstream offset, ms since t0) per chunk
        self.received = 0
        self.finished = False  # saw end of stream
        self.first_event_ms: float | None = None
        self.last_event_ms: float | None = None

    def __call__(self, chunk: bytes) -> list[bytes]:
        try:
            if chunk:
                now = (self.clock() - self.t0) * 1000
                self.chunks.append((self.received, round(now, 3)))
                self.received += len(chunk)
                out = self.pipeline.feed(chunk)
            else:
                self.finished = True
                out = self.pipeline.close()
            if out:
                if self.first_event_ms is None:
                    self.first_event_ms = (self.clock() - self.t0) * 1000
                self.last_event_ms = (self.clock() - self.t0) * 1000
                self.sent += out
                return [out]
            return []
        except Exception:  # the pipeline never raises; this is the last line of defence
            logger.exception("mitmllm tap failed; passing the chunk through")
            self.pipeline.failed = True
            if chunk:
                self.sent += chunk
                return [chunk]
            return []
