"""Event and body payloads: parsed JSON, or one of three markers (a leaf module, sans-I/O).

Every layer that reads a payload (the stream checker, the dialects, detection, the relay, the
contentview) imports from here, so none of them needs another to parse JSON.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: The payload of an event that has no data field.
NO_DATA: Any = _Marker("NO_DATA")
#: The payload of an event whose data is not JSON (PAY-1 was reported).
INVALID: Any = _Marker("INVALID")
#: The payload of the dialect's sentinel event (``data: [DONE]``).
SENTINEL: Any = _Marker("SENTINEL")


def is_json(payload: Any) -> bool:
    return payload is not NO_DATA and payload is not INVALID and payload is not SENTINEL


#: Above this size, JSON is parsed with the standard library: orjson needs about twelve times a
#: huge string's size while it builds it, the standard parser about once.
BIG_JSON = 1 << 20


def parse_json(data: str | bytes) -> tuple[Any, str | None]:
    """(value, None) or (INVALID, reason). Lone surrogates parse with a PAY-4 reason."""
    if len(data) > BIG_JSON:
        try:
            return json.loads(data), None
        except (ValueError, RecursionError) as e:
            return INVALID, str(e).split(":")[0]
    try:
        return orjson.loads(data), None
    except orjson.JSONDecodeError:
        pass
    try:  # orjson rejects lone surrogates that json accepts
        value = json.loads(data)
    except (ValueError, RecursionError) as e:
        return INVALID, str(e).split(":")[0]
    return value, "lone UTF-16 surrogate escape"


def copy_json(value: Any) -> Any:
    """A private copy of a parsed value, to rewrite without touching the original."""
    try:
        return orjson.loads(orjson.dumps(value))
    except (orjson.JSONEncodeError, orjson.JSONDecodeError):  # huge integers, lone surrogates
        return copy.deepcopy(value)


# Characters that JSON leaves raw but httpx's iter_lines() (google-genai) and str.splitlines()
# take for line ends (SSE-3a); orjson escapes only those below U+0020.
_LINE_BREAKERS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def json_text(value: Any) -> str:
    """`value` (parsed JSON) as compact JSON text: orjson's, or where orjson refuses it (half a
    surrogate pair in a string, which a ``\\ud83d`` escape gives: PAY-4; an integer beyond 64
    bits) the standard library's, every character beyond ASCII escaped, so the text says what
    the value holds."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"))


def event_json(value: Any) -> str:
    """`value` as JSON text for an event's data line, with no character any client's line
    splitter could break on."""
    text = json_text(value)
    if "\x85" in text or "\u2028" in text or "\u2029" in text:
        text = text.translate(_LINE_BREAKERS)
    return text
