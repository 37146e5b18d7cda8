"""Test-suite settings.

Hypothesis explores new random examples on every local run; CI (``CI`` set, as `.ci/run` is
run) uses a fixed derandomized set and no example database, so a CI result depends on the code
alone.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
