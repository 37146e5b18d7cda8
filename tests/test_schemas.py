"""Tool-schema sanitizers (openai, anthropic, gemini flavours) and the request lints."""

from __future__ import annotations

import copy
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.schemas import FLAVOURS
from mitmllm.protocol.schemas import GEMINI_KEYWORDS
from mitmllm.protocol.schemas import Sanitized
from mitmllm.protocol.schemas import applies
from mitmllm.protocol.schemas import default_schema
from mitmllm.protocol.schemas import lint
from mitmllm.protocol.schemas import sanitize

MISSING: Any = object()
FORMATS = ("anthropic", "openai-chat", "openai-responses", "gemini")
VALID_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def fn(name: Any = "get_weather", parameters: Any = MISSING, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "description": "d", **extra}
    if parameters is not MISSING:
        d["parameters"] = parameters
    return d


def body_with(fmt: str, *decls: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A request of `fmt` declaring function tools `decls` ({name, parameters, ...})."""
    if fmt == "openai-chat":
        tools = [{"type": "function", "function": d} for d in decls]
        return {"model": "gpt-4o", "messages": [], "tools": tools, **extra}
    if fmt == "openai-responses":
        return {
            "model": "gpt-5",
            "input": [],
            "tools": [{"type": "function", **d} for d in decls],
            **extra,
        }
    if fmt == "anthropic":
        tools = []
        for d in decls:
            t = {k: v for k, v in d.items() if k != "parameters"}
            if "parameters" in d:
                t["input_schema"] = d["parameters"]
            tools.append(t)
        return {"model": "claude-sonnet-4-5", "messages": [], "tools": tools, **extra}
    return {"contents": [], "tools": [{"functionDeclarations": list(decls)}], **extra}


def declared(fmt: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The function declarations of a body, schema under "parameters" whatever the format."""
    if fmt == "openai-chat":
        return [t["function"] for t in body["tools"]]
    if fmt == "openai-responses":
        return body["tools"]
    if fmt == "anthropic":
        return [{**t, "parameters": t.get("input_schema")} for t in body["tools"]]
    return body["tools"][0]["functionDeclarations"]


def actions(result: Sanitized) -> list[str]:
    return [c.action for c in result.changes]


# --- openai: schemas --------------------------------------------------------------------------

OBJ = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

OPENAI_SCHEMAS = [
    pytest.param({}, default_schema(), ["default-schema"], id="REQ-1-empty-object"),
    pytest.param(None, default_schema(), ["default-schema"], id="REQ-1-null"),
    pytest.param(MISSING, default_schema(), ["default-schema"], id="missing"),
    pytest.param("{not json", default_schema(), ["default-schema"], id="invalid-json-string"),
    pytest.param("{}", default_schema(), ["default-schema"], id="json-string-empty"),
    pytest.param("[1, 2]", default_schema(), ["default-schema"], id="json-string-array"),
    pytest.param(
        '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}',
        OBJ,
        ["parse-schema"],
        id="json-string-object",
    ),
    pytest.param({"type": "string"}, default_schema(), ["default-schema"], id="type-not-object"),
    pytest.param(
        {"type": "object", "properties": []},
        default_schema(),
        ["default-schema"],
        id="properties-not-object",
    ),
    pytest.param([], default_schema(), ["default-schema"], id="schema-is-list"),
    pytest.param(7, default_schema(), ["default-schema"], id="schema-is-number"),
    pytest.param(
        {"type": "object"},
        {"type": "object", "properties": {}},
        ["add-properties"],
        id="REQ-1-no-properties",
    ),
    pytest.param(
        {"properties": {"city": {"type": "string"}}, "required": ["city"]},
        OBJ,
        ["add-type"],
        id="no-type",
    ),
    pytest.param(
        {"required": []},
        {"required": [], "type": "object", "properties": {}},
        ["add-type", "add-properties"],
        id="no-type-no-properties",
    ),
    pytest.param(
        {"type": "object", "additionalProperties": True},
        {"type": "object", "additionalProperties": True, "properties": {}},
        ["add-properties"],
        id="keeps-additionalProperties",
    ),
    pytest.param(OBJ, OBJ, [], id="valid"),
]


@pytest.mark.parametrize("fmt", ["openai-chat", "openai-responses"])
@pytest.mark.parametrize(("schema", "expected", "expected_actions"), OPENAI_SCHEMAS)
def test_openai_schema(fmt: str, schema: Any, expected: Any, expected_actions: list[str]) -> None:
    body = body_with(fmt, fn(parameters=copy.deepcopy(schema)))
    before = copy.deepcopy(body)
    result = sanitize(fmt, body, "openai")
    assert actions(result) == expected_actions
    assert declared(fmt, body)[0]["parameters"] == expected
    if not expected_actions:
        assert body == before
    for change in result.changes:
        assert change.path.startswith("/tools/0/")
        assert change.tool == "get_weather"


def test_openai_default_schemas_are_independent() -> None:
    body = body_with("openai-chat", fn("a", {}), fn("b", None))
    sanitize("openai-chat", body, "openai")
    first, second = declared("openai-chat", body)
    first["parameters"]["properties"]["x"] = {}
    assert second["parameters"]["properties"] == {}


def test_openai_legacy_functions() -> None:
    body = {"model": "gpt-3.5-turbo", "messages": [], "functions": [fn("a.b", {})]}
    result = sanitize("openai-chat", body, "openai")
    assert body["functions"][0] == {
        "name": "a_b",
        "description": "d",
        "parameters": default_schema(),
    }
    assert result.names == {"a_b": "a.b"}


# --- openai: dropping and renaming ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["openai-chat", "openai-responses"])
def test_openai_drops_nameless_tools(fmt: str) -> None:
    decls = [fn("keep1", OBJ), fn("", OBJ), fn("  \t", OBJ), fn("keep2", OBJ)]
    nameless = {k: v for k, v in fn("x", OBJ).items() if k != "name"}
    body = body_with(fmt, *decls, nameless)
    result = sanitize(fmt, body, "openai")
    assert [d["name"] for d in declared(fmt, body)] == ["keep1", "keep2"]
    assert [(c.action, c.path, c.before) for c in result.changes] == [
        ("drop-tool", "/tools/1", ""),
        ("drop-tool", "/tools/2", "  \t"),
        ("drop-tool", "/tools/4", None),
    ]


def test_openai_name_with_bad_characters() -> None:
    body = body_with("openai-chat", fn("mcp__github.create/issue", OBJ))
    result = sanitize("openai-chat", body, "openai")
    assert declared("openai-chat", body)[0]["name"] == "mcp__github_create_issue"
    assert result.names == {"mcp__github_create_issue": "mcp__github.create/issue"}
    assert actions(result) == ["rename"]


def test_openai_long_name_is_shortened_with_hash() -> None:
    long = "mcp__some_server__" + "very_long_tool_name_" * 4
    body = body_with("openai-chat", fn(long, OBJ))
    result = sanitize("openai-chat", body, "openai")
    new = declared("openai-chat", body)[0]["name"]
    assert VALID_NAME.fullmatch(new) and len(new) == 64
    assert new.startswith("mcp__some_server__very_long")
    assert re.search(r"_[0-9a-f]{8}$", new)
    assert result.names == {new: long}
    again = body_with("openai-chat", fn(long, OBJ))
    sanitize("openai-chat", again, "openai")
    assert declared("openai-chat", again)[0]["name"] == new  # deterministic


def test_openai_renamed_names_are_unique_within_the_request() -> None:
    prefix = "x" * 70
    names = ["get.weather", "get_weather", prefix + "a", prefix + "b", "天气", "地图"]
    body = body_with("openai-chat", *(fn(n, OBJ) for n in names))
    result = sanitize("openai-chat", body, "openai")
    new = [d["name"] for d in declared("openai-chat", body)]
    assert len(set(new)) == len(new)
    assert all(VALID_NAME.fullmatch(n) for n in new)
    assert new[1] == "get_weather"  # a valid name is never changed
    assert new[0] != "get_weather"
    assert {result.names[n] for n in new if n in result.names} == set(names) - {"get_weather"}


def test_openai_chat_renames_references() -> None:
    bad = "files.read"
    body = body_with(
        "openai-chat",
        fn(bad, OBJ),
        tool_choice={"type": "function", "function": {"name": bad}},
        function_call={"name": bad},
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": bad, "arguments": "{}"}},
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "other", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "name": bad, "content": "ok"},
            {"role": "assistant", "function_call": {"name": bad, "arguments": "{}"}},
            {"role": "function", "name": bad, "content": "ok"},
        ],
    )
    result = sanitize("openai-chat", body, "openai")
    msgs = body["messages"]
    assert body["tool_choice"]["function"]["name"] == "files_read"
    assert body["function_call"]["name"] == "files_read"
    assert msgs[1]["tool_calls"][0]["function"]["name"] == "files_read"
    assert msgs[1]["tool_calls"][1]["function"]["name"] == "other"
    assert msgs[2]["name"] == msgs[3]["function_call"]["name"] == msgs[4]["name"] == "files_read"
    assert result.names == {"files_read": bad}
    assert [c.path for c in result.changes if c.action == "rename"] == [
        "/tools/0/function/name",
        "/tool_choice/function/name",
        "/function_call/name",
        "/messages/1/tool_calls/0/function/name",
        "/messages/2/name",
        "/messages/3/function_call/name",
        "/messages/4/name",
    ]


