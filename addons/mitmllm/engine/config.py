"""The mitmllm configuration file: one YAML file, parsed into pydantic models.

The file says which model rewrites apply to requests (``models``), which upstreams exist
(``upstreams``), which requests are routed through a fail-over chain of them (``routes``), and
how circuit breakers and captures behave. Every section is optional: `Config.empty()` (no file)
means inspect only.

Reading a file is strict, because a typo in a config that silently does nothing is worse than
an error: unknown keys are rejected, and so are references to unknown upstreams, duplicate
names, secrets written into the file, and combinations that cannot work (a chain mixing wire
formats on a route that does not translate, a request feature a translated hop cannot carry, a
slash-namespaced model sent to a Gemini upstream, where the model is part of the URL path).
`ConfigError` lists every problem, one line each, with the file, the line, the field path
(``routes.0.chain.1.upstream``), the bad value and a hint.

YAML is read with YAML 1.2 booleans (only ``true``/``false``; ``off`` and ``no`` are strings)
and duplicate keys are errors.

Durations are a number of seconds or a string such as ``250ms``, ``30s``, ``5m``, ``1h30m``;
sizes are a number of bytes or a string such as ``512KB`` (1000) or ``32MiB`` (1024).

Run ``python -m mitmllm.engine.config schema`` for the JSON Schema, ``... check FILE`` to
validate a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import re
import sys
import types
import typing
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Annotated
from typing import Any
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator
from pydantic import BaseModel
from pydantic import BeforeValidator
from pydantic import ConfigDict
from pydantic import Field
from pydantic import JsonValue
from pydantic import PrivateAttr
from pydantic import ValidationError
from pydantic import WithJsonSchema
from pydantic import model_validator
from pydantic_core import PydanticCustomError
from yaml.constructor import ConstructorError

from mitmllm.protocol.conversation import FEATURES
from mitmllm.protocol.credentials import CREDENTIAL_HEADERS
from mitmllm.protocol.credentials import CREDENTIAL_QUERY
from mitmllm.protocol.detect import by_name
from mitmllm.protocol.detect import names
from mitmllm.protocol.models import ModelRule
from mitmllm.protocol.models import Param
from mitmllm.protocol.models import When
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.rules import STREAM_FAMILIES
from mitmllm.protocol.schemas import FLAVOURS
from mitmllm.protocol.schemas import Flavour
from mitmllm.protocol.schemas import applies
from mitmllm.protocol.translate import NotTranslatable
from mitmllm.protocol.translate import uncarried

AuthScheme = Literal["x-api-key", "bearer", "x-goog-api-key", "api-key", "none"]
CaptureMode = Literal["off", "all", "flagged", "filter"]

#: Wire format names: every registered dialect (`mitmllm.protocol.detect.dialects`).
FORMATS: tuple[str, ...] = tuple(sorted(names()))
if TYPE_CHECKING:
    Format = str
else:
    Format = Literal[FORMATS]
#: Headers and query parameters that carry credentials: never written into the config file,
#: always redacted in captures.
# Keys that hold a secret when someone writes one into the file instead of naming a variable.
_SECRET_KEYS = frozenset(
    {
        "api_key", "apikey", "key", "token", "secret", "password", "api_token", "access_token",
        "authorization", "bearer", "credentials",
    }
)  # fmt: skip
_SECRET_PREFIXES = ("sk-", "sk_", "AIza", "xai-", "gsk_", "ghp_", "Bearer ", "bearer ")


# --- durations and sizes ---------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_ORDER = list(_DURATION_UNITS)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``250ms``, ``30s``, ``5m``, ``1h30m``, ``2d``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"a duration is a number of seconds or a string like '30s', not {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f"a duration must be positive, not {value!r}")
        seconds = float(text) if _NUMBER.fullmatch(text) else _duration_units(text)
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, not {value!r}")
    return seconds


def _duration_units(text: str) -> float:
    seconds, pos, last = 0.0, 0, -1
    for m in _DURATION_PART.finditer(text):
        rank = _DURATION_ORDER.index(m.group(2))
        if m.start() != pos or rank <= last:
            break
        seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos, last = m.end(), rank
    if pos != len(text) or not text:
        raise ValueError(
            f"invalid duration {text!r}: use seconds or units d, h, m, s, ms, largest first "
            "(250ms, 30s, 5m, 1h30m)"
        )
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from an integer or a string like ``512KB`` (x1000) or ``32MiB`` (x1024)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"a size is a number of bytes or a string like '32MiB', not {value!r}")
    if isinstance(value, int):
        size = value
    else:
        m = _SIZE.fullmatch(value.strip())
        if m is None:
            raise ValueError(
                f"invalid size {value!r}: use bytes or units B, KB, MB, GB, KiB, "
                "MiB, GiB (512KB, 32MiB)"
            )
        exact = Decimal(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
        if exact != exact.to_integral_value():
            raise ValueError(f"size {value!r} is not a whole number of bytes")
        size = int(exact)
    if size <= 0:
        raise ValueError(f"a size must be positive, not {value!r}")
    return size


def _one_or_many(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


def _glob(value: str) -> str:
    if not value or value != value.strip():
        raise ValueError("bad glob: empty or surrounded by whitespace")
    depth = 0
    for ch in value:  # fnmatch reads an unclosed '[' literally, which is never what was meant
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
    if depth:
        raise ValueError("bad glob: unbalanced '['")
    return value


def _model_name(value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise ValueError("a model name is not empty and has no whitespace")
    return value


def _param_name(value: str) -> str:
    if not value or any(not part.strip() for part in value.split(".")):
        raise ValueError("a parameter name is a key or a dotted path of keys")
    return value


def _header_name(value: str) -> str:
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value):
        raise ValueError("not an HTTP header name")
    return value


def _name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
        raise ValueError(
            "a name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return value


def _env_name(value: str) -> str:
    is_name = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) is not None
    # A Google key (AIza...) is also a valid variable name, so known key prefixes come first.
    if is_name and not value.startswith(_SECRET_PREFIXES):
        return value
    if _looks_secret(value):
        raise PydanticCustomError(
            "secret_in_config",
            "this looks like a secret, not the name of an environment variable",
            {
                "hint": "put the key in an environment variable and write its name here, "
                "e.g. api_key_env: ANTHROPIC_API_KEY"
            },
        )
    raise ValueError("not an environment variable name (letters, digits and '_')")


def _looks_secret(value: Any) -> bool:
    # Known key prefixes, or a long mixed-case token with digits (model names are lower case).
    return isinstance(value, str) and (
        value.startswith(_SECRET_PREFIXES)
        or (
            len(value) >= 24
            and not any(ch.isspace() for ch in value)
            and any(ch.isdigit() for ch in value)
            and any(ch.isupper() for ch in value)
            and any(ch.islower() for ch in value)
        )
    )


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("base_url must be an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("base_url cannot carry a query or fragment")
    return value


def _sticky_key(value: str) -> str:
    source, _, rest = value.partition(":")
    if source not in ("header", "body") or not rest or any(not p for p in rest.split(".")):
        raise PydanticCustomError(
            "bad_sticky_key",
            "a sticky key is header:NAME or body:dotted.path",
            {"hint": "e.g. header:x-session-id or body:metadata.user_id"},
        )
    return value


def _flow_filter(value: str) -> str:
    from mitmproxy import flowfilter  # imported here: the rest of config needs no mitmproxy

    try:
        flowfilter.parse(value)
    except ValueError as e:
        raise PydanticCustomError("bad_filter", "{error}", {"error": str(e)}) from None
    return value


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _chain(value: tuple[Any, ...]) -> tuple[Any, ...]:
    if not value:
        raise PydanticCustomError(
            "empty_chain",
            "a route needs at least one upstream in its chain",
            {"hint": "chain: [{upstream: NAME}, ...]"},
        )
    return value


_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|d|h|m|s)?)+\s*$"},
    ],
    "description": "seconds, or a string such as 250ms, 30s, 5m, 1h30m",
}
_SIZE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([kKmMgGtT][iI]?[bB]|[bB])?\s*$"},
    ],
    "description": "bytes, or a string such as 512KB (x1000) or 32MiB (x1024)",
}
_GLOBS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}},
    ]
}

Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
Size = Annotated[int, BeforeValidator(parse_size), WithJsonSchema(_SIZE_SCHEMA)]
Glob = Annotated[str, AfterValidator(_glob)]
Globs = Annotated[tuple[Glob, ...], BeforeValidator(_one_or_many), WithJsonSchema(_GLOBS_SCHEMA)]
Formats = Annotated[
    tuple[Format, ...],
    BeforeValidator(_one_or_many),
    WithJsonSchema(
        {"anyOf": [{"enum": list(FORMATS)}, {"type": "array", "items": {"enum": list(FORMATS)}}]}
    ),
]
ModelName = Annotated[str, AfterValidator(_model_name)]
Name = Annotated[str, AfterValidator(_name)]
ParamName = Annotated[str, AfterValidator(_param_name)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HostGlob = Annotated[str, AfterValidator(_glob), AfterValidator(str.lower)]
EnvName = Annotated[str, AfterValidator(_env_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- model rules -----------------------------------------------------------------------------


class ParamSpec(_Section):
    """A constraint on one request parameter: set it, clamp it, or drop it."""

    set: JsonValue = Field(
        default=None, description="Set the parameter to this value (added if absent)."
    )
    min: float | None = Field(default=None, description="Raise a numeric value below this to it.")
    max: float | None = Field(default=None, description="Lower a numeric value above this to it.")
    drop: bool = Field(default=False, description="Remove the parameter.")

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        given = self.model_fields_set
        if self.drop and len(given) > 1:
            raise ValueError("drop cannot be combined with set, min or max")
        if "set" in given and given & {"min", "max"}:
            raise ValueError("set cannot be combined with min or max")
        if not given or given == {"drop"} and not self.drop:
            raise ValueError("give one of set, min, max or drop: true")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def param(self) -> Param:
        if self.drop:
            return Param(drop=True)
        if "set" in self.model_fields_set:
            return Param(set=self.set)
        return Param(min=self.min, max=self.max)


class WhenSpec(_Section):
    """Conditions on the request; a condition left out does not matter."""

    thinking: bool | None = Field(
        default=None,
        description="The request asks for extended thinking / reasoning (true) or not.",
    )
    tools: bool | None = Field(
        default=None, description="The request declares tools (true) or not."
    )
    stream: bool | None = Field(
        default=None, description="The request asks for a stream (true) or not."
    )
    min_input_tokens: int | None = Field(
        default=None, ge=0, description="Estimated prompt size (characters / 4) is at least this."
    )
    max_input_tokens: int | None = Field(
        default=None, ge=0, description="Estimated prompt size (characters / 4) is at most this."
    )


class ModelRuleSpec(_Section):
    """A model rewrite rule. Rules are tried in order; the first match wins."""

    name: Name | None = Field(
        default=None, description="Label recorded in flow metadata when the rule fires."
    )
    match: Globs = Field(
        description="Glob (fnmatch, case-sensitive) or list of globs on the "
        "model the client asked for."
    )
    formats: Formats = Field(
        default=(), description="Wire formats the rule applies to; all when left out."
    )
    when: WhenSpec = Field(default=WhenSpec(), description="Conditions on the request.")
    to: ModelName | None = Field(
        default=None, description="Model sent upstream; left out, the requested model is kept."
    )
    restamp: bool = Field(
        default=True, description="Responses show the client the model it asked for, not `to`."
    )
    params: dict[ParamName, ParamSpec] = Field(
        default_factory=dict,
        description="Request parameter constraints by name; dotted names reach into objects "
        "(generationConfig.temperature).",
    )
    tools: Flavour | None = Field(
        default=None,
        description="Sanitize tool schemas for this kind of upstream: " + ", ".join(FLAVOURS) + ".",
    )

    def rule(self) -> ModelRule:
        w = self.when
        return ModelRule(
            match=self.match,
            to=self.to,
            name=self.name,
            formats=frozenset(self.formats),
            when=When(w.thinking, w.tools, w.stream, w.min_input_tokens, w.max_input_tokens),
            restamp=self.restamp,
            params={name: p.param() for name, p in self.params.items()},
            tools=self.tools,
        )


# --- upstreams and routes --------------------------------------------------------------------


class Upstream(_Section):
    """An API endpoint requests can be sent to, with its own credential."""

    name: Name = Field(description="Unique name, used in routes, logs and flow metadata.")
    base_url: Annotated[str, AfterValidator(_base_url)] = Field(
        description="http(s) URL the request path is appended to, e.g. https://api.anthropic.com"
    )
    format: Format = Field(description="Wire format the upstream speaks.")
    api_key_env: EnvName | None = Field(
        default=None,
        description="Name of the environment variable holding the API key (never the key "
        "itself). Left out: the upstream gets no credential of mitmllm's.",
    )
    auth: AuthScheme = Field(
        default="none",  # replaced by the format's default before validation
        json_schema_extra=_no_default,
        description="How the key is sent; defaults to the way the format's official API takes "
        "it: "
        + ", ".join(f"{by_name(f).default_auth} ({f})" for f in FORMATS)  # type: ignore[union-attr]
        + ".",
    )
    headers: dict[HeaderName, str] = Field(
        default_factory=dict, description="Extra request headers (no credentials)."
    )
    verify_tls: bool = Field(default=True, description="Verify the upstream's TLS certificate.")
    tools: Flavour = Field(
        default="none", description="Default tool-schema flavour for this upstream."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_auth(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("auth") is None:
            fmt = data.get("format")
            dialect = by_name(fmt) if isinstance(fmt, str) else None
            if dialect is not None:
                data = {**data, "auth": dialect.default_auth}
        return data

    @property
    def host(self) -> str:
        return (urlsplit(self.base_url).hostname or "").lower()


class Hop(_Section):
    """One upstream of a route's chain."""

    upstream: str = Field(description="Name of an upstream.")
    models: dict[Glob, ModelName] = Field(
        default_factory=dict,
        description="Model mapping for this upstream, glob -> model; the first matching glob "
        "wins, an unmatched model is sent as is.",
    )
    tools: Flavour | None = Field(
        default=None, description="Tool-schema flavour for this hop; defaults to the upstream's."
    )

    def map_model(self, model: str | None) -> str | None:
        if model is None:
            return None
        for glob, target in self.models.items():
            if fnmatchcase(model, glob):
                return target
        return model


