"""Steady deltas: events accepted by comparing their bytes with a checked one (sans-I/O).

Theory of operation
-------------------
Most of a long LLM stream is one event repeated: a text delta whose bytes differ from the
previous delta's only inside one JSON string, the text. For such an event the full path (decode
the block, parse its JSON, run the dialect's state machine) finds nothing and changes nothing,
so `Steady` proves that once and then accepts the following events by their bytes:

1. Certify. The full path checks an event whose payload carries a non-empty text at a path its
   dialect's validator reads only for being empty (`Dialect.steady_paths`). If the validator's
   state (`fingerprint`) is the same after the event as before, save for where it points its
   findings (`StreamValidator.CONTEXT`) and event counters that grew by one
   (`StreamValidator.COUNTERS`), and no finding was added, the event was a no-op for the
   validator, and so is the same event with any other non-empty text.
2. Learn. The text's bytes occur once in the block, quoted, and parsing the block with a probe
   string in their place gives the same payload with the probe at that path: the bytes before
   (`prefix`) and after (`suffix`) are fixed, and any text without ``"``, ``\\``, control
   characters or separators between them is that JSON string and nothing else; so is one with
   valid escapes (a line break, a quote: the patterns take no other), and one of valid UTF-8
   without the line separators the SSE grammar reports on (`sse.hazardous`, the very check
   the full path's decoding makes; the others are control characters, which no JSON string
   holds unescaped).
3. Accept. A block that is `prefix` + such a text + `suffix` is the certified event with another
   text: `take` counts it (codec, checker, validator counters) without building it. A block
   the chunking cuts is held while its pieces keep matching (`resume`: the pieces of its text
   only searched for a line break or an escape, the whole text read once at its end, where it
   is: `plain_span`) and goes out whole; one that stops matching goes back to the full path
   (`release`). A chunk that is nothing but such blocks (most chunks of a long answer) is
   matched whole, in one call (`whole`).

Two kinds of validator state may change with such an event, when the validator declares them:
a count each event carries (`StreamValidator.STEADY_COUNTED`: Responses' sequence number, a
variable part of the template matched against the count the validator wants next), and the
text itself where the validator keeps it (`StreamValidator.steady_sink`: Responses compares the
streamed text with its *.done events); certification then allows exactly that append, and
accepted events append their texts in order.

An event may also carry a pad: a string the validator never reads, with other characters in
each event (`Dialect.steady_pads`: OpenAI's ``obfuscation``, random characters of random length
on every delta of Chat Completions and Responses streams unless the client turns it off). When
the certified event has one after its text, the template has a second hole there: its events
are `prefix` + text + `mid` + pad + `suffix`, the probe proves the pad's place as it proves the
text's, and a pad is taken as a short text is (printable ASCII, no ``"`` or ``\\``); a padded
event the chunking cuts is left to the full path. Rewritten (a Chat restamp), the client's
events are `out_prefix` + text + `out_mid` + pad + `out_suffix`.

A pipeline that rewrites events (a model restamp, tool names mapped back) may use the shortcut
when each of its rewrites is text-blind: its edits follow from the payload without the text at
the steady paths, and never land there (`Pipeline`, proven for the response rewrites in
tests/test_rewrite.py). The certified event's rewritten bytes are then the template of what the
client gets (`out_prefix` + text + `out_suffix`), checked on the probe as well: the probe's
payload gives the same edits, and splicing them into the probe gives that template.

A repairing pipeline (the relay's, or an inspected flow's with repairs on: repairs and a commit
gate) uses the same template after commit, when a delta also left the client's checker, the
repairs and the gate as they were, but for the counts they keep of the client's events, which
grew by one, and the text the client's checker keeps (see `mitmllm.engine.pipeline`); its
text-blind rewrites too.

A chunk of whole steady events (`Steady.whole`) may leave that counting to its caller (`due`):
the pipeline keeps the books of a run of such chunks in one go when something reads them
(`Pipeline._pay`: before the full way reads an event, at the end, in `settle`).

Anything else goes the full way, and a later certified event learns again. A stream whose
events never certify or never repeat stops trying after `MAX_MISSES`, so it pays for the
fingerprints a few times at most. What this proves is tested against the full path for every
chunking (tests/test_steady.py): the same findings, validator summary and bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Sequence
from enum import Enum
from functools import lru_cache
from itertools import chain
from typing import TYPE_CHECKING
from typing import Any

import orjson

from mitmllm.protocol.findings import Findings
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.splice import SpliceError
from mitmllm.protocol.splice import data_spans
from mitmllm.protocol.splice import locate
from mitmllm.protocol.splice import replaced
from mitmllm.protocol.splice import splice_event
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import hazardous
from mitmllm.protocol.sse import parse_common
from mitmllm.protocol.sse import unicode_hazardous

if TYPE_CHECKING:
    from mitmllm.protocol.dialect import Dialect
    from mitmllm.protocol.stream import StreamChecker

Path = tuple[str | int, ...]

#: Failed certifications (or templates that accepted nothing) in a row before a stream stops
#: trying: its events change the validator's state, or differ in more than their text.
MAX_MISSES = 4
#: Stands for the text while a template is learned (no character a JSON string escapes).
PROBE = "mitmllm-steady-probe"
#: Stands for the pad while a template is learned.
PROBE_PAD = "mitmllm-steady-pad"
#: Stands for the counter (a sequence number) while a template is learned.
PROBE_COUNT = 987654321
#: A validator's state deeper than this is not fingerprinted (and not certified).
MAX_DEPTH = 12


#: `Steady.before`'s token for an event of the live template (`Steady._same`).
SAME = object()

#: Where in a template a cut steady event stops.
PREFIX, TEXT, SUFFIX = range(3)


class TooDeep(Exception):
    """The state is nested deeper than MAX_DEPTH: certify nothing."""


#: Values that are their own picture.
_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


#: How `fingerprint` pictures an object of each class seen (`_how`).
_PLAIN, _REF, _DICT, _SEQUENCE, _SET, _OBJECT = range(6)
_HOW: dict[type, int] = dict.fromkeys(_SCALARS, _PLAIN)
#: Classes `_HOW` keeps at most (a validator's state has a handful).
_MAX_HOW = 1024


def _how(obj: Any) -> int:
    """How `fingerprint` pictures `obj`: the same for every object of its class (each test
    below asks the class), so it is worked out once a class, not an object."""
    if isinstance(obj, (bool, int, float, str, bytes, Enum)):
        how = _PLAIN
    elif isinstance(obj, (Event, Findings)) or callable(obj):
        how = _REF
    elif isinstance(obj, dict):
        how = _DICT
    elif isinstance(obj, (list, tuple)):
        how = _SEQUENCE
    elif isinstance(obj, (set, frozenset)):
        how = _SET
    else:
        how = _OBJECT
    if len(_HOW) < _MAX_HOW:
        _HOW[type(obj)] = how
    return how


def fingerprint(obj: Any, depth: int = 0, memo: dict[int, Any] | None = None) -> Any:
    """A comparable, hashable picture of `obj`'s value: containers and objects (their
    ``__dict__`` and ``__slots__``) by content. Events, findings and callables are references
    a validator keeps for reporting, not state, and compare equal. `memo` holds the pictures of
    the objects already taken in this pass: an object a validator reaches twice (an item by
    its index and by its id) is pictured once."""
    kind = type(obj)
    how = _HOW.get(kind)
    if how is None:
        how = _how(obj)
    if how == _PLAIN:
        return obj
    if how == _REF:
        return "<ref>"
    if depth > MAX_DEPTH:
        raise TooDeep
    d = depth + 1
    if memo is None:
        memo = {}
    # Scalars (most values) are their own picture: tested here, not in a call each. The
    # containers are read by list comprehensions, which CPython 3.12 runs inline (PEP 709),
    # where a generator is a frame resumed for each item: a validator's picture 25-30 % faster
    scalars = _SCALARS
    if how == _DICT:
        return (
            "dict",
            tuple(
                [
                    (
                        k if type(k) in scalars else fingerprint(k, d, memo),
                        v if type(v) in scalars else fingerprint(v, d, memo),
                    )
                    for k, v in obj.items()
                ]
            ),
        )
    if how == _SEQUENCE:
        return (
            kind.__name__,
            tuple([x if type(x) in scalars else fingerprint(x, d, memo) for x in obj]),
        )
    if how == _SET:
        return (
            "set",
            frozenset([x if type(x) in scalars else fingerprint(x, d, memo) for x in obj]),
        )
    # An object: taken once a pass (its picture is recorded when complete, so a cycle still
    # ends in TooDeep)
    picture = memo.get(id(obj))
    if picture is None:
        picture = (kind.__qualname__, tuple(sorted(attributes(obj, d, memo=memo).items())))
        memo[id(obj)] = picture
    return picture


#: The slot names of each class whose objects were fingerprinted.
_SLOTS: dict[type, tuple[str, ...]] = {}


def _slots(cls: type) -> tuple[str, ...]:
    names = _SLOTS.get(cls)
    if names is None:
        found: set[str] = set()
        for base in cls.__mro__:
            slots = base.__dict__.get("__slots__", ())
            found.update((slots,) if isinstance(slots, str) else slots)
        found.discard("__dict__")
        found.discard("__weakref__")
        names = _SLOTS[cls] = tuple(found)
    return names


def attributes(
    obj: Any,
    depth: int = 0,
    skip: frozenset[str] = frozenset(),
    memo: dict[int, Any] | None = None,
) -> dict[str, Any]:
    """The fingerprints of an object's own attributes (but those in `skip`), by name."""
    out = {}
    scalars = _SCALARS
    if memo is None:
        memo = {}
    own = getattr(obj, "__dict__", None)
    if own:
        for name, value in own.items():
            if name not in skip:
                out[name] = value if type(value) in scalars else fingerprint(value, depth, memo)
    missing = object()
    for name in _slots(type(obj)):
        if name not in skip:
            value = getattr(obj, name, missing)
            if value is not missing:
                out[name] = value if type(value) in scalars else fingerprint(value, depth, memo)
    return out


