"""Where a request declares its tools: one `ToolSpec` per named declaration (a leaf module).

Each dialect says where its own format keeps tool declarations and tool-name references
(`Dialect.tool_specs`, `Dialect.tool_name_references`); the sanitizers in
`mitmllm.protocol.schemas` then work on `ToolSpec`s without knowing the format. Sans-I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Reports an odd shape that is left alone: (JSON Pointer, reason).
Note = Callable[[str, str], None]


@dataclass(slots=True)
class ToolSpec:
    """A named tool declaration: `spec` holds its name (and its schema under `schema_key`)."""

    owner: list[Any]  # the list holding the declaration's entry
    index: int
    pointer: str  # the entry
    spec: dict[str, Any]
    spec_pointer: str
    schema_key: str | None  # None: a tool without a JSON schema (grammar tools)

    @property
    def name(self) -> Any:
        return self.spec.get("name")

    @property
    def schema_pointer(self) -> str:
        return f"{self.spec_pointer}/{self.schema_key}"


def listed(obj: dict[str, Any], key: str, ptr: str, note: Note) -> list[Any]:
    """obj[key] if it is a list; [] if absent or null; [] and a note otherwise."""
    value = obj.get(key)
    if isinstance(value, list):
        return value
    if value is not None:
        note(ptr, f"{key} is {kind_of(value)}, not a list")
    return []


def each_tool(
    body: dict[str, Any], note: Note
) -> Iterator[tuple[list[Any], int, str, dict[str, Any]]]:
    """(tools list, index, pointer, entry) for every object in the body's ``tools``."""
    tools = listed(body, "tools", "/tools", note)
    for i, tool in enumerate(tools):
        ptr = f"/tools/{i}"
        if isinstance(tool, dict):
            yield tools, i, ptr, tool
        else:
            note(ptr, f"tool is {kind_of(tool)}, not an object")


def kind_of(value: Any) -> str:
    """A JSON value's kind for messages: "an object", "a list", "null", ..."""
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
