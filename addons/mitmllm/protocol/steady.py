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
   characters or separators between them is that JSON string and nothing else.
3. Accept. A block that is `prefix` + such a text + `suffix` is the certified event with another
   text: `take` counts it (codec, checker, validator counters) without building it.

A pipeline that rewrites events (a model restamp, tool names mapped back) may use the shortcut
when each of its rewrites is text-blind: its edits follow from the payload without the text at
the steady paths, and never land there (`Pipeline`, proven for the response rewrites in
tests/test_rewrite.py). The certified event's rewritten bytes are then the template of what the
client gets (`out_prefix` + text + `out_suffix`), checked on the probe as well: the probe's
payload gives the same edits, and splicing them into the probe gives that template.

Anything else goes the full way, and a later certified event learns again. A stream whose
events never certify or never repeat stops trying after `MAX_MISSES`, so it pays for the
fingerprints a few times at most. What this proves is tested against the full path for every
chunking (tests/test_steady.py): the same findings, validator summary and bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from enum import Enum
from typing import TYPE_CHECKING
from typing import Any

import orjson

from mitmllm.protocol.findings import Findings
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.splice import SpliceError
from mitmllm.protocol.splice import replaced
from mitmllm.protocol.splice import splice_event
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import parse_common

if TYPE_CHECKING:
    from mitmllm.protocol.dialect import Dialect
    from mitmllm.protocol.stream import StreamChecker

Path = tuple[str | int, ...]

#: Failed certifications (or templates that accepted nothing) in a row before a stream stops
#: trying: its events change the validator's state, or differ in more than their text.
MAX_MISSES = 4
#: Stands for the text while a template is learned (no character a JSON string escapes).
PROBE = "mitmllm-steady-probe"
#: A validator's state deeper than this is not fingerprinted (and not certified).
MAX_DEPTH = 12


#: Where in a template a cut steady event stops.
PREFIX, TEXT, SUFFIX = range(3)


class TooDeep(Exception):
    """The state is nested deeper than MAX_DEPTH: certify nothing."""


