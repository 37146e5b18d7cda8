"""Prometheus metrics from flow reports: every counter, the histograms, the breakers."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from mitmllm.engine.breaker import Breakers
from mitmllm.engine.metrics import Metrics
from mitmllm.engine.report import Attempt
from mitmllm.engine.report import End
from mitmllm.engine.report import FlowReport
from mitmllm.engine.report import Repair
from mitmllm.protocol.findings import Finding
from mitmllm.protocol.rules import Severity


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by (name, sorted labels)."""
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def failed_over() -> FlowReport:
    report = FlowReport(format="anthropic", model="m", stream=True, route="claude")
    report.attempts = [
        Attempt(
            "primary",
            "http://p",
            outcome="inband_error",
            findings=[Finding("ANT-20", Severity.ERROR, "overloaded", event=1)],
        ),
        Attempt(
            "fallback",
            "http://f",
            outcome="ok",
            committed=True,
            repairs=[Repair("FIX-1", "SSE-18", "keep-alive removed")],
        ),
    ]
    report.upstream, report.fell_back, report.relay = "fallback", True, "ok"
    report.events, report.ttfe_ms, report.duration_ms = 9, 300.0, 1500.0
    report.end = End.COMPLETE
    report.findings.add("RLY-1", "served by fallback")
    report.repairs.append(Repair("FIX-1", "SSE-18", "keep-alive removed"))
    return report


def test_a_failed_over_flow_counts_its_request_attempts_fallback_findings_and_repairs() -> None:
    m = Metrics()
    m.record(failed_over(), "api.anthropic.com")
    got = samples(m)
    req = key("mitmllm_requests_total", format="anthropic", route="claude", upstream="fallback",
              end="complete")  # fmt: skip
    assert got[req] == 1
    assert got[key("mitmllm_attempts_total", route="claude", upstream="primary",
                   outcome="inband_error")] == 1  # fmt: skip
    assert (
        got[key("mitmllm_attempts_total", route="claude", upstream="fallback", outcome="ok")] == 1
    )
    assert got[key("mitmllm_fallbacks_total", route="claude", upstream="fallback")] == 1
    assert got[key("mitmllm_findings_total", rule="ANT-20", severity="error")] == 1
    assert got[key("mitmllm_findings_total", rule="RLY-1", severity="info")] == 1
    assert got[key("mitmllm_repairs_total", rule="FIX-1", mends="SSE-18")] == 2
    assert got[key("mitmllm_time_to_first_event_seconds_count", format="anthropic",
                   route="claude")] == 1  # fmt: skip
    assert got[key("mitmllm_time_to_first_event_seconds_bucket", format="anthropic",
                   route="claude", le="0.25")] == 0  # fmt: skip
    assert got[key("mitmllm_time_to_first_event_seconds_bucket", format="anthropic",
                   route="claude", le="0.5")] == 1  # fmt: skip
    assert (
        got[key("mitmllm_stream_duration_seconds_sum", format="anthropic", route="claude")] == 1.5
    )


def test_an_unrouted_flow_is_counted_by_its_host_and_repeats_by_rule() -> None:
    m = Metrics()
    report = FlowReport(format="openai-chat", model="g", stream=False)
    report.end = End.CLIENT_DISCONNECT
    for i in range(13):
        report.findings.add("SSE-6", f"comment {i}", event=i)
    m.record(report, "api.openai.com")
    got = samples(m)
    req = key("mitmllm_requests_total", format="openai-chat", route="", upstream="api.openai.com",
              end="client_disconnect")  # fmt: skip
    assert got[req] == 1
    assert got[key("mitmllm_findings_total", rule="SSE-6", severity="warning")] == 13
    assert not any(name == "mitmllm_stream_duration_seconds_count" for name, _ in got)


def test_breakers_are_read_when_scraped() -> None:
    breakers = Breakers()
    breakers.configure(["primary", "fallback"], failures=1, open_for=30, max_open_for=300)
    m = Metrics(breakers)
    before = samples(m)
    assert before[key("mitmllm_breaker_state", upstream="primary", state="closed")] == 1
    breakers.record_attempt(
        "primary", Attempt("primary", "http://p", outcome="http_529", status=529)
    )
    after = samples(m)
    assert after[key("mitmllm_breaker_state", upstream="primary", state="open")] == 1
    assert after[key("mitmllm_breaker_state", upstream="primary", state="closed")] == 0
    assert after[key("mitmllm_breaker_failures", upstream="primary")] == 1
    assert after[key("mitmllm_breaker_state", upstream="fallback", state="closed")] == 1


def test_the_readme_s_example_scrape_names_what_is_exported() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    example = readme.split("curl -s http://127.0.0.1:9464/metrics | grep -v '^#'\n")[1]
    example = example.split("```")[0]
    shown = list(text_string_to_metric_families(example))
    assert shown, "the README shows a scrape"
    breakers = Breakers()
    breakers.configure(["primary"], failures=3, open_for=30, max_open_for=300)
    m = Metrics(breakers)
    m.record(failed_over(), "host")
    exported = {
        (s.name, tuple(sorted(s.labels))) for f in text_string_to_metric_families(
            m.exposition().decode()) for s in f.samples
    }  # fmt: skip
    for family in shown:
        for s in family.samples:
            assert (s.name, tuple(sorted(s.labels))) in exported, s
