"""The recorder: keeps LLM flows as regression fixtures, one JSON file each.

With ``mitmllm_capture`` set to ``all``, ``flagged`` or ``filter`` it records LLM flows when they
end (in ``response`` or ``error``, so cut and failed streams are recorded too, with their terminal
state). The ``mitmllm.capture`` command records the flows a user picks, e.g. ``@marked`` in
mitmweb, live or loaded from a file.

It must run after the inspector: it reads ``flow.metadata["mitmllm"]`` and the inspector's tap.
While capture is on it also wraps each LLM stream callable to keep the bytes exactly as the
upstream sent them and when each chunk arrived; without that copy (capture was off, or the flow
came from a file) the client-facing bytes are stored, and only the tap's timing or none at all.
What it keeps of a stream is bounded like the flow's own copy (``mitmllm_keep_body``): a longer
stream is recorded as its start and its end around a marker, without chunk timing, and the
fixture's notes say so. Secrets are redacted before anything is written (see
`mitmllm.engine.fixtures`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mitmproxy import command
from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import flow
from mitmproxy import flowfilter
from mitmproxy import http

from mitmllm.engine import fixtures
from mitmllm.engine.config import Config
from mitmllm.engine.keep import DEFAULT_LIMIT
from mitmllm.engine.keep import KEEP_OPTION
from mitmllm.engine.keep import KeptBody
from mitmllm.engine.keep import limit_of
from mitmllm.engine.report import METADATA_KEY
from mitmllm.glue import flowstate
from mitmllm.glue.configaddon import ConfigLoader

logger = logging.getLogger(__name__)

CAPTURE_MODES = ("off", "all", "flagged", "filter")

StreamCallable = Callable[[bytes], Iterable[bytes] | bytes]


class StreamCopy:
    """Stands in for a flow's stream callable: keeps what the upstream sent, then hands it on."""

    def __init__(
        self,
        inner: StreamCallable | bool,
        t0: float,
        clock: Callable[[], float] = time.time,
        limit: int | None = DEFAULT_LIMIT,
    ) -> None:
        self.inner = inner
        self.t0 = t0  # request start, the clock of mitmproxy's timestamps
        self.clock = clock
        self.body = KeptBody(limit, option=KEEP_OPTION)
        self.chunks: list[tuple[int, float]] = []  # (offset, ms since t0), while not cut

    def __call__(self, chunk: bytes) -> Iterable[bytes] | bytes:
        if chunk:
            if not self.body.cut:
                self.chunks.append((self.body.total, round((self.clock() - self.t0) * 1000, 3)))
            elif self.chunks:
                self.chunks = []  # offsets past a cut fit no kept body
            self.body.append(chunk)
        if callable(self.inner):
            return self.inner(chunk)
        return [chunk] if chunk else []  # `stream = True`: pass through (always a list)


def seen_by_mitmllm(f: http.HTTPFlow) -> bool:
    """The inspector took this flow for an LLM call (live, or in a saved flow's metadata)."""
    return flowstate.get(f) is not None or METADATA_KEY in f.metadata


def is_flagged(f: http.HTTPFlow) -> bool:
    """Marked, cut or failed by the upstream, failed over, repaired, or with a warning or error
    finding. A client that went away does not make a flow worth keeping."""
    if f.marked:
        return True
    report = flowstate.report_of(f)
    return report is not None and report.flagged


