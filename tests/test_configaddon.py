"""The configuration addon: a bad file at start-up and while running, and what routes need."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from mitmllm.glue.configaddon import ConfigLoader
from mitmllm.glue.failover import Failover

CONFIGS = Path(__file__).parent / "configs"
BAD = CONFIGS / "bad-unknown-upstream.yaml"
EXAMPLE = CONFIGS / "example.yaml"


def test_a_bad_file_is_an_option_error_with_the_field_path() -> None:
    loader = ConfigLoader()
    with taddons.context(loader) as tctx:
        with pytest.raises(exceptions.OptionsError, match=r"routes\.0\.chain\.1\.upstream"):
            tctx.configure(loader, mitmllm_config=str(BAD))
        assert not loader.config.routes


async def test_as_a_script_at_start_up_the_message_is_logged_once_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """mitmproxy prints a traceback for an exception from a script's configure; the logged
    error makes its start-up check exit instead."""
    loader = ConfigLoader(log_startup_errors=True)
    with taddons.context(loader) as tctx:
        with caplog.at_level(logging.ERROR):
            tctx.configure(loader, mitmllm_config=str(BAD))
        (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert record.exc_info is None
        assert record.getMessage().startswith(f"mitmllm_config: {BAD}:17: routes.0.chain.1")
        loader.running()
        try:  # once running, a bad change is refused as an option error, as without a script
            with pytest.raises(exceptions.OptionsError):
                tctx.configure(loader, mitmllm_config=str(CONFIGS / "bad-duplicates.yaml"))
        finally:
            loader.done()


def test_routes_switch_mitmproxy_to_lazy_connects(caplog: pytest.LogCaptureFixture) -> None:
    loader = ConfigLoader()
    failover = Failover(loader)
    with taddons.context(Proxyserver(), loader) as tctx:
        tctx.options.connection_strategy = "eager"
        with caplog.at_level(logging.INFO):
            tctx.configure(loader, mitmllm_config=str(EXAMPLE))
        assert loader.config.routes and tctx.options.connection_strategy == "lazy"
        assert "connection_strategy is set to lazy" in caplog.text
        assert failover.breakers is not None