def fingerprint(obj: Any, depth: int = 0) -> Any:
    """A comparable, hashable picture of `obj`'s value: containers and objects (their
    ``__dict__`` and ``__slots__``) by content. Events, findings and callables are references
    a validator keeps for reporting, not state, and compare equal."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, Enum)):
        return obj
    if isinstance(obj, (Event, Findings)) or callable(obj):
        return "<ref>"
    if depth > MAX_DEPTH:
        raise TooDeep
    d = depth + 1
    if isinstance(obj, dict):
        return ("dict", tuple((fingerprint(k, d), fingerprint(v, d)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(fingerprint(x, d) for x in obj))
    if isinstance(obj, (set, frozenset)):
        return ("set", frozenset(fingerprint(x, d) for x in obj))
    return (type(obj).__qualname__, tuple(sorted(attributes(obj, d).items())))


def attributes(obj: Any, depth: int = 0) -> dict[str, Any]:
    """The fingerprints of an object's own attributes, by name."""
    names = set(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        names.update((slots,) if isinstance(slots, str) else slots)
    names.discard("__dict__")
    names.discard("__weakref__")
    missing = object()
    out = {}
    for name in names:
        value = getattr(obj, name, missing)
        if value is not missing:
            out[name] = fingerprint(value, depth)
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
#: From this size on, a text is checked by orjson's string scanner (control characters) rather
#: than by a byte table: about twice as fast on big texts.
_BIG_TEXT = 2048


def plain_text(text: bytes) -> bool:
    """Is `text` the bytes of a JSON string that needs no escape and that the SSE grammar
    reports nothing on: valid UTF-8, no ``"`` or ``\\``, only printable characters (no control
    characters, no line or paragraph separators)?"""
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
    try:
        return text.decode("utf-8").isprintable()
    except UnicodeDecodeError:
        return False


class Steady:
    """The steady-delta shortcut of one stream (see the module docstring)."""

    __slots__ = (
        "paths",
        "counters",
        "context",
        "prefix",
        "suffix",
        "out_prefix",
        "out_suffix",
        "misses",
        "used",
        "held",
        "stage",
        "matched",
    )

    def __init__(
        self, paths: tuple[Path, ...], counters: tuple[str, ...] = (), context: tuple[str, ...] = ()
    ) -> None:
        self.paths = paths
        self.counters = counters
        self.context = context
        self.prefix: bytes | None = None  # the learned template, once certified
        self.suffix = b""
        # What the client gets of such an event: the same bytes (the same objects) unless the
        # pipeline's rewrites edit the certified event.
        self.out_prefix = b""
        self.out_suffix = b""
        self.misses = 0
        self.used = False  # the template accepted an event
        # A steady event the chunking cut, taken so far: its bytes, where it is (PREFIX, TEXT or
        # SUFFIX) and how much of the prefix or suffix the bytes matched.
        self.held: list[bytes] = []
        self.stage = TEXT
        self.matched = 0

    @classmethod
    def of(cls, checker: StreamChecker) -> Steady | None:
        """The shortcut for the stream `checker` validates, if its wire format has one."""
        dialect: Dialect | None = checker.dialect
        validator = checker.validator
        if dialect is None or validator is None or not dialect.steady_paths:
            return None
        return cls(dialect.steady_paths, validator.COUNTERS, validator.CONTEXT)

    # --- the full path: certify and learn ------------------------------------------------------

    def before(self, checker: StreamChecker, ev: Event, payload: Any) -> Any:
        """Between parsing and checking an event: what `after` needs to certify it, or None
        when it is no candidate (no text at an opaque path, or the stream stopped trying)."""
        if self.misses >= MAX_MISSES or type(payload) is not dict or checker.validator is None:
            return None
        for path in self.paths:
            text = opaque_text(payload, path)
            if text:
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
    ) -> None:
        """After checking the event `before` saw: learn its template if it certifies. `sent` is
        what the client got of it when the pipeline's text-blind rewrites (`edits_of`) changed
        it."""
        path, text, state, found, suppressed = token
        if self.prefix is not None and not self.used:
            self.misses += 1  # the last template accepted nothing
        self.prefix, self.used = None, False
        if len(checker.findings.items) != found or _suppressed(checker) != suppressed:
            self.misses += 1
            return
        try:
            now = attributes(checker.validator)
        except TooDeep:
            self.misses += 1
            return
        for name in self.context:
            state.pop(name, None)
            now.pop(name, None)
        for name in self.counters:
            was, grew = state.pop(name, None), now.pop(name, None)
            if type(was) is not int or grew != was + 1:
                self.misses += 1
                return
        if now != state or not self._learn(ev, payload, path, text, sent, edits_of):
            self.misses += 1

    def _learn(
        self,
        ev: Event,
        payload: Any,
        path: Path,
        text: str,
        sent: Event | None,
        edits_of: Callable[[Any], Sequence[Edit]] | None,
    ) -> bool:
        raw = ev.raw
        body = text.encode("utf-8")
        quoted = b'"' + body + b'"'
        if not plain_text(body) or raw.count(quoted) != 1:
            return False
        at = raw.find(quoted) + 1
        prefix, suffix = raw[:at], raw[at + len(body) :]
        probe = parse_common(prefix + PROBE.encode() + suffix, ev.index, ev.offset)
        if probe is None or probe.event != ev.event or probe.data is None:
            return False
        rewritten = sent is not None and sent is not ev
        try:
            if rewritten:  # the rewrites edited `payload` in place: the upstream's value is here
                payload = orjson.loads(ev.data or "")
            probed = replaced(payload, [Edit(path, PROBE)])
            if orjson.loads(probe.data) != probed:
                return False
        except orjson.JSONDecodeError:  # numbers orjson does not take: the full path, always
            return False
        out_prefix, out_suffix = prefix, suffix
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
            try:
                spliced = splice_event(probe, edits).raw
            except SpliceError:
                return False
            if spliced != out_prefix + PROBE.encode() + out_suffix:
                return False
        self.prefix, self.suffix = prefix, suffix
        self.out_prefix, self.out_suffix = out_prefix, out_suffix
        return True

    @property
    def rewrites(self) -> bool:
        """Does the learned template give the client other bytes than the upstream's?"""
        return self.out_prefix is not self.prefix

    def forget(self) -> None:
        """The full path checked an event that was not certified: the state the template was
        proven in may have changed, so the template goes."""
        if self.prefix is not None:
            if not self.used:
                self.misses += 1
            self.prefix, self.used = None, False

    # --- the shortcut ----------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """Is a cut steady event being taken (its bytes held here, none in the decoder)?"""
        return bool(self.held)

    def take(self, checker: StreamChecker, chunk: bytes, out: list[bytes]) -> int:
        """Accept the events at the start of `chunk` (fed with nothing buffered) that match the
        template, and hold one the chunk cuts while it still matches; how many bytes that takes.
        What the client gets of the events accepted is appended to `out` (one slice of `chunk`
        when the template does not rewrite: `chunk` itself when it takes all of it)."""
        prefix, suffix = self.prefix, self.suffix
        if prefix is None:
            return 0
        rewrites = self.out_prefix is not prefix
        pos = 0
        n = len(chunk)
        while pos < n:
            if not chunk.startswith(prefix, pos):
                rest = chunk[pos:]
                if len(rest) < len(prefix) and prefix.startswith(rest):
                    self._hold(rest, PREFIX, len(rest))  # cut inside the prefix
                break
            start = pos + len(prefix)
            end = chunk.find(b'"', start)
            if end == -1:  # cut inside the text
                if plain_text(chunk[start:]):
                    self._hold(chunk[pos:], TEXT, 0)
                break
            if end == start or not plain_text(chunk[start:end]):
                break
            after = end + len(suffix)
            if after > n:  # cut inside the suffix, maybe
                rest = chunk[end:]
                if suffix.startswith(rest):
                    self._hold(chunk[pos:], SUFFIX, len(rest))
                break
            if not chunk.startswith(suffix, end):
                break
            self._count(checker, after - pos)
            if rewrites:
                out += (self.out_prefix, chunk[start:end], self.out_suffix)
            pos = after
        if pos and not rewrites:
            out.append(chunk[:pos])
        if pos:
            self.used = True
            self.misses = 0
        return n if self.held else pos  # a held event takes the rest of the chunk

    def resume(self, checker: StreamChecker, chunk: bytes, out: list[bytes]) -> int | None:
        """Go on taking the held event with `chunk`: how many of its bytes complete it (what
        the client gets of it appended to `out`), -1 when all of them went into it and it is
        still open, or None when it is no steady event after all (`release` its bytes for the
        full path)."""
        prefix, suffix = self.prefix, self.suffix
        assert prefix is not None
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
            if not plain_text(chunk[pos:] if end == -1 else chunk[pos:end]):
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
        self.held.append(chunk[:done])
        raw = b"".join(self.held)
        self.held = []
        self._count(checker, len(raw))
        if self.out_prefix is not prefix:
            out += (self.out_prefix, raw[len(prefix) : len(raw) - len(suffix)], self.out_suffix)
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

    def _hold(self, piece: bytes, stage: int, matched: int) -> None:
        self.held = [piece]
        self.stage, self.matched = stage, matched

    def _count(self, checker: StreamChecker, size: int) -> None:
        """What the full path counts of one event it did not see."""
        checker.decoder.skip(size)
        checker.skipped()
        validator = checker.validator
        for name in self.counters:
            setattr(validator, name, getattr(validator, name) + 1)


def _suppressed(checker: StreamChecker) -> int:
    return sum(checker.findings.suppressed.values())