class Recorder:
    """Options win over the configuration file's `capture` section when they are set."""

    def __init__(self, config: ConfigLoader | None = None) -> None:
        self.filter: flowfilter.TFilter | None = None
        self.redact: tuple[str, ...] = ()
        self.mode = "off"
        self.dir = "captures"
        # The options as parsed in `configure`; `_settle` merges them with the file's section.
        self._option_mode = "off"
        self._option_dir = "captures"
        self._option_filter: flowfilter.TFilter | None = None
        self.keep: int | None = DEFAULT_LIMIT
        self._option_redact: tuple[str, ...] = ()
        self._config: Config | None = None
        if config is not None:
            config.subscribe(self._take_config)
        self._copies: weakref.WeakKeyDictionary[http.HTTPFlow, StreamCopy] = (
            weakref.WeakKeyDictionary()
        )

    def load(self, loader: Any) -> None:
        loader.add_option(
            "mitmllm_capture",
            str,
            "off",
            """Record LLM flows as regression fixtures into mitmllm_capture_dir: off, all,
            flagged (marked, failed, cut, failed over, or with a warning or error finding), or
            filter (the flows mitmllm_capture_filter matches).""",
            choices=CAPTURE_MODES,
        )
        loader.add_option(
            "mitmllm_capture_dir",
            str,
            "captures",
            "Folder for recorded fixtures (created when the first one is written).",
        )
        loader.add_option(
            "mitmllm_capture_filter",
            str,
            "",
            """A mitmproxy filter expression for mitmllm_capture=filter, e.g.
            '~d api.anthropic.com & ~meta ANT-'.""",
        )
        loader.add_option(
            "mitmllm_redact",
            Sequence[str],
            [],
            """More header, query parameter and JSON field names whose values are secrets, on
            top of authorization, x-api-key, api-key, x-goog-api-key, cookie, set-cookie, key.""",
        )

    def configure(self, updated: set[str]) -> None:
        if updated & {"mitmllm_capture", "mitmllm_capture_filter"}:
            mode = ctx.options.mitmllm_capture
            if mode not in CAPTURE_MODES:
                raise exceptions.OptionsError(
                    f"mitmllm_capture: {mode!r} is not one of {', '.join(CAPTURE_MODES)}"
                )
            spec = ctx.options.mitmllm_capture_filter.strip()
            try:
                self._option_filter = flowfilter.parse(spec) if spec else None
            except ValueError as e:
                raise exceptions.OptionsError(
                    f"mitmllm_capture_filter: cannot parse {spec!r} ({e}); use a mitmproxy "
                    "filter expression such as '~d api.anthropic.com & ~meta ANT-'"
                ) from e
            if mode == "filter" and self._option_filter is None:
                raise exceptions.OptionsError(
                    "mitmllm_capture=filter needs mitmllm_capture_filter, e.g. "
                    "--set mitmllm_capture_filter='~marked'"
                )
            self._option_mode = mode
        if "mitmllm_capture_dir" in updated:
            self._option_dir = ctx.options.mitmllm_capture_dir
        if KEEP_OPTION in updated:
            with contextlib.suppress(ValueError):  # the inspector words a bad value
                self.keep = limit_of(getattr(ctx.options, KEEP_OPTION))
        if "mitmllm_redact" in updated:
            names = [n.strip().lower() for n in ctx.options.mitmllm_redact]
            bad = [n for n in names if not n or any(c in n for c in " :=&?/")]
            if bad:
                raise exceptions.OptionsError(
                    f"mitmllm_redact: {bad[0]!r} is not a header, query parameter or field name "
                    "(e.g. x-my-token)"
                )
            self._option_redact = tuple(names)
        self._settle()

    def _take_config(self, config: Config) -> None:
        self._config = config
        self._settle()

    def _settle(self) -> None:
        """Effective capture settings: the options, else the configuration file's section."""
        mode = self._option_mode
        self.mode, self.dir, self.filter = mode, self._option_dir, self._option_filter
        redact = list(self._option_redact)
        cap = self._config.capture if self._config is not None else None
        if cap is not None:
            redact += [h.lower() for h in cap.redact_headers]
            redact += [q.lower() for q in cap.redact_query]
            if mode == "off" and cap.mode != "off":
                self.mode, self.dir = cap.mode, cap.dir
                if cap.mode == "filter" and cap.filter:
                    self.filter = flowfilter.parse(cap.filter)
        self.redact = tuple(dict.fromkeys(redact))

    # --- hooks ---------------------------------------------------------------------------------

    def responseheaders(self, f: http.HTTPFlow) -> None:
        resp = f.response
        if self.mode == "off" or resp is None or not resp.stream:
            return
        if not seen_by_mitmllm(f) or isinstance(resp.stream, StreamCopy):
            return
        copy = StreamCopy(resp.stream, f.request.timestamp_start, limit=self.keep)
        resp.stream = copy
        self._copies[f] = copy

    def response(self, f: http.HTTPFlow) -> None:
        self._finished(f)

    def error(self, f: http.HTTPFlow) -> None:
        self._finished(f)

    def _finished(self, f: http.HTTPFlow) -> None:
        mode = self.mode
        if mode == "off" or not seen_by_mitmllm(f) or fixtures.CAPTURED_KEY in f.metadata:
            self._copies.pop(f, None)
            return
        if (mode == "flagged" and not is_flagged(f)) or (
            mode == "filter" and not (self.filter is not None and self.filter(f))
        ):
            self._copies.pop(f, None)
            return
        self.record(f)

    # --- recording -----------------------------------------------------------------------------

    @command.command("mitmllm.capture")
    def capture(self, flows: Sequence[flow.Flow]) -> int:
        """Record these flows as fixtures in mitmllm_capture_dir; returns how many were written."""
        n = 0
        for f in flows:
            if not isinstance(f, http.HTTPFlow):
                continue
            if f.live and f.error is None and (f.response is None or not _ended(f)):
                logger.warning(
                    "mitmllm.capture: flow %s is still running; capture it when it has ended",
                    f.id,
                )
                continue
            if self.record(f) is not None:
                n += 1
        logger.log(logging.INFO if n else logging.WARNING, "mitmllm.capture: %d recorded", n)
        return n

    def record(self, f: http.HTTPFlow) -> Path | None:
        """Write `f` as a fixture; never raises (a flow must not fail because it was recorded)."""
        try:
            fixture = self.fixture(f)
            path = fixtures.write_new(self.dir, fixture)
        except Exception as e:
            logger.error(
                "mitmllm: could not record flow %s into %s: %s: %s",
                f.id,
                self.dir,
                type(e).__name__,
                e,
            )
            return None
        f.metadata[fixtures.CAPTURED_KEY] = str(path)
        logger.info("mitmllm: recorded %s %s -> %s", f.request.method, fixture.request.url, path)
        return path

    def fixture(self, f: http.HTTPFlow) -> fixtures.Fixture:
        """The fixture for `f`, with the upstream bytes and timing when they are known."""
        upstream: bytes | None = None
        chunks: list[tuple[int, float]] | None = None
        cut: KeptBody | None = None
        copy = self._copies.pop(f, None)
        state = flowstate.get(f)
        if copy is not None:
            upstream, chunks = copy.body.value, list(copy.chunks)
            cut = copy.body if copy.body.cut else None
        elif state is not None and state.tap is not None:
            tap = state.tap
            # The pipeline is lossless: unless it rewrote or repaired events, the client got the
            # upstream's bytes (all of them once the stream ended).
            if tap.finished and not tap.rewritten and not tap.repairs:
                upstream, chunks = tap.sent, list(tap.chunks)
            cut = tap.body if tap.body.cut else None
        fixture = fixtures.from_flow(
            f,
            upstream_body=upstream,
            chunks=chunks,
            redact_names=self.redact,
            secrets=self._upstream_keys(),
        )
        if cut is not None:
            fixture.notes.append(
                f"the stream was {cut.total} bytes: the fixture keeps its start and its end "
                f"({cut.total - cut.cut} bytes, {KEEP_OPTION}); its expectations are of those"
            )
        return fixture

    def _upstream_keys(self) -> list[str]:
        """The configured upstreams' own keys: hunted in fixtures like the client's."""
        config = self._config
        if config is None:
            return []
        names = {u.api_key_env for u in config.upstreams if u.api_key_env}
        return [v for v in (os.environ.get(n) for n in sorted(names)) if v]


def _ended(f: http.HTTPFlow) -> bool:
    resp = f.response
    return resp is not None and bool(resp.timestamp_end)
