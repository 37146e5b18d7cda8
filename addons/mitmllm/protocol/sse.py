"""Incremental, lossless Server-Sent Events codec (sans-I/O).

Theory of operation
-------------------
`Decoder.feed` takes bytes cut at arbitrary boundaries and returns the *blocks* they complete.
A block is everything up to and including the blank line that ends it (WHATWG: the blank line
dispatches the event). Each `Event` keeps its exact `raw` bytes, so the concatenation of all
blocks plus `Decoder.close()`'s trailing bytes is the input, byte for byte. Nothing is normalised
on the way through; parsing only reads.

Lines end at CRLF, LF or CR, and nothing else (U+2028, U+2029, NEL, VT, FF are ordinary
characters, SSE-3). A CR at the very end of the buffered input may be the first half of a CRLF,
so a block whose blank line ends in such a CR waits for the next byte or for `close()` (SSE-4).
Blocks are found on bytes (a CR or LF byte never occurs inside a multi-byte UTF-8 sequence), so
a character split across chunks is simply waited for; a block is decoded as UTF-8 once it is
complete (SSE-1), or, a big one of the common shape where its consumer reports the grammar's
findings, when something reads its data (`Event.unread`).

The scan resumes where the previous one stopped and the buffer is a bytearray whose prefix is
deleted in O(1), so a 32 MiB event arriving in 64 KiB pieces costs linear time.

Grammar findings (SSE-1, 2, 3a, 7, 8, 9, 10, 11, 12, 16, 17) are reported here; findings that
depend on the wire format (SSE-13 exceptions, SSE-14/15 at end of stream, payload rules) belong
to `mitmllm.protocol.stream`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity

BOM = b"\xef\xbb\xbf"
KNOWN_FIELDS = frozenset({"event", "data", "id", "retry"})

# Two line terminators in a row: the end of a line, then a blank line. Atomic groups keep a CRLF
# from being read as CR + LF (which would look like a blank line).
_BLANK_LINE = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")
_EOL = re.compile(rb"\r\n|\r|\n")
_EOL_STR = re.compile(r"\r\n|\r|\n")
#: `find` of a two-byte or longer needle reads about a byte a nanosecond; of one byte (memchr)
#: twenty times faster or more. A block's blank line is searched for as a whole within this
#: many bytes (most blocks end there), past them from line end to line end (`_far_blank_line`).
_NEAR = 512
#: Line ends `_far_blank_line` hops before it searches as a whole again (a block of many lines).
_HOPS = 64


def _far_blank_line(buf: bytes | bytearray, needle: bytes, near: int) -> int:
    """Where the blank line `needle` (``\n\n``, or ``\r\n\r\n``) first starts in `buf`, when
    none ends before `near` (a big block): from line end to line end. A block of 60 KiB (a
    Responses stream's done events each carry the whole text) took 50 µs, now 3."""
    first = needle[:1]
    at = near - len(needle) + 1  # one that starts before it would end before `near`
    for _ in range(_HOPS):
        i = buf.find(first, at)
        if i == -1 or buf.startswith(needle, i):
            return i
        at = i + 1
    return buf.find(needle, at)


# Characters that the SSE grammar treats as ordinary but str.splitlines()/httpx iter_lines() do not.
_LINE_SEPARATOR_HAZARDS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_ASCII_HAZARDS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e")
_NEL, _LS, _PS = _UNICODE_HAZARDS = ("\x85", "\u2028", "\u2029")
_HAZARDS = (*_ASCII_HAZARDS, *_UNICODE_HAZARDS)


def hazardous(data: str) -> bool:
    """Does `data` hold one of `_LINE_SEPARATOR_HAZARDS`? One `find` a character: each reads
    a str at memchr's speed, where the class's search takes 5-10 ns a character (a Responses
    stream's done events carry the whole text, tens of KiB, four times)."""
    find = data.find
    for char in _ASCII_HAZARDS if data.isascii() else _HAZARDS:  # noqa: SIM110 (no generator)
        if find(char) != -1:
            return True
    return False


def unicode_hazardous(data: str) -> bool:
    """`hazardous` for a text with no C0 control character (each of the others is one): the
    three beyond ASCII, each looked for at memchr's speed. For a few hundred characters of
    text beyond ASCII, 0.1 µs where `str.isprintable` takes 0.5."""
    return _NEL in data or _LS in data or _PS in data


_U_ESCAPE = re.compile(rb"\\u")


def u_escape(data: bytes, start: int = 0, end: int | None = None) -> bool:
    """Does ``data[start:end]`` hold the two bytes ``\\u``: a ``\\u`` escape, or an escaped
    backslash before a ``u`` (a guard's test, never wrong the other way)? A backslash is
    looked for first, at memchr's speed: most texts have none. Then the pair by a pattern,
    which reads 2-2.5x faster than `bytes.find` of two bytes (1 KiB of code: 0.35 against
    0.71 µs; a Responses done event of 62 KB, 17-28 against 54-64 µs)."""
    if end is None:
        end = len(data)
    return data.find(b"\\", start, end) != -1 and _U_ESCAPE.search(data, start, end) is not None


Note = tuple[str, str, int, Severity | None]


class Notes:
    """Collects a block's grammar findings with the `Findings.add` signature.

    The decoder attaches them to their event instead of reporting them at once, so that a
    consumer reports them in event order however the input was chunked.
    """

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Note] = []

    def add(
        self,
        rule_id: str,
        detail: str,
        *,
        event: int | None = None,
        offset: int | None = None,
        severity: Severity | None = None,
    ) -> None:
        self.items.append((rule_id, detail, offset or 0, severity))


