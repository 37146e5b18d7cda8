"""``python -m mitmllm.demo [--out DIR] [--quick]``: run the demo (see `mitmllm.demo`).

Writes into DIR: ``flows.mitm`` (every flow, with mitmllm's findings), ``mitmdump.log`` and
``mitmllm-demo.yaml`` (the configuration mitmdump ran with). Exits 0 whatever the scenarios do
(a client that raises is a result, not a failure); 1 if the demo itself could not run; 130 on
Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mitmllm.demo import table
from mitmllm.demo.config import demo_config
from mitmllm.demo.mitmdump import Mitmdump
from mitmllm.demo.mitmdump import MitmdumpError
from mitmllm.demo.mitmdump import command
from mitmllm.demo.mitmdump import relative
from mitmllm.demo.mitmdump import shown
from mitmllm.demo.scenarios import ROW_HEADER
from mitmllm.demo.scenarios import select
from mitmllm.demo.table import Result
from mitmllm.mock.upstream import MockUpstream

if TYPE_CHECKING:
    from mitmllm.demo.clients import Answer

DEFAULT_OUT = Path("demo-out")
#: The justfile of a source checkout (absent when mitmllm is installed from a wheel).
CHECKOUT_JUSTFILE = Path(__file__).resolve().parents[3] / "justfile"
FLOWS = "flows.mitm"
LOG = "mitmdump.log"
CONFIG = "mitmllm-demo.yaml"
#: Seconds to wait for mitmdump to have saved the last flow before it is stopped.
SAVE_TIMEOUT = 5.0


class DemoError(Exception):
    """The demo could not run; the message says why and what to do."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mitmllm demo",
        description="Run the official SDKs through mitmdump with mitmllm against mock upstreams "
        "(no network, no keys) and print what each scenario did.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"where the flows, mitmdump's log and the configuration go (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one scenario of each kind instead of all of them"
    )
    return parser.parse_args(argv)


def say(text: str = "") -> None:
    print(text, flush=True)


async def run(out: Path, quick: bool) -> int:
    t0 = time.perf_counter()
    rows = select(quick)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DemoError(f"cannot create the output directory {out}: {e.strerror}") from e
    flows_path, log_path, config_path = out / FLOWS, out / LOG, out / CONFIG
    say(f"mitmllm demo: {len(rows)} scenarios, mock upstreams on 127.0.0.1, no network, no keys")
    async with MockUpstream(name="primary") as primary, MockUpstream(name="fallback") as fallback:
        say(f"  mock upstreams: primary {primary.url} (breaks on request), fallback {fallback.url}")
        config_path.write_text(demo_config(primary.url, fallback.url), encoding="utf-8")
        args = command(primary.url, config_path.resolve(), flows_path.resolve())
        say(f"  starting {shown(args)}")
        proxy = Mitmdump(args, log_path)
        answers: list[Answer] = []
        try:
            await proxy.launch()
            say("  loading the anthropic and openai SDKs while mitmdump starts ...")
            # Imported here, not at the top: the SDKs take seconds to import, which overlaps
            # with mitmdump's own start-up.
            from mitmllm.demo.clients import ask

            await proxy.listening()
            say(f"  mitmdump is listening on {proxy.url}; its log goes to {log_path}")
            say()
            digits = len(str(len(rows)))
            for i, row in enumerate(rows, 1):
                answer = await ask(row, proxy.url)
                answers.append(answer)
                received = table.client_received(row, answer)
                say(
                    f"  [{i:>{digits}}/{len(rows)}] {row.key:<30} {received} "
                    f"({answer.seconds:.2f} s)"
                )
                if proxy.returncode is not None:
                    raise MitmdumpError(
                        f"mitmdump exited with status {proxy.returncode} during the demo:\n"
                        + proxy.tail()
                    )
            await _until_saved(flows_path, len(rows))
        except MitmdumpError as e:
            raise DemoError(f"{e}\nSee {log_path} for mitmdump's whole output.") from e
        finally:
            say("  stopping mitmdump (it completes the flow file) ...")
            await proxy.stop()
        seen = {r.headers.get(ROW_HEADER): r for r in primary.received}
    try:
        flows = table.flows_by_row(table.read_flows(flows_path))
    except OSError as e:
        raise DemoError(f"mitmdump wrote no flow file {flows_path}: {e.strerror}") from e
    results = [
        Result(row, answer, flows.get(row.key), seen.get(row.key))
        for row, answer in zip(rows, answers, strict=True)
    ]
    say()
    say(table.render(results))
    say()
    say(table.summary(results, time.perf_counter() - t0))
    say(f"Flows: {flows_path}   mitmdump log: {log_path}   configuration: {config_path}")
    say(f"Open the flows in mitmweb:  {web_command(out, flows_path)}")
    return 0


async def _until_saved(path: Path, count: int) -> None:
    """Wait until mitmdump has written `count` flows (it writes each when it ends)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SAVE_TIMEOUT
    while loop.time() < deadline:
        if path.exists() and len(table.read_flows(path)) >= count:
            return
        await asyncio.sleep(0.05)


def web_command(out: Path, flows: Path) -> str:
    """The one command that opens the flows in mitmweb with mitmllm loaded."""
    if out == DEFAULT_OUT and CHECKOUT_JUSTFILE.exists():
        return "uv run just web"  # the justfile's `web` recipe reads DEFAULT_OUT
    return shlex.join(["mitmllm", "web", "--rfile", relative(flows)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args.out, args.quick))
    except DemoError as e:
        print(f"mitmllm demo failed: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. no free port on 127.0.0.1
        print(f"mitmllm demo failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nmitmllm demo interrupted; nothing is left running.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