def test_openai_chat_allowed_tools_choice() -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "auto",
            "tools": [{"type": "function", "function": {"name": "a.b"}}],
        },
    }
    body = body_with("openai-chat", fn("a.b", OBJ), tool_choice=choice)
    sanitize("openai-chat", body, "openai")
    assert choice["allowed_tools"]["tools"][0]["function"]["name"] == "a_b"


def test_openai_responses_renames_references_and_custom_tools() -> None:
    body = {
        "model": "gpt-5",
        "tools": [
            {"type": "function", "name": "fs.read", "parameters": OBJ},
            {"type": "custom", "name": "apply.patch"},
            {"type": "web_search"},
        ],
        "tool_choice": {"type": "function", "name": "fs.read"},
        "input": [
            {"role": "user", "content": "hi"},
            {"type": "function_call", "call_id": "c1", "name": "fs.read", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            {"type": "custom_tool_call", "call_id": "c2", "name": "apply.patch", "input": "x"},
        ],
    }
    result = sanitize("openai-responses", body, "openai")
    assert [t.get("name") for t in body["tools"]] == ["fs_read", "apply_patch", None]
    assert body["tools"][2] == {"type": "web_search"}
    assert body["tool_choice"]["name"] == "fs_read"
    assert body["input"][1]["name"] == "fs_read"
    assert body["input"][3]["name"] == "apply_patch"
    assert result.names == {"fs_read": "fs.read", "apply_patch": "apply.patch"}


def test_openai_allowed_tools_in_responses() -> None:
    choice = {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "function", "name": "a.b"}],
    }
    body = body_with("openai-responses", fn("a.b", OBJ), tool_choice=choice)
    sanitize("openai-responses", body, "openai")
    assert choice["tools"][0]["name"] == "a_b"


