"""OpenAI Chat Completions: ``POST …/chat/completions`` and its event stream (rules OAI-*).

The same wire format is spoken by OpenAI and by every OpenAI-compatible host (OpenRouter, vLLM,
Azure deployments ``/openai/deployments/{d}/chat/completions``, gateways under any prefix).

Wire format
-----------
The stream is data-only SSE (no ``event:`` names, OAI-1/OAI-2). Every event is one chunk, and
the stream ends with the sentinel ``data: [DONE]`` (OAI-3)::

    stream = chunk* usage-chunk? "[DONE]"
    chunk  = {"id", "object": "chat.completion.chunk", "created", "model",
              "choices": [{"index", "delta": {role?, content?, refusal?, tool_calls?},
                           "logprobs", "finish_reason"}],
              "usage": null}
    usage-chunk = the same envelope with "choices": [] and a usage object   (include_usage only)

A failed stream carries ``{"error": {"message", "type", "param", "code"}}`` instead of a chunk
(OAI-16); OpenAI then still sends ``[DONE]``.

State machine
-------------
Stream (`State`, the `TRANSITIONS` table): STREAMING → DONE on ``[DONE]``; FAILED on an error
chunk (terminal: the SDKs raise, so nothing after it is read and a missing ``[DONE]`` is not
truncation); anything after ``[DONE]`` moves to TRAILING (OAI-4, once). Per choice, keyed by
``index`` and introduced in order 0, 1, 2 … (OAI-8): NEW → OPEN (first delta, role assistant,
OAI-7) → FINISHED (non-null ``finish_reason``, OAI-13; nothing but Azure annotations after it).
Per tool call of a choice, keyed by its fragment ``index`` and introduced in order (OAI-10): the
first fragment carries id, type and name; later ones only argument text (OAI-9), which must
concatenate to a JSON object by the choice's finish (OAI-12).

The envelope (id, created, model) is pinned on the first chunk and must not change (OAI-5).
Azure's content-filter annotation chunks (``object: ""``, no ``delta``) are tolerated with a
warning and otherwise ignored.

Rewrites: the ``model`` of every chunk and of a whole completion (restamp), tool names in the
first tool-call fragment and in a completion's ``message.tool_calls`` (rename_tools).
Synthesised: a data-only error event with no ``[DONE]`` after it, the same object as an HTTP error
body, and an SSE comment as keep-alive.
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from enum import StrEnum
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from typing import TypeGuard

from mitmllm.protocol import sse
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
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.repair import Mender
from mitmllm.protocol.repair import Pair
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.sse import Event
from mitmllm.protocol.toolspec import Note
from mitmllm.protocol.toolspec import ToolSpec
from mitmllm.protocol.toolspec import each_tool
from mitmllm.protocol.toolspec import kind_of
from mitmllm.protocol.toolspec import listed

if TYPE_CHECKING:
    from mitmllm.protocol.conversation import Converter

PATH_SUFFIX = "/chat/completions"
CHUNK_OBJECT = "chat.completion.chunk"
COMPLETION_OBJECT = "chat.completion"
SENTINEL_DATA = "[DONE]"
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
#: delta fields that carry model output (text-like ones are strings, concatenated by clients)
TEXT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")
#: Azure content-filter annotations on a choice that has no delta
FILTER_FIELDS = ("content_filter_results", "content_filter_offsets")
#: tool call types and the key holding their name and argument text
TOOL_BODIES = {"function": ("function", "arguments"), "custom": ("custom", "input")}

W = Severity.WARNING
_UNSET: Any = object()


# --- shapes -------------------------------------------------------------------------------------


def carries_output(delta: Mapping[str, Any]) -> bool:
    """Does this delta add model output (not just a role or an empty string)?"""
    for key in TEXT_FIELDS:
        if delta.get(key):
            return True
    if delta.get("tool_calls") or delta.get("function_call"):
        return True
    audio = delta.get("audio")
    # the final audio update carries only expires_at, after the finish
    return isinstance(audio, dict) and bool(audio.get("data") or audio.get("transcript"))


def is_annotation(payload: Mapping[str, Any]) -> bool:
    """An Azure content-filter annotation chunk: empty `object`, and prompt filter results or
    choices that carry filter results instead of a delta."""
    if payload.get("object"):
        return False
    if "prompt_filter_results" in payload:
        return True
    choices = payload.get("choices")
    return (
        isinstance(choices, list)
        and bool(choices)
        and all(_is_annotated_choice(c) for c in choices)
    )


def _is_annotated_choice(choice: Any) -> bool:
    return (
        isinstance(choice, dict)
        and "delta" not in choice
        and any(k in choice for k in FILTER_FIELDS)
    )


def error_message(payload: Any) -> str | None:
    """The message of an error object (``{"error": {...}}``, or vLLM's top-level
    ``{"object": "error", "message": ...}``), or None."""
    if not isinstance(payload, dict):
        return None
    err = payload.get("error")
    if err:  # the SDKs treat any truthy top-level error as a failure
        if isinstance(err, dict):
            msg = err.get("message")
            if isinstance(msg, str) and msg:
                return msg
            return str(err.get("code") or err.get("type") or "unknown error")
        return err if isinstance(err, str) else str(err)
    if payload.get("object") == "error":
        msg = payload.get("message")
        return msg if isinstance(msg, str) and msg else "unknown error"
    return None


def error_object(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _one_of(value: Any, known: Collection[str]) -> TypeGuard[str]:
    """Membership for a value off the wire, which may be unhashable (a list, an object)."""
    return isinstance(value, str) and value in known


def _is_index(value: Any) -> bool:
    return type(value) is int and value >= 0  # bool is an int subclass; not an index


def _clip(text: str, n: int = 24) -> str:
    return '"' + text[:n].replace("\n", "\\n") + ('…"' if len(text) > n else '"')


# --- validator state ----------------------------------------------------------------------------


@dataclass(slots=True)
class _ToolCall:
    """One tool call of a choice, accumulated from its fragments."""

    index: int
    event: int | None  # where its first fragment was
    offset: int | None
    kind: str = "function"
    id: str | None = None
    name: str | None = None
    args: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Choice:
    index: int
    finish: str | None = None
    tools: dict[int, _ToolCall] = field(default_factory=dict)
    next_tool: int = 0  # the index the next new tool call must have (OAI-10)
    current_tool: int = -1  # the last tool call started (OAI-11)
    warned: set[str] = field(default_factory=set)  # once-per-choice warnings


class State(StrEnum):
    """Where a chat stream is (choices and their tool calls keep their own state)."""

    STREAMING = "streaming"  # chunks arrive
    FAILED = "failed"  # an error chunk: the SDKs raised there; only [DONE] may still come
    DONE = "done"  # data: [DONE] arrived
    TRAILING = "trailing"  # something came after [DONE] (OAI-4, reported once)


#: What `ChatStreamValidator.classify` calls each event.
DATALESS, DONE, DONE_VARIANT, INVALID_DATA, VALUE, ERROR, CHUNK = (
    "dataless",
    "done",
    "done-variant",
    "invalid",
    "value",
    "error",
    "chunk",
)


class ChatStreamValidator(StreamValidator):
    """The Chat Completions stream state machine (see the module docstring)."""

    TRANSITIONS = {
        State.STREAMING: {
            DONE: Step(State.DONE),
            DONE_VARIANT: Step(State.DONE),
            ERROR: Step(State.FAILED),
        },
        # the SDKs raised on the error chunk; nothing after it is read
        State.FAILED: {DONE: Step(State.DONE), "*": Step(judge=False)},
        State.DONE: {"*": Step(State.TRAILING, "OAI-4", "event after data: [DONE]", judge=False)},
        State.TRAILING: {"*": Step(judge=False)},
    }

    def __init__(self, *, include_usage: bool | None = None, n: int | None = None) -> None:
        super().__init__()
        self.state = State.STREAMING
        self.include_usage = include_usage  # None: request unknown, so usage is not required
        self.n = n  # choices asked for; None: unknown
        self.usage: dict[str, Any] | None = None
        self._choices: dict[int, _Choice] = {}
        self._id: Any = _UNSET  # the envelope pinned by the first chunk (OAI-5)
        self._created: Any = _UNSET
        self._model: Any = _UNSET
        self._usage_event: int | None = None  # a usage chunk must be the last chunk (OAI-15)
        self._once: set[str] = set()  # conditions reported once per stream
        self._delta_sink: list[str] | None = None  # where the chunk's arguments fragment went

    # Steady deltas (`mitmllm.protocol.steady`): a tool call's arguments fragment is appended
    # to the fragments kept for it, read right after the chunk (`steady_sink`).
    CONTEXT = (*StreamValidator.CONTEXT, "_delta_sink")

    def steady_sink(self) -> list[str] | None:
        """A tool call's arguments fragments, when the last chunk added one (a content
        delta's text is read only for being empty: None)."""
        return self._delta_sink

    @property
    def done(self) -> bool:
        """[DONE] seen (also after a failure)."""
        return self.state in (State.DONE, State.TRAILING)

    def _report_once(
        self, key: str, rule_id: str, detail: str, severity: Severity | None = None
    ) -> None:
        """For conditions that tend to repeat on every event: only the first is reported."""
        if key not in self._once:
            self._once.add(key)
            self.report(rule_id, detail, severity)

    # --- events ---------------------------------------------------------------------------------

    def classify(self, ev: Event, payload: Any) -> str | None:
        if payload is NO_DATA:
            # comments (keep-alives) and blank lines are not dispatched
            return DATALESS if ev.has_fields else None
        if payload is SENTINEL:
            return DONE
        if payload is INVALID:
            data = ev.data or ""
            return DONE_VARIANT if data.startswith(SENTINEL_DATA) else INVALID_DATA
        if type(payload) is not dict:
            return VALUE
        if payload.get("error") or payload.get("object") == "error":
            return ERROR
        return CHUNK

    def _dataless(self, ev: Event, payload: Any) -> None:
        what = f"event {ev.event!r}" if ev.event is not None else "a block"
        self.report("OAI-1", f"{what} without data")

    def _done(self, ev: Event, payload: Any) -> None:
        self._event_name(ev)
        self._on_done()

    def _done_variant(self, ev: Event, payload: Any) -> None:
        """openai-python stops on startswith("[DONE]"); openai-node needs it exact."""
        self._event_name(ev)
        data = ev.data or ""
        detail = f"sentinel variant {data[:20]!r}: openai-node JSON-parses it and fails"
        self.report("OAI-3", detail, W)
        self._on_done()

    def _invalid(self, ev: Event, payload: Any) -> None:
        self._event_name(ev)
        data = ev.data or ""
        if not data:
            self.report("OAI-1", "data field is empty")
        else:
            self.report("OAI-17", f"data {data[:40]!r} is neither JSON nor [DONE]")

    def _value(self, ev: Event, payload: Any) -> None:
        self._event_name(ev)
        self.report("OAI-5", f"chunk is {_type_name(payload)}, not an object")

    def _error(self, ev: Event, payload: dict[str, Any]) -> None:
        self._event_name(ev)
        self._failed(payload)

    def _chunk_event(self, ev: Event, payload: dict[str, Any]) -> None:
        self._delta_sink = None
        self._event_name(ev)
        self._chunk(payload)

    HANDLERS = {
        DATALESS: _dataless,
        DONE: _done,
        DONE_VARIANT: _done_variant,
        INVALID_DATA: _invalid,
        VALUE: _value,
        ERROR: _error,
        CHUNK: _chunk_event,
    }

    def _event_name(self, ev: Event) -> None:
        """OAI-2: chat streams are data-only."""
        name = ev.event
        if name is None:
            return
        if name.startswith("thread."):
            detail = f"event name {name!r} switches the SDKs to Assistants handling"
            self.report("OAI-2", detail, Severity.ERROR)
        else:
            self._report_once("event-name", "OAI-2", f"event name {name!r} in a chat stream")

    def _failed(self, payload: dict[str, Any]) -> None:
        """OAI-16: the stream failed. Terminal: nothing after it is checked."""
        self.error = error_message(payload) or "unknown error"
        shape = "" if payload.get("error") else " (top-level object 'error': SDKs do not raise)"
        self.report("OAI-16", f"error chunk{shape}: {self.error[:120]}")

    def _on_done(self) -> None:
        """[DONE]: every choice finished (OAI-13), usage arrived if asked for (OAI-15)."""
        if self.error is not None:
            return  # a failed stream is not complete, whatever follows
        self.complete = True
        expected = range(self.n if self.n is not None else 1)
        for i in sorted(set(expected) | self._choices.keys()):
            st = self._choices.get(i)
            if st is None:
                self.report("OAI-13", f"choice {i} never appeared before [DONE]")
            elif st.finish is None:
                self.report("OAI-13", f"choice {i} has no finish_reason before [DONE]")
        if self.include_usage and self.usage is None:
            detail = "stream_options.include_usage was requested but no usage chunk came"
            self.report("OAI-15", detail)

    # --- chunks ---------------------------------------------------------------------------------

    def _chunk(self, p: dict[str, Any]) -> None:
        obj = p.get("object")
        if obj != CHUNK_OBJECT:
            if is_annotation(p):
                detail = f"Azure content-filter annotation chunk (object {obj!r}, no delta)"
                self._report_once("annotation", "OAI-5", detail, W)
                return
            self.report("OAI-5", f"object is {obj!r}, not {CHUNK_OBJECT!r}")
        self._envelope(p.get("id"), p.get("created"), p.get("model"))
        if self._usage_event is not None:
            detail = f"the usage chunk (event {self._usage_event}) is followed by another chunk"
            self.report("OAI-15", detail)
            self._usage_event = None
        choices = p.get("choices")
        usage = p.get("usage")
        if type(choices) is list:
            for c in choices:
                self._choice(c)
        elif choices is None and usage is not None:  # vLLM
            self.report("OAI-15", "usage chunk has choices null or omitted, not []", W)
        else:
            self.report("OAI-6", f"choices is {_type_name(choices)}, not an array")
        if usage is not None:
            self._usage(usage, choices)

    def _envelope(self, cid: Any, created: Any, model: Any) -> None:
        """OAI-5: id and created identical across chunks, model a constant string."""
        if self._id is _UNSET:
            self._id, self._created, self._model = cid, created, model
            if not (isinstance(cid, str) and cid):
                self.report("OAI-5", f"chunk id is {cid!r}, not a non-empty string")
            if type(created) is not int:
                self.report("OAI-5", f"created is {created!r}, not an integer")
            if isinstance(model, str):
                self.model = model
            else:
                self.report("OAI-5", f"model is {model!r}, not a string")
            return
        if cid != self._id:
            self.report("OAI-5", f"chunk id changed from {self._id!r} to {cid!r}")
        if created != self._created:
            self.report("OAI-5", f"created changed from {self._created!r} to {created!r}")
        if model != self._model:
            detail = f"model changed from {self._model!r} to {model!r}"
            self._report_once("model", "OAI-5", detail, W)

    def _usage(self, usage: Any, choices: Any) -> None:
        """OAI-15: one usage object, on the last chunk, which has choices []."""
        if not isinstance(usage, dict) or any(type(usage.get(k)) is not int for k in USAGE_COUNTS):
            self.report("OAI-15", f"usage {str(usage)[:60]} lacks integer {'/'.join(USAGE_COUNTS)}")
        if choices:  # Gemini's OpenAI compatibility layer
            self.report("OAI-15", "usage rides on a chunk with choices, not on its own chunk", W)
        self.usage = usage if isinstance(usage, dict) else {"usage": usage}
        self._usage_event = self.event

    def _choice(self, c: Any) -> None:
        if type(c) is not dict:
            self.report("OAI-6", f"choice is {_type_name(c)}, not an object")
            return
        delta = c.get("delta")
        if delta is None and any(k in c for k in FILTER_FIELDS):
            detail = "Azure content-filter annotation on a choice without a delta"
            self._report_once("annotation", "OAI-5", detail, W)
            return
        idx = c.get("index")
        if type(idx) is not int or idx < 0:
            self.report("OAI-6", f"choice index {idx!r} is not an integer >= 0")
            return
        st = self._choices.get(idx)
        first = st is None
        if st is None:
            if self.n is not None and idx >= self.n:
                self.report("OAI-6", f"choice index {idx} outside [0, {self.n}) (request n)")
            if idx != len(self._choices):
                self.report("OAI-8", f"choice {idx} appears before choice {len(self._choices)}")
            st = self._choices[idx] = _Choice(idx)
        if type(delta) is not dict:
            self.report("OAI-6", f"choice {idx} delta is {_type_name(delta)}, not an object")
            delta = {}
        logprobs = c.get("logprobs")
        if logprobs is not None and type(logprobs) is not dict:
            self.report("OAI-6", f"choice {idx} logprobs is {_type_name(logprobs)}")
        finish = c.get("finish_reason")
        if st.finish is not None:
            self._after_finish(st, delta, finish)
            return
        if first and delta.get("role") != "assistant":
            self.report("OAI-7", f"choice {idx} starts without role 'assistant'")
        if st.tools and delta.get("content") and "OAI-14" not in st.warned:
            st.warned.add("OAI-14")
            self.report("OAI-14", f"choice {idx} streams content after its tool calls began")
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            if type(tool_calls) is list:
                for frag in tool_calls:
                    self._fragment(st, frag)
            else:
                self.report("OAI-9", f"choice {idx} tool_calls is {_type_name(tool_calls)}")
        if finish is not None:
            self._finish(st, finish)

    def _after_finish(self, st: _Choice, delta: dict[str, Any], finish: Any) -> None:
        """OAI-13: one finish per choice, on its last chunk."""
        if finish is not None:
            detail = f"choice {st.index} finishes again ({st.finish!r}, then {finish!r})"
            self.report("OAI-13", detail, W if finish == st.finish else None)
        elif carries_output(delta):
            self.report("OAI-13", f"choice {st.index} streams output after its finish_reason")

    # --- tool calls -----------------------------------------------------------------------------

    def _fragment(self, st: _Choice, frag: Any) -> None:
        """OAI-9/10/11: one `delta.tool_calls[]` fragment."""
        if type(frag) is not dict:
            self.report("OAI-9", f"tool call fragment is {_type_name(frag)}")
            return
        ti = frag.get("index")
        if type(ti) is not int or ti < 0:
            self.report("OAI-9", f"tool call fragment index {ti!r} is not an integer >= 0")
            return
        tc = st.tools.get(ti)
        if tc is None:
            self._first_fragment(st, ti, frag)
            return
        if ti != st.current_tool and "OAI-11" not in st.warned:
            st.warned.add("OAI-11")
            self.report("OAI-11", f"fragment for tool call #{ti} after #{st.current_tool} began")
        fid = frag.get("id")
        if fid:
            if tc.id is None:
                tc.id = str(fid)
                self.report("OAI-9", f"tool call #{ti} gets its id in a later fragment", W)
            elif fid == tc.id:
                self.report("OAI-9", f"tool call #{ti} repeats its id {fid!r} (-> {fid}{fid})")
            else:  # another call reusing the index: its name and arguments are not this one's
                self.report("OAI-10", f"tool call #{ti} changes identity: {tc.id!r}, {fid!r}")
                return
        body_key, args_key = TOOL_BODIES[tc.kind]
        body = frag.get(body_key)
        if not isinstance(body, dict):
            return
        name = body.get("name")
        if name:
            if tc.name is None:
                tc.name = str(name)
                self.report("OAI-9", f"tool call #{ti} gets its name in a later fragment", W)
            else:
                self.report("OAI-9", f"tool call #{ti} sends its name again ({name!r})")
        self._append_args(tc, body.get(args_key))

    def _first_fragment(self, st: _Choice, ti: int, frag: dict[str, Any]) -> None:
        """The fragment that starts a call: in index order, with id, type and name."""
        if ti != st.next_tool:
            self.report("OAI-10", f"choice {st.index} starts tool call #{ti}, not #{st.next_tool}")
        st.next_tool = max(st.next_tool, ti + 1)
        st.current_tool = ti
        tc = st.tools[ti] = _ToolCall(ti, self.event, self.offset)
        kind = frag.get("type")
        if _one_of(kind, TOOL_BODIES):
            tc.kind = kind
        else:
            self.report("OAI-9", f"tool call #{ti} starts with type {kind!r}, not 'function'")
        fid = frag.get("id")
        tc.id = fid if isinstance(fid, str) and fid else None  # missing: reported at finish
        body_key, args_key = TOOL_BODIES[tc.kind]
        body = frag.get(body_key)
        if body is None:
            return
        if not isinstance(body, dict):
            self.report("OAI-9", f"tool call #{ti} {body_key} is {_type_name(body)}")
            return
        name = body.get("name")
        tc.name = name if isinstance(name, str) and name else None
        self._append_args(tc, body.get(args_key))

    def _append_args(self, tc: _ToolCall, args: Any) -> None:
        if isinstance(args, str):
            tc.args.append(args)
            self._delta_sink = tc.args
        elif args is not None:
            self.report("OAI-9", f"tool call #{tc.index} arguments are {_type_name(args)}")

    def _finish(self, st: _Choice, finish: Any) -> None:
        """OAI-13 and, for the choice's tool calls, OAI-9 (identity) and OAI-12 (arguments)."""
        if not _one_of(finish, FINISH_REASONS):
            self.report("OAI-13", f"choice {st.index} finish_reason {finish!r} is not a known one")
        st.finish = finish if isinstance(finish, str) else str(finish)
        if self.finish is None or st.index == 0:
            self.finish = st.finish
        if not st.tools:
            if finish == "tool_calls":
                self.report("OAI-13", f"choice {st.index} finishes 'tool_calls' without any", W)
            return
        if finish == "stop":  # some compatible servers
            self.report("OAI-13", f"choice {st.index} streamed tool calls but finishes 'stop'", W)
        for tc in st.tools.values():
            self._tool_done(tc, finish)

    def _tool_done(self, tc: _ToolCall, finish: Any) -> None:
        missing = " or ".join(k for k, v in (("id", tc.id), ("name", tc.name)) if v is None)
        if missing:  # reported where the call started
            self.report(
                "OAI-9",
                f"tool call #{tc.index} never got a {missing}",
                event=tc.event,
                offset=tc.offset,
            )
        if tc.kind != "function":
            return  # custom tools take free text
        text = "".join(tc.args)
        label = f"tool call #{tc.index} {tc.name or ''}".rstrip()
        if not text:
            self.report("OAI-12", f"{label} has empty arguments ('' instead of '{{}}')", W)
            return
        value, _ = parse_json(text)
        if type(value) is not dict:
            what = "do not parse as JSON" if value is INVALID else "are not a JSON object"
            detail = f"{label} arguments {what}: {text[:60]!r}"
            self.report("OAI-12", detail, W if finish == "length" else None)

    # --- end ------------------------------------------------------------------------------------

    def on_close(self, findings: Findings, *, end_offset: int, events: int) -> None:
        """OAI-3: a stream that ends without [DONE] (and did not fail) was truncated."""
        if self.done or self.error is not None:
            return
        unfinished = [str(i) for i, st in sorted(self._choices.items()) if st.finish is None]
        if not self._choices:
            what = "no chunk arrived"
        elif unfinished:
            what = f"choice {', '.join(unfinished)} had no finish_reason yet"
        else:
            what = f"after finish_reason {self.finish!r}"
        self.findings = findings
        self.report(
            "OAI-3", f"stream ended without data: [DONE] ({what})", event=events, offset=end_offset
        )


