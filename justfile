# mitmllm tasks. Run through uv so the project environment is used: `uv run just <recipe>`.
set shell := ["bash", "-euo", "pipefail", "-c"]

out := "demo-out"

# List the recipes.
default:
    @just --list

# Run the demo: mock upstreams, mitmdump with mitmllm, the official SDKs through every scenario.
demo *ARGS:
    mitmllm demo --out {{out}} {{ARGS}}

# Open mitmweb with mitmllm and the demo's flows (run `just demo` first).
web *ARGS:
    mitmllm web --rfile {{out}}/flows.mitm {{ARGS}}

# Run mitmdump with mitmllm in front of your clients, on loopback (pass mitmproxy options, e.g. --mode reverse:https://api.anthropic.com).
proxy *ARGS:
    mitmllm proxy {{ARGS}}

# Print mitmllm's findings for .sse recordings, fixtures or flow files.
check *ARGS:
    mitmllm check {{ARGS}}

# Run the whole test suite (installs Debian's chromium for the browser test and Claude Code for
# its end-to-end test when it can).
test *ARGS:
    .ci/install-browser || echo "chromium could not be installed: the browser test will be skipped"
    .ci/install-claude-code || echo "Claude Code could not be installed: its test will be skipped"
    pytest {{ARGS}}

# Run the headless-Chromium test of mitmweb with mitmllm.
test-browser:
    .ci/install-browser
    pytest tests/test_browser.py

# Re-record the seed corpus in captures/ from the mock upstream (see captures/README.md).
captures-seed *ARGS:
    python -m tests.seed_captures {{ARGS}}

# Replay every fixture in captures/ and rewrite its expectations, printing what changed.
fixtures-update:
    python -m mitmllm.fixtures_cli update captures/

# Lint, format check and type check.
lint:
    ruff check addons tests
    ruff format --check addons tests
    mypy

# Print the project's figures (throughput, proxy overhead, concurrency).
bench *ARGS:
    python -m mitmllm.bench {{ARGS}}

# Run the benchmarks and record the figures in the README.
bench-readme:
    python -m mitmllm.bench --json {{out}}/bench.json
    python -m mitmllm.docs --bench {{out}}/bench.json

# Regenerate the README sections that come from the code (rules, configuration, options).
docs:
    python -m mitmllm.docs

# Print the JSON Schema of the configuration file.
schema:
    mitmllm config schema