def report_notes(ev: Event, findings: Findings) -> None:
    """Report `ev`'s grammar findings (once)."""
    for rule_id, detail, offset, severity in ev.notes:
        findings.add(rule_id, detail, event=ev.index, offset=offset, severity=severity)
    ev.notes = ()


class _Unread:
    """What an `Event.unread` block holds for its data: where its data line lies in its raw
    bytes (`data_span`, found once)."""

    __slots__ = ("start", "end")

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end

    def __reduce__(self) -> tuple[type[_Unread], tuple[int, int]]:
        return _Unread, (self.start, self.end)

    def __repr__(self) -> str:
        return f"<unread {self.start}:{self.end}>"


class Event:
    """One block of the stream: its exact bytes and what they parse to.

    `data` is None when the block had no data field (it is then not dispatched by the WHATWG
    algorithm); otherwise it is the data lines joined by LF. `terminated` is False only for the
    partial block returned by `Decoder.close()`. Treat events as immutable: an edit of the JSON
    data makes a new one that keeps every other byte (`mitmllm.protocol.splice.splice_event`),
    `with_data` one with whole new data.

    A big block of the common shape (`parse_common`) may come `unread`: its data line not yet
    decoded, nor checked for what the grammar reports. Reading `data` decodes it then (`read`),
    its grammar findings, if any, becoming its `notes`, so it is the event the general parser
    makes of the block; a checker that proves the block sound by other means
    (`mitmllm.protocol.stream.StreamChecker.parse`) need not decode it at all.
    """

    __slots__ = (
        "index",
        "offset",
        "raw",
        "event",
        "_data",
        "id",
        "retry",
        "comments",
        "data_lines",
        "terminated",
        "notes",
    )

    def __init__(
        self,
        index: int,
        offset: int,
        raw: bytes,
        event: str | None = None,
        data: str | None = None,
        id: str | None = None,
        retry: int | None = None,
        comments: tuple[str, ...] = (),
        data_lines: int = 0,
        terminated: bool = True,
    ) -> None:
        self.index = index
        self.offset = offset
        self.raw = raw
        self.event = event
        self._data: str | _Unread | None = data
        self.id = id
        self.retry = retry
        self.comments = comments
        self.data_lines = data_lines
        self.terminated = terminated
        # Grammar findings of this block, (rule, detail, offset, severity), not yet reported.
        self.notes: tuple[Note, ...] = ()

    @classmethod
    def unread_block(
        cls, index: int, offset: int, raw: bytes, event: str | None, span: tuple[int, int]
    ) -> Event:
        """An `unread` event of `raw`, a block of the common shape named `event` whose data
        line is `raw[span[0]:span[1]]` (`data_span`)."""
        ev = cls(index, offset, raw, event, None, None, None, (), 1, True)
        ev._data = _Unread(*span)
        return ev

    @property
    def data(self) -> str | None:
        data: Any = self._data  # (a str or None once read)
        return self.read() if type(data) is _Unread else data

    @property
    def unread(self) -> bool:
        """Is this a big block whose data line is not decoded yet (`read`)?"""
        return type(self._data) is _Unread

    @property
    def unread_span(self) -> tuple[int, int] | None:
        """Where an `unread` block's data line lies in `raw` (None: the event is read)."""
        data: Any = self._data
        return (data.start, data.end) if type(data) is _Unread else None

    def read(self) -> str | None:
        """Decode the data line of an `unread` block: the data, and the grammar findings the
        general parser has for it as `notes` (invalid UTF-8, a line-separator hazard; no
        other finding is possible for the common shape). An event already read is kept."""
        unread: Any = self._data
        if type(unread) is not _Unread:
            return unread  # type: ignore[no-any-return]
        raw = self.raw
        try:
            with memoryview(raw) as view:
                data: str | None = str(view[unread.start : unread.end], "utf-8")
        except UnicodeDecodeError:
            data = None
        if data is None or hazardous(data):
            notes = Notes()
            data = parse_text(raw, self.index, self.offset, notes).data
            self.notes = (*self.notes, *notes.items)
        self._data = data
        return data

    @property
    def is_blank(self) -> bool:
        """A lone blank line (an empty block)."""
        return not self.has_fields and not self.comments

    @property
    def has_fields(self) -> bool:
        return (
            self.event is not None
            or self._data is not None
            or self.id is not None
            or self.retry is not None
        )

    @property
    def is_comment(self) -> bool:
        """A block made only of comments (a keep-alive)."""
        return bool(self.comments) and not self.has_fields

    @property
    def end(self) -> int:
        return self.offset + len(self.raw)

    def at(self, index: int, offset: int) -> Event:
        """The same block at another place in a stream (after a repair dropped or added
        events before it); its unreported grammar findings move with it."""
        moved = Event(
            index,
            offset,
            self.raw,
            self.event,
            self.data,  # (read if unread: its findings are worded where it was)
            self.id,
            self.retry,
            self.comments,
            self.data_lines,
            self.terminated,
        )
        shift = offset - self.offset
        moved.notes = tuple((r, d, o + shift, s) for r, d, o, s in self.notes)
        return moved

    def with_data(self, data: str) -> Event:
        """The same block with its data replaced, keeping field order, comments, the
        `data:` spacing and the line terminators of the original."""
        return parse_block(_replace_data(self.raw, data), self.index, self.offset)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in _COMPARED)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = self.raw[:60]
        return f"Event(#{self.index} @{self.offset} event={self.event!r} raw={head!r}...)"


