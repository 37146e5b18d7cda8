"""Anthropic Messages (``POST …/v1/messages``): recognition, stream grammar, rewrites, synthesis.

Wire format
-----------
A streamed response is a sequence of named events whose data is a JSON object with the same
``type`` (the SDKs dispatch on the name, and build the event from the data)::

    stream = ping* message_start ( ping | block )* message_delta+ message_stop
    block  = content_block_start ( ping | content_block_delta )* content_block_stop
    error  = may replace the rest of the stream at any point; it is terminal

Block indices count the ``content_block_start`` events from 0, one block is open at a time, and
each delta's type belongs to its block's type (`BLOCK_DELTAS`). ``message_delta`` carries the
stop reason and cumulative usage; ``message_stop`` is the success terminator.

States of `MessageStreamValidator` (one per stream; its `TRANSITIONS` table is the ordering
rules ANT-4, 5, 16, 18 and 19)::

    START ─message_start─► MESSAGE ─message_delta─► DELTA ─message_stop─► DONE
      any state ─error─► FAILED          message_start again ─► MESSAGE (ANT-5)

Blocks have their own two states, open and stopped: one block is open at a time (ANT-9),
deltas go to the open one (ANT-10), and none is open when the message ends (ANT-14).

Rules (ids from the rule registry; sse-rules.md §4):

* naming:    ANT-1 every event is named, ANT-2 name == data.type, ANT-3 names/types are known
* envelope:  ANT-4 message_start first, ANT-5 only one, ANT-6 its message is empty and complete
* blocks:    ANT-7 indices 0, 1, 2 …; ANT-8 known types that start empty; ANT-9 one open at a
             time; ANT-10 deltas target the open block; ANT-11 delta type fits the block;
             ANT-12 tool input JSON is an object (warning when the output was cut by a token
             limit, which only message_delta tells, so the verdict waits for it); ANT-13 a
             thinking block is signed; ANT-15 stops name the open block once; ANT-22 empty
             text blocks (info)
* ending:    ANT-14 no block left open, ANT-16 message_delta after the blocks with stop_reason
             and usage, ANT-17 stop_reason agrees with the content, ANT-18 exactly one
             message_stop (missing: truncated, reported at close), ANT-19 nothing after it
* failure:   ANT-20 an in-band error event
* framing:   SSE-13 a dataless ``event: ping`` is only a warning (the SDKs skip pings)

Events the SDKs never see are not fed to the state machine: nameless events and events with an
unknown name are dropped by their dispatch, and dataless or unparsable ones fail before it.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from typing import TypeGuard

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
from mitmllm.protocol.payload import json_text
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.repair import Mender
from mitmllm.protocol.repair import Pair
from mitmllm.protocol.repair import renumbered
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.sse import Event
from mitmllm.protocol.sse import encode
from mitmllm.protocol.toolspec import Note
from mitmllm.protocol.toolspec import ToolSpec
from mitmllm.protocol.toolspec import each_tool

if TYPE_CHECKING:
    from mitmllm.protocol.conversation import Converter

# --- the vocabulary -----------------------------------------------------------------------------

#: Event names the SDKs dispatch (anything else is dropped by them).
EVENT_TYPES = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    }
)

_TEXT = frozenset({"text_delta", "citations_delta"})
_TOOL = frozenset({"input_json_delta"})
_THINKING = frozenset({"thinking_delta", "signature_delta"})
_NONE: frozenset[str] = frozenset()

#: Known content block types (GA and beta) and the delta types each accepts (ANT-8, ANT-11).
BLOCK_DELTAS: dict[str, frozenset[str]] = {
    "text": _TEXT,
    "thinking": _THINKING,
    "redacted_thinking": _NONE,
    "tool_use": _TOOL,
    "server_tool_use": _TOOL,
    "mcp_tool_use": _TOOL,
    "compaction": frozenset({"compaction_delta"}),
    "web_search_tool_result": _NONE,
    "web_fetch_tool_result": _NONE,
    "code_execution_tool_result": _NONE,
    "bash_code_execution_tool_result": _NONE,
    "text_editor_code_execution_tool_result": _NONE,
    "tool_search_tool_result": _NONE,
    "container_upload": _NONE,
    "mcp_tool_result": _NONE,
    "advisor_tool_result": _NONE,
    "fallback": _NONE,
}
DELTA_TYPES = frozenset().union(*BLOCK_DELTAS.values())

#: Blocks whose input is streamed as partial JSON (ANT-12) and that are tool calls for humans.
TOOL_INPUT_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})

#: Blocks that start empty and are filled by deltas: the field that must start empty (ANT-8).
_EMPTY_START = {"text": "text", "thinking": "thinking"}

STOP_REASONS = frozenset(
    {
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
        "model_context_window_exceeded",
        "compaction",
    }
)
#: Stop reasons that cut the output short, so a tool call's JSON may legitimately be unfinished.
TRUNCATING_STOP_REASONS = frozenset({"max_tokens", "model_context_window_exceeded"})

ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "timeout_error",
        "overloaded_error",
        "api_error",
        "billing_error",
    }
)

_PING = encode('{"type": "ping"}', event="ping")


def _is_int(value: Any) -> TypeGuard[int]:
    return type(value) is int  # not bool


def _is_count(value: Any) -> TypeGuard[int | float]:
    """A token count: an integer. orjson reads an integer literal beyond 64 bits as a float,
    which the SDKs' models still take as an int, so an integral float that large is one too."""
    return type(value) is int or (
        type(value) is float and value.is_integer() and abs(value) >= 2.0**63
    )


