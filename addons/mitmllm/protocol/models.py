"""Model rules: which rule applies to a request, and the parameter constraints it imposes.

A model rule says "requests for models matching these globs, in these formats, under these
conditions, go upstream as model X, with these request parameters constrained". Rules are
checked in order and the first match wins.

Selecting a rule needs a few facts about the request (`RequestFacts`), read from the parsed
body once per request by `facts()`:

* `stream`: the request asks for an event stream (`Dialect.wants_stream`).
* `thinking`: the request asks for reasoning (`Dialect.asks_thinking`; each dialect documents
  its fields). ``minimal`` effort still asks a reasoning model to reason, so it counts.
* `tools`: the request declares at least one tool (`Dialect.declares_tools`).
* `input_tokens`: an estimate (`estimate_tokens`), deliberately cheap and deterministic rather
  than exact: a quarter of the characters in the prompt fields (`Dialect.prompt_fields`), tool
  declarations included.

Sans-I/O: parsed bodies in, facts / rules / recorded changes out. The rule objects are plain
frozen dataclasses; `mitmllm.engine.config` builds them from the YAML file.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from fnmatch import fnmatchcase
from typing import Any

from mitmllm.protocol.detect import by_name


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


#: "No value": a parameter that is absent, or a `Param.set` that was not given.
UNSET: Any = _Unset()


# --- request facts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What model rules can condition on."""

    format: str
    model: str | None
    stream: bool = False
    thinking: bool = False
    tools: bool = False
    input_tokens: int = 0


# Strings under these keys are binary payloads (base64 media, opaque signatures); a model
# reads them as a few hundred tokens at most, so counting their characters would overshoot.
_OPAQUE_KEYS = frozenset(
    {"data", "file_data", "signature", "encrypted_content", "thoughtSignature", "thought_signature"}
)


def facts(
    fmt: str, path: str, query: Mapping[str, str], body: Any, model: str | None
) -> RequestFacts:
    """The facts of one parsed request. `model` is the one the request asks for (the dialect
    reads it from the body, or from the path for Gemini). Odd bodies give all-false facts."""
    dialect = by_name(fmt)
    if dialect is None:
        return RequestFacts(fmt, model)
    stream = dialect.wants_stream(path, query, body)
    if not isinstance(body, dict):
        return RequestFacts(fmt, model, stream=stream)
    return RequestFacts(
        format=fmt,
        model=model,
        stream=stream,
        thinking=dialect.asks_thinking(body),
        tools=dialect.declares_tools(body),
        input_tokens=estimate_tokens(fmt, body),
    )


def estimate_tokens(fmt: str, body: Any) -> int:
    """ceil(characters / 4) over the prompt fields of `fmt` (system prompt, conversation,
    tool declarations): every string value and every object key counts, except strings under
    binary keys (``data``, ``signature``, ...) and ``data:`` URLs."""
    if not isinstance(body, dict):
        return 0
    chars = 0
    dialect = by_name(fmt)
    fields = dialect.prompt_fields if dialect is not None else ()
    stack: list[Any] = [body.get(name) for name in fields]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if not (node.startswith("data:") and ";base64," in node[:100]):
                chars += len(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                chars += len(key)
                if key in _OPAQUE_KEYS and isinstance(value, str):
                    continue
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return (chars + 3) // 4


# --- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    """A constraint on one request parameter.

    `set` assigns a value (creating the parameter); `min`/`max` clamp a numeric value that is
    present (an absent parameter is left to the upstream's default); `drop` removes it.
    """

    set: Any = UNSET
    min: float | None = None
    max: float | None = None
    drop: bool = False


@dataclass(frozen=True, slots=True)
class When:
    """Conditions on the request; None means "either way"."""

    thinking: bool | None = None
    tools: bool | None = None
    stream: bool | None = None
    min_input_tokens: int | None = None
    max_input_tokens: int | None = None

    def holds(self, f: RequestFacts) -> bool:
        return (
            (self.thinking is None or self.thinking == f.thinking)
            and (self.tools is None or self.tools == f.tools)
            and (self.stream is None or self.stream == f.stream)
            and (self.min_input_tokens is None or f.input_tokens >= self.min_input_tokens)
            and (self.max_input_tokens is None or f.input_tokens <= self.max_input_tokens)
        )


@dataclass(frozen=True, slots=True)
class ModelRule:
    """One model rule. `to` None keeps the requested model (a rule may only constrain
    parameters); `tools` names the tool-schema flavour to sanitize for (None: not this rule's
    business)."""

    match: tuple[str, ...]
    to: str | None = None
    name: str | None = None
    formats: frozenset[str] = frozenset()  # empty: every format
    when: When = field(default_factory=When)
    restamp: bool = True
    params: Mapping[str, Param] = field(default_factory=dict)
    tools: str | None = None

    def matches(self, f: RequestFacts) -> bool:
        if f.model is None:
            return False
        if self.formats and f.format not in self.formats:
            return False
        if not any(fnmatchcase(f.model, glob) for glob in self.match):
            return False
        return self.when.holds(f)


def select(rules: Iterable[ModelRule], f: RequestFacts) -> ModelRule | None:
    """The first rule that matches the request, or None."""
    for rule in rules:
        if rule.matches(f):
            return rule
    return None


# --- parameter constraints -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParamChange:
    """One parameter that a rule changed. `before`/`after` are UNSET when absent."""

    param: str
    action: str  # "set" | "min" | "max" | "drop"
    before: Any = UNSET
    after: Any = UNSET

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"param": self.param, "action": self.action}
        if self.before is not UNSET:
            d["before"] = self.before
        if self.after is not UNSET:
            d["after"] = self.after
        return d


def apply_params(body: Any, params: Mapping[str, Param]) -> list[ParamChange]:
    """Apply constraints in order to a parsed request body, in place.

    Parameter names are dotted paths into the body (``generationConfig.temperature`` for
    Gemini). Only actual changes are recorded; a path through a non-object is left alone.
    """
    if not isinstance(body, dict):
        return []
    changes: list[ParamChange] = []
    for name, p in params.items():
        *parents, leaf = name.split(".")
        parent = _parent(body, parents, create=p.set is not UNSET and not p.drop)
        if parent is None:
            continue
        before = parent.get(leaf, UNSET)
        if p.drop:
            if before is not UNSET:
                del parent[leaf]
                changes.append(ParamChange(name, "drop", before))
            continue
        if p.set is not UNSET:
            if before is UNSET or not _same(before, p.set):
                parent[leaf] = p.set
                changes.append(ParamChange(name, "set", before, p.set))
            continue
        if not _is_number(before):
            continue
        if p.min is not None and before < p.min:
            parent[leaf] = p.min
            changes.append(ParamChange(name, "min", before, p.min))
        elif p.max is not None and before > p.max:
            parent[leaf] = p.max
            changes.append(ParamChange(name, "max", before, p.max))
    return changes


def _parent(body: dict[str, Any], keys: list[str], *, create: bool) -> dict[str, Any] | None:
    node = body
    for key in keys:
        child = node.get(key, UNSET)
        if child is UNSET and create:
            child = node[key] = {}
        if not isinstance(child, dict):
            return None
        node = child
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    # JSON has one number type (1 == 1.0), but true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)
