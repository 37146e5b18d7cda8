"""The stream pipeline: bytes in, whole events out, validated and optionally repaired and rewritten.

    chunk -> decode (SSE codec) -> parse (JSON) -> repair -> rewrite -> check (validators) -> emit

It is synchronous and does no I/O, so the mitmproxy tap (called from inside the proxy core) and the
relay (async) share it. With a `Repairer`, two checkers run: `upstream` validates what the upstream
sent (its findings are the flow's, and the repairs are recorded there), and `checker` validates
what the client gets. Without one, `checker` is both. Three promises:

* Lossless: an event no repair or rewrite changes is emitted byte-identical; with neither the
  output is the input, whatever the chunking.
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
from mitmllm.protocol.repair import Repairer
from mitmllm.protocol.sse import Event
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
        on_event: Callable[[Event, Any], object] | None = None,
        repairer: Repairer | None = None,
        upstream: StreamChecker | None = None,
    ) -> None:
        if (repairer is None) != (upstream is None):
            raise ValueError(
                "a repairing pipeline needs both the repairer and the upstream checker"
            )
        self.checker = checker  # what the client gets
        self.upstream = upstream if upstream is not None else checker  # what the upstream sent
        self.repairer = repairer
        self.rewrites = tuple(rewrites)
        self.on_event = on_event
        self.failed = False
        self.closed = False
        self.events = 0
        self.rewritten = 0

    @property
    def findings(self) -> Findings:
        """The upstream's findings (and the repairs made): the flow's."""
        return self.upstream.findings

    @property
    def trailing(self) -> bytes:
        """The unterminated tail passed on at the end (empty until closed)."""
        return self.checker.trailing

    def feed(self, chunk: bytes) -> bytes:
        """Process one chunk; returns the bytes of the events it completed (maybe b"")."""
        if self.failed:
            return chunk
        try:
            events = self.upstream.decoder.feed(chunk)
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
        if self.repairer is not None:
            return self._close_repairing(self.repairer)
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

    def _process(self, events: list[Event]) -> bytes:
        if self.repairer is not None:
            return self._process_repairing(events, self.repairer)
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

    def _rewrite(self, ev: Event, payload: Any) -> Event:
        changed = False
        for rewrite in self.rewrites:
            changed |= rewrite(payload)
        if not changed:
            return ev
        self.rewritten += 1
        return ev.with_data(orjson.dumps(payload).decode("utf-8"))

    # --- with repairs ----------------------------------------------------------------------------

    def _process_repairing(self, events: list[Event], repairer: Repairer) -> bytes:
        upstream = self.upstream
        out: list[bytes] = []
        for i, ev in enumerate(events):
            try:
                notes = ev.notes
                payload = upstream.parse(ev)
                upstream.check(ev, payload)
                ev.notes = notes  # the grammar findings of the block, for the client's side too
                for mended, mended_payload in repairer.feed(ev, payload):
                    out.append(self._emit(mended, mended_payload))
            except Exception as e:
                return b"".join(out) + self._fail(e, events[i:])
        return b"".join(out)

    def _emit(self, ev: Event, payload: Any) -> bytes:
        """Rewrite and check one event of what the client gets."""
        if self.rewrites and is_json(payload):
            ev = self._rewrite(ev, payload)
        self.checker.accept(ev, payload)
        self.events += 1
        if self.on_event is not None:
            self.on_event(ev, payload)
        return ev.raw

    def _close_repairing(self, repairer: Repairer) -> bytes:
        upstream = self.upstream
        try:
            events, partial = upstream.decoder.close()
            out = [self._process_repairing(events, repairer)]
            if self.failed:
                return out[0]
            notes = partial.notes if partial is not None else ()
            upstream.end(partial)
            if partial is not None:
                partial.notes = notes
            pairs, tail = repairer.close(partial)
            out += [self._emit(ev, payload) for ev, payload in pairs]
            client_partial = None
            if tail and partial is not None:
                client_partial = partial.at(repairer.index, repairer.offset)
            self.checker.end(client_partial, repairer.offset + len(tail))
            out.append(tail)
        except Exception as e:
            return self._fail(e, [])
        return b"".join(out)

    def _fail(self, error: Exception, unprocessed: list[Event]) -> bytes:
        """Switch to pass-through; return every byte held so far, unchanged."""
        logger.exception("mitmllm pipeline failed; passing the rest of the stream through")
        self.failed = True
        self.findings.add("TAP-1", f"internal error {type(error).__name__}: {error}"[:200])
        held = b"".join(ev.raw for ev in unprocessed)
        if self.repairer is not None:
            held = self.repairer.held_bytes() + held
        decoder = self.upstream.decoder
        try:
            held += bytes(decoder._buf)
            decoder._buf.clear()
        except Exception:  # pragma: no cover - the buffer is a bytearray
            pass
        return held