def _index_text(value: Any) -> str:
    return "no index" if value is None else f"index {value!r}"


# --- the stream state machine -------------------------------------------------------------------


class _Block:
    """One content block of the message being streamed: what later rules need to know."""

    __slots__ = ("index", "type", "parts", "has_text", "signed", "stopped", "event", "offset")

    def __init__(self, index: int, type: str | None, event: int, offset: int) -> None:
        self.index = index
        self.type = type
        # partial_json fragments of a tool block, joined and checked at its stop (ANT-12)
        self.parts: list[str] | None = [] if type in TOOL_INPUT_BLOCKS else None
        self.has_text = False
        self.signed = False
        self.stopped = False
        self.event = event
        self.offset = offset

    def __repr__(self) -> str:
        return f"{self.type} block {self.index}"


class State(StrEnum):
    """Where a message stream is (blocks keep their own open/stopped state, see `_Block`)."""

    START = "start"  # nothing but pings yet
    MESSAGE = "message"  # message_start seen (or content came first, ANT-4): blocks stream
    DELTA = "delta"  # message_delta seen: only more message_deltas and message_stop belong
    DONE = "done"  # message_stop seen
    FAILED = "failed"  # an error event: the SDKs raised there and read no further


_BLOCK_EVENTS = ("content_block_start", "content_block_delta", "content_block_stop")
_AFTER_STOP = Step(breaks="ANT-19", detail="{kind} after message_stop", judge=False)
#: A second message_start starts the message over (ANT-5, worded by its handler).
_RESTART = Step(State.MESSAGE, "ANT-5")
_FAIL = Step(State.FAILED)


