"""The rule catalogue (one broken exchange per error rule), the mock serving it, and the seeded
corpus in captures/ that records it.

Each breakage is checked the way the corpus replays it (`replay_fixture`: head checks, then the
stream through the pipeline): its rule fires, and nothing but the declared errors and warnings.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mitmllm.engine import fixtures
from mitmllm.engine.config import Config
from mitmllm.glue import flowstate
from mitmllm.glue.configaddon import ConfigLoader
from mitmllm.glue.inspector import Recognizer
from mitmllm.glue.rewriter import Rewriter
from mitmllm.mock.catalogue import BREAKAGES
from mitmllm.mock.catalogue import CATALOGUE
from mitmllm.mock.catalogue import MODELS
from mitmllm.mock.catalogue import NOT_FROM_UPSTREAM
from mitmllm.mock.catalogue import Breakage
from mitmllm.mock.catalogue import Request
from mitmllm.mock.catalogue import request
from mitmllm.mock.scenarios import FORMATS
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import SCENARIOS
from mitmllm.mock.scenarios import Context
from mitmllm.mock.scenarios import Options
from mitmllm.mock.scenarios import build_plan
from mitmllm.mock.scenarios import describe
from mitmllm.mock.scenarios import expected_rules
from mitmllm.mock.scenarios import find_scenario
from mitmllm.mock.scenarios import frames
from mitmllm.mock.scenarios import plan_request
from mitmllm.mock.upstream import MockUpstream
from mitmllm.protocol import detect
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.rules import Severity
from tests import seed_captures
from tests.streamcheck import assert_chunking_invariant
from tests.streamcheck import chunkings

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
STREAMS = [b for b in BREAKAGES.values() if b.shape is not None]


def exchange(req: Request, status: int, headers: list[tuple[str, str]], body: bytes) -> Findings:
    """What replaying this exchange reports (the corpus's own replay, without the files)."""
    fixture = fixtures.Fixture(
        request=fixtures.RequestRecord(
            method="POST", url="http://mock.test" + req.target, headers=list(req.headers.items())
        ),
        response=fixtures.ResponseRecord(status=status, headers=headers),
    )
    fixture.request.body, fixture.request.encoding = fixtures.encode_body(req.content())
    if body:
        fixture.response.body, fixture.response.encoding = fixtures.encode_body(body)  # type: ignore[union-attr]
    return fixtures.replay_fixture(fixture).findings


def served(b: Breakage) -> tuple[Request, int, list[tuple[str, str]], bytes]:
    req = b.request()
    plan = plan_request("POST", req.path, req.query, req.headers, req.content())
    return req, plan.status, plan.headers, plan.body()


def flagged(findings: Findings) -> set[str]:
    return {f.rule for f in findings if f.severity != Severity.INFO}


# --- each breakage, through the validators ----------------------------------------------------


@pytest.mark.parametrize(
    "b", [b for b in BREAKAGES.values() if not b.request_side], ids=lambda b: b.rule
)
def test_breakage_fires_its_rule_and_only_what_it_declares(b: Breakage) -> None:
    req, status, headers, body = served(b)
    seen = fixtures.recognise("POST", req.target, req.content())
    assert seen.dialect is not None and seen.dialect.name == b.fmt
    findings = exchange(req, status, headers, body)
    assert flagged(findings) == b.expected, findings.summary()
    assert any(f.rule == b.rule and f.severity == Severity.ERROR for f in findings)


@pytest.mark.parametrize("b", STREAMS, ids=lambda b: b.rule)
def test_breakage_is_a_healthy_stream_but_for_its_defect(b: Breakage) -> None:
    """The same reply rendered without the defect passes clean, so the rule fires because of
    the defect and not because of what it was applied to."""
    req = b.request()
    ctx = Context(fmt=b.fmt, model=MODELS[b.fmt], request=req.body, options=Options())
    intact = replace(b.scenario(), shape=b.intact or (lambda c, r: frames(c, r)), headers=())
    plan = build_plan(intact, ctx)
    assert flagged(exchange(req, plan.status, plan.headers, plan.body())) == set()


def test_REQ_3_a_request_without_a_string_model_is_flagged_by_the_rewriter() -> None:
    b = BREAKAGES["REQ-3"]
    req = b.request()
    loader = ConfigLoader()
    loader.config = Config.model_validate(
        {"models": [{"name": "any", "match": "claude-*", "to": "claude-haiku-4-5"}]}
    )
    with taddons.context(Recognizer()):
        flow = tflow.tflow(req=tutils.treq(method=b"POST", content=req.content()))
        flow.request.url = "http://mock.test" + req.target
        Recognizer().request(flow)
        Rewriter(loader).request(flow)
    state = flowstate.get(flow)
    assert state is not None and "REQ-3" in state.findings.rules()
    _, status, headers, body = served(b)
    assert status == 400 and flagged(exchange(req, status, headers, body)) == b.expected


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_breakages_report_the_same_whatever_the_chunking(data: st.DataObject) -> None:
    b = data.draw(st.sampled_from([b for b in STREAMS if b.rule != "HTTP-4"]), label="rule")
    req, _, _, body = served(b)
    dialect = detect.by_name(b.fmt)
    assert_chunking_invariant(dialect, body, data.draw(chunkings(body)), request=req.body)


# --- the catalogue as a whole -----------------------------------------------------------------


def test_every_checked_error_rule_is_seeded_or_explained() -> None:
    errors = {r.id for r in RULES.values() if r.severity == Severity.ERROR and r.checked}
    by_scenario = {r for s in SCENARIOS.values() for rules in s.expected.values() for r in rules}
    missing = errors - by_scenario - BREAKAGES.keys() - NOT_FROM_UPSTREAM.keys()
    assert not missing, f"error rules with neither a scenario nor a catalogue entry: {missing}"
    assert not BREAKAGES.keys() & NOT_FROM_UPSTREAM.keys()
    assert NOT_FROM_UPSTREAM.keys() <= errors


@pytest.mark.parametrize("b", BREAKAGES.values(), ids=lambda b: b.rule)
def test_entry_is_documented_and_names_registered_rules(b: Breakage) -> None:
    assert RULES[b.rule].severity == Severity.ERROR
    assert b.expected <= RULES.keys()
    assert b.defect and b.seen and b.receives
    assert (b.shape is None) == (b.answer is not None)


def test_catalogue_streams_are_mock_scenarios() -> None:
    assert set(CATALOGUE) == {b.name for b in STREAMS}
    for b in STREAMS:
        assert find_scenario(b.name) is CATALOGUE[b.name]
        assert expected_rules(b.name, b.fmt) == b.expected
        plan = served(b)
        assert plan[1] == 200
    listed = describe()
    assert all(f"{name} " in listed for name in [*SCENARIOS, *CATALOGUE])
    assert find_scenario("rule-NOPE-1") is None
    unknown = plan_request("POST", "/v1/messages", {}, {"x-mock-scenario": "rule-NOPE-1"}, b"{}")
    assert unknown.status == 400 and b"rule-<rule ID>" in unknown.body()


async def test_HTTP_4_mock_sends_a_gzipped_event_stream_over_http() -> None:
    b = BREAKAGES["HTTP-4"]
    req = b.request()
    async with MockUpstream() as up, aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.post(up.url + req.target, data=req.content(), headers=req.headers) as r:
            assert r.headers["content-encoding"] == "gzip"
            raw = await r.read()
    text = gzip.decompress(raw)
    assert text.startswith(b"event: message_start\n") and text.endswith(b"\n\n")
    intact = exchange(req, 200, [("content-type", "text/event-stream")], text)
    assert flagged(intact) == set()


def test_request_shapes_per_format() -> None:
    for fmt in FORMATS:
        req = request(fmt, "tool", tools=True)
        seen = fixtures.recognise("POST", req.target, req.content())
        assert seen.dialect is not None and seen.dialect.name == fmt
        assert seen.stream and seen.model == MODELS[fmt]
        assert req.headers["x-mock-scenario"] == "tool"
    gem = BREAKAGES["GEM-1"].request()
    assert gem.fmt == GEMINI and "alt" not in gem.query


# --- the seeder's bookkeeping -----------------------------------------------------------------


def test_seeded_files_keep_their_exchange_but_not_their_timing(tmp_path: Path) -> None:
    src = tmp_path / "raw.json"
    fx = fixtures.Fixture(
        time="2026-01-01T00:00:00.000Z",
        request=fixtures.RequestRecord(
            method="POST",
            url="http://127.0.0.1:41234/v1/messages",
            headers=[("host", "127.0.0.1:41234"), ("user-agent", "x/1")],
        ),
        response=fixtures.ResponseRecord(status=200, headers=[("date", "Mon")], chunks=[]),
        error="Cannot connect to host 127.0.0.1:41234 [('127.0.0.1', 41234)]",
    )
    fx.response.body = "data: {}\n\n"  # type: ignore[union-attr]
    fixtures.save_fixture(fx, src)
    got = seed_captures.normalised(src, {41234: "primary.test"})
    assert got.request.url == "http://primary.test/v1/messages"
    assert ("host", "primary.test") in got.request.headers
    assert got.error == "Cannot connect to host primary.test [('primary.test', 80)]"
    assert "127.0.0.1" not in got.to_json()
    later = got.model_copy(deep=True)
    later.time = "2026-02-02T00:00:00.000Z"
    later.request.headers = [("host", "primary.test"), ("user-agent", "x/2")]
    later.response.headers = [("date", "Tue")]  # type: ignore[union-attr]
    later.response.chunks = [(0, 12.5)]  # type: ignore[union-attr]
    assert seed_captures.essence(later) == seed_captures.essence(got)
    later.response.body = "data: {}\n\ndata: {}\n\n"  # type: ignore[union-attr]
    assert seed_captures.essence(later) != seed_captures.essence(got)
    path = tmp_path / "out" / "x.json"
    assert seed_captures.settle(got, path) == "new"
    assert seed_captures.settle(replace_time(got), path) == "unchanged"
    assert fixtures.load_fixture(path).time == got.time
    assert seed_captures.settle(later, path) == "updated"


def replace_time(fx: fixtures.Fixture) -> fixtures.Fixture:
    out = fx.model_copy(deep=True)
    out.time = "2030-01-01T00:00:00.000Z"
    return out


# --- the committed corpus ---------------------------------------------------------------------


def corpus() -> list[fixtures.Fixture]:
    return [
        fixtures.load_fixture(p)
        for group in seed_captures.GROUPS
        for p in sorted((CAPTURES / group).glob("*.json"))
    ]


def test_corpus_has_a_fixture_for_every_error_rule_an_upstream_can_show() -> None:
    shown: set[str] = set()
    for fx in corpus():
        shown.update(f.rule for f in fx.expect.findings)
        meta = fx.metadata.get("mitmllm") or {}
        shown.update(f["rule"] for f in meta.get("findings", []))
    errors = {r.id for r in RULES.values() if r.severity == Severity.ERROR and r.checked}
    assert errors - shown <= {"TAP-1"}, "seed the missing rules: python -m tests.seed_captures"


def test_corpus_has_a_file_for_every_seed() -> None:
    names = {p.name for group in seed_captures.GROUPS for p in (CAPTURES / group).glob("*.json")}
    for seed in seed_captures.all_seeds():
        prefix = f"{seed.fmt}--"
        assert any(n.startswith(prefix) and f"--{seed.case}--" in n for n in names), (
            f"{seed.label} is not in captures/: python -m tests.seed_captures"
        )


def test_readme_lists_every_seeded_fixture_and_the_corpus_stays_small() -> None:
    readme = (CAPTURES / "README.md").read_text(encoding="utf-8")
    files = [p for group in seed_captures.GROUPS for p in (CAPTURES / group).glob("*.json")]
    missing = [p.name for p in files if f"]({p.parent.name}/{p.name})" not in readme]
    assert not missing, f"not in captures/README.md (re-run the seeder): {missing}"
    assert sum(p.stat().st_size for p in files) < 3 * 1024 * 1024
    for p in files:
        json.loads(p.read_text(encoding="utf-8"))  # plain JSON a reviewer can read
