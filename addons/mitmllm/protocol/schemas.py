"""Tool-schema sanitizers and request lints.

Clients declare tools with JSON schemas that their own upstream accepts; a different upstream
may reject the same request with HTTP 400. A *flavour* names the rules of the upstream a request
goes to, and `sanitize` rewrites the tool declarations of a parsed request body to fit them.

Where tools live in a request is the dialect's knowledge (`Dialect.tool_specs`,
`Dialect.tool_name_references`); this module works on the `ToolSpec`s it yields.

Flavours:

* ``openai`` (OpenAI-compatible targets; Chat and Responses bodies): tools without a name are
  dropped; a missing, null, ``{}``, non-object or unparsable schema becomes `default_schema()`; a
  JSON string that parses to an object is replaced by that object; a missing ``type`` or
  ``properties`` is added (``additionalProperties`` stays as the caller set it). Names longer
  than 64 characters or outside ``[A-Za-z0-9_-]`` are replaced by a readable, deterministic
  name unique within the request (a hash suffix when needed), and renamed in ``tool_choice``
  and in earlier tool calls of the conversation; `Sanitized.names` maps them back.
* ``anthropic`` (Anthropic bodies): the ``"type": "custom"`` shorthand is removed; a top-level
  ``oneOf``/``anyOf``/``allOf`` in ``input_schema`` is noted (REQ-4), not changed.
* ``gemini`` (every format, as Gemini's OpenAI-compatible endpoint reads OpenAI bodies): the
  schema is reduced to the OpenAPI subset Gemini's ``parameters`` accepts. ``$ref`` is inlined
  (a recursive reference becomes ``{"type": "object"}``), ``allOf`` is merged, ``oneOf``
  becomes ``anyOf``, a string ``const`` becomes ``enum``, ``type: [T, "null"]`` becomes
  ``type: T, nullable: true``, exclusive integer bounds become inclusive ones, and keywords
  outside the subset (``$schema``, ``additionalProperties``, ``$defs``, unsupported ``format``
  values, ...) are removed. ``parametersJsonSchema`` takes full JSON Schema and is left alone.
* ``none``: nothing.

Every change is recorded as a `SchemaChange` whose ``path`` is a JSON Pointer into the body as
the client sent it. Input this module does not understand is left alone and reported in
`Sanitized.notes`; nothing here raises on odd input.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Literal

import orjson

from mitmllm.protocol.detect import by_name
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.toolspec import ToolSpec
from mitmllm.protocol.toolspec import kind_of as _kind

Flavour = Literal["none", "openai", "anthropic", "gemini"]
FLAVOURS: tuple[Flavour, ...] = ("none", "openai", "anthropic", "gemini")


def default_schema() -> dict[str, Any]:
    """What an OpenAI-compatible upstream accepts for "no parameters" (a fresh copy)."""
    return {"type": "object", "properties": {}, "additionalProperties": False}


_NAME_OK = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME_BAD_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_NAME_MAX = 64
_HASH_LEN = 8

# The keywords of the OpenAPI Schema subset that Gemini's `parameters` accepts.
GEMINI_KEYWORDS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
        "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
        "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum",
        "maximum",
    }
)  # fmt: skip
GEMINI_FORMATS = frozenset({"enum", "date-time", "float", "double", "int32", "int64"})
# Inlining references can grow a schema exponentially; past this many inlined objects per
# tool, further references become {"type": "object"}.
_REF_BUDGET = 2000
_MAX_DEPTH = 64


def applies(flavour: str, fmt: str) -> bool:
    """Does `flavour` do anything to request bodies of format `fmt`? A flavour applies to the
    formats whose own API enforces it; ``gemini`` to every format (Gemini's OpenAI-compatible
    endpoint reads OpenAI bodies)."""
    if flavour == "gemini":
        return True
    dialect = _dialect(fmt)
    return flavour != "none" and dialect is not None and dialect.native_flavour == flavour


@dataclass(slots=True)
class SchemaChange:
    """One change to a request's tools, or a change-less note (action ``note``).

    Actions: ``drop-tool``, ``default-schema``, ``parse-schema``, ``add-type``,
    ``add-properties``, ``rename`` (openai); ``remove-type`` (anthropic); ``remove-keyword``,
    ``const-to-enum``, ``deref``, ``recursive-ref``, ``unresolved-ref``, ``oneof-to-anyof``,
    ``merge-allof``, ``type-list``, ``items-to-anyof``, ``exclusive-bound`` (gemini).
    """

    tool: str | None
    path: str  # JSON Pointer into the request body as the client sent it
    action: str
    before: Any = None
    after: Any = None
    reason: str = ""
    rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tool": self.tool, "path": self.path, "action": self.action}
        if self.before is not None:
            d["before"] = self.before
        if self.after is not None:
            d["after"] = self.after
        if self.reason:
            d["reason"] = self.reason
        if self.rule:
            d["rule"] = self.rule
        return d


@dataclass(slots=True)
class Sanitized:
    """What `sanitize` did. The body was modified in place only if `changes` is non-empty."""

    flavour: str
    changes: list[SchemaChange] = field(default_factory=list)
    notes: list[SchemaChange] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # upstream name -> client name

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"flavour": self.flavour}
        if self.changes:
            d["changes"] = [c.to_dict() for c in self.changes]
        if self.notes:
            d["notes"] = [n.to_dict() for n in self.notes]
        if self.names:
            d["names"] = dict(self.names)
        return d


def sanitize(fmt: str, body: Any, flavour: str) -> Sanitized:
    """Rewrite the tool declarations of a parsed request body for `flavour` (see the module
    docstring)."""
    out = Sanitized(flavour)
    if not isinstance(body, dict) or not applies(flavour, fmt):
        return out
    fns = list(_functions(fmt, body, out.notes))
    if flavour == "openai":
        _openai(fmt, body, fns, out)
    elif flavour == "anthropic":
        _anthropic(fns, out)
    elif flavour == "gemini":
        for fn in fns:
            _gemini(fn, out)
    return out


def lint(fmt: str, body: Any, findings: Findings) -> None:
    """Report REQ-1, REQ-2 and REQ-4 on a request as it is (nothing is changed)."""
    if not isinstance(body, dict):
        return
    dialect = _dialect(fmt)
    if dialect is None:
        return
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        problem = dialect.tool_type_problem(i, tool) if isinstance(tool, dict) else None
        if problem:
            findings.add("REQ-2", problem)
    native = dialect.native_flavour
    for fn in _functions(fmt, body, []):
        name = _label(fn.name, fn.index)
        schema = fn.spec.get(fn.schema_key, _MISSING) if fn.schema_key else _MISSING
        if native == "openai" and fn.schema_key and schema is not _MISSING:
            problem = _openai_schema_problem(schema)
            if problem:
                findings.add("REQ-1", f"tool {name} parameters {problem}")
        if native == "anthropic" and isinstance(schema, dict):
            combinators = [k for k in ("oneOf", "anyOf", "allOf") if k in schema]
            if combinators:
                findings.add(
                    "REQ-4", f"tool {name} input_schema has top-level {', '.join(combinators)}"
                )


# --- where tools live (each dialect knows its own format) ----------------------------------------

_MISSING: Any = object()


def _dialect(fmt: str) -> Dialect | None:
    return by_name(fmt)


def _functions(fmt: str, body: dict[str, Any], notes: list[SchemaChange]) -> Iterator[ToolSpec]:
    dialect = _dialect(fmt)
    if dialect is None:
        return iter(())
    return dialect.tool_specs(body, lambda ptr, reason: notes.append(_note(None, ptr, reason)))


# --- openai ----------------------------------------------------------------------------------


def _openai(fmt: str, body: dict[str, Any], fns: list[ToolSpec], out: Sanitized) -> None:
    keep: list[ToolSpec] = []
    drop: list[ToolSpec] = []
    for fn in fns:
        name = fn.name
        if name is None or (isinstance(name, str) and not name.strip()):
            drop.append(fn)
        elif not isinstance(name, str):
            out.notes.append(_note(None, f"{fn.spec_pointer}/name", "name is not a string"))
        else:
            keep.append(fn)
    for fn in keep:
        if fn.schema_key:
            _openai_schema(fn, out)
    _openai_names(fmt, body, keep, out)
    for fn in sorted(drop, key=lambda f: f.index, reverse=True):
        del fn.owner[fn.index]
    # Reported in request order, although removed last so indices stayed valid above.
    for fn in drop:
        out.changes.append(
            SchemaChange(
                None,
                fn.pointer,
                "drop-tool",
                before=fn.name,
                reason="a tool without a name is rejected by OpenAI-compatible upstreams",
            )
        )


def _openai_schema_problem(schema: Any) -> str | None:
    """Why `schema` is not an object schema with properties (REQ-1), or None."""
    if isinstance(schema, str):
        return "is a JSON string, not an object"
    if not isinstance(schema, dict):
        return f"is {_kind(schema)}, not an object schema"
    if not schema:
        return "is {} (no type, no properties)"
    if schema.get("type") != "object":
        kind = schema.get("type")
        return "has no type" if kind is None else f"has type {kind!r}, not 'object'"
    if not isinstance(schema.get("properties"), dict):
        return "has no properties object"
    return None


def _openai_schema(fn: ToolSpec, out: Sanitized) -> None:
    key = fn.schema_key
    assert key is not None
    tool, ptr = fn.name, fn.schema_pointer
    before = fn.spec.get(key, _MISSING)
    schema = before
    reason: str | None = None
    if isinstance(before, str):
        try:
            schema = orjson.loads(before)
        except ValueError:
            reason = "parameters is a string that is not JSON"
        else:
            reason = _default_reason(schema)
            if reason is None:
                fn.spec[key] = schema
                out.changes.append(
                    SchemaChange(
                        tool,
                        ptr,
                        "parse-schema",
                        before,
                        None,
                        "parameters was a JSON string, not an object",
                    )
                )
    else:
        reason = _default_reason(schema)
    if reason is not None:
        fn.spec[key] = default_schema()
        shown = None if before is _MISSING else before
        out.changes.append(
            SchemaChange(tool, ptr, "default-schema", shown, default_schema(), reason)
        )
        return
    assert isinstance(schema, dict)
    if "type" not in schema:
        schema["type"] = "object"
        out.changes.append(
            SchemaChange(
                tool,
                f"{ptr}/type",
                "add-type",
                None,
                "object",
                "an object schema needs type 'object'",
            )
        )
    if "properties" not in schema:
        schema["properties"] = {}
        out.changes.append(
            SchemaChange(
                tool,
                f"{ptr}/properties",
                "add-properties",
                None,
                {},
                "object schema missing properties",
            )
        )


def _default_reason(schema: Any) -> str | None:
    """Why `schema` is replaced by the default schema, or None if it can be completed."""
    if schema is _MISSING:
        return "no parameters"
    if not isinstance(schema, dict):
        return f"parameters is {_kind(schema)}, not an object schema"
    if not schema:
        return "parameters is {}"
    if "type" in schema and schema["type"] != "object":
        return f"type is {schema['type']!r}, not 'object'"
    if "properties" in schema and not isinstance(schema["properties"], dict):
        return "properties is not an object"
    return None


def _openai_names(fmt: str, body: dict[str, Any], fns: list[ToolSpec], out: Sanitized) -> None:
    taken = {fn.name for fn in fns if _NAME_OK.fullmatch(fn.name)}
    renamed: dict[str, str] = {}  # client -> upstream
    for fn in fns:
        client = fn.name
        if _NAME_OK.fullmatch(client):
            continue
        upstream = renamed.get(client)
        if upstream is None:
            upstream = renamed[client] = _upstream_name(client, taken)
            taken.add(upstream)
            out.names[upstream] = client
        fn.spec["name"] = upstream
        out.changes.append(
            SchemaChange(
                client,
                f"{fn.spec_pointer}/name",
                "rename",
                client,
                upstream,
                "OpenAI tool names are 1-64 characters of [A-Za-z0-9_-]",
            )
        )
    if renamed:
        for ptr, holder in _name_references(fmt, body):
            old = holder.get("name")
            if isinstance(old, str) and old in renamed:
                holder["name"] = renamed[old]
                out.changes.append(
                    SchemaChange(
                        old, f"{ptr}/name", "rename", old, renamed[old], "follows the renamed tool"
                    )
                )


def _upstream_name(name: str, taken: set[str]) -> str:
    """A valid name for `name`: bad characters become '_', and a hash of the original keeps
    long or colliding names apart."""
    base = _NAME_BAD_CHAR.sub("_", name)
    if 0 < len(base) <= _NAME_MAX and base not in taken:
        return base
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    candidate = f"{base[: _NAME_MAX - _HASH_LEN - 1]}_{digest}"
    n = 2
    while candidate in taken:
        suffix = f"_{digest}_{n}"
        candidate = base[: _NAME_MAX - len(suffix)] + suffix
        n += 1
    return candidate


def _name_references(fmt: str, body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(pointer, object with a "name") for every place a request refers to a tool by name."""
    dialect = _dialect(fmt)
    return dialect.tool_name_references(body) if dialect is not None else iter(())


