"""Tests for the validator base class: the transitions tables of the four dialects and the one
`report` every finding goes through."""

from __future__ import annotations

import pytest

from mitmllm.protocol import detect
from mitmllm.protocol.dialect import NO_DATA
from mitmllm.protocol.dialect import Step
from mitmllm.protocol.dialect import StreamValidator
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.sse import Event

VALIDATORS = [d.validator() for d in detect.dialects()]


@pytest.mark.parametrize("validator", VALIDATORS, ids=lambda v: type(v).__name__)
def test_transition_tables_name_registered_rules_and_own_states(validator: StreamValidator) -> None:
    """Every ordering rule in a table is in the registry, and every state is the dialect's."""
    state_type = type(validator.state)
    for state, row in validator.TRANSITIONS.items():
        assert isinstance(state, state_type)
        for kind, step in row.items():
            assert isinstance(step, Step), (state, kind)
            assert step.to is None or isinstance(step.to, state_type), (state, kind)
            if step.breaks is not None:
                assert step.breaks in RULES, f"{state}/{kind}: {step.breaks} is not registered"
                # a worded step must format with any kind and the validator's fields
                step.detail.format(kind="x", v=validator)


@pytest.mark.parametrize("validator", VALIDATORS, ids=lambda v: type(v).__name__)
def test_every_handler_is_a_method_of_its_validator(validator: StreamValidator) -> None:
    for kind, handler in validator.HANDLERS.items():
        assert getattr(type(validator), handler.__name__, None) is handler, kind


def test_report_points_at_the_event_unless_told() -> None:
    validator = VALIDATORS[0]
    findings = Findings()
    validator.on_event(Event(7, 140, b": hi\n\n", comments=("hi",)), NO_DATA, findings)
    validator.report("ANT-3", "here")
    validator.report("ANT-3", "there", event=None, offset=3)
    assert [(f.event, f.offset) for f in findings] == [(7, 140), (None, 3)]
