"""The inspector: recognise LLM flows, validate their streams and bodies, flag bad flows.

For every LLM call it asks the upstream for an uncompressed body, taps event streams as they pass
(whole events only, never buffering SSE), checks non-streaming bodies, and when the flow ends
writes the findings to `flow.metadata["mitmllm"]`, a one-line `flow.comment` and `flow.marked`,
stores the client-facing bytes so mitmweb shows them, and logs one summary line. What it stores
of a stream is bounded by `mitmllm_keep_body` (the start and the end of a longer one, around a
marker, and TAP-4 on the flow); `mitmllm_spill_dir` keeps longer ones whole on disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from typing import BinaryIO

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http

from mitmllm.engine.keep import DEFAULT_LIMIT
from mitmllm.engine.keep import KEEP_OPTION
from mitmllm.engine.keep import KeptBody
from mitmllm.engine.keep import limit_of
from mitmllm.engine.pipeline import Pipeline
from mitmllm.engine.validation import StreamResult
from mitmllm.engine.validation import ValidationWorker
from mitmllm.engine.validation import WorkerGone
from mitmllm.glue import flowstate
from mitmllm.glue.flowstate import METADATA_KEY
from mitmllm.glue.flowstate import LLMFlow
from mitmllm.glue.tap import FramingTap
from mitmllm.glue.tap import Tap
from mitmllm.protocol import detect
from mitmllm.protocol.findings import Finding
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.stream import StreamChecker
from mitmllm.protocol.stream import check_body
from mitmllm.protocol.stream import check_head
from mitmllm.protocol.stream import is_event_stream

logger = logging.getLogger("mitmllm")


def recognise(flow: http.HTTPFlow, only_hosts: Sequence[str] = ()) -> LLMFlow | None:
    """Attach LLM flow state to `flow` if it is an LLM API call."""
    req = flow.request
    if only_hosts and not any(fnmatch(req.pretty_host, h) for h in only_hosts):
        return None
    try:
        raw = req.get_content(strict=False)
    except Exception:  # an undecodable body: not something mitmllm can read
        raw = None
    seen = detect.recognise(req.method, req.path, dict(req.query.items()), raw)
    if not seen.llm:
        return None
    state = LLMFlow(seen.dialect, seen.body, seen.stream, seen.model)
    return flowstate.attach(flow, state)


class Recognizer:
    """Recognises LLM flows first, so that the rewriter and fail-over see them in `request`.

    The inspector itself must run last (it flags what the others did), so recognition is its own
    small addon at the front of the chain. Its options are the inspector's.
    """

    def request(self, flow: http.HTTPFlow) -> None:
        Inspector.recognise(flow)


WORKER_TIMEOUT = 10.0  # seconds to wait for a stream's result from the validation worker


SPILL_OPTION = "mitmllm_spill_dir"


class Inspector:
    def __init__(self) -> None:
        self.worker: ValidationWorker | None = None
        self.keep: int | None = DEFAULT_LIMIT
        self.spill_dir: Path | None = None

    def load(self, loader: Any) -> None:
        loader.add_option(
            "mitmllm_inspect",
            bool,
            True,
            "Validate LLM API flows (SSE framing and wire-format rules) and flag bad ones.",
        )
        loader.add_option(
            "mitmllm_hosts",
            Sequence[str],
            [],
            """Only treat flows to these hosts as LLM calls (glob patterns, e.g. api.anthropic.com,
            *.openai.azure.com). Empty: any host, recognised by path and body.""",
        )
        loader.add_option(
            "mitmllm_marker_error",
            str,
            ":x:",
            "flow.marked for flows with an error finding (an emoji shortcode).",
        )
        loader.add_option(
            "mitmllm_marker_warning",
            str,
            ":warning:",
            "flow.marked for flows whose worst finding is a warning (empty: do not mark).",
        )
        loader.add_option(
            "mitmllm_marker_failover",
            str,
            ":arrows_counterclockwise:",
            "flow.marked for flows a fallback upstream served without errors.",
        )
        loader.add_option("mitmllm_summary", bool, True, "Log one summary line per LLM flow.")
        loader.add_option(
            "mitmllm_worker",
            bool,
            False,
            """Validate event streams in a separate process: mitmproxy's event loop then only
            frames events, which keeps the proxy's throughput at high event rates. Streams whose
            events mitmllm rewrites are still validated in the proxy.""",
        )
        loader.add_option(
            KEEP_OPTION,
            str,
            "8MiB",
            """How much of an event stream a flow keeps for mitmweb, saved flows and fixtures
            (e.g. 8MiB, or all). A longer stream keeps its first and last half of this around
            a marker, and the flow says so (TAP-4); findings always cover the whole stream.""",
        )
        loader.add_option(
            SPILL_OPTION,
            str,
            "",
            """A folder where streams longer than mitmllm_keep_body are written whole, one file
            per flow (named in the flow's metadata as body_file). Empty: not kept on disk.""",
        )

    def configure(self, updated: set[str]) -> None:
        for name in ("mitmllm_marker_error", "mitmllm_marker_warning", "mitmllm_marker_failover"):
            if name in updated:
                value = getattr(ctx.options, name)
                if value and not (value.startswith(":") and value.endswith(":") and len(value) > 2):
                    raise exceptions.OptionsError(
                        f"{name}={value!r}: use an emoji shortcode such as ':warning:' "
                        "(mitmweb shows it in the flow list), or '' to disable"
                    )
        if "mitmllm_worker" in updated:
            if ctx.options.mitmllm_worker:
                self._start_worker()
            elif self.worker is not None:
                self.worker.stop()
                self.worker = None
        if KEEP_OPTION in updated:
            text = getattr(ctx.options, KEEP_OPTION)
            try:
                self.keep = limit_of(text)
            except ValueError as e:
                raise exceptions.OptionsError(
                    f"{KEEP_OPTION}={text!r}: {e}; use a size such as 8MiB, or all"
                ) from e
        if SPILL_OPTION in updated:
            folder = getattr(ctx.options, SPILL_OPTION).strip()
            self.spill_dir = Path(folder).expanduser() if folder else None
            spill_dir = self.spill_dir
            if spill_dir is not None and spill_dir.exists() and not spill_dir.is_dir():
                raise exceptions.OptionsError(
                    f"{SPILL_OPTION}={folder!r} is not a folder; name a folder (it is "
                    "created when the first long stream arrives)"
                )
        if "mitmllm_hosts" in updated:
            for h in ctx.options.mitmllm_hosts:
                if not h or any(c in h for c in "/ "):
                    raise exceptions.OptionsError(
                        f"mitmllm_hosts: {h!r} is not a host name or glob (no scheme, path or "
                        "spaces), e.g. api.openai.com or *.openai.azure.com"
                    )

    # --- hooks ---------------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        self.recognise(flow)

    @staticmethod
    def recognise(flow: http.HTTPFlow) -> None:
        if not ctx.options.mitmllm_inspect or flow.response is not None or flowstate.get(flow):
            return
        state = recognise(flow, ctx.options.mitmllm_hosts)
        if state is None:
            return
        # The tap reads raw wire bytes: ask for them uncompressed.
        flow.request.headers["accept-encoding"] = "identity"

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = flowstate.get(flow)
        if state is None or flow.response is None or state.tap is not None:
            return
        resp = flow.response
        check_head(
            state.findings,
            status=resp.status_code,
            headers=resp.headers,
            wants_stream=state.wants_stream,
        )
        if not is_event_stream(resp.headers.get("content-type")):
            return  # buffered; checked in `response`
        encoding = resp.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            state.findings.add(
                "TAP-2", f"event stream is {encoding}-encoded; passed through unvalidated"
            )
            resp.stream = True
            return
        t0 = flow.request.timestamp_start
        body = self.kept_body(flow)
        if self.worker is not None and self.worker.alive and not state.rewrites:
            state.tap = FramingTap(self.worker, state.format, state.request, t0, body=body)
        else:
            checker = StreamChecker(
                state.dialect, state.findings, request=state.request, autodetect=True
            )
            state.tap = Tap(Pipeline(checker, state.rewrites), t0, body=body)
        resp.stream = state.tap  # type: ignore[assignment]  # mitmproxy's stub lists no list

    def kept_body(self, flow: http.HTTPFlow) -> KeptBody:
        """What the flow will keep of its stream (see the options)."""
        folder = self.spill_dir

        def spill() -> BinaryIO:
            assert folder is not None
            folder.mkdir(parents=True, exist_ok=True)
            return open(folder / f"{flow.id}.sse", "wb")  # noqa: SIM115 (closed at the end)

        return KeptBody(self.keep, spill=spill if folder else None, option=KEEP_OPTION)

    async def response(self, flow: http.HTTPFlow) -> None:
        await self._finish(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        await self._finish(flow)

    # --- the validation worker ---------------------------------------------------------------

    def running(self) -> None:
        if ctx.options.mitmllm_worker:
            self._start_worker()

    def done(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def _start_worker(self) -> None:
        if self.worker is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not running yet: `running` starts it
        self.worker = ValidationWorker()
        loop.create_task(self.worker.start())

    async def _worker_result(self, tap: FramingTap, state: LLMFlow) -> StreamResult | None:
        try:
            result = await asyncio.wait_for(tap.result(), WORKER_TIMEOUT)
        except (WorkerGone, TimeoutError) as e:
            state.findings.add("TAP-1", f"stream not validated: {e or 'worker timed out'}")
            return None
        state.findings.extend([Finding.from_dict(f) for f in result.findings])
        for rule_id, n in result.suppressed.items():
            state.findings.suppressed[rule_id] += n
        if tap.failed:
            state.findings.add("TAP-1", "the framing tap failed; the rest was passed through")
        return result

    # --- the end of a flow ---------------------------------------------------------------------

    async def _finish(self, flow: http.HTTPFlow) -> None:
        state = flowstate.get(flow)
        if state is None or state.finalized:
            return
        state.finalized = True
        tap = state.tap
        resp = flow.response
        result: StreamResult | None = None
        if tap is not None and resp is not None:
            if resp.raw_content is None:
                # After streaming the body is gone; store what the client got (record only, the
                # wire is done). Also after an abort: mitmweb then shows what did arrive.
                resp.raw_content = tap.sent
            _note_kept(tap.body, state)
            if not tap.finished:
                # The connection died mid-stream: run the end-of-stream checks (truncation) on
                # what arrived. What the tap still held never reached the client.
                state.info["aborted"] = flow.error.msg if flow.error else "stream did not finish"
                if isinstance(tap, Tap):
                    held = tap.pipeline.close()
                    if held:
                        state.info["undelivered_bytes"] = len(held)
            if isinstance(tap, FramingTap):
                result = await self._worker_result(tap, state)
            else:
                result = StreamResult.of(tap.pipeline.checker)
        elif resp is not None and not resp.stream:
            check_body(
                state.dialect,
                state.findings,
                status=resp.status_code,
                body=resp.raw_content or b"",
                content_type=resp.headers.get("content-type"),
                request=state.request,
            )
        write_metadata(flow, state, result)
        flag(flow, state)
        if ctx.options.mitmllm_summary:
            line = summary_line(flow, state)
            level = logging.WARNING if state.findings.worst == Severity.ERROR else logging.INFO
            logger.log(level, line)


def _note_kept(body: KeptBody, state: LLMFlow) -> None:
    """Say on the flow when what it keeps is not the whole stream, and where the rest went."""
    body.close()
    if not body.cut:
        return
    state.info["body_kept"] = {"bytes": body.total - body.cut, "of": body.total, "cut": body.cut}
    where = f"the start and the end of {body.total} bytes ({KEEP_OPTION})"
    if body.spill_name is not None:
        state.info["body_file"] = body.spill_name
        where += f"; the whole stream is in {body.spill_name}"
    if body.spill_error is not None:
        state.info["body_file_error"] = body.spill_error
        where += f"; writing it to {SPILL_OPTION} failed ({body.spill_error})"
    state.findings.add("TAP-4", f"the flow keeps {where}")


def write_metadata(flow: http.HTTPFlow, state: LLMFlow, result: StreamResult | None = None) -> None:
    resp = flow.response
    tap = state.tap
    meta: dict[str, Any] = {
        "format": state.format,
        "model": state.model,
        "stream": state.wants_stream,
    }
    if resp is not None:
        meta["status"] = resp.status_code
    if result is not None:
        meta["events"] = result.events
        if result.format is not None and state.dialect is None:
            meta["format"] = result.format
        if result.format is not None:
            if result.model and result.model != state.model:
                meta["served_model"] = result.model
            if result.finish:
                meta["finish"] = result.finish
            if result.error:
                meta["error"] = result.error
            meta["complete"] = result.complete
    if tap is not None:
        if tap.first_event_ms is not None:
            meta["ttfe_ms"] = round(tap.first_event_ms, 1)
        meta["chunks"] = tap.chunk_count
        meta["bytes"] = tap.received
        if tap.rewritten:
            meta["events_rewritten"] = tap.rewritten
    if flow.request.timestamp_start and resp is not None and resp.timestamp_end:
        meta["duration_ms"] = round((resp.timestamp_end - flow.request.timestamp_start) * 1000, 1)
    if state.served_model and state.served_model != state.model:
        meta["served_model"] = state.served_model  # what the upstream was asked for
    meta.update(state.info)
    meta["findings"] = state.findings.to_list()
    if state.findings.suppressed:
        meta["suppressed"] = dict(state.findings.suppressed)
    meta["summary"] = state.findings.summary()
    flow.metadata[METADATA_KEY] = meta


def flag(flow: http.HTTPFlow, state: LLMFlow) -> None:
    worst = state.findings.worst
    if worst is None:
        return
    if worst == Severity.ERROR:
        marker = ctx.options.mitmllm_marker_error
    elif state.info.get("fell_back"):
        marker = ctx.options.mitmllm_marker_failover
    elif worst == Severity.WARNING:
        marker = ctx.options.mitmllm_marker_warning
    else:
        marker = ""
    if marker and not flow.marked:
        flow.marked = marker
    first = next((f for f in state.findings if f.severity == worst), next(iter(state.findings)))
    text = f"{state.findings.summary()} | {first.rule}: {first.message}"
    flow.comment = text if len(text) <= 240 else text[:239] + "…"


def summary_line(flow: http.HTTPFlow, state: LLMFlow) -> str:
    meta = flow.metadata.get(METADATA_KEY, {})
    parts = [
        meta.get("format") or "llm?",
        state.model or "-",
        str(meta.get("status", "---")),
        "stream" if state.wants_stream else "json",
    ]
    if "events" in meta:
        parts.append(f"{meta['events']} events")
    if "ttfe_ms" in meta:
        parts.append(f"ttfe {meta['ttfe_ms']:.0f}ms")
    if "duration_ms" in meta:
        parts.append(f"{meta['duration_ms'] / 1000:.2f}s")
    if meta.get("upstream"):
        attempts = meta.get("attempts") or []
        via = f" after {len(attempts) - 1} failed" if len(attempts) > 1 else ""
        parts.append(f"via {meta['upstream']}{via}")
    elif meta.get("relay") == "failed_before_commit":
        parts.append(f"all {len(meta.get('attempts') or [])} upstreams failed")
    if meta.get("aborted"):
        parts.append("ABORTED")
    return f"mitmllm {flow.request.pretty_host}: " + " ".join(parts) + f" | {meta['summary']}"