def test_openai_flavour_leaves_other_formats_alone() -> None:
    for fmt in ("anthropic", "gemini"):
        body = body_with(fmt, fn("a.b", {}))
        before = copy.deepcopy(body)
        assert sanitize(fmt, body, "openai").changes == []
        assert body == before


# --- anthropic ----------------------------------------------------------------------------------


def test_anthropic_removes_custom_type() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "tools": [
            {"type": "custom", "name": "get_weather", "input_schema": OBJ},
            {"name": "plain", "input_schema": OBJ},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ],
    }
    result = sanitize("anthropic", body, "anthropic")
    assert body["tools"][0] == {"name": "get_weather", "input_schema": OBJ}
    assert body["tools"][1] == {"name": "plain", "input_schema": OBJ}
    assert body["tools"][2]["type"] == "web_search_20250305"
    assert [(c.action, c.path, c.before) for c in result.changes] == [
        ("remove-type", "/tools/0/type", "custom")
    ]


@pytest.mark.parametrize("combinator", ["oneOf", "anyOf", "allOf"])
def test_REQ_4_anthropic_top_level_combinator_is_noted_not_changed(combinator: str) -> None:
    schema = {"type": "object", combinator: [{"required": ["a"]}, {"required": ["b"]}]}
    body = body_with("anthropic", fn("t", schema))
    before = copy.deepcopy(body)
    result = sanitize("anthropic", body, "anthropic")
    assert result.changes == []
    assert body == before
    assert [(n.rule, n.path) for n in result.notes] == [
        ("REQ-4", f"/tools/0/input_schema/{combinator}")
    ]


