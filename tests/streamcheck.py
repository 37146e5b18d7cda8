"""Shared test support for stream validation: run a body through the checker whole or in chunks.

Not a test module: imported by the per-dialect tests and the codec tests.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from mitmllm.engine.pipeline import Pipeline
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.repair import Repairer
from mitmllm.protocol.splice import apply
from mitmllm.protocol.stream import StreamChecker


def run(dialect: Dialect | None, chunks: list[bytes], request: Any = None) -> StreamChecker:
    """Feed `chunks` to a fresh checker and close it."""
    checker = StreamChecker(dialect, request=request)
    raws = []
    for c in chunks:
        raws += [ev.raw for ev, _ in checker.feed(c)]
    raws += [ev.raw for ev, _ in checker.close()]
    checker.raws = raws  # type: ignore[attr-defined]
    return checker


def findings(dialect: Dialect | None, body: bytes, request: Any = None) -> Findings:
    return run(dialect, [body], request).findings


def rules(dialect: Dialect | None, body: bytes, request: Any = None) -> set[str]:
    """Rule IDs that fired for `body` (any severity)."""
    return set(findings(dialect, body, request).rules())


def errors(dialect: Dialect | None, body: bytes, request: Any = None) -> set[str]:
    """Rule IDs that fired with severity error."""
    return {f.rule for f in findings(dialect, body, request) if f.severity == "error"}


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(body)})
    out, prev = [], 0
    for p in points:
        out.append(body[prev:p])
        prev = p
    out.append(body[prev:])
    return out


@st.composite
def chunkings(draw: st.DrawFn, body: bytes) -> list[bytes]:
    """A random split of `body`, down to 1-byte chunks."""
    if len(body) < 2:
        return [body]
    if draw(st.booleans()):
        size = draw(st.integers(1, max(1, len(body) // 2)))
        return [body[i : i + size] for i in range(0, len(body), size)]
    cuts = draw(st.lists(st.integers(1, len(body) - 1), max_size=min(64, len(body))))
    return split(body, cuts)


def assert_chunking_invariant(
    dialect: Dialect | None, body: bytes, chunks: list[bytes], request: Any = None
) -> None:
    """Same events, findings and bytes whether `body` arrives whole or as `chunks`."""
    whole = run(dialect, [body], request)
    parts = run(dialect, chunks, request)
    assert parts.raws == whole.raws  # type: ignore[attr-defined]
    assert parts.findings.to_list() == whole.findings.to_list()
    assert b"".join(parts.raws) + parts.trailing == body  # type: ignore[attr-defined]


def repaired(
    dialect: Dialect | None, chunks: list[bytes], request: Any = None
) -> tuple[bytes, Findings, Findings]:
    """Run `chunks` through a repairing pipeline: (what the client gets, the upstream's findings
    with the repairs, the findings of what the client gets)."""
    upstream = StreamChecker(dialect, request=request)
    client = StreamChecker(dialect, request=request)
    pipeline = Pipeline(
        client, upstream=upstream, repairer=Repairer(dialect, upstream.findings, request=request)
    )
    out = b"".join(pipeline.feed(c) for c in chunks) + pipeline.close()
    return out, upstream.findings, client.findings


def error_rules(findings: Findings) -> set[str]:
    return {f.rule for f in findings if f.severity == "error"}


def rewrote(rewrite: Any, payload: Any, *args: Any) -> bool:
    """Call a dialect's `restamp` / `rename_tools` and make its edits to `payload`, as the
    pipeline does; True if there were any."""
    edits = rewrite(payload, *args)
    apply(payload, edits)
    return bool(edits)
