"""The Runtime addon: the ready line comes once mitmproxy's start-up checks have passed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import pytest
from mitmproxy import options
from mitmproxy.addons.eventstore import EventStore
from mitmproxy.tools.dump import DumpMaster

from mitmllm.glue.runtime import READY
from mitmllm.glue.runtime import Runtime
from mitmllm.glue.runtime import shown


async def test_ready_line_names_the_listening_port_after_the_start_up_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    master = DumpMaster(options.Options(), with_termlog=False, with_dumper=False)
    check = master.addons.get("errorcheck")
    assert check is not None  # the check mitmdump runs; READY must wait for it
    runtime = Runtime()
    master.addons.add(runtime)
    master.options.update(listen_host="127.0.0.1", listen_port=0)
    task = asyncio.create_task(master.run())
    try:
        await asyncio.wait_for(runtime.ready.wait(), 60)  # a bound that only catches a hang
        assert check.logger not in logging.getLogger().handlers, "READY before the check ended"
        port = master.addons.get("proxyserver").listen_addrs()[0][1]
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(READY)]
        assert lines == [f"{READY}: proxy at 127.0.0.1:{port}"]
        assert re.fullmatch(r"mitmllm ready: proxy at 127\.0\.0\.1:\d+", lines[0])
    finally:
        master.shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


@pytest.mark.parametrize(
    ("verbosity", "levels_shown"),
    [
        ("debug", {"info", "warning"}),
        ("info", {"info", "warning"}),
        ("warn", {"warning"}),
        ("error", set()),
    ],
)
async def test_a_line_per_flow_is_logged_only_where_it_is_shown(
    verbosity: str, levels_shown: set[str]
) -> None:
    """mitmdump prints what termlog_verbosity lets through (``-q``: errors only); a record
    nobody shows still costs mitmproxy a call of every addon, so a flow's line is not made.
    mitmweb's and the console's event log show every level."""
    master = DumpMaster(options.Options(), with_termlog=True, with_dumper=False)
    master.options.update(termlog_verbosity=verbosity)
    levels = {"info": logging.INFO, "warning": logging.WARNING}
    assert {name for name, level in levels.items() if shown(level)} == levels_shown
    master.addons.add(EventStore())
    assert all(shown(level) for level in levels.values())
