"""The mitmllm addon chain, in the order the hooks must run.

ConfigLoader  options and the configuration file
Exposure      refuses routes that add upstream keys on a proxy open to the network
Recognizer    request: is this an LLM call? (state for everyone after it)
Rewriter      request: model rules, parameters, tool schemas; response: restamp JSON bodies
Failover      request: route through the relay; responseheaders: show the serving upstream
Inspector     responseheaders: tap the stream; response/error: findings, marks, summary
Recorder      response/error: write fixtures (after the inspector, so findings are in)
Metrics       response/error: count the finished flow (optional Prometheus endpoint)
Runtime       running: start-up housekeeping, the ready line
"""

from __future__ import annotations

from typing import Any

from mitmllm.glue.configaddon import ConfigLoader
from mitmllm.glue.contentview import register
from mitmllm.glue.exposure import Exposure
from mitmllm.glue.failover import Failover
from mitmllm.glue.inspector import Inspector
from mitmllm.glue.inspector import Recognizer
from mitmllm.glue.metrics import MetricsExporter
from mitmllm.glue.recorder import Recorder
from mitmllm.glue.rewriter import Rewriter
from mitmllm.glue.runtime import Runtime


def inspection_addons() -> list[Any]:
    """Only what inspecting flows needs: recognition, then the inspector."""
    return [Recognizer(), Inspector()]


def all_addons(*, script: bool = False) -> list[Any]:
    """Every addon, in hook order; `script` when mitmproxy loads them from a script (-s)."""
    config = ConfigLoader(log_startup_errors=script)
    failover = Failover(config)
    return [
        config,
        Exposure(config),
        Recognizer(),
        Rewriter(config),
        failover,
        Inspector(),
        Recorder(config),
        MetricsExporter(failover.breakers),
        Runtime(),
    ]


def script_addons() -> list[Any]:
    """What mitmproxy's script (``-s mitmllm_addon.py``) loads: the contentviews, every addon."""
    register()
    return all_addons(script=True)
