"""The ``mitmllm`` command.

    mitmllm proxy [--config FILE] [MITMDUMP OPTIONS]   mitmdump with mitmllm, on 127.0.0.1
    mitmllm web [--config FILE] [MITMWEB OPTIONS]      mitmweb with mitmllm and the comment column
    mitmllm check [--json] [--format F] FILE...        findings for .sse recordings, fixtures, flows
    mitmllm config check FILE | mitmllm config schema  a configuration file / its JSON Schema
    mitmllm demo [--out DIR] [--quick]                 the SDKs through mitmllm, mock upstreams
    mitmllm script                                     the path of the mitmproxy script (-s)

Options ``proxy`` and ``web`` do not know are mitmproxy's, passed on as they are (``mitmllm proxy
-- --help`` shows them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

USAGE_ERROR = 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mitmllm",
        description="mitmproxy for LLM API traffic: inspect, rewrite and fail over streams.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, what in (("proxy", "mitmdump"), ("web", "mitmweb")):
        p = sub.add_parser(
            name,
            allow_abbrev=False,
            help=f"run {what} with mitmllm",
            description=f"Run {what} with every mitmllm addon loaded. The proxy listens on "
            "127.0.0.1 unless --listen-host says otherwise. Every other option is "
            f"{what}'s: `mitmllm {name} -- --help` lists them.",
            epilog=f"example: mitmllm {name} --config mitmllm.yaml "
            "--mode reverse:https://api.anthropic.com@8080",
        )
        p.add_argument(
            "--config",
            metavar="FILE",
            help="mitmllm's YAML configuration (same as --set mitmllm_config=FILE)",
        )

    p = sub.add_parser(
        "check",
        help="print mitmllm's findings for recordings",
        description="Validate raw SSE recordings, fixtures and mitmproxy flow files and print "
        "a table of findings (rule, severity, event number, message). Exit status: 0 clean, "
        "1 error findings, 2 a file could not be read.",
    )
    p.add_argument("files", nargs="*", type=Path, metavar="FILE", help="files or fixture folders")
    p.add_argument(
        "--format",
        dest="kind",
        choices=("auto", "sse", "fixture", "flows"),
        default="auto",
        help="what the files are (default: told by name and content)",
    )
    p.add_argument(
        "--dialect",
        choices=("anthropic", "openai-chat", "openai-responses", "gemini"),
        help="wire format of raw SSE files (default: told by their first event)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--schema", action="store_true", help="print the JSON Schema of --json")

    p = sub.add_parser("config", help="check a configuration file or print its JSON Schema")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    c = config_sub.add_parser("check", help="validate a configuration file")
    c.add_argument("file", help="the YAML configuration file")
    config_sub.add_parser("schema", help="print the JSON Schema of the configuration file")

    p = sub.add_parser(
        "demo",
        help="run the official SDKs through mitmllm against mock upstreams",
        description="Mock upstreams, mitmllm's proxy and the official SDKs through every "
        "scenario (no network, no keys); prints what each did.",
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="where flows and logs go")
    p.add_argument("--quick", action="store_true", help="one scenario of each kind")

    sub.add_parser("script", help="print the path of the mitmproxy script (for -s)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = parser().parse_known_args(argv)
    if args.command in ("proxy", "web"):
        return _launch(args.command, args.config, rest)
    if rest:
        parser().error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "check":
        return _check(args)
    if args.command == "config":
        from mitmllm.engine import config

        return config.main([args.config_command, *([args.file] if "file" in args else [])])
    if args.command == "demo":
        from mitmllm.demo.__main__ import main as demo

        return demo([*(["--out", str(args.out)] if args.out else []), *(["--quick"] * args.quick)])
    from mitmllm.script import SCRIPT

    print(SCRIPT)
    return 0


def _launch(command: str, config: str | None, rest: list[str]) -> int:
    from mitmllm.cli import launch

    if rest[:1] == ["--"]:
        rest = rest[1:]
    if config:
        rest = [*rest, "--set", f"mitmllm_config={config}"]
    sys.argv[0] = f"mitmllm {command}"  # how mitmproxy names itself in its one-line errors
    (launch.proxy if command == "proxy" else launch.web)(rest)
    return 0


def _check(args: argparse.Namespace) -> int:
    from mitmllm.cli import check

    if args.schema:
        import json

        print(json.dumps(check.CheckReport.model_json_schema(), indent=2))
        return 0
    if not args.files:
        print("mitmllm check: name at least one file (or --schema)", file=sys.stderr)
        return USAGE_ERROR
    return check.main(args.files, kind=args.kind, dialect=args.dialect, as_json=args.json)
