"""Gemini `generateContent` / `streamGenerateContent?alt=sse` (sans-I/O).

Requests
--------
``POST …/{v1beta|v1}/models/{model}:streamGenerateContent?alt=sse`` streams;
``POST …/models/{model}:generateContent`` does not. Vertex AI puts the same method under
``/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:…``. The model is in the
path, not the body, and the colon may arrive percent-encoded (``%3A``). Tools are
``tools[].functionDeclarations[]`` with ``name``, ``description`` and ``parameters`` (an OpenAPI
subset) or ``parametersJsonSchema``; other entries of ``tools[]`` are server tools
(``googleSearch``, ``codeExecution``, …).

Wire shape
----------
Every event is exactly one ``data: `` line holding a ``GenerateContentResponse`` and a blank
line, with CRLF line ends; there are no event names, ids, comments or sentinel::

    data: {"candidates": [{"content": {"parts": [{"text": "Hi"}],"role": "model"},"index": 0}],
           "usageMetadata": {…},"modelVersion": "gemini-2.5-flash","responseId": "…"}\\r\\n\\r\\n
    data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f","args": {…}},
           "thoughtSignature": "…"}],"role": "model"},"index": 0}],…}\\r\\n\\r\\n
    data: {"candidates": [{"content": {"parts": [{"text": ""}],"role": "model"},
           "finishReason": "STOP","index": 0}],"usageMetadata": {…},…}\\r\\n\\r\\n

The stream ends when the connection closes. ``thought: true`` parts are thinking,
``functionCall`` parts arrive whole (``args`` is an object), and the final chunk carries
``finishReason`` (older models put it on every chunk) and the full ``usageMetadata``. A blocked
prompt gets one chunk with ``promptFeedback.blockReason`` and no candidates. A failure after
HTTP 200 is a chunk ``{"error": {"code": 503, "message": …, "status": "UNAVAILABLE"}}``;
google-genai raises for it only when ``error`` is the first key.

States
------
``START`` (no chunk yet) → ``STREAMING`` (chunks; some candidate has no finishReason) →
``FINISHED`` (every candidate finished, or the prompt was blocked). Content arriving after a
finishReason reopens ``STREAMING``. An error chunk moves any state to ``FAILED``, which is final.
End of stream outside ``FINISHED``/``FAILED`` is truncation.

Rules (IDs from the catalogue)
------------------------------
GEM-1   streamGenerateContent without alt=sse answers a JSON array (`check_request`, and
        `check_json_response` for an array body)
GEM-2   each event is one ``data: `` line: any event:, id:, retry:, comment or other line breaks
        google-genai (this is how SSE-6 and SSE-13 apply to Gemini; SSE-13 is not reported)
GEM-3   ``data:`` without the space (warning; SSE-17 as google-genai sees it)
GEM-4   several data lines in one event (warning)
GEM-5   a ``[DONE]`` sentinel
GEM-6   the final event has no terminating blank line
GEM-7   each payload is a GenerateContentResponse (errors for wrong types; warnings for chunks
        with none of candidates/promptFeedback/usageMetadata, role other than model, a
        responseId or modelVersion that changes)
GEM-8   the stream ends with finishReason on every candidate or a blockReason (warnings: an
        unknown finishReason, a final chunk without usageMetadata)
GEM-9   an in-stream error chunk (the stream failed)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from urllib.parse import quote
from urllib.parse import unquote

from mitmllm.protocol.dialect import INVALID
from mitmllm.protocol.dialect import NO_DATA
from mitmllm.protocol.dialect import Assembled
from mitmllm.protocol.dialect import Block
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.dialect import Step
from mitmllm.protocol.dialect import StreamValidator
from mitmllm.protocol.dialect import ToolInfo
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.repair import Mender
from mitmllm.protocol.repair import Pair
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import parse_block
from mitmllm.protocol.toolspec import Note
from mitmllm.protocol.toolspec import ToolSpec
from mitmllm.protocol.toolspec import each_tool
from mitmllm.protocol.toolspec import kind_of
from mitmllm.protocol.toolspec import listed

if TYPE_CHECKING:
    from mitmllm.protocol.conversation import Converter

# --- the wire format ----------------------------------------------------------------------------

STREAM_METHOD = "streamGenerateContent"
UNARY_METHOD = "generateContent"

# `…/models/{model}:{method}` at the end of the path, whatever prefix a gateway adds.
_METHOD_PATH = re.compile(
    r"/(?:models|tunedModels)/(?P<model>[^/]+?)(?P<sep>:|%3[Aa])"
    rf"(?P<method>{STREAM_METHOD}|{UNARY_METHOD})$"
)

#: google-genai `types.FinishReason`.
FINISH_REASONS = frozenset(
    {
        "STOP",
        "MAX_TOKENS",
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "OTHER",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "MALFORMED_FUNCTION_CALL",
        "IMAGE_SAFETY",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "IMAGE_PROHIBITED_CONTENT",
        "NO_IMAGE",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
        "FINISH_REASON_UNSPECIFIED",
    }
)

#: Keys of which a chunk should carry at least one (GEM-7).
CHUNK_KEYS = ("candidates", "promptFeedback", "usageMetadata")

# Server tools are entries of tools[] other than function declarations.
_DECLARATIONS = ("functionDeclarations", "function_declarations")
_SCHEMAS = ("parameters", "parametersJsonSchema", "parameters_json_schema")

#: google.rpc status -> the HTTP status Google answers it with.
CODE_OF_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

#: HTTP status -> the google.rpc status an error body carries.
STATUS_OF_CODE: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    529: "UNAVAILABLE",  # Anthropic's "overloaded"
}

#: mitmllm's error kinds (Anthropic's error types, OpenAI's server_error) as google.rpc statuses.
#: A google.rpc status name is accepted as a kind as it is.
STATUS_OF_KIND: dict[str, str] = {
    "invalid_request_error": "INVALID_ARGUMENT",
    "authentication_error": "UNAUTHENTICATED",
    "permission_error": "PERMISSION_DENIED",
    "billing_error": "FAILED_PRECONDITION",
    "not_found_error": "NOT_FOUND",
    "rate_limit_error": "RESOURCE_EXHAUSTED",
    "timeout_error": "DEADLINE_EXCEEDED",
    "overloaded_error": "UNAVAILABLE",
    "api_error": "INTERNAL",
    "server_error": "INTERNAL",
}


def status_of_kind(kind: str) -> str:
    """The google.rpc status for an error kind (INTERNAL if unknown)."""
    if kind in CODE_OF_STATUS:
        return kind
    return STATUS_OF_KIND.get(kind, "INTERNAL")


def error_object(code: int, message: str, status: str) -> bytes:
    """``{"error":{"code":…,"message":…,"status":…}}`` with `error` first.

    ASCII-only, so no character of the message can end a line for clients that split on
    U+2028 or NEL (google-genai reads lines with httpx, SSE-3a).
    """
    body = {"error": {"code": code, "message": message, "status": status}}
    return json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")


# --- validation -------------------------------------------------------------------------------


class State(StrEnum):
    START = "start"
    STREAMING = "streaming"
    FINISHED = "finished"
    FAILED = "failed"


#: What `GeminiValidator.classify` calls each event (a chunk is an object without `error`).
NO_DATA_KIND, INVALID_KIND, VALUE_KIND, ERROR_KIND, CHUNK_KIND = (
    "<no-data>",
    "<invalid>",
    "<value>",
    "error",
    "chunk",
)
_FAIL = Step(State.FAILED)


class GeminiValidator(StreamValidator):
    """The state machine of one ``alt=sse`` stream (see the module docstring).

    A chunk moves the stream to STREAMING or FINISHED by what it carries (its handler decides);
    an error chunk moves any state to FAILED, which stays.
    """

    TRANSITIONS = {
        State.START: {ERROR_KIND: _FAIL},
        State.STREAMING: {ERROR_KIND: _FAIL},
        State.FINISHED: {ERROR_KIND: _FAIL},
    }

    COUNTERS = ("chunks",)  # a count, not a decision: a steady delta adds one as well

    def __init__(self) -> None:
        super().__init__()
        self.state = State.START
        self.chunks = 0
        self.response_id: str | None = None
        # candidate index -> its finishReason, None while it is still producing
        self.candidates: dict[int, str | None] = {}
        self.blocked: str | None = None
        self.last_has_usage = False

    # --- events ---------------------------------------------------------------------------------

    def classify(self, ev: Event, payload: Any) -> str | None:
        if payload is NO_DATA:
            return NO_DATA_KIND
        self._framing(ev)
        if payload is INVALID:  # PAY-1 was reported
            return INVALID_KIND
        if not isinstance(payload, dict):
            return VALUE_KIND
        return ERROR_KIND if payload.get("error") is not None else CHUNK_KIND

    def _invalid(self, ev: Event, payload: Any) -> None:
        if ev.data is not None and ev.data.strip() == "[DONE]":
            self.report("GEM-5", "data: [DONE] sentinel in a Gemini stream")

    def _value(self, ev: Event, payload: Any) -> None:
        self.report("GEM-7", f"payload is a JSON {type(payload).__name__}, not an object")

    def _no_data(self, ev: Event, payload: Any) -> None:
        """GEM-2 for every block that is not a lone blank line (clients skip those)."""
        raw = ev.raw
        if raw in (b"\r\n", b"\n", b"\r"):
            return
        if ev.event is not None:
            what = f"event: {ev.event!r} line"
        elif ev.id is not None or ev.retry is not None:
            what = "id: line" if ev.id is not None else "retry: line"
        elif ev.comments:
            what = f"comment {_comment(ev)}"
        else:
            what = f"line {raw[:30].decode('utf-8', 'replace').splitlines()[0]!r}"
        self.report("GEM-2", f"{what} without data")

    def _framing(self, ev: Event) -> None:
        """GEM-2/3/4: the block is exactly ``data: <json>`` and a blank line."""
        if ev.event is not None:
            self.report("GEM-2", f"event: {ev.event!r} line")
        elif ev.id is not None or ev.retry is not None:
            self.report("GEM-2", "id: line" if ev.id is not None else "retry: line")
        elif ev.comments:
            self.report("GEM-2", f"comment {_comment(ev)} inside an event")
        elif ev.data_lines > 1:
            self.report("GEM-4", f"{ev.data_lines} data lines in one event")
        else:
            self._data_line(ev)

    def _data_line(self, ev: Event) -> None:
        """A block with one data line and no other field: nothing else may be in it."""
        raw = ev.raw
        if raw.startswith(b"data: "):
            start = 6
        elif raw.startswith(b"data:"):
            self.report("GEM-3", "'data:' without a following space")
            start = 5
        else:
            self.report("GEM-2", "a line other than data: before the data line")
            return
        data = ev.data or ""
        end = start + (len(data) if data.isascii() else len(data.encode("utf-8")))
        # What follows the data line must be its line end and the blank line, nothing else.
        if raw[end:].strip(b"\r\n"):
            self.report("GEM-2", "a line other than data: after the data line")

    def _error(self, ev: Event, payload: dict[str, Any]) -> None:
        """GEM-9: the stream failed."""
        err = payload["error"]
        message = _error_message(err)
        code = err.get("code") if isinstance(err, dict) else None
        status = err.get("status") if isinstance(err, dict) else None
        detail = f"error chunk {status or '?'} ({code or '?'}): {(message or '')[:120]}"
        if next(iter(payload)) != "error":
            detail += "; 'error' is not the first key, so google-genai does not raise"
        self.report("GEM-9", detail)
        self.error = message or "error chunk"
        self.complete = False

    def check_response(self, body: dict[str, Any], findings: Findings) -> None:
        """GEM-7 for a whole non-streaming GenerateContentResponse."""
        self.findings, self.event, self.offset = findings, None, None
        self._chunk(body)

    def _chunk_event(self, ev: Event, payload: dict[str, Any]) -> None:
        self._chunk(payload)

    def _chunk(self, chunk: dict[str, Any]) -> None:
        """GEM-7 for one GenerateContentResponse, and the state transition it makes."""
        self.chunks += 1
        candidates = chunk.get("candidates")
        feedback = chunk.get("promptFeedback")
        usage = chunk.get("usageMetadata")
        if isinstance(usage, dict):
            self.usage = usage  # cumulative: the last chunk's counts are the response's
        if candidates is None and feedback is None and usage is None:
            self.report(
                "GEM-7",
                "chunk has none of candidates, promptFeedback, usageMetadata",
                Severity.WARNING,
            )
        self._pin(chunk)
        if isinstance(candidates, list):
            for cand in candidates:
                self._candidate(cand)
        elif candidates is not None:
            self.report("GEM-7", f"candidates is a {type(candidates).__name__}, not a list")
        if isinstance(feedback, dict):
            reason = feedback.get("blockReason")
            if isinstance(reason, str) and reason:
                self.blocked = self.finish = reason
        elif feedback is not None:
            self.report("GEM-7", "promptFeedback is not an object")
        self.last_has_usage = isinstance(usage, dict)
        if usage is not None and not self.last_has_usage:
            self.report("GEM-7", "usageMetadata is not an object")
        if self.state is not State.FAILED:
            done = self.blocked is not None or (
                bool(self.candidates) and None not in self.candidates.values()
            )
            self.state = State.FINISHED if done else State.STREAMING
            self.complete = done

    def _pin(self, chunk: dict[str, Any]) -> None:
        """modelVersion and responseId are strings that stay the same for the whole stream."""
        for key, seen in (("modelVersion", self.model), ("responseId", self.response_id)):
            value = chunk.get(key)
            if value is None or value == seen:
                continue
            if not isinstance(value, str):
                self.report("GEM-7", f"{key} {value!r} is not a string")
            elif seen is None:
                if key == "modelVersion":
                    self.model = value
                else:
                    self.response_id = value
            else:
                self.report("GEM-7", f"{key} changed from {seen!r} to {value!r}", Severity.WARNING)

    def _candidate(self, cand: Any) -> None:
        if not isinstance(cand, dict):
            self.report("GEM-7", "a candidate is not an object")
            return
        index = cand.get("index", 0)
        if type(index) is not int:
            self.report("GEM-7", f"candidate index {index!r} is not an integer")
            index = 0
        produced = False  # an output part in this chunk
        content = cand.get("content")
        if isinstance(content, dict):
            produced = self._content(content, index)
        elif content is not None:
            self.report("GEM-7", f"candidate {index} content is not an object")
        reason = cand.get("finishReason")
        if reason is not None:
            if not isinstance(reason, str):
                self.report("GEM-7", f"candidate {index} finishReason {reason!r} is not a string")
                reason = str(reason)
            elif reason not in FINISH_REASONS:
                self.report(
                    "GEM-8",
                    f"candidate {index} has unknown finishReason {reason!r}",
                    Severity.WARNING,
                )
            self.candidates[index] = self.finish = reason
        elif produced or index not in self.candidates:
            # Older models put finishReason on every chunk: output after one reopens the candidate.
            self.candidates[index] = None

    def _content(self, content: dict[str, Any], index: int) -> bool:
        """Checks one candidate's content; True if a part carries output."""
        role = content.get("role")
        if role is not None and role != "model":
            self.report(
                "GEM-7",
                f"candidate {index} content role is {role!r}, not 'model'",
                Severity.WARNING,
            )
        parts = content.get("parts")
        if parts is None:
            return False
        if not isinstance(parts, list):
            self.report("GEM-7", f"candidate {index} parts is not a list")
            return False
        output = False
        for part in parts:
            problem = _part_problem(part)
            if problem is not None:
                self.report("GEM-7", f"candidate {index}: {problem}")
            elif not output:
                output = _is_output(part)
        return output

    # --- end of stream --------------------------------------------------------------------------

    HANDLERS = {
        NO_DATA_KIND: _no_data,
        INVALID_KIND: _invalid,
        VALUE_KIND: _value,
        ERROR_KIND: _error,
        CHUNK_KIND: _chunk_event,
    }

    def on_close(self, findings: Findings, *, end_offset: int, events: int) -> None:
        self.findings, self.event, self.offset = findings, events, end_offset
        # The codec reported the unterminated tail as SSE-14 just before this call.
        tail = next((f for f in findings if f.rule == "SSE-14"), None)
        if tail is not None:
            self.report(
                "GEM-6",
                "the final event has no terminating blank line",
                event=tail.event,
                offset=tail.offset,
            )
        if self.state is State.FAILED:
            return  # failed, not truncated (GEM-9 said so)
        if self.state is State.FINISHED:
            if not self.last_has_usage and self.blocked is None:
                self.report("GEM-8", "the final chunk carries no usageMetadata", Severity.WARNING)
            return
        if self.chunks == 0:
            detail = "stream ended before any chunk"
        else:
            open_ = sorted(i for i, r in self.candidates.items() if r is None)
            which = f"candidate(s) {open_} never finished" if open_ else "no candidate"
            detail = f"stream ended after {self.chunks} chunk(s) without finishReason: {which}"
        self.report("GEM-8", detail)


