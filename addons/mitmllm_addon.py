"""mitmllm: make LLM API traffic inspectable, rewritable and fail-safe.

    mitmdump -s addons/mitmllm_addon.py            # or mitmweb -s ...

Loads every mitmllm addon in the order they must run; see README.md for the options.
"""

from mitmllm.glue.addons import all_addons
from mitmllm.glue.contentview import register

register()
addons = all_addons()