class RouteMatch(_Section):
    """Which requests a route takes; every condition given must hold."""

    host: HostGlob | None = Field(
        default=None, description="Glob on the host the client addressed (case-insensitive)."
    )
    path: Glob | None = Field(default=None, description="Glob on the request path (without query).")
    model: Globs = Field(default=(), description="Glob or globs on the requested model.")
    format: Format | None = Field(
        default=None, description="Wire format of the request; defaults to the chain's format."
    )


class Timeouts(_Section):
    """Timeouts of one attempt, each measured separately."""

    connect: Duration = Field(default=10.0, description="TCP and TLS connect to the upstream.")
    first_event: Duration = Field(
        default=60.0, description="Request sent until the first event that carries content."
    )
    idle: Duration = Field(
        default=120.0, description="Between parsed events (comments and pings do not count)."
    )
    total: Duration = Field(default=900.0, description="One attempt from start to end.")
    keepalive: Duration = Field(
        default=15.0, description="Send the client a keep-alive after this much silence."
    )
    first_byte: Duration | None = Field(
        default=10.0,
        description="When a stream has sent no content for this long, send the client its "
        "response headers and keep-alives, so a client with a shorter read timeout does not give "
        "up; fail-over still moves on until content is sent (when every upstream then fails, the "
        "client gets the format's error event instead of an HTTP status). null: hold the headers "
        "until content.",
    )


