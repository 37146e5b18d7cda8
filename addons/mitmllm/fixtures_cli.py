"""Work with recorded fixtures from the command line.

    python -m mitmllm.fixtures_cli to-flows captures/ -o captures.mitm    # then: mitmweb -r ...
    python -m mitmllm.fixtures_cli from-flows flows.mitm -o captures/     # LLM flows only
    python -m mitmllm.fixtures_cli check captures/                        # replay and compare
    python -m mitmllm.fixtures_cli update captures/                       # rewrite expectations
    python -m mitmllm.fixtures_cli serve captures/ --port 8001 --speed 2  # a replay upstream

``check`` exits 1 and prints a diff per fixture whose replay no longer gives its expectations;
``update`` rewrites those expectations after an intended change and prints what changed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from mitmllm.engine import fixtures
from mitmllm.engine.replay import ReplayUpstream


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (fixtures.FixtureError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mitmllm.fixtures_cli", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("to-flows", help="write fixtures into a mitmproxy flow file")
    p.add_argument("paths", nargs="+", type=Path, help="fixture files or folders")
    p.add_argument("-o", "--out", type=Path, required=True, help="flow file to write")
    p.set_defaults(run=_to_flows)

    p = sub.add_parser("from-flows", help="write a fixture per LLM flow of mitmproxy flow files")
    p.add_argument("files", nargs="+", type=Path, help="mitmproxy flow files")
    p.add_argument("-o", "--out", type=Path, required=True, help="folder for the fixtures")
    p.add_argument(
        "--redact",
        action="append",
        default=[],
        metavar="NAME",
        help="another header, query parameter or JSON field to redact (repeatable)",
    )
    p.add_argument("--all", action="store_true", help="also flows that are not LLM calls")
    p.set_defaults(run=_from_flows)

    p = sub.add_parser("check", help="replay fixtures and compare with their expectations")
    p.add_argument("paths", nargs="+", type=Path)
    p.set_defaults(run=_check)

    p = sub.add_parser("update", help="rewrite expectations from a fresh replay, show the diff")
    p.add_argument("paths", nargs="+", type=Path)
    p.set_defaults(run=_update)

    p = sub.add_parser("serve", help="serve fixtures over HTTP as a replay upstream")
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free)")
    p.add_argument("--speed", type=float, default=1.0, help="2 = twice as fast, inf = no delays")
    p.set_defaults(run=_serve)
    return parser


def _paths(paths: Sequence[Path]) -> list[Path]:
    found = [p for root in paths for p in fixtures.iter_fixtures(root)]
    if not found:
        raise fixtures.FixtureError(f"no fixtures under {', '.join(map(str, paths))}")
    return found


def _to_flows(args: argparse.Namespace) -> int:
    n = fixtures.fixtures_to_flows(_paths(args.paths), args.out)
    print(f"wrote {n} flows to {args.out} (open with: mitmweb -r {args.out})")
    return 0


def _from_flows(args: argparse.Namespace) -> int:
    written: list[Path] = []
    for file in args.files:
        written += fixtures.flows_to_fixtures(
            file, args.out, redact_names=args.redact, all_flows=args.all
        )
    for path in written:
        print(path)
    print(f"{len(written)} fixtures in {args.out}", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    failed = 0
    paths = _paths(args.paths)
    for path in paths:
        _, diff = fixtures.refreshed(fixtures.load_fixture(path))
        if diff:
            failed += 1
            print(diff)
    print(f"{len(paths) - failed} of {len(paths)} fixtures as expected", file=sys.stderr)
    if failed:
        print(
            "after an intended change: python -m mitmllm.fixtures_cli update "
            + " ".join(map(str, args.paths)),
            file=sys.stderr,
        )
    return 1 if failed else 0


def _update(args: argparse.Namespace) -> int:
    changed = 0
    paths = _paths(args.paths)
    for path in paths:
        new, diff = fixtures.refreshed(fixtures.load_fixture(path))
        if diff:
            changed += 1
            fixtures.save_fixture(new, path)
            print(diff)
    print(f"updated {changed} of {len(paths)} fixtures", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    async def run() -> None:
        async with ReplayUpstream(_paths(args.paths), speed=args.speed, port=args.port) as up:
            print(f"replaying {len(up.fixtures)} fixtures on {up.url} (Ctrl-C stops)", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