def opaque_text(payload: Any, path: Path) -> str | None:
    """The string at `path` in `payload`, or None."""
    node = payload
    for key in path:
        if isinstance(key, int):
            if type(node) is not list or len(node) <= key:
                return None
        elif type(node) is not dict:
            return None
        node = node[key] if isinstance(key, int) else node.get(key)
    return node if type(node) is str else None


#: Printable ASCII but ``"`` and ``\\``: what `plain_text` deletes to see if anything is left.
_PLAIN_ASCII = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')
#: A short text of printable ASCII but ``"`` and ``\\``, as a pattern (the rest is read by
#: `plain_text`). Possessive: a longer text fails at once instead of backtracking through it.
_PLAIN_RUN = rb"[ !#-\[\]-~]{1,2047}+"
#: A JSON string escape (a surrogate only in a pair: orjson takes no lone one), and a short
#: text of printable ASCII with escapes (a line break, a quote: most texts of real answers have
#: them now and then), non-empty. Each text's run of plain bytes is matched as `_PLAIN_RUN`'s
#: is, so a text without escapes costs little more.
_ESCAPE = (
    rb'\\(?:["\\/bfnrt]|u(?![dD][89a-fA-F])[0-9a-fA-F]{4}'
    rb"|u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
_ESCAPED_RUN = rb"(?=[ !#-~])[ !#-\[\]-~]*+(?:" + _ESCAPE + rb"[ !#-\[\]-~]*+)*+"
_ESCAPED_TEXT = re.compile(_ESCAPED_RUN)
#: A text of printable ASCII or of any bytes from 0x80 up, with escapes or without: the runs
#: of a chunk with UTF-8 texts (most of a stream in any language but English), whose texts are
#: then each read as `plain_text` or `escaped_text` reads them (`_utf8_texts`).
_UTF8_RUN = rb"[ !#-\[\]-~\x80-\xff]{1,2047}+"
_UTF8_ESCAPED_RUN = (
    rb"(?=[ !#-~\x80-\xff])[ !#-\[\]-~\x80-\xff]*+(?:" + _ESCAPE + rb"[ !#-\[\]-~\x80-\xff]*+)*+"
)


def _run(escaped: bool, utf8: bool) -> bytes:
    """The pattern of a text: plain printable ASCII, with escapes, with bytes from 0x80 up, or
    both."""
    if utf8:
        return _UTF8_ESCAPED_RUN if escaped else _UTF8_RUN
    return _ESCAPED_RUN if escaped else _PLAIN_RUN


#: The most digits a counter's pattern takes.
_MAX_DIGITS = 18
#: From this size on, a text is checked by orjson's string scanner (control characters) rather
#: than by a byte table: about twice as fast on big texts.
_BIG_TEXT = 2048


def unchanged(
    before: dict[str, Any], now: dict[str, Any], counters: Sequence[str], context: Sequence[str]
) -> bool:
    """Are two pictures of an object's attributes (`attributes`) the same, save for `context`
    (changed or not) and `counters` (grown by one)? Both are changed."""
    for name in context:
        before.pop(name, None)
        now.pop(name, None)
    for name in counters:
        was, grew = before.pop(name, None), now.pop(name, None)
        if type(was) is not int or grew != was + 1:
            return False
    return now == before


@lru_cache(maxsize=64)
def _tiling(prefix: int, suffix: int, mid: int = 0) -> re.Pattern[bytes]:
    """Events of a template whose prefix and suffix are this long, one after the other, each
    text short printable ASCII (`_PLAIN_RUN`): the first event's prefix and suffix in groups
    ``p`` and ``s``, every later one's the same bytes again (back-references). A match is the
    template's events where ``p`` is its prefix and ``s`` its suffix, which the caller checks.
    Held by the lengths, not the bytes, the expression is compiled once for all the streams
    whose events carry an id of their own (their templates differ in it, seldom in its
    length); it matches faster than the template written out (the engine compares a
    back-reference as a run of bytes, a literal byte by byte). `mid`: a padded template's
    bytes between the text and the pad (group ``m``), the pad a run like the text. Texts with
    escapes or bytes from 0x80 up are found by `_fields` (`Steady._other_texts`)."""
    # `.` with DOTALL, not a class: the engine skips n bytes of it in one step
    pad, again = _pad_parts(mid)
    return re.compile(
        rb"(?s)(?P<p>.{%d})" % prefix
        + _PLAIN_RUN
        + pad
        + rb"(?P<s>.{%d})(?:(?P=p)" % suffix
        + _PLAIN_RUN
        + again
        + rb"(?P=s))*+"
    )


def _pad_parts(mid: int) -> tuple[bytes, bytes]:
    """A tiling's pattern of what follows a padded template's text in its first event (`mid`
    bytes, group ``m``, then the pad) and in every later one (the same bytes, another pad)."""
    if not mid:
        return b"", b""
    return rb"(?P<m>.{%d})" % mid + _PLAIN_RUN, rb"(?P=m)" + _PLAIN_RUN


@lru_cache(maxsize=64)
def _padded_runs(prefix: int, mid: bytes, suffix: int) -> re.Pattern[bytes]:
    """Events of a padded template (no counter) whose prefix and suffix are this long: each
    one's text, `mid` (as written) and pad as one run, for `findall` over a chunk of plain
    texts. The events the runs make are the chunk itself or it is not such events (the text
    and the pad hold no quote, `mid` starts with one: each run splits one way), and the
    client's events are the same runs between its own prefix and suffix where it gets `mid`
    as it came: two joins, where the texts and pads apart take two formats and a flattening
    (a restamped chunk of four padded Chat deltas: 3.6 -> 2.5 µs)."""
    return re.compile(
        rb"(?s).{%d}(" % prefix + _PLAIN_RUN + re.escape(mid) + _PLAIN_RUN + rb").{%d}" % suffix
    )


@lru_cache(maxsize=64)
def _counted(in_prefix: bool, before: int, a: int, b: int, mid: int = 0) -> re.Pattern[bytes]:
    """`_tiling` for a template with a counter: `before` the bytes before the text (in the
    prefix) or before the counter's `a` (the prefix, in the suffix); `a` and `b` the bytes
    around the digits, and the rest of the suffix, as long as `_fields` says. The groups are
    the first event's parts (``a``, ``b`` and ``s``, or ``p``, ``a`` and ``b``), every later
    event's the same bytes again, each with digits of its own. `mid` as for `_tiling` (a
    counter in the prefix only)."""
    digits = rb"[0-9]{1,%d}" % _MAX_DIGITS
    pad, again = _pad_parts(mid)
    if in_prefix:  # a DIGITS b TEXT [m PAD] s
        return re.compile(
            rb"(?s)(?P<a>.{%d})" % a
            + digits
            + rb"(?P<b>.{%d})" % b
            + _PLAIN_RUN
            + pad
            + rb"(?P<s>.{%d})(?:(?P=a)" % before
            + digits
            + rb"(?P=b)"
            + _PLAIN_RUN
            + again
            + rb"(?P=s))*+"
        )
    assert not mid
    return re.compile(  # p TEXT a DIGITS b
        rb"(?s)(?P<p>.{%d})" % before
        + _PLAIN_RUN
        + rb"(?P<a>.{%d})" % a
        + digits
        + rb"(?P<b>.{%d})(?:(?P=p)" % b
        + _PLAIN_RUN
        + rb"(?P=a)"
        + digits
        + rb"(?P=b))*+"
    )


@lru_cache(maxsize=64)
def _fields(
    counter: bool | None, *lengths: int, mid: int = 0, escaped: bool = False, utf8: bool = False
) -> re.Pattern[bytes]:
    """One event of a template's lengths, for `findall` over events a tiling matched: its text
    (no counter), its digits and text (`counter` True: in the prefix, lengths a, b, suffix),
    or its text and digits (False: in the suffix, lengths prefix, a, b). The bytes around them
    are skipped, not matched: the tiling checked them, or the events made of what `findall`
    found are compared with the chunk (`Steady._other_texts`). A padded template's event gives its
    text and pad (no counter), or its digits and text (its pad skipped by a run). `escaped`:
    texts with escapes too; `utf8`: with bytes from 0x80 up too."""
    text = b"(" + _run(escaped, utf8) + b")"
    digits = rb"([0-9]{1,%d})" % _MAX_DIGITS
    if counter is None:  # with a pad: (text, pad)
        p, s = lengths
        pad = rb".{%d}(" % mid + _PLAIN_RUN + b")" if mid else b""
        return re.compile(rb"(?s).{%d}" % p + text + pad + rb".{%d}" % s)
    if mid:
        text += rb".{%d}" % mid + _PLAIN_RUN
    x, y, z = lengths
    if counter:
        return re.compile(rb"(?s).{%d}" % x + digits + rb".{%d}" % y + text + rb".{%d}" % z)
    assert not mid
    return re.compile(rb"(?s).{%d}" % x + text + rb".{%d}" % y + digits + rb".{%d}" % z)


@lru_cache(maxsize=64)
def _counted_texts(
    lead: bytes,
    in_prefix: bool,
    *lengths: int,
    mid: int = 0,
    escaped: bool = False,
    utf8: bool = False,
) -> re.Pattern[bytes]:
    """`_fields` for a template with a counter, capturing the texts only: `findall` of it
    gives each event's text (its digits are proven by `Steady._counted_run`, which formats
    the counts wanted). `lead`, the template's first line when that is an ``event:`` line (no
    ids in it), is matched as written: the engine then skips to where it occurs, so a search
    over other events (a Responses stream's done events, with the whole text) costs a scan,
    not a failed match at every byte (17 ns a byte without it). `mid`: each event's text and
    pad, a pair (a counter in the prefix only). `escaped`: texts with escapes too; `utf8`: with
    bytes from 0x80 up too (each then read as `plain_text` reads it)."""
    text = b"(" + _run(escaped, utf8) + b")"
    if mid:
        text += rb".{%d}(" % mid + _PLAIN_RUN + b")"
    digits = rb"[0-9]{1,%d}" % _MAX_DIGITS
    x, y, z = lengths
    start = rb"(?s)" + re.escape(lead) + rb".{%d}" % (x - len(lead))
    if in_prefix:  # a DIGITS b TEXT [m PAD] s
        return re.compile(start + digits + rb".{%d}" % y + text + rb".{%d}" % z)
    assert not mid
    return re.compile(start + text + rb".{%d}" % y + digits + rb".{%d}" % z)  # p TEXT a DIGITS b


def _lead(head: bytes) -> bytes:
    """The first line of a template that starts with an ``event:`` line (b"": no such line):
    bytes every stream of the format shares, unlike a data line's ids."""
    end = head.find(b"\n") + 1 if head.startswith(b"event:") else 0
    return head[:end]


def _percent(part: bytes) -> bytes:
    """`part` as the literal text of a %-format (its ``%`` doubled)."""
    return part.replace(b"%", b"%%")


def opaque_int(payload: Any, path: Path) -> int | None:
    """The integer (not a bool) at `path` in `payload`, or None."""
    node = payload
    for key in path:
        if isinstance(key, int):
            if type(node) is not list or len(node) <= key:
                return None
            node = node[key]
        elif type(node) is not dict:
            return None
        else:
            node = node.get(key)
    return node if type(node) is int else None


def plain_text(text: bytes) -> bool:
    """Is `text` the bytes of a JSON string that needs no escape and that the SSE grammar
    reports nothing on: valid UTF-8, no ``"`` or ``\\``, no control character (printable ASCII,
    or `_sound_utf8`: no line separator the grammar reports either)?"""
    if text.isascii():  # printable ASCII is 0x20-0x7e: no decoding
        if len(text) < _BIG_TEXT:
            return not text.translate(None, _PLAIN_ASCII)
        if text.find(b'"') != -1 or text.find(b"\\") != -1 or text.find(b"\x7f") != -1:
            return False
        try:
            orjson.loads(b'"' + text + b'"')  # JSON strings hold no raw control characters
        except orjson.JSONDecodeError:
            return False
        return True
    if text.find(b'"') != -1 or text.find(b"\\") != -1:  # not `in`: see sse.parse_common
        return False
    return _sound_utf8(text)


def escaped_text(text: bytes) -> bool:
    """Is `text` the bytes of a JSON string with escapes in it that the SSE grammar reports
    nothing on: printable ASCII with valid escapes (`_ESCAPED_TEXT`), or `_sound_utf8` with
    valid escapes (orjson reads it, a lone surrogate not)? The caller found its end: no quote
    but escaped."""
    if text.isascii():
        return _ESCAPED_TEXT.fullmatch(text) is not None
    try:
        if not _sound_utf8(text):
            return False
        orjson.loads(b'"' + text + b'"')
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        return False
    return True


def plain_span(raw: bytes, start: int, end: int, *, escapes: bool = True) -> bool:
    """`plain_text` of ``raw[start:end]``, a text between two quotes of `raw` (``raw[start -
    1]`` and ``raw[end]``): a big text is read where it is, by orjson's string scanner, not
    copied first (twice, to add the quotes). `escapes` False: the caller knows it has none."""
    if end - start < _BIG_TEXT:
        return plain_text(raw[start:end])
    if escapes and raw.find(b"\\", start, end) != -1:  # an escape: another string than its bytes
        return False
    try:  # a quote inside leaves trailing bytes; control characters and bad UTF-8 fail too
        text = orjson.loads(memoryview(raw)[start - 1 : end + 1])
    except orjson.JSONDecodeError:
        return False
    if text.isascii():  # a flag of the string: what is left is DEL, which orjson takes
        return raw.find(b"\x7f", start, end) == -1
    # (`_sound_utf8`: orjson took no C0 control, and the text is decoded already)
    return raw.find(b"\x7f", start, end) == -1 and not hazardous(text)


class Steady:
    """The steady-delta shortcut of one stream (see the module docstring)."""

    __slots__ = (
        "paths",
        "pads",
        "counters",
        "context",
        "counted",
        "prefix",
        "suffix",
        "mid",
        "counter",
        "out_prefix",
        "out_mid",
        "out_suffix",
        "rewrites",
        "sink",
        "misses",
        "used",
        "held",
        "stage",
        "matched",
        "hold_prefix",
        "hold_suffix",
        "last_start",
        "matches",
        "tiles",
        "fields",
        "runs",
        "texts",
        "one",
        "one_out",
        "head",
        "parts",
        "fixed",
        "quotes",
        "least",
        "single",
        "lone",
        "run",
        "probed",
        "probes",
        "event_name",
        "glue",
        "others",
        "seam",
        "bound",
        "ending",
        "whole_out",
        "taken_text",
        "due_texts",
    )

    def __init__(
        self,
        paths: tuple[Path, ...],
        counters: tuple[str, ...] = (),
        context: tuple[str, ...] = (),
        counted: tuple[Path, str] | None = None,
        pads: tuple[Path, ...] = (),
    ) -> None:
        self.paths = paths
        # Where an event may carry padding: a string the validator never reads (`Dialect.
        # steady_pads`), different in each event, as the text is
        self.pads = pads
        self.counters = counters
        self.context = context
        self.counted = counted  # (payload path, validator attribute): see StreamValidator
        self.prefix: bytes | None = None  # the learned template, once certified
        self.suffix = b""
        # A padded template's bytes between the text and the pad (b"": no pad); its events are
        # prefix + text + mid + pad + suffix
        self.mid = b""
        # The template's counter, when its events carry one (a sequence number): the bytes
        # before and after its digits, in the prefix (True) or in the suffix.
        self.counter: tuple[bool, bytes, bytes] | None = None
        # How the template's events end: the suffix, or after a counter in it, what follows
        # its digits (`may_end`; while there is a template)
        self.ending = b""
        # What the client gets of such an event: the same bytes unless the pipeline's rewrites
        # edit the certified event.
        self.out_prefix = b""
        self.out_mid = b""
        self.out_suffix = b""
        self.rewrites = False
        self.sink = False  # the validator keeps the texts (`StreamValidator.steady_sink`)
        self.misses = 0
        self.used = False  # the template accepted an event
        # A steady event the chunking cut, taken so far: its bytes, where it is (PREFIX, TEXT or
        # SUFFIX), how much of the prefix or suffix the bytes matched, and that event's frame.
        self.held: list[bytes] = []
        self.stage = TEXT
        self.matched = 0
        self.hold_prefix = b""
        self.hold_suffix = b""
        self.last_start = 0  # where in its chunk the last event `take` accepted starts
        # The template's events are matched by regular expressions (most deltas: a short
        # printable ASCII text); False once a text was too long for them
        self.matches = False
        # Events of the template one after the other, as one match (`_tiling`, `_counted`),
        # and each one's text and digits (`_fields`): expressions of the template's lengths,
        # not its bytes, shared by the streams whose events carry ids of their own. Without a
        # counter, the quotes of such events count them (their texts have none).
        self.tiles: re.Pattern[bytes] | None = None
        self.fields: re.Pattern[bytes] | None = None
        # A padded template (no counter) whose client gets the bytes between a text and its
        # pad as they came: each event's text, those bytes and its pad as one run
        # (`_padded_runs`), for a restamp of plain texts
        self.runs: re.Pattern[bytes] | None = None
        # With a counter: the texts alone (`_counted_texts`), and one event as a %-format of
        # its count and text (in their order), which `_counted_run` repeats to prove a run
        self.texts: re.Pattern[bytes] | None = None
        self.one = b""
        # A padded template without a counter: `one` is an event as a %-format of its text and
        # pad, `one_out` the same as the client gets it (rewritten or not)
        self.one_out = b""
        # What the tiling's groups take of the first event, checked against the template
        # (`_tiled`): the bytes it starts with, and each part's bytes and group.
        self.head = b""
        self.parts: tuple[tuple[bytes, str], ...] = ()
        self.fixed = 0  # the bytes of such an event but its text and digits
        self.quotes = 0
        self.least = 0  # the bytes of the shortest such event
        # Below this length a chunk is one event at most, of a template without a pad or a
        # counter: its text is what lies between its prefix and suffix (0: no such template)
        self.single = 0
        # Below this length a chunk is one event at most of the live template, when it has no
        # counter, its patterns match and the validator keeps no texts: what `take_one` takes
        # (0: no such template)
        self.lone = 0
        # With rewrites: what stands between two texts the client gets (out_suffix +
        # out_prefix), and what `whole` made of the last chunk it took
        self.glue = b""
        # The patterns for texts with escapes or UTF-8 (`_other_texts`, `_texts_of`), by kind
        # (`_kind`), made when first needed: a lookup in the functions' caches costs 0.3 µs a
        # chunk, a tenth of the match of a few events
        self.others: list[re.Pattern[bytes] | None] = [None] * 4
        self.seam = b""  # suffix + prefix: what stands between two texts upstream
        # With a counter: the bytes where one event ends and the next starts (no digits)
        self.bound = b""
        self.whole_out = b""
        # The texts the last events taken gave the validator's sink, as one (None: none)
        self.taken_text: str | None = None
        # The texts of the last events `whole` took for a caller that keeps the books
        self.due_texts: list[bytes] | None = None
        # The last event the full path checked was a candidate (see `before`)
        self.run = False
        # The certified event's payload with the probes in place, the edits that put them there
        # and its SSE event name: an event the full path reads is the template's event with
        # another text when the same edits make its payload that one (`before`)
        self.probed: Any = None
        self.probes: list[Edit] = []
        self.event_name: str | None = None

    @classmethod
    def of(cls, checker: StreamChecker) -> Steady | None:
        """The shortcut for the stream `checker` validates, if its wire format has one."""
        dialect: Dialect | None = checker.dialect
        validator = checker.validator
        if dialect is None or validator is None or not dialect.steady_paths:
            return None
        return cls(
            dialect.steady_paths,
            validator.COUNTERS,
            validator.CONTEXT,
            validator.STEADY_COUNTED,
            dialect.steady_pads,
        )

    # --- the full path: certify and learn ------------------------------------------------------

    def before(self, checker: StreamChecker, ev: Event, payload: Any, *, same: bool = True) -> Any:
        """Between parsing and checking an event: what `after` needs to certify it, or None
        when it is no candidate (no text at an opaque path, or the stream stopped trying).
        `same`: an event of the live template with a text it does not take by its bytes (an
        escape in it, say) is known by its payload, not certified again (see `after`)."""
        run, self.run = self.run, False
        if self.misses >= MAX_MISSES or type(payload) is not dict or checker.validator is None:
            return None
        for path in self.paths:
            text = opaque_text(payload, path)
            if text:
                self.run = True
                if same and self.prefix is not None and self._same(ev, payload, path):
                    return SAME, len(checker.findings.items), _suppressed(checker)
                if not run:
                    # The first delta of a run (after a block's start, a role, a stream's
                    # first event) moves the validator's state nearly always ("text seen"):
                    # certifying it would cost two fingerprints for nothing. Its successor,
                    # like it in all but the text, is certified instead.
                    return None
                try:
                    state = attributes(checker.validator)
                except TooDeep:
                    return None
                return path, text, state, len(checker.findings.items), _suppressed(checker)
        return None

    def after(
        self,
        checker: StreamChecker,
        ev: Event,
        payload: Any,
        token: Any,
        sent: Event | None = None,
        edits_of: Callable[[Any], Sequence[Edit]] | None = None,
        *,
        also: bool = True,
    ) -> None:
        """After checking the event `before` saw: learn its template if it certifies. `sent` is
        what the client got of it when the pipeline's text-blind rewrites (`edits_of`) changed
        it; `also` False: something else the event went through did not stay as it was."""
        if token[0] is SAME:
            # The template's event with another non-empty text, which the validator reads
            # only for being empty (or keeps, as the full path just did): it left the state
            # as the template's events leave it, unless it was found wanting
            _, found, suppressed = token
            if also and len(checker.findings.items) == found and _suppressed(checker) == suppressed:
                return
            self.forget()
            return
        path, text, state, found, suppressed = token
        if self.prefix is not None and not self.used:
            self.misses += 1  # the last template accepted nothing
        self.prefix, self.used, self.lone = None, False, 0
        validator = checker.validator
        if (
            not also
            or validator is None
            or len(checker.findings.items) != found
            or _suppressed(checker) != suppressed
        ):
            self.misses += 1
            return
        sink = validator.steady_sink()
        try:
            if sink is None:
                now = attributes(validator)
            else:  # the only other change allowed: the text appended where the validator keeps it
                if not sink or sink[-1] != text:
                    self.misses += 1
                    return
                sink.pop()
                try:
                    now = attributes(validator)
                finally:
                    sink.append(text)
        except TooDeep:
            self.misses += 1
            return
        if not unchanged(state, now, self.counters, self.context) or not self._learn(
            checker, ev, payload, path, text, sent, edits_of
        ):
            self.misses += 1
            return
        self.sink = sink is not None
        self.lone = 0 if self.sink or self.counter is not None else 2 * self.least

    def _learn(
        self,
        checker: StreamChecker,
        ev: Event,
        payload: Any,
        path: Path,
        text: str,
        sent: Event | None,
        edits_of: Callable[[Any], Sequence[Edit]] | None,
    ) -> bool:
        raw = ev.raw
        try:
            body = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate's escape (PAY-4): no template of it
            return False
        quoted = b'"' + body + b'"'
        if plain_text(body):
            if raw.count(quoted) != 1:
                return False
            at = raw.find(quoted) + 1
        else:  # a text with escapes: its bytes are where the path puts them, not its own
            span = _text_span(raw, ev, path)
            if span is None:
                return False
            at, end = span
            body, quoted = raw[at:end], raw[at - 1 : end + 1]
            if raw.count(quoted) != 1:
                return False
        prefix, suffix = raw[:at], raw[at + len(body) :]
        rewritten = sent is not None and sent is not ev
        probe_edits = [Edit(path, PROBE)]
        # A pad after the text: what lies between them, and the pad's place
        padded = self._pad(payload, raw, at + len(body))
        mid = b""
        if padded is not None:
            pad_path, pad_at, pad_end = padded
            mid, suffix = raw[at + len(body) : pad_at], raw[pad_end:]
            probe_edits.append(Edit(pad_path, PROBE_PAD))
        tail = mid + PROBE_PAD.encode() + suffix if mid else suffix
        counter = None
        probe_raw = prefix + PROBE.encode() + tail
        if self.counted is not None:
            if rewritten:
                return False
            found = self._counter(checker, ev, payload, at, len(body))
            if found is None:
                return False
            counter, probe_raw = found
            if mid:
                if not counter[0]:
                    return False  # a counter after the text, with a pad: not a template here
                # the probe's bytes after its text: the pad's probe in place
                probe_raw = probe_raw[: len(probe_raw) - (len(raw) - at - len(body))] + tail
            probe_edits.append(Edit(self.counted[0], PROBE_COUNT))
        probe = parse_common(probe_raw, ev.index, ev.offset)
        if probe is None or probe.event != ev.event or probe.data is None:
            return False
        try:
            if rewritten:  # the rewrites edited `payload` in place: the upstream's value is here
                payload = orjson.loads(ev.data or "")
            probed = replaced(payload, probe_edits)
            if orjson.loads(probe.data) != probed:
                return False
        except orjson.JSONDecodeError:  # numbers orjson does not take: the full path, always
            return False
        self.probed, self.probes, self.event_name = probed, probe_edits, ev.event
        out_prefix, out_mid, out_suffix = prefix, mid, suffix
        if edits_of is not None:
            edits = list(edits_of(payload))
            if list(edits_of(probed)) != edits or bool(edits) != rewritten:
                return False
        elif rewritten:
            return False
        if rewritten:
            assert sent is not None
            out = sent.raw
            if out.count(quoted) != 1:
                return False
            at = out.find(quoted) + 1
            out_prefix, out_suffix = out[:at], out[at + len(body) :]
            out_tail = out_suffix
            if mid:  # the pad's place in what the client gets, as in what came
                pad = raw[pad_at:pad_end]
                quoted_pad = b'"' + pad + b'"'
                pad_out = out.find(quoted_pad, at + len(body)) + 1
                if not pad_out or out.count(quoted_pad) != 1:
                    return False
                out_mid, out_suffix = out[at + len(body) : pad_out], out[pad_out + len(pad) :]
                out_tail = out_mid + PROBE_PAD.encode() + out_suffix
            try:
                spliced = splice_event(probe, edits).raw
            except SpliceError:
                return False
            if spliced != out_prefix + PROBE.encode() + out_tail:
                return False
        self.prefix, self.suffix, self.counter = prefix, suffix, counter
        self.ending = suffix if counter is None or counter[0] else counter[2]
        self.mid, self.out_mid = mid, out_mid
        self.out_prefix, self.out_suffix, self.rewrites = out_prefix, out_suffix, rewritten
        self.matches = True
        self.glue = out_suffix + out_prefix
        self.seam = suffix + prefix
        self.others = [None] * 4
        # the parts after the text: the pad's, then the suffix
        after = ((mid, "m"), (suffix, "s")) if mid else ((suffix, "s"),)
        m = len(mid)
        if counter is None:
            self.tiles = _tiling(len(prefix), len(suffix), m)
            self.fields = _fields(None, len(prefix), len(suffix), mid=m)
            same = mid and out_mid == mid
            self.runs = _padded_runs(len(prefix), mid, len(suffix)) if same else None
            self.head, self.parts = prefix, after
            self.quotes = sum(part.count(b'"') for part in (prefix, mid, suffix))
            if mid:
                self.one = _percent(prefix) + b"%s" + _percent(mid) + b"%s" + _percent(suffix)
                self.one_out = (
                    _percent(out_prefix) + b"%s" + _percent(out_mid) + b"%s" + _percent(out_suffix)
                )
        else:
            in_prefix, a, b = counter
            before = len(suffix) if in_prefix else len(prefix)
            self.tiles = _counted(in_prefix, before, len(a), len(b), m)
            # the first event's parts, in the order the tiling's groups took them
            self.head, self.parts = (
                (a, ((b, "b"), *after)) if in_prefix else (prefix, ((a, "a"), (b, "b")))
            )
            self.bound = suffix + a if in_prefix else b + prefix
            if in_prefix:
                self.fields = _fields(True, len(a), len(b), len(suffix), mid=m)
                self.texts = _counted_texts(_lead(a), True, len(a), len(b), len(suffix), mid=m)
                self.one = _percent(a) + b"%d" + _percent(b) + b"%s"
                if mid:
                    self.one += _percent(mid) + b"%s"
                self.one += _percent(suffix)
            else:
                self.fields = _fields(False, len(prefix), len(a), len(b))
                self.texts = _counted_texts(_lead(prefix), False, len(prefix), len(a), len(b))
                self.one = _percent(prefix) + b"%s" + _percent(a) + b"%d" + _percent(b)
        self.fixed = len(self.head) + sum(len(part) for part, _ in self.parts)
        # the shortest such event: a text of one byte (and a count of one digit, a pad of one)
        self.least = self.fixed + 1 + (counter is not None) + bool(mid)
        self.single = 2 * self.least if counter is None and not mid else 0
        return True

    def _pad(self, payload: Any, raw: bytes, start: int) -> tuple[Path, int, int] | None:
        """The certified event's pad, when it has one after its text (which ends at `start`):
        its path and where its bytes are in `raw` (between its quotes). None: no pad, or one
        the template cannot take (not plain, or its bytes not once in the event)."""
        for path in self.pads:
            value = opaque_text(payload, path)
            if not value:
                continue
            if not value.isascii():
                return None  # the patterns take printable ASCII pads only
            pad = value.encode("ascii")
            quoted = b'"' + pad + b'"'
            # printable ASCII (as the patterns read it), once, after the text
            if pad.translate(None, _PLAIN_ASCII) or len(pad) >= _BIG_TEXT:
                return None
            if raw.count(quoted) != 1 or (at := raw.find(quoted, start)) == -1:
                return None
            return path, at + 1, at + 1 + len(pad)
        return None

    def _tiled(self, data: bytes) -> re.Match[bytes] | None:
        """The tiling's match at the start of `data`, where the first event's parts that its
        groups took (`head`, `parts`) are the template's: its steady events, one after the
        other (with a counter, whatever their counts)."""
        tiles = self.tiles
        assert tiles is not None
        m = tiles.match(data) if data.startswith(self.head) else None
        if m is None:
            return None
        for part, group in self.parts:
            if not data.startswith(part, m.start(group)):
                return None
        return m

    def _run(self, checker: StreamChecker, data: bytes) -> tuple[int, int, list[bytes]]:
        """The template's events at the start of `data`, one after the other (with a counter,
        each with the count the validator wants next): where they end, where the last one
        starts, and their texts. The tiling is checked against the template's bytes where its
        groups took the first event's; the fields then read the events it matched."""
        counter, fields = self.counter, self.fields
        assert fields is not None
        m = self._tiled(data)
        if m is None:
            return 0, 0, []
        end, fixed = m.end(), self.fixed
        if counter is None:
            texts = fields.findall(data, 0, end)
            if self.mid:  # text and pad taking turns (`_rewritten` reads them so); the last
                # event starts with the last prefix (the texts and pads hold no quote)
                flat = list(chain.from_iterable(texts))
                return end, data.rfind(self.head, 0, end), flat
            return end, end - fixed - len(texts[-1]), texts
        in_prefix = counter[0]
        assert self.counted is not None
        count = getattr(checker.validator, self.counted[1])
        run = self._counted_run(count, data, end)
        if run is not None:  # every count the one wanted (the common run)
            texts, tail = run
            last = end - fixed - len(b"%d" % (count + len(texts) - 1)) - len(texts[-1]) - tail
            return end, last, texts
        if self.mid:
            return 0, 0, []  # with a pad, counts out of turn are read by the full path
        pos = last = 0
        texts = []
        for i, pair in enumerate(fields.findall(data, 0, end)):
            digits, text = pair if in_prefix else pair[::-1]
            if digits != b"%d" % (count + i):
                break
            last = pos
            pos += fixed + len(digits) + len(text)
            texts.append(text)
        return pos, last, texts

    def _one_padded(self, chunk: bytes, start: int) -> tuple[bytes, bytes] | None:
        """The text and pad of `chunk` when it is one padded event whose text starts at
        `start` (what comes before it checked already, its suffix by `may_end`): the text up
        to its closing quote, `mid`, then a pad, as the patterns take them; else None."""
        end = chunk.find(b'"', start)
        if end > start and chunk[end - 1] == 0x5C:  # an escaped quote: where the text ends
            end = _text_end(chunk, start)
        if end <= start or not chunk.startswith(self.mid, end):
            return None
        text, pad = chunk[start:end], chunk[end + len(self.mid) : len(chunk) - len(self.suffix)]
        if not 0 < len(pad) < _BIG_TEXT or pad.translate(None, _PLAIN_ASCII):
            return None
        if _between(text, None, 0) is None:  # the text as a pattern's takes it
            return None
        return text, pad

    def _one_counted(self, count: int, chunk: bytes) -> bytes | None:
        """The text of `chunk` when it is one event of the template with the count wanted,
        `count` (its head and its end checked already); else None. Its parts are where the
        count's digits put them: a few comparisons, where a pattern and a format cost more
        than the event (a chunk of one event is what most upstreams write)."""
        assert self.counter is not None
        in_prefix, a, b = self.counter
        digits = b"%d" % count
        if in_prefix:  # a DIGITS b TEXT suffix (or TEXT mid PAD suffix)
            at = len(a) + len(digits)
            if not chunk.startswith(digits, len(a)) or not chunk.startswith(b, at):
                return None
            if self.mid:
                parts = self._one_padded(chunk, at + len(b))
                return None if parts is None else parts[0]
            return _between(chunk, None, len(self.suffix), at + len(b))
        tail = a + digits + b  # prefix TEXT a DIGITS b
        if not chunk.endswith(tail):
            return None
        return _between(chunk, None, len(tail), len(self.head))

    def _counted_run(self, count: int, data: bytes, end: int) -> tuple[list[bytes], int] | None:
        """The texts of `data` up to `end` when it is the template's events one after the
        other, each with the count wanted next from `count` on, and the last one's pad's
        length (0: no pad); None when it is not. The texts (and pads) are found by one pattern
        (`_counted_texts`); the events they make with the counts wanted, formatted in one go
        (`one` repeated), are `data`'s bytes or they are not such events: equal bytes prove the
        digits, each text's place and the bytes around it."""
        assert self.texts is not None and self.counter is not None
        escaped = data.find(b"\\", 0, end) != -1
        utf8 = not data.isascii()
        if not (escaped or utf8):  # plain texts (the common run)
            return self._counted_texts_run(self.texts, count, data, end)
        # texts with escapes or UTF-8 texts, maybe (or such bytes after `end`: the pattern
        # takes plain texts too), each UTF-8 text then read as the full path would read it
        texts = self.others[_kind(escaped, utf8)] or self._texts_of(utf8=utf8, escaped=escaped)
        run = self._counted_texts_run(texts, count, data, end)
        if run is not None and utf8 and not _utf8_texts(run[0]):
            return None
        return run

    def _texts_of(self, *, utf8: bool = False, escaped: bool = True) -> re.Pattern[bytes]:
        """`texts` for texts with escapes (`escaped`), bytes from 0x80 up (`utf8`), or both;
        kept in `others`."""
        assert self.counter is not None and self.prefix is not None
        kinds = {"utf8": utf8, "escaped": escaped}
        in_prefix, a, b = self.counter
        if in_prefix:
            lengths = (len(a), len(b), len(self.suffix))
            pattern = _counted_texts(_lead(a), True, *lengths, mid=len(self.mid), **kinds)
        else:
            lengths = (len(self.prefix), len(a), len(b))
            pattern = _counted_texts(_lead(self.prefix), False, *lengths, **kinds)
        self.others[_kind(escaped, utf8)] = pattern
        return pattern

    def _counted_texts_run(
        self, pattern: re.Pattern[bytes], count: int, data: bytes, end: int
    ) -> tuple[list[bytes], int] | None:
        """`_counted_run` with the texts (and pads) `pattern` finds."""
        assert self.counter is not None
        found = pattern.findall(data, 0, end)
        n = len(found)
        if not n:
            return None
        # the format's arguments, counts and texts (and pads) taking turns, set by slice
        # assignments (half the time of pairing them up one by one)
        if self.mid:  # a counter in the prefix: count, text, pad
            flat = list(chain.from_iterable(found))  # text, pad, text, pad, ...
            texts = flat[0::2]
            args = flat + texts
            args[0::3] = range(count, count + n)
            args[1::3] = texts
            args[2::3] = flat[1::2]
            tail = len(flat[-1])
        else:
            texts = found
            args = texts * 2
            first = 0 if self.counter[0] else 1
            args[first::2] = range(count, count + n)
            args[1 - first :: 2] = texts
            tail = 0
        made = self.one * n % tuple(args)
        if len(made) != end or not data.startswith(made):
            return None
        return texts, tail

    def _counter(
        self, checker: StreamChecker, ev: Event, payload: Any, at: int, size: int
    ) -> tuple[tuple[bool, bytes, bytes], bytes] | None:
        """Where the certified event's counter is: the bytes around its digits, and the probe
        with another count; None when it is not a plain integer where the validator wants it."""
        assert self.counted is not None and checker.validator is not None
        cpath, attr = self.counted
        value = opaque_int(payload, cpath)
        if value is None or getattr(checker.validator, attr, None) != value + 1:
            return None
        raw = ev.raw
        span = _value_span(raw, ev, cpath)
        if span is None or raw[span[0] : span[1]] != b"%d" % value:
            return None
        cs, ce = span
        probe = PROBE.encode()
        count = b"%d" % PROBE_COUNT
        if ce <= at:  # in the prefix
            a, b = raw[:cs], raw[ce:at]
            probe_raw = a + count + b + probe + raw[at + size :]
            in_prefix = True
        elif cs >= at + size:  # in the suffix
            a, b = raw[at + size : cs], raw[ce:]
            probe_raw = raw[:at] + probe + a + count + b
            in_prefix = False
        else:
            return None
        if not b or b[:1].isdigit() or b[:1] in b".eE":
            return None  # the digits must end where the template says
        return (in_prefix, a, b), probe_raw

    def _same(self, ev: Event, payload: dict[str, Any], path: Path) -> bool:
        """Is the event the certified one with another text (and pad, and count): the same
        event name, and the same payload once the probes are in place?"""
        if ev.event != self.event_name or self.probes[0].path != path:
            return False
        try:
            return replaced(payload, self.probes) == self.probed
        except (KeyError, IndexError, TypeError):  # a path the payload does not have
            return False

    def forget(self) -> None:
        """The full path checked an event that was not certified: the state the template was
        proven in may have changed, so the template goes."""
        if self.prefix is not None:
            if not self.used:
                self.misses += 1
            self.prefix, self.used, self.lone = None, False, 0

    # --- the shortcut ----------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """Is a cut steady event being taken (its bytes held here, none in the decoder)?"""
        return bool(self.held)

    def next_prefix(self, checker: StreamChecker) -> bytes | None:
        """How the next event starts if it is a steady one (None: no template)."""
        if self.prefix is None or self.counter is None:
            return self.prefix
        return self._frame(checker, 0)[0]

    def _frame(self, checker: StreamChecker, k: int) -> tuple[bytes, bytes]:
        """The prefix and suffix of the `k`-th event from now (its counter's digits in place)."""
        assert self.prefix is not None and self.counted is not None and self.counter is not None
        in_prefix, a, b = self.counter
        digits = b"%d" % (getattr(checker.validator, self.counted[1]) + k)
        if in_prefix:
            return a + digits + b, self.suffix
        return self.prefix, a + digits + b

    def take(
        self,
        checker: StreamChecker,
        chunk: bytes,
        out: list[bytes],
        *,
        decoded: bool = False,
        hold: bool = True,
    ) -> int:
        """Accept the events at the start of `chunk` (fed with nothing buffered) that match the
        template, and hold one the chunk cuts while it still matches; how many bytes that takes.
        What the client gets of the events accepted is appended to `out` (one slice of `chunk`
        when the template does not rewrite: `chunk` itself when it takes all of it). `decoded`:
        `chunk` is one block the decoder returned (and counted); `hold` False: hold nothing.
        A padded template's cut event is not held: the decoder keeps it for the full path."""
        prefix, suffix, mid = self.prefix, self.suffix, self.mid
        if prefix is None:
            return 0
        hold = hold and not mid
        rewrites, counter = self.rewrites, self.counter
        texts: list[bytes] | None = [] if self.sink else None
        startswith, find = chunk.startswith, chunk.find
        pos = taken = 0
        n = len(chunk)
        if not self.matches:
            pass
        elif counter is None and texts is None and not rewrites:
            # the common case: the events at the chunk's start in one match, counted by their
            # quotes; the last of them starts with the prefix (the texts hold no quote)
            m = self._tiled(chunk)
            if m is not None:
                pos = m.end()
                taken = chunk.count(b'"', 0, pos) // self.quotes
                self.last_start = chunk.rfind(prefix, 0, pos)
        else:  # the texts, to keep or to rewrite the events around; or a counter
            end, last, found = self._run(checker, chunk)
            if found:
                padded = bool(mid) and counter is None  # texts and pads taking turns
                pos, taken, self.last_start = end, len(found) >> padded, last
                if texts is not None:
                    texts += found[0::2] if padded else found
                if rewrites:
                    out.append(self._rewritten(found))
        while pos < n:
            if counter is not None:
                prefix, suffix = self._frame(checker, taken)
            if not startswith(prefix, pos):
                rest = chunk[pos:]
                if hold and len(rest) < len(prefix) and prefix.startswith(rest):
                    self._hold(rest, PREFIX, len(rest), prefix, suffix)  # cut inside the prefix
                break
            start = pos + len(prefix)
            end = find(b'"', start)
            if end > start and chunk[end - 1] == 0x5C:  # an escaped quote: where the text ends
                end = _text_end(chunk, start)
            if end == -1:  # cut inside the text
                if hold and _may_be_plain(chunk, start, n):
                    self._hold(_rest(chunk, pos), TEXT, 0, prefix, suffix)
                break
            if end == start:
                break
            if end - start < _BIG_TEXT:
                text = chunk[start:end]
                # short printable ASCII (most deltas): nothing is left once it is deleted;
                # or plain UTF-8, or either with escapes
                rest = text.translate(None, _PLAIN_ASCII)
                if rest and not _other_text(text, rest):
                    break
            elif plain_span(chunk, start, end):
                text = b""  # a big text is copied only for what needs it as bytes (below)
            else:
                break
            tail = end  # where the suffix starts
            if mid:  # then the pad: printable ASCII, as the patterns take it
                if not startswith(mid, end):
                    break
                pad = end + len(mid)
                tail = find(b'"', pad)
                if not 0 < tail - pad < _BIG_TEXT or chunk[pad:tail].translate(None, _PLAIN_ASCII):
                    break
            after = tail + len(suffix)
            if after > n:  # cut inside the suffix, maybe
                rest = chunk[end:]
                if hold and suffix.startswith(rest):
                    self._hold(_rest(chunk, pos), SUFFIX, len(rest), prefix, suffix)
                break
            if not startswith(suffix, tail):
                break
            taken += 1
            if not text and (rewrites or texts is not None):
                text = chunk[start:end]
            if rewrites:
                if mid:
                    out += (self.out_prefix, text, self.out_mid, chunk[pad:tail], self.out_suffix)
                else:
                    out += (self.out_prefix, text, self.out_suffix)
            if texts is not None:
                texts.append(text)
            if end - start >= _BIG_TEXT:
                # this stream's texts are long: no pattern would match
                self.matches, self.lone = False, 0
            self.last_start = pos
            pos = after
        if taken:
            self._count(checker, taken, 0 if decoded else pos, texts)
            if not rewrites:
                out.append(chunk[:pos])
            self.used = True
            self.misses = 0
        return n if self.held else pos  # a held event takes the rest of the chunk

    def whole(self, checker: StreamChecker, chunk: bytes, due: int | None = None) -> int:
        """`take` for the common chunk (fed with nothing buffered or held): when `chunk` is
        steady events that each match the pattern, count them as `take` does and return how
        many; else 0, with nothing changed (`take` reads it). With rewrites, what the client
        gets of the chunk is `whole_out`. With `due`, the books are the caller's: `due`
        events taken before are not counted yet (the count wanted next is that much further),
        and these are not either; their texts for the validator's sink are left in
        `due_texts` (None: none), to be counted with them (`_count`)."""
        prefix = self.prefix
        if prefix is None or not self.matches or not chunk.endswith(self.ending):
            # A chunk that ends otherwise is not all steady events (`may_end`); found at once,
            # where the matches below would read all of it first (a stream's last chunk can
            # be big: a Responses stream's done events carry the whole text, four times)
            return 0
        n = len(chunk)
        if n < self.single:
            # One event at most, no pad, no counter (most upstreams write an event a chunk):
            # its text is what lies between (its suffix checked above), a few comparisons
            # where a match costs more than the event; rewritten, out_prefix + text +
            # out_suffix (`_rewritten` of one text)
            text = _between(chunk, prefix, len(self.suffix))
            if text is None:
                return 0
            if self.rewrites:
                self.whole_out = self.out_prefix + text + self.out_suffix
            taken = 1
            texts: list[bytes] | None = [text]
        elif self.rewrites:
            if self.counter is not None:
                return 0  # a template with a counter is never rewritten (`_learn`)
            # the events, all of the chunk, each rewritten to out_prefix + text + out_suffix
            suffix = self.suffix
            assert self.fields is not None
            if self.mid:
                # the texts and pads as the lengths place them; the events they make are the
                # chunk itself or it is not such events; the client's, the same format's
                # (plain texts by the plain pattern; others, escapes, UTF-8, `_other_texts`)
                args: tuple[bytes, ...] | None = None
                if n < 2 * self.least:  # one event (most upstreams write one a chunk): its
                    # text and pad where they lie, a few comparisons
                    if not chunk.startswith(prefix):
                        return 0
                    args = self._one_padded(chunk, len(prefix))
                    if args is None:
                        return 0
                else:
                    ascii, escaped = chunk.isascii(), chunk.find(b"\\") != -1
                    if ascii and not escaped and self.runs is not None:
                        # the client gets the bytes between a text and its pad as they came:
                        # each event's text, those bytes and its pad one run (`_padded_runs`)
                        found = self.runs.findall(chunk)
                        if not found or prefix + self.seam.join(found) + suffix != chunk:
                            return 0
                        self.whole_out = self.out_prefix + self.glue.join(found) + self.out_suffix
                        taken, mid = len(found), self.mid
                        texts = [run[: run.find(mid)] for run in found] if self.sink else None
                    elif ascii and not escaped:
                        pairs = self.fields.findall(chunk)
                        args = tuple(chain.from_iterable(pairs))
                        if not pairs or self.one * len(pairs) % args != chunk:
                            return 0
                    else:
                        other = self._other_texts(chunk, ascii, escaped)
                        if other is None:
                            return 0
                        args = tuple(other)
                if args is not None:  # (not runs)
                    self.whole_out = self.one_out * (len(args) // 2) % args
                    taken, texts = len(args) // 2, list(args[0::2])
            else:  # (one event: above)
                ascii, escaped = chunk.isascii(), chunk.find(b"\\") != -1
                if ascii and not escaped:
                    # the texts as the template's lengths place them; the events they make, the
                    # template's bytes around them, are the chunk or not such events
                    found = self.fields.findall(chunk)
                    if not found or prefix + self.seam.join(found) + suffix != chunk:
                        return 0
                else:  # escapes, UTF-8
                    other = self._other_texts(chunk, ascii, escaped)
                    if other is None:
                        return 0
                    found = other
                self.whole_out = self._rewritten(found)
                taken = len(found)
                texts = found
        elif self.counter is None:
            # One match for the whole chunk: from its start the pattern matches one event after
            # the other up to its end, where `take` would match one at a time (its text
            # possessive: one way only); and the texts have no quote, so the quotes count them.
            # The first event's prefix is checked here, the last one's suffix by `may_end`: the
            # pattern has them match every other event's. (One event without a pad: above.)
            tiles = self.tiles
            assert tiles is not None
            # The texts themselves only where the validator keeps them (a tool block's input):
            # the pattern that finds them in the chunk, or the texts already found
            fields: re.Pattern[bytes] | None = self.fields
            texts = None
            if not chunk.startswith(prefix):
                return 0
            elif self.mid and n < 2 * self.least:  # one padded event: its text and pad
                one = self._one_padded(chunk, len(prefix))
                if one is None:
                    return 0
                taken, fields, texts = 1, None, [one[0]]
            elif self.mid:  # padded: the parts around the pads checked where the first has them
                m = self._tiled(chunk)
                if m is not None and m.end() == n:
                    taken = chunk.count(b'"') // self.quotes
                else:
                    other = self._other_texts(chunk, chunk.isascii(), chunk.find(b"\\") != -1)
                    if other is None:
                        return 0
                    taken, fields, texts = len(other) // 2, None, other[0::2]
            else:
                ascii, escaped = chunk.isascii(), chunk.find(b"\\") != -1
                if ascii and not escaped:  # plain texts: the tiling
                    if tiles.fullmatch(chunk) is None:
                        return 0
                    taken = chunk.count(b'"') // self.quotes
                else:  # texts with escapes (a quote among them) or UTF-8 texts
                    # (a match of the tiling would fail at the first such text: not tried)
                    other = self._other_texts(chunk, ascii, escaped)
                    if other is None:
                        return 0
                    taken, fields, texts = len(other), None, other
            if not self.sink:
                texts = None
            elif fields is not None:  # (padded: texts and pads)
                kept: list[Any] = fields.findall(chunk)
                texts = list(chain.from_iterable(kept))[0::2] if self.mid else kept
        else:
            # the events, all of the chunk, each count the one the validator wants next: one
            # pattern for the texts and one format to prove them (`_counted_run`), where `take`
            # would match the tiling first (a second pass)
            if not chunk.startswith(self.head):
                return 0
            assert self.counted is not None
            count = getattr(checker.validator, self.counted[1])
            if due:
                count += due
            if n < 2 * self.least:  # one event at most (most chunks of a real stream)
                text = self._one_counted(count, chunk)
                if text is None:
                    return 0
                taken, texts = 1, [text]
                self.last_start = 0
            else:
                # The last event is no longer than a steady one can be: a Responses stream's
                # done event (the whole text) after its last deltas is turned down here, not
                # searched through for texts
                last = self._last_event(chunk)
                if n - last >= self._longest():
                    return 0
                run = self._counted_run(count, chunk, n)
                if run is None:
                    return 0
                texts, _ = run
                taken = len(texts)
                self.last_start = last  # (the run proves `bound` where it found it)
        if due is None:
            self._count(checker, taken, n, texts if self.sink else None)
        else:
            self.due_texts = texts if self.sink else None
        self.used = True
        self.misses = 0
        return taken

    def take_one(self, chunk: bytes) -> bytes | None:
        """What the client gets of `chunk` when it is one event of the live template (the
        caller asked its length against `lone`): `whole`'s one event (its text what lies
        between the prefix and the suffix, or its text and pad where they lie), for a caller
        that keeps the books of one event; else None, nothing changed. No counter or sink to
        ask about, no list of texts and no output left behind: most chunks of a restamped or
        repaired stream, which are read one at a time."""
        prefix, suffix = self.prefix, self.suffix
        assert prefix is not None  # (`lone` is 0 without a template)
        if not chunk.startswith(prefix) or not chunk.endswith(suffix):
            return None
        if self.mid:
            parts = self._one_padded(chunk, len(prefix))
            if parts is None:
                return None
            self.used = True
            self.misses = 0
            if not self.rewrites:
                return chunk
            text, pad = parts
            return self.out_prefix + text + self.out_mid + pad + self.out_suffix
        # `_between`'s checks, written out: its call costs 0.1 µs of this chunk's 1.7
        text = chunk[len(prefix) : len(chunk) - len(suffix)]
        if not 0 < len(text) < _BIG_TEXT:
            return None
        rest = text.translate(None, _PLAIN_ASCII)
        if rest and not _other_text(text, rest):
            return None
        self.used = True
        self.misses = 0
        return self.out_prefix + text + self.out_suffix if self.rewrites else chunk

    def _last_event(self, data: bytes) -> int:
        """Where the last event of `data` starts if `data` is events of a template with a
        counter (after the last `bound`; 0 where there is none)."""
        at = data.rfind(self.bound)
        return 0 if at < 0 else at + len(self.bound) - len(self.head)

    def _longest(self) -> int:
        """The length from which an event is no steady one of a template with a counter."""
        return self.fixed + _MAX_DIGITS + _BIG_TEXT * (1 + bool(self.mid))

    def long_end(self, data: bytes) -> bool:
        """Does `data`, which ends as the template ends (`may_end`), end with an event longer
        than a steady one can be? A Responses stream's `output_text.done` ends as its deltas
        do and carries the whole text: `whole` turns down any data that ends so at once, and
        a reader of pieces leaves such a piece out of the run it reads in one match. False for
        a template without a counter (its tiling stops at such an event)."""
        if self.counter is None or self.prefix is None:
            return False
        return len(data) - self._last_event(data) >= self._longest()

    def last_of(self, chunk: bytes, taken: int) -> int:
        """Where in `chunk` the last of the `taken` events `whole` took from it last starts."""
        if taken == 1:
            return 0
        if self.counter is None:  # the texts hold no quote: the prefix is last
            assert self.prefix is not None
            return chunk.rfind(self.prefix)
        return self.last_start  # (`whole` found it)

    def _other_texts(self, chunk: bytes, ascii: bool, escaped: bool) -> list[bytes] | None:
        """The texts of `chunk` (padded: texts and pads taking turns) when it is nothing but
        the template's events (no counter) whose texts have escapes or bytes from 0x80 up (a
        quote or a line break in code, any language but English), each one the full path
        would take; else None. One pass finds them as the template's lengths place them (the
        pattern takes valid escapes only); the events they make, the template's bytes around
        them, are the chunk itself or it is not such events: equal bytes prove every part a
        tiling's match would. UTF-8 texts are then read as the full path reads them. `ascii`
        and `escaped`: is the chunk ASCII, has it a backslash (the caller has asked)?"""
        prefix, suffix = self.prefix, self.suffix
        assert prefix is not None
        if ascii and not escaped:
            return None  # plain texts, which the tiling has turned down
        kind = _kind(escaped, not ascii)
        pattern = self.others[kind]
        if pattern is None:
            lengths = (len(prefix), len(suffix))
            pattern = _fields(None, *lengths, mid=len(self.mid), escaped=escaped, utf8=not ascii)
            self.others[kind] = pattern
        found = pattern.findall(chunk)
        if not found:
            return None
        if self.mid:
            flat = list(chain.from_iterable(found))
            if self.one * len(found) % tuple(flat) != chunk:
                return None
            texts = flat[0::2]
        else:
            if prefix + self.seam.join(found) + suffix != chunk:
                return None
            flat = texts = found
        return flat if ascii or _utf8_texts(texts) else None

    def may_end(self, data: bytes) -> bool:
        """Does `data` end as the learned template ends? Bytes that do not are not all steady
        events (`whole` takes none of them), whatever they start with."""
        return self.prefix is not None and data.endswith(self.ending)

    def leading(self, checker: StreamChecker, data: bytes) -> int:
        """How many bytes at the start of `data` are steady events one after the other, as
        `whole` would take them (their counts the ones the validator wants next)."""
        if self.prefix is None or not self.matches:
            return 0
        if self.counter is None:  # the end of the run is all it needs
            m = self._tiled(data)
            return m.end() if m is not None else 0
        return self._run(checker, data)[0]

    def _rewritten(self, texts: list[bytes]) -> bytes:
        """The steady events of `texts`, one after the other, as the client gets them: each
        out_prefix + text + out_suffix, in one join (padded: `texts` are texts and pads taking
        turns, each event out_prefix + text + out_mid + pad + out_suffix, in one format)."""
        if self.mid:
            return self.one_out * (len(texts) // 2) % tuple(texts)
        return self.out_prefix + self.glue.join(texts) + self.out_suffix

    def resume(self, checker: StreamChecker, chunk: bytes, out: list[bytes]) -> int | None:
        """Go on taking the held event with `chunk`: how many of its bytes complete it (what
        the client gets of it appended to `out`), -1 when all of them went into it and it is
        still open, or None when it is no steady event after all (`release` its bytes for the
        full path)."""
        prefix, suffix = self.hold_prefix, self.hold_suffix
        pos = 0
        if self.stage == PREFIX:
            need = prefix[self.matched :]
            got = chunk[: len(need)]
            if not need.startswith(got):
                return None
            if len(got) < len(need):
                self.matched += len(got)
                self.held.append(chunk)
                return -1
            pos = len(need)
            self.stage = TEXT
        if self.stage == TEXT:
            end = chunk.find(b'"', pos)
            if not _may_be_plain(chunk, pos, len(chunk) if end == -1 else end):
                return None
            if end == -1:
                self.held.append(chunk)
                return -1
            if sum(map(len, self.held)) + end == len(prefix):
                return None  # an empty text: no steady delta (its event says something else)
            pos = end
            self.stage, self.matched = SUFFIX, 0
        need = suffix[self.matched :]
        got = chunk[pos : pos + len(need)]
        if not need.startswith(got):
            return None
        if len(got) < len(need):
            self.matched += len(got)
            self.held.append(chunk)
            return -1
        done = pos + len(need)
        # One copy: the held pieces and this one's start (read in place) make the event.
        raw = b"".join([*self.held, chunk if done == len(chunk) else memoryview(chunk)[:done]])
        start, end = len(prefix), len(raw) - len(suffix)
        # The whole text, once: its pieces were only searched (`_may_be_plain`).
        if not plain_span(raw, start, end, escapes=False):
            return None
        self.held = []
        if end - start >= _BIG_TEXT:
            self.matches, self.lone = False, 0  # as in `take`
        text = raw[start:end] if self.sink or self.rewrites else b""
        self._count(checker, 1, len(raw), [text] if self.sink else None)
        if self.rewrites:
            out += (self.out_prefix, text, self.out_suffix)
        else:
            out.append(raw)
        self.used = True
        self.misses = 0
        return done

    def release(self) -> bytes:
        """Give up the held event: its bytes, for the full path."""
        raw = b"".join(self.held)
        self.held = []
        return raw

    def _hold(self, piece: bytes, stage: int, matched: int, prefix: bytes, suffix: bytes) -> None:
        self.held = [piece]
        self.stage, self.matched = stage, matched
        self.hold_prefix, self.hold_suffix = prefix, suffix

    def _count(
        self, checker: StreamChecker, events: int, size: int, texts: list[bytes] | None
    ) -> None:
        """What the full path does for `events` events of `size` bytes it did not see."""
        if size:
            checker.decoder.skip(size, events)
        checker.skipped(events)
        validator = checker.validator
        assert validator is not None
        if texts:
            sink = validator.steady_sink()
            assert sink is not None
            # One piece of the validator's text for all of them (it joins its pieces when it
            # compares), decoded once: each text is whole UTF-8, so the joined bytes are too;
            # with escapes, each a whole JSON string's bytes, so the joined ones are one.
            joined = b"".join(texts)  # (one text: the join is that text, no copy)
            if joined.find(b"\\") == -1:
                text = joined.decode()
            else:
                text = orjson.loads(b'"' + joined + b'"')
            sink.append(text)
            self.taken_text = text
        else:
            self.taken_text = None
        for name in self.counters:
            setattr(validator, name, getattr(validator, name) + events)


def _between(chunk: bytes, prefix: bytes | None, after: int, start: int = 0) -> bytes | None:
    """The text of `chunk` when it is one event: `prefix` (checked unless None; else the text
    starts at `start`), then what the pattern's text takes (1-2047 bytes of printable ASCII
    but ``"``, with escapes or without), then `after` bytes of suffix (checked by the caller). A few
    comparisons, where a match costs more than the event (most upstreams write one a chunk)."""
    if prefix is not None:
        if not chunk.startswith(prefix):
            return None
        start = len(prefix)
    text = chunk[start : len(chunk) - after]
    if not 0 < len(text) < _BIG_TEXT:
        return None
    rest = text.translate(None, _PLAIN_ASCII)
    if rest and not _other_text(text, rest):
        return None  # not printable (ASCII or UTF-8), with escapes or without
    return text


def _other_text(text: bytes, rest: bytes) -> bool:
    """`plain_text` or `escaped_text` of `text`, which is short and not plain printable ASCII:
    `rest` is what is left of it once those bytes are deleted. Where that is ASCII (a
    backslash, a quote, a control character), the text is a steady one only with escapes as
    `_ESCAPED_TEXT` takes them (`escaped_text` of ASCII; a quote or a control character fails
    that pattern as it fails `plain_text`): asked at once, most texts of code. Else a text with
    a backslash is no plain one, and one without is an escaped one only if it is a plain one
    (a quote ends both), so one of them is asked."""
    if rest.isascii():
        return _ESCAPED_TEXT.fullmatch(text) is not None
    return escaped_text(text) if rest.find(b"\\") != -1 else plain_text(text)


def _kind(escaped: bool, utf8: bool) -> int:
    """Where `Steady.others` keeps the pattern for texts with escapes, UTF-8 texts, or both."""
    return 2 * escaped + utf8


def _utf8_texts(texts: Sequence[bytes]) -> bool:
    """Are `texts`, runs a UTF-8 pattern took, each what `plain_text` or `escaped_text` takes?
    The pattern took printable ASCII but ``"`` and ``\\``, bytes from 0x80 up and valid escapes
    (surrogates in pairs), no control character and no DEL, so each must still be
    `_sound_utf8`: valid UTF-8 without the line separators the grammar reports. All are read in
    one go: joined by a space, a text cut inside a character is no valid UTF-8 either, and a
    space is no separator."""
    joined = b" ".join(texts)
    return joined.isascii() or _sound_utf8(joined, controls=False)


#: The C0 controls and DEL: no steady text holds one raw (no JSON string may hold the former;
#: DEL it may, but the patterns take none, and what they take and `_sound_utf8` must agree).
_CONTROLS = re.compile(rb"[\x00-\x1f\x7f]")
#: Below this many characters, `_sound_utf8` asks `isprintable` first: the few `find`s of
#: `hazardous` cost more than it up to 300-600 (a str's `find` is a call each), and most texts
#: are printable.
_SHORT_TEXT = 1024


def _sound_utf8(text: bytes, controls: bool = True) -> bool:
    """Is `text` (beyond ASCII) what a steady text may be: valid UTF-8 without a C0 control
    character or DEL, and without the line separators the SSE grammar reports on (`sse.hazardous`:
    NEL, U+2028, U+2029; the very check the full path's decoding makes)? That is all the full
    path asks of it: characters Python calls unprintable (a no-break space, a zero-width joiner
    in an emoji, a private-use one) orjson and the decoder take as any other. A few `find`s of
    a str, where `str.isprintable` reads each character through the Unicode database (2,000
    characters: 3.9 against 1.0 µs); a short text is asked `isprintable` first, which says yes
    to most at once. `controls` False: the caller's pattern took none, so the hazards left to
    look for are the three beyond ASCII (`sse.unicode_hazardous`: three `in`s, 0.1 µs for a
    few hundred characters, where `isprintable` takes 0.5)."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if not controls:
        return not unicode_hazardous(decoded)
    if len(decoded) < _SHORT_TEXT and decoded.isprintable():
        return True  # (printable: no control character, no line separator)
    if _CONTROLS.search(text) is not None:
        return False
    return not hazardous(decoded)


def _value_span(raw: bytes, ev: Event, path: Path) -> tuple[int, int] | None:
    """Where the bytes of the value at `path` in the event's one data line are; None when the
    event has another shape."""
    spans = data_spans(raw, ev.offset == 0)
    if len(spans) != 1:
        return None
    try:
        return locate(raw, path, *spans[0])
    except SpliceError:
        return None


def _text_span(raw: bytes, ev: Event, path: Path) -> tuple[int, int] | None:
    """Where the bytes of the string at `path` in the event's one data line are (between its
    quotes); None when the event has another shape."""
    span = _value_span(raw, ev, path)
    if span is None or span[1] - span[0] < 2 or raw[span[0]] != 0x22 or raw[span[1] - 1] != 0x22:
        return None
    return span[0] + 1, span[1] - 1


def _text_end(chunk: bytes, start: int) -> int:
    """Where the JSON string whose bytes start at `start` ends: its closing quote, the first
    one not escaped (an even run of backslashes before it); -1 when `chunk` ends first."""
    end = chunk.find(b'"', start)
    while end > start and chunk[end - 1] == 0x5C:
        k = end - 1
        while k > start and chunk[k - 1] == 0x5C:
            k -= 1
        if (end - k) % 2 == 0:  # the backslashes escape each other: the quote ends the text
            break
        end = chunk.find(b'"', end + 1)
    return end


def _may_be_plain(chunk: bytes, start: int, end: int) -> bool:
    """Can the piece ``chunk[start:end]`` of a cut text be part of a plain one? It has no line
    break (so what is held is inside one line of one SSE block, whatever the decoder makes of
    the bytes once released) and no escape (most texts that are not plain have one). The whole
    text is read once its event is complete (`plain_span`), rather than every piece copied and
    read on its own; a UTF-8 sequence the chunking cut is whole by then."""
    find = chunk.find
    return find(b"\n", start, end) == find(b"\r", start, end) == find(b"\\", start, end) == -1


def _rest(chunk: bytes, pos: int) -> bytes:
    """`chunk` from `pos` on, to hold: not a copy (bytes.join takes the view)."""
    return chunk if pos == 0 else memoryview(chunk)[pos:]  # type: ignore[return-value]


def _suppressed(checker: StreamChecker) -> int:
    return sum(checker.findings.suppressed.values())
