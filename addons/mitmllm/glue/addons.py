"""The mitmllm addon chain, in the order the hooks must run.

ConfigLoader  options and the configuration file
Exposure      refuses routes that add upstream keys on a proxy open to the network
Recognizer    request: is this an LLM call? (state for everyone after it)
Rewriter      request: model rules, parameters, tool schemas; response: restamp JSON bodies
Failover      request: route through the relay; responseheaders: show the serving upstream
Inspector     responseheaders: tap the stream; response/error: findings, marks, summary
Recorder      response/error: write fixtures (after the inspector, so findings are in)
"""

from __future__ import annotations

from typing import Any

from mitmllm.glue.configaddon import ConfigLoader
from mitmllm.glue.exposure import Exposure
from mitmllm.glue.failover import Failover
from mitmllm.glue.inspector import Inspector
from mitmllm.glue.inspector import Recognizer
from mitmllm.glue.recorder import Recorder
from mitmllm.glue.rewriter import Rewriter
from mitmllm.glue.runtime import Runtime


def all_addons() -> list[Any]:
    config = ConfigLoader()
    return [
        config,
        Exposure(config),
        Recognizer(),
        Rewriter(config),
        Failover(config),
        Inspector(),
        Recorder(config),
        Runtime(),
    ]
