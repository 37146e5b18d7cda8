"""Per-flow state shared by mitmllm's addons.

`flow.metadata` must stay JSON-like (it is saved with the flow), so live objects (the parsed
request, the tap, findings) live here, keyed weakly by the flow; what should be saved is written
to ``flow.metadata["mitmllm"]`` when the flow ends.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

from mitmproxy import http

from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.findings import Findings

if TYPE_CHECKING:
    from mitmllm.glue.tap import FramingTap
    from mitmllm.glue.tap import Tap

METADATA_KEY = "mitmllm"


@dataclass
class LLMFlow:
    dialect: Dialect | None
    request: Any  # parsed request body (dict) or None
    wants_stream: bool
    model: str | None  # as the client asked for it
    findings: Findings = field(default_factory=Findings)
    tap: Tap | FramingTap | None = None
    # Filled by other addons; all JSON-like.
    info: dict[str, Any] = field(default_factory=dict)
    # Response rewrites (restamp, tool names) for the tap to apply, set by the rewriter.
    rewrites: list[Any] = field(default_factory=list)
    # The model sent upstream, when mitmllm changed it.
    served_model: str | None = None
    # The fail-over plan (mitmllm.engine.relay.Plan) of a routed flow.
    plan: Any = None
    # The commit gate of an inspect-only flow whose stream is repaired (mitmllm_repair).
    gate: Any = None
    finalized: bool = False

    @property
    def format(self) -> str | None:
        return self.dialect.name if self.dialect else None


_states: weakref.WeakKeyDictionary[http.HTTPFlow, LLMFlow] = weakref.WeakKeyDictionary()


def get(flow: http.HTTPFlow) -> LLMFlow | None:
    return _states.get(flow)


def attach(flow: http.HTTPFlow, state: LLMFlow) -> LLMFlow:
    _states[flow] = state
    return state
