"""Every fixture under captures/ is a regression test: replayed at its recorded chunking through
the pipeline, its findings and client-facing bytes must equal what it expects.

After an intended change, update the expectations with `uv run just fixtures-update` (or
MITMLLM_UPDATE_FIXTURES=1), which prints the diff of what changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mitmllm.engine.fixtures import check_fixture
from mitmllm.engine.fixtures import iter_fixtures

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


@pytest.mark.parametrize("path", iter_fixtures(CAPTURES), ids=lambda p: p.name)
def test_capture(path: Path) -> None:
    check_fixture(path)