class MessageStreamValidator(StreamValidator):
    """The Anthropic Messages stream grammar (see the module docstring)."""

    TRANSITIONS = {
        State.START: {
            "message_start": Step(State.MESSAGE),
            **dict.fromkeys(
                _BLOCK_EVENTS, Step(State.MESSAGE, "ANT-4", "{kind} before message_start")
            ),
            "message_delta": Step(State.DELTA, "ANT-4", "{kind} before message_start"),
            "message_stop": Step(State.DONE, "ANT-4", "{kind} before message_start"),
            "error": _FAIL,
        },
        State.MESSAGE: {
            "message_start": _RESTART,
            "message_delta": Step(State.DELTA),
            "message_stop": Step(State.DONE),
            "error": _FAIL,
        },
        State.DELTA: {
            "message_start": _RESTART,
            # late block events: worded once by the handlers (ANT-16)
            **dict.fromkeys(_BLOCK_EVENTS, Step(breaks="ANT-16")),
            "message_stop": Step(State.DONE),
            "error": _FAIL,
        },
        State.DONE: {
            "message_start": _RESTART,
            **dict.fromkeys((*_BLOCK_EVENTS, "message_delta"), _AFTER_STOP),
            "message_stop": Step(breaks="ANT-18", detail="second message_stop", judge=False),
            "error": _FAIL,
        },
        State.FAILED: {"error": Step(), "*": Step(judge=False)},
    }

    #: Where the last delta's partial_json went (a tool block's fragments), or None: bound by
    #: every content_block_delta, read right after it (`steady_sink`).
    CONTEXT = (*StreamValidator.CONTEXT, "_delta_sink")

    def __init__(self) -> None:
        super().__init__()
        self.state = State.START
        self._unknown: set[str] = set()  # unknown names/types already reported (ANT-3)
        self._delta_sink: list[str] | None = None
        self._start_event: int | None = None
        self._reset_message()

    def _reset_message(self) -> None:
        self._blocks: dict[int, _Block] = {}
        # started and not stopped, oldest first; [-1] is "the open block"
        self._open: list[_Block] = []
        self._next_index = 0
        self._deltas = 0  # message_delta events seen
        self._late_block_reported = False  # ANT-16 for block events after message_delta
        self._stop_reason: Any = None  # the last message_delta's stop_reason (SDKs overwrite it)
        self._output_tokens: int | float | None = None
        self._tool_uses = 0
        self._text_seen = False
        self._pending_json: list[tuple[str, int | None, int | None]] = []  # ANT-12 awaiting
        self.finish = None
        self.complete = False

    # --- classification ------------------------------------------------------------------------

    def classify(self, ev: Event, payload: Any) -> str | None:
        if payload is NO_DATA or payload is INVALID:
            return None  # comments and blanks, or SSE-13 / PAY-1 already reported
        name = ev.event
        if name is None:
            what = payload.get("type") if type(payload) is dict else None
            self.report("ANT-1", f"data event without an event: name (data.type {what!r})")
            return None
        if type(payload) is not dict:
            what = type(payload).__name__
            self.report("ANT-2", f"event {name!r} carries a JSON {what}, not an object")
            return None
        kind = payload.get("type")
        if kind != name:
            if isinstance(kind, str):
                self.report("ANT-2", f"event {name!r} carries data.type {kind!r}")
            else:
                self.report("ANT-2", f"event {name!r} has no string data.type")
                kind = name
            if name not in EVENT_TYPES:
                self._report_unknown(name)
                return None
        if kind not in self.HANDLERS:
            self._report_unknown(kind)
            return None
        return kind  # type: ignore[no-any-return]

    def _report_unknown(self, kind: str) -> None:
        if kind not in self._unknown:
            self._unknown.add(kind)
            self.report("ANT-3", f"unknown event type {kind!r}")

    # --- handlers ------------------------------------------------------------------------------

    def _ping(self, ev: Event, payload: dict[str, Any]) -> None:
        """ANT-21: pings may appear anywhere and mean nothing."""

    def _message_start(self, ev: Event, payload: dict[str, Any]) -> None:
        # A message_start after ANT-4 (content came first) is the first one: no ANT-5.
        if self.breach is not None and self._start_event is not None:
            first = f" (first at event {self._start_event})"
            self.report("ANT-5", f"second message_start{first}")
            self._reset_message()  # judge the new attempt on its own
        self._start_event = ev.index
        message = payload.get("message")
        if isinstance(message, dict) and isinstance(message.get("usage"), dict):
            self.usage = dict(message["usage"])  # input and cache counts; output grows later
        problems = _message_start_problems(message)
        if problems:
            self.report("ANT-6", "message_start.message: " + "; ".join(problems))
        if isinstance(message, dict) and isinstance(message.get("model"), str):
            self.model = message["model"]

    def _block_start(self, ev: Event, payload: dict[str, Any]) -> None:
        self._late_block_event("content_block_start")
        index = payload.get("index")
        if not _is_int(index):
            self.report("ANT-7", f"content_block_start with {_index_text(index)}")
            return
        if index != self._next_index:
            self.report("ANT-7", f"content_block_start index {index}, expected {self._next_index}")
        self._next_index = max(self._next_index, index + 1)
        if self._open:
            self.report("ANT-9", f"block {index} starts while {self._open[-1]!r} is still open")
        content = payload.get("content_block")
        btype = content.get("type") if isinstance(content, dict) else None
        if not isinstance(content, dict):
            self.report("ANT-8", f"content_block_start {index} has no content_block object")
        elif btype not in BLOCK_DELTAS:
            self.report("ANT-8", f"unknown content block type {btype!r} at index {index}")
        else:
            problem = _start_problem(btype, content)
            if problem:
                self.report("ANT-8", f"{btype} block {index} {problem}")
        block = _Block(index, btype if isinstance(btype, str) else None, ev.index, ev.offset)
        self._blocks[index] = block
        self._open.append(block)
        if btype == "tool_use":
            self._tool_uses += 1

    def steady_sink(self) -> list[str] | None:
        """A tool block's partial_json fragments, when the last delta added one (a text
        delta's text is read only for being empty: None)."""
        return self._delta_sink

    def _block_delta(self, ev: Event, payload: dict[str, Any]) -> None:
        self._delta_sink = None
        self._late_block_event("content_block_delta")
        index = payload.get("index")
        block = self._blocks.get(index) if _is_int(index) else None
        if block is None:
            self.report("ANT-10", f"delta for block {index!r}, which was never started")
            return
        if not self._open or block is not self._open[-1]:
            if block.stopped:
                what = "after its content_block_stop"
            elif self._open:
                what = f"while {self._open[-1]!r} is the open block"
            else:
                what = "after message_delta closed it"
            self.report("ANT-10", f"delta for block {index} {what}")
        delta = payload.get("delta")
        dtype = delta.get("type") if isinstance(delta, dict) else None
        if not isinstance(delta, dict) or not isinstance(dtype, str):
            self.report("ANT-11", f"delta for block {index} has no delta type")
            return
        if dtype not in DELTA_TYPES:
            self._report_unknown(dtype)
            return
        allowed = BLOCK_DELTAS.get(block.type) if block.type is not None else None
        if allowed is not None and dtype not in allowed:
            self.report("ANT-11", f"{dtype} for {block!r}")
            return
        if dtype == "text_delta":
            if delta.get("text"):
                block.has_text = True
                self._text_seen = True
        elif dtype == "input_json_delta":
            fragment = delta.get("partial_json")
            if not isinstance(fragment, str):
                what = type(fragment).__name__
                self.report("ANT-12", f"partial_json of {block!r} is a {what}, not a string")
            elif block.parts is not None:
                block.parts.append(fragment)
                self._delta_sink = block.parts
        elif dtype == "signature_delta":
            block.signed = True

    def _block_stop(self, ev: Event, payload: dict[str, Any]) -> None:
        index = payload.get("index")
        block = self._blocks.get(index) if _is_int(index) else None
        if block is None:
            self.report(
                "ANT-15", f"content_block_stop for block {index!r}, which was never started"
            )
            return
        if block.stopped:
            self.report("ANT-15", f"second content_block_stop for block {index}")
            return
        self._late_block_event("content_block_stop")
        block.stopped = True
        if block in self._open:
            self._open.remove(block)  # almost always the last one: O(1)
        self._judge_block(block)

    def _message_delta(self, ev: Event, payload: dict[str, Any]) -> None:
        self._close_open_blocks("message_delta")
        self._deltas += 1
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            self.report("ANT-16", "message_delta has no delta object")
        else:
            reason = self._stop_reason = delta.get("stop_reason")
            if reason is not None:
                self._check_stop_reason(reason, delta.get("stop_sequence"))
        usage = payload.get("usage")
        if isinstance(usage, dict):  # cumulative counts
            self.usage = (self.usage or {}) | {k: v for k, v in usage.items() if v is not None}
        tokens = usage.get("output_tokens") if isinstance(usage, dict) else None
        if not _is_count(tokens):
            what = "no usage object" if not isinstance(usage, dict) else "no integer output_tokens"
            self.report("ANT-16", f"message_delta has {what}")
        else:
            if self._output_tokens is not None and tokens < self._output_tokens:
                self.report(
                    "ANT-16",
                    f"usage.output_tokens went down from {self._output_tokens} to {tokens} "
                    "(counts are cumulative)",
                )
            self._output_tokens = tokens

    def _message_stop(self, ev: Event, payload: dict[str, Any]) -> None:
        self._close_open_blocks("message_stop")
        if not self._deltas:
            self.report("ANT-16", "message_stop without a message_delta (no stop_reason, no usage)")
        elif self._stop_reason is None:
            self.report("ANT-16", "the last message_delta has stop_reason null")
        self._check_consistency()
        self._flush_json()
        self.complete = True

    def _error(self, ev: Event, payload: dict[str, Any]) -> None:
        err = payload.get("error")
        kind = err.get("type") if isinstance(err, dict) else None
        message = _error_message(payload) or "(no message)"
        self.error = message
        head = f"error event {kind}" if isinstance(kind, str) else "error event"
        self.report("ANT-20", f"{head}: {message[:200]}")

    HANDLERS = {
        "message_start": _message_start,
        "content_block_start": _block_start,
        "content_block_delta": _block_delta,
        "content_block_stop": _block_stop,
        "message_delta": _message_delta,
        "message_stop": _message_stop,
        "ping": _ping,
        "error": _error,
    }

    # --- checks shared by handlers -------------------------------------------------------------

    def _late_block_event(self, kind: str) -> None:
        """ANT-16 (from the table): a block event after message_delta, reported once."""
        if self.breach is not None and not self._late_block_reported:
            self._late_block_reported = True
            self.report("ANT-16", f"{kind} after message_delta")

    def _close_open_blocks(self, kind: str) -> None:
        """ANT-14: the message ends (message_delta/stop) with blocks still open."""
        if not self._open:
            return
        names = ", ".join(repr(b) for b in self._open)
        self.report("ANT-14", f"{kind} while {names} is open")
        for block in self._open:
            if block.parts:  # an unfinished tool call is judged like a stopped one (ANT-12)
                self._judge_json(block)
        self._open.clear()

    def _judge_block(self, block: _Block) -> None:
        if block.parts is not None:
            self._judge_json(block)
        elif block.type == "thinking" and not block.signed:
            self.report("ANT-13", f"{block!r} stops without a signature_delta")
        elif block.type == "text" and not block.has_text:
            self.report("ANT-22", f"{block!r} is empty", event=block.event, offset=block.offset)

    def _judge_json(self, block: _Block) -> None:
        parts, block.parts = block.parts, None  # judged once; free the fragments
        text = "".join(parts) if parts else ""
        if not text:
            return  # both SDKs read an empty buffer as {}
        value, _ = parse_json(text)
        if type(value) is dict:
            return
        what = "is not JSON" if value is INVALID else f"is a JSON {type(value).__name__}"
        detail = f"input of {block!r} {what}: {text[:80]!r}"
        if self._stop_reason is None:
            self._pending_json.append((detail, self.event, self.offset))
        else:
            self.report("ANT-12", detail, self._json_severity())

    def _json_severity(self) -> Severity:
        if self._stop_reason in TRUNCATING_STOP_REASONS:
            return Severity.WARNING
        return Severity.ERROR

    def _flush_json(self) -> None:
        severity = self._json_severity()
        for detail, index, offset in self._pending_json:
            self.report("ANT-12", detail, severity, event=index, offset=offset)
        self._pending_json.clear()

    def _check_stop_reason(self, reason: Any, sequence: Any) -> None:
        if not isinstance(reason, str):
            self.report("ANT-16", f"stop_reason {reason!r} is not a string")
            return
        self.finish = reason
        if reason not in STOP_REASONS:
            self.report("ANT-16", f"unknown stop_reason {reason!r}", Severity.WARNING)
        if reason == "stop_sequence":
            if not isinstance(sequence, str):
                self.report("ANT-16", f"stop_reason stop_sequence with stop_sequence {sequence!r}")
        elif sequence is not None:
            self.report(
                "ANT-16",
                f"stop_sequence {sequence!r} with stop_reason {reason!r}",
                Severity.WARNING,
            )
        self._flush_json()

    def _check_consistency(self) -> None:
        """ANT-17: does the stop reason fit what was streamed?"""
        reason = self._stop_reason
        if reason == "tool_use" and not self._tool_uses:
            self.report("ANT-17", "stop_reason tool_use but the message has no tool_use block")
        elif reason == "end_turn" and self._tool_uses:
            self.report(
                "ANT-17",
                f"stop_reason end_turn after {self._tool_uses} tool_use block(s)",
                Severity.INFO,
            )
        elif reason == "refusal" and self._text_seen:
            self.report("ANT-17", "stop_reason refusal with non-empty text", Severity.INFO)

    # --- end of stream -------------------------------------------------------------------------

    def on_close(self, findings: Findings, *, end_offset: int, events: int) -> None:
        self.findings, self.event, self.offset = findings, None, end_offset
        if self.state is State.FAILED:
            return  # ANT-20 said it: a failed stream, not a truncated one
        if not self.complete:
            if self.state is State.START:
                where = "no message_start either"
            elif self._open:
                where = f"inside {self._open[-1]!r}"
            elif self._deltas:
                where = "after message_delta"
            else:
                where = f"after {len(self._blocks)} block(s), before message_delta"
            self.report("ANT-18", f"stream ended without message_stop ({where}): truncated")
        self._flush_json()


