"""The stream pipeline: bytes in, whole events out, validated and optionally repaired and rewritten.

    chunk -> decode (SSE codec) -> parse (JSON) -> repair -> rewrite -> check (validators) -> emit

A rewrite reads the parsed payload and returns edits at key paths; they are spliced into the
event's bytes (`mitmllm.protocol.splice`), so a restamped event differs from the upstream's in the
bytes of the model value only. The unterminated final block is rewritten too when its data is
whole JSON.

It is synchronous and does no I/O, so the mitmproxy tap (called from inside the proxy core) and the
relay (async) share it. With a `Repairer`, two checkers run: `upstream` validates what the upstream
sent (its findings are the flow's, and the repairs are recorded there), and `checker` validates
what the client gets. Without one, `checker` is both. A `Gate` given to the pipeline judges
each event the client would get (the relay's commit gate).

Steady deltas (`mitmllm.protocol.steady`) skip the way above once one of them was proven a
no-op: in an inspect-only pipeline whose rewrites are all `TextBlind`, and, after commit, in a
repairing pipeline with a gate whose rewrites are too; never where anything else reads events
one by one. Three promises, with or without them:

* Lossless: an event no repair or rewrite changes is emitted byte-identical; with neither the
  output is the input, whatever the chunking.
* Event-aligned: only whole events are emitted; a partial event is held until its blank line
  arrives, and emitted at `close()` (rewritten when its data is whole JSON).
* Never raises: an internal error switches the pipeline to pass-through for the rest of the
  stream, emits everything it held unchanged, and reports TAP-1.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from mitmllm.protocol.dialect import is_json
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.gate import Gate
from mitmllm.protocol.gate import Verdict
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.repair import At
from mitmllm.protocol.repair import Repairer
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.splice import SpliceError
from mitmllm.protocol.splice import apply
from mitmllm.protocol.splice import splice_event
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import parse_block
from mitmllm.protocol.sse import parse_common
from mitmllm.protocol.sse import u_escape
from mitmllm.protocol.steady import Steady
from mitmllm.protocol.steady import TooDeep
from mitmllm.protocol.steady import attributes
from mitmllm.protocol.steady import unchanged
from mitmllm.protocol.stream import StreamChecker

logger = logging.getLogger(__name__)

#: A repairer's and its mender's attributes that only say where they are in the stream (and
#: their links to each other): they move on with every event.
_REPAIRER_PLACE = frozenset({"_last", "_index", "_offset", "findings", "mender"})
_MENDER_PLACE = frozenset({"repairer"})

#: Reads a parsed payload; returns the edits that rewrite it (none: leave it as it is).
Rewrite = Callable[[Any], Sequence[Edit]]


class TextBlind:
    """A rewrite whose edits follow from a payload without the model's text at its dialect's
    `steady_paths`, and never land there: a steady delta then gets the edits of the delta that
    was certified, so the steady shortcut may take it (`mitmllm.protocol.steady`). The response
    rewrites (restamp, tool names) are; tests/test_rewrite.py proves it for every dialect.

    `marks`: bytes of which every event the rewrite edits holds one, as the upstream sent it,
    unless the event has a ``\\u`` escape (the restamp: its key). Whole events with neither pass
    through unchanged, so a tap may pass them on before reading them (`Pipeline.unmarked`).
    None: the rewrite cannot say."""

    __slots__ = ("marks", "rewrite")

    def __init__(self, rewrite: Rewrite, *, marks: tuple[bytes, ...] | None = None) -> None:
        self.rewrite = rewrite
        self.marks = marks

    def __call__(self, payload: Any) -> Sequence[Edit]:
        return self.rewrite(payload)


class Pipeline:
    def __init__(
        self,
        checker: StreamChecker,
        rewrites: Sequence[Rewrite] = (),
        *,
        on_event: Callable[[Event, Any], object] | None = None,
        repairer: Repairer | None = None,
        upstream: StreamChecker | None = None,
        gate: Gate | None = None,
        lazy: bool = False,
    ) -> None:
        if (repairer is None) != (upstream is None):
            raise ValueError(
                "a repairing pipeline needs both the repairer and the upstream checker"
            )
        if gate is not None and on_event is not None:
            raise ValueError("a pipeline hands its events to a gate or to on_event, not both")
        if lazy and (repairer is None or gate is None):
            raise ValueError("only a repairing pipeline with a gate keeps lazy books")
        self.checker = checker  # what the client gets
        self.upstream = upstream if upstream is not None else checker  # what the upstream sent
        self.repairer = repairer
        self.rewrites = tuple(rewrites)
        self.gate = gate  # judges what the client gets (the relay's commit gate)
        self.on_event = on_event if gate is None else gate.push
        self.failed = False
        self.closed = False
        # Lazy: the books of the steady deltas the repairing pipeline takes after commit (the
        # client's checker, the repairs, the gate, `events`) are kept when something reads
        # them (`settle`, and before the full way reads an event, and at the end), not per
        # chunk; for an inspected flow with repairs on, whose tap settles before the flow is
        # reported, and the relay. A gate that lets each chunk out as it is judged (the
        # relay's: `Gate.collect`) is told at once (`_tell`): its progress runs the timers.
        self.lazy = lazy
        self._tell = lazy and gate is not None and gate.collect
        self._owed = 0  # steady deltas taken, not yet in the books
        self._owed_size = 0
        self._owed_at = (0, 0)  # the last one's index and offset upstream
        self._owed_texts: list[str] = []
        # The checker's books of the chunks of steady deltas `Steady.whole` takes are kept
        # when something reads them (`_pay`): without repairs (`skim`), and, lazy, the
        # upstream's with them (`feed`); how many, their bytes, their texts for its sink, and
        # the last chunk (where its last delta starts)
        self._due = 0
        self._due_size = 0
        self._due_texts: list[bytes] = []
        self._due_chunk = b""
        self._due_taken = 0
        self._quick = False  # the next chunk may be such deltas (`feed`)
        # Without repairs: the shortcut, when the next chunk may be all steady deltas (a
        # template learned, nothing buffered or held), so that `feed` asks it first (`skim`'s
        # checks made once, after the full way read a chunk, not on every chunk)
        self._lane: Steady | None = None
        self.events = 0
        self.rewritten = 0
        #: the unterminated tail passed on at the end, rewritten like any event when its data
        #: is whole JSON (empty until closed)
        self.trailing = b""
        #: What every event a rewrite may change holds (`TextBlind`): () without rewrites,
        #: None where a rewrite cannot say
        self.marks: tuple[bytes, ...] | None = ()
        for r in self.rewrites:
            marks = r.marks if isinstance(r, TextBlind) else None
            self.marks = None if marks is None or self.marks is None else self.marks + marks
        self._marks_read: bytes | None = None  # the template `marked_steady` read last
        self._marked = False
        # Steady deltas are accepted by their bytes only where nothing reads the events one by
        # one, no repair could change one, and every rewrite is text-blind (its edits are those
        # of the certified delta): `mitmllm.protocol.steady`.
        self.steady = (
            Steady.of(checker)
            if repairer is None
            and self.on_event is None
            and all(isinstance(r, TextBlind) for r in self.rewrites)
            else None
        )
        # With a repairer and a gate (the relay; repairs on an inspected flow), steady deltas
        # after commit go by their bytes too, once one is proven a no-op for both checkers, the
        # repairs and the gate, and its rewrite (text-blind, as above) the certified delta's;
        # where each event carries a count, the repairs' count too (`Mender.COUNTED`). A
        # template is learned only from a delta that left every part as it was (the client's
        # checker wanted its count, the repairs renumbered nothing) and forgotten at any other
        # event, so a run of steady deltas keeps them all in step.
        validator = self.upstream.validator
        mender = repairer.mender if repairer is not None else None
        self.gated = (
            Steady.of(self.upstream)
            if repairer is not None
            and gate is not None
            and all(isinstance(r, TextBlind) for r in self.rewrites)
            and validator is not None
            and (validator.STEADY_COUNTED is None or (mender is not None and mender.COUNTED))
            else None
        )

    @property
    def defers(self) -> bool:
        """May whole events go on before the pipeline reads them? Where it is inspect-only,
        or its rewrites say which events they may change (`unmarked`), and no repair or
        anything else reads its events one by one."""
        return self.repairer is None and self.on_event is None and self.marks is not None

    def unmarked(self, data: bytes) -> bool:
        """Do the whole events `data` hold nothing a rewrite may change (`TextBlind.marks`), so
        the pipeline passes them on as they are? Only where it `defers`."""
        marks = self.marks
        if not marks:
            return marks is not None
        find = data.find  # (`find` takes half the time `in` does on a short chunk)
        for mark in marks:
            if find(mark) != -1:
                return False
        return not u_escape(data)

    def marked_steady(self) -> bool:
        """Do the steady deltas hold a mark, as their template has them? Then none of them is
        `unmarked` (Chat's and Gemini's deltas carry the model; Anthropic's and Responses'
        do not)."""
        steady = self.steady
        if steady is None or steady.prefix is None or not self.marks:
            return False
        if steady.prefix is not self._marks_read:  # a template is read once
            self._marks_read = steady.prefix
            self._marked = not all(
                self.unmarked(part) for part in (steady.prefix, steady.mid, steady.suffix)
            )
        return self._marked

    @property
    def holds(self) -> bool:
        """Does the pipeline hold the start of an event (its output lags its input)?"""
        steady = self.steady
        return bool(self.upstream.decoder.pending) or (steady is not None and steady.open)

    @property
    def findings(self) -> Findings:
        """The upstream's findings (and the repairs made): the flow's."""
        return self.upstream.findings

    def feed(self, chunk: bytes) -> bytes:
        """Process one chunk; returns the bytes of the events it completed (maybe b"")."""
        lane = self._lane
        if lane is not None:
            # Without repairs, a template learned, nothing buffered or held: the common chunk
            # is whole steady deltas (`skim`, its checks made once when the full way has read
            # a chunk, not on every chunk)
            due = self._due
            try:
                if len(chunk) < lane.lone:  # one event at most (most upstreams write so)
                    out = lane.take_one(chunk)
                    if out is not None:
                        self._due = due + 1
                        self._due_size += len(chunk)
                        self.events += 1
                        if lane.rewrites:
                            self.rewritten += 1
                        return out  # (rewritten, or the chunk itself)
                n = lane.whole(self.checker, chunk, due)
                if n:
                    self._due = due + n
                    self._due_size += len(chunk)
                    texts = lane.due_texts
                    if texts:
                        self._due_texts += texts
                    self.events += n
                    if lane.rewrites:
                        self.rewritten += n
                        return lane.whole_out
                    return chunk  # the common chunk, passed on as the very object
                if due:
                    self._pay()  # the full way reads the checker's books
            except Exception as e:  # a bug must not eat the stream: all of it, as it came
                return self._fail(e, []) + chunk
            self._lane = None  # until the full way has read this chunk
        elif self._quick:
            # Lazy, after commit, nothing buffered, a template learned: the common chunk is
            # whole steady deltas, all their books kept later (`_pay`, `settle`)
            gated = self.gated
            assert gated is not None
            due = self._due
            try:
                if len(chunk) < gated.lone:  # one event at most, as in the lane
                    out = gated.take_one(chunk)
                    if out is not None:
                        self._due = due + 1
                        self._due_size += len(chunk)
                        self._due_chunk = chunk
                        self._due_taken = 1
                        if self._tell:
                            self.gate.passed(out, 1)  # type: ignore[union-attr]
                        return out
                whole = gated.whole(self.upstream, chunk, due)
                if whole:
                    self._due = due + whole
                    self._due_size += len(chunk)
                    texts = gated.due_texts
                    if texts:
                        self._due_texts += texts
                    self._due_chunk = chunk
                    self._due_taken = whole
                    taken = gated.whole_out if gated.rewrites else chunk
                    if self._tell:
                        self.gate.passed(taken, whole)  # type: ignore[union-attr]
                    return taken
                self._pay()  # the full way reads the upstream's books
            except Exception as e:  # a bug must not eat the stream: all of it, as it came
                return self._fail(e, []) + chunk
            self._quick = False  # until the full way has read this chunk
        if self.failed:
            return chunk
        if self.repairer is not None:  # (no `steady` then: `gated` takes its deltas)
            mended = self._feed_repairing(chunk, self.repairer)
            if self.lazy:
                gated, gate = self.gated, self.gate
                self._quick = (
                    not self.failed
                    and gated is not None
                    and gated.prefix is not None
                    and gated.tiles is not None
                    and gate is not None
                    and gate.committed  # (as `_feed_repairing` asks)
                    and not self.upstream.decoder.pending
                )
            return mended
        if lane is None and self.skim(chunk):  # (a lane tried it already)
            steady = self.steady
            assert steady is not None
            if steady.rewrites:
                return steady.whole_out
            return chunk  # the common chunk, passed on as the very object
        out = self._read(chunk)
        steady = self.steady
        if (
            steady is not None
            and steady.prefix is not None
            and not steady.held
            and not self.checker.decoder._buf
            and not self.failed
        ):
            self._lane = steady
        return out

    def _read(self, chunk: bytes) -> bytes:
        """`feed` for a chunk that is not all steady deltas taken whole (without repairs)."""
        checker = self.checker
        decoder = checker.decoder
        steady = self.steady
        sent: list[bytes] = []  # what the client gets of the events the shortcut took
        rest = chunk
        held = decoder.pending
        own = True  # what goes out is `chunk`'s bytes, in order, from its start
        if steady is not None:
            before = steady.held[:] if steady.held else ()
            try:
                counted = checker.events
                if steady.open:
                    own = False
                    n = steady.resume(checker, rest, sent)
                    if n is None:  # no steady event after all: the full path reads it
                        rest = steady.release() + rest
                        held = 1
                    else:
                        rest = b"" if n < 0 else rest[n:]
                if rest and not held and not steady.open and steady.prefix is not None:
                    n = steady.take(checker, rest, sent)
                    rest = rest[n:]
                done = checker.events - counted
            except Exception as e:  # a bug must not eat the stream: all of it, as it came
                steady.release()
                return self._fail(e, []) + b"".join(before) + chunk
            self.events += done
            if steady.rewrites and done:
                self.rewritten += done
                own = False
            if not rest:
                if len(sent) == 1:
                    return sent[0]  # `chunk` itself when the shortcut took all of it
                return b"".join(sent)
        try:
            events = decoder.feed(rest)
        except Exception as e:  # a codec bug must not eat the stream
            return b"".join(sent) + self._fail(e, [])
        if not events:
            return b"".join(sent)
        out = self._process(events)
        whole = own and not held and not decoder.pending
        if steady is not None and not whole and decoder.pending and not self.failed:
            self._adopt(steady)
        if out is None:  # nothing changed: the events' bytes as they came
            if whole:
                return chunk  # the chunk was whole events: pass the very object on
            out = events[0].raw if len(events) == 1 else b"".join([ev.raw for ev in events])
        return b"".join(sent) + out if sent else out

    def skim(self, data: bytes) -> bool:
        """Has `data` been taken as `feed` takes it, for being nothing but whole steady deltas
        (`Steady.whole`), passed on as they are (rewritten: `Steady.whole_out`)? False: none
        of it was taken (and the books of what was taken before are kept, `_pay`)."""
        steady = self.steady
        due = self._due
        if steady is None or steady.held or self.failed or self.checker.decoder._buf:
            taken = 0
        else:
            taken = steady.whole(self.checker, data, due)
        if not taken or steady is None:
            if due:
                self._pay()  # the full way reads the checker's books
            return False
        # the checker's books of the deltas taken are kept when something reads them (`_pay`)
        self._due = due + taken
        self._due_size += len(data)
        texts = steady.due_texts
        if texts:
            self._due_texts += texts
        self.events += taken
        if steady.rewrites:
            self.rewritten += taken
        return True

    def _adopt(self, steady: Steady) -> None:
        """The decoder holds the start of an event: when it starts as a steady delta, the
        shortcut takes it on, so that its later pieces are matched rather than buffered."""
        prefix = steady.next_prefix(self.checker)
        buf = self.checker.decoder._buf
        if prefix is None or not buf.startswith(prefix[: len(buf)]):
            return
        pending = bytes(buf)
        none: list[bytes] = []
        if steady.take(self.checker, pending, none) == len(pending) and steady.open:
            self.checker.decoder.hand_over()

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
            self._pay()
        except Exception as e:
            return self._fail(e, [])
        lead = b""
        steady = self.steady
        if steady is not None and steady.open:  # a cut final event: the full path's now
            lead = self._full(steady.release())
            if self.failed:
                return lead
        try:
            pairs = self.checker.close()
        except Exception as e:
            return lead + self._fail(e, [])
        out = [lead]
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
            self.trailing = self.checker.trailing
            held = self._fail(e, [ev for ev, _ in pairs[len(out) - 1 :]])
            return b"".join(out) + held + self.trailing
        self.trailing = partial.raw if partial is not None else b""
        out.append(self.trailing)
        return b"".join(out)

    def _full(self, data: bytes) -> bytes:
        """`data` the full way: decoded, parsed, rewritten, checked; the bytes to emit."""
        try:
            events = self.checker.decoder.feed(data)
        except Exception as e:  # a codec bug must not eat the stream
            return self._fail(e, [])
        if not events:
            return b""
        out = self._process(events)
        if out is None:
            out = b"".join([ev.raw for ev in events])
        return out

    def _edits(self, payload: Any) -> list[Edit]:
        """What the rewrites change in `payload`."""
        edits: list[Edit] = []
        for rewrite in self.rewrites:
            edits += rewrite(payload)
        return edits

    def _rewrite(self, ev: Event, payload: Any) -> Event:
        """`ev` with the rewrites' edits spliced in (and made to `payload` too)."""
        edits = self._edits(payload)
        if not edits:
            return ev
        try:
            new = splice_event(ev, edits)
        except SpliceError as e:  # the flow's finding: the client got the upstream's value
            self.findings.add(
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

    def _process(self, events: list[Event]) -> bytes | None:
        """Parse, rewrite and check `events` (no repairer); the bytes to emit, or None when
        they are the events' own bytes (no rewrite changed any), so the caller builds nothing."""
        checker = self.checker
        rewrites = self.rewrites
        on_event = self.on_event
        steady = self.steady
        changed = False
        for i, ev in enumerate(events):
            try:
                if steady is not None and steady.prefix is not None:
                    # a steady delta the decoder cut from the chunk: no need to parse it either
                    sent: list[bytes] = []
                    raw = ev.raw
                    if steady.take(checker, raw, sent, decoded=True) == len(raw):
                        if steady.rewrites:
                            self.rewritten += 1
                            new_raw = b"".join(sent)
                            events[i] = parse_common(new_raw, ev.index, ev.offset) or parse_block(
                                new_raw, ev.index, ev.offset
                            )
                            changed = True
                        continue
                payload = checker.parse(ev)
                token = steady.before(checker, ev, payload) if steady is not None else None
                new = self._rewrite(ev, payload) if rewrites and is_json(payload) else ev
                checker.check(new, payload)
                if steady is not None:  # then nothing else reads the events
                    if token is None:
                        steady.forget()
                    else:
                        steady.after(checker, ev, payload, token, new, self._edits)
                elif on_event is not None:
                    on_event(new, payload)
            except Exception as e:
                self.events += i
                return b"".join(ev.raw for ev in events[:i]) + self._fail(e, events[i:])
            if new is not ev:
                events[i] = new
                changed = True
        self.events += len(events)
        if not changed:
            return None
        return events[0].raw if len(events) == 1 else b"".join([ev.raw for ev in events])

    # --- with repairs ----------------------------------------------------------------------------

    def _feed_repairing(self, chunk: bytes, repairer: Repairer) -> bytes:
        decoder = self.upstream.decoder
        head = b""
        rest = chunk
        gated, gate = self.gated, self.gate
        if (
            gated is not None
            and gated.prefix is not None
            and gate is not None
            and gate.committed
            and not decoder.pending
        ):
            index, offset = decoder.index, decoder.offset
            try:
                # the common chunk, whole steady deltas: one match (`Steady.whole`), and the
                # last one starts with the template's prefix (the texts hold no quote); lazy,
                # `feed` has tried that (`_quick`)
                whole = (
                    gated.whole(self.upstream, chunk)
                    if gated.tiles is not None and not self.lazy
                    else 0
                )
                if whole:
                    last = gated.last_of(chunk, whole)
                    out = gated.whole_out if gated.rewrites else chunk
                    self._passed(index + whole - 1, offset + last, whole, len(chunk), out)
                    return out
                sent: list[bytes] = []  # what the client gets of the events taken
                n = gated.take(self.upstream, chunk, sent, hold=False)
                if n:
                    k = decoder.index - index
                    head = sent[0] if len(sent) == 1 else b"".join(sent)
                    self._passed(index + k - 1, offset + gated.last_start, k, n, head)
            except Exception as e:  # a bug must not eat the stream: all of it, as it came
                return self._fail(e, []) + chunk
            if n == len(chunk):
                return head
            rest = chunk[n:]
        try:
            events = decoder.feed(rest)
        except Exception as e:  # a codec bug must not eat the stream
            return head + self._fail(e, [])
        if not events:
            return head
        return head + self._process_repairing(events, repairer)

    def _passed(
        self, index: int, offset: int, events: int, size: int, out: bytes, told: bool = False
    ) -> None:
        """Steady deltas after commit (`size` bytes of the upstream's, `out` the client's, as
        rewritten; the last at `index` and `offset` upstream), which the upstream's checker
        counted: what the repairs, the client's checker and the gate would have done with
        them, at once or when `settle`d (`lazy`; a gate `_tell`ed at once unless `told`)."""
        assert self.gated is not None
        text = self.gated.taken_text
        if self.lazy:
            if self._tell and not told:
                self.gate.passed(out, events)  # type: ignore[union-attr]
            self._owed += events
            self._owed_size += size
            self._owed_at = (index, offset)
            if text is not None:
                self._owed_texts.append(text)
            return
        self._book(At(index, offset), events, size, out, text)

    def _pay(self) -> None:
        """Keep the checker's books of the chunks of steady deltas taken whole since the last
        time, as `Steady.whole` would have one chunk at a time, in one go: before the full way
        reads an event, at the end, in `settle`. With repairs (`lazy`), the upstream checker's,
        and the other parts' books are owed then (`_passed`)."""
        events = self._due
        if not events:
            return
        steady = self.steady
        if steady is not None:  # no repairs: the checker's books, and no others
            size, texts = self._due_size, self._due_texts
            self._due, self._due_size, self._due_texts = 0, 0, []
            steady._count(self.checker, events, size, texts or None)
            return
        gated = self.gated
        assert gated is not None
        decoder = self.upstream.decoder
        size, chunk = self._due_size, self._due_chunk
        # the last delta: the last chunk's last one (`whole` took that chunk last)
        last = size - len(chunk) + gated.last_of(chunk, self._due_taken)
        index, offset = decoder.index + events - 1, decoder.offset + last
        texts = self._due_texts
        self._due, self._due_size, self._due_texts, self._due_chunk = 0, 0, [], b""
        gated._count(self.upstream, events, size, texts or None)
        self._passed(index, offset, events, size, b"", told=True)  # (`feed` told the gate)

    def settle(self) -> None:
        """Keep the books of the steady deltas taken since the last time (`lazy`)."""
        self._pay()
        events = self._owed
        if not events:
            return
        texts = self._owed_texts
        text = None if not texts else texts[0] if len(texts) == 1 else "".join(texts)
        last, size = At(*self._owed_at), self._owed_size
        self._owed, self._owed_size, self._owed_texts = 0, 0, []
        self._book(last, events, size, b"", text)

    def _book(self, last: At, events: int, size: int, out: bytes, text: str | None) -> None:
        """What `_passed` says, in the books."""
        assert self.repairer is not None and self.gate is not None and self.gated is not None
        gated = self.gated
        client = self.checker
        client.skipped(events)
        validator = client.validator
        for name in gated.counters:
            setattr(validator, name, getattr(validator, name) + events)
        if text is not None and validator is not None:  # the upstream's checker keeps them
            sink = validator.steady_sink()
            if sink is not None:
                sink.append(text)
        if gated.counted is not None:  # the repairs' count of the client's events
            mender = self.repairer.mender
            assert mender is not None and mender.COUNTED is not None
            setattr(mender, mender.COUNTED, getattr(mender, mender.COUNTED) + events)
        self.repairer.passed(last, events, size)
        if not self._tell:
            self.gate.passed(out, events)
        self.events += events
        if gated.rewrites:
            self.rewritten += events

    def _process_repairing(self, events: list[Event], repairer: Repairer) -> bytes:
        upstream = self.upstream
        gated, gate = self.gated, self.gate
        out: list[bytes] = []
        for i, ev in enumerate(events):
            try:
                live = gated is not None and gate is not None and gate.committed
                if live and gated.prefix is not None:  # type: ignore[union-attr]
                    raw = ev.raw
                    pieces: list[bytes] = []  # what the client gets of it
                    if gated.take(upstream, raw, pieces, decoded=True, hold=False) == len(raw):  # type: ignore[union-attr]
                        taken = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                        self._passed(ev.index, ev.offset, 1, len(raw), taken)
                        out.append(taken)
                        continue
                self.settle()  # the full way reads the books
                payload = upstream.parse(ev)
                notes = upstream.reported  # (an unread block has its notes once read)
                token = gated.before(upstream, ev, payload, same=False) if live else None  # type: ignore[union-attr]
                state = self._gated_state() if token is not None else None
                upstream.check(ev, payload)
                ev.notes = notes  # the grammar findings of the block, for the client's side too
                pairs = repairer.feed(ev, payload)
                sent = None  # the client's event, where the rewrites changed the one mended
                for mended, mended_payload in pairs:
                    emitted = self._emit(mended, mended_payload)
                    if emitted.raw is not mended.raw:
                        sent = emitted
                    out.append(emitted.raw)
                if gated is not None:
                    if token is None:
                        gated.forget()
                    else:
                        same = self._gated_same(state, ev, payload, pairs)
                        edits = self._edits if self.rewrites else None
                        gated.after(upstream, ev, payload, token, sent, edits, also=same)
            except Exception as e:
                return b"".join(out) + self._fail(e, events[i:])
        return b"".join(out)

    def _gated_state(self) -> Any:
        """What a steady delta must leave as it was besides the upstream's checker: the
        client's checker, the repairs (but where they are in the stream) and the gate."""
        client, repairer, gate = self.checker, self.repairer, self.gate
        assert repairer is not None and gate is not None
        try:
            return (
                attributes(client.validator),
                len(client.findings.items),
                sum(client.findings.suppressed.values()),
                attributes(repairer, skip=_REPAIRER_PLACE),
                attributes(repairer.mender, skip=_MENDER_PLACE) if repairer.mender else None,
                (gate.progress, gate._data, gate.events),
            )
        except TooDeep:
            return None

    def _gated_same(self, state: Any, ev: Event, payload: Any, pairs: list[Any]) -> bool:
        """Did the event leave `state` as it was, pass the repairs unchanged and go out?"""
        if state is None or len(pairs) != 1:
            return False
        mended, mended_payload = pairs[0]
        if mended.raw is not ev.raw or mended_payload is not payload:
            return False
        # Where the checkers keep the texts, the delta's is the only other change the client's
        # may show: the upstream's last text (`Steady.after` proves it the delta's), taken out
        # while its picture is taken
        sink = self.checker.validator.steady_sink() if self.checker.validator else None
        kept = self.upstream.validator.steady_sink() if self.upstream.validator else None
        if (sink is None) != (kept is None):
            return False
        text: str | None = None
        if sink is not None:
            if not sink or not kept or sink[-1] != kept[-1]:
                return False
            text = sink.pop()
        try:
            now = self._gated_state()
        finally:
            if sink is not None and text is not None:
                sink.append(text)
        if now is None:
            return False
        client, repairer, gate = self.checker, self.repairer, self.gate
        assert repairer is not None and gate is not None and self.gated is not None
        if gate.verdict is not Verdict.PASS:
            return False
        progress, data, events = state[5]
        if now[5] != (progress + 1, data + 1, events + 1):
            return False
        validator = client.validator
        assert validator is not None
        gated = self.gated
        if not unchanged(state[0], now[0], gated.counters, gated.context):
            return False
        if state[1:4] != now[1:4]:
            return False
        mender = repairer.mender
        if mender is None:
            return True
        # the repairs' count of the client's events (`Mender.COUNTED`) grew by one
        return unchanged(state[4], now[4], (mender.COUNTED,) if mender.COUNTED else (), ())

    def _emit(self, ev: Event, payload: Any) -> Event:
        """Rewrite and check one event of what the client gets."""
        if self.rewrites and is_json(payload):
            ev = self._rewrite(ev, payload)
        self.checker.accept(ev, payload)
        self.events += 1
        if self.on_event is not None:
            self.on_event(ev, payload)
        return ev

    def _close_repairing(self, repairer: Repairer) -> bytes:
        upstream = self.upstream
        try:
            self.settle()
            events, partial = upstream.decoder.close()
            out = [self._process_repairing(events, repairer)]
            if self.failed:
                return out[0]
            notes = partial.notes if partial is not None else ()
            upstream.end(partial)
            if partial is not None:
                partial.notes = notes
            pairs, tail = repairer.close(partial)
            out += [self._emit(ev, payload).raw for ev, payload in pairs]
            client_partial = None
            if tail and partial is not None:
                client_partial = partial.at(repairer.index, repairer.offset)
                if self.rewrites:
                    client_partial = self._rewrite_partial(client_partial)
                    tail = client_partial.raw
            self.checker.end(client_partial, repairer.offset + len(tail))
            self.trailing = tail
            out.append(tail)
        except Exception as e:
            return self._fail(e, [])
        return b"".join(out)

    def stop(self) -> None:
        """Pass the rest of the stream on as it comes, read no more of it (a tap's last line of
        defence, when something of its own broke): no shortcut takes a chunk either."""
        self.failed = True
        self._quick = False
        self._lane = None

    def _fail(self, error: Exception, unprocessed: list[Event]) -> bytes:
        """Switch to pass-through; return every byte held so far, unchanged."""
        logger.exception("mitmllm pipeline failed; passing the rest of the stream through")
        self.stop()
        with contextlib.suppress(Exception):  # what was taken before counts, if it can
            self.settle()
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
        if self.steady is not None:  # a cut event the shortcut held (the decoder held none)
            held += self.steady.release()
        return held
