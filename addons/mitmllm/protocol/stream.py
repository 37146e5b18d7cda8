"""Validation of one LLM response, above the SSE codec and below the dialects (sans-I/O).

`StreamChecker` runs the layers of the rule catalogue in order for each block the decoder
returns: SSE grammar (in the decoder), dispatch rules (SSE-11, SSE-13), payload parsing (PAY-1,
PAY-4, the sentinel), splice detection (SSE-18), then the dialect's state machine; at the end it
reports truncation (SSE-14) and empty streams (SSE-15) before the dialect's own end checks.

It is split in steps (`decode`, `parse`, `check`) so that a pipeline can rewrite a payload
between parsing and checking; `feed` chains them for validate-only use.

`check_head` and `check_body` cover the HTTP layer and non-streaming JSON responses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import orjson

from mitmllm.protocol.detect import from_payload
from mitmllm.protocol.dialect import INVALID
from mitmllm.protocol.dialect import NO_DATA
from mitmllm.protocol.dialect import SENTINEL
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.dialect import StreamValidator
from mitmllm.protocol.dialect import is_json
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.payload import BIG_JSON
from mitmllm.protocol.payload import parse_json as parse_json
from mitmllm.protocol.sse import KNOWN_FIELDS
from mitmllm.protocol.sse import Decoder
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import Note
from mitmllm.protocol.sse import data_span
from mitmllm.protocol.sse import hazardous
from mitmllm.protocol.sse import report_notes
from mitmllm.protocol.sse import u_escape

#: From this size on, the JSON of a data line beyond ASCII is read from the block's bytes (see
#: `StreamChecker.parse`): at this size, decoded and parsed, both ways cost the same (finding
#: the line costs what the encoding saves); the bytes' way 0.89x at 4,096, 0.77x at 65,536.
BYTES_FROM = 2048


#: Texts from this many characters on are looked for in a big event (`_with_whole_texts`).
WHOLE_TEXT = 1024
#: The texts whose encoding a checker keeps (`StreamChecker._encoded`).
_KEPT_TEXTS = 16
#: What stands for the `n`-th text left out of a parse (`_with_whole_texts`): plain letters
#: and digits, which no JSON escape but ``\\u`` spells.
_MARK_LEAD = b"mitmllm0whole0text0"
_MARK = _MARK_LEAD + b"%d"
#: The bytes of a text's head looked for first (a find of a long needle costs its length).
_HEAD = 64


def _find_text(raw: bytes, encoded: bytes, at: int, end: int) -> int:
    """Where `encoded` first lies in `raw[at:end]`, -1 when nowhere: its head found (a find
    of a long needle costs its length), then the rest compared."""
    head = encoded[:_HEAD]
    i = raw.find(head, at, end)
    while i != -1 and not raw.startswith(encoded, i):
        i = raw.find(head, i + 1, end)
    return i


def _put_back(payload: Any, marks: dict[str, str]) -> bool:
    """Put each text of `marks` where its mark is a value in `payload`; True when every mark
    was found so."""
    left = dict(marks)
    stack = [payload]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            items: Any = node.items()
        elif type(node) is list:
            items = enumerate(node)
        else:
            continue
        for key, value in items:
            if type(value) is str:
                if value in left:
                    node[key] = left.pop(value)
            elif type(value) is dict or type(value) is list:
                stack.append(value)
    return not left


class StreamChecker:
    """Validates one event stream. See the module docstring."""

    def __init__(
        self,
        dialect: Dialect | None,
        findings: Findings | None = None,
        *,
        request: Any = None,
        autodetect: bool = False,
    ) -> None:
        self.dialect = dialect
        self.findings = findings if findings is not None else Findings()
        self.decoder = Decoder()  # grammar findings ride on the events; reported in `parse`
        self._texts: dict[int, tuple[str, bytes | None]] = {}  # `_encoded`'s
        #: the grammar findings of the event `parse` read last (reported: a caller hands them on)
        self.reported: tuple[Note, ...] = ()
        self.validator: StreamValidator | None = dialect.validator(request) if dialect else None
        # Without a dialect, [DONE] is still the one non-JSON data value streams commonly use.
        self._sentinel = dialect.sentinel if dialect else "[DONE]"
        self._request = request
        self._autodetect = autodetect and dialect is None
        self.events = 0  # blocks seen
        self.data_events = 0  # dispatched events with a JSON payload
        self.sentinels = 0
        self._id_seen = False
        self._invalid_prev = False  # the previous block's data failed to parse
        self.trailing = b""
        self.partial: Event | None = None  # the unterminated tail, once closed
        self.closed = False

    # --- steps ---------------------------------------------------------------------------------

    def decode(self, chunk: bytes) -> list[Event]:
        return self.decoder.feed(chunk)

    def parse(self, ev: Event) -> Any:
        """The event's payload: parsed JSON, or NO_DATA / SENTINEL / INVALID."""
        span = ev.unread_span  # (where an unread block's data line is: found once)
        if span is not None:  # a big block: maybe made of texts the validator holds already
            payload = self._with_whole_texts(ev, span)
            if payload is not None:
                self.reported = ()
                return payload
            ev.read()  # decoded as the general parser would, its grammar findings as notes
        self.reported = notes = ev.notes
        if notes:
            report_notes(ev, self.findings)
        data = ev.data
        if data is None:
            return NO_DATA
        if data == self._sentinel:
            return SENTINEL
        if len(data) <= BIG_JSON:
            try:
                if len(data) >= BYTES_FROM and not data.isascii():
                    # orjson reads text as UTF-8: a str beyond ASCII it would encode again
                    # (and keep that copy with it); the block's own bytes are that UTF-8
                    span = span or data_span(ev.raw)
                    if span is not None:
                        with memoryview(ev.raw) as view:
                            return orjson.loads(view[span[0] : span[1]])
                return orjson.loads(data)  # the hot path; parse_json words the failures
            except orjson.JSONDecodeError:
                pass
        value, problem = parse_json(data)
        if problem is not None:
            f = self.findings
            if value is INVALID:
                if data.strip() == "[DONE]" and self._sentinel:
                    f.add(
                        "PAY-1",
                        f"sentinel variant {data[:20]!r} is not exactly {self._sentinel!r}",
                        event=ev.index,
                        offset=ev.offset,
                    )
                else:
                    f.add(
                        "PAY-1",
                        f"data is not JSON ({problem}): {data[:60]!r}",
                        event=ev.index,
                        offset=ev.offset,
                    )
            else:
                f.add("PAY-4", problem, event=ev.index, offset=ev.offset)
        return value

    def _with_whole_texts(self, ev: Event, span: tuple[int, int]) -> Any:
        """The payload of `ev`, an unread big block, when its data line holds texts the
        validator holds already (`StreamValidator.whole_texts`; a Responses done event repeats
        the text streamed, tens of KiB): each found as the JSON string it would be written
        as, it is left out of the parse and its str put in its place. Decoding, the grammar's
        checks and the parse of such a text cost 150 µs an event for 65 KiB of UTF-8, and a
        Responses stream has four such events; found, they cost a comparison. None: the full
        way reads the event (a text not found, written otherwise, or any doubt).

        Sound because each text left out is proven to be a whole JSON string value: its bytes
        are the text's encoding exactly (`_encoded`: valid UTF-8, no line-separator hazard),
        and its mark, put in its place, is found as a whole value in the parse of the rest
        (`_put_back`). No escape but ``\\u`` spells a letter or a digit, and the rest has
        none; its marks' letters occur there only where they were put: so a value that is a
        mark is made of the very bytes put in one place, between the quotes of one string.
        Each mark found, no two in one place, so each in its own (a mark followed by digits
        of the text would be another mark with more digits than its place's, and the digits
        add up). The rest is proven as the full way proves a data line: valid UTF-8, no
        hazard, JSON. Above `BIG_JSON` the full way parses with the standard library
        (orjson needs some twelve times a huge string's size to build it); the rest without
        its texts parses the same with either."""
        validator = self.validator
        if validator is None:
            return None
        texts = validator.whole_texts(WHOLE_TEXT, ev.event)
        if not texts:
            return None
        raw = ev.raw
        start, end = span
        pieces: list[bytes] = []
        marks: dict[str, str] = {}
        at = start
        for text in texts:
            encoded = self._encoded(text)
            if encoded is None:
                continue
            i = _find_text(raw, encoded, at, end)
            if i == -1:
                continue
            mark = _MARK % len(marks)
            pieces += (raw[at:i], mark)
            marks[mark.decode()] = text
            at = i + len(encoded)
        if not marks:
            return None
        pieces.append(raw[at:end])
        rest = b"".join(pieces)
        if rest.count(_MARK_LEAD) != len(marks) or u_escape(rest):
            return None
        try:
            if hazardous(rest.decode("utf-8")):
                return None
            payload = orjson.loads(rest)
        except (UnicodeDecodeError, orjson.JSONDecodeError):
            return None
        return payload if _put_back(payload, marks) else None

    def _encoded(self, text: str) -> bytes | None:
        """`text` as a JSON string's bytes (orjson's way: UTF-8, the escapes JSON needs), or
        None when it holds what the grammar reports (a line separator) or cannot be encoded;
        kept for the texts asked last (the done events of a text ask for it four times)."""
        kept = self._texts.get(id(text))
        if kept is not None and kept[0] is text:
            return kept[1]
        encoded = None
        if not hazardous(text):
            with contextlib.suppress(TypeError):  # (a lone surrogate)
                encoded = orjson.dumps(text)[1:-1]
        if len(self._texts) >= _KEPT_TEXTS:
            self._texts.clear()
        self._texts[id(text)] = (text, encoded)
        return encoded

    def check(self, ev: Event, payload: Any) -> None:
        """Generic dispatch rules, then the dialect's state machine."""
        self.events += 1
        f = self.findings
        if self._invalid_prev and _first_line_is_unknown(ev):
            f.add(
                "SSE-18",
                "previous event's data was cut and continues here as an unknown field "
                "(a keep-alive was spliced inside a line)",
                event=ev.index,
                offset=ev.offset,
            )
        self._invalid_prev = payload is INVALID
        if ev.id is not None and not self._id_seen:
            self._id_seen = True
            f.add(
                "SSE-11",
                f"id field {ev.id[:20]!r} in an LLM stream",
                event=ev.index,
                offset=ev.offset,
            )
        if payload is NO_DATA:
            if ev.has_fields:
                sev = self.dialect.dataless_severity(ev) if self.dialect else Severity.ERROR
                if sev is not None:
                    what = f"event {ev.event!r}" if ev.event is not None else "block"
                    f.add(
                        "SSE-13",
                        f"{what} has no data field",
                        event=ev.index,
                        offset=ev.offset,
                        severity=sev,
                    )
            elif self._id_seen:
                f.add(
                    "SSE-11",
                    "blank or comment-only block after an id field: the Python SDKs dispatch "
                    "it as an empty event",
                    event=ev.index,
                    offset=ev.offset,
                    severity=Severity.ERROR,
                )
        elif payload is SENTINEL:
            self.sentinels += 1
        elif payload is not INVALID:
            self.data_events += 1
        if self._autodetect and is_json(payload):
            self._detect(ev, payload)
        if self.validator is not None:
            self.validator.on_event(ev, payload, f)

    def skipped(self, events: int = 1) -> None:
        """Count data events accepted without `parse` and `check` (steady deltas: see
        `mitmllm.protocol.steady`), as `check` would have: valid JSON, no id, no finding."""
        self.events += events
        self.data_events += events
        self._invalid_prev = False

    def _detect(self, ev: Event, payload: Any) -> None:
        self._autodetect = False
        dialect = from_payload(payload, ev.event)
        if dialect is not None:
            self.dialect = dialect
            self.validator = dialect.validator(self._request)
            self._sentinel = dialect.sentinel

    def close(self) -> list[tuple[Event, Any]]:
        """End of stream: remaining events (parsed and checked), then end-of-stream rules."""
        if self.closed:
            return []
        events, partial = self.decoder.close()
        out = []
        for ev in events:
            payload = self.parse(ev)
            self.check(ev, payload)
            out.append((ev, payload))
        self.end(partial)
        return out

    def end(self, partial: Event | None, end_offset: int | None = None) -> None:
        """The end-of-stream rules, once every complete event was checked; `partial` is the
        unterminated tail, `end_offset` the stream's length (default: what was decoded)."""
        if self.closed:
            return
        self.closed = True
        self.partial = partial
        f = self.findings
        if partial is not None:
            report_notes(partial, f)
            self.trailing = partial.raw
            what = f"event {partial.event!r}" if partial.event else "partial event"
            f.add(
                "SSE-14",
                f"stream ends inside an event: {what} ({len(partial.raw)} bytes) has no "
                "terminating blank line",
                event=partial.index,
                offset=partial.offset,
            )
        end = self.decoder.offset if end_offset is None else end_offset
        if self.data_events == 0:
            if self.sentinels:
                what = "only the [DONE] sentinel"
            elif self.events:
                what = f"{self.events} block(s) but no data event (comments or blanks only)"
            else:
                what = "no bytes" if not end else "no complete event"
            f.add("SSE-15", f"empty stream: {what}", event=0, offset=0)
        if self.validator is not None:
            self.validator.on_close(f, end_offset=end, events=self.events)

    def accept(self, ev: Event, payload: Any) -> None:
        """Check an event that was parsed elsewhere (a repaired stream's): its grammar findings,
        then the rules `check` applies; data that does not parse is parsed again to word PAY-1."""
        if payload is INVALID:
            payload = self.parse(ev)
        elif ev.notes:
            report_notes(ev, self.findings)
        self.check(ev, payload)

    # --- validate-only -------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[tuple[Event, Any]]:
        out = []
        for ev in self.decoder.feed(chunk):
            payload = self.parse(ev)
            self.check(ev, payload)
            out.append((ev, payload))
        return out


