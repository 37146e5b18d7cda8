"""The typed flow report: its metadata form, reading older metadata, and what it flags."""

from __future__ import annotations

import io
import json

from mitmproxy import io as mio
from mitmproxy.test import tflow

from mitmllm.engine.report import METADATA_KEY
from mitmllm.engine.report import Attempt
from mitmllm.engine.report import End
from mitmllm.engine.report import FlowReport
from mitmllm.engine.report import Repair
from mitmllm.engine.report import Usage
from mitmllm.glue.inspector import comment
from mitmllm.protocol.findings import Finding
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.rules import Severity


def routed_report() -> FlowReport:
    report = FlowReport(format="anthropic", model="claude-fast", stream=True)
    report.model_sent = "claude-haiku-4-5"
    report.route = "claude"
    report.attempts = [
        Attempt(
            "primary",
            "https://primary.test/v1/messages",
            outcome="inband_error",
            status=200,
            error="Overloaded",
            findings=[Finding("ANT-20", Severity.ERROR, "in-band error", event=1, offset=120)],
        ),
        Attempt(
            "fallback",
            "https://fallback.test/v1/messages",
            outcome="ok",
            status=200,
            ttfe_ms=12.5,
            committed=True,
            repairs=[Repair("FIX-1", "SSE-18", "keep-alive removed from inside an event", 3, 400)],
        ),
    ]
    report.relay, report.upstream, report.fell_back = "ok", "fallback", True
    report.status, report.events, report.complete = 200, 9, True
    report.usage = Usage(input=10, output=5, cache_read=3)
    report.ttfe_ms, report.duration_ms = 40.0, 120.0
    report.end = End.COMPLETE
    report.findings.add("RLY-1", "served by fallback after primary (inband_error)")
    report.repairs.append(Repair("FIX-1", "SSE-18", "keep-alive removed from inside an event", 3))
    return report


def test_metadata_round_trips_every_field() -> None:
    report = routed_report()
    meta = report.to_metadata()
    again = FlowReport.from_metadata(meta)
    assert again.to_metadata() == meta
    assert again.attempts[0].findings[0].rule == "ANT-20"
    assert again.attempts[1].repairs[0].mends == "SSE-18"
    assert again.usage == Usage(input=10, output=5, cache_read=3)
    assert again.end is End.COMPLETE and again.findings.rules() == ["RLY-1"]


def test_metadata_is_json_and_saves_with_a_flow() -> None:
    """flow.metadata is saved with flows: anything but plain data makes mitmproxy's writer fail."""
    meta = routed_report().to_metadata()
    assert json.loads(json.dumps(meta)) == meta
    flow = tflow.tflow(resp=True)
    flow.metadata[METADATA_KEY] = meta
    buf = io.BytesIO()
    mio.FlowWriter(buf).add(flow)
    buf.seek(0)
    (loaded,) = list(mio.FlowReader(buf).stream())
    assert FlowReport.from_metadata(loaded.metadata[METADATA_KEY]).to_metadata() == meta


def test_half_a_surrogate_pair_from_an_upstream_still_saves_with_the_flow() -> None:
    """An upstream's ``\\ud83d`` escape (a model's emoji cut at a token boundary) gives a str
    that UTF-8 has no bytes for; in a model name, an error or a finding's words it reached the
    metadata and the comment, and mitmproxy could not save the flow. It is kept as the
    escape's text."""
    report = routed_report()
    report.model = "claude-\ud83d"
    report.attempts[0].error = "Overloaded \ud83d"
    report.findings.add("ANT-20", "in-band error: boom \ud83d")
    meta = report.to_metadata()
    assert meta["model"] == "claude-\\ud83d"
    assert meta["attempts"][0]["error"] == "Overloaded \\ud83d"
    flow = tflow.tflow(resp=True)
    flow.metadata[METADATA_KEY] = meta
    flow.comment = comment(report)
    assert "boom \\ud83d" in flow.comment
    buf = io.BytesIO()
    mio.FlowWriter(buf).add(flow)
    buf.seek(0)
    (loaded,) = list(mio.FlowReader(buf).stream())
    assert loaded.metadata[METADATA_KEY] == meta and loaded.comment == flow.comment
    # every other field as it was
    same = routed_report()
    same.findings.add("ANT-20", "in-band error: boom")
    plain = same.to_metadata()
    touched = ("model", "attempts", "findings", "summary")
    assert {k: v for k, v in meta.items() if k not in touched} == {
        k: v for k, v in plain.items() if k not in touched
    }
    assert meta["attempts"][1] == plain["attempts"][1]


