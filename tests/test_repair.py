"""Tests for the repairs' SSE layer (keep-alives inside events, the final event), the framing
kept by the events they edit, and the three promises over every wire format: the output is the
same for every chunking, a stream whose breakage a repair covers validates without an error, and
a valid stream passes byte-identical. The wire formats' own repairs are tested in their
dialects' test modules."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.mock.catalogue import request as mock_request
from mitmllm.mock.scenarios import SCENARIOS
from mitmllm.mock.scenarios import expected_rules
from mitmllm.mock.scenarios import plan_request
from mitmllm.protocol import detect
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.rules import RULES
from tests import anthropic_streams as S
from tests.streamcheck import chunkings
from tests.streamcheck import error_rules
from tests.streamcheck import findings
from tests.streamcheck import repaired

ANT = detect.by_name("anthropic")
CHAT = detect.by_name("openai-chat")
GEM = detect.by_name("gemini")
assert ANT is not None and CHAT is not None and GEM is not None

KEEPALIVE = b": keep-alive\n\n"
DELTA = S.delta(0, {"type": "text_delta", "text": "Hello there"})
HEALTHY = S.message(S.block_start(0, {"type": "text", "text": ""}) + DELTA + S.block_stop(0))


def dialect(fmt: str) -> Dialect:
    d = detect.by_name(fmt)
    assert d is not None
    return d


def served(fmt: str, scenario: str) -> tuple[bytes, Any]:
    """The mock's answer to a streaming request for `scenario`, and the request body."""
    req = mock_request(fmt, scenario, tools=scenario.startswith("tool"))
    plan = plan_request("POST", req.path, req.query, req.headers, req.content())
    return plan.body(), req.body


def fixes(f: Any) -> list[str]:
    return [x.rule for x in f if x.rule.startswith("FIX-")]


# --- keep-alives between an event's lines (FIX-1) ----------------------------------------------


def test_keepalive_between_event_and_data_is_removed_and_the_event_rejoined() -> None:
    broken = HEALTHY.replace(DELTA, DELTA.replace(b"\ndata:", b"\n" + KEEPALIVE + b"data:"))
    assert error_rules(findings(ANT, broken)) == {"SSE-13", "ANT-1"}
    out, upstream, client = repaired(ANT, [broken])
    assert out == HEALTHY
    assert fixes(upstream) == ["FIX-1"]
    assert {"SSE-13", "ANT-1"} <= set(upstream.rules())  # what the upstream sent stays on record
    assert list(client) == []


def test_several_keepalives_between_the_halves_go_before_the_rejoined_event() -> None:
    split = DELTA.replace(b"\ndata:", b"\n" + KEEPALIVE + b": more\n\n\ndata:")
    out, upstream, client = repaired(ANT, [HEALTHY.replace(DELTA, split)])
    assert out == HEALTHY.replace(DELTA, b": more\n\n\n" + DELTA)
    assert fixes(upstream) == ["FIX-1"] and error_rules(client) == set()


def test_halves_whose_name_is_not_the_data_type_are_not_rejoined() -> None:
    """A dataless `event: ping` and a nameless delta are two broken events, not one."""
    broken = HEALTHY.replace(DELTA, b"event: ping\n" + KEEPALIVE + DELTA.split(b"\n", 1)[1])
    out, upstream, client = repaired(ANT, [broken])
    assert out == broken and fixes(upstream) == []
    assert "ANT-1" in error_rules(client)


# --- keep-alives inside a line (FIX-2) ---------------------------------------------------------


def cut(event: bytes, at: bytes, splice_in: bytes = KEEPALIVE) -> bytes:
    i = event.index(at)
    return event[:i] + splice_in + event[i:]


def test_keepalive_inside_a_data_line_is_removed_and_the_line_rejoined() -> None:
    broken = HEALTHY.replace(DELTA, cut(DELTA, b"ext_delta"))
    assert {"SSE-18", "PAY-1"} <= error_rules(findings(ANT, broken))
    out, upstream, client = repaired(ANT, [broken])
    assert out == HEALTHY
    assert fixes(upstream) == ["FIX-2"] and list(client) == []


