"""The README sections that are generated from the code, so they cannot drift.

    python -m mitmllm.docs           # rewrite the generated sections of README.md
    python -m mitmllm.docs --check   # exit 1 if README.md is out of date (the test suite does this)

A generated section sits between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers:
``rules`` (every rule ID with its severity and one line), ``config`` (every field of the
configuration file, from its JSON Schema), ``options`` (every ``mitmllm_*`` mitmproxy option),
``uncarried`` (the request features a translated hop cannot carry, per pair of formats) and
``check`` (what ``mitmllm check`` prints for the example recording in ``tests/recordings``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mitmllm.engine.config import json_schema
from mitmllm.protocol.conversation import FEATURES
from mitmllm.protocol.detect import dialects
from mitmllm.protocol.rules import FAMILIES
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.translate import uncarried

README = Path(__file__).resolve().parents[2] / "README.md"


def rules_markdown() -> str:
    out = []
    for family, title in FAMILIES.items():
        rules = [r for r in RULES.values() if r.family == family]
        if not rules:
            continue
        out.append(f"**{family}: {title}**\n")
        if family == "FIX":  # repairs: what they do and which rules they mend
            out.append("| ID | repair | mends | what the client gets |")
            out.append("|---|---|---|---|")
            for r in rules:
                mends = ", ".join(f"`{m}`" for m in r.mends)
                out.append(f"| {r.id} | {_cell(r.title)} | {mends} | {_cell(r.effect)} |")
            out.append("")
            continue
        out.append("| ID | severity | rule | when broken |")
        out.append("|---|---|---|---|")
        for r in rules:
            sev = r.severity.value if r.checked else f"{r.severity.value} (parser rule)"
            out.append(f"| {r.id} | {sev} | {_cell(r.title)} | {_cell(r.effect)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def config_markdown() -> str:
    schema = json_schema()
    defs = schema.get("$defs", {})
    out = ["| field | type | default | description |", "|---|---|---|---|"]
    for path, prop, required in _walk(schema, defs, ""):
        out.append(
            f"| `{path}` | {_type(prop, defs)} | {'required' if required else _default(prop)} | "
            f"{_cell(prop.get('description', ''))} |"
        )
    return "\n".join(out) + "\n"


def _walk(
    node: dict[str, Any], defs: dict[str, Any], prefix: str
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    required = set(node.get("required", ()))
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        yield path, prop, name in required
        target = _object_of(prop, defs)
        if target is not None:
            suffix = "[]." if _is_array(prop, defs) else "."
            yield from _walk(target, defs, path + suffix)


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        return dict(defs[ref.rsplit("/", 1)[-1]])
    return node


def _object_of(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any] | None:
    for candidate in [prop, *prop.get("anyOf", [])]:
        c = _resolve(candidate, defs)
        if c.get("type") == "array" and isinstance(c.get("items"), dict):
            c = _resolve(c["items"], defs)
        if c.get("properties"):
            return c
    return None


def _is_array(prop: dict[str, Any], defs: dict[str, Any]) -> bool:
    return any(_resolve(c, defs).get("type") == "array" for c in [prop, *prop.get("anyOf", [])])


def _flat(prop: dict[str, Any]) -> list[dict[str, Any]]:
    if "anyOf" not in prop:
        return [prop]
    return [x for c in prop["anyOf"] for x in _flat(c)]


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    kinds = []
    for c in _flat(prop):
        c = _resolve(c, defs)
        if "enum" in c:
            kinds.append(" \\| ".join(f"`{v}`" for v in c["enum"]))
        elif "pattern" in c and c.get("type") == "string":
            kinds.append("duration" if "ms|" in c["pattern"] else "size")
        elif c.get("type") == "array":
            items = _resolve(c.get("items", {}), defs)
            kinds.append(f"list of {items.get('title', items.get('type', 'values'))}")
        elif c.get("type") == "object" and not c.get("properties"):
            kinds.append("mapping")
        elif c.get("title") and c.get("properties"):
            kinds.append(c["title"])
        elif c.get("type"):
            kinds.append(str(c["type"]))
    seen = list(dict.fromkeys(k for k in kinds if k != "null"))
    if len(seen) == 2 and {"duration", "number"} == set(seen):
        seen = ["duration"]
    if len(seen) == 2 and {"size", "integer"} == set(seen):
        seen = ["size"]
    return " or ".join(seen) or "any"


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return ""
    value = prop["default"]
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, dict):
        return "see below"
    return f"`{value}`"


def options_markdown() -> str:
    from mitmllm.glue.addons import all_addons

    class Loader:
        def __init__(self) -> None:
            self.options: list[tuple[str, Any, Any, str]] = []

        def add_option(
            self, name: str, typespec: Any, default: Any, help: str, choices: Any = None
        ) -> None:
            self.options.append((name, typespec, default, help))

    loader = Loader()
    for addon in all_addons():
        if hasattr(addon, "load"):
            addon.load(loader)
    out = ["| option | default | what it does |", "|---|---|---|"]
    for name, _typespec, default, help in loader.options:
        shown = f"`{default}`" if default not in ("", [], None) else ""
        out.append(f"| `{name}` | {shown} | {_cell(' '.join(help.split()))} |")
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def bench_markdown(results: dict[str, Any]) -> str:
    """The bench's JSON (`python -m mitmllm.bench --json FILE`) as the README's figures table."""
    from mitmllm.bench.report import fmt_number

    m = results.get("machine", {})
    out = [
        f"Latest `uv run just bench` on {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
        f"{m.get('python', '?')}, mitmproxy {m.get('mitmproxy', '?')} "
        f"({results.get('date', 'date not recorded')}); in brackets after a median, the lowest "
        "and highest of the repetitions it is the median of:",
        "",
        "| section | figure | value | target | met |",
        "|---|---|---|---|---|",
    ]
    for f in results.get("figures", []):
        value = f.get("value")
        shown = "n/a" if value is None else f"{fmt_number(value)} {f.get('unit', '')}".strip()
        spread = f.get("spread")
        if value is not None and spread:  # the repetitions' lowest and highest
            shown += f" ({fmt_number(spread[0])}-{fmt_number(spread[1])})"
        met = {True: "yes", False: "**no**", None: ""}[f.get("met")]
        out.append(
            f"| {f['section']} | {_cell(f['name'])} | {shown} | {_cell(f.get('target') or '')} "
            f"| {met} |"
        )
    return "\n".join(out) + "\n"


#: The recording the README's `mitmllm check` example runs on.
CHECK_EXAMPLE = "tests/recordings/anthropic-keepalive-inside-tool-call.sse"


def uncarried_markdown() -> str:
    """Per client format (rows) and upstream format (columns), the request features of
    `conversation.FEATURES` the upstream's format cannot carry (`translate.uncarried`)."""
    formats = sorted((d for d in dialects() if d.converter() is not None), key=lambda d: d.name)
    out = [
        "| client \\ upstream | " + " | ".join(d.title for d in formats) + " |",
        "|---" * (len(formats) + 1) + "|",
    ]
    for client in formats:
        cells = []
        for upstream in formats:
            if upstream is client:
                cells.append("-")
                continue
            gaps = uncarried(client, upstream, FEATURES)
            cells.append(", ".join(f"`{g.path}`" for g in gaps) or "everything")
        out.append(f"| {client.title} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def check_markdown() -> str:
    """``mitmllm check`` on the example recording, as a terminal shows it."""
    import io

    from mitmllm.cli import check

    root = README.parent
    out = io.StringIO()
    status = check.main([root / CHECK_EXAMPLE], out=out)
    shown = out.getvalue().replace(f"{root}/", "")
    return f"```console\n$ mitmllm check {CHECK_EXAMPLE}\n{shown}$ echo $?\n{status}\n```\n"


SECTIONS = {
    "rules": rules_markdown,
    "config": config_markdown,
    "options": options_markdown,
    "uncarried": uncarried_markdown,
    "check": check_markdown,
}


def render(text: str) -> str:
    """`text` with every generated section regenerated."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n)(.*?)(<!-- END {name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- BEGIN {name} --> ... <!-- END {name} --> section")
        body = make()

        def fill(m: re.Match[str], body: str = body) -> str:
            return m.group(1) + body + m.group(3)

        text = pattern.sub(fill, text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mitmllm.docs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument(
        "--bench", type=Path, metavar="JSON", help="also put this bench result in the figures"
    )
    args = parser.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    fresh = render(current)
    if args.bench is not None:
        import json

        table = bench_markdown(json.loads(args.bench.read_text(encoding="utf-8")))
        pattern = re.compile(r"(<!-- BEGIN bench -->\n)(.*?)(<!-- END bench -->)", re.DOTALL)
        fresh = pattern.sub(lambda m: m.group(1) + table + m.group(3), fresh)
    if args.check:
        if fresh != current:
            print(f"{args.readme} is out of date: run `uv run just docs`", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        args.readme.write_text(fresh, encoding="utf-8")
        print(f"updated {args.readme}")
    else:
        print(f"{args.readme} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