# --- gemini -----------------------------------------------------------------------------------

NODE = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "child": {"$ref": "#/$defs/Node"}},
}

GEMINI_SCHEMAS = [
    pytest.param(
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
        {"type": "object"},
        ["remove-keyword"],
        id="$schema",
    ),
    pytest.param(
        {"type": "object", "properties": {}, "additionalProperties": False},
        {"type": "object", "properties": {}},
        ["remove-keyword"],
        id="additionalProperties",
    ),
    pytest.param(
        {"properties": {"kind": {"const": "leaf"}}},
        {"properties": {"kind": {"enum": ["leaf"], "type": "string"}}},
        ["const-to-enum"],
        id="const-to-enum",
    ),
    pytest.param(
        {"properties": {"n": {"type": "integer", "const": 3}}},
        {"properties": {"n": {"type": "integer"}}},
        ["remove-keyword"],
        id="const-number-dropped",
    ),
    pytest.param(
        {"properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {"type": "string"}}},
        {"properties": {"a": {"type": "string"}}},
        ["deref", "remove-keyword"],
        id="$ref-$defs",
    ),
    pytest.param(
        {
            "properties": {"a": {"$ref": "#/definitions/A", "description": "mine"}},
            "definitions": {"A": {"type": "string", "description": "theirs"}},
        },
        {"properties": {"a": {"type": "string", "description": "mine"}}},
        ["deref", "remove-keyword"],
        id="$ref-definitions-siblings-win",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {"root": {"$ref": "#/$defs/Node"}},
            "$defs": {"Node": NODE},
        },
        {
            "type": "object",
            "properties": {
                "root": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "child": {"type": "object"}},
                }
            },
        },
        ["deref", "recursive-ref", "remove-keyword"],
        id="recursive-ref",
    ),
    pytest.param(
        {"properties": {"self": {"$ref": "#"}}},
        {"properties": {"self": {"properties": {"self": {"type": "object"}}}}},
        ["deref", "recursive-ref"],
        id="root-ref",
    ),
    pytest.param(
        {"properties": {"a": {"$ref": "https://example.com/a.json"}}},
        {"properties": {"a": {"type": "object"}}},
        ["unresolved-ref"],
        id="external-ref",
    ),
    pytest.param(
        {"properties": {"a": {"$ref": "#/$defs/Missing"}}},
        {"properties": {"a": {"type": "object"}}},
        ["unresolved-ref"],
        id="missing-ref",
    ),
    pytest.param(
        {"type": "integer", "exclusiveMinimum": 0},
        {"type": "integer", "minimum": 1},
        ["exclusive-bound"],
        id="exclusiveMinimum-integer",
    ),
    pytest.param(
        {"type": "integer", "exclusiveMaximum": 10, "maximum": 5},
        {"type": "integer", "maximum": 5},
        ["exclusive-bound"],
        id="exclusiveMaximum-tighter-maximum-kept",
    ),
    pytest.param(
        {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
        {"type": "integer", "minimum": 1},
        ["exclusive-bound"],
        id="exclusiveMinimum-draft4-flag",
    ),
    pytest.param(
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "number"},
        ["remove-keyword"],
        id="exclusiveMinimum-number-dropped",
    ),
    pytest.param(
        {"type": "integer", "exclusiveMaximum": 2.5},
        {"type": "integer"},
        ["remove-keyword"],
        id="exclusiveMaximum-fraction-dropped",
    ),
    pytest.param(
        {
            "properties": {
                "e": {"type": "string", "format": "email"},
                "t": {"type": "string", "format": "date-time"},
                "k": {"type": "string", "format": "enum", "enum": ["a"]},
            }
        },
        {
            "properties": {
                "e": {"type": "string"},
                "t": {"type": "string", "format": "date-time"},
                "k": {"type": "string", "format": "enum", "enum": ["a"]},
            }
        },
        ["remove-keyword"],
        id="format",
    ),
    pytest.param(
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        ["oneof-to-anyof"],
        id="oneOf",
    ),
    pytest.param(
        {
            "allOf": [
                {"properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "string"}}, "required": ["b"]},
            ],
            "type": "object",
        },
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "required": ["a", "b"],
        },
        ["merge-allof"],
        id="allOf",
    ),
    pytest.param(
        {"properties": {"x": {"type": ["string", "null"]}}},
        {"properties": {"x": {"type": "string", "nullable": True}}},
        ["type-list"],
        id="type-list-nullable",
    ),
    pytest.param(
        {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"v": {"anyOf": [{"const": "a"}, {"$schema": "x"}]}},
            },
        },
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"v": {"anyOf": [{"enum": ["a"], "type": "string"}, {}]}},
            },
        },
        ["remove-keyword", "const-to-enum", "remove-keyword"],
        id="nested",
    ),
    pytest.param(
        {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
        {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        ["items-to-anyof"],
        id="items-list",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {"p": {"type": "string", "pattern": "^a", "not": {"const": "b"}}},
        },
        {"type": "object", "properties": {"p": {"type": "string", "pattern": "^a"}}},
        ["remove-keyword"],
        id="unknown-keyword",
    ),
]