# --- anthropic -------------------------------------------------------------------------------


def _anthropic(fns: list[ToolSpec], out: Sanitized) -> None:
    for fn in fns:
        if fn.spec.get("type") == "custom":
            del fn.spec["type"]
            out.changes.append(
                SchemaChange(
                    _str(fn.name),
                    f"{fn.pointer}/type",
                    "remove-type",
                    "custom",
                    None,
                    "some Anthropic-compatible upstreams reject type 'custom'",
                )
            )
        schema = fn.spec.get("input_schema")
        if isinstance(schema, dict):
            for key in ("oneOf", "anyOf", "allOf"):
                if key in schema:
                    out.notes.append(
                        _note(
                            _str(fn.name),
                            f"{fn.schema_pointer}/{key}",
                            f"top-level {key} in input_schema",
                            rule="REQ-4",
                        )
                    )


# --- gemini ----------------------------------------------------------------------------------


def _gemini(fn: ToolSpec, out: Sanitized) -> None:
    key = fn.schema_key
    if key is None or key not in fn.spec:
        return
    schema = fn.spec[key]
    tool = _str(fn.name)
    if not isinstance(schema, dict):
        if schema is not None:
            out.notes.append(_note(tool, fn.schema_pointer, f"schema is {_kind(schema)}"))
        return
    cleaner = _GeminiCleaner(schema, tool, out)
    cleaned = cleaner.clean(schema, fn.schema_pointer, (), 0)
    if cleaner.changed:
        fn.spec[key] = cleaned


