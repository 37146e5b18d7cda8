"""mitmllm: mitmproxy addons for LLM API traffic."""