@pytest.mark.parametrize(("schema", "expected", "expected_actions"), GEMINI_SCHEMAS)
def test_gemini_schema(schema: dict[str, Any], expected: Any, expected_actions: list[str]) -> None:
    original = copy.deepcopy(schema)
    body = body_with("gemini", fn("f", schema))
    result = sanitize("gemini", body, "gemini")
    assert declared("gemini", body)[0]["parameters"] == expected
    assert actions(result) == expected_actions
    assert schema == original  # a new schema replaced it; the original object is untouched
    assert "$ref" not in repr(expected)


def test_gemini_valid_schema_untouched() -> None:
    schema = {
        "type": "object",
        "properties": {
            "q": {"type": "string", "description": "query", "enum": ["a", "b"]},
            "n": {"type": "integer", "minimum": 1},
        },
        "required": ["q"],
        "propertyOrdering": ["q", "n"],
    }
    body = body_with("gemini", fn("f", schema))
    result = sanitize("gemini", body, "gemini")
    assert result.changes == []
    assert declared("gemini", body)[0]["parameters"] is schema


def test_gemini_leaves_parametersJsonSchema_alone() -> None:
    decl = {
        "name": "f",
        "parametersJsonSchema": {"type": "object", "$defs": {}, "additionalProperties": False},
    }
    body = {"contents": [], "tools": [{"functionDeclarations": [decl]}]}
    before = copy.deepcopy(body)
    assert sanitize("gemini", body, "gemini").changes == []
    assert body == before


