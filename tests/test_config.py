"""The configuration file: parsing, durations and sizes, cross-field checks, errors, JSON Schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.engine.config import Config
from mitmllm.engine.config import ConfigError
from mitmllm.engine.config import json_schema
from mitmllm.engine.config import load_config
from mitmllm.engine.config import main
from mitmllm.engine.config import parse_config
from mitmllm.engine.config import parse_duration
from mitmllm.engine.config import parse_size
from mitmllm.protocol.models import Param
from mitmllm.protocol.models import When
from mitmllm.protocol.models import apply_params
from mitmllm.protocol.models import facts
from mitmllm.protocol.models import select

CONFIGS = Path(__file__).parent / "configs"
EXAMPLE = CONFIGS / "example.yaml"

ANTHROPIC = {
    "name": "primary",
    "base_url": "https://api.anthropic.com",
    "format": "anthropic",
    "api_key_env": "ANTHROPIC_API_KEY",
}
GATEWAY = {"name": "gateway", "base_url": "https://gw.example.com/v1", "format": "anthropic"}
GEMINI = {
    "name": "gem",
    "base_url": "https://generativelanguage.googleapis.com",
    "format": "gemini",
    "api_key_env": "GEMINI_API_KEY",
}
OPENAI = {"name": "oai", "base_url": "https://api.openai.com", "format": "openai-chat"}


def text_of(data: dict[str, Any]) -> str:
    return yaml.safe_dump({"version": 1, **data}, sort_keys=False)


def error_of(text: str, source: str = "cfg.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source)
    return info.value


def line_for(error: ConfigError, path: str) -> str:
    """The error's line about `path`."""
    lines = [line for line in str(error).splitlines() if f": {path}: " in line]
    assert lines, f"no problem reported at {path!r}:\n{error}"
    return lines[0]


# --- the example ------------------------------------------------------------------------------


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert [r.name for r in config.model_rules] == [s.name for s in config.models]
    assert [u.name for u in config.upstreams] == [
        "anthropic",
        "bedrock-gateway",
        "openai",
        "local-vllm",
    ]
    assert [r.name for r in config.routes] == ["claude", "chat"]
    assert config.capture.mode == "flagged"
    assert config.capture.max_body == 32 * 2**20
    assert config.breaker.open_for == 30 and config.breaker.max_open_for == 300


def test_example_describe_and_env() -> None:
    config = load_config(EXAMPLE)
    lines = config.describe()
    assert "route claude: anthropic -> bedrock-gateway" in lines
    assert "capture: flagged into captures/" in lines
    assert config.missing_env({"ANTHROPIC_API_KEY": "x", "OPENAI_API_KEY": "y"}) == [
        "GATEWAY_TOKEN"
    ]


def test_auth_defaults_per_format() -> None:
    config = load_config(EXAMPLE)
    auth = {u.name: u.auth for u in config.upstreams}
    assert auth == {
        "anthropic": "x-api-key",
        "bedrock-gateway": "bearer",
        "openai": "bearer",
        "local-vllm": "none",
    }
    gemini = parse_config(text_of({"upstreams": [GEMINI]}))
    assert gemini.upstreams[0].auth == "x-goog-api-key"


def test_route_timeouts_inherit_defaults() -> None:
    config = load_config(EXAMPLE)
    claude, chat = config.routes
    t = config.timeouts(claude)
    assert (t.connect, t.first_event, t.idle, t.total, t.keepalive) == (5, 90, 120, 900, 15)
    t = config.timeouts(chat)
    assert (t.connect, t.first_event, t.idle, t.total) == (2, 60, 90, 600)


def test_hop_model_mapping_first_glob_wins() -> None:
    hop = load_config(EXAMPLE).routes[0].chain[1]
    assert hop.map_model("claude-sonnet-4-20250514") == "claude-sonnet-4-5"
    assert hop.map_model("claude-opus-4-1") == "claude-haiku-4-5"
    assert hop.map_model("gpt-4o") == "gpt-4o"
    assert hop.map_model(None) is None


