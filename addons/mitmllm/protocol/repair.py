"""Repairs: mend a broken event stream without inventing content (sans-I/O).

Theory of operation
-------------------
A `Repairer` sits between the validation of what the upstream sent and what the client gets. It
sees whole events (never bytes, never sockets), each with its parsed payload, and returns the
events the client should get instead, each at its place in the client's stream. Two layers:

* the SSE layer, here, for every wire format: a block that a keep-alive cut short is held until
  the next block shows whether it continues there, and the two are rejoined with the keep-alive
  taken out (FIX-1 between an event's lines, FIX-2 inside a line); a final event without its blank
  line is terminated at the end of the stream (FIX-3);
* the wire format's layer, a `Mender` from `Dialect.mender` (in the dialect's module, next to
  the validator whose rules it answers): renumbering indices, dropping a repeated start event,
  closing what a complete answer left open, adding a success terminator the upstream did not send.

What a repair may do is narrow on purpose. It removes keep-alives and foreign sentinels, rejoins
what they cut, renumbers indices and sequence numbers, drops a start event that another start
replaced before any content, and adds only the structural events a complete answer implies (a
block stop, ``message_stop``, ``[DONE]``) once the upstream itself said the answer is complete
(a stop reason, a finish reason). It never writes text, tool arguments, a stop reason or usage;
what cannot be mended without them stays broken, and the commit gate fails it
(`mitmllm.protocol.gate`).

Three promises, checked by property tests: an event no repair touches passes byte-identical (so a
valid stream is a no-op); the output depends only on the events, not on how the bytes were
chunked; and a stream whose breakage a repair covers validates without an error finding after it.

Every repair is recorded as a finding of its FIX-* rule (`mitmllm.protocol.rules`) in the
upstream's findings, at the upstream event it mended.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

from mitmllm.protocol.findings import Findings
from mitmllm.protocol.payload import INVALID
from mitmllm.protocol.payload import NO_DATA
from mitmllm.protocol.payload import SENTINEL
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.splice import SpliceError
from mitmllm.protocol.splice import replaced
from mitmllm.protocol.splice import splice_event
from mitmllm.protocol.sse import KNOWN_FIELDS
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import encode
from mitmllm.protocol.sse import parse_block

if TYPE_CHECKING:
    from mitmllm.protocol.dialect import Dialect

Pair = tuple[Event, Any]

#: Comments that upstreams and gateways use as keep-alives; a cut line whose repair is ambiguous
#: is rejoined only where the removed text is one of these (or a comment seen in the stream).
KEEPALIVE_COMMENTS = frozenset(
    {"", "keep-alive", "keepalive", "ping", "heartbeat", "hb", "OPENROUTER PROCESSING"}
)
#: How many comment or blank blocks may sit between the halves of an event split by keep-alives.
MAX_BETWEEN = 16
#: Where renumbering puts an event that names something never started whose number is taken
#: in the client's stream: it keeps naming nothing (no client numbers this high).
ORPHANS = 1_000_000


def renumbered(mapping: dict[int, int], index: int, taken: int) -> int:
    """The client's number for an upstream `index` that an event refers to: its mapping, or,
    for one never started, itself unless the client's first `taken` numbers include it."""
    mine = mapping.get(index)
    if mine is not None:
        return mine
    return index if index >= taken else ORPHANS + index


_EOL = re.compile(rb"\r\n|\r|\n")


# --- the wire format's layer ----------------------------------------------------------------------