# --- repairs ------------------------------------------------------------------------------------


class GeminiMender(Mender):
    """The repairs that answer the Gemini rules (see `mitmllm.protocol.repair`).

    * FIX-4 (GEM-2): a block without data (comments, event:, id:, retry:) is dropped, and the
      lines other than ``data:`` are removed from an event: google-genai raises on them.
    * FIX-5 (GEM-5): a ``data: [DONE]`` is removed.

    A stream without finishReason is not mended: that would make up a stop reason.
    """

    def feed(self, ev: Event, payload: Any) -> list[Pair]:
        if payload is NO_DATA:
            if not ev.raw.strip(b"\r\n"):
                return [(ev, payload)]  # a lone blank line: clients skip it
            what = f"comment {_comment(ev)}" if ev.comments else "a block without data"
            self.fix("FIX-4", f"{what} removed")
            return []
        if payload is INVALID and (ev.data or "").strip() == "[DONE]":
            self.fix("FIX-5", "data: [DONE] removed (Gemini streams end when the body ends)")
            return []
        if ev.comments or ev.event is not None or ev.id is not None or ev.retry is not None:
            lines = [line for line in _lines(ev.raw) if line.startswith(b"data")]
            eol = _eol(ev.raw)
            raw = b"".join(lines)
            raw += eol if raw.endswith((b"\n", b"\r")) else eol + eol
            self.fix("FIX-4", "lines other than data: removed from the event")
            new = parse_block(raw, ev.index, ev.offset)
            return [(new, payload)]
        return [(ev, payload)]