def test_keepalive_inside_an_event_line_is_removed_too() -> None:
    broken = HEALTHY.replace(DELTA, cut(DELTA, b"block_delta\n"))
    out, upstream, _ = repaired(ANT, [broken])
    assert out == HEALTHY and fixes(upstream) == ["FIX-2"]


def test_a_keepalive_in_every_event_is_removed_from_every_one() -> None:
    body, request = served("openai-chat", "keepalive-race")
    healthy, _ = served("openai-chat", "healthy")
    out, upstream, client = repaired(CHAT, [body], request)
    assert out == healthy
    assert upstream.count("FIX-2") == upstream.count("SSE-18") > 3
    assert list(client) == []


def test_an_ambiguous_cut_is_left_alone() -> None:
    """The text itself has ': b' before the cut and the comment is no known keep-alive: either
    could be the spliced part, so nothing is removed (a repair never guesses text)."""
    event = S.delta(0, {"type": "text_delta", "text": "a: b c"})
    broken = HEALTHY.replace(DELTA, cut(event, b' c"', b": zz\n\n"))
    out, upstream, client = repaired(ANT, [broken])
    assert out == broken and fixes(upstream) == []
    assert "PAY-1" in error_rules(client)


def test_a_known_keepalive_settles_an_ambiguous_cut() -> None:
    event = S.delta(0, {"type": "text_delta", "text": "a: b c"})
    broken = HEALTHY.replace(DELTA, cut(event, b' c"', b": ping\n\n"))
    out, upstream, _ = repaired(ANT, [broken])
    assert out == HEALTHY.replace(DELTA, event) and fixes(upstream) == ["FIX-2"]


def test_a_cut_inside_a_string_keeps_the_colons_of_the_text() -> None:
    event = S.delta(0, {"type": "text_delta", "text": "Note: the answer"})
    broken = HEALTHY.replace(DELTA, cut(event, b"swer"))
    out, _, client = repaired(ANT, [broken])
    assert out == HEALTHY.replace(DELTA, event) and list(client) == []


def test_garbage_that_no_rejoin_makes_json_stays_as_it_came() -> None:
    broken = HEALTHY.replace(DELTA, b"event: content_block_delta\ndata: {oops\n\nmore\n\n")
    out, upstream, client = repaired(ANT, [broken])
    assert out == broken and fixes(upstream) == []
    assert "PAY-1" in error_rules(client)


# --- the final event (FIX-3) -------------------------------------------------------------------


@pytest.mark.parametrize("strip", [1, 2], ids=["blank line missing", "line end missing too"])
def test_a_final_event_without_its_blank_line_is_terminated(strip: int) -> None:
    out, upstream, client = repaired(ANT, [HEALTHY[:-strip]])
    assert out == HEALTHY
    assert fixes(upstream) == ["FIX-3"] and list(client) == []


def test_a_gemini_final_event_is_terminated_with_crlf() -> None:
    body, request = served("gemini", "healthy")
    out, upstream, client = repaired(GEM, [body[:-2]], request)
    assert out == body and fixes(upstream) == ["FIX-3"] and list(client) == []


def test_a_cut_final_event_stays_unterminated() -> None:
    body = HEALTHY + b'event: message_stop\ndata: {"type":"mess'
    out, upstream, client = repaired(ANT, [body.replace(S.event("message_stop", {}), b"")])
    assert out.endswith(b'{"type":"mess')
    assert "FIX-3" not in fixes(upstream) and "SSE-14" in error_rules(client)


