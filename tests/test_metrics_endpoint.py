"""The metrics endpoint: off by default, on with mitmllm_metrics, scraped over HTTP after real
flows through a real proxy (a failed-over route, an open breaker, an unrouted flow)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from mitmproxy.test import taddons
from prometheus_client.parser import text_string_to_metric_families

from mitmllm.glue.metrics import MetricsExporter
from mitmllm.glue.metrics import parse_address
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.upstream import MockUpstream
from tests.relayharness import config
from tests.relayharness import failover_proxy
from tests.relayharness import fallback_hop
from tests.relayharness import request_body
from tests.relayharness import request_path
from tests.relayharness import upstream
from tests.relayharness import write_config


def _exporter(proxy: object) -> MetricsExporter:
    return next(a for a in proxy.addons if isinstance(a, MetricsExporter))  # type: ignore[attr-defined]


async def _post(url: str, fmt: str, headers: dict[str, str] | None = None) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url + request_path(fmt),
            json=request_body(fmt),
            headers={"x-mock-delay-ms": "0", **(headers or {})},
        ) as resp:
            assert resp.status == 200
            await resp.read()


async def test_a_real_scrape_counts_routes_fallbacks_breakers_and_unrouted_flows(
    tmp_path: Path,
) -> None:
    async with (
        MockUpstream(name="primary", default_scenario="overloaded") as primary,
        MockUpstream(name="fallback") as fallback,
    ):
        cfg = config(
            [
                upstream("primary", primary.url, ANTHROPIC),
                upstream("fallback", fallback.url, ANTHROPIC),
            ],
            ["primary", fallback_hop("fallback", ANTHROPIC)],
            name="claude",
            breaker={"failures": 1},
        )
        async with failover_proxy(
            write_config(tmp_path, cfg), primary.url, mitmllm_metrics="127.0.0.1:0"
        ) as proxy:
            exporter = _exporter(proxy)
            await _post(proxy.url, ANTHROPIC)  # 529 from the primary, served by the fallback
            await _post(proxy.url, ANTHROPIC)  # the primary's breaker is open: the fallback
            await _post(proxy.url, OPENAI_CHAT, {"x-mock-scenario": "healthy"})  # no route
            await proxy.log.wait(3)
            assert exporter.port, "the endpoint listens once the proxy runs"
            base = f"http://127.0.0.1:{exporter.port}"
            async with aiohttp.ClientSession() as http:
                async with http.get(base + "/metrics") as resp:
                    assert resp.status == 200
                    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
                    text = await resp.text()
                async with http.get(base + "/") as resp:
                    assert resp.status == 404
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert value("mitmllm_requests_total", format="anthropic", route="claude",
                 upstream="fallback", end="complete") == 2  # fmt: skip
    assert value("mitmllm_requests_total", format="openai-chat", route="",
                 upstream="127.0.0.1", end="complete") == 1  # fmt: skip
    assert value("mitmllm_attempts_total", route="claude", upstream="primary",
                 outcome="http_529") == 1  # fmt: skip
    assert value("mitmllm_attempts_total", route="claude", upstream="fallback",
                 outcome="ok") == 2  # fmt: skip
    assert value("mitmllm_fallbacks_total", route="claude", upstream="fallback") == 2
    assert value("mitmllm_findings_total", rule="RLY-1", severity="info") == 2
    assert value("mitmllm_breaker_state", upstream="primary", state="open") == 1
    assert value("mitmllm_breaker_state", upstream="fallback", state="closed") == 1
    assert value("mitmllm_time_to_first_event_seconds_count", format="anthropic",
                 route="claude") == 2  # fmt: skip
    assert value("mitmllm_stream_duration_seconds_count", format="openai-chat", route="") == 1


async def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    async with MockUpstream(name="mock") as mock:
        cfg = config([upstream("mock", mock.url, ANTHROPIC)], ["mock"])
        async with failover_proxy(write_config(tmp_path, cfg), mock.url) as proxy:
            await _post(proxy.url, ANTHROPIC)
            await proxy.log.wait(1)
            exporter = _exporter(proxy)
            assert exporter.address is None and exporter.port == 0
            assert b"mitmllm_requests_total{" not in exporter.metrics.exposition()


@pytest.mark.parametrize(
    ("spec", "address"),
    [("", None), ("9464", ("127.0.0.1", 9464)), ("127.0.0.1:0", ("127.0.0.1", 0)),
     ("[::1]:9464", ("::1", 9464)), (":9464", ("127.0.0.1", 9464))],
)  # fmt: skip
def test_the_option_takes_a_port_or_host_and_port(
    spec: str, address: tuple[str, int] | None
) -> None:
    assert parse_address(spec) == address


def test_a_bad_option_names_the_option_and_an_example() -> None:
    exporter = MetricsExporter()
    with taddons.context(exporter) as tctx:
        with pytest.raises(Exception, match=r"mitmllm_metrics: 'abc'.*give a port \(9464\)"):
            tctx.configure(exporter, mitmllm_metrics="abc")