# --- repairs ------------------------------------------------------------------------------------

_MESSAGE_STOP = '{"type":"message_stop"}'


class MessageStreamMender(Mender):
    """The repairs that answer the Anthropic rules (see `mitmllm.protocol.repair`).

    * FIX-7 (ANT-5): a message_start is held (with the pings after it) until the next event; if
      that is another message_start, a retried attempt started over before any content, and the
      first one is dropped.
    * FIX-6 (ANT-7, and ANT-10/15 for the events that name a block): block indices are given in
      the order blocks start, 0, 1, 2 ...; deltas and stops follow their block.
    * FIX-8 (ANT-14): blocks still open when a message_delta carries a stop_reason are stopped
      just before it.
    * FIX-9 (ANT-18): a stream that ends after such a message_delta gets its message_stop.
    """

    def __init__(self) -> None:
        super().__init__()
        self._held: list[Pair] = []  # a message_start and the pings after it
        self._started = False  # a message_start was held or sent
        self._reset()

    def _reset(self) -> None:
        """A message starts: its blocks are numbered on their own (as the SDKs and the
        validator read a second message)."""
        self._index: dict[int, int] = {}  # upstream block index -> the client's
        self._next = 0
        self._open: list[int] = []  # the client's indices of blocks not stopped yet
        self._final = False  # a message_delta carried a stop_reason
        self._ended = False  # message_stop or an error came

    def feed(self, ev: Event, payload: Any) -> list[Pair]:
        kind = payload.get("type") if type(payload) is dict else None
        name = ev.event
        if not isinstance(kind, str) or (
            name is not None and kind != name and name not in EVENT_TYPES
        ):
            return [*self._release(), (ev, payload)]  # not an event the SDKs act on
        if name is None:  # dropped by the SDKs (ANT-1), but it keeps naming the block it named
            if kind in ("content_block_delta", "content_block_stop"):
                return [*self._release(), self._follow(ev, payload, False)]
            return [*self._release(), (ev, payload)]
        # with a name that is not its type (ANT-2), the SDKs act on the type, as the validator
        if kind == "message_start":
            if self._held:
                dropped = self._held[0][0]
                self.fix(
                    "FIX-7",
                    f"message_start at event {dropped.index} dropped: another one followed "
                    "before any content (a retried attempt)",
                    dropped,
                )
                out, self._held = self._held[1:], [(ev, payload)]
                return out
            if not self._started:
                self._started = True
                self._held = [(ev, payload)]
                return []
            self._reset()
            return [(ev, payload)]  # after content: ANT-5 stays
        if kind == "ping" and self._held:
            self._held.append((ev, payload))
            return []
        out = self._release()
        if kind == "content_block_start":
            out += self._block_start(ev, payload)
        elif kind in ("content_block_delta", "content_block_stop"):
            out.append(self._follow(ev, payload, kind == "content_block_stop"))
        elif kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self._final = True
                out += self._stop_open(ev)
            out.append((ev, payload))
        else:
            if kind in ("message_stop", "error"):
                self._ended = True
            out.append((ev, payload))
        return out

    def close(self) -> list[Pair]:
        out = self._release()
        if self._final and not self._ended:
            self.fix(
                "FIX-9",
                "message_stop added: the stream ended after message_delta carried its "
                "stop_reason" + self.tail_note(),
            )
            out.append(self.make(_MESSAGE_STOP, event="message_stop"))
        return out

    def held(self) -> list[Pair]:
        return self._release()

    def _release(self) -> list[Pair]:
        out, self._held = self._held, []
        return out

    def _block_start(self, ev: Event, payload: dict[str, Any]) -> list[Pair]:
        index = payload.get("index")
        if not _is_int(index):
            return [(ev, payload)]
        mine = self._next
        self._next += 1
        self._index[index] = mine
        self._open.append(mine)
        if index == mine:
            return [(ev, payload)]
        self.fix("FIX-6", f"block index {index} renumbered to {mine}; its deltas and stop follow")
        return [self.edit(ev, payload, ("index",), mine)]

    def _follow(self, ev: Event, payload: dict[str, Any], stop: bool) -> Pair:
        index = payload.get("index")
        if not _is_int(index):
            return ev, payload
        # a block never started stays one (ANT-10/15), also where its number is now taken
        mine = renumbered(self._index, index, self._next)
        if stop and mine in self._open:
            self._open.remove(mine)
        if index == mine:
            return ev, payload
        return self.edit(ev, payload, ("index",), mine)

    def _stop_open(self, ev: Event) -> list[Pair]:
        out = []
        for index in self._open:
            self.fix("FIX-8", f"block {index} stopped before the final message_delta", ev)
            data = f'{{"type":"content_block_stop","index":{index}}}'
            out.append(self.make(data, event="content_block_stop"))
        self._open.clear()
        return out


