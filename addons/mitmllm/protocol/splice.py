"""Edits as splices: change JSON values in place and keep every other byte (sans-I/O).

Theory of operation
-------------------
A rewrite decides *what* to change by reading the parsed payload, and says so as `Edit`s: a key
path into the JSON value (object keys and array indices) and the value that goes there, or
`DELETE`. `splice` then finds each path's value in the original bytes by a structural scan and
replaces only the bytes of that value. Everything else, spacing, key order, escapes (``\\u2028``,
``\\/``, surrogate pairs), numbers of any size, stays as the sender wrote it, so the result parses
to the original with exactly those values changed.

The scan follows JSON's grammar: strings with their escapes, numbers, literals, nested objects
and arrays. It never searches for text, so a key inside a string or a nested object with the
same key is never taken for the one the path names. When an object repeats a key, the last
member is the one every parser keeps, so that is the one an edit changes (a `DELETE` removes
every member with the key). A missing key in an existing object is inserted as its last member.
Containers the path does not enter are skipped a bracket at a time by one regular expression,
so the cost of an edit is a scan of the members before it (and after it, for repeated keys),
not a parse of the whole value. The scan is made for bytes that were parsed as JSON already: it
raises `SpliceError` where what it passes over is not JSON, but does not validate the rest.

New values are written compactly, with non-ASCII characters as UTF-8 except U+2028 / U+2029
(escaped: SSE-3a) and lone surrogates (escaped: raw they are not UTF-8).

`splice_event` applies edits to the data of one SSE event, keeping its fields, comments, the
``data:`` spacing and the line ends; `diff` turns a rewritten copy of a parsed value into the
edits that produce it, for rewriters that work on a copy (requests); `apply` makes the same
change to a parsed value, `replaced` to a copy of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mitmllm.protocol.sse import BOM
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import parse_block
from mitmllm.protocol.sse import u_escape

Key = str | int
Path = tuple[Key, ...]


class _Delete:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETE"


#: The value of an `Edit` that removes the member (or every member with that key).
DELETE: Any = _Delete()


@dataclass(frozen=True, slots=True)
class Edit:
    """Put `value` at `path` (object keys and array indices from the top), or `DELETE` it."""

    path: Path
    value: Any


class SpliceError(ValueError):
    """The bytes are not the JSON the edits were made for (or two edits overlap)."""


# --- the scanner ----------------------------------------------------------------------------------

_WS_CHARS = rb"[ \t\n\r]*+"
# A string: runs of plain bytes and escape pairs, possessive so a failed match cannot backtrack.
_STR = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_NUMBER = rb"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?(?:[eE][+-]?[0-9]++)?"
_WS = re.compile(_WS_CHARS)
_STRING = re.compile(_STR, re.S)
_SCALAR = re.compile(_NUMBER + rb"|true|false|null")
# Whitespace, a key, whitespace, the colon and whitespace: what precedes a member's value.
_KEY = re.compile(_WS_CHARS + rb"(" + _STR + rb")" + _WS_CHARS + rb":" + _WS_CHARS, re.S)
# A member whose value is a string or a scalar, with the separator after it: one match.
_SIMPLE = re.compile(
    _WS_CHARS
    + rb"("
    + _STR
    + rb")"
    + _WS_CHARS
    + rb":"
    + _WS_CHARS
    + rb"("
    + _STR
    + rb"|"
    + _NUMBER
    + rb"|true|false|null)"
    + _WS_CHARS
    + rb"([,}])",
    re.S,
)
# Whitespace and the separator after a value.
_SEP = re.compile(_WS_CHARS + rb"([,\]}])")
# Inside a container: everything up to the next bracket that is not inside a string.
_BRACKET = re.compile(rb'(?:[^"\[\]{}]++|' + _STR + rb")*+([\[\]{}])", re.S)

_OPEN = frozenset(b"[{")


def _nested(depth: int) -> bytes:
    """A JSON value nested at most `depth` containers deep, as a pattern that grows linearly
    with `depth`. It is lenient (objects and arrays share one shape: items with an optional
    key, commas not checked) because the bytes were parsed as JSON already: brackets and strings
    decide the extent, and on JSON that is exact."""
    scalar = _STR + rb"|" + _NUMBER + rb"|true|false|null"
    value = scalar
    for _ in range(depth):
        value = (
            scalar
            + rb"|[\[{]"
            + _WS_CHARS
            + rb"(?:(?:"
            + _STR
            + _WS_CHARS
            + rb":"
            + _WS_CHARS
            + rb")?(?:"
            + value
            + rb")"
            + _WS_CHARS
            + rb",?"
            + _WS_CHARS
            + rb")*+[\]}]"
        )
    return rb"(?:" + value + rb")"


# Most values of LLM payloads nest less deep than this: skipped by one match, no Python loop.
_SHALLOW = _nested(10)
_SHALLOW_VALUE = re.compile(_SHALLOW, re.S)


def _skip(buf: bytes, pos: int, end: int) -> int:
    """The end of the JSON value that starts at `pos`."""
    if pos >= end:
        raise SpliceError(f"a value was expected at byte {pos}")
    c = buf[pos]
    if c == 0x22:  # '"'
        m = _STRING.match(buf, pos, end)
    elif c == 0x7B or c == 0x5B:  # '{' '['
        m = _SHALLOW_VALUE.match(buf, pos, end)
        if m is not None:
            return m.end()
        depth = 0
        p = pos
        while True:
            m = _BRACKET.match(buf, p, end)
            if m is None:
                raise SpliceError(f"the container at byte {pos} is not closed")
            depth += 1 if buf[m.end() - 1] in _OPEN else -1
            p = m.end()
            if depth == 0:
                return p
    else:
        m = _SCALAR.match(buf, pos, end)
    if m is None:
        raise SpliceError(f"no JSON value at byte {pos}")
    return m.end()


def _key_is(raw: bytes, want: bytes, key: str) -> bool:
    if raw == want:
        return True
    return b"\\" in raw and json.loads(raw) == key


def _want(key: str) -> bytes:
    return b'"' + key.encode("utf-8", "surrogatepass") + b'"'


@dataclass(slots=True)
class _Member:
    key: bytes  # the raw key, quotes included
    start: int  # the key's first byte
    value: int  # the value's first byte
    end: int  # after the value


def _members(buf: bytes, pos: int, end: int) -> tuple[list[_Member], int]:
    """Every member of the object whose ``{`` is at `pos`, and the position of its ``}``."""
    out: list[_Member] = []
    p = _WS.match(buf, pos + 1, end).end()  # type: ignore[union-attr]
    if p < end and buf[p] == 0x7D:
        return out, p
    while True:
        m = _KEY.match(buf, p, end)
        if m is None:
            raise SpliceError(f"an object member was expected at byte {p}")
        vstart = m.end()
        vend = _skip(buf, vstart, end)
        out.append(_Member(m.group(1), m.start(1), vstart, vend))
        s = _SEP.match(buf, vend, end)
        if s is None:
            raise SpliceError(f"',' or '}}' was expected at byte {vend}")
        sep = buf[s.start(1)]
        if sep == 0x2C:  # ','
            p = s.end()
        elif sep == 0x7D:
            return out, s.start(1)
        else:
            raise SpliceError(f"']' closes an object at byte {s.start(1)}")


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def _finder(key: str) -> re.Pattern[bytes] | None:
    """For a plain key: ``{``, the members with string or scalar values before it, and the
    key and colon itself, as one lazy match (no Python loop for the members it passes)."""
    if not _PLAIN_KEY.fullmatch(key):
        return None
    return re.compile(
        rb"\{(?:"
        + _WS_CHARS
        + _STR
        + _WS_CHARS
        + rb":"
        + _WS_CHARS
        + _SHALLOW
        + _WS_CHARS
        + rb",)*?"
        + _WS_CHARS
        + re.escape(_want(key))
        + _WS_CHARS
        + rb":"
        + _WS_CHARS,
        re.S,
    )


@lru_cache(maxsize=256)
def _key(key: str) -> tuple[bytes, re.Pattern[bytes] | None]:
    return _want(key), _finder(key)


#: Per plain key, the bytes from an object's ``{`` through the member's value and one byte more,
#: and where the value starts, as last found. Consecutive events of a stream mostly begin with
#: the same bytes (id, object, created, model): when they do, the scan would find the same span.
_SEEN: dict[str, tuple[bytes, int]] = {}


def _member(buf: bytes, pos: int, end: int, key: str) -> tuple[int, int] | None:
    """The value span of the last member named `key` of the object at `pos` (None: absent)."""
    want, finder = _key(key)
    if finder is not None:
        seen = _SEEN.get(key)
        if seen is not None and pos + len(seen[0]) <= end and buf.startswith(seen[0], pos):
            vstart, vend = pos + seen[1], pos + len(seen[0]) - 1
        else:
            m = finder.match(buf, pos, end)
            if m is None:
                vstart = -1
            else:
                vstart = m.end()
                vend = _skip(buf, vstart, end)
                if vend < end:  # the byte after a number ends it: part of what was read
                    _SEEN[key] = (buf[pos : vend + 1], vstart - pos)
        if vstart >= 0:
            # The last member with the key, unless a later one may repeat it: spelled the same,
            # or (a plain key) with a \\u escape. Anything after it counts: a cheap, safe test.
            if not _may_repeat(buf, want, vend, end):
                return vstart, vend
            return _after(buf, vend, end, want, key, (vstart, vend))
    p = _WS.match(buf, pos + 1, end).end()  # type: ignore[union-attr]
    if p < end and buf[p] == 0x7D:
        return None
    return _after(buf, p, end, want, key, None, at_member=True)


def _after(
    buf: bytes,
    p: int,
    end: int,
    want: bytes,
    key: str,
    found: tuple[int, int] | None,
    *,
    at_member: bool = False,
) -> tuple[int, int] | None:
    """Scan the members of an object from `p` (after a value, or at a member with
    `at_member`) to its end; the value span of the last one named `key`, else `found`."""
    simple = _SIMPLE.match
    while True:
        if at_member:
            m = simple(buf, p, end)
            if m is not None:  # a string or scalar value: key, value and separator at once
                if _key_is(m.group(1), want, key):
                    found = (m.start(2), m.end(2))
                p = m.end() - 1
            else:
                m = _KEY.match(buf, p, end)
                if m is None:
                    raise SpliceError(f"an object member was expected at byte {p}")
                vstart = m.end()
                p = _skip(buf, vstart, end)
                if _key_is(m.group(1), want, key):
                    found = (vstart, p)
                s = _SEP.match(buf, p, end)
                if s is None:
                    raise SpliceError(f"',' or '}}' was expected at byte {p}")
                p = s.end() - 1
        else:
            s = _SEP.match(buf, p, end)
            if s is None:
                raise SpliceError(f"',' or '}}' was expected at byte {p}")
            p = s.end() - 1
        sep = buf[p]
        if sep == 0x2C:
            p += 1
            at_member = True
        elif sep == 0x7D:
            return found
        else:
            raise SpliceError(f"']' closes an object at byte {p}")


def _element(buf: bytes, pos: int, end: int, index: int) -> tuple[int, int] | None:
    """The span of element `index` of the array whose ``[`` is at `pos` (None: too short)."""
    if index < 0:
        return None
    p = _WS.match(buf, pos + 1, end).end()  # type: ignore[union-attr]
    if p < end and buf[p] == 0x5D:
        return None
    i = 0
    while True:
        vend = _skip(buf, p, end)
        if i == index:
            return p, vend
        s = _SEP.match(buf, vend, end)
        if s is None:
            raise SpliceError(f"',' or ']' was expected at byte {vend}")
        sep = buf[s.start(1)]
        if sep == 0x2C:
            p = _WS.match(buf, s.end(), end).end()  # type: ignore[union-attr]
            i += 1
        elif sep == 0x5D:
            return None
        else:
            raise SpliceError(f"'}}' closes an array at byte {s.start(1)}")


def _enter(buf: bytes, pos: int, end: int, key: Key) -> int | None:
    """Where the value at `key` of the container at `pos` starts, for a path that goes on
    into it (None: absent). Its end is not needed there, and finding it means reading all of
    it: a Responses event's ``response`` carries the whole answer. So a member found by its
    key's pattern whose value is a container is entered at once when no later member can
    repeat the key (`_may_repeat`)."""
    if isinstance(key, str) and pos < end and buf[pos] == 0x7B:
        want, finder = _key(key)
        if finder is not None:
            m = finder.match(buf, pos, end)
            vstart = -1 if m is None else m.end()
            if (
                0 <= vstart < end
                and buf[vstart] in _OPEN
                and not _may_repeat(buf, want, vstart, end)
            ):
                return vstart
    return _start(_child(buf, pos, end, key))


def _may_repeat(buf: bytes, want: bytes, pos: int, end: int) -> bool:
    """May a member with the key spelled `want` follow `pos`? Only where the spelling is
    followed by a colon (a string value spelled the same is not a key: ``"object":"response"``)
    or where a ``\\u`` escape could spell it otherwise. A cheap test, never wrong the other way."""
    if u_escape(buf, pos, end):
        return True
    at = buf.find(want, pos, end)
    while at != -1:
        after = _WS.match(buf, at + len(want), end).end()  # type: ignore[union-attr]
        if after < end and buf[after] == 0x3A:  # ':'
            return True
        at = buf.find(want, after, end)
    return False


def _start(span: tuple[int, int] | None) -> int | None:
    return None if span is None else span[0]


def _child(buf: bytes, pos: int, end: int, key: Key) -> tuple[int, int] | None:
    c = buf[pos] if pos < end else -1
    if isinstance(key, str):
        if c != 0x7B:
            raise SpliceError(f"key {key!r}: no object at byte {pos}")
        return _member(buf, pos, end, key)
    if c != 0x5B:
        raise SpliceError(f"index {key}: no array at byte {pos}")
    return _element(buf, pos, end, key)


def locate(
    buf: bytes, path: Path, start: int = 0, end: int | None = None
) -> tuple[int, int] | None:
    """The span of the value at `path` in the JSON text ``buf[start:end]``; None if absent."""
    end = len(buf) if end is None else end
    pos = _WS.match(buf, start, end).end()  # type: ignore[union-attr]
    if not path:
        return pos, _skip(buf, pos, end)
    at: int | None = pos
    for key in path[:-1]:
        at = _enter(buf, at, end, key)  # type: ignore[arg-type]
        if at is None:
            return None
    return _child(buf, at, end, path[-1])  # type: ignore[arg-type]


# --- writing values -------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _encode_str(value: str) -> bytes:
    text = json.dumps(value, ensure_ascii=False)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only its escape is valid UTF-8
        data = json.dumps(value).encode("ascii")
    if b"\xe2\x80\xa8" in data or b"\xe2\x80\xa9" in data:
        data = data.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return data


def encode(value: Any) -> bytes:
    """`value` as compact JSON (see the module docstring for the characters it escapes)."""
    if isinstance(value, str):
        return _encode_str(value)
    if isinstance(value, dict):
        return (
            b"{"
            + b",".join(_encode_str(str(k)) + b":" + encode(v) for k, v in value.items())
            + b"}"
        )
    if isinstance(value, list | tuple):
        return b"[" + b",".join(encode(v) for v in value) + b"]"
    if value is DELETE:
        raise SpliceError("DELETE is not a value")
    return json.dumps(value, allow_nan=False).encode("ascii")


# --- splicing -------------------------------------------------------------------------------------

Replacement = tuple[int, int, bytes]


def _tree(edits: Sequence[Edit]) -> dict[Key, Any] | Edit:
    """Edits as a tree of paths; a leaf is the Edit itself. Overlapping paths are an error."""
    root: dict[Key, Any] = {}
    for edit in edits:
        if not edit.path:
            if len(edits) > 1:
                raise SpliceError("an edit of the whole value overlaps the others")
            return edit
        node = root
        for key in edit.path[:-1]:
            child = node.setdefault(key, {})
            if isinstance(child, Edit):
                raise SpliceError(f"edits overlap at {edit.path!r}")
            node = child
        if edit.path[-1] in node:
            raise SpliceError(f"edits overlap at {edit.path!r}")
        node[edit.path[-1]] = edit
    return root


def replacements(
    buf: bytes, edits: Sequence[Edit], start: int = 0, end: int | None = None
) -> list[Replacement]:
    """The (start, end, new bytes) replacements that apply `edits` to ``buf[start:end]``, in
    order and not overlapping (an insertion is a replacement of zero bytes)."""
    end = len(buf) if end is None else end
    if not edits:
        return []
    pos = start
    if pos >= end or buf[pos] not in _OPEN:
        pos = _WS.match(buf, start, end).end()  # type: ignore[union-attr]
    if len(edits) == 1 and edits[0].path and edits[0].value is not DELETE:
        # The common case (a restamp): walk the path, no tree.
        edit = edits[0]
        at: int | None = pos
        for key in edit.path[:-1]:
            at = _enter(buf, at, end, key)  # type: ignore[arg-type]
            if at is None:
                raise SpliceError(f"{edit.path!r}: {key!r} is missing")
        assert at is not None
        found = _child(buf, at, end, edit.path[-1])
        if found is not None:
            return [(found[0], found[1], encode(edit.value))]
    tree = _tree(edits)
    out: list[Replacement] = []
    if isinstance(tree, Edit):
        if tree.value is DELETE:
            raise SpliceError("the whole value cannot be deleted")
        out.append((pos, _skip(buf, pos, end), encode(tree.value)))
    else:
        _walk(buf, pos, end, tree, out)
    out.sort(key=lambda r: (r[0], r[1]))
    for a, b in zip(out, out[1:], strict=False):
        if b[0] < a[1]:
            raise SpliceError("edits overlap")
    return out


def _walk(buf: bytes, pos: int, end: int, tree: dict[Key, Any], out: list[Replacement]) -> None:
    """Replacements for the edits in `tree`, relative to the container at `pos`."""
    if pos >= end:
        raise SpliceError(f"a container was expected at byte {pos}")
    c = buf[pos]
    keys = list(tree)
    if c == 0x5B:
        if not all(isinstance(k, int) for k in keys):
            raise SpliceError(f"keys {keys!r} into an array at byte {pos}")
        for k in keys:
            span = _element(buf, pos, end, k)  # type: ignore[arg-type]
            if span is None:
                raise SpliceError(f"index {k} is past the end of the array at byte {pos}")
            _apply(buf, span, tree[k], end, out)
        return
    if c != 0x7B or not all(isinstance(k, str) for k in keys):
        raise SpliceError(f"keys {keys!r} into a non-object at byte {pos}")
    structural = any(isinstance(v, Edit) and v.value is DELETE for v in tree.values())
    if not structural and len(keys) == 1:  # the common case: one value, no member list
        key = keys[0]
        node = tree[key]
        if isinstance(node, Edit):
            span = _member(buf, pos, end, key)  # type: ignore[arg-type]
            if span is not None:
                out.append((span[0], span[1], encode(node.value)))
                return
        else:
            at = _enter(buf, pos, end, key)  # type: ignore[arg-type]
            if at is not None:
                _walk(buf, at, end, node, out)
                return
    _object(buf, pos, end, tree, out)


def _apply(
    buf: bytes, span: tuple[int, int], node: Edit | dict[Key, Any], end: int, out: list[Replacement]
) -> None:
    if isinstance(node, Edit):
        out.append((span[0], span[1], encode(node.value)))
    else:
        _walk(buf, span[0], end, node, out)


def _object(buf: bytes, pos: int, end: int, tree: dict[Key, Any], out: list[Replacement]) -> None:
    """Edits into one object, with deletions and insertions of members."""
    members, close = _members(buf, pos, end)
    names = [_name(m.key) for m in members]
    last: dict[str, int] = {}
    for i, name in enumerate(names):
        last[name] = i
    deleted = [False] * len(members)
    inserts: list[bytes] = []
    for key, node in tree.items():
        assert isinstance(key, str)
        if isinstance(node, Edit) and node.value is DELETE:
            for i, name in enumerate(names):
                if name == key:
                    deleted[i] = True
            continue
        i = last.get(key, -1)
        if i >= 0:
            _apply(buf, (members[i].value, members[i].end), node, end, out)
        elif isinstance(node, Edit):
            inserts.append(_encode_str(key) + b":" + encode(node.value))
        else:
            raise SpliceError(f"key {key!r} is missing at byte {pos}")
    kept = [i for i, d in enumerate(deleted) if not d]
    # Runs of deleted members go with the separator after them, or before them at the end.
    i = 0
    n = len(members)
    while i < n:
        if not deleted[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and deleted[j + 1]:
            j += 1
        if j + 1 < n:
            out.append((members[i].start, members[j + 1].start, b""))
        elif i > 0:
            out.append((members[i - 1].end, members[j].end, b""))
        else:
            out.append((members[0].start, members[j].end, b""))
        i = j + 1
    if inserts:
        if kept:
            out.append((members[kept[-1]].end, members[kept[-1]].end, b"," + b",".join(inserts)))
        else:
            at = members[0].start if members else close
            out.append((at, at, b",".join(inserts)))


def _name(raw: bytes) -> str:
    if b"\\" not in raw:
        return raw[1:-1].decode("utf-8", "surrogateescape")
    return str(json.loads(raw))


def splice(buf: bytes, edits: Sequence[Edit], start: int = 0, end: int | None = None) -> bytes:
    """`buf` with `edits` applied to the JSON text ``buf[start:end]``; the bytes outside it, and
    every byte of it no edit names, are kept. Raises `SpliceError` when a path cannot be found
    in bytes that are not the JSON the edits were made for."""
    reps = replacements(buf, edits, start, end)
    return _replace(buf, reps) if reps else buf


def _replace(buf: bytes, reps: list[Replacement]) -> bytes:
    if len(reps) == 1:
        s, e, new = reps[0]
        return buf[:s] + new + buf[e:]
    parts = []
    prev = 0
    for s, e, new in reps:
        parts.append(buf[prev:s])
        parts.append(new)
        prev = e
    parts.append(buf[prev:])
    return b"".join(parts)


# --- SSE events -----------------------------------------------------------------------------------

_EOL = re.compile(rb"\r\n|\r|\n")


def data_spans(raw: bytes, at_start: bool = False) -> list[tuple[int, int]]:
    """Where each ``data`` field's value lies in a block's bytes (`at_start`: the block is the
    first of the stream, whose byte-order mark is not part of the first field)."""
    spans = []
    pos = 3 if at_start and raw.startswith(BOM) else 0
    n = len(raw)
    while pos < n:
        m = _EOL.search(raw, pos)
        line_end = m.start() if m else n
        if raw.startswith(b"data", pos):
            after = pos + 4
            if after == line_end:
                spans.append((after, after))
            elif raw[after] == 0x3A:  # ':'
                value = after + 2 if raw.startswith(b" ", after + 1) else after + 1
                spans.append((min(value, line_end), line_end))
        pos = m.end() if m else n
    return spans


def splice_event(ev: Event, edits: Sequence[Edit]) -> Event:
    """`ev` with `edits` applied to its JSON data; every other byte of the block is kept."""
    if not edits:
        return ev
    raw = ev.raw
    span = _one_data_line(raw) if ev.data_lines == 1 else None
    spans = [span] if span is not None else data_spans(raw, ev.offset == 0)
    if not spans:
        raise SpliceError("the event has no data to edit")
    if len(spans) == 1:
        s, e = spans[0]
        reps = replacements(raw, edits, s, e)
        if not reps:
            return ev
        new_raw = _replace(raw, reps)
        if ev.unread and len(reps) == 1:  # a big block not decoded: nor is the new one
            return Event.unread_block(
                ev.index, ev.offset, new_raw, ev.event, (s, e + len(new_raw) - len(raw))
            )
        if ev.data is not None and len(reps) == 1 and e <= len(raw):
            # One data line: the new event is the old one with new data; nothing to re-parse.
            r_start, r_end, new = reps[0]
            data = (raw[s:r_start] + new + raw[r_end:e]).decode("utf-8", "replace")
            return Event(
                ev.index,
                ev.offset,
                new_raw,
                ev.event,
                data,
                ev.id,
                ev.retry,
                ev.comments,
                1,
                ev.terminated,
            )
    else:
        new_raw = _splice_lines(raw, spans, edits)
    return parse_block(new_raw, ev.index, ev.offset, terminated=ev.terminated)


def _one_data_line(raw: bytes) -> tuple[int, int] | None:
    """The data span of a block with one data line and LF or CRLF line ends, found without a
    line loop (None: another shape, for `data_spans`)."""
    eol = b"\n"
    if b"\r" in raw:
        if raw.count(b"\r") != raw.count(b"\r\n"):
            return None
        eol = b"\r\n"
    if raw.startswith(b"data:"):
        at = 0
    else:
        at = raw.find(b"\ndata:")
        if at == -1:
            return None
        at += 1
    value = at + 6 if raw.startswith(b" ", at + 5) else at + 5
    line_end = raw.find(eol, at)
    if line_end == -1:
        line_end = len(raw)
    return min(value, line_end), line_end


def _splice_lines(raw: bytes, spans: list[tuple[int, int]], edits: Sequence[Edit]) -> bytes:
    """Edits to data spread over several lines (joined by LF): positions in the joined data
    are mapped back to the lines; a replacement that spans lines takes their breaks with it."""
    data = b"\n".join(raw[s:e] for s, e in spans)
    starts = []  # offset of each line in `data`
    offset = 0
    for s, e in spans:
        starts.append(offset)
        offset += e - s + 1

    def to_raw(p: int) -> int:
        for i in range(len(spans) - 1, -1, -1):
            if p >= starts[i]:
                s, e = spans[i]
                return min(s + p - starts[i], e)
        return spans[0][0]

    parts = []
    prev = 0
    for s, e, new in replacements(data, edits):
        rs, re_ = to_raw(s), to_raw(e)
        parts.append(raw[prev:rs])
        parts.append(new)
        prev = re_
    parts.append(raw[prev:])
    return b"".join(parts)


# --- parsed values --------------------------------------------------------------------------------


def apply(value: Any, edits: Sequence[Edit]) -> Any:
    """Make `edits` to a parsed value in place (a whole-value edit returns the new value)."""
    for edit in edits:
        if not edit.path:
            value = edit.value
            continue
        node = value
        for key in edit.path[:-1]:
            node = node[key]
        last = edit.path[-1]
        if edit.value is DELETE:
            if isinstance(node, dict):
                node.pop(last, None)
            else:
                del node[last]
        else:
            node[last] = edit.value
    return value


def replaced(value: Any, edits: Sequence[Edit]) -> Any:
    """A copy of a parsed value with `edits` made, sharing what they do not touch: only the
    containers on their paths are copied, so `value` stays as it was."""
    for edit in edits:
        if not edit.path:
            value = edit.value
            continue
        top = copy = _shallow(value)
        for key in edit.path[:-1]:
            child = _shallow(copy[key])
            copy[key] = child
            copy = child
        last = edit.path[-1]
        if edit.value is DELETE:
            if isinstance(copy, dict):
                copy.pop(last, None)
            else:
                del copy[last]
        else:
            copy[last] = edit.value
        value = top
    return value


def _shallow(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    raise SpliceError(f"a {type(value).__name__} has no members to edit")


def diff(before: Any, after: Any, path: Path = ()) -> list[Edit]:
    """The edits that turn parsed `before` into `after`: changed values, removed and added
    keys; an array whose length changed is replaced whole. Types count (1 is not 1.0 or true)."""
    if type(before) is not type(after):
        return [Edit(path, after)]
    if isinstance(before, dict):
        edits: list[Edit] = []
        for k, v in before.items():
            if k not in after:
                edits.append(Edit((*path, k), DELETE))
            else:
                edits += diff(v, after[k], (*path, k))
        edits += [Edit((*path, k), v) for k, v in after.items() if k not in before]
        return edits
    if isinstance(before, list):
        if len(before) != len(after):
            return [Edit(path, after)]
        edits = []
        for i, (a, b) in enumerate(zip(before, after, strict=True)):
            edits += diff(a, b, (*path, i))
        return edits
    return [] if before == after else [Edit(path, after)]
