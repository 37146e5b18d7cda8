"""Translation between wire formats through the neutral conversation model (sans-I/O).

A client of format C is served by an upstream of format U: the request is read with C's
converter and written with U's (`translate_request`), and what comes back is read with U's and
written with C's: streams event by event (`StreamTranslator`, `ByteTranslator`), whole bodies
(`translate_response`) and error bodies (`translate_error`). No module here knows a format;
each format's knowledge is its converter (`mitmllm.protocol.convert`).

Streams keep O(1) state: the reader turns each upstream event into neutral events, `_Sequencer`
holds them to the model's contract (a Start first, one block open at a time, numbered in order,
nothing after the end), and the writer turns each into the client's bytes at once. The
upstream's own stream is validated in the upstream's format (`ByteTranslator` runs a
`StreamChecker` for it); what the client gets can be checked with a checker of the client's.

`uncarried` is the load-time question: which request features can a (client, upstream) pair
not carry.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mitmllm.protocol.conversation import FEATURES
from mitmllm.protocol.conversation import ApiError
from mitmllm.protocol.conversation import BlockStart
from mitmllm.protocol.conversation import BlockStop
from mitmllm.protocol.conversation import ClientStream
from mitmllm.protocol.conversation import Converter
from mitmllm.protocol.conversation import End
from mitmllm.protocol.conversation import ErrorKind
from mitmllm.protocol.conversation import Failure
from mitmllm.protocol.conversation import Finish
from mitmllm.protocol.conversation import Gap
from mitmllm.protocol.conversation import Request
from mitmllm.protocol.conversation import Start
from mitmllm.protocol.conversation import StreamEvent
from mitmllm.protocol.conversation import TextDelta
from mitmllm.protocol.conversation import ThinkingDelta
from mitmllm.protocol.conversation import ToolArgsDelta
from mitmllm.protocol.conversation import ToolCall
from mitmllm.protocol.conversation import UpstreamCall
from mitmllm.protocol.conversation import UsageUpdate
from mitmllm.protocol.conversation import kind_of_status
from mitmllm.protocol.detect import by_name
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.payload import INVALID
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.schemas import Sanitized
from mitmllm.protocol.schemas import sanitize
from mitmllm.protocol.sse import Event
from mitmllm.protocol.stream import StreamChecker


class NotTranslatable(ValueError):
    """A format without a converter was asked to translate."""


def converter(dialect: Dialect | str) -> Converter:
    d = by_name(dialect) if isinstance(dialect, str) else dialect
    conv = d.converter() if d is not None else None
    if conv is None:
        name = dialect if isinstance(dialect, str) else dialect.name
        raise NotTranslatable(f"mitmllm cannot translate the wire format {name!r}")
    return conv


def dialect_of(dialect: Dialect | str) -> Dialect:
    d = by_name(dialect) if isinstance(dialect, str) else dialect
    if d is None:
        raise NotTranslatable(f"unknown wire format {dialect!r}")
    return d


# --- load time -------------------------------------------------------------------------------


def uncarried(client: Dialect | str, upstream: Dialect | str, features: Iterable[str]) -> list[Gap]:
    """The request features (keys of `conversation.FEATURES`) a request of `client`'s format
    loses on its way to an upstream of `upstream`'s: each as a Gap naming the feature.

    A feature the client's own format cannot express is not asked of it; an unknown feature
    name is a gap of its own (a typo in a config must not pass)."""
    src, dst = converter(client), converter(upstream)
    title = dialect_of(upstream).title
    gaps = []
    for name in features:
        if name not in FEATURES:
            known = ", ".join(sorted(FEATURES))
            gaps.append(Gap(name, f"unknown request feature (known: {known})", "error"))
        elif name in src.features and name not in dst.features:
            gaps.append(Gap(name, f"{title} cannot carry {FEATURES[name]}"))
    return gaps


# --- requests --------------------------------------------------------------------------------


@dataclass(slots=True)
class TranslatedRequest:
    """A client request rendered for an upstream of another format."""

    call: UpstreamCall
    request: Request  # the neutral request (what the client asked)
    sanitized: Sanitized | None = None  # the upstream's tool-schema rules applied to the body
    gaps: list[Gap] = field(default_factory=list)

    @property
    def names(self) -> Mapping[str, str]:
        """Tool names the sanitizer changed: upstream name -> client name."""
        return self.sanitized.names if self.sanitized is not None else {}


def translate_request(
    client: Dialect | str,
    upstream: Dialect | str,
    path: str,
    body: Any,
    *,
    model: str | None = None,
    flavour: str | None = None,
) -> TranslatedRequest:
    """Read `body` (parsed JSON) as `client`'s format and write it in `upstream`'s, asking for
    `model` (default: the model the client asked for). Tool declarations then pass the
    upstream's tool-schema `flavour` (default: the rules its own API enforces)."""
    src, dst = converter(client), converter(upstream)
    up = dialect_of(upstream)
    gaps: list[Gap] = []
    request = src.parse_request(path, body, gaps)
    for gap in uncarried(client, upstream, request.features()):
        gaps.append(gap)
    call = dst.render_request(request, model or request.model or "", gaps)
    sanitized = None
    flavour = flavour or up.native_flavour
    if flavour != "none":
        sanitized = sanitize(up.name, call.body, flavour)
    call.gaps = gaps
    return TranslatedRequest(call, request, sanitized, gaps)


