"""The Dialect interface: per-format knowledge lives in the dialect modules only."""

from __future__ import annotations

import re
from pathlib import Path

from mitmllm.protocol import detect
from mitmllm.protocol.dialect import Dialect

PACKAGE = Path(detect.__file__).resolve().parent.parent
DIALECT_MODULES = {"anthropic.py", "openai_chat.py", "openai_responses.py", "gemini.py"}
# The mock, the demo and the benchmark speak every format on purpose; they are not the core.
OUTSIDE_CORE = {"mock", "demo", "bench"}


def test_every_registered_dialect_states_its_facts() -> None:
    for d in detect.dialects():
        assert isinstance(d, Dialect)
        assert d.name and d.title
        assert d.default_auth in ("x-api-key", "bearer", "x-goog-api-key", "api-key", "none")
        assert d.prompt_fields, f"{d.name} names no prompt fields"
        assert d.native_flavour in ("openai", "anthropic", "gemini", "none")


def test_no_module_outside_the_dialects_branches_on_a_format_name() -> None:
    """A fifth format is one module plus one registration line: nothing else compares a
    format name (`fmt == "gemini"`, `fmt in ("anthropic", ...)`, a dict keyed by format)."""
    names = "|".join(re.escape(n) for n in detect.names())
    branch = re.compile(rf"""(==|!=|\bin\b)\s*\(?["']({names})["']|["']({names})["']\s*:""")
    # Tool-schema flavours share names with formats but are rule sets, not formats.
    flavour = re.compile(r"\b(flavour|native)\s*(==|!=)")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in OUTSIDE_CORE:
            continue
        if rel.parts[0] == "protocol" and rel.name in DIALECT_MODULES:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if branch.search(line) and not flavour.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_heartbeats_are_the_dialects_call() -> None:
    from mitmllm.protocol.sse import Decoder

    ping = Decoder().feed(b'event: ping\ndata: {"type": "ping"}\n\n')[0]
    by = {d.name: d.is_heartbeat(ping, {"type": "ping"}) for d in detect.dialects()}
    assert by == {
        "anthropic": True,
        "openai-chat": False,
        "openai-responses": False,
        "gemini": False,
    }