# --- what a repair edits keeps the upstream's framing --------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_a_renumbered_event_keeps_every_byte_but_the_index(eol: bytes) -> None:
    """Index repairs are splices (`mitmllm.protocol.splice`): the upstream's spacing, key order,
    escapes, data lines, comments between them and line ends stay; only the index's bytes
    change. The client's checker sees the same framing, so it reports the same grammar."""
    start = (
        b"event: content_block_start\n"
        b'data: {"index" : 1, "type":"content_block_start",'
        b'"content_block":{"type":"text","text":""}}\n\n'
    )
    delta = (  # data over two lines, a comment between them, the second without its space
        b"event: content_block_delta\n"
        b'data: { "type":"content_block_delta",\n'
        b": keep-alive\n"
        b'data:"delta":{"type":"text_delta","text":"\\u00e9"},"index":1 }\n\n'
    )
    stop = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n'
    body = S.message(start + delta + stop).replace(b"\n", eol)
    out, upstream, client = repaired(ANT, [body])
    assert out == (
        S.message(
            start.replace(b'"index" : 1', b'"index" : 0')
            + delta.replace(b'"index":1 }', b'"index":0 }')
            + stop.replace(b'"index":1', b'"index":0')
        ).replace(b"\n", eol)
    )
    grammar = {"SSE-6", "SSE-9", "SSE-17"}
    assert set(upstream.rules()) == grammar | {"FIX-6", "ANT-7"}
    assert set(client.rules()) == grammar


# --- the three promises, over every wire format ------------------------------------------------

#: Scenarios whose streams are valid (big and long ones left out for time).
VALID = [
    (fmt, s.name)
    for s in SCENARIOS.values()
    if s.error is None and s.name not in ("big-event", "long")
    for fmt in s.formats
    if not expected_rules(s.name, fmt)
]
#: Scenarios whose breakage a repair covers, per format.
MENDED = [
    ("anthropic", "keepalive-mid-event"),
    ("openai-responses", "keepalive-mid-event"),
    *((fmt, "keepalive-mid-data") for fmt in detect.names()),
    *((fmt, "keepalive-race") for fmt in detect.names()),
    *((fmt, "no-final-blank") for fmt in detect.names()),
    ("anthropic", "tool-index-1"),
    ("openai-chat", "tool-index-1"),
    ("anthropic", "double-start"),
    ("openai-responses", "double-start"),
    ("anthropic", "truncated"),  # ends after message_delta: only message_stop is missing
    ("openai-chat", "missing-done"),
]
BROKEN = [(fmt, s.name) for s in SCENARIOS.values() if s.stream_only for fmt in s.formats]


@pytest.mark.parametrize(("fmt", "scenario"), VALID, ids=lambda x: x)
def test_a_valid_stream_passes_byte_identical(fmt: str, scenario: str) -> None:
    body, request = served(fmt, scenario)
    out, upstream, client = repaired(dialect(fmt), [body], request)
    assert out == body
    assert fixes(upstream) == [] and list(client) == list(upstream)


@pytest.mark.parametrize(("fmt", "scenario"), MENDED, ids=lambda x: x)
def test_a_mended_stream_has_no_error_left(fmt: str, scenario: str) -> None:
    body, request = served(fmt, scenario)
    assert error_rules(findings(dialect(fmt), body, request))  # it was broken
    out, upstream, client = repaired(dialect(fmt), [body], request)
    assert error_rules(client) == set(), client.to_list()
    broke = set(upstream.rules())
    for rule in fixes(upstream):  # each repair answers a rule the upstream broke
        assert set(RULES[rule].mends) & broke, rule


@pytest.mark.parametrize(("fmt", "scenario"), BROKEN + VALID, ids=lambda x: x)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_the_output_is_the_same_for_every_chunking(fmt: str, scenario: str, data: Any) -> None:
    body, request = served(fmt, scenario)
    whole = repaired(dialect(fmt), [body], request)
    parts = repaired(dialect(fmt), data.draw(chunkings(body)), request)
    assert parts[0] == whole[0]
    assert parts[1].to_list() == whole[1].to_list()
    assert parts[2].to_list() == whole[2].to_list()


@pytest.mark.parametrize("name", S.HEALTHY, ids=str)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_valid_anthropic_streams_are_a_no_op_at_any_chunking(name: str, data: Any) -> None:
    body = S.HEALTHY[name]
    out, upstream, _ = repaired(ANT, data.draw(chunkings(body)))
    assert out == body and fixes(upstream) == []
