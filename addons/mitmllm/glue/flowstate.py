"""Per-flow state shared by mitmllm's addons.

`flow.metadata` must stay JSON-like (it is saved with the flow), so live objects (the parsed
request, the tap, the fail-over plan) live here, keyed weakly by the flow. What mitmllm learns
about the flow goes into its typed `FlowReport`, which `publish` writes to
``flow.metadata["mitmllm"]`` when the flow ends.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

from mitmproxy import http
from mitmproxy.net.http import url

from mitmllm.engine.pipeline import Rewrite
from mitmllm.engine.report import METADATA_KEY
from mitmllm.engine.report import FlowReport
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.findings import Findings

if TYPE_CHECKING:
    from mitmllm.engine.relay import Plan
    from mitmllm.glue.tap import FramingTap
    from mitmllm.glue.tap import Tap
    from mitmllm.protocol.gate import Gate


@dataclass
class LLMFlow:
    dialect: Dialect | None
    request: Any  # parsed request body (dict) or None
    report: FlowReport
    tap: Tap | FramingTap | None = None
    # Response rewrites (restamp, tool names) for the tap to apply, set by rewriter and fail-over.
    rewrites: list[Rewrite] = field(default_factory=list)
    # The fail-over plan of a routed flow; the relay fills its attempts.
    plan: Plan | None = None
    # The commit gate of an inspect-only flow whose stream is repaired (mitmllm_repair).
    gate: Gate | None = None
    finalized: bool = False

    @property
    def format(self) -> str | None:
        return self.dialect.name if self.dialect else None

    @property
    def findings(self) -> Findings:
        return self.report.findings

    @property
    def model(self) -> str | None:
        """The model the client asked for."""
        return self.report.model

    @property
    def wants_stream(self) -> bool:
        return self.report.stream


_states: weakref.WeakKeyDictionary[http.HTTPFlow, LLMFlow] = weakref.WeakKeyDictionary()


def get(flow: http.HTTPFlow) -> LLMFlow | None:
    return _states.get(flow)


def attach(flow: http.HTTPFlow, state: LLMFlow) -> LLMFlow:
    _states[flow] = state
    return state


def publish(flow: http.HTTPFlow, report: FlowReport) -> None:
    """Write the report where saved flows, ``~meta`` filters and fixtures find it."""
    flow.metadata[METADATA_KEY] = report.to_metadata()


def report_of(flow: http.HTTPFlow) -> FlowReport | None:
    """The live report of a flow, else the one saved in its metadata (a flow read from a file)."""
    state = _states.get(flow)
    if state is not None:
        return state.report
    if METADATA_KEY in flow.metadata:
        return FlowReport.from_metadata(flow.metadata[METADATA_KEY])
    return None


def query_of(request: http.Request) -> dict[str, str]:
    """The request's query as a mapping, a repeated key with its first value: what
    ``dict(request.query.items())`` gives, without building mitmproxy's view of it (which took
    two thirds of recognising a flow)."""
    query = request.path.partition("#")[0].partition("?")[2]
    out: dict[str, str] = {}
    if query:
        for key, value in url.decode(query):
            out.setdefault(key, value)
    return out