def report_gaps(gaps: Iterable[Gap], findings: Findings) -> None:
    """Run-time findings (XLT-1) for what a translated request could not carry."""
    seen: set[tuple[str, str]] = set()
    for gap in gaps:
        if (gap.path, gap.reason) in seen:
            continue
        seen.add((gap.path, gap.reason))
        findings.add("XLT-1", f"{gap.path}: {gap.reason}", severity=Severity(gap.severity))


# --- whole responses and errors --------------------------------------------------------------


def translate_response(
    upstream: Dialect | str,
    client: Dialect | str,
    payload: Any,
    stream: ClientStream,
    findings: Findings,
    *,
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A whole (non-streamed) JSON response of `upstream`'s format as `client`'s."""
    response = converter(upstream).parse_response(payload, findings)
    if names:
        response.parts = [
            ToolCall(p.id, names.get(p.name, p.name), p.arguments) if isinstance(p, ToolCall) else p
            for p in response.parts
        ]
    if not response.usage.known:
        findings.add("XLT-5", "the upstream's response carries no usage")
    return converter(client).render_response(response, stream, findings)


@dataclass(frozen=True, slots=True)
class TranslatedError:
    status: int
    body: bytes
    headers: dict[str, str]  # content-type, and retry-after when the upstream gave one


def translate_error(
    upstream: Dialect | str,
    client: Dialect | str,
    status: int,
    body: bytes | Any,
    *,
    retry_after: str | None = None,
) -> TranslatedError:
    """An upstream error response (status, body bytes or parsed JSON, its ``retry-after``) as
    `client`'s: the HTTP status and error body a client of that format expects for the same
    kind of failure. 429 stays 429; an overload is 529 for Anthropic clients and 503 for the
    others; ``retry-after`` is kept as it came."""
    payload = body
    if isinstance(body, bytes | bytearray):
        payload, _ = parse_json(bytes(body)) if body else (None, None)
        if payload is INVALID:
            payload = None
    if isinstance(payload, dict):
        error = converter(upstream).parse_error(status, payload)
    else:
        text = body.decode("utf-8", "replace")[:200] if isinstance(body, bytes) else ""
        error = ApiError(kind_of_status(status), text or f"upstream answered HTTP {status}", status)
    out_status, out_body = converter(client).render_error(error)
    headers = {"content-type": "application/json"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    return TranslatedError(out_status, out_body, headers)


# --- streams ---------------------------------------------------------------------------------


class _Sequencer:
    """Holds a reader's events to the neutral stream contract (see `conversation`): a Start
    first, one block open at a time and numbered 0, 1, 2, ..., blocks closed before the finish,
    nothing after End or Failure. Tool names changed by the request's sanitizer are mapped
    back here."""

    def __init__(self, findings: Findings, names: Mapping[str, str]) -> None:
        self.findings = findings
        self.names = names
        self.started = False
        self.open: int | None = None  # the reader's index of the open block
        self.next = 0
        self.finished = False
        self.over = False  # End or Failure passed

    def feed(self, events: Iterable[StreamEvent]) -> Iterable[StreamEvent]:
        for e in events:
            if self.over:
                return
            if not self.started and not isinstance(e, Start | Failure):
                self.started = True
                yield Start()
            if isinstance(e, Start):
                if not self.started:
                    self.started = True
                    yield e
            elif isinstance(e, BlockStart):
                if self.finished:
                    self._broken(f"a {e.kind} block after the stop reason")
                    continue
                if self.open is not None:
                    yield BlockStop(self.next - 1)
                self.open = e.index
                name = self.names.get(e.name, e.name) if e.name is not None else None
                yield BlockStart(self.next, e.kind, e.id, name)
                self.next += 1
            elif isinstance(e, TextDelta | ThinkingDelta | ToolArgsDelta):
                if self.open is None or e.index != self.open:
                    self._broken(f"content for block {e.index}, which is not open")
                    continue
                if isinstance(e, TextDelta):
                    yield TextDelta(self.next - 1, e.text)
                elif isinstance(e, ThinkingDelta):
                    yield ThinkingDelta(self.next - 1, e.text)
                else:
                    yield ToolArgsDelta(self.next - 1, e.fragment)
            elif isinstance(e, BlockStop):
                if self.open is not None and e.index == self.open:
                    self.open = None
                    yield BlockStop(self.next - 1)
            elif isinstance(e, Finish):
                if self.finished:
                    continue
                yield from self._close()
                self.finished = True
                yield e
            elif isinstance(e, UsageUpdate):
                yield e
            elif isinstance(e, End | Failure):
                if isinstance(e, End):
                    yield from self._close()
                self.over = True
                if isinstance(e, Failure) and not self.started:
                    self.started = True
                yield e

    def _close(self) -> Iterable[StreamEvent]:
        if self.open is not None:
            self.open = None
            yield BlockStop(self.next - 1)

    def _broken(self, what: str) -> None:
        self.findings.add("XLT-4", f"upstream stream sent {what}")


class StreamTranslator:
    """An upstream stream's (event, payload) pairs in, the client format's bytes out.

    Feed every pair a `StreamChecker` of the upstream's format returns (`event`), then call
    `close` at the end of the upstream stream. `complete` tells whether the client got its
    format's success terminator, `failed` whether it got an error event; neither means the
    upstream stream ended early (the caller decides what the client sees then).
    """

    def __init__(
        self,
        upstream: Dialect | str,
        client: Dialect | str,
        stream: ClientStream,
        findings: Findings,
        *,
        names: Mapping[str, str] | None = None,
    ) -> None:
        self.findings = findings
        self.reader = converter(upstream).reader(findings)
        self.writer = converter(client).writer(stream, findings)
        self.sequencer = _Sequencer(findings, names or {})
        self.complete = False
        self.failed = False
        self.usage_seen = False
        self.upstream_title = dialect_of(upstream).title

    def event(self, ev: Event, payload: Any) -> bytes:
        try:
            events = self.reader.read(ev, payload)
        except Exception as e:  # a reader bug must not lose the rest of the stream silently
            self.findings.add("XLT-4", f"event {ev.index} could not be read: {type(e).__name__}")
            events = [
                Failure(
                    ApiError(ErrorKind.API_ERROR, "mitmllm could not translate the upstream stream")
                )
            ]
        return self._write(events)

    def close(self) -> bytes:
        out = self._write(self.reader.close())
        if self.complete and not self.usage_seen:
            self.findings.add("XLT-5", f"the {self.upstream_title} stream reported no usage")
        return out

    def fail(self, error: ApiError) -> bytes:
        """End the client's stream with its format's error event (nothing after it)."""
        return self._write([Failure(error)])

    def _write(self, events: Iterable[StreamEvent]) -> bytes:
        out = bytearray()
        for e in self.sequencer.feed(events):
            if isinstance(e, End):
                self.complete = True
            elif isinstance(e, Failure):
                self.failed = True
            elif isinstance(e, UsageUpdate) and e.usage.known:
                self.usage_seen = True
            out += self.writer.write(e)
        return bytes(out)


class ByteTranslator:
    """Upstream bytes in (any chunking), client bytes out: a `StreamChecker` of the upstream's
    format (its findings go to `upstream_findings`) feeding a `StreamTranslator` (translation
    findings go to `findings`)."""

    def __init__(
        self,
        upstream: Dialect | str,
        client: Dialect | str,
        stream: ClientStream,
        *,
        findings: Findings | None = None,
        upstream_findings: Findings | None = None,
        request: Any = None,
        names: Mapping[str, str] | None = None,
    ) -> None:
        self.findings = findings if findings is not None else Findings()
        self.checker = StreamChecker(dialect_of(upstream), upstream_findings, request=request)
        self.translator = StreamTranslator(upstream, client, stream, self.findings, names=names)

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self.translator.event(ev, p) for ev, p in self.checker.feed(chunk))

    def close(self) -> bytes:
        out = b"".join(self.translator.event(ev, p) for ev, p in self.checker.close())
        return out + self.translator.close()