class Mender:
    """The repairs of one wire format, for one stream. Subclasses live in the dialect modules.

    `feed` gets each whole event (after the SSE-level repairs) and returns what the client gets
    in its place: the same pair, an edited one, nothing (held or dropped), or more than one.
    `close` returns what the end of the stream releases or adds. The helpers make and edit
    events in the stream's own framing and record each repair.
    """

    #: Where the format numbers its events (Responses' sequence_number): the attribute that
    #: holds the number the client's next event carries. An event that carries it passes
    #: unchanged and moves it on by one, so steady deltas (`mitmllm.protocol.steady`) that
    #: carry the count the upstream's checker wants go by their bytes while it is that count.
    COUNTED: ClassVar[str | None] = None

    def __init__(self) -> None:
        self.repairer: Repairer | None = None

    def feed(self, ev: Event, payload: Any) -> list[Pair]:
        return [(ev, payload)]

    def close(self) -> list[Pair]:
        return []

    def held(self) -> list[Pair]:
        """What `feed` holds back for now (given up after an internal error)."""
        return []

    # --- helpers ----------------------------------------------------------------------------------

    def fix(self, rule_id: str, detail: str, at: Event | None = None) -> None:
        """Record a repair at the upstream event it mends (default: the last one seen)."""
        assert self.repairer is not None
        self.repairer.fix(rule_id, detail, at)

    def edit(self, ev: Event, payload: Any, path: Sequence[str | int], value: Any) -> Pair:
        """The event with one value of its data replaced, every other byte of the block kept
        (fields, comments, spacing, line ends: `mitmllm.protocol.splice`), and its payload
        with that value; the payload the upstream's checker saw is not changed."""
        edits = [Edit(tuple(path), value)]
        try:
            new = splice_event(ev, edits)
        except SpliceError:  # the path was read from the parsed payload: not expected
            return ev, payload
        new.notes = ev.notes  # the same framing: the same grammar findings
        return new, replaced(payload, edits)

    def tail_note(self) -> str:
        """For a repair that adds events at the end: what it drops of a cut final event."""
        assert self.repairer is not None
        n = self.repairer.tail
        return f"; the {n} bytes of a cut final event before it were dropped" if n else ""

    def make(self, data: str, event: str | None = None) -> Pair:
        """A new event in the stream's framing (its line ends)."""
        assert self.repairer is not None
        raw = encode(data, event=event, eol=self.repairer.eol)
        ev = parse_block(raw, 0, 0)
        return ev, self.repairer.payload_of(ev)


# --- the SSE layer --------------------------------------------------------------------------------


