"""The mitmllm addon chain, in the order the hooks must run."""

from __future__ import annotations

from typing import Any

from mitmllm.glue.inspector import Inspector


def all_addons() -> list[Any]:
    return [Inspector()]
