"""``mitmllm proxy`` and ``mitmllm web``: mitmdump and mitmweb with mitmllm's addons loaded.

mitmproxy's own command line runs as it is (every mitmproxy option passes through); the master
gets mitmllm's addons where a ``-s`` script would sit (before the built-in Save addon, so their
metadata is saved), but at construction instead of from the script loader. Their options then
exist before mitmproxy applies the command line: a bad value or configuration file stops
start-up with one line, before anything listens, where a script would print a traceback after
mitmproxy already listened.

Defaults that differ from plain mitmproxy, all overridable on the command line:

* the proxy listens on 127.0.0.1 (mitmproxy: every interface), since routes can add API keys;
* mitmweb shows the comment column, where mitmllm writes its findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mitmproxy.tools import cmdline
from mitmproxy.tools import main as mitmproxy_main

from mitmllm.glue.addons import all_addons
from mitmllm.glue.contentview import register

LISTEN_HOST = "127.0.0.1"
WEB_COLUMNS = ("icon", "path", "method", "status", "size", "time", "comment")


def install(master: Any) -> None:
    """Add mitmllm's addons to a master, where a -s script's addons would run."""
    register()
    chain = master.addons.chain
    at = chain.index(master.addons.get("scriptloader")) + 1
    for addon in reversed(all_addons()):
        master.addons.register(addon)
        chain.insert(at, addon)


def _defaults(master: Any, **options: Any) -> None:
    """mitmllm's defaults; the command line, applied after this, wins."""
    master.options.update(listen_host=LISTEN_HOST, **options)


def proxy(args: Sequence[str]) -> None:
    """Run mitmdump with mitmllm; `args` are mitmdump's."""
    from mitmproxy.tools.dump import DumpMaster

    class MitmllmDump(DumpMaster):
        def __init__(self, options: Any, *a: Any, **kw: Any) -> None:
            super().__init__(options, *a, **kw)
            install(self)
            _defaults(self)

    def extra(parsed: Any) -> dict[str, Any]:  # what mitmdump itself does with filter arguments
        if parsed.filter_args:
            v = " ".join(parsed.filter_args)
            return dict(save_stream_filter=v, readfile_filter=v, dumper_filter=v)
        return {}

    mitmproxy_main.run(MitmllmDump, cmdline.mitmdump, list(args), extra)


def web(args: Sequence[str]) -> None:
    """Run mitmweb with mitmllm; `args` are mitmweb's."""
    from mitmproxy.tools.web.master import WebMaster

    class MitmllmWeb(WebMaster):
        def __init__(self, options: Any, *a: Any, **kw: Any) -> None:
            super().__init__(options, *a, **kw)
            install(self)
            _defaults(self, web_columns=list(WEB_COLUMNS))

    mitmproxy_main.run(MitmllmWeb, cmdline.mitmweb, list(args))