@pytest.mark.parametrize("fmt", ["openai-chat", "openai-responses", "anthropic"])
def test_gemini_flavour_cleans_other_formats(fmt: str) -> None:
    """Gemini's OpenAI-compatible endpoint reads the same schemas."""
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": False,
        "$schema": "x",
    }
    body = body_with(fmt, fn("f", schema))
    result = sanitize(fmt, body, "gemini")
    assert declared(fmt, body)[0]["parameters"] == {
        "type": "object",
        "properties": {"a": {"type": "string"}},
    }
    assert actions(result) == ["remove-keyword", "remove-keyword"]


def test_gemini_ref_explosion_is_bounded() -> None:
    # Each definition refers to the next one twice: inlining everything would take 2**24 copies.
    defs = {
        f"D{i}": {
            "type": "object",
            "properties": {"l": {"$ref": f"#/$defs/D{i + 1}"}, "r": {"$ref": f"#/$defs/D{i + 1}"}},
        }
        for i in range(24)
    }
    defs["D24"] = {"type": "string"}
    schema = {"$ref": "#/$defs/D0", "$defs": defs}
    body = body_with("gemini", fn("f", schema))
    start = time.monotonic()
    result = sanitize("gemini", body, "gemini")
    assert time.monotonic() - start < 5
    assert "$ref" not in repr(declared("gemini", body)[0]["parameters"])
    assert "unresolved-ref" in actions(result)


def test_gemini_deep_nesting_does_not_raise() -> None:
    schema: dict[str, Any] = {"type": "string", "format": "email"}
    for _ in range(300):
        schema = {"type": "object", "properties": {"x": schema}}
    body = body_with("gemini", fn("f", schema))
    result = sanitize("gemini", body, "gemini")
    assert any("deeper" in n.reason for n in result.notes)


def test_gemini_keywords_are_kept() -> None:
    schema = {
        k: "x"
        for k in GEMINI_KEYWORDS
        if k not in ("properties", "items", "anyOf", "format", "type")
    }
    body = body_with("gemini", fn("f", schema))
    assert sanitize("gemini", body, "gemini").changes == []


# --- none, applicability, odd input -----------------------------------------------------------


def test_none_flavour_does_nothing() -> None:
    for fmt in FORMATS:
        body = body_with(fmt, fn("a.b", {"$schema": "x"}), tool_choice="auto")
        before = copy.deepcopy(body)
        result = sanitize(fmt, body, "none")
        assert (result.changes, result.notes, result.names) == ([], [], {})
        assert body == before


def test_applies() -> None:
    assert [f for f in FORMATS if applies("openai", f)] == ["openai-chat", "openai-responses"]
    assert [f for f in FORMATS if applies("anthropic", f)] == ["anthropic"]
    assert [f for f in FORMATS if applies("gemini", f)] == list(FORMATS)
    assert not any(applies("none", f) for f in FORMATS)


@pytest.mark.parametrize(
    ("fmt", "flavour", "body", "note_path"),
    [
        ("openai-chat", "openai", {"tools": "all of them"}, "/tools"),
        ("openai-chat", "openai", {"tools": [3]}, "/tools/0"),
        (
            "openai-chat",
            "openai",
            {"tools": [{"type": "function", "function": "f"}]},
            "/tools/0/function",
        ),
        (
            "openai-chat",
            "openai",
            {"tools": [{"type": "function", "function": {"name": 7}}]},
            "/tools/0/function/name",
        ),
        ("openai-chat", "openai", {"functions": {"name": "x"}}, "/functions"),
        (
            "gemini",
            "gemini",
            {"tools": [{"functionDeclarations": {"name": "f"}}]},
            "/tools/0/functionDeclarations",
        ),
        (
            "gemini",
            "gemini",
            {"tools": [{"functionDeclarations": [None]}]},
            "/tools/0/functionDeclarations/0",
        ),
        (
            "gemini",
            "gemini",
            {"tools": [{"functionDeclarations": [{"name": "f", "parameters": "{}"}]}]},
            "/tools/0/functionDeclarations/0/parameters",
        ),
    ],
)
def test_odd_input_is_left_alone_and_noted(
    fmt: str, flavour: str, body: dict[str, Any], note_path: str
) -> None:
    before = copy.deepcopy(body)
    result = sanitize(fmt, body, flavour)
    assert result.changes == []
    assert body == before
    assert [n.path for n in result.notes] == [note_path]
    assert all(n.action == "note" for n in result.notes)


