"""The stream pipeline: bytes in, whole events out, validated and optionally rewritten.

    chunk -> decode (SSE codec) -> parse (JSON) -> rewrite -> check (validators) -> emit

A rewrite reads the parsed payload and returns edits at key paths; they are spliced into the
event's bytes (`mitmllm.protocol.splice`), so a restamped event differs from the upstream's in the
bytes of the model value only. The unterminated final block is rewritten too when its data is
whole JSON.

It is synchronous and does no I/O, so the mitmproxy tap (called from inside the proxy core) and the
relay (async) share it. Three promises:

* Lossless: an event no rewriter changes is emitted byte-identical; with no rewrite the output is
  the input, whatever the chunking.
* Event-aligned: only whole events are emitted; a partial event is held until its blank line
  arrives, and emitted as is at `close()`.
* Never raises: an internal error switches the pipeline to pass-through for the rest of the
  stream, emits everything it held unchanged, and reports TAP-1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from mitmllm.protocol.dialect import is_json
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.splice import SpliceError
from mitmllm.protocol.splice import apply
from mitmllm.protocol.splice import splice_event
from mitmllm.protocol.sse import Event
from mitmllm.protocol.stream import StreamChecker

logger = logging.getLogger(__name__)

#: Reads a parsed payload; returns the edits that rewrite it (none: leave it as it is).
Rewrite = Callable[[Any], Sequence[Edit]]


class Pipeline:
    def __init__(
        self,
        checker: StreamChecker,
        rewrites: Sequence[Rewrite] = (),
        *,
        on_event: Callable[[Event, Any], None] | None = None,
    ) -> None:
        self.checker = checker
        self.rewrites = tuple(rewrites)
        self.on_event = on_event
        self.failed = False
        self.closed = False
        self.events = 0
        self.rewritten = 0
        self.tail = b""  # what was emitted for the unterminated final block

    @property
    def findings(self) -> Findings:
        return self.checker.findings

    def feed(self, chunk: bytes) -> bytes:
        """Process one chunk; returns the bytes of the events it completed (maybe b"")."""
        if self.failed:
            return chunk
        try:
            events = self.checker.decoder.feed(chunk)
        except Exception as e:  # a codec bug must not eat the stream
            return self._fail(e, [])
        return self._process(events) if events else b""

    def close(self) -> bytes:
        """End of stream: the remaining events, then the unterminated tail as is."""
        if self.closed:
            return b""
        self.closed = True
        if self.failed:
            return b""
        try:
            pairs = self.checker.close()
        except Exception as e:
            return self._fail(e, [])
        out = []
        try:
            for ev, payload in pairs:  # the checker has checked them as the upstream sent them
                self.events += 1
                if self.rewrites and is_json(payload):
                    ev = self._rewrite(ev, payload)
                if self.on_event is not None:
                    self.on_event(ev, payload)
                out.append(ev.raw)
            partial = self.checker.partial
            if partial is not None and self.rewrites:
                partial = self._rewrite_partial(partial)
        except Exception as e:
            self.tail = self.checker.trailing
            held = self._fail(e, [ev for ev, _ in pairs[len(out) :]])
            return b"".join(out) + held + self.tail
        self.tail = partial.raw if partial is not None else b""
        out.append(self.tail)
        return b"".join(out)

    def _rewrite(self, ev: Event, payload: Any) -> Event:
        """`ev` with the rewrites' edits spliced in (and made to `payload` too)."""
        edits: list[Edit] = []
        for rewrite in self.rewrites:
            edits += rewrite(payload)
        if not edits:
            return ev
        try:
            new = splice_event(ev, edits)
        except SpliceError as e:
            self.checker.findings.add(
                "TAP-3",
                f"event {ev.index} not rewritten ({e}); passed on as the upstream sent it",
                event=ev.index,
                offset=ev.offset,
            )
            return ev
        apply(payload, edits)
        self.rewritten += 1
        return new

    def _rewrite_partial(self, ev: Event) -> Event:
        """The unterminated final block reaches the client too: rewritten like any other
        when its data is whole JSON (a cut payload is left as it is)."""
        if ev.data is None:
            return ev
        payload, _ = parse_json(ev.data)  # the sentinel and cut JSON are not JSON
        if not is_json(payload):
            return ev
        return self._rewrite(ev, payload)

    def _process(self, events: list[Event]) -> bytes:
        checker = self.checker
        rewrites = self.rewrites
        on_event = self.on_event
        out: list[bytes] = []
        for i, ev in enumerate(events):
            try:
                payload = checker.parse(ev)
                if rewrites and is_json(payload):
                    ev = self._rewrite(ev, payload)
                checker.check(ev, payload)
                if on_event is not None:
                    on_event(ev, payload)
            except Exception as e:
                self.events += i
                return b"".join(out) + self._fail(e, events[i:])
            out.append(ev.raw)
        self.events += len(events)
        return out[0] if len(out) == 1 else b"".join(out)

    def _fail(self, error: Exception, unprocessed: list[Event]) -> bytes:
        """Switch to pass-through; return every byte held so far, unchanged."""
        logger.exception("mitmllm pipeline failed; passing the rest of the stream through")
        self.failed = True
        self.checker.findings.add("TAP-1", f"internal error {type(error).__name__}: {error}"[:200])
        held = b"".join(ev.raw for ev in unprocessed)
        decoder = self.checker.decoder
        try:
            held += bytes(decoder._buf)
            decoder._buf.clear()
        except Exception:  # pragma: no cover - the buffer is a bytearray
            pass
        return held
