"""The neutral conversation model: what every wire format's requests, responses, streams and
errors mean, without any one format's spelling (sans-I/O).

Translation between wire formats goes through this model and never from one format straight to
another: each format converts to and from it (`Converter`, one module per format under
`mitmllm.protocol.convert`), and `mitmllm.protocol.translate` chains two converters. A new format
is one converter, not a new pair per format.

Theory of operation
-------------------
A request becomes a `Request`: system prompt, `Message`s of `Part`s (text, images, thinking,
tool calls, tool results), tool declarations, sampling settings, the stream flag and reasoning
settings. Whatever a format says that the model cannot hold is a `Gap` (a field path and why);
whatever the target format cannot say is a `Gap` too. Gaps become config errors at load time and
XLT-* findings at run time.

A stream becomes a sequence of `StreamEvent`s with one contract, whatever the upstream did::

    Start ( BlockStart (TextDelta | ThinkingDelta | ToolArgsDelta)* BlockStop )* Finish End
    Usage may come anywhere after Start (cumulative: later values replace earlier ones)
    Failure may replace the rest at any point; it is terminal

One block is open at a time and blocks are numbered 0, 1, 2, ... in order. A reader (upstream
format -> model) keeps what it needs to produce this, a writer (model -> client format) keeps
what its format needs to say it; neither holds the whole response (Responses clients are the
exception their format imposes: the terminal event repeats the whole output).

Tool calls keep the id the upstream gave them (a minted one where the upstream gives none), so
the id a client sees is the id it sends back with the tool result, and the next request carries
it to whatever upstream serves that turn. Ids are only ever rewritten by a deterministic
function of themselves, so every mention in a conversation changes alike.
"""

from __future__ import annotations

from abc import ABC
from abc import abstractmethod
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from enum import StrEnum
from typing import Any
from typing import Literal

from mitmllm.protocol.findings import Findings
from mitmllm.protocol.sse import Event

