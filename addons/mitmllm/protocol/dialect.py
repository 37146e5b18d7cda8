"""What every wire format (dialect) module provides.

A dialect module (`anthropic.py`, `openai_chat.py`, `openai_responses.py`, `gemini.py`) holds
everything that is specific to one wire format, and nothing else:

* recognising its requests (path, body) and whether they ask for a stream;
* a validator state machine for its event stream (`StreamValidator`), and the checks for its
  non-streaming JSON responses;
* request rewriting (the model it carries, its tools) and response restamping (the model the
  client sees, tool names mapped back), the latter as edits at key paths that are spliced into
  the upstream's bytes;
* commit detection (is this the first content event?) and in-band failure detection;
* the events and bodies mitmllm synthesises in its name: a terminal error event, an HTTP error
  body, a keep-alive;
* reassembling the streamed message for humans (the contentview).

Everything here is sans-I/O: payloads in, payloads / bytes / findings out.
"""

from __future__ import annotations

from abc import ABC
from abc import abstractmethod
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
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


class StreamValidator(ABC):
    """The per-stream state machine of one dialect.

    `on_event` sees every block in order, including comments and blanks (their payload is
    NO_DATA). The generic layer (`mitmllm.protocol.stream`) has already reported SSE-* and PAY-*
    findings; the validator reports its own family's rules and keeps the summary fields below
    up to date.
    """

    #: model as reported by the stream (message_start.message.model, chunk.model, ...)
    model: str | None = None
    #: the stop / finish reason, once known
    finish: str | None = None
    #: an in-band error's message, if the stream failed
    error: str | None = None
    #: True once the dialect's success terminator was seen (message_stop, [DONE], ...)
    complete: bool = False

    @abstractmethod
    def on_event(self, ev: Event, payload: Any, findings: Findings) -> None: ...

    @abstractmethod
    def on_close(self, findings: Findings, *, end_offset: int, events: int) -> None:
        """End of stream. `end_offset` is the body length, `events` the number of blocks."""


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

    # --- validation ---------------------------------------------------------------------------

    @abstractmethod
    def validator(self, request: Any = None) -> StreamValidator:
        """A fresh state machine for one stream; `request` is the parsed request body."""

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

    @abstractmethod
    def error_event(self, message: str, kind: str = "api_error") -> bytes:
        """A terminal in-band error event in this format, as bytes on an event boundary."""

    @abstractmethod
    def error_body(self, status: int, message: str, kind: str = "api_error") -> bytes:
        """This format's JSON error body for an HTTP error status."""

    def keepalive(self) -> bytes | None:
        """Bytes that keep an idle stream open without changing its meaning (None: none)."""
        return b": keep-alive\n\n"

    # --- for humans ---------------------------------------------------------------------------

    def assemble(self, payloads: Iterable[tuple[Event, Any]]) -> Assembled:
        """Rebuild the message from the stream's (event, payload) pairs."""
        return Assembled()

    def summarize(self, ev: Event, payload: Any) -> str:
        """A short one-line description of one event for the contentview."""
        return ev.event or ""