class _GeminiCleaner:
    """Rebuilds one tool's schema in Gemini's subset, leaving the original untouched."""

    def __init__(self, root: dict[str, Any], tool: str | None, out: Sanitized) -> None:
        self.root = root
        self.tool = tool
        self.out = out
        self.changed = False
        self.inlined = 0

    def change(self, path: str, action: str, before: Any, after: Any, reason: str) -> None:
        self.changed = True
        self.out.changes.append(SchemaChange(self.tool, path, action, before, after, reason))

    def clean(self, node: Any, ptr: str, refs: tuple[str, ...], depth: int) -> Any:
        if not isinstance(node, dict):
            return node
        if depth > _MAX_DEPTH:
            self.out.notes.append(_note(self.tool, ptr, f"nested deeper than {_MAX_DEPTH}"))
            return node
        if "$ref" in node:
            return self.inline(node, ptr, refs, depth)
        schema: dict[str, Any] = {}
        if "allOf" in node and isinstance(node["allOf"], list):
            node = self.merge_all_of(node, ptr, refs, depth)
        for key, value in node.items():
            sub = f"{ptr}/{_escape(key)}"
            if key == "properties" and isinstance(value, dict):
                schema[key] = {
                    name: self.clean(s, f"{sub}/{_escape(name)}", refs, depth + 1)
                    for name, s in value.items()
                }
            elif key == "items" and isinstance(value, list):
                self.change(
                    sub, "items-to-anyof", None, None, "Gemini takes one items schema, not a list"
                )
                items = [self.clean(s, f"{sub}/{i}", refs, depth + 1) for i, s in enumerate(value)]
                schema[key] = {"anyOf": items}
            elif key == "items":
                schema[key] = self.clean(value, sub, refs, depth + 1)
            elif key in ("anyOf", "oneOf") and isinstance(value, list):
                target = "anyOf"
                if key == "oneOf":
                    if "anyOf" in node:
                        self.change(
                            sub,
                            "remove-keyword",
                            None,
                            None,
                            "oneOf next to anyOf; Gemini knows only anyOf",
                        )
                        continue
                    self.change(sub, "oneof-to-anyof", None, None, "Gemini knows only anyOf")
                schema[target] = [
                    self.clean(s, f"{sub}/{i}", refs, depth + 1) for i, s in enumerate(value)
                ]
            elif key == "const":
                if isinstance(value, str):
                    schema["enum"] = [value]
                    if "type" not in node:  # Gemini takes enums on strings only
                        schema["type"] = "string"
                    self.change(sub, "const-to-enum", value, [value], "Gemini has no const")
                else:
                    self.change(
                        sub,
                        "remove-keyword",
                        value,
                        None,
                        "Gemini has no const and its enums hold strings only",
                    )
            elif key == "type" and _is_type_list(value):
                self.type_list(schema, value, sub)
            elif key == "format" and not (isinstance(value, str) and value in GEMINI_FORMATS):
                self.change(
                    sub,
                    "remove-keyword",
                    value,
                    None,
                    f"Gemini supports format {', '.join(sorted(GEMINI_FORMATS))} only",
                )
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                self.exclusive(node, schema, key, value, sub)
            elif key in GEMINI_KEYWORDS:
                schema.setdefault(key, value)
            else:
                self.change(
                    sub,
                    "remove-keyword",
                    _brief(value),
                    None,
                    f"{key!r} is not in Gemini's schema subset",
                )
        return schema

    def inline(self, node: dict[str, Any], ptr: str, refs: tuple[str, ...], depth: int) -> Any:
        ref = node["$ref"]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        target = self.resolve(ref) if isinstance(ref, str) else _MISSING
        if isinstance(ref, str) and ref in refs:
            replacement = {**siblings, "type": "object"}
            self.change(
                ptr, "recursive-ref", ref, {"type": "object"}, "Gemini schemas cannot recurse"
            )
            return self.clean(replacement, ptr, refs, depth)
        if not isinstance(target, dict) or self.inlined >= _REF_BUDGET:
            why = "unresolvable" if not isinstance(target, dict) else "too many inlined refs"
            self.change(ptr, "unresolved-ref", ref, {"type": "object"}, f"$ref {why}")
            return self.clean({**siblings, "type": "object"}, ptr, refs, depth)
        self.inlined += 1
        self.change(ptr, "deref", ref, None, "Gemini has no $ref; the definition is inlined")
        # Keywords next to $ref refine the referenced schema, so they win.
        return self.clean({**target, **siblings}, ptr, (*refs, ref), depth + 1)

    def resolve(self, ref: str) -> Any:
        if ref == "#":
            return self.root
        if not ref.startswith("#/"):
            return _MISSING
        node: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return _MISSING
        return node

    def merge_all_of(
        self, node: dict[str, Any], ptr: str, refs: tuple[str, ...], depth: int
    ) -> dict[str, Any]:
        merged = {k: v for k, v in node.items() if k != "allOf"}
        for i, part in enumerate(node["allOf"]):
            part = self.clean(part, f"{ptr}/allOf/{i}", refs, depth + 1)
            if not isinstance(part, dict):
                continue
            for key, value in part.items():
                if key == "properties" and isinstance(value, dict):
                    props = merged.get("properties")
                    merged["properties"] = {**value, **(props if isinstance(props, dict) else {})}
                elif key == "required" and isinstance(value, list):
                    have = merged.get("required")
                    have = have if isinstance(have, list) else []
                    merged["required"] = have + [r for r in value if r not in have]
                else:
                    merged.setdefault(key, value)
        self.change(
            f"{ptr}/allOf", "merge-allof", None, None, "Gemini has no allOf; the parts are merged"
        )
        return merged

    def type_list(self, schema: dict[str, Any], types: list[Any], ptr: str) -> None:
        real = [t for t in types if t != "null"]
        if len(real) == 1:
            schema["type"] = real[0]
        elif real:
            schema.setdefault("anyOf", [{"type": t} for t in real])
        if len(real) < len(types):
            schema["nullable"] = True
        after = {k: schema[k] for k in ("type", "anyOf", "nullable") if k in schema}
        self.change(ptr, "type-list", types, after, "Gemini takes one type (and nullable)")

    def exclusive(
        self, node: dict[str, Any], schema: dict[str, Any], key: str, value: Any, ptr: str
    ) -> None:
        inclusive, step = ("minimum", 1) if key == "exclusiveMinimum" else ("maximum", -1)
        bound: Any = node.get(inclusive)
        # Draft 4 spells it as a flag on minimum/maximum; later drafts as the bound itself.
        limit: Any = (bound if value else None) if isinstance(value, bool) else value
        if node.get("type") == "integer" and _is_integral(limit):
            new: float = int(limit) + step
            if _is_number(bound):
                new = max(new, bound) if step > 0 else min(new, bound)
            schema[inclusive] = new
            self.change(
                ptr,
                "exclusive-bound",
                value,
                {inclusive: new},
                "an exclusive integer bound is the next inclusive one",
            )
        else:
            self.change(
                ptr,
                "remove-keyword",
                value,
                None,
                "Gemini has no exclusive bounds; only integer ones convert",
            )


# --- small pieces ----------------------------------------------------------------------------


def _note(tool: str | None, path: str, reason: str, rule: str | None = None) -> SchemaChange:
    return SchemaChange(tool, path, "note", reason=reason, rule=rule)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _label(name: Any, index: int) -> str:
    return repr(name) if isinstance(name, str) else f"#{index}"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _brief(value: Any) -> Any:
    """The value for a change record; nested schemas are summarized, not copied."""
    return "{...}" if isinstance(value, dict) else "[...]" if isinstance(value, list) else value


def _is_type_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, str) for t in value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integral(value: Any) -> bool:
    return _is_number(value) and float(value).is_integer()
