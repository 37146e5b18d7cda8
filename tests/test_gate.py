"""Tests for the commit gate: hold until content, commit, or fail and say why; never release
anything of a failed attempt; the same decision for every chunking."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.engine.pipeline import Pipeline
from mitmllm.mock.catalogue import BREAKAGES
from mitmllm.mock.catalogue import request as mock_request
from mitmllm.mock.scenarios import SCENARIOS
from mitmllm.mock.scenarios import plan_request
from mitmllm.protocol import detect
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.gate import DEFAULT_FAILS
from mitmllm.protocol.gate import Gate
from mitmllm.protocol.gate import Verdict
from mitmllm.protocol.repair import Repairer
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.stream import StreamChecker
from tests import anthropic_streams as S
from tests.streamcheck import chunkings

ANT = detect.by_name("anthropic")
assert ANT is not None
SUCCESS = {
    "anthropic": b"message_stop",
    "openai-chat": b"[DONE]",
    "openai-responses": b"response.completed",
    "gemini": b"finishReason",
}


def dialect(fmt: str) -> Dialect:
    d = detect.by_name(fmt)
    assert d is not None
    return d


def gated(
    d: Dialect,
    chunks: list[bytes],
    request: Any = None,
    *,
    repair: bool = True,
    fails: Collection[str] | None = None,
) -> tuple[Gate, bytes, list[Verdict]]:
    """Run `chunks` through the pipeline into a gate, as the relay does: (the gate, what it
    released, its verdict after each chunk)."""
    upstream = StreamChecker(d, request=request)
    client = StreamChecker(d, request=request) if repair else upstream
    gate = Gate(d, client.findings, fails=fails)
    if repair:
        repairer = Repairer(d, upstream.findings, request=request)
        pipeline = Pipeline(client, upstream=upstream, repairer=repairer, on_event=gate.push)
    else:
        pipeline = Pipeline(upstream, on_event=gate.push)
    released, verdicts = [], []
    for c in chunks:
        pipeline.feed(c)
        released.append(gate.take())
        verdicts.append(gate.verdict)
    pipeline.close()
    gate.close()
    released.append(gate.take())
    verdicts.append(gate.verdict)
    return gate, b"".join(released), verdicts


def served(fmt: str, scenario: str) -> tuple[bytes, Any]:
    """The mock's answer for a scenario or a catalogue entry, and the request body."""
    entry = BREAKAGES.get(scenario.removeprefix("rule-"))
    if entry is not None and scenario.startswith("rule-"):
        req = entry.request()
    else:
        req = mock_request(fmt, scenario, tools=scenario.startswith("tool"))
    plan = plan_request("POST", req.path, req.query, req.headers, req.content())
    return plan.body(), req.body


TEXT0 = {"type": "text", "text": ""}


# --- one decision per kind of stream -------------------------------------------------------------


def test_lifecycle_events_are_held_until_the_first_content_event() -> None:
    body = S.message(S.event("ping", {"type": "ping"}) + S.text_block(0, "hi"))
    first_delta = body.index(b"event: content_block_delta")
    gate, released, verdicts = gated(ANT, [body[:first_delta], body[first_delta:]])
    assert verdicts[0] is Verdict.HOLD, "message_start, ping and an empty block start are held"
    assert gate.committed and released == body
    assert gate.commit_event == 3


def test_an_in_band_error_before_content_fails_the_attempt() -> None:
    body, request = served("anthropic", "inband-error-first")
    gate, released, _ = gated(ANT, [body], request)
    assert (gate.verdict, gate.outcome, released) == (Verdict.FAIL, "inband_error", b"")
    assert gate.reason and "verloaded" in gate.reason


def test_an_in_band_error_after_content_passes_to_the_client() -> None:
    body, request = served("anthropic", "inband-error")
    gate, released, _ = gated(ANT, [body], request)
    assert gate.committed and released == body


@pytest.mark.parametrize(
    ("fmt", "scenario"), [("anthropic", "comment-only"), ("openai-chat", "done-only")]
)
def test_an_empty_stream_fails_the_attempt(fmt: str, scenario: str) -> None:
    body, request = served(fmt, scenario)
    gate, released, _ = gated(dialect(fmt), [body], request)
    assert (gate.outcome, released) == ("empty", b"")


