"""The demo's mitmllm configuration: a flaky primary and a healthy fallback in every format.

`demo_config` returns the YAML the demo writes next to its flows and passes to mitmdump with
``--set mitmllm_config=...``; it is meant to be read, so it carries its own comments. The mock
upstreams' ports change every run, so the file is written anew each time.
"""

from __future__ import annotations

from mitmllm.demo.scenarios import ALIAS_FROM
from mitmllm.demo.scenarios import ALIAS_TO
from mitmllm.demo.scenarios import BASE_MODEL
from mitmllm.demo.scenarios import FAILOVER_SUFFIX
from mitmllm.demo.scenarios import FALLBACK_MODEL_SUFFIX
from mitmllm.demo.scenarios import SHORT_FORMAT
from mitmllm.demo.scenarios import TOOLS_MODEL
from mitmllm.demo.scenarios import TRANSLATE_SUFFIX
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import FORMATS
from mitmllm.mock.scenarios import OPENAI_CHAT

#: Route timeouts, short so that a stalled upstream costs the demo one second.
FIRST_EVENT_TIMEOUT = "1s"
IDLE_TIMEOUT = "1s"


def upstream_name(fmt: str, role: str) -> str:
    """The config's name for the `role` ("primary" or "fallback") upstream of `fmt`."""
    return f"{SHORT_FORMAT[fmt]}-{role}"


def demo_config(primary_url: str, fallback_url: str) -> str:
    """The configuration file's text, for mock upstreams at these URLs."""
    upstreams = []
    routes = []
    for fmt in FORMATS:
        for role, url in (("primary", primary_url), ("fallback", fallback_url)):
            upstreams.append(
                f'  - {{name: {upstream_name(fmt, role)}, base_url: "{url}", format: {fmt}, '
                "auth: none}"
            )
        fallback_model = BASE_MODEL[fmt] + FALLBACK_MODEL_SUFFIX
        routes.append(
            f"""\
  - name: {SHORT_FORMAT[fmt]}-failover
    match: {{model: "*{FAILOVER_SUFFIX}*"}}
    chain:
      - upstream: {upstream_name(fmt, "primary")}
      - upstream: {upstream_name(fmt, "fallback")}
        models: {{"*": {fallback_model}}}"""
        )
    # An Anthropic client served by an OpenAI Chat fallback: the route translates.
    routes.append(
        f"""\
  - name: {SHORT_FORMAT[ANTHROPIC]}-to-{SHORT_FORMAT[OPENAI_CHAT]}
    match: {{model: "*{TRANSLATE_SUFFIX}*"}}
    translate: true
    chain:
      - upstream: {upstream_name(ANTHROPIC, "primary")}
      - upstream: {upstream_name(OPENAI_CHAT, "fallback")}
        models: {{"*": {BASE_MODEL[OPENAI_CHAT] + FALLBACK_MODEL_SUFFIX}}}"""
    )
    return f"""\
# mitmllm demo configuration, written by `python -m mitmllm.demo` (the mock ports change per run).
# Check it with: python -m mitmllm.engine.config check THIS_FILE
version: 1

# Model rules apply to every request, routed or not; the first match wins.
models:
  - name: demo-alias
    match: {ALIAS_FROM}
    formats: [anthropic]
    to: {ALIAS_TO}
    restamp: true          # the client keeps seeing {ALIAS_FROM}
  - name: demo-tools
    match: "{TOOLS_MODEL}*"
    formats: [openai-chat]
    tools: openai          # tool names <= 64 characters, object schemas with properties

# Two mock servers play every format: "primary" breaks on request, "fallback" is healthy.
upstreams:
{chr(10).join(upstreams)}

# Requests for a model containing "{FAILOVER_SUFFIX}" go through a chain: primary, then fallback.
# The fallback gets a model without the mock's ~scenario suffix, so it answers healthily.
# Those for "{TRANSLATE_SUFFIX}" fall back to an upstream of another wire format (translate: true).
routes:
{chr(10).join(routes)}

defaults:
  timeouts: {{first_event: {FIRST_EVENT_TIMEOUT}, idle: {IDLE_TIMEOUT}}}

# Every row tries the flaky primary first: the breakers must not open during the demo.
breaker: {{failures: 1000}}
"""
