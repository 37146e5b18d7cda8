"""OpenAI Responses API streams (``POST .../responses`` with ``"stream": true``).

Wire format
-----------
Every event is an ``event: <type>`` line, one ``data: <JSON object>`` line and a blank line. The
object repeats the name in ``type`` and numbers the events in ``sequence_number``, from 0::

    response.created              response {id, model, status: in_progress, output: []}
    response.queued               (background mode only)
    response.in_progress
    response.output_item.added    output_index i, item {id, type, ...}         one per output item
      response.content_part.added   item_id, output_index, content_index j, part {type, text: ""}
      response.output_text.delta    item_id, output_index, content_index, delta       (repeated)
      response.output_text.done     ... text (the whole text)
      response.content_part.done    ... part (the whole part)
    response.output_item.done     output_index i, item (the whole item)
    response.completed | response.incomplete | response.failed     response (the whole response)

Output items are messages (parts ``output_text`` and ``refusal``), reasoning items (``summary``
parts and ``reasoning_text`` parts), function calls (``arguments`` deltas), custom tool calls
(``input`` deltas) and built-in tool calls (status events such as
``response.web_search_call.searching``). The terminal event is the last one: there is no
``data: [DONE]``. A failure is an ``error`` event, either flat (``code``, ``message``, ``param``)
or with the first-party nested ``error`` object; openai-python raises only for the nested one.

States
------
A stream is *before created* until ``response.created``, then *open*, then *closed* by its
terminal event (`State`; the `TRANSITIONS` table holds the ordering rules RSP-4, RSP-9 and
RSP-10). While open, each output item is *streaming* from its ``output_item.added`` to its
``output_item.done``, then *done*. The validator keeps per item only what the rules compare: its
identity (type, id, call_id, name), its parts, and the text streamed into each (joined and
replaced by the ``*.done`` value, as the SDK accumulators do).

Rules (sse-rules.md §6)
-----------------------
RSP-1   ``event:`` equals ``data.type``                                        every event
RSP-2   data is an object with a string type and an integer sequence_number    every event
        (not required on ``error`` and ``keepalive``: the SDKs act on those without reading it)
RSP-3   sequence_number 0, 1, 2, ...: a repeat or decrease is an error; a gap or a first number
        other than 0 is a warning
RSP-4   ``response.created`` comes first, once; lifecycle events keep its response id
RSP-5   ``output_item.added``: output_index is the number of items so far; the item has a type,
        a unique non-empty id and, for calls, a unique non-empty call_id
RSP-6   item events name an added item by output_index and item_id, of the type the event is for
RSP-7   parts are added at the next index; deltas and dones name an existing part of their type
RSP-8   ``*.done`` values equal what was streamed (warning); ``output_item.done`` keeps the
        item's type, id and call_id (error: both SDKs raise on a changed identity)
RSP-9   nothing for an item after its ``output_item.done``; nothing after the terminal
RSP-10  one terminal event whose response has the matching status (with a reason when
        incomplete, an error message when failed) and, for completed, every streamed item
        (finished, same ids) and usage
RSP-11  the stream does not end before the terminal event (unless an error event ended it)
RSP-12  an ``error`` event (or a bare ``{"error": ...}`` object) means the stream failed
RSP-13  ``data: [DONE]`` is foreign here: harmless after the terminal, an error before it (the
        SDKs stop reading there)
RSP-14  event types are known to the SDKs
SSE-13  a block with fields but no data is an error: both SDKs dispatch it and fail parsing ""
OAI-12  function_call arguments are a JSON object (the catalogue states this only for Chat
        Completions; the requirement and the client effect are the same here)

Rewrites, commit gate, synthesis
--------------------------------
The model the client sees is ``response.model`` in lifecycle and terminal events (``model`` in a
non-streaming Response). Client tool names appear in function and custom tool call items, in
``function_call_arguments.done`` and in the response's echoed ``tools`` and ``tool_choice``.
Lifecycle frames (created, queued, in_progress, keepalive, an empty message or reasoning item, an
empty part) carry no output and are held back by a fail-over relay; ``error`` and
``response.failed`` are failures. mitmllm's own terminal error is ``event: error`` with both the
nested and the flat fields, its HTTP error body ``{"error": {message, type, param, code}}``, its
keep-alive an SSE comment (both SDKs skip comments).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

import orjson

from mitmllm.protocol.dialect import INVALID
from mitmllm.protocol.dialect import NO_DATA
from mitmllm.protocol.dialect import SENTINEL
from mitmllm.protocol.dialect import Assembled
from mitmllm.protocol.dialect import Block
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.dialect import Step
from mitmllm.protocol.dialect import StreamValidator
from mitmllm.protocol.dialect import ToolInfo
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.payload import json_text
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

# --- the event vocabulary -------------------------------------------------------------------------

CREATED = "response.created"
ITEM_ADDED = "response.output_item.added"
ITEM_DONE = "response.output_item.done"
PART_ADDED = "response.content_part.added"
PART_DONE = "response.content_part.done"
SUMMARY_PART_ADDED = "response.reasoning_summary_part.added"
SUMMARY_PART_DONE = "response.reasoning_summary_part.done"
ARGS_DONE = "response.function_call_arguments.done"
ERROR = "error"
KEEPALIVE = "keepalive"

#: Terminal events and the ``response.status`` each must carry (RSP-10).
TERMINALS: dict[str, str] = {
    "response.completed": "completed",
    "response.incomplete": "incomplete",
    "response.failed": "failed",
}
#: Events that carry the response object before the terminal one.
LIFECYCLE = frozenset({CREATED, "response.queued", "response.in_progress"})

#: Item-scoped events and the output item type each targets (RSP-6). Content part events target
#: a message, or a reasoning item for a ``reasoning_text`` part.
ITEM_EVENTS: dict[str, str] = {
    PART_ADDED: "message",
    PART_DONE: "message",
    "response.output_text.delta": "message",
    "response.output_text.done": "message",
    "response.output_text.annotation.added": "message",
    "response.refusal.delta": "message",
    "response.refusal.done": "message",
    "response.function_call_arguments.delta": "function_call",
    ARGS_DONE: "function_call",
    "response.custom_tool_call_input.delta": "custom_tool_call",
    "response.custom_tool_call_input.done": "custom_tool_call",
    "response.reasoning_text.delta": "reasoning",
    "response.reasoning_text.done": "reasoning",
    SUMMARY_PART_ADDED: "reasoning",
    SUMMARY_PART_DONE: "reasoning",
    "response.reasoning_summary_text.delta": "reasoning",
    "response.reasoning_summary_text.done": "reasoning",
    "response.mcp_call_arguments.delta": "mcp_call",
    "response.mcp_call_arguments.done": "mcp_call",
    "response.mcp_call.in_progress": "mcp_call",
    "response.mcp_call.completed": "mcp_call",
    "response.mcp_call.failed": "mcp_call",
    "response.mcp_list_tools.in_progress": "mcp_list_tools",
    "response.mcp_list_tools.completed": "mcp_list_tools",
    "response.mcp_list_tools.failed": "mcp_list_tools",
    "response.code_interpreter_call_code.delta": "code_interpreter_call",
    "response.code_interpreter_call_code.done": "code_interpreter_call",
    "response.code_interpreter_call.in_progress": "code_interpreter_call",
    "response.code_interpreter_call.interpreting": "code_interpreter_call",
    "response.code_interpreter_call.completed": "code_interpreter_call",
    "response.file_search_call.in_progress": "file_search_call",
    "response.file_search_call.searching": "file_search_call",
    "response.file_search_call.completed": "file_search_call",
    "response.web_search_call.in_progress": "web_search_call",
    "response.web_search_call.searching": "web_search_call",
    "response.web_search_call.completed": "web_search_call",
    "response.image_generation_call.in_progress": "image_generation_call",
    "response.image_generation_call.generating": "image_generation_call",
    "response.image_generation_call.completed": "image_generation_call",
    "response.image_generation_call.partial_image": "image_generation_call",
    "response.shell_call_command.added": "shell_call",
    "response.shell_call_command.delta": "shell_call",
    "response.shell_call_command.done": "shell_call",
    "response.shell_call_output_content.delta": "shell_call_output",
    "response.shell_call_output_content.done": "shell_call_output",
    "response.compaction.compacting": "compaction",
}
#: Item-scoped events whose schema has no item_id (they name the item by output_index only).
NO_ITEM_ID = frozenset(
    {
        "response.shell_call_command.added",
        "response.shell_call_command.delta",
        "response.shell_call_command.done",
    }
)

#: Streamed text: delta event -> (where it goes, the part type it needs). "content" is a
#: content part by content_index, "summary" a reasoning summary part by summary_index, "item"
#: the item's own field (arguments, input, code).
DELTAS: dict[str, tuple[str, str | None]] = {
    "response.output_text.delta": ("content", "output_text"),
    "response.refusal.delta": ("content", "refusal"),
    "response.reasoning_text.delta": ("content", "reasoning_text"),
    "response.reasoning_summary_text.delta": ("summary", None),
    "response.function_call_arguments.delta": ("item", None),
    "response.custom_tool_call_input.delta": ("item", None),
    "response.mcp_call_arguments.delta": ("item", None),
    "response.code_interpreter_call_code.delta": ("item", None),
}
#: The matching done events: (where, part type, the field holding the whole value).
DONES: dict[str, tuple[str, str | None, str]] = {
    "response.output_text.done": ("content", "output_text", "text"),
    "response.refusal.done": ("content", "refusal", "refusal"),
    "response.reasoning_text.done": ("content", "reasoning_text", "text"),
    "response.reasoning_summary_text.done": ("summary", None, "text"),
    ARGS_DONE: ("item", None, "arguments"),
    "response.custom_tool_call_input.done": ("item", None, "input"),
    "response.mcp_call_arguments.done": ("item", None, "arguments"),
    "response.code_interpreter_call_code.done": ("item", None, "code"),
}
#: The item field that "item" deltas stream into, per item type.
ITEM_TEXT_FIELD: dict[str, str] = {
    "function_call": "arguments",
    "custom_tool_call": "input",
    "mcp_call": "arguments",
    "code_interpreter_call": "code",
}
#: The field holding a part's text, per part type.
PART_TEXT_FIELD: dict[str, str] = {
    "output_text": "text",
    "refusal": "refusal",
    "reasoning_text": "text",
    "summary_text": "text",
}
#: Items that must carry a call_id (RSP-5).
CALL_ITEMS = frozenset(
    {
        "function_call",
        "custom_tool_call",
        "computer_call",
        "local_shell_call",
        "shell_call",
        "apply_patch_call",
    }
)
#: Tool call items whose ``name`` is a client tool name (rewritten by `rename_tools`).
NAMED_CALLS = frozenset({"function_call", "custom_tool_call"})
#: Everything that names a client tool: call items, and echoed ``tools`` / ``tool_choice``.
NAMED_ENTRIES = NAMED_CALLS | {"function", "custom"}
#: Events that carry no model output: the commit gate holds them back (see `is_content`).
NOT_CONTENT = frozenset(
    {CREATED, "response.queued", "response.in_progress", KEEPALIVE, ERROR, "response.failed"}
)

#: Every event type the SDKs know (RSP-14): openai-python's stream event union, plus the
#: ``keepalive`` event that openai-node's accumulator accepts and skips.
KNOWN_TYPES = (
    frozenset(ITEM_EVENTS)
    | frozenset(TERMINALS)
    | LIFECYCLE
    | {
        ITEM_ADDED,
        ITEM_DONE,
        ERROR,
        KEEPALIVE,
        "response.audio.delta",
        "response.audio.done",
        "response.audio.transcript.delta",
        "response.audio.transcript.done",
    }
)


#: The characters of done items' texts a validator keeps for the terminal event, at most.
DONE_TEXTS = 1 << 20


class _Part:
    """A content or summary part: its type and the text the client has for it so far."""

    __slots__ = ("type", "chunks")

    def __init__(self, type: str, text: str = "") -> None:
        self.type = type
        self.chunks: list[str] = [text] if text else []

    @property
    def text(self) -> str:
        if len(self.chunks) > 1:
            self.chunks = ["".join(self.chunks)]
        return self.chunks[0] if self.chunks else ""

    def replace(self, text: str) -> None:
        self.chunks = [text] if text else []


class _Item:
    """One output item as the client accumulates it."""

    __slots__ = (
        "index",
        "type",
        "id",
        "call_id",
        "name",
        "content",
        "summary",
        "streamed",
        "done",
        "misrouted",
    )

    def __init__(self, index: int, item: dict[str, Any]) -> None:
        self.index = index
        itype = item.get("type")
        self.type: str = itype if isinstance(itype, str) else ""
        self.id: Any = item.get("id")
        self.call_id: Any = item.get("call_id")
        self.name: Any = item.get("name")
        # Parts already in the added item count: the SDKs append new parts after them.
        self.content = _parts(item.get("content"))
        self.summary = _parts(item.get("summary"))
        # arguments / input / code: streamed into the item itself
        field = ITEM_TEXT_FIELD.get(self.type)
        seed = item.get(field) if field else None
        self.streamed = _Part(self.type, seed if isinstance(seed, str) else "")
        self.done = False
        # An event meant for this item was rejected (RSP-6/7), so its streamed text is missing
        # a piece the client may have: RSP-8 comparisons would blame the server for that.
        self.misrouted = False


def _parts(value: Any) -> list[_Part]:
    if not isinstance(value, list):
        return []
    out = []
    for part in value:
        ptype = part.get("type") if isinstance(part, dict) else None
        ptype = ptype if isinstance(ptype, str) else ""
        text = part.get(PART_TEXT_FIELD.get(ptype, "text")) if isinstance(part, dict) else None
        out.append(_Part(ptype, text if isinstance(text, str) else ""))
    return out


def _part_text(part: Any) -> str | None:
    if not isinstance(part, dict):
        return None
    text = part.get(PART_TEXT_FIELD.get(part.get("type") or "", "text"))
    return text if isinstance(text, str) else None


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _arguments_problem(arguments: Any) -> str | None:
    """Why a function call's arguments are not a JSON object (None if they are)."""
    if not isinstance(arguments, str):
        return f"arguments are {type(arguments).__name__}, not a string"
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return f"arguments {_clip(arguments)!r} are not JSON"
    if not isinstance(value, dict):
        return f"arguments {_clip(arguments)!r} are not a JSON object"
    return None