def test_non_object_body() -> None:
    for body in (None, [], "x", 1):
        for flavour in FLAVOURS:
            assert sanitize("openai-chat", body, flavour).changes == []


def test_to_dict_is_json_like() -> None:
    body = body_with("openai-chat", fn("a.b", {}))
    d = sanitize("openai-chat", body, "openai").to_dict()
    assert d["flavour"] == "openai"
    assert d["names"] == {"a_b": "a.b"}
    assert d["changes"][0] == {
        "tool": "a.b",
        "path": "/tools/0/function/parameters",
        "action": "default-schema",
        "before": {},
        "after": default_schema(),
        "reason": "parameters is {}",
    }


# --- properties -------------------------------------------------------------------------------

_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.text(max_size=4)
    | st.sampled_from(
        [
            "#",
            "#/$defs/a",
            "#/properties/a",
            "object",
            "integer",
            "string",
            "null",
            "email",
            "date-time",
        ]
    )
)
_keyword = st.sampled_from(
    [
        "type",
        "properties",
        "items",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "$defs",
        "const",
        "enum",
        "format",
        "exclusiveMinimum",
        "minimum",
        "additionalProperties",
        "required",
        "a",
        "not",
    ]
)
_schema = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(_keyword | st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=16,
)
_name = st.text(max_size=70) | st.sampled_from(["a.b", "ok", "x" * 70, "", " "]) | st.none()