def _first_line_is_unknown(ev: Event) -> bool:
    """Does the block start with a line that is neither a known field nor a comment?"""
    raw = ev.raw
    if raw[:1] in (b":", b"\r", b"\n", b""):
        return False
    end = len(raw)
    for sep in (b"\r", b"\n"):
        i = raw.find(sep)
        if i != -1:
            end = min(end, i)
    name = raw[:end].split(b":", 1)[0].decode("utf-8", "replace")
    return name not in KNOWN_FIELDS


def check_stream(
    dialect: Dialect | None, body: bytes, *, request: Any = None, findings: Findings | None = None
) -> tuple[Findings, list[tuple[Event, Any]], StreamChecker]:
    """Validate a whole body at once."""
    checker = StreamChecker(dialect, findings, request=request)
    pairs = checker.feed(body)
    pairs += checker.close()
    return checker.findings, pairs, checker


# --- HTTP layer and non-streaming bodies ------------------------------------------------------

EVENT_STREAM = "text/event-stream"
#: 4xx statuses that are the upstream's state (timeout, rate limit), not the request's fault.
CLIENT_RETRYABLE = frozenset({408, 429})


def is_event_stream(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == EVENT_STREAM


def check_head(
    findings: Findings,
    *,
    status: int,
    headers: Mapping[str, str],
    wants_stream: bool,
) -> None:
    """HTTP-1, HTTP-2, HTTP-4, HTTP-6: what the status line and headers already tell.

    A 4xx other than 408 and 429 is the client's own request being refused (HTTP-6, info): it
    says nothing against the upstream, so it is not flagged like an upstream failure.
    """
    ctype = headers.get("content-type", "")
    if 400 <= status < 500 and status not in CLIENT_RETRYABLE:
        findings.add("HTTP-6", f"HTTP {status}: the upstream refused the request")
    elif status >= 400 or (wants_stream and status != 200):
        findings.add(
            "HTTP-1", f"HTTP {status} {'for a stream request' if wants_stream else ''}".strip()
        )
    if wants_stream and status == 200 and not is_event_stream(ctype):
        findings.add("HTTP-2", f"stream requested but Content-Type is {ctype or 'missing'!r}")
    encoding = headers.get("content-encoding", "").strip().lower()
    if is_event_stream(ctype) and encoding not in ("", "identity"):
        findings.add("HTTP-4", f"event stream has Content-Encoding {encoding!r}")


def check_body(
    dialect: Dialect | None,
    findings: Findings,
    *,
    status: int,
    body: bytes,
    content_type: str | None,
    request: Any = None,
) -> Any:
    """A non-streaming response body: JSON, wrapped errors (HTTP-5), dialect checks.

    Returns the parsed body (or INVALID / NO_DATA when there is nothing to parse).
    """
    if not body:
        return NO_DATA
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype and "json" not in ctype:
        return NO_DATA
    payload, problem = parse_json(body)
    if payload is INVALID:
        if ctype:
            findings.add("PAY-1", f"JSON response body does not parse ({problem})")
        return payload
    if dialect is None:
        return payload
    err = dialect.error_of(payload)
    if err is not None and 200 <= status < 300:
        findings.add("HTTP-5", f"HTTP {status} body is an error: {err[:120]}")
    if is_json(payload):
        dialect.check_json_response(status, payload, findings, request)
    return payload