def _error_message(payload: dict[str, Any]) -> str:
    """The message of an error event, flat or nested."""
    err = payload.get("error")
    if isinstance(err, dict):
        msg = err.get("message")
        code = err.get("code") or err.get("type")
    else:
        msg = payload.get("message") if not isinstance(err, str) else err
        code = payload.get("code")
    if isinstance(msg, str) and msg:
        return msg
    return f"error {code}" if isinstance(code, str) and code else "error event without a message"


# --- the validator --------------------------------------------------------------------------------


class State(StrEnum):
    """Where a Responses stream is (output items keep their own state, see `_Item`)."""

    START = "start"  # before response.created
    EARLY = "early"  # before response.created, and something else came first (RSP-4, once)
    OPEN = "open"  # response.created seen: items stream
    CLOSED = "closed"  # the terminal event arrived


#: Kinds of events that are not typed objects (`ResponsesValidator.classify`); the brackets keep
#: them apart from any event type.
SENTINEL_KIND, VALUE_KIND, UNTYPED_KIND, BARE_ERROR_KIND = (
    "<sentinel>",
    "<value>",
    "<untyped>",
    "<bare-error>",
)
_UNTYPED = dict.fromkeys((SENTINEL_KIND, VALUE_KIND, UNTYPED_KIND, BARE_ERROR_KIND), Step())
_EARLY = Step(State.EARLY, "RSP-4", "first event is {kind}, not response.created")
_TERMINATE = Step(State.CLOSED)


