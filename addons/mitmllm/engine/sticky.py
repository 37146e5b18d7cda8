"""Session stickiness: a conversation stays on the upstream that served it (sans-I/O).

When a fallback upstream answered a turn, the next turns of that conversation should not flip
back to the primary (and its model) while the conversation goes on. The relay derives a session
key from each request (`session_key`, configured per route as a `KeySpec`), asks
`StickySessions.get` which upstream the session is pinned to, and pins it with `set` after a
turn; `forget` unpins it when that upstream fails.

Key specs::

    header:x-session-id        a request header (case-insensitive)
    body:metadata.user_id      a dotted path into the JSON body
    body:messages.0.content    digits index lists; the first message identifies a conversation
    body:user                  a top-level field

A key is a keyed hash of the value (a per-process random key), never the value itself: user
ids and message text are not kept in memory beyond the request, nor logged, and equal values
give equal keys only within one process. Missing, null and empty values give no key.

Entries live `ttl` seconds after they were last `set` (`get` does not extend them, so the relay
decides what keeps a conversation pinned); at most `max_entries` are kept, the least recently
used going first.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import Literal

import orjson

SOURCES = ("header", "body")
# RFC 9110 token: what a header field name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_INDEX = re.compile(r"[0-9]+")
_EXAMPLES = "e.g. 'header:x-session-id' or 'body:metadata.user_id'"
# Keys only have to match within one process; a secret key keeps them from being reversed.
_HASH_KEY = secrets.token_bytes(32)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """Where a request carries its session key: a header name, or a path into the JSON body."""

    source: Literal["header", "body"]
    name: str = ""  # header name, lower-case
    path: tuple[str, ...] = ()  # body path segments; digits index lists

    def __str__(self) -> str:
        return f"header:{self.name}" if self.source == "header" else "body:" + ".".join(self.path)

    def value(self, headers: Mapping[str, str], body: Any) -> str | None:
        """The raw key value in this request, or None. Never raises on odd input."""
        if self.source == "header":
            return _header(headers, self.name) or None
        node = body
        for segment in self.path:
            if isinstance(node, dict):
                node = node.get(segment)
            elif isinstance(node, list) and _INDEX.fullmatch(segment):
                i = int(segment)
                node = node[i] if i < len(node) else None
            else:
                return None
        if node is None or (isinstance(node, str | list | dict) and not node):
            return None
        if isinstance(node, str):
            return node
        try:  # a number, or a structure such as a message's content blocks
            return orjson.dumps(node, option=orjson.OPT_SORT_KEYS).decode()
        except TypeError:  # orjson.JSONEncodeError: e.g. an integer beyond 64 bits
            return None


def parse_spec(spec: str) -> KeySpec:
    """Parse ``header:NAME`` or ``body:PATH``; ValueError says what is wrong and what to write."""
    if not isinstance(spec, str):
        raise ValueError(f"sticky key must be a string like {_EXAMPLES}, got {spec!r}")
    source, colon, target = spec.strip().partition(":")
    source, target = source.strip(), target.strip()
    if not colon:
        raise ValueError(f"sticky key {spec!r} has no source; write {_EXAMPLES}")
    if source not in SOURCES:
        raise ValueError(
            f"sticky key {spec!r}: unknown source {source!r}, expected 'header' or 'body' "
            f"({_EXAMPLES})"
        )
    if not target:
        what = "a header name" if source == "header" else "a path"
        raise ValueError(f"sticky key {spec!r}: {what} is missing after '{source}:' ({_EXAMPLES})")
    if source == "header":
        if not _TOKEN.fullmatch(target):
            raise ValueError(
                f"sticky key {spec!r}: {target!r} is not a valid header name "
                "(letters, digits and !#$%&'*+-.^_`|~ only)"
            )
        return KeySpec("header", name=target.lower())
    path = tuple(target.split("."))
    if any(not segment for segment in path):
        raise ValueError(
            f"sticky key {spec!r}: empty segment in path {target!r}; "
            "separate field names and list indices with single dots, e.g. 'messages.0.content'"
        )
    return KeySpec("body", path=path)


def validate_spec(spec: str) -> str:
    """Check a key spec for the configuration layer; returns it unchanged or raises ValueError."""
    parse_spec(spec)
    return spec


def session_key(spec: str | KeySpec, headers: Mapping[str, str], body: Any) -> str | None:
    """The session key of a request (a hex digest), or None if the request carries none.

    `body` is the parsed JSON body (or None). A spec string that does not parse raises
    ValueError; parse it once with `parse_spec` where that matters.
    """
    parsed = spec if isinstance(spec, KeySpec) else parse_spec(spec)
    raw = parsed.value(headers, body)
    if raw is None:
        return None
    data = raw.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, key=_HASH_KEY, digest_size=16).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)  # mitmproxy and aiohttp headers are case-insensitive
    if value is None:
        for k, v in headers.items():  # a plain dict is not
            if k.lower() == name:
                return v.strip()
        return None
    return value.strip()


class StickySessions:
    """Which upstream each (route, session key) is pinned to, with a TTL and an LRU bound."""

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"sticky ttl must be positive, got {ttl}")
        if max_entries < 1:
            raise ValueError(f"sticky max_entries must be at least 1, got {max_entries}")
        self.ttl = float(ttl)
        self.clock = clock
        self.max_entries = max_entries
        # (route, key) -> (upstream, expiry); order is least recently used first
        self._entries: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, route: str, key: str | None) -> str | None:
        """The upstream this session is pinned to, or None (no key, never pinned, expired)."""
        if key is None:
            return None
        entry = self._entries.get((route, key))
        if entry is None:
            return None
        upstream, expiry = entry
        if self.clock() >= expiry:
            del self._entries[(route, key)]
            return None
        self._entries.move_to_end((route, key))
        return upstream

    def set(self, route: str, key: str | None, upstream: str) -> None:
        """Pin the session to `upstream` for `ttl` seconds from now. No key: nothing to pin."""
        if key is None:
            return
        now = self.clock()
        self._entries[(route, key)] = (upstream, now + self.ttl)
        self._entries.move_to_end((route, key))
        # Expired entries at the cold end go first; then the least recently used.
        while self._entries:
            _, (_, expiry) = next(iter(self._entries.items()))
            if expiry > now:
                break
            self._entries.popitem(last=False)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, route: str, key: str | None) -> bool:
        """Unpin the session (its upstream failed). True if it was pinned."""
        if key is None:
            return False
        return self._entries.pop((route, key), None) is not None

    def entries(self) -> list[tuple[str, str, str]]:
        """(route, key, upstream) of every session pinned now."""
        now = self.clock()
        return [(r, k, up) for (r, k), (up, expiry) in self._entries.items() if expiry > now]

    def purge(self) -> int:
        """Drop every expired entry; returns how many."""
        now = self.clock()
        expired = [k for k, (_, expiry) in self._entries.items() if expiry <= now]
        for k in expired:
            del self._entries[k]
        return len(expired)