# --- repairs ------------------------------------------------------------------------------------


class ChatMender(Mender):
    """The repairs that answer the Chat Completions rules (see `mitmllm.protocol.repair`).

    * FIX-11 (OAI-10): tool-call indices are given per choice in the order calls start, 0, 1 ...;
      a fragment with a new id at a known index starts a new call. Later fragments follow.
    * FIX-10 (OAI-3): a stream that ends without ``[DONE]`` after every choice (0 .. n-1) carried
      its finish_reason, and without an error, gets ``data: [DONE]``.
    """

    def __init__(self, n: int | None = None) -> None:
        super().__init__()
        self.n = n if n is not None else 1
        self._calls: dict[int, dict[int, tuple[int, str | None]]] = {}  # choice -> its calls
        self._next: dict[int, int] = {}
        self._finished: dict[int, bool] = {}  # choice -> finish_reason seen
        self._ended = False  # [DONE] or an error came

    def feed(self, ev: Event, payload: Any) -> list[Pair]:
        if payload is SENTINEL or (
            payload is INVALID and (ev.data or "").startswith(SENTINEL_DATA)
        ):
            self._ended = True
        elif type(payload) is dict:
            if error_message(payload) is not None:
                self._ended = True
            else:
                return [self._chunk(ev, payload)]
        return [(ev, payload)]

    def close(self) -> list[Pair]:
        if self._ended or not self._finished:
            return []
        if not all(self._finished.get(i) for i in range(self.n)) or not all(
            self._finished.values()
        ):
            return []  # a choice was cut short: truncated, not mended
        self.fix(
            "FIX-10",
            "data: [DONE] added: every choice carried its finish_reason" + self.tail_note(),
        )
        return [self.make(SENTINEL_DATA)]

    def _chunk(self, ev: Event, payload: dict[str, Any]) -> Pair:
        choices = payload.get("choices")
        if type(choices) is not list:
            return ev, payload
        edits: list[tuple[tuple[str | int, ...], int]] = []
        for pos, c in enumerate(choices):
            if type(c) is not dict or not _is_index(c.get("index")):
                continue
            idx = c["index"]
            if c.get("finish_reason") is not None:
                self._finished[idx] = True
            else:
                self._finished.setdefault(idx, False)
            delta = c.get("delta")
            tool_calls = delta.get("tool_calls") if type(delta) is dict else None
            if type(tool_calls) is not list:
                continue
            for k, frag in enumerate(tool_calls):
                if type(frag) is not dict or not _is_index(frag.get("index")):
                    continue
                mine = self._call_index(idx, frag)
                if mine != frag["index"]:
                    edits.append((("choices", pos, "delta", "tool_calls", k, "index"), mine))
        for path, mine in edits:
            ev, payload = self.edit(ev, payload, path, mine)
        return ev, payload

    def _call_index(self, choice: int, frag: dict[str, Any]) -> int:
        calls = self._calls.setdefault(choice, {})
        ti = frag["index"]
        fid = frag.get("id")
        fid = fid if isinstance(fid, str) and fid else None
        known = calls.get(ti)
        if known is not None and (fid is None or known[1] in (None, fid)):
            return known[0]
        mine = self._next.get(choice, 0)
        self._next[choice] = mine + 1
        calls[ti] = (mine, fid)
        if mine != ti:
            again = " (a new call at a used index)" if known is not None else ""
            self.fix("FIX-11", f"choice {choice} tool call #{ti}{again} renumbered to #{mine}")
        return mine


