"""The exposure guard: routes that add the operator's keys are not served to the whole network.

A route whose upstreams authenticate with `api_key_env` spends the operator's key on every
request it carries. mitmproxy listens on every interface unless told otherwise, so such a
configuration on a default mitmdump lets anyone who can reach the port spend those keys. mitmllm
refuses to start (and refuses the change, once running) when a listener is beyond loopback and
neither `proxyauth` nor `mitmllm_allow_open_proxy` says that is intended, with a one-line reason.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

from mitmproxy import ctx
from mitmproxy.proxy.mode_specs import ProxyMode

from mitmllm.engine.config import Config
from mitmllm.glue.configaddon import ConfigLoader

logger = logging.getLogger(__name__)

OPTION = "mitmllm_allow_open_proxy"
#: Modes that take traffic from this machine only (no network listener).
LOCAL_MODES = frozenset({"local", "tun"})


def keyed_upstreams(config: Config) -> list[str]:
    """Upstreams that routes send with a key of the operator's (`api_key_env`), by name."""
    used = {hop.upstream for route in config.routes for hop in route.chain}
    return sorted(u.name for u in config.upstreams if u.api_key_env and u.name in used)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # empty (every interface) or a host name: reachable from elsewhere
        return False


def open_listeners(modes: Sequence[str], listen_host: str) -> list[str]:
    """The listen addresses of `modes` that are not loopback ("" is every interface)."""
    out = []
    for spec in modes:
        try:
            mode = ProxyMode.parse(spec)
        except ValueError:
            continue  # mitmproxy reports its own mode errors
        if mode.type_name in LOCAL_MODES:
            continue
        host = mode.listen_host(listen_host)
        if not is_loopback(host):
            out.append(host)
    return out


def exposure_problem(
    config: Config, modes: Sequence[str], listen_host: str, proxyauth: str, allowed: bool
) -> str | None:
    """Why this combination must not run (one line), or None."""
    if allowed or proxyauth:
        return None
    keyed = keyed_upstreams(config)
    if not keyed:
        return None
    hosts = open_listeners(modes, listen_host)
    if not hosts:
        return None
    where = ", ".join(sorted({h or "every interface" for h in hosts}))
    return (
        f"mitmllm refuses to serve routes that add the keys of {', '.join(keyed)} (api_key_env) "
        f"to the network: mitmproxy listens on {where} without proxyauth, so anyone who reaches "
        "it spends those keys; listen on loopback (--listen-host 127.0.0.1), set proxyauth, or "
        f"--set {OPTION}=true if the network is trusted"
    )


class Exposure:
    def __init__(self, config: ConfigLoader) -> None:
        self.loader = config
        config.add_check(self.problem)  # a configuration file that would expose keys

    def load(self, loader: Any) -> None:
        loader.add_option(
            OPTION,
            bool,
            False,
            """Serve routes that add upstream keys (api_key_env) while mitmproxy listens beyond
            loopback without proxyauth. Off: mitmllm refuses to start then, since anyone who
            reaches the proxy would spend those keys.""",
        )

    def configure(self, updated: set[str]) -> None:
        if not updated & {"listen_host", "mode", "proxyauth", OPTION}:
            return
        problem = self.problem(self.loader.config)
        if problem is not None:
            self.loader.refuse(problem)  # raises, or logs the one line at a script's start-up

    def problem(self, config: Config) -> str | None:
        opts = ctx.options
        return exposure_problem(
            config, opts.mode, opts.listen_host, opts.proxyauth, getattr(opts, OPTION, False)
        )