def _message_start_problems(message: Any) -> list[str]:
    """ANT-6: how message_start.message differs from an empty assistant message."""
    if not isinstance(message, dict):
        return ["missing or not an object"]
    problems = []
    if message.get("type") != "message":
        problems.append(f"type is {message.get('type')!r}, not 'message'")
    if message.get("role") != "assistant":
        problems.append(f"role is {message.get('role')!r}, not 'assistant'")
    content = message.get("content")
    if not isinstance(content, list):
        problems.append("content is not a list")
    elif content:
        problems.append(f"content has {len(content)} block(s) instead of none")
    for key in ("stop_reason", "stop_sequence"):
        if message.get(key) is not None:
            problems.append(f"{key} is {message[key]!r}, not null")
    for key in ("id", "model"):
        value = message.get(key)
        if not isinstance(value, str) or not value:
            problems.append(f"{key} is missing or empty")
    usage = message.get("usage")
    if not isinstance(usage, dict):
        problems.append("usage is missing")
    else:
        problems.extend(
            f"usage.{key} is not an integer"
            for key in ("input_tokens", "output_tokens")
            if not _is_count(usage.get(key))
        )
    return problems


def _start_problem(btype: str, content: dict[str, Any]) -> str | None:
    """ANT-8: a block that is filled by deltas must start empty."""
    field = _EMPTY_START.get(btype)
    if field is not None and content.get(field):
        return f"starts with non-empty {field}"
    if btype in TOOL_INPUT_BLOCKS and content.get("input"):
        return "starts with a non-empty input (deltas replace it)"
    return None


def _error_message(payload: Any) -> str | None:
    """The message of an Anthropic error object (``{"type":"error","error":{…}}``), or of the
    looser ``{"error": …}`` objects gateways send in its place."""
    if not isinstance(payload, dict):
        return None
    err = payload.get("error")
    if payload.get("type") != "error" and (err is None or "type" in payload):
        return None
    if isinstance(err, dict):
        message = err.get("message")
        if isinstance(message, str):
            return message
        kind = err.get("type")
        return kind if isinstance(kind, str) else json_text(err)
    if isinstance(err, str):
        return err
    message = payload.get("message")
    return message if isinstance(message, str) else "error"


# --- the dialect --------------------------------------------------------------------------------


class AnthropicDialect(Dialect):
    """Anthropic Messages: ``POST …/v1/messages`` with ``"stream": true`` in the body."""

    name = "anthropic"
    # MessageStreamValidator._block_delta reads the texts only for being empty (has_text), and
    # keeps a tool block's partial_json fragments (steady_sink)
    steady_paths = (("delta", "text"), ("delta", "thinking"), ("delta", "partial_json"))
    title = "Anthropic Messages"
    sentinel = None
    usage_fields: ClassVar[dict[str, str]] = {
        "input": "input_tokens",
        "output": "output_tokens",
        "cache_read": "cache_read_input_tokens",
        "cache_write": "cache_creation_input_tokens",
    }
    default_auth = "x-api-key"
    own_headers = ("anthropic-",)  # anthropic-version, anthropic-beta, ...
    # The API answers 400 without a version; the one every SDK sends.
    required_headers: ClassVar[dict[str, str]] = {"anthropic-version": "2023-06-01"}
    prompt_fields = ("system", "messages", "tools")
    native_flavour = "anthropic"

    # --- recognising requests ------------------------------------------------------------------

    def match_request(self, method: str, path: str, body: Any) -> bool:
        # a suffix match, so gateway prefixes (/anthropic/v1/messages) work; count_tokens differs
        return method.upper() == "POST" and path.rstrip("/").endswith("/v1/messages")

    def wants_stream(self, path: str, query: Mapping[str, str], body: Any) -> bool:
        return isinstance(body, dict) and body.get("stream") is True

    def match_payload(self, payload: Any, event_name: str | None) -> bool:
        kind = payload.get("type") if isinstance(payload, dict) else None
        if event_name == "error" or kind == "error":
            # Responses errors are flat and numbered; ours nest an error object
            return (
                isinstance(payload, dict)
                and isinstance(payload.get("error"), dict)
                and "sequence_number" not in payload
            )
        return event_name in EVENT_TYPES or kind in EVENT_TYPES

    def asks_thinking(self, body: dict[str, Any]) -> bool:
        """``thinking.type`` is ``enabled`` or ``adaptive``."""
        thinking = body.get("thinking")
        return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")

    # --- tools in requests ---------------------------------------------------------------------

    def tool_specs(self, body: dict[str, Any], note: Note) -> Iterator[ToolSpec]:
        """``tools[] {name, description, input_schema}``; server tools have a versioned type."""
        for tools, i, ptr, tool in each_tool(body, note):
            if tool.get("type") in (None, "custom"):
                yield ToolSpec(tools, i, ptr, tool, ptr, "input_schema")

    def tool_type_problem(self, index: int, tool: dict[str, Any]) -> str | None:
        if tool.get("type") != "custom":
            return None
        name = tool.get("name")
        label = repr(name) if isinstance(name, str) else f"#{index}"
        return f"tool {label} has type 'custom'"

    # --- validation ----------------------------------------------------------------------------

    def validator(self, request: Any = None) -> MessageStreamValidator:
        return MessageStreamValidator()

    def mender(self, request: Any = None) -> MessageStreamMender:
        return MessageStreamMender()

    def dataless_severity(self, ev: Event) -> Severity | None:
        if ev.event is None:
            return None  # an id/retry-only block: dispatched nameless, the SDKs drop it
        if ev.event == "ping" or ev.event not in EVENT_TYPES:
            return Severity.WARNING  # the SDKs skip pings and drop unknown names before parsing
        return Severity.ERROR

    def check_json_response(
        self, status: int, payload: Any, findings: Findings, request: Any = None
    ) -> None:
        """A non-streaming ``message``: block types, tool inputs, stop reason, usage."""
        if not 200 <= status < 300 or not isinstance(payload, dict):
            return
        if payload.get("type") != "message":
            return  # an error body (HTTP-5 covers a 200 one) or not ours
        content = payload.get("content")
        blocks = content if isinstance(content, list) else []
        if not isinstance(content, list):
            findings.add("ANT-6", "response message has no content list")
        tool_uses = 0
        for i, block in enumerate(blocks):
            btype = block.get("type") if isinstance(block, dict) else None
            if btype not in BLOCK_DELTAS:
                findings.add("ANT-8", f"content[{i}] has unknown type {btype!r}")
                continue
            if btype in TOOL_INPUT_BLOCKS:
                tool_uses += btype == "tool_use"
                if not isinstance(block.get("input"), dict):
                    what = type(block.get("input")).__name__
                    findings.add(
                        "ANT-12", f"content[{i}] {btype} {block.get('name')!r} input is a {what}"
                    )
            elif btype == "text" and not block.get("text"):
                findings.add("ANT-22", f"content[{i}] is an empty text block")
        reason = payload.get("stop_reason")
        if not isinstance(reason, str):
            findings.add("ANT-16", f"response message has stop_reason {reason!r}")
        elif reason not in STOP_REASONS:
            findings.add("ANT-16", f"unknown stop_reason {reason!r}", severity=Severity.WARNING)
        elif reason == "tool_use" and not tool_uses:
            findings.add("ANT-17", "stop_reason tool_use but the message has no tool_use block")
        usage = payload.get("usage")
        if not isinstance(usage, dict) or not _is_count(usage.get("output_tokens")):
            findings.add("ANT-16", "response message has no integer usage.output_tokens")

    def error_of(self, payload: Any) -> str | None:
        return _error_message(payload)

    # --- rewriting -----------------------------------------------------------------------------

    def request_tools(self, body: Any) -> list[ToolInfo]:
        tools = body.get("tools") if isinstance(body, dict) else None
        if not isinstance(tools, list):
            return []
        out = []
        for tool in tools:
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                continue
            kind = tool.get("type")
            # no type means a client ("custom") tool; server tools have a versioned type
            out.append(
                ToolInfo(
                    name=tool["name"],
                    schema=tool.get("input_schema"),
                    kind=kind if isinstance(kind, str) else "custom",
                )
            )
        return out

    def restamp(self, payload: Any, model: str) -> list[Edit]:
        """message_start.message.model in a stream; model in a non-streaming message."""
        if not isinstance(payload, dict):
            return []
        kind = payload.get("type")
        path: tuple[str, ...]
        if kind == "message_start":
            target, path = payload.get("message"), ("message", "model")
        elif kind == "message":
            target, path = payload, ("model",)
        else:
            return []
        if not isinstance(target, dict) or target.get("model") == model:
            return []
        return [Edit(path, model)]

    def rename_tools(self, payload: Any, names: Mapping[str, str]) -> list[Edit]:
        """Tool names in content_block_start blocks and in a non-streaming message's content."""
        if not names or not isinstance(payload, dict):
            return []
        kind = payload.get("type")
        if kind == "content_block_start":
            return _rename_block(payload.get("content_block"), names, ("content_block",))
        edits: list[Edit] = []
        if kind == "message" and isinstance(payload.get("content"), list):
            for i, block in enumerate(payload["content"]):
                edits += _rename_block(block, names, ("content", i))
        return edits

    # --- commit gate and synthesis -------------------------------------------------------------

    def is_content(self, ev: Event, payload: Any) -> bool:
        """True from the first event that carries output (or the finish); lifecycle frames,
        empty block starts and empty first deltas, errors and unknown events are not."""
        if not isinstance(payload, dict):
            return False
        kind = payload.get("type", ev.event)
        if kind == "content_block_delta":
            delta = payload.get("delta")
            if not isinstance(delta, dict):
                return False
            dtype = delta.get("type")
            if dtype == "text_delta":
                return bool(delta.get("text"))
            if dtype == "input_json_delta":
                return bool(delta.get("partial_json"))
            if dtype == "thinking_delta":
                return bool(delta.get("thinking"))
            return True
        if kind == "content_block_start":
            block = payload.get("content_block")
            if not isinstance(block, dict):
                return False
            btype = block.get("type")
            if btype in _EMPTY_START or btype in TOOL_INPUT_BLOCKS:
                return _start_problem(btype, block) is not None  # filled by deltas, or not
            return True  # results, redacted thinking: complete from the start
        return kind in ("message_delta", "message_stop")

    def is_heartbeat(self, ev: Event, payload: Any) -> bool:
        """``ping`` events: the API sends them while the model is silent."""
        return ev.event == "ping" or (isinstance(payload, dict) and payload.get("type") == "ping")

    def error_event(self, message: str, kind: str = "api_error") -> bytes:
        """``event: error`` with the API's error object: the SDKs raise APIStatusError."""
        body = {"type": "error", "error": {"type": kind, "message": message}}
        return encode(json_text(body), event="error")

    def error_body(self, status: int, message: str, kind: str = "api_error") -> bytes:
        return json_text({"type": "error", "error": {"type": kind, "message": message}}).encode()

    def keepalive(self) -> bytes:
        """A ping event: the API sends them itself and every SDK skips them."""
        return _PING

    def converter(self) -> Converter:
        from mitmllm.protocol.convert.anthropic import CONVERTER  # loaded only when translating

        return CONVERTER

    # --- for humans ----------------------------------------------------------------------------

    def assemble(self, payloads: Iterable[tuple[Event, Any]]) -> Assembled:
        out = Assembled()
        by_index: dict[int, Block] = {}
        json_parts: dict[int, list[str]] = {}
        for ev, payload in payloads:
            if not isinstance(payload, dict):
                continue
            kind = payload.get("type", ev.event)
            if kind == "message_start" and isinstance(payload.get("message"), dict):
                _assemble_envelope(out, payload["message"])
            elif kind == "message":
                _assemble_envelope(out, payload)
                out.blocks.extend(
                    _block_of(content)
                    for content in payload.get("content") or ()
                    if isinstance(content, dict)
                )
            elif kind == "content_block_start" and isinstance(payload.get("content_block"), dict):
                block = _block_of(payload["content_block"])
                index = payload.get("index")
                if _is_int(index):
                    by_index[index] = block
                out.blocks.append(block)
            elif kind == "content_block_delta" and isinstance(payload.get("delta"), dict):
                target = by_index.get(payload.get("index"))  # type: ignore[arg-type]
                if target is not None:
                    _apply_delta(target, payload["delta"], json_parts, payload["index"])
            elif kind == "message_delta":
                delta = payload.get("delta")
                if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                    out.stop_reason = delta["stop_reason"]
                if isinstance(payload.get("usage"), dict):
                    out.usage.update((k, v) for k, v in payload["usage"].items() if v is not None)
            elif kind == "error":
                out.error = _error_message(payload)
        for index, parts in json_parts.items():
            block = by_index[index]
            block.text = "".join(parts)
            value, _ = parse_json(block.text) if block.text else ({}, None)
            block.input = value if value is not INVALID else None
        return out

    def summarize(self, ev: Event, payload: Any) -> str:
        if payload is NO_DATA:
            if ev.is_comment:
                return f": {_clip(' '.join(ev.comments))}"
            if ev.is_blank:
                return "(blank line)"
            return f"{ev.event or 'event'} (no data)"
        if not isinstance(payload, dict):
            return f"{ev.event or 'data'} (not a JSON object)"
        kind = payload.get("type", ev.event)
        if kind == "message_start":
            message = _object(payload.get("message"))
            return f"message_start {message.get('model')} {message.get('id')}"
        if kind == "content_block_start":
            block = _object(payload.get("content_block"))
            index = payload.get("index")
            if block.get("type") in TOOL_INPUT_BLOCKS:
                return f"{block.get('type')} {block.get('name')} #{index}"
            return f"content_block_start {block.get('type')} #{index}"
        if kind == "content_block_delta":
            return _summarize_delta(payload.get("delta"))
        if kind == "content_block_stop":
            return f"content_block_stop #{payload.get('index')}"
        if kind == "message_delta":
            delta = _object(payload.get("delta"))
            usage = _object(payload.get("usage"))
            return (
                f"message_delta stop_reason={delta.get('stop_reason')} "
                f"output_tokens={usage.get('output_tokens')}"
            )
        if kind == "error":
            kind_of = _object(payload.get("error")).get("type")
            return f"error {kind_of}: {_clip(_error_message(payload) or '')}"
        return str(kind)


