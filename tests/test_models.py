"""Model rules: request facts per format, rule selection, parameter constraints."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.protocol.models import UNSET
from mitmllm.protocol.models import ModelRule
from mitmllm.protocol.models import Param
from mitmllm.protocol.models import ParamChange
from mitmllm.protocol.models import RequestFacts
from mitmllm.protocol.models import When
from mitmllm.protocol.models import apply_params
from mitmllm.protocol.models import estimate_tokens
from mitmllm.protocol.models import facts
from mitmllm.protocol.models import select

GEMINI_STREAM = "/v1beta/models/gemini-2.5-pro:streamGenerateContent"
GEMINI_UNARY = "/v1beta/models/gemini-2.5-pro:generateContent"


def f(fmt: str, body: Any, path: str = "/v1/messages", model: str | None = "m") -> RequestFacts:
    return facts(fmt, path, {}, body, model)


# --- facts ------------------------------------------------------------------------------------

THINKING = [
    ("anthropic", {"thinking": {"type": "enabled", "budget_tokens": 2048}}, True),
    ("anthropic", {"thinking": {"type": "adaptive"}}, True),
    ("anthropic", {"thinking": {"type": "disabled"}}, False),
    ("anthropic", {"thinking": None}, False),
    ("anthropic", {}, False),
    ("openai-chat", {"reasoning_effort": "high"}, True),
    ("openai-chat", {"reasoning_effort": "minimal"}, True),
    ("openai-chat", {"reasoning_effort": "none"}, False),
    ("openai-chat", {"reasoning": {"effort": "low"}}, True),
    ("openai-chat", {}, False),
    ("openai-responses", {"reasoning": {"effort": "medium", "summary": "auto"}}, True),
    ("openai-responses", {"reasoning": {"summary": "auto"}}, True),
    ("openai-responses", {"reasoning": {"effort": "none"}}, False),
    ("openai-responses", {"reasoning": {}}, False),
    ("openai-responses", {"reasoning": None}, False),
    ("gemini", {"generationConfig": {"thinkingConfig": {"thinkingBudget": 1024}}}, True),
    ("gemini", {"generationConfig": {"thinkingConfig": {"thinkingBudget": -1}}}, True),
    ("gemini", {"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}, False),
    ("gemini", {"generationConfig": {"thinkingConfig": {"includeThoughts": True}}}, True),
    ("gemini", {"generationConfig": {"thinkingConfig": {"includeThoughts": False}}}, False),
    ("gemini", {"generationConfig": {"thinkingConfig": {"thinkingLevel": "high"}}}, True),
    ("gemini", {"generation_config": {"thinking_config": {"thinking_budget": 512}}}, True),
    ("gemini", {"generationConfig": {"temperature": 1}}, False),
]


@pytest.mark.parametrize(("fmt", "body", "expected"), THINKING)
def test_thinking(fmt: str, body: dict[str, Any], expected: bool) -> None:
    assert f(fmt, body).thinking is expected


@pytest.mark.parametrize(
    ("fmt", "body", "path", "expected"),
    [
        ("anthropic", {"stream": True}, "/v1/messages", True),
        ("anthropic", {"stream": False}, "/v1/messages", False),
        ("anthropic", {"stream": "true"}, "/v1/messages", False),
        ("openai-chat", {"stream": True}, "/v1/chat/completions", True),
        ("openai-responses", {}, "/v1/responses", False),
        ("gemini", {}, GEMINI_STREAM, True),
        ("gemini", {"stream": True}, GEMINI_UNARY, False),
        ("gemini", None, GEMINI_STREAM, True),
    ],
)
def test_stream(fmt: str, body: Any, path: str, expected: bool) -> None:
    assert f(fmt, body, path).stream is expected


@pytest.mark.parametrize(
    ("fmt", "body", "expected"),
    [
        ("anthropic", {"tools": [{"name": "a", "input_schema": {}}]}, True),
        ("anthropic", {"tools": []}, False),
        ("openai-chat", {"functions": [{"name": "a"}]}, True),
        ("openai-chat", {"tools": None}, False),
        ("openai-responses", {"tools": [{"type": "web_search"}]}, True),
        ("gemini", {"tools": [{"functionDeclarations": [{"name": "a"}]}]}, True),
        ("gemini", {}, False),
    ],
)
def test_tools(fmt: str, body: dict[str, Any], expected: bool) -> None:
    assert f(fmt, body).tools is expected


def test_odd_bodies_give_empty_facts() -> None:
    for body in (None, [], "text", 3):
        got = f("anthropic", body)
        assert (got.stream, got.thinking, got.tools, got.input_tokens) == (False, False, False, 0)


def test_unknown_format_gives_no_tokens() -> None:
    assert f("smtp", {"messages": [{"content": "x" * 400}]}).input_tokens == 0


def test_estimate_counts_prompt_fields_per_format() -> None:
    text = "x" * 400  # 100 tokens
    assert estimate_tokens("openai-chat", {"messages": [{"content": text}]}) >= 100
    assert estimate_tokens("anthropic", {"system": text}) == 100
    assert estimate_tokens("openai-responses", {"instructions": text, "input": text}) == 200
    # Object keys count too: "parts" and "text" add 9 characters.
    assert estimate_tokens("gemini", {"contents": [{"parts": [{"text": text}]}]}) == 103
    # Fields that are not the prompt do not count.
    assert estimate_tokens("anthropic", {"metadata": {"user_id": text}}) == 0
    assert estimate_tokens("anthropic", {"max_tokens": 10**9}) == 0


def test_estimate_counts_tool_schemas() -> None:
    tool = {"name": "t", "input_schema": {"type": "object", "properties": {"q" * 40: {}}}}
    assert estimate_tokens("anthropic", {"tools": [tool]}) > 10


def test_estimate_skips_binary_payloads() -> None:
    blob = "QUJD" * 250_000  # a megabyte of base64
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": blob}}
    small = estimate_tokens("anthropic", {"messages": [{"role": "user", "content": [image]}]})
    assert small < 50
    url = "data:image/png;base64," + blob
    chat = {"messages": [{"content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    assert estimate_tokens("openai-chat", chat) < 50
    thought = {"type": "thinking", "thinking": "hm", "signature": blob}
    assert estimate_tokens("anthropic", {"messages": [{"content": [thought]}]}) < 50


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=20,
    )
)
def test_estimate_is_deterministic_and_never_raises(messages: Any) -> None:
    body = {"messages": messages, "system": messages}
    n = estimate_tokens("anthropic", body)
    assert n >= 0
    assert n == estimate_tokens("anthropic", copy.deepcopy(body))


# --- select -----------------------------------------------------------------------------------


def facts_of(**kw: Any) -> RequestFacts:
    base: dict[str, Any] = {"format": "anthropic", "model": "claude-sonnet-4-5"}
    return RequestFacts(**{**base, **kw})


@pytest.mark.parametrize(
    ("rule", "request_facts", "hit"),
    [
        pytest.param(ModelRule(("claude-*",)), facts_of(), True, id="glob"),
        pytest.param(ModelRule(("gpt-*",)), facts_of(), False, id="glob-miss"),
        pytest.param(ModelRule(("gpt-*", "claude-sonnet-?-?")), facts_of(), True, id="globs"),
        pytest.param(ModelRule(("Claude-*",)), facts_of(), False, id="case-sensitive"),
        pytest.param(ModelRule(("*",)), facts_of(model=None), False, id="no-model"),
        pytest.param(ModelRule(("claude-[st]*",)), facts_of(), True, id="char-class"),
        pytest.param(
            ModelRule(("*",), formats=frozenset({"anthropic"})), facts_of(), True, id="format"
        ),
        pytest.param(
            ModelRule(("*",), formats=frozenset({"gemini", "openai-chat"})),
            facts_of(),
            False,
            id="format-miss",
        ),
        pytest.param(
            ModelRule(("*",), when=When(thinking=True)),
            facts_of(thinking=True),
            True,
            id="thinking",
        ),
        pytest.param(
            ModelRule(("*",), when=When(thinking=True)), facts_of(), False, id="thinking-miss"
        ),
        pytest.param(
            ModelRule(("*",), when=When(thinking=False)),
            facts_of(thinking=True),
            False,
            id="not-thinking",
        ),
        pytest.param(
            ModelRule(("*",), when=When(tools=True)), facts_of(tools=True), True, id="tools"
        ),
        pytest.param(
            ModelRule(("*",), when=When(tools=False)), facts_of(tools=True), False, id="no-tools"
        ),
        pytest.param(
            ModelRule(("*",), when=When(stream=True)), facts_of(stream=False), False, id="stream"
        ),
        pytest.param(
            ModelRule(("*",), when=When(stream=False)), facts_of(stream=False), True, id="no-stream"
        ),
        pytest.param(
            ModelRule(("*",), when=When(min_input_tokens=100)),
            facts_of(input_tokens=100),
            True,
            id="min-tokens-at",
        ),
        pytest.param(
            ModelRule(("*",), when=When(min_input_tokens=100)),
            facts_of(input_tokens=99),
            False,
            id="min-tokens-below",
        ),
        pytest.param(
            ModelRule(("*",), when=When(max_input_tokens=100)),
            facts_of(input_tokens=101),
            False,
            id="max-tokens-above",
        ),
        pytest.param(
            ModelRule(("*",), when=When(thinking=True, tools=True, stream=True)),
            facts_of(thinking=True, tools=True, stream=False),
            False,
            id="all-must-hold",
        ),
    ],
)
def test_select_conditions(rule: ModelRule, request_facts: RequestFacts, hit: bool) -> None:
    assert (select([rule], request_facts) is rule) is hit


def test_first_match_wins() -> None:
    specific = ModelRule(("claude-*",), to="a", when=When(thinking=True))
    general = ModelRule(("claude-*",), to="b")
    other = ModelRule(("claude-*",), to="c")
    rules = [specific, general, other]
    assert select(rules, facts_of(thinking=True)) is specific
    assert select(rules, facts_of(thinking=False)) is general
    assert select([], facts_of()) is None


def test_facts_to_select_end_to_end() -> None:
    body = {
        "model": "claude-opus-4-1",
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 4096},
        "messages": [{"role": "user", "content": "y" * 8000}],
    }
    rules = [
        ModelRule(("claude-*",), to="small", when=When(max_input_tokens=1000)),
        ModelRule(("claude-*",), to="big", when=When(thinking=True, stream=True)),
    ]
    rule = select(rules, facts("anthropic", "/v1/messages", {}, body, body["model"]))
    assert rule is not None and rule.to == "big"


# --- apply_params -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "params", "after", "changes"),
    [
        pytest.param(
            {"temperature": 0.2},
            {"temperature": Param(set=1.0)},
            {"temperature": 1.0},
            [("temperature", "set", 0.2, 1.0)],
            id="set",
        ),
        pytest.param(
            {},
            {"temperature": Param(set=1.0)},
            {"temperature": 1.0},
            [("temperature", "set", UNSET, 1.0)],
            id="set-absent",
        ),
        pytest.param(
            {"temperature": 1},
            {"temperature": Param(set=1.0)},
            {"temperature": 1},
            [],
            id="set-equal",
        ),
        pytest.param(
            {"flag": 1},
            {"flag": Param(set=True)},
            {"flag": True},
            [("flag", "set", 1, True)],
            id="set-bool-is-not-1",
        ),
        pytest.param(
            {"max_tokens": 32000},
            {"max_tokens": Param(max=8192)},
            {"max_tokens": 8192},
            [("max_tokens", "max", 32000, 8192)],
            id="max",
        ),
        pytest.param(
            {"max_tokens": 100},
            {"max_tokens": Param(max=8192)},
            {"max_tokens": 100},
            [],
            id="max-within",
        ),
        pytest.param({}, {"max_tokens": Param(max=8192)}, {}, [], id="max-absent"),
        pytest.param(
            {"t": 0.01},
            {"t": Param(min=0.5, max=2)},
            {"t": 0.5},
            [("t", "min", 0.01, 0.5)],
            id="min",
        ),
        pytest.param({"t": "hot"}, {"t": Param(max=1)}, {"t": "hot"}, [], id="max-not-number"),
        pytest.param({"t": True}, {"t": Param(max=0)}, {"t": True}, [], id="max-bool"),
        pytest.param(
            {"top_p": 0.9, "x": 1},
            {"top_p": Param(drop=True)},
            {"x": 1},
            [("top_p", "drop", 0.9, UNSET)],
            id="drop",
        ),
        pytest.param({"x": 1}, {"top_p": Param(drop=True)}, {"x": 1}, [], id="drop-absent"),
        pytest.param(
            {"generationConfig": {"temperature": 2}},
            {"generationConfig.temperature": Param(max=1.0)},
            {"generationConfig": {"temperature": 1.0}},
            [("generationConfig.temperature", "max", 2, 1.0)],
            id="dotted",
        ),
        pytest.param(
            {},
            {"generationConfig.temperature": Param(set=0)},
            {"generationConfig": {"temperature": 0}},
            [("generationConfig.temperature", "set", UNSET, 0)],
            id="dotted-creates",
        ),
        pytest.param(
            {"generationConfig": "odd"},
            {"generationConfig.temperature": Param(set=0)},
            {"generationConfig": "odd"},
            [],
            id="dotted-through-non-object",
        ),
        pytest.param({}, {"a.b": Param(drop=True)}, {}, [], id="drop-creates-nothing"),
    ],
)
def test_apply_params(
    body: dict[str, Any], params: dict[str, Param], after: dict[str, Any], changes: list[Any]
) -> None:
    got = apply_params(body, params)
    assert body == after
    assert [(c.param, c.action, c.before, c.after) for c in got] == changes


def test_apply_params_in_order_and_to_dict() -> None:
    body: dict[str, Any] = {"temperature": 0.3, "top_p": 0.5}
    got = apply_params(body, {"top_p": Param(drop=True), "temperature": Param(set=1)})
    assert [c.to_dict() for c in got] == [
        {"param": "top_p", "action": "drop", "before": 0.5},
        {"param": "temperature", "action": "set", "before": 0.3, "after": 1},
    ]
    assert ParamChange("x", "set", after=2).to_dict() == {"param": "x", "action": "set", "after": 2}


def test_apply_params_odd_body() -> None:
    assert apply_params(["not", "a", "dict"], {"x": Param(set=1)}) == []
    assert apply_params(None, {"x": Param(drop=True)}) == []
