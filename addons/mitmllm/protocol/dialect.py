"""What every wire format (dialect) module provides.

A dialect module (`anthropic.py`, `openai_chat.py`, `openai_responses.py`, `gemini.py`) holds
everything that is specific to one wire format, and nothing else:

* recognising its requests (path, body) and whether they ask for a stream;
* a validator state machine for its event stream (`StreamValidator`), and the checks for its
  non-streaming JSON responses;
* the repairs that answer its validator's rules (`mender`, a `mitmllm.protocol.repair.Mender`);
* request rewriting (the model it carries, its tools) and response restamping (the model the
  client sees, tool names mapped back), the latter as edits at key paths that are spliced into
  the upstream's bytes;
* commit detection (is this the first content event?) and in-band failure detection;
* the events and bodies mitmllm synthesises in its name: a terminal error event, an HTTP error
  body, a keep-alive;
* reassembling the streamed message for humans (the contentview);
* the facts other layers need about the format: how its API takes a key, where a request keeps
  its prompt, its tools and its model, whether it asks for thinking, which events are heartbeats.

Nothing outside the dialect modules branches on a format's name: adding a format is one module
plus one line in `mitmllm.protocol.detect.dialects`.

Everything here is sans-I/O: payloads in, payloads / bytes / findings out.
"""

from __future__ import annotations

from abc import ABC
from abc import abstractmethod
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from enum import Enum
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.payload import INVALID as INVALID
from mitmllm.protocol.payload import NO_DATA as NO_DATA
from mitmllm.protocol.payload import SENTINEL as SENTINEL
from mitmllm.protocol.payload import is_json as is_json
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.sse import Event
from mitmllm.protocol.toolspec import Note
from mitmllm.protocol.toolspec import ToolSpec

if TYPE_CHECKING:
    from mitmllm.protocol.conversation import Converter
    from mitmllm.protocol.repair import Mender

#: A handler judges one event of the kind it is registered for.
Handler = Callable[[Any, Event, Any], None]

#: Where a finding points: an event number and a byte offset (either may be unknown).
_HERE: Any = object()


@dataclass(frozen=True, slots=True)
class Step:
    """One cell of a validator's transitions table: what an event of one kind does in one state.

    `to` is the state after the event (None: the handler decides, from what the event carries).
    `breaks` is the ordering rule the event breaks when it arrives in that state; `detail` words
    the finding (``{kind}`` is the event's kind, ``{v.x}`` a field of the validator), or is empty
    when the handler words it, because only the event's content says what to name. `judge` False
    means clients act on nothing the event carries there, so its handler does not run.
    """

    to: Enum | None = None
    breaks: str | None = None
    detail: str = ""
    judge: bool = True


class StreamValidator(ABC):
    """The per-stream state machine of one dialect, in the shape of h11's.

    `on_event` sees every block in order, including comments and blanks (their payload is
    NO_DATA). The generic layer (`mitmllm.protocol.stream`) has already reported SSE-* and PAY-*
    findings; the validator reports its own family's rules and keeps the summary fields below
    up to date.

    Theory of operation: `classify` names the kind of an event (reporting what is wrong with
    its envelope on the way), or None for an event clients never act on. The `TRANSITIONS`
    table then moves `state` and reports the ordering rule the event breaks there, and the
    kind's entry in `HANDLERS` judges what the event carries. Every finding goes through
    `report`, which points it at the event being judged unless told otherwise.
    """

    #: model as reported by the stream (message_start.message.model, chunk.model, ...)
    model: str | None = None
    #: the stop / finish reason, once known
    finish: str | None = None
    #: an in-band error's message, if the stream failed
    error: str | None = None
    #: True once the dialect's success terminator was seen (message_stop, [DONE], ...)
    complete: bool = False
    #: the token counts the stream carried, in its format's own keys (the latest count wins)
    usage: dict[str, Any] | None = None

    #: the current state (a member of the dialect's own `State` enum)
    state: Enum
    #: state -> event kind -> Step; a kind missing from a state's row (and no "*" entry there)
    #: is not ordered in that state: the state stays and nothing is reported
    TRANSITIONS: ClassVar[Mapping[Enum, Mapping[str, Step]]] = {}
    #: event kind -> the method that judges it ("*": every kind without its own)
    HANDLERS: ClassVar[Mapping[str, Handler]] = {}

    #: where findings go and which event they point at (bound per event and at close)
    findings: Findings
    event: int | None = None
    offset: int | None = None
    #: the ordering rule the current event broke, when its handler words the finding
    breach: str | None = None

    #: Attributes that only say where the event being judged is, for its findings: bound anew
    #: before they are read, so they are no state (see `mitmllm.protocol.steady`).
    CONTEXT: ClassVar[tuple[str, ...]] = ("findings", "event", "offset", "breach")
    #: Attributes that count events and decide nothing until the stream ends.
    COUNTERS: ClassVar[tuple[str, ...]] = ()
    #: Where each event carries a count the validator checks (a sequence number), and the
    #: attribute that holds the count it wants next: steady deltas must carry exactly that.
    STEADY_COUNTED: ClassVar[tuple[tuple[str | int, ...], str] | None] = None

    def __init__(self) -> None:
        self.findings = Findings()

    def steady_sink(self) -> list[str] | None:
        """Where the validator keeps the text of the delta it judged last, when it keeps delta
        texts (a steady delta's text goes there too); None when it reads them only for being
        empty (see `mitmllm.protocol.steady`)."""
        return None

    def whole_texts(self, least: int, event: str | None) -> Sequence[str]:
        """The texts of `least` characters or more that the validator holds as streamed and
        that an event named `event` may carry again whole (a Responses done event repeats its
        part's text), in the order it would carry them; () when it keeps none, or when such
        an event carries none (a delta: its text is new, and the texts grow) (see
        `mitmllm.protocol.stream.StreamChecker.parse`)."""
        return ()

    def on_event(self, ev: Event, payload: Any, findings: Findings) -> None:
        self.findings, self.event, self.offset = findings, ev.index, ev.offset
        kind = self.classify(ev, payload)
        if kind is None:
            return
        self.breach = None
        row = self.TRANSITIONS.get(self.state)
        step = (row.get(kind) or row.get("*")) if row is not None else None
        if step is not None:
            if step.to is not None:
                self.state = step.to
            if step.breaks is not None:
                if step.detail:
                    self.report(step.breaks, step.detail.format(kind=kind, v=self))
                else:
                    self.breach = step.breaks
            if not step.judge:
                return
        handler = self.HANDLERS.get(kind) or self.HANDLERS.get("*")
        if handler is not None:
            handler(self, ev, payload)

    @abstractmethod
    def classify(self, ev: Event, payload: Any) -> str | None:
        """The kind of `ev` for the tables, or None if no handler judges it."""

    @abstractmethod
    def on_close(self, findings: Findings, *, end_offset: int, events: int) -> None:
        """End of stream. `end_offset` is the body length, `events` the number of blocks."""

    def report(
        self,
        rule_id: str,
        detail: str,
        severity: Severity | None = None,
        *,
        event: int | None = _HERE,
        offset: int | None = _HERE,
    ) -> None:
        """Record a finding at the event being judged, or at `event` / `offset`."""
        self.findings.add(
            rule_id,
            detail,
            event=self.event if event is _HERE else event,
            offset=self.offset if offset is _HERE else offset,
            severity=severity,
        )


@dataclass(slots=True)
class Block:
    """One piece of a reassembled message, for humans."""

    kind: str  # "text" | "thinking" | "tool_call" | "refusal" | "other"
    text: str = ""
    name: str | None = None  # tool name, or the block type for "other"
    id: str | None = None
    input: Any = None  # parsed tool input (None if it did not parse)
    choice: int = 0


@dataclass(slots=True)
class Assembled:
    """The message a client would have built from the stream."""

    id: str | None = None
    model: str | None = None
    blocks: list[Block] = field(default_factory=list)
    stop_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(slots=True)
