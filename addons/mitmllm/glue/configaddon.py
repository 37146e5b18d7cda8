"""Loads the mitmllm configuration file (`--set mitmllm_config=FILE`) and keeps it fresh.

A bad file stops start-up with the loader's message (file, field path, value, line). Once
running, the file is re-read when it changes; a bad edit keeps the last good configuration and
logs why. Other addons read `ConfigLoader.config`, may subscribe to changes, and may add checks
that a configuration must pass beyond its schema (one that would expose keys to the network).

Loaded from a script (``mitmdump -s``), an exception from `configure` would reach the user as
mitmproxy's traceback of the script, so at start-up the message is logged as it is instead, and
mitmproxy's own start-up check exits on the logged error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx
from mitmproxy import exceptions

from mitmllm.engine.config import Config
from mitmllm.engine.config import ConfigError
from mitmllm.engine.config import load_config

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0


class ConfigLoader:
    def __init__(self, *, log_startup_errors: bool = False) -> None:
        self.log_startup_errors = log_startup_errors
        self._running = False
        self.config: Config = Config.empty()
        self.path: str = ""
        self._mtime: float | None = None
        self._listeners: list[Callable[[Config], None]] = []
        self._checks: list[Callable[[Config], str | None]] = []
        self._watch: asyncio.Task[None] | None = None

    def subscribe(self, listener: Callable[[Config], None]) -> None:
        """Call `listener(config)` now and after every successful (re)load."""
        self._listeners.append(listener)
        listener(self.config)

    def add_check(self, check: Callable[[Config], str | None]) -> None:
        """A configuration for which `check` returns a reason is refused (at start-up, on a
        --set, and on a reload, which keeps the last good one)."""
        self._checks.append(check)

    def _problem(self, config: Config) -> str | None:
        return next((p for p in (check(config) for check in self._checks) if p), None)

    def load(self, loader: Any) -> None:
        loader.add_option(
            "mitmllm_config",
            str,
            "",
            """Path of mitmllm's YAML configuration (model rules, upstreams, routes, breakers,
            capture). Empty: inspect only. The file is re-read when it changes.""",
        )

    def configure(self, updated: set[str]) -> None:
        if "mitmllm_config" not in updated:
            return
        path = ctx.options.mitmllm_config
        if not path:
            self._apply(Config.empty(), "", None)
            return
        try:
            config = load_config(path)
            mtime = os.stat(path).st_mtime
        except ConfigError as e:
            self.refuse(f"mitmllm_config: {e}")
            return
        except OSError as e:
            self.refuse(
                f"mitmllm_config: cannot read {path!r} ({e.strerror}); pass the path of a YAML "
                "file, e.g. --set mitmllm_config=mitmllm.yaml"
            )
            return
        problem = self._problem(config)
        if problem is not None:
            self.refuse(f"mitmllm_config: {problem}")
            return
        self._apply(config, path, mtime)
        for line in config.describe():
            logger.info("mitmllm config: %s", line)
        for env in config.missing_env():
            logger.warning(
                "mitmllm config: environment variable %s is not set; upstreams that need it "
                "will be skipped",
                env,
            )

    def refuse(self, message: str) -> None:
        """Reject an option: raise, or at a script's start-up log the one message (other addons
        that guard the configuration refuse through this too)."""
        if self.log_startup_errors and not self._running:
            logger.error("%s", message)
            return
        raise exceptions.OptionsError(message)

    def running(self) -> None:
        # Sync on purpose: an async `running` stops mitmproxy's script hot-reload.
        self._running = True
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._poll())

    def done(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            with contextlib.suppress(Exception):
                self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed; True if a new configuration took effect."""
        if not self.path:
            return False
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError as e:
            if self._mtime is not None:
                logger.error(
                    "mitmllm config: cannot read %s (%s); keeping the last good configuration",
                    self.path,
                    e.strerror,
                )
                self._mtime = None
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            config = load_config(self.path)
        except ConfigError as e:
            logger.error(
                "mitmllm config: %s is invalid; keeping the last good configuration:\n%s",
                self.path,
                e,
            )
            return False
        problem = self._problem(config)
        if problem is not None:
            logger.error(
                "mitmllm config: %s keeps the last good configuration: %s", self.path, problem
            )
            return False
        self._apply(config, self.path, mtime)
        logger.info("mitmllm config: reloaded %s", self.path)
        return True

    def _apply(self, config: Config, path: str, mtime: float | None) -> None:
        self.config, self.path, self._mtime = config, path, mtime
        for listener in self._listeners:
            try:
                listener(config)
            except Exception:
                logger.exception("mitmllm config: a listener failed to take the new configuration")