# --- content ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Image:
    """An image given inline (base64 `data` with its `media_type`) or by `url`."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Thinking:
    """Reasoning text. `signature` is opaque proof of origin that only `source` (the format
    that produced it) accepts back."""

    text: str
    signature: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the JSON text of an object, as the model wrote it


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    content: tuple[Text | Image, ...] = ()
    is_error: bool = False
    name: str | None = None  # the tool's name, where the format says it (Gemini needs it)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, Text))


Part = Text | Image | Thinking | ToolCall | ToolResult
Role = Literal["user", "assistant"]


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part] = field(default_factory=list)


# --- requests --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str | None = None
    schema: Any = None  # a JSON Schema object


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``auto``: the model decides; ``none``: no tool; ``required``: some tool; ``tool``: the
    one named. `parallel` False forbids several calls in one turn (None: the default)."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None
    parallel: bool | None = None


#: Reasoning effort names, least to most; `budget_of` and `effort_of` convert.
EFFORTS = ("minimal", "low", "medium", "high")
_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}


@dataclass(frozen=True, slots=True)
class Reasoning:
    """The request asks the model to reason: with an `effort` or a token `budget` (or both)."""

    effort: str | None = None
    budget: int | None = None
    summary: bool = False  # ask for the reasoning text where the format hides it by default

    def budget_tokens(self) -> int:
        if self.budget is not None:
            return self.budget
        return _BUDGETS.get(self.effort or "medium", _BUDGETS["medium"])

    def effort_name(self) -> str:
        if self.effort in EFFORTS:
            return self.effort
        budget = self.budget_tokens()
        return next((e for e in EFFORTS if budget <= _BUDGETS[e]), "high")


@dataclass(slots=True)
class Request:
    model: str | None = None
    system: list[Text] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False  # the client asked for usage in its stream (Chat)
    reasoning: Reasoning | None = None

    def features(self) -> set[str]:
        """The `FEATURES` this request uses (for `mitmllm.protocol.translate.uncarried`)."""
        used: set[str] = set()
        if self.system:
            used.add("system")
        if self.tools:
            used.add("tools")
        if self.tool_choice is not None:
            used.add(f"tool_choice.{self.tool_choice.mode}")
            if self.tool_choice.parallel is False:
                used.add("parallel_tool_calls")
        for name in ("max_tokens", "temperature", "top_p", "top_k"):
            if getattr(self, name) is not None:
                used.add(name)
        if self.stop:
            used.add("stop")
        if self.reasoning is not None:
            used.add("reasoning")
        for m in self.messages:
            for p in m.parts:
                used.add(_PART_FEATURES[type(p)])
                if isinstance(p, ToolResult) and any(isinstance(c, Image) for c in p.content):
                    used.add("tool_result.images")
        return used


_PART_FEATURES: dict[type, str] = {
    Text: "text",
    Image: "images",
    Thinking: "thinking_history",
    ToolCall: "tool_calls",
    ToolResult: "tool_results",
}

#: Every request feature a converter may carry, with what it is. A feature a format cannot
#: carry is dropped from a translated request (a Gap); `translate.uncarried` lists them.
FEATURES: dict[str, str] = {
    "system": "a system prompt",
    "text": "text messages",
    "images": "images in messages",
    "tools": "tool (function) declarations",
    "tool_calls": "earlier tool calls in the conversation",
    "tool_results": "tool results",
    "tool_result.images": "images inside tool results",
    "tool_choice.auto": "tool_choice auto",
    "tool_choice.none": "tool_choice none",
    "tool_choice.required": "tool_choice required / any",
    "tool_choice.tool": "tool_choice naming one tool",
    "parallel_tool_calls": "forbidding parallel tool calls",
    "max_tokens": "an output token limit",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "stop": "stop sequences",
    "reasoning": "reasoning / thinking settings",
    "thinking_history": "earlier reasoning sent back (kept only by the format that signed it)",
}


@dataclass(frozen=True, slots=True)
class Gap:
    """Something a translation cannot carry: where (a JSON Pointer into the body it was read
    from, or the feature name) and why. `severity` is the XLT-1 severity at run time."""

    path: str
    reason: str
    severity: Literal["error", "warning", "info"] = "warning"


# --- responses -------------------------------------------------------------------------------


class Stop(StrEnum):
    """Why the model stopped."""

    END = "end"  # a natural end of turn
    MAX_TOKENS = "max_tokens"
    TOOL_USE = "tool_use"
    STOP_SEQUENCE = "stop_sequence"
    REFUSAL = "refusal"  # a safety / content filter ended it
    PAUSE = "pause"  # a server tool loop paused (Anthropic pause_turn)
    OTHER = "other"


@dataclass(slots=True)
class Usage:
    """Token counts. `input_tokens` excludes the cached prompt: the whole prompt is
    input + cache_read + cache_write (formats that count the whole prompt convert)."""

    input_tokens: int | None = None
    output_tokens: int | None = None  # including reasoning
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning_tokens: int | None = None

    @property
    def prompt_tokens(self) -> int:
        return (self.input_tokens or 0) + (self.cache_read or 0) + (self.cache_write or 0)

    def update(self, other: Usage) -> None:
        """Cumulative counts: every value `other` knows replaces ours."""
        for name in ("input_tokens", "output_tokens", "cache_read", "cache_write"):
            value = getattr(other, name)
            if value is not None:
                setattr(self, name, value)
        if other.reasoning_tokens is not None:
            self.reasoning_tokens = other.reasoning_tokens

    @property
    def known(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None


@dataclass(slots=True)
class Response:
    """A whole (non-streamed) answer."""

    id: str | None = None
    model: str | None = None
    parts: list[Part] = field(default_factory=list)  # Text, Thinking, ToolCall
    stop: Stop = Stop.END
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)


# --- errors ----------------------------------------------------------------------------------


class ErrorKind(StrEnum):
    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    TOO_LARGE = "request_too_large"
    RATE_LIMIT = "rate_limit"
    API_ERROR = "api_error"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"


#: The HTTP status a kind has when a format has no status of its own for it.
KIND_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.AUTHENTICATION: 401,
    ErrorKind.PERMISSION: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.RATE_LIMIT: 429,
    ErrorKind.API_ERROR: 500,
    ErrorKind.OVERLOADED: 503,
    ErrorKind.TIMEOUT: 504,
}


def kind_of_status(status: int | None) -> ErrorKind:
    """The kind an HTTP status means, when the body does not say better."""
    return {
        400: ErrorKind.INVALID_REQUEST,
        401: ErrorKind.AUTHENTICATION,
        403: ErrorKind.PERMISSION,
        404: ErrorKind.NOT_FOUND,
        408: ErrorKind.TIMEOUT,
        413: ErrorKind.TOO_LARGE,
        422: ErrorKind.INVALID_REQUEST,
        429: ErrorKind.RATE_LIMIT,
        503: ErrorKind.OVERLOADED,
        504: ErrorKind.TIMEOUT,
        529: ErrorKind.OVERLOADED,
    }.get(status or 500, ErrorKind.API_ERROR)


@dataclass(frozen=True, slots=True)
class ApiError:
    kind: ErrorKind
    message: str
    status: int | None = None  # the upstream's own status, if it came with one
    retry_after: float | None = None  # seconds (the caller reads and writes the header)


# --- stream events ---------------------------------------------------------------------------

BlockKind = Literal["text", "thinking", "tool_call"]


@dataclass(frozen=True, slots=True)
class Start:
    id: str | None = None
    model: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class BlockStart:
    index: int
    kind: BlockKind
    id: str | None = None  # tool calls
    name: str | None = None  # tool calls


@dataclass(frozen=True, slots=True)
class TextDelta:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolArgsDelta:
    index: int
    fragment: str


@dataclass(frozen=True, slots=True)
class BlockStop:
    index: int


@dataclass(frozen=True, slots=True)
class Finish:
    stop: Stop
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class UsageUpdate:
    usage: Usage


@dataclass(frozen=True, slots=True)
class End:
    """The upstream's success terminator (or, for formats without one, the end of a finished
    stream)."""


@dataclass(frozen=True, slots=True)
class Failure:
    error: ApiError


StreamEvent = (
    Start
    | BlockStart
    | TextDelta
    | ThinkingDelta
    | ToolArgsDelta
    | BlockStop
    | Finish
    | UsageUpdate
    | End
    | Failure
)


# --- what each format provides -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientStream:
    """What a stream writer needs to know about the client: the model it asked for, what it
    asked to see, and values the caller fixes so output is deterministic."""

    model: str
    include_usage: bool = False
    created: int = 0  # unix seconds for formats that stamp chunks (Chat)
    id: str | None = None  # the response id to show (None: derived from the upstream's)


class StreamReader(ABC):
    """Upstream stream events -> neutral events, one upstream event at a time."""

    @abstractmethod
    def read(self, ev: Event, payload: Any) -> list[StreamEvent]: ...

    def close(self) -> list[StreamEvent]:
        """End of the upstream stream (formats without a terminator end here)."""
        return []


class StreamWriter(ABC):
    """Neutral events -> the client format's bytes, on event boundaries."""

    @abstractmethod
    def write(self, e: StreamEvent) -> bytes: ...