class ResponsesValidator(StreamValidator):
    """The state machine of one Responses stream. See the module docstring for the rules.

    Summary: `complete` is True after response.completed or response.incomplete (a clean end,
    possibly cut short by max_output_tokens); `finish` is "completed", the incomplete reason
    (e.g. "max_output_tokens") or "failed"; `error` is the message of an error event or of
    response.failed.
    """

    TRANSITIONS = {
        State.START: {
            CREATED: Step(State.OPEN),
            ERROR: Step(),
            **dict.fromkeys(TERMINALS, Step(State.CLOSED, _EARLY.breaks, _EARLY.detail)),
            **_UNTYPED,
            "*": _EARLY,
        },
        State.EARLY: {CREATED: Step(State.OPEN), **dict.fromkeys(TERMINALS, _TERMINATE)},
        State.OPEN: {
            CREATED: Step(
                breaks="RSP-4",
                detail="second response.created (two responses spliced into one stream)",
                judge=False,
            ),
            **dict.fromkeys(TERMINALS, _TERMINATE),
        },
        State.CLOSED: {
            **dict.fromkeys(
                TERMINALS,
                Step(
                    breaks="RSP-10",
                    detail="second terminal event {kind} after {v.terminal}",
                    judge=False,
                ),
            ),
            # an error after the terminal still makes the SDKs raise
            ERROR: Step(breaks="RSP-9", detail="{kind} after the terminal {v.terminal}"),
            **_UNTYPED,
            "*": Step(breaks="RSP-9", detail="{kind} after the terminal {v.terminal}", judge=False),
        },
    }

    def __init__(self) -> None:
        super().__init__()
        self.state = State.START
        self.model: str | None = None
        self.finish: str | None = None
        self.error: str | None = None
        self.complete = False
        #: the sequence_number the next event should carry (for a synthesised error event)
        self.next_sequence = 0
        self.terminal: str | None = None  # the terminal event's type, once seen
        self.response_id: Any = None
        self._last_seq: int | None = None
        self._failed = False  # an error event was seen
        self._items: dict[int, _Item] = {}
        self._ids: dict[str, _Item] = {}
        self._call_ids: set[tuple[str, str]] = set()
        self._delta_sink: _Part | None = None  # where the last delta's text went
        #: the texts of the items done, the last ones, until the terminal event (`whole_texts`)
        self._done_texts: list[str] = []

    # Steady deltas (`mitmllm.protocol.steady`): every event carries the next sequence number,
    # and a delta's text is appended to its part.
    COUNTERS = ("next_sequence", "_last_seq")
    CONTEXT = (*StreamValidator.CONTEXT, "_delta_sink")
    STEADY_COUNTED = (("sequence_number",), "next_sequence")

    def steady_sink(self) -> list[str] | None:
        return self._delta_sink.chunks if self._delta_sink is not None else None

    def whole_texts(self, least: int, event: str | None) -> list[str]:
        # each item's texts as the done events and the terminal one carry them: its summary's,
        # its content's, what it streamed itself (a call's arguments)
        if event is None or not (event.endswith(".done") or event in TERMINALS):
            return []
        texts = [text for text in self._done_texts if len(text) >= least]
        for item in self._items.values():
            for part in (*item.summary, *item.content, item.streamed):
                if part.chunks:
                    text = part.text
                    if len(text) >= least:
                        texts.append(text)
        return texts

    # --- classification -------------------------------------------------------------------------

    def classify(self, ev: Event, payload: Any) -> str | None:
        if type(payload) is not dict:
            if payload is NO_DATA or payload is INVALID:
                return None  # comments, blanks, SSE-13 and PAY-1 are the generic layer's
            return SENTINEL_KIND if payload is SENTINEL else VALUE_KIND
        etype = payload.get("type")
        if type(etype) is not str:
            # a bare {"error": ...}: openai-python raises on it
            return BARE_ERROR_KIND if payload.get("error") else UNTYPED_KIND
        self._envelope(ev, payload, etype)
        return etype

    def _on_value(self, ev: Event, payload: Any) -> None:
        self.report("RSP-2", f"data is a JSON {type(payload).__name__}, not an object")

    def _on_untyped(self, ev: Event, payload: dict[str, Any]) -> None:
        self.report("RSP-2", f"data has no string type (keys {list(payload)[:5]})")

    def _on_other(self, ev: Event, payload: dict[str, Any]) -> None:
        """Item events without a handler of their own name an item; the rest must be known."""
        etype = payload["type"]
        if etype in ITEM_EVENTS:
            self._target(payload, etype)
        elif etype not in KNOWN_TYPES:
            self.report("RSP-14", f"unknown event type {_clip(etype)!r}")

    def _envelope(self, ev: Event, payload: dict[str, Any], etype: str) -> None:
        """RSP-1, RSP-2 (sequence_number) and RSP-3."""
        if ev.event != etype:
            if ev.event is None:
                self.report("RSP-1", f"{etype} has no event: field")
            else:
                self.report("RSP-1", f"event: {_clip(ev.event)!r} but data.type {etype!r}")
        seq = payload.get("sequence_number")
        if type(seq) is not int:
            if seq is None and etype in (ERROR, KEEPALIVE):
                return
            what = "missing" if seq is None else f"{seq!r}, not an integer"
            self.report("RSP-2", f"{etype} sequence_number is {_clip(what)}")
            return
        expected = self.next_sequence
        if seq == expected:
            self.next_sequence = seq + 1
        elif self._last_seq is None:
            self.report("RSP-3", f"first sequence_number is {seq}, not 0", Severity.WARNING)
            self.next_sequence = seq + 1
        elif seq <= self._last_seq:
            what = "repeated" if seq == self._last_seq else "goes back"
            self.report("RSP-3", f"sequence_number {seq} after {self._last_seq} ({what})")
            return
        else:
            self.report(
                "RSP-3", f"sequence_number jumps from {self._last_seq} to {seq}", Severity.WARNING
            )
            self.next_sequence = seq + 1
        self._last_seq = seq

    # --- lifecycle ------------------------------------------------------------------------------

    def _on_created(self, ev: Event, p: dict[str, Any]) -> None:
        resp = p.get("response")
        if not isinstance(resp, dict):
            self.report("RSP-4", "response.created carries no response object")
            return
        self.response_id = resp.get("id")
        self._take_model(resp)

    def _on_lifecycle(self, ev: Event, p: dict[str, Any]) -> None:
        resp = p.get("response")
        if isinstance(resp, dict):
            self._check_identity(resp, "RSP-4", p["type"])
            self._take_model(resp)

    def _check_identity(self, resp: dict[str, Any], rule: str, etype: str) -> None:
        rid = resp.get("id")
        if self.response_id is not None and rid != self.response_id:
            self.report(
                rule, f"{etype} is for response {rid!r}, the stream created {self.response_id!r}"
            )

    def _take_model(self, resp: dict[str, Any]) -> None:
        model = resp.get("model")
        if isinstance(model, str):
            self.model = model

    def _on_terminal(self, ev: Event, p: dict[str, Any]) -> None:
        etype = p["type"]
        self.terminal = etype
        self._done_texts = []  # (read: the event is parsed)
        resp = p.get("response")
        if etype == "response.failed":
            self.finish = "failed"
        else:
            self.complete = True
            self.finish = "completed" if etype == "response.completed" else "incomplete"
        if not isinstance(resp, dict):
            self.report("RSP-10", f"{etype} carries no response object")
            if etype == "response.failed":
                self.error = self.error or "response failed"
            return
        self._check_identity(resp, "RSP-10", etype)
        self._take_model(resp)
        if isinstance(resp.get("usage"), dict):
            self.usage = resp["usage"]
        status = resp.get("status")
        if status != TERMINALS[etype]:
            self.report("RSP-10", f"{etype} has response.status {status!r}")
        if etype == "response.completed":
            self._check_completed(resp)
        elif etype == "response.incomplete":
            details = resp.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            if isinstance(reason, str) and reason:
                self.finish = reason
            else:
                self.report("RSP-10", "response.incomplete without incomplete_details.reason")
        else:
            err = resp.get("error")
            msg = err.get("message") if isinstance(err, dict) else None
            if not (isinstance(msg, str) and msg):
                self.report("RSP-10", "response.failed without response.error.message")
            self.error = self.error or (msg if isinstance(msg, str) and msg else "response failed")

    def _check_completed(self, resp: dict[str, Any]) -> None:
        for item in self._items.values():
            if not item.done:
                self.report(
                    "RSP-10",
                    f"response.completed while item #{item.index} "
                    f"({item.type} {item.id!r}) never got output_item.done",
                )
                break
        output = resp.get("output")
        if not isinstance(output, list):
            self.report("RSP-10", "response.completed has no output list")
        elif len(output) != len(self._items):
            self.report(
                "RSP-10",
                f"response.completed has {len(output)} output items, the stream "
                f"added {len(self._items)}",
            )
        else:
            for i, final in enumerate(output):
                streamed = self._items.get(i)
                if streamed is not None and not _same_item(streamed, final):
                    got = final.get("id") if isinstance(final, dict) else final
                    self.report(
                        "RSP-10",
                        f"response.completed output[{i}] is {_clip(str(got))!r}, "
                        f"the stream added {streamed.type} {streamed.id!r}",
                    )
                    break
        if not isinstance(resp.get("usage"), dict):
            self.report("RSP-10", "response.completed has no usage")

    def _on_error(self, ev: Event, p: dict[str, Any]) -> None:
        msg = _error_message(p)
        self._failed = True
        self.error = msg
        self.report("RSP-12", f"error event: {_clip(msg, 120)}")

    def _on_done_sentinel(self, ev: Event, payload: Any) -> None:
        if self.terminal is not None:
            self.report("RSP-13", "data: [DONE] after the terminal event")
        else:
            self.report("RSP-13", "data: [DONE] before the terminal event", Severity.ERROR)

    # --- output items ---------------------------------------------------------------------------

    def _on_item_added(self, ev: Event, p: dict[str, Any]) -> None:
        index = p.get("output_index")
        count = len(self._items)
        item = p.get("item")
        if type(index) is not int:
            self.report("RSP-5", f"output_item.added without an integer output_index ({index!r})")
            return
        if index != count:
            self.report("RSP-5", f"output_item.added at output_index {index}, expected {count}")
        if not isinstance(item, dict):
            self.report("RSP-5", f"output_item.added #{index} carries no item")
            return
        itype = item.get("type")
        iid = item.get("id")
        if not isinstance(itype, str) or not itype:
            self.report("RSP-5", f"output item #{index} has no type")
        if not isinstance(iid, str) or not iid:
            self.report("RSP-5", f"output item #{index} ({itype}) has no id")
        elif iid in self._ids:
            self.report("RSP-5", f"output item #{index} repeats id {iid!r}")
        if itype in CALL_ITEMS:
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                self.report("RSP-5", f"{itype} #{index} has no call_id")
            elif (itype, call_id) in self._call_ids:
                self.report("RSP-5", f"{itype} #{index} repeats call_id {call_id!r}")
            else:
                self._call_ids.add((itype, call_id))
        if index not in self._items:
            self._items[index] = state = _Item(index, item)
            if isinstance(iid, str) and iid:
                self._ids.setdefault(iid, state)

    def _on_item_done(self, ev: Event, p: dict[str, Any]) -> None:
        item = self._target(p, ITEM_DONE)
        if item is None:
            return
        final = p.get("item")
        item.done = True
        if not isinstance(final, dict):
            self.report("RSP-6", f"output_item.done #{item.index} carries no item")
            return
        # Both SDKs raise when the finished item is not the one that was added.
        changed = None
        if (final.get("type") or "") != item.type:
            changed = ("type", item.type, final.get("type"))
        elif final.get("id") != item.id:
            changed = ("id", item.id, final.get("id"))
        elif item.call_id is not None and final.get("call_id") != item.call_id:
            changed = ("call_id", item.call_id, final.get("call_id"))
        if changed is not None:
            key, before, after = changed
            self.report(
                "RSP-8",
                f"output_item.done #{item.index} changes {key} from {before!r} "
                f"to {after!r} (both SDKs raise on a changed item identity)",
                Severity.ERROR,
            )
            return
        self._check_done_item(item, final)

    def _check_done_item(self, item: _Item, final: dict[str, Any]) -> None:
        """RSP-8 for the finished item's text, and OAI-12 for a function call's arguments."""
        where = f"output_item.done #{item.index}"
        field = ITEM_TEXT_FIELD.get(item.type)
        if field is not None and not item.misrouted:
            value = final.get(field)
            if isinstance(value, str) and value != item.streamed.text:
                self.report(
                    "RSP-8",
                    f"{where} {field} {_clip(value)!r} differs from the streamed "
                    f"{_clip(item.streamed.text)!r}",
                )
        if item.type in NAMED_CALLS and final.get("name") != item.name:
            self.report(
                "RSP-8", f"{where} names the tool {final.get('name')!r}, added as {item.name!r}"
            )
        for key, parts in (("content", item.content), ("summary", item.summary)):
            final_parts = final.get(key)
            if item.misrouted or not isinstance(final_parts, list) or not (final_parts or parts):
                continue
            if len(final_parts) != len(parts):
                self.report(
                    "RSP-8",
                    f"{where} has {len(final_parts)} {key} parts, the stream added {len(parts)}",
                )
                continue
            for j, (final_part, part) in enumerate(zip(final_parts, parts, strict=True)):
                text = _part_text(final_part)
                if text is not None and text != part.text:
                    self.report(
                        "RSP-8",
                        f"{where} {key}[{j}] text {_clip(text)!r} differs from "
                        f"the streamed {_clip(part.text)!r}",
                    )
                    break
        if item.type == "function_call":
            problem = _arguments_problem(final.get("arguments"))
            if problem is not None:
                # A call cut short by max_output_tokens is finished as incomplete.
                cut = final.get("status") == "incomplete"
                self.report(
                    "OAI-12",
                    f"function_call {item.name!r} #{item.index}: {problem}",
                    Severity.WARNING if cut else None,
                )
        # The texts are no longer needed: later events for this item are RSP-9. The terminal
        # event repeats them, so the last ones are kept for it (`whole_texts`): this item's,
        # and those before it while they come to `DONE_TEXTS` characters at most.
        kept = self._done_texts
        added = [part.text for part in (*item.summary, *item.content, item.streamed) if part.chunks]
        kept += added
        while len(kept) > len(added) and sum(map(len, kept)) > DONE_TEXTS:
            del kept[0]
        item.streamed = _Part(item.type)
        for part in item.content:
            part.chunks = []
        for part in item.summary:
            part.chunks = []

    def _target(self, p: dict[str, Any], etype: str) -> _Item | None:
        """The item an item-scoped event names (RSP-6, RSP-9), or None if it names none."""
        index = p.get("output_index")
        item = self._items.get(index) if type(index) is int else None
        if item is None:
            self.report("RSP-6", f"{etype} for output_index {index!r}, which was never added")
            self._misrouted(p.get("item_id"))
            return None
        if item.done:
            again = "second output_item.done" if etype == ITEM_DONE else etype
            self.report("RSP-9", f"{again} for item #{index} after its output_item.done")
            return None
        if etype == ITEM_DONE:
            return item
        want = ITEM_EVENTS[etype]
        if etype in (PART_ADDED, PART_DONE):
            part = p.get("part")
            if isinstance(part, dict) and part.get("type") == "reasoning_text":
                want = "reasoning"
        if item.type != want:
            self.report(
                "RSP-6",
                f"{etype} targets item #{index}, a {item.type or 'typeless item'}, not a {want}",
            )
            self._misrouted(p.get("item_id"))
            return None
        if etype not in NO_ITEM_ID and p.get("item_id") != item.id:
            self.report(
                "RSP-6", f"{etype} names item_id {p.get('item_id')!r}, item #{index} is {item.id!r}"
            )
            item.misrouted = True
            self._misrouted(p.get("item_id"))
            return None
        return item

    def _misrouted(self, item_id: Any) -> None:
        item = self._ids.get(item_id) if isinstance(item_id, str) else None
        if item is not None:
            item.misrouted = True

    # --- parts and streamed text ----------------------------------------------------------------

    def _on_part_added(self, ev: Event, p: dict[str, Any]) -> None:
        etype = p["type"]
        item = self._target(p, etype)
        if item is None:
            return
        summary = etype == SUMMARY_PART_ADDED
        key = "summary_index" if summary else "content_index"
        parts = item.summary if summary else item.content
        index = p.get(key)
        if index != len(parts):
            self.report(
                "RSP-7", f"{etype} at {key} {index!r} of item #{item.index}, expected {len(parts)}"
            )
        # openai-python appends the part whatever its index says; later events then miss it.
        part = p.get("part")
        ptype = part.get("type") if isinstance(part, dict) else None
        parts.append(_Part(ptype if isinstance(ptype, str) else "", _part_text(part) or ""))

    def _on_part_done(self, ev: Event, p: dict[str, Any]) -> None:
        etype = p["type"]
        item = self._target(p, etype)
        if item is None:
            return
        part = self._part(
            p, item, "summary" if etype == SUMMARY_PART_DONE else "content", None, etype
        )
        if part is None:
            return
        text = _part_text(p.get("part"))
        if text is not None:
            if text != part.text and not item.misrouted:
                self.report(
                    "RSP-8",
                    f"{etype} text {_clip(text)!r} differs from the streamed {_clip(part.text)!r}",
                )
            part.replace(text)

    def _part(
        self, p: dict[str, Any], item: _Item, where: str, ptype: str | None, etype: str
    ) -> _Part | None:
        """The part a delta or done event names (RSP-7)."""
        key = "summary_index" if where == "summary" else "content_index"
        parts = item.summary if where == "summary" else item.content
        index = p.get(key)
        if type(index) is not int or not 0 <= index < len(parts):
            self.report(
                "RSP-7",
                f"{etype} for {key} {index!r} of item #{item.index}, which has "
                f"{len(parts)} part(s)",
            )
            item.misrouted = True
            return None
        part = parts[index]
        if ptype is not None and part.type != ptype:
            self.report(
                "RSP-7",
                f"{etype} targets part {index} of item #{item.index}, a "
                f"{part.type or 'typeless part'}, not {ptype}",
            )
            item.misrouted = True
            return None
        return part

    def _on_delta(self, ev: Event, p: dict[str, Any]) -> None:
        etype = p["type"]
        item = self._target(p, etype)
        if item is None:
            return
        where, ptype = DELTAS[etype]
        sink = item.streamed if where == "item" else self._part(p, item, where, ptype, etype)
        if sink is None:
            return
        delta = p.get("delta")
        if isinstance(delta, str):
            sink.chunks.append(delta)
            self._delta_sink = sink
        else:
            self.report("RSP-2", f"{etype} delta is {type(delta).__name__}, not a string")

    def _on_done(self, ev: Event, p: dict[str, Any]) -> None:
        etype = p["type"]
        item = self._target(p, etype)
        if item is None:
            return
        where, ptype, field = DONES[etype]
        sink = item.streamed if where == "item" else self._part(p, item, where, ptype, etype)
        if sink is None:
            return
        value = p.get(field)
        if not isinstance(value, str):
            return
        if value != sink.text and not item.misrouted:
            self.report(
                "RSP-8",
                f"{etype} {field} {_clip(value)!r} differs from the streamed {_clip(sink.text)!r}",
            )
        sink.replace(value)
        if etype == ARGS_DONE:
            name = p.get("name")
            if name is not None and name != item.name:
                self.report("RSP-8", f"{etype} names {name!r}, the item was added as {item.name!r}")

    def _on_annotation(self, ev: Event, p: dict[str, Any]) -> None:
        etype = p["type"]
        item = self._target(p, etype)
        if item is not None:
            self._part(p, item, "content", "output_text", etype)

    # --- end of stream --------------------------------------------------------------------------

    def on_close(self, findings: Findings, *, end_offset: int, events: int) -> None:
        # A stream that an error event ended failed (RSP-12); it was not cut short.
        self.findings = findings
        if self.terminal is None and not self._failed:
            self.report(
                "RSP-11",
                f"stream ended after {events} events without response.completed, "
                "response.incomplete or response.failed",
                event=events,
                offset=end_offset,
            )


