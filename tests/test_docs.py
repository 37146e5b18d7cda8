"""The README's generated sections (rules, configuration fields, options) match the code."""

from __future__ import annotations

from mitmllm import docs
from mitmllm.protocol.rules import RULES


def test_readme_generated_sections_are_up_to_date() -> None:
    current = docs.README.read_text(encoding="utf-8")
    assert docs.render(current) == current, "README.md is stale: run `uv run just docs`"


def test_every_rule_is_listed_once() -> None:
    text = docs.rules_markdown()
    for rule_id in RULES:
        assert text.count(f"| {rule_id} |") == 1, rule_id
