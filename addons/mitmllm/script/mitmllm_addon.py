"""mitmllm: make LLM API traffic inspectable, rewritable and fail-safe.

    mitmdump -s "$(mitmllm script)"          # or mitmweb -s ..., or simply: mitmllm proxy

Loads every mitmllm addon in the order they must run; `mitmllm proxy --help` lists the options.
"""

from mitmllm.glue.addons import script_addons

addons = script_addons()