def test_a_translating_route_may_mix_formats_or_serve_another_format_only() -> None:
    fallback = {"upstream": "oai", "models": {"claude-*": "gpt-4.1"}}
    config = parse_config(
        text_of(
            {
                "upstreams": [ANTHROPIC, OPENAI],
                "routes": [
                    route("primary", fallback, name="mixed", translate=True, requires=["tools"]),
                    route(fallback, name="forced", translate=True, match={"format": "anthropic"}),
                ],
            }
        )
    )
    assert [config.route_format(r) for r in config.routes] == ["anthropic", "anthropic"]


def test_mixing_formats_without_translate_says_how_to_allow_it() -> None:
    error = error_of(
        text_of({"upstreams": [ANTHROPIC, OPENAI], "routes": [route("primary", "oai")]})
    )
    assert "set translate: true on routes.0" in line_for(error, "routes.0.chain.1.upstream")


def test_a_lost_feature_names_the_hop_and_the_feature() -> None:
    hop = {"upstream": "oai", "models": {"*": "gpt-4.1"}}
    data = {
        "upstreams": [ANTHROPIC, OPENAI],
        "routes": [route("primary", hop, translate=True, requires=["top_k", "tools"])],
    }
    line = line_for(error_of(text_of(data)), "routes.0.chain.1.upstream")
    assert "anthropic requests lose top_k on their way to 'oai'" in line
    assert "OpenAI Chat Completions cannot carry top_k" in line


def test_route_format_comes_from_match_or_chain() -> None:
    config = load_config(EXAMPLE)
    assert [config.route_format(r) for r in config.routes] == ["anthropic", "openai-chat"]
    assert config.routes[0].match.host == "api.anthropic.com"


def test_model_rules_are_core_rules() -> None:
    rules = load_config(EXAMPLE).model_rules
    first = rules[0]
    assert first.match == ("claude-*",)
    assert first.formats == frozenset({"anthropic"})
    assert first.when == When(min_input_tokens=150000)
    assert first.params == {"max_tokens": Param(max=64000)}
    assert rules[1].to is None and rules[1].params == {
        "temperature": Param(set=1.0),
        "top_p": Param(drop=True),
    }
    assert rules[3].tools == "openai"


def test_example_rules_applied_to_a_request() -> None:
    rules = load_config(EXAMPLE).model_rules
    body = {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 20000,
        "temperature": 0.7,
        "top_p": 0.9,
        "thinking": {"type": "enabled", "budget_tokens": 8000},
        "messages": [{"role": "user", "content": "hi"}],
    }
    rule = select(rules, facts("anthropic", "/v1/messages", {}, body, body["model"]))
    assert rule is not None and rule.name == "thinking-needs-temperature-1"
    changes = apply_params(body, rule.params)
    assert [c.to_dict() for c in changes] == [
        {"param": "temperature", "action": "set", "before": 0.7, "after": 1.0},
        {"param": "top_p", "action": "drop", "before": 0.9},
    ]


def test_empty_config_is_inspect_only() -> None:
    for config in (Config.empty(), parse_config(""), parse_config("# nothing yet\n")):
        assert config.model_rules == () and config.routes == () and config.upstreams == ()
        assert config.capture.mode == "off"
        assert config.describe() == ["inspect only (no model rules, routes or captures)"]


def test_config_is_immutable() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(pydantic.ValidationError):
        config.capture.mode = "all"  # type: ignore[misc]


def test_capture_always_redacts_credentials() -> None:
    config = load_config(EXAMPLE)
    assert {"authorization", "x-api-key", "x-goog-api-key", "x-claude-code-session-id"} <= (
        config.capture.headers_to_redact
    )
    assert "key" in config.capture.query_to_redact


def test_yaml_12_booleans() -> None:
    config = parse_config("capture: {mode: off}\nmodels: [{match: 'no', to: yes}]\n")
    assert config.capture.mode == "off"
    assert config.models[0].match == ("no",) and config.models[0].to == "yes"