@dataclass(slots=True)
class UpstreamCall:
    """A request rendered for an upstream: the path to append to its base URL (with query), the
    body, and what could not be carried."""

    path: str
    body: dict[str, Any]
    gaps: list[Gap] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Converter:
    """One wire format's mapping to and from the neutral model: a table of the format module's
    functions, so a format is its functions plus this one entry."""

    format: str  # the dialect name
    #: The request features (keys of `FEATURES`) this format can carry.
    features: frozenset[str]
    # requests: (path, body, gaps) -> Request (the path carries the model in some formats)
    parse_request: Callable[[str, Any, list[Gap]], Request]
    render_request: Callable[[Request, str, list[Gap]], UpstreamCall]
    # whole responses
    parse_response: Callable[[Any, Findings], Response]
    render_response: Callable[[Response, ClientStream, Findings], dict[str, Any]]
    # errors: (HTTP status, payload) in; (HTTP status, JSON body) and the terminal in-band
    # error event out
    parse_error: Callable[[int | None, Any], ApiError]
    render_error: Callable[[ApiError], tuple[int, bytes]]
    error_event: Callable[[ApiError], bytes]
    # streams
    reader: Callable[[Findings], StreamReader]
    writer: Callable[[ClientStream, Findings], StreamWriter]
    #: Can a client of this format be shown reasoning that another format produced?
    shows_foreign_thinking: bool = True


# --- small shared pieces ---------------------------------------------------------------------


def safe_id(value: str, prefix: str = "call_") -> str:
    """`value` in the alphabet every format accepts for tool call ids ([A-Za-z0-9_-]); a
    deterministic function of the id, so all mentions of one id change alike."""
    out = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in value)
    return out or f"{prefix}0"


def text_of(parts: list[Part] | tuple[Part, ...]) -> str:
    return "".join(p.text for p in parts if isinstance(p, Text))


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number_or_none(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}