def _same_item(item: _Item, final: Any) -> bool:
    """Is `final` (from the terminal response's output) the item the stream added?"""
    if not isinstance(final, dict) or final.get("type") != item.type:
        return False
    if "id" in final:
        return bool(final.get("id") == item.id)
    return bool(final.get("call_id") == item.call_id)


ResponsesValidator.HANDLERS = {
    SENTINEL_KIND: ResponsesValidator._on_done_sentinel,
    VALUE_KIND: ResponsesValidator._on_value,
    UNTYPED_KIND: ResponsesValidator._on_untyped,
    BARE_ERROR_KIND: ResponsesValidator._on_error,
    CREATED: ResponsesValidator._on_created,
    "response.queued": ResponsesValidator._on_lifecycle,
    "response.in_progress": ResponsesValidator._on_lifecycle,
    **dict.fromkeys(TERMINALS, ResponsesValidator._on_terminal),
    ERROR: ResponsesValidator._on_error,
    ITEM_ADDED: ResponsesValidator._on_item_added,
    ITEM_DONE: ResponsesValidator._on_item_done,
    PART_ADDED: ResponsesValidator._on_part_added,
    SUMMARY_PART_ADDED: ResponsesValidator._on_part_added,
    PART_DONE: ResponsesValidator._on_part_done,
    SUMMARY_PART_DONE: ResponsesValidator._on_part_done,
    **dict.fromkeys(DELTAS, ResponsesValidator._on_delta),
    **dict.fromkeys(DONES, ResponsesValidator._on_done),
    "response.output_text.annotation.added": ResponsesValidator._on_annotation,
    "*": ResponsesValidator._on_other,
}


