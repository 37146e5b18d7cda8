"""The Dialect interface: per-format knowledge lives in the dialect modules only; the validator
base class, the transitions tables of the four dialects and the one `report` every finding goes
through."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mitmllm.protocol import detect
from mitmllm.protocol.dialect import NO_DATA
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.dialect import Step
from mitmllm.protocol.dialect import StreamValidator
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.sse import Event

PACKAGE = Path(detect.__file__).resolve().parent.parent
DIALECT_MODULES = {"anthropic.py", "openai_chat.py", "openai_responses.py", "gemini.py"}
# The mock, the demo and the benchmark speak every format on purpose; they are not the core.
OUTSIDE_CORE = {"mock", "demo", "bench"}


def test_every_registered_dialect_states_its_facts() -> None:
    for d in detect.dialects():
        assert isinstance(d, Dialect)
        assert d.name and d.title
        assert d.default_auth in ("x-api-key", "bearer", "x-goog-api-key", "api-key", "none")
        assert d.prompt_fields, f"{d.name} names no prompt fields"
        assert d.native_flavour in ("openai", "anthropic", "gemini", "none")


def test_no_module_outside_the_dialects_branches_on_a_format_name() -> None:
    """A fifth format is one module plus one registration line: nothing else compares a
    format name (`fmt == "gemini"`, `fmt in ("anthropic", ...)`, a dict keyed by format)."""
    names = "|".join(re.escape(n) for n in detect.names())
    branch = re.compile(rf"""(==|!=|\bin\b)\s*\(?["']({names})["']|["']({names})["']\s*:""")
    # Tool-schema flavours share names with formats but are rule sets, not formats.
    flavour = re.compile(r"\b(flavour|native)\s*(==|!=)")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in OUTSIDE_CORE:
            continue
        if rel.parts[0] == "protocol" and rel.name in DIALECT_MODULES:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if branch.search(line) and not flavour.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_heartbeats_are_the_dialects_call() -> None:
    from mitmllm.protocol.sse import Decoder

    ping = Decoder().feed(b'event: ping\ndata: {"type": "ping"}\n\n')[0]
    by = {d.name: d.is_heartbeat(ping, {"type": "ping"}) for d in detect.dialects()}
    assert by == {
        "anthropic": True,
        "openai-chat": False,
        "openai-responses": False,
        "gemini": False,
    }


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


@pytest.mark.parametrize("name", ["anthropic", "openai-chat", "openai-responses", "gemini"])
def test_an_error_whose_message_holds_half_a_surrogate_pair_is_still_written(name: str) -> None:
    """An upstream's error message may carry half a surrogate pair (a ``\\ud83d`` escape, which
    UTF-8 has no bytes for): the error event and body a dialect writes around it are JSON that
    says the same, not an exception on the way to the client."""
    d = detect.by_name(name)
    message = "overloaded \ud83d"
    body = json.loads(d.error_body(503, message))
    assert message in json.dumps(body, ensure_ascii=False)
    event = d.error_event(message)
    data = event.decode().split("data: ", 1)[1].split("\n", 1)[0].rstrip("\r")
    assert message in json.dumps(json.loads(data), ensure_ascii=False)