def _rename_block(block: Any, names: Mapping[str, str], at: tuple[Any, ...]) -> list[Edit]:
    if not isinstance(block, dict) or block.get("type") not in TOOL_INPUT_BLOCKS:
        return []
    name = block.get("name")
    new = names.get(name) if isinstance(name, str) else None
    if new is None or new == name:
        return []
    return [Edit((*at, "name"), new)]


def _assemble_envelope(out: Assembled, message: dict[str, Any]) -> None:
    out.id = message.get("id")
    out.model = message.get("model")
    if message.get("stop_reason") is not None:
        out.stop_reason = message["stop_reason"]
    if isinstance(message.get("usage"), dict):
        out.usage.update(message["usage"])


def _block_of(content: dict[str, Any]) -> Block:
    btype = content.get("type")
    if btype == "text":
        return Block("text", text=content.get("text") or "")
    if btype == "thinking":
        return Block("thinking", text=content.get("thinking") or "")
    if btype in TOOL_INPUT_BLOCKS:
        tool_input = content.get("input")
        return Block(
            "tool_call",
            name=content.get("name"),
            id=content.get("id"),
            input=tool_input,
            text=json_text(tool_input) if tool_input else "",
        )
    return Block("other", name=str(btype))


def _apply_delta(
    block: Block, delta: dict[str, Any], json_parts: dict[int, list[str]], index: int
) -> None:
    dtype = delta.get("type")
    if dtype == "text_delta" and block.kind == "text":
        block.text += delta.get("text") or ""
    elif dtype == "thinking_delta" and block.kind == "thinking":
        block.text += delta.get("thinking") or ""
    elif dtype == "input_json_delta" and block.kind == "tool_call":
        json_parts.setdefault(index, []).append(str(delta.get("partial_json") or ""))


def _summarize_delta(delta: Any) -> str:
    if not isinstance(delta, dict):
        return "content_block_delta"
    dtype = delta.get("type")
    if dtype == "text_delta":
        return f'text_delta "{_clip(delta.get("text") or "")}"'
    if dtype == "thinking_delta":
        return f'thinking_delta "{_clip(delta.get("thinking") or "")}"'
    if dtype == "input_json_delta":
        return f"input_json_delta {_clip(delta.get('partial_json') or '')}"
    if dtype == "signature_delta":
        return f"signature_delta ({len(delta.get('signature') or '')} chars)"
    return str(dtype)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _clip(text: str, limit: int = 40) -> str:
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + "…"


DIALECT = AnthropicDialect()
