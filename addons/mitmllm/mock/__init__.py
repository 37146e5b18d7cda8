"""A mock LLM upstream for the demo, the end-to-end tests and the benchmarks.

`MockUpstream` is a real HTTP server on 127.0.0.1 that speaks Anthropic Messages, OpenAI Chat
Completions, OpenAI Responses and Gemini, and answers each request per scenario: healthy, or
broken on purpose in one documented way (`SCENARIOS`). The plans it carries out are built
sans-I/O in `mitmllm.mock.scenarios`.
"""

from __future__ import annotations

from mitmllm.mock.scenarios import SCENARIOS
from mitmllm.mock.scenarios import Scenario
from mitmllm.mock.scenarios import expected_rules
from mitmllm.mock.scenarios import plan_request
from mitmllm.mock.upstream import MockUpstream
from mitmllm.mock.upstream import ReceivedRequest

__all__ = [
    "SCENARIOS",
    "MockUpstream",
    "ReceivedRequest",
    "Scenario",
    "expected_rules",
    "plan_request",
]
