"""The stream pipeline: bytes in, whole events out, validated and optionally rewritten.

    chunk -> decode (SSE codec) -> parse (JSON) -> rewrite -> check (validators) -> emit

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

import orjson

from mitmllm.protocol.dialect import is_json
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.sse import Event
from mitmllm.protocol.steady import Steady
from mitmllm.protocol.stream import StreamChecker

logger = logging.getLogger(__name__)

#: Mutates a parsed payload in place; returns True if it changed anything.
Rewrite = Callable[[Any], bool]


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
        # Steady deltas are accepted by their bytes, only where nothing reads them one by one.
        self.steady = (
            Steady.of(checker.dialect.name)
            if checker.dialect is not None and not self.rewrites and on_event is None
            else None
        )

    @property
    def findings(self) -> Findings:
        return self.checker.findings

    def feed(self, chunk: bytes) -> bytes:
        """Process one chunk; returns the bytes of the events it completed (maybe b"")."""
        if self.failed:
            return chunk
        checker = self.checker
        decoder = checker.decoder
        taken = 0
        try:
            held = decoder.pending
            steady = self.steady
            if steady is not None and not held and steady.prefix is not None:
                counted = checker.events
                taken = steady.take(checker, chunk)
                self.events += checker.events - counted
                if taken == len(chunk):
                    return chunk
            events = decoder.feed(chunk[taken:] if taken else chunk)
        except Exception as e:  # a codec bug must not eat the stream
            return chunk[:taken] + self._fail(e, [])
        if not events:
            return chunk[:taken]
        out = self._process(events)
        if out is None:  # nothing changed: the events' bytes as they came
            if not held and not decoder.pending:
                return chunk  # the chunk was whole events: pass the very object on
            out = events[0].raw if len(events) == 1 else b"".join(ev.raw for ev in events)
        return chunk[:taken] + out if taken else out

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
        for ev, payload in pairs:  # already checked by the checker; rewrite is too late to matter
            self.events += 1
            if self.on_event is not None:
                self.on_event(ev, payload)
            out.append(ev.raw)
        out.append(self.checker.trailing)
        return b"".join(out)

    def _process(self, events: list[Event]) -> bytes | None:
        """Parse, rewrite and check `events`; the bytes to emit, or None when they are the
        events' own bytes (no rewrite changed any), so the caller needs to build nothing."""
        checker = self.checker
        rewrites = self.rewrites
        on_event = self.on_event
        steady = self.steady
        changed_any = False
        for i, ev in enumerate(events):
            try:
                payload = checker.parse(ev)
                if steady is not None:
                    token = steady.before(checker, ev, payload)
                    checker.check(ev, payload)
                    if token is None:
                        steady.forget()
                    else:
                        steady.after(checker, ev, payload, token)
                    continue
                if rewrites and is_json(payload):
                    changed = False
                    for rewrite in rewrites:
                        changed |= rewrite(payload)
                    if changed:
                        ev = events[i] = ev.with_data(orjson.dumps(payload).decode("utf-8"))
                        self.rewritten += 1
                        changed_any = True
                checker.check(ev, payload)
                if on_event is not None:
                    on_event(ev, payload)
            except Exception as e:
                self.events += i
                return b"".join(ev.raw for ev in events[:i]) + self._fail(e, events[i:])
        self.events += len(events)
        if not changed_any:
            return None
        return events[0].raw if len(events) == 1 else b"".join(ev.raw for ev in events)

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