def test_an_unrepairable_finding_before_content_fails_the_attempt_and_names_its_rule() -> None:
    body = S.message(S.text_block(0, "hi")).replace(S.message_start(), b"", 1)  # ANT-4
    gate, released, _ = gated(ANT, [body])
    assert (gate.outcome, gate.rule, released) == ("broken_stream", "ANT-4", b"")
    assert gate.reason and gate.reason.startswith("ANT-4: ")


def test_a_route_may_name_the_rules_that_fail_an_attempt() -> None:
    body = S.message(S.text_block(0, "hi")).replace(S.message_start(), b"", 1)
    gate, released, _ = gated(ANT, [body], fails=())
    assert gate.committed and released == body


def test_a_repaired_breakage_commits_where_the_unrepaired_one_fails() -> None:
    body, request = served("anthropic", "tool-index-1")
    repaired_gate, released, _ = gated(ANT, [body], request)
    assert repaired_gate.committed and b'"index":1' not in released
    plain, nothing, _ = gated(ANT, [body], request, repair=False)
    assert (plain.outcome, plain.rule, nothing) == ("broken_stream", "ANT-7", b"")


@pytest.mark.parametrize("fmt", ["anthropic", "openai-responses"])
@pytest.mark.parametrize("repair", [True, False], ids=["repair", "plain"])
def test_a_stream_that_starts_over_after_content_fails_there_and_sends_one_answer(
    fmt: str, repair: bool
) -> None:
    body, request = served(fmt, "restart-after-content")
    start = b"event: message_start" if fmt == "anthropic" else b"event: response.created"
    restart = body.index(start, body.index(start) + 1)
    gate, released, verdicts = gated(dialect(fmt), [body], request, repair=repair)
    assert (gate.verdict, gate.outcome) == (Verdict.FAIL, "restarted") and gate.failed_after_commit
    assert gate.rule in ("ANT-5", "RSP-4")
    assert released.count(start) == 1 and SUCCESS[fmt] not in released
    if not repair:
        assert released == body[:restart], "everything before the restart, nothing after"


def test_the_default_list_is_the_registrys_client_breaking_errors() -> None:
    assert "ANT-7" in DEFAULT_FAILS and "SSE-18" in DEFAULT_FAILS and "PAY-1" in DEFAULT_FAILS
    assert "OAI-15" not in DEFAULT_FAILS  # survivable: the answer arrives intact
    assert not any(RULES[r].family in ("FIX", "RLY", "TAP", "HTTP") for r in DEFAULT_FAILS)
    assert all(RULES[r].severity == "error" for r in DEFAULT_FAILS)


# --- properties, over every stream the mock can serve --------------------------------------------

STREAMS = [
    (fmt, s.name)
    for s in SCENARIOS.values()
    if s.error is None and s.name not in ("big-event", "long")
    for fmt in s.formats
] + [(b.fmt, b.name) for b in BREAKAGES.values() if b.shape is not None]


@pytest.mark.parametrize(("fmt", "scenario"), STREAMS, ids=lambda x: x)
@pytest.mark.parametrize("repair", [True, False], ids=["repair", "plain"])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_the_decision_is_the_same_for_every_chunking_and_a_failure_releases_nothing(
    fmt: str, scenario: str, repair: bool, data: Any
) -> None:
    body, request = served(fmt, scenario)
    d = dialect(fmt)
    whole, whole_out, _ = gated(d, [body], request, repair=repair)
    gate, out, verdicts = gated(d, data.draw(chunkings(body)), request, repair=repair)
    assert (gate.verdict, gate.outcome, gate.reason) == (whole.verdict, whole.outcome, whole.reason)
    assert out == whole_out
    if gate.failed and not gate.failed_after_commit:
        assert out == b"", "nothing of a failed attempt reaches the client"
    elif gate.failed:
        assert gate.outcome == "restarted" and out, "what passed before the restart went out"
    else:
        assert Verdict.FAIL not in verdicts, "a failed gate stays failed"
    if gate.failed:
        assert SUCCESS[fmt] not in out
    if fmt == "anthropic":
        assert out.count(b"event: message_start") <= 1, "never a second message_start"
    if fmt == "openai-responses":
        assert out.count(b"event: response.created") <= 1, "never a second response.created"