# --- repairs --------------------------------------------------------------------------------------

_INDEXED_PARTS = {PART_ADDED: "content_index", SUMMARY_PART_ADDED: "summary_index"}


class ResponsesMender(Mender):
    """The repairs that answer the Responses rules (see `mitmllm.protocol.repair`).

    * FIX-7 (RSP-4): a response.created is held until the next event; if that is another
      response.created, a retried attempt started over before any content, and the first one is
      dropped.
    * FIX-13 (RSP-5/6/7): output items are given output_index 0, 1, 2 ... in the order they are
      added, and parts their content_index / summary_index per item in the order they are added;
      every event naming an item or part follows.
    * FIX-12 (RSP-3): sequence_number counts the events the client gets, 0, 1, 2 ...
    * FIX-5 (RSP-13): a ``data: [DONE]`` (not part of the format) is removed.

    A missing terminal event is not mended: response.completed carries usage, which only the
    upstream knows.
    """

    COUNTED = "_seq"

    def __init__(self) -> None:
        super().__init__()
        self._held: list[Pair] = []  # a response.created, until the next event
        self._created = False
        self._seq = 0  # the sequence_number of the client's next event
        self._renumbered = False
        self._outputs: dict[int, int] = {}  # upstream output_index -> the client's
        self._next_output = 0
        self._parts: dict[tuple[int, str], dict[int, int]] = {}  # (item, key) -> index map

    def feed(self, ev: Event, payload: Any) -> list[Pair]:
        if payload is SENTINEL:
            self.fix("FIX-5", "data: [DONE] removed (Responses streams end with their terminal)")
            return self._release()
        if type(payload) is not dict:
            return [*self._release(), (ev, payload)]
        etype = payload.get("type")
        if etype == CREATED:
            if self._held:
                dropped = self._held[0][0]
                self.fix(
                    "FIX-7",
                    f"response.created at event {dropped.index} dropped: another one followed "
                    "before any content (a retried attempt)",
                    dropped,
                )
                self._held = [(ev, payload)]
                return []
            if not self._created:
                self._created = True
                self._held = [(ev, payload)]
                return []
        out = self._release()
        ev, payload = self._indices(ev, payload, etype)
        out.append(self._number(ev, payload))
        return out

    def held(self) -> list[Pair]:
        out, self._held = self._held, []
        return out

    def close(self) -> list[Pair]:
        return self._release()

    def _release(self) -> list[Pair]:
        out = [self._number(ev, payload) for ev, payload in self._held]
        self._held = []
        return out

    def _number(self, ev: Event, payload: Any) -> Pair:
        seq = payload.get("sequence_number") if type(payload) is dict else None
        if type(seq) is not int:
            return ev, payload
        mine = self._seq
        self._seq += 1
        if seq == mine:
            return ev, payload
        if not self._renumbered:
            self._renumbered = True
            self.fix("FIX-12", f"sequence_number {seq} renumbered to {mine}, and the rest after it")
        return self.edit(ev, payload, ("sequence_number",), mine)

    def _indices(self, ev: Event, payload: dict[str, Any], etype: Any) -> Pair:
        index = payload.get("output_index")
        if type(index) is not int:
            return ev, payload
        if etype == ITEM_ADDED:
            mine = self._outputs[index] = self._next_output
            self._next_output += 1
            if mine != index:
                self.fix("FIX-13", f"output item #{index} renumbered to #{mine}")
        else:
            mine = renumbered(self._outputs, index, self._next_output)
        if mine != index:
            ev, payload = self.edit(ev, payload, ("output_index",), mine)
        for key in ("content_index", "summary_index"):
            part = payload.get(key)
            if type(part) is not int:
                continue
            parts = self._parts.setdefault((mine, key), {})
            if _INDEXED_PARTS.get(etype) == key:
                new = parts[part] = parts.get(-1, 0)
                parts[-1] = new + 1  # the next part's index
                if new != part:
                    self.fix("FIX-13", f"{key} {part} of output item #{mine} renumbered to {new}")
            else:
                new = renumbered(parts, part, parts.get(-1, 0))
            if new != part:
                ev, payload = self.edit(ev, payload, (key,), new)
        return ev, payload


