"""Run one mock upstream and print its URL.

``python -m mitmllm.mock [--port N] [--scenario S] [--name NAME] [--list]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from mitmllm.mock.scenarios import describe
from mitmllm.mock.scenarios import find_scenario
from mitmllm.mock.upstream import MockUpstream


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mitmllm.mock",
        description="A mock LLM upstream (Anthropic, OpenAI Chat/Responses, Gemini) that answers "
        "healthy or deliberately broken streams. Select a scenario per request with the "
        "x-mock-scenario header, a /mock/NAME/ path prefix or a model~NAME suffix.",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: free)")
    parser.add_argument(
        "--scenario", default=None, metavar="S", help="default scenario (default: healthy)"
    )
    parser.add_argument("--name", default=None, help="sent back in the x-mock-upstream header")
    parser.add_argument("--list", action="store_true", help="print the scenarios and exit")
    args = parser.parse_args(argv)
    if args.scenario is not None and find_scenario(args.scenario) is None:
        parser.error(f"unknown scenario {args.scenario!r}; see --list")
    return args


async def serve(args: argparse.Namespace) -> None:
    async with MockUpstream(default_scenario=args.scenario, name=args.name, port=args.port) as up:
        print(up.url, flush=True)
        print(
            f"  Anthropic:  ANTHROPIC_BASE_URL={up.url}\n"
            f"  OpenAI:     OPENAI_BASE_URL={up.url}/v1\n"
            f"  a scenario: {up.url_for('tool')}  (or header x-mock-scenario: tool)",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print(describe())
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
