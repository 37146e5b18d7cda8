"""Prometheus metrics: what every LLM flow's report says, counted, and the breakers' state.

`Metrics` owns its own registry (never the library's global one, so a reloaded addon or a test
starts from zero) and is fed one finished `FlowReport` at a time; the breakers are read when
Prometheus scrapes. Labels stay bounded: formats, routes, upstreams and rule IDs come from the
configuration and the rule registry; an unrouted flow's upstream is the host it went to.

    mitmllm_requests_total{format, route, upstream, end}      LLM flows that ended
    mitmllm_attempts_total{route, upstream, outcome}          relay attempts, by outcome
    mitmllm_fallbacks_total{route, upstream}                  flows a fallback upstream served
    mitmllm_findings_total{rule, severity}                    findings, the attempts' included
    mitmllm_repairs_total{rule, mends}                        repairs
    mitmllm_breaker_state{upstream, state}                    1 for each breaker's current state
    mitmllm_breaker_failures{upstream}                        failures in a row
    mitmllm_time_to_first_event_seconds{format, route}        request start to first event sent
    mitmllm_stream_duration_seconds{format, route}            request start to the stream's end
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from prometheus_client import disable_created_metrics
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mitmllm.engine.report import FlowReport

#: The exposition format's content type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds; LLM first events take from tens of milliseconds to a minute of thinking.
TTFE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
#: Seconds; streams run from a second to many minutes.
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)
BREAKER_STATES = ("closed", "half_open", "open")

# The *_created series (when each labelled counter first appeared) only double the scrape;
# the setting is the library's, for the process, which mitmllm's proxy owns.
disable_created_metrics()


class Metrics:
    def __init__(self, breakers: Any = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mitmllm_requests",
            "LLM flows that ended, by wire format, route ('' when unrouted), the upstream that "
            "served (the host for an unrouted flow) and how the response ended.",
            ["format", "route", "upstream", "end"],
            registry=r,
        )
        self.attempts = Counter(
            "mitmllm_attempts",
            "Attempts of routed flows, by route, upstream and outcome (ok, http_529, ...).",
            ["route", "upstream", "outcome"],
            registry=r,
        )
        self.fallbacks = Counter(
            "mitmllm_fallbacks",
            "Routed flows served by another upstream than the chain's first.",
            ["route", "upstream"],
            registry=r,
        )
        self.findings = Counter(
            "mitmllm_findings",
            "Findings by rule ID, those of failed attempts included.",
            ["rule", "severity"],
            registry=r,
        )
        self.repairs = Counter(
            "mitmllm_repairs",
            "Repairs by repair ID and the rule each mends.",
            ["rule", "mends"],
            registry=r,
        )
        self.ttfe = Histogram(
            "mitmllm_time_to_first_event_seconds",
            "From the request's start to the first event the client was sent.",
            ["format", "route"],
            buckets=TTFE_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "mitmllm_stream_duration_seconds",
            "From the request's start to the end of an event stream.",
            ["format", "route"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        if breakers is not None:
            r.register(_BreakerCollector(breakers))

    def record(self, report: FlowReport, host: str) -> None:
        """Count one finished flow."""
        fmt = report.format or "unknown"
        route = report.route or ""
        served = report.upstream or ("" if report.route else host)
        end = str(report.end) if report.end is not None else "unknown"
        self.requests.labels(fmt, route, served, end).inc()
        for a in report.attempts:
            self.attempts.labels(route, a.upstream, a.outcome).inc()
            for f in a.findings:
                self.findings.labels(f.rule, str(f.severity)).inc()
            for fix in a.repairs:
                self.repairs.labels(fix.rule, fix.mends).inc()
        if report.fell_back and report.upstream:
            self.fallbacks.labels(route, report.upstream).inc()
        for f in report.findings:
            self.findings.labels(f.rule, str(f.severity)).inc()
        for rule, n in report.findings.suppressed.items():
            severity = next((str(f.severity) for f in report.findings if f.rule == rule), "")
            if severity:
                self.findings.labels(rule, severity).inc(n)
        for fix in report.repairs:
            self.repairs.labels(fix.rule, fix.mends).inc()
        if report.ttfe_ms is not None:
            self.ttfe.labels(fmt, route).observe(report.ttfe_ms / 1000)
        if report.events is not None and report.duration_ms is not None:
            self.duration.labels(fmt, route).observe(report.duration_ms / 1000)

    def exposition(self) -> bytes:
        """The text Prometheus scrapes."""
        return generate_latest(self.registry)


class _BreakerCollector(Collector):
    """Each upstream's breaker, read at scrape time."""

    def __init__(self, breakers: Any) -> None:
        self.breakers = breakers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "mitmllm_breaker_state",
            "Circuit breaker of each upstream: 1 for its current state (closed, half_open, open).",
            labels=["upstream", "state"],
        )
        failures = GaugeMetricFamily(
            "mitmllm_breaker_failures",
            "Retryable failures in a row of each upstream.",
            labels=["upstream"],
        )
        for b in self.breakers.snapshot():
            for s in BREAKER_STATES:
                state.add_metric([b["name"], s], 1.0 if b["state"] == s else 0.0)
            failures.add_metric([b["name"]], float(b.get("failures") or 0))
        yield state
        yield failures
