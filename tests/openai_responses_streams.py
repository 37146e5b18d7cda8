"""OpenAI Responses stream bodies for the tests, in the shape the real API sends.

Real streams (e.g. the captures in sse-rules.md §6) are ``event: <type>`` + one compact
``data:`` line per event, ``type`` first and ``sequence_number`` second in every object, numbered
from 0, ending with ``response.completed`` and no ``[DONE]``. Each healthy stream here is a list
of payloads (without sequence numbers); `body` numbers and encodes it, so broken variants are
made by editing a copy of the list.

Not a test module: imported by tests/test_openai_responses.py.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

RESP_ID = "resp_68c1f0a2b4e08190a3c6d1e2f3a4b5c6"
MODEL = "gpt-5-2025-08-07"
USAGE = {
    "input_tokens": 36,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 87,
    "output_tokens_details": {"reasoning_tokens": 64},
    "total_tokens": 123,
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
    {"type": "custom", "name": "apply_patch", "description": "Apply a patch"},
    {"type": "web_search"},
]


def response(
    status: str = "in_progress", output: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    """A Response object as lifecycle and terminal events carry it."""
    obj: dict[str, Any] = {
        "id": RESP_ID,
        "object": "response",
        "created_at": 1757540002,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": MODEL,
        "output": output or [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": copy.deepcopy(TOOLS),
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
    }
    obj.update(extra)
    return obj


def opening() -> list[dict[str, Any]]:
    return [
        {"type": "response.created", "response": response()},
        {"type": "response.in_progress", "response": response()},
    ]


def closing(
    output: list[dict[str, Any]], kind: str = "response.completed", **extra: Any
) -> dict[str, Any]:
    status = kind.removeprefix("response.")
    fields: dict[str, Any] = {"usage": USAGE}
    fields.update(extra)
    return {"type": kind, "response": response(status, copy.deepcopy(output), **fields)}


# --- items ----------------------------------------------------------------------------------------


def text_part(text: str = "") -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def message(
    index: int, chunks: list[str], msg_id: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(events, final item) of an assistant message streamed in `chunks`."""
    mid = msg_id if msg_id is not None else f"msg_68c1f0a3c0d88190{index:04d}"
    text = "".join(chunks)
    where = {"item_id": mid, "output_index": index, "content_index": 0}
    item = {
        "id": mid,
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    final = {**item, "status": "completed", "content": [text_part(text)]}
    events = [
        {"type": "response.output_item.added", "output_index": index, "item": item},
        {"type": "response.content_part.added", **where, "part": text_part()},
        *(
            {
                "type": "response.output_text.delta",
                **where,
                "delta": c,
                "logprobs": [],
                "obfuscation": "x7Qp",
            }
            for c in chunks
        ),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": text_part(text)},
        {"type": "response.output_item.done", "output_index": index, "item": final},
    ]
    return events, final


def reasoning(index: int, chunks: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(events, final item) of a reasoning item with one streamed summary part."""
    rid = f"rs_68c1f0a2f1a48190{index:04d}"
    text = "".join(chunks)
    where = {"item_id": rid, "output_index": index, "summary_index": 0}
    item = {"id": rid, "type": "reasoning", "summary": []}
    final = {
        **item,
        "summary": [{"type": "summary_text", "text": text}],
        "encrypted_content": "gAAAAABowfCj",
    }
    events = [
        {"type": "response.output_item.added", "output_index": index, "item": item},
        {
            "type": "response.reasoning_summary_part.added",
            **where,
            "part": {"type": "summary_text", "text": ""},
        },
        *(
            {
                "type": "response.reasoning_summary_text.delta",
                **where,
                "delta": c,
                "obfuscation": "k2",
            }
            for c in chunks
        ),
        {"type": "response.reasoning_summary_text.done", **where, "text": text},
        {
            "type": "response.reasoning_summary_part.done",
            **where,
            "part": {"type": "summary_text", "text": text},
        },
        {"type": "response.output_item.done", "output_index": index, "item": final},
    ]
    return events, final


def function_call(
    index: int, name: str, chunks: list[str], call_id: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(events, final item) of a function call whose arguments arrive in `chunks`."""
    fid = f"fc_68c1f0a4aa6c8190{index:04d}"
    cid = call_id or f"call_Kfzsl8lPJayEwvd0rkI{index:04d}"
    args = "".join(chunks)
    item = {
        "id": fid,
        "type": "function_call",
        "status": "in_progress",
        "arguments": "",
        "call_id": cid,
        "name": name,
    }
    final = {**item, "status": "completed", "arguments": args}
    where = {"item_id": fid, "output_index": index}
    events = [
        {"type": "response.output_item.added", "output_index": index, "item": item},
        *(
            {
                "type": "response.function_call_arguments.delta",
                **where,
                "delta": c,
                "obfuscation": "Zr",
            }
            for c in chunks
        ),
        {"type": "response.function_call_arguments.done", **where, "arguments": args, "name": name},
        {"type": "response.output_item.done", "output_index": index, "item": final},
    ]
    return events, final


def custom_call(
    index: int, name: str, chunks: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(events, final item) of a custom tool call (free-form input), as Codex's apply_patch."""
    cid = f"ctc_68c1f0a51b0c8190{index:04d}"
    text = "".join(chunks)
    item = {
        "id": cid,
        "type": "custom_tool_call",
        "status": "in_progress",
        "input": "",
        "call_id": f"call_pA7x{index:04d}",
        "name": name,
    }
    final = {**item, "status": "completed", "input": text}
    where = {"item_id": cid, "output_index": index}
    events = [
        {"type": "response.output_item.added", "output_index": index, "item": item},
        *({"type": "response.custom_tool_call_input.delta", **where, "delta": c} for c in chunks),
        {"type": "response.custom_tool_call_input.done", **where, "input": text},
        {"type": "response.output_item.done", "output_index": index, "item": final},
    ]
    return events, final


def web_search(index: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    wid = f"ws_68c1f0a3a2f08190{index:04d}"
    item = {"id": wid, "type": "web_search_call", "status": "in_progress"}
    final = {**item, "status": "completed", "action": {"type": "search", "query": "weather paris"}}
    where = {"item_id": wid, "output_index": index}
    events = [
        {"type": "response.output_item.added", "output_index": index, "item": item},
        {"type": "response.web_search_call.in_progress", **where},
        {"type": "response.web_search_call.searching", **where},
        {"type": "response.web_search_call.completed", **where},
        {"type": "response.output_item.done", "output_index": index, "item": final},
    ]
    return events, final


def assemble(
    *items: tuple[list[dict[str, Any]], dict[str, Any]],
    kind: str = "response.completed",
    **extra: Any,
) -> list[dict[str, Any]]:
    """A whole stream: opening, the items' events in order, the terminal event."""
    events = opening()
    for item_events, _final in items:
        events += item_events
    events.append(closing([final for _events, final in items], kind, **extra))
    return events


# --- encoding -------------------------------------------------------------------------------------


def number(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies with ``type`` first and ``sequence_number`` 0, 1, 2, ... second, as the API sends."""
    out = []
    for seq, p in enumerate(payloads):
        q = {"type": p["type"], "sequence_number": seq}
        q.update((k, v) for k, v in p.items() if k not in q)
        out.append(q)
    return out


def encode(payload: Any, name: str | None = "", eol: str = "\n") -> bytes:
    """One event; `name` "" means "the payload's type", None means no event: line."""
    if name == "":
        name = payload["type"]
    data = orjson.dumps(payload).decode()
    head = f"event: {name}{eol}" if name is not None else ""
    return f"{head}data: {data}{eol}{eol}".encode()


def body(payloads: list[dict[str, Any]], *, renumber: bool = True, eol: str = "\n") -> bytes:
    numbered = number(payloads) if renumber else payloads
    return b"".join(encode(p, eol=eol) for p in numbered)


def splice(payloads: list[dict[str, Any]], at: int, raw: bytes) -> bytes:
    """The numbered stream with `raw` bytes inserted before event `at`."""
    numbered = number(payloads)
    return body(numbered[:at], renumber=False) + raw + body(numbered[at:], renumber=False)


# --- healthy streams ------------------------------------------------------------------------------


def text_stream() -> list[dict[str, Any]]:
    return assemble(message(0, ["Hel", "lo", "! How", " can I", " help?"]))


def reasoning_stream() -> list[dict[str, Any]]:
    return assemble(
        reasoning(0, ["**Planning", " a reply**\n\nThe user", " greets me."]),
        message(1, ["Hi", " there", "."]),
    )


def tool_stream() -> list[dict[str, Any]]:
    return assemble(
        reasoning(0, ["**Checking", " the weather**"]),
        function_call(1, "get_weather", ['{"', "city", '":"', "Paris", '"}']),
    )


def parallel_tool_stream() -> list[dict[str, Any]]:
    return assemble(
        function_call(0, "get_weather", ['{"city":', '"Paris"}']),
        function_call(1, "get_weather", ['{"city":', '"Tokyo"}']),
        custom_call(2, "apply_patch", ["*** Begin Patch\n", "*** End Patch\n"]),
    )


def search_stream() -> list[dict[str, Any]]:
    return assemble(web_search(0), message(1, ["It is ", "sunny in Paris."]))


def incomplete_stream() -> list[dict[str, Any]]:
    """Cut by max_output_tokens: the item is finished as incomplete, the response too."""
    events, final = message(0, ["The answer is", " long and"])
    events[-1]["item"]["status"] = "incomplete"
    final["status"] = "incomplete"
    return (
        opening()
        + events
        + [
            closing(
                [final], "response.incomplete", incomplete_details={"reason": "max_output_tokens"}
            )
        ]
    )


HEALTHY = {
    "text": text_stream,
    "reasoning": reasoning_stream,
    "tool": tool_stream,
    "parallel-tools": parallel_tool_stream,
    "web-search": search_stream,
    "incomplete": incomplete_stream,
}


def find(payloads: list[dict[str, Any]], etype: str, nth: int = 0) -> int:
    """Index of the `nth` payload of type `etype`."""
    hits = [i for i, p in enumerate(payloads) if p["type"] == etype]
    return hits[nth]