class TimeoutOverrides(_Section):
    """Per-route timeouts; what is left out comes from defaults.timeouts."""

    connect: Duration | None = Field(default=None, description="See defaults.timeouts.connect.")
    first_event: Duration | None = Field(
        default=None, description="See defaults.timeouts.first_event."
    )
    idle: Duration | None = Field(default=None, description="See defaults.timeouts.idle.")
    total: Duration | None = Field(default=None, description="See defaults.timeouts.total.")
    keepalive: Duration | None = Field(default=None, description="See defaults.timeouts.keepalive.")
    first_byte: Duration | None = Field(
        default=None, description="See defaults.timeouts.first_byte."
    )


def _stream_rule(value: str) -> str:
    rule = RULES.get(value)
    if rule is None or rule.family not in STREAM_FAMILIES:
        close = difflib.get_close_matches(value, list(RULES), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PydanticCustomError(
            "unknown_rule",
            "not a rule of an event stream (SSE, PAY, ANT, OAI, RSP, GEM)",
            {"hint": hint + "the README lists every rule"},
        )
    return value


StreamRule = Annotated[str, AfterValidator(_stream_rule)]


class Repair(_Section):
    """Mending broken streams (`mitmllm.protocol.repair`) and what fails an attempt."""

    enabled: bool = Field(
        default=True,
        description="Mend what a repair can (keep-alives inside events, indices, missing "
        "terminators after a complete answer; never text, tool arguments, stop reasons or usage) "
        "before the commit gate judges a stream.",
    )
    fail_on: tuple[StreamRule, ...] | None = Field(
        default=None,
        description="Rules whose findings (on the stream after repairs, before the client saw "
        "any content) fail an attempt, so the next upstream is tried. Left out: every error rule "
        "whose client effect breaks the answer (see the README's rules); [] never fails on a "
        "finding.",
    )


class RepairOverride(_Section):
    """Per-route repair settings; what is left out comes from the top-level repair."""

    enabled: bool | None = Field(default=None, description="See repair.enabled.")
    fail_on: tuple[StreamRule, ...] | None = Field(default=None, description="See repair.fail_on.")


class Sticky(_Section):
    """Keep a conversation on the upstream that last served it."""

    key: Annotated[str, AfterValidator(_sticky_key)] = Field(
        description="Where the conversation key comes from: header:NAME or body:dotted.path."
    )
    ttl: Duration = Field(default=1800.0, description="How long an assignment lasts without use.")


class Route(_Section):
    """Requests that go through a fail-over chain of upstreams instead of where they were sent."""

    name: Name = Field(description="Unique name, used in logs and flow metadata.")
    match: RouteMatch = Field(default=RouteMatch(), description="Which requests.")
    chain: Annotated[tuple[Hop, ...], AfterValidator(_chain)] = Field(
        description="Upstreams to try in order."
    )
    timeouts: TimeoutOverrides = Field(
        default=TimeoutOverrides(), description="Overrides of defaults.timeouts."
    )
    forward_client_credentials: bool = Field(
        default=False,
        description="Also send the client's own credentials to upstreams other than the origin "
        "(scheme, host and port) the client addressed.",
    )
    early_commit: bool = Field(
        default=False,
        description="Send response headers at once instead of at the first content event; "
        "fail-over then ends once headers are out.",
    )
    sticky: Sticky | None = Field(default=None, description="Conversation stickiness.")
    repair: RepairOverride = Field(
        default=RepairOverride(), description="Overrides of the top-level repair."
    )
    translate: bool = Field(
        default=False,
        description="Serve the route's clients from upstreams of another wire format too, "
        "translating requests and answers; with match.format set, every hop may be of another "
        "format (the client is then always served through translation).",
    )
    requires: tuple[str, ...] = Field(
        default=(),
        description="Request features the route's clients use ("
        + ", ".join(FEATURES)
        + "): a hop of another format that cannot carry one is a configuration error.",
    )


# --- the rest --------------------------------------------------------------------------------


class Defaults(_Section):
    """Values routes inherit."""

    timeouts: Timeouts = Field(default=Timeouts(), description="Attempt timeouts.")


class Breaker(_Section):
    """Per-upstream circuit breakers."""

    failures: int = Field(default=3, ge=1, description="Retryable failures in a row that open it.")
    open_for: Duration = Field(default=30.0, description="How long it stays open the first time.")
    max_open_for: Duration = Field(
        default=300.0, description="Upper bound when re-opening extends the open window."
    )


class Capture(_Section):
    """Recording flows as fixtures."""

    dir: str = Field(default="captures", description="Directory capture files are written to.")
    mode: CaptureMode = Field(
        default="off",
        description="off, all, flagged (flows with findings or fail-over) or filter.",
    )
    filter: Annotated[str, AfterValidator(_flow_filter)] | None = Field(
        default=None, description="mitmproxy filter expression selecting flows, for mode: filter."
    )
    redact_headers: tuple[str, ...] = Field(
        default=(),
        description="Headers to redact besides the credential headers, which always are.",
    )
    redact_query: tuple[str, ...] = Field(
        default=(), description="Query parameters to redact besides key/api_key, which always are."
    )
    max_body: Size = Field(default=32 * 2**20, description="Largest body kept in a capture.")

    @property
    def headers_to_redact(self) -> frozenset[str]:
        return CREDENTIAL_HEADERS | {h.lower() for h in self.redact_headers}

    @property
    def query_to_redact(self) -> frozenset[str]:
        return CREDENTIAL_QUERY | {q.lower() for q in self.redact_query}


class Config(_Section):
    """mitmllm's configuration file."""

    model_config = ConfigDict(title="mitmllm configuration")

    version: Literal[1] = Field(default=1, description="Format version of this file.")
    models: tuple[ModelRuleSpec, ...] = Field(
        default=(), description="Model rewrite rules, first match wins."
    )
    upstreams: tuple[Upstream, ...] = Field(default=(), description="Upstreams routes can use.")
    routes: tuple[Route, ...] = Field(default=(), description="Fail-over routes, first match wins.")
    defaults: Defaults = Field(default=Defaults(), description="Defaults for routes.")
    breaker: Breaker = Field(default=Breaker(), description="Circuit breakers.")
    repair: Repair = Field(default=Repair(), description="Mending broken streams of routed flows.")
    capture: Capture = Field(default=Capture(), description="Fixture capture.")

    _rules: tuple[ModelRule, ...] = PrivateAttr(())

    @classmethod
    def empty(cls) -> Config:
        """No configuration: inspect only."""
        return cls.model_validate({})

    @model_validator(mode="after")
    def _cross_check(self) -> Config:
        problems = list(_cross_problems(self))
        if problems:
            raise ConfigError(problems)  # not a ValueError: pydantic lets it through as is
        return self

    def model_post_init(self, context: Any) -> None:
        self._rules = tuple(spec.rule() for spec in self.models)

    @property
    def model_rules(self) -> tuple[ModelRule, ...]:
        """The model rules, ready for `mitmllm.protocol.models.select`."""
        return self._rules

    def upstream(self, name: str) -> Upstream:
        for u in self.upstreams:
            if u.name == name:
                return u
        raise KeyError(name)

    def timeouts(self, route: Route) -> Timeouts:
        """`route`'s timeouts: its overrides on top of defaults.timeouts."""
        overrides = route.timeouts.model_dump(exclude_none=True)
        return self.defaults.timeouts.model_copy(update=overrides)

    def repair_of(self, route: Route) -> Repair:
        """`route`'s repair settings: its overrides on top of the top-level repair."""
        overrides = route.repair.model_dump(exclude_none=True)
        return self.repair.model_copy(update=overrides)

    def route_format(self, route: Route) -> Format:
        """The wire format a route takes: its match's, or else its chain's."""
        return route.match.format or self.upstream(route.chain[0].upstream).format

    def missing_env(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """Environment variables named by api_key_env that are not set."""
        env = os.environ if environ is None else environ
        return [u.api_key_env for u in self.upstreams if u.api_key_env and u.api_key_env not in env]

    def describe(self) -> list[str]:
        """A few lines for humans: what this configuration does."""
        lines = []
        for i, spec in enumerate(self.models):
            label = spec.name or f"#{i}"
            target = spec.to or "(model kept)"
            lines.append(f"model rule {label}: {', '.join(spec.match)} -> {target}")
        for u in self.upstreams:
            env = f", key from ${u.api_key_env}" if u.api_key_env else ""
            lines.append(f"upstream {u.name}: {u.format} at {u.base_url}{env}")
        for r in self.routes:
            chain = " -> ".join(h.upstream for h in r.chain)
            lines.append(f"route {r.name}: {chain}")
        capture = self.capture
        if capture.mode != "off":
            what = f"filter {capture.filter!r}" if capture.mode == "filter" else capture.mode
            lines.append(f"capture: {what} into {capture.dir}/")
        return lines or ["inspect only (no model rules, routes or captures)"]


# --- cross-field checks ----------------------------------------------------------------------


def _cross_problems(c: Config) -> Iterator[Problem]:
    yield from _duplicates("upstreams", [u.name for u in c.upstreams])
    yield from _duplicates("routes", [r.name for r in c.routes])
    yield from _duplicates("models", [m.name for m in c.models])
    upstreams = {u.name: u for u in c.upstreams}

    for i, spec in enumerate(c.models):
        where = f"models.{i}"
        rule_formats: set[str] = set(spec.formats or FORMATS)
        in_path = sorted(f for f in rule_formats if _model_in_path(f))
        if spec.to is not None and in_path and "/" in spec.to:
            yield Problem(
                f"{where}.to",
                f"a model with '/' cannot be sent to a {' or '.join(in_path)} upstream, where "
                "the model is part of the URL path",
                spec.to,
                hint=f"restrict the rule with formats: [...] leaving out {', '.join(in_path)}",
            )
        if (
            spec.tools is not None
            and spec.tools != "none"
            and not any(applies(spec.tools, f) for f in rule_formats)
        ):
            yield Problem(f"{where}.tools", _flavour_mismatch(spec.tools, rule_formats), spec.tools)
        w = spec.when
        if (
            w.min_input_tokens is not None
            and w.max_input_tokens is not None
            and w.min_input_tokens > w.max_input_tokens
        ):
            yield Problem(
                f"{where}.when.max_input_tokens", "is below min_input_tokens", w.max_input_tokens
            )

    for i, u in enumerate(c.upstreams):
        if u.auth == "none" and u.api_key_env is not None:
            yield Problem(
                f"upstreams.{i}.api_key_env",
                "has no effect with auth: none",
                u.api_key_env,
                hint="set auth, or remove api_key_env",
            )
        for header, value in u.headers.items():
            if header.lower() in CREDENTIAL_HEADERS:
                yield Problem(
                    f"upstreams.{i}.headers.{header}",
                    "credentials do not belong in the file",
                    value,
                    hint="put the key in an environment variable and name it in "
                    "api_key_env (with auth: bearer, x-api-key, ...)",
                    secret=True,
                )
        if u.tools != "none" and not applies(u.tools, u.format):
            yield Problem(f"upstreams.{i}.tools", _flavour_mismatch(u.tools, {u.format}), u.tools)

    for i, r in enumerate(c.routes):
        for k, feature in enumerate(r.requires):
            if feature not in FEATURES:
                close = difflib.get_close_matches(feature, list(FEATURES), n=2, cutoff=0.5)
                hint = f"did you mean {' or '.join(repr(x) for x in close)}? " if close else ""
                yield Problem(
                    f"routes.{i}.requires.{k}",
                    "unknown request feature",
                    feature,
                    hint=f"{hint}features: {', '.join(FEATURES)}",
                )
        chain_formats: dict[str, str] = {}  # format -> path of the first hop with it
        route_format = r.match.format
        if route_format is None and r.chain and r.chain[0].upstream in upstreams:
            route_format = upstreams[r.chain[0].upstream].format
        for j, hop in enumerate(r.chain):
            where = f"routes.{i}.chain.{j}"
            hop_upstream = upstreams.get(hop.upstream)
            if hop_upstream is None:
                close = difflib.get_close_matches(hop.upstream, list(upstreams), n=1)
                known = ", ".join(upstreams) or "none defined"
                hint = f"did you mean {close[0]!r}? " if close else ""
                yield Problem(
                    f"{where}.upstream",
                    "unknown upstream",
                    hop.upstream,
                    hint=f"{hint}upstreams: {known}",
                )
                continue
            u = hop_upstream
            chain_formats.setdefault(u.format, f"{where}.upstream")
            if r.translate and route_format is not None and u.format != route_format:
                yield from _translated_hop(where, r, route_format, u, hop)
            elif r.match.format is not None and u.format != r.match.format:
                yield Problem(
                    f"{where}.upstream",
                    f"upstream {u.name!r} speaks {u.format}, the route takes {r.match.format}",
                    hop.upstream,
                    hint=f"set translate: true on routes.{i} to translate between the formats",
                )
            elif len(chain_formats) > 1 and chain_formats[u.format] == f"{where}.upstream":
                yield Problem(
                    f"{where}.upstream",
                    f"the chain mixes wire formats ({', '.join(chain_formats)})",
                    hop.upstream,
                    hint=f"set translate: true on routes.{i} to translate between the formats",
                )
            if _model_in_path(u.format):
                for glob, model in hop.models.items():
                    if "/" in model:
                        yield Problem(
                            f"{where}.models.{glob}",
                            f"a model with '/' cannot be sent to a {u.format} upstream, where "
                            "the model is part of the URL path",
                            model,
                        )
            if hop.tools is not None and hop.tools != "none" and not applies(hop.tools, u.format):
                yield Problem(f"{where}.tools", _flavour_mismatch(hop.tools, {u.format}), hop.tools)

    if c.capture.mode == "filter" and c.capture.filter is None:
        yield Problem(
            "capture.filter",
            "mode: filter needs a filter expression",
            hint="e.g. filter: '~d api.anthropic.com'",
        )
    if c.capture.mode != "filter" and c.capture.filter is not None:
        yield Problem(
            "capture.mode",
            f"is {c.capture.mode!r}, so the filter is not used",
            c.capture.mode,
            hint="set mode: filter",
        )
    if c.breaker.max_open_for < c.breaker.open_for:
        yield Problem("breaker.max_open_for", "is shorter than open_for", c.breaker.max_open_for)


def _translated_hop(
    where: str, route: Route, client: str, upstream: Upstream, hop: Hop
) -> Iterator[Problem]:
    """A hop of another format than the route's clients: it needs its own model names, and
    every feature the route requires must reach it."""
    try:
        gaps = uncarried(client, upstream.format, [f for f in route.requires if f in FEATURES])
    except NotTranslatable as e:
        yield Problem(f"{where}.upstream", str(e), hop.upstream)
        return
    for gap in gaps:
        yield Problem(
            f"{where}.upstream",
            f"{client} requests lose {gap.path} on their way to {upstream.name!r}: {gap.reason}",
            hop.upstream,
            hint="choose an upstream that carries it, or remove it from requires",
        )
    if not hop.models:
        yield Problem(
            f"{where}.models",
            f"upstream {upstream.name!r} speaks {upstream.format}, so {client} model names mean "
            "nothing to it",
            hint="map them, e.g. models: {'claude-*': 'gpt-4.1'}",
        )


def _model_in_path(fmt: str) -> bool:
    dialect = by_name(fmt)
    return dialect is not None and dialect.model_in_path


def _duplicates(section: str, names: Sequence[str | None]) -> Iterator[Problem]:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name is None:
            continue
        if name in seen:
            yield Problem(
                f"{section}.{i}.name", "duplicate name", name, hint="names must be unique"
            )
        seen.add(name)


def _flavour_mismatch(flavour: str, formats: set[str]) -> str:
    fits = [f for f in FORMATS if applies(flavour, f)]
    return (
        f"tool flavour {flavour!r} does nothing for {', '.join(sorted(formats))} requests "
        f"(it applies to {', '.join(fits)})"
    )


# --- errors ----------------------------------------------------------------------------------

_NO_VALUE: Any = object()


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config file."""

    path: str  # dotted field path, e.g. routes.0.chain.1.upstream ("" for the whole file)
    message: str
    value: Any = _NO_VALUE
    hint: str | None = None
    line: int | None = None
    column: int | None = None
    secret: bool = False  # the value is a credential: never repeat it

    def render(self, source: str) -> str:
        where = source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        shown = _show(self.value, self.secret) if self.value is not _NO_VALUE else ""
        if shown and shown not in text:
            text += f" (got {shown})"
        if self.hint:
            text += f"; hint: {self.hint}"
        # One line per problem, whatever characters the file's keys hold.
        return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class ConfigError(Exception):
    """A configuration file that cannot be used; `problems` says why, one per line."""

    def __init__(self, problems: Sequence[Problem], source: str = "<config>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(p.render(source) for p in self.problems))

    def paths(self) -> list[str]:
        return [p.path for p in self.problems]


def _show(value: Any, secret: bool) -> str:
    """A bad value as the message shows it; secrets are not repeated."""
    if secret or _looks_secret(value):
        return f"a secret of {len(str(value))} characters, not shown"
    if isinstance(value, dict | list | tuple) and _holds_secret(value):
        return f"{type(value).__name__} holding a secret, not shown"
    shown = (
        json.dumps(value, default=str) if isinstance(value, dict | list | tuple) else repr(value)
    )
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _holds_secret(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_holds_secret(k) or _holds_secret(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_secret(v) for v in value)
    return _looks_secret(value)


# --- reading the file ------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans (only true/false), and duplicate keys are errors."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            if key_node.value in seen:
                raise ConstructorError(
                    None,
                    None,
                    f"duplicate key {key_node.value!r} (first on line {seen[key_node.value]})",
                    key_node.start_mark,
                )
            seen[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; raises ConfigError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError([Problem("", f"cannot read the file: {reason}")], source) from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Validate config text (YAML); raises ConfigError naming `source`."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = f"YAML syntax error: {e.problem or e.context}"
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        raise ConfigError([Problem("", message, line=line, column=column)], source) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem("", f"YAML error: {e}")], source) from None
    finally:
        loader.dispose()
    if data is None:
        return Config.empty()
    if not isinstance(data, dict):
        problem = Problem(
            "",
            "the top level must be a mapping of sections",
            type(data).__name__,
            hint="start with 'version: 1'",
            line=1,
        )
        raise ConfigError([problem], source)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        problems = [_problem(err, data, root) for err in e.errors()]
    except ConfigError as e:
        problems = [_locate(p, root) for p in e.problems]
    problems.sort(key=lambda p: p.line or 0)
    raise ConfigError(problems, source)


def _problem(err: Any, data: Any, root: yaml.Node | None) -> Problem:
    """A pydantic error as a Problem: the path trimmed to keys that exist in the file."""
    loc: list[str | int] = []
    node = data
    for part in err["loc"]:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            node = node[part]
        elif err["type"] == "extra_forbidden" or err["type"] == "missing":
            loc.append(part)
            break
        else:
            break  # pydantic's own steps (union members, "[key]") are not in the file
        loc.append(part)
    path = ".".join(str(p) for p in loc)
    ctx = err.get("ctx") or {}
    message = err["msg"].removeprefix("Value error, ")
    hint = ctx.get("hint")
    value = err.get("input", _NO_VALUE)
    kind = err["type"]
    secret = kind == "secret_in_config"
    if kind == "extra_forbidden":
        key = str(loc[-1]).lower() if loc else ""
        if key in _SECRET_KEYS:
            secret = True
            message = "secrets do not belong in the config file"
            hint = (
                "put the key in an environment variable and write its name in api_key_env, "
                "e.g. api_key_env: ANTHROPIC_API_KEY"
            )
        else:
            message = "unknown field"
            fields = _fields_at(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
            hint = (f"did you mean {close[0]!r}? " if close else "") + (
                f"fields here: {', '.join(fields)}" if fields else ""
            ) or None
    elif kind == "missing":
        value = _NO_VALUE
        message = "required field is missing"
    elif kind in ("tuple_type", "list_type"):
        message = "should be a list"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        message = "should be a mapping"
    elif kind == "literal_error":
        expected = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        close = difflib.get_close_matches(str(value), expected, n=2, cutoff=0.5)
        if close:
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?"
    return _locate(Problem(path, message, value, hint, secret=secret), root)


def _fields_at(loc: Sequence[str | int]) -> list[str]:
    """Field names of the config section at `loc` (for "did you mean")."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        info = model.model_fields.get(part)
        if info is None:
            return []
        model = _section_type(info.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _section_type(annotation: Any) -> Any:
    """The model class inside an annotation like `tuple[Route, ...]` or `Sticky | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict:
        args = args[1:]
    if origin in (tuple, list, dict, types.UnionType, typing.Union, Annotated):
        for arg in args:
            found = _section_type(arg)
            if found is not None:
                return found
    return None


def _locate(problem: Problem, root: yaml.Node | None) -> Problem:
    """The problem with the line of its path in the file."""
    if root is None or problem.line is not None:
        return problem
    node = root
    for part in problem.path.split(".") if problem.path else ():
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    child = value
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            child = node.value[int(part)]
        if child is None:
            break
        node = child
    return dataclasses.replace(problem, line=node.start_mark.line + 1)


# --- JSON Schema and the command line --------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file (for editors and documentation)."""
    schema = Config.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mitmllm.engine.config", description="mitmllm configuration files"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("schema", help="print the JSON Schema of the config file")
    check = commands.add_parser("check", help="validate a config file")
    check.add_argument("file", help="the YAML config file")
    args = parser.parse_args(argv)
    if args.command == "schema":
        print(json.dumps(json_schema(), indent=2))
        return 0
    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{args.file}: ok")
    for line in config.describe():
        print(f"  {line}")
    for name in config.missing_env():
        print(f"  warning: environment variable {name} is not set here", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
