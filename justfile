# mitmllm tasks. Run through uv so the project environment is used: `uv run just <recipe>`.
set shell := ["bash", "-euo", "pipefail", "-c"]

addon := "addons/mitmllm_addon.py"
out := "demo-out"

# List the recipes.
default:
    @just --list

# Run the demo: mock upstreams, mitmdump with mitmllm, the official SDKs through every scenario.
demo *ARGS:
    python -m mitmllm.demo --out {{out}} {{ARGS}}

# Open mitmweb with mitmllm and the demo's flows (run `just demo` first).
web *ARGS:
    mitmweb -s {{addon}} --rfile {{out}}/flows.mitm --set web_columns=marked,icon,path,method,status,size,time,comment {{ARGS}}

# Run mitmdump with mitmllm in front of your clients (pass mitmproxy options, e.g. --mode reverse:https://api.anthropic.com).
proxy *ARGS:
    mitmdump -s {{addon}} {{ARGS}}

# Run the whole test suite.
test *ARGS:
    pytest {{ARGS}}

# Lint, format check and type check.
lint:
    ruff check addons tests
    ruff format --check addons tests
    mypy

# Print the project's figures (throughput, proxy overhead, concurrency).
bench *ARGS:
    python -m mitmllm.bench {{ARGS}}

# Print the JSON Schema of the configuration file.
schema:
    python -m mitmllm.engine.config schema
