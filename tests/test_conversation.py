"""The neutral conversation model: usage arithmetic, reasoning settings, error kinds, ids."""

from __future__ import annotations

import pytest

from mitmllm.protocol.conversation import FEATURES
from mitmllm.protocol.conversation import ErrorKind
from mitmllm.protocol.conversation import Reasoning
from mitmllm.protocol.conversation import Usage
from mitmllm.protocol.conversation import kind_of_status
from mitmllm.protocol.conversation import safe_id
from mitmllm.protocol.detect import dialects


def test_the_whole_prompt_is_input_plus_both_cache_counts() -> None:
    assert Usage(10, 5, cache_read=900, cache_write=90).prompt_tokens == 1000
    assert Usage().prompt_tokens == 0


def test_usage_updates_are_cumulative_and_keep_what_they_do_not_say() -> None:
    u = Usage(input_tokens=25, output_tokens=1, cache_read=3)
    u.update(Usage(output_tokens=40))
    assert (u.input_tokens, u.output_tokens, u.cache_read) == (25, 40, 3)
    assert u.known and not Usage().known


@pytest.mark.parametrize(
    ("reasoning", "budget", "effort"),
    [
        (Reasoning(effort="low"), 2048, "low"),
        (Reasoning(effort="high"), 24576, "high"),
        (Reasoning(budget=3000), 3000, "medium"),
        (Reasoning(budget=100_000), 100_000, "high"),
        (Reasoning(), 8192, "medium"),
    ],
)
def test_effort_and_budget_convert_both_ways(
    reasoning: Reasoning, budget: int, effort: str
) -> None:
    assert reasoning.budget_tokens() == budget
    assert reasoning.effort_name() == effort


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, ErrorKind.RATE_LIMIT),
        (529, ErrorKind.OVERLOADED),
        (503, ErrorKind.OVERLOADED),
        (401, ErrorKind.AUTHENTICATION),
        (408, ErrorKind.TIMEOUT),
        (502, ErrorKind.API_ERROR),
        (None, ErrorKind.API_ERROR),
    ],
)
def test_a_status_means_a_kind(status: int | None, kind: ErrorKind) -> None:
    assert kind_of_status(status) is kind


def test_safe_ids_are_a_function_of_the_id() -> None:
    assert safe_id("toolu_01A-b") == "toolu_01A-b"
    assert safe_id("functions.get_weather:0") == "functions_get_weather_0"
    assert safe_id("été") == "_t_"
    assert safe_id("") == "call_0"


def test_every_converter_names_only_known_features() -> None:
    for d in dialects():
        conv = d.converter()
        assert conv is not None, f"{d.name} has no converter"
        assert conv.format == d.name
        assert conv.features <= set(FEATURES), conv.features - set(FEATURES)