#: What makes two events equal: every field but the unreported grammar findings.
_COMPARED = (
    "index",
    "offset",
    "raw",
    "event",
    "data",
    "id",
    "retry",
    "comments",
    "data_lines",
    "terminated",
)


def _replace_data(raw: bytes, data: str) -> bytes:
    lines = _split_keep_ends(raw)
    out: list[bytes] = []
    replaced = False
    for line, eol in lines:
        if line.startswith(b"data") and (len(line) == 4 or line[4:5] == b":"):
            if replaced:
                continue
            prefix = b"data: " if line.startswith(b"data: ") or len(line) == 4 else b"data:"
            new_lines = _EOL_STR.split(data)
            out.extend(prefix + part.encode("utf-8") + eol for part in new_lines)
            replaced = True
        else:
            out.append(line + eol)
    if not replaced:  # no data field before: add one before the blank line
        eol = lines[-1][1] if lines else b"\n"
        out.insert(len(out) - 1, b"data: " + data.encode("utf-8") + eol)
    return b"".join(out)


def _split_keep_ends(raw: bytes) -> list[tuple[bytes, bytes]]:
    result = []
    pos = 0
    for m in _EOL.finditer(raw):
        result.append((raw[pos : m.start()], m.group()))
        pos = m.end()
    if pos < len(raw):
        result.append((raw[pos:], b""))
    return result


def encode(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
    eol: str = "\n",
) -> bytes:
    """Encode one event (or a comment-only block) with a `data: ` line per data line."""
    parts: list[str] = []
    if comment is not None:
        parts.extend(":" + (" " + c if c else "") for c in _EOL_STR.split(comment))
    if event is not None:
        _check_single_line("event", event)
        parts.append(f"event: {event}")
    if id is not None:
        _check_single_line("id", id)
        parts.append(f"id: {id}")
    if retry is not None:
        parts.append(f"retry: {int(retry)}")
    if data is not None:
        parts.extend(f"data: {line}" for line in _EOL_STR.split(data))
    if not parts:
        raise ValueError("an event needs data, a field or a comment")
    return (eol.join(parts) + eol + eol).encode("utf-8")


def _check_single_line(name: str, value: str) -> None:
    if _EOL_STR.search(value):
        raise ValueError(f"SSE {name} field cannot contain a line break: {value!r}")


def parse_block(
    raw: bytes,
    index: int,
    offset: int,
    findings: Findings | Notes | None = None,
    *,
    terminated: bool = True,
    lazy: bool = False,
) -> Event:
    """Parse one complete block (or the trailing partial one) into an `Event`; `lazy`: a big
    one of the common shape may come `Event.unread` (its grammar findings, if any, become its
    notes when it is read: for a consumer that reports notes, not for `findings`)."""
    if terminated:
        common = parse_common(raw, index, offset, lazy)
        if common is not None:
            return common
    return parse_text(raw, index, offset, findings, terminated=terminated)


def parse_text(
    raw: bytes,
    index: int,
    offset: int,
    findings: Findings | Notes | None = None,
    *,
    terminated: bool = True,
) -> Event:
    """`parse_block` for any block: decode it as text and read it line by line (WHATWG)."""
    body = raw
    if offset == 0 and raw.startswith(BOM):
        body = raw[3:]
        if findings is not None:
            findings.add(
                "SSE-2", "stream starts with a byte-order mark", event=index, offset=offset
            )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        text = body.decode("utf-8", errors="replace")
        if findings is not None:
            where = offset + (len(raw) - len(body)) + e.start
            findings.add(
                "SSE-1",
                f"invalid UTF-8 ({e.reason}) at byte {where}",
                event=index,
                offset=where,
            )
    if "\r" not in text:
        eol = "\n"
    elif text.count("\r") == text.count("\n") == text.count("\r\n"):
        eol = "\r\n"  # CRLF only (Gemini): a plain split is exact
    else:
        eol = ""
    lines = text.split(eol) if eol else _EOL_STR.split(text)
    if lines and lines[-1] == "":
        lines.pop()  # the text ended with a terminator
    if terminated and lines and lines[-1] == "":
        lines.pop()  # the blank line that ended the block

    event_name: str | None = None
    data_lines: list[str] = []
    event_id: str | None = None
    retry: int | None = None
    comments: list[str] = []
    for line in lines:
        if line[:1] == ":":
            comments.append(line[1:].removeprefix(" "))
            if findings is not None and (event_name is not None or data_lines):
                findings.add(
                    "SSE-6",
                    f"comment {line[:40]!r} inside an event",
                    event=index,
                    offset=offset,
                    severity=Severity.INFO,
                )
            continue
        name, colon, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        elif name == "data" and colon and value and findings is not None:
            findings.add("SSE-17", "'data:' without a following space", event=index, offset=offset)
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            if event_name is not None and findings is not None:
                findings.add(
                    "SSE-10",
                    f"event field repeated ({event_name!r}, then {value!r})",
                    event=index,
                    offset=offset,
                )
            event_name = value
        elif name == "id":
            if "\0" in value:
                if findings is not None:
                    findings.add(
                        "SSE-11", "id field contains NUL and is ignored", event=index, offset=offset
                    )
            else:
                event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                retry = int(value)
            elif findings is not None:
                findings.add(
                    "SSE-12",
                    f"retry value {value[:20]!r} is not digits",
                    event=index,
                    offset=offset,
                )
        elif findings is not None:
            _unknown_field(findings, name, line, index, offset)

    data: str | None = None
    if data_lines:
        data = data_lines[0] if len(data_lines) == 1 else "\n".join(data_lines)
        if findings is not None:
            if len(data_lines) > 1:
                findings.add(
                    "SSE-9",
                    f"{len(data_lines)} data lines in one event",
                    event=index,
                    offset=offset,
                )
            if data[:1] == ":":
                findings.add(
                    "SSE-8",
                    f"data value {data[:30]!r} is a comment re-wrapped as data",
                    event=index,
                    offset=offset,
                )
            m = _LINE_SEPARATOR_HAZARDS.search(data) if hazardous(data) else None
            if m:
                findings.add(
                    "SSE-3a",
                    f"raw U+{ord(m.group()):04X} inside data",
                    event=index,
                    offset=offset,
                )
    return Event(
        index=index,
        offset=offset,
        raw=raw,
        event=event_name,
        data=data,
        id=event_id,
        retry=retry,
        comments=tuple(comments),
        data_lines=len(data_lines),
        terminated=terminated,
    )


#: Event names already seen, decoded once: a stream repeats a handful of them.
_NAMES: dict[bytes, str] = {}
_MAX_NAMES = 256
#: From this size on, a data line is decoded from a view of its block rather than a copy.
_BIG_DATA = 16 * 1024


def data_span(raw: bytes) -> tuple[int, int] | None:
    """Where the value of the data line lies in `raw` (start, end) when `raw` is a block of
    the shapes almost every LLM event has: ``data: X`` or ``event: N`` + ``data: X``, one kind
    of line end (LF, or CRLF only), terminated. The value is then those bytes exactly (when
    they are valid UTF-8): a parser may read them rather than the decoded text. None for any
    other block."""
    # bytes.find, not `in`: `in` first tries the argument as an integer and pays for the
    # TypeError it catches, on every call
    if raw.endswith(b"\n\n") and raw.find(b"\r") == -1:
        eol = b"\n"
    elif raw.endswith(b"\r\n\r\n") and raw.count(b"\r") == raw.count(b"\n") == raw.count(b"\r\n"):
        eol = b"\r\n"
    else:
        return None
    w = len(eol)
    end = len(raw) - 2 * w  # the data line's end: before its line end and the blank line
    if raw.startswith(b"data: "):
        start = 6
    elif raw.startswith(b"event: "):
        nl = raw.find(eol, 7)
        start = nl + w + 6
        if nl == -1 or not raw.startswith(b"data: ", nl + w):
            return None
    else:
        return None
    if raw.find(eol, start) != end:
        return None
    return start, end


def parse_common(raw: bytes, index: int, offset: int, lazy: bool = False) -> Event | None:
    """The block shapes almost every LLM event has (`data_span`), and nothing the grammar
    reports on (no comment re-wrapped as data, no line-separator hazard, valid UTF-8). Returns
    None for anything else (`parse_block` then decodes the block as text); the result is the
    event the general parser makes of `raw`, with no grammar findings. `lazy`: a data line of
    `_BIG_DATA` bytes or more is not decoded (nor checked) yet: the event comes `unread`."""
    span = data_span(raw)
    if span is None:
        return None
    start, end = span
    if start == 6:
        event = None
    else:
        # the event line's value ends where its line end (CRLF where the block ends so) does
        name = raw[7 : start - 6 - (2 if raw[-2] == 13 else 1)]
        event = _NAMES.get(name)
        if event is None:
            try:
                event = name.decode("utf-8")
            except UnicodeDecodeError:
                return None
            if len(_NAMES) < _MAX_NAMES:
                _NAMES[name] = event
    if lazy and end - start >= _BIG_DATA and raw[start] != 0x3A:  # (":" a comment as data)
        return Event.unread_block(index, offset, raw, event, span)
    try:
        if end - start < _BIG_DATA:
            data = raw[start:end].decode("utf-8")
        else:  # decoded in place: no copy of a big line just to decode it
            with memoryview(raw) as view:
                data = str(view[start:end], "utf-8")
    except UnicodeDecodeError:
        return None
    if data[:1] == ":" or hazardous(data):
        return None  # the general parser words the finding
    return Event(index, offset, raw, event, data, None, None, (), 1, True)


def _unknown_field(
    findings: Findings | Notes, name: str, line: str, index: int, offset: int
) -> None:
    if name.lower() in KNOWN_FIELDS:
        findings.add(
            "SSE-7",
            f"field {name!r} is not {name.lower()!r} (names are case-sensitive); its value is lost",
            event=index,
            offset=offset,
        )
    elif name.lstrip()[:1] in ("{", "["):
        findings.add(
            "SSE-8",
            f"line {line[:40]!r} looks like JSON but has no 'data:' prefix",
            event=index,
            offset=offset,
        )
    elif name.startswith("\ufeff"):
        findings.add(
            "SSE-2",
            "byte-order mark inside the stream hides a field",
            event=index,
            offset=offset,
            severity=Severity.ERROR,
        )
    elif not name.strip():
        findings.add(
            "SSE-16", "whitespace-only line is not a blank line", event=index, offset=offset
        )
    else:
        findings.add(
            "SSE-8",
            f"unknown field {name[:30]!r} ignored",
            event=index,
            offset=offset,
            severity=Severity.INFO,
        )


