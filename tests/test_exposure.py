"""The exposure guard: no route that adds the operator's keys on a proxy open to the network.

Checked three ways: the rule itself (which listeners, which routes, what allows it), a real
mitmdump started as a user starts it (it refuses with one line, or listens), and a running proxy
whose options or configuration file change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mitmproxy import exceptions

from mitmllm.demo.mitmdump import Mitmdump
from mitmllm.engine.config import Config
from mitmllm.engine.config import load_config
from mitmllm.glue.addons import all_addons
from mitmllm.glue.configaddon import ConfigLoader
from mitmllm.glue.exposure import OPTION
from mitmllm.glue.exposure import exposure_problem
from mitmllm.glue.exposure import open_listeners
from mitmllm.script import SCRIPT
from tests.proxyharness import running_proxy

KEYED = """
version: 1
upstreams:
  - {name: anthropic, base_url: "https://api.anthropic.com", format: anthropic,
     api_key_env: MITMLLM_TEST_EXPOSED_KEY}
  - {name: local, base_url: "http://127.0.0.1:9", format: anthropic, auth: none}
routes:
  - name: claude
    match: {model: "claude-*"}
    chain: [{upstream: local}, {upstream: anthropic}]
"""
KEYLESS = """
version: 1
upstreams:
  - {name: local, base_url: "http://127.0.0.1:9", format: anthropic, auth: none}
  - {name: unused, base_url: "https://api.anthropic.com", format: anthropic,
     api_key_env: MITMLLM_TEST_EXPOSED_KEY}
routes:
  - name: claude
    match: {model: "claude-*"}
    chain: [{upstream: local}]
"""
#: A generous bound that only catches a mitmdump that neither refuses nor listens.
HANG = 60.0
MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))


@pytest.fixture
def keyed(tmp_path: Path) -> Path:
    path = tmp_path / "keyed.yaml"
    path.write_text(KEYED)
    return path


def config(text: str, tmp_path: Path) -> Config:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(str(path))


@pytest.mark.parametrize(
    ("modes", "listen_host", "open"),
    [
        (["regular"], "", [""]),
        (["regular"], "0.0.0.0", ["0.0.0.0"]),
        (["regular"], "127.0.0.1", []),
        (["regular"], "::1", []),
        (["regular"], "localhost", []),
        (["regular"], "192.168.1.10", ["192.168.1.10"]),
        (["reverse:https://api.anthropic.com@127.0.0.1:8080"], "", []),
        (["reverse:https://api.anthropic.com@8080", "regular@127.0.0.1:8081"], "", [""]),
        (["local"], "", []),
    ],
)
def test_open_listeners(modes: list[str], listen_host: str, open: list[str]) -> None:
    assert open_listeners(modes, listen_host) == open


def test_only_routes_that_add_keys_on_an_open_listener_are_refused(tmp_path: Path) -> None:
    keyed, keyless = config(KEYED, tmp_path), config(KEYLESS, tmp_path)
    problem = exposure_problem(keyed, ["regular"], "", "", False)
    assert problem is not None and "\n" not in problem
    assert "anthropic (api_key_env)" in problem and "every interface" in problem
    assert "--listen-host 127.0.0.1" in problem and f"{OPTION}=true" in problem
    assert exposure_problem(keyed, ["regular"], "127.0.0.1", "", False) is None
    assert exposure_problem(keyed, ["regular"], "", "user:secret", False) is None
    assert exposure_problem(keyed, ["regular"], "", "", True) is None
    assert exposure_problem(keyless, ["regular"], "", "", False) is None  # no key is added
    assert exposure_problem(Config.empty(), ["regular"], "", "", False) is None


# --- the proxy as a user starts it ---------------------------------------------------------------


def _refusal(out: str) -> str:
    """The one line that says why; mitmproxy prints no traceback around it."""
    assert "Traceback" not in out, out
    (line,) = [ln for ln in out.splitlines() if "mitmllm refuses" in ln]
    return line


@pytest.mark.parametrize(
    "command",
    [
        # mitmproxy listens on every interface unless told otherwise
        [MITMDUMP, "-s", str(SCRIPT)],
        # mitmllm proxy listens on loopback unless told otherwise: here it is told
        [sys.executable, "-m", "mitmllm", "proxy", "--listen-host", "0.0.0.0"],
    ],
    ids=["mitmdump-s", "mitmllm-proxy"],
)
def test_the_proxy_refuses_to_start_with_a_one_line_reason(
    keyed: Path, tmp_path: Path, command: list[str]
) -> None:
    done = subprocess.run(
        [*command, "--listen-port", "0", "--set", f"confdir={tmp_path}"]
        + ["--set", f"mitmllm_config={keyed}"],
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )
    assert done.returncode != 0
    line = _refusal(done.stdout + done.stderr)
    assert "anthropic (api_key_env)" in line
    assert "every interface" in line or "0.0.0.0" in line


@pytest.mark.parametrize(
    "extra",
    [
        [],  # mitmllm proxy listens on 127.0.0.1, as the README's recipes do
        ["--set", "proxyauth=user:pass"],
    ],
    ids=["loopback", "proxyauth"],
)
async def test_the_proxy_starts_on_loopback_or_with_proxyauth(
    keyed: Path, tmp_path: Path, extra: list[str]
) -> None:
    args = ["--listen-port", "0", "--set", f"confdir={tmp_path}"]
    proxy = Mitmdump([*args, "--set", f"mitmllm_config={keyed}", *extra], tmp_path / "log")
    await proxy.start()
    try:
        assert proxy.port and proxy.returncode is None
    finally:
        await proxy.stop()


# --- a running proxy ----------------------------------------------------------------------------


async def test_a_running_proxy_refuses_to_open_up(keyed: Path) -> None:
    async with running_proxy(all_addons(), mitmllm_config=str(keyed)) as proxy:
        opts = proxy.master.options
        with pytest.raises(exceptions.OptionsError, match="mitmllm refuses"):
            opts.update(listen_host="0.0.0.0")
        assert opts.listen_host == "127.0.0.1"
        opts.update(proxyauth="user:pass")  # a proxy that asks for a password may open up


def test_a_reload_that_would_expose_keys_keeps_the_last_good_configuration(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mitmllm.yaml"
    path.write_text(KEYLESS)
    loader = ConfigLoader()
    loader.add_check(lambda c: exposure_problem(c, ["regular"], "", "", False))
    loader.path = str(path)
    assert loader.reload_if_changed()
    assert [r.name for r in loader.config.routes] == ["claude"]
    before = loader.config
    path.write_text(KEYED)
    later = path.stat().st_mtime + 5  # a change the poll sees, whatever the clock's grain
    os.utime(path, (later, later))
    assert not loader.reload_if_changed()
    assert loader.config is before
    path.write_text(KEYLESS.replace("claude", "again"))
    os.utime(path, (later + 5, later + 5))
    assert loader.reload_if_changed()  # the next good edit is taken
    assert [r.name for r in loader.config.routes] == ["again"]