# --- the dialect ----------------------------------------------------------------------------------


class OpenAIResponses(Dialect):
    """OpenAI Responses: ``POST .../responses``."""

    name = "openai-responses"
    # ResponsesValidator keeps the texts it is sent (RSP-8): steady deltas add theirs, in order
    steady_paths = (("delta",),)
    # ... and never reads its "obfuscation" (stream_options.include_obfuscation)
    steady_pads = (("obfuscation",),)
    title = "OpenAI Responses"
    usage_fields: ClassVar[dict[str, str]] = {
        "input": "input_tokens",
        "output": "output_tokens",
        "cache_read": "input_tokens_details.cached_tokens",
        "reasoning": "output_tokens_details.reasoning_tokens",
    }
    # Not part of the protocol. Recognised so that a stray [DONE] is judged by RSP-13 (harmless
    # after the terminal event) instead of failing JSON parsing as PAY-1.
    sentinel = "[DONE]"
    default_auth = "bearer"
    own_headers = ("openai-",)  # openai-organization, openai-project, openai-beta
    prompt_fields = ("instructions", "input", "tools")
    native_flavour = "openai"

    # --- recognising requests -------------------------------------------------------------------

    def match_request(self, method: str, path: str, body: Any) -> bool:
        # Only the create call: GET /responses/{id}, /responses/input_tokens etc. end otherwise.
        return (
            method.upper() == "POST"
            and path.rstrip("/").endswith("/responses")
            and (body is None or isinstance(body, dict))
        )

    def wants_stream(self, path: str, query: Mapping[str, str], body: Any) -> bool:
        return isinstance(body, dict) and body.get("stream") is True

    def match_payload(self, payload: Any, event_name: str | None) -> bool:
        if not isinstance(payload, dict) or "sequence_number" not in payload:
            return False
        etype = payload.get("type")
        return isinstance(etype, str) and (etype.startswith("response.") or etype == ERROR)

    def asks_thinking(self, body: dict[str, Any]) -> bool:
        """A non-empty ``reasoning`` object whose ``effort`` is not ``none``."""
        reasoning = body.get("reasoning")
        return isinstance(reasoning, dict) and bool(reasoning) and reasoning.get("effort") != "none"

    # --- tools in requests -----------------------------------------------------------------------

    def tool_specs(self, body: dict[str, Any], note: Note) -> Iterator[ToolSpec]:
        """``tools[] {type: function, name, parameters}`` and ``{type: custom, name}``."""
        for tools, i, ptr, tool in each_tool(body, note):
            kind = tool.get("type")
            if kind in ("function", "custom"):
                key = "parameters" if kind == "function" else None
                yield ToolSpec(tools, i, ptr, tool, ptr, key)

    def tool_name_references(self, body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        """tool_choice (and its allowed tools) and the conversation's earlier calls."""
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            yield "/tool_choice", choice
            tools = choice.get("tools")
            for i, t in enumerate(tools if isinstance(tools, list) else ()):
                if isinstance(t, dict):
                    yield f"/tool_choice/tools/{i}", t
        items = body.get("input")
        for i, item in enumerate(items if isinstance(items, list) else ()):
            if isinstance(item, dict) and item.get("type") in ("function_call", "custom_tool_call"):
                yield f"/input/{i}", item

    def tool_type_problem(self, index: int, tool: dict[str, Any]) -> str | None:
        if tool.get("type") != "custom":
            return None
        name = tool.get("name")
        label = repr(name) if isinstance(name, str) else f"#{index}"
        return f"tool {label} has type 'custom'"

    # --- validation -----------------------------------------------------------------------------

    def validator(self, request: Any = None) -> ResponsesValidator:
        return ResponsesValidator()

    def mender(self, request: Any = None) -> ResponsesMender:
        return ResponsesMender()

    def dataless_severity(self, ev: Event) -> Severity | None:
        # Both OpenAI SDKs dispatch `event: X` without data and fail parsing "" (SSE-13). An empty
        # event name with no id or retry is the one data-less block they do not dispatch.
        if ev.event == "" and ev.id is None and ev.retry is None:
            return None
        return Severity.ERROR

    def check_json_response(
        self, status: int, payload: Any, findings: Findings, request: Any = None
    ) -> None:
        """A non-streaming Response: its output items (RSP-5), completeness (RSP-10) and
        function call arguments (OAI-12)."""
        if not 200 <= status < 300 or not isinstance(payload, dict):
            return
        if self.error_of(payload) is not None and payload.get("status") != "failed":
            return  # an error object, not a Response (HTTP-5 is reported for it)
        rstatus = payload.get("status")
        output = payload.get("output")
        if not isinstance(output, list):
            findings.add("RSP-10", f"response (status {rstatus!r}) has no output list")
            return
        if rstatus == "completed" and not isinstance(payload.get("usage"), dict):
            findings.add("RSP-10", "completed response has no usage")
        ids: set[str] = set()
        call_ids: set[tuple[str, str]] = set()
        for i, item in enumerate(output):
            if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                findings.add("RSP-5", f"output[{i}] has no type")
                continue
            itype = item["type"]
            iid = item.get("id")
            if not isinstance(iid, str) or not iid:
                findings.add("RSP-5", f"output[{i}] ({itype}) has no id")
            elif iid in ids:
                findings.add("RSP-5", f"output[{i}] repeats id {iid!r}")
            else:
                ids.add(iid)
            if itype in CALL_ITEMS:
                call_id = item.get("call_id")
                if not isinstance(call_id, str) or not call_id:
                    findings.add("RSP-5", f"output[{i}] ({itype}) has no call_id")
                elif (itype, call_id) in call_ids:
                    findings.add("RSP-5", f"output[{i}] repeats call_id {call_id!r}")
                else:
                    call_ids.add((itype, call_id))
            if itype == "function_call":
                problem = _arguments_problem(item.get("arguments"))
                if problem is not None:
                    cut = rstatus == "incomplete" or item.get("status") == "incomplete"
                    findings.add(
                        "OAI-12",
                        f"output[{i}] function_call {item.get('name')!r}: {problem}",
                        severity=Severity.WARNING if cut else None,
                    )

    def error_of(self, payload: Any) -> str | None:
        """The message of an ``error`` event (flat or nested), of ``response.failed``, of a
        ``{"error": {...}}`` body, or of a failed Response body."""
        if not isinstance(payload, dict):
            return None
        etype = payload.get("type")
        if etype == ERROR:
            return _error_message(payload)
        if etype == "response.failed":
            resp = payload.get("response")
            err = resp.get("error") if isinstance(resp, dict) else None
            msg = err.get("message") if isinstance(err, dict) else None
            return msg if isinstance(msg, str) and msg else "response failed"
        if etype is None:
            err = payload.get("error")
            if isinstance(err, dict) and err:
                return _error_message(payload)
            if isinstance(err, str) and err:
                return err
        return None

    # --- rewriting ------------------------------------------------------------------------------

    def request_tools(self, body: Any) -> list[ToolInfo]:
        tools = body.get("tools") if isinstance(body, dict) else None
        if not isinstance(tools, list):
            return []
        out = []
        for tool in tools:
            if not isinstance(tool, dict):
                continue
            kind = tool.get("type")
            kind = kind if isinstance(kind, str) else "function"
            if kind == "function":
                # Chat-style {"function": {...}} sent to Responses by mistake still shows its name.
                spec = tool.get("function")
                spec = spec if isinstance(spec, dict) else tool
                out.append(ToolInfo(str(spec.get("name") or ""), spec.get("parameters"), kind))
            elif kind == "custom":
                out.append(ToolInfo(str(tool.get("name") or ""), tool.get("format"), kind))
            elif kind == "mcp":
                out.append(ToolInfo(str(tool.get("server_label") or kind), tool, kind))
            else:  # built-in tools are named by their type
                out.append(ToolInfo(str(tool.get("name") or kind), None, kind))
        return out

    def restamp(self, payload: Any, model: str) -> list[Edit]:
        """``response.model`` in lifecycle and terminal events; ``model`` of a whole Response."""
        if not isinstance(payload, dict):
            return []
        at: tuple[str, ...] = ("response",) if "type" in payload else ()
        target = payload.get("response") if at else payload
        if isinstance(target, dict) and "model" in target and target["model"] != model:
            return [Edit((*at, "model"), model)]
        return []

    def rename_tools(self, payload: Any, names: Mapping[str, str]) -> list[Edit]:
        """Tool names in function/custom call items (``output_item.added/done``, a response's
        ``output`` and echoed ``tools``/``tool_choice``) and in ``function_call_arguments.done``."""
        if not names or not isinstance(payload, dict):
            return []
        edits: list[Edit] = []
        etype = payload.get("type")
        if etype in (ITEM_ADDED, ITEM_DONE):
            edits += _rename_item(payload.get("item"), names, ("item",))
        elif etype == ARGS_DONE:
            edits += _rename_field(payload, names, ())
        at: tuple[str, ...] = ("response",) if etype is not None else ()
        resp = payload.get("response") if at else payload
        if isinstance(resp, dict):
            for key in ("output", "tools"):
                entries = resp.get(key)
                if isinstance(entries, list):
                    for i, entry in enumerate(entries):
                        edits += _rename_item(entry, names, (*at, key, i))
            edits += _rename_item(resp.get("tool_choice"), names, (*at, "tool_choice"))
        return edits

    # --- commit gate and synthesis --------------------------------------------------------------

    def is_content(self, ev: Event, payload: Any) -> bool:
        """False for lifecycle frames (created, queued, in_progress, keepalive), failures (error,
        response.failed), empty message/reasoning items and empty parts; True otherwise."""
        if not isinstance(payload, dict):
            return False
        etype = payload.get("type")
        if etype in NOT_CONTENT or etype is None:
            return False
        if etype == ITEM_ADDED:
            item = payload.get("item")
            if isinstance(item, dict) and item.get("type") in ("message", "reasoning"):
                return bool(item.get("content") or item.get("summary"))
            return True
        if etype in (PART_ADDED, SUMMARY_PART_ADDED):
            return bool(_part_text(payload.get("part")))
        if etype in DELTAS:
            return payload.get("delta") != ""
        return True

    def error_event(
        self, message: str, kind: str = "api_error", *, sequence_number: int | None = None
    ) -> bytes:
        """A terminal ``error`` event: the nested first-party object (openai-python raises only
        when ``data.error`` is truthy) plus the flat published fields, under ``event: error``
        (openai-node throws on the name).

        Pass the upstream validator's `ResponsesValidator.next_sequence` as `sequence_number`
        to continue the stream's numbering. Without it the field is left out rather than guessed:
        both SDKs raise on the event before reading it, and RSP-2 does not require it here.
        """
        data: dict[str, Any] = {"type": ERROR}
        if sequence_number is not None:
            data["sequence_number"] = sequence_number
        data["code"] = kind
        data["message"] = message
        data["param"] = None
        data["error"] = {"type": kind, "code": kind, "message": message, "param": None}
        return encode(json_text(data), event=ERROR)

    def error_body(self, status: int, message: str, kind: str = "api_error") -> bytes:
        return json_text(
            {"error": {"message": message, "type": kind, "param": None, "code": None}}
        ).encode()

    def converter(self) -> Converter:
        from mitmllm.protocol.convert.openai_responses import (
            CONVERTER,  # loaded only when translating
        )

        return CONVERTER

    # --- for humans -----------------------------------------------------------------------------

    def assemble(self, payloads: Iterable[tuple[Event, Any]]) -> Assembled:
        out = Assembled()
        items: dict[int, dict[str, Any]] = {}  # output_index -> the item as the client has it
        final: list[Any] | None = None
        for _ev, p in payloads:
            if not isinstance(p, dict):
                continue
            etype = p.get("type")
            resp = p.get("response")
            if isinstance(resp, dict):
                out.id = resp.get("id") if isinstance(resp.get("id"), str) else out.id
                out.model = resp.get("model") if isinstance(resp.get("model"), str) else out.model
                if etype in TERMINALS:
                    _assemble_terminal(out, etype, resp)
                    if isinstance(resp.get("output"), list) and resp["output"]:
                        final = resp["output"]
                continue
            if etype == ERROR or (etype is None and p.get("error")):
                out.error = _error_message(p)
                continue
            _accumulate(items, etype, p)
        source = final if final is not None else [items[i] for i in sorted(items)]
        for item in source:
            if isinstance(item, dict):
                out.blocks.extend(_blocks(item))
        return out

    def summarize(self, ev: Event, payload: Any) -> str:
        if payload is NO_DATA:
            if ev.comments and not ev.has_fields:
                return ": " + _clip(ev.comments[0])
            return f"{ev.event} (no data)" if ev.event is not None else ""
        if payload is SENTINEL:
            return "[DONE]"
        if payload is INVALID or not isinstance(payload, dict):
            return "invalid data"
        etype = payload.get("type")
        if not isinstance(etype, str):
            return "error: " + _clip(_error_message(payload), 60) if payload.get("error") else "?"
        short = etype.removeprefix("response.")
        if etype == ERROR:
            return "error: " + _clip(_error_message(payload), 60)
        if etype in DELTAS:
            return f"{short} {_clip(str(payload.get('delta')), 24)!r}"
        if etype in (ITEM_ADDED, ITEM_DONE):
            item = payload.get("item")
            item = item if isinstance(item, dict) else {}
            name = f" {item['name']}" if isinstance(item.get("name"), str) else ""
            return f"{short} {item.get('type')}{name} #{payload.get('output_index')}"
        if etype in (PART_ADDED, PART_DONE, SUMMARY_PART_ADDED, SUMMARY_PART_DONE):
            part = payload.get("part")
            ptype = part.get("type") if isinstance(part, dict) else None
            sub = payload.get("summary_index", payload.get("content_index"))
            return f"{short} {ptype} #{payload.get('output_index')}.{sub}"
        resp = payload.get("response")
        if not isinstance(resp, dict):
            return short
        if etype not in TERMINALS:
            return f"{short} {resp.get('model') or ''}".rstrip()
        details = resp.get("incomplete_details")
        if isinstance(details, dict) and details.get("reason"):
            short += f" {details['reason']}"
        err = resp.get("error")
        if isinstance(err, dict) and err.get("message"):
            short += f": {_clip(str(err['message']), 60)}"
        usage = resp.get("usage")
        if isinstance(usage, dict):
            short += f" in={usage.get('input_tokens')} out={usage.get('output_tokens')}"
        return short


def _rename_field(
    entry: dict[str, Any], names: Mapping[str, str], at: tuple[Any, ...]
) -> list[Edit]:
    name = entry.get("name")
    if isinstance(name, str) and name in names and names[name] != name:
        return [Edit((*at, "name"), names[name])]
    return []


def _rename_item(entry: Any, names: Mapping[str, str], at: tuple[Any, ...]) -> list[Edit]:
    """A call item, an echoed tool or a tool_choice naming a function or custom tool."""
    if not isinstance(entry, dict) or entry.get("type") not in NAMED_ENTRIES:
        return []
    return _rename_field(entry, names, at)


def _accumulate(items: dict[int, dict[str, Any]], etype: Any, p: dict[str, Any]) -> None:
    """Apply one item event to the client-side items, as the SDK accumulators do."""
    index = p.get("output_index")
    if etype in (ITEM_ADDED, ITEM_DONE):
        item = p.get("item")
        if type(index) is int and isinstance(item, dict):
            items[index] = _copy_item(item)
        return
    item = items.get(index) if type(index) is int else None
    if item is None:
        return
    if etype in (PART_ADDED, SUMMARY_PART_ADDED):
        key = "summary" if etype == SUMMARY_PART_ADDED else "content"
        part = p.get("part")
        if isinstance(part, dict):
            item.setdefault(key, []).append(dict(part))
        return
    delta = p.get("delta")
    route = DELTAS.get(etype)
    if route is None or not isinstance(delta, str):
        return
    where, _ptype = route
    if where == "item":
        field = ITEM_TEXT_FIELD.get(item.get("type") or "")
        if field is not None:
            item[field] = str(item.get(field) or "") + delta
        return
    parts = item.get(where)
    j = p.get("summary_index" if where == "summary" else "content_index")
    if isinstance(parts, list) and type(j) is int and 0 <= j < len(parts):
        part = parts[j]
        if isinstance(part, dict):
            field = PART_TEXT_FIELD.get(part.get("type") or "", "text")
            part[field] = str(part.get(field) or "") + delta


def _copy_item(item: dict[str, Any]) -> dict[str, Any]:
    copy = dict(item)
    for key in ("content", "summary"):
        if isinstance(copy.get(key), list):
            copy[key] = [dict(x) if isinstance(x, dict) else x for x in copy[key]]
    return copy


def _assemble_terminal(out: Assembled, etype: str, resp: dict[str, Any]) -> None:
    out.stop_reason = TERMINALS[etype]
    details = resp.get("incomplete_details")
    if isinstance(details, dict) and isinstance(details.get("reason"), str):
        out.stop_reason = details["reason"]
    if isinstance(resp.get("usage"), dict):
        out.usage = resp["usage"]
    err = resp.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        out.error = err["message"]


def _blocks(item: dict[str, Any]) -> list[Block]:
    """The blocks one output item shows as."""
    itype = item.get("type")
    iid = item.get("id") if isinstance(item.get("id"), str) else None
    if itype == "message":
        blocks = []
        for part in item.get("content") or ():
            if not isinstance(part, dict):
                continue
            if part.get("type") == "refusal":
                blocks.append(Block("refusal", str(part.get("refusal") or ""), id=iid))
            else:
                blocks.append(Block("text", str(part.get("text") or ""), id=iid))
        return blocks
    if itype == "reasoning":
        texts = [
            str(part.get("text") or "")
            for key in ("summary", "content")
            for part in item.get(key) or ()
            if isinstance(part, dict)
        ]
        return [Block("thinking", "\n\n".join(texts), id=iid)]
    if itype in NAMED_CALLS:
        raw = item.get("arguments" if itype == "function_call" else "input")
        raw = raw if isinstance(raw, str) else ""
        parsed: Any = raw
        if itype == "function_call":
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
        call_id = item.get("call_id")
        return [
            Block(
                "tool_call",
                raw,
                name=item.get("name") if isinstance(item.get("name"), str) else None,
                id=call_id if isinstance(call_id, str) else iid,
                input=parsed,
            )
        ]
    return [Block("other", name=str(itype), id=iid)]


DIALECT = OpenAIResponses()
