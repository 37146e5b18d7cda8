"""mitmllm: make LLM API traffic inspectable, rewritable and fail-safe.

    mitmdump -s addons/mitmllm_addon.py            # or mitmweb -s ..., or: mitmllm proxy

Loads every mitmllm addon in the order they must run; see README.md for the options. The
installed package carries the same script (`mitmllm script` prints its path).
"""

from mitmllm.glue.addons import script_addons

addons = script_addons()
