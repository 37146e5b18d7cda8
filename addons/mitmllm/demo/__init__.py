"""The demo: ``mitmllm demo`` (``just demo``), mitmllm at work in under a minute.

It starts two mock upstreams on 127.0.0.1 (a flaky primary and a healthy fallback, each speaking
all four wire formats), writes a configuration that routes some models through a fail-over
chain, and runs ``mitmllm proxy`` (mitmdump with mitmllm) in reverse mode in front of the
primary, as a user would. Then the official ``anthropic`` and ``openai`` SDKs (and a plain HTTP
client for Gemini) send one request per scenario through it: healthy streams, streams broken on
purpose, upstream failures the relay hides, a model alias and a tool schema that needs
sanitizing.

It prints one line per scenario as it completes, then a table (what the upstream did, what the
client received, the findings, the upstream that served, the time to the first event) and the
command that opens the saved flows in mitmweb. No network, no keys.

Modules: `scenarios` (the rows), `config` (the configuration file), `mitmdump` (the child
process), `clients` (the SDK calls), `table` (results and the table).
"""

from __future__ import annotations