@st.composite
def _bodies(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    fmt = draw(st.sampled_from(FORMATS))
    decls = draw(st.lists(st.builds(fn, _name, _schema), max_size=3))
    extra: dict[str, Any] = {}
    if draw(st.booleans()) and decls:
        name = decls[0]["name"]
        extra["tool_choice"] = {"type": "function", "name": name, "function": {"name": name}}
        extra["messages"] = [
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": name}}]}
        ]
        extra["input"] = [{"type": "function_call", "name": name}]
    return fmt, body_with(fmt, *decls, **extra)


def has_ref(schema: Any) -> bool:
    """Is there a $ref at a schema position (not inside enum, default, example data)?"""
    if not isinstance(schema, dict):
        return False
    subs: list[Any] = []
    if isinstance(schema.get("properties"), dict):
        subs += schema["properties"].values()
    for key in ("items", "anyOf"):
        value = schema.get(key)
        subs += value if isinstance(value, list) else [value]
    return "$ref" in schema or any(has_ref(s) for s in subs)


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(_bodies(), st.sampled_from(FLAVOURS))
def test_sanitize_never_raises_is_idempotent_and_only_changes_what_it_reports(
    case: tuple[str, dict[str, Any]], flavour: str
) -> None:
    fmt, body = case
    before = copy.deepcopy(body)
    first = sanitize(fmt, body, flavour)
    if not first.changes:
        assert body == before
    after_first = copy.deepcopy(body)
    second = sanitize(fmt, body, flavour)
    assert second.changes == [], [c.to_dict() for c in second.changes]
    assert body == after_first
    if flavour == "openai" and fmt in ("openai-chat", "openai-responses"):
        names = [d.get("name") for d in declared(fmt, body)]
        assert all(
            isinstance(n, str) and VALID_NAME.fullmatch(n)
            for n in names
            if not isinstance(n, int | float | bool | list | dict)
        )
        assert set(first.names.values()) <= {d.get("name") for d in declared(fmt, before)}
    if flavour == "gemini" and fmt == "gemini":
        assert not any(has_ref(d.get("parameters")) for d in declared(fmt, body))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(_bodies())
def test_lint_never_raises_and_uses_request_rules(case: tuple[str, dict[str, Any]]) -> None:
    fmt, body = case
    findings = Findings()
    lint(fmt, body, findings)
    assert set(findings.rules()) <= {"REQ-1", "REQ-2", "REQ-4"}


# --- lint ---------------------------------------------------------------------------------------


def lint_rules(fmt: str, body: Any) -> list[str]:
    findings = Findings()
    lint(fmt, body, findings)
    assert all(f.severity == Severity.WARNING for f in findings)
    return [f.rule for f in findings]


@pytest.mark.parametrize(
    ("fmt", "schema", "rules"),
    [
        pytest.param("openai-chat", {}, ["REQ-1"], id="REQ-1-empty"),
        pytest.param("openai-chat", None, ["REQ-1"], id="REQ-1-null"),
        pytest.param("openai-chat", {"type": "object"}, ["REQ-1"], id="REQ-1-no-properties"),
        pytest.param("openai-chat", {"type": "string"}, ["REQ-1"], id="REQ-1-not-object"),
        pytest.param("openai-chat", '{"type": "object"}', ["REQ-1"], id="REQ-1-string"),
        pytest.param("openai-chat", {"properties": {}}, ["REQ-1"], id="REQ-1-no-type"),
        pytest.param("openai-responses", {}, ["REQ-1"], id="REQ-1-responses"),
        pytest.param("openai-chat", OBJ, [], id="valid"),
        pytest.param("openai-chat", MISSING, [], id="missing-is-allowed"),
        pytest.param("anthropic", {}, [], id="anthropic-is-not-REQ-1"),
        pytest.param("anthropic", {"anyOf": [OBJ, OBJ]}, ["REQ-4"], id="REQ-4-anyOf"),
        pytest.param("anthropic", {"type": "object", "oneOf": [OBJ]}, ["REQ-4"], id="REQ-4-oneOf"),
        pytest.param(
            "anthropic",
            {"type": "object", "properties": {"a": {"anyOf": [OBJ]}}},
            [],
            id="REQ-4-nested-is-fine",
        ),
        pytest.param("gemini", {}, [], id="gemini"),
    ],
)
def test_lint_schemas(fmt: str, schema: Any, rules: list[str]) -> None:
    assert lint_rules(fmt, body_with(fmt, fn("t", schema))) == rules


@pytest.mark.parametrize(
    ("fmt", "tools", "rules"),
    [
        pytest.param(
            "openai-chat",
            [{"type": "custom", "custom": {"name": "patch"}}],
            ["REQ-2"],
            id="REQ-2-chat-custom",
        ),
        pytest.param(
            "openai-chat",
            [{"name": "t", "input_schema": OBJ}],
            ["REQ-2"],
            id="REQ-2-chat-anthropic-shaped",
        ),
        pytest.param(
            "anthropic",
            [{"type": "custom", "name": "t", "input_schema": OBJ}],
            ["REQ-2"],
            id="REQ-2-anthropic-custom",
        ),
        pytest.param(
            "openai-responses",
            [{"type": "custom", "name": "apply_patch"}],
            ["REQ-2"],
            id="REQ-2-responses-custom",
        ),
        pytest.param(
            "openai-chat", [{"type": "function", "function": fn("t", OBJ)}], [], id="chat-function"
        ),
        pytest.param(
            "anthropic",
            [
                {"name": "t", "input_schema": OBJ},
                {"type": "web_search_20250305", "name": "web_search"},
            ],
            [],
            id="anthropic-plain-and-server-tool",
        ),
        pytest.param("openai-responses", [{"type": "web_search"}], [], id="responses-builtin"),
        pytest.param("openai-chat", ["junk", None], [], id="junk-entries"),
    ],
)
def test_lint_tool_types(fmt: str, tools: list[Any], rules: list[str]) -> None:
    assert lint_rules(fmt, {"model": "m", "tools": tools}) == rules


def test_lint_leaves_the_request_alone() -> None:
    body = body_with("openai-chat", fn("a.b", {}))
    before = copy.deepcopy(body)
    assert lint_rules("openai-chat", body) == ["REQ-1"]
    assert body == before
