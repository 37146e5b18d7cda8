"""The stream taps: what mitmproxy calls with every upstream chunk of an LLM event stream.

mitmproxy's rules for a `flow.response.stream` callable (see the mitmproxy notes): it is called
once per upstream chunk and once more with b"" at end of stream; it must always return a list (a
bare b"" mid-stream ends an HTTP/1.1 chunked body) and must never raise (an exception drops the
chunk). Both taps keep these rules whatever happens behind them, emit whole events only, and
record what the client was sent (for mitmweb and saved flows) and when each upstream chunk
arrived (for fixtures), both bounded whatever the stream's length (`mitmllm.engine.keep`). They
run once per chunk inside the proxy core, so they do as little as they can there.

* `Tap` drives the whole pipeline in place: frame, validate, rewrite. Inspect-only (and
  restamping, for events without the model's key), it passes whole events on at once and
  validates them in batches.
* `FramingTap` only frames, and leaves validation to the `ValidationWorker` process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections.abc import Callable
from typing import Any

from mitmllm.engine.keep import DEFAULT_LIMIT
from mitmllm.engine.keep import KeptBody
from mitmllm.engine.pipeline import Pipeline
from mitmllm.engine.validation import StreamResult
from mitmllm.engine.validation import ValidationWorker
from mitmllm.protocol.sse import Decoder

logger = logging.getLogger(__name__)

#: Chunk timings kept per stream (16 bytes each); a stream with more has no timing recorded.
MAX_TIMINGS = 1 << 18
#: Whole events an inspect-only tap passes on before its pipeline reads them (see `Tap`). A
#: batch's call has a cost of its own, run with cold caches inside mitmdump: 64 KiB cost
#: 0.94-1.00x the CPU per event of 16 KiB there; 256 KiB no less than 64 (the findings come
#: in at the end of the flow either way, and a batch holds references, not copies).
DEFER_BYTES = 64 * 1024
#: How a chunk of whole events ends: a line end, then a blank line (LF, or CRLF as Gemini
#: frames). A CR at the end could still be half of a CRLF: such a chunk is read at once.
WHOLE_EVENTS = (b"\n\n", b"\n\r\n")


class StreamRecord:
    """What a tap keeps about the stream it passes on."""

    rewritten = 0  # events the tap changed
    repairs = 0  # repairs the tap made

    def __init__(
        self, t0: float, clock: Callable[[], float] = time.time, body: KeptBody | None = None
    ) -> None:
        self.t0 = t0  # request start, same clock as mitmproxy's timestamps
        self.clock = clock
        # What the client was sent, kept up to a limit (the start and the end beyond it).
        self.body = body if body is not None else KeptBody(DEFAULT_LIMIT)
        self._offsets = array("q")  # upstream offset of each chunk
        self._times = array("d")  # clock() when it arrived
        # too many chunks, a cut body, or none kept: no timing kept (it fits no kept body)
        self.timing_cut = self.body.limit == 0
        self.chunk_count = 0
        self.received = 0
        self.finished = False  # saw end of stream
        self._first_out: float | None = None

    def _arrived(self, chunk: bytes, now: float) -> None:
        self.chunk_count += 1
        if not self.timing_cut:
            if len(self._offsets) >= MAX_TIMINGS or self.body.cut:
                self._drop_timings()
            else:
                self._offsets.append(self.received)
                self._times.append(now)
        self.received += len(chunk)

    def _drop_timings(self) -> None:
        self.timing_cut = True  # offsets past a cut fit no kept body: drop them all
        self._offsets, self._times = array("q"), array("d")

    def _emitted(self, out: bytes, now: float) -> list[bytes]:
        if self._first_out is None:
            self._first_out = now
        self.body.append(out)
        return [out]

    @property
    def sent(self) -> bytes:
        """What is kept of everything the client was sent (all of it unless `body.cut`)."""
        return self.body.value

    @property
    def chunks(self) -> list[tuple[int, float]]:
        """(upstream offset, ms since the request started) of every upstream chunk; empty when
        the timing was not kept (`timing_cut`), or the kept body was cut (they fit no kept body;
        a tap that defers may have recorded chunks it appended past the limit later)."""
        if self.body.over:
            return []
        t0 = self.t0
        return [
            (offset, round((t - t0) * 1000, 3))
            for offset, t in zip(self._offsets, self._times, strict=True)
        ]

    @property
    def first_event_ms(self) -> float | None:
        return None if self._first_out is None else (self._first_out - self.t0) * 1000


class Tap(StreamRecord):
    """Frames, validates and (when the flow has rewrites) rewrites the stream in place.

    An inspect-only pipeline passes on what it is given unchanged, in whole events. So while it
    holds nothing, a chunk that ends at a blank line (whole events) goes on at once, untouched,
    and the pipeline reads it later with the next ones (`settle`), in one call for up to
    `DEFER_BYTES`: the findings are the same for every chunking, and come that much later, all
    of them by the end of the stream. What the pipeline then passes on of bytes already sent
    (`_ahead`) is not sent again. Such chunks count (`chunk_count`, `received`) when the
    pipeline reads them. A pipeline whose rewrites say what every event they change holds
    (a restamp: the model's key) passes other events on unchanged too: chunks without it
    (`Pipeline.unmarked`, most of an Anthropic or Responses stream) are deferred alike. Where
    the steady deltas carry it (Chat's and Gemini's), the tap stops asking once it has learned
    them (`Pipeline.marked_steady`).

    Where no chunk timings are kept, a chunk of whole events that follows another is passed on
    by the shortest path there is (`_passing`): most chunks of a stream, each a few hundred
    bytes, in one call of the proxy core.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        t0: float,
        clock: Callable[[], float] = time.time,
        body: KeptBody | None = None,
    ):
        super().__init__(t0, clock, body)
        self.pipeline = pipeline
        self.defers = pipeline.defers
        # no rewrite: every chunk of whole events may be deferred, else those `unmarked`
        self._blind = not pipeline.rewrites
        self.defer_bytes = DEFER_BYTES
        self._clean = True  # the pipeline holds nothing: the next chunk starts an event
        self._deferred: list[bytes] = []
        self._deferred_size = 0
        self._ahead = 0  # bytes sent that the pipeline has not passed on yet
        self._passing = False  # see `_passable`
        # never defers (repairs on: a repair may change any chunk): each chunk is read at once,
        # and while no timings are kept, by the path in `__call__` that does only that
        self._direct = not self.defers
        self._tally = self.body.limit == 0  # the body keeps nothing: it only counts
        # `_direct`, a body that only counts (so no timings kept either) and the first byte out
        # recorded: the path in `__call__` that reads a chunk and counts its bytes, no more
        self._short = False

    def settle(self) -> None:
        """Have the pipeline read the whole events passed on before it read them, and record
        them as sent; and keep its books (`Pipeline.settle`)."""
        self._settle()
        self.pipeline.settle()

    def _settle(self) -> None:
        deferred = self._deferred
        if deferred:
            size = self._deferred_size
            self._deferred, self._deferred_size = [], 0
            self.chunk_count += len(deferred)
            self.received += size
            self._ahead += size
            pipeline = self.pipeline
            steady = pipeline.steady
            self.body.extend(deferred, size)  # one record for the batch, its pieces as sent
            if len(deferred) > 1 and steady is not None and steady.may_end(deferred[-1]):
                batch = b"".join(deferred)
                if pipeline.skim(batch):  # steady deltas only: one match for them all
                    self._ahead -= len(batch)
                else:  # as they came: a chunk with another event is read as before
                    self._read_apart(deferred)
            else:  # not all steady deltas (it ends otherwise): no copy of it all
                self._read_apart(deferred)
            self._clean = not pipeline.holds
            self._passing = self._passable()

    def _passable(self) -> bool:
        """May the next chunk of whole events take the shortest path (`__call__`)? The tap
        defers, the pipeline holds nothing, no timings are kept, the first byte out is
        recorded. `_passing` keeps the answer for the chunks that take it."""
        return self.defers and self._clean and self.timing_cut and self._first_out is not None

    def _read_apart(self, deferred: list[bytes]) -> None:
        """The pieces of a batch that is not all steady deltas, one by one (sent already). A
        batch's pieces but its last are often steady deltas (the end of the stream is in the
        last), and so are those after the one its template was learned in (its start): those
        runs are still read in one match. `skim` takes all or nothing and only what `feed`
        would have taken, so what is read and found is the same."""
        pipeline = self.pipeline
        steady = pipeline.steady
        if steady is None:
            for piece in deferred:
                self._behind(pipeline.feed(piece))
            return
        pieces = deferred if steady.prefix is None else self._skim_head(deferred)
        i = 0
        while i < len(pieces):
            learned = steady.prefix is not None
            self._behind(pipeline.feed(pieces[i]))
            i += 1
            if not learned and steady.prefix is not None:
                # the template is new: what follows may fit it, all of it or all but its end
                pieces = self._skim_head(pieces[i:])
                i = 0

    def _skim_head(self, pieces: list[bytes]) -> list[bytes]:
        """Read the pieces that start `pieces` and are all steady deltas in one match (all of
        them, or up to where the template's run ends); what is left to read one by one."""
        pipeline = self.pipeline
        steady = pipeline.steady
        assert steady is not None
        # Only pieces that end as the template ends can be all steady deltas: the run is no
        # longer than those at the start (a stream's big last piece is not copied for it)
        may_end = steady.may_end
        j = 0
        while j < len(pieces) and may_end(pieces[j]):
            j += 1
        if j and steady.long_end(pieces[j - 1]):
            # the stream's end (a Responses stream's done event ends as its deltas do): the run
            # stops before it, where the match of them all would fail on it alone and leave
            # every piece to be read one by one
            j -= 1
        if j < 2:
            return pieces
        joined = b"".join(pieces[:j])
        if pipeline.skim(joined):
            self._ahead -= len(joined)
            return pieces[j:]
        run = steady.leading(pipeline.checker, joined)
        cut = k = 0
        while k < j and cut + len(pieces[k]) <= run:
            cut += len(pieces[k])
            k += 1
        if k >= 2 and pipeline.skim(joined[:cut]):
            self._ahead -= cut
            return pieces[k:]
        return pieces

    def close(self) -> bytes:
        """End the stream early (the connection died): what the pipeline held, never sent."""
        self.settle()
        return self._behind(self.pipeline.close())

    def _behind(self, out: bytes) -> bytes:
        """What of the pipeline's output was not sent yet."""
        ahead = self._ahead
        if not ahead:
            return out
        done = min(ahead, len(out))
        self._ahead = ahead - done
        return out[done:]

    @property
    def sent(self) -> bytes:
        self.settle()  # the events passed on but not read yet are not recorded yet either
        return self.body.value

    @property
    def rewritten(self) -> int:  # type: ignore[override]
        return self.pipeline.rewritten

    @property
    def repairs(self) -> int:  # type: ignore[override]
        repairer = self.pipeline.repairer
        return repairer.repairs if repairer is not None else 0

    def __call__(self, chunk: bytes) -> list[bytes]:
        deferred = False  # the chunk is in `_deferred`, or recorded with it
        counted = False  # the chunk is in `chunk_count` and `received`
        marked = False  # whole events a rewrite may change: read now
        try:
            if self._short and chunk:
                # read at once, nothing recorded but the bytes (nothing is deferred or ahead)
                self.chunk_count += 1
                self.received += len(chunk)
                counted = True
                out = self.pipeline.feed(chunk)
                if out:
                    self.body.total += len(out)  # (`KeptBody.append` of a body that only counts)
                    return [out]
                return []
            if self._passing and chunk.endswith(WHOLE_EVENTS):
                if self._blind or self.pipeline.unmarked(chunk):
                    # The shortest path (most chunks): whole events, on they go, counted and
                    # recorded with the batch the pipeline reads them in (see above)
                    self._deferred.append(chunk)
                    deferred = True
                    size = self._deferred_size + len(chunk)
                    self._deferred_size = size
                    if size >= self.defer_bytes:
                        self._settle()
                    return [chunk]
                marked = True
            if chunk:
                # `_arrived` and `_emitted` inline: this runs once per chunk in the proxy core,
                # and reads the clock only for what it records (timings, the first byte out)
                if not self.timing_cut:
                    offsets = self._offsets
                    if len(offsets) < MAX_TIMINGS and not self.body.over:
                        # where it starts: after the bytes read and those waiting to be read
                        offsets.append(self.received + self._deferred_size)
                        self._times.append(self.clock())
                    else:
                        self._drop_timings()
                if (
                    not marked
                    and self.defers
                    and self._clean
                    and chunk.endswith(WHOLE_EVENTS)
                    and (self._blind or self.pipeline.unmarked(chunk))
                ):
                    # whole events while the pipeline holds nothing: on they go (see above)
                    self._deferred.append(chunk)
                    deferred = True
                    self._deferred_size += len(chunk)
                    if self._first_out is None:
                        self._first_out = self.clock()
                    self._passing = self._passable()
                    if self._deferred_size >= self.defer_bytes:
                        self._settle()
                    return [chunk]
                self.chunk_count += 1
                self.received += len(chunk)
                counted = True
                if self._deferred:
                    self._settle()
                pipeline = self.pipeline
                out = pipeline.feed(chunk)
                if self._ahead:
                    out = self._behind(out)
                if out:
                    if self._first_out is None:
                        self._first_out = self.clock()
                    self.body.append(out)
                if self.defers:  # only a deferring tap asks whether the next chunk starts clean
                    if self._blind or not pipeline.marked_steady():
                        self._clean = not pipeline.holds
                        self._passing = self._passable()
                    else:  # its steady deltas carry what it rewrites: no chunk of them is deferred
                        self.defers = self._passing = False
                        # each chunk read at once from here on, by the short path where it can
                        self._direct = not self._ahead
                self._short = self._direct and self._tally and self._first_out is not None
                return [out] if out else []
            self.finished = True
            self.settle()
            out = self._behind(self.pipeline.close())
            return self._emitted(out, self.clock()) if out else []
        except Exception:  # the pipeline never raises; this is the last line of defence
            logger.exception("mitmllm tap failed; passing the chunk through")
            self.pipeline.stop()
            for piece in self._deferred:  # sent already: recorded, never read
                self.body.append(piece)
            self.chunk_count += len(self._deferred)
            self.received += self._deferred_size
            self.defers = self._passing = False
            self._deferred, self._deferred_size, self._ahead = [], 0, 0
            if chunk:
                if not deferred:
                    self.body.append(chunk)
                    if not counted:
                        self.chunk_count += 1
                        self.received += len(chunk)
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
        body: KeptBody | None = None,
    ) -> None:
        super().__init__(t0, clock, body)
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
                self.body.append(held)
                return [held]
            return []

    def result(self, end_checks: bool = True) -> asyncio.Future[StreamResult]:
        """Close the stream at the worker: its findings. `end_checks` runs the end-of-stream
        rules (truncation); not when the client, not the upstream, ended the stream early."""
        if not self.finished and not self.failed and end_checks:
            rest = self.framer.close_frame()  # never reached the client: only validated
            self.worker.feed(self.sid, rest)
        return self.worker.close(self.sid, end_checks)