def _lines(raw: bytes) -> list[bytes]:
    out = []
    pos = 0
    for m in re.finditer(rb"\r\n|\r|\n", raw):
        out.append(raw[pos : m.end()])
        pos = m.end()
    return out


def _eol(raw: bytes) -> bytes:
    m = re.search(rb"\r\n|\r|\n", raw)
    return m.group() if m else b"\r\n"


def _part_problem(part: Any) -> str | None:
    """What is wrong with one `Part`, or None."""
    if not isinstance(part, dict):
        return "a part is not an object"
    text = part.get("text")
    if text is not None and not isinstance(text, str):
        return "part text is not a string"
    thought = part.get("thought")
    if thought is not None and not isinstance(thought, bool):
        return "part thought is not a boolean"
    call = part.get("functionCall")
    if call is None:
        return None
    if not isinstance(call, dict):
        return "functionCall is not an object"
    name = call.get("name")
    if not isinstance(name, str) or not name:
        return "functionCall has no name"
    args = call.get("args")
    if args is not None and not isinstance(args, dict):
        return f"functionCall {name} args is a {type(args).__name__}, not an object"
    return None


def _error_message(err: Any) -> str | None:
    if isinstance(err, dict):
        message = err.get("message")
        if isinstance(message, str) and message:
            return message
        return str(err.get("status") or err.get("code") or "error")
    if isinstance(err, str) and err:
        return err
    return None


def _is_output(part: Any) -> bool:
    """Does a part carry model output? (An empty text part does not.)"""
    if not isinstance(part, dict):
        return False
    for key, value in part.items():
        if key == "text":
            if value:
                return True
        elif key != "thought":
            return True
    return False


def _comment(ev: Event) -> str:
    return repr(": " + ev.comments[0][:30])


def _preview(text: str, limit: int = 24) -> str:
    short = text if len(text) <= limit else text[:limit] + "…"
    return json.dumps(short, ensure_ascii=False)


# --- the dialect ------------------------------------------------------------------------------


class GeminiDialect(Dialect):
    """Gemini API and Vertex AI `generateContent` / `streamGenerateContent`."""

    name = "gemini"
    # GeminiValidator reads it only for being a string and empty or not (GEM-7, output seen)
    steady_paths = (("candidates", 0, "content", "parts", 0, "text"),)
    title = "Gemini generateContent"
    sentinel = None
    usage_key = "usageMetadata"
    usage_fields: ClassVar[dict[str, str]] = {
        "input": "promptTokenCount",
        "output": "candidatesTokenCount",
        "cache_read": "cachedContentTokenCount",
        "reasoning": "thoughtsTokenCount",
    }
    default_auth = "x-goog-api-key"
    restamp_key = b'"modelVersion"'
    own_headers = ("x-goog-",)  # x-goog-user-project, x-goog-api-client, ...
    model_in_path = True
    prompt_fields = ("systemInstruction", "system_instruction", "contents", "tools")
    native_flavour = "gemini"

    # --- recognising requests -----------------------------------------------------------------

    def match_request(self, method: str, path: str, body: Any) -> bool:
        return method.upper() == "POST" and _METHOD_PATH.search(path) is not None

    def wants_stream(self, path: str, query: Mapping[str, str], body: Any) -> bool:
        m = _METHOD_PATH.search(path)
        return m is not None and m.group("method") == STREAM_METHOD

    def asks_thinking(self, body: dict[str, Any]) -> bool:
        """``generationConfig.thinkingConfig`` has a non-zero ``thinkingBudget`` (-1 is
        dynamic), a ``thinkingLevel``, or ``includeThoughts: true``."""
        config = _either(body, "generationConfig", "generation_config")
        thinking = _either(config, "thinkingConfig", "thinking_config")
        if not isinstance(thinking, dict):
            return False
        budget = _either(thinking, "thinkingBudget", "thinking_budget")
        level = _either(thinking, "thinkingLevel", "thinking_level")
        include = _either(thinking, "includeThoughts", "include_thoughts")
        return (
            include is True
            or (_is_number(budget) and budget != 0)
            or (isinstance(level, str) and level != "")
        )

    def tool_specs(self, body: dict[str, Any], note: Note) -> Iterator[ToolSpec]:
        """``tools[].functionDeclarations[]`` (either spelling); other entries are server tools."""
        for _, _, ptr, tool in each_tool(body, note):
            key = "functionDeclarations"
            if key not in tool:
                key = "function_declarations"
            decls = listed(tool, key, f"{ptr}/{key}", note)
            for j, decl in enumerate(decls):
                dptr = f"{ptr}/{key}/{j}"
                if isinstance(decl, dict):
                    yield ToolSpec(decls, j, dptr, decl, dptr, "parameters")
                else:
                    note(dptr, f"declaration is {kind_of(decl)}")

    def check_request(self, path: str, query: Mapping[str, str], findings: Findings) -> None:
        """GEM-1: a streamGenerateContent request must ask for ``alt=sse``.

        Call it with the path (no query) and the parsed query of a recognised request.
        """
        m = _METHOD_PATH.search(path)
        if m is None or m.group("method") != STREAM_METHOD:
            return
        alt = query.get("alt")
        if (alt or "").lower() != "sse":
            findings.add(
                "GEM-1",
                f"streamGenerateContent requested with alt={alt!r}"
                if alt is not None
                else "streamGenerateContent requested without alt=sse",
            )

    def match_payload(self, payload: Any, event_name: str | None) -> bool:
        if event_name is not None or not isinstance(payload, dict):
            return False
        if "object" in payload or "type" in payload:
            return False
        if any(k in payload for k in CHUNK_KEYS):
            return True
        err = payload.get("error")
        return (
            isinstance(err, dict)
            and isinstance(err.get("status"), str)
            and type(err.get("code")) is int
        )

    # --- validation ---------------------------------------------------------------------------

    def mender(self, request: Any = None) -> GeminiMender:
        return GeminiMender()

    def validator(self, request: Any = None) -> GeminiValidator:
        return GeminiValidator()

    def dataless_severity(self, ev: Event) -> Severity | None:
        """None: for Gemini a field line without data is GEM-2 (google-genai fails on the line
        itself, whatever follows), so SSE-13 would report the same defect twice."""
        return None

    def check_json_response(
        self, status: int, payload: Any, findings: Findings, request: Any = None
    ) -> None:
        """GEM-1 for an array body (a stream without alt=sse); GEM-7/GEM-8 for a response."""
        if not 200 <= status < 300:
            return  # error bodies (GEM-10) are what they should be
        if isinstance(payload, list):
            findings.add(
                "GEM-1",
                f"body is a JSON array of {len(payload)} chunk(s): streamGenerateContent "
                "was requested without alt=sse",
            )
            return
        if not isinstance(payload, dict):
            findings.add("GEM-7", f"body is a JSON {type(payload).__name__}, not an object")
            return
        if payload.get("error") is not None:
            return  # HTTP-5, reported by the caller
        v = GeminiValidator()
        v.check_response(payload, findings)
        if v.state is not State.FINISHED:
            findings.add(
                "GEM-8",
                "response has neither a finishReason on every candidate nor a blockReason",
                severity=Severity.WARNING,
            )

    def error_of(self, payload: Any) -> str | None:
        if isinstance(payload, list):  # an alt-less stream, or Google's array error body
            for item in payload:
                message = self.error_of(item)
                if message is not None:
                    return message
            return None
        if not isinstance(payload, dict):
            return None
        return _error_message(payload.get("error"))

    # --- rewriting ----------------------------------------------------------------------------

    def request_model(self, path: str, body: Any) -> str | None:
        m = _METHOD_PATH.search(path)
        return unquote(m.group("model")) if m else None

    def set_request_model(self, path: str, body: Any, model: str) -> tuple[str, Any]:
        """Put `model` into the path (percent-encoded); the body is unchanged."""
        m = _METHOD_PATH.search(path)
        if m is None:
            raise ValueError(f"no Gemini model in path {path!r}")
        segment = quote(model.removeprefix("models/"), safe="@")
        return path[: m.start("model")] + segment + path[m.end("model") :], body

    def request_tools(self, body: Any) -> list[ToolInfo]:
        tools = body.get("tools") if isinstance(body, dict) else None
        if not isinstance(tools, list):
            return []
        out: list[ToolInfo] = []
        for tool in tools:
            if not isinstance(tool, dict):
                continue
            for key, value in tool.items():
                if key not in _DECLARATIONS:
                    out.append(ToolInfo(name=key, schema=value, kind=key))
                    continue
                for decl in value if isinstance(value, list) else ():
                    if isinstance(decl, dict) and isinstance(decl.get("name"), str):
                        schema = next((decl[k] for k in _SCHEMAS if k in decl), None)
                        out.append(ToolInfo(name=decl["name"], schema=schema))
        return out

    def restamp(self, payload: Any, model: str) -> list[Edit]:
        """Set ``modelVersion`` where the chunk or body carries one."""
        if isinstance(payload, list):
            return [
                Edit((i, *e.path), e.value)
                for i, item in enumerate(payload)
                for e in self.restamp(item, model)
            ]
        if not isinstance(payload, dict) or "modelVersion" not in payload:
            return []
        if payload["modelVersion"] == model:
            return []
        return [Edit(("modelVersion",), model)]

    def rename_tools(self, payload: Any, names: Mapping[str, str]) -> list[Edit]:
        """Map ``candidates[].content.parts[].functionCall.name``."""
        if isinstance(payload, list):
            return [
                Edit((i, *e.path), e.value)
                for i, item in enumerate(payload)
                for e in self.rename_tools(item, names)
            ]
        if not isinstance(payload, dict) or not isinstance(payload.get("candidates"), list):
            return []
        edits: list[Edit] = []
        for ci, cand in enumerate(payload["candidates"]):
            content = cand.get("content") if isinstance(cand, dict) else None
            parts = content.get("parts") if isinstance(content, dict) else None
            for pi, part in enumerate(parts if isinstance(parts, list) else ()):
                call = part.get("functionCall") if isinstance(part, dict) else None
                if not isinstance(call, dict):
                    continue
                name = call.get("name")
                if isinstance(name, str) and names.get(name, name) != name:
                    path = ("candidates", ci, "content", "parts", pi, "functionCall", "name")
                    edits.append(Edit(path, names[name]))
        return edits

    # --- commit gate and synthesis ------------------------------------------------------------

    def is_content(self, ev: Event, payload: Any) -> bool:
        """A chunk with output parts, a finishReason or a blocked prompt commits; usage-only,
        empty-text and error chunks do not."""
        if not isinstance(payload, dict) or payload.get("error") is not None:
            return False
        feedback = payload.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            return True
        candidates = payload.get("candidates")
        for cand in candidates if isinstance(candidates, list) else ():
            if not isinstance(cand, dict):
                continue
            if cand.get("finishReason"):
                return True
            content = cand.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            if isinstance(parts, list) and any(_is_output(p) for p in parts):
                return True
        return False

    def error_event(self, message: str, kind: str = "api_error") -> bytes:
        """``data: {"error":{…}}`` with CRLF, `error` first, so google-genai raises
        ClientError/ServerError."""
        status = status_of_kind(kind)
        return b"data: " + error_object(CODE_OF_STATUS[status], message, status) + b"\r\n\r\n"

    def error_body(self, status: int, message: str, kind: str = "api_error") -> bytes:
        """The same object with the HTTP status as `code` and its google.rpc status."""
        rpc = STATUS_OF_CODE.get(status)
        if rpc is None:
            by_kind = status_of_kind(kind)
            if CODE_OF_STATUS[by_kind] // 100 == status // 100:
                rpc = by_kind
            else:
                rpc = "FAILED_PRECONDITION" if 400 <= status < 500 else "INTERNAL"
        return error_object(status, message, rpc)

    def keepalive(self) -> bytes | None:
        """None: google-genai raises on a comment line and js-genai drops the next block."""
        return None

    def converter(self) -> Converter:
        from mitmllm.protocol.convert.gemini import CONVERTER  # loaded only when translating

        return CONVERTER

    # --- for humans ---------------------------------------------------------------------------

    def assemble(self, payloads: Iterable[tuple[Event, Any]]) -> Assembled:
        out = Assembled()
        last: dict[int, Block] = {}  # candidate index -> its latest block, for merging text
        finishes: dict[int, str] = {}
        for _ev, payload in payloads:
            if not isinstance(payload, dict):
                continue
            if payload.get("error") is not None:
                out.error = _error_message(payload["error"])
                continue
            if isinstance(payload.get("responseId"), str):
                out.id = out.id or payload["responseId"]
            if isinstance(payload.get("modelVersion"), str):
                out.model = payload["modelVersion"]
            if isinstance(payload.get("usageMetadata"), dict):
                out.usage = dict(payload["usageMetadata"])
            feedback = payload.get("promptFeedback")
            if isinstance(feedback, dict) and isinstance(feedback.get("blockReason"), str):
                out.stop_reason = feedback["blockReason"]
            candidates = payload.get("candidates")
            for cand in candidates if isinstance(candidates, list) else ():
                if not isinstance(cand, dict):
                    continue
                index = cand.get("index", 0)
                index = index if type(index) is int else 0
                if isinstance(cand.get("finishReason"), str):
                    finishes[index] = cand["finishReason"]
                content = cand.get("content")
                parts = content.get("parts") if isinstance(content, dict) else None
                for part in parts if isinstance(parts, list) else ():
                    block = _block_of(part, index)
                    if block is None:
                        continue
                    prev = last.get(index)
                    if (
                        block.kind in ("text", "thinking")
                        and prev is not None
                        and prev.kind == block.kind
                    ):
                        prev.text += block.text
                        continue
                    out.blocks.append(block)
                    last[index] = block
        if finishes:
            out.stop_reason = finishes.get(0, next(iter(finishes.values())))
        return out

    def summarize(self, ev: Event, payload: Any) -> str:
        if payload is NO_DATA:
            if ev.is_comment:
                return f"comment {_comment(ev)}"
            if ev.event is not None:
                return f"event {ev.event!r} without data"
            return "blank line" if ev.raw in (b"\r\n", b"\n", b"\r") else "non-data line"
        if payload is INVALID:
            data = (ev.data or "").strip()
            return "[DONE]" if data == "[DONE]" else f"invalid JSON {data[:30]!r}"
        if not isinstance(payload, dict):
            return f"JSON {type(payload).__name__}"
        err = payload.get("error")
        if err is not None:
            words = ["error"]
            if isinstance(err, dict):
                words += [str(err[k]) for k in ("status", "code") if err.get(k) is not None]
            words.append(_preview(_error_message(err) or "", 40))
            return " ".join(words)
        items: list[str] = []
        candidates = payload.get("candidates")
        for cand in candidates if isinstance(candidates, list) else ():
            if not isinstance(cand, dict):
                continue
            index = cand.get("index", 0)
            tag = f" #{index}" if index else ""
            content = cand.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else ():
                items.append(_summarize_part(part) + tag)
            if cand.get("finishReason"):
                items.append(f"finish {cand['finishReason']}{tag}")
        feedback = payload.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            items.append(f"blocked {feedback['blockReason']}")
        items = [i for i in items if i]
        if not items:
            usage = payload.get("usageMetadata")
            if isinstance(usage, dict):
                return f"usage {usage.get('totalTokenCount', '?')} tokens"
            return "empty chunk"
        return ", ".join(items)


def _block_of(part: Any, index: int) -> Block | None:
    """The reassembled block for one part (None for empty text and signature-only parts)."""
    if not isinstance(part, dict):
        return None
    call = part.get("functionCall")
    if isinstance(call, dict):
        args = call.get("args")
        return Block(
            kind="tool_call",
            name=call.get("name"),
            id=call.get("id"),
            input=args if isinstance(args, dict) else None,
            text=json.dumps(args if args is not None else {}, ensure_ascii=False),
            choice=index,
        )
    text = part.get("text")
    if isinstance(text, str):
        if not text:
            return None
        return Block(kind="thinking" if part.get("thought") else "text", text=text, choice=index)
    for key in (
        "executableCode",
        "codeExecutionResult",
        "inlineData",
        "fileData",
        "functionResponse",
    ):
        if key in part:
            value = part[key]
            detail = ""
            if isinstance(value, dict):
                detail = str(
                    value.get("code") or value.get("output") or value.get("mimeType") or ""
                )
            return Block(kind="other", name=key, text=detail, choice=index)
    return None


def _summarize_part(part: Any) -> str:
    if not isinstance(part, dict):
        return "part?"
    call = part.get("functionCall")
    if isinstance(call, dict):
        return f"function_call {call.get('name')}"
    text = part.get("text")
    if isinstance(text, str):
        if not text:
            return "signature" if "thoughtSignature" in part else ""
        return f"{'thought' if part.get('thought') else 'text'} {_preview(text)}"
    keys = [k for k in part if k != "thoughtSignature"]
    return keys[0] if keys else "signature"


def _either(obj: Any, camel: str, snake: str) -> Any:
    # Gemini's REST API accepts proto JSON field names in both spellings.
    if not isinstance(obj, dict):
        return None
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


DIALECT = GeminiDialect()