@dataclass(slots=True)
class Decoder:
    """Bytes in, `Event`s out. See the module docstring."""

    #: Where grammar findings go as blocks are parsed; None: attach them to the events as
    #: `notes` for the consumer to report in order (see `report_notes`).
    findings: Findings | None = None
    _notes: Notes = field(default_factory=Notes)
    _buf: bytearray = field(default_factory=bytearray)
    _base: int = 0  # stream offset of _buf[0]
    _scan: int = 0  # where the next blank-line search starts (index into _buf)
    _index: int = 0
    _closed: bool = False
    _saw_cr: bool = False  # once a CR shows up, blocks are found with the general regex
    _crlf_only: bool = True  # ... or, while every line end has been CRLF, with bytes.find

    @property
    def offset(self) -> int:
        """Stream offset of the first byte not yet returned in an event."""
        return self._base

    @property
    def index(self) -> int:
        """The number of the next block."""
        return self._index

    @property
    def pending(self) -> int:
        """Bytes held back: received but not yet part of a complete block."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        """The blocks `data` completes, parsed."""
        if self._closed:
            raise RuntimeError("feed() after close()")
        if not data:
            return []
        if self._is_one_block(data):  # the common case: no buffering, no copy
            ev = self._parse(data, self._base)
            self._base += len(data)
            return [ev]
        if not self._buf:
            # Several blocks (and maybe the start of one more): cut them from the chunk itself;
            # only the unfinished rest is buffered.
            return self._take_from(data, self._block_ends(final=False, buf=data))
        self._buf += data
        return self._take(self._block_ends(final=False))

    def frame(self, data: bytes) -> bytes:
        """Like `feed`, but only frames: the bytes of the blocks `data` completes, unparsed.

        For a consumer that must emit whole events at once and parse them later (or
        elsewhere): feeding the returned bytes to another decoder gives the same events.
        """
        if self._closed:
            raise RuntimeError("frame() after close()")
        if not data:
            return b""
        if self._is_one_block(data):
            self._base += len(data)
            self._index += 1
            return data
        self._buf += data
        ends = self._block_ends(final=False)
        if not ends:
            return b""
        with memoryview(self._buf) as view:
            out = bytes(view[: ends[-1]])
        self._consume(ends[-1])
        self._index += len(ends)
        return out

    def close(self) -> tuple[list[Event], Event | None]:
        """End of stream: the blocks a trailing CR completes, and the unterminated rest.

        The partial block (if any) is returned parsed, with `terminated=False`; its `raw` bytes
        are the stream's trailing bytes.
        """
        if self._closed:
            return [], None
        events = self._take(self._block_ends(final=True))
        self._closed = True
        if not self._buf:
            return events, None
        raw = bytes(self._buf)
        partial = self._note(
            parse_block(raw, self._index, self._base, self._notes, terminated=False)
        )
        self._consume(len(raw))
        return events, partial

    def close_frame(self) -> bytes:
        """End of stream for `frame`: everything still held (complete blocks, then the tail)."""
        if self._closed:
            return b""
        self._closed = True
        out = bytes(self._buf)
        self._index += len(self._block_ends(final=True))
        self._consume(len(out))
        return out

    # --- framing ---------------------------------------------------------------------------

    def _is_one_block(self, data: bytes) -> bool:
        """Is `data`, with nothing buffered before it, exactly one complete block?

        Most LLM upstreams write one event per chunk; such a chunk needs no buffer at all.
        """
        if self._buf:
            return False
        if not self._saw_cr and data.find(b"\r") != -1:  # not `in`: see parse_common
            self._saw_cr = True
        n = len(data)
        if not self._saw_cr:
            if n <= 2 or data[0] == 0x0A:
                return False
            i = data.find(b"\n\n", 0, _NEAR)
            if i == -1 and n > _NEAR:
                i = _far_blank_line(data, b"\n\n", _NEAR)
            return i == n - 2
        if n <= 4:
            return False
        i = data.find(b"\r\n\r\n", 0, _NEAR)
        if i == -1 and n > _NEAR:
            i = _far_blank_line(data, b"\r\n\r\n", _NEAR)
        return (  # CRLF only, as Gemini sends
            i == n - 4
            and data[:2] != b"\r\n"
            and data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")
        )

    def _block_ends(self, final: bool, buf: bytes | bytearray | None = None) -> list[int]:
        """End offsets (in the buffer, or in `buf` while the buffer is empty) of the complete
        blocks it holds.

        The scan resumes where the last one stopped, so a huge block arriving in pieces is
        searched once. A block ending in a CR at the very end of the input waits for the next
        byte (it may be a CRLF) unless this is the end of the stream.
        """
        if buf is None:
            buf = self._buf
        n = len(buf)
        if not self._saw_cr and buf.find(b"\r", self._scan) != -1:
            self._saw_cr = True
        lf_only = not self._saw_cr
        start = 0
        scan = self._scan
        ends: list[int] = []
        while start < n:
            if lf_only:
                if buf[start] == 0x0A:  # a block that is nothing but a blank line
                    end = start + 1
                else:
                    at = max(scan, start)
                    i = buf.find(b"\n\n", at, at + _NEAR)
                    if i == -1 and n > at + _NEAR:
                        i = _far_blank_line(buf, b"\n\n", at + _NEAR)
                    if i == -1:
                        scan = max(start, n - 1)
                        break
                    end = i + 2
            else:
                if self._crlf_only:
                    # CRLF-only framing (Gemini): a block ending in CRLF CRLF with no lone CR or
                    # LF before it needs no regex. A boundary may straddle the resume point.
                    if buf.startswith(b"\r\n", start):  # a blank line alone
                        end = start + 2
                        ends.append(end)
                        start = scan = end
                        continue
                    at = max(scan - 3, start)
                    i = buf.find(b"\r\n\r\n", at, at + _NEAR)
                    if i == -1 and n > at + _NEAR:
                        i = _far_blank_line(buf, b"\r\n\r\n", at + _NEAR)
                    if i != -1 and buf[start] != 0x0D:
                        end = i + 4
                        crs = buf.count(b"\r", start, end)
                        if crs == buf.count(b"\n", start, end) == buf.count(b"\r\n", start, end):
                            ends.append(end)
                            start = scan = end
                            continue
                m = _EOL.match(buf, start)
                if m:  # a block that is nothing but a blank line
                    end = m.end()
                    if end == n and buf[end - 1] == 0x0D and not final:
                        break
                else:
                    m = _BLANK_LINE.search(buf, max(scan, start))
                    if m is None:
                        scan = max(start, n - 1)
                        break
                    end = m.end()
                    if end == n and buf[end - 1] == 0x0D and not final:
                        scan = m.start()
                        break
            if not lf_only:
                self._crlf_only = False  # the regex found what CRLF framing did not: mixed ends
            ends.append(end)
            start = scan = end
        self._scan = scan
        return ends

    def _take(self, ends: list[int]) -> list[Event]:
        """Parse the blocks that end at `ends` and drop them from the buffer."""
        if not ends:
            return []
        events = []
        start = 0
        with memoryview(self._buf) as view:
            for end in ends:
                events.append(self._parse(bytes(view[start:end]), self._base + start))
                start = end
        self._consume(start)
        return events

    def hand_over(self) -> bytes:
        """The bytes held back (an unfinished block), which a consumer takes on without the
        decoder (see `mitmllm.protocol.steady`); the decoder goes on after them as if it had
        not seen them, and `skip` counts them once that block is complete."""
        held = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        return held

    def skip(self, n: int, blocks: int = 1) -> None:
        """Count whole blocks of `n` bytes in all that their consumer read without the decoder
        (fed with nothing buffered; see `mitmllm.protocol.steady`)."""
        self._index += blocks
        self._base += n

    def _take_from(self, data: bytes, ends: list[int]) -> list[Event]:
        """Parse the blocks of `data` (fed with nothing buffered) that end at `ends`, and buffer
        the rest."""
        events = []
        start = 0
        base = self._base
        for end in ends:
            events.append(self._parse(data[start:end], base + start))
            start = end
        if start < len(data):
            with memoryview(data) as view:
                self._buf += view[start:]
        self._base = base + start
        self._scan = max(self._scan - start, 0)
        return events

    def _parse(self, raw: bytes, offset: int) -> Event:
        # unread big blocks where the notes ride on the events (the consumer reports them)
        ev = parse_block(raw, self._index, offset, self._notes, lazy=self.findings is None)
        self._index += 1
        return self._note(ev) if self._notes.items else ev

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._base += n
        self._scan = max(self._scan - n, 0)

    def _note(self, ev: Event) -> Event:
        if self._notes.items:
            ev.notes = tuple(self._notes.items)
            self._notes.items.clear()
            if self.findings is not None:
                report_notes(ev, self.findings)
        return ev


def decode_all(data: bytes, findings: Findings | None = None) -> tuple[list[Event], Event | None]:
    """Decode a whole body at once (for stored flows and fixtures)."""
    dec = Decoder(findings)
    events = dec.feed(data)
    more, partial = dec.close()
    return events + more, partial