class ToolInfo:
    """A tool declared in a request, as the request view shows it."""

    name: str
    schema: Any
    kind: str = "function"  # the tool's own type ("function", "custom", a server tool type)


class Dialect(ABC):
    """One wire format. Instances are stateless; per-stream state lives in `validator()`."""

    name: ClassVar[str]  # stable id: "anthropic", "openai-chat", "openai-responses", "gemini"
    title: ClassVar[str]  # "Anthropic Messages"
    sentinel: ClassVar[str | None] = None  # a data value that is not JSON, e.g. "[DONE]"
    #: Where a whole response body keeps its token counts, and each count's (dotted) key there:
    #: input, output, cache_read, cache_write, reasoning.
    usage_key: ClassVar[str] = "usage"
    usage_fields: ClassVar[dict[str, str]] = {}
    #: How the format's official API takes its key: the default `auth` of an upstream.
    default_auth: ClassVar[str] = "bearer"
    #: Request headers of the format's own API (name prefixes, lower case): they go to an
    #: upstream of this format only, never to one of another format a request is translated to.
    own_headers: ClassVar[tuple[str, ...]] = ()
    #: Headers the format's API requires on every request; a translated request gets them.
    required_headers: ClassVar[dict[str, str]] = {}
    #: The model is part of the URL path (so it cannot contain '/'), not of the body.
    model_in_path: ClassVar[bool] = False
    #: Where a request keeps its prompt (system prompt, conversation, tools): the fields the
    #: token estimate of model rules reads.
    prompt_fields: ClassVar[tuple[str, ...]] = ()
    #: The tool-schema flavour whose rules the format's own API enforces (REQ-1 / REQ-4 lints,
    #: and which flavours apply to its bodies; see `mitmllm.protocol.schemas`).
    native_flavour: ClassVar[str] = "none"
    #: The key of the value `restamp` edits, spelled as JSON spells it: a payload it edits
    #: holds these bytes, or a ``\u`` escape that spells them otherwise.
    restamp_key: ClassVar[bytes] = b'"model"'

    # --- recognising requests ----------------------------------------------------------------

    @abstractmethod
    def match_request(self, method: str, path: str, body: Any) -> bool:
        """Is this request (path without query; body parsed or None) one of ours?"""

    @abstractmethod
    def wants_stream(self, path: str, query: Mapping[str, str], body: Any) -> bool:
        """Did the request ask for an event stream?"""

    def match_payload(self, payload: Any, event_name: str | None) -> bool:
        """Does this first stream event look like ours? (detection from the response)"""
        return False

    def asks_thinking(self, body: dict[str, Any]) -> bool:
        """Does this request body ask the model to reason (for model rules' `when.thinking`)?"""
        return False

    def declares_tools(self, body: dict[str, Any]) -> bool:
        """Does this request body declare at least one tool?"""
        tools = body.get("tools")
        return isinstance(tools, list) and bool(tools)

    # --- tools in requests (the sanitizers and lints of `mitmllm.protocol.schemas`) ----------

    def tool_specs(self, body: dict[str, Any], note: Note) -> Iterator[ToolSpec]:
        """Every named tool declaration of a request body; odd shapes are noted, not raised."""
        return iter(())

    def tool_name_references(self, body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        """(pointer, object with a "name") for every place a request names a declared tool
        besides its declaration (tool_choice, earlier tool calls of the conversation)."""
        return iter(())

    def tool_type_problem(self, index: int, tool: dict[str, Any]) -> str | None:
        """Why the tool entry `tools[index]` has a type the format's own API rejects (REQ-2)."""
        return None

    # --- validation ---------------------------------------------------------------------------

    @abstractmethod
    def validator(self, request: Any = None) -> StreamValidator:
        """A fresh state machine for one stream; `request` is the parsed request body."""

    #: Where the events that make up most of a stream (text deltas) carry the model's text, when
    #: the validator reads the text there only for being empty or not: such events are accepted
    #: by their bytes once one was checked (`mitmllm.protocol.steady`). Empty: never.
    steady_paths: ClassVar[tuple[tuple[str | int, ...], ...]] = ()
    #: Where such an event may also carry padding: a string the validator never reads, with
    #: other bytes in each event (OpenAI's ``obfuscation``, random characters that even out
    #: the events' sizes, on by default). A steady event's pad may differ as its text does.
    steady_pads: ClassVar[tuple[tuple[str | int, ...], ...]] = ()

    def mender(self, request: Any = None) -> Mender | None:
        """The repairs of this wire format for one stream (see `mitmllm.protocol.repair`);
        None when the format has none beyond the SSE-level ones."""
        return None

    def dataless_severity(self, ev: Event) -> Severity | None:
        """Severity of SSE-13 for a block with fields but no data (None: fine)."""
        return Severity.ERROR

    def check_json_response(
        self, status: int, payload: Any, findings: Findings, request: Any = None
    ) -> None:
        """Checks for a non-streaming JSON response body (already parsed)."""
        return None

    def error_of(self, payload: Any) -> str | None:
        """If this JSON payload (an event's or a whole body's) is an error object, its message."""
        return None

    # --- rewriting ----------------------------------------------------------------------------

    def request_model(self, path: str, body: Any) -> str | None:
        """The model a request asks for (from the body, or the path for Gemini)."""
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            return body["model"]
        return None

    def set_request_model(self, path: str, body: Any, model: str) -> tuple[str, Any]:
        """Return (path, body) asking for `model` instead. The body is modified in place."""
        body["model"] = model
        return path, body

    def request_tools(self, body: Any) -> list[ToolInfo]:
        return []

    def restamp(self, payload: Any, model: str) -> list[Edit]:
        """The edits that show the client `model` in one response payload (none: unchanged).

        Rewrites read the parsed payload and say what to change as edits at key paths; the
        caller splices them into the bytes (`mitmllm.protocol.splice`), so every other byte of
        the event or body stays the upstream's."""
        return []

    def rename_tools(self, payload: Any, names: Mapping[str, str]) -> list[Edit]:
        """The edits that map tool names in one response payload (upstream name -> client's)."""
        return []

    # --- commit gate and synthesis ------------------------------------------------------------

    def is_content(self, ev: Event, payload: Any) -> bool:
        """Is this the kind of event that commits a response (carries model output)?"""
        return is_json(payload)

    def is_heartbeat(self, ev: Event, payload: Any) -> bool:
        """Is this event only a sign of life (it must not keep a stalled stream alive)?"""
        return False

    @abstractmethod
    def error_event(self, message: str, kind: str = "api_error") -> bytes:
        """A terminal in-band error event in this format, as bytes on an event boundary."""

    @abstractmethod
    def error_body(self, status: int, message: str, kind: str = "api_error") -> bytes:
        """This format's JSON error body for an HTTP error status."""

    def keepalive(self) -> bytes | None:
        """Bytes that keep an idle stream open without changing its meaning (None: none)."""
        return b": keep-alive\n\n"

    # --- translation ---------------------------------------------------------------------------

    def converter(self) -> Converter | None:
        """The format's mapping to the neutral conversation model (None: not translatable)."""
        return None

    # --- for humans ---------------------------------------------------------------------------

    def usage(self, raw: Any) -> dict[str, int]:
        """Token counts in one naming for every format (input, output, cache_read, cache_write,
        reasoning), from the format's own usage object; counts it does not carry are left out."""
        out: dict[str, int] = {}
        if not isinstance(raw, dict):
            return out
        for name, path in self.usage_fields.items():
            value: Any = raw
            for key in path.split("."):
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, int) and not isinstance(value, bool):
                out[name] = value
        return out

    def body_usage(self, payload: Any) -> dict[str, int]:
        """`usage` of a whole (non-streamed) response body."""
        return self.usage(payload.get(self.usage_key) if isinstance(payload, dict) else None)

    def assemble(self, payloads: Iterable[tuple[Event, Any]]) -> Assembled:
        """Rebuild the message from the stream's (event, payload) pairs."""
        return Assembled()

    def summarize(self, ev: Event, payload: Any) -> str:
        """A short one-line description of one event for the contentview."""
        return ev.event or ""