class Repairer:
    """Mends one stream: the SSE-level repairs, then the wire format's `Mender` (if any).

    `feed` takes the events of what the upstream sent, in order, each with its payload; `close`
    takes the unterminated tail (if any) at the end of the stream. Both return the events the
    client gets, placed in the client's stream (index and offset), and `close` also the bytes of
    a tail that stays unterminated. Repairs are recorded in `findings` (the upstream's).
    """

    def __init__(
        self, dialect: Dialect | None, findings: Findings | None = None, *, request: Any = None
    ) -> None:
        self.findings = findings if findings is not None else Findings()
        self.sentinel = dialect.sentinel if dialect is not None else "[DONE]"
        self.mender = dialect.mender(request) if dialect is not None else None
        if self.mender is not None:
            self.mender.repairer = self
        self.eol = "\n"
        self._eol_known = False
        self.tail = 0  # bytes of an unterminated final event, while the mender closes
        self.repairs = 0  # repairs made (including repeats the findings cap hides)
        self._held: Pair | None = None  # a block that may continue in the next one
        self._between: list[Pair] = []  # comments and blanks that came while holding
        self._last: Event | At | None = None  # the last upstream event seen
        self._comments = set(KEEPALIVE_COMMENTS)
        self._index = 0  # the client's next event number
        self._offset = 0  # ... and its byte offset

    @property
    def index(self) -> int:
        """The number of events the client got so far."""
        return self._index

    @property
    def offset(self) -> int:
        """The bytes the client got so far."""
        return self._offset

    def passed(self, last: At, events: int, size: int) -> None:
        """`events` upstream events of `size` bytes, the last one at `last`, that this repairer
        would have passed on unchanged went by unseen (steady deltas: see
        `mitmllm.protocol.steady`)."""
        self._last = last  # where a later repair defaults to
        self._index += events
        self._offset += size

    def held_bytes(self) -> bytes:
        """Everything held back so far, as it came (to pass on unmended after an internal
        error)."""
        held = [*self._release(), *(self.mender.held() if self.mender is not None else ())]
        return b"".join(ev.raw for ev, _ in held)

    # --- the stream -------------------------------------------------------------------------------

    def feed(self, ev: Event, payload: Any) -> list[Pair]:
        self._last = ev
        if not self._eol_known and ev.has_fields:
            m = _EOL.search(ev.raw)
            self.eol = m.group().decode() if m else "\n"
            self._eol_known = True
        if ev.comments and not ev.has_fields:
            self._comments.update(c.strip() for c in ev.comments)
        return self._place(self._mend(self._rejoin(ev, payload)))

    def close(self, partial: Event | None) -> tuple[list[Pair], bytes]:
        """End of stream: what is still held, the tail terminated if it is a whole event, and
        what the wire format adds; then the tail's bytes if it stays unterminated."""
        pairs: list[Pair] = []
        tail = b""
        if partial is not None:
            self._last = partial
            ended = self._terminated(partial)
            if ended is not None:
                pairs += self._rejoin(*ended)
            elif self._held is not None and self._continues(partial):
                joined = self._join(self._held[0], self._terminate_raw(partial.raw), partial)
                if joined is not None:
                    self.fix("FIX-3", "the final event had no terminating blank line", partial)
                    pairs += self._release()[1:]
                    pairs.append(joined)
                else:
                    tail = partial.raw
            else:
                tail = partial.raw
        pairs += self._release()
        out = self._mend(pairs)
        if self.mender is not None:
            self.tail = len(tail)
            added = self.mender.close()
            if added:
                tail = b""  # it would run into the added event; clients discard it anyway
            out += added
        return self._place(out), tail

    def fix(self, rule_id: str, detail: str, at: Event | None = None) -> None:
        where = at if at is not None else self._last
        self.repairs += 1
        self.findings.add(
            rule_id,
            detail,
            event=where.index if where is not None else None,
            offset=where.offset if where is not None else None,
        )

    def payload_of(self, ev: Event) -> Any:
        data = ev.data
        if data is None:
            return NO_DATA
        if data == self.sentinel:
            return SENTINEL
        value, _ = parse_json(data)
        return value

    # --- keep-alives inside events (FIX-1, FIX-2) -------------------------------------------------

    def _rejoin(self, ev: Event, payload: Any) -> list[Pair]:
        out: list[Pair] = []
        held = self._held
        if held is not None:
            if held[1] is NO_DATA and _is_keepalive(ev) and len(self._between) < MAX_BETWEEN:
                self._between.append((ev, payload))  # more keep-alives between the halves
                return []
            joined = self._join(held[0], ev.raw, ev)
            out = self._release()
            if joined is not None:
                return [*out[1:], joined]  # the keep-alives first, then the whole event
        if self._holdable(ev, payload):
            self._held = (ev, payload)
            return out
        out.append((ev, payload))
        return out

    def _release(self) -> list[Pair]:
        if self._held is None:
            return []
        out = [self._held, *self._between]
        self._held, self._between = None, []
        return out

    def _holdable(self, ev: Event, payload: Any) -> bool:
        """A block a keep-alive may have cut: data that is not JSON, or a named event without
        data."""
        return payload is INVALID or (payload is NO_DATA and ev.event is not None)

    def _continues(self, ev: Event) -> bool:
        """Does the block start with a line that is neither a field nor a comment (the rest of a
        line cut short)?"""
        raw = ev.raw
        if raw[:1] in (b":", b"\r", b"\n", b""):
            return False
        m = _EOL.search(raw)
        first = raw[: m.start()] if m else raw
        return first.split(b":", 1)[0].decode("utf-8", "replace") not in KNOWN_FIELDS

    def _join(self, a: Event, b_raw: bytes, b: Event) -> Pair | None:
        """`a` and the block `b` after it (its bytes `b_raw`) as one event, or None if they are
        not one event that a keep-alive cut."""
        if self._continues(b):
            return self._join_line(a, b_raw)
        if a.data is None and b.event is None and b.data is not None:
            return self._join_fields(a, b_raw)
        return None

    def _join_fields(self, a: Event, b_raw: bytes) -> Pair | None:
        """FIX-1: `event: X` (and a keep-alive with its blank line), then the nameless data."""
        lines = [
            line for line in _lines(a.raw) if line.strip(b"\r\n") and not line.startswith(b":")
        ]
        joined = self._event(b"".join(lines) + b_raw, a)
        if joined is None or not isinstance(joined[1], dict) or joined[1].get("type") != a.event:
            return None  # only a name its data repeats shows the two are one event
        self.fix("FIX-1", f"keep-alive between the lines of {a.event!r} removed", a)
        return joined

    def _join_line(self, a: Event, b_raw: bytes) -> Pair | None:
        """FIX-2: a line cut by a keep-alive (``: comment`` and a blank line written into it),
        whose rest starts the next block."""
        lines = _lines(a.raw)
        while lines and not lines[-1].strip(b"\r\n"):
            lines.pop()  # the blank line that ended the block
        while lines and lines[-1].startswith(b":"):
            lines.pop()  # more keep-alive comment lines
        if not lines:
            return None
        last = lines[-1].rstrip(b"\r\n")
        head = b"".join(lines[:-1])
        sep = last.find(b":")
        if sep == -1:
            return None
        # Where the keep-alive starts in the cut line: at one of its colons, or it was a bare
        # blank line (nothing to remove). The rightmost colon first.
        cuts = [i for i in range(len(last) - 1, sep, -1) if last[i] == 0x3A]
        cuts.append(len(last))
        found: list[tuple[Pair, str]] = []
        for cut in cuts:
            removed = last[cut:]
            if b'"' in removed:
                continue  # a comment has no quotes; JSON after a colon usually does
            joined = self._event(head + last[:cut] + b_raw, a)
            if joined is not None:
                found.append((joined, removed[1:].decode("utf-8", "replace").strip()))
        if len(found) > 1:  # ambiguous: only a comment that is a known keep-alive decides
            found = [f for f in found if f[1] and f[1] in self._comments]
        if len(found) != 1:
            return None
        joined, comment = found[0]
        self._comments.add(comment)
        what = f"keep-alive ': {comment}'" if comment else "a blank line"
        self.fix("FIX-2", f"{what} spliced inside a line removed", a)
        return joined

    def _event(self, raw: bytes, at: Event) -> Pair | None:
        """`raw` as an event, if it is one whole event whose data parses (and whose name, if it
        has one, is its data's type)."""
        ev = parse_block(raw, at.index, at.offset)
        payload = self.payload_of(ev)
        if payload is NO_DATA or payload is INVALID:
            return None
        if isinstance(payload, dict) and ev.event is not None:
            kind = payload.get("type")
            if isinstance(kind, str) and kind != ev.event:
                return None
        return ev, payload

    # --- the final event (FIX-3) ------------------------------------------------------------------

    def _terminate_raw(self, raw: bytes) -> bytes:
        for eol in (b"\r\n", b"\n", b"\r"):
            if raw.endswith(eol):
                return raw + eol
        m = _EOL.search(raw)
        eol = m.group() if m else self.eol.encode()
        return raw + eol + eol

    def _terminated(self, partial: Event) -> Pair | None:
        """The unterminated tail with its blank line, if it is a whole event."""
        if partial.data is None:
            return None
        ended = self._event(self._terminate_raw(partial.raw), partial)
        if ended is None:
            return None
        self.fix("FIX-3", "the final event had no terminating blank line", partial)
        return ended

    # --- the wire format and the client's stream --------------------------------------------------

    def _mend(self, pairs: list[Pair]) -> list[Pair]:
        mender = self.mender
        if mender is None or not pairs:
            return pairs
        out: list[Pair] = []
        for ev, payload in pairs:
            out += mender.feed(ev, payload)
        return out

    def _place(self, pairs: list[Pair]) -> list[Pair]:
        """Number the events as the client's stream has them."""
        out = []
        for ev, payload in pairs:
            if ev.index != self._index or ev.offset != self._offset:
                ev = ev.at(self._index, self._offset)
            out.append((ev, payload))
            self._index += 1
            self._offset += len(ev.raw)
        return out


class At:
    """Where an upstream event was, for a repair recorded later at it."""

    __slots__ = ("index", "offset")

    def __init__(self, index: int, offset: int) -> None:
        self.index = index
        self.offset = offset


def _lines(raw: bytes) -> list[bytes]:
    """The lines of a block, each with its line end."""
    out = []
    pos = 0
    for m in _EOL.finditer(raw):
        out.append(raw[pos : m.end()])
        pos = m.end()
    if pos < len(raw):
        out.append(raw[pos:])
    return out


def _is_keepalive(ev: Event) -> bool:
    """A block of comments, or a lone blank line."""
    return ev.is_comment or not ev.raw.strip(b"\r\n")