def _type_name(value: Any) -> str:
    return "missing or null" if value is None else f"a JSON {type(value).__name__}"


# --- the dialect --------------------------------------------------------------------------------


class OpenAIChat(Dialect):
    """OpenAI Chat Completions and every OpenAI-compatible host."""

    name = "openai-chat"
    # ChatStreamValidator reads the content and a reasoning model's reasoning (DeepSeek's and
    # vLLM's `reasoning_content`, OpenRouter's `reasoning`) only for being empty or not (OAI-13,
    # OAI-14), and keeps a tool call's argument fragments to judge them whole (OAI-12;
    # `steady_sink`)
    steady_paths = (
        ("choices", 0, "delta", "content"),
        ("choices", 0, "delta", "reasoning_content"),
        ("choices", 0, "delta", "reasoning"),
        ("choices", 0, "delta", "tool_calls", 0, "function", "arguments"),
        ("choices", 0, "delta", "tool_calls", 0, "custom", "input"),
    )
    # ... and never reads its "obfuscation" (stream_options.include_obfuscation)
    steady_pads = (("obfuscation",),)
    title = "OpenAI Chat Completions"
    sentinel = SENTINEL_DATA
    usage_fields: ClassVar[dict[str, str]] = {
        "input": "prompt_tokens",
        "output": "completion_tokens",
        "cache_read": "prompt_tokens_details.cached_tokens",
        "reasoning": "completion_tokens_details.reasoning_tokens",
    }
    default_auth = "bearer"
    own_headers = ("openai-",)  # openai-organization, openai-project, openai-beta
    prompt_fields = ("messages", "tools", "functions")
    native_flavour = "openai"

    # --- recognising requests -------------------------------------------------------------------

    def match_request(self, method: str, path: str, body: Any) -> bool:
        return method.upper() == "POST" and path.rstrip("/").endswith(PATH_SUFFIX)

    def wants_stream(self, path: str, query: Mapping[str, str], body: Any) -> bool:
        return isinstance(body, dict) and body.get("stream") is True

    def match_payload(self, payload: Any, event_name: str | None) -> bool:
        if not isinstance(payload, dict):
            return False
        if payload.get("object") == CHUNK_OBJECT:
            return True
        if event_name is not None:
            return False
        if is_annotation(payload):
            return True
        # compatible servers that omit `object`: choices with a delta
        choices = payload.get("choices")
        return (
            isinstance(choices, list)
            and bool(choices)
            and isinstance(choices[0], dict)
            and "delta" in choices[0]
        )

    def asks_thinking(self, body: dict[str, Any]) -> bool:
        """``reasoning_effort`` (or an OpenRouter-style ``reasoning.effort``) is not ``none``."""
        effort = body.get("reasoning_effort")
        if isinstance(effort, str):
            return effort != "none"
        reasoning = body.get("reasoning")
        return isinstance(reasoning, dict) and bool(reasoning) and reasoning.get("effort") != "none"

    def declares_tools(self, body: dict[str, Any]) -> bool:
        functions = body.get("functions")  # the legacy spelling
        return super().declares_tools(body) or (isinstance(functions, list) and bool(functions))

    # --- tools in requests -----------------------------------------------------------------------

    def tool_specs(self, body: dict[str, Any], note: Note) -> Iterator[ToolSpec]:
        """``tools[] {type: function, function: {...}}`` and ``{type: custom, custom: {name}}``,
        then the legacy ``functions[]``."""
        for tools, i, ptr, tool in each_tool(body, note):
            kind = tool.get("type")
            if kind not in ("function", "custom"):
                continue
            spec = tool.get(kind)
            if isinstance(spec, dict):
                key = "parameters" if kind == "function" else None
                yield ToolSpec(tools, i, ptr, spec, f"{ptr}/{kind}", key)
            else:
                note(f"{ptr}/{kind}", f"{kind} is {kind_of(spec)}")
        functions = listed(body, "functions", "/functions", note)
        for i, fn in enumerate(functions):
            ptr = f"/functions/{i}"
            if isinstance(fn, dict):
                yield ToolSpec(functions, i, ptr, fn, ptr, "parameters")
            else:
                note(ptr, f"function is {kind_of(fn)}, not an object")

    def tool_name_references(self, body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        """tool_choice, the legacy function_call, and the conversation's earlier calls."""
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            yield from _named("/tool_choice/function", choice.get("function"))
            allowed = choice.get("allowed_tools")
            tools = allowed.get("tools") if isinstance(allowed, dict) else None
            for i, t in enumerate(tools if isinstance(tools, list) else ()):
                if isinstance(t, dict):
                    yield from _named(
                        f"/tool_choice/allowed_tools/tools/{i}/function", t.get("function")
                    )
        yield from _named("/function_call", body.get("function_call"))
        messages = body.get("messages")
        for i, m in enumerate(messages if isinstance(messages, list) else ()):
            if not isinstance(m, dict):
                continue
            if m.get("role") in ("tool", "function"):
                yield f"/messages/{i}", m
            yield from _named(f"/messages/{i}/function_call", m.get("function_call"))
            calls = m.get("tool_calls")
            for j, call in enumerate(calls if isinstance(calls, list) else ()):
                if isinstance(call, dict):
                    ptr = f"/messages/{i}/tool_calls/{j}/function"
                    yield from _named(ptr, call.get("function"))

    def tool_type_problem(self, index: int, tool: dict[str, Any]) -> str | None:
        kind = tool.get("type")
        return None if kind == "function" else f"tools[{index}] has type {kind!r}, not 'function'"

    # --- validation -----------------------------------------------------------------------------

    def validator(self, request: Any = None) -> ChatStreamValidator:
        if not isinstance(request, dict):
            return ChatStreamValidator()
        options = request.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        n = request.get("n", 1)
        if n is None:
            n = 1
        return ChatStreamValidator(
            include_usage=include_usage, n=n if _is_index(n) and n >= 1 else None
        )

    def mender(self, request: Any = None) -> ChatMender:
        n = request.get("n", 1) if isinstance(request, dict) else 1
        return ChatMender(n if _is_index(n) and n >= 1 else 1)

    def dataless_severity(self, ev: Event) -> Severity | None:
        # Both SDK decoders dispatch any block with a field and JSON-parse its empty data.
        return Severity.ERROR

    def check_json_response(
        self, status: int, payload: Any, findings: Findings, request: Any = None
    ) -> None:
        """A whole ``chat.completion``: envelope, choices, finish reasons, tool calls."""
        if not 200 <= status < 300 or not isinstance(payload, dict):
            return
        if error_message(payload) is not None:
            return  # reported as HTTP-5 by the generic layer
        obj = payload.get("object")
        if obj != COMPLETION_OBJECT:
            findings.add("OAI-5", f"response object is {obj!r}, not {COMPLETION_OBJECT!r}")
        choices = payload.get("choices")
        if type(choices) is not list:
            findings.add("OAI-6", f"response choices is {_type_name(choices)}, not an array")
            return
        for pos, c in enumerate(choices):
            msg = c.get("message") if isinstance(c, dict) else None
            if not isinstance(msg, dict):
                findings.add("OAI-6", f"response choice {pos} has no message object")
                continue
            finish = c.get("finish_reason")
            if not _one_of(finish, FINISH_REASONS):
                findings.add("OAI-13", f"response choice {pos} finish_reason {finish!r}")
            tool_calls = msg.get("tool_calls")
            if not tool_calls:
                if finish == "tool_calls":
                    findings.add(
                        "OAI-13",
                        f"response choice {pos} finishes with 'tool_calls' but has none",
                        severity=W,
                    )
                continue
            if finish == "stop":
                findings.add(
                    "OAI-13",
                    f"response choice {pos} has tool calls but finishes with 'stop'",
                    severity=W,
                )
            if type(tool_calls) is not list:
                findings.add("OAI-9", f"response choice {pos} tool_calls is not an array")
                continue
            for j, tc in enumerate(tool_calls):
                _check_tool_call(findings, pos, j, tc, finish)

    def error_of(self, payload: Any) -> str | None:
        return error_message(payload)

    # --- rewriting ------------------------------------------------------------------------------

    def request_tools(self, body: Any) -> list[ToolInfo]:
        if not isinstance(body, dict):
            return []
        out: list[ToolInfo] = []
        tools = body.get("tools")
        for tool in tools if isinstance(tools, list) else ():
            if not isinstance(tool, dict):
                continue
            kind = tool.get("type") or "function"
            spec = tool.get(kind) if isinstance(kind, str) else None
            if kind == "function" and isinstance(spec, dict) and isinstance(spec.get("name"), str):
                out.append(ToolInfo(spec["name"], spec.get("parameters"), "function"))
            elif kind == "custom" and isinstance(spec, dict) and isinstance(spec.get("name"), str):
                out.append(ToolInfo(spec["name"], spec.get("format"), "custom"))
            elif kind not in ("function", "custom"):
                name = tool.get("name")
                out.append(ToolInfo(name if isinstance(name, str) else str(kind), None, str(kind)))
        functions = body.get("functions")  # the legacy form
        for fn in functions if isinstance(functions, list) else ():
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                out.append(ToolInfo(fn["name"], fn.get("parameters"), "function"))
        return out

    def restamp(self, payload: Any, model: str) -> list[Edit]:
        """Every chunk's and a whole completion's `model`. Azure annotation chunks carry
        ``model: ""`` and are left as they are."""
        if not isinstance(payload, dict):
            return []
        current = payload.get("model")
        if not isinstance(current, str) or not current or current == model:
            return []
        return [Edit(("model",), model)]

    def rename_tools(self, payload: Any, names: Mapping[str, str]) -> list[Edit]:
        """Tool names in ``choices[].delta`` (stream) or ``choices[].message`` (completion):
        ``tool_calls[].function.name`` (or ``.custom.name``) and legacy ``function_call.name``."""
        if not names or not isinstance(payload, dict):
            return []
        choices = payload.get("choices")
        if not isinstance(choices, list):
            return []
        edits: list[Edit] = []
        for ci, c in enumerate(choices):
            if not isinstance(c, dict):
                continue
            key = "delta"
            msg = c.get(key)
            if not isinstance(msg, dict):
                key = "message"
                msg = c.get(key)
                if not isinstance(msg, dict):
                    continue
            at = ("choices", ci, key)
            tool_calls = msg.get("tool_calls")
            for ti, tc in enumerate(tool_calls if isinstance(tool_calls, list) else ()):
                if isinstance(tc, dict):
                    for kind in ("function", "custom"):
                        edits += _rename(tc.get(kind), names, (*at, "tool_calls", ti, kind))
            edits += _rename(msg.get("function_call"), names, (*at, "function_call"))
        return edits

    # --- commit gate and synthesis ----------------------------------------------------------------

    def is_content(self, ev: Event, payload: Any) -> bool:
        """Output, a finish or usage commits; role-only chunks, annotations, comments, the
        sentinel and error chunks do not."""
        if not isinstance(payload, dict) or error_message(payload) is not None:
            return False
        if payload.get("usage") is not None:
            return True
        choices = payload.get("choices")
        for c in choices if isinstance(choices, list) else ():
            if not isinstance(c, dict):
                continue
            if c.get("finish_reason") is not None:
                return True
            delta = c.get("delta")
            if isinstance(delta, dict) and carries_output(delta):
                return True
        return False

    def error_event(self, message: str, kind: str = "api_error") -> bytes:
        # No [DONE] after it: a clean-looking end must never follow a failure.
        return sse.encode(json_text(error_object(message, kind)))

    def error_body(self, status: int, message: str, kind: str = "api_error") -> bytes:
        return json_text(error_object(message, kind)).encode()

    def keepalive(self) -> bytes | None:
        # A comment is never dispatched by the SDK decoders (unless an id: was seen, SSE-11).
        return b": keep-alive\n\n"

    def converter(self) -> Converter:
        from mitmllm.protocol.convert.openai_chat import CONVERTER  # loaded only when translating

        return CONVERTER

    # --- for humans -----------------------------------------------------------------------------

    def assemble(self, payloads: Iterable[tuple[Event, Any]]) -> Assembled:
        """The completion a client accumulates: per choice its reasoning, text, refusal and
        tool calls (arguments parsed), the finish reason of choice 0, usage and any error."""
        out = Assembled()
        blocks: dict[tuple[int, str, Any], Block] = {}
        parts: dict[tuple[int, str, Any], list[str]] = {}

        def block(key: tuple[int, str, Any], kind: str) -> list[str]:
            if key not in blocks:
                blocks[key] = Block(kind, choice=key[0])
                parts[key] = []
            return parts[key]

        for _, p in payloads:
            if not isinstance(p, dict):
                continue
            err = error_message(p)
            if err is not None:
                out.error = err
                continue
            if out.id is None and isinstance(p.get("id"), str) and p["id"]:
                out.id = p["id"]
            if out.model is None and isinstance(p.get("model"), str) and p["model"]:
                out.model = p["model"]
            if isinstance(p.get("usage"), dict):
                out.usage = p["usage"]
            choices = p.get("choices")
            for c in choices if isinstance(choices, list) else ():
                if not isinstance(c, dict):
                    continue
                i = c["index"] if _is_index(c.get("index")) else 0
                msg = c.get("delta")
                if not isinstance(msg, dict):
                    msg = c.get("message")
                if isinstance(msg, dict):
                    _assemble_message(i, msg, block, blocks)
                finish = c.get("finish_reason")
                if finish is not None and (out.stop_reason is None or i == 0):
                    out.stop_reason = str(finish)
        for key, b in blocks.items():
            b.text = "".join(parts[key])
            if b.kind == "tool_call" and b.text:
                value, _ = parse_json(b.text)
                b.input = None if value is INVALID else value
        out.blocks = sorted(blocks.values(), key=lambda b: b.choice)
        return out

    def summarize(self, ev: Event, payload: Any) -> str:
        if payload is NO_DATA:
            if ev.is_comment:
                return ": " + ev.comments[0][:40]
            return "blank" if ev.is_blank else "no data"
        if payload is SENTINEL:
            return "[DONE]"
        if payload is INVALID:
            return f"invalid data {_clip(ev.data or '')}"
        if not isinstance(payload, dict):
            return "not an object"
        err = error_message(payload)
        if err is not None:
            return f"error {_clip(err, 60)}"
        if is_annotation(payload):
            return "content filter annotation"
        out: list[str] = []
        choices = payload.get("choices")
        many = isinstance(choices, list) and (
            len(choices) > 1 or any(isinstance(c, dict) and c.get("index") for c in choices)
        )
        for c in choices if isinstance(choices, list) else ():
            if isinstance(c, dict):
                prefix = f"[{c.get('index')}] " if many else ""
                out.extend(prefix + s for s in _summarize_choice(c))
        usage = payload.get("usage")
        if isinstance(usage, dict):
            out.append(
                f"usage {usage.get('prompt_tokens')}+{usage.get('completion_tokens')}"
                f"={usage.get('total_tokens')}"
            )
        return ", ".join(out) or "empty chunk"


def _check_tool_call(findings: Findings, pos: int, j: int, tc: Any, finish: Any) -> None:
    """One ``message.tool_calls[j]`` of a whole completion."""
    label = f"response choice {pos} tool call {j}"
    if not isinstance(tc, dict):
        findings.add("OAI-9", f"{label} is {_type_name(tc)}")
        return
    kind = tc.get("type")
    if _one_of(kind, TOOL_BODIES):
        body_key, args_key = TOOL_BODIES[kind]
    else:
        findings.add("OAI-9", f"{label} has type {kind!r}, not 'function'")
        return
    body = tc.get(body_key)
    if not (isinstance(tc.get("id"), str) and tc["id"]):
        findings.add("OAI-9", f"{label} has no id")
    if not isinstance(body, dict) or not (isinstance(body.get("name"), str) and body["name"]):
        findings.add("OAI-9", f"{label} has no {body_key}.name")
        return
    if kind != "function":
        return
    args = body.get(args_key)
    if args == "" or args is None:
        findings.add("OAI-12", f"{label} has empty arguments", severity=W)
        return
    value, _ = parse_json(args) if isinstance(args, str) else (INVALID, None)
    if type(value) is not dict:
        findings.add(
            "OAI-12",
            f"{label} arguments are not a JSON object: {str(args)[:60]!r}",
            severity=W if finish == "length" else None,
        )


def _rename(obj: Any, names: Mapping[str, str], at: tuple[Any, ...]) -> list[Edit]:
    if not isinstance(obj, dict):
        return []
    name = obj.get("name")
    if isinstance(name, str) and name in names and names[name] != name:
        return [Edit((*at, "name"), names[name])]
    return []


def _assemble_message(i: int, msg: dict[str, Any], block: Any, blocks: dict[Any, Block]) -> None:
    for field_name, kind in (
        ("reasoning_content", "thinking"),
        ("reasoning", "thinking"),
        ("content", "text"),
        ("refusal", "refusal"),
    ):
        text = msg.get(field_name)
        if isinstance(text, str) and text:
            block((i, kind, None), kind).append(text)
    tool_calls = msg.get("tool_calls")
    for pos, tc in enumerate(tool_calls if isinstance(tool_calls, list) else ()):
        if not isinstance(tc, dict):
            continue
        ti = tc["index"] if _is_index(tc.get("index")) else pos  # completions have no index
        key = (i, "tool_call", ti)
        args = block(key, "tool_call")
        b = blocks[key]
        tc_type = tc.get("type")
        body_key, args_key = TOOL_BODIES[tc_type if _one_of(tc_type, TOOL_BODIES) else "function"]
        body = tc.get(body_key)
        if isinstance(tc.get("id"), str) and tc["id"] and b.id is None:
            b.id = tc["id"]
        if isinstance(body, dict):
            if isinstance(body.get("name"), str) and body["name"] and b.name is None:
                b.name = body["name"]
            if isinstance(body.get(args_key), str):
                args.append(body[args_key])
    fc = msg.get("function_call")
    if isinstance(fc, dict):
        key = (i, "tool_call", "function_call")
        args = block(key, "tool_call")
        if isinstance(fc.get("name"), str) and blocks[key].name is None:
            blocks[key].name = fc["name"]
        if isinstance(fc.get("arguments"), str):
            args.append(fc["arguments"])


def _summarize_choice(c: dict[str, Any]) -> list[str]:
    out: list[str] = []
    delta = c.get("delta")
    if isinstance(delta, dict):
        if delta.get("role"):
            out.append(f"role {delta['role']}")
        for key, label in (
            ("reasoning_content", "reasoning"),
            ("reasoning", "reasoning"),
            ("content", "content"),
            ("refusal", "refusal"),
        ):
            text = delta.get(key)
            if isinstance(text, str) and text:
                out.append(f"{label} {_clip(text)}")
        tool_calls = delta.get("tool_calls")
        for tc in tool_calls if isinstance(tool_calls, list) else ():
            if not isinstance(tc, dict):
                continue
            body = tc.get("function") or tc.get("custom")
            body = body if isinstance(body, dict) else {}
            name = body.get("name")
            args = body.get("arguments", body.get("input"))
            if name:
                out.append(f"tool_call {name} #{tc.get('index')}")
            elif isinstance(args, str):
                out.append(f"tool_args #{tc.get('index')} {_clip(args)}")
    elif any(k in c for k in FILTER_FIELDS):
        out.append("content filter annotation")
    finish = c.get("finish_reason")
    if finish is not None:
        out.append(f"finish {finish}")
    return out


def _named(ptr: str, value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(value, dict):
        yield ptr, value


DIALECT = OpenAIChat()