def test_keys_readers_rely_on_keep_their_names() -> None:
    meta = routed_report().to_metadata()
    for key in ("format", "model", "stream", "status", "events", "complete", "ttfe_ms"):
        assert key in meta, key
    for key in ("findings", "summary", "attempts", "upstream", "fell_back", "relay", "route"):
        assert key in meta, key
    assert meta["summary"] == "RLY-1"
    assert meta["attempts"][1]["outcome"] == "ok" and meta["attempts"][1]["committed"] is True
    assert meta["model_sent"] == "claude-haiku-4-5"


def test_what_did_not_happen_is_left_out() -> None:
    meta = FlowReport(format="openai-chat", model="gpt-x", stream=False).to_metadata()
    assert meta == {
        "format": "openai-chat",
        "model": "gpt-x",
        "stream": False,
        "findings": [],
        "summary": "ok",
    }


def test_metadata_written_by_the_first_release_still_reads() -> None:
    old = {
        "format": "openai-chat",
        "model": "gpt-4.1-mini",
        "stream": True,
        "served_model": "gpt-4.1",
        "aborted": "HTTP/1 protocol error: incomplete chunked read",
        "attempts": [
            {"upstream": "primary", "url": "http://p", "outcome": "empty", "committed": False},
            {"upstream": "fallback", "url": "http://f", "outcome": "ok", "findings": "ok"},
            {
                "upstream": "third",
                "url": "http://t",
                "outcome": "ok",
                "findings": "ANT-7 x2, SSE-14",
            },
        ],
        "findings": [{"rule": "RLY-1", "severity": "info", "message": "served by fallback"}],
        "suppressed": {"SSE-6": 4},
        "summary": "RLY-1",
    }
    report = FlowReport.from_metadata(old)
    assert report.model_sent == "gpt-4.1"
    assert report.end is End.UPSTREAM_FAILURE and report.end_error == old["aborted"]
    assert report.attempts[1].findings == []
    assert [f.rule for f in report.attempts[2].findings] == ["ANT-7", "SSE-14"]
    assert report.findings.suppressed["SSE-6"] == 4


def test_garbage_metadata_gives_an_empty_report_not_an_exception() -> None:
    for junk in (None, "text", 3, [], {"findings": "x", "attempts": [1, None], "status": "200"}):
        report = FlowReport.from_metadata(junk)
        assert report.status is None and report.attempts == [] and not report.findings


def test_a_client_that_went_away_is_not_flagged_an_upstream_that_did_is() -> None:
    gone = FlowReport(end=End.CLIENT_DISCONNECT, end_error="Client disconnected.")
    assert gone.client_gone and not gone.upstream_failed and not gone.flagged
    cut = FlowReport(end=End.UPSTREAM_FAILURE)
    assert cut.upstream_failed and cut.flagged
    assert FlowReport(relay="failed_before_commit").flagged
    assert FlowReport(repairs=[Repair("FIX-1", "SSE-18", "x")]).flagged
    info_only = FlowReport()
    info_only.findings.add("HTTP-3", "buffering")
    assert not info_only.flagged
    warned = FlowReport()
    warned.findings.add("SSE-6", "comment")
    assert warned.flagged


def test_an_attempt_summarises_its_findings_like_a_flow() -> None:
    a = Attempt("u", "http://u")
    assert a.summary == "ok"
    found = Findings()
    found.add("SSE-14", "cut")
    found.add("ANT-7", "index 1")
    a.findings = list(found)
    assert a.summary == found.summary()


def test_usage_reads_as_a_person_would_say_it() -> None:
    assert str(Usage(input=1200, output=85, cache_read=1000)) == "1200 in, 85 out, 1000 cache read"
    assert Usage.from_dict({"input": 1, "output": "2"}) == Usage(input=1)