# --- durations and sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30),
        (0.25, 0.25),
        ("30", 30),
        ("1.5", 1.5),
        ("250ms", 0.25),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1m30s", 90),
        ("1h0m5s500ms", 3605.5),
        (" 10s ", 10),
    ],
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        "0s",
        "-5s",
        "5x",
        "s",
        "",
        "30s5m",
        "1m1m",
        "1h 30m",
        "1.5.5s",
        True,
        None,
        [1],
        float("inf"),
        float("nan"),
        "1e3",
    ],
)
def test_bad_durations(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1, 1),
        ("512", 512),
        ("512B", 512),
        ("512KB", 512_000),
        ("512kb", 512_000),
        ("32MiB", 32 * 2**20),
        ("1.5MiB", 1572864),
        ("2GB", 2 * 10**9),
        ("1 GiB", 2**30),
    ],
)
def test_sizes(value: Any, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", [0, -1, "0MiB", "1.5B", "12XB", "MiB", "", True, 1.5, None])
def test_bad_sizes(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


def test_durations_and_sizes_in_the_file() -> None:
    text = text_of(
        {
            "defaults": {"timeouts": {"connect": "250ms", "total": 600}},
            "capture": {"max_body": "512KB"},
            "breaker": {"open_for": "1m30s"},
        }
    )
    config = parse_config(text)
    assert config.defaults.timeouts.connect == 0.25
    assert config.defaults.timeouts.total == 600
    assert config.capture.max_body == 512_000
    assert config.breaker.open_for == 90


# --- errors -----------------------------------------------------------------------------------


def route(*chain: Any, **extra: Any) -> dict[str, Any]:
    hops = [h if isinstance(h, dict) else {"upstream": h} for h in chain]
    return {"name": extra.pop("name", "r"), "chain": hops, **extra}


ERRORS = [
    pytest.param(
        {"upstreams": [ANTHROPIC, GATEWAY], "routes": [route("primary", "gatewya")]},
        "routes.0.chain.1.upstream",
        "'gatewya'",
        id="unknown-upstream",
    ),
    pytest.param(
        {"upstreams": [ANTHROPIC], "routes": [route()]}, "routes.0.chain", None, id="empty-chain"
    ),
    pytest.param(
        {"upstreams": [ANTHROPIC], "routes": [{"name": "r"}]},
        "routes.0.chain",
        None,
        id="missing-chain",
    ),
    pytest.param(
        {"upstreams": [ANTHROPIC, ANTHROPIC]},
        "upstreams.1.name",
        "'primary'",
        id="duplicate-upstream",
    ),
    pytest.param(
        {"upstreams": [ANTHROPIC], "routes": [route("primary"), route("primary")]},
        "routes.1.name",
        "'r'",
        id="duplicate-route",
    ),
    pytest.param(
        {"models": [{"name": "a", "match": "x"}, {"name": "a", "match": "y"}]},
        "models.1.name",
        "'a'",
        id="duplicate-rule-name",
    ),
    pytest.param(
        {"upstreams": [{**ANTHROPIC, "api_key_env": "MY-KEY"}]},
        "upstreams.0.api_key_env",
        "'MY-KEY'",
        id="bad-env-name",
    ),
    pytest.param(
        {"upstreams": [{**ANTHROPIC, "auth": "none"}]},
        "upstreams.0.api_key_env",
        "'ANTHROPIC_API_KEY'",
        id="auth-none-with-key",
    ),
    pytest.param(
        {"upstreams": [{**ANTHROPIC, "auth": "basic"}]},
        "upstreams.0.auth",
        "'basic'",
        id="bad-auth",
    ),
    pytest.param(
        {
            "upstreams": [GEMINI, {**GEMINI, "name": "gem2"}],
            "routes": [route("gem", {"upstream": "gem2", "models": {"*": "a/b"}})],
        },
        "routes.0.chain.1.models.*",
        "'a/b'",
        id="slash-model-to-gemini-hop",
    ),
    pytest.param(
        {"models": [{"match": "gemini-*", "formats": ["gemini"], "to": "google/x"}]},
        "models.0.to",
        "'google/x'",
        id="slash-model-to-gemini-rule",
    ),
    pytest.param(
        {"models": [{"match": "*", "to": "openrouter/auto"}]},
        "models.0.to",
        "'openrouter/auto'",
        id="slash-model-rule-without-formats",
    ),
    pytest.param(
        {"models": [{"match": "claude-[", "to": "x"}]},
        "models.0.match",
        "'claude-['",
        id="bad-glob",
    ),
    pytest.param(
        {"models": [{"match": ["ok", " x"], "to": "x"}]},
        "models.0.match.1",
        "' x'",
        id="bad-glob-in-list",
    ),
    pytest.param(
        {
            "upstreams": [ANTHROPIC],
            "routes": [route({"upstream": "primary", "models": {"[x": "y"}})],
        },
        "routes.0.chain.0.models.[x",
        None,
        id="bad-glob-hop-models",
    ),
    pytest.param(
        {"upstreams": [ANTHROPIC], "routes": [route("primary", match={"host": "api.[x"})]},
        "routes.0.match.host",
        "'api.[x'",
        id="bad-glob-route-host",
    ),
    pytest.param(
        {"models": [{"match": "*", "formats": ["openai"]}]},
        "models.0.formats.0",
        "'openai'",
        id="bad-format",
    ),
    pytest.param(
        {"upstreams": [{**ANTHROPIC, "format": "claude"}]},
        "upstreams.0.format",
        "'claude'",
        id="bad-upstream-format",
    ),
    pytest.param(
        {"models": [{"match": "*", "tools": "gpt"}]}, "models.0.tools", "'gpt'", id="bad-flavour"
    ),
    pytest.param(
        {"models": [{"match": "*", "formats": "anthropic", "tools": "openai"}]},
        "models.0.tools",
        "'openai'",
        id="flavour-does-nothing-for-rule",
    ),
    pytest.param(
        {"upstreams": [{**ANTHROPIC, "tools": "openai"}]},
        "upstreams.0.tools",
        "'openai'",
        id="flavour-does-nothing-for-upstream",
    ),
    pytest.param(
        {"upstreams": [OPENAI], "routes": [route({"upstream": "oai", "tools": "anthropic"})]},
        "routes.0.chain.0.tools",
        "'anthropic'",
        id="flavour-does-nothing-for-hop",
    ),
    pytest.param(
        {"upstreams": [ANTHROPIC, OPENAI], "routes": [route("primary", "oai")]},
        "routes.0.chain.1.upstream",
        "'oai'",
        id="chain-mixes-formats",
    ),
    pytest.param(
        {"upstreams": [ANTHROPIC], "routes": [route("primary", match={"format": "openai-chat"})]},
        "routes.0.chain.0.upstream",
        "'primary'",
        id="route-format-mismatch",
    ),
    pytest.param(
        {
            "upstreams": [ANTHROPIC, OPENAI],
            "routes": [route("primary", "oai", translate=True)],
        },
        "routes.0.chain.1.models",
        None,
        id="translated-hop-without-models",
    ),
    pytest.param(
        {
            "upstreams": [ANTHROPIC, OPENAI],
            "routes": [
                route(
                    "primary",
                    {"upstream": "oai", "models": {"*": "gpt-4.1"}},
                    translate=True,
                    requires=["top_k"],
                )
            ],
        },
        "routes.0.chain.1.upstream",
        "'oai'",
        id="translated-hop-cannot-carry-a-required-feature",
    ),
    pytest.param(
        {"upstreams": [ANTHROPIC], "routes": [route("primary", requires=["tool"])]},
        "routes.0.requires.0",
        "'tool'",
        id="unknown-required-feature",
    ),
    pytest.param(
        {"capture": {"mode": "filter"}}, "capture.filter", None, id="capture-filter-missing"
    ),
    pytest.param(
        {"capture": {"mode": "all", "filter": "~d example.com"}},
        "capture.mode",
        "'all'",
        id="capture-filter-unused",
    ),
    pytest.param(
        {"capture": {"mode": "filter", "filter": "~nope"}},
        "capture.filter",
        "'~nope'",
        id="capture-filter-invalid",
    ),
    pytest.param(
        {"capture": {"mode": "sometimes"}}, "capture.mode", "'sometimes'", id="capture-mode"
    ),
    pytest.param(
        {"breaker": {"open_for": "10m", "max_open_for": "1m"}},
        "breaker.max_open_for",
        "60.0",
        id="breaker-window",
    ),
    pytest.param({"breaker": {"failures": 0}}, "breaker.failures", "0", id="breaker-failures"),
    pytest.param(
        {"models": [{"match": "*", "params": {"temperature": {"set": 1, "max": 2}}}]},
        "models.0.params.temperature",
        None,
        id="param-set-and-max",
    ),
    pytest.param(
        {"models": [{"match": "*", "params": {"top_p": {"drop": True, "min": 0}}}]},
        "models.0.params.top_p",
        None,
        id="param-drop-and-min",
    ),
    pytest.param(
        {"models": [{"match": "*", "params": {"top_p": {}}}]},
        "models.0.params.top_p",
        None,
        id="param-empty",
    ),
    pytest.param(
        {"models": [{"match": "*", "params": {"t": {"min": 2, "max": 1}}}]},
        "models.0.params.t",
        None,
        id="param-min-above-max",
    ),
    pytest.param(
        {"models": [{"match": "*", "when": {"min_input_tokens": 10, "max_input_tokens": 5}}]},
        "models.0.when.max_input_tokens",
        "5",
        id="when-min-above-max",
    ),
    pytest.param(
        {"models": [{"match": "*", "when": {"min_input_tokens": -1}}]},
        "models.0.when.min_input_tokens",
        "-1",
        id="when-negative",
    ),
    pytest.param(
        {"models": [{"match": "*", "when": {"thinkng": True}}]},
        "models.0.when.thinkng",
        None,
        id="when-typo",
    ),
    pytest.param(
        {"upstreams": [ANTHROPIC], "routes": [route("primary", sticky={"key": "x"})]},
        "routes.0.sticky.key",
        "'x'",
        id="sticky-key",
    ),
    pytest.param(
        {"upstreams": [{**ANTHROPIC, "base_url": "api.anthropic.com"}]},
        "upstreams.0.base_url",
        "'api.anthropic.com'",
        id="base-url-no-scheme",
    ),
    pytest.param(
        {"upstreams": [{**ANTHROPIC, "base_url": "https://h/?x=1"}]},
        "upstreams.0.base_url",
        None,
        id="base-url-query",
    ),
    pytest.param(
        {"upstreams": [{**ANTHROPIC, "name": "my upstream"}]},
        "upstreams.0.name",
        "'my upstream'",
        id="bad-name",
    ),
    pytest.param(
        {"models": [{"match": "*", "to": "claude sonnet"}]},
        "models.0.to",
        "'claude sonnet'",
        id="model-with-space",
    ),
    pytest.param(
        {"models": [{"match": "*", "params": {"a..b": {"drop": True}}}]},
        "models.0.params.a..b",
        None,
        id="param-name",
    ),
    pytest.param(
        {"upstreams": [{**OPENAI, "headers": {"x header": "v"}}]},
        "upstreams.0.headers.x header",
        None,
        id="header-name",
    ),
    pytest.param(
        {"defaults": {"timeouts": {"idle": "1m30"}}},
        "defaults.timeouts.idle",
        "'1m30'",
        id="bad-duration",
    ),
    pytest.param(
        {"upstreams": [ANTHROPIC], "routes": [route("primary", timeouts={"connect": "-5s"})]},
        "routes.0.timeouts.connect",
        "'-5s'",
        id="negative-duration",
    ),
    pytest.param({"capture": {"max_body": "lots"}}, "capture.max_body", "'lots'", id="bad-size"),
    pytest.param({"version": 2}, "version", "2", id="version"),
    pytest.param({"models": {"match": "*"}}, "models", None, id="section-not-a-list"),
]


@pytest.mark.parametrize(("data", "path", "value"), ERRORS)
def test_errors_name_file_path_and_value(
    data: dict[str, Any], path: str, value: str | None
) -> None:
    error = error_of(text_of(data))
    assert path in error.paths()
    line = line_for(error, path)
    assert re.match(r"cfg\.yaml:\d+: ", line), line
    if value is not None:
        assert value in line


def test_unknown_field_suggests_the_right_one() -> None:
    error = error_of(text_of({"upstreams": [{**ANTHROPIC, "tool": "gemini"}], "route": []}))
    assert "did you mean 'tools'?" in line_for(error, "upstreams.0.tool")
    assert "did you mean 'routes'?" in line_for(error, "route")


def test_bad_format_suggests_formats() -> None:
    error = error_of(text_of({"models": [{"match": "*", "formats": "openai"}]}))
    assert "did you mean 'openai-chat' or 'openai-responses'?" in str(error)


@pytest.mark.parametrize(
    ("upstream", "path"),
    [
        ({**ANTHROPIC, "api_key": "sk-ant-api03-SECRETSECRETSECRET"}, "upstreams.0.api_key"),
        ({**ANTHROPIC, "token": "SECRETSECRETSECRET"}, "upstreams.0.token"),
        (
            {**ANTHROPIC, "api_key_env": "sk-ant-api03-SECRETSECRETSECRET"},
            "upstreams.0.api_key_env",
        ),
        ({**ANTHROPIC, "api_key_env": "AIzaSECRETSECRETSECRET"}, "upstreams.0.api_key_env"),
        (
            {**OPENAI, "headers": {"Authorization": "Bearer SECRETSECRETSECRET"}},
            "upstreams.0.headers.Authorization",
        ),
        (
            {**ANTHROPIC, "headers": {"x-api-key": "SECRETSECRETSECRET"}},
            "upstreams.0.headers.x-api-key",
        ),
    ],
)
def test_secrets_in_the_file_are_errors_and_never_repeated(
    upstream: dict[str, Any], path: str
) -> None:
    error = error_of(text_of({"upstreams": [upstream]}))
    assert path in error.paths()
    assert "api_key_env" in line_for(error, path)  # the hint says what to do instead
    assert "SECRET" not in str(error)


def test_a_slashed_model_is_fine_for_openai_formats() -> None:
    config = parse_config(
        text_of(
            {
                "models": [{"match": "*", "formats": ["openai-chat"], "to": "qwen/qwen3-coder"}],
                "upstreams": [OPENAI],
                "routes": [route({"upstream": "oai", "models": {"*": "meta/llama-4"}})],
            }
        )
    )
    assert config.models[0].to == "qwen/qwen3-coder"


def test_all_problems_are_reported_one_per_line_in_file_order() -> None:
    text = text_of(
        {
            "upstreams": [ANTHROPIC, ANTHROPIC],
            "routes": [route("primary", "nope"), route("primary")],
        }
    )
    error = error_of(text)
    assert error.paths() == ["upstreams.1.name", "routes.0.chain.1.upstream", "routes.1.name"]
    assert len(str(error).splitlines()) == 3
    numbers = [p.line for p in error.problems]
    assert numbers == sorted(numbers)


def test_error_lines_point_into_the_file() -> None:
    text = "version: 1\nupstreams:\n  - name: a\n    base_url: nope\n    format: anthropic\n"
    error = error_of(text, "conf.yaml")
    assert str(error) == (
        "conf.yaml:4: upstreams.0.base_url: base_url must be an http(s) URL with a host "
        "(got 'nope')"
    )


def test_yaml_syntax_error_names_line_and_column() -> None:
    error = error_of("version: 1\nmodels: [\n  {match: x\n", "broken.yaml")
    (problem,) = error.problems
    assert problem.line == 4 and problem.column is not None
    assert str(error).startswith("broken.yaml:4:")
    assert "YAML syntax error" in str(error)


def test_duplicate_keys_are_errors() -> None:
    error = error_of("version: 1\ncapture:\n  mode: all\n  mode: off\n")
    assert str(error).startswith("cfg.yaml:4:")
    assert "duplicate key 'mode' (first on line 3)" in str(error)


def test_merge_keys_may_override() -> None:
    text = (
        "x-up: &up {base_url: 'https://a.example', format: anthropic}\n"
        "upstreams:\n  - {<<: *up, name: a, format: anthropic}\n"
    )
    error = error_of(text)  # the anchor's key is unknown, the merge itself is fine
    assert error.paths() == ["x-up"]


def test_top_level_must_be_a_mapping() -> None:
    error = error_of("- a\n- b\n")
    assert "top level must be a mapping" in str(error)


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert str(info.value).startswith(str(tmp_path / "missing.yaml"))


def bad_files() -> list[Any]:
    return [pytest.param(p, id=p.stem) for p in sorted(CONFIGS.glob("bad-*.yaml"))]


@pytest.mark.parametrize("path", bad_files())
def test_bad_config_files(path: Path) -> None:
    expected = re.findall(r"^# expect: (.*)$", path.read_text(), re.MULTILINE)
    assert expected
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    for expect in expected:
        where, _, rest = expect.partition(" ")
        matching = [line for line in lines if where in line and rest in line]
        assert matching, f"{expect!r} not in:\n{info.value}"
        assert all(line.startswith(str(path)) for line in lines)
    assert "NOT-A-REAL-KEY" not in str(info.value)


_keys = st.sampled_from(
    [
        "version",
        "models",
        "upstreams",
        "routes",
        "defaults",
        "breaker",
        "capture",
        "name",
        "match",
        "to",
        "formats",
        "when",
        "params",
        "tools",
        "chain",
        "upstream",
        "base_url",
        "format",
        "api_key_env",
        "api_key",
        "headers",
        "timeouts",
        "sticky",
        "key",
        "mode",
        "filter",
        "set",
        "max",
        "drop",
        "connect",
        "models.0",
    ]
) | st.text(max_size=4)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.floats(allow_nan=False)
    | st.sampled_from(
        [
            "anthropic",
            "gemini",
            "openai",
            "a/b",
            "claude-*",
            "[",
            "5s",
            "-1",
            "https://x.example",
            "primary",
            "sk-ant-xyz",
            "~q",
            "",
        ]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(_keys, _values, max_size=5))
def test_any_document_gives_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data)
    try:
        parse_config(text, "x.yaml")
    except ConfigError as e:
        assert e.problems
        assert all(line.startswith("x.yaml") for line in str(e).splitlines())
        assert "sk-ant-xyz" not in str(e)


# --- JSON Schema ------------------------------------------------------------------------------


def schema_errors(
    schema: dict[str, Any], value: Any, root: dict[str, Any], path: str = ""
) -> list[str]:
    """The JSON Schema keywords pydantic emits, checked plainly (no validator is installed)."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return schema_errors(root["$defs"][name], value, root, path)
    if "anyOf" in schema:
        options = [schema_errors(s, value, root, path) for s in schema["anyOf"]]
        return [] if any(not o for o in options) else [f"{path}: no anyOf option fits"]
    errors: list[str] = []
    kinds = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "null": type(None),
        "integer": int,
        "number": (int, float),
    }
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, kinds[kind]) and not (
            kind in ("integer", "number") and isinstance(value, bool)
        )
        if not ok:
            return [f"{path}: {value!r} is not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in enum")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} is not {schema['const']!r}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{path}: {value!r} too small")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value!r} too small")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}.{key}: required")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                errors += schema_errors(props[key], item, root, f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}.{key}: not allowed")
            elif isinstance(extra, dict):
                errors += schema_errors(extra, item, root, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(schema["items"], item, root, f"{path}.{i}")
    return errors


def test_json_schema_validates_the_example() -> None:
    schema = json_schema()
    data = yaml.safe_load(EXAMPLE.read_text())
    assert schema_errors(schema, data, schema) == []


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"capture": {"mode": "sometimes"}}, ".capture.mode"),
        ({"capture": {"max_body": "lots"}}, ".capture.max_body"),
        ({"breaker": {"open_for": "5x"}}, ".breaker.open_for"),
        ({"breaker": {"open_for": -1}}, ".breaker.open_for"),
        (
            {"routes": [{"name": "r", "chain": [{"upstream": "a", "model": {}}]}]},
            ".routes.0.chain.0.model",
        ),
        ({"upstreams": [{"name": "a", "base_url": "https://x"}]}, ".upstreams.0.format"),
    ],
)
def test_json_schema_rejects_what_the_loader_rejects(patch: dict[str, Any], where: str) -> None:
    schema = json_schema()
    data = {**yaml.safe_load(EXAMPLE.read_text()), **patch}
    errors = schema_errors(schema, data, schema)
    assert any(e.startswith(where) for e in errors), errors
    with pytest.raises(ConfigError):
        parse_config(text_of(data))


def test_json_schema_documents_every_field() -> None:
    schema = json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    sections = [schema, *schema["$defs"].values()]
    undocumented = [
        f"{section.get('title')}.{name}"
        for section in sections
        for name, prop in section.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undocumented == []
    assert all(d.get("description") for n, d in schema["$defs"].items() if n != "JsonValue")
    durations = schema["$defs"]["Timeouts"]["properties"]["idle"]
    assert {"type": "number", "exclusiveMinimum": 0} in durations["anyOf"]


# --- command line -----------------------------------------------------------------------------


def test_cli_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_cli_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{EXAMPLE}: ok\n")
    assert "  route chat: openai -> local-vllm\n" in out


def test_cli_check_errors(capsys: pytest.CaptureFixture[str]) -> None:
    bad = CONFIGS / "bad-unknown-upstream.yaml"
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:17: routes.0.chain.1.upstream: unknown upstream (got 'fallbak')" in err


def test_cli_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mitmllm.engine.config", "check", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout
